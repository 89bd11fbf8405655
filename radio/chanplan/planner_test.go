package chanplan

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var t0 = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

func mk(t testing.TB, freq, width int) Spec {
	t.Helper()
	s, err := NewSpec(freq, width, 1)
	if err != nil {
		t.Fatalf("NewSpec(%d, %d) = %v", freq, width, err)
	}
	return s
}

// states24 allows channels 1-11; states5 allows 36-64 (52-64 DFS usable) and 149-161.
func states24() map[int]ChannelState {
	m := map[int]ChannelState{}
	for f := 2412; f <= 2462; f += 5 {
		m[f] = ChannelState{Freq: f}
	}
	return m
}

func states5() map[int]ChannelState {
	m := map[int]ChannelState{}
	for _, f := range []int{5180, 5200, 5220, 5240, 5745, 5765, 5785, 5805} {
		m[f] = ChannelState{Freq: f}
	}
	for _, f := range []int{5260, 5280, 5300, 5320} {
		m[f] = ChannelState{Freq: f, Radar: true, NoIR: true, DFS: DFSUsable}
	}
	return m
}

func TestOverlap(t *testing.T) {
	for _, tc := range []struct {
		s, t Spec
		want float64
	}{
		{mk(t, 2437, 20), mk(t, 2437, 20), 1},
		{mk(t, 2437, 20), mk(t, 2442, 20), 0.7272},
		{mk(t, 2412, 20), mk(t, 2462, 20), 0},
		{mk(t, 2437, 20), mk(t, 2462, 20), 0.0008},
		{mk(t, 2412, 20), mk(t, 2432, 20), 0.0054},
		{mk(t, 5180, 20), mk(t, 5180, 20), 1},
		{mk(t, 5180, 20), mk(t, 5200, 20), 0.01},
		// 80 MHz radio, foreign 20 MHz on a secondary: primary leak 0.001 (40 MHz away)... the
		// primary 5180 sees 5220 at 40 MHz: 0.001; subchannels: 5180 .001, 5200 .01, 5220 1,
		// 5240 .01 → mean .25525; total .5*.001 + .5*.25525.
		{mk(t, 5180, 80), mk(t, 5220, 20), 0.5*0.001 + 0.5*(0.001+0.01+1+0.01)/4},
		// Foreign 20 on our primary: .5*1 + .5*(1+.01+.001+0)/4.
		{mk(t, 5180, 80), mk(t, 5180, 20), 0.5 + 0.5*(1+0.01+0.001)/4},
		// 20 MHz radio inside a foreign 80: fully overlapped.
		{mk(t, 5220, 20), mk(t, 5180, 80), 1},
		{mk(t, 5180, 20), mk(t, 2412, 20), 0},
	} {
		if got := Overlap(tc.s, tc.t); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("Overlap(%v, %v) = %.6f; want %.6f", tc.s, tc.t, got, tc.want)
		}
	}
}

func TestCoupling(t *testing.T) {
	var p Params
	for _, tc := range []struct{ s, want float64 }{{-50, 1}, {-82, 1}, {-92, 0.1}, {-102, 0.01}} {
		if got := p.Coupling(tc.s); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("Coupling(%v) = %v; want %v", tc.s, got, tc.want)
		}
	}
}

