package main

import (
	"context"
	"fmt"
	"sort"
	"time"

	"meshroot/radio/chanplan"
	"meshroot/radio/hostapd"
	"meshroot/radio/medium"
)

func init() { scenarioFuncs["roambench"] = scenarioRoamBench }

// roamSample is one measured roam.
type roamSample struct {
	btmToConnected time.Duration // BSS_TM_REQ sent → AP-STA-CONNECTED at the target
	authToResp     time.Duration // first authentication frame → (re)association response (medium)
	gap            time.Duration // longest pause of the station's 10 ms datagrams around the roam
	ft             bool
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
// and measures it.
func roamOnce(ctx context.Context, e *env, s *roamSite, st *station) (roamSample, error) {
	cur := s.apIndex(st.bssid(ctx))
	if cur < 0 || cur > 1 {
		return roamSample{}, fmt.Errorf("station on %s; want node A or B", nodeName(s, st.bssid(ctx)))
	}
	target := 1 - cur
	spec, _ := chanplan.NewSpec(5180, 20, 0)
	oc, _ := hostapd.OpClass(spec)
	if _, err := s.aps[cur].ReqBeacon(ctx, st.mac, 0, hostapd.BeaconRequest(oc, 36, 50, hostapd.BeaconModeActive, nil)); err != nil {
		return roamSample{}, fmt.Errorf("REQ_BEACON: %w", err)
	}
	time.Sleep(700 * time.Millisecond)
	s.drain()
	e.recordFrames()
	nr := hostapd.NeighborReport{BSSID: s.bss[target], OpClass: oc, Channel: 36, PHYType: hostapd.PHYTypeVHT,
		BSSIDInfo: hostapd.BSSIDInfoReachable | hostapd.BSSIDInfoSecurity | hostapd.BSSIDInfoKeyScope | hostapd.BSSIDInfoHT | hostapd.BSSIDInfoVHT}
	if s.useFT {
		nr.BSSIDInfo |= hostapd.BSSIDInfoMobilityDomain
	}
	t0 := time.Now()
	if err := s.aps[cur].BSSTMReq(ctx, hostapd.BSSTMRequest{Addr: st.mac, Candidates: []hostapd.NeighborReport{nr},
		DisassocImminent: true, ValidityInterval: 100}); err != nil {
		return roamSample{}, err
	}
	t1, err := s.waitEvent(ctx, target, hostapd.EventSTAConnected, st.mac, 10*time.Second)
	if err != nil {
		return roamSample{}, err
	}
	time.Sleep(time.Second)
	smp := roamSample{btmToConnected: t1.Sub(t0), gap: s.arr.gap(t0.Add(-20*time.Millisecond), t1.Add(500*time.Millisecond))}
	frames := e.takeFrames()
	for _, r := range roams(frames, phy(st.radio)) {
		if !r.auth.IsZero() && r.to == phy(apRadios[target]) {
			smp.authToResp, smp.ft = r.reassocResp.Sub(r.auth), r.ft
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
				e.rep.note("roam timeline (from BTM): auth %s, reassoc resp %s, connected event %s; datagrams: last before %s, first after %s; station data frames: %v",
					rel(r.auth), rel(r.reassocResp), rel(t1), rel(before), rel(after), data)
			}
		}
	}
	return smp, nil
}

// roamSeries measures n roams back and forth between A and B.
func roamSeries(ctx context.Context, e *env, s *roamSite, st *station, n int, label string) ([]roamSample, error) {
	var out []roamSample
	for i := 0; i < n; i++ {
		smp, err := roamOnce(ctx, e, s, st)
		if err != nil {
			return out, fmt.Errorf("%s roam %d: %w", label, i+1, err)
		}
		out = append(out, smp)
		time.Sleep(500 * time.Millisecond)
	}
	return out, nil
}

