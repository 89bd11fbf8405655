package vpnhook

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"meshroot/provision/profile"
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
	t1 := p.Tunnels[0]
	got := map[string]string{
		"name": t1.Name, "device": t1.Device, "outside": t1.Outside.String(),
		"local4": t1.LocalInside4.String(), "peer4": t1.PeerInside4.String(),
		"local6": t1.LocalInside6.String(), "peer6": t1.PeerInside6.String(),
		"ike": strings.Join(t1.IKEProposals, " "), "esp": strings.Join(t1.ESPProposals, " "),
		"lifetimes": t1.IKELifetime.String() + " " + t1.ChildLifetime.String() + " " + t1.RekeyMargin.String(),
		"dpd":       t1.DPDTimeout.String() + " " + t1.DPDAction + " " + t1.StartAction,
	}
	dh := "modp1024-modp2048-modp3072-modp4096-modp6144-modp8192-ecp256-ecp384-ecp521-modp1024s160-modp2048s224-modp2048s256"
	want := map[string]string{
		"name": "tunnel1", "device": "mrtun1", "outside": "198.51.100.2",
		"local4": "169.254.10.2/30", "peer4": "169.254.10.1",
		"local6": "fd00:a9fe:10::2/126", "peer6": "fd00:a9fe:10::1",
		"ike":       "aes128gcm16-aes256gcm16-prfsha1-prfsha256-prfsha384-prfsha512-" + dh + " aes128-aes256-sha1-sha256-sha384-sha512-" + dh,
		"esp":       "aes128gcm16-aes256gcm16-modp1024-modp1536-" + strings.TrimPrefix(dh, "modp1024-") + " aes128-aes256-sha1-sha256-sha384-sha512-modp1024-modp1536-" + strings.TrimPrefix(dh, "modp1024-"),
		"lifetimes": "8h0m0s 1h0m0s 4m30s",
		"dpd":       "30s clear add",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tunnel 1 (-want +got):\n%s", diff)
	}
	if p.LocalASN != 65000 || p.PeerASN != 64512 || p.HoldTime != 30*time.Second || len(p.SitePrefixes) != 2 {
		t.Errorf("plan BGP = %d/%d/%v prefixes %v", p.LocalASN, p.PeerASN, p.HoldTime, p.SitePrefixes)
	}
	if p.Tunnels[1].LocalInside6.IsValid() {
		t.Errorf("tunnel 2 has an IPv6 inside address without inside_ipv6_cidr")
	}
	if got := p.Peers(); len(got) != 2 || got[1].String() != "203.0.113.2" {
		t.Errorf("Peers() = %v", got)
	}
	if s := string(p.Tunnels[0].PSK); s != psk1 {
		t.Errorf("PSK not resolved")
	}
}

func TestProposalsNarrow(t *testing.T) {
	got, err := Proposals("phase2", []string{"AES256-GCM-16"}, nil, nil, false)
	if err != nil || !cmp.Equal(got, []string{"aes256gcm16"}) {
		t.Errorf("Proposals(GCM only, no PFS) = %v, %v; want aes256gcm16", got, err)
	}
	got, err = Proposals("phase1", []string{"AES128"}, []string{"SHA2-256"}, []int{14}, true)
	if err != nil || !cmp.Equal(got, []string{"aes128-sha256-modp2048"}) {
		t.Errorf("Proposals(CBC) = %v, %v", got, err)
	}
}

