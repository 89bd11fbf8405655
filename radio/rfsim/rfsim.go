// Package rfsim is a simulated radio environment for evaluating channel plans: an apartment
// building of floors × units, foreign access points with diurnal traffic, and our meshes of one
// to three nodes. From it come what real radios would report — scans (foreign BSSes with
// signal and load), surveys (busy time per channel), the signal between our own nodes — with
// measurement noise, and the noiseless truth to score plans against.
//
// Propagation is the multi-wall model (COST 231 / ITU-R P.1238 style): free-space loss at 1 m,
// a distance exponent, a loss per wall between units and per floor, and log-normal shadowing
// fixed per link. Defaults: 14 × 10 m units in two rows along a corridor, 3 m floors, walls
// 5 dB (2.4 GHz) / 8 dB (5 GHz), floors 15 / 20 dB, exponent 2, shadowing σ 4 dB, APs at 20 dBm
// (2.4 GHz) and 23 dBm (5 GHz). A foreign AP's load follows an evening-peaked day curve.
package rfsim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"time"

	"meshroot/radio/chanplan"
)

// Config describes a building and its radios.
type Config struct {
	Floors, Units int // units per floor
	// UnitWidth × UnitDepth in metres; FloorHeight in metres.
	UnitWidth, UnitDepth, FloorHeight float64
	// WallDB and FloorDB are the penetration losses per band.
	WallDB, FloorDB map[chanplan.Band]float64
	// Exponent is the distance exponent; ShadowDB the log-normal shadowing σ.
	Exponent, ShadowDB float64
	// ForeignPerUnit foreign dual-band APs in every unit not holding one of our meshes
	// (default 1); their peak load is drawn from ForeignLoad (default 0.05..0.6).
	ForeignPerUnit int
	ForeignLoad    [2]float64
	// Meshes is how many of our meshes (default 2), NodesPerMesh their size (1..3, default 3).
	// Each mesh lives in its own unit (chosen by the seed) with nodes spread over it.
	Meshes, NodesPerMesh int
	// OwnLoad is the range of our radios' peak loads (default 0.1..0.4).
	OwnLoad [2]float64
	// MaxWidth is our radios' width per band (default 20 on 2.4 GHz, 80 on 5 GHz).
	MaxWidth map[chanplan.Band]int
	// Bands are our radios' bands (default 2.4 and 5 GHz).
	Bands []chanplan.Band
	// NoDFS keeps our radios off DFS channels.
	NoDFS bool
	// SignalNoiseDB, LoadNoise and BusyNoise are the measurement noise σ (default 2 dB, 0.1
	// relative, 0.03 absolute).
	SignalNoiseDB, LoadNoise, BusyNoise float64
	// Seed makes the building reproducible.
	Seed uint64
}

func (c Config) withDefaults() Config {
	if c.Floors == 0 {
		c.Floors = 4
	}
	if c.Units == 0 {
		c.Units = 6
	}
	if c.UnitWidth == 0 {
		c.UnitWidth = 14
	}
	if c.UnitDepth == 0 {
		c.UnitDepth = 10
	}
	if c.FloorHeight == 0 {
		c.FloorHeight = 3
	}
	if c.WallDB == nil {
		c.WallDB = map[chanplan.Band]float64{chanplan.Band2G4: 5, chanplan.Band5G: 8, chanplan.Band6G: 9}
	}
	if c.FloorDB == nil {
		c.FloorDB = map[chanplan.Band]float64{chanplan.Band2G4: 15, chanplan.Band5G: 20, chanplan.Band6G: 22}
	}
	if c.Exponent == 0 {
		c.Exponent = 2
	}
	if c.ShadowDB == 0 {
		c.ShadowDB = 4
	}
	if c.ForeignPerUnit == 0 {
		c.ForeignPerUnit = 1
	}
	if c.ForeignLoad == [2]float64{} {
		c.ForeignLoad = [2]float64{0.05, 0.6}
	}
	if c.Meshes == 0 {
		c.Meshes = 2
	}
	if c.NodesPerMesh == 0 {
		c.NodesPerMesh = 3
	}
	if c.OwnLoad == [2]float64{} {
		c.OwnLoad = [2]float64{0.1, 0.4}
	}
	if c.MaxWidth == nil {
		c.MaxWidth = map[chanplan.Band]int{chanplan.Band2G4: 20, chanplan.Band5G: 80, chanplan.Band6G: 160}
	}
	if len(c.Bands) == 0 {
		c.Bands = []chanplan.Band{chanplan.Band2G4, chanplan.Band5G}
	}
	if c.SignalNoiseDB == 0 {
		c.SignalNoiseDB = 2
	}
	if c.LoadNoise == 0 {
		c.LoadNoise = 0.1
	}
	if c.BusyNoise == 0 {
		c.BusyNoise = 0.03
	}
	return c
}

