package chanplan

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"time"
)

// Policy is the hysteresis around the optimiser: when a proposed plan is worth the disruption
// of a channel switch.
type Policy struct {
	// MinGain is the relative improvement of the total cost an unforced re-plan needs
	// (default 0.30).
	MinGain float64
	// MinWorstGainDB is the alternative: the most interfered radio improves by this much
	// (default 5 dB, Cisco DCA's "medium" sensitivity).
	MinWorstGainDB float64
	// MinInterval is the least time between two unforced changes of one radio (default 24 h).
	MinInterval time.Duration
	// Busy reports the site's busy hour(s): no unforced change then. Nil means never busy.
	Busy func(time.Time) bool
	// Options tune the optimiser.
	Options Options
}

func (p Policy) withDefaults() Policy {
	if p.MinGain == 0 {
		p.MinGain = 0.30
	}
	if p.MinWorstGainDB == 0 {
		p.MinWorstGainDB = 5
	}
	if p.MinInterval == 0 {
		p.MinInterval = 24 * time.Hour
	}
	return p
}

// History is what the policy remembers between runs: when each radio last made an unforced
// change.
type History struct {
	LastChange map[string]time.Time `json:"last_change"`
}

// Record notes the unforced changes of a decision that was applied at t.
func (h *History) Record(d Decision, t time.Time) {
	if h.LastChange == nil {
		h.LastChange = map[string]time.Time{}
	}
	for _, c := range d.Changes {
		if !c.Forced {
			h.LastChange[c.Radio] = t
		}
	}
}

// Change is one radio's move.
type Change struct {
	Radio    string
	From, To Spec
	// Forced: radar, a channel that became unusable, or a radio without a channel.
	Forced bool
}

// Decision is the policy's verdict.
type Decision struct {
	// Changes are the moves to make, sorted by radio ID.
	Changes []Change
	// Assign is the assignment after the changes.
	Assign Assignment
	// Before is the cost of keeping every radio that may stay where it is (forced ones moved at
	// the least cost); After the cost of Assign.
	Before, After Cost
	// Gain is (Before−After)/Before; WorstGainDB the improvement of the worst radio's
	// interference in dB.
	Gain        float64
	WorstGainDB float64
	// Proposal is the optimiser's plan (possibly rejected or pruned).
	Proposal Plan
	// Reason says why unforced changes were accepted or not.
	Reason string
}

// worstFloor keeps "worst radio improves 5 dB" from triggering on radios that barely see
// interference at all.
const worstFloor = 0.02

func worstDB(before, after Cost) float64 {
	_, b := before.Worst()
	_, a := after.Worst()
	return 10 * math.Log10(math.Max(b, worstFloor)/math.Max(a, worstFloor))
}

// Decide plans the site and applies the hysteresis rules: forced moves always happen (to
// channels usable at once); other moves only outside the busy hour, only for radios that did
// not change in MinInterval, and only when the gain reaches MinGain or MinWorstGainDB. Of an
// accepted plan, changes that contribute little are dropped so that as few radios as possible
// switch. Same input, same decision.
func (p Policy) Decide(in Input, h History) (Decision, error) {
	p = p.withDefaults()
	m, err := newModel(in)
	if err != nil {
		return Decision{}, err
	}
	current := Assignment{}
	for _, r := range m.radios {
		if !r.Current.IsZero() {
			current[r.ID] = r.Current
		}
	}
	// Baseline: only the radios that must move do.
	keep := map[string]bool{}
	for _, r := range m.radios {
		keep[r.ID] = true
	}
	base, err := Solve(in, Constraints{Fixed: keep}, p.Options)
	if err != nil {
		return Decision{}, err
	}
	forced := map[string]bool{}
	for _, id := range base.Forced {
		forced[id] = true
	}
	for _, r := range m.radios {
		if r.Current.IsZero() {
			forced[r.ID] = true
		}
	}
	d := Decision{Before: base.Cost, Assign: base.Assign, After: base.Cost}
	finish := func(reason string) (Decision, error) {
		d.Reason = reason
		d.Changes = diff(m.radios, current, d.Assign, forced)
		return d, nil
	}
	if p.Busy != nil && p.Busy(in.Now) {
		return finish("busy hour: forced moves only")
	}
	fixed := map[string]bool{}
	for _, r := range m.radios {
		if t, ok := h.LastChange[r.ID]; ok && !forced[r.ID] && in.Now.Sub(t) < p.MinInterval {
			fixed[r.ID] = true
		}
	}
	prop, err := Solve(in, Constraints{Fixed: fixed, Forced: mapOf(base.Forced)}, p.Options)
	if err != nil {
		return Decision{}, err
	}
	d.Proposal = prop
	accept := func(c Cost) (float64, float64, bool) {
		gain := 0.0
		if base.Cost.Total > 0 {
			gain = (base.Cost.Total - c.Total) / base.Cost.Total
		}
		wdb := worstDB(base.Cost, c)
		return gain, wdb, c.Total < base.Cost.Total-1e-9 && (gain >= p.MinGain || wdb >= p.MinWorstGainDB)
	}
	gain, wdb, ok := accept(prop.Cost)
	d.Gain, d.WorstGainDB = gain, wdb
	if !ok {
		return finish(fmt.Sprintf("gain %.0f%% < %.0f%% and worst radio %+.1f dB < %.1f dB: keep", 100*gain, 100*p.MinGain, wdb, p.MinWorstGainDB))
	}
	// Prune: revert the unforced changes that are not needed to stay above the thresholds and
	// within 2% of the base cost of the proposal.
	final := Assignment{}
	for k, v := range prop.Assign {
		final[k] = v
	}
	finalCost := prop.Cost
	ids := make([]string, 0)
	for _, r := range m.radios {
		if !forced[r.ID] && final[r.ID] != r.Current {
			ids = append(ids, r.ID)
		}
	}
	// Try the changes with the smallest own benefit first.
	sort.SliceStable(ids, func(i, j int) bool {
		return prop.Cost.Radio[ids[i]]-base.Cost.Radio[ids[i]] > prop.Cost.Radio[ids[j]]-base.Cost.Radio[ids[j]]
	})
	for _, id := range ids {
		trial := Assignment{}
		for k, v := range final {
			trial[k] = v
		}
		trial[id] = current[id]
		c, err := m.evaluate(trial)
		if err != nil {
			continue
		}
		if _, _, ok := accept(c); ok && c.Total <= prop.Cost.Total+0.02*base.Cost.Total {
			final, finalCost = trial, c
		}
	}
	d.Assign, d.After = final, finalCost
	d.Gain, d.WorstGainDB, _ = accept(finalCost)
	return finish(fmt.Sprintf("gain %.0f%%, worst radio %+.1f dB: switch", 100*d.Gain, d.WorstGainDB))
}

func mapOf(ids []string) map[string]bool {
	m := map[string]bool{}
	for _, id := range ids {
		m[id] = true
	}
	return m
}

func diff(radios []Radio, from, to Assignment, forced map[string]bool) []Change {
	var out []Change
	for _, r := range radios {
		if to[r.ID] != from[r.ID] {
			out = append(out, Change{Radio: r.ID, From: from[r.ID], To: to[r.ID], Forced: forced[r.ID]})
		}
	}
	slices.SortFunc(out, func(a, b Change) int {
		switch {
		case a.Radio < b.Radio:
			return -1
		case a.Radio > b.Radio:
			return 1
		}
		return 0
	})
	return out
}