func TestNewPlanErrors(t *testing.T) {
	for _, c := range []struct {
		mod  func(*profile.VPN)
		want string
	}{
		{func(v *profile.VPN) { v.Tunnels = v.Tunnels[:1] }, "vpn.tunnels: 1 tunnels"},
		{func(v *profile.VPN) { v.Tunnels[1].PSKRef = "vpn/missing" }, `vpn.tunnels[1].psk_ref "vpn/missing": not resolved`},
		{func(v *profile.VPN) { v.Tunnels[0].InsideCIDR = "169.254.10.1/30" }, "vpn.tunnels[0].inside_cidr"},
		{func(v *profile.VPN) { v.Tunnels[0].OutsideAddress = "0.0.0.0" }, "vpn.tunnels[0].outside_address"},
		{func(v *profile.VPN) { v.Tunnels[0].Options.IKEVersions = []string{"ikev1"} }, "ike_versions"},
		{func(v *profile.VPN) { v.Tunnels[0].Options.Phase1EncryptionAlgorithms = []string{"DES"} }, "vpn.tunnels[0].options.phase1_encryption_algorithms[0]"},
		{func(v *profile.VPN) { v.Tunnels[1].Options.Phase2DHGroupNumbers = []int{99} }, "vpn.tunnels[1].options.phase2_dh_group_numbers[0]"},
		{func(v *profile.VPN) { v.Tunnels[1].OutsideAddress = v.Tunnels[0].OutsideAddress }, "both tunnels"},
		{func(v *profile.VPN) { v.BGP = nil }, "vpn.bgp"},
		{func(v *profile.VPN) { v.SitePrefixes = []string{"192.168.1.1/24"} }, "vpn.site_prefixes[0]"},
	} {
		v := exampleVPN()
		c.mod(v)
		_, err := NewPlan(1, v, secrets)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewPlan() = %v; want an error containing %q", err, c.want)
		}
		if err != nil && (strings.Contains(err.Error(), psk1) || strings.Contains(err.Error(), psk2)) {
			t.Errorf("error carries a PSK: %v", err)
		}
	}
	v := exampleVPN()
	v.StaticRoutesOnly, v.BGP = true, nil
	if p, err := NewPlan(1, v, secrets); err != nil || !p.Static {
		t.Errorf("NewPlan(static) = %v, %v", p, err)
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

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func verified(version uint64, v *profile.VPN) *profile.Verified {
	return &profile.Verified{Profile: &profile.Profile{Version: version, VPN: v}}
}

func runService(t *testing.T, s *Service) (*profiles, *syncBuf) {
	t.Helper()
	ps := &profiles{}
	logs := &syncBuf{}
	s.Subscribe, s.Secret = ps.subscribe, secrets
	s.Log = slog.New(slog.NewJSONHandler(logs, nil))
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

// TestServiceWithoutEngine: this build has no VPN engine: the plan is made, the firewall hears
// of the peers, and the service says plainly that the VPN is not available.
func TestServiceWithoutEngine(t *testing.T) {
	if NewEngine != nil {
		t.Skip("this build has a VPN engine")
	}
	var peers []netip.Addr
	var mu sync.Mutex
	s := &Service{OnPlan: func(p *Plan) { mu.Lock(); peers = p.Peers(); mu.Unlock() }}
	ps, logs := runService(t, s)
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
	// A bad profile keeps the plan in force.
	bad := exampleVPN()
	bad.Tunnels[0].PSKRef = "vpn/gone"
	ps.send(verified(4, bad))
	st = waitStatus(t, s, func(st Status) bool { return st.LastError != "" })
	if s.Plan().ProfileVersion != 3 || st.ProfileVersion != 3 {
		t.Errorf("plan after a refused profile = v%d; want v3 kept", s.Plan().ProfileVersion)
	}
	ps.send(verified(5, nil))
	waitStatus(t, s, func(st Status) bool { return st.State == StateNone })
	if s.Plan() != nil {
		t.Errorf("Plan() after a profile without VPN = %v; want nil", s.Plan())
	}
	for _, sec := range []string{psk1, psk2} {
		if strings.Contains(logs.String(), sec) || strings.Contains(st.LastError, sec) {
			t.Errorf("a PSK reached the log or the status")
		}
	}
}

type fakeEngine struct {
	mu     sync.Mutex
	calls  []string
	failIn bool
}

func (f *fakeEngine) Start(_ context.Context, p *Plan) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "start v"+string(rune('0'+p.ProfileVersion)))
	if f.failIn {
		return errors.New("no TUN")
	}
	return nil
}
func (f *fakeEngine) Update(p *Plan) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "update v"+string(rune('0'+p.ProfileVersion)))
	return nil
}
func (f *fakeEngine) Status() []TunnelStatus {
	return []TunnelStatus{{Name: "tunnel1", IKE: "Established", ESP: "Established", BGP: "Established"}}
}
func (f *fakeEngine) Stop() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "stop")
	return nil
}
func (f *fakeEngine) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// TestServiceWithEngine: the hook drives an engine as vpn.Connection will be driven.
func TestServiceWithEngine(t *testing.T) {
	eng := &fakeEngine{failIn: true}
	s := &Service{NewEngine: func(*slog.Logger, vpnlog.Sink) Engine { return eng }, Logs: vpnlog.NewRedactor(vpnlog.Discard)}
	ps, _ := runService(t, s)
	ps.send(verified(1, exampleVPN()))
	waitStatus(t, s, func(st Status) bool { return st.State == StateError })
	eng.mu.Lock()
	eng.failIn = false
	eng.mu.Unlock()
	ps.send(verified(2, exampleVPN()))
	st := waitStatus(t, s, func(st Status) bool { return st.State == StateRunning })
	if len(st.Tunnels) != 1 || st.Tunnels[0].BGP != "Established" {
		t.Errorf("Status().Tunnels = %+v; want the engine's", st.Tunnels)
	}
	ps.send(verified(3, exampleVPN()))
	waitStatus(t, s, func(st Status) bool { return st.ProfileVersion == 3 })
	ps.send(verified(4, nil))
	waitStatus(t, s, func(st Status) bool { return st.State == StateNone })
	if got, want := eng.Calls(), []string{"start v1", "start v2", "update v3", "stop"}; !cmp.Equal(got, want) {
		t.Errorf("engine calls = %q; want %q", got, want)
	}
}
