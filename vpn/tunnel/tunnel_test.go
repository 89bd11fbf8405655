package tunnel

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"meshroot/internal/testenv"
	"meshroot/vpn/esp"
	"meshroot/vpn/ike"
	"meshroot/vpn/vpnlog"
)

const testPSK = "fake-psk-Zq8mT2vL0pX7"

var (
	addrA = netip.MustParseAddr("192.0.2.2")
	addrB = netip.MustParseAddr("198.51.100.2")
)

// fakeSide is one end of a tunnel on a FakeNetwork.
type fakeSide struct {
	host *FakeHost
	tr   *Transport
	tun  *Tunnel
	logs *vpnlog.Memory
	diag *syncBuffer

	mu  sync.Mutex
	evs []Event
}

func (s *fakeSide) events() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Event(nil), s.evs...)
}

func (s *fakeSide) count(typ EventType) int {
	n := 0
	for _, e := range s.events() {
		if e.Type == typ {
			n++
		}
	}
	return n
}

// fakePair is our tunnel on both ends of a FakeNetwork whose path can be cut.
type fakePair struct {
	net  *esp.FakeNetwork
	cut  atomic.Bool
	a, b *fakeSide
}

type syncBuffer = testenv.Buffer

func newFakePair(t *testing.T, tuneA, tuneB func(*Config)) *fakePair {
	t.Helper()
	p := &fakePair{net: esp.NewFakeNetwork()}
	p.net.Filter = func(from, to netip.AddrPort, b []byte) bool { return !p.cut.Load() }
	mk := func(local, remote netip.Addr, inside string, initiator bool, tune func(*Config)) *fakeSide {
		s := &fakeSide{host: NewFakeHost(p.net, local), logs: &vpnlog.Memory{}, diag: &syncBuffer{}}
		var err error
		s.tr, err = NewTransport(s.host, TransportConfig{Local: local})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.tr.Close() })
		cfg := Config{
			Remote: remote, Device: "mrt0", Inside4: netip.MustParsePrefix(inside),
			IKE: ike.Config{PSK: testPSK},
		}
		if !initiator {
			cfg.IKE.StartAction = ike.StartAdd
		}
		if tune != nil {
			tune(&cfg)
		}
		s.tun, err = New(cfg, Options{
			Transport: s.tr, Host: s.host, Log: s.logs,
			Logger: slog.New(slog.NewTextHandler(s.diag, &slog.HandlerOptions{Level: slog.LevelDebug})),
			OnEvent: func(e Event) {
				s.mu.Lock()
				s.evs = append(s.evs, e)
				s.mu.Unlock()
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			s.tun.Close(ctx)
		})
		return s
	}
	p.b = mk(addrB, addrA, "169.254.10.1/30", false, tuneB)
	p.a = mk(addrA, addrB, "169.254.10.2/30", true, tuneA)
	t.Cleanup(func() {
		if t.Failed() {
			for _, s := range []*fakeSide{p.a, p.b} {
				for _, l := range s.logs.Lines() {
					t.Logf("%s log: %s", s.tun.Name(), l)
				}
			}
		}
		for _, s := range []*fakeSide{p.a, p.b} {
			if strings.Contains(s.diag.String(), testPSK) || strings.Contains(strings.Join(s.logs.Lines(), "\n"), testPSK) {
				t.Errorf("tunnel %s: the PSK appears in the logs", s.tun.Name())
			}
		}
	})
	return p
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *fakePair) waitUsable(t *testing.T) {
	t.Helper()
	waitFor(t, 20*time.Second, "both tunnels usable", func() bool { return p.a.tun.Usable() && p.b.tun.Usable() })
}

// udpPacket builds an IPv4/UDP packet whose payload carries seq.
func udpPacket(src, dst netip.Addr, seq uint32) []byte {
	p := make([]byte, 20+8+8)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8] = 64
	p[9] = 17
	copy(p[12:16], src.AsSlice())
	copy(p[16:20], dst.AsSlice())
	var s uint32
	for i := 0; i < 20; i += 2 {
		s += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	binary.BigEndian.PutUint16(p[10:], ^uint16(s))
	binary.BigEndian.PutUint16(p[20:], 40000)
	binary.BigEndian.PutUint16(p[22:], 7)
	binary.BigEndian.PutUint16(p[24:], 16)
	binary.BigEndian.PutUint32(p[28:], seq)
	return p
}

func seqOf(p []byte) (uint32, bool) {
	if len(p) < 32 || p[9] != 17 {
		return 0, false
	}
	return binary.BigEndian.Uint32(p[28:]), true
}

