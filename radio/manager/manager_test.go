package manager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"meshroot/internal/testenv"
	"meshroot/radio/chanplan"
	"meshroot/radio/hostapd"
	"meshroot/radio/meshproto"
	"meshroot/radio/nl80211"
)

func mustSpec(t *testing.T, freq, width int) chanplan.Spec {
	t.Helper()
	s, err := chanplan.NewSpec(freq, width, 1)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func phys() []nl80211.PHY {
	var c24, c5 []nl80211.Channel
	for f := 2412; f <= 2462; f += 5 {
		c24 = append(c24, nl80211.Channel{Freq: f, MaxPowerDBm: 20})
	}
	for _, f := range []int{5180, 5200, 5220, 5240, 5745, 5765, 5785, 5805} {
		c5 = append(c5, nl80211.Channel{Freq: f, MaxPowerDBm: 23})
	}
	for _, f := range []int{5260, 5280, 5300, 5320} {
		c5 = append(c5, nl80211.Channel{Freq: f, Radar: true, NoIR: true, DFS: nl80211.DFSAvailable, MaxPowerDBm: 23})
	}
	return []nl80211.PHY{
		{Index: 0, Name: "phy0", Bands: []nl80211.Band{{ID: nl80211.Band2GHz, Channels: c24}}},
		{Index: 1, Name: "phy1", Bands: []nl80211.Band{{ID: nl80211.Band5GHz, Channels: c5, HT40: true, VHT: true}}},
	}
}

// site is one node: fake nl80211, fake hostapds, the manager.
type site struct {
	nl    *nl80211.Fake
	fakes map[string]*hostapd.Fake
	m     *Manager
	dir   string
	logs  *lockedBuf
}

type lockedBuf = testenv.Buffer

type radioSpec struct {
	rc      RadioConfig
	phy     int
	start   chanplan.Spec
	ssids   []string
	foreign []nl80211.BSS
	fstate  hostapd.FakeState
}

func newSite(t *testing.T, node string, gateway bool, radios []radioSpec, conn *meshproto.Conn, gwAddr net.Addr) *site {
	t.Helper()
	dir, err := os.MkdirTemp("", "rmgr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &site{nl: nl80211.NewFake(), fakes: map[string]*hostapd.Fake{}, dir: dir, logs: &lockedBuf{}}
	s.nl.SetPHYs(phys()...)
	var ifs []nl80211.Interface
	var rcs []RadioConfig
	for i, r := range radios {
		st := r.fstate
		st.Spec, st.SSIDs = r.start, r.ssids
		for j := range r.ssids {
			st.BSSIDs = append(st.BSSIDs, net.HardwareAddr{2, byte(len(node)), byte(i), 0, byte(j), 1})
		}
		f, err := hostapd.NewFake(dir, r.rc.Iface, st)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		s.fakes[r.rc.Iface] = f
		ifs = append(ifs, nl80211.Interface{Index: 10 + i, Name: r.rc.Iface, PHY: r.phy, Type: nl80211.IfAP, Freq: r.start.Freq, Width: r.start.Width})
		s.nl.SetScanResults(r.rc.Iface, r.foreign...)
		rc := r.rc
		rc.Ctrl = f.Path()
		rcs = append(rcs, rc)
	}
	s.nl.SetInterfaces(ifs...)
	log := slog.New(slog.NewJSONHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m, err := New(Config{
		Node: node, Gateway: gateway, GatewayAddr: gwAddr, Radios: rcs,
		SurveyEvery: 50 * time.Millisecond, PlanEvery: 100 * time.Millisecond, RadarGrace: 100 * time.Millisecond,
		Log: log,
	}, Deps{NL: s.nl, Conn: conn, DialAP: func(ctx context.Context, r RadioConfig) (AP, error) {
		return hostapd.Dial(ctx, r.Ctrl, hostapd.Options{LocalDir: dir})
	}})
	if err != nil {
		t.Fatal(err)
	}
	s.m = m
	return s
}

func (s *site) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	upc := make(chan struct{})
	go func() { done <- s.m.Run(ctx, func() { close(upc) }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
	})
	select {
	case <-upc:
	case err := <-done:
		t.Fatalf("Run() = %v before up", err)
	case <-time.After(10 * time.Second):
		t.Fatal("manager not up in 10 s")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func loud(freq, width int, load int) nl80211.BSS {
	s, _ := chanplan.NewSpec(freq, width, 1)
	return nl80211.BSS{BSSID: net.HardwareAddr{0x0a, 0, 0, 0, byte(freq % 256), 1}, Freq: freq, Signal: -45, Width: width, Center1: s.Center1, HasLoad: true, Load: load}
}

func commandsWith(f *hostapd.Fake, prefix string) []string {
	var out []string
	for _, c := range f.Commands() {
		if strings.HasPrefix(c, prefix) {
			out = append(out, c)
		}
	}
	return out
}

func TestGatewayMovesCrowdedRadio(t *testing.T) {
	s := newSite(t, "gw", true, []radioSpec{
		{rc: RadioConfig{ID: "gw/phy0", Iface: "wlan0", Band: chanplan.Band2G4, MaxWidth: 20}, phy: 0, start: mustSpec(t, 2437, 20), ssids: []string{"home"}},
		{rc: RadioConfig{ID: "gw/phy1", Iface: "wlan1", Band: chanplan.Band5G, MaxWidth: 80}, phy: 1, start: mustSpec(t, 5180, 80), ssids: []string{"home", "guest"},
			foreign: []nl80211.BSS{loud(5180, 80, 230)}},
	}, nil, nil)
	s.run(t)
	f := s.fakes["wlan1"]
	waitFor(t, "wlan1 to leave 36/80", func() bool { return f.State().Spec.Freq >= 5745 })
	cs := commandsWith(f, "CHAN_SWITCH")
	if len(cs) != 1 || !strings.HasPrefix(cs[0], "CHAN_SWITCH 10 ") {
		t.Errorf("CHAN_SWITCH commands = %q; want one with count 10 (two SSIDs)", cs)
	}
	waitFor(t, "the manager to see the switch", func() bool { return s.m.Current()["gw/phy1"].Freq >= 5745 })
	// The 2.4 GHz radio had nothing better: it stays.
	if cs := commandsWith(s.fakes["wlan0"], "CHAN_SWITCH"); len(cs) != 0 {
		t.Errorf("wlan0 got %q; want no switch", cs)
	}
}

func udpConn(t *testing.T, key meshproto.Key, node string) *meshproto.Conn {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := meshproto.NewSealer(key, node, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := meshproto.NewConn(pc, s, meshproto.NewOpener(nil, key), nil)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestSatellitePlannedOverControlPlane(t *testing.T) {
	siteKey := []byte("site key of this test, 32 bytes!")
	key, _ := meshproto.DeriveKey(1, siteKey)
	gwConn := udpConn(t, key, "gw")
	satConn := udpConn(t, key, "sat")
	gw := newSite(t, "gw", true, []radioSpec{
		{rc: RadioConfig{ID: "gw/phy1", Iface: "wlan1", Band: chanplan.Band5G, MaxWidth: 80}, phy: 1, start: mustSpec(t, 5745, 80), ssids: []string{"home"}},
	}, gwConn, nil)
	sat := newSite(t, "sat", false, []radioSpec{
		{rc: RadioConfig{ID: "sat/phy1", Iface: "wlan1", Band: chanplan.Band5G, MaxWidth: 80}, phy: 1, start: mustSpec(t, 5180, 80), ssids: []string{"home"},
			foreign: []nl80211.BSS{loud(5180, 80, 200)}},
	}, satConn, gwConn.LocalAddr())
	gw.run(t)
	sat.run(t)
	f := sat.fakes["wlan1"]
	waitFor(t, "satellite radio to move", func() bool { return f.State().Spec.Freq != 5180 })
	waitFor(t, "plan result at the gateway", func() bool {
		for _, r := range gw.m.Results() {
			if r.Radio == "sat/phy1" && r.OK {
				return true
			}
		}
		return false
	})
	// It must not land on the gateway's channel block (they hear each other via scans? no:
	// here only the foreign BSS matters) nor stay on 36/80.
	if got := f.State().Spec; got.Freq == 5180 {
		t.Errorf("satellite on %v; want off 36", got)
	}
	// A plan sealed with another site's key is ignored.
	otherKey, _ := meshproto.DeriveKey(1, []byte("the neighbour's site key, 32 b!!"))
	evil := udpConn(t, otherKey, "gw")
	before := len(commandsWith(f, "CHAN_SWITCH"))
	if err := evil.Send(satConn.LocalAddr(), meshproto.TypeChannelPlan, meshproto.ChannelPlan{ID: 99, Moves: []meshproto.Move{{Radio: "sat/phy1", Spec: mustSpec(t, 5180, 20)}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "forged plan dropped", func() bool { return satConn.Dropped.Load() >= 1 })
	time.Sleep(100 * time.Millisecond)
	if after := len(commandsWith(f, "CHAN_SWITCH")); after != before {
		t.Errorf("forged plan caused a channel switch (%d → %d)", before, after)
	}
	// Nothing secret in the logs: neither the site key nor its hex.
	for _, s := range []*site{gw, sat} {
		logs := s.logs.String()
		if logs == "" {
			t.Errorf("no logs captured")
		}
		if strings.Contains(logs, string(siteKey)) || strings.Contains(logs, fmt.Sprintf("%x", siteKey)) {
			t.Errorf("logs contain the site key:\n%s", logs)
		}
	}
}

func TestRadarManagerMovesWhenHostapdDoesNot(t *testing.T) {
	s := newSite(t, "gw", true, []radioSpec{
		{rc: RadioConfig{ID: "gw/phy1", Iface: "wlan1", Band: chanplan.Band5G, MaxWidth: 80, DFS: true}, phy: 1, start: mustSpec(t, 5260, 80), ssids: []string{"home"},
			foreign: []nl80211.BSS{loud(5180, 80, 50)}},
	}, nil, nil)
	s.run(t)
	f := s.fakes["wlan1"]
	time.Sleep(200 * time.Millisecond) // first survey and plan
	if f.State().Spec.Freq != 5260 {
		t.Fatalf("radio moved before radar to %v", f.State().Spec)
	}
	f.Radar(5260)
	waitFor(t, "radio off the radar channel", func() bool { return f.State().Spec.Freq < 5260 || f.State().Spec.Freq > 5320 })
	got := f.State().Spec
	for _, sub := range got.Subchannels() {
		if sub >= 5260 && sub <= 5320 {
			t.Errorf("moved to %v, inside the radar channel", got)
		}
	}
	cs := commandsWith(f, "CHAN_SWITCH")
	if len(cs) == 0 || !strings.Contains(cs[0], "blocktx") {
		t.Errorf("radar switch = %q; want a CHAN_SWITCH with blocktx", cs)
	}
	if u, _ := chanplan.Allowed(mustSpec(t, 5260, 80), s.m.channelStates(s.m.radios["gw/phy1"], phys(), time.Now()), time.Now()); u != chanplan.Unusable {
		t.Errorf("after radar 52/80 usability = %v; want Unusable for the NOP although the kernel says available", u)
	}
	// Later planning rounds never go back during the NOP.
	time.Sleep(300 * time.Millisecond)
	if sp := f.State().Spec; sp.Freq >= 5260 && sp.Freq <= 5320 {
		t.Errorf("back on %v during the NOP", sp)
	}
}

func TestRadarHostapdMovesItself(t *testing.T) {
	s := newSite(t, "gw", true, []radioSpec{
		{rc: RadioConfig{ID: "gw/phy1", Iface: "wlan1", Band: chanplan.Band5G, MaxWidth: 80, DFS: true}, phy: 1, start: mustSpec(t, 5260, 80), ssids: []string{"home"},
			fstate: hostapd.FakeState{RadarFallback: chanplan.Spec{Freq: 5745, Width: 80, Center1: 5775}}},
	}, nil, nil)
	s.run(t)
	f := s.fakes["wlan1"]
	time.Sleep(200 * time.Millisecond)
	f.Radar(5280)
	waitFor(t, "hostapd's own radar CSA", func() bool { return f.State().Spec.Freq == 5745 })
	time.Sleep(300 * time.Millisecond)
	if cs := commandsWith(f, "CHAN_SWITCH"); len(cs) != 0 {
		t.Errorf("manager sent %q although hostapd moved; want none", cs)
	}
	waitFor(t, "the manager to see hostapd's switch", func() bool { return s.m.Current()["gw/phy1"].Freq == 5745 })
}

func TestNewValidates(t *testing.T) {
	nl := nl80211.NewFake()
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "node"},
		{Config{Node: "n", Gateway: true, Radios: []RadioConfig{{ID: "a", Iface: "wlan0", Band: "7GHz", MaxWidth: 20}}}, "radios[0].band"},
		{Config{Node: "n", Gateway: true, Radios: []RadioConfig{{ID: "a", Iface: "wlan0", Band: chanplan.Band5G, MaxWidth: 60}}}, "radios[0].max_width"},
		{Config{Node: "n", Gateway: true, Radios: []RadioConfig{{ID: "a", Band: chanplan.Band5G, MaxWidth: 20}}}, "radios[0].iface"},
		{Config{Node: "n"}, "control plane"},
	} {
		if _, err := New(tc.cfg, Deps{NL: nl}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v; want an error naming %q", tc.cfg, err, tc.want)
		}
	}
}

// FuzzGatewayReport feeds arbitrary report bodies (as an authenticated but buggy or hostile node
// could send) through the gateway: decode, sanitize, smooth, plan. Nothing may panic, and a
// planning round must not fail because of one bad report.
func FuzzGatewayReport(f *testing.F) {
	f.Add([]byte(`{"node":"sat","at":"2026-03-01T12:00:00Z","radios":[{"radio":{"id":"sat/phy1","node":"sat","band":"5GHz","max_width":80,"channels":{"5180":{"freq":5180},"5745":{"freq":5745}},"current":{"freq":5180,"width":20,"center1":5180},"load":0.3,"neighbors":[{"bssid":"x","spec":{"freq":5180,"width":20,"center1":5180},"signal_dbm":-50,"load":0.9}],"survey":[{"freq":5180,"busy":0.7}]},"bssids":["02:00:00:00:00:01"]}]}`))
	f.Add([]byte(`{"node":"sat","radios":[{"radio":{"id":"sat/r","node":"sat","band":"5GHz","max_width":80,"load":1e308,"neighbors":[{"spec":{"freq":5181,"width":80,"center1":1},"signal_dbm":1e400}]}}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		m := &Manager{cfg: Config{Node: "gw", Gateway: true}.withDefaults(), radios: map[string]*radio{}}
		m.log = m.cfg.Log
		g := newGateway(m)
		m.gw = g
		var rep meshproto.RadioReport
		msg := meshproto.Message{Type: meshproto.TypeRadioReport, Sender: "sat", Payload: body}
		if err := msg.Decode(&rep); err != nil {
			return
		}
		g.ingest(rep, nil)
		g.mu.Lock()
		in := g.input()
		g.mu.Unlock()
		if _, err := (chanplan.Policy{}).Decide(in, chanplan.History{}); err != nil && !errors.Is(err, chanplan.ErrNoChannel) {
			t.Fatalf("Decide() after a sanitized report = %v", err)
		}
	})
}
