package chanplan

import (
	"fmt"
	"math"
	"sort"
	"time"
)

// Neighbor is a foreign BSS one of our radios hears (from its scan).
type Neighbor struct {
	BSSID string `json:"bssid,omitempty"`
	// Spec is its operating channel (primary, width and centre from its HT/VHT/HE elements).
	Spec Spec `json:"spec"`
	// SignalDBm is its received signal at our radio.
	SignalDBm float64 `json:"signal_dbm"`
	// Load is its airtime use, 0..1 (BSS Load channel utilisation / 255, or an estimate).
	Load float64 `json:"load"`
}

// SurveyPoint is one channel of a radio's survey: the busy fraction the radio measured there.
type SurveyPoint struct {
	Freq int `json:"freq"`
	// Busy is the fraction of time the channel was busy, 0..1, minus the radio's own transmit time.
	Busy float64 `json:"busy"`
	// NoiseDBm is the noise floor (0 when unknown).
	NoiseDBm float64 `json:"noise_dbm,omitempty"`
}

// Radio is one of our radios as the gateway planner sees it.
type Radio struct {
	// ID is unique in the site ("node/phy").
	ID   string `json:"id"`
	Node string `json:"node"`
	Band Band   `json:"band"`
	// MaxWidth is the widest channel the radio and the site allow (the width it wants);
	// MinWidth the narrowest the planner may choose (default 20).
	MaxWidth int `json:"max_width"`
	MinWidth int `json:"min_width,omitempty"`
	// DFS allows DFS channels (the radio can detect radar).
	DFS bool `json:"dfs,omitempty"`
	// Channels are the regulatory and radar states of the band's 20 MHz channels on this radio.
	// Channels missing from the map are not allowed.
	Channels map[int]ChannelState `json:"channels"`
	// Current is the radio's operating channel (zero when it is not up yet).
	Current Spec `json:"current"`
	// Load is the radio's own airtime demand, 0..1 (clients and backhaul).
	Load float64 `json:"load"`
	// Weight says how much the radio's own interference counts (e.g. 1 + associated clients/10).
	// Default 1.
	Weight float64 `json:"weight,omitempty"`
	// Group ties radios that must share one channel (a wireless backhaul on the AP radio).
	Group string `json:"group,omitempty"`
	// Neighbors are the foreign BSSes the radio hears.
	Neighbors []Neighbor `json:"neighbors,omitempty"`
	// Survey is the radio's channel survey (raw busy fractions).
	Survey []SurveyPoint `json:"survey,omitempty"`
}

// Link is the signal between two of our radios (same band), as measured by scans or beacons.
type Link struct {
	A         string  `json:"a"`
	B         string  `json:"b"`
	SignalDBm float64 `json:"signal_dbm"`
}

// Input is everything the planner needs for one site.
type Input struct {
	Radios []Radio   `json:"radios"`
	Links  []Link    `json:"links,omitempty"`
	Now    time.Time `json:"now"`
	Params Params    `json:"params,omitzero"`
	// Force lists radios that must leave their current channel now (radar seen before the
	// channel states say so), in addition to radios whose current channel became unusable.
	Force []string `json:"force,omitempty"`
}

// Assignment maps radio IDs to channels.
type Assignment map[string]Spec

// Params are the constants of the cost model. The zero value means the defaults.
type Params struct {
	// CCADBm is the preamble-detect threshold: a transmitter heard at or above it contends
	// fully; below it, it counts in proportion to its power (default −82 dBm).
	CCADBm float64 `json:"cca_dbm,omitempty"`
	// WidthPenalty is the cost of giving up bandwidth: β·(1 − width/MaxWidth) (default 1, i.e.
	// halving the width costs as much as a fully loaded co-channel neighbour at load 0.5).
	WidthPenalty float64 `json:"width_penalty,omitempty"`
	// CACPenalty is the cost of moving onto a DFS channel that needs a CAC (an outage of 1 to
	// 10 minutes); forced moves never take such channels (default 2).
	CACPenalty float64 `json:"cac_penalty,omitempty"`
	// MinLoad is the airtime every one of our radios is assumed to use (beacons, management;
	// default 0.05).
	MinLoad float64 `json:"min_load,omitempty"`
	// RadarPenalty is added to channels with radar seen within RadarMemory (defaults 3 and
	// 24 h): after its 30-minute NOP a radar channel is legal again, but radar tends to return.
	RadarPenalty float64       `json:"radar_penalty,omitempty"`
	RadarMemory  time.Duration `json:"radar_memory,omitempty"`
}