func TestEvaluateHandComputed(t *testing.T) {
	in := Input{Now: t0, Radios: []Radio{
		{ID: "a", Band: Band5G, MaxWidth: 40, Channels: states5(), Load: 0.2, Weight: 2,
			Neighbors: []Neighbor{{BSSID: "x", Spec: mk(t, 5180, 20), SignalDBm: -60, Load: 0.5}}},
		{ID: "b", Band: Band5G, MaxWidth: 20, Channels: states5(), Load: 0.01},
	}, Links: []Link{{A: "a", B: "b", SignalDBm: -92}}}
	a := Assignment{"a": mk(t, 5180, 20), "b": mk(t, 5180, 20)}
	c, err := Evaluate(in, a)
	if err != nil {
		t.Fatalf("Evaluate() = %v", err)
	}
	// a: neighbour 1·0.5·1 = 0.5; b at −92 dBm: coupling 0.1 × b's load (floored to 0.05) × 1 =
	// 0.005; width penalty 1·(1−20/40) = 0.5 → 1.005, weight 2 → 2.01.
	// b: a's 0.1 × 0.2 × 1 = 0.02; weight 1. Total 2.03.
	want := map[string]float64{"a": 1.005, "b": 0.02}
	if diff := cmp.Diff(want, c.Radio, cmp.Comparer(func(x, y float64) bool { return math.Abs(x-y) < 1e-12 })); diff != "" {
		t.Errorf("Evaluate().Radio mismatch (-want +got):\n%s", diff)
	}
	if math.Abs(c.Total-2.03) > 1e-12 {
		t.Errorf("Evaluate().Total = %v; want 2.03", c.Total)
	}
	if w, v := c.Worst(); w != "a" || math.Abs(v-0.505) > 1e-12 {
		t.Errorf("Worst() = %s, %v; want a, 0.505", w, v)
	}
	if _, err := Evaluate(in, Assignment{"a": mk(t, 5180, 20)}); err == nil {
		t.Errorf("Evaluate(missing b) = nil error")
	}
}

func TestSolveSeparatesAndAvoids(t *testing.T) {
	// Three of our 2.4 GHz radios hearing each other loudly, a foreign AP on 6: the optimum is
	// 1/6/11 minus the foreign channel's pain, i.e. ours on 1, 11 and the third one where it
	// hurts least.
	in := Input{Now: t0}
	for _, id := range []string{"n1/2g", "n2/2g", "n3/2g"} {
		in.Radios = append(in.Radios, Radio{ID: id, Band: Band2G4, MaxWidth: 20, Channels: states24(), Load: 0.3,
			Neighbors: []Neighbor{{BSSID: "f", Spec: mk(t, 2437, 20), SignalDBm: -55, Load: 0.6}}})
	}
	in.Links = []Link{{A: "n1/2g", B: "n2/2g", SignalDBm: -50}, {A: "n2/2g", B: "n3/2g", SignalDBm: -50}, {A: "n1/2g", B: "n3/2g", SignalDBm: -50}}
	p, err := Solve(in, Constraints{}, Options{})
	if err != nil {
		t.Fatalf("Solve() = %v", err)
	}
	opt, ok, err := Optimum(in, Constraints{}, 10_000_000)
	if err != nil || !ok {
		t.Fatalf("Optimum() = %v, %v", ok, err)
	}
	if !p.Exact || math.Abs(p.Cost.Total-opt.Cost.Total) > 1e-9 {
		t.Errorf("Solve() cost %v (exact %v); Optimum() %v", p.Cost.Total, p.Exact, opt.Cost.Total)
	}
	used := map[int]bool{}
	for _, s := range p.Assign {
		used[s.Channel()] = true
	}
	if len(used) != 3 {
		t.Errorf("Solve() = %v; want three different channels", p.Assign)
	}
	if used[6] {
		t.Errorf("Solve() = %v; want none on the busy channel 6", p.Assign)
	}
}

