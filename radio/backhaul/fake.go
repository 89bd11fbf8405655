package backhaul

import (
	"errors"
	"net"
	"sync"
	"time"
)

// FakeLAN is an in-memory set of link segments for unit tests only: every node's port on a
// segment hears the broadcasts of the others, unless the segment is cut; carriers are set by
// the test.
type FakeLAN struct {
	mu       sync.Mutex
	segments map[string]map[string]*fakeConn // segment → node → conn
	cut      map[string]bool
	carrier  map[[2]string]bool // (node, iface)
	nextIP   byte
}

// NewFakeLAN returns an empty LAN.
func NewFakeLAN() *FakeLAN {
	return &FakeLAN{segments: map[string]map[string]*fakeConn{}, cut: map[string]bool{}, carrier: map[[2]string]bool{}}
}

// Cut stops (or restores) delivery on a segment; carriers stay as they are (a switch in
// between: the far side went away).
func (l *FakeLAN) Cut(segment string, cut bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut[segment] = cut
}

// SetCarrier sets a node's port carrier.
func (l *FakeLAN) SetCarrier(node, iface string, up bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.carrier[[2]string{node, iface}] = up
}

// Net returns node's view of the LAN: its port iface sits on segment seg[iface].
func (l *FakeLAN) Net(node string, seg map[string]string) *FakeNet {
	l.mu.Lock()
	defer l.mu.Unlock()
	for iface := range seg {
		l.carrier[[2]string{node, iface}] = true
	}
	return &FakeNet{lan: l, node: node, seg: seg}
}

// FakeNet is one node's Net on a FakeLAN.
type FakeNet struct {
	lan  *FakeLAN
	node string
	seg  map[string]string

	mu    sync.Mutex
	uses  []FakeUse
	speed map[string]float64
}

// FakeUse records a Use call.
type FakeUse struct {
	At      time.Time
	Iface   string
	NextHop net.IP
}

// Uses returns the Use calls so far.
func (n *FakeNet) Uses() []FakeUse {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]FakeUse(nil), n.uses...)
}

// SetMbps sets a link's throughput estimate.
func (n *FakeNet) SetMbps(iface string, mbps float64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.speed == nil {
		n.speed = map[string]float64{}
	}
	n.speed[iface] = mbps
}

// Listen implements Net.
func (n *FakeNet) Listen(iface string, port int) (net.PacketConn, error) {
	seg, ok := n.seg[iface]
	if !ok {
		return nil, errors.New("fake backhaul: no port " + iface)
	}
	l := n.lan
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.segments[seg] == nil {
		l.segments[seg] = map[string]*fakeConn{}
	}
	l.nextIP++
	c := &fakeConn{lan: l, seg: seg, node: n.node, iface: iface, addr: &net.UDPAddr{IP: net.IPv4(10, 99, 0, l.nextIP), Port: port},
		in: make(chan fakePacket, 64), done: make(chan struct{})}
	l.segments[seg][n.node] = c
	return c, nil
}

// Carrier implements Net.
func (n *FakeNet) Carrier(iface string) (bool, error) {
	n.lan.mu.Lock()
	defer n.lan.mu.Unlock()
	return n.lan.carrier[[2]string{n.node, iface}], nil
}

// LinkMbps implements Net.
func (n *FakeNet) LinkMbps(iface string) float64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.speed[iface]
}

// Use implements Net.
func (n *FakeNet) Use(iface string, nextHop net.IP) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.uses = append(n.uses, FakeUse{At: time.Now(), Iface: iface, NextHop: nextHop})
	return nil
}

type fakePacket struct {
	b    []byte
	from net.Addr
}

type fakeConn struct {
	lan              *FakeLAN
	seg, node, iface string
	addr             *net.UDPAddr
	in               chan fakePacket
	done             chan struct{}
	once             sync.Once
}

func (c *fakeConn) ReadFrom(p []byte) (int, net.Addr, error) {
	select {
	case pk := <-c.in:
		return copy(p, pk.b), pk.from, nil
	case <-c.done:
		return 0, nil, net.ErrClosed
	}
}

func (c *fakeConn) WriteTo(p []byte, _ net.Addr) (int, error) {
	l := c.lan
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cut[c.seg] || !l.carrier[[2]string{c.node, c.iface}] {
		return len(p), nil
	}
	for node, o := range l.segments[c.seg] {
		if node == c.node || !l.carrier[[2]string{node, o.iface}] {
			continue
		}
		select {
		case o.in <- fakePacket{b: append([]byte(nil), p...), from: c.addr}:
		default:
		}
	}
	return len(p), nil
}

func (c *fakeConn) Close() error {
	c.once.Do(func() { close(c.done) })
	return nil
}

func (c *fakeConn) LocalAddr() net.Addr                { return c.addr }
func (c *fakeConn) SetDeadline(t time.Time) error      { return nil }
func (c *fakeConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *fakeConn) SetWriteDeadline(t time.Time) error { return nil }
