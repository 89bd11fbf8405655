package chanplan

import (
	"fmt"
	"math"
	"sort"
	"time"
)

// Smoother turns the stream of per-radio reports into the planner's Input: exponentially
// weighted moving averages (time constant Tau) of neighbour signal and load, survey busy time,
// own load and mutual link signal, so that one noisy survey cannot move a channel. A neighbour
// or link not heard for Forget disappears.
type Smoother struct {
	// Tau is the averaging time constant (default 2 h).
	Tau time.Duration
	// Forget drops neighbours and links not reported for this long (default 6 h).
	Forget time.Duration

	radios map[string]*smoothRadio
	links  map[[2]string]*ewma
}

type ewma struct {
	v    float64
	last time.Time
	seen bool
}

func (e *ewma) add(x float64, t time.Time, tau time.Duration) {
	if !e.seen || tau <= 0 {
		e.v, e.last, e.seen = x, t, true
		return
	}
	dt := t.Sub(e.last)
	if dt < 0 {
		dt = 0
	}
	a := 1 - math.Exp(-float64(dt)/float64(tau))
	e.v += a * (x - e.v)
	e.last = t
}

type smoothNeighbor struct {
	spec   Spec
	signal ewma // in dBm
	load   ewma
}

type smoothRadio struct {
	r         Radio // latest static fields (channels, current, widths...)
	load      ewma
	neighbors map[string]*smoothNeighbor
	survey    map[int]*ewma
}

// NewSmoother returns an empty smoother.
func NewSmoother() *Smoother {
	return &Smoother{radios: map[string]*smoothRadio{}, links: map[[2]string]*ewma{}}
}

func (s *Smoother) tau() time.Duration {
	if s.Tau == 0 {
		return 2 * time.Hour
	}
	return s.Tau
}

func (s *Smoother) forget() time.Duration {
	if s.Forget == 0 {
		return 6 * time.Hour
	}
	return s.Forget
}

// Observe adds one report of a radio taken at t. Neighbours without a BSSID are keyed by their
// channel and position in the report.
func (s *Smoother) Observe(r Radio, t time.Time) {
	sr := s.radios[r.ID]
	if sr == nil {
		sr = &smoothRadio{neighbors: map[string]*smoothNeighbor{}, survey: map[int]*ewma{}}
		s.radios[r.ID] = sr
	}
	sr.r = r
	sr.load.add(r.Load, t, s.tau())
	for i, nb := range r.Neighbors {
		key := nb.BSSID
		if key == "" {
			key = fmt.Sprintf("%v#%d", nb.Spec, i)
		}
		sn := sr.neighbors[key]
		if sn == nil {
			sn = &smoothNeighbor{}
			sr.neighbors[key] = sn
		}
		sn.spec = nb.Spec
		sn.signal.add(nb.SignalDBm, t, s.tau())
		sn.load.add(nb.Load, t, s.tau())
	}
	for _, sp := range r.Survey {
		e := sr.survey[sp.Freq]
		if e == nil {
			e = &ewma{}
			sr.survey[sp.Freq] = e
		}
		e.add(sp.Busy, t, s.tau())
	}
}

// ObserveLink adds one measurement of the signal between two of our radios.
func (s *Smoother) ObserveLink(l Link, t time.Time) {
	a, b := l.A, l.B
	if a > b {
		a, b = b, a
	}
	k := [2]string{a, b}
	e := s.links[k]
	if e == nil {
		e = &ewma{}
		s.links[k] = e
	}
	e.add(l.SignalDBm, t, s.tau())
}

// SetCurrent updates a radio's operating channel (after a switch) without a new report.
func (s *Smoother) SetCurrent(id string, spec Spec) {
	if sr := s.radios[id]; sr != nil {
		sr.r.Current = spec
	}
}

// Input returns the smoothed view at now.
func (s *Smoother) Input(now time.Time) Input {
	in := Input{Now: now}
	ids := make([]string, 0, len(s.radios))
	for id := range s.radios {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		sr := s.radios[id]
		r := sr.r
		r.Load = sr.load.v
		r.Neighbors = nil
		keys := make([]string, 0, len(sr.neighbors))
		for k, n := range sr.neighbors {
			if now.Sub(n.signal.last) > s.forget() {
				delete(sr.neighbors, k)
				continue
			}
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			n := sr.neighbors[k]
			r.Neighbors = append(r.Neighbors, Neighbor{BSSID: k, Spec: n.spec, SignalDBm: n.signal.v, Load: n.load.v})
		}
		r.Survey = nil
		freqs := make([]int, 0, len(sr.survey))
		for f := range sr.survey {
			freqs = append(freqs, f)
		}
		sort.Ints(freqs)
		for _, f := range freqs {
			r.Survey = append(r.Survey, SurveyPoint{Freq: f, Busy: sr.survey[f].v})
		}
		in.Radios = append(in.Radios, r)
	}
	keys := make([][2]string, 0, len(s.links))
	for k, e := range s.links {
		if now.Sub(e.last) > s.forget() {
			delete(s.links, k)
			continue
		}
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i][0] != keys[j][0] {
			return keys[i][0] < keys[j][0]
		}
		return keys[i][1] < keys[j][1]
	})
	for _, k := range keys {
		in.Links = append(in.Links, Link{A: k[0], B: k[1], SignalDBm: s.links[k].v})
	}
	return in
}

// LoadProfile learns the site's busy hour from its traffic: an average of the total load per
// hour of the day (site local time). An hour is busy when its average is at least Share of the
// busiest hour's (default 0.8) and the busiest hour is not idle.
type LoadProfile struct {
	// Location is the site's time zone (default UTC).
	Location *time.Location
	// Share is the fraction of the peak that makes an hour busy (default 0.8).
	Share float64

	hours [24]ewma
	days  map[string]bool
}

// Observe adds a load sample (any unit, e.g. bytes/s or airtime share) taken at t.
func (p *LoadProfile) Observe(t time.Time, load float64) {
	loc := p.Location
	if loc == nil {
		loc = time.UTC
	}
	lt := t.In(loc)
	// Per hour a slow average over days: a week-old pattern still counts.
	p.hours[lt.Hour()].add(load, t, 3*24*time.Hour)
	if p.days == nil {
		p.days = map[string]bool{}
	}
	p.days[lt.Format("2006-01-02")] = true
}

// Busy reports whether t falls in a busy hour. With less than one full day of samples nothing is
// busy (the profile is not learned yet).
func (p *LoadProfile) Busy(t time.Time) bool {
	if len(p.days) < 2 {
		return false
	}
	share := p.Share
	if share == 0 {
		share = 0.8
	}
	peak := 0.0
	for _, h := range p.hours {
		peak = math.Max(peak, h.v)
	}
	if peak <= 0 {
		return false
	}
	loc := p.Location
	if loc == nil {
		loc = time.UTC
	}
	return p.hours[t.In(loc).Hour()].v >= share*peak
}
