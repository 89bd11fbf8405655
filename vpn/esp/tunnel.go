package esp

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// TunnelConfig configures one tunnel of a Mux.
type TunnelConfig struct {
	// Name labels the tunnel in logs (for example the AWS tunnel's outside address).
	Name string
	// TUN is the tunnel's device; the Tunnel owns it from now on and closes it. Give it an MTU
	// of at least 1500 (and MTU below for the tunnel's own limit): then full-size packets from
	// the LAN with DF set reach the data plane, which clears DF and fragments them (or sends
	// ICMPv6 "packet too big"), instead of the kernel refusing them.
	TUN TUN
	// Remote is the peer's NAT-T address (port 4500).
	Remote netip.AddrPort
	// MTU is the largest inner packet sent whole: larger IPv4 packets are fragmented before
	// encryption (DF cleared, or refused with ICMP when KeepDF), larger IPv6 packets get an
	// ICMPv6 "packet too big". 0 means AWSMTU of the outbound SA's suite with NAT-T, or the
	// same computed for an IPv6 outer header when Remote is IPv6 (20 bytes less).
	MTU int
	// MSS is the TCP MSS clamped on SYN and SYN-ACK in both directions for IPv4; 0 means
	// DefaultMSS (AWS's 1379). MSS6 is the IPv6 value; 0 means MSS-20.
	MSS, MSS6 uint16
	// NoMSSClamp turns clamping off.
	NoMSSClamp bool
	// KeepDF honours DF on IPv4 packets above MTU (ICMP "fragmentation needed" back into the
	// TUN) instead of clearing it (AWS's clear_df_bit, the default).
	KeepDF bool
	// NoFragment sends IPv4 packets above MTU whole (the kernel then fragments the outer
	// packet) instead of fragmenting before encryption (AWS's fragmentation_before_encryption,
	// the default).
	NoFragment bool
	// ICMPSource4 and ICMPSource6 are the source addresses of ICMP errors the tunnel sends
	// into its TUN (normally the tunnel's inside addresses); when unset, the destination of the
	// packet that caused the error is used.
	ICMPSource4, ICMPSource6 netip.Addr
	// KeepaliveInterval, when positive, sends a NAT keepalive whenever nothing was sent to the
	// peer for that long (RFC 3948 §4; 20 s is usual).
	KeepaliveInterval time.Duration
	// OnRekeyNeeded is called (on its own goroutine, once per SA) when the outbound SA's
	// sequence numbers pass SeqSoftLimit.
	OnRekeyNeeded func(spi uint32)
}

// Tunnel is one route-based tunnel: everything the kernel routes into its TUN device leaves on
// its current outbound SA (traffic selectors 0/0), and packets of any of its inbound SAs are
// written to the TUN. For a rekey, install the new inbound SA (AddInbound), switch outbound
// (SetOutbound: atomic, the packet being sealed finishes on the old SA), and remove the old
// inbound SA once the peer moved too (RemoveInbound); both inbound SAs work meanwhile.
type Tunnel struct {
	mux   *Mux
	cfg   TunnelConfig
	tun   TUN
	log   *slog.Logger
	clamp bool
	mss4  uint16
	mss6  uint16

	remote atomic.Pointer[netip.AddrPort]
	out    atomic.Pointer[outboundSA]

	mu      sync.Mutex // guards inbound, closed
	inbound map[uint32]*SA
	closed  bool
	stop    chan struct{}
	wg      sync.WaitGroup

	// Counters (see TunnelStats).
	pktsIn, bytesIn, wireIn                                atomic.Uint64
	pktsOut, bytesOut, wireOut                             atomic.Uint64
	replayed, authFailed, malformedIn, dummiesIn           atomic.Uint64
	noSAOut, malformedOut, seqExhausted, sendErrors        atomic.Uint64
	fragmented, fragmentsOut, icmpSent, tooBig, mssClamped atomic.Uint64
	tunReadErrors, tunWriteErrors, keepalivesOut           atomic.Uint64
	lastIn, lastOut                                        atomic.Int64
}

