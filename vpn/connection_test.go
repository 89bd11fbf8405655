package vpn

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"meshroot/internal/testenv"
	"meshroot/vpn/esp"
	"meshroot/vpn/ike"
	"meshroot/vpn/route"
	"meshroot/vpn/tunnel"
	"meshroot/vpn/vpnlog"
)

// fakeConcentrator is two endpoints made of our own tunnel layer (responders) on a
// FakeNetwork, whose paths can be cut one by one, and a site host for the Connection.
type fakeConcentrator struct {
	net  *esp.FakeNetwork
	site *tunnel.FakeHost
	eps  [2]*fakeEndpoint
}

type fakeEndpoint struct {
	addr netip.Addr
	host *tunnel.FakeHost
	tun  *tunnel.Tunnel
	cut  atomic.Bool
}

var (
	siteAddr = netip.MustParseAddr("192.0.2.2")
	epAddrs  = [2]netip.Addr{netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("203.0.113.2")}
	vpcNet   = netip.MustParsePrefix("10.0.0.0/16")
)

func newFakeConcentrator(t *testing.T, psks [2]string) *fakeConcentrator {
	t.Helper()
	fc := &fakeConcentrator{net: esp.NewFakeNetwork()}
	fc.net.Filter = func(from, to netip.AddrPort, b []byte) bool {
		for _, ep := range fc.eps {
			if ep != nil && ep.cut.Load() && (from.Addr() == ep.addr || to.Addr() == ep.addr) {
				return false
			}
		}
		return true
	}
	fc.site = tunnel.NewFakeHost(fc.net, siteAddr)
	for i := range fc.eps {
		ep := &fakeEndpoint{addr: epAddrs[i], host: tunnel.NewFakeHost(fc.net, epAddrs[i])}
		fc.eps[i] = ep
		tr, err := tunnel.NewTransport(ep.host, tunnel.TransportConfig{Local: ep.addr})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
		ep.tun, err = tunnel.New(tunnel.Config{
			Remote: siteAddr, Device: "ipsec0", Inside4: netip.MustParsePrefix([]string{"169.254.10.1/30", "169.254.11.1/30"}[i]),
			IKE:       ike.Config{PSK: ike.Secret(psks[i]), StartAction: ike.StartAdd, DPDInterval: time.Minute, DPDTimeout: time.Minute},
			DPDAction: ike.DPDNone, Failover: tunnel.Failover{Disabled: true},
		}, tunnel.Options{Transport: tr, Host: ep.host})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			ep.tun.Close(ctx)
		})
		go ep.echo()
	}
	return fc
}

// echo answers every UDP packet arriving on the endpoint's TUN.
func (ep *fakeEndpoint) echo() {
	for {
		tun := ep.host.TUN("ipsec0")
		if tun == nil {
			return
		}
		pkt, ok := <-tun.Written()
		if !ok {
			return
		}
		if len(pkt) >= 28 && pkt[9] == 17 {
			r := slices.Clone(pkt)
			copy(r[12:16], pkt[16:20])
			copy(r[16:20], pkt[12:16])
			tun.Inject(r)
		}
	}
}

func staticConfig() Config {
	c := validConfig()
	c.BGP, c.StaticRoutesOnly, c.SitePrefixes = nil, true, nil
	c.RemotePrefixes = []netip.Prefix{vpcNet}
	c.Tunnels[0].InsideIPv6CIDR = netip.Prefix{}
	return c
}

type connRig struct {
	t      *testing.T
	fc     *fakeConcentrator
	kernel *route.FakeKernel
	conn   *Connection
	logs   *vpnlog.Memory
	diag   *lockedBuffer
	evMu   sync.Mutex
	evs    []Event
}

type lockedBuffer = testenv.Buffer

