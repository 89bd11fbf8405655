package radiohook

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"meshroot/board"
	"meshroot/firmware"
	"meshroot/internal/testenv"
	"meshroot/provision/profile"
	"meshroot/radio/backhaul"
	"meshroot/radio/manager"
	"meshroot/radio/nl80211"
)

// logBuf collects a service's JSON log lines.
type logBuf = testenv.Buffer

// profiles is a stand-in for the provisioning agent's Subscribe.
type profiles struct {
	mu   sync.Mutex
	cur  *profile.Verified
	subs []func(*profile.Verified)
}

func (p *profiles) Subscribe(fn func(*profile.Verified)) func() {
	p.mu.Lock()
	p.subs = append(p.subs, fn)
	cur := p.cur
	p.mu.Unlock()
	if cur != nil {
		fn(cur)
	}
	return func() {}
}

func (p *profiles) push(v *profile.Verified) {
	p.mu.Lock()
	p.cur = v
	subs := slices.Clone(p.subs)
	p.mu.Unlock()
	for _, fn := range subs {
		fn(v)
	}
}

// node is one router under test: the service with fake hostapds and a fake nl80211 with two
// simulated radios.
type node struct {
	name   string
	svc    *Service
	runner *FakeRunner
	nl     *nl80211.Fake
	prof   *profiles
	logs   *logBuf
	root   string
	mods   []string
	modsMu sync.Mutex
	wan    bool
	cancel context.CancelFunc
	done   chan error
}

func fakePHYs() []nl80211.PHY {
	var c24, c5 []nl80211.Channel
	for f := 2412; f <= 2472; f += 5 {
		c24 = append(c24, nl80211.Channel{Freq: f, MaxPowerDBm: 20})
	}
	for _, f := range []int{5180, 5200, 5220, 5240, 5745, 5765, 5785, 5805} {
		c5 = append(c5, nl80211.Channel{Freq: f, MaxPowerDBm: 23})
	}
	for _, f := range []int{5260, 5280, 5300, 5320} {
		c5 = append(c5, nl80211.Channel{Freq: f, Radar: true, MaxPowerDBm: 23})
	}
	both := []nl80211.Band{{ID: nl80211.Band2GHz, Channels: c24}, {ID: nl80211.Band5GHz, Channels: c5, HT40: true, VHT: true}}
	return []nl80211.PHY{{Index: 0, Name: "phy0", Bands: both}, {Index: 1, Name: "phy1", Bands: both}}
}

type lanFakes struct{ ctl, bh *backhaul.FakeLAN }

