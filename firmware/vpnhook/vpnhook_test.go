package vpnhook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"meshroot/internal/testenv"
	"meshroot/provision/profile"
	"meshroot/vpn"
	"meshroot/vpn/esp"
	"meshroot/vpn/route"
	"meshroot/vpn/tunnel"
	"meshroot/vpn/vpnlog"
)

const (
	psk1 = "tunnel1-psk-0123456789abcdef"
	psk2 = "tunnel2-psk-0123456789abcdef"
)

func secrets(ref string) (string, bool) {
	v, ok := map[string]string{"vpn/t1": psk1, "vpn/t2": psk2}[ref]
	return v, ok
}

func exampleVPN() *profile.VPN {
	o := profile.DefaultTunnelOptions()
	return &profile.VPN{ConnectionID: "vpn-0123456789abcdef0", Type: "ipsec.1",
		BGP:          &profile.BGP{CustomerASN: 65000, AmazonASN: 64512, HoldTimeSeconds: 30},
		SitePrefixes: []string{"192.168.1.0/24", "fd00:c0a8:1::/64"},
		Tunnels: []profile.Tunnel{
			{OutsideAddress: "198.51.100.2", InsideCIDR: "169.254.10.0/30", InsideIPv6CIDR: "fd00:a9fe:10::/126", PSKRef: "vpn/t1", Options: o},
			{OutsideAddress: "203.0.113.2", InsideCIDR: "169.254.11.0/30", PSKRef: "vpn/t2", Options: o},
		}}
}

func TestNewPlan(t *testing.T) {
	p, err := NewPlan(7, exampleVPN(), secrets)
	if err != nil {
		t.Fatalf("NewPlan() = %v", err)
	}
	c := p.Config
	t1 := c.Tunnels[0]
	got := map[string]string{
		"id": c.ConnectionID, "bgp": fmt.Sprintf("%d/%d/%v", c.BGP.CustomerASN, c.BGP.AmazonASN, c.BGP.HoldTime),
		"prefixes": fmt.Sprint(c.SitePrefixes), "local": c.LocalAddress.String(),
		"device": t1.Device, "outside": t1.OutsideAddress.String(), "inside4": t1.InsideCIDR.String(), "inside6": t1.InsideIPv6CIDR.String(),
		"lifetimes": t1.Options.Phase1Lifetime.String() + " " + t1.Options.Phase2Lifetime.String() + " " + t1.Options.RekeyMarginTime.String(),
		"dpd":       t1.Options.DPDTimeout.String() + " " + t1.Options.StartupAction,
		"algs":      fmt.Sprint(t1.Options.Phase1EncryptionAlgorithms, t1.Options.Phase2DHGroupNumbers),
		"device2":   c.Tunnels[1].Device, "inside6-2": c.Tunnels[1].InsideIPv6CIDR.String(),
	}
	want := map[string]string{
		"id": "vpn-0123456789abcdef0", "bgp": "65000/64512/30s", "prefixes": "[192.168.1.0/24 fd00:c0a8:1::/64]", "local": "invalid IP",
		"device": "mrtun1", "outside": "198.51.100.2", "inside4": "169.254.10.0/30", "inside6": "fd00:a9fe:10::/126",
		"lifetimes": "8h0m0s 1h0m0s 4m30s", "dpd": "30s add",
		"algs":    "[AES128 AES256 AES128-GCM-16 AES256-GCM-16] [2 5 14 15 16 17 18 19 20 21 22 23 24]",
		"device2": "mrtun2", "inside6-2": "invalid Prefix",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("vpn.Config (-want +got):\n%s", diff)
	}
	if string(t1.PSK) != psk1 || string(c.Tunnels[1].PSK) != psk2 {
		t.Errorf("PSKs not resolved")
	}
	if got := p.Peers(); len(got) != 2 || got[1].String() != "203.0.113.2" {
		t.Errorf("Peers() = %v", got)
	}
	// The configuration is what vpn accepts once the WAN address is known.
	c.LocalAddress = netip.MustParseAddr("100.64.0.100")
	if err := c.Validate(); err != nil {
		t.Errorf("vpn.Config.Validate() = %v", err)
	}
}

