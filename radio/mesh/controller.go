package mesh

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"time"

	"meshroot/radio/meshproto"
	"meshroot/radio/steer"
)

// Controller is the gateway's steering brain: it keeps the site's BSSes and clients in a
// radio/steer Tracker from the nodes' reports, asks the policy every Tick, and sends the
// resulting commands to the nodes.
type Controller struct {
	n   *Node
	log *slog.Logger

	mu       sync.Mutex
	tracker  *steer.Tracker
	decider  steer.Decider
	topo     map[string]meshproto.Topology
	bsses    map[string]meshproto.BSSInfo
	version  uint64
	bssSig   string
	lastNbrs time.Time
	actions  []ActionRecord
	ids      uint64
}

// ActionRecord is one command the controller sent.
type ActionRecord struct {
	At     time.Time
	Action steer.Action
	Node   string
	Err    string
}

// An AP's station entry idle for longer than staleIdleMs is a leftover (a station that roamed
// away with FT); one idle for less than activeIdleMs is where the station is.
const (
	staleIdleMs  = 3000
	activeIdleMs = 1000
)

func newController(n *Node) *Controller {
	d := n.cfg.Decider
	if d == nil {
		d = steer.NewPolicy(n.cfg.Steering)
	}
	return &Controller{n: n, log: n.log.With("role", "controller"), tracker: steer.NewTracker(), decider: d,
		topo: map[string]meshproto.Topology{}, bsses: map[string]meshproto.BSSInfo{}}
}

// Actions returns the commands sent so far.
func (c *Controller) Actions() []ActionRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]ActionRecord(nil), c.actions...)
}

// ClientView is what the controller knows of a client.
type ClientView struct {
	MAC   string
	BSS   string
	Node  string
	Caps  steer.Caps
	Roams []steer.Roam
	// Samples are the latest signal estimates per BSSID.
	Samples map[string]steer.Sample
}

// Client returns the controller's view of a station (ok false when unknown).
func (c *Controller) Client(mac string) (ClientView, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl := c.tracker.Client(mac)
	if cl == nil {
		return ClientView{}, false
	}
	v := ClientView{MAC: mac, BSS: cl.BSS, Caps: cl.Caps, Roams: append([]steer.Roam(nil), cl.Roams...), Samples: map[string]steer.Sample{}}
	for b, smp := range cl.Samples {
		v.Samples[b] = smp
	}
	if b, ok := c.bsses[cl.BSS]; ok {
		v.Node = b.Node
	}
	return v, true
}

// BSSes returns the site's BSSes the controller knows.
func (c *Controller) BSSes() []meshproto.BSSInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sortedBSSes()
}

func (c *Controller) sortedBSSes() []meshproto.BSSInfo {
	out := make([]meshproto.BSSInfo, 0, len(c.bsses))
	for _, b := range c.bsses {
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].BSSID.String() < out[j].BSSID.String() })
	return out
}

func (c *Controller) peer(string, net.Addr) {}

func toSteerCaps(cp meshproto.Capabilities) steer.Caps {
	sc := steer.Caps{BTM: cp.BTM, Beacon: cp.BeaconActive || cp.BeaconPassive || cp.BeaconTable, FT: cp.FT}
	for _, b := range cp.Bands {
		sc.Bands = append(sc.Bands, steerBand(b))
	}
	return sc
}

