package steer

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)

const (
	a24, a5 = "02:00:00:00:00:00", "02:00:00:00:00:01"
	b24, b5 = "02:00:00:00:01:00", "02:00:00:00:01:01"
	sta     = "02:aa:00:00:00:01"
)

func site() *Tracker {
	t := NewTracker()
	t.SetBSSes([]BSS{
		{BSSID: a24, Node: "a", Band: Band24, Width: 20}, {BSSID: a5, Node: "a", Band: Band5, Width: 80},
		{BSSID: b24, Node: "b", Band: Band24, Width: 20}, {BSSID: b5, Node: "b", Band: Band5, Width: 80},
	})
	return t
}

var smart = Caps{BTM: true, Beacon: true, FT: true, Bands: []Band{Band24, Band5}}

// run feeds a signal per BSS every second for d (signals returns them at each second) and
// collects the actions, marking each as carried out.
func run(t *Tracker, p Decider, from time.Time, d time.Duration, signals func(time.Time) map[string]float64) []Action {
	var out []Action
	for now := from; now.Before(from.Add(d)); now = now.Add(time.Second) {
		c := t.Client(sta)
		for b, s := range signals(now) {
			src := Report
			if c != nil && c.BSS == b {
				src = Uplink
			}
			t.Signal(now, sta, b, s, src)
		}
		for _, a := range p.Decide(now, t) {
			t.Steered(now, a)
			a.Wait = a.Wait.Round(time.Second)
			out = append(out, a)
		}
	}
	return out
}

func steers(acts []Action) []Action {
	var out []Action
	for _, a := range acts {
		if a.Kind != ActBeaconRequest {
			out = append(out, a)
		}
	}
	return out
}

func TestThroughput(t *testing.T) {
	b24 := BSS{Band: Band24, Width: 20}
	b5 := BSS{Band: Band5, Width: 80}
	if got := Throughput(-100, b5); got != 0 {
		t.Errorf("Throughput(-100 dBm) = %v; want 0", got)
	}
	prev := 0.0
	for sig := -95.0; sig <= -30; sig++ {
		got := Throughput(sig, b5)
		if got < prev {
			t.Fatalf("Throughput(%v) = %v < Throughput(%v) = %v; want monotonic", sig, got, sig-1, prev)
		}
		prev = got
	}
	if Throughput(-50, b5) <= Throughput(-50, b24) {
		t.Errorf("5 GHz 80 MHz not faster than 2.4 GHz 20 MHz at -50 dBm")
	}
	loaded := b5
	loaded.Load = 0.5
	if got, want := Throughput(-50, loaded), Throughput(-50, b5)/2; got != want {
		t.Errorf("Throughput(load 0.5) = %v; want %v", got, want)
	}
}

func TestSteerToBetterNode(t *testing.T) {
	tr := site()
	p := NewPolicy(Config{})
	tr.Associated(t0, sta, a5, smart)
	// On A's 5 GHz at -72 dBm; B's 5 GHz heard at -50 dBm.
	acts := run(tr, p, t0, 30*time.Second, func(time.Time) map[string]float64 {
		return map[string]float64{a5: -72, b5: -50, a24: -64, b24: -45}
	})
	s := steers(acts)
	if len(s) == 0 {
		t.Fatalf("no steer; want one")
	}
	a := s[0]
	if a.Kind != ActSteer || a.From != a5 || a.Candidates[0].BSSID != b5 || a.Candidates[0].Pref != 255 || !a.DisassocImminent || a.Validity != 100 {
		t.Errorf("steer = %+v; want a BSS transition request from %s to %s first, disassociation imminent", a, a5, b5)
	}
	// Not before the settling time and the dwell (two wins in a row).
	if got := a.ID; got == 0 {
		t.Errorf("action without an ID")
	}
}