// Pos is a point in the building, metres.
type Pos struct{ X, Y, Z float64 }

// Transmitter is a radio in the building: a foreign AP's radio or one of ours.
type Transmitter struct {
	ID    string
	Band  chanplan.Band
	Pos   Pos
	Floor int
	Row   int
	Col   int
	TxDBm float64
	// Spec is a foreign AP's channel (ours come from the assignment).
	Spec chanplan.Spec
	// PeakLoad and PhaseHours shape the load curve.
	PeakLoad   float64
	PhaseHours float64
	// Own marks our radios; Node and Mesh locate them.
	Own  bool
	Node string
	Mesh int
}

// Env is a generated building.
type Env struct {
	Cfg     Config
	Foreign []Transmitter
	Own     []Transmitter // our radios, sorted by ID
	// Radios are our radios' static planner descriptions (channels, widths), by ID order.
	Radios []chanplan.Radio
	shadow map[[2]string]float64
	radar  map[string]map[int]time.Time // radio → freq → NOP end
}

// US-like 5 GHz channel set: 36-64, 100-144, 149-165; DFS on 52-144. 2.4 GHz: 1-11.
func channelStates(b chanplan.Band) map[int]chanplan.ChannelState {
	out := map[int]chanplan.ChannelState{}
	for _, f := range chanplan.Channels20(b) {
		st := chanplan.ChannelState{Freq: f, MaxPowerDBm: 23}
		switch b {
		case chanplan.Band2G4:
			if f > 2462 {
				continue
			}
		case chanplan.Band5G:
			if f > 5825 {
				continue
			}
			if f >= 5260 && f <= 5720 {
				st.Radar, st.NoIR, st.DFS = true, true, chanplan.DFSUsable
			}
		case chanplan.Band6G:
			if f > 6415 {
				continue // UNII-5 only
			}
		}
		out[f] = st
	}
	return out
}

