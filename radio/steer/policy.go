package steer

import (
	"math"
	"sort"
	"time"
)

// Noise is the noise floor of a 20 MHz channel in dBm; wider channels add 10·log10(width/20).
const Noise = -95.0

// mcsSNR is the SNR each MCS 0..9 needs; mcsRate20 the 2-stream PHY rate at 20 MHz (Mbit/s).
var (
	mcsSNR    = []float64{5, 8, 11, 14, 18, 22, 25, 27, 31, 34}
	mcsRate20 = []float64{14.4, 28.9, 43.3, 57.8, 86.7, 115.6, 130, 144.4, 173.3, 192.6}
)

// Throughput estimates the throughput (Mbit/s) a 2-stream client gets from a BSS it hears at
// signal dBm: the highest MCS the SNR at the BSS's width sustains, a 65% MAC efficiency, and
// the share of airtime the BSS's load leaves. It is the yardstick of "best BSS".
func Throughput(signal float64, b BSS) float64 {
	w := float64(max(b.Width, 20))
	snr := signal - (Noise + 10*math.Log10(w/20))
	rate := 0.0
	for i, need := range mcsSNR {
		if snr >= need {
			rate = mcsRate20[i] * w / 20
		}
	}
	if b.Band == Band24 {
		rate = math.Min(rate, mcsRate20[7]*w/20) // HT on 2.4 GHz: MCS 7 at most
	}
	return rate * 0.65 * (1 - math.Min(math.Max(b.Load, 0), 0.95))
}

// Config tunes Policy. Zero fields take the defaults.
type Config struct {
	// MinGain: steer only to a BSS with at least (1+MinGain) times the current throughput
	// (default 0.3); MinSignalGain: on the same band, also this many dB more signal (6).
	MinGain       float64
	MinSignalGain float64
	// MinTargetSignal: never steer to a BSS heard weaker than this (-67 dBm: above the usual
	// client roaming thresholds, or the client would wander off again).
	MinTargetSignal float64
	// WeakerTargetSignal: a target heard weaker than the serving BSS (a faster band with
	// less signal) must be heard at least this strongly (-62 dBm): clients prefer 5 GHz only
	// above about -65 dBm and leave a BSS for one 8-12 dB stronger at their own scans.
	WeakerTargetSignal float64
	// Dwell: the same candidate must win this many evaluations in a row (2).
	Dwell int
	// ConfirmAge: for clients with 802.11k, a steer needs a measurement of the target taken
	// after the candidate first won and at most this old; without one the policy asks for a
	// beacon report first (2 s), and goes ahead without it only when the client does not
	// answer.
	ConfirmAge time.Duration
	// MaxAge: samples older than this are stale (8 s).
	MaxAge time.Duration
	// ScanSignal: below it a client is worth fresh 802.11k beacon reports every BeaconEvery
	// (-60 dBm, 4 s); otherwise every IdleBeaconEvery (30 s).
	ScanSignal      float64
	BeaconEvery     time.Duration
	IdleBeaconEvery time.Duration
	// Settle: no steering this long after a client associated (8 s).
	Settle time.Duration
	// PingPongWindow: going back to a BSS the client left less than this ago needs twice the
	// gains (60 s). FreezeAfter roams the policy caused within FreezeWindow freeze steering of
	// the client for FreezeWindow (3 in 5 minutes), unless its signal falls below RescueSignal
	// (-80 dBm).
	PingPongWindow time.Duration
	// OwnLeaveWindow: a BSS the client left by itself is not a candidate for this long (2 min)
	// unless it is now 6 dB stronger than when the client left it, and not at all within
	// PingPongWindow (the client's own roaming logic chose; it would only leave again), except
	// to rescue a client below RescueSignal.
	OwnLeaveWindow time.Duration
	FreezeAfter    int
	FreezeWindow   time.Duration
	RescueSignal   float64
	// Wait: how long a BSS transition request may take (answer and reassociation) before it
	// counts as ignored (5 s); Validity its candidate list's validity in TBTTs (100).
	Wait     time.Duration
	Validity int
	// RejectBackoff: after a rejected or ignored request, wait this long, doubling (5 s, at
	// most 60 s).
	RejectBackoff time.Duration
	// NoDisassocImminent clears the disassociation-imminent bit (set by default: many phones
	// only move when it is set, openwrt/packages#20419).
	NoDisassocImminent bool
	// Kick enables the fallback: after FallbackAfter rejected or ignored requests (2), or at
	// once for clients without 802.11v when KickLegacy, deauthenticate the client and block it
	// for BlockFor (15 s) on every BSS worse than the target, at most once per KickEvery
	// (5 minutes) per client.
	// FallbackMaxAge: for clients without 802.11k, decisions may rely on samples this old (60 s).
	Kick           bool
	KickLegacy     bool
	FallbackAfter  int
	FallbackMaxAge time.Duration
	BlockFor       time.Duration
	KickEvery      time.Duration
}

