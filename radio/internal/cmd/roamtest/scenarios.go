package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"meshroot/radio/medium"
	"meshroot/radio/steer"
)

func init() {
	scenarioFuncs["roam"] = scenarioRoam
	scenarioFuncs["ignore"] = scenarioIgnore
	scenarioFuncs["pingpong"] = scenarioPingPong
	scenarioFuncs["controller-loss"] = scenarioControllerLoss
}

// steering is the controller's policy in the VM: the defaults with the timers the scenarios can
// afford (settling after an association, beacon reports every 2 s when interested).
func steering(kick bool) steer.Config {
	return steer.Config{Settle: 3 * time.Second, BeaconEvery: 2 * time.Second, MaxAge: 6 * time.Second,
		Kick: kick, KickLegacy: kick, BlockFor: 15 * time.Second}
}

// site returns the roaming site, setting it up (and station 1) on first use.
func (e *env) site(ctx context.Context) (*roamSite, error) {
	if e.rs != nil {
		return e.rs, nil
	}
	t := time.Now()
	s, err := setupRoamSite(ctx, e, true, steering(false))
	detail := ""
	if err == nil {
		e.space.Place(phy(radioSTA1), medium.Pos{X: 1, Y: 1})
		var st *station
		st, err = s.addStation(ctx, radioSTA1, "10.77.0.11", true)
		if err == nil {
			var m map[string]string
			m, err = st.wpas.waitConnected(ctx, 60*time.Second, "")
			detail = fmt.Sprintf("station 1 on %s (%s), key_mgmt %s", nodeName(s, m["bssid"]), m["bssid"], m["key_mgmt"])
			if err == nil && m["key_mgmt"] != "FT-PSK" {
				err = fmt.Errorf("key_mgmt %s; want FT-PSK", m["key_mgmt"])
			}
		}
		if err == nil {
			pctx, cancel := context.WithCancel(context.Background())
			e.defer_(cancel)
			err = udpProbe(pctx, st.ns, fmt.Sprintf("%s:%d", lanIP, probePort), 10*time.Millisecond)
		}
		if err == nil {
			err = poll(ctx, 10*time.Second, func() error {
				if n := s.arr.count(time.Now().Add(-time.Second), time.Now()); n < 20 {
					return fmt.Errorf("%d datagrams in the last second from station 1", n)
				}
				return nil
			})
		}
		if err == nil {
			err = poll(ctx, 15*time.Second, func() error {
				v, ok := s.controller().Client(st.mac.String())
				if !ok || v.Node == "" {
					return errors.New("controller does not know station 1")
				}
				if len(s.controller().BSSes()) != 3 {
					return fmt.Errorf("controller knows %d BSSes", len(s.controller().BSSes()))
				}
				return nil
			})
		}
	}
	e.rep.Report("roaming site", t, err, detail)
	if err != nil {
		return nil, err
	}
	e.rs = s
	return s, nil
}

func nodeName(s *roamSite, bssid string) string {
	if i := s.apIndex(bssid); i >= 0 {
		return nodeNames[i]
	}
	return "none"
}

// roamRecord is one roam seen on the medium: from the BSS transition request to the
// reassociation response, with the FT authentication in between.
type roamRecord struct {
	btm, auth, reassocReq, reassocResp time.Time
	ft                                 bool
	to                                 string
	status                             int
	// firstData is the station's first acknowledged data frame to the new AP.
	firstData time.Time
}

// roams extracts the station's roams from the medium's frame record.
func roams(frames []medium.FrameEvent, staPhy string) []roamRecord {
	var out []roamRecord
	var cur roamRecord
	for _, f := range frames {
		if f.Info.Type == medium.TypeData && f.Tx == staPhy && f.Acked && len(out) > 0 {
			if last := &out[len(out)-1]; last.firstData.IsZero() && f.Rx == last.to {
				last.firstData = f.At
			}
		}
		if f.Info.Type != medium.TypeMgmt {
			continue
		}
		switch {
		case f.Rx == staPhy && f.Info.Subtype == medium.SubAction && f.Info.Category == medium.CatWNM && f.Info.Action == medium.ActBTMRequest:
			cur = roamRecord{btm: f.At}
		case f.Tx == staPhy && f.Info.Subtype == medium.SubAuth && f.Info.AuthSeq == 1 && f.Acked:
			if cur.auth.IsZero() {
				cur.auth, cur.ft = f.At, f.Info.AuthAlg == medium.AuthFT
			}
		case f.Tx == staPhy && (f.Info.Subtype == medium.SubReassocReq || f.Info.Subtype == medium.SubAssocReq) && f.Acked:
			cur.reassocReq, cur.to = f.At, f.Rx
		case f.Rx == staPhy && (f.Info.Subtype == medium.SubReassocResp || f.Info.Subtype == medium.SubAssocResp):
			cur.reassocResp, cur.status = f.At, f.Info.Status
			if f.Info.Status == 0 {
				out = append(out, cur)
				cur = roamRecord{}
			}
			// A refused (re)association (a cached PMKSA the AP will not use, a stale FT
			// exchange): the roam goes on from its first authentication.
		}
	}
	return out
}