func (e *env) reportSeries(label string, smp []roamSample) {
	var btm, auth, gap []time.Duration
	ft := 0
	for _, x := range smp {
		btm, auth, gap = append(btm, x.btmToConnected), append(auth, x.authToResp), append(gap, x.gap)
		if x.ft {
			ft++
		}
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	for _, q := range []struct {
		name string
		p    float64
	}{{"p50", 0.5}, {"p95", 0.95}} {
		e.rep.metric(fmt.Sprintf("%s-btm-to-reassociated-%s", label, q.name), ms(percentile(btm, q.p)), "ms")
		e.rep.metric(fmt.Sprintf("%s-auth-to-reassoc-resp-%s", label, q.name), ms(percentile(auth, q.p)), "ms")
		e.rep.metric(fmt.Sprintf("%s-data-gap-%s", label, q.name), ms(percentile(gap, q.p)), "ms")
	}
	e.rep.metric(label+"-roams-with-ft", float64(ft), "roams")
	e.rep.metric(label+"-roams", float64(len(smp)), "roams")
}

// scenarioRoamBench measures roams (BSS transition request to reassociated, the authentication
// to reassociation response exchange on the medium, and the data gap) with FT and without, the
// station standing where nodes A and B are heard equally.
func scenarioRoamBench(ctx context.Context, e *env, n int) error {
	s, err := e.site(ctx)
	if err != nil {
		return err
	}
	s.stopMesh() // the harness sends the requests itself
	st := s.stations[radioSTA1]
	e.space.Place(phy(st.radio), medium.Pos{X: 7.5, Y: 1})
	t := time.Now()
	// Idle: the data path's own pauses (timer slack under TCG).
	time.Sleep(5 * time.Second)
	var idle []time.Duration
	for i := 5; i > 0; i-- {
		idle = append(idle, s.arr.gap(time.Now().Add(-time.Duration(i)*time.Second), time.Now().Add(-time.Duration(i-1)*time.Second)))
	}
	e.rep.metric("idle-data-gap-max", float64(percentile(idle, 1).Microseconds())/1000, "ms")
	if s.apIndex(st.bssid(ctx)) > 1 {
		// From C (after other scenarios): first over to A.
		if err := forceTo(ctx, s, st, 0); err != nil {
			return err
		}
	}
	ftS, err := roamSeries(ctx, e, s, st, n, "ft")
	e.rep.report(fmt.Sprintf("%d FT roams", n), t, err, summary(ftS))
	if err != nil {
		return err
	}
	e.reportSeries("ft", ftS)

	// Without FT: the APs and the station again with WPA-PSK only.
	t = time.Now()
	s.stopAPs()
	s.useFT = false
	if err := s.startAPs(ctx); err != nil {
		return err
	}
	if err := s.restartSupplicant(ctx, st, true, false); err != nil {
		return err
	}
	m, err := st.wpas.waitConnected(ctx, 60*time.Second, "")
	if err == nil && m["key_mgmt"] != "WPA2-PSK" && m["key_mgmt"] != "WPA-PSK" {
		err = fmt.Errorf("key_mgmt %s; want WPA2-PSK", m["key_mgmt"])
	}
	if err == nil && s.apIndex(m["bssid"]) > 1 {
		err = forceTo(ctx, s, st, 0)
	}
	var plain []roamSample
	if err == nil {
		plain, err = roamSeries(ctx, e, s, st, n, "non-ft")
	}
	e.rep.report(fmt.Sprintf("%d roams without FT", n), t, err, summary(plain))
	if err != nil {
		return err
	}
	e.reportSeries("non-ft", plain)
	e.rep.metric("btm-to-reassociated-p95-ft/non-ft", float64(percentile(durations(ftS, 0), 0.95))/float64(percentile(durations(plain, 0), 0.95)), "ratio")
	e.rep.metric("data-gap-p95-ft/non-ft", float64(percentile(durations(ftS, 2), 0.95))/float64(percentile(durations(plain, 2), 0.95)), "ratio")
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
	return poll(ctx, 15*time.Second, func() error {
		if s.apIndex(st.bssid(ctx)) != i {
			return fmt.Errorf("station on %s", nodeName(s, st.bssid(ctx)))
		}
		return nil
	})
}