// echo answers every UDP packet B's TUN receives with the same packet back, until ctx ends.
func (p *fakePair) echo(ctx context.Context) {
	go func() {
		for {
			tun := p.b.host.TUN("mrt0")
			if tun == nil {
				return
			}
			select {
			case <-ctx.Done():
				return
			case pkt := <-tun.Written():
				if seq, ok := seqOf(pkt); ok {
					tun.Inject(udpPacket(netip.MustParseAddr("169.254.10.1"), netip.MustParseAddr("169.254.10.2"), seq))
				}
			}
		}
	}()
}

// stream sends a packet from A every interval until ctx ends and counts the echoes.
func (p *fakePair) stream(ctx context.Context, interval time.Duration, got *atomic.Uint64) {
	go func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		var seq uint32
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				seq++
				if tun := p.a.host.TUN("mrt0"); tun != nil {
					tun.Inject(udpPacket(netip.MustParseAddr("169.254.10.2"), netip.MustParseAddr("169.254.10.1"), seq))
				}
			}
		}
	}()
	go func() {
		for {
			tun := p.a.host.TUN("mrt0")
			if tun == nil {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-tun.Written():
				got.Add(1)
			}
		}
	}()
}

func TestTunnelUpAndTraffic(t *testing.T) {
	p := newFakePair(t, nil, nil)
	p.waitUsable(t)
	if addrs, up := p.a.host.Addrs("mrt0"); !up || len(addrs) != 1 || addrs[0] != netip.MustParsePrefix("169.254.10.2/30") {
		t.Errorf("A's device: addresses %v up %v; want [169.254.10.2/30] up", addrs, up)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p.echo(ctx)
	var got atomic.Uint64
	p.stream(ctx, 5*time.Millisecond, &got)
	waitFor(t, 10*time.Second, "echoes through the tunnel", func() bool { return got.Load() >= 20 })

	st := p.a.tun.Status()
	if st.Phase1 != ike.StateEstablished || st.Phase2 != ike.StateEstablished || !st.Usable || !st.NATDetected {
		t.Errorf("A status: phase1 %s phase2 %s usable %v nat %v; want Established, Established, true, true", st.Phase1, st.Phase2, st.Usable, st.NATDetected)
	}
	if st.ESP.PacketsIn == 0 || st.ESP.PacketsOut == 0 {
		t.Errorf("A ESP counters %+v; want packets both ways", st.ESP)
	}
	// Activity log: configured, IKE up, CHILD up, in the concentrator's schema.
	var details []string
	for _, r := range p.a.logs.Tunnel() {
		details = append(details, r.Details)
		if r.ResourceID != addrB.String() {
			t.Errorf("record stream %q; want %q", r.ResourceID, addrB)
		}
	}
	want := []string{"Tunnel configured", "IKE_SA established", "CHILD_SA installed"}
	for i, w := range want {
		if i >= len(details) || !strings.HasPrefix(details[i], w) {
			t.Fatalf("A's activity log details = %q; want them to start with %q", details, want)
		}
	}
	last := p.a.logs.Tunnel()[len(p.a.logs.Tunnel())-1]
	if last.Phase1 != vpnlog.IKEEstablished || last.Phase2 != vpnlog.IKEEstablished || !last.NATTDetected || !last.DPDEnabled {
		t.Errorf("last record %+v; want both phases Established, NAT-T and DPD", last)
	}
	for _, l := range p.a.logs.Lines() {
		if _, err := vpnlog.ParseTunnelRecord(addrB.String(), []byte(l)); err != nil {
			t.Errorf("ParseTunnelRecord(%s) = %v", l, err)
		}
	}
}

// TestTunnelFastFailover cuts the path under traffic: the tunnel goes out of service after
// about the failover window plus the probe timeout, without touching its SAs, and comes back
// when the path does.
func TestTunnelFastFailover(t *testing.T) {
	dpd := func(c *Config) { c.IKE.DPDInterval, c.IKE.DPDTimeout = 30*time.Second, 60*time.Second }
	p := newFakePair(t, dpd, dpd)
	p.waitUsable(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p.echo(ctx)
	var got atomic.Uint64
	p.stream(ctx, 5*time.Millisecond, &got)
	waitFor(t, 10*time.Second, "traffic", func() bool { return got.Load() >= 20 })
	spi := p.a.tun.Status().Children[0].SPIIn

	cutAt := time.Now()
	p.cut.Store(true)
	waitFor(t, 10*time.Second, "A out of service", func() bool { return !p.a.tun.Usable() })
	took := time.Since(cutAt)
	t.Logf("out of service %v after the cut", took)
	if took < DefaultFailoverWindow {
		t.Errorf("out of service %v after the cut; want at least the window %v", took, DefaultFailoverWindow)
	}
	st := p.a.tun.Status()
	if st.Phase1 != ike.StateEstablished || st.Failovers != 1 {
		t.Errorf("after failover: phase1 %s, failovers %d; want the IKE SA kept and 1 failover", st.Phase1, st.Failovers)
	}

	restoredAt := time.Now()
	p.cut.Store(false)
	waitFor(t, 10*time.Second, "A back in service", func() bool { return p.a.tun.Usable() })
	t.Logf("back in service %v after the path came back", time.Since(restoredAt))
	st = p.a.tun.Status()
	if len(st.Children) == 0 || st.Children[0].SPIIn != spi {
		t.Errorf("CHILD SA after recovery %+v; want the same SA (in SPI %08x)", st.Children, spi)
	}
	if st.Recoveries != 1 {
		t.Errorf("recoveries %d; want 1", st.Recoveries)
	}
	var sawOut, sawIn bool
	for _, e := range p.a.events() {
		switch e.Type {
		case EventOutOfService:
			sawOut = true
		case EventInService:
			sawIn = sawOut
		}
	}
	if !sawOut || !sawIn {
		t.Errorf("A's events %v; want out of service, then in service", p.a.events())
	}
	n := got.Load()
	waitFor(t, 5*time.Second, "traffic after recovery", func() bool { return got.Load() > n+20 })
}

// TestTunnelIdleNoProbe: an idle tunnel whose path is cut stays in service (no false positive);
// only DPD, later, may decide.
func TestTunnelIdleNoProbe(t *testing.T) {
	dpd := func(c *Config) { c.IKE.DPDInterval, c.IKE.DPDTimeout = 30*time.Second, 60*time.Second }
	p := newFakePair(t, dpd, dpd)
	p.waitUsable(t)
	retrans := p.a.tun.Status().IKECounters.Retransmits
	p.cut.Store(true)
	time.Sleep(4 * (DefaultFailoverWindow + DefaultProbeTimeout))
	st := p.a.tun.Status()
	if !st.Usable || st.Failovers != 0 || st.IKECounters.Retransmits != retrans {
		t.Errorf("idle tunnel after a cut: usable %v, failovers %d, retransmits %d (before %d); want usable, no failover, no probes", st.Usable, st.Failovers, st.IKECounters.Retransmits, retrans)
	}
}

// TestTunnelDPDActions cuts an idle tunnel's path: after DPD's interval and timeout the
// configured action applies; restart brings the tunnel back on its own once the path returns.
func TestTunnelDPDActions(t *testing.T) {
	for _, action := range []ike.DPDAction{ike.DPDRestart, ike.DPDClear, ike.DPDNone} {
		t.Run(string(action), func(t *testing.T) {
			t.Parallel()
			shortDPD := func(c *Config) {
				c.IKE.DPDInterval, c.IKE.DPDTimeout = 500*time.Millisecond, 1500*time.Millisecond
				c.IKE.RetryInterval, c.IKE.RetryMax = 200*time.Millisecond, 500*time.Millisecond
				c.DPDAction = action
			}
			peer := func(c *Config) { c.IKE.DPDInterval, c.IKE.DPDTimeout = time.Minute, time.Minute } // B keeps its SA
			if action == ike.DPDClear {
				// B notices too and re-initiates: what A waits for after clearing.
				peer = func(c *Config) {
					c.IKE.DPDInterval, c.IKE.DPDTimeout = 500*time.Millisecond, 1500*time.Millisecond
					c.IKE.RetryInterval, c.IKE.RetryMax = 200*time.Millisecond, 500*time.Millisecond
					c.DPDAction = ike.DPDRestart
				}
			}
			p := newFakePair(t, shortDPD, peer)
			p.waitUsable(t)
			first := p.a.tun.Status().IKE.SPIi
			cutAt := time.Now()
			p.cut.Store(true)
			waitFor(t, 10*time.Second, "DPD action", func() bool { return p.a.count(EventDPDAction) > 0 })
			took := time.Since(cutAt)
			t.Logf("DPD action %s %v after the cut", action, took)
			if max := 500*time.Millisecond + 1500*time.Millisecond; took < max-250*time.Millisecond {
				t.Errorf("DPD action %v after the cut; want about interval+timeout (%v)", took, max)
			}
			st := p.a.tun.Status()
			if st.DPDActions != 1 {
				t.Errorf("DPD actions %d; want 1", st.DPDActions)
			}
			switch action {
			case ike.DPDNone:
				if st.Phase1 != ike.StateEstablished || st.Usable {
					t.Errorf("none: phase1 %s usable %v; want the SA kept, out of service", st.Phase1, st.Usable)
				}
			default:
				if st.Phase1 == ike.StateEstablished || st.Usable {
					t.Errorf("%s: phase1 %s usable %v; want the SA gone", action, st.Phase1, st.Usable)
				}
			}
			p.cut.Store(false)
			switch action {
			case ike.DPDRestart:
				waitFor(t, 15*time.Second, "restart re-establishes", func() bool { return p.a.tun.Usable() })
				if st := p.a.tun.Status(); st.IKE == nil || st.IKE.SPIi == first {
					t.Errorf("after restart: IKE SA %+v; want a new one (old SPIi %x)", st.IKE, first)
				}
			case ike.DPDNone:
				waitFor(t, 15*time.Second, "none: back in service with the same SA", func() bool { return p.a.tun.Usable() })
				if st := p.a.tun.Status(); st.IKE == nil || st.IKE.SPIi != first {
					t.Errorf("after none: IKE SA %+v; want the old one (SPIi %x)", st.IKE, first)
				}
			case ike.DPDClear:
				// A waits; B's own DPD restart initiates, and A answers.
				waitFor(t, 15*time.Second, "clear: back when the peer initiates", func() bool { return p.a.tun.Usable() })
				if st := p.a.tun.Status(); st.IKE == nil || st.IKE.Initiator {
					t.Errorf("after clear: IKE SA %+v; want one the peer initiated", st.IKE)
				}
			}
		})
	}
}

func TestConfigValidation(t *testing.T) {
	h := NewFakeHost(esp.NewFakeNetwork(), addrA)
	tr, err := NewTransport(h, TransportConfig{Local: addrA})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	good := Config{Remote: addrB, Device: "mrt0", Inside4: netip.MustParsePrefix("169.254.10.2/30"), IKE: ike.Config{PSK: testPSK}}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no remote", func(c *Config) { c.Remote = netip.Addr{} }, "Remote"},
		{"family", func(c *Config) { c.Remote = netip.MustParseAddr("2001:db8::1") }, "address family"},
		{"device", func(c *Config) { c.Device = "a-very-long-device-name" }, "Device"},
		{"no inside", func(c *Config) { c.Inside4 = netip.Prefix{} }, "Inside4/Inside6"},
		{"inside6 v4", func(c *Config) { c.Inside6 = netip.MustParsePrefix("10.0.0.1/30") }, "Inside6"},
		{"dpd action", func(c *Config) { c.DPDAction = "hold" }, "DPDAction"},
		{"mtu", func(c *Config) { c.MTU = 100 }, "MTU"},
		{"no psk", func(c *Config) { c.IKE.PSK = "" }, "PSK"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.mod(&c)
			_, err := New(c, Options{Transport: tr, Host: h})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New(%s) = %v; want an error naming %q", tc.name, err, tc.want)
			}
		})
	}
}