func TestBeaconRequests(t *testing.T) {
	tr := site()
	p := NewPolicy(Config{})
	tr.Associated(t0, sta, a5, smart)
	acts := run(tr, p, t0, 20*time.Second, func(time.Time) map[string]float64 { return map[string]float64{a5: -70} })
	n := 0
	for _, a := range acts {
		if a.Kind == ActBeaconRequest {
			n++
		}
	}
	// Interested (below -60 dBm): every 4 s.
	if n < 4 || n > 6 {
		t.Errorf("%d beacon requests in 20 s; want about 5 (every 4 s)", n)
	}
	// A client that refused one gets no more.
	tr.BeaconFailed(sta)
	acts = run(tr, p, t0.Add(20*time.Second), 20*time.Second, func(time.Time) map[string]float64 { return map[string]float64{a5: -70} })
	if len(acts) != 0 {
		t.Errorf("after a refused beacon request: %+v; want none", acts)
	}
}

// TestEqualNodesNoPingPong: a client between two equal nodes, with noisy measurements, is
// never steered.
func TestEqualNodesNoPingPong(t *testing.T) {
	tr := site()
	p := NewPolicy(Config{})
	tr.Associated(t0, sta, a5, smart)
	rng := rand.New(rand.NewPCG(1, 2))
	acts := run(tr, p, t0, 30*time.Minute, func(time.Time) map[string]float64 {
		return map[string]float64{a5: -62 + 2*rng.NormFloat64(), b5: -62 + 2*rng.NormFloat64(), a24: -55 + 2*rng.NormFloat64(), b24: -55 + 2*rng.NormFloat64()}
	})
	if s := steers(acts); len(s) != 0 {
		t.Errorf("steers between equal nodes: %d, first %+v; want none", len(s), s[0])
	}
}

// TestPingPongMargin: right after a steer from A to B, going back to A needs twice the gains.
func TestPingPongMargin(t *testing.T) {
	tr := site()
	p := NewPolicy(Config{})
	tr.Associated(t0, sta, a5, smart)
	now := t0
	for ; now.Before(t0.Add(time.Minute)); now = now.Add(time.Second) {
		tr.Signal(now, sta, a5, -72, Uplink)
		tr.Signal(now, sta, b5, -55, Report)
		steered := false
		for _, a := range p.Decide(now, tr) {
			tr.Steered(now, a)
			steered = steered || a.Kind == ActSteer
		}
		if steered {
			break
		}
	}
	tr.BTMResponse(now, sta, 0, b5)
	tr.Associated(now, sta, b5, smart)
	if r := tr.Client(sta).Roams; len(r) != 1 || !r[0].Steered || r[0].From != a5 || r[0].To != b5 {
		t.Fatalf("roams = %+v; want one steered roam a→b", r)
	}
	// B now at -70, A at -63: 7 dB better, would pass once but not twice the margin.
	acts := run(tr, p, now, 50*time.Second, func(time.Time) map[string]float64 { return map[string]float64{a5: -63, b5: -70} })
	if s := steers(acts); len(s) != 0 {
		t.Errorf("steered back within the ping-pong window: %+v", s)
	}
	// After the window, the ordinary margin applies again.
	acts = run(tr, p, now.Add(70*time.Second), 20*time.Second, func(time.Time) map[string]float64 { return map[string]float64{a5: -63, b5: -70} })
	if s := steers(acts); len(s) == 0 || s[0].Candidates[0].BSSID != a5 {
		t.Errorf("after the window: %+v; want a steer back to A", s)
	}
}

