package ike

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/netip"
	"sync"
	"time"
)

// Sender transmits one UDP datagram. b is the complete UDP payload (on the NAT-T port it
// already starts with the non-ESP marker); local and remote name the socket to use and the
// destination. Send must not block for long and must not call into the Conn.
type Sender interface {
	Send(b []byte, local, remote netip.AddrPort) error
}

// Options are a Conn's collaborators. Only Sender is required.
type Options struct {
	Sender    Sender
	DataPlane DataPlane    // nil: IKE only (no CHILD SAs are installed anywhere)
	OnEvent   func(Event)  // nil: events are only logged
	Logger    *slog.Logger // nil: discard
	Clock     Clock        // nil: real time
	Rand      io.Reader    // nil: crypto/rand
	// AllocSPI, if set, allocates inbound CHILD SA SPIs (so that several Conns sharing one ESP
	// socket never collide); nil: random, >= 256.
	AllocSPI func() uint32
}

// ErrClosed is returned by operations on a closed Conn.
var ErrClosed = errors.New("ike: connection closed")

// ErrPeerDead is the result of a failed Probe.
var ErrPeerDead = errors.New("ike: peer did not answer")

// Conn is one IKEv2 connection (one tunnel): the current IKE SA, its CHILD SAs, rekeying, DPD
// and retries. It is safe for concurrent use. Packets enter through HandlePacket; timers run
// on the Clock; events leave through Options.OnEvent.
type Conn struct {
	cfg  *compiled
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	closed   bool
	sas      map[uint64]*ikeSA // by our SPI
	initReqs map[initKey]*ikeSA
	cur      *ikeSA // the SA new exchanges go to
	children []*childSA
	serial   int

	wantUp     bool // keep (re-)initiating
	attempts   int  // consecutive failed attempts
	retryTimer Timer
	dpdTimer   Timer
	kaTimer    Timer
	lastError  string
	counters   Counters
	cookieKey  []byte

	// ordered event delivery
	evMu     sync.Mutex
	evClosed bool
	evQ      []Event
	evWake   chan struct{}
	evDone   chan struct{}
}

type initKey struct {
	remote netip.Addr
	spiI   uint64
}

// NewConn validates cfg and creates a connection. Call Start to bring it up (or to wait for
// the peer, with StartAction add), and Close when done.
func NewConn(cfg Config, opts Options) (*Conn, error) {
	cc, err := cfg.compile()
	if err != nil {
		return nil, err
	}
	if opts.Sender == nil {
		return nil, errors.New("ike: Options.Sender is required")
	}
	if opts.Clock == nil {
		opts.Clock = realClock{}
	}
	if opts.Rand == nil {
		opts.Rand = rand.Reader
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Conn{
		cfg:      cc,
		opts:     opts,
		log:      opts.Logger.With("tunnel", cc.Name),
		sas:      map[uint64]*ikeSA{},
		initReqs: map[initKey]*ikeSA{},
		evWake:   make(chan struct{}, 1),
		evDone:   make(chan struct{}),
	}
	c.cookieKey = c.random(32)
	go c.deliverEvents()
	return c, nil
}

// Name is the tunnel name from the configuration.
func (c *Conn) Name() string { return c.cfg.Name }

// Start brings the connection up: with StartAction start it initiates (and keeps trying, see
// KeyingTries); with add it only answers the peer.
func (c *Conn) Start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.scheduleKeepalive()
	if c.cfg.StartAction == StartStart {
		c.wantUp = true
		if c.cur == nil {
			c.initiate()
		}
	}
}

// Initiate starts a new IKE SA now (if none is up or being set up) and keeps the connection up
// from then on, as StartAction start does.
func (c *Conn) Initiate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.wantUp = true
	if c.cur == nil {
		c.stopRetry()
		c.initiate()
	}
}

