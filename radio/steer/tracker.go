// Package steer decides where the mesh's Wi-Fi clients should be: which node and band, and how
// to get them there (802.11k beacon requests to learn what a client hears, 802.11v BSS
// transition requests, and — only when configured — a deauthentication with a short per-node
// block for clients that ignore 802.11v). It is pure policy: the mesh controller (radio/mesh)
// feeds it observations and carries out its actions; the simulation in radio/steer/steersim
// feeds it mobility traces.
//
// Two policies share one view of the clients (Tracker) so that they can be compared on the same
// information:
//
//   - Policy is Meshroot's: every BSS is scored by the throughput a client would get there (its
//     estimated signal through a rate table for the band's width, less the BSS's load), and a
//     client is steered when another BSS is clearly better — by a throughput gain and a signal
//     margin, seen twice in a row on fresh measurements and, for 802.11k clients, confirmed by
//     a beacon report taken after it started winning — with 802.11k beacon requests fetched
//     when they are needed; a faster BSS heard weaker than the serving one must be heard at
//     -62 dBm or better. Per-client history (a settling time after every roam, a doubled
//     margin to go back to a BSS left within a minute, no steering back at all to a BSS the
//     client left by itself within a minute, a freeze after repeated roams) keeps clients
//     from ping-ponging. Clients that reject or ignore BSS transition requests are retried
//     with backoff (the decision holding while the target keeps half the margins, its
//     confirming report fetched before the backoff ends) and, when Config.Kick allows it,
//     deauthenticated with a short block on the BSSes they should leave, deterministically
//     within Config.FallbackAfter. On steersim's hour-long traces it keeps 92-97% of 802.11v
//     clients on their best BSS (with kicks; usteer tuned: 71-82%) at about usteer's
//     ping-pong rate (3% of roams), roaming them 1.3-1.6 times as often (see
//     radio/steer/steersim).
//   - Usteer reproduces OpenWrt usteer's policy (policy.c, band_steering.c, main.c defaults):
//     the roam state machine (SCAN with beacon requests every roam_scan_interval, SCAN_DONE,
//     BSS transition request with aggressiveness 3's disassociation imminent and timer, kick
//     after roam_kick_delay), its candidate rule (signal better by more than
//     signal_diff_threshold, above min_snr / roam_trigger_snr), min_snr kicks and band
//     steering of 2.4 GHz clients seen on 5 GHz, with usteer's defaults; UsteerDefaults is the
//     shipped configuration (roaming triggers off), UsteerTuned sets the thresholds the roam
//     state machine needs.
package steer

import (
	"math"
	"sort"
	"time"
)

// Band is a Wi-Fi band.
type Band int

// The bands.
const (
	Band24 Band = iota
	Band5
	Band6
)

func (b Band) String() string {
	switch b {
	case Band24:
		return "2.4GHz"
	case Band5:
		return "5GHz"
	}
	return "6GHz"
}

// BSS is one of the site's BSSes.
type BSS struct {
	BSSID string
	Node  string
	Band  Band
	// Width is the channel width in MHz (20 when 0).
	Width int
	// MaxClients is the association limit (0: none).
	MaxClients int
	// Load is the channel's busy share from others, 0..1.
	Load float64
}

// Caps are a client's capabilities.
type Caps struct {
	// BTM: 802.11v BSS transition management advertised.
	BTM bool
	// Beacon: 802.11k beacon reports (false until a request fails when unknown).
	Beacon bool
	// FT: associated with 802.11r.
	FT bool
	// Bands the client was seen on or advertised.
	Bands []Band
}

// Has reports whether the client uses band b.
func (c Caps) Has(b Band) bool {
	for _, x := range c.Bands {
		if x == b {
			return true
		}
	}
	return false
}

// Source says where a signal sample came from.
type Source int

// Sources of signal samples.
const (
	// Uplink: the serving AP's measurement of the client's frames.
	Uplink Source = iota
	// Probe: an AP heard the client's probe request (unassociated station metrics).
	Probe
	// Report: the client measured the BSS's beacons (802.11k beacon report).
	Report
)

// Sample is a signal estimate of a client at a BSS.
type Sample struct {
	Signal float64
	At     time.Time
	Src    Source
	// avg is the smoothed signal (EWMA over the samples).
	avg float64
	n   int
}

// Smoothed is the exponentially weighted average of the samples.
func (s Sample) Smoothed() float64 {
	if s.n == 0 {
		return s.Signal
	}
	return s.avg
}

// Roam is one change of BSS of a client.
type Roam struct {
	From, To string
	At       time.Time
	Steered  bool
	// FromSignal is the client's smoothed signal at From when it left (NaN when unknown).
	FromSignal float64
}

