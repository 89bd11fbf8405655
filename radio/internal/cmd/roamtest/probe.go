package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"meshroot/radio/chanplan"
	"meshroot/radio/ft"
	"meshroot/radio/hostapd"
)

func init() { scenarioFuncs["probe"] = probe }

const (
	testSSID = "meshroot-roam"
	testPSK  = "roaming-passphrase"
)

func apConfig(iface string, bssid net.HardwareAddr, all []ft.BSS, useFT bool) (hostapd.Config, error) {
	spec, err := chanplan.NewSpec(5180, 20, 0)
	if err != nil {
		return hostapd.Config{}, err
	}
	b := hostapd.BSSConfig{SSID: testSSID, Security: hostapd.SecurityWPA2, Passphrase: testPSK,
		RRMNeighborReport: true, RRMBeaconReport: true, BSSTransition: true, Bridge: "br-roam"}
	if useFT {
		var self ft.BSS
		for _, x := range all {
			if x.Iface == iface {
				self = x
			}
		}
		b.FT, err = ft.Config(ft.Site{ID: "vm-site", SSID: testSSID, Security: hostapd.SecurityWPA2}, self, all)
		if err != nil {
			return hostapd.Config{}, err
		}
	}
	return hostapd.Config{Interface: iface, Country: "US", Channel: spec, BSS: []hostapd.BSSConfig{b}}, nil
}

