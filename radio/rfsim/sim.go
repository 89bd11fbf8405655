package rfsim

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"time"

	"meshroot/radio/chanplan"
)

// SimConfig drives a simulated stretch of the site's life: measurements every Step, a planning
// round every PlanEvery, radar events, and the policy deciding.
type SimConfig struct {
	Start     time.Time
	Duration  time.Duration // default 7 days
	Step      time.Duration // measurement period, default 15 min
	PlanEvery time.Duration // default 1 h
	Policy    chanplan.Policy
	// LearnBusyHour makes the policy avoid the busy hour learned from our radios' load (when
	// Policy.Busy is nil).
	LearnBusyHour bool
	Radar         []RadarEvent
	// Changes re-tune foreign APs during the run (a neighbour moving onto our channel).
	Changes []ForeignChange
	Seed    uint64
}

// ForeignChange sets a foreign AP radio's channel and peak load at a time.
type ForeignChange struct {
	At       time.Time
	ID       string
	Spec     chanplan.Spec
	PeakLoad float64
}

// RadarEvent is a radar detection on a radio's current primary channel.
type RadarEvent struct {
	At    time.Time
	Radio string
}

// Move is one applied channel change.
type Move struct {
	At       time.Time
	Radio    string
	From, To chanplan.Spec
	Forced   bool
	// CAC is true when the target needed a channel availability check (a planned outage).
	CAC bool
}

// SimResult summarises a run.
type SimResult struct {
	Moves []Move
	// Unforced and Forced count moves per radio (the initial assignment is not counted).
	Unforced, Forced map[string]int
	// MaxPerDay is the most unforced moves of one radio within any 24 h.
	MaxPerDay int
	// Flaps counts unforced returns to the previous channel within 48 h (A → B → A, both
	// moves unforced); RadarReturns the unforced returns within 48 h to a channel a radar move
	// left.
	Flaps        int
	RadarReturns int
	// Violations lists broken invariants: a radio on a channel in its radar non-occupancy
	// period, or a forced move onto a channel that needed a CAC.
	Violations []string
	// MeanCost is the true cost averaged over the measurement steps; Plans the planning rounds.
	MeanCost float64
	Plans    int
}

