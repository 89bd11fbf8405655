// Package backhaul chooses and keeps each satellite node's path to the gateway.
//
// Links: a satellite reaches other nodes over wired ports (when a cable runs to another node, or
// to a switch shared with one) and over the wireless backhaul, an IEEE 802.11s mesh on a
// 5 GHz radio with SAE keyed by the site's mesh key. 802.11s rather than 4-address station
// links: the kernel's mesh (mac80211, proven on mac80211_hwsim here) forms links with every
// node in range by itself, forwards over several hops (HWMP) and can be bridged, and a node can
// use several peers at once, so a lost parent is replaced by a peer that is already
// authenticated and linked — a 4-address station link would have to scan, authenticate and
// associate to a new parent first, which alone takes seconds. The price is HWMP's own
// path selection underneath ours, which we keep from fighting ours by choosing the next hop
// ourselves per destination (the mesh then only forwards within one hop).
//
// Path metric (batman-adv B.A.T.M.A.N. V style): every node advertises in its hellos its own
// end-to-end throughput estimate to the gateway (the gateway advertises its uplink's). A node
// computes, for each neighbour, min(link throughput, neighbour's path throughput), halves it
// when the neighbour's own uplink is wireless too (the same air is used twice), and applies the
// per-hop penalty ((255 − hop_penalty)/255, hop_penalty 30 by default). The best path wins,
// with wired paths preferred whenever one works.
//
// Stability: an unforced change needs a path at least Hysteresis (10%) better, and the
// Selector makes at most MaxSwitches (4) unforced changes per hour; a return to a wired link
// waits until the link has been up and hello-ing for WiredHold (3 s). A forced change — the
// current link's carrier is gone or its neighbour missed DeadAfter of hellos (3 × 200 ms) —
// happens at once and is not counted, so a lost backhaul is replaced within about a second.
package backhaul

import (
	"fmt"
	"sort"
	"time"

	"meshroot/radio/steer"
)

// Media.
const (
	Wired    = "wired"
	Wireless = "wireless"
)

// Link is one neighbour reachable over one local interface.
type Link struct {
	// Peer is the neighbour node; Iface the local interface; Medium wired or wireless.
	Peer, Iface, Medium string
	// Mbps is the link's throughput estimate.
	Mbps float64
	// PeerPathMbps, PeerHops, PeerParent and PeerMedium are what the neighbour's last hello said
	// of its own path to the gateway (PeerParent "" and PeerHops 0 on the gateway).
	PeerPathMbps float64
	PeerHops     int
	PeerParent   string
	PeerMedium   string
	// PeerGateway marks the gateway.
	PeerGateway bool
	// LastHello is when the neighbour was last heard on this link; UpSince since when hellos
	// come without a gap (zero when the link is down); Carrier is the interface's carrier.
	LastHello time.Time
	UpSince   time.Time
	Carrier   bool
}

// Key identifies a link.
func (l Link) Key() string { return l.Peer + "@" + l.Iface }

// Choice is the chosen path.
type Choice struct {
	Peer, Iface, Medium string
	// PathMbps is the end-to-end estimate through this link; Hops the number of hops.
	PathMbps float64
	Hops     int
}

// IsZero reports no path.
func (c Choice) IsZero() bool { return c.Peer == "" }

func (c Choice) String() string {
	if c.IsZero() {
		return "none"
	}
	return fmt.Sprintf("%s via %s (%s, %.0f Mbit/s, %d hops)", c.Peer, c.Iface, c.Medium, c.PathMbps, c.Hops)
}

// Config tunes the Selector. Zero fields take the defaults.
type Config struct {
	// HopPenalty is batman-adv's hop_penalty (0..255; 30).
	HopPenalty int
	// Hysteresis: an unforced change needs a path this much better (0.10).
	Hysteresis float64
	// MaxSwitches unforced changes per hour (4).
	MaxSwitches int
	// DeadAfter: a neighbour not heard for this long is gone (600 ms: 3 hellos of 200 ms).
	DeadAfter time.Duration
	// WiredHold: a wired link must be up this long before the node moves to it (3 s).
	WiredHold time.Duration
	// MaxHops bounds paths (8): longer ones are ignored (count-to-infinity guard).
	MaxHops int
}

func (c Config) withDefaults() Config {
	if c.HopPenalty == 0 {
		c.HopPenalty = 30
	}
	if c.Hysteresis == 0 {
		c.Hysteresis = 0.10
	}
	if c.MaxSwitches == 0 {
		c.MaxSwitches = 4
	}
	if c.DeadAfter == 0 {
		c.DeadAfter = 600 * time.Millisecond
	}
	if c.WiredHold == 0 {
		c.WiredHold = 3 * time.Second
	}
	if c.MaxHops == 0 {
		c.MaxHops = 8
	}
	return c
}

// Selector keeps one node's choice. Not safe for concurrent use.
type Selector struct {
	cfg      Config
	self     string
	current  Choice
	switches []time.Time // unforced changes in the last hour
	// Pin is a parent the controller asked for (Peer@Iface); honoured while that link works.
	pin string
}

// NewSelector returns a selector for node self.
func NewSelector(self string, cfg Config) *Selector {
	return &Selector{cfg: cfg.withDefaults(), self: self}
}

// Config returns the effective configuration.
func (s *Selector) Config() Config { return s.cfg }

// Current is the present choice.
func (s *Selector) Current() Choice { return s.current }

// Pin asks for a specific link (the controller's backhaul steering); "" clears it.
func (s *Selector) Pin(peer, iface string) {
	if peer == "" {
		s.pin = ""
		return
	}
	s.pin = peer + "@" + iface
}