// scenarioRoam walks station 1 from node A to node C: the controller steers it with 802.11v
// (beacon reports tell it where the station hears better) and it roams with FT.
func scenarioRoam(ctx context.Context, e *env, _ int) error {
	s, err := e.site(ctx)
	if err != nil {
		return err
	}
	st := s.stations[radioSTA1]
	t := time.Now()
	if b := st.bssid(ctx); s.apIndex(b) != 0 {
		e.space.Place(phy(radioSTA1), medium.Pos{X: 1, Y: 1})
		return fmt.Errorf("station 1 starts on %s; want node A", nodeName(s, b))
	}
	e.recordFrames()
	before := len(s.controller().Actions())
	start := time.Now()
	e.space.Walk(phy(radioSTA1), start, []medium.Waypoint{{At: 0, Pos: medium.Pos{X: 1, Y: 1}}, {At: 40 * time.Second, Pos: medium.Pos{X: 29, Y: 1}}})
	err = poll(ctx, 75*time.Second, func() error {
		if b := st.bssid(ctx); s.apIndex(b) != 2 {
			return fmt.Errorf("station 1 on %s", nodeName(s, b))
		}
		return nil
	})
	arrived := time.Now()
	time.Sleep(2 * time.Second)
	frames := e.takeFrames()
	rs := roams(frames, phy(radioSTA1))
	v, _ := s.controller().Client(st.mac.String())
	steers := 0
	for _, a := range s.controller().Actions()[before:] {
		if a.Action.Kind == steer.ActSteer && a.Err == "" {
			steers++
		}
	}
	var desc []string
	steered, ft := 0, 0
	for _, r := range v.Roams {
		if r.Steered {
			steered++
		}
		desc = append(desc, fmt.Sprintf("%s→%s steered=%v", nodeName(s, r.From), nodeName(s, r.To), r.Steered))
	}
	for _, r := range rs {
		if r.ft {
			ft++
		}
		if !r.btm.IsZero() {
			gap := s.arr.gap(r.btm.Add(-50*time.Millisecond), r.reassocResp.Add(time.Second))
			desc = append(desc, fmt.Sprintf("to %s: BTM→auth %v, auth→reassoc resp %v, ft=%v, first data frame +%v, data gap %v", r.to,
				r.auth.Sub(r.btm).Round(time.Millisecond), r.reassocResp.Sub(r.auth).Round(time.Millisecond), r.ft,
				r.firstData.Sub(r.reassocResp).Round(time.Millisecond), gap.Round(time.Millisecond)))
		}
	}
	detail := fmt.Sprintf("on node C after %v; %d steering requests; roams: %s", arrived.Sub(start).Round(time.Second), steers, strings.Join(desc, "; "))
	if err != nil {
		s.diagnose(st, frames)
	}
	switch {
	case err != nil:
	case steered == 0:
		err = errors.New("no roam was steered by the controller")
	case len(rs) == 0 || ft != len(rs):
		err = fmt.Errorf("%d of %d roams used FT authentication", ft, len(rs))
	}
	e.rep.Report("walk A to C: steered with 802.11v, roams with FT", t, err, detail)
	return err
}