// Client is the tracker's view of one station.
type Client struct {
	MAC  string
	Caps Caps
	// BSS is the serving BSS ("" when not associated); Since when it associated there.
	BSS   string
	Since time.Time
	// Samples are the latest signal estimates per BSS.
	Samples map[string]Sample
	// Roams are the last roams, oldest first (at most 16).
	Roams []Roam
	// Blocked lists BSSes the client is blocked on, until when.
	Blocked map[string]time.Time
	// boost raises this client's minimum target signal (see targetBoost).
	boost   float64
	boostAt time.Time
	// lastBSS and leftAt remember the last BSS after a disassociation.
	lastBSS string
	leftAt  time.Time

	// Steering state, kept by the policies.
	pending    *pending
	lastSteer  time.Time
	rejects    int // consecutive rejected BSS transition requests
	ignored    int // consecutive unanswered ones
	backoff    time.Time
	lastKick   time.Time
	kicks      int
	lastBeacon time.Time
	streak     string // candidate seen better in a row
	streakN    int
	streakAt   time.Time
	// asked is the first target of the last BSS transition request, askedAt when it was sent;
	// cleared when the client changes BSS.
	asked   string
	askedAt time.Time
	us      usteerState
}

// pending is a steering request in flight.
type pending struct {
	ID        uint64
	From      string
	Targets   []string
	At        time.Time
	Until     time.Time
	Answered  bool
	Accepted  bool
	Kick      bool
	Reason    string
	Imminent  bool
	TimerTBTT int
}

// Tracker holds the site's BSSes and clients as the policies see them. Not safe for concurrent
// use: the controller serialises calls.
type Tracker struct {
	BSSes   map[string]*BSS
	Clients map[string]*Client
	nextID  uint64
}

// NewTracker returns an empty tracker.
func NewTracker() *Tracker {
	return &Tracker{BSSes: map[string]*BSS{}, Clients: map[string]*Client{}}
}

// SetBSSes replaces the site's BSS list (clients on BSSes that disappear are dropped from them).
func (t *Tracker) SetBSSes(list []BSS) {
	t.BSSes = map[string]*BSS{}
	for _, b := range list {
		b := b
		if b.Width == 0 {
			b.Width = 20
		}
		t.BSSes[b.BSSID] = &b
	}
	for _, c := range t.Clients {
		if c.BSS != "" && t.BSSes[c.BSS] == nil {
			c.BSS = ""
		}
		for b := range c.Samples {
			if t.BSSes[b] == nil {
				delete(c.Samples, b)
			}
		}
	}
}

func (t *Tracker) client(mac string) *Client {
	c := t.Clients[mac]
	if c == nil {
		c = &Client{MAC: mac, Samples: map[string]Sample{}, Blocked: map[string]time.Time{}}
		t.Clients[mac] = c
	}
	return c
}

// Client returns a client (nil when unknown).
func (t *Tracker) Client(mac string) *Client { return t.Clients[mac] }

// sortedClients returns the clients in MAC order (determinism).
func (t *Tracker) sortedClients() []*Client {
	out := make([]*Client, 0, len(t.Clients))
	for _, c := range t.Clients {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].MAC < out[j].MAC })
	return out
}

func (t *Tracker) sortedBSSes() []*BSS {
	out := make([]*BSS, 0, len(t.BSSes))
	for _, b := range t.BSSes {
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].BSSID < out[j].BSSID })
	return out
}

// Clients on a BSS.
func (t *Tracker) clientsOn(bssid string) int {
	n := 0
	for _, c := range t.Clients {
		if c.BSS == bssid {
			n++
		}
	}
	return n
}

// smoothing is the EWMA weight of a new sample.
const smoothing = 0.4

func (c *Client) addSample(bssid string, sig float64, at time.Time, src Source) {
	s := c.Samples[bssid]
	// A sample after a long gap restarts the average.
	if s.n == 0 || at.Sub(s.At) > 10*time.Second {
		s.avg, s.n = sig, 1
	} else {
		s.avg = smoothing*sig + (1-smoothing)*s.avg
		s.n++
	}
	s.Signal, s.At, s.Src = sig, at, src
	c.Samples[bssid] = s
}

// Events the tracker takes.

// Associated: a client joined a BSS.
func (t *Tracker) Associated(at time.Time, mac, bssid string, caps Caps) {
	c := t.client(mac)
	if c.BSS != bssid {
		from := c.BSS
		if from == "" && c.lastBSS != "" && at.Sub(c.leftAt) < 10*time.Second {
			from = c.lastBSS // a disassociation, then an association: one roam
		}
		if from != "" && from != bssid {
			steered := c.pending != nil && contains(c.pending.Targets, bssid)
			if n := len(c.Roams); !steered && n > 0 && c.Roams[n-1].Steered && c.Roams[n-1].To == from && at.Sub(c.Roams[n-1].At) < time.Minute {
				// Steered to from, and the client left it by itself within a minute: its
				// own threshold is above where we put it.
				b := c.targetBoost(at)
				c.boost, c.boostAt = math.Min(b+3, 12), at
			}
			fs := math.NaN()
			if smp, ok := c.Samples[from]; ok && at.Sub(smp.At) < 10*time.Second {
				fs = smp.Smoothed()
			}
			c.Roams = append(c.Roams, Roam{From: from, To: bssid, At: at, Steered: steered, FromSignal: fs})
			if len(c.Roams) > 16 {
				c.Roams = c.Roams[len(c.Roams)-16:]
			}
		}
		c.BSS, c.Since, c.lastBSS = bssid, at, bssid
		c.asked = ""
		// usteer keeps its roaming state per station and node: a new node starts afresh.
		c.us = usteerState{connectedSince: at, kickCount: c.us.kickCount}
	}
	if c.pending != nil {
		if contains(c.pending.Targets, bssid) {
			c.rejects, c.ignored = 0, 0
		}
		c.pending = nil
	}
	// Capabilities only grow within an association (a failed beacon request clears Beacon).
	bands := c.Caps.Bands
	c.Caps = caps
	for _, b := range bands {
		if !c.Caps.Has(b) {
			c.Caps.Bands = append(c.Caps.Bands, b)
		}
	}
	if b := t.BSSes[bssid]; b != nil && !c.Caps.Has(b.Band) {
		c.Caps.Bands = append(c.Caps.Bands, b.Band)
	}
}

