package esp

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// MuxConfig configures a Mux.
type MuxConfig struct {
	// OnIKE receives every IKE message that arrives on the socket, with the non-ESP marker
	// stripped, the local address it was sent to and the sender. It runs on the receive
	// goroutine: it must not block, and b is valid only during the call (copy it to keep it).
	// Nil drops IKE messages (counted).
	OnIKE func(b []byte, local, remote netip.AddrPort)
	// Logger gets the rare events (read errors, tunnels added and removed); nil is
	// slog.Default(). Nothing per packet is logged.
	Logger *slog.Logger
	// WriteBatch is how many decrypted packets the receive goroutine gathers before writing
	// them to the TUN devices; 0 means 128.
	WriteBatch int
}

// Mux is one UDP socket on the NAT-T port shared by several tunnels (AWS: two tunnels, the same
// local address and port, different remote addresses). One goroutine receives: it classifies
// each datagram (RFC 3948), hands IKE to MuxConfig.OnIKE, counts NAT keepalives, finds the
// inbound SA of an ESP packet by its SPI, opens it and writes the inner packet to that SA's
// tunnel's TUN device, in batches. Tunnels send on their own goroutines (Tunnel).
type Mux struct {
	conn  PacketConn
	cfg   MuxConfig
	log   *slog.Logger
	epoch time.Time

	// spis is the copy-on-write SPI table the receive goroutine reads without locking.
	mu      sync.Mutex // guards spis updates, tunnels, closed
	spis    atomic.Pointer[map[uint32]*inboundSA]
	tunnels map[*Tunnel]struct{}
	closed  bool

	ikeMu  sync.Mutex
	ikeW   BatchWriter
	ikeBuf []byte
	ikeOne [][]byte

	noSA, malformed, keepalivesIn, ikeIn, ikeDropped, readErrors atomic.Uint64

	done chan struct{}
}

// inboundSA is an SPI table entry: an installed SA and its tunnel, or a reservation (sa nil).
type inboundSA struct {
	sa *SA
	t  *Tunnel
}

// MuxStats are the socket-level counters (those that cannot be attributed to a tunnel).
type MuxStats struct {
	// NoSA counts ESP packets whose SPI matches no installed inbound SA.
	NoSA uint64
	// Malformed counts datagrams too short to be ESP, or truncated.
	Malformed uint64
	// KeepalivesIn counts NAT keepalives received.
	KeepalivesIn uint64
	// IKEIn counts IKE messages handed to OnIKE; IKEDropped those dropped for want of one.
	IKEIn, IKEDropped uint64
	// ReadErrors counts failed socket reads.
	ReadErrors uint64
}

// NewMux starts the receive goroutine on conn. The Mux owns conn from now on.
func NewMux(conn PacketConn, cfg MuxConfig) *Mux {
	m := newMux(conn, cfg)
	go m.receive(newReceiver(m))
	return m
}