// outboundSA is the SA sealing outbound packets and the MTU that goes with it.
type outboundSA struct {
	sa         *SA
	mtu        int
	softSignal atomic.Bool
}

// TunnelStats is a snapshot of a tunnel's counters.
type TunnelStats struct {
	// PacketsIn and BytesIn count authenticated inbound packets and their inner bytes;
	// ESPBytesIn the ESP bytes (UDP payload). Likewise outbound.
	PacketsIn, BytesIn, ESPBytesIn    uint64
	PacketsOut, BytesOut, ESPBytesOut uint64
	// Inbound drops: Replayed (duplicate or too old), AuthFailed (ICV), MalformedIn (length,
	// padding, next header or inner header). DummiesIn counts dummy packets (next header 59).
	Replayed, AuthFailed, MalformedIn, DummiesIn uint64
	// Outbound drops: NoSAOut (no outbound SA installed), MalformedOut (not IPv4/IPv6),
	// SeqExhausted (the SA ran out of sequence numbers), SendErrors (socket errors, per batch).
	NoSAOut, MalformedOut, SeqExhausted, SendErrors uint64
	// Fragmented counts IPv4 packets fragmented before encryption, FragmentsOut the fragments
	// they became; ICMPSent the ICMP errors written to the TUN (TooBig: packets refused);
	// MSSClamped the SYNs whose MSS was lowered (both directions).
	Fragmented, FragmentsOut, ICMPSent, TooBig, MSSClamped uint64
	TUNReadErrors, TUNWriteErrors, KeepalivesOut           uint64
	// LastInbound is when the last authenticated ESP packet arrived; LastOutbound when the
	// last ESP packet was sent. Zero if never. Both are monotonic-clock times: compare them
	// with time.Since.
	LastInbound, LastOutbound time.Time
}

// Per-tunnel buffer layout on the way out: packets are read from the TUN at outOffset, which
// leaves room for the largest ESP header, and sealed in place.
const outOffset = MaxHeaderLen

// NewTunnel adds a tunnel to the Mux and starts its sending goroutine. It has no SAs yet:
// packets routed into it are dropped (NoSAOut) until SetOutbound.
func (m *Mux) NewTunnel(cfg TunnelConfig) (*Tunnel, error) {
	if cfg.TUN == nil {
		return nil, fmt.Errorf("esp tunnel %s: no TUN device", cfg.Name)
	}
	if !cfg.Remote.IsValid() || cfg.Remote.Port() == 0 {
		return nil, fmt.Errorf("esp tunnel %s: remote %q is not an address and port", cfg.Name, cfg.Remote)
	}
	local := m.conn.LocalAddr().Addr()
	if local.Is4() != cfg.Remote.Addr().Unmap().Is4() {
		return nil, fmt.Errorf("esp tunnel %s: remote %s and socket %s are different address families", cfg.Name, cfg.Remote, m.conn.LocalAddr())
	}
	if cfg.MTU != 0 && (cfg.MTU < MinTunnelMTU || cfg.MTU > 65535) {
		return nil, fmt.Errorf("esp tunnel %s: mtu %d; want %d to 65535, or 0 for the suite's AWS value", cfg.Name, cfg.MTU, MinTunnelMTU)
	}
	if cfg.MSS == 0 {
		cfg.MSS = DefaultMSS
	}
	if cfg.MSS6 == 0 {
		cfg.MSS6 = cfg.MSS - 20
	}
	if cfg.MSS < 88 || cfg.MSS6 < 88 {
		return nil, fmt.Errorf("esp tunnel %s: mss %d/%d too small", cfg.Name, cfg.MSS, cfg.MSS6)
	}
	t := &Tunnel{mux: m, cfg: cfg, tun: cfg.TUN, clamp: !cfg.NoMSSClamp, mss4: cfg.MSS, mss6: cfg.MSS6,
		inbound: map[uint32]*SA{}, stop: make(chan struct{})}
	t.log = m.log.With("tunnel", cfg.Name)
	r := cfg.Remote
	t.remote.Store(&r)
	tunMTU, err := cfg.TUN.MTU()
	if err != nil {
		return nil, fmt.Errorf("esp tunnel %s: tun mtu: %w", cfg.Name, err)
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, fmt.Errorf("esp tunnel %s: socket closed", cfg.Name)
	}
	m.tunnels[t] = struct{}{}
	m.mu.Unlock()
	t.wg.Add(1)
	go t.send(t.newSender(tunMTU))
	if cfg.KeepaliveInterval > 0 {
		t.wg.Add(1)
		go t.keepalives()
	}
	t.log.Info("esp tunnel started", "remote", cfg.Remote.String())
	return t, nil
}