// Simulate runs the site: the first plan at Start (every radio forced onto a channel), then
// smoothed measurements and policy decisions; radar forces immediate moves.
func (e *Env) Simulate(cfg SimConfig) (SimResult, error) {
	if cfg.Duration == 0 {
		cfg.Duration = 7 * 24 * time.Hour
	}
	if cfg.Step == 0 {
		cfg.Step = 15 * time.Minute
	}
	if cfg.PlanEvery == 0 {
		cfg.PlanEvery = time.Hour
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x73696d))
	res := SimResult{Unforced: map[string]int{}, Forced: map[string]int{}}
	sm := chanplan.NewSmoother()
	var profile chanplan.LoadProfile
	policy := cfg.Policy
	if policy.Busy == nil && cfg.LearnBusyHour {
		policy.Busy = profile.Busy
	}
	var hist chanplan.History
	assign := chanplan.Assignment{}
	cleared := map[string]map[int]bool{}
	history := map[string][]Move{}
	changes := append([]ForeignChange(nil), cfg.Changes...)
	sort.Slice(changes, func(i, j int) bool { return changes[i].At.Before(changes[j].At) })
	radar := append([]RadarEvent(nil), cfg.Radar...)
	sort.Slice(radar, func(i, j int) bool { return radar[i].At.Before(radar[j].At) })

	apply := func(t time.Time, d chanplan.Decision, initial bool) {
		for _, c := range d.Changes {
			st := e.channels(e.radio(c.Radio), t)
			for f := range cleared[c.Radio] {
				if s, ok := st[f]; ok && s.DFS == chanplan.DFSUsable {
					s.DFS = chanplan.DFSAvailable
					st[f] = s
				}
			}
			u, _ := chanplan.Allowed(c.To, st, t)
			if u == chanplan.Unusable {
				res.Violations = append(res.Violations, fmt.Sprintf("%s %s: moved to unusable %v", t.Format(time.RFC3339), c.Radio, c.To))
			}
			if c.Forced && !initial && u == chanplan.NeedsCAC {
				res.Violations = append(res.Violations, fmt.Sprintf("%s %s: forced move to %v needs a CAC", t.Format(time.RFC3339), c.Radio, c.To))
			}
			m := Move{At: t, Radio: c.Radio, From: c.From, To: c.To, Forced: c.Forced, CAC: u == chanplan.NeedsCAC}
			assign[c.Radio] = c.To
			sm.SetCurrent(c.Radio, c.To)
			if cleared[c.Radio] == nil {
				cleared[c.Radio] = map[int]bool{}
			}
			for _, f := range c.To.Subchannels() {
				cleared[c.Radio][f] = true
			}
			if initial {
				continue
			}
			res.Moves = append(res.Moves, m)
			if c.Forced {
				res.Forced[c.Radio]++
			} else {
				res.Unforced[c.Radio]++
			}
			h := history[c.Radio]
			if len(h) > 0 && !c.Forced && h[len(h)-1].From == c.To && t.Sub(h[len(h)-1].At) < 48*time.Hour {
				if h[len(h)-1].Forced {
					res.RadarReturns++
				} else {
					res.Flaps++
				}
			}
			history[c.Radio] = append(h, m)
		}
		if !initial {
			hist.Record(d, t)
		}
	}
	input := func(t time.Time) chanplan.Input {
		in := sm.Input(t)
		for i := range in.Radios {
			st := e.channels(e.radio(in.Radios[i].ID), t)
			for f := range cleared[in.Radios[i].ID] {
				if s, ok := st[f]; ok && s.DFS == chanplan.DFSUsable {
					s.DFS = chanplan.DFSAvailable
					st[f] = s
				}
			}
			in.Radios[i].Channels = st
			in.Radios[i].Current = assign[in.Radios[i].ID]
		}
		return in
	}

	// First plan from a start-up measurement.
	first := e.Startup(cfg.Start, rng)
	for _, r := range first.Radios {
		sm.Observe(r, cfg.Start)
	}
	for _, l := range first.Links {
		sm.ObserveLink(l, cfg.Start)
	}
	d, err := policy.Decide(first, hist)
	if err != nil {
		return res, err
	}
	apply(cfg.Start, d, true)

	end := cfg.Start.Add(cfg.Duration)
	nextPlan := cfg.Start.Add(cfg.PlanEvery)
	steps, costSum := 0, 0.0
	for t := cfg.Start.Add(cfg.Step); !t.After(end); t = t.Add(cfg.Step) {
		for len(changes) > 0 && !changes[0].At.After(t) {
			ch := changes[0]
			changes = changes[1:]
			for i := range e.Foreign {
				if e.Foreign[i].ID == ch.ID {
					e.Foreign[i].Spec, e.Foreign[i].PeakLoad = ch.Spec, ch.PeakLoad
				}
			}
		}
		for len(radar) > 0 && !radar[0].At.After(t) {
			ev := radar[0]
			radar = radar[1:]
			cur, ok := assign[ev.Radio]
			if !ok {
				continue
			}
			e.Radar(ev.Radio, cur, ev.At)
			for _, f := range cur.Subchannels() {
				delete(cleared[ev.Radio], f) // radar voids the CAC
			}
			in := input(t)
			in.Force = []string{ev.Radio}
			d, err := policy.Decide(in, hist)
			if err != nil {
				return res, fmt.Errorf("radar at %s: %w", t, err)
			}
			apply(t, d, false)
		}
		m := e.Measure(t, assign, rng)
		total := 0.0
		for _, r := range m.Radios {
			sm.Observe(r, t)
			total += r.Load
		}
		for _, l := range m.Links {
			sm.ObserveLink(l, t)
		}
		profile.Observe(t, total)
		for id, s := range assign {
			for _, f := range s.Subchannels() {
				if until, ok := e.radar[id][f]; ok && t.Before(until) {
					res.Violations = append(res.Violations, fmt.Sprintf("%s %s: on %v during the NOP of %d MHz", t.Format(time.RFC3339), id, s, f))
				}
			}
		}
		if !t.Before(nextPlan) {
			nextPlan = nextPlan.Add(cfg.PlanEvery)
			res.Plans++
			d, err := policy.Decide(input(t), hist)
			if err != nil {
				return res, fmt.Errorf("plan at %s: %w", t, err)
			}
			apply(t, d, false)
		}
		c, err := e.Score(t, assign)
		if err != nil {
			return res, err
		}
		costSum += c.Total
		steps++
	}
	if steps > 0 {
		res.MeanCost = costSum / float64(steps)
	}
	for id, h := range history {
		for i, m := range h {
			if m.Forced {
				continue
			}
			n := 0
			for _, x := range h[i:] {
				if !x.Forced && x.At.Sub(m.At) < 24*time.Hour {
					n++
				}
			}
			if n > res.MaxPerDay {
				res.MaxPerDay = n
			}
		}
		_ = id
	}
	return res, nil
}

func (e *Env) radio(id string) chanplan.Radio {
	for _, r := range e.Radios {
		if r.ID == id {
			return r
		}
	}
	return chanplan.Radio{ID: id}
}