// scenarioIgnore walks station 2, which has BSS transition management disabled, away from
// node A: with kicks off it stays (sticky), with kicks configured the controller
// deauthenticates it with a short block on A and it reassociates where it should.
func scenarioIgnore(ctx context.Context, e *env, _ int) error {
	s, err := e.site(ctx)
	if err != nil {
		return err
	}
	t := time.Now()
	e.space.Place(phy(radioSTA2), medium.Pos{X: 1, Y: -1})
	st2 := s.stations[radioSTA2]
	if st2 == nil {
		st2, err = s.addStation(ctx, radioSTA2, "10.77.0.12", false)
		if err != nil {
			return err
		}
	}
	m, err := st2.wpas.waitConnected(ctx, 60*time.Second, "")
	if err == nil && s.apIndex(m["bssid"]) != 0 {
		err = fmt.Errorf("station 2 on %s; want node A", nodeName(s, m["bssid"]))
	}
	caps := ""
	if err == nil {
		err = poll(ctx, 15*time.Second, func() error {
			v, ok := s.controller().Client(st2.mac.String())
			if !ok {
				return errors.New("controller does not know station 2")
			}
			caps = fmt.Sprintf("%+v", v.Caps)
			if v.Caps.BTM {
				return fmt.Errorf("station 2 advertises 802.11v (%s)", caps)
			}
			return nil
		})
	}
	e.rep.Report("station without 802.11v joins node A", t, err, caps)
	if err != nil {
		return err
	}

	// Kicks off: it stays on A.
	t = time.Now()
	before := len(s.controller().Actions())
	e.space.Walk(phy(radioSTA2), time.Now(), []medium.Waypoint{{At: 0, Pos: medium.Pos{X: 1, Y: -1}}, {At: 15 * time.Second, Pos: medium.Pos{X: 22, Y: -1}}})
	time.Sleep(30 * time.Second)
	b := st2.bssid(ctx)
	var acts []string
	for _, a := range s.controller().Actions()[before:] {
		if a.Action.Client == st2.mac.String() && a.Action.Kind != steer.ActBeaconRequest {
			acts = append(acts, a.Action.Kind.String())
		}
	}
	if s.apIndex(b) != 0 || len(acts) != 0 {
		err = fmt.Errorf("kicks off: station 2 on %s, actions %v; want it left on node A", nodeName(s, b), acts)
		s.diagnose(st2, nil)
	}
	e.rep.Report("kicks off: left alone", t, err, fmt.Sprintf("on %s after walking to x=22", nodeName(s, b)))
	if err != nil {
		return err
	}

	// Kicks on: the controller restarts with the aggressive policy.
	t = time.Now()
	if err := s.restartMesh(ctx, steering(true)); err != nil {
		return err
	}
	var kickAt time.Time
	err = poll(ctx, 60*time.Second, func() error {
		if kickAt.IsZero() {
			for _, a := range s.controller().Actions() {
				if a.Action.Client == st2.mac.String() && a.Action.Kind == steer.ActKick {
					kickAt = a.At
				}
			}
		}
		b := st2.bssid(ctx)
		if kickAt.IsZero() || s.apIndex(b) <= 0 {
			return fmt.Errorf("station 2 on %s, kicked %v", nodeName(s, b), !kickAt.IsZero())
		}
		return nil
	})
	b = st2.bssid(ctx)
	detail := fmt.Sprintf("kicked %v after the policy change, now on %s", kickAt.Sub(t).Round(time.Second), nodeName(s, b))
	if err == nil {
		var deny bool
		for _, l := range s.logs.grep("association control") {
			deny = deny || strings.Contains(l, `"block":true`)
		}
		if !deny {
			err = errors.New("no block in the nodes' logs")
		}
	}
	e.rep.Report("kicks on: deauthenticated, blocked, reassociated elsewhere", t, err, detail)
	if rerr := s.restartMesh(ctx, steering(false)); err == nil {
		err = rerr
	}
	return err
}

// scenarioPingPong parks station 1 where nodes B and C are heard equally: it must stay put.
func scenarioPingPong(ctx context.Context, e *env, _ int) error {
	s, err := e.site(ctx)
	if err != nil {
		return err
	}
	st := s.stations[radioSTA1]
	t := time.Now()
	e.space.Place(phy(radioSTA1), medium.Pos{X: 22.5, Y: 1})
	time.Sleep(5 * time.Second)
	v0, _ := s.controller().Client(st.mac.String())
	before := len(s.controller().Actions())
	time.Sleep(60 * time.Second)
	v1, _ := s.controller().Client(st.mac.String())
	steers := 0
	for _, a := range s.controller().Actions()[before:] {
		if a.Action.Client == st.mac.String() && a.Action.Kind != steer.ActBeaconRequest {
			steers++
		}
	}
	roamsDuring := len(v1.Roams) - len(v0.Roams)
	if steers != 0 || roamsDuring != 0 {
		err = fmt.Errorf("%d steering actions and %d roams in 60 s between equal nodes", steers, roamsDuring)
	}
	e.rep.Report("equal nodes: no ping-pong", t, err, fmt.Sprintf("stayed on %s for 60 s", v1.Node))
	return err
}