func TestNewPlanStatic(t *testing.T) {
	v := exampleVPN()
	v.BGP, v.StaticRoutesOnly = nil, true
	v.RemotePrefixes = []string{"10.0.0.0/16", "fd00:10::/48"}
	p, err := NewPlan(8, v, secrets)
	if err != nil {
		t.Fatalf("NewPlan(static) = %v; want a plan", err)
	}
	if got, want := fmt.Sprint(p.Config.RemotePrefixes), "[10.0.0.0/16 fd00:10::/48]"; got != want {
		t.Errorf("NewPlan(static).Config.RemotePrefixes = %s; want %s", got, want)
	}
	if !p.Config.StaticRoutesOnly || p.Config.BGP != nil {
		t.Errorf("NewPlan(static).Config = static %v, BGP %v; want static, no BGP", p.Config.StaticRoutesOnly, p.Config.BGP)
	}
}

func TestNewPlanErrors(t *testing.T) {
	for _, c := range []struct {
		mod  func(*profile.VPN)
		want string
	}{
		{func(v *profile.VPN) { v.Tunnels = nil }, "vpn.tunnels"},
		{func(v *profile.VPN) { v.Tunnels[1].PSKRef = "vpn/missing" }, `vpn.tunnels[1].psk_ref "vpn/missing": not resolved`},
		{func(v *profile.VPN) { v.Tunnels[0].InsideCIDR = "169.254.10.0/29" }, "vpn.tunnels[0].inside_cidr"},
		{func(v *profile.VPN) { v.Tunnels[0].OutsideAddress = "not-an-ip" }, "vpn.tunnels[0].outside_address"},
		{func(v *profile.VPN) { v.Tunnels[0].Options.IKEVersions = []string{"ikev1"} }, "vpn.tunnels[0].options.ike_versions"},
		{func(v *profile.VPN) { v.Tunnels[0].Options.Phase1EncryptionAlgorithms = []string{"DES"} }, "vpn.tunnels[0].options.phase1_encryption_algorithms"},
		{func(v *profile.VPN) { v.Tunnels[1].OutsideAddress = v.Tunnels[0].OutsideAddress }, "vpn.tunnels[1].outside_address"},
		{func(v *profile.VPN) { v.BGP = nil }, "vpn.bgp"},
		{func(v *profile.VPN) { v.SitePrefixes = []string{"nope"} }, "vpn.site_prefixes[0]"},
		{func(v *profile.VPN) { v.RemotePrefixes = []string{"10.0.0.0/8", "nope"} }, "vpn.remote_prefixes[1]"},
		{func(v *profile.VPN) { v.BGP, v.StaticRoutesOnly = nil, true }, "remote_prefixes"},
		{func(v *profile.VPN) { v.Type = "ipsec.2" }, "vpn.type"},
	} {
		v := exampleVPN()
		c.mod(v)
		_, err := NewPlan(1, v, secrets)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewPlan() = %v; want an error naming %q", err, c.want)
		}
		if err != nil && (strings.Contains(err.Error(), psk1) || strings.Contains(err.Error(), psk2)) {
			t.Errorf("error carries a PSK: %v", err)
		}
	}
}

// profiles is the agent's Subscribe.
type profiles struct {
	mu sync.Mutex
	fn func(*profile.Verified)
}

func (p *profiles) subscribe(fn func(*profile.Verified)) func() {
	p.mu.Lock()
	p.fn = fn
	p.mu.Unlock()
	return func() {}
}

func (p *profiles) send(v *profile.Verified) {
	p.mu.Lock()
	fn := p.fn
	p.mu.Unlock()
	fn(v)
}

type syncBuf = testenv.Buffer

func verified(version uint64, v *profile.VPN) *profile.Verified {
	return &profile.Verified{Profile: &profile.Profile{Version: version, VPN: v}}
}

func runService(t *testing.T, s *Service, _ any) (*profiles, *syncBuf) {
	t.Helper()
	ps := &profiles{}
	logs := &syncBuf{}
	s.Subscribe, s.Secret = ps.subscribe, secrets
	s.Log = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	up := make(chan struct{})
	go func() { done <- s.Run(ctx, func() { close(up) }) }()
	<-up
	t.Cleanup(func() { cancel(); <-done })
	return ps, logs
}