func newNode(t *testing.T, name string, id byte, lan lanFakes, cmdline string) *node {
	t.Helper()
	n := &node{name: name, nl: nl80211.NewFake(), prof: &profiles{}, logs: &logBuf{}, root: t.TempDir(), wan: true}
	if err := os.MkdirAll(filepath.Join(n.root, "proc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(n.root, "proc/cmdline"), []byte(cmdline+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	macs := map[string]net.HardwareAddr{"wlan0": {2, id, 0, 0, 0, 0}, "wlan1": {2, id, 0, 0, 1, 0}}
	n.nl.SetPHYs(fakePHYs()...)
	n.nl.SetInterfaces(
		nl80211.Interface{Index: 3, Name: "wlan0", MAC: macs["wlan0"], PHY: 0, Type: nl80211.IfStation},
		nl80211.Interface{Index: 4, Name: "wlan1", MAC: macs["wlan1"], PHY: 1, Type: nl80211.IfStation},
	)
	n.runner = &FakeRunner{MACs: macs}
	b, err := board.Lookup("qemu-virt-arm64")
	if err != nil {
		t.Fatal(err)
	}
	n.svc = &Service{
		Board: b, Root: n.root, Subscribe: n.prof.Subscribe, Secret: secrets, WiFiPassphrase: pairing,
		Secrets: &firmware.Secrets{},
		Node:    func() string { return name },
		Gateway: func() bool { n.modsMu.Lock(); defer n.modsMu.Unlock(); return n.wan },
		LAN: func() (string, netip.Prefix) {
			return "br-lan", netip.MustParsePrefix("192.168.1.1/24")
		},
		LoadModule: func(m, params string) error {
			n.modsMu.Lock()
			defer n.modsMu.Unlock()
			n.mods = append(n.mods, strings.TrimSpace(m+" "+params))
			return nil
		},
		NL:          func() (nl80211.Client, error) { return n.nl, nil },
		Runner:      n.runner,
		ControlNet:  lan.ctl.Net(name, map[string]string{"br-lan": "lan"}),
		BackhaulNet: lan.bh.Net(name, map[string]string{"br-lan": "lan"}),
		Log:         slog.New(slog.NewJSONHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Tune: Tuning{RestartMin: 10 * time.Millisecond, RestartMax: 50 * time.Millisecond, Poll: 20 * time.Millisecond, EnableWait: 2 * time.Second,
			Manager: func(c *manager.Config) { c.SurveyEvery, c.PlanEvery = time.Hour, time.Hour }},
	}
	return n
}

func (n *node) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel, n.done = cancel, make(chan error, 1)
	upc := make(chan struct{})
	go func() { n.done <- n.svc.Run(ctx, func() { close(upc) }) }()
	select {
	case <-upc:
	case err := <-n.done:
		t.Fatalf("Run() = %v before up", err)
	case <-time.After(5 * time.Second):
		t.Fatal("Run() did not call up")
	}
	t.Cleanup(func() { n.stop(t) })
}

func (n *node) stop(t *testing.T) {
	t.Helper()
	if n.cancel == nil {
		return
	}
	n.cancel()
	n.cancel = nil
	select {
	case err := <-n.done:
		if err != nil {
			t.Errorf("Run() = %v; want nil after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("Run() did not return after cancel")
	}
	if t.Failed() {
		t.Logf("%s's log:\n%s", n.name, n.logs.String())
	}
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func enabled(st Status, ssid string) bool {
	if len(st.Radios) != 2 {
		return false
	}
	for _, r := range st.Radios {
		if r.State != "ENABLED" || r.SSID != ssid {
			return false
		}
	}
	return true
}

func newLAN() lanFakes { return lanFakes{ctl: backhaul.NewFakeLAN(), bh: backhaul.NewFakeLAN()} }

func TestServiceServesProfile(t *testing.T) {
	n := newNode(t, "MR-1", 1, newLAN(), "console=ttyAMA0 meshroot.hwsim=2")
	n.start(t)
	if st := n.svc.Status(); st.State != StateNone {
		t.Errorf("Status().State before a profile = %q; want %q", st.State, StateNone)
	}
	n.prof.push(testProfile(1, "Meshroot"))
	waitFor(t, "both radios ENABLED with the profile's SSID", 10*time.Second, func() bool { return enabled(n.svc.Status(), "Meshroot") })
	st := n.svc.Status()
	if st.State != StateRunning || st.Hwsim != 2 || st.Country != "DE" || st.Role != "gateway" || st.Node != "MR-1" {
		t.Errorf("Status() = state %q hwsim %d country %q role %q node %q; want running, 2, DE, gateway, MR-1", st.State, st.Hwsim, st.Country, st.Role, st.Node)
	}
	n.modsMu.Lock()
	mods := slices.Clone(n.mods)
	n.modsMu.Unlock()
	if len(mods) == 0 || mods[0] != "mac80211_hwsim radios=2" {
		t.Errorf("modules loaded = %q; want mac80211_hwsim radios=2 first", mods)
	}
	if c, _ := n.nl.Country(); c != "DE" {
		t.Errorf("regulatory domain = %q; want DE", c)
	}
	for _, iface := range []string{"wlan0", "wlan1"} {
		conf := filepath.Join(n.root, RunDir, "hostapd-"+iface+".conf")
		fi, err := os.Stat(conf)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want a 0600 file", conf, err, fi.Mode().Perm())
		}
		b := string(n.runner.Conf(iface))
		for _, l := range []string{"ssid=Meshroot", "country_code=DE", "ctrl_interface=" + filepath.Join(n.root, CtrlDir), "bridge=br-lan", "bss_transition=1"} {
			if !strings.Contains(b, "\n"+l+"\n") {
				t.Errorf("hostapd %s started with a configuration lacking %q", iface, l)
			}
		}
	}
	if fi, err := os.Lstat(filepath.Join(n.root, "var/run")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("var/run: %v; want a symlink to /run", err)
	}
	// The control plane on a single node: the controller follows itself, the planner runs, and
	// the controller gives each BSS the node's other one as its 802.11k neighbour (steering
	// between the node's own BSSes).
	waitFor(t, "the mesh control plane", 10*time.Second, func() bool {
		m := n.svc.Status().Mesh
		return m != nil && m.Controller == "MR-1" && m.Planner == "running" && m.SiteBSSes == 2
	})
	if m := n.svc.Status().Mesh; m.ControlPlane != "lan" {
		t.Errorf("Mesh.ControlPlane = %q; want lan (the profile has a mesh key)", m.ControlPlane)
	}
	waitFor(t, "802.11k neighbours on both BSSes", 10*time.Second, func() bool {
		n0, n1 := n.runner.Process("wlan0").Fake.Neighbors(), n.runner.Process("wlan1").Fake.Neighbors()
		_, a := n0["02:01:00:00:01:00"]
		_, b := n1["02:01:00:00:00:00"]
		return a && b
	})
}

func TestServiceRestartsCrashedHostapd(t *testing.T) {
	n := newNode(t, "MR-1", 1, newLAN(), "meshroot.hwsim=2")
	n.start(t)
	n.prof.push(testProfile(1, "Meshroot"))
	waitFor(t, "both radios ENABLED", 10*time.Second, func() bool { return enabled(n.svc.Status(), "Meshroot") })
	waitFor(t, "the mesh node attached", 10*time.Second, func() bool { return n.runner.Process("wlan1").Fake.Monitors() >= 2 })
	first := n.runner.Process("wlan1")
	n.runner.Crash("wlan1")
	waitFor(t, "hostapd on wlan1 restarted", 10*time.Second, func() bool { return n.runner.Starts("wlan1") == 2 })
	waitFor(t, "wlan1 ENABLED again", 10*time.Second, func() bool { return enabled(n.svc.Status(), "Meshroot") })
	var r1 RadioStatus
	for _, r := range n.svc.Status().Radios {
		if r.Iface == "wlan1" {
			r1 = r
		}
	}
	if r1.Restarts != 1 || !strings.Contains(r1.LastError, "segmentation fault") {
		t.Errorf("wlan1 status = restarts %d, last error %q; want 1 and the crash", r1.Restarts, r1.LastError)
	}
	if second := n.runner.Process("wlan1"); second == first || r1.HostapdPID != second.PID() {
		t.Errorf("wlan1 hostapd PID %d; want the new process's %d", r1.HostapdPID, second.PID())
	}
	if n.runner.Starts("wlan0") != 1 {
		t.Errorf("wlan0 started %d times; want 1 (only wlan1 crashed)", n.runner.Starts("wlan0"))
	}
	// The manager's and the mesh node's clients attach to the new hostapd at once.
	waitFor(t, "the manager and the mesh node attached to the new hostapd", 10*time.Second, func() bool {
		return n.runner.Process("wlan1").Fake.Monitors() >= 2
	})
	if !strings.Contains(n.logs.String(), `"msg":"radio: hostapd ended; restarting"`) {
		t.Errorf("no log line for the crash")
	}
}

func TestServiceRetriesHostapdThatCannotStart(t *testing.T) {
	n := newNode(t, "MR-1", 1, newLAN(), "meshroot.hwsim=2")
	n.runner.FailStart = map[string]bool{"wlan0": true}
	n.start(t)
	n.prof.push(testProfile(1, "Meshroot"))
	waitFor(t, "wlan0 retried", 10*time.Second, func() bool { return n.runner.Starts("wlan0") >= 3 })
	var states []string
	for _, r := range n.svc.Status().Radios {
		states = append(states, r.Iface+"="+r.State)
	}
	if !slices.Contains(states, "wlan0="+RadioFailed) {
		t.Errorf("radio states %v; want wlan0 %s", states, RadioFailed)
	}
	// The other radio serves, and after EnableWait the control plane runs with it alone.
	waitFor(t, "the control plane without wlan0", 10*time.Second, func() bool {
		m := n.svc.Status().Mesh
		return m != nil && m.SiteBSSes == 1
	})
}

func TestServiceProfileUpdate(t *testing.T) {
	n := newNode(t, "MR-1", 1, newLAN(), "meshroot.hwsim=2")
	n.start(t)
	n.prof.push(testProfile(1, "Meshroot"))
	waitFor(t, "both radios ENABLED", 10*time.Second, func() bool { return enabled(n.svc.Status(), "Meshroot") })
	old := n.runner.Process("wlan0")

	// A profile with nothing new for the radios (a VPN change, say): hostapd keeps running.
	same := testProfile(2, "Meshroot")
	n.prof.push(same)
	waitFor(t, "profile 2 taken", 5*time.Second, func() bool { return n.svc.Status().ProfileVersion == 2 })
	time.Sleep(100 * time.Millisecond)
	if n.runner.Starts("wlan0") != 1 {
		t.Errorf("hostapd restarted %d times for a profile without radio changes; want 0", n.runner.Starts("wlan0")-1)
	}

	// A new SSID and passphrase: both hostapds restart on the new configuration.
	v := testProfile(3, "Meshroot-2")
	v.WiFi.PassphraseRef = "wifi/other"
	n.prof.push(v)
	waitFor(t, "both radios ENABLED with the new SSID", 10*time.Second, func() bool { return enabled(n.svc.Status(), "Meshroot-2") })
	select {
	case <-old.Done():
	default:
		t.Errorf("the old hostapd on wlan0 still runs after the new configuration")
	}
	for _, iface := range []string{"wlan0", "wlan1"} {
		conf := string(n.runner.Conf(iface))
		if !strings.Contains(conf, "\nssid=Meshroot-2\n") || !strings.Contains(conf, "\nwpa_passphrase=another passphrase 123\n") {
			t.Errorf("%s restarted with a configuration without the new SSID and passphrase", iface)
		}
	}
	st := n.svc.Status()
	if st.SSID != "Meshroot-2" || st.ProfileVersion != 3 {
		t.Errorf("Status() = SSID %q version %d; want Meshroot-2, 3", st.SSID, st.ProfileVersion)
	}

	// A profile whose passphrase cannot be resolved is refused: the radios keep serving.
	bad := testProfile(4, "Meshroot-3")
	bad.WiFi.PassphraseRef = "wifi/missing"
	n.prof.push(bad)
	waitFor(t, "profile 4 refused", 5*time.Second, func() bool { return strings.Contains(n.svc.Status().LastError, "wifi.passphrase_ref") })
	if st := n.svc.Status(); st.SSID != "Meshroot-2" || !enabled(st, "Meshroot-2") {
		t.Errorf("after a refused profile: SSID %q; want Meshroot-2 still served", st.SSID)
	}
}

func TestServiceKeepsSecretsOut(t *testing.T) {
	n := newNode(t, "MR-1", 1, newLAN(), "meshroot.hwsim=2")
	n.start(t)
	n.prof.push(testProfile(1, "Meshroot"))
	waitFor(t, "both radios ENABLED", 10*time.Second, func() bool { return enabled(n.svc.Status(), "Meshroot") })
	waitFor(t, "the control plane", 10*time.Second, func() bool {
		m := n.svc.Status().Mesh
		return m != nil && m.Planner == "running"
	})
	bad := testProfile(2, "Other")
	bad.Mesh.KeyRef = "nope"
	n.prof.push(bad)
	waitFor(t, "profile 2 refused", 5*time.Second, func() bool { return n.svc.Status().LastError != "" })
	n.runner.Crash("wlan0")
	waitFor(t, "wlan0 restarted", 10*time.Second, func() bool { return n.runner.Starts("wlan0") == 2 })
	n.stop(t)
	st, err := json.Marshal(n.svc.Status())
	if err != nil {
		t.Fatal(err)
	}
	logs := n.logs.String()
	if !strings.Contains(logs, `"out":"wlan0: AP-ENABLED"`) || !strings.Contains(logs, "radio: hostapd configuration") {
		t.Fatalf("the log lacks hostapd's output or the configuration line; the scan below would prove nothing:\n%s", logs)
	}
	for name, secret := range map[string]string{"Wi-Fi passphrase": testPass, "mesh key": testMeshKey} {
		if strings.Contains(logs, secret) {
			t.Errorf("the %s is in the service's log", name)
		}
		if strings.Contains(string(st), secret) {
			t.Errorf("the %s is in the status: %s", name, st)
		}
	}
	// The device's log redactor learned both.
	if got := n.svc.Secrets.Scrub("x " + testPass + " " + testMeshKey); strings.Contains(got, testPass) || strings.Contains(got, testMeshKey) {
		t.Errorf("Secrets.Scrub() = %q; want both secrets redacted", got)
	}
	// Stopped: every hostapd ended, the configurations (they hold the passphrase) removed.
	for _, iface := range []string{"wlan0", "wlan1"} {
		select {
		case <-n.runner.Process(iface).Done():
		default:
			t.Errorf("hostapd on %s still runs after the service stopped", iface)
		}
		if _, err := os.Stat(filepath.Join(n.root, RunDir, "hostapd-"+iface+".conf")); !os.IsNotExist(err) {
			t.Errorf("hostapd-%s.conf after stop: %v; want it removed", iface, err)
		}
	}
}

func TestServiceWithoutRadios(t *testing.T) {
	n := newNode(t, "MR-1", 1, newLAN(), "console=ttyAMA0")
	n.start(t)
	n.prof.push(testProfile(1, "Meshroot"))
	waitFor(t, "no radios", 5*time.Second, func() bool { return n.svc.Status().State == StateNoRadios })
	if n.runner.Starts("wlan0")+n.runner.Starts("wlan1") != 0 || len(n.mods) != 0 {
		t.Errorf("hostapd started %d times, modules %v; want nothing without meshroot.hwsim", n.runner.Starts("wlan0"), n.mods)
	}
	if d := n.svc.Status().Detail; !strings.Contains(d, board.HwsimParam) {
		t.Errorf("Status().Detail = %q; want it to say how to get simulated radios", d)
	}
}

// TestServiceTwoNodes runs a gateway and a satellite on one (fake) LAN: the satellite follows
// the gateway's controller, its radio manager reports to the gateway's planner, and the
// controller knows the site's four BSSes.
func TestServiceTwoNodes(t *testing.T) {
	lan := newLAN()
	gw := newNode(t, "MR-GW", 1, lan, "meshroot.hwsim=2")
	sat := newNode(t, "MR-SAT", 2, lan, "meshroot.hwsim=2")
	sat.wan = false
	gw.start(t)
	sat.start(t)
	gw.prof.push(testProfile(1, "Meshroot"))
	sat.prof.push(testProfile(1, "Meshroot"))
	waitFor(t, "the satellite follows the gateway's controller", 15*time.Second, func() bool {
		m := sat.svc.Status().Mesh
		return m != nil && m.Controller == "MR-GW" && m.Planner == "running"
	})
	waitFor(t, "the controller knows the site's 4 BSSes", 15*time.Second, func() bool {
		m := gw.svc.Status().Mesh
		return m != nil && m.SiteBSSes == 4 && slices.Contains(m.Peers, "MR-SAT")
	})
	if st := sat.svc.Status(); st.Role != "satellite" {
		t.Errorf("satellite role = %q; want satellite", st.Role)
	}
	waitFor(t, "the satellite's backhaul parent", 15*time.Second, func() bool {
		m := sat.svc.Status().Mesh
		return m.BackhaulParent == "MR-GW" && m.BackhaulMedium == backhaul.Wired
	})
	// Each BSS lists the site's other BSSes of its SSID (the other node's included).
	waitFor(t, "site-wide 802.11k neighbours", 15*time.Second, func() bool {
		return len(sat.runner.Process("wlan0").Fake.Neighbors()) == 3
	})
	if fmt.Sprint(gw.svc.Status().Role) != "gateway" {
		t.Errorf("gateway role = %q", gw.svc.Status().Role)
	}
}
