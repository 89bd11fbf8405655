package mesh

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"meshroot/radio/chanplan"
	"meshroot/radio/hostapd"
	"meshroot/radio/meshproto"
	"meshroot/radio/steer"
)

var siteKey = []byte("0123456789abcdef0123456789abcdef")

// site is three nodes (a = gateway, b, c), each with one fake hostapd BSS.
type site struct {
	t      *testing.T
	dir    string
	key    meshproto.Key
	fakes  map[string]*hostapd.Fake
	nodes  map[string]*Node
	conns  map[string]*meshproto.Conn
	cancel map[string]context.CancelFunc
	done   map[string]chan error
	// rcpi is what stations measure of each BSS (by BSSID), for beacon reports.
	mu   sync.Mutex
	rcpi map[string]int
	// btm is how the station answers a BSS transition request: "accept", "reject", "ignore".
	btm string
}

func bssidOf(node string) net.HardwareAddr {
	return net.HardwareAddr{2, 0, 0, 0, byte(node[0] - 'a' + 1), 0}
}

const staMAC = "02:aa:00:00:00:01"

func sta() net.HardwareAddr { m, _ := net.ParseMAC(staMAC); return m }

// beaconReport builds a beacon report body for BEACON-RESP-RX.
func beaconReport(bssid net.HardwareAddr, rcpi int) string {
	b := make([]byte, 26)
	b[0], b[1] = 115, 36
	binary.LittleEndian.PutUint16(b[10:], 50)
	b[13] = byte(rcpi)
	copy(b[15:], bssid)
	return hex.EncodeToString(b)
}