// New generates a building from cfg (deterministic in cfg.Seed).
func New(cfg Config) (*Env, error) {
	cfg = cfg.withDefaults()
	if cfg.Floors < 1 || cfg.Units < 1 {
		return nil, fmt.Errorf("rfsim: %d floors × %d units", cfg.Floors, cfg.Units)
	}
	if cfg.NodesPerMesh < 1 || cfg.NodesPerMesh > 3 {
		return nil, fmt.Errorf("rfsim: nodes per mesh %d not 1..3", cfg.NodesPerMesh)
	}
	total := cfg.Floors * cfg.Units
	if cfg.Meshes > total {
		return nil, fmt.Errorf("rfsim: %d meshes in %d units", cfg.Meshes, total)
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x7266))
	e := &Env{Cfg: cfg, shadow: map[[2]string]float64{}, radar: map[string]map[int]time.Time{}}
	rows := 1
	if cfg.Units >= 4 {
		rows = 2
	}
	cols := (cfg.Units + rows - 1) / rows
	unitPos := func(u int) (floor, row, col int) {
		floor = u / cfg.Units
		k := u % cfg.Units
		return floor, k / cols, k % cols
	}
	place := func(floor, row, col int, fx, fy float64) Pos {
		return Pos{X: (float64(col) + fx) * cfg.UnitWidth, Y: (float64(row) + fy) * cfg.UnitDepth, Z: float64(floor)*cfg.FloorHeight + 1.5}
	}
	meshUnits := rng.Perm(total)[:cfg.Meshes]
	isMesh := map[int]int{}
	for m, u := range meshUnits {
		isMesh[u] = m + 1
	}
	// Foreign APs: one (or more) per unit without our mesh.
	for u := 0; u < total; u++ {
		if isMesh[u] != 0 {
			continue
		}
		floor, row, col := unitPos(u)
		for k := 0; k < cfg.ForeignPerUnit; k++ {
			p := place(floor, row, col, 0.2+0.6*rng.Float64(), 0.2+0.6*rng.Float64())
			peak := cfg.ForeignLoad[0] + (cfg.ForeignLoad[1]-cfg.ForeignLoad[0])*rng.Float64()
			phase := rng.NormFloat64()
			id := fmt.Sprintf("f%02d-%d", u, k)
			e.Foreign = append(e.Foreign,
				Transmitter{ID: id + "/2g", Band: chanplan.Band2G4, Pos: p, Floor: floor, Row: row, Col: col, TxDBm: 20,
					Spec: foreign24(rng), PeakLoad: peak, PhaseHours: phase},
				Transmitter{ID: id + "/5g", Band: chanplan.Band5G, Pos: p, Floor: floor, Row: row, Col: col, TxDBm: 23,
					Spec: foreign5(rng), PeakLoad: peak, PhaseHours: phase})
		}
	}
	// Our meshes.
	spots := [][2]float64{{0.2, 0.3}, {0.8, 0.7}, {0.5, 0.8}}
	for m, u := range meshUnits {
		floor, row, col := unitPos(u)
		for n := 0; n < cfg.NodesPerMesh; n++ {
			node := fmt.Sprintf("m%d-n%d", m+1, n)
			p := place(floor, row, col, spots[n][0], spots[n][1])
			peak := cfg.OwnLoad[0] + (cfg.OwnLoad[1]-cfg.OwnLoad[0])*rng.Float64()
			for _, b := range cfg.Bands {
				tx := 23.0
				if b == chanplan.Band2G4 {
					tx = 20
				}
				id := node + "/" + bandTag(b)
				e.Own = append(e.Own, Transmitter{ID: id, Band: b, Pos: p, Floor: floor, Row: row, Col: col, TxDBm: tx,
					PeakLoad: peak, PhaseHours: rng.NormFloat64(), Own: true, Node: node, Mesh: m + 1})
			}
		}
	}
	sort.Slice(e.Own, func(i, j int) bool { return e.Own[i].ID < e.Own[j].ID })
	for _, o := range e.Own {
		e.Radios = append(e.Radios, chanplan.Radio{
			ID: o.ID, Node: o.Node, Band: o.Band, MaxWidth: cfg.MaxWidth[o.Band], DFS: !cfg.NoDFS,
			Channels: channelStates(o.Band),
		})
	}
	// Shadowing per link, drawn in a fixed order.
	all := append(append([]Transmitter(nil), e.Foreign...), e.Own...)
	sort.Slice(all, func(i, j int) bool { return all[i].ID < all[j].ID })
	for i := range all {
		for j := i + 1; j < len(all); j++ {
			if all[i].Band != all[j].Band {
				continue
			}
			e.shadow[[2]string{all[i].ID, all[j].ID}] = cfg.ShadowDB * rng.NormFloat64()
		}
	}
	return e, nil
}

func bandTag(b chanplan.Band) string {
	switch b {
	case chanplan.Band2G4:
		return "2g"
	case chanplan.Band5G:
		return "5g"
	}
	return "6g"
}

func mustSpec(freq, width, sec int) chanplan.Spec {
	s, err := chanplan.NewSpec(freq, width, sec)
	if err != nil {
		panic(err)
	}
	return s
}

// foreign24 draws a neighbour's 2.4 GHz channel: mostly 1/6/11, sometimes anything.
func foreign24(rng *rand.Rand) chanplan.Spec {
	if rng.Float64() < 0.8 {
		return mustSpec([]int{2412, 2437, 2462}[rng.IntN(3)], 20, 0)
	}
	return mustSpec(2412+5*rng.IntN(11), 20, 0)
}

// foreign5 draws a neighbour's 5 GHz channel: consumer defaults cluster on 36-48 and 149-161.
func foreign5(rng *rand.Rand) chanplan.Spec {
	var first int
	switch x := rng.Float64(); {
	case x < 0.4:
		first = 5180
	case x < 0.7:
		first = 5745
	case x < 0.85:
		first = 5500
	default:
		first = 5260
	}
	width := 80
	if rng.Float64() < 0.2 {
		width = 40
	}
	primary := first + 20*rng.IntN(width/20)
	return mustSpec(primary, width, 0)
}

