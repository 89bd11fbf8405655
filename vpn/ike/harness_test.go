package ike

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"meshroot/internal/testenv"
)

// ---- fake clock ----

type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	seq    int
	timers []*fakeTimer
}

type fakeTimer struct {
	c       *fakeClock
	at      time.Time
	seq     int
	f       func()
	stopped bool
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	t := &fakeTimer{c: c, at: c.now.Add(d), seq: c.seq, f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

// next pops the earliest timer due at or before limit.
func (c *fakeClock) next(limit time.Time) *fakeTimer {
	c.mu.Lock()
	defer c.mu.Unlock()
	live := c.timers[:0]
	for _, t := range c.timers {
		if !t.stopped {
			live = append(live, t)
		}
	}
	c.timers = live
	sort.Slice(c.timers, func(i, j int) bool {
		if !c.timers[i].at.Equal(c.timers[j].at) {
			return c.timers[i].at.Before(c.timers[j].at)
		}
		return c.timers[i].seq < c.timers[j].seq
	})
	if len(c.timers) == 0 || c.timers[0].at.After(limit) {
		return nil
	}
	t := c.timers[0]
	c.timers = c.timers[1:]
	t.stopped = true
	if t.at.After(c.now) {
		c.now = t.at
	}
	return t
}

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.now) {
		c.now = t
	}
}

// ---- fake network ----

type packet struct {
	b        []byte
	from, to netip.AddrPort
}

type fakeNet struct {
	mu    sync.Mutex
	queue []packet
	conns map[netip.Addr]*Conn
	// drop, if set, decides per packet (after capture).
	drop func(p packet) bool
	// hold keeps packets for which it returns true out of delivery until released.
	hold  func(p packet) bool
	held  []packet
	sent  []packet
	clock *fakeClock
	// espMux delivers NAT-T datagrams the way vpn/esp's Mux does: marker stripped, through
	// HandleIKE; keepalives are not delivered.
	espMux bool
}

func newFakeNet(clock *fakeClock) *fakeNet {
	return &fakeNet{conns: map[netip.Addr]*Conn{}, clock: clock}
}

type netSender struct{ n *fakeNet }

func (s netSender) Send(b []byte, local, remote netip.AddrPort) error {
	s.n.mu.Lock()
	defer s.n.mu.Unlock()
	p := packet{append([]byte(nil), b...), local, remote}
	s.n.sent = append(s.n.sent, p)
	s.n.queue = append(s.n.queue, p)
	return nil
}

// deliver delivers queued packets until none is left; it reports how many were delivered.
func (n *fakeNet) deliver() int {
	count := 0
	for {
		n.mu.Lock()
		if len(n.queue) == 0 {
			n.mu.Unlock()
			return count
		}
		p := n.queue[0]
		n.queue = n.queue[1:]
		drop := n.drop != nil && n.drop(p)
		if !drop && n.hold != nil && n.hold(p) {
			n.held = append(n.held, p)
			drop = true
		}
		c := n.conns[p.to.Addr()]
		n.mu.Unlock()
		if drop || c == nil {
			continue
		}
		count++
		if n.espMux && p.to.Port() == 4500 {
			if len(p.b) >= 4 && p.b[0]|p.b[1]|p.b[2]|p.b[3] == 0 {
				c.HandleIKE(p.b[4:], p.to, p.from)
			}
			continue
		}
		c.HandlePacket(p.b, p.to, p.from)
	}
}

// release re-queues held packets (in order).
func (n *fakeNet) release() {
	n.mu.Lock()
	n.queue = append(n.queue, n.held...)
	n.held = nil
	n.hold = nil
	n.mu.Unlock()
}

// run delivers packets and fires timers until cond holds or d of fake time passed.
func (n *fakeNet) run(d time.Duration, cond func() bool) bool {
	limit := n.clock.Now().Add(d)
	for {
		n.deliver()
		if cond != nil && cond() {
			return true
		}
		t := n.clock.next(limit)
		if t == nil {
			n.clock.set(limit)
			n.deliver()
			return cond != nil && cond()
		}
		t.f()
		// timers due at the same instant fire before any datagram moves: simultaneous events
		// (both sides' rekey timers) really are simultaneous
		for {
			u := n.clock.next(t.at)
			if u == nil {
				break
			}
			u.f()
		}
	}
}

