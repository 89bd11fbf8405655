package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"meshroot/radio/chanplan"
	"meshroot/radio/hostapd"
	"meshroot/radio/medium"
)

func init() { scenarioFuncs["roambench"] = scenarioRoamBench }

// roamSample is one measured roam.
type roamSample struct {
	btmToConnected time.Duration // BSS_TM_REQ sent → the station's CTRL-EVENT-CONNECTED to the target
	authToResp     time.Duration // first authentication frame → (re)association response (medium)
	gap            time.Duration // longest pause of the station's 10 ms datagrams around the roam
	ft             bool

	// The breakdown of btmToConnected, from the medium's frame record: the request command
	// until the BTM request frame is on the medium (hostapd's control interface, hostapd,
	// the kernel), the frame until the station's first authentication frame (the station's
	// BSS transition handling: candidate selection or a scan), authentication to
	// reassociation response (authToResp), and the response until the harness has the
	// station's CTRL-EVENT-CONNECTED (key installation, the control interface).
	cmdToBTM, btmToAuth, respToConnected time.Duration
	// medBusy is the medium's own time on frames (all radios', Medium.HandleNanos) within
	// the roam, medFrames how many frames it relayed then.
	medBusy   time.Duration
	medFrames uint64
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(p*float64(len(s)-1)+0.5)]
}

// verboseRoams is how many roams print their timeline.
var verboseRoams = 3

// roamOnce makes station st roam from its AP to the other of A and B with a BSS transition
// request (after a beacon request, as the controller does, so that its scan results are fresh)
// and measures it. A diagnostic roam (diag) runs wpa_supplicant and both hostapds at debug
// level and notes their timestamped log lines and the medium's frames around it.
func roamOnce(ctx context.Context, e *env, s *roamSite, st *station, diag bool) (roamSample, error) {
	cur := s.apIndex(st.bssid(ctx))
	if cur < 0 || cur > 1 {
		return roamSample{}, fmt.Errorf("station on %s; want node A or B", nodeName(s, st.bssid(ctx)))
	}
	target := 1 - cur
	spec, _ := chanplan.NewSpec(5180, 20, 0)
	oc, _ := hostapd.OpClass(spec)
	if _, err := s.aps[cur].ReqBeacon(ctx, st.mac, 0, hostapd.BeaconRequest(oc, 36, 50, hostapd.BeaconModeActive, nil)); err != nil {
		// What the APs know of the station (REQ_BEACON fails for a station that is not
		// associated and authorized there).
		for i := range 2 {
			reply, serr := s.aps[i].Request(ctx, "STA "+st.mac.String())
			s.e.rep.Note("%s STA %s: %q %v", nodeNames[i], st.mac, strings.Join(strings.Fields(reply), " "), serr)
		}
		s.e.rep.Note("wpa_supplicant: %s", st.wpas.d.grep("CTRL-EVENT|WNM|SME|Trying|FT|SAE|Associated|reason", 20))
		return roamSample{}, fmt.Errorf("REQ_BEACON: %w", err)
	}
	time.Sleep(700 * time.Millisecond)
	if diag {
		setLogLevel(ctx, s, st, cur, target, "DEBUG")
		defer setLogLevel(ctx, s, st, cur, target, "INFO")
	}
	s.drain()
	st.drain()
	e.recordFrames()
	nr := hostapd.NeighborReport{BSSID: s.bss[target], OpClass: oc, Channel: 36, PHYType: hostapd.PHYTypeVHT,
		BSSIDInfo: hostapd.BSSIDInfoReachable | hostapd.BSSIDInfoSecurity | hostapd.BSSIDInfoKeyScope | hostapd.BSSIDInfoHT | hostapd.BSSIDInfoVHT}
	if s.useFT {
		nr.BSSIDInfo |= hostapd.BSSIDInfoMobilityDomain
	}
	busy0, frames0 := e.med.HandleNanos.Load(), e.med.Frames.Load()
	t0 := time.Now()
	if err := s.aps[cur].BSSTMReq(ctx, hostapd.BSSTMRequest{Addr: st.mac, Candidates: []hostapd.NeighborReport{nr},
		DisassocImminent: true, ValidityInterval: 100}); err != nil {
		return roamSample{}, err
	}
	t1, err := st.waitConnectedEvent(ctx, s.bss[target], 10*time.Second)
	busy1, frames1 := e.med.HandleNanos.Load(), e.med.Frames.Load()
	if err != nil {
		s.diagFT(cur, target, st)
		return roamSample{}, err
	}
	time.Sleep(time.Second)
	smp := roamSample{btmToConnected: t1.Sub(t0), gap: s.arr.gap(t0.Add(-20*time.Millisecond), t1.Add(500*time.Millisecond)),
		medBusy: time.Duration(busy1 - busy0), medFrames: frames1 - frames0}
	frames := e.takeFrames()
	for _, r := range roams(frames, phy(st.radio)) {
		if !r.auth.IsZero() && r.to == phy(apRadios[target]) {
			smp.authToResp, smp.ft = r.reassocResp.Sub(r.auth), r.ft
			// The BSS transition request is the first action frame from the current AP to
			// the station since the command (with PMF it is protected: its category is not
			// readable on the medium).
			for _, f := range frames {
				if f.Info.Type == medium.TypeMgmt && f.Info.Subtype == medium.SubAction && f.Tx == phy(apRadios[cur]) &&
					f.Rx == phy(st.radio) && !f.At.Before(t0) && f.At.Before(r.auth) {
					smp.cmdToBTM, smp.btmToAuth = f.At.Sub(t0), r.auth.Sub(f.At)
					break
				}
			}
			smp.respToConnected = t1.Sub(r.reassocResp)
			if diag {
				e.noteRoamLogs(s, st, cur, target, t0, t1, frames)
			}
			if verboseRoams > 0 {
				verboseRoams--
				rel := func(x time.Time) string { return x.Sub(t0).Round(time.Millisecond).String() }
				before, after := s.arr.around(r.reassocResp)
				var data []string
				for _, f := range frames {
					if f.Info.Type == medium.TypeData && f.Tx == phy(st.radio) && len(data) < 12 && f.At.After(r.auth) {
						data = append(data, fmt.Sprintf("%s→%s ack=%v", rel(f.At), f.Rx, f.Acked))
					}
				}
				var apData []string
				for _, f := range frames {
					if f.Info.Type == medium.TypeData && f.Rx == phy(st.radio) && len(apData) < 12 && f.At.After(r.auth) {
						apData = append(apData, fmt.Sprintf("%s %s→ ack=%v", rel(f.At), f.Tx, f.Acked))
					}
				}
				neigh := ""
				if l, err := st.h.LinkByName(wlan(st.radio)); err == nil {
					ns, _ := st.h.NeighList(l.Attrs().Index, 2)
					for _, n := range ns {
						neigh += fmt.Sprintf("%s state %#x; ", n.IP, n.State)
					}
				}
				e.rep.Note("roam timeline (from BTM): auth %s, reassoc resp %s, connected event %s; datagrams: last before %s, first after %s; station data frames: %v; AP data frames to it: %v; neighbours now: %s",
					rel(r.auth), rel(r.reassocResp), rel(t1), rel(before), rel(after), data, apData, neigh)
			}
		}
	}
	return smp, nil
}