// deliver takes a validated report from a node.
func (c *Controller) deliver(ctx context.Context, sender string, v any) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	switch m := v.(type) {
	case *meshproto.Topology:
		if m.Node != sender {
			return
		}
		c.topo[m.Node] = *m
		c.rebuildLocked(ctx, now)
	case *meshproto.APMetrics:
		for _, b := range m.BSSes {
			if c.bsses[b.BSSID.String()].Node != sender {
				continue
			}
			for _, s := range b.Stations {
				mac, bssid := s.MAC.String(), b.BSSID.String()
				// hostapd keeps a station that left with FT (the old AP hears nothing of
				// it) until its inactivity timeout: an idle entry is not an association.
				if s.IdleMs > staleIdleMs {
					continue
				}
				cl := c.tracker.Client(mac)
				switch {
				case cl == nil || cl.BSS == "":
					c.tracker.Associated(now, mac, bssid, toSteerCaps(s.Caps))
				case cl.BSS != bssid:
					// Seen active here while we believe it elsewhere: believe it only when
					// the other association is not fresh news.
					if now.Sub(cl.Since) < 2*time.Second || s.IdleMs > activeIdleMs {
						continue
					}
					c.tracker.Associated(now, mac, bssid, toSteerCaps(s.Caps))
				}
				c.tracker.Signal(now, mac, bssid, float64(s.Signal), steer.Uplink)
			}
		}
	case *meshproto.ClientEvent:
		if c.bsses[m.BSSID.String()].Node != sender {
			return
		}
		mac, bssid := m.MAC.String(), m.BSSID.String()
		if m.Joined {
			cp := steer.Caps{BTM: true, Beacon: true}
			if m.Station != nil {
				cp = toSteerCaps(m.Station.Caps)
			}
			c.tracker.Associated(now, mac, bssid, cp)
			if m.Station != nil && m.Station.Signal != 0 {
				c.tracker.Signal(now, mac, bssid, float64(m.Station.Signal), steer.Uplink)
			}
			c.log.Info("client joined", "client", mac, "bssid", bssid, "node", sender)
		} else {
			c.tracker.Disassociated(now, mac, bssid)
			c.log.Info("client left", "client", mac, "bssid", bssid, "node", sender)
		}
	case *meshproto.BeaconMetrics:
		mac := m.MAC.String()
		if m.Error != "" {
			c.tracker.BeaconFailed(mac)
			return
		}
		for _, r := range m.Report {
			if _, ok := c.bsses[r.BSSID.String()]; ok {
				c.tracker.Signal(now, mac, r.BSSID.String(), r.Signal(), steer.Report)
			}
		}
	case *meshproto.BTMReport:
		c.tracker.BTMResponse(now, m.MAC.String(), m.Status, m.Target.String())
		c.log.Info("BSS transition response", "client", m.MAC.String(), "status", m.Status, "target", m.Target.String())
	case *meshproto.SteerDone:
		if !m.OK {
			c.log.Info("steering failed", "client", m.MAC.String(), "detail", m.Detail)
		}
	case *meshproto.BackhaulResult:
		c.log.Info("backhaul steering result", "node", m.Node, "ok", m.OK, "error", m.Error)
	}
}

// rebuildLocked recomputes the site's BSS list and, when it changed, tells every node.
func (c *Controller) rebuildLocked(ctx context.Context, now time.Time) {
	c.bsses = map[string]meshproto.BSSInfo{}
	var list []steer.BSS
	for _, t := range c.topo {
		for _, b := range t.BSSes {
			c.bsses[b.BSSID.String()] = b
		}
	}
	for _, b := range c.sortedBSSes() {
		w := b.Width
		if w == 0 {
			w = 20
		}
		list = append(list, steer.BSS{BSSID: b.BSSID.String(), Node: b.Node, Band: steerBand(b.Band), Width: w})
	}
	sig := fmt.Sprint(c.sortedBSSes())
	if sig == c.bssSig {
		return
	}
	c.bssSig = sig
	c.tracker.SetBSSes(list)
	c.version++
	c.sendNeighborsLocked(now)
}

