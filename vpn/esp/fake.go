package esp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
)

// Fakes of the kernel-facing parts, for unit tests of this package and of the tunnel layer:
// FakeNetwork (a UDP network of FakeConns, with a hook to drop, tamper with or inject
// datagrams) and FakeTUN (a TUN device fed and drained through channels). They copy packets and
// allocate freely; they are not for benchmarks of the real I/O.

const fakeQueue = 8192

type fakeDgram struct {
	from netip.AddrPort
	b    []byte
}

// FakeNetwork delivers datagrams between FakeConns by destination address.
type FakeNetwork struct {
	mu    sync.Mutex
	conns map[netip.AddrPort]*FakeConn
	// Filter, when set before traffic starts, sees every datagram sent (not injected) and may
	// change b in place; returning false drops it.
	Filter func(from, to netip.AddrPort, b []byte) bool
	// Dropped counts datagrams lost to a full queue, an unknown destination or Filter.
	Dropped atomic.Uint64
}

// NewFakeNetwork returns an empty network.
func NewFakeNetwork() *FakeNetwork {
	return &FakeNetwork{conns: map[netip.AddrPort]*FakeConn{}}
}

// Listen binds a FakeConn to addr.
func (n *FakeNetwork) Listen(addr netip.AddrPort) (*FakeConn, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.conns[addr]; ok {
		return nil, fmt.Errorf("fake listen %s: address in use", addr)
	}
	c := &FakeConn{net: n, addr: addr, in: make(chan fakeDgram, fakeQueue), closed: make(chan struct{})}
	n.conns[addr] = c
	return c, nil
}

// Inject delivers b to the conn bound to to, as if from sent it (Filter is not applied).
func (n *FakeNetwork) Inject(from, to netip.AddrPort, b []byte) error {
	n.mu.Lock()
	c := n.conns[to]
	n.mu.Unlock()
	if c == nil {
		return fmt.Errorf("fake inject: nothing listens on %s", to)
	}
	if !c.deliver(fakeDgram{from: from, b: append([]byte(nil), b...)}) {
		return fmt.Errorf("fake inject: queue of %s full or closed", to)
	}
	return nil
}

func (n *FakeNetwork) send(from, to netip.AddrPort, b []byte) {
	b = append([]byte(nil), b...)
	if n.Filter != nil && !n.Filter(from, to, b) {
		n.Dropped.Add(1)
		return
	}
	n.mu.Lock()
	c := n.conns[to]
	n.mu.Unlock()
	if c == nil || !c.deliver(fakeDgram{from: from, b: b}) {
		n.Dropped.Add(1)
	}
}

// FakeConn is a PacketConn on a FakeNetwork.
type FakeConn struct {
	net     *FakeNetwork
	addr    netip.AddrPort
	in      chan fakeDgram
	closed  chan struct{}
	once    sync.Once
	gro     atomic.Bool
	pending *fakeDgram // read side only: a datagram that did not fit the previous GRO run
	// Sent counts datagrams sent through this conn's writers.
	Sent atomic.Uint64
}

var _ PacketConn = (*FakeConn)(nil)

// SetGRO makes ReadBatch coalesce runs of equal-sized datagrams from one sender, like UDP GRO.
func (c *FakeConn) SetGRO(on bool) { c.gro.Store(on) }

func (c *FakeConn) deliver(d fakeDgram) bool {
	select {
	case <-c.closed:
		return false
	default:
	}
	select {
	case c.in <- d:
		return true
	default:
		return false
	}
}

func (c *FakeConn) LocalAddr() netip.AddrPort { return c.addr }
func (c *FakeConn) GRO() bool                 { return c.gro.Load() }

func (c *FakeConn) Close() error {
	c.once.Do(func() {
		close(c.closed)
		c.net.mu.Lock()
		delete(c.net.conns, c.addr)
		c.net.mu.Unlock()
	})
	return nil
}

func (c *FakeConn) next(block bool) (fakeDgram, bool, error) {
	if c.pending != nil {
		d := *c.pending
		c.pending = nil
		return d, true, nil
	}
	if block {
		select {
		case d := <-c.in:
			return d, true, nil
		case <-c.closed:
			return fakeDgram{}, false, net.ErrClosed
		}
	}
	select {
	case d := <-c.in:
		return d, true, nil
	default:
		return fakeDgram{}, false, nil
	}
}