func (p Params) withDefaults() Params {
	if p.CCADBm == 0 {
		p.CCADBm = -82
	}
	if p.WidthPenalty == 0 {
		p.WidthPenalty = 1
	}
	if p.CACPenalty == 0 {
		p.CACPenalty = 2
	}
	if p.MinLoad == 0 {
		p.MinLoad = 0.05
	}
	if p.RadarPenalty == 0 {
		p.RadarPenalty = 3
	}
	if p.RadarMemory == 0 {
		p.RadarMemory = 24 * time.Hour
	}
	return p
}

// Coupling returns the contention weight of a transmitter heard at signal dBm: 1 at or above the
// CCA threshold (it defers us), else its power relative to the threshold.
func (p Params) Coupling(signalDBm float64) float64 {
	p = p.withDefaults()
	if signalDBm >= p.CCADBm {
		return 1
	}
	return math.Pow(10, (signalDBm-p.CCADBm)/10)
}

// leak is the fraction of a 20 MHz transmission's effect on a 20 MHz channel whose centre is
// d MHz away. 2.4 GHz channels overlap: the coefficients are the interference factors of
// partially overlapped channels measured by Mishra et al. (SIGMETRICS 2006) for separations of
// 0..7 channels of 5 MHz. On the 5/6 GHz grid 20 MHz channels do not overlap; the adjacent
// channel leaks at −20 dB and the next at −30 dB (typical adjacent-channel rejection).
func leak(band Band, d int) float64 {
	if d < 0 {
		d = -d
	}
	if band == Band2G4 {
		switch d {
		case 0:
			return 1
		case 5:
			return 0.7272
		case 10:
			return 0.2714
		case 15:
			return 0.0375
		case 20:
			return 0.0054
		case 25:
			return 0.0008
		case 30:
			return 0.0002
		}
		return 0
	}
	switch d {
	case 0:
		return 1
	case 20:
		return 0.01
	case 40:
		return 0.001
	}
	return 0
}

// Overlap is the interference coefficient of a transmitter on channel t for a radio on channel
// s, in 0..1: half of it is how strongly t reaches s's primary 20 MHz channel (where CCA makes
// every overlap a full contention), half the mean over s's subchannels (a busy secondary
// channel costs the bandwidth it blocks). Co-channel equal widths give 1.
func Overlap(s, t Spec) float64 {
	band := s.Band()
	if band != t.Band() || s.IsZero() || t.IsZero() {
		return 0
	}
	ts, tn := t.subs()
	best := func(a int) float64 {
		m := 0.0
		for _, b := range ts[:tn] {
			if l := leak(band, a-b); l > m {
				m = l
			}
		}
		return m
	}
	ss, sn := s.subs()
	sum := 0.0
	for _, a := range ss[:sn] {
		sum += best(a)
	}
	return 0.5*best(s.Freq) + 0.5*sum/float64(sn)
}

// Cost is the evaluation of an assignment.
type Cost struct {
	// Total is the weighted sum over radios: Σ weight·(interference + width penalty + CAC
	// penalty).
	Total float64
	// Radio is each radio's own cost (interference it suffers plus its width/CAC penalties),
	// unweighted.
	Radio map[string]float64
	// Interference is each radio's interference part alone.
	Interference map[string]float64
}

