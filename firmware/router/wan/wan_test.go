package wan

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"

	"meshroot/firmware/internal/pipeconn"
	"meshroot/firmware/router/dhcpd"
)

var wanMAC = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}

// isp is the upstream: a real DHCP server (our dhcpd) on the far end of an in-memory link.
type isp struct {
	t      *testing.T
	link   *pipeconn.Link
	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan error
}

func newISP(t *testing.T, lease time.Duration, static ...dhcpd.StaticLease) *isp {
	i := &isp{t: t, link: pipeconn.New(&net.UDPAddr{IP: net.IPv4zero, Port: 68}, &net.UDPAddr{IP: net.IPv4(100, 64, 0, 1), Port: 67})}
	i.start(lease, static...)
	t.Cleanup(i.stop)
	return i
}

// start (re)starts the ISP's DHCP server with a fresh lease table.
func (i *isp) start(lease time.Duration, static ...dhcpd.StaticLease) {
	i.stop()
	s, err := dhcpd.New(dhcpd.Config{Address: netip.MustParsePrefix("100.64.0.1/24"), LeaseTime: lease,
		DNS: []netip.Addr{netip.MustParseAddr("100.64.0.53"), netip.MustParseAddr("100.64.0.54")}, Static: static})
	if err != nil {
		i.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	conn := i.link.B.View()
	go func() { done <- s.Serve(ctx, conn) }()
	i.mu.Lock()
	i.cancel, i.done = cancel, done
	i.mu.Unlock()
}

func (i *isp) stop() {
	i.mu.Lock()
	cancel, done := i.cancel, i.done
	i.cancel = nil
	i.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (i *isp) newDHCP(string, net.HardwareAddr) (DHCP, error) {
	c, err := nclient4.NewWithConn(i.link.A.View(), wanMAC, nclient4.WithTimeout(300*time.Millisecond), nclient4.WithRetry(2))
	if err != nil {
		return nil, err
	}
	return Client{c}, nil
}

type rig struct {
	k   *FakeKernel
	svc *Service
	dir string
}

func start(t *testing.T, i *isp, mod func(*Config)) *rig {
	t.Helper()
	r := &rig{k: &FakeKernel{}, dir: t.TempDir()}
	r.k.SetLink("eth0", wanMAC, true)
	cfg := Config{Interface: "eth0", Hostname: "meshroot", ResolvConf: filepath.Join(r.dir, "resolv.conf"),
		LinkPoll: 20 * time.Millisecond, Retry: 50 * time.Millisecond, Kernel: r.k}
	if i != nil {
		cfg.NewDHCP = i.newDHCP
	}
	if mod != nil {
		mod(&cfg)
	}
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.svc = svc
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	up := make(chan struct{})
	go func() { done <- svc.Run(ctx, func() { close(up) }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
		if a, gw := r.k.Addrs("eth0"); len(a) != 0 || gw.IsValid() {
			t.Errorf("after Run: addresses %v, gateway %v; want them removed", a, gw)
		}
	})
	select {
	case <-up:
	case <-time.After(5 * time.Second):
		t.Fatal("Run never called up")
	}
	return r
}

// waitState waits (up to 20 s) for the state to satisfy cond.
func (r *rig) waitState(t *testing.T, what string, cond func(State) bool) State {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := r.svc.State()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: state %+v", what, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func bound(st State) bool { return st.Phase == PhaseBound && st.Address.IsValid() }

func TestDHCPBind(t *testing.T) {
	i := newISP(t, time.Hour)
	r := start(t, i, nil)
	st := r.waitState(t, "a lease", bound)
	if got, want := st.Address.String(), "100.64.0.100/24"; got != want {
		t.Errorf("address = %s; want %s", got, want)
	}
	addrs, gw := r.k.Addrs("eth0")
	if len(addrs) != 1 || addrs[0] != st.Address || gw.String() != "100.64.0.1" {
		t.Errorf("kernel: addresses %v gateway %v; want the lease's address and the router option", addrs, gw)
	}
	if got := r.svc.Upstreams(); len(got) != 2 || got[0].String() != "100.64.0.53" {
		t.Errorf("Upstreams() = %v; want the lease's DNS servers", got)
	}
	b, _ := os.ReadFile(filepath.Join(r.dir, "resolv.conf"))
	if !strings.Contains(string(b), "nameserver 100.64.0.53\nnameserver 100.64.0.54\n") {
		t.Errorf("resolv.conf = %q", b)
	}
	if !st.Up() || st.Server.String() != "100.64.0.1" || st.LeaseExpires.Sub(st.Renew) < 29*time.Minute {
		t.Errorf("state = %+v; want up, server 100.64.0.1, T1 at half the lease", st)
	}
}

func TestDHCPRenewal(t *testing.T) {
	i := newISP(t, 2*time.Second)
	r := start(t, i, nil)
	first := r.waitState(t, "a lease", bound)
	st := r.waitState(t, "two renewals", func(s State) bool { return s.Leases >= 3 })
	if st.Address != first.Address {
		t.Errorf("address after renewals = %s; want %s kept", st.Address, first.Address)
	}
	if a, _ := r.k.Addrs("eth0"); len(a) != 1 {
		t.Errorf("kernel addresses after renewals = %v; want one", a)
	}
}

// TestDHCPUpstreamGone: the server stops answering; the lease runs out through renewing and
// rebinding, the address goes, discovery restarts; when the server is back the uplink recovers.
func TestDHCPUpstreamGone(t *testing.T) {
	i := newISP(t, 2*time.Second)
	r := start(t, i, nil)
	r.waitState(t, "a lease", bound)
	i.link.Cut(true)
	r.waitState(t, "renewing", func(s State) bool { return s.Phase == PhaseRenewing || s.Phase == PhaseRebinding })
	r.waitState(t, "the lease to expire", func(s State) bool { return s.Phase == PhaseDiscovering && !s.Address.IsValid() })
	if a, gw := r.k.Addrs("eth0"); len(a) != 0 || gw.IsValid() {
		t.Errorf("after expiry: kernel addresses %v gateway %v; want none", a, gw)
	}
	if r.svc.State().Up() {
		t.Errorf("State().Up() = true after expiry")
	}
	i.link.Cut(false)
	st := r.waitState(t, "a lease again", bound)
	if st.Address.String() != "100.64.0.100/24" {
		t.Errorf("address after recovery = %s", st.Address)
	}
}

// TestDHCPLinkFlap: a pulled cable keeps the lease; plugged back, the lease is confirmed.
func TestDHCPLinkFlap(t *testing.T) {
	i := newISP(t, time.Hour)
	r := start(t, i, nil)
	first := r.waitState(t, "a lease", bound)
	r.k.SetLink("eth0", wanMAC, false)
	r.waitState(t, "link down", func(s State) bool { return s.Phase == PhaseLinkDown && s.LinkLosses == 1 })
	if a, _ := r.k.Addrs("eth0"); len(a) != 1 {
		t.Errorf("addresses while unplugged = %v; want the lease's kept", a)
	}
	r.k.SetLink("eth0", wanMAC, true)
	st := r.waitState(t, "confirmed", func(s State) bool { return bound(s) && s.Leases >= 2 })
	if st.Address != first.Address {
		t.Errorf("address after the flap = %s; want %s", st.Address, first.Address)
	}
}

// TestDHCPNak: after a restart the ISP has given our address to someone else and refuses the
// renewal; the uplink starts over and gets another address.
func TestDHCPNak(t *testing.T) {
	i := newISP(t, 2*time.Second)
	r := start(t, i, nil)
	r.waitState(t, "a lease", bound)
	i.start(2*time.Second, dhcpd.StaticLease{MAC: "02:99:00:00:00:01", IP: netip.MustParseAddr("100.64.0.100")})
	st := r.waitState(t, "another lease", func(s State) bool { return bound(s) && s.Address.Addr().String() != "100.64.0.100" })
	if st.Address.String() != "100.64.0.101/24" {
		t.Errorf("address after NAK = %s; want 100.64.0.101/24", st.Address)
	}
	if a, _ := r.k.Addrs("eth0"); len(a) != 1 || a[0] != st.Address {
		t.Errorf("kernel addresses = %v; want only the new one", a)
	}
}

func TestLinkAppearsLater(t *testing.T) {
	i := newISP(t, time.Hour)
	r := &rig{}
	r = start(t, i, func(c *Config) { c.Interface = "eth9" })
	r.waitState(t, "no link", func(s State) bool { return s.Phase == PhaseNoLink })
	r.k.SetLink("eth9", wanMAC, true)
	r.waitState(t, "a lease", bound)
}

func TestStatic(t *testing.T) {
	r := start(t, nil, func(c *Config) {
		c.Settings = Settings{Mode: ModeStatic, Static: &StaticConfig{Address: netip.MustParsePrefix("203.0.113.10/29"),
			Gateway: netip.MustParseAddr("203.0.113.9"), DNS: []netip.Addr{netip.MustParseAddr("9.9.9.9")}}}
		c.NewDHCP = func(string, net.HardwareAddr) (DHCP, error) {
			t.Error("DHCP used in static mode")
			return nil, os.ErrInvalid
		}
	})
	st := r.waitState(t, "static", func(s State) bool { return s.Phase == PhaseStatic })
	if st.Address.String() != "203.0.113.10/29" || st.Gateway.String() != "203.0.113.9" || !st.Up() {
		t.Errorf("state = %+v", st)
	}
	r.k.SetLink("eth0", wanMAC, false)
	r.waitState(t, "link down", func(s State) bool { return s.Phase == PhaseLinkDown })
	r.k.SetLink("eth0", wanMAC, true)
	r.waitState(t, "static again", func(s State) bool { return s.Phase == PhaseStatic })
}

func TestSettingsValidate(t *testing.T) {
	p := netip.MustParsePrefix
	a := netip.MustParseAddr
	for _, c := range []struct {
		s    Settings
		want string
	}{
		{Settings{Mode: "pppoe"}, "mode"},
		{Settings{Mode: ModeStatic}, "static: required"},
		{Settings{Mode: ModeStatic, Static: &StaticConfig{Address: p("203.0.113.8/29"), Gateway: a("203.0.113.9")}}, "static.address"},
		{Settings{Mode: ModeStatic, Static: &StaticConfig{Address: p("203.0.113.10/29"), Gateway: a("198.51.100.1")}}, "static.gateway"},
		{Settings{Mode: ModeStatic, Static: &StaticConfig{Address: p("203.0.113.10/29"), Gateway: a("203.0.113.9"), DNS: []netip.Addr{{}}}}, "static.dns[0]"},
	} {
		if err := c.s.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(%+v) = %v; want an error naming %q", c.s, err, c.want)
		}
	}
	if err := (Settings{}).Validate(); err != nil {
		t.Errorf("Validate(zero) = %v; want DHCP", err)
	}
}