// Remote is the peer's address.
func (t *Tunnel) Remote() netip.AddrPort { return *t.remote.Load() }

// SetRemote changes the peer's address (a NAT rebinding, or MOBIKE).
func (t *Tunnel) SetRemote(r netip.AddrPort) { t.remote.Store(&r) }

// AddInbound installs an inbound SA; its SPI must be unused on the socket or reserved with
// ReserveSPI.
func (t *Tunnel) AddInbound(p Params) (*SA, error) {
	sa, err := NewSA(p)
	if err != nil {
		return nil, fmt.Errorf("esp tunnel %s: inbound: %w", t.cfg.Name, err)
	}
	m := t.mux
	m.mu.Lock()
	defer m.mu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, fmt.Errorf("esp tunnel %s: closed", t.cfg.Name)
	}
	if e, ok := (*m.spis.Load())[p.SPI]; ok && e.sa != nil {
		return nil, fmt.Errorf("esp tunnel %s: inbound spi 0x%08x already installed", t.cfg.Name, p.SPI)
	}
	m.updateSPIs(func(tab map[uint32]*inboundSA) { tab[p.SPI] = &inboundSA{sa: sa, t: t} })
	t.inbound[p.SPI] = sa
	t.log.Info("esp inbound sa installed", "sa", sa)
	return sa, nil
}

// RemoveInbound uninstalls an inbound SA; later packets to its SPI count as NoSA.
func (t *Tunnel) RemoveInbound(spi uint32) error {
	m := t.mux
	m.mu.Lock()
	defer m.mu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.inbound[spi]; !ok {
		return fmt.Errorf("esp tunnel %s: no inbound sa 0x%08x", t.cfg.Name, spi)
	}
	delete(t.inbound, spi)
	m.updateSPIs(func(tab map[uint32]*inboundSA) { delete(tab, spi) })
	t.log.Info("esp inbound sa removed", "spi", fmt.Sprintf("0x%08x", spi))
	return nil
}

// InboundSPIs lists the installed inbound SPIs.
func (t *Tunnel) InboundSPIs() []uint32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := make([]uint32, 0, len(t.inbound))
	for spi := range t.inbound {
		s = append(s, spi)
	}
	return s
}

// SetOutbound switches outbound traffic to a new SA, atomically: packets already being sealed
// finish on the old one, all later ones use the new one, none is dropped.
func (t *Tunnel) SetOutbound(p Params) (*SA, error) {
	sa, err := NewSA(p)
	if err != nil {
		return nil, fmt.Errorf("esp tunnel %s: outbound: %w", t.cfg.Name, err)
	}
	mtu := t.cfg.MTU
	if mtu == 0 {
		// AWS's table (IPv4 outside); the same rule with an IPv6 outer header otherwise.
		mtu = p.Suite.MTU(1500, !t.Remote().Addr().Unmap().Is4(), true)
	}
	t.out.Store(&outboundSA{sa: sa, mtu: mtu})
	t.log.Info("esp outbound sa switched", "sa", sa, "mtu", mtu)
	return sa, nil
}

// Outbound is the current outbound SA, or nil.
func (t *Tunnel) Outbound() *SA {
	if o := t.out.Load(); o != nil {
		return o.sa
	}
	return nil
}

// ClearOutbound removes the outbound SA; packets are dropped (NoSAOut) until the next
// SetOutbound.
func (t *Tunnel) ClearOutbound() { t.out.Store(nil) }