// Worst returns the radio with the highest interference and that value.
func (c Cost) Worst() (string, float64) {
	ids := make([]string, 0, len(c.Interference))
	for id := range c.Interference {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	w, wv := "", -1.0
	for _, id := range ids {
		if v := c.Interference[id]; v > wv {
			w, wv = id, v
		}
	}
	return w, wv
}

// Evaluate computes the cost of an assignment under the input's model (every radio must be
// assigned). Planner and benchmarks use the same function, so "our plan vs hostapd ACS" is
// measured with one yardstick.
func Evaluate(in Input, a Assignment) (Cost, error) {
	m, err := newModel(in)
	if err != nil {
		return Cost{}, err
	}
	return m.evaluate(a)
}

// model is the compiled input: candidate channels per radio, unary costs, pairwise couplings.
type model struct {
	in     Input
	p      Params
	radios []Radio // sorted by ID
	index  map[string]int
	resid  [][]SurveyPoint // residual (unexplained) busy per radio
	adj    [][]edge        // pairwise couplings per radio
	weight []float64
	load   []float64
}

type edge struct {
	to int
	g  float64 // coupling (signal → contention weight)
}

func newModel(in Input) (*model, error) {
	m := &model{in: in, p: in.Params.withDefaults(), index: map[string]int{}}
	m.radios = append([]Radio(nil), in.Radios...)
	sort.Slice(m.radios, func(i, j int) bool { return m.radios[i].ID < m.radios[j].ID })
	for i, r := range m.radios {
		if r.ID == "" {
			return nil, fmt.Errorf("chanplan: radio %d: empty id", i)
		}
		if _, dup := m.index[r.ID]; dup {
			return nil, fmt.Errorf("chanplan: radio %s: duplicate id", r.ID)
		}
		switch r.Band {
		case Band2G4, Band5G, Band6G:
		default:
			return nil, fmt.Errorf("chanplan: radio %s: band %q unknown", r.ID, r.Band)
		}
		if r.MaxWidth != 20 && r.MaxWidth != 40 && r.MaxWidth != 80 && r.MaxWidth != 160 {
			return nil, fmt.Errorf("chanplan: radio %s: max_width %d not 20/40/80/160", r.ID, r.MaxWidth)
		}
		if r.MinWidth != 0 && (r.MinWidth > r.MaxWidth || r.MinWidth%20 != 0) {
			return nil, fmt.Errorf("chanplan: radio %s: min_width %d", r.ID, r.MinWidth)
		}
		if r.Load < 0 || r.Load > 1 || math.IsNaN(r.Load) {
			return nil, fmt.Errorf("chanplan: radio %s: load %v out of 0..1", r.ID, r.Load)
		}
		if r.Weight < 0 || math.IsNaN(r.Weight) || math.IsInf(r.Weight, 0) {
			return nil, fmt.Errorf("chanplan: radio %s: weight %v", r.ID, r.Weight)
		}
		for j, nb := range r.Neighbors {
			if err := checkNeighbor(nb, r.Band); err != nil {
				return nil, fmt.Errorf("chanplan: radio %s: neighbors[%d]: %w", r.ID, j, err)
			}
		}
		for j, sp := range r.Survey {
			if math.IsNaN(sp.Busy) || sp.Busy < 0 || sp.Busy > 1 {
				return nil, fmt.Errorf("chanplan: radio %s: survey[%d]: busy %v out of 0..1", r.ID, j, sp.Busy)
			}
		}
		if !r.Current.IsZero() && (r.Current.Validate() != nil || r.Current.Band() != r.Band) {
			return nil, fmt.Errorf("chanplan: radio %s: current %v is not a %s channel", r.ID, r.Current, r.Band)
		}
		m.index[r.ID] = i
	}
	n := len(m.radios)
	m.adj = make([][]edge, n)
	m.weight = make([]float64, n)
	m.load = make([]float64, n)
	for i, r := range m.radios {
		m.weight[i] = r.Weight
		if m.weight[i] == 0 {
			m.weight[i] = 1
		}
		m.load[i] = max(r.Load, m.p.MinLoad)
	}
	// Links: keep the strongest report per pair, same band only.
	type pair struct{ a, b int }
	sig := map[pair]float64{}
	for _, l := range in.Links {
		if math.IsNaN(l.SignalDBm) || math.IsInf(l.SignalDBm, 0) {
			return nil, fmt.Errorf("chanplan: link %s-%s: signal %v", l.A, l.B, l.SignalDBm)
		}
		a, okA := m.index[l.A]
		b, okB := m.index[l.B]
		if !okA || !okB || a == b {
			continue
		}
		if m.radios[a].Band != m.radios[b].Band {
			continue
		}
		if a > b {
			a, b = b, a
		}
		k := pair{a, b}
		if s, ok := sig[k]; !ok || l.SignalDBm > s {
			sig[k] = l.SignalDBm
		}
	}
	keys := make([]pair, 0, len(sig))
	for k := range sig {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].a != keys[j].a {
			return keys[i].a < keys[j].a
		}
		return keys[i].b < keys[j].b
	})
	for _, k := range keys {
		g := m.p.Coupling(sig[k])
		if g < 1e-4 {
			continue
		}
		m.adj[k.a] = append(m.adj[k.a], edge{to: k.b, g: g})
		m.adj[k.b] = append(m.adj[k.b], edge{to: k.a, g: g})
	}
	m.resid = make([][]SurveyPoint, n)
	for i := range m.radios {
		m.resid[i] = m.residual(i)
	}
	return m, nil
}