func (c *Controller) sendNeighborsLocked(now time.Time) {
	nb := &meshproto.Neighbors{Version: c.version, BSSes: c.sortedBSSes()}
	if len(nb.BSSes) == 0 {
		return
	}
	c.lastNbrs = now
	nodes := make([]string, 0, len(c.topo))
	for n := range c.topo {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	for _, node := range nodes {
		go func() {
			if err := c.n.sendTo(node, meshproto.TypeNeighbors, nb); err != nil {
				c.log.Debug("neighbors", "node", node, "err", err)
			}
		}()
	}
}

// tick asks the policy and carries out its actions.
func (c *Controller) tick(ctx context.Context, now time.Time) {
	c.mu.Lock()
	if now.Sub(c.lastNbrs) >= 30*time.Second {
		c.version++
		c.sendNeighborsLocked(now)
	}
	acts := c.decider.Decide(now, c.tracker)
	type out struct {
		node string
		t    meshproto.Type
		v    any
		a    steer.Action
	}
	var msgs []out
	for _, a := range acts {
		from, ok := c.bsses[a.From]
		if !ok {
			continue
		}
		bssid, _ := meshproto.ParseMAC(a.From)
		mac, err := meshproto.ParseMAC(a.Client)
		if err != nil {
			continue
		}
		c.ids++
		switch a.Kind {
		case steer.ActBeaconRequest:
			q := &meshproto.BeaconQuery{ID: c.ids, BSSID: bssid, MAC: mac, Mode: meshproto.BeaconActive, DurationTU: 50, SSID: from.SSID}
			seen := map[meshproto.ChannelRef]bool{}
			for _, b := range c.sortedBSSes() {
				ch := meshproto.ChannelRef{OpClass: b.OpClass, Channel: b.Channel}
				if b.SSID == from.SSID && !seen[ch] && len(q.Channels) < 16 {
					seen[ch] = true
					q.Channels = append(q.Channels, ch)
				}
			}
			msgs = append(msgs, out{from.Node, meshproto.TypeBeaconQuery, q, a})
		case steer.ActSteer:
			s := &meshproto.Steer{ID: c.ids, BSSID: bssid, MAC: mac, DisassocImminent: a.DisassocImminent,
				DisassocTimer: a.DisassocTimer, ValidityTBTT: max(min(a.Validity, 255), 1), Reason: a.Reason}
			for _, t := range a.Candidates {
				if b, ok := c.bsses[t.BSSID]; ok && len(s.Targets) < meshproto.MaxTargets {
					s.Targets = append(s.Targets, meshproto.SteerTarget{BSS: b, Preference: max(min(t.Pref, 255), 1)})
				}
			}
			if len(s.Targets) == 0 {
				continue
			}
			msgs = append(msgs, out{from.Node, meshproto.TypeSteer, s, a})
		case steer.ActKick:
			// Block (and deauthenticate) per node owning the BSSes; the serving node at least.
			byNode := map[string][]meshproto.MAC{from.Node: {bssid}}
			for _, b := range a.Block {
				if info, ok := c.bsses[b]; ok && info.BSSID != bssid {
					byNode[info.Node] = append(byNode[info.Node], info.BSSID)
				}
			}
			for node, list := range byNode {
				ac := &meshproto.AssocControl{ID: c.ids, MAC: mac, BSSIDs: list, Deauth: node == from.Node, Reason: 5}
				if len(a.Block) > 0 {
					ac.Block, ac.ValiditySec = true, max(int(a.BlockFor/time.Second), 1)
				}
				msgs = append(msgs, out{node, meshproto.TypeAssocControl, ac, a})
			}
		}
	}
	c.mu.Unlock()
	sent := map[uint64]bool{}
	for _, m := range msgs {
		err := c.n.sendTo(m.node, m.t, m.v)
		rec := ActionRecord{At: now, Action: m.a, Node: m.node}
		if err != nil {
			rec.Err = err.Error()
			c.log.Warn("command not sent", "node", m.node, "type", m.t.String(), "err", err)
		}
		c.mu.Lock()
		c.actions = append(c.actions, rec)
		if err == nil && !sent[m.a.ID] {
			sent[m.a.ID] = true
			c.tracker.Steered(now, m.a)
		}
		c.mu.Unlock()
		if m.a.Kind != steer.ActBeaconRequest {
			c.log.Info("steering", "action", m.a.Kind.String(), "client", m.a.Client, "from", m.a.From, "to", m.a.Targets(), "reason", m.a.Reason)
		}
	}
}