// PathLoss returns the loss in dB between two transmitters' positions.
func (e *Env) PathLoss(a, b Transmitter) float64 {
	cfg := e.Cfg
	d := math.Sqrt(sq(a.Pos.X-b.Pos.X) + sq(a.Pos.Y-b.Pos.Y) + sq(a.Pos.Z-b.Pos.Z))
	d = math.Max(d, 1)
	f := 2437.0
	switch a.Band {
	case chanplan.Band5G:
		f = 5500
	case chanplan.Band6G:
		f = 6100
	}
	pl0 := 20*math.Log10(f) - 27.55
	walls := absInt(a.Row-b.Row) + absInt(a.Col-b.Col)
	floors := absInt(a.Floor - b.Floor)
	k := [2]string{a.ID, b.ID}
	if a.ID > b.ID {
		k = [2]string{b.ID, a.ID}
	}
	return pl0 + 10*cfg.Exponent*math.Log10(d) + float64(walls)*cfg.WallDB[a.Band] + float64(floors)*cfg.FloorDB[a.Band] + e.shadow[k]
}

// Signal is the true received signal of tx at rx, dBm.
func (e *Env) Signal(tx, rx Transmitter) float64 { return tx.TxDBm - e.PathLoss(tx, rx) }

func sq(x float64) float64 { return x * x }