// TestRejectThenKick: a client rejecting every request is retried with backoff and, when
// kicking is configured, kicked with a block on every BSS but the target within 30 s.
func TestRejectThenKick(t *testing.T) {
	for _, kick := range []bool{false, true} {
		tr := site()
		p := NewPolicy(Config{Kick: kick})
		tr.Associated(t0, sta, a5, smart)
		var acts []Action
		for now := t0; now.Before(t0.Add(60 * time.Second)); now = now.Add(time.Second) {
			tr.Signal(now, sta, a5, -74, Uplink)
			tr.Signal(now, sta, b5, -50, Report)
			for _, a := range p.Decide(now, tr) {
				tr.Steered(now, a)
				acts = append(acts, a)
				if a.Kind == ActSteer {
					tr.BTMResponse(now.Add(200*time.Millisecond), sta, 7, "")
				}
			}
		}
		s := steers(acts)
		var first, kickAt time.Duration
		nSteer := 0
		for i, a := range s {
			switch a.Kind {
			case ActSteer:
				nSteer++
				if i == 0 {
					first = time.Duration(a.ID)
				}
			case ActKick:
				kickAt = time.Duration(a.ID)
				if len(a.Block) == 0 || a.Block[0] != a24 && a.Block[0] != a5 || a.BlockFor != 15*time.Second {
					t.Errorf("kick = %+v; want A's BSSes blocked for 15 s", a)
				}
				for _, b := range a.Block {
					if b == b5 {
						t.Errorf("kick blocks the target %s", b5)
					}
				}
			}
		}
		_ = first
		if nSteer < 2 {
			t.Errorf("kick=%v: %d BSS transition requests; want retries", kick, nSteer)
		}
		if kick != (kickAt != 0) {
			t.Errorf("kick=%v: kicked=%v", kick, kickAt != 0)
		}
	}
}

// TestKickTiming: with kicks on, the fallback comes within 30 s of the first request.
func TestKickTiming(t *testing.T) {
	tr := site()
	p := NewPolicy(Config{Kick: true})
	tr.Associated(t0, sta, a5, smart)
	var firstSteer, kick time.Time
	for now := t0; now.Before(t0.Add(2 * time.Minute)); now = now.Add(time.Second) {
		tr.Signal(now, sta, a5, -74, Uplink)
		tr.Signal(now, sta, b5, -50, Report)
		for _, a := range p.Decide(now, tr) {
			tr.Steered(now, a)
			switch a.Kind {
			case ActSteer:
				if firstSteer.IsZero() {
					firstSteer = now
				}
				// Ignored: no answer at all.
			case ActKick:
				if kick.IsZero() {
					kick = now
				}
			}
		}
	}
	if firstSteer.IsZero() || kick.IsZero() {
		t.Fatalf("first steer %v, kick %v; want both", firstSteer, kick)
	}
	if d := kick.Sub(firstSteer); d > 30*time.Second {
		t.Errorf("kick %v after the first request; want within 30 s", d)
	}
}

func TestLegacyClient(t *testing.T) {
	legacy := Caps{Bands: []Band{Band24, Band5}}
	for _, cfg := range []Config{{}, {Kick: true}, {Kick: true, KickLegacy: true}} {
		tr := site()
		p := NewPolicy(cfg)
		tr.Associated(t0, sta, a5, legacy)
		acts := run(tr, p, t0, 30*time.Second, func(time.Time) map[string]float64 { return map[string]float64{a5: -74, b5: -50} })
		wantKick := cfg.Kick && cfg.KickLegacy
		s := steers(acts)
		switch {
		case wantKick && (len(s) != 1 || s[0].Kind != ActKick):
			t.Errorf("%+v: actions %+v; want one kick", cfg, s)
		case !wantKick && len(s) != 0:
			t.Errorf("%+v: actions %+v; want none (no 802.11v, kicks of legacy clients off)", cfg, s)
		}
		for _, a := range acts {
			if a.Kind == ActBeaconRequest {
				t.Errorf("beacon request to a client without 802.11k")
			}
		}
	}
}