func (c *FakeConn) ReadBatch(msgs []RecvMsg) (int, error) {
	n := 0
	for n < len(msgs) {
		d, ok, err := c.next(n == 0)
		if err != nil {
			return 0, err
		}
		if !ok {
			break
		}
		m := &msgs[n]
		m.From, m.To, m.Seg, m.Truncated = d.from, c.addr.Addr(), 0, false
		m.N = copy(m.Buf, d.b)
		if m.N < len(d.b) {
			m.Truncated = true
		}
		n++
		if !c.gro.Load() || m.Truncated {
			continue
		}
		seg := len(d.b)
		for {
			d2, ok, _ := c.next(false)
			if !ok {
				break
			}
			if d2.from != d.from || len(d2.b) > seg || m.N+len(d2.b) > len(m.Buf) {
				c.pending = &d2
				break
			}
			m.N += copy(m.Buf[m.N:], d2.b)
			m.Seg = seg
			if len(d2.b) < seg {
				break
			}
		}
	}
	return n, nil
}

func (c *FakeConn) NewWriter() BatchWriter { return fakeWriter{c} }

type fakeWriter struct{ c *FakeConn }

func (w fakeWriter) WriteBatch(dst netip.AddrPort, pkts [][]byte) error {
	select {
	case <-w.c.closed:
		return net.ErrClosed
	default:
	}
	for _, p := range pkts {
		w.c.Sent.Add(1)
		w.c.net.send(w.c.addr, dst, p)
	}
	return nil
}

// FakeTUN is a TUN device whose kernel side is two channels: Inject queues a packet for the
// data plane to read (as if the kernel routed it into the tunnel), Written delivers what the
// data plane wrote (as if the kernel received it from the tunnel).
type FakeTUN struct {
	mtu    int
	batch  int
	in     chan []byte
	out    chan []byte
	closed chan struct{}
	once   sync.Once
	// Dropped counts written packets lost because nobody drained Written.
	Dropped atomic.Uint64
}

var _ TUN = (*FakeTUN)(nil)

// NewFakeTUN returns a fake TUN device with the given MTU that reads up to batch packets at
// a time.
func NewFakeTUN(mtu, batch int) *FakeTUN {
	if batch < 1 {
		batch = 1
	}
	return &FakeTUN{mtu: mtu, batch: batch, in: make(chan []byte, fakeQueue), out: make(chan []byte, fakeQueue), closed: make(chan struct{})}
}

// Inject queues pkt (copied) to be read by the data plane.
func (t *FakeTUN) Inject(pkt []byte) {
	select {
	case t.in <- append([]byte(nil), pkt...):
	case <-t.closed:
	}
}

// Written is the stream of packets the data plane wrote.
func (t *FakeTUN) Written() <-chan []byte { return t.out }

func (t *FakeTUN) BatchSize() int    { return t.batch }
func (t *FakeTUN) MTU() (int, error) { return t.mtu, nil }

func (t *FakeTUN) Close() error {
	t.once.Do(func() { close(t.closed) })
	return nil
}

func (t *FakeTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n := 0
	for n < len(bufs) && n < t.batch {
		var p []byte
		if n == 0 {
			select {
			case p = <-t.in:
			case <-t.closed:
				return 0, os.ErrClosed
			}
		} else {
			select {
			case p = <-t.in:
			default:
				return n, nil
			}
		}
		if len(p) > len(bufs[n])-offset {
			return n, fmt.Errorf("fake tun: packet of %d bytes overflows buffer of %d", len(p), len(bufs[n])-offset)
		}
		sizes[n] = copy(bufs[n][offset:], p)
		n++
	}
	return n, nil
}

func (t *FakeTUN) Write(bufs [][]byte, offset int) (int, error) {
	if offset < 10 {
		return 0, errors.New("fake tun: write offset below the virtio-net header length")
	}
	select {
	case <-t.closed:
		return 0, os.ErrClosed
	default:
	}
	for _, b := range bufs {
		select {
		case t.out <- append([]byte(nil), b[offset:]...):
		default:
			t.Dropped.Add(1)
		}
	}
	return len(bufs), nil
}