func TestSolveRespectsConstraints(t *testing.T) {
	st := states5()
	no80 := st[5745]
	no80.No80 = true
	st[5745] = no80
	dis := st[5200]
	dis.Disabled = true
	st[5200] = dis
	in := Input{Now: t0, Radios: []Radio{
		{ID: "nodfs", Band: Band5G, MaxWidth: 80, Channels: st, Load: 0.3},
		{ID: "dfs", Band: Band5G, MaxWidth: 40, DFS: true, Channels: st, Load: 0.3},
		{ID: "narrow", Band: Band5G, MaxWidth: 20, Channels: st, Load: 0.3},
	}}
	// Make every non-DFS channel busy so that DFS channels look attractive.
	for i := range in.Radios {
		for _, f := range []int{5180, 5220, 5240, 5745, 5765, 5785, 5805} {
			in.Radios[i].Neighbors = append(in.Radios[i].Neighbors, Neighbor{Spec: mk(t, f, 20), SignalDBm: -50, Load: 0.9})
		}
	}
	in.Links = []Link{{A: "nodfs", B: "dfs", SignalDBm: -40}, {A: "dfs", B: "narrow", SignalDBm: -40}, {A: "nodfs", B: "narrow", SignalDBm: -40}}
	in.Params.CACPenalty = 0.01 // make the CAC nearly free so that DFS channels attract
	p, err := Solve(in, Constraints{}, Options{})
	if err != nil {
		t.Fatalf("Solve() = %v", err)
	}
	for _, r := range in.Radios {
		s := p.Assign[r.ID]
		if s.Width > r.MaxWidth {
			t.Errorf("%s: %v wider than %d", r.ID, s, r.MaxWidth)
		}
		if u, err := Allowed(s, st, t0); u == Unusable {
			t.Errorf("%s: %v not allowed: %v", r.ID, s, err)
		}
		if !r.DFS && IsDFS(s, st) {
			t.Errorf("%s: %v is DFS but the radio is not DFS-capable", r.ID, s)
		}
	}
	if !IsDFS(p.Assign["dfs"], st) {
		t.Errorf("dfs radio got %v; want a DFS channel (the rest is busy, the CAC nearly free)", p.Assign["dfs"])
	}
	// No channel at all.
	bad := Input{Now: t0, Radios: []Radio{{ID: "x", Band: Band5G, MaxWidth: 20, Channels: map[int]ChannelState{5260: {Freq: 5260, Radar: true, DFS: DFSUsable}}}}}
	if _, err := Solve(bad, Constraints{}, Options{}); !errors.Is(err, ErrNoChannel) {
		t.Errorf("Solve(only DFS, radio not DFS) = %v; want ErrNoChannel", err)
	}
}

func TestSolveRadarForcesImmediateChannel(t *testing.T) {
	st := states5()
	for _, f := range []int{5260, 5280, 5300, 5320} {
		s := st[f]
		s.DFS = DFSAvailable // cleared by CAC: the radio runs on 52/80
		st[f] = s
	}
	radar := st[5260]
	radar.DFS, radar.NOPUntil = DFSUnavailable, t0.Add(NOP)
	st[5260] = radar
	in := Input{Now: t0, Radios: []Radio{{ID: "r", Band: Band5G, MaxWidth: 80, DFS: true, Channels: st, Load: 0.5,
		Current: mk(t, 5260, 80),
		// The quietest channels would be the other DFS ones, needing a CAC: not on radar.
		Neighbors: []Neighbor{{Spec: mk(t, 5180, 80), SignalDBm: -60, Load: 0.3}}}}}
	p, err := Solve(in, Constraints{}, Options{})
	if err != nil {
		t.Fatalf("Solve() = %v", err)
	}
	got := p.Assign["r"]
	if u, _ := Allowed(got, st, t0); u != Immediate {
		t.Errorf("after radar: %v (usability %v); want a channel usable at once", got, u)
	}
	for _, s := range got.Subchannels() {
		if s == 5260 {
			t.Errorf("after radar: %v covers the radar channel", got)
		}
	}
	if len(p.Forced) != 1 || p.Forced[0] != "r" {
		t.Errorf("Forced = %v; want [r]", p.Forced)
	}
}