// alive reports whether a link can carry the backhaul now.
func (s *Selector) alive(l Link, now time.Time) bool {
	if !l.Carrier || l.LastHello.IsZero() || now.Sub(l.LastHello) > s.cfg.DeadAfter {
		return false
	}
	if l.PeerParent == s.self || l.PeerHops >= s.cfg.MaxHops || (!l.PeerGateway && l.PeerPathMbps <= 0) {
		return false // through us, too long, or the neighbour has no path itself
	}
	return true
}

// PathMbps is the end-to-end throughput estimate through a link (batman-adv V's forwarding
// penalties).
func (s *Selector) PathMbps(l Link) float64 {
	p := l.Mbps
	if !l.PeerGateway && l.PeerPathMbps < p {
		p = l.PeerPathMbps
	}
	if l.Medium == Wireless && l.PeerMedium == Wireless && !l.PeerGateway && p > 1 {
		p /= 2 // the neighbour forwards over the same kind of shared air
	}
	return p * float64(255-s.cfg.HopPenalty) / 255
}

// Reason says why Decide changed the choice.
type Reason string

// Reasons.
const (
	ReasonNone    Reason = ""
	ReasonFirst   Reason = "first"
	ReasonLost    Reason = "lost"    // forced: the current link died
	ReasonWired   Reason = "wired"   // a wired link came back
	ReasonBetter  Reason = "better"  // at least Hysteresis better
	ReasonPinned  Reason = "pinned"  // the controller's choice
	ReasonNoRoute Reason = "noroute" // nothing left
)

// Decide looks at the links at now and returns the choice and, when it changed, why.
func (s *Selector) Decide(now time.Time, links []Link) (Choice, Reason) {
	cfg := s.cfg
	var alive []Link
	for _, l := range links {
		if s.alive(l, now) {
			alive = append(alive, l)
		}
	}
	sort.Slice(alive, func(i, j int) bool { return alive[i].Key() < alive[j].Key() })
	choice := func(l Link) Choice {
		return Choice{Peer: l.Peer, Iface: l.Iface, Medium: l.Medium, PathMbps: s.PathMbps(l), Hops: l.PeerHops + 1}
	}
	var cur *Link
	for i := range alive {
		if alive[i].Key() == s.current.Peer+"@"+s.current.Iface {
			cur = &alive[i]
		}
	}
	// Best wired (stable) and best overall.
	var best, bestWired *Link
	for i := range alive {
		l := &alive[i]
		if l.Medium == Wired && (bestWired == nil || s.PathMbps(*l) > s.PathMbps(*bestWired)) {
			bestWired = l
		}
		if best == nil || s.PathMbps(*l) > s.PathMbps(*best) {
			best = l
		}
	}
	set := func(l *Link, r Reason) (Choice, Reason) {
		if l == nil {
			if s.current.IsZero() {
				return s.current, ReasonNone
			}
			s.current = Choice{}
			return s.current, ReasonNoRoute
		}
		s.current = choice(*l)
		if r == ReasonBetter {
			s.switches = append(s.switches, now)
		}
		return s.current, r
	}
	stableWired := func(l *Link) bool { return l != nil && !l.UpSince.IsZero() && now.Sub(l.UpSince) >= cfg.WiredHold }
	// The controller's pin, while its link works.
	if s.pin != "" {
		for i := range alive {
			if alive[i].Key() == s.pin && (alive[i].Medium != Wired || stableWired(&alive[i]) || cur != nil && cur.Key() == s.pin) {
				if cur != nil && cur.Key() == s.pin {
					s.current = choice(*cur)
					return s.current, ReasonNone
				}
				return set(&alive[i], ReasonPinned)
			}
		}
	}
	if cur == nil {
		// No current path (start) or it died: take the best now, wired first.
		r := ReasonLost
		if s.current.IsZero() {
			r = ReasonFirst
		}
		if bestWired != nil {
			return set(bestWired, r)
		}
		return set(best, r)
	}
	s.current = choice(*cur) // refresh the estimate
	// Wired preferred: move to a stable wired link from a wireless one.
	if cur.Medium != Wired && stableWired(bestWired) {
		return set(bestWired, ReasonWired)
	}
	// Otherwise only a clearly better path of the same preference class.
	cand := best
	if cur.Medium == Wired {
		cand = bestWired
	}
	if cand == nil || cand.Key() == cur.Key() {
		return s.current, ReasonNone
	}
	if cand.Medium == Wired && !stableWired(cand) {
		return s.current, ReasonNone
	}
	if s.PathMbps(*cand) < (1+cfg.Hysteresis)*s.PathMbps(*cur) {
		return s.current, ReasonNone
	}
	// Rate limit.
	keep := s.switches[:0]
	for _, t := range s.switches {
		if now.Sub(t) < time.Hour {
			keep = append(keep, t)
		}
	}
	s.switches = keep
	if len(s.switches) >= cfg.MaxSwitches {
		return s.current, ReasonNone
	}
	return set(cand, ReasonBetter)
}

// WirelessMbps estimates a wireless backhaul link's throughput from what nl80211 tells of the
// peer: the rate the link last transmitted at (×0.65 for the MAC's overhead) or, when that says
// less (a link that carried only broadcasts so far goes at the basic rate), the rate the
// peer's signal sustains at the channel's width (steer.Throughput's table).
func WirelessMbps(signalDBm float64, widthMHz int, txBitrate int) float64 {
	fromRate := float64(txBitrate) / 1e6 * 0.65
	fromSignal := steer.Throughput(signalDBm, steer.BSS{Band: steer.Band5, Width: widthMHz})
	return max(fromRate, fromSignal)
}