func absInt(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// Load is a transmitter's airtime at t: an evening-peaked day curve between 30% and 100% of its
// peak.
func (tx Transmitter) Load(t time.Time) float64 {
	h := float64(t.UTC().Hour()) + float64(t.UTC().Minute())/60 - tx.PhaseHours
	day := 0.5 + 0.5*math.Cos(2*math.Pi*(h-20)/24)
	return tx.PeakLoad * (0.3 + 0.7*day)
}

// sensitivity is the weakest signal a scan reports.
const sensitivity = -92.0

// Radar marks radar on radio id's channel s at t: like the kernel, every 20 MHz channel of s
// enters its non-occupancy period (until t+NOP) and loses its CAC.
func (e *Env) Radar(id string, s chanplan.Spec, t time.Time) {
	if e.radar[id] == nil {
		e.radar[id] = map[int]time.Time{}
	}
	for _, f := range s.Subchannels() {
		e.radar[id][f] = t.Add(chanplan.NOP)
	}
}

func (e *Env) channels(r chanplan.Radio, now time.Time) map[int]chanplan.ChannelState {
	out := make(map[int]chanplan.ChannelState, len(r.Channels))
	for f, st := range r.Channels {
		if until, ok := e.radar[r.ID][f]; ok {
			st.LastRadar = until.Add(-chanplan.NOP)
			if now.Before(until) {
				st.DFS, st.NOPUntil = chanplan.DFSUnavailable, until
			}
		}
		out[f] = st
	}
	return out
}

// Measure returns what the site's radios would report at t with our radios on assign (radios
// missing from assign are off): noisy when rng is non-nil, the truth when it is nil.
func (e *Env) Measure(t time.Time, assign chanplan.Assignment, rng *rand.Rand) chanplan.Input {
	cfg := e.Cfg
	noise := func(sigma float64) float64 {
		if rng == nil {
			return 0
		}
		return sigma * rng.NormFloat64()
	}
	in := chanplan.Input{Now: t}
	var p chanplan.Params
	for i, o := range e.Own {
		r := e.Radios[i]
		r.Channels = e.channels(r, t)
		r.Current = assign[o.ID]
		r.Load = clamp(o.Load(t)*(1+noise(cfg.LoadNoise)), 0, 1)
		busy := map[int]float64{}
		for _, f := range e.Foreign {
			if f.Band != o.Band {
				continue
			}
			s := e.Signal(f, o)
			load := f.Load(t)
			for _, ch := range chanplan.Channels20(o.Band) {
				busy[ch] += p.Coupling(s) * load * chanplan.Overlap(chanplan.Spec{Freq: ch, Width: 20, Center1: ch}, f.Spec)
			}
			if s+noise(cfg.SignalNoiseDB) < sensitivity {
				continue
			}
			r.Neighbors = append(r.Neighbors, chanplan.Neighbor{BSSID: f.ID, Spec: f.Spec,
				SignalDBm: s + noise(cfg.SignalNoiseDB), Load: clamp(load*(1+noise(cfg.LoadNoise)), 0, 1)})
		}
		for _, q := range e.Own {
			if q.ID == o.ID || q.Band != o.Band {
				continue
			}
			qs, ok := assign[q.ID]
			if !ok {
				continue
			}
			s := e.Signal(q, o)
			for _, ch := range chanplan.Channels20(o.Band) {
				busy[ch] += p.Coupling(s) * q.Load(t) * chanplan.Overlap(chanplan.Spec{Freq: ch, Width: 20, Center1: ch}, qs)
			}
		}
		for _, ch := range chanplan.Channels20(o.Band) {
			if _, ok := r.Channels[ch]; !ok {
				continue
			}
			r.Survey = append(r.Survey, chanplan.SurveyPoint{Freq: ch, Busy: clamp(busy[ch]+noise(cfg.BusyNoise), 0, 1), NoiseDBm: -95})
		}
		in.Radios = append(in.Radios, r)
	}
	for i, a := range e.Own {
		for _, b := range e.Own[i+1:] {
			if a.Band != b.Band {
				continue
			}
			s := e.Signal(a, b)
			if s+noise(cfg.SignalNoiseDB) < sensitivity {
				continue
			}
			in.Links = append(in.Links, chanplan.Link{A: a.ID, B: b.ID, SignalDBm: s + noise(cfg.SignalNoiseDB)})
		}
	}
	return in
}

func clamp(x, lo, hi float64) float64 { return math.Max(lo, math.Min(hi, x)) }

// Startup is what the site reports at t before any of our radios is up (the situation of a
// first plan, and of hostapd's ACS at start-up): measured with noise from rng (nil: the truth),
// DFS channels counted as cleared (every radio pays its start-up CAC whichever channel it
// takes).
func (e *Env) Startup(t time.Time, rng *rand.Rand) chanplan.Input {
	in := e.Measure(t, nil, rng)
	for i := range in.Radios {
		in.Radios[i].Channels = clearDFS(in.Radios[i].Channels)
	}
	return in
}

func clearDFS(m map[int]chanplan.ChannelState) map[int]chanplan.ChannelState {
	out := make(map[int]chanplan.ChannelState, len(m))
	for f, st := range m {
		if st.Radar && st.DFS == chanplan.DFSUsable {
			st.DFS = chanplan.DFSAvailable
		}
		out[f] = st
	}
	return out
}

// Truth is the noiseless start-up input without surveys: the model the planners are scored
// with (Score) and the exact optimum is computed on.
func (e *Env) Truth(t time.Time) chanplan.Input {
	in := e.Startup(t, nil)
	for i := range in.Radios {
		in.Radios[i].Survey = nil
	}
	return in
}

// Score evaluates an assignment against the truth at t, as if every radio were already on its
// channel: the one yardstick for our plans, hostapd's ACS and the optimum.
func (e *Env) Score(t time.Time, assign chanplan.Assignment) (chanplan.Cost, error) {
	return chanplan.Evaluate(e.Truth(t), assign)
}

// ACSBaseline is what stock hostapd ACS would pick on each of our radios: every radio, in ID
// order, surveys every channel (5 scans of ~105 ms, busy time from the foreign BSSes and from
// our radios already up) and runs hostapd's algorithm at its configured width. It returns the
// assignment (a radio that ACS cannot place gets its first allowed channel).
func (e *Env) ACSBaseline(t time.Time, rng *rand.Rand) (chanplan.Assignment, error) {
	assign := chanplan.Assignment{}
	for i, o := range e.Own {
		in := e.Measure(t, assign, rng)
		var me chanplan.Radio
		for _, r := range in.Radios {
			if r.ID == o.ID {
				me = r
			}
		}
		busy := map[int]float64{}
		for _, sp := range me.Survey {
			busy[sp.Freq] = sp.Busy
		}
		var chans []chanplan.ACSChannel
		for _, f := range chanplan.Channels20(o.Band) {
			st, ok := e.Radios[i].Channels[f]
			if !ok {
				continue
			}
			c := chanplan.ACSChannel{Freq: f, Radar: st.Radar, MaxTxPower: int(st.MaxPowerDBm),
				NoHT40Minus: st.NoHT40Minus, NoHT40Plus: st.NoHT40Plus, No80: st.No80, No160: st.No160}
			for s := 0; s < 5; s++ {
				b := busy[f]
				if rng != nil {
					b = clamp(b+e.Cfg.BusyNoise*rng.NormFloat64(), 0, 1)
				}
				c.Surveys = append(c.Surveys, chanplan.ACSSurvey{NF: -95, ChannelTime: 105,
					ChannelTimeBusy: uint64(math.Round(105 * b)), HasNF: true, HasTime: true, HasBusy: true})
			}
			chans = append(chans, c)
		}
		res, err := chanplan.ACS(o.Band, chans, chanplan.ACSConfig{Width: e.Radios[i].MaxWidth, Secondary: 1, ExcludeDFS: e.Cfg.NoDFS})
		if err != nil {
			return nil, fmt.Errorf("rfsim: acs %s: %w", o.ID, err)
		}
		assign[o.ID] = res.Spec
	}
	return assign, nil
}
