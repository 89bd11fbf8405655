package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"meshroot/radio/chanplan"
	"meshroot/radio/ft"
	"meshroot/radio/hostapd"
	"meshroot/radio/medium"
	"meshroot/radio/mesh"
	"meshroot/radio/meshproto"
	"meshroot/radio/steer"
)

const (
	testSSID = "meshroot-roam"
	testPSK  = "roaming-passphrase"
	// switchName is the LAN switch joining the nodes' own bridges and the LAN host.
	switchName = "br-roam"
	lanIP      = "10.77.0.1"
	probePort  = 9999
)

var (
	apRadios  = [3]int{radioA, radioB, radioC}
	nodeNames = [3]string{"nodeA", "nodeB", "nodeC"}
	// apX is where the three nodes stand (metres along the house), wallsX its walls (10 dB).
	apX    = [3]float64{0, 15, 30}
	wallsX = []float64{7.5, 22.5}
)

// roamSite is three nodes' APs (hostapd), their mesh agents and controller, a wired LAN host
// and the stations.
type roamSite struct {
	e     *env
	useFT bool
	// sae switches the site to WPA3 (SAE, FT-SAE with key holders from the mesh key), with
	// PMKSA caching off so that every non-FT roam runs SAE.
	sae   bool
	bss   [3]net.HardwareAddr
	aps   [3]*hostapd.Client // the harness's own clients (checks, events)
	hapd  [3]*daemon
	lanNS int
	arr   *arrivals
	key   meshproto.Key

	mu       sync.Mutex
	nodes    [3]*mesh.Node
	conns    [3]*meshproto.Conn
	cancel   [3]context.CancelFunc
	done     [3]chan error
	stations map[int]*station
	logs     *lineLog
}

// lineLog keeps the mesh's log lines (they go to the console only on failure).
type lineLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, strings.Split(strings.TrimRight(string(p), "\n"), "\n")...)
	return len(p), nil
}

func (l *lineLog) grep(s string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, x := range l.lines {
		if strings.Contains(x, s) {
			out = append(out, x)
		}
	}
	return out
}

// siteMeshKey is the VM site's mesh secret (FT-SAE key holders derive from it).
var siteMeshKey = []byte("the vm site's mesh key, 32 bytes")

// nodeBridge is the node's own LAN bridge ("br-wlan0" for the AP on wlan0): as on separate
// routers, FT's key holder messages (RRB) between the nodes' hostapd go over the LAN.
func nodeBridge(iface string) string { return "br-" + iface }

func apConfig(iface string, all []ft.BSS, useFT, sae bool) (hostapd.Config, error) {
	spec, err := chanplan.NewSpec(5180, 20, 0)
	if err != nil {
		return hostapd.Config{}, err
	}
	sec := hostapd.SecurityWPA2
	if sae {
		sec = hostapd.SecurityWPA3
	}
	b := hostapd.BSSConfig{SSID: testSSID, Security: sec, Passphrase: testPSK, DisablePMKSACaching: sae,
		RRMNeighborReport: true, RRMBeaconReport: true, BSSTransition: true, Bridge: nodeBridge(iface)}
	if useFT {
		var self ft.BSS
		for _, x := range all {
			if x.Iface == iface {
				self = x
			}
		}
		b.FT, err = ft.Config(ft.Site{ID: "vm-site", SSID: testSSID, Security: sec, MeshKey: siteMeshKey}, self, all)
		if err != nil {
			return hostapd.Config{}, err
		}
	}
	return hostapd.Config{Interface: iface, Country: "US", Channel: spec, BSS: []hostapd.BSSConfig{b}}, nil
}