func (c Config) withDefaults() Config {
	def := func(v *float64, d float64) {
		if *v == 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.MinGain, 0.3)
	def(&c.MinSignalGain, 6)
	def(&c.MinTargetSignal, -67)
	def(&c.WeakerTargetSignal, -62)
	def(&c.ScanSignal, -60)
	def(&c.RescueSignal, -80)
	if c.Dwell == 0 {
		c.Dwell = 2
	}
	if c.FreezeAfter == 0 {
		c.FreezeAfter = 3
	}
	if c.Validity == 0 {
		c.Validity = 100
	}
	if c.FallbackAfter == 0 {
		c.FallbackAfter = 2
	}
	defD(&c.MaxAge, 8*time.Second)
	defD(&c.ConfirmAge, 2*time.Second)
	defD(&c.BeaconEvery, 4*time.Second)
	defD(&c.IdleBeaconEvery, 30*time.Second)
	defD(&c.Settle, 8*time.Second)
	defD(&c.PingPongWindow, time.Minute)
	defD(&c.OwnLeaveWindow, 2*time.Minute)
	defD(&c.FreezeWindow, 5*time.Minute)
	defD(&c.Wait, 5*time.Second)
	defD(&c.RejectBackoff, 5*time.Second)
	defD(&c.BlockFor, 15*time.Second)
	defD(&c.KickEvery, 5*time.Minute)
	defD(&c.FallbackMaxAge, time.Minute)
	return c
}

// Policy is Meshroot's steering policy (see the package doc).
type Policy struct {
	cfg Config
}

// NewPolicy returns the policy with cfg (defaults filled in).
func NewPolicy(cfg Config) *Policy { return &Policy{cfg: cfg.withDefaults()} }

// Config returns the effective configuration.
func (p *Policy) Config() Config { return p.cfg }

// Name implements Decider.
func (p *Policy) Name() string { return "meshroot" }

// candidate is a BSS scored for a client.
type candidate struct {
	b      *BSS
	signal float64
	tput   float64
}

// Decide implements Decider.
func (p *Policy) Decide(now time.Time, t *Tracker) []Action {
	var out []Action
	for _, c := range t.sortedClients() {
		for b, until := range c.Blocked {
			if !now.Before(until) {
				delete(c.Blocked, b)
			}
		}
		if c.BSS == "" || t.BSSes[c.BSS] == nil {
			continue
		}
		if a, ok := p.decide(now, t, c); ok {
			t.nextID++
			a.ID = t.nextID
			out = append(out, a)
		}
	}
	return out
}

func (p *Policy) backoff(n int) time.Duration {
	d := p.cfg.RejectBackoff
	for i := 1; i < n && d < time.Minute; i++ {
		d *= 2
	}
	return min(d, time.Minute)
}

