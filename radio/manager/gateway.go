package manager

import (
	"context"
	"maps"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"meshroot/radio/chanplan"
	"meshroot/radio/meshproto"
)

// gateway is the planner side of the manager (only on the gateway node).
type gateway struct {
	m *Manager

	mu      sync.Mutex
	smooth  *chanplan.Smoother
	profile chanplan.LoadProfile
	hist    chanplan.History
	// own maps our BSSIDs (lower case) to their radio; nodes maps radio IDs to their node and
	// its control address (nil for the gateway's own radios).
	own     map[string]string
	node    map[string]string
	addr    map[string]net.Addr
	latest  map[string]chanplan.Radio
	planID  uint64
	results []meshproto.PlanResult
}

func newGateway(m *Manager) *gateway {
	g := &gateway{m: m, smooth: chanplan.NewSmoother(), own: map[string]string{}, node: map[string]string{},
		addr: map[string]net.Addr{}, latest: map[string]chanplan.Radio{}}
	g.profile.Location = m.cfg.Location
	return g
}

// handle processes a message from a satellite.
func (g *gateway) handle(ctx context.Context, msg meshproto.Message, from net.Addr) {
	log := g.m.log.With("from", msg.Sender)
	switch msg.Type {
	case meshproto.TypeRadioReport:
		var rep meshproto.RadioReport
		if err := msg.Decode(&rep); err != nil {
			log.Warn("bad report", "err", err)
			return
		}
		if rep.Node != msg.Sender {
			log.Warn("report for another node refused", "node", rep.Node)
			return
		}
		g.ingest(rep, from)
	case meshproto.TypeRadar:
		var ev meshproto.Radar
		if err := msg.Decode(&ev); err != nil {
			log.Warn("bad radar report", "err", err)
			return
		}
		g.radar(ctx, ev)
	case meshproto.TypePlanResult:
		var res meshproto.PlanResult
		if err := msg.Decode(&res); err != nil {
			log.Warn("bad plan result", "err", err)
			return
		}
		g.result(res)
	}
}

// ingest feeds a node's report into the smoothed view.
func (g *gateway) ingest(rep meshproto.RadioReport, from net.Addr) {
	g.mu.Lock()
	defer g.mu.Unlock()
	at := rep.At
	if at.IsZero() || at.After(g.m.cfg.Now()) {
		at = g.m.cfg.Now()
	}
	total := 0.0
	for b, id := range ownBSSIDs(rep.Radios) {
		g.own[b] = id
	}
	for _, rs := range rep.Radios {
		r, problems, err := chanplan.Sanitize(rs.Radio)
		if err != nil {
			g.m.log.Warn("radio report refused", "node", rep.Node, "err", err)
			continue
		}
		if len(problems) > 0 {
			g.m.log.Warn("radio report cleaned", "node", rep.Node, "radio", r.ID, "dropped", len(problems), "first", problems[0])
		}
		if r.Node != rep.Node {
			continue // a node reports only its own radios
		}
		g.node[r.ID] = rep.Node
		g.addr[r.ID] = from
		g.latest[r.ID] = r
		g.smooth.Observe(r, at)
		total += r.Load
	}
	g.profile.Observe(at, total)
}

// input is the smoothed view with our own BSSes turned from neighbours into links.
func (g *gateway) input() chanplan.Input {
	in := g.smooth.Input(g.m.cfg.Now())
	links := map[[2]string]float64{}
	for i := range in.Radios {
		r := &in.Radios[i]
		if l, ok := g.latest[r.ID]; ok {
			r.Channels, r.Current = l.Channels, l.Current
		}
		kept := r.Neighbors[:0]
		for _, nb := range r.Neighbors {
			owner, ours := g.own[strings.ToLower(nb.BSSID)]
			if !ours {
				kept = append(kept, nb)
				continue
			}
			if owner == r.ID {
				continue
			}
			k := [2]string{r.ID, owner}
			if k[0] > k[1] {
				k = [2]string{owner, r.ID}
			}
			if s, ok := links[k]; !ok || nb.SignalDBm > s {
				links[k] = nb.SignalDBm
			}
		}
		r.Neighbors = kept
	}
	keys := make([][2]string, 0, len(links))
	for k := range links {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i][0] != keys[j][0] {
			return keys[i][0] < keys[j][0]
		}
		return keys[i][1] < keys[j][1]
	})
	for _, k := range keys {
		in.Links = append(in.Links, chanplan.Link{A: k[0], B: k[1], SignalDBm: links[k]})
	}
	return in
}