// residual is the survey's busy time that neither the radio's neighbour list nor our other
// radios (on their current channels) explain: non-802.11 interference and hidden BSSes. It is
// modelled as a 20 MHz interferer of that airtime on the channel.
func (m *model) residual(i int) []SurveyPoint {
	r := m.radios[i]
	var out []SurveyPoint
	for _, sp := range r.Survey {
		if BandOf(sp.Freq) != r.Band || sp.Busy <= 0 {
			continue
		}
		ch := Spec{Freq: sp.Freq, Width: 20, Center1: sp.Freq}
		explained := 0.0
		for _, nb := range r.Neighbors {
			explained += m.p.Coupling(nb.SignalDBm) * nb.Load * Overlap(ch, nb.Spec)
		}
		for _, e := range m.adj[i] {
			q := m.radios[e.to]
			if !q.Current.IsZero() {
				explained += e.g * m.load[e.to] * Overlap(ch, q.Current)
			}
		}
		if !r.Current.IsZero() && Overlap(ch, r.Current) > 0.5 {
			// The radio's own BSS's receive time shows as busy on its channel: unknown, so the
			// survey of the current channel is not trusted beyond what is explained.
			continue
		}
		if res := math.Min(1, sp.Busy) - explained; res > 0.02 {
			out = append(out, SurveyPoint{Freq: sp.Freq, Busy: res, NoiseDBm: sp.NoiseDBm})
		}
	}
	return out
}

// unary is a radio's cost on spec s that does not depend on our other radios: foreign BSSes,
// residual interference, width penalty and CAC penalty.
func (m *model) unary(i int, s Spec) (interf, penalty float64) {
	r := m.radios[i]
	for _, nb := range r.Neighbors {
		interf += m.p.Coupling(nb.SignalDBm) * nb.Load * Overlap(s, nb.Spec)
	}
	for _, sp := range m.resid[i] {
		interf += sp.Busy * Overlap(s, Spec{Freq: sp.Freq, Width: 20, Center1: sp.Freq})
	}
	penalty = m.p.WidthPenalty * (1 - float64(s.Width)/float64(r.MaxWidth))
	if s != r.Current {
		if u, _ := Allowed(s, r.Channels, m.in.Now); u == NeedsCAC {
			penalty += m.p.CACPenalty
		}
	}
	for _, f := range s.Subchannels() {
		if lr := r.Channels[f].LastRadar; !lr.IsZero() && m.in.Now.Sub(lr) < m.p.RadarMemory {
			penalty += m.p.RadarPenalty
			break
		}
	}
	return interf, penalty
}