// Disassociated: a client left a BSS.
func (t *Tracker) Disassociated(at time.Time, mac, bssid string) {
	c := t.Clients[mac]
	if c == nil || c.BSS != bssid {
		return
	}
	c.BSS, c.lastBSS, c.leftAt = "", bssid, at
}

// Signal records a signal sample of a client at a BSS.
func (t *Tracker) Signal(at time.Time, mac, bssid string, sig float64, src Source) {
	if t.BSSes[bssid] == nil || math.IsNaN(sig) {
		return
	}
	c := t.client(mac)
	c.addSample(bssid, sig, at, src)
	if src != Uplink {
		if b := t.BSSes[bssid]; !c.Caps.Has(b.Band) {
			c.Caps.Bands = append(c.Caps.Bands, b.Band)
		}
	}
}

// BeaconFailed records that a client refused (or cannot answer) a beacon request.
func (t *Tracker) BeaconFailed(mac string) {
	if c := t.Clients[mac]; c != nil {
		c.Caps.Beacon = false
	}
}

// BTMResponse records a client's answer to a BSS transition request.
func (t *Tracker) BTMResponse(at time.Time, mac string, status int, target string) {
	c := t.Clients[mac]
	if c == nil || c.pending == nil {
		return
	}
	c.pending.Answered = true
	c.pending.Accepted = status == 0
	c.us.btmStatus, c.us.btmAt = status, at
	if status != 0 {
		c.rejects++
		c.pending = nil
	}
}

// Steered records that an action was carried out (the controller calls it for every action it
// sends; the simulation too).
func (t *Tracker) Steered(at time.Time, a Action) {
	c := t.Clients[a.Client]
	if c == nil {
		return
	}
	switch a.Kind {
	case ActSteer, ActKick:
		c.pending = &pending{ID: a.ID, From: a.From, Targets: a.Targets(), At: at, Until: at.Add(a.Wait), Kick: a.Kind == ActKick,
			Reason: a.Reason, Imminent: a.DisassocImminent, TimerTBTT: a.DisassocTimer}
		c.lastSteer = at
		if a.Kind == ActSteer && len(a.Candidates) > 0 {
			c.asked, c.askedAt = a.Candidates[0].BSSID, at
		}
		if a.Kind == ActKick {
			c.lastKick = at
			c.kicks++
			for _, b := range a.Block {
				c.Blocked[b] = at.Add(a.BlockFor)
			}
		}
	case ActBeaconRequest:
		c.lastBeacon = at
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ActionKind is what an action asks for.
type ActionKind int

// The actions.
const (
	// ActBeaconRequest: ask the client (through its serving BSS) for an 802.11k beacon report.
	ActBeaconRequest ActionKind = iota
	// ActSteer: send a BSS transition request.
	ActSteer
	// ActKick: deauthenticate the client from From and block it on Block for BlockFor.
	ActKick
)

func (k ActionKind) String() string {
	return [...]string{"beacon-request", "steer", "kick"}[k]
}

// Target is a BSS transition candidate.
type Target struct {
	BSSID string
	Pref  int
}

// Action is what a policy wants done.
type Action struct {
	ID     uint64
	Kind   ActionKind
	Client string
	// From is the serving BSS the action goes through.
	From string
	// Candidates of a steer, best first.
	Candidates []Target
	// DisassocImminent and DisassocTimer (TBTTs; 0: the AP does not disassociate) and the
	// candidate list's validity (TBTTs).
	DisassocImminent bool
	DisassocTimer    int
	Validity         int
	// Block and BlockFor: a kick's per-BSS block.
	Block    []string
	BlockFor time.Duration
	// Wait is how long the policy waits for the outcome.
	Wait   time.Duration
	Reason string
}

// Targets returns the candidates' BSSIDs.
func (a Action) Targets() []string {
	out := make([]string, len(a.Candidates))
	for i, c := range a.Candidates {
		out[i] = c.BSSID
	}
	return out
}

// Decider is a steering policy.
type Decider interface {
	// Decide looks at every client at now and returns the actions to take. It may update the
	// clients' steering state but does not mark actions as sent: the caller calls
	// Tracker.Steered for each action it carries out.
	Decide(now time.Time, t *Tracker) []Action
	Name() string
}
