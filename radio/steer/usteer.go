package steer

import (
	"time"
)

// UsteerConfig is usteer's configuration (the options of /etc/config/usteer that the policy
// reads). Signal thresholds follow usteer's convention: 0 is off, a negative value is a signal
// in dBm, a positive one an SNR over the noise floor (-95 dBm).
type UsteerConfig struct {
	MinSNR              float64
	MinSNRKickDelay     time.Duration
	RoamScanSNR         float64
	RoamTriggerSNR      float64
	RoamScanTries       int
	RoamScanInterval    time.Duration
	RoamScanTimeout     time.Duration
	RoamKickDelay       time.Duration
	RoamTriggerInterval time.Duration
	SignalDiffThreshold float64
	SteerRejectTimeout  time.Duration
	SeenPolicyTimeout   time.Duration
	BandSteeringIntvl   time.Duration
	BandSteeringMinSNR  float64
	LocalStaUpdate      time.Duration
	Aggressiveness      int
	BeaconIntervalTU    int
}

// UsteerDefaults is usteer as shipped (main.c usteer_init_defaults, the commented-out options
// of the OpenWrt package's /etc/config/usteer, aggressiveness 3): the roam state machine's
// thresholds (roam_scan_snr, roam_trigger_snr, signal_diff_threshold, min_snr) are 0 — off —
// so only band steering acts.
func UsteerDefaults() UsteerConfig {
	return UsteerConfig{
		MinSNRKickDelay:     5 * time.Second,
		RoamScanTries:       3,
		RoamScanInterval:    10 * time.Second,
		RoamKickDelay:       10 * time.Second,
		RoamTriggerInterval: 60 * time.Second,
		SteerRejectTimeout:  60 * time.Second,
		SeenPolicyTimeout:   30 * time.Second,
		BandSteeringIntvl:   120 * time.Second,
		BandSteeringMinSNR:  -60,
		LocalStaUpdate:      time.Second,
		Aggressiveness:      3,
		BeaconIntervalTU:    100,
	}
}

// UsteerTuned is UsteerDefaults with the roam state machine switched on the way OpenWrt users
// commonly configure it: scans below -65 dBm, forced roaming below -70 dBm, a candidate must be
// more than 8 dB stronger, kick below -80 dBm.
func UsteerTuned() UsteerConfig {
	c := UsteerDefaults()
	c.RoamScanSNR = -65
	c.RoamTriggerSNR = -70
	c.SignalDiffThreshold = 8
	c.MinSNR = -80
	return c
}

// Usteer reproduces usteer's steering decisions (policy.c and band_steering.c) on the Tracker.
type Usteer struct {
	cfg   UsteerConfig
	label string
	// bandTick counts local_sta_update rounds per BSS for band steering's interval.
	bandTick map[string]int
	lastRun  time.Time
}

// NewUsteer returns the baseline with cfg; name labels it in reports.
func NewUsteer(name string, cfg UsteerConfig) *Usteer {
	if cfg.LocalStaUpdate == 0 {
		cfg.LocalStaUpdate = time.Second
	}
	if cfg.BeaconIntervalTU == 0 {
		cfg.BeaconIntervalTU = 100
	}
	return &Usteer{cfg: cfg, label: name, bandTick: map[string]int{}}
}

// Name implements Decider.
func (u *Usteer) Name() string { return u.label }

// Roam trigger states (usteer's enum roam_trigger_state).
const (
	roamIdle = iota
	roamScan
	roamScanDone
)

// usteerState is usteer's per-station state (struct sta_info's roaming fields).
type usteerState struct {
	state           int
	tries           int
	roamEvent       time.Time
	roamScanStart   time.Time
	transitionStart time.Time
	validityEnd     time.Time
	kickTime        time.Time
	roamKick        time.Time
	btmStatus       int
	btmAt           time.Time
	connectedSince  time.Time
	belowMinSNR     int
	bandBelowSNR    bool
	kickCount       int
}