// ---- fake data plane ----

type fakeDP struct {
	mu     sync.Mutex
	in     map[uint32]*ChildSA
	out    *ChildSA
	log    []string
	lastIn time.Time
}

func newFakeDP() *fakeDP { return &fakeDP{in: map[uint32]*ChildSA{}} }

func (d *fakeDP) AddInbound(sa *ChildSA) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, dup := d.in[sa.SPIIn]; dup {
		return fmt.Errorf("duplicate SPI %08x", sa.SPIIn)
	}
	d.in[sa.SPIIn] = sa
	d.log = append(d.log, fmt.Sprintf("in+ %08x", sa.SPIIn))
	return nil
}

func (d *fakeDP) SetOutbound(sa *ChildSA) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.in[sa.SPIIn]; !ok {
		return fmt.Errorf("outbound %08x before its inbound", sa.SPIOut)
	}
	d.out = sa
	d.log = append(d.log, fmt.Sprintf("out %08x", sa.SPIOut))
	return nil
}

func (d *fakeDP) DelInbound(spi uint32) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.in, spi)
	d.log = append(d.log, fmt.Sprintf("in- %08x", spi))
}

func (d *fakeDP) DelOutbound(spi uint32) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.out != nil && d.out.SPIOut == spi {
		d.out = nil
	}
	d.log = append(d.log, fmt.Sprintf("out- %08x", spi))
}

func (d *fakeDP) LastInbound(uint32) time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lastIn
}

func (d *fakeDP) outbound() *ChildSA {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.out
}

func (d *fakeDP) inbound(spi uint32) *ChildSA {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.in[spi]
}

func (d *fakeDP) numIn() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.in)
}

// agree reports whether a's outbound SA is installed inbound at b with the same keys.
func agree(a, b *fakeDP) error {
	out := a.outbound()
	if out == nil {
		return fmt.Errorf("no outbound SA")
	}
	in := b.inbound(out.SPIOut)
	if in == nil {
		return fmt.Errorf("outbound SPI %08x is not installed inbound at the peer", out.SPIOut)
	}
	if !bytes.Equal(out.EncKeyOut, in.EncKeyIn) || !bytes.Equal(out.IntegKeyOut, in.IntegKeyIn) {
		return fmt.Errorf("keys of SPI %08x differ", out.SPIOut)
	}
	if out.EncrID != in.EncrID || out.IntegID != in.IntegID || out.EncrKeyBits != in.EncrKeyBits {
		return fmt.Errorf("algorithms of SPI %08x differ: %s vs %s", out.SPIOut, out.Suite, in.Suite)
	}
	if len(out.EncKeyOut) != out.EncrKeyBits/8+map[bool]int{true: 4, false: 0}[out.IntegID == 0] {
		return fmt.Errorf("encryption key of %d bytes for %s", len(out.EncKeyOut), out.Suite)
	}
	return nil
}

// ---- log capture ----

type logBuf = testenv.Buffer

// ---- a pair of Conns ----

type end struct {
	c    *Conn
	dp   *fakeDP
	logs *logBuf
	evMu sync.Mutex
	evs  []Event
}

func (e *end) events() []Event {
	e.evMu.Lock()
	defer e.evMu.Unlock()
	return append([]Event(nil), e.evs...)
}

func (e *end) hasEvent(t EventType) bool {
	for _, ev := range e.events() {
		if ev.Type == t {
			return true
		}
	}
	return false
}

type pair struct {
	t     testing.TB
	clock *fakeClock
	net   *fakeNet
	a, b  *end // a = 198.51.100.2 (initiator by default), b = 198.51.100.1
}

var (
	addrA = netip.MustParseAddr("198.51.100.2")
	addrB = netip.MustParseAddr("198.51.100.1")
)

const testPSK = "lab-psk-0123456789abcdef"

func baseConfig(local, remote netip.Addr) Config {
	return Config{
		Name: "t-" + local.String(), LocalAddr: local, RemoteAddr: remote, PSK: testPSK,
		IKELifetime: 28800 * time.Second, ChildLifetime: 3600 * time.Second,
	}
}

// newPair builds two connected Conns; mod adjusts each config before creation.
func newPair(t *testing.T, modA, modB func(*Config)) *pair {
	t.Helper()
	return newPairRand(t, modA, modB, nil, nil)
}