// setupRoamSite brings up the bridge, the LAN host, the three APs and the mesh.
func setupRoamSite(ctx context.Context, e *env, useFT bool, steering steer.Config) (*roamSite, error) {
	s := &roamSite{e: e, useFT: useFT, stations: map[int]*station{}, logs: &lineLog{}}
	for i, x := range apX {
		e.space.Place(phy(apRadios[i]), medium.Pos{X: x})
	}
	e.space.WallsX, e.space.WallDB = wallsX, 10
	// The LAN: a switch with the LAN host and one cable to each node's own bridge.
	for _, name := range append([]string{switchName}, nodeBridge(wlan(radioA)), nodeBridge(wlan(radioB)), nodeBridge(wlan(radioC))) {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
		if err := netlink.LinkAdd(br); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("bridge %s: %w", name, err)
		}
		e.defer_(func() { _ = netlink.LinkDel(br) })
		if err := setupLink(nil, name, ""); err != nil {
			return nil, err
		}
	}
	for _, r := range apRadios {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "up-" + wlan(r)}, PeerName: "sw-" + wlan(r)}
		if err := netlink.LinkAdd(v); err != nil {
			return nil, fmt.Errorf("veth: %w", err)
		}
		e.defer_(func() { _ = netlink.LinkDel(v) })
		for _, end := range [][2]string{{"up-" + wlan(r), nodeBridge(wlan(r))}, {"sw-" + wlan(r), switchName}} {
			l, err := netlink.LinkByName(end[0])
			if err != nil {
				return nil, err
			}
			br, err := netlink.LinkByName(end[1])
			if err != nil {
				return nil, err
			}
			if err := netlink.LinkSetMaster(l, br); err != nil {
				return nil, err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return nil, err
			}
		}
	}
	var err error
	if s.lanNS, err = lanHost(e, switchName, lanIP+"/24"); err != nil {
		return nil, err
	}
	if s.arr, err = listenArrivals(s.lanNS, fmt.Sprintf("%s:%d", lanIP, probePort)); err != nil {
		return nil, err
	}
	e.defer_(s.arr.close)
	if err := s.startAPs(ctx); err != nil {
		return nil, err
	}
	if s.key, err = meshproto.DeriveKey(1, siteMeshKey); err != nil {
		return nil, err
	}
	for i := range nodeNames {
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", 7461+i))
		if err != nil {
			return nil, err
		}
		sealer, err := meshproto.NewSealer(s.key, nodeNames[i], nil)
		if err != nil {
			return nil, err
		}
		s.conns[i] = meshproto.NewConn(pc, sealer, meshproto.NewOpener(nil, s.key), nil)
		c := s.conns[i]
		e.defer_(func() { c.Close() })
	}
	if err := s.startMesh(ctx, steering); err != nil {
		return nil, err
	}
	e.defer_(s.stopMesh)
	return s, nil
}

func (s *roamSite) startAPs(ctx context.Context) error {
	var all []ft.BSS
	for i, r := range apRadios {
		l, err := net.InterfaceByName(wlan(r))
		if err != nil {
			return err
		}
		s.bss[i] = l.HardwareAddr
		all = append(all, ft.BSS{Node: nodeNames[i], Iface: wlan(r), BSSID: l.HardwareAddr})
	}
	for i, r := range apRadios {
		cfg, err := apConfig(wlan(r), all, s.useFT, s.sae)
		if err != nil {
			return err
		}
		c, d, err := s.e.startHostapd(ctx, cfg)
		if err != nil {
			return err
		}
		s.aps[i], s.hapd[i] = c, d
	}
	s.e.defer_(s.stopAPs)
	return nil
}

func (s *roamSite) stopAPs() {
	for i := range s.aps {
		if s.aps[i] != nil {
			s.aps[i].Close()
			s.hapd[i].stop()
			s.aps[i], s.hapd[i] = nil, nil
		}
	}
}

// startMesh runs the three nodes' agents, the controller on node A.
func (s *roamSite) startMesh(ctx context.Context, steering steer.Config) error {
	for i := range nodeNames {
		if err := s.startNode(ctx, i, steering); err != nil {
			return err
		}
	}
	return nil
}

// startNode runs one node's agent (and, on node A, the controller).
func (s *roamSite) startNode(ctx context.Context, i int, steering steer.Config) error {
	var disc []string
	for j := range nodeNames {
		disc = append(disc, fmt.Sprintf("127.0.0.1:%d", 7461+j))
	}
	name := nodeNames[i]
	n, err := mesh.NewNode(mesh.Config{
		Node: name, Controller: i == 0, Discovery: disc,
		BSSes:      []mesh.BSSConfig{{Iface: wlan(apRadios[i]), Radio: name + "/" + phy(apRadios[i]), MobilityDomain: s.mdid()}},
		HelloEvery: 500 * time.Millisecond, ReportEvery: 500 * time.Millisecond, Tick: 500 * time.Millisecond,
		ControllerTimeout: 2 * time.Second, Steering: steering, Log: slog.New(slog.NewJSONHandler(s.logs, nil)),
	}, mesh.Deps{Conn: s.conns[i]})
	if err != nil {
		return err
	}
	return s.runNode(ctx, i, n)
}

func (s *roamSite) mdid() string {
	if !s.useFT {
		return ""
	}
	return ft.MobilityDomain("vm-site", testSSID)
}

func (s *roamSite) runNode(ctx context.Context, i int, n *mesh.Node) error {
	nctx, cancel := context.WithCancel(context.Background())
	up := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- n.Run(nctx, func() { close(up) }) }()
	select {
	case <-up:
	case err := <-done:
		cancel()
		return fmt.Errorf("mesh node %s: %w", nodeNames[i], err)
	case <-ctx.Done():
		cancel()
		return ctx.Err()
	}
	s.mu.Lock()
	s.nodes[i], s.cancel[i], s.done[i] = n, cancel, done
	s.mu.Unlock()
	return nil
}

func (s *roamSite) stopNode(i int) {
	s.mu.Lock()
	cancel, done := s.cancel[i], s.done[i]
	s.cancel[i] = nil
	s.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	if err := <-done; err != nil {
		s.e.rep.Note("mesh node %s ended: %v", nodeNames[i], err)
	}
}