func waitStatus(t *testing.T, s *Service, cond func(Status) bool) Status {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := s.Status()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestServiceWithoutEngine: a build without a VPN engine makes the plan, tells the firewall
// of the peers, and says plainly that the VPN is not available.
func TestServiceWithoutEngine(t *testing.T) {
	var peers []netip.Addr
	var mu sync.Mutex
	s := &Service{NoEngine: true, OnPlan: func(p *Plan) { mu.Lock(); peers = p.Peers(); mu.Unlock() }}
	ps, logs := runService(t, s, nil)
	if st := s.Status(); st.State != StateNone {
		t.Errorf("Status() before a profile = %+v; want none", st)
	}
	ps.send(verified(3, exampleVPN()))
	st := waitStatus(t, s, func(st Status) bool { return st.State == StateUnavailable })
	if st.ConnectionID != "vpn-0123456789abcdef0" || st.ProfileVersion != 3 || len(st.Tunnels) != 0 || !strings.Contains(st.Detail, "not available in this build") {
		t.Errorf("Status() = %+v", st)
	}
	if !strings.Contains(logs.String(), `"msg":"vpn: not available in this build"`) {
		t.Errorf("log = %s; want the not-available line", logs.String())
	}
	mu.Lock()
	if len(peers) != 2 {
		t.Errorf("OnPlan peers = %v; want both endpoints", peers)
	}
	mu.Unlock()
	bad := exampleVPN()
	bad.Tunnels[0].PSKRef = "vpn/gone"
	ps.send(verified(4, bad))
	st = waitStatus(t, s, func(st Status) bool { return st.LastError != "" })
	if s.Plan().ProfileVersion != 3 || st.ProfileVersion != 3 {
		t.Errorf("plan after a refused profile = v%d; want v3 kept", s.Plan().ProfileVersion)
	}
	ps.send(verified(5, nil))
	waitStatus(t, s, func(st Status) bool { return st.State == StateNone })
	for _, sec := range []string{psk1, psk2} {
		if strings.Contains(logs.String(), sec) || strings.Contains(st.LastError, sec) {
			t.Errorf("a PSK reached the log or the status")
		}
	}
}

type fakeEngine struct {
	mu      sync.Mutex
	calls   []string
	failOne bool
}

func (f *fakeEngine) record(s string) { f.mu.Lock(); f.calls = append(f.calls, s); f.mu.Unlock() }

func (f *fakeEngine) Start(_ context.Context, c vpn.Config) error {
	f.mu.Lock()
	fail := f.failOne
	f.failOne = false
	f.mu.Unlock()
	f.record("start " + c.LocalAddress.String())
	if fail {
		return errors.New("no TUN")
	}
	return nil
}
func (f *fakeEngine) Update(c vpn.Config) error {
	f.record(fmt.Sprintf("update %s %d", c.LocalAddress, c.BGP.HoldTime/time.Second))
	return nil
}
func (f *fakeEngine) Status() vpn.Status {
	return vpn.Status{Running: true, Tunnels: []vpn.TunnelStatus{{Name: "203.0.113.2", Phase1: "Established", Phase2: "Established", Usable: true,
		BGP: []vpn.PeerStatus{{State: "Established", PrefixesIn: 3, PrefixesOut: 1}}}}, Routes: []vpn.RouteStatus{{Prefix: "10.0.0.0/16", Tunnels: []string{"203.0.113.2"}}}}
}
func (f *fakeEngine) Stop() error { f.record("stop"); return nil }
func (f *fakeEngine) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

type wanAddr struct {
	mu sync.Mutex
	a  netip.Addr
}

func (w *wanAddr) get() netip.Addr { w.mu.Lock(); defer w.mu.Unlock(); return w.a }
func (w *wanAddr) set(s string)    { w.mu.Lock(); defer w.mu.Unlock(); w.a, _ = netip.ParseAddr(s) }
func (e *fakeEngine) waitCalls(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(e.Calls()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("engine calls = %q; want %d", e.Calls(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestServiceWithEngine: the service waits for the WAN's address, starts the connection with
// it (a failed start is retried with a new connection), updates it with a new profile or a new
// WAN address, and stops it when a profile drops the VPN.
func TestServiceWithEngine(t *testing.T) {
	var engines []*fakeEngine
	var mu sync.Mutex
	w := &wanAddr{}
	s := &Service{Retry: 20 * time.Millisecond, LocalAddress: w.get, Logs: vpnlog.NewRedactor(vpnlog.Discard),
		NewEngine: func(*slog.Logger, vpnlog.Sink) Engine {
			mu.Lock()
			defer mu.Unlock()
			e := &fakeEngine{failOne: len(engines) == 0}
			engines = append(engines, e)
			return e
		}}
	ps, _ := runService(t, s, nil)
	ps.send(verified(1, exampleVPN()))
	waitStatus(t, s, func(st Status) bool { return st.State == StateWaiting })
	w.set("100.64.0.100")
	st := waitStatus(t, s, func(st Status) bool { return st.State == StateRunning })
	if st.LocalAddress != "100.64.0.100" || len(st.Tunnels) != 1 || st.Tunnels[0].Name != "tunnel2" || st.Tunnels[0].BGP != "Established" ||
		st.Tunnels[0].PrefixesIn != 3 || st.Routes["10.0.0.0/16"][0] != "203.0.113.2" {
		t.Errorf("Status() = %+v", st)
	}
	mu.Lock()
	e := engines[len(engines)-1]
	n := len(engines)
	mu.Unlock()
	if n != 2 {
		t.Errorf("%d engines; want the failed first start retried with a new connection", n)
	}
	v2 := exampleVPN()
	v2.BGP.HoldTimeSeconds = 90
	ps.send(verified(2, v2))
	e.waitCalls(t, 2)
	w.set("100.64.0.101")
	e.waitCalls(t, 3)
	w.set("") // a WAN outage: the connection rides it out
	time.Sleep(100 * time.Millisecond)
	ps.send(verified(3, nil))
	e.waitCalls(t, 4)
	want := []string{"start 100.64.0.100", "update 100.64.0.100 90", "update 100.64.0.101 90", "stop"}
	if got := e.Calls(); !cmp.Equal(got, want) {
		t.Errorf("engine calls = %q; want %q", got, want)
	}
}

// TestServiceRealConnection drives a real vpn.Connection (on vpn's fake host and route kernel,
// with no concentrator answering): it starts with both tunnels on mrtun1/mrtun2, negotiating,
// and stops cleanly.
func TestServiceRealConnection(t *testing.T) {
	local := netip.MustParseAddr("100.64.0.100")
	host := tunnel.NewFakeHost(esp.NewFakeNetwork(), local)
	logs := &vpnlog.Memory{}
	s := &Service{Retry: 20 * time.Millisecond, LocalAddress: func() netip.Addr { return local }, Logs: vpnlog.NewRedactor(logs),
		NewEngine: func(log *slog.Logger, sink vpnlog.Sink) Engine {
			return &vpn.Connection{Host: host, Kernel: route.NewFakeKernel(map[string]int{"mrtun1": 10, "mrtun2": 11}), Log: sink, Logger: log}
		}}
	ps, diag := runService(t, s, nil)
	ps.send(verified(1, exampleVPN()))
	st := waitStatus(t, s, func(st Status) bool { return st.State == StateRunning && len(st.Tunnels) == 2 })
	for i, tu := range st.Tunnels {
		if tu.Name != fmt.Sprintf("tunnel%d", i+1) || tu.Device != fmt.Sprintf("mrtun%d", i+1) || tu.IKE == "Established" || tu.InService {
			t.Errorf("tunnel %d = %+v; want negotiating on mrtun%d (no concentrator answers)", i+1, tu, i+1)
		}
	}
	if host.TUN("mrtun1") == nil || host.TUN("mrtun2") == nil {
		t.Errorf("the connection made no TUN devices mrtun1/mrtun2")
	}
	ps.send(verified(2, nil))
	waitStatus(t, s, func(st Status) bool { return st.State == StateNone })
	deadline := time.Now().Add(5 * time.Second)
	for host.TUN("mrtun1") != nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if host.TUN("mrtun1") != nil {
		t.Errorf("mrtun1 still exists after the VPN was dropped")
	}
	all := diag.String() + strings.Join(logs.Lines(), "\n")
	for _, k := range []string{psk1, psk2} {
		if strings.Contains(all, k) {
			t.Errorf("a PSK reached the logs")
		}
	}
}