// setLogLevel sets the debug level of the station's wpa_supplicant and both APs' hostapd.
func setLogLevel(ctx context.Context, s *roamSite, st *station, cur, target int, level string) {
	for _, c := range []*hostapd.Client{st.wpas.ctrl, s.aps[cur], s.aps[target]} {
		if _, err := c.Request(ctx, "LOG_LEVEL "+level); err != nil {
			s.e.rep.Note("LOG_LEVEL %s: %v", level, err)
		}
	}
}

// diagLogRE selects the daemons' debug lines that time a roam.
var diagLogRE = regexp.MustCompile(`WNM|BSS Transition|[Ss]can|SME:|FT: |Trying to|nl80211: (Authenticate|Associate|Connect|Drv Event|MLME event|send_mlme|Set key)|CTRL-EVENT|State: |[Cc]andidate|authentication|[Rr]eassoc|IEEE 802.11|RRB|mgmt::|MGMT|Event [A-Z_]+ \(`)

// noteRoamLogs notes the daemons' log lines and the station's management frames on the medium
// between t0 (the BTM request command) and t1 (the connected event) in milliseconds from t0.
func (e *env) noteRoamLogs(s *roamSite, st *station, cur, target int, t0, t1 time.Time, frames []medium.FrameEvent) {
	rel := func(x time.Time) string { return fmt.Sprintf("%+8.1fms", float64(x.Sub(t0).Microseconds())/1000) }
	type line struct {
		at   time.Time
		text string
	}
	var lines []line
	for _, src := range []struct {
		name string
		d    *daemon
	}{{"sta", st.wpas.d}, {nodeNames[cur], s.hapd[cur]}, {nodeNames[target], s.hapd[target]}} {
		b, _ := os.ReadFile(src.d.log)
		for _, l := range strings.Split(string(b), "\n") {
			ts, text, ok := strings.Cut(l, ": ")
			if !ok || !diagLogRE.MatchString(text) {
				continue
			}
			f, err := strconv.ParseFloat(ts, 64)
			if err != nil {
				continue
			}
			at := time.Unix(0, int64(f*1e9))
			if at.Before(t0.Add(-10*time.Millisecond)) || at.After(t1.Add(10*time.Millisecond)) {
				continue
			}
			if len(text) > 150 {
				text = text[:150]
			}
			lines = append(lines, line{at, src.name + ": " + text})
		}
	}
	for _, f := range frames {
		if f.Info.Type == medium.TypeMgmt && (f.Tx == phy(st.radio) || f.Rx == phy(st.radio)) {
			lines = append(lines, line{f.At, fmt.Sprintf("medium: %s %s→%s acked=%v took %v", f.Info.Name(), f.Tx, f.Rx, f.Acked, f.Took.Round(time.Microsecond))})
		}
	}
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].at.Before(lines[j].at) })
	if len(lines) > 120 {
		lines = lines[:120]
	}
	e.rep.Note("diagnostic roam %s→%s: %d lines", nodeNames[cur], nodeNames[target], len(lines))
	for _, l := range lines {
		e.rep.Note("diag %s %s", rel(l.at), l.text)
	}
	e.rep.Note("diag %s connected event in the harness", rel(t1))
}