func newConnRig(t *testing.T, cfg Config) *connRig {
	t.Helper()
	r := &connRig{t: t, fc: newFakeConcentrator(t, [2]string{string(cfg.Tunnels[0].PSK), string(cfg.Tunnels[1].PSK)}),
		kernel: route.NewFakeKernel(map[string]int{"mrvpn0": 10, "mrvpn1": 11}), logs: &vpnlog.Memory{}, diag: &lockedBuffer{}}
	r.conn = &Connection{
		Host: r.fc.site, Kernel: r.kernel, Log: r.logs,
		Logger: slog.New(slog.NewTextHandler(r.diag, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnEvent: func(e Event) {
			r.evMu.Lock()
			r.evs = append(r.evs, e)
			r.evMu.Unlock()
		},
	}
	if err := r.conn.Start(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.conn.Stop()
		all := r.diag.String() + strings.Join(r.logs.Lines(), "\n")
		for _, k := range []string{testPSK1, testPSK2} {
			if strings.Contains(all, k) {
				t.Errorf("a PSK appears in the connection's logs")
			}
		}
	})
	return r
}

func (r *connRig) waitFor(d time.Duration, what string, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out after %v waiting for %s; status:\n%s", d, what, r.conn.Status().Format())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// nexthops returns the link indexes of the kernel route to p (nil: none).
func (r *connRig) nexthops(p netip.Prefix) []int {
	for _, kr := range r.kernel.AllRoutes() {
		if kr.Dst == p {
			var out []int
			for _, nh := range kr.Nexthops {
				out = append(out, nh.LinkIndex)
			}
			slices.Sort(out)
			return out
		}
	}
	return nil
}

func (r *connRig) allUsable() bool {
	st := r.conn.Status()
	if len(st.Tunnels) != 2 {
		return false
	}
	for _, t := range st.Tunnels {
		if !t.Usable {
			return false
		}
	}
	return true
}

// traffic sends UDP packets into the site's first tunnel every 5 ms until ctx ends.
func (r *connRig) traffic(ctx context.Context, dev string) {
	go func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			tun := r.fc.site.TUN(dev)
			if tun == nil {
				continue
			}
			p := make([]byte, 36)
			p[0], p[8], p[9] = 0x45, 64, 17
			binary.BigEndian.PutUint16(p[2:], 36)
			copy(p[12:16], []byte{192, 168, 1, 10})
			copy(p[16:20], []byte{10, 0, 0, 10})
			binary.BigEndian.PutUint16(p[24:], 16)
			tun.Inject(p)
			for len(tun.Written()) > 0 {
				<-tun.Written()
			}
		}
	}()
}