func probe(ctx context.Context, e *env, _ int) error {
	t := time.Now()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br-roam"}}
	if err := netlink.LinkAdd(br); err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	e.defer_(func() { _ = netlink.LinkDel(br) })
	if err := setupLink(nil, "br-roam", ""); err != nil {
		return err
	}
	srv, err := lanHost(e, "br-roam", "10.77.0.1/24")
	if err != nil {
		return err
	}
	var all []ft.BSS
	for _, r := range []int{radioA, radioB, radioC} {
		l, err := net.InterfaceByName(wlan(r))
		if err != nil {
			return err
		}
		all = append(all, ft.BSS{Node: "node" + string(rune('A'+r)), Iface: wlan(r), BSSID: l.HardwareAddr})
	}
	aps := map[int]*hostapd.Client{}
	for _, r := range []int{radioA, radioB, radioC} {
		cfg, err := apConfig(wlan(r), all[r].BSSID, all, true)
		if err != nil {
			return err
		}
		c, d, err := e.startHostapd(ctx, cfg)
		if err != nil {
			return err
		}
		aps[r] = c
		e.defer_(func() { c.Close(); d.stop() })
	}
	e.rep.report("probe: 3 APs", t, nil, "")

	t = time.Now()
	ns, err := newNS()
	if err != nil {
		return err
	}
	if err := moveWiphy(radioSTA1, ns); err != nil {
		return err
	}
	h, err := handleIn(ns)
	if err != nil {
		return err
	}
	if err := setupLink(h, "lo", ""); err != nil {
		return err
	}
	conf := fmt.Sprintf("ctrl_interface=/var/run/wpa_supplicant\nnetwork={\n\tssid=\"%s\"\n\tkey_mgmt=FT-PSK WPA-PSK\n\tpsk=\"%s\"\n\tscan_freq=5180\n}\n", testSSID, testPSK)
	s, err := e.startSupplicant(ctx, wlan(radioSTA1), ns, conf)
	if err != nil {
		return err
	}
	e.defer_(s.stop)
	st, err := s.waitConnected(ctx, 60*time.Second, "")
	e.rep.report("probe: station connected", t, err, fmt.Sprintf("%v", st))
	if err != nil {
		e.rep.note("wpas log: %s", s.d.tail(20))
		return err
	}
	if err := setupLink(h, wlan(radioSTA1), "10.77.0.11/24"); err != nil {
		return err
	}
	// Which AP?
	cur := -1
	for r, b := range all {
		if b.BSSID.String() == st["bssid"] {
			cur = r
		}
	}
	e.rep.note("station on %d (%s), key_mgmt %s", cur, st["bssid"], st["key_mgmt"])
	for r, c := range aps {
		stas, _ := c.Stations(ctx)
		for _, x := range stas {
			e.rep.note("ap %d station %s flags %v signal %d ext %x akm %v ft %v", r, x.Addr, x.Flags, x.Signal, x.ExtCapabilities, x.Raw["AKMSuiteSelector"], x.FT())
		}
	}

	// Data stream.
	arr, err := listenArrivals(srv, "10.77.0.1:9999")
	if err != nil {
		return err
	}
	defer arr.close()
	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	if err := udpProbe(pctx, ns, "10.77.0.1:9999", 10*time.Millisecond); err != nil {
		return err
	}
	e.recordFrames()
	time.Sleep(2 * time.Second)
	e.rep.note("datagrams in 2 s: %d", arr.count(time.Now().Add(-2*time.Second), time.Now()))
	if l, err := h.LinkByName(wlan(radioSTA1)); err == nil {
		st := l.Attrs().Statistics
		e.rep.note("sta link %s oper %v flags %v tx %d rx %d", l.Attrs().Name, l.Attrs().OperState, l.Attrs().Flags, st.TxPackets, st.RxPackets)
		neighs, _ := h.NeighList(l.Attrs().Index, 0)
		e.rep.note("sta neigh %v", neighs)
		addrs, _ := h.AddrList(l, 0)
		e.rep.note("sta addrs %v", addrs)
	}
	for _, n := range []string{"br-roam", "wlan0", "wlan1"} {
		if l, err := netlink.LinkByName(n); err == nil {
			st := l.Attrs().Statistics
			e.rep.note("root link %s oper %v flags %v master %d tx %d rx %d", n, l.Attrs().OperState, l.Attrs().Flags, l.Attrs().MasterIndex, st.TxPackets, st.RxPackets)
		}
	}
	var dataFrames []string
	for _, f := range e.takeFrames() {
		if f.Info.Type == 2 {
			dataFrames = append(dataFrames, fmt.Sprintf("%s->%s ack=%v", f.Tx, f.Rx, f.Acked))
		}
	}
	if len(dataFrames) > 10 {
		dataFrames = dataFrames[:10]
	}
	e.rep.note("data frames: %v", dataFrames)

	// Beacon request.
	staMAC := net.HardwareAddr(nil)
	if l, err := h.LinkByName(wlan(radioSTA1)); err == nil {
		staMAC = l.Attrs().HardwareAddr
	}
	oc, _ := hostapd.OpClass(chanplan.Spec{Freq: 5180, Width: 20, Center1: 5180})
	tok, err := aps[cur].ReqBeacon(ctx, staMAC, 0, hostapd.BeaconRequest(oc, 36, 50, hostapd.BeaconModeActive, nil))
	e.rep.note("REQ_BEACON token %d err %v", tok, err)
	deadline := time.After(5 * time.Second)
	func() {
		for {
			select {
			case ev := <-aps[cur].Events():
				e.rep.note("event %s", ev.Text)
				if br, ok := ev.BeaconReport(); ok {
					if en, err := hostapd.ParseBeaconReportEntry(br.Report); err == nil {
						sig, _ := en.Signal()
						e.rep.note("beacon report: %s ch %d rcpi %d = %.1f dBm", en.BSSID, en.Channel, en.RCPI, sig)
					}
				}
			case <-deadline:
				return
			}
		}
	}()

	// Roams: to each other AP by BTM.
	for i, target := range []int{(cur + 1) % 3, (cur + 2) % 3, cur} {
		t = time.Now()
		e.recordFrames()
		src := -1
		stNow, _ := s.status(ctx)
		for r, b := range all {
			if b.BSSID.String() == stNow["bssid"] {
				src = r
			}
		}
		oc, _ := hostapd.OpClass(chanplan.Spec{Freq: 5180, Width: 20, Center1: 5180})
		nr := hostapd.NeighborReport{BSSID: all[target].BSSID, BSSIDInfo: hostapd.BSSIDInfoReachable | hostapd.BSSIDInfoSecurity | hostapd.BSSIDInfoKeyScope | hostapd.BSSIDInfoMobilityDomain | hostapd.BSSIDInfoHT,
			OpClass: oc, Channel: 36, PHYType: hostapd.PHYTypeHT}
		sent := time.Now()
		err := aps[src].BSSTMReq(ctx, hostapd.BSSTMRequest{Addr: staMAC, Candidates: []hostapd.NeighborReport{nr}, ValidityInterval: 100, DisassocImminent: true, DisassocTimer: 100})
		if err != nil {
			e.rep.report(fmt.Sprintf("probe: roam %d", i), t, err, "")
			continue
		}
		var connAt time.Time
		_ = poll(ctx, 20*time.Second, func() error {
			for {
				select {
				case ev := <-aps[target].Events():
					if ev.Name == hostapd.EventSTAConnected {
						connAt = time.Now()
						return nil
					}
					e.rep.note("target event %s", ev.Text)
				default:
					return fmt.Errorf("not yet")
				}
			}
		})
		time.Sleep(500 * time.Millisecond)
		frames := e.takeFrames()
		var desc []string
		for _, f := range frames {
			if f.Info.Type == 0 {
				desc = append(desc, fmt.Sprintf("%+.1fms %s %s->%s ack=%v n=%d", float64(f.At.Sub(sent).Microseconds())/1000, f.Info.Name(), f.Tx, f.Rx, f.Acked, f.Attempts))
			}
		}
		gap := arr.gap(sent.Add(-100*time.Millisecond), sent.Add(3*time.Second))
		stNow, _ = s.status(ctx)
		e.rep.note("roam %d %d->%d: connected after %v, gap %v, now %s key %s; frames: %s", i, src, target, connAt.Sub(sent), gap, stNow["bssid"], stNow["key_mgmt"], strings.Join(desc, "; "))
		// drain src events
		for {
			select {
			case ev := <-aps[src].Events():
				e.rep.note("src event %s", ev.Text)
				continue
			default:
			}
			break
		}
	}
	return nil
}