func TestBandSteering(t *testing.T) {
	tr := site()
	p := NewPolicy(Config{})
	tr.Associated(t0, sta, a24, smart)
	acts := run(tr, p, t0, 30*time.Second, func(time.Time) map[string]float64 {
		return map[string]float64{a24: -50, a5: -58, b24: -70, b5: -78}
	})
	s := steers(acts)
	if len(s) == 0 || s[0].Candidates[0].BSSID != a5 || s[0].Reason != "band" {
		t.Errorf("steers %+v; want band steering to %s", s, a5)
	}
	// A client only ever seen on 2.4 GHz is not offered 5 GHz BSSes: it learns of 5 GHz from
	// a probe request there.
	tr = site()
	tr.Associated(t0, sta, a24, Caps{BTM: true, Bands: []Band{Band24}})
	c := tr.Client(sta)
	if c.canUse(tr.BSSes[a5]) {
		t.Errorf("2.4 GHz-only client may use 5 GHz")
	}
	tr.Signal(t0, sta, a5, -60, Probe)
	if !c.canUse(tr.BSSes[a5]) {
		t.Errorf("client probing on 5 GHz may not use 5 GHz")
	}
}

func TestTrackerRoams(t *testing.T) {
	tr := site()
	tr.Associated(t0, sta, a5, smart)
	tr.Disassociated(t0.Add(time.Second), sta, a5)
	tr.Associated(t0.Add(2*time.Second), sta, b5, smart)
	c := tr.Client(sta)
	if c.BSS != b5 || len(c.Roams) != 1 || c.Roams[0].From != a5 || c.Roams[0].Steered {
		t.Errorf("client = %+v, roams %+v; want one unsteered roam a→b", c.BSS, c.Roams)
	}
	// Unknown BSSes are ignored; removed BSSes drop their samples.
	tr.Signal(t0, sta, "02:ff:ff:ff:ff:ff", -40, Report)
	if _, ok := c.Samples["02:ff:ff:ff:ff:ff"]; ok {
		t.Errorf("sample of an unknown BSS kept")
	}
	tr.Signal(t0, sta, a5, -60, Report)
	tr.SetBSSes([]BSS{{BSSID: b5, Node: "b", Band: Band5}})
	if _, ok := c.Samples[a5]; ok || c.BSS != b5 {
		t.Errorf("after SetBSSes: samples %v, BSS %s", c.Samples, c.BSS)
	}
}

func TestUsteerDefaultsNoRoaming(t *testing.T) {
	tr := site()
	u := NewUsteer("usteer", UsteerDefaults())
	tr.Associated(t0, sta, a5, smart)
	acts := run(tr, u, t0, 10*time.Minute, func(time.Time) map[string]float64 { return map[string]float64{a5: -80, b5: -45} })
	if len(acts) != 0 {
		t.Errorf("usteer defaults: %+v; want nothing (roaming triggers are off by default)", acts)
	}
}

// TestUsteerTunedStateMachine: no action for the first roam_trigger_interval (60 s) of the
// association; then a beacon request (SCAN), then a BSS transition request with
// disassociation imminent and a timer of about roam_kick_delay, then the kick.
func TestUsteerTunedStateMachine(t *testing.T) {
	tr := site()
	u := NewUsteer("usteer", UsteerTuned())
	tr.Associated(t0, sta, a5, smart)
	var got []Action
	var at []time.Duration
	measured := false
	for now := t0; now.Before(t0.Add(90 * time.Second)); now = now.Add(time.Second) {
		tr.Signal(now, sta, a5, -72, Uplink)
		if measured {
			tr.Signal(now, sta, b5, -50, Report) // the beacon report
		}
		for _, a := range u.Decide(now, tr) {
			measured = measured || a.Kind == ActBeaconRequest
			tr.Steered(now, a)
			got = append(got, a)
			at = append(at, now.Sub(t0))
		}
	}
	if len(got) < 3 {
		t.Fatalf("actions %+v; want a beacon request, a BSS transition request and a kick", got)
	}
	if got[0].Kind != ActBeaconRequest || at[0] < 60*time.Second {
		t.Errorf("first action %v at %v; want a beacon request after 60 s", got[0].Kind, at[0])
	}
	if got[1].Kind != ActSteer || got[1].Candidates[0].BSSID != b5 || !got[1].DisassocImminent || got[1].DisassocTimer < 90 || got[1].DisassocTimer > 98 {
		t.Errorf("second action %+v; want a BSS transition request to B with imminent and a ~97 TBTT timer", got[1])
	}
	if got[2].Kind != ActKick || at[2]-at[1] < 9*time.Second || at[2]-at[1] > 11*time.Second {
		t.Errorf("third action %v at +%v; want a kick 10 s (roam_kick_delay) after the request", got[2].Kind, at[2]-at[1])
	}
}