// Close deletes the IKE SA (sending DELETE and waiting briefly for the answer, bounded by ctx),
// removes every CHILD SA from the data plane, and stops all timers and event delivery.
func (c *Conn) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.wantUp = false
	c.stopRetry()
	done := make(chan struct{})
	var once sync.Once
	finish := func() { once.Do(func() { close(done) }) }
	sa := c.cur
	if sa != nil && sa.state >= saEstablished && sa.state <= saRekeying {
		sa.queue = nil
		sa.enqueue("close", func(sa *ikeSA) bool {
			sa.state = saDeleting
			sa.sendRequest(ExchangeInformational, "delete IKE_SA", []Payload{&DeletePayload{Protocol: ProtoIKE}},
				func(*Message) { finish() }, func(string) { finish() })
			return true
		})
	} else {
		finish()
	}
	c.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
	}
	c.mu.Lock()
	c.destroyAll("closed locally", false)
	c.closed = true
	stop(c.dpdTimer)
	stop(c.kaTimer)
	c.mu.Unlock()
	c.evMu.Lock()
	c.evClosed = true
	close(c.evWake)
	c.evMu.Unlock()
	<-c.evDone
	return nil
}

// RekeyChild rekeys the installed CHILD SA now (as its lifetime would).
func (c *Conn) RekeyChild() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	ch := c.activeChild()
	if ch == nil || c.cur == nil || c.cur.state != saEstablished {
		return errors.New("ike: no established CHILD SA to rekey")
	}
	if ch.state != childInstalled {
		return fmt.Errorf("ike: the CHILD SA is %s already", ch.state)
	}
	c.queueChildRekey(ch)
	return nil
}

// RekeyIKE rekeys the IKE SA now.
func (c *Conn) RekeyIKE() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	if c.cur == nil || c.cur.state != saEstablished {
		return errors.New("ike: no established IKE SA to rekey")
	}
	c.queueIKERekey(c.cur)
	return nil
}

// Probe checks now that the peer is alive with a liveness check that gives up after timeout
// (issue 4's fast failover): if an exchange is already outstanding it is retransmitted at once
// and held to the same deadline. The channel yields nil when the peer answers, or ErrPeerDead
// (after which DPDAction applies, as for DPD).
func (c *Conn) Probe(timeout time.Duration) <-chan error {
	ch := make(chan error, 1)
	c.mu.Lock()
	defer c.mu.Unlock()
	sa := c.cur
	if c.closed || sa == nil || sa.state < saEstablished || sa.state > saRekeying {
		ch <- errors.New("ike: no established IKE SA to probe")
		return ch
	}
	if timeout < 10*time.Millisecond {
		timeout = 10 * time.Millisecond
	}
	if r := sa.pending; r != nil {
		r.probes = append(r.probes, ch)
		r.tighten(c.now().Add(timeout), timeout/4)
		return ch
	}
	sa.sendRequest(ExchangeInformational, "liveness probe", nil, func(*Message) {}, nil)
	r := sa.pending
	r.probes = append(r.probes, ch)
	r.dpd = true
	r.tighten(c.now().Add(timeout), timeout/4)
	return ch
}

// Status returns a snapshot.
func (c *Conn) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	p1, p2 := c.phases()
	st := Status{Tunnel: c.cfg.Name, Phase1: p1, Phase2: p2, DPDEnabled: c.cfg.DPDInterval > 0,
		Counters: c.counters, LastError: c.lastError}
	if sa := c.cur; sa != nil && sa.state >= saEstablished {
		info := sa.info()
		st.IKE = &info
		st.NATDetected = sa.natT
	}
	for _, ch := range c.children {
		if ch.state != childDeleted && ch.state != childCreating && !ch.redundant {
			st.Children = append(st.Children, ch.info())
		}
	}
	return st
}

// Counters returns the cumulative counters.
func (c *Conn) Counters() Counters {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counters
}

// HandlePacket processes one UDP datagram received on local from remote. Datagrams received
// on the NAT-T port (LocalNATTPort) carry the non-ESP marker, which is checked and removed
// here; NAT keepalives are ignored.
func (c *Conn) HandlePacket(b []byte, local, remote netip.AddrPort) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	msg, ok := c.unframe(b, local, true)
	if !ok {
		return
	}
	c.handleMessage(msg, local, remote)
	c.dedupeChildren()
}

// HandleIKE processes one IKE message that a demultiplexer already took off the NAT-T port
// with the non-ESP marker stripped (vpn/esp's Mux OnIKE callback). b is not kept after the call.
func (c *Conn) HandleIKE(b []byte, local, remote netip.AddrPort) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.handleMessage(b, local, remote)
	c.dedupeChildren()
}