// roamSeries measures n roams back and forth between A and B. A roam that does not reach its
// target (the station went elsewhere, or gave up) counts as failed; more than a fifth failed
// ends the series with an error.
func roamSeries(ctx context.Context, e *env, s *roamSite, st *station, n int, label string) ([]roamSample, int, error) {
	for i := range e.roamDiag {
		if _, err := roamOnce(ctx, e, s, st, true); err != nil {
			e.rep.Note("%s diagnostic roam %d failed: %v", label, i+1, err)
			if _, werr := st.wpas.waitConnected(ctx, 20*time.Second, ""); werr != nil {
				return nil, 0, werr
			}
			if s.apIndex(st.bssid(ctx)) > 1 {
				if err := forceTo(ctx, s, st, 0); err != nil {
					return nil, 0, err
				}
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	var out []roamSample
	failed := 0
	for i := 0; i < n; i++ {
		smp, err := roamOnce(ctx, e, s, st, false)
		if err != nil {
			failed++
			e.rep.Note("%s roam %d failed: %v", label, i+1, err)
			if failed*5 > n {
				return out, failed, fmt.Errorf("%s: %d of %d roams failed, last: %w", label, failed, i+1, err)
			}
			if _, werr := st.wpas.waitConnected(ctx, 20*time.Second, ""); werr != nil {
				return out, failed, werr
			}
			if s.apIndex(st.bssid(ctx)) > 1 {
				if err := forceTo(ctx, s, st, 0); err != nil {
					return out, failed, err
				}
			}
			continue
		}
		out = append(out, smp)
		time.Sleep(500 * time.Millisecond)
	}
	return out, failed, nil
}

func (e *env) reportSeries(label string, smp []roamSample) {
	var btm, auth, gap, cmd, btmAuth, conn, busy []time.Duration
	ft := 0
	var frames uint64
	for _, x := range smp {
		btm, auth, gap = append(btm, x.btmToConnected), append(auth, x.authToResp), append(gap, x.gap)
		cmd, btmAuth, conn = append(cmd, x.cmdToBTM), append(btmAuth, x.btmToAuth), append(conn, x.respToConnected)
		busy = append(busy, x.medBusy)
		frames += x.medFrames
		if x.ft {
			ft++
		}
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	for _, q := range []struct {
		name string
		p    float64
	}{{"p50", 0.5}, {"p95", 0.95}} {
		e.rep.Metric(fmt.Sprintf("%s-btm-to-reassociated-%s", label, q.name), ms(percentile(btm, q.p)), "ms")
		e.rep.Metric(fmt.Sprintf("%s-auth-to-reassoc-resp-%s", label, q.name), ms(percentile(auth, q.p)), "ms")
		e.rep.Metric(fmt.Sprintf("%s-data-gap-%s", label, q.name), ms(percentile(gap, q.p)), "ms")
		// The breakdown of btm-to-reassociated (see roamSample).
		e.rep.Metric(fmt.Sprintf("%s-cmd-to-btm-frame-%s", label, q.name), ms(percentile(cmd, q.p)), "ms")
		e.rep.Metric(fmt.Sprintf("%s-btm-frame-to-auth-%s", label, q.name), ms(percentile(btmAuth, q.p)), "ms")
		e.rep.Metric(fmt.Sprintf("%s-reassoc-resp-to-connected-%s", label, q.name), ms(percentile(conn, q.p)), "ms")
		e.rep.Metric(fmt.Sprintf("%s-medium-busy-%s", label, q.name), ms(percentile(busy, q.p)), "ms")
	}
	if len(smp) > 0 {
		e.rep.Metric(label+"-medium-frames-per-roam", float64(frames)/float64(len(smp)), "frames")
	}
	e.rep.Metric(label+"-roams-with-ft", float64(ft), "roams")
	e.rep.Metric(label+"-roams", float64(len(smp)), "roams")
}

// series is one set of roams of the benchmark.
type series struct {
	label     string
	ft, sae   bool
	staticARP bool
	n         int
}

// reconfigure switches the APs and the station to a security setup.
func reconfigure(ctx context.Context, s *roamSite, st *station, ft, sae bool) error {
	if s.useFT == ft && s.sae == sae {
		return nil
	}
	s.stopAPs()
	s.useFT, s.sae = ft, sae
	if err := s.startAPs(ctx); err != nil {
		return err
	}
	if err := s.restartSupplicant(ctx, st); err != nil {
		return err
	}
	if _, err := st.wpas.waitConnected(ctx, 60*time.Second, ""); err != nil {
		return err
	}
	return forceTo(ctx, s, st, 0)
}

// staticARP pins (or unpins) the station's neighbour entry of the LAN host, so that the data
// gap measures the radio path and not the ARP resolution a roam's carrier change causes.
func staticARP(s *roamSite, st *station, on bool) error {
	lh, err := handleIn(s.lanNS)
	if err != nil {
		return err
	}
	defer lh.Close()
	hl, err := lh.LinkByName("lanhost")
	if err != nil {
		return err
	}
	l, err := st.h.LinkByName(wlan(st.radio))
	if err != nil {
		return err
	}
	n := &netlink.Neigh{LinkIndex: l.Attrs().Index, IP: net.ParseIP(lanIP), HardwareAddr: hl.Attrs().HardwareAddr,
		State: netlink.NUD_PERMANENT, Family: netlink.FAMILY_V4}
	if on {
		return st.h.NeighSet(n)
	}
	return st.h.NeighDel(n)
}

// scenarioRoamBench measures roams (BSS transition request to reassociated, the authentication
// to reassociation response exchange on the medium, and the data gap) with FT and without, for
// WPA2-PSK and WPA3-SAE (PMKSA caching off: every non-FT roam runs SAE), the station standing
// where nodes A and B are heard equally; and a few FT roams with the station's ARP entry left
// to the kernel (a roam's carrier change flushes it).
func scenarioRoamBench(ctx context.Context, e *env, n int) error {
	s, err := e.site(ctx)
	if err != nil {
		return err
	}
	s.stopMesh() // the harness sends the requests itself
	st := s.stations[radioSTA1]
	e.space.Place(phy(st.radio), medium.Pos{X: 7.5, Y: 1})
	time.Sleep(5 * time.Second)
	var idle []time.Duration
	for i := 5; i > 0; i-- {
		idle = append(idle, s.arr.gap(time.Now().Add(-time.Duration(i)*time.Second), time.Now().Add(-time.Duration(i-1)*time.Second)))
	}
	e.rep.Metric("idle-data-gap-max", float64(percentile(idle, 1).Microseconds())/1000, "ms")
	if err := forceTo(ctx, s, st, 0); err != nil {
		return err
	}
	results := map[string][]roamSample{}
	for _, sr := range []series{
		{"ft-psk", true, false, true, n}, {"psk", false, false, true, n},
		{"ft-sae", true, true, true, n}, {"sae", false, true, true, n},
		{"ft-psk-dynamic-arp", true, false, false, 5},
	} {
		t := time.Now()
		err := reconfigure(ctx, s, st, sr.ft, sr.sae)
		if err == nil {
			err = staticARP(s, st, sr.staticARP)
		}
		var smp []roamSample
		failed := 0
		if err == nil {
			smp, failed, err = roamSeries(ctx, e, s, st, sr.n, sr.label)
		}
		e.rep.Report(fmt.Sprintf("%d roams %s", sr.n, sr.label), t, err, fmt.Sprintf("%d failed; %s", failed, summary(smp)))
		if err != nil {
			return err
		}
		e.reportSeries(sr.label, smp)
		e.rep.Metric(sr.label+"-roams-failed", float64(failed), "roams")
		results[sr.label] = smp
	}
	p95 := func(label string, field int) float64 {
		return float64(percentile(durations(results[label], field), 0.95))
	}
	for _, pair := range [][2]string{{"ft-psk", "psk"}, {"ft-sae", "sae"}} {
		e.rep.Metric(fmt.Sprintf("auth-to-reassoc-resp-p95-%s/%s", pair[0], pair[1]), p95(pair[0], 1)/p95(pair[1], 1), "ratio")
		e.rep.Metric(fmt.Sprintf("btm-to-reassociated-p95-%s/%s", pair[0], pair[1]), p95(pair[0], 0)/p95(pair[1], 0), "ratio")
		e.rep.Metric(fmt.Sprintf("data-gap-p95-%s/%s", pair[0], pair[1]), p95(pair[0], 2)/p95(pair[1], 2), "ratio")
	}
	return nil
}

func durations(smp []roamSample, field int) []time.Duration {
	var out []time.Duration
	for _, x := range smp {
		out = append(out, [3]time.Duration{x.btmToConnected, x.authToResp, x.gap}[field])
	}
	return out
}

func summary(smp []roamSample) string {
	if len(smp) == 0 {
		return ""
	}
	r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	return fmt.Sprintf("BTM→reassociated p50 %v p95 %v; auth→reassoc resp p50 %v p95 %v; data gap p50 %v p95 %v",
		r(percentile(durations(smp, 0), 0.5)), r(percentile(durations(smp, 0), 0.95)),
		r(percentile(durations(smp, 1), 0.5)), r(percentile(durations(smp, 1), 0.95)),
		r(percentile(durations(smp, 2), 0.5)), r(percentile(durations(smp, 2), 0.95)))
}

// forceTo moves the station to AP i with a BSS transition request.
func forceTo(ctx context.Context, s *roamSite, st *station, i int) error {
	cur := s.apIndex(st.bssid(ctx))
	if cur == i {
		return nil
	}
	if cur < 0 {
		return fmt.Errorf("station not associated")
	}
	spec, _ := chanplan.NewSpec(5180, 20, 0)
	oc, _ := hostapd.OpClass(spec)
	nr := hostapd.NeighborReport{BSSID: s.bss[i], OpClass: oc, Channel: 36, PHYType: hostapd.PHYTypeVHT, BSSIDInfo: hostapd.BSSIDInfoReachable}
	if _, err := s.aps[cur].ReqBeacon(ctx, st.mac, 0, hostapd.BeaconRequest(oc, 36, 50, hostapd.BeaconModeActive, nil)); err != nil {
		return err
	}
	time.Sleep(700 * time.Millisecond)
	if err := s.aps[cur].BSSTMReq(ctx, hostapd.BSSTMRequest{Addr: st.mac, Candidates: []hostapd.NeighborReport{nr}, DisassocImminent: true, ValidityInterval: 100}); err != nil {
		return err
	}
	err := poll(ctx, 15*time.Second, func() error {
		if s.apIndex(st.bssid(ctx)) != i {
			return fmt.Errorf("station on %s", nodeName(s, st.bssid(ctx)))
		}
		return nil
	})
	if err != nil {
		s.diagFT(cur, i, st)
	}
	return err
}

// diagFT notes the FT exchanges of a failed roam from cur to target.
func (s *roamSite) diagFT(cur, target int, st *station) {
	s.e.rep.Note("hostapd %s: %s", nodeNames[target], s.hapd[target].grep("FT|RRB|R0KH|R1KH|SAE|auth", 30))
	s.e.rep.Note("hostapd %s: %s", nodeNames[cur], s.hapd[cur].grep("FT|RRB|R0KH|R1KH|push", 20))
	s.e.rep.Note("wpa_supplicant: %s", st.wpas.d.grep("FT|SAE|WNM|Trying|CTRL-EVENT", 30))
}