// TestConfirmBeforeSteer: an 802.11k client is steered only on a beacon report of the target
// taken after the target started winning; a client that does not answer is steered on what
// there is rather than never.
func TestConfirmBeforeSteer(t *testing.T) {
	for _, tc := range []struct {
		name string
		// later is the target's signal in the reports after the first (NaN: no answer).
		later     float64
		wantSteer bool
	}{
		{"target still strong", -50, true},
		{"client walked away from the target", -85, false},
		{"client does not answer", math.NaN(), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := site()
			// One measurement round at the start, then only the ones the policy asks for to
			// confirm; samples stay usable for 20 s.
			p := NewPolicy(Config{BeaconEvery: time.Hour, IdleBeaconEvery: time.Hour, MaxAge: 20 * time.Second, Settle: 12 * time.Second})
			tr.Associated(t0, sta, a5, smart)
			reports, confirms := 0, 0
			var reportAt time.Time
			var steer *Action
			for now := t0; now.Before(t0.Add(40*time.Second)) && steer == nil; now = now.Add(time.Second) {
				tr.Signal(now, sta, a5, -74, Uplink)
				if !reportAt.IsZero() && !now.Before(reportAt) {
					reportAt = time.Time{}
					sig := -50.0
					if reports > 0 {
						sig = tc.later
					}
					reports++
					if !math.IsNaN(sig) {
						tr.Signal(now, sta, b5, sig, Report)
						tr.Signal(now, sta, a24, -70, Report)
						tr.Signal(now, sta, b24, -70, Report)
					}
				}
				for _, a := range p.Decide(now, tr) {
					tr.Steered(now, a)
					switch a.Kind {
					case ActBeaconRequest:
						reportAt = now.Add(time.Second)
						if a.Reason == "confirm" {
							confirms++
						}
					default:
						steer = &a
					}
				}
			}
			if confirms == 0 {
				t.Errorf("no confirming beacon request; want one before steering on an 11 s old report")
			}
			if got := steer != nil; got != tc.wantSteer {
				t.Errorf("steered = %v (%+v); want %v", got, steer, tc.wantSteer)
			}
			if steer != nil && (steer.Kind != ActSteer || steer.Candidates[0].BSSID != b5) {
				t.Errorf("action = %+v; want a BSS transition request to %s", *steer, b5)
			}
		})
	}
}

// TestNoSteerBackAfterOwnLeave: a client that left a BSS by itself is not steered back there
// within the ping-pong window, however good it looks (its own roaming logic made the choice),
// unless it is about to lose its link; afterwards it is.
func TestNoSteerBackAfterOwnLeave(t *testing.T) {
	for _, tc := range []struct {
		name    string
		serving float64 // b5's signal after the roam
		want    bool    // steered back within the window
	}{
		{"ordinary", -76, false},
		{"about to lose the link", -84, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := site()
			p := NewPolicy(Config{})
			tr.Associated(t0, sta, a5, smart)
			tr.Signal(t0, sta, a5, -75, Uplink)
			tr.Associated(t0.Add(time.Second), sta, b5, smart) // its own roam
			acts := run(tr, p, t0.Add(time.Second), 50*time.Second, func(time.Time) map[string]float64 {
				return map[string]float64{a5: -45, b5: tc.serving}
			})
			s := steers(acts)
			if got := len(s) > 0; got != tc.want {
				t.Fatalf("steers within a minute of the client leaving %s by itself: %+v; want any: %v", a5, s, tc.want)
			}
			if tc.want {
				return
			}
			acts = run(tr, p, t0.Add(70*time.Second), 20*time.Second, func(time.Time) map[string]float64 {
				return map[string]float64{a5: -45, b5: tc.serving}
			})
			if s := steers(acts); len(s) == 0 || s[0].Candidates[0].BSSID != a5 {
				t.Errorf("after the window: %+v; want a steer to %s", s, a5)
			}
		})
	}
}

