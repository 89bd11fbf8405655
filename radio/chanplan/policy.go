package chanplan

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

// Policy is the hysteresis around the optimiser: when a proposed plan is worth the disruption
// of a channel switch.
type Policy struct {
	// MinGain is the relative improvement of the total cost an unforced re-plan needs
	// (default 0.30); MinAbsGain the absolute one on top (default 0.05, i.e. 5% of a radio's
	// airtime), so that a nearly clean band is not reshuffled for a 100% gain on nothing.
	MinGain    float64
	MinAbsGain float64
	// MinRadioGainDB is the alternative: some radio's own interference drops by this much
	// (default 5 dB, Cisco DCA's "medium" sensitivity) while no radio's rises by more than
	// MaxRadioLossDB (default 3 dB). It lets a radio that a loud neighbour landed on move even
	// when the site total barely changes.
	MinRadioGainDB float64
	MaxRadioLossDB float64
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
	if p.MinAbsGain == 0 {
		p.MinAbsGain = 0.05
	}
	if p.MinRadioGainDB == 0 {
		p.MinRadioGainDB = 5
	}
	if p.MaxRadioLossDB == 0 {
		p.MaxRadioLossDB = 3
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
	// Gain is (Before−After)/Before. RadioGainDB is the largest drop of one radio's
	// interference, RadioLossDB the largest rise (both in dB, interference below 0.05 counted as
	// 0.05).
	Gain        float64
	RadioGainDB float64
	RadioLossDB float64
	// Proposal is the optimiser's plan (possibly rejected or pruned).
	Proposal Plan
	// Reason says why unforced changes were accepted or not.
	Reason string
}

// radioFloor keeps the dB rules from reacting to radios that barely see interference at all
// (below 5% of airtime, noise moves them by several dB).
const radioFloor = 0.05

// radioDB returns the largest per-radio improvement and the largest per-radio worsening of
// interference between two costs, in dB.
func radioDB(before, after Cost) (gain, loss float64) {
	for id, b := range before.Interference {
		a, ok := after.Interference[id]
		if !ok {
			continue
		}
		d := 10 * math.Log10(math.Max(b, radioFloor)/math.Max(a, radioFloor))
		gain = math.Max(gain, d)
		loss = math.Max(loss, -d)
	}
	return gain, loss
}

// Decide plans the site and applies the hysteresis rules: forced moves always happen (to
// channels usable at once); other moves only outside the busy hour, only for radios that did
// not change in MinInterval, and only when the total gain reaches MinGain or one radio gains
// MinRadioGainDB without another losing more than MaxRadioLossDB. Of an
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
	// Bands never interfere with each other: each band's changes must earn their keep alone,
	// so that a worthwhile move on 5 GHz does not carry marginal 2.4 GHz moves along.
	weight := map[string]float64{}
	byBand := map[Band][]string{}
	var bands []Band
	for i, r := range m.radios {
		weight[r.ID] = m.weight[i]
		if _, ok := byBand[r.Band]; !ok {
			bands = append(bands, r.Band)
		}
		byBand[r.Band] = append(byBand[r.Band], r.ID)
	}
	sort.Slice(bands, func(i, j int) bool { return bands[i] < bands[j] })
	accept := func(ids []string, c Cost) (gain, rg, rl float64, ok bool) {
		var b, a float64
		bc := Cost{Interference: map[string]float64{}}
		ac := Cost{Interference: map[string]float64{}}
		for _, id := range ids {
			b += weight[id] * base.Cost.Radio[id]
			a += weight[id] * c.Radio[id]
			bc.Interference[id] = base.Cost.Interference[id]
			ac.Interference[id] = c.Interference[id]
		}
		if b > 0 {
			gain = (b - a) / b
		}
		rg, rl = radioDB(bc, ac)
		ok = a < b-p.MinAbsGain && (gain >= p.MinGain || (rg >= p.MinRadioGainDB && rl <= p.MaxRadioLossDB))
		return gain, rg, rl, ok
	}
	final := Assignment{}
	for k, v := range base.Assign {
		final[k] = v
	}
	var reasons []string
	for _, band := range bands {
		ids := byBand[band]
		trial := Assignment{}
		for k, v := range final {
			trial[k] = v
		}
		for _, id := range ids {
			trial[id] = prop.Assign[id]
		}
		c, err := m.evaluate(trial)
		if err != nil {
			return Decision{}, err
		}
		gain, rg, rl, ok := accept(ids, c)
		if !ok {
			if gain > 0 {
				reasons = append(reasons, fmt.Sprintf("%s: gain %.0f%% < %.0f%%, best radio %.1f dB (< %.1f dB, or a radio loses %.1f dB): keep",
					band, 100*gain, 100*p.MinGain, rg, p.MinRadioGainDB, rl))
			}
			continue
		}
		// Prune: revert the unforced changes that are not needed to stay above the thresholds,
		// as long as the band's cost stays within 2% of its base of the proposal. Changes with
		// the smallest own benefit go first.
		var moved []string
		for _, id := range ids {
			if !forced[id] && trial[id] != current[id] {
				moved = append(moved, id)
			}
		}
		sort.SliceStable(moved, func(i, j int) bool {
			return c.Radio[moved[i]]-base.Cost.Radio[moved[i]] > c.Radio[moved[j]]-base.Cost.Radio[moved[j]]
		})
		propBand := 0.0
		baseBand := 0.0
		for _, id := range ids {
			propBand += weight[id] * c.Radio[id]
			baseBand += weight[id] * base.Cost.Radio[id]
		}
		for _, id := range moved {
			t2 := Assignment{}
			for k, v := range trial {
				t2[k] = v
			}
			t2[id] = current[id]
			c2, err := m.evaluate(t2)
			if err != nil {
				continue
			}
			band2 := 0.0
			for _, x := range ids {
				band2 += weight[x] * c2.Radio[x]
			}
			if _, _, _, ok := accept(ids, c2); ok && band2 <= propBand+0.02*baseBand {
				trial, c = t2, c2
			}
		}
		final = trial
		gain, rg, rl, _ = accept(ids, c)
		reasons = append(reasons, fmt.Sprintf("%s: gain %.0f%%, best radio %.1f dB, worst radio %.1f dB: switch", band, 100*gain, rg, -rl))
	}
	after, err := m.evaluate(final)
	if err != nil {
		return Decision{}, err
	}
	d.Assign, d.After = final, after
	if base.Cost.Total > 0 {
		d.Gain = (base.Cost.Total - after.Total) / base.Cost.Total
	}
	d.RadioGainDB, d.RadioLossDB = radioDB(base.Cost, after)
	if len(reasons) == 0 {
		reasons = append(reasons, "no gain: keep")
	}
	return finish(strings.Join(reasons, "; "))
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