// scenarioControllerLoss stops the controller's node: the others keep serving the station
// (data keeps flowing, a new association works, the neighbour databases stay), and follow the
// controller again when it returns.
func scenarioControllerLoss(ctx context.Context, e *env, _ int) error {
	s, err := e.site(ctx)
	if err != nil {
		return err
	}
	st := s.stations[radioSTA1]
	t := time.Now()
	serving := st.bssid(ctx)
	s.stopNode(0)
	lostAt := time.Now()
	err = poll(ctx, 10*time.Second, func() error {
		for i := 1; i < 3; i++ {
			if c := s.nodes[i].ControllerName(); c != "" {
				return fmt.Errorf("%s still follows %q", nodeNames[i], c)
			}
		}
		return nil
	})
	time.Sleep(5 * time.Second)
	gap := s.arr.gap(lostAt, time.Now())
	if err == nil && gap > time.Second {
		err = fmt.Errorf("data gap of %v without the controller", gap)
	}
	if err == nil && st.bssid(ctx) != serving {
		err = fmt.Errorf("station moved from %s to %s", serving, st.bssid(ctx))
	}
	nbr := ""
	if err == nil {
		i := s.apIndex(serving)
		if i < 0 {
			i = 1
		}
		var reply string
		reply, err = s.aps[i].Request(ctx, "SHOW_NEIGHBOR")
		if err == nil {
			n := 0
			for _, l := range strings.Split(strings.TrimSpace(reply), "\n") {
				for j, b := range s.bss {
					if j != i && strings.HasPrefix(l, b.String()) {
						n++
					}
				}
			}
			nbr = fmt.Sprintf("%s's hostapd keeps %d neighbour entries", nodeNames[i], n)
			if n != 2 {
				err = fmt.Errorf("SHOW_NEIGHBOR on %s: %q; want the other two nodes", nodeNames[i], reply)
			}
		}
	}
	// A new association without the controller.
	if err == nil {
		if st2 := s.stations[radioSTA2]; st2 != nil {
			_, _ = st2.wpas.ctrl.Request(ctx, "DISCONNECT")
			time.Sleep(500 * time.Millisecond)
			_, _ = st2.wpas.ctrl.Request(ctx, "RECONNECT")
			if _, cerr := st2.wpas.waitConnected(ctx, 30*time.Second, ""); cerr != nil {
				err = fmt.Errorf("station 2 could not associate without the controller: %w", cerr)
			}
		}
	}
	e.rep.Report("controller lost: nodes keep serving", t, err, fmt.Sprintf("data gap %v over %v; %s", gap.Round(time.Millisecond), time.Since(lostAt).Round(time.Second), nbr))
	if err != nil {
		return err
	}
	t = time.Now()
	if err := s.startNode(ctx, 0, steering(false)); err != nil {
		return err
	}
	err = poll(ctx, 15*time.Second, func() error {
		for i := 1; i < 3; i++ {
			if c := s.nodes[i].ControllerName(); c != nodeNames[0] {
				return fmt.Errorf("%s follows %q", nodeNames[i], c)
			}
		}
		if _, ok := s.controller().Client(st.mac.String()); !ok {
			return errors.New("the returning controller does not know station 1")
		}
		return nil
	})
	e.rep.Report("controller back: nodes follow it again", t, err, "")
	return err
}

// diagnose notes what the controller, the mesh and the station saw (for failures).
func (s *roamSite) diagnose(st *station, frames []medium.FrameEvent) {
	e := s.e
	if v, ok := s.controller().Client(st.mac.String()); ok {
		var smp []string
		for b, x := range v.Samples {
			smp = append(smp, fmt.Sprintf("%s=%.0f(%.0f, %v ago, src %d)", nodeName(s, b), x.Signal, x.Smoothed(), time.Since(x.At).Round(time.Millisecond), x.Src))
		}
		e.rep.Note("controller view of %s: on %s caps %+v samples %v roams %+v", st.mac, v.Node, v.Caps, smp, v.Roams)
	}
	for _, l := range s.logs.grep("steering") {
		e.rep.Note("mesh log: %s", l)
	}
	e.rep.Note("wpa_supplicant %s: %s", wlan(st.radio), st.wpas.d.grep("CTRL-EVENT|WNM|SME|Trying|roam|RRM|Beacon", 40))
	var fr []string
	for _, f := range frames {
		if f.Info.Type == medium.TypeMgmt && (f.Tx == phy(st.radio) || f.Rx == phy(st.radio)) {
			fr = append(fr, fmt.Sprintf("%s %s %s->%s", f.At.Format("05.000"), f.Info.Name(), f.Tx, f.Rx))
		}
	}
	if len(fr) > 80 {
		fr = fr[len(fr)-80:]
	}
	e.rep.Note("frames: %s", strings.Join(fr, "; "))
}