func (s *roamSite) stopMesh() {
	for i := range nodeNames {
		s.stopNode(i)
	}
}

// restartMesh stops the nodes and starts them with another steering configuration.
func (s *roamSite) restartMesh(ctx context.Context, steering steer.Config) error {
	s.stopMesh()
	return s.startMesh(ctx, steering)
}

func (s *roamSite) controller() *mesh.Controller {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nodes[0].Controller()
}

// apIndex returns which AP has bssid (-1: none).
func (s *roamSite) apIndex(bssid string) int {
	for i, b := range s.bss {
		if b.String() == bssid {
			return i
		}
	}
	return -1
}

// station is a wpa_supplicant station in its own namespace.
type station struct {
	radio int
	btm   bool
	ns    int
	h     *netlink.Handle
	wpas  *supplicant
	mac   net.HardwareAddr
	ip    string
}

// addStation starts a station on radio (moved into a new namespace) with wpa_supplicant; btm
// false sets disable_btm (no 802.11v).
func (s *roamSite) addStation(ctx context.Context, radio int, ip string, btm bool) (*station, error) {
	ns, err := newNS()
	if err != nil {
		return nil, err
	}
	if err := moveWiphy(radio, ns); err != nil {
		return nil, err
	}
	h, err := handleIn(ns)
	if err != nil {
		return nil, err
	}
	if err := setupLink(h, "lo", ""); err != nil {
		return nil, err
	}
	l, err := h.LinkByName(wlan(radio))
	if err != nil {
		return nil, err
	}
	st := &station{radio: radio, ns: ns, h: h, mac: l.Attrs().HardwareAddr, ip: ip}
	if err := s.startSupplicant(ctx, st, btm); err != nil {
		return nil, err
	}
	a, err := netlink.ParseAddr(ip + "/24")
	if err != nil {
		return nil, err
	}
	if err := h.AddrAdd(l, a); err != nil {
		return nil, err
	}
	s.stations[radio] = st
	return st, nil
}

func (s *roamSite) startSupplicant(ctx context.Context, st *station, btm bool) error {
	km, pmf := "WPA-PSK", ""
	switch {
	case s.sae && s.useFT:
		km, pmf = "FT-SAE SAE", "\tieee80211w=2\n"
	case s.sae:
		km, pmf = "SAE", "\tieee80211w=2\n"
	case s.useFT:
		km = "FT-PSK WPA-PSK"
	}
	conf := "ctrl_interface=/var/run/wpa_supplicant\n"
	if !btm {
		conf += "disable_btm=1\n"
	}
	conf += fmt.Sprintf("network={\n\tssid=\"%s\"\n\tkey_mgmt=%s\n\tpsk=\"%s\"\n%s\tscan_freq=5180\n}\n", testSSID, km, testPSK, pmf)
	w, err := s.e.startSupplicant(ctx, wlan(st.radio), st.ns, conf)
	if err != nil {
		return err
	}
	st.wpas, st.btm = w, btm
	s.e.defer_(func() {
		if st.wpas == w {
			w.stop()
		}
	})
	return nil
}

// restartSupplicant replaces a station's wpa_supplicant (after the site's security changed).
func (s *roamSite) restartSupplicant(ctx context.Context, st *station) error {
	st.wpas.stop()
	st.wpas = nil
	return s.startSupplicant(ctx, st, st.btm)
}

// bssid returns the station's current BSSID ("" when not associated).
func (st *station) bssid(ctx context.Context) string {
	m, err := st.wpas.status(ctx)
	if err != nil || m["wpa_state"] != "COMPLETED" {
		return ""
	}
	return m["bssid"]
}

// drain empties the harness's event queues of the APs.
func (s *roamSite) drain() {
	for _, c := range s.aps {
		if c == nil {
			continue
		}
		for {
			select {
			case <-c.Events():
				continue
			default:
			}
			break
		}
	}
}

// drain empties the station's wpa_supplicant event queue.
func (st *station) drain() {
	for {
		select {
		case <-st.wpas.ctrl.Events():
			continue
		default:
		}
		return
	}
}

// waitConnectedEvent waits for wpa_supplicant's CTRL-EVENT-CONNECTED to bssid (keys in place,
// the port open) and returns when it arrived.
func (st *station) waitConnectedEvent(ctx context.Context, bssid net.HardwareAddr, timeout time.Duration) (time.Time, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case ev := <-st.wpas.ctrl.Events():
			if ev.Name == "CTRL-EVENT-CONNECTED" && strings.Contains(ev.Text, "Connection to "+bssid.String()) {
				return time.Now(), nil
			}
		case <-t.C:
			return time.Time{}, fmt.Errorf("no CTRL-EVENT-CONNECTED to %s within %v", bssid, timeout)
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}