func (p *Policy) decide(now time.Time, t *Tracker, c *Client) (Action, bool) {
	cfg := p.cfg
	if pd := c.pending; pd != nil {
		if now.Before(pd.Until) {
			return Action{}, false
		}
		// The request ran out without the client moving.
		if !pd.Kick {
			if !pd.Answered || pd.Accepted {
				c.ignored++
			}
			c.backoff = now.Add(p.backoff(c.rejects + c.ignored))
		}
		c.pending = nil
	}
	if c.rejects > 0 && c.us.btmAt.After(c.lastSteer) && c.backoff.Before(c.us.btmAt) {
		c.backoff = c.us.btmAt.Add(p.backoff(c.rejects + c.ignored))
	}
	cur := t.BSSes[c.BSS]
	cs, ok := c.Samples[c.BSS]
	if !ok || now.Sub(cs.At) > cfg.MaxAge {
		return Action{}, false
	}
	curSig := cs.Smoothed()
	curT := Throughput(curSig, *cur)

	// Beacon reports when they would help.
	interested := curSig < cfg.ScanSignal || (cur.Band == Band24 && (c.Caps.Has(Band5) || c.Caps.Has(Band6)))
	every := cfg.IdleBeaconEvery
	if interested {
		every = cfg.BeaconEvery
	}
	if c.Caps.Beacon && now.Sub(c.lastBeacon) >= every && now.Sub(c.Since) >= time.Second && p.stale(now, t, c) {
		return Action{Kind: ActBeaconRequest, Client: c.MAC, From: c.BSS, Wait: 2 * time.Second, Reason: "measure"}, true
	}

	if c.Caps.Beacon && c.asked != "" && now.Before(c.backoff) && c.backoff.Sub(now) <= cfg.ConfirmAge/2 && now.Sub(c.lastBeacon) >= cfg.ConfirmAge {
		// The retry after a refused request comes when the backoff ends: fetch the report
		// that confirms it now, so that the retry does not wait for one.
		return Action{Kind: ActBeaconRequest, Client: c.MAC, From: c.BSS, Wait: 2 * time.Second, Reason: "confirm"}, true
	}
	if now.Sub(c.Since) < cfg.Settle || now.Before(c.backoff) {
		return Action{}, false
	}
	fallbackEligible := cfg.Kick && ((c.Caps.BTM && c.rejects+c.ignored >= cfg.FallbackAfter) || (!c.Caps.BTM && cfg.KickLegacy))
	maxAge := cfg.MaxAge
	if !c.Caps.Beacon {
		// Without 802.11k the only news of other BSSes are the client's own probe requests,
		// minutes apart: older samples have to do.
		maxAge = cfg.FallbackMaxAge
	}
	cands := p.candidates(now, t, c, maxAge, curSig < cfg.RescueSignal, curSig)
	if len(cands) == 0 {
		c.streak, c.streakN = "", 0
		return Action{}, false
	}
	best := cands[0]
	gain, sigGain := cfg.MinGain, cfg.MinSignalGain
	if c.leftRecently(best.b.BSSID, now, cfg.PingPongWindow) {
		gain, sigGain = 2*gain+1, 2*sigGain
	}
	if c.steeredWithin(now, cfg.FreezeWindow) >= cfg.FreezeAfter && curSig >= cfg.RescueSignal {
		return Action{}, false
	}
	if best.b.BSSID == c.asked && now.Sub(c.askedAt) < cfg.PingPongWindow {
		// Hysteresis: the client was asked to move there and did not. The decision stands
		// while the target keeps half the margins; fading would otherwise restart the dwell
		// and the confirmation, and delay the retry (or the kick) by as long as it lasts.
		gain, sigGain = gain/2, sigGain/2
	}
	better := best.tput >= (1+gain)*curT && best.tput > 0
	if best.b.Band == cur.Band && best.signal-curSig < sigGain {
		better = false
	}
	if curT == 0 && best.tput > 0 {
		better = true // a client about to lose its link
	}
	if !better {
		c.streak, c.streakN = "", 0
		return Action{}, false
	}
	if c.streak == best.b.BSSID {
		c.streakN++
	} else {
		c.streak, c.streakN, c.streakAt = best.b.BSSID, 1, now
	}
	if c.streakN < cfg.Dwell {
		return Action{}, false
	}
	if c.Caps.Beacon {
		// Confirm with a measurement of the target taken since the candidate first won: the
		// one that made it win may be from before the client moved.
		if s := c.Samples[best.b.BSSID]; !s.At.After(c.streakAt) || now.Sub(s.At) > cfg.ConfirmAge {
			asked := c.lastBeacon.After(c.streakAt)
			switch {
			case asked && now.Sub(c.lastBeacon) < cfg.ConfirmAge:
				return Action{}, false // the report is on its way
			case asked && !c.reportedSince(c.lastBeacon):
				// The client did not answer: go on with what there is, as for a client
				// without 802.11k, rather than ask forever.
			default:
				return Action{Kind: ActBeaconRequest, Client: c.MAC, From: c.BSS, Wait: 2 * time.Second, Reason: "confirm"}, true
			}
		}
	}
	reason := "signal"
	if best.b.Band != cur.Band {
		reason = "band"
	}
	if fallbackEligible {
		if now.Sub(c.lastKick) < cfg.KickEvery && !c.lastKick.IsZero() {
			return Action{}, false
		}
		// Block every BSS not clearly as good as the target, so that the client's own choice
		// lands where it should.
		var block []string
		for _, b := range t.sortedBSSes() {
			s, fresh := c.Samples[b.BSSID]
			if b.BSSID == c.BSS || !fresh || Throughput(s.Smoothed(), *b)*(1+cfg.MinGain) < best.tput {
				if !c.canUse(b) {
					continue
				}
				block = append(block, b.BSSID)
			}
		}
		return Action{Kind: ActKick, Client: c.MAC, From: c.BSS, Candidates: []Target{{BSSID: best.b.BSSID, Pref: 255}},
			Block: block, BlockFor: cfg.BlockFor, Wait: cfg.BlockFor, Reason: reason + "-kick"}, true
	}
	if !c.Caps.BTM {
		return Action{}, false
	}
	a := Action{Kind: ActSteer, Client: c.MAC, From: c.BSS, DisassocImminent: !cfg.NoDisassocImminent,
		Validity: cfg.Validity, Wait: cfg.Wait, Reason: reason}
	for i, cd := range cands {
		if i == 3 || cd.tput < curT {
			break
		}
		a.Candidates = append(a.Candidates, Target{BSSID: cd.b.BSSID, Pref: 255 - 50*i})
	}
	return a, true
}