// logBuf collects the nodes' log lines (scanned for secrets).
type logBuf struct {
	mu sync.Mutex
	b  []byte
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

func newSite(t *testing.T, cfg Config) *site {
	t.Helper()
	if cfg.Log == nil {
		logs := &logBuf{}
		cfg.Log = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		t.Cleanup(func() {
			if strings.Contains(logs.String(), string(siteKey)) || strings.Contains(logs.String(), hex.EncodeToString(siteKey)) {
				t.Errorf("the site key reached a log line")
			}
			if !strings.Contains(logs.String(), "mesh node up") {
				t.Errorf("no log lines captured")
			}
		})
	}
	k, err := meshproto.DeriveKey(1, siteKey)
	if err != nil {
		t.Fatal(err)
	}
	s := &site{t: t, dir: t.TempDir(), key: k, fakes: map[string]*hostapd.Fake{}, nodes: map[string]*Node{}, conns: map[string]*meshproto.Conn{},
		cancel: map[string]context.CancelFunc{}, done: map[string]chan error{}, rcpi: map[string]int{}, btm: "accept"}
	spec, _ := chanplan.NewSpec(5180, 20, 0)
	var addrs []string
	for _, n := range []string{"a", "b", "c"} {
		f, err := hostapd.NewFake(s.dir, "wlan-"+n, hostapd.FakeState{Spec: spec, SSIDs: []string{"home"}, BSSIDs: []net.HardwareAddr{bssidOf(n)}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		s.fakes[n] = f
		f.Handle("REQ_BEACON", s.reqBeacon)
		f.Handle("BSS_TM_REQ", s.bssTMReq)
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		sealer, _ := meshproto.NewSealer(k, n, nil)
		s.conns[n] = meshproto.NewConn(pc, sealer, meshproto.NewOpener(nil, k), nil)
		addrs = append(addrs, pc.LocalAddr().String())
	}
	for _, n := range []string{"a", "b", "c"} {
		c := cfg
		c.Node, c.Controller, c.Discovery = n, n == "a", addrs
		c.BSSes = []BSSConfig{{Iface: "wlan-" + n, Ctrl: s.fakes[n].Path(), MobilityDomain: "a1b2"}}
		dir := s.dir
		node, err := NewNode(c, Deps{Conn: s.conns[n], DialAP: func(ctx context.Context, b BSSConfig) (AP, error) {
			return hostapd.Dial(ctx, b.Ctrl, hostapd.Options{LocalDir: dir})
		}})
		if err != nil {
			t.Fatal(err)
		}
		s.nodes[n] = node
	}
	for _, n := range []string{"a", "b", "c"} {
		s.start(n)
	}
	t.Cleanup(func() {
		for n := range s.cancel {
			s.stop(n)
		}
	})
	return s
}

func (s *site) start(n string) {
	ctx, cancel := context.WithCancel(context.Background())
	up := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- s.nodes[n].Run(ctx, func() { close(up) }) }()
	select {
	case <-up:
	case err := <-done:
		s.t.Fatalf("node %s: Run() = %v", n, err)
	}
	s.cancel[n], s.done[n] = cancel, done
}

func (s *site) stop(n string) {
	if s.cancel[n] == nil {
		return
	}
	s.cancel[n]()
	if err := <-s.done[n]; err != nil {
		s.t.Errorf("node %s: Run() = %v", n, err)
	}
	delete(s.cancel, n)
}

// reqBeacon answers REQ_BEACON like hostapd (a token) and plays the station's report.
func (s *site) reqBeacon(f *hostapd.Fake, req string, from *net.UnixAddr) (string, bool) {
	reply := f.Default(req, from)
	if strings.HasPrefix(reply, "FAIL") {
		return reply, true
	}
	s.mu.Lock()
	var evs []string
	for _, n := range []string{"a", "b", "c"} {
		if r, ok := s.rcpi[bssidOf(n).String()]; ok {
			evs = append(evs, fmt.Sprintf("%s %s %s 00 %s", hostapd.EventBeaconResp, staMAC, reply, beaconReport(bssidOf(n), r)))
		}
	}
	s.mu.Unlock()
	go func() {
		time.Sleep(20 * time.Millisecond)
		for _, e := range evs {
			f.Emit(e)
		}
	}()
	return reply, true
}

// bssTMReq answers BSS_TM_REQ and plays the station: it moves to the first candidate
// ("accept"), rejects ("reject") or stays silent ("ignore").
func (s *site) bssTMReq(f *hostapd.Fake, req string, from *net.UnixAddr) (string, bool) {
	reply := f.Default(req, from)
	if !strings.HasPrefix(reply, "OK") {
		return reply, true
	}
	s.mu.Lock()
	mode := s.btm
	s.mu.Unlock()
	target := ""
	for _, w := range strings.Fields(req) {
		if v, ok := strings.CutPrefix(w, "neighbor="); ok && target == "" {
			target, _, _ = strings.Cut(v, ",")
		}
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		switch mode {
		case "accept":
			f.Emit(fmt.Sprintf("%s %s status_code=0 bss_termination_delay=0 target_bssid=%s", hostapd.EventBSSTMResp, staMAC, target))
			time.Sleep(20 * time.Millisecond)
			f.RemoveStation(sta())
			for n, g := range s.fakes {
				if bssidOf(n).String() == target {
					g.AddStation(sta(), "signal=-45", "ext_capab=0000080000000040", "AKMSuiteSelector=00-0f-ac-4")
				}
			}
		case "reject":
			f.Emit(fmt.Sprintf("%s %s status_code=7 bss_termination_delay=0", hostapd.EventBSSTMResp, staMAC))
		}
	}()
	return reply, true
}

func waitFor(t *testing.T, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func fastConfig() Config {
	return Config{HelloEvery: 100 * time.Millisecond, ReportEvery: 100 * time.Millisecond, Tick: 100 * time.Millisecond,
		ControllerTimeout: 400 * time.Millisecond, BeaconWait: 100 * time.Millisecond,
		Steering: steer.Config{Settle: 300 * time.Millisecond, Wait: 500 * time.Millisecond, RejectBackoff: 200 * time.Millisecond,
			BeaconEvery: 300 * time.Millisecond, MaxAge: 2 * time.Second}}
}

// TestDiscoveryAndNeighbors: the nodes find each other and the controller; every hostapd ends
// up with the other two BSSes in its neighbour database.
func TestDiscoveryAndNeighbors(t *testing.T) {
	s := newSite(t, fastConfig())
	waitFor(t, 5*time.Second, "peers", func() bool {
		return len(s.nodes["b"].Peers()) == 2 && s.nodes["b"].ControllerName() == "a" && s.nodes["c"].ControllerName() == "a"
	})
	waitFor(t, 5*time.Second, "controller topology", func() bool { return len(s.nodes["a"].Controller().BSSes()) == 3 })
	for _, n := range []string{"a", "b", "c"} {
		n := n
		waitFor(t, 5*time.Second, "neighbours on "+n, func() bool {
			var set []string
			for _, cmd := range s.fakes[n].Commands() {
				if strings.HasPrefix(cmd, "SET_NEIGHBOR") {
					set = append(set, strings.Fields(cmd)[1])
				}
			}
			return len(set) >= 2
		})
		got := s.nodes[n].NeighborsApplied()[bssidOf(n).String()]
		if len(got) != 2 {
			t.Errorf("node %s neighbours %v; want the 2 other BSSes", n, got)
		}
		for _, b := range got {
			if b == bssidOf(n).String() {
				t.Errorf("node %s has itself as a neighbour", n)
			}
		}
	}
	// The entry is a complete neighbour report: BSSID info with the mobility domain bit, op
	// class 115, channel 36, VHT PHY type.
	for _, cmd := range s.fakes["b"].Commands() {
		if strings.HasPrefix(cmd, "SET_NEIGHBOR "+bssidOf("a").String()) {
			nr := cmd[strings.Index(cmd, "nr=")+3:]
			if !strings.HasPrefix(nr, strings.ReplaceAll(bssidOf("a").String(), ":", "")) || !strings.HasSuffix(nr, "732409") {
				t.Errorf("neighbour report %s", nr)
			}
		}
	}
}

// TestSteerWithBeaconReport: a station on A hears C much better (beacon report): the
// controller steers it there with a BSS transition request listing C, and the roam is seen.
func TestSteerWithBeaconReport(t *testing.T) {
	s := newSite(t, fastConfig())
	waitFor(t, 5*time.Second, "topology", func() bool { return len(s.nodes["a"].Controller().BSSes()) == 3 })
	s.mu.Lock()
	s.rcpi = map[string]int{bssidOf("a").String(): 80, bssidOf("b").String(): 90, bssidOf("c").String(): 150} // -70, -65, -35 dBm
	s.mu.Unlock()
	s.fakes["a"].AddStation(sta(), "signal=-72", "ext_capab=0000080000000040", "AKMSuiteSelector=00-0f-ac-4")
	ctrl := s.nodes["a"].Controller()
	waitFor(t, 10*time.Second, "steered to C", func() bool {
		v, ok := ctrl.Client(staMAC)
		return ok && v.Node == "c"
	})
	var bssTM string
	for _, cmd := range s.fakes["a"].Commands() {
		if strings.HasPrefix(cmd, "BSS_TM_REQ") {
			bssTM = cmd
		}
	}
	if !strings.Contains(bssTM, "neighbor="+bssidOf("c").String()) || !strings.Contains(bssTM, "disassoc_imminent=1") || !strings.Contains(bssTM, "pref=1") {
		t.Errorf("BSS_TM_REQ = %q; want C as candidate with preference, disassociation imminent", bssTM)
	}
	v, _ := ctrl.Client(staMAC)
	if len(v.Roams) != 1 || !v.Roams[0].Steered || v.Roams[0].From != bssidOf("a").String() || !v.Caps.BTM || !v.Caps.FT {
		t.Errorf("client view %+v; want one steered roam a→c of a BTM and FT client", v)
	}
	// After an FT roam the old AP still lists the station, idle: not an association there.
	s.fakes["a"].Handle("STA-FIRST", func(*hostapd.Fake, string, *net.UnixAddr) (string, bool) {
		return staMAC + "\nflags=[AUTH][ASSOC][AUTHORIZED]\nsignal=-72\ninactive_msec=45000\n", true
	})
	s.fakes["a"].Handle("STA-NEXT", func(*hostapd.Fake, string, *net.UnixAddr) (string, bool) { return "", true })
	time.Sleep(time.Second)
	if v, _ := ctrl.Client(staMAC); v.Node != "c" || len(v.Roams) != 1 {
		t.Errorf("after a stale entry on A: client on %s with %d roams; want c and 1", v.Node, len(v.Roams))
	}
	var beacon bool
	for _, cmd := range s.fakes["a"].Commands() {
		beacon = beacon || strings.HasPrefix(cmd, "REQ_BEACON "+staMAC)
	}
	if !beacon {
		t.Errorf("no REQ_BEACON sent to the station")
	}
}

// TestKickIgnoringStation: with kicks configured, a station that ignores BSS transition
// requests is deauthenticated and blocked on B for the block time, then unblocked by B
// itself, controller or not; a node that stops lifts its blocks.
func TestKickIgnoringStation(t *testing.T) {
	cfg := fastConfig()
	cfg.Steering.Kick = true
	cfg.Steering.BlockFor = 2 * time.Second
	cfg.Steering.KickEvery = time.Second
	s := newSite(t, cfg)
	s.btm = "ignore"
	waitFor(t, 5*time.Second, "topology", func() bool { return len(s.nodes["a"].Controller().BSSes()) == 3 })
	s.mu.Lock()
	s.rcpi = map[string]int{bssidOf("b").String(): 80, bssidOf("c").String(): 150}
	s.mu.Unlock()
	s.fakes["b"].AddStation(sta(), "signal=-72", "ext_capab=0000080000000040")
	waitFor(t, 15*time.Second, "blocked on B", func() bool { return s.fakes["b"].IsDenied(sta()) })
	deauth := false
	for _, cmd := range s.fakes["b"].Commands() {
		deauth = deauth || strings.HasPrefix(cmd, "DEAUTHENTICATE "+staMAC)
	}
	if !deauth {
		t.Errorf("no DEAUTHENTICATE on B")
	}
	if s.fakes["c"].IsDenied(sta()) {
		t.Errorf("the target C blocks the station")
	}
	// B lifts the block by itself, with the controller gone.
	s.stop("a")
	waitFor(t, 5*time.Second, "unblocked", func() bool { return !s.fakes["b"].IsDenied(sta()) })

	// A stopping node lifts its blocks at once.
	s.start("a")
	waitFor(t, 5*time.Second, "controller back", func() bool { return s.nodes["b"].ControllerName() == "a" })
	s.fakes["b"].AddStation(sta(), "signal=-72", "ext_capab=0000080000000040")
	waitFor(t, 15*time.Second, "blocked again", func() bool { return s.fakes["b"].IsDenied(sta()) })
	s.stop("b")
	if s.fakes["b"].IsDenied(sta()) {
		t.Errorf("node stopped with a block left in hostapd")
	}
}

// TestControllerLoss: without the controller, satellites keep their hostapd and neighbour
// databases untouched and keep serving; they follow the controller again when it returns.
func TestControllerLoss(t *testing.T) {
	s := newSite(t, fastConfig())
	waitFor(t, 5*time.Second, "neighbours", func() bool { return len(s.nodes["b"].NeighborsApplied()[bssidOf("b").String()]) == 2 })
	s.fakes["b"].AddStation(sta(), "signal=-50")
	before := len(s.fakes["b"].Commands())
	s.stop("a")
	waitFor(t, 5*time.Second, "controller lost", func() bool { return s.nodes["b"].ControllerName() == "" })
	time.Sleep(500 * time.Millisecond)
	for _, cmd := range s.fakes["b"].Commands()[before:] {
		if !strings.HasPrefix(cmd, "STATUS") && !strings.HasPrefix(cmd, "STA") && !strings.HasPrefix(cmd, "PING") {
			t.Errorf("command to hostapd without a controller: %q", cmd)
		}
	}
	if stas, _ := hostapdStations(s.fakes["b"]); stas != 1 {
		t.Errorf("%d stations on b; want the station still served", stas)
	}
	if got := s.nodes["b"].NeighborsApplied()[bssidOf("b").String()]; len(got) != 2 {
		t.Errorf("neighbours %v; want them kept", got)
	}
	s.start("a")
	waitFor(t, 5*time.Second, "controller back", func() bool { return s.nodes["b"].ControllerName() == "a" })
	waitFor(t, 5*time.Second, "client known again", func() bool {
		v, ok := s.nodes["a"].Controller().Client(staMAC)
		return ok && v.Node == "b"
	})
}

func hostapdStations(f *hostapd.Fake) (int, error) {
	c, err := hostapd.Dial(context.Background(), f.Path(), hostapd.Options{})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	stas, err := c.Stations(context.Background())
	return len(stas), err
}

// TestCommandsOnlyFromController: a satellite ignores commands from another satellite and
// from a sender without the site key.
func TestCommandsOnlyFromController(t *testing.T) {
	s := newSite(t, fastConfig())
	waitFor(t, 5*time.Second, "controller", func() bool { return s.nodes["b"].ControllerName() == "a" })
	s.fakes["b"].AddStation(sta(), "signal=-50")
	ac := meshproto.AssocControl{ID: 1, MAC: func() meshproto.MAC { m, _ := meshproto.MACFrom(sta()); return m }(),
		BSSIDs: []meshproto.MAC{func() meshproto.MAC { m, _ := meshproto.MACFrom(bssidOf("b")); return m }()}, Block: true, ValiditySec: 60, Deauth: true}
	bAddr := s.conns["b"].LocalAddr()
	// From satellite c (authentic, but not the controller).
	if err := s.conns["c"].Send(bAddr, meshproto.TypeAssocControl, ac); err != nil {
		t.Fatal(err)
	}
	// From outside the site, claiming to be a.
	other, _ := meshproto.DeriveKey(1, []byte("another site key of the fleet!!!"))
	rs, _ := meshproto.NewSealer(other, "a", nil)
	pc, _ := net.ListenPacket("udp", "127.0.0.1:0")
	defer pc.Close()
	rogue := meshproto.NewConn(pc, rs, meshproto.NewOpener(nil, other), nil)
	if err := rogue.Send(bAddr, meshproto.TypeAssocControl, ac); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if s.fakes["b"].IsDenied(sta()) {
		t.Errorf("a command from a non-controller or another site was obeyed")
	}
	if s.conns["b"].Dropped.Load() == 0 {
		t.Errorf("the forged datagram was not counted as dropped")
	}
}

// FuzzNodeCommand feeds arbitrary authentic command bodies to a node: nothing may panic, and
// invalid bodies reach no hostapd.
func FuzzNodeCommand(f *testing.F) {
	f.Add(uint8(meshproto.TypeSteer), []byte(`{"id":1,"bssid":"02:00:00:00:02:00","mac":"02:aa:00:00:00:01","targets":[],"validity":1}`))
	f.Add(uint8(meshproto.TypeAssocControl), []byte(`{"id":1,"mac":"02:aa:00:00:00:01","bssids":["02:00:00:00:02:00"],"block":true,"validity_s":1}`))
	f.Add(uint8(meshproto.TypeNeighbors), []byte(`{"version":9,"bsses":[]}`))
	f.Add(uint8(meshproto.TypeBeaconQuery), []byte(`{"id":1,"bssid":"02:00:00:00:02:00","mac":"02:aa:00:00:00:01","mode":"table"}`))
	dir := f.TempDir()
	spec, _ := chanplan.NewSpec(5180, 20, 0)
	fk, err := hostapd.NewFake(dir, "wlan-b", hostapd.FakeState{Spec: spec, SSIDs: []string{"home"}, BSSIDs: []net.HardwareAddr{bssidOf("b")}})
	if err != nil {
		f.Fatal(err)
	}
	defer fk.Close()
	k, _ := meshproto.DeriveKey(1, siteKey)
	pc, _ := net.ListenPacket("udp", "127.0.0.1:0")
	sealer, _ := meshproto.NewSealer(k, "b", nil)
	n, err := NewNode(Config{Node: "b", BSSes: []BSSConfig{{Iface: "wlan-b", Ctrl: fk.Path()}}},
		Deps{Conn: meshproto.NewConn(pc, sealer, meshproto.NewOpener(nil, k), nil), DialAP: func(ctx context.Context, b BSSConfig) (AP, error) {
			return hostapd.Dial(ctx, b.Ctrl, hostapd.Options{LocalDir: dir})
		}})
	if err != nil {
		f.Fatal(err)
	}
	ap, err := hostapd.Dial(context.Background(), fk.Path(), hostapd.Options{LocalDir: dir})
	if err != nil {
		f.Fatal(err)
	}
	defer ap.Close()
	b := &bss{cfg: BSSConfig{Iface: "wlan-b"}, ap: ap}
	if err := n.refresh(context.Background(), b); err != nil {
		f.Fatal(err)
	}
	n.bsses[b.info.BSSID.String()] = b
	n.ctrlName = "a"
	f.Fuzz(func(t *testing.T, typ uint8, body []byte) {
		m := meshproto.Message{Type: meshproto.Type(100 + int(typ)%14), Sender: "a", Payload: body}
		n.handle(context.Background(), m, pc.LocalAddr())
		n.mu.Lock()
		for k, tm := range n.blocks {
			tm.Stop()
			delete(n.blocks, k)
		}
		n.mu.Unlock()
	})
}