// TestTunnelDPDUnderTraffic: with traffic flowing, fast failover takes the tunnel out of
// service first; the DPD action follows the DPD timeout after the failed liveness check.
func TestTunnelDPDUnderTraffic(t *testing.T) {
	short := func(c *Config) {
		c.IKE.DPDInterval, c.IKE.DPDTimeout = 10*time.Second, 1500*time.Millisecond
		c.IKE.RetryInterval, c.IKE.RetryMax = 200*time.Millisecond, 500*time.Millisecond
	}
	p := newFakePair(t, short, func(c *Config) { c.IKE.DPDInterval, c.IKE.DPDTimeout = time.Minute, time.Minute })
	p.waitUsable(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p.echo(ctx)
	var got atomic.Uint64
	p.stream(ctx, 5*time.Millisecond, &got)
	waitFor(t, 10*time.Second, "traffic", func() bool { return got.Load() >= 20 })
	cutAt := time.Now()
	p.cut.Store(true)
	waitFor(t, 10*time.Second, "out of service", func() bool { return !p.a.tun.Usable() })
	out := time.Since(cutAt)
	waitFor(t, 10*time.Second, "DPD action", func() bool { return p.a.count(EventDPDAction) > 0 })
	dpd := time.Since(cutAt)
	t.Logf("out of service after %v, DPD restart after %v", out, dpd)
	// The DPD timeout runs from the first unanswered check (AWS: "peer dead 30 seconds after
	// the first failed keep-alive"), which started ProbeTimeout before the tunnel went out of
	// service.
	if checkAt := out - DefaultProbeTimeout; dpd < checkAt+1500*time.Millisecond-100*time.Millisecond {
		t.Errorf("DPD action %v after the cut, liveness check at about %v; want the DPD timeout (1.5 s) between them", dpd, checkAt)
	}
	p.cut.Store(false)
	waitFor(t, 15*time.Second, "restarted tunnel in service", func() bool { return p.a.tun.Usable() })
	n := got.Load()
	waitFor(t, 5*time.Second, "traffic after the restart", func() bool { return got.Load() > n+20 })
}