// newMux builds a Mux without starting its receive goroutine.
func newMux(conn PacketConn, cfg MuxConfig) *Mux {
	if cfg.WriteBatch <= 0 {
		cfg.WriteBatch = 128
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	m := &Mux{conn: conn, cfg: cfg, log: log.With("esp_socket", conn.LocalAddr().String()), epoch: time.Now(),
		tunnels: map[*Tunnel]struct{}{}, ikeW: conn.NewWriter(), ikeOne: make([][]byte, 1), done: make(chan struct{})}
	empty := map[uint32]*inboundSA{}
	m.spis.Store(&empty)
	return m
}

// LocalAddr is the socket's address.
func (m *Mux) LocalAddr() netip.AddrPort { return m.conn.LocalAddr() }

// Stats returns the socket-level counters.
func (m *Mux) Stats() MuxStats {
	return MuxStats{NoSA: m.noSA.Load(), Malformed: m.malformed.Load(), KeepalivesIn: m.keepalivesIn.Load(),
		IKEIn: m.ikeIn.Load(), IKEDropped: m.ikeDropped.Load(), ReadErrors: m.readErrors.Load()}
}

// now is monotonic nanoseconds since the Mux started (never 0 once anything happened).
func (m *Mux) now() int64 { return int64(time.Since(m.epoch)) + 1 }

func (m *Mux) timeOf(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return m.epoch.Add(time.Duration(ns - 1))
}

// SendIKE sends an IKE message to remote on the NAT-T socket, with the non-ESP marker prepended.
// It is safe for concurrent use.
func (m *Mux) SendIKE(b []byte, remote netip.AddrPort) error {
	m.ikeMu.Lock()
	defer m.ikeMu.Unlock()
	m.ikeBuf = AppendIKE(m.ikeBuf[:0], b)
	m.ikeOne[0] = m.ikeBuf
	if err := m.ikeW.WriteBatch(remote, m.ikeOne); err != nil {
		return fmt.Errorf("esp socket %s: send ike to %s: %w", m.conn.LocalAddr(), remote, err)
	}
	return nil
}

// SendKeepalive sends a NAT keepalive (RFC 3948 §2.3) to remote.
func (m *Mux) SendKeepalive(remote netip.AddrPort) error {
	m.ikeMu.Lock()
	defer m.ikeMu.Unlock()
	m.ikeBuf = append(m.ikeBuf[:0], KeepaliveByte)
	m.ikeOne[0] = m.ikeBuf
	if err := m.ikeW.WriteBatch(remote, m.ikeOne); err != nil {
		return fmt.Errorf("esp socket %s: send keepalive to %s: %w", m.conn.LocalAddr(), remote, err)
	}
	return nil
}

// ReserveSPI picks a random unused SPI (at least 256, RFC 4303 §2.1) for a CHILD SA being
// negotiated and reserves it until AddInbound installs it or ReleaseSPI frees it. Packets to a
// reserved SPI count as NoSA.
func (m *Mux) ReserveSPI() (uint32, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, errors.New("esp socket closed")
	}
	cur := *m.spis.Load()
	for range 100 {
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return 0, fmt.Errorf("esp: reserve spi: %w", err)
		}
		spi := binary.BigEndian.Uint32(b[:])
		if spi < 256 {
			continue
		}
		if _, taken := cur[spi]; taken {
			continue
		}
		m.updateSPIs(func(t map[uint32]*inboundSA) { t[spi] = &inboundSA{} })
		return spi, nil
	}
	return 0, errors.New("esp: reserve spi: no free SPI found")
}

// ReleaseSPI frees a reservation that was never installed.
func (m *Mux) ReleaseSPI(spi uint32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := (*m.spis.Load())[spi]; ok && e.sa == nil {
		m.updateSPIs(func(t map[uint32]*inboundSA) { delete(t, spi) })
	}
}

// updateSPIs replaces the SPI table with a modified copy; m.mu must be held.
func (m *Mux) updateSPIs(f func(map[uint32]*inboundSA)) {
	cur := *m.spis.Load()
	next := make(map[uint32]*inboundSA, len(cur)+1)
	for k, v := range cur {
		next[k] = v
	}
	f(next)
	m.spis.Store(&next)
}

// Close stops the receive goroutine, closes every tunnel and the socket.
func (m *Mux) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		<-m.done
		return nil
	}
	m.closed = true
	ts := make([]*Tunnel, 0, len(m.tunnels))
	for t := range m.tunnels {
		ts = append(ts, t)
	}
	m.mu.Unlock()
	var errs []error
	for _, t := range ts {
		errs = append(errs, t.Close())
	}
	errs = append(errs, m.conn.Close())
	<-m.done
	return errors.Join(errs...)
}

// recvGroup gathers one tunnel's decrypted packets and counters within a receive batch.
type recvGroup struct {
	t                                        *Tunnel
	bufs                                     [][]byte
	pkts, bytes, wire                        uint64
	replayed, authFailed, malformed, dummies uint64
	clamped                                  uint64
}

// receiver is the receive goroutine's state: all buffers it owns.
type receiver struct {
	m       *Mux
	now     int64 // Mux clock when the current batch arrived
	msgs    []RecvMsg
	tunBufs [][]byte // decrypted packets, TUNWriteOffset bytes in
	used    int
	groups  []recvGroup
}

func newReceiver(m *Mux) *receiver {
	nmsg := 64
	if m.conn.GRO() {
		nmsg = 8
	}
	r := &receiver{m: m, msgs: make([]RecvMsg, nmsg), groups: make([]recvGroup, 0, 4)}
	for i := range r.msgs {
		r.msgs[i].Buf = make([]byte, 65535)
	}
	// 64 KiB of capacity per buffer lets the TUN's GRO coalesce TCP segments into the first
	// buffer of a flow (the pages are only touched when used).
	r.tunBufs = make([][]byte, m.cfg.WriteBatch)
	for i := range r.tunBufs {
		r.tunBufs[i] = make([]byte, TUNWriteOffset+65535)
	}
	return r
}