// unframe strips the non-ESP marker on the NAT-T port (RFC 3948 §2.2). It is the one place that
// knows about the marker on receive; ikeSA.transmit adds it on send.
func (c *Conn) unframe(b []byte, local netip.AddrPort, count bool) ([]byte, bool) {
	if local.Port() != c.cfg.LocalNATTPort {
		return b, true
	}
	if len(b) == 1 && b[0] == 0xff {
		return nil, false // NAT keepalive
	}
	if len(b) < 4+headerLen || b[0]|b[1]|b[2]|b[3] != 0 {
		if count {
			c.counters.MalformedDropped++ // ESP or garbage: not ours
		}
		return nil, false
	}
	return b[4:], true
}

// owns reports whether the datagram's IKE header names one of our SAs (for Mux).
func (c *Conn) owns(b []byte, local netip.AddrPort, remote netip.AddrPort) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	msg, ok := c.unframe(b, local, false)
	if !ok {
		return false
	}
	return c.ownsMsg(msg, remote)
}

// ownsMsg is owns for an IKE message without marker.
func (c *Conn) ownsMsg(msg []byte, remote netip.AddrPort) bool {
	if len(msg) < headerLen {
		return false
	}
	spiI := binary.BigEndian.Uint64(msg[0:8])
	spiR := binary.BigEndian.Uint64(msg[8:16])
	flags := msg[19]
	if ExchangeType(msg[18]) == ExchangeIKESAInit && flags&flagResponse == 0 && spiR == 0 {
		return remote.Addr() == c.cfg.RemoteAddr
	}
	ours := spiI
	if flags&flagInitiator != 0 {
		ours = spiR
	}
	_, found := c.sas[ours]
	return found
}

func (c *Conn) handleMessage(b []byte, local, remote netip.AddrPort) {
	h, err := parseHeader(b)
	if err != nil {
		c.counters.MalformedDropped++
		c.log.Debug("dropping malformed message", "from", remote, "err", err)
		return
	}
	if h.exchange == ExchangeIKESAInit && !h.isResponse() && h.spiR == 0 {
		c.handleInitRequest(b, h, local, remote)
		return
	}
	ours := h.spiI
	if h.flags&flagInitiator != 0 {
		ours = h.spiR
	}
	sa := c.sas[ours]
	if sa == nil {
		c.counters.UnknownSPIDropped++
		c.log.Debug("dropping message for unknown IKE SA", "from", remote, "spi_i", fmt.Sprintf("%016x", h.spiI), "spi_r", fmt.Sprintf("%016x", h.spiR))
		return
	}
	if sa.initiator {
		if sa.spiR != 0 && h.spiR != sa.spiR && !(h.exchange == ExchangeIKESAInit && h.spiR == 0) {
			c.counters.UnknownSPIDropped++
			return
		}
	} else if h.spiI != sa.spiI {
		c.counters.UnknownSPIDropped++
		return
	}
	if (h.flags&flagInitiator != 0) == sa.initiator {
		// the I flag must name the other side as the original initiator
		c.counters.MalformedDropped++
		return
	}
	sa.handle(b, h, local, remote)
}

// ---- helpers ----

func (c *Conn) now() time.Time { return c.opts.Clock.Now() }

func (c *Conn) random(n int) []byte {
	b := make([]byte, n)
	if _, err := io.ReadFull(c.opts.Rand, b); err != nil {
		panic(fmt.Sprintf("ike: random source failed: %v", err))
	}
	return b
}

func (c *Conn) nonce() []byte { return c.random(32) }

// newSPI64 returns a fresh, non-zero IKE SPI unused in this Conn.
func (c *Conn) newSPI64() uint64 {
	for {
		s := binary.BigEndian.Uint64(c.random(8))
		if _, used := c.sas[s]; s != 0 && !used {
			return s
		}
	}
}

// newSPI32 returns a fresh inbound CHILD SA SPI (>= 256, RFC 4303 §2.1).
func (c *Conn) newSPI32() uint32 {
	for {
		var s uint32
		if c.opts.AllocSPI != nil {
			s = c.opts.AllocSPI()
		} else {
			s = binary.BigEndian.Uint32(c.random(4))
		}
		if s < 256 {
			continue
		}
		used := false
		for _, ch := range c.children {
			if ch.spiIn == s {
				used = true
			}
		}
		if !used {
			return s
		}
	}
}