func (u *Usteer) snrToSignal(snr float64) float64 {
	if snr < 0 {
		return snr
	}
	return -95 + snr
}

// Decide implements Decider: one local_sta_update round of every node.
func (u *Usteer) Decide(now time.Time, t *Tracker) []Action {
	if !u.lastRun.IsZero() && now.Sub(u.lastRun) < u.cfg.LocalStaUpdate {
		return nil
	}
	u.lastRun = now
	var out []Action
	emit := func(a Action) {
		t.nextID++
		a.ID = t.nextID
		out = append(out, a)
	}
	clients := t.sortedClients()
	for _, c := range clients {
		for b, until := range c.Blocked {
			if !now.Before(until) {
				delete(c.Blocked, b)
			}
		}
		if c.pending != nil && !now.Before(c.pending.Until) {
			c.pending = nil
		}
	}
	// Per local node (BSS), as usteer's usteer_local_node_kick does.
	for _, b := range t.sortedBSSes() {
		var local []*Client
		for _, c := range clients {
			if c.BSS == b.BSSID {
				local = append(local, c)
				u.bandUpdate(b, c)
			}
		}
		// usteer_local_node_perform_kick.
		for _, c := range local {
			if !c.us.kickTime.IsZero() && !c.us.kickTime.After(now) {
				emit(u.kick(now, c, "bss-transition"))
			}
		}
		// usteer_local_node_snr_kick: one client per round.
		if u.cfg.MinSNR != 0 {
			minSig := u.snrToSignal(u.cfg.MinSNR)
			minCount := int((u.cfg.MinSNRKickDelay + u.cfg.LocalStaUpdate - 1) / u.cfg.LocalStaUpdate)
			for _, c := range local {
				if u.signal(now, c, b.BSSID) >= minSig {
					c.us.belowMinSNR = 0
					continue
				}
				c.us.belowMinSNR++
				if c.us.belowMinSNR <= minCount {
					continue
				}
				emit(u.kick(now, c, "signal-kick"))
				break
			}
		}
		// usteer_local_node_roam_check.
		minSNR := u.cfg.RoamScanSNR
		if minSNR == 0 {
			minSNR = u.cfg.RoamTriggerSNR
		}
		if minSNR != 0 {
			minSig := u.snrToSignal(minSNR)
			for _, c := range local {
				if !u.canRoam(now, c) || u.signal(now, c, b.BSSID) >= minSig {
					u.setState(now, c, roamIdle)
					continue
				}
				if a, ok := u.roamSM(now, t, b, c); ok {
					emit(a)
				}
			}
		}
		// usteer_band_steering_perform_steer.
		if a := u.bandSteer(now, t, b, local); len(a) > 0 {
			for _, x := range a {
				emit(x)
			}
		}
	}
	return out
}

// signal is usteer's si->signal: the latest sample of the client at that node.
func (u *Usteer) signal(now time.Time, c *Client, bssid string) float64 {
	s, ok := c.Samples[bssid]
	if !ok {
		return -200
	}
	return s.Signal
}

func (u *Usteer) kick(now time.Time, c *Client, reason string) Action {
	c.us.kickTime = time.Time{}
	c.us.roamKick = now
	c.us.kickCount++
	c.us.state, c.us.tries = roamIdle, 0
	return Action{Kind: ActKick, Client: c.MAC, From: c.BSS, Wait: 5 * time.Second, Reason: reason}
}

// canRoam is usteer_policy_can_perform_roam.
func (u *Usteer) canRoam(now time.Time, c *Client) bool {
	if u.cfg.Aggressiveness == 0 || c.BSS == "" {
		return false
	}
	if !c.us.kickTime.IsZero() && !c.us.kickTime.After(now) {
		return false
	}
	if now.Before(c.us.validityEnd) {
		return false
	}
	if !c.us.btmAt.IsZero() {
		if c.us.btmStatus != 0 && now.Sub(c.us.btmAt) < u.cfg.SteerRejectTimeout {
			return false
		}
		if c.us.btmStatus == 0 && now.Sub(c.us.btmAt) < u.cfg.RoamKickDelay {
			return false
		}
	}
	if !c.us.roamKick.IsZero() && now.Sub(c.us.roamKick) < u.cfg.RoamTriggerInterval {
		return false
	}
	return now.Sub(c.us.connectedSince) >= u.cfg.RoamTriggerInterval
}