func TestSolveDeterministic(t *testing.T) {
	in := Input{Now: t0}
	for i, id := range []string{"e", "b", "d", "a", "c"} {
		in.Radios = append(in.Radios, Radio{ID: id, Band: Band5G, MaxWidth: 80, Channels: states5(), DFS: i%2 == 0, Load: 0.1 * float64(i+1)})
	}
	for i := range in.Radios {
		for j := i + 1; j < len(in.Radios); j++ {
			in.Links = append(in.Links, Link{A: in.Radios[i].ID, B: in.Radios[j].ID, SignalDBm: -55 - 5*float64(j-i)})
		}
	}
	first, err := Solve(in, Constraints{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	rev := in
	rev.Radios = nil
	for i := len(in.Radios) - 1; i >= 0; i-- {
		rev.Radios = append(rev.Radios, in.Radios[i])
	}
	for i := 0; i < 5; i++ {
		for _, x := range []Input{in, rev} {
			p, err := Solve(x, Constraints{}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(first.Assign, p.Assign); diff != "" {
				t.Fatalf("Solve() run %d not deterministic (-first +now):\n%s", i, diff)
			}
		}
	}
}

func TestSolveGroupsShareChannel(t *testing.T) {
	in := Input{Now: t0, Radios: []Radio{
		{ID: "a", Band: Band5G, MaxWidth: 80, Channels: states5(), Load: 0.3, Group: "bh",
			Neighbors: []Neighbor{{Spec: mk(t, 5180, 80), SignalDBm: -50, Load: 0.8}}},
		{ID: "b", Band: Band5G, MaxWidth: 80, Channels: states5(), Load: 0.3, Group: "bh",
			Neighbors: []Neighbor{{Spec: mk(t, 5745, 80), SignalDBm: -50, Load: 0.8}}},
		{ID: "c", Band: Band5G, MaxWidth: 80, Channels: states5(), Load: 0.3},
	}, Links: []Link{{A: "a", B: "c", SignalDBm: -50}, {A: "b", B: "c", SignalDBm: -50}}}
	p, err := Solve(in, Constraints{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Assign["a"] != p.Assign["b"] {
		t.Errorf("group a, b got %v and %v; want one channel", p.Assign["a"], p.Assign["b"])
	}
}

func TestPolicyHysteresis(t *testing.T) {
	// A 5 GHz radio with two channels, 36 and 149 (no partial overlap to muddy the numbers).
	two := map[int]ChannelState{5180: {Freq: 5180}, 5745: {Freq: 5745}}
	mkIn := func(cur Spec, foreignLoad float64) Input {
		return Input{Now: t0, Radios: []Radio{{ID: "r", Band: Band5G, MaxWidth: 20, Channels: two, Load: 0.3, Current: cur,
			Neighbors: []Neighbor{
				{BSSID: "x", Spec: mk(t, 5180, 20), SignalDBm: -50, Load: foreignLoad},
				{BSSID: "y", Spec: mk(t, 5745, 20), SignalDBm: -50, Load: 0.5},
			}}}}
	}
	var p Policy
	// On 36 with a neighbour at 0.55 load; 149 has 0.5: gain 9%, 0.4 dB → keep.
	d, err := p.Decide(mkIn(mk(t, 5180, 20), 0.55), History{})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Changes) != 0 {
		t.Errorf("Decide(small gain) changes %v; want none (%s)", d.Changes, d.Reason)
	}
	// Neighbour on 36 at 1.0 vs 0.5 on 149: gain 50% → move.
	d, err = p.Decide(mkIn(mk(t, 5180, 20), 1.0), History{})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Changes) != 1 || d.Changes[0].Forced || d.Gain < 0.3 && d.RadioGainDB < 5 {
		t.Errorf("Decide(big gain) = %+v; want one unforced change with gain ≥30%% or ≥5 dB", d)
	}
	// Same, but the radio changed 3 hours ago: no move.
	h := History{LastChange: map[string]time.Time{"r": t0.Add(-3 * time.Hour)}}
	if d, _ := p.Decide(mkIn(mk(t, 5180, 20), 1.0), h); len(d.Changes) != 0 {
		t.Errorf("Decide(changed 3h ago) = %v; want no change", d.Changes)
	}
	// Busy hour: no unforced change either.
	busy := Policy{Busy: func(time.Time) bool { return true }}
	if d, _ := busy.Decide(mkIn(mk(t, 5180, 20), 1.0), History{}); len(d.Changes) != 0 {
		t.Errorf("Decide(busy hour) = %v; want no change", d.Changes)
	}
	// A radio without a channel gets one, even in the busy hour (forced).
	d, err = busy.Decide(mkIn(Spec{}, 1.0), History{})
	if err != nil || len(d.Changes) != 1 || !d.Changes[0].Forced {
		t.Errorf("Decide(new radio, busy hour) = %+v, %v; want one forced change", d.Changes, err)
	}
}

func TestPolicyPrunesNeedlessChanges(t *testing.T) {
	// Two independent radios: one badly placed, one fine. Only the bad one should move.
	in := Input{Now: t0, Radios: []Radio{
		{ID: "bad", Band: Band2G4, MaxWidth: 20, Channels: states24(), Load: 0.3, Current: mk(t, 2412, 20),
			Neighbors: []Neighbor{{Spec: mk(t, 2412, 20), SignalDBm: -40, Load: 0.9}}},
		{ID: "fine", Band: Band2G4, MaxWidth: 20, Channels: states24(), Load: 0.3, Current: mk(t, 2442, 20),
			Neighbors: []Neighbor{{Spec: mk(t, 2462, 20), SignalDBm: -70, Load: 0.05}}},
	}}
	d, err := Policy{}.Decide(in, History{})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Changes) != 1 || d.Changes[0].Radio != "bad" {
		t.Errorf("Decide() changes = %+v; want only bad (%s)", d.Changes, d.Reason)
	}
}

func TestSmootherAndLoadProfile(t *testing.T) {
	s := NewSmoother()
	r := Radio{ID: "r", Band: Band5G, MaxWidth: 80, Channels: states5()}
	for i := 0; i < 20; i++ {
		x := r
		x.Load = 0.2 + 0.2*float64(i%2) // alternates 0.2 / 0.4
		x.Neighbors = []Neighbor{{BSSID: "n", Spec: mk(t, 5180, 80), SignalDBm: -60 + 10*float64(i%2), Load: 0.5}}
		x.Survey = []SurveyPoint{{Freq: 5180, Busy: 0.3 + 0.2*float64(i%2)}}
		s.Observe(x, t0.Add(time.Duration(i)*15*time.Minute))
		s.ObserveLink(Link{A: "r", B: "q", SignalDBm: -70}, t0.Add(time.Duration(i)*15*time.Minute))
	}
	in := s.Input(t0.Add(5 * time.Hour))
	got := in.Radios[0]
	if got.Load < 0.25 || got.Load > 0.35 || math.Abs(got.Neighbors[0].SignalDBm+55) > 3 || math.Abs(got.Survey[0].Busy-0.4) > 0.06 {
		t.Errorf("smoothed = load %v, signal %v, busy %v; want ≈0.3, ≈−55, ≈0.4", got.Load, got.Neighbors[0].SignalDBm, got.Survey[0].Busy)
	}
	if len(in.Links) != 1 {
		t.Errorf("links = %v", in.Links)
	}
	// Forgotten after 6 h of silence.
	if in := s.Input(t0.Add(20 * time.Hour)); len(in.Radios[0].Neighbors) != 0 || len(in.Links) != 0 {
		t.Errorf("after 15 h silence: %d neighbours, %d links; want 0", len(in.Radios[0].Neighbors), len(in.Links))
	}

	var lp LoadProfile
	for d := 0; d < 4; d++ {
		for h := 0; h < 24; h++ {
			load := 0.1
			if h == 20 {
				load = 1
			}
			lp.Observe(time.Date(2026, 3, 1+d, h, 30, 0, 0, time.UTC), load)
		}
	}
	if !lp.Busy(time.Date(2026, 3, 9, 20, 10, 0, 0, time.UTC)) || lp.Busy(time.Date(2026, 3, 9, 3, 0, 0, 0, time.UTC)) {
		t.Errorf("LoadProfile busy at 20h = %v, at 3h = %v; want true, false",
			lp.Busy(time.Date(2026, 3, 9, 20, 10, 0, 0, time.UTC)), lp.Busy(time.Date(2026, 3, 9, 3, 0, 0, 0, time.UTC)))
	}
	var fresh LoadProfile
	fresh.Observe(t0, 1)
	if fresh.Busy(t0) {
		t.Errorf("LoadProfile with one sample is busy; want not learned yet")
	}
}