// LastInbound is when the last authenticated ESP packet arrived (zero if never); cheap enough
// to poll every few milliseconds for failover.
func (t *Tunnel) LastInbound() time.Time { return t.mux.timeOf(t.lastIn.Load()) }

// LastInboundOn is when the last authenticated packet arrived on the inbound SA spi (zero if
// never, or if the tunnel has no such SA): IKE's DPD skips its liveness check while an SA
// carries traffic.
func (t *Tunnel) LastInboundOn(spi uint32) time.Time {
	t.mu.Lock()
	sa := t.inbound[spi]
	t.mu.Unlock()
	if sa == nil {
		return time.Time{}
	}
	return t.mux.timeOf(sa.lastIn.Load())
}

// LastOutbound is when the last ESP packet was sent (zero if never).
func (t *Tunnel) LastOutbound() time.Time { return t.mux.timeOf(t.lastOut.Load()) }

// Stats returns a snapshot of the counters.
func (t *Tunnel) Stats() TunnelStats {
	return TunnelStats{
		PacketsIn: t.pktsIn.Load(), BytesIn: t.bytesIn.Load(), ESPBytesIn: t.wireIn.Load(),
		PacketsOut: t.pktsOut.Load(), BytesOut: t.bytesOut.Load(), ESPBytesOut: t.wireOut.Load(),
		Replayed: t.replayed.Load(), AuthFailed: t.authFailed.Load(), MalformedIn: t.malformedIn.Load(), DummiesIn: t.dummiesIn.Load(),
		NoSAOut: t.noSAOut.Load(), MalformedOut: t.malformedOut.Load(), SeqExhausted: t.seqExhausted.Load(), SendErrors: t.sendErrors.Load(),
		Fragmented: t.fragmented.Load(), FragmentsOut: t.fragmentsOut.Load(), ICMPSent: t.icmpSent.Load(), TooBig: t.tooBig.Load(),
		MSSClamped: t.mssClamped.Load(), TUNReadErrors: t.tunReadErrors.Load(), TUNWriteErrors: t.tunWriteErrors.Load(),
		KeepalivesOut: t.keepalivesOut.Load(),
		LastInbound:   t.LastInbound(), LastOutbound: t.LastOutbound(),
	}
}

// SendKeepalive sends one NAT keepalive to the peer now.
func (t *Tunnel) SendKeepalive() error {
	err := t.mux.SendKeepalive(t.Remote())
	if err == nil {
		t.keepalivesOut.Add(1)
	}
	return err
}

// Close removes the tunnel's SAs from the socket, closes its TUN device and waits for its
// goroutines.
func (t *Tunnel) Close() error {
	m := t.mux
	m.mu.Lock()
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		m.mu.Unlock()
		return nil
	}
	t.closed = true
	spis := t.inbound
	t.inbound = map[uint32]*SA{}
	m.updateSPIs(func(tab map[uint32]*inboundSA) {
		for spi := range spis {
			delete(tab, spi)
		}
	})
	delete(m.tunnels, t)
	t.mu.Unlock()
	m.mu.Unlock()
	close(t.stop)
	err := t.tun.Close()
	t.wg.Wait()
	t.log.Info("esp tunnel stopped")
	if err != nil {
		return fmt.Errorf("esp tunnel %s: close tun: %w", t.cfg.Name, err)
	}
	return nil
}

func (t *Tunnel) isClosed() bool {
	select {
	case <-t.stop:
		return true
	default:
		return false
	}
}

func (t *Tunnel) keepalives() {
	defer t.wg.Done()
	iv := t.cfg.KeepaliveInterval
	tick := time.NewTicker(iv / 2)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
			if last := t.LastOutbound(); last.IsZero() || time.Since(last) >= iv {
				if err := t.SendKeepalive(); err == nil {
					t.lastOut.Store(t.mux.now())
				}
			}
		}
	}
}