func (u *Usteer) setState(now time.Time, c *Client, state int) {
	if c.us.state == state && state == roamIdle {
		c.us.tries = 0
		return
	}
	c.us.roamEvent = now
	if c.us.state == state {
		c.us.tries++
	} else {
		c.us.tries = 0
	}
	c.us.state = state
}

// betterCandidate is find_better_candidate with the signal reason only (the roam state
// machine's required criterion).
func (u *Usteer) betterCandidate(now time.Time, t *Tracker, c *Client, maxAge time.Duration) *BSS {
	cur := u.signal(now, c, c.BSS)
	var best *BSS
	bestSig := -200.0
	for _, b := range t.sortedBSSes() {
		if b.BSSID == c.BSS {
			continue
		}
		s, ok := c.Samples[b.BSSID]
		if !ok || now.Sub(s.At) > u.cfg.SeenPolicyTimeout || (maxAge > 0 && now.Sub(s.At) > maxAge) {
			continue
		}
		if b.MaxClients > 0 && t.clientsOn(b.BSSID) >= b.MaxClients {
			continue
		}
		// over_min_signal.
		if u.cfg.MinSNR != 0 && s.Signal < u.snrToSignal(u.cfg.MinSNR) {
			continue
		}
		if u.cfg.RoamTriggerSNR != 0 && s.Signal < u.snrToSignal(u.cfg.RoamTriggerSNR) {
			continue
		}
		// better_signal_strength: off when signal_diff_threshold is 0.
		if u.cfg.SignalDiffThreshold == 0 || !(s.Signal-cur > u.cfg.SignalDiffThreshold) {
			continue
		}
		if best == nil || s.Signal > bestSig {
			best, bestSig = b, s.Signal
		}
	}
	return best
}

// roamSM is usteer_roam_trigger_sm.
func (u *Usteer) roamSM(now time.Time, t *Tracker, b *BSS, c *Client) (Action, bool) {
	foundBetter := func(next int) *BSS {
		maxAge := 2 * u.cfg.RoamScanInterval
		if since := now.Sub(c.us.roamScanStart); since < maxAge {
			maxAge = since
		}
		cand := u.betterCandidate(now, t, c, maxAge)
		if cand != nil {
			u.setState(now, c, next)
		}
		return cand
	}
	switch c.us.state {
	case roamScan:
		if c.us.tries == 0 {
			c.us.roamScanStart = now
		}
		if foundBetter(roamScanDone) != nil {
			return Action{}, false
		}
		if now.Sub(c.us.roamEvent) < u.cfg.RoamScanInterval {
			return Action{}, false
		}
		if u.cfg.RoamScanTries > 0 && c.us.tries >= u.cfg.RoamScanTries {
			if u.cfg.RoamScanTimeout == 0 {
				u.setState(now, c, roamScanDone)
			} else {
				u.setState(now, c, roamIdle)
			}
			return Action{}, false
		}
		u.setState(now, c, roamScan)
		if c.Caps.Beacon {
			return Action{Kind: ActBeaconRequest, Client: c.MAC, From: c.BSS, Wait: 2 * time.Second, Reason: "usteer-scan"}, true
		}
		return Action{}, false
	case roamIdle:
		u.setState(now, c, roamScan)
		return Action{}, false
	case roamScanDone:
		if !c.us.transitionStart.IsZero() && now.Sub(c.us.transitionStart) > u.cfg.RoamKickDelay {
			c.us.transitionStart = time.Time{}
			u.setState(now, c, roamIdle)
			return Action{}, false
		}
		cand := foundBetter(roamScanDone)
		if cand == nil {
			u.setState(now, c, roamIdle)
			return Action{}, false
		}
		if c.us.transitionStart.IsZero() {
			c.us.transitionStart = now
		}
		c.us.validityEnd = now.Add(10 * time.Second)
		bi := time.Duration(u.cfg.BeaconIntervalTU) * 1024 * time.Microsecond
		validity := int(10 * time.Second / bi)
		a := Action{Kind: ActSteer, Client: c.MAC, From: c.BSS, Candidates: []Target{{BSSID: cand.BSSID, Pref: 255}},
			Validity: validity, Wait: 10 * time.Second, Reason: "usteer-roam"}
		if !c.Caps.BTM {
			// usteer sends the request anyway (hostapd refuses it for non-WNM stations).
			return Action{}, false
		}
		if u.cfg.Aggressiveness >= 2 {
			if c.us.kickTime.IsZero() {
				c.us.kickTime = now.Add(u.cfg.RoamKickDelay)
			}
			timer := 0
			if u.cfg.Aggressiveness >= 3 {
				timer = int(c.us.kickTime.Sub(now) / bi)
			}
			a.DisassocImminent, a.DisassocTimer = true, timer
			if timer < validity {
				c.us.transitionStart = time.Time{}
				u.setState(now, c, roamIdle)
			}
		} else {
			u.setState(now, c, roamIdle)
		}
		return a, true
	}
	return Action{}, false
}

