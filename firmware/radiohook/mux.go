package radiohook

import (
	"net"
	"os"
	"sync"
	"time"

	"meshroot/radio/meshproto"
)

// packetMux shares one control-plane socket between the node's meshproto users (the radio
// manager, the mesh node, the controller finder): every datagram read goes to every
// subscriber, each of which verifies it with its own meshproto.Opener (one opener per reader
// keeps each one's replay window whole) and keeps the types it handles; what they send goes out
// through the one socket, sealed by one shared meshproto.Sealer (one sender, one epoch).
type packetMux struct {
	pc   net.PacketConn
	mu   sync.Mutex
	subs []*muxConn
	done chan struct{}
}

type packet struct {
	b    []byte
	from net.Addr
}

func newPacketMux(pc net.PacketConn) *packetMux {
	m := &packetMux{pc: pc, done: make(chan struct{})}
	go m.read()
	return m
}

func (m *packetMux) read() {
	defer close(m.done)
	buf := make([]byte, meshproto.MaxDatagram+1)
	for {
		n, from, err := m.pc.ReadFrom(buf)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return
		}
		m.mu.Lock()
		subs := append([]*muxConn(nil), m.subs...)
		m.mu.Unlock()
		for _, s := range subs {
			select {
			case s.in <- packet{b: append([]byte(nil), buf[:n]...), from: from}:
			default: // a reader that falls behind loses datagrams, as on a full socket buffer
			}
		}
	}
}

// conn returns a new subscriber.
func (m *packetMux) conn() *muxConn {
	c := &muxConn{m: m, in: make(chan packet, 256), changed: make(chan struct{}), closed: make(chan struct{})}
	m.mu.Lock()
	m.subs = append(m.subs, c)
	m.mu.Unlock()
	return c
}

// Close closes the socket; every subscriber's reads end.
func (m *packetMux) Close() error {
	err := m.pc.Close()
	<-m.done
	return err
}

// muxConn is one subscriber: a net.PacketConn whose reads come from the mux and honour read
// deadlines (meshproto.Conn.Receive cancels with one), and whose writes go to the socket.
type muxConn struct {
	m       *packetMux
	in      chan packet
	mu      sync.Mutex
	dl      time.Time
	changed chan struct{}
	closed  chan struct{}
	once    sync.Once
}

func (c *muxConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		c.mu.Lock()
		dl, changed := c.dl, c.changed
		c.mu.Unlock()
		var timeout <-chan time.Time
		var t *time.Timer
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			t = time.NewTimer(d)
			timeout = t.C
		}
		n, from, err, again := 0, net.Addr(nil), error(nil), false
		select {
		case pk := <-c.in:
			n, from = copy(p, pk.b), pk.from
		case <-timeout:
			err = os.ErrDeadlineExceeded
		case <-changed:
			again = true
		case <-c.closed:
			err = net.ErrClosed
		case <-c.m.done:
			err = net.ErrClosed
		}
		if t != nil {
			t.Stop()
		}
		if !again {
			return n, from, err
		}
	}
}

func (c *muxConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	return c.m.pc.WriteTo(p, addr)
}

func (c *muxConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *muxConn) LocalAddr() net.Addr { return c.m.pc.LocalAddr() }

func (c *muxConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

func (c *muxConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.dl = t
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	return nil
}

func (c *muxConn) SetWriteDeadline(time.Time) error { return nil }