func TestConnectionStaticFailover(t *testing.T) {
	r := newConnRig(t, staticConfig())
	r.waitFor(20*time.Second, "both tunnels in service", r.allUsable)
	r.waitFor(5*time.Second, "an ECMP route over both tunnels", func() bool { return slices.Equal(r.nexthops(vpcNet), []int{10, 11}) })

	st := r.conn.Status()
	if st.Mode != "static" || len(st.Routes) != 1 || !slices.Equal(st.Routes[0].Tunnels, []string{"198.51.100.2", "203.0.113.2"}) {
		t.Errorf("status routes %+v mode %s; want 10.0.0.0/16 over both tunnels, static", st.Routes, st.Mode)
	}
	for _, rec := range r.logs.Tunnel() {
		if !strings.HasPrefix(rec.ResourceID, "vpn-0123456789abcdef0_") {
			t.Errorf("tunnel record stream %q; want vpn-0123456789abcdef0_<outside address>", rec.ResourceID)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.traffic(ctx, "mrvpn0")
	time.Sleep(200 * time.Millisecond)
	spi0 := st.Tunnels[0].SPIIn

	cut := time.Now()
	r.fc.eps[0].cut.Store(true)
	r.waitFor(10*time.Second, "the route moved to tunnel 2", func() bool { return slices.Equal(r.nexthops(vpcNet), []int{11}) })
	t.Logf("route on tunnel 2 alone %v after the cut", time.Since(cut))

	restored := time.Now()
	r.fc.eps[0].cut.Store(false)
	r.waitFor(10*time.Second, "ECMP again", func() bool { return slices.Equal(r.nexthops(vpcNet), []int{10, 11}) })
	t.Logf("ECMP again %v after the path came back", time.Since(restored))
	if s, _ := r.conn.Status().Tunnel("198.51.100.2"); s.SPIIn != spi0 || s.Failovers != 1 || s.Recoveries != 1 {
		t.Errorf("tunnel 1 after recovery: SPI %s (was %s), failovers %d, recoveries %d; want the same SA, 1 and 1", s.SPIIn, spi0, s.Failovers, s.Recoveries)
	}

	if err := r.conn.Stop(); err != nil {
		t.Fatal(err)
	}
	if routes := r.kernel.AllRoutes(); len(routes) != 0 {
		t.Errorf("after Stop the kernel has %v; want no routes", routes)
	}
}

func TestConnectionUpdate(t *testing.T) {
	cfg := staticConfig()
	r := newConnRig(t, cfg)
	r.waitFor(20*time.Second, "both tunnels in service", r.allUsable)
	before := r.conn.Status()

	// New remote prefixes: routes change, tunnels stay.
	extra := netip.MustParsePrefix("10.1.0.0/16")
	cfg.RemotePrefixes = append(cfg.RemotePrefixes, extra)
	if err := r.conn.Update(cfg); err != nil {
		t.Fatal(err)
	}
	r.waitFor(5*time.Second, "the new prefix routed", func() bool { return slices.Equal(r.nexthops(extra), []int{10, 11}) })
	after := r.conn.Status()
	for i := range before.Tunnels {
		if after.Tunnels[i].SPIIn != before.Tunnels[i].SPIIn {
			t.Errorf("tunnel %s SA changed (%s -> %s) on a routes-only update; want it kept", before.Tunnels[i].Name, before.Tunnels[i].SPIIn, after.Tunnels[i].SPIIn)
		}
	}

	// A bad configuration changes nothing.
	bad := cfg
	bad.Tunnels = slices.Clone(cfg.Tunnels)
	bad.Tunnels[1].InsideCIDR = netip.MustParsePrefix("10.9.9.0/30")
	if err := r.conn.Update(bad); err == nil || !strings.Contains(err.Error(), "tunnels[1].inside_cidr") {
		t.Errorf("Update(bad) = %v; want an error naming tunnels[1].inside_cidr", err)
	}

	// A new PSK for tunnel 2 only: tunnel 2 restarts (and fails: the endpoint kept the old
	// key), tunnel 1 keeps its SA.
	cfg.Tunnels = slices.Clone(cfg.Tunnels)
	cfg.Tunnels[1].PSK = "a-new-psk-nobody-knows"
	if err := r.conn.Update(cfg); err != nil {
		t.Fatal(err)
	}
	r.waitFor(10*time.Second, "tunnel 2 failing authentication", func() bool {
		s, _ := r.conn.Status().Tunnel("203.0.113.2")
		return strings.Contains(strings.ToLower(s.LastError), "auth")
	})
	st := r.conn.Status()
	if s, _ := st.Tunnel("198.51.100.2"); s.SPIIn != before.Tunnels[0].SPIIn || !s.Usable {
		t.Errorf("tunnel 1 after tunnel 2's PSK changed: SPI %s (was %s), in service %v; want it untouched", s.SPIIn, before.Tunnels[0].SPIIn, s.Usable)
	}
	r.waitFor(5*time.Second, "routes on tunnel 1 only", func() bool { return slices.Equal(r.nexthops(vpcNet), []int{10}) })

	// Back to one tunnel: tunnel 2 removed.
	cfg.Tunnels = cfg.Tunnels[:1]
	if err := r.conn.Update(cfg); err != nil {
		t.Fatal(err)
	}
	if st := r.conn.Status(); len(st.Tunnels) != 1 {
		t.Errorf("after removing tunnel 2: %d tunnels; want 1", len(st.Tunnels))
	}
	if r.fc.site.TUN("mrvpn1") != nil {
		t.Errorf("tunnel 2's device still exists")
	}
}

func TestConnectionStartErrors(t *testing.T) {
	c := &Connection{Host: tunnel.NewFakeHost(esp.NewFakeNetwork(), siteAddr), Kernel: route.NewFakeKernel(nil)}
	bad := validConfig()
	bad.ConnectionID = ""
	if err := c.Start(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "connection_id") {
		t.Errorf("Start(no id) = %v; want an error naming connection_id", err)
	}
	if st := c.Status(); st.Running {
		t.Errorf("Status after a failed Start: running")
	}
	if err := c.Stop(); err != nil {
		t.Errorf("Stop after a failed Start = %v", err)
	}
}