// stale reports whether some usable BSS lacks a fresh sample for the client.
func (p *Policy) stale(now time.Time, t *Tracker, c *Client) bool {
	for _, b := range t.sortedBSSes() {
		if b.BSSID == c.BSS || !c.canUse(b) {
			continue
		}
		s, ok := c.Samples[b.BSSID]
		if !ok || now.Sub(s.At) > p.cfg.MaxAge/2 {
			return true
		}
	}
	return false
}

// canUse reports whether the client may use b's band.
func (c *Client) canUse(b *BSS) bool {
	return b.Band == Band24 || c.Caps.Has(b.Band)
}

// candidates are the BSSes other than the serving one the client could move to, best first.
func (p *Policy) candidates(now time.Time, t *Tracker, c *Client, maxAge time.Duration, rescue bool, curSig float64) []candidate {
	floor := p.cfg.MinTargetSignal + c.targetBoost(now)
	var out []candidate
	for _, b := range t.sortedBSSes() {
		if b.BSSID == c.BSS || !c.canUse(b) {
			continue
		}
		if until, blocked := c.Blocked[b.BSSID]; blocked && now.Before(until) {
			continue
		}
		s, ok := c.Samples[b.BSSID]
		if !ok || now.Sub(s.At) > maxAge {
			continue
		}
		sig := s.Smoothed()
		if sig < floor || (sig < curSig && sig < p.cfg.WeakerTargetSignal && !rescue) {
			continue
		}
		// Never steer a client back to a BSS it was steered away from a moment ago (unless
		// it is about to lose its link).
		if !rescue && c.steeredAwayFrom(b.BSSID, now, p.cfg.PingPongWindow) {
			continue
		}
		if b.MaxClients > 0 && t.clientsOn(b.BSSID) >= b.MaxClients {
			continue
		}
		// A client that left a BSS on its own (not steered) recently does not want it: its
		// own roaming logic would take it away again.
		if c.leftOnItsOwn(b.BSSID, sig, now, p.cfg.OwnLeaveWindow) {
			continue
		}
		if !rescue && c.leftOnItsOwnWithin(b.BSSID, now, p.cfg.PingPongWindow) {
			continue
		}
		out = append(out, candidate{b: b, signal: sig, tput: Throughput(sig, *b)})
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].tput != out[j].tput {
			return out[i].tput > out[j].tput
		}
		return out[i].signal > out[j].signal
	})
	return out
}