// jitter returns d scaled by a random factor in [1-f, 1+f].
func (c *Conn) jitter(d time.Duration, f float64) time.Duration {
	n, _ := rand.Int(c.opts.Rand, big.NewInt(1000))
	x := float64(n.Int64())/1000*2 - 1
	return time.Duration(float64(d) * (1 + f*x))
}

// randDur returns a uniform duration in [0, d].
func (c *Conn) randDur(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	n, _ := rand.Int(c.opts.Rand, big.NewInt(int64(d)+1))
	return time.Duration(n.Int64())
}

// after runs f with the Conn locked after d, unless the Conn is closed by then.
func (c *Conn) after(d time.Duration, f func()) Timer {
	return c.opts.Clock.AfterFunc(d, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.closed {
			return
		}
		f()
		c.dedupeChildren()
	})
}

func stop(t Timer) {
	if t != nil {
		t.Stop()
	}
}

// natdHash is SHA1(SPIi | SPIr | IP | port) (RFC 7296 §2.23).
func natdHash(spiI, spiR uint64, ap netip.AddrPort) []byte {
	h := sha1.New()
	var b [18]byte
	binary.BigEndian.PutUint64(b[0:8], spiI)
	binary.BigEndian.PutUint64(b[8:16], spiR)
	h.Write(b[:16])
	h.Write(ap.Addr().Unmap().AsSlice())
	binary.BigEndian.PutUint16(b[16:18], ap.Port())
	h.Write(b[16:18])
	return h.Sum(nil)
}

// cookie computes the responder cookie: version | SHA-256(Ni | IPi | SPIi | secret)[:16]
// (RFC 7296 §2.6).
func (c *Conn) cookie(ni []byte, ip netip.Addr, spiI uint64) []byte {
	h := sha256.New()
	h.Write(ni)
	h.Write(ip.Unmap().AsSlice())
	_ = binary.Write(h, binary.BigEndian, spiI)
	h.Write(c.cookieKey)
	return append([]byte{1}, h.Sum(nil)[:16]...)
}

// ---- events ----

func (c *Conn) emit(ev Event) {
	ev.Time = c.now()
	ev.Tunnel = c.cfg.Name
	ev.Phase1, ev.Phase2 = c.phases()
	if c.cur != nil {
		ev.NATDetected = c.cur.natT
	}
	c.evMu.Lock()
	if !c.evClosed {
		c.evQ = append(c.evQ, ev)
		select {
		case c.evWake <- struct{}{}:
		default:
		}
	}
	c.evMu.Unlock()
}

func (c *Conn) deliverEvents() {
	defer close(c.evDone)
	for {
		_, ok := <-c.evWake
		c.evMu.Lock()
		q := c.evQ
		c.evQ = nil
		c.evMu.Unlock()
		for _, ev := range q {
			if c.opts.OnEvent != nil {
				c.opts.OnEvent(ev)
			}
		}
		if !ok {
			return
		}
	}
}

// phases computes AWS's ike_phase1_state and ike_phase2_state.
func (c *Conn) phases() (State, State) {
	p1, p2 := StateDown, StateDown
	if sa := c.cur; sa != nil {
		switch sa.state {
		case saInitSent, saAuthSent, saHalfOpen:
			p1 = StateNegotiating
		case saEstablished, saDeleting:
			p1 = StateEstablished
			if sa.rekey != nil {
				p1 = StateRekeying
			}
		case saRekeying:
			p1 = StateRekeying
		}
	} else if c.wantUp && c.retryTimer != nil {
		p1 = StateNegotiating
	}
	for _, ch := range c.children {
		if ch.redundant || ch.state == childDeleted || ch.state == childCreating {
			continue
		}
		switch {
		case ch.state == childRekeying || (ch.state == childRekeyed && ch.outbound):
			p2 = StateRekeying
		case ch.outbound && p2 == StateDown:
			p2 = StateEstablished
		}
	}
	if p2 == StateDown && p1 == StateNegotiating {
		p2 = StateNegotiating
	}
	return p1, p2
}