// TestWeakerFasterTarget: a faster BSS heard weaker than the serving one (5 GHz against
// 2.4 GHz) is a target only when heard at WeakerTargetSignal or better: below it clients
// wander back to the stronger BSS by themselves.
func TestWeakerFasterTarget(t *testing.T) {
	for _, tc := range []struct {
		a5   float64
		want bool
	}{
		{-64, false},
		{-60, true},
	} {
		tr := site()
		p := NewPolicy(Config{})
		tr.Associated(t0, sta, a24, smart)
		acts := run(tr, p, t0, 30*time.Second, func(time.Time) map[string]float64 {
			return map[string]float64{a24: -50, a5: tc.a5, b24: -75, b5: -85}
		})
		s := steers(acts)
		if got := len(s) > 0 && s[0].Candidates[0].BSSID == a5; got != tc.want {
			t.Errorf("5 GHz at %v dBm, 2.4 GHz at -50 dBm: steers %+v; want a steer to 5 GHz: %v", tc.a5, s, tc.want)
		}
	}
}

// TestRetryHysteresis: after a client refused a request, the retry to the same target needs
// only half the margins (the decision stands while the target stays clearly better), and the
// report that confirms it is fetched before the backoff ends, so that the retry comes when the
// backoff ends; a fresh decision needs the full margins.
func TestRetryHysteresis(t *testing.T) {
	tr := site()
	p := NewPolicy(Config{})
	tr.Associated(t0, sta, a5, smart)
	var first, rejected, retry, confirm time.Time
	for now := t0; now.Before(t0.Add(40*time.Second)) && retry.IsZero(); now = now.Add(time.Second) {
		// 16 dB better until the first request, then 4 dB (25% more throughput): below the
		// full margins (6 dB, 30%), above half of them.
		b := -50.0
		if !first.IsZero() {
			b = -62
		}
		tr.Signal(now, sta, a5, -66, Uplink)
		tr.Signal(now, sta, b5, b, Report)
		for _, a := range p.Decide(now, tr) {
			tr.Steered(now, a)
			switch {
			case a.Kind == ActBeaconRequest && a.Reason == "confirm" && !rejected.IsZero():
				confirm = now
			case a.Kind == ActSteer && first.IsZero():
				first, rejected = now, now.Add(200*time.Millisecond)
				tr.BTMResponse(rejected, sta, 7, "")
			case a.Kind == ActSteer:
				retry = now
				if a.Candidates[0].BSSID != b5 {
					t.Errorf("retry = %+v; want to %s", a, b5)
				}
				if s := tr.Client(sta).Samples[b5].Smoothed(); s-(-66) >= 6 {
					t.Errorf("retry with the target %.1f dB better; want the test to use less than the full 6 dB", s+66)
				}
			}
		}
	}
	if first.IsZero() || retry.IsZero() {
		t.Fatalf("first request at %v, retry at %v; want both", first, retry)
	}
	backoffEnd := rejected.Add(p.Config().RejectBackoff)
	if confirm.IsZero() || !confirm.Before(backoffEnd) {
		t.Errorf("confirming report requested at %v; want before the backoff ends at %v", confirm, backoffEnd)
	}
	if d := retry.Sub(backoffEnd); d < 0 || d > time.Second {
		t.Errorf("retry %v after the backoff ended; want within a tick", d)
	}

	// The same 4 dB without a refused request: no steer.
	tr = site()
	tr.Associated(t0, sta, a5, smart)
	acts := run(tr, NewPolicy(Config{}), t0, 30*time.Second, func(time.Time) map[string]float64 { return map[string]float64{a5: -66, b5: -62} })
	if s := steers(acts); len(s) != 0 {
		t.Errorf("steers %+v for a 4 dB better BSS; want none", s)
	}
}