// plan runs a planning round and dispatches the changes.
func (g *gateway) plan(ctx context.Context, why string, force ...string) {
	g.mu.Lock()
	in := g.input()
	in.Force = force
	if len(in.Radios) == 0 {
		g.mu.Unlock()
		return
	}
	pol := g.m.cfg.Policy
	if pol.Busy == nil {
		pol.Busy = g.profile.Busy
	}
	d, err := pol.Decide(in, g.hist)
	if err != nil {
		g.mu.Unlock()
		g.m.log.Error("planning failed", "why", why, "err", err)
		return
	}
	if len(d.Changes) == 0 {
		g.mu.Unlock()
		g.m.log.Debug("plan: no change", "why", why, "reason", d.Reason)
		return
	}
	g.hist.Record(d, g.m.cfg.Now())
	g.planID++
	id := g.planID
	byNode := map[string][]meshproto.Move{}
	addrs := map[string]net.Addr{}
	for _, c := range d.Changes {
		n := g.node[c.Radio]
		byNode[n] = append(byNode[n], meshproto.Move{Radio: c.Radio, Spec: c.To, Forced: c.Forced})
		addrs[n] = g.addr[c.Radio]
		g.smooth.SetCurrent(c.Radio, c.To)
		if l, ok := g.latest[c.Radio]; ok {
			l.Current = c.To
			g.latest[c.Radio] = l
		}
	}
	g.mu.Unlock()
	g.m.log.Info("channel plan", "why", why, "id", id, "changes", len(d.Changes), "reason", d.Reason,
		"gain", d.Gain)
	for _, n := range sortedKeys(byNode) {
		p := meshproto.ChannelPlan{ID: id, Moves: byNode[n]}
		if n == g.m.cfg.Node {
			go g.m.applyPlan(ctx, p, n, nil)
			continue
		}
		if addrs[n] == nil || g.m.deps.Conn == nil {
			g.m.log.Warn("no address for node", "node", n)
			continue
		}
		if err := g.m.deps.Conn.Send(addrs[n], meshproto.TypeChannelPlan, p); err != nil {
			g.m.log.Warn("send plan", "node", n, "err", err)
		}
	}
}

// radar notes a radar report: the radio's channel states come with its next report; a forced
// round now makes sure it sits on a good channel.
func (g *gateway) radar(ctx context.Context, ev meshproto.Radar) {
	g.mu.Lock()
	if l, ok := g.latest[ev.Radio]; ok {
		l.Channels = maps.Clone(l.Channels) // the report's map may be shared with the radio
		for _, f := range ev.Spec.Subchannels() {
			st := l.Channels[f]
			st.LastRadar = ev.At
			st.DFS, st.NOPUntil = chanplan.DFSUnavailable, ev.At.Add(chanplan.NOP)
			if l.Channels != nil {
				l.Channels[f] = st
			}
		}
		if !ev.MovedTo.IsZero() {
			l.Current = ev.MovedTo
			g.smooth.SetCurrent(ev.Radio, ev.MovedTo)
		}
		g.latest[ev.Radio] = l
	}
	g.mu.Unlock()
	g.m.log.Warn("radar on a radio of the site", "radio", ev.Radio, "channel", ev.Spec.String(), "moved_to", ev.MovedTo.String())
	force := []string{}
	if ev.MovedTo.IsZero() {
		force = append(force, ev.Radio)
	}
	g.plan(ctx, "radar", force...)
}

// result records a plan result.
func (g *gateway) result(res meshproto.PlanResult) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.results = append(g.results, res)
	if len(g.results) > 64 {
		g.results = g.results[len(g.results)-64:]
	}
	if l, ok := g.latest[res.Radio]; ok && !res.Spec.IsZero() {
		l.Current = res.Spec
		g.latest[res.Radio] = l
		g.smooth.SetCurrent(res.Radio, res.Spec)
	}
}

// Results returns the latest plan results (for the device API and tests).
func (m *Manager) Results() []meshproto.PlanResult {
	if m.gw == nil {
		return nil
	}
	m.gw.mu.Lock()
	defer m.gw.mu.Unlock()
	return append([]meshproto.PlanResult(nil), m.gw.results...)
}

// Current returns the operating channel of each of this node's radios.
func (m *Manager) Current() map[string]chanplan.Spec {
	out := map[string]chanplan.Spec{}
	for _, r := range m.sortedRadios() {
		out[r.cfg.ID] = r.spec()
	}
	return out
}

// RadarMemory returns when radar was last seen on each 20 MHz channel of a radio (the manager
// keeps a channel blocked for chanplan.NOP after that, and avoids it for a day).
func (m *Manager) RadarMemory(radioID string) map[int]time.Time {
	m.mu.Lock()
	r := m.radios[radioID]
	m.mu.Unlock()
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.radar)
}