// roamFrom returns the client's latest roam away from bssid within window for which match
// (nil: any) holds.
func (c *Client) roamFrom(bssid string, now time.Time, window time.Duration, match func(Roam) bool) (Roam, bool) {
	for i := len(c.Roams) - 1; i >= 0 && now.Sub(c.Roams[i].At) <= window; i-- {
		if r := c.Roams[i]; r.From == bssid && (match == nil || match(r)) {
			return r, true
		}
	}
	return Roam{}, false
}

func steered(r Roam) bool { return r.Steered }
func ownRoam(r Roam) bool { return !r.Steered }

// steeredAwayFrom reports whether the policy moved the client away from bssid within window.
func (c *Client) steeredAwayFrom(bssid string, now time.Time, window time.Duration) bool {
	_, ok := c.roamFrom(bssid, now, window, steered)
	return ok
}

// targetBoost is how many dB above MinTargetSignal this client's targets must be: 3 dB more
// each time the client walked away by itself from a BSS it had just been steered to (it found
// the target too weak: its own roaming threshold is higher than ours), at most 12, fading by
// 1 dB every 5 minutes.
func (c *Client) targetBoost(now time.Time) float64 {
	if c.boost == 0 {
		return 0
	}
	decay := float64(now.Sub(c.boostAt) / (5 * time.Minute))
	return math.Max(0, c.boost-decay)
}

// leftRecently reports whether the client left bssid less than window ago.
func (c *Client) leftRecently(bssid string, now time.Time, window time.Duration) bool {
	_, ok := c.roamFrom(bssid, now, window, nil)
	return ok
}

// leftOnItsOwn reports whether the client roamed away from bssid by itself within window and
// the BSS is not clearly (6 dB) better now than when it left.
func (c *Client) leftOnItsOwn(bssid string, sig float64, now time.Time, window time.Duration) bool {
	r, ok := c.roamFrom(bssid, now, window, ownRoam)
	return ok && (math.IsNaN(r.FromSignal) || sig < r.FromSignal+6)
}

// leftOnItsOwnWithin reports whether the client roamed away from bssid by itself within window.
func (c *Client) leftOnItsOwnWithin(bssid string, now time.Time, window time.Duration) bool {
	_, ok := c.roamFrom(bssid, now, window, ownRoam)
	return ok
}

// reportedSince reports whether a beacon report sample arrived at or after at.
func (c *Client) reportedSince(at time.Time) bool {
	for _, s := range c.Samples {
		if s.Src == Report && !s.At.Before(at) {
			return true
		}
	}
	return false
}

// steeredWithin counts the roams the policy caused in the last window.
func (c *Client) steeredWithin(now time.Time, window time.Duration) int {
	n := 0
	for _, r := range c.Roams {
		if r.Steered && r.From != "" && now.Sub(r.At) <= window {
			n++
		}
	}
	return n
}