// sender is the sending goroutine's state: all buffers it owns.
type sender struct {
	t       *Tunnel
	w       BatchWriter
	bufSize int
	bufs    [][]byte // TUN read buffers, sealed in place
	sizes   []int
	frags   [][]byte // fragment buffers
	fsizes  []int
	nfrag   int
	icmp    [][]byte // ICMP errors for the TUN
	nicmp   int
	icmpOut [][]byte
	pkts    [][]byte // sealed ESP packets to send

	errLogged time.Time

	// per-batch counters
	pktsOut, bytesOut, wireOut, noSA, malformed, seqExhausted uint64
	fragmented, fragmentsOut, icmpSent, tooBig, clamped       uint64
}

func (t *Tunnel) newSender(tunMTU int) *sender {
	batch := t.tun.BatchSize()
	if batch < 1 {
		batch = 1
	}
	maxInner := tunMTU
	if maxInner < 1500 {
		maxInner = 1500
	}
	s := &sender{t: t, w: t.mux.conn.NewWriter(), bufSize: outOffset + maxInner + MaxTrailerLen}
	s.bufs = make([][]byte, batch)
	for i := range s.bufs {
		s.bufs[i] = make([]byte, s.bufSize)
	}
	s.sizes = make([]int, batch)
	s.frags = make([][]byte, 64)
	for i := range s.frags {
		s.frags[i] = make([]byte, s.bufSize)
	}
	s.fsizes = make([]int, len(s.frags))
	s.icmp = make([][]byte, 16)
	for i := range s.icmp {
		s.icmp[i] = make([]byte, TUNWriteOffset+1280)
	}
	s.icmpOut = make([][]byte, 0, len(s.icmp))
	s.pkts = make([][]byte, 0, batch+len(s.frags))
	return s
}

func (t *Tunnel) send(s *sender) {
	defer t.wg.Done()
	errLogged := time.Time{}
	for {
		n, err := t.tun.Read(s.bufs, s.sizes, outOffset)
		if err != nil {
			if t.isClosed() || errors.Is(err, os.ErrClosed) {
				return
			}
			t.tunReadErrors.Add(1)
			if time.Since(errLogged) > 10*time.Second {
				t.log.Warn("esp tunnel: tun read failed", "err", err)
				errLogged = time.Now()
			}
			if n == 0 {
				time.Sleep(time.Millisecond) // a broken device must not spin
				continue
			}
		}
		o := t.out.Load()
		for i := 0; i < n; i++ {
			s.packet(o, i)
		}
		s.flush(o)
	}
}

// packet handles the i-th packet read from the TUN.
func (s *sender) packet(o *outboundSA, i int) {
	t := s.t
	buf := s.bufs[i]
	n := s.sizes[i]
	if n < 20 || (buf[outOffset]>>4 != 4 && buf[outOffset]>>4 != 6) {
		s.malformed++
		return
	}
	if o == nil {
		s.noSA++
		return
	}
	p := buf[outOffset : outOffset+n]
	if t.clamp && clampMSS(p, t.mss4, t.mss6) {
		s.clamped++
	}
	if n > o.mtu {
		if p[0]>>4 == 6 {
			s.tooBig++
			s.sendICMP(p, o.mtu)
			return
		}
		if !t.cfg.NoFragment {
			s.fragment(o, p)
			return
		}
	}
	s.seal(o, buf, n, p[0]>>4)
}

func (s *sender) seal(o *outboundSA, buf []byte, n int, version byte) {
	nh := NextHeaderIPv4
	if version == 6 {
		nh = NextHeaderIPv6
	}
	pkt, err := o.sa.SealInPlace(buf, outOffset, n, nh)
	if err != nil {
		if err == ErrSeqExhausted {
			s.seqExhausted++
		} else {
			s.malformed++ // ErrNoRoom: cannot happen with the sender's buffer sizes
		}
		return
	}
	s.pkts = append(s.pkts, pkt)
	s.pktsOut++
	s.bytesOut += uint64(n)
	s.wireOut += uint64(len(pkt))
}

