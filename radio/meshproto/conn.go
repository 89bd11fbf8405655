package meshproto

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"
)

// DefaultPort is the UDP port of the control plane.
const DefaultPort = 7447

// Conn sends and receives authenticated messages over a packet connection.
type Conn struct {
	pc     net.PacketConn
	sealer *Sealer
	opener *Opener
	log    *slog.Logger
	// Dropped counts datagrams refused by Open (forged, replayed, malformed).
	Dropped atomic.Uint64
}

// NewConn wraps pc. The sealer signs what this node sends; the opener checks what it receives.
func NewConn(pc net.PacketConn, s *Sealer, o *Opener, log *slog.Logger) *Conn {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Conn{pc: pc, sealer: s, opener: o, log: log}
}

// Send seals v as a message of type t and sends it to addr.
func (c *Conn) Send(addr net.Addr, t Type, v any) error {
	b, err := c.sealer.Seal(t, v)
	if err != nil {
		return err
	}
	if _, err := c.pc.WriteTo(b, addr); err != nil {
		return fmt.Errorf("meshproto: send %s to %s: %w", t, addr, err)
	}
	return nil
}

// Receive returns the next authentic message, skipping (and counting) the rest, until ctx ends.
func (c *Conn) Receive(ctx context.Context) (Message, net.Addr, error) {
	buf := make([]byte, MaxDatagram+1)
	// A Receive that ended with its context left the read deadline in the past: clear it.
	_ = c.pc.SetReadDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { _ = c.pc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	for {
		n, addr, err := c.pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return Message{}, nil, ctx.Err()
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return Message{}, nil, fmt.Errorf("meshproto: receive: %w", err)
		}
		m, err := c.opener.Open(buf[:n])
		if err != nil {
			c.Dropped.Add(1)
			c.log.Debug("control message dropped", "from", addr.String(), "err", err)
			continue
		}
		m.Payload = append([]byte(nil), m.Payload...)
		return m, addr, nil
	}
}

// LocalAddr is the bound address.
func (c *Conn) LocalAddr() net.Addr { return c.pc.LocalAddr() }

// Close closes the packet connection.
func (c *Conn) Close() error { return c.pc.Close() }