func (m *Mux) receive(r *receiver) {
	defer close(m.done)
	lastErr := time.Time{}
	for {
		n, err := m.conn.ReadBatch(r.msgs)
		if err != nil {
			m.mu.Lock()
			closed := m.closed
			m.mu.Unlock()
			if closed {
				return
			}
			m.readErrors.Add(1)
			if time.Since(lastErr) > 10*time.Second {
				m.log.Warn("esp socket read failed", "err", err)
				lastErr = time.Now()
			}
			time.Sleep(10 * time.Millisecond) // a broken socket must not spin
			continue
		}
		spis := *m.spis.Load()
		r.now = m.now()
		for i := 0; i < n; i++ {
			msg := &r.msgs[i]
			if msg.Truncated {
				m.malformed.Add(1)
				continue
			}
			b := msg.Buf[:msg.N]
			if msg.Seg <= 0 || msg.Seg >= len(b) {
				r.datagram(b, msg, spis)
				continue
			}
			for len(b) > 0 {
				d := b[:min(msg.Seg, len(b))]
				b = b[len(d):]
				r.datagram(d[:len(d):len(d)], msg, spis)
			}
		}
		r.flush()
	}
}

func (r *receiver) group(t *Tunnel) *recvGroup {
	for i := range r.groups {
		if r.groups[i].t == t {
			return &r.groups[i]
		}
	}
	if len(r.groups) < cap(r.groups) {
		r.groups = r.groups[:len(r.groups)+1]
		g := &r.groups[len(r.groups)-1]
		g.t = t
		if g.bufs == nil {
			g.bufs = make([][]byte, 0, len(r.tunBufs))
		}
		return g
	}
	r.groups = append(r.groups, recvGroup{t: t, bufs: make([][]byte, 0, len(r.tunBufs))})
	return &r.groups[len(r.groups)-1]
}

// datagram handles one UDP payload that arrived in msg.
func (r *receiver) datagram(d []byte, msg *RecvMsg, spis map[uint32]*inboundSA) {
	m := r.m
	kind, payload := Classify(d)
	switch kind {
	case KindKeepalive:
		m.keepalivesIn.Add(1)
	case KindIKE:
		if m.cfg.OnIKE == nil {
			m.ikeDropped.Add(1)
			return
		}
		m.ikeIn.Add(1)
		local := m.conn.LocalAddr()
		if msg.To.IsValid() {
			local = netip.AddrPortFrom(msg.To, local.Port())
		}
		m.cfg.OnIKE(payload, local, msg.From)
	case KindInvalid:
		m.malformed.Add(1)
	case KindESP:
		e := spis[binary.BigEndian.Uint32(d)]
		if e == nil || e.sa == nil {
			m.noSA.Add(1)
			return
		}
		if r.used == len(r.tunBufs) {
			r.flush()
		}
		g := r.group(e.t)
		dst := r.tunBufs[r.used][TUNWriteOffset:TUNWriteOffset]
		inner, nh, err := e.sa.Open(dst, d)
		switch err {
		case nil:
		case ErrReplay:
			g.replayed++
			return
		case ErrAuth:
			g.authFailed++
			return
		default:
			g.malformed++
			return
		}
		g.pkts++
		g.wire += uint64(len(d))
		e.sa.lastIn.Store(r.now)
		if nh == NextHeaderDummy {
			g.dummies++
			return
		}
		g.bytes += uint64(len(inner))
		if e.t.clamp && clampMSS(inner, e.t.mss4, e.t.mss6) {
			g.clamped++
		}
		g.bufs = append(g.bufs, r.tunBufs[r.used][:TUNWriteOffset+len(inner)])
		r.used++
	}
}

// flush writes each tunnel's packets to its TUN and publishes the counters.
func (r *receiver) flush() {
	now := r.now
	for i := range r.groups {
		g := &r.groups[i]
		t := g.t
		// Counters first, so that a packet seen on the TUN is already counted.
		if g.pkts > 0 {
			t.pktsIn.Add(g.pkts)
			t.bytesIn.Add(g.bytes)
			t.wireIn.Add(g.wire)
			t.lastIn.Store(now)
		}
		for _, c := range [...]struct {
			ctr *atomic.Uint64
			v   uint64
		}{{&t.replayed, g.replayed}, {&t.authFailed, g.authFailed}, {&t.malformedIn, g.malformed}, {&t.dummiesIn, g.dummies}, {&t.mssClamped, g.clamped}} {
			if c.v != 0 {
				c.ctr.Add(c.v)
			}
		}
		if len(g.bufs) > 0 {
			if _, err := t.tun.Write(g.bufs, TUNWriteOffset); err != nil {
				t.tunWriteErrors.Add(1)
			}
		}
		*g = recvGroup{bufs: g.bufs[:0]}
	}
	r.groups = r.groups[:0]
	r.used = 0
}