// fragment splits an IPv4 packet above the tunnel MTU and seals the fragments (or refuses it
// with ICMP when DF is set and KeepDF).
func (s *sender) fragment(o *outboundSA, p []byte) {
	const dfWord = 6
	flags := uint16(p[dfWord])<<8 | uint16(p[dfWord+1])
	if flags&ipv4DF != 0 {
		if s.t.cfg.KeepDF {
			s.tooBig++
			s.sendICMP(p, o.mtu)
			return
		}
		nf := flags &^ ipv4DF
		p[dfWord], p[dfWord+1] = byte(nf>>8), byte(nf)
		hc := uint16(p[10])<<8 | uint16(p[11])
		hc = checksumUpdate(hc, flags, nf)
		p[10], p[11] = byte(hc>>8), byte(hc)
	}
	need := (len(p)+o.mtu-1)/(o.mtu-60) + 1 // upper bound on fragments
	if s.nfrag+need > len(s.frags) {
		s.flush(o)
	}
	k := fragmentIPv4(p, o.mtu, s.frags[s.nfrag:], outOffset, s.fsizes[s.nfrag:])
	if k == 0 {
		s.malformed++
		return
	}
	s.fragmented++
	s.fragmentsOut += uint64(k)
	for j := 0; j < k; j++ {
		s.seal(o, s.frags[s.nfrag+j], s.fsizes[s.nfrag+j], 4)
	}
	s.nfrag += k
}

func (s *sender) sendICMP(p []byte, mtu int) {
	if s.nicmp == len(s.icmp) {
		s.flushICMP()
	}
	b := s.icmp[s.nicmp][TUNWriteOffset:]
	var n int
	if p[0]>>4 == 4 {
		n = icmpFragNeeded(b, p, mtu, s.t.cfg.ICMPSource4)
	} else {
		n = icmpv6TooBig(b, p, mtu, s.t.cfg.ICMPSource6)
	}
	if n == 0 {
		return
	}
	s.icmpOut = append(s.icmpOut, s.icmp[s.nicmp][:TUNWriteOffset+n])
	s.nicmp++
	s.icmpSent++
}

func (s *sender) flushICMP() {
	if len(s.icmpOut) > 0 {
		if _, err := s.t.tun.Write(s.icmpOut, TUNWriteOffset); err != nil {
			s.t.tunWriteErrors.Add(1)
		}
	}
	s.icmpOut = s.icmpOut[:0]
	s.nicmp = 0
}

func (s *sender) flush(o *outboundSA) {
	t := s.t
	// Counters first, so that a packet seen at the peer is already counted here.
	if len(s.pkts) > 0 {
		t.lastOut.Store(t.mux.now())
	}
	add := func(c *atomic.Uint64, v *uint64) {
		if *v != 0 {
			c.Add(*v)
			*v = 0
		}
	}
	add(&t.pktsOut, &s.pktsOut)
	add(&t.bytesOut, &s.bytesOut)
	add(&t.wireOut, &s.wireOut)
	add(&t.noSAOut, &s.noSA)
	add(&t.malformedOut, &s.malformed)
	add(&t.seqExhausted, &s.seqExhausted)
	add(&t.fragmented, &s.fragmented)
	add(&t.fragmentsOut, &s.fragmentsOut)
	add(&t.icmpSent, &s.icmpSent)
	add(&t.tooBig, &s.tooBig)
	add(&t.mssClamped, &s.clamped)
	if len(s.pkts) > 0 {
		if err := s.w.WriteBatch(t.Remote(), s.pkts); err != nil {
			t.sendErrors.Add(1)
			if time.Since(s.errLogged) > 10*time.Second {
				t.log.Warn("esp tunnel: send failed", "err", err)
				s.errLogged = time.Now()
			}
		}
	}
	s.pkts = s.pkts[:0]
	s.nfrag = 0
	s.flushICMP()
	if o != nil && o.sa.SoftLimitReached() && o.softSignal.CompareAndSwap(false, true) {
		t.log.Warn("esp outbound sa near sequence number exhaustion; rekey needed", "sa", o.sa)
		if f := t.cfg.OnRekeyNeeded; f != nil {
			go f(o.sa.SPI())
		}
	}
}