// activeChild is the CHILD SA carrying outbound traffic (or nil), whatever its rekey state.
func (c *Conn) activeChild() *childSA {
	for _, ch := range c.children {
		if ch.outbound && ch.state != childDeleted {
			return ch
		}
	}
	return nil
}

func (c *Conn) setError(s string) { c.lastError = s }

// ---- keepalives and DPD ----

func (c *Conn) scheduleKeepalive() {
	if c.cfg.KeepaliveInterval < 0 {
		return
	}
	stop(c.kaTimer)
	c.kaTimer = c.after(c.cfg.KeepaliveInterval, func() {
		if sa := c.cur; sa != nil && sa.natT && (sa.natLocal || c.cfg.ForceEncap) && sa.state >= saEstablished {
			if time.Duration(c.now().Sub(sa.lastSent)) >= c.cfg.KeepaliveInterval/2 {
				_ = c.opts.Sender.Send([]byte{0xff}, sa.local, sa.remote)
			}
		}
		c.scheduleKeepalive()
	})
}

func (c *Conn) scheduleDPD() {
	stop(c.dpdTimer)
	if c.cfg.DPDInterval < 0 {
		return
	}
	c.dpdTimer = c.after(c.cfg.DPDInterval, c.dpdCheck)
}

func (c *Conn) dpdCheck() {
	c.dpdTimer = nil
	sa := c.cur
	if sa == nil || sa.state != saEstablished {
		return
	}
	last := sa.lastRecv
	if ar, ok := c.opts.DataPlane.(ActivityReporter); ok {
		for _, ch := range c.children {
			if t := ar.LastInbound(ch.spiIn); t.After(last) {
				last = t
			}
		}
	}
	idle := c.now().Sub(last)
	if idle < c.cfg.DPDInterval {
		stop(c.dpdTimer)
		c.dpdTimer = c.after(c.cfg.DPDInterval-idle, c.dpdCheck)
		return
	}
	if sa.pending == nil && !sa.hasTask("dpd") {
		sa.enqueue("dpd", func(sa *ikeSA) bool {
			sa.sendRequest(ExchangeInformational, "DPD liveness check", nil, func(*Message) {}, nil)
			sa.pending.dpd = true
			sa.pending.tighten(c.now().Add(c.cfg.DPDTimeout), 0)
			return true
		})
	}
	c.scheduleDPD()
}

// ---- establishment retries ----

func (c *Conn) stopRetry() {
	stop(c.retryTimer)
	c.retryTimer = nil
}

// failed records an establishment failure and schedules the next attempt if we keep the
// connection up.
func (c *Conn) failed(reason string) {
	c.setError(reason)
	c.attempts++
	if !c.wantUp || c.closed {
		return
	}
	if c.cfg.KeyingTries > 0 && c.attempts >= c.cfg.KeyingTries {
		c.log.Error("giving up initiating after failed attempts", "attempts", c.attempts, "last_error", reason)
		c.wantUp = false
		return
	}
	d := c.cfg.RetryInterval
	for i := 1; i < c.attempts && d < c.cfg.RetryMax; i++ {
		d *= 2
	}
	if d > c.cfg.RetryMax {
		d = c.cfg.RetryMax
	}
	d = c.jitter(d, 0.2)
	c.log.Info("retrying IKE_SA establishment", "in", d.Round(time.Millisecond), "attempt", c.attempts+1)
	c.stopRetry()
	c.retryTimer = c.after(d, func() {
		c.retryTimer = nil
		if c.wantUp && c.cur == nil {
			c.initiate()
		}
	})
}

// destroyAll removes every SA (and every CHILD SA from the data plane) without sending
// anything. The IKE down event carries reason.
func (c *Conn) destroyAll(reason string, event bool) {
	hadUp := c.cur != nil && c.cur.state >= saEstablished
	var info IKEInfo
	if c.cur != nil {
		info = c.cur.info()
	}
	for _, sa := range c.sas {
		sa.destroy()
	}
	for _, ch := range append([]*childSA(nil), c.children...) {
		c.removeChild(ch, true, reason, event)
	}
	c.cur = nil
	if hadUp && event {
		c.log.Info("IKE_SA down", "reason", reason)
		c.emit(Event{Type: EventIKEDown, Reason: reason, IKE: info})
	}
}