// newPairRand is newPair with given random sources (nil: crypto/rand), for reproducible runs.
func newPairRand(t *testing.T, modA, modB func(*Config), randA, randB io.Reader) *pair {
	t.Helper()
	p := &pair{t: t, clock: newFakeClock()}
	p.net = newFakeNet(p.clock)
	rnd := map[netip.Addr]io.Reader{addrA: randA, addrB: randB}
	mk := func(local, remote netip.Addr, mod func(*Config)) *end {
		cfg := baseConfig(local, remote)
		if mod != nil {
			mod(&cfg)
		}
		e := &end{dp: newFakeDP(), logs: &logBuf{}}
		c, err := NewConn(cfg, Options{
			Sender: netSender{p.net}, DataPlane: e.dp, Clock: p.clock, Rand: rnd[local],
			Logger:  slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			OnEvent: func(ev Event) { e.evMu.Lock(); e.evs = append(e.evs, ev); e.evMu.Unlock() },
		})
		if err != nil {
			t.Fatalf("NewConn(%s) = %v", local, err)
		}
		e.c = c
		p.net.conns[local] = c
		return e
	}
	p.a = mk(addrA, addrB, func(c *Config) {
		c.StartAction = StartStart
		if modA != nil {
			modA(c)
		}
	})
	p.b = mk(addrB, addrA, modB)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		_ = p.a.c.Close(ctx)
		_ = p.b.c.Close(ctx)
		if t.Failed() {
			t.Logf("logs of A:\n%s", tailLines(p.a.logs.String(), 60))
			t.Logf("logs of B:\n%s", tailLines(p.b.logs.String(), 60))
		}
	})
	return p
}

func tailLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

func (p *pair) start() {
	p.b.c.Start()
	p.a.c.Start()
}

// up reports whether both sides have an established IKE SA and agreeing CHILD SAs.
func (p *pair) up() bool {
	sa, sb := p.a.c.Status(), p.b.c.Status()
	return sa.Phase1 == StateEstablished && sb.Phase1 == StateEstablished &&
		sa.Phase2 == StateEstablished && sb.Phase2 == StateEstablished &&
		agree(p.a.dp, p.b.dp) == nil && agree(p.b.dp, p.a.dp) == nil
}

func (p *pair) mustUp(d time.Duration) {
	p.t.Helper()
	if !p.net.run(d, p.up) {
		sa, sb := p.a.c.Status(), p.b.c.Status()
		p.t.Fatalf("not up after %v: A %s/%s (%s) B %s/%s (%s); agree A->B: %v, B->A: %v", d,
			sa.Phase1, sa.Phase2, sa.LastError, sb.Phase1, sb.Phase2, sb.LastError, agree(p.a.dp, p.b.dp), agree(p.b.dp, p.a.dp))
	}
}

// settle runs d of fake time and then checks the converged state: one installed CHILD SA pair,
// keys agreeing both ways, nothing else left in the data planes.
func (p *pair) checkConverged(d time.Duration) {
	p.t.Helper()
	p.net.run(d, nil)
	if err := agree(p.a.dp, p.b.dp); err != nil {
		p.t.Errorf("A->B: %v", err)
	}
	if err := agree(p.b.dp, p.a.dp); err != nil {
		p.t.Errorf("B->A: %v", err)
	}
	if na, nb := p.a.dp.numIn(), p.b.dp.numIn(); na != 1 || nb != 1 {
		p.t.Errorf("inbound SAs after settling: A %d, B %d; want 1 and 1 (A: %v, B: %v)", na, nb, p.a.dp.log, p.b.dp.log)
	}
	for _, e := range []*end{p.a, p.b} {
		st := e.c.Status()
		if len(st.Children) != 1 {
			p.t.Errorf("%s: %d CHILD SAs in Status; want 1: %+v", e.c.Name(), len(st.Children), st.Children)
		}
		if st.Phase1 != StateEstablished || st.Phase2 != StateEstablished {
			p.t.Errorf("%s: phases %s/%s; want Established/Established", e.c.Name(), st.Phase1, st.Phase2)
		}
	}
}

// waitEvent waits (real time: events are delivered by the Conn's goroutine) for an event.
func (e *end) waitEvent(typ EventType) bool {
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if e.hasEvent(typ) {
			return true
		}
		time.Sleep(time.Millisecond)
	}
	return false
}