func (m *model) evaluate(a Assignment) (Cost, error) {
	c := Cost{Radio: map[string]float64{}, Interference: map[string]float64{}}
	specs := make([]Spec, len(m.radios))
	for i, r := range m.radios {
		s, ok := a[r.ID]
		if !ok || s.IsZero() {
			return Cost{}, fmt.Errorf("chanplan: evaluate: radio %s unassigned", r.ID)
		}
		if s.Band() != r.Band {
			return Cost{}, fmt.Errorf("chanplan: evaluate: radio %s: %v not in %s", r.ID, s, r.Band)
		}
		specs[i] = s
	}
	for i, r := range m.radios {
		interf, pen := m.unary(i, specs[i])
		for _, e := range m.adj[i] {
			interf += e.g * m.load[e.to] * Overlap(specs[i], specs[e.to])
		}
		c.Interference[r.ID] = interf
		c.Radio[r.ID] = interf + pen
		c.Total += m.weight[i] * (interf + pen)
	}
	return c, nil
}

func checkNeighbor(nb Neighbor, band Band) error {
	if err := nb.Spec.Validate(); err != nil {
		return err
	}
	if nb.Spec.Band() != band {
		return fmt.Errorf("%v not in %s", nb.Spec, band)
	}
	if math.IsNaN(nb.SignalDBm) || nb.SignalDBm < -150 || nb.SignalDBm > 30 {
		return fmt.Errorf("signal %v dBm out of −150..30", nb.SignalDBm)
	}
	if math.IsNaN(nb.Load) || nb.Load < 0 || nb.Load > 1 {
		return fmt.Errorf("load %v out of 0..1", nb.Load)
	}
	return nil
}

// Sanitize makes a radio report from the network safe for the planner: it drops the neighbours
// and survey points that are malformed (returned as problems, for the log) and fails only when
// the radio itself cannot be planned (id, band, widths, load, weight, current channel).
func Sanitize(r Radio) (Radio, []string, error) {
	var problems []string
	if r.ID == "" || len(r.ID) > 128 {
		return r, nil, fmt.Errorf("radio id %q", r.ID)
	}
	switch r.Band {
	case Band2G4, Band5G, Band6G:
	default:
		return r, nil, fmt.Errorf("radio %s: band %q", r.ID, r.Band)
	}
	if r.MaxWidth != 20 && r.MaxWidth != 40 && r.MaxWidth != 80 && r.MaxWidth != 160 {
		return r, nil, fmt.Errorf("radio %s: max_width %d", r.ID, r.MaxWidth)
	}
	if r.MinWidth != 0 && (r.MinWidth > r.MaxWidth || r.MinWidth%20 != 0 || r.MinWidth < 0) {
		return r, nil, fmt.Errorf("radio %s: min_width %d", r.ID, r.MinWidth)
	}
	if math.IsNaN(r.Load) || r.Load < 0 || r.Load > 1 {
		return r, nil, fmt.Errorf("radio %s: load %v", r.ID, r.Load)
	}
	if math.IsNaN(r.Weight) || math.IsInf(r.Weight, 0) || r.Weight < 0 || r.Weight > 1000 {
		return r, nil, fmt.Errorf("radio %s: weight %v", r.ID, r.Weight)
	}
	if !r.Current.IsZero() && (r.Current.Validate() != nil || r.Current.Band() != r.Band) {
		return r, nil, fmt.Errorf("radio %s: current %v", r.ID, r.Current)
	}
	var nbs []Neighbor
	for i, nb := range r.Neighbors {
		if err := checkNeighbor(nb, r.Band); err != nil {
			problems = append(problems, fmt.Sprintf("neighbors[%d]: %v", i, err))
			continue
		}
		nbs = append(nbs, nb)
	}
	r.Neighbors = nbs
	var sps []SurveyPoint
	for i, sp := range r.Survey {
		if math.IsNaN(sp.Busy) || sp.Busy < 0 || sp.Busy > 1 || BandOf(sp.Freq) != r.Band {
			problems = append(problems, fmt.Sprintf("survey[%d]: freq %d busy %v", i, sp.Freq, sp.Busy))
			continue
		}
		sps = append(sps, sp)
	}
	r.Survey = sps
	chans := map[int]ChannelState{}
	for f, st := range r.Channels {
		if BandOf(f) != r.Band || st.Freq != f {
			problems = append(problems, fmt.Sprintf("channels[%d]: not a %s channel", f, r.Band))
			continue
		}
		chans[f] = st
	}
	r.Channels = chans
	return r, problems, nil
}