// bandUpdate is usteer_band_steering_sta_update for a client on a 2.4 GHz BSS.
func (u *Usteer) bandUpdate(b *BSS, c *Client) {
	if b.Band != Band24 || !c.Caps.Has(Band5) {
		return
	}
	if s, ok := c.Samples[b.BSSID]; ok && s.Signal < u.snrToSignal(u.cfg.BandSteeringMinSNR) {
		c.us.bandBelowSNR = true
	}
}

// bandSteer is usteer_band_steering_perform_steer for one 2.4 GHz BSS.
func (u *Usteer) bandSteer(now time.Time, t *Tracker, b *BSS, local []*Client) []Action {
	if u.cfg.BandSteeringIntvl == 0 || b.Band != Band24 {
		return nil
	}
	// Targets: the same node's 5 GHz BSSes.
	var targets []Target
	for _, o := range t.sortedBSSes() {
		if o.Node == b.Node && o.Band != Band24 && (o.MaxClients == 0 || t.clientsOn(o.BSSID) < o.MaxClients) {
			targets = append(targets, Target{BSSID: o.BSSID, Pref: 255})
		}
	}
	if len(targets) == 0 {
		return nil
	}
	minCount := int(u.cfg.BandSteeringIntvl / u.cfg.LocalStaUpdate)
	if u.bandTick[b.BSSID] < minCount {
		u.bandTick[b.BSSID]++
		return nil
	}
	u.bandTick[b.BSSID] = 0
	var out []Action
	for _, c := range local {
		if !c.Caps.Has(Band5) || !u.canRoam(now, c) {
			continue
		}
		if c.us.bandBelowSNR {
			c.us.bandBelowSNR = false
			continue
		}
		if now.Before(c.us.validityEnd) {
			continue
		}
		if c.Caps.BTM {
			c.us.validityEnd = now.Add(10 * time.Second)
			bi := time.Duration(u.cfg.BeaconIntervalTU) * 1024 * time.Microsecond
			a := Action{Kind: ActSteer, Client: c.MAC, From: c.BSS, Candidates: targets,
				Validity: int(10 * time.Second / bi), Wait: 10 * time.Second, Reason: "usteer-band"}
			if u.cfg.Aggressiveness >= 2 {
				if c.us.kickTime.IsZero() {
					c.us.kickTime = now.Add(u.cfg.RoamKickDelay)
				}
				a.DisassocImminent = true
				if u.cfg.Aggressiveness >= 3 {
					a.DisassocTimer = int(c.us.kickTime.Sub(now) / bi)
				}
			}
			out = append(out, a)
		}
		c.us.bandBelowSNR = false
	}
	return out
}
