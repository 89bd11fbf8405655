// Package pipeconn is an in-memory datagram link for unit tests: two net.PacketConns where
// whatever one end writes (to any address) the other end reads, as on a two-host Ethernet
// segment where every packet reaches the other host. DHCP clients and servers talk over it
// without sockets or root. A Cut link drops everything, as a pulled cable.
package pipeconn

import (
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

type packet struct {
	b    []byte
	from net.Addr
}

// Link joins two ends.
type Link struct {
	A, B *End
	cut  atomic.Bool
}

// End is one side of a Link.
type End struct {
	link     *Link
	addr     net.Addr
	in       chan packet
	peer     *End
	mu       sync.Mutex
	deadline time.Time
	closed   chan struct{}
	once     sync.Once
}

// New returns a link whose ends have the given local addresses.
func New(a, b net.Addr) *Link {
	l := &Link{}
	l.A = &End{link: l, addr: a, in: make(chan packet, 64), closed: make(chan struct{})}
	l.B = &End{link: l, addr: b, in: make(chan packet, 64), closed: make(chan struct{})}
	l.A.peer, l.B.peer = l.B, l.A
	return l
}

// Cut drops every packet from now on (true) or lets them through again (false).
func (l *Link) Cut(cut bool) { l.cut.Store(cut) }

// ReadFrom reads the next packet.
func (e *End) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		e.mu.Lock()
		dl := e.deadline
		e.mu.Unlock()
		var timer <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			t := time.NewTimer(d)
			defer t.Stop()
			timer = t.C
		}
		select {
		case pk := <-e.in:
			return copy(p, pk.b), pk.from, nil
		case <-e.closed:
			return 0, nil, net.ErrClosed
		case <-timer:
			return 0, nil, os.ErrDeadlineExceeded
		}
	}
}

// WriteTo delivers p to the other end (whatever addr says), unless the link is cut.
func (e *End) WriteTo(p []byte, _ net.Addr) (int, error) {
	select {
	case <-e.closed:
		return 0, net.ErrClosed
	default:
	}
	if e.link.cut.Load() {
		return len(p), nil
	}
	select {
	case e.peer.in <- packet{b: append([]byte(nil), p...), from: e.addr}:
	default: // a full queue drops, like a NIC
	}
	return len(p), nil
}

// Close closes this end.
func (e *End) Close() error {
	e.once.Do(func() { close(e.closed) })
	return nil
}

// LocalAddr is the end's address.
func (e *End) LocalAddr() net.Addr { return e.addr }

// SetDeadline sets the read deadline (writes never block).
func (e *End) SetDeadline(t time.Time) error { return e.SetReadDeadline(t) }

// SetReadDeadline sets the read deadline.
func (e *End) SetReadDeadline(t time.Time) error {
	e.mu.Lock()
	e.deadline = t
	e.mu.Unlock()
	return nil
}

// SetWriteDeadline does nothing.
func (e *End) SetWriteDeadline(time.Time) error { return nil }

var _ net.PacketConn = (*End)(nil)

// View returns a connection on this end with its own Close: closing the view ends its reads
// (and only its own), so a client that closes its connection can be followed by another one on
// the same end.
func (e *End) View() net.PacketConn {
	return &view{End: e, closed: make(chan struct{})}
}

type view struct {
	*End
	closed chan struct{}
	once   sync.Once
}

func (v *view) ReadFrom(p []byte) (int, net.Addr, error) {
	select {
	case pk := <-v.End.in:
		return copy(p, pk.b), pk.from, nil
	case <-v.closed:
		return 0, nil, net.ErrClosed
	case <-v.End.closed:
		return 0, nil, net.ErrClosed
	}
}

func (v *view) WriteTo(p []byte, a net.Addr) (int, error) {
	select {
	case <-v.closed:
		return 0, net.ErrClosed
	default:
	}
	return v.End.WriteTo(p, a)
}

func (v *view) Close() error {
	v.once.Do(func() { close(v.closed) })
	return nil
}
