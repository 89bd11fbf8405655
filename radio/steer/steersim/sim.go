package steersim

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"sort"
	"time"

	"meshroot/radio/steer"
)

// Options tune a run. Zero fields take the defaults.
type Options struct {
	// Step is the simulation step (100 ms); Tick the controller's period (1 s).
	Step, Tick time.Duration
	// FadeDB and FadeTau are the slow fading's σ and correlation time (3 dB, 5 s).
	FadeDB  float64
	FadeTau time.Duration
	// UplinkNoise, ProbeNoise and ReportNoise are the measurements' σ (2, 3, 2 dB).
	UplinkNoise, ProbeNoise, ReportNoise float64
	// BestTolerance: a BSS counts as best when its throughput is at least the best BSS's at
	// BestTolerance dB less signal (3 dB: the uncertainty of a signal estimate).
	BestTolerance float64
	// Grace: how long a client may be off its best BSS before it counts (10 s).
	Grace time.Duration
	// Debug, when set, receives a line for every second a client spends off its best BSS
	// beyond Grace, and every action (for investigations).
	Debug func(string)
	// Record keeps every roam in Result.RoamLog (for investigations of ping-pong).
	Record bool
}

func (o Options) withDefaults() Options {
	if o.Step == 0 {
		o.Step = 100 * time.Millisecond
	}
	if o.Tick == 0 {
		o.Tick = time.Second
	}
	if o.FadeDB == 0 {
		o.FadeDB = 3
	}
	if o.FadeTau == 0 {
		o.FadeTau = 5 * time.Second
	}
	if o.UplinkNoise == 0 {
		o.UplinkNoise = 2
	}
	if o.ProbeNoise == 0 {
		o.ProbeNoise = 3
	}
	if o.ReportNoise == 0 {
		o.ReportNoise = 2
	}
	if o.BestTolerance == 0 {
		o.BestTolerance = 3
	}
	if o.Grace == 0 {
		o.Grace = 10 * time.Second
	}
	return o
}

// Result is what a run measured.
type Result struct {
	Trace, Policy string
	// OnBest is the share of connected client-time of 802.11v-capable clients that is on a
	// best BSS or off it for at most Grace; OnBestByKind the same per kind (legacy included);
	// OnBestStrict counts only time actually on a best BSS (capable clients).
	OnBest       float64
	OnBestByKind map[Kind]float64
	OnBestStrict float64
	// Roams and PingPongs are counted over all clients; SteeredPingPongs are the ping-pongs
	// whose return was a steered roam, InducedPingPongs those whose first leg was steered and
	// whose return was the client's own; ClientHours is connected time.
	Roams, PingPongs, SteeredPingPongs, InducedPingPongs int
	ClientHours                                          float64
	// Actions by kind, and the share of client-time without an association.
	Steers, Kicks, BeaconRequests int
	Disconnected                  float64
	// RoamLog is every roam, in order (only with Options.Record).
	RoamLog []RoamRecord
	// Fallback is, for every kick of an 802.11v client, the time since the first BSS transition
	// request it did not follow (requests within a kick's rate limit of 5 minutes excluded).
	Fallback []time.Duration
}

// RoamRecord is one roam of a run.
type RoamRecord struct {
	// At is the time into the trace.
	At       time.Duration
	Client   string
	Kind     Kind
	From, To string
	// Cause is why the client moved: "steered" (it followed a BSS transition request),
	// "trigger" (its own roaming threshold), "background" (a background scan found a better
	// BSS), "lost" (its link was gone), "disassoc" (the AP's disassociation timer), "kicked".
	Cause string
	// Reason is the reason of the last steering action for the client before the roam.
	Reason string
	// FromMean and ToMean are the true local-mean signals (no fading) of From and To;
	// FromTruth and ToTruth with fading.
	FromMean, ToMean, FromTruth, ToTruth float64
	// ToBest: To was a best BSS at the roam; FromBest: From was.
	ToBest, FromBest bool
	// Back: for a ping-pong, how long ago the client left To (0 otherwise).
	Back time.Duration
}

// PingPongRate is the share of roams that were ping-pongs.
func (r Result) PingPongRate() float64 {
	if r.Roams == 0 {
		return 0
	}
	return float64(r.PingPongs) / float64(r.Roams)
}

// RoamsPerClientHour is the roaming rate.
func (r Result) RoamsPerClientHour() float64 {
	if r.ClientHours == 0 {
		return 0
	}
	return float64(r.Roams) / r.ClientHours
}

func (r Result) String() string {
	return fmt.Sprintf("%s/%s: on best within 10 s %.1f%% (strict %.1f%%), roams %d (%.1f/client-h), ping-pong %.1f%% (steered %d, induced %d), steers %d, kicks %d, beacon requests %d, disconnected %.2f%%",
		r.Trace, r.Policy, 100*r.OnBest, 100*r.OnBestStrict, r.Roams, r.RoamsPerClientHour(), 100*r.PingPongRate(), r.SteeredPingPongs, r.InducedPingPongs, r.Steers, r.Kicks, r.BeaconRequests, 100*r.Disconnected)
}

// epoch is the simulated clock's start.
var epoch = time.Date(2026, 3, 2, 18, 0, 0, 0, time.UTC)

type cacheEntry struct {
	sig float64
	at  time.Time
}

type btmReq struct {
	a         steer.Action
	respondAt time.Time
	scanned   bool
}

type simClient struct {
	spec  ClientSpec
	rng   *rand.Rand // measurement noise and behaviour
	fade  map[string]float64
	truth map[string]float64 // true signal per BSS this step (with fading)
	mean  map[string]float64 // the local mean (without fading): what "best" is judged on

	bss        string
	connectTo  string
	connectAt  time.Time
	scanUntil  time.Time
	scanThen   string // "trigger", "background", "connect", "btm"
	lastScan   time.Time
	nextBg     time.Time
	cache      map[string]cacheEntry
	btm        *btmReq
	beaconAt   time.Time
	beaconWant bool
	disTimer   time.Time // AP disassociation imminent timer
	disFrom    string

	leftAt    map[string]time.Time
	steeredTo string // the target of the BSS transition the client accepted
	// arrivedSteered: the client came to its BSS by a steered roam.
	arrivedSteered bool
	firstSteer     time.Time // the first BSS transition request not followed yet
	lastSteer      time.Time
	lastKick       time.Time
	offBestSince   time.Time
	lastBSS        string
	// why is the cause of the association under way (RoamRecord.Cause); reason the last
	// steering action's reason.
	why, reason string
}

// Run plays a trace with a policy (nil: clients alone, no steering).
func Run(tr Trace, d steer.Decider, opt Options) Result {
	opt = opt.withDefaults()
	name := "none"
	if d != nil {
		name = d.Name()
	}
	res := Result{Trace: tr.Name, Policy: name, OnBestByKind: map[Kind]float64{}}
	t := steer.NewTracker()
	t.SetBSSes(tr.Site.BSSes)
	bss := map[string]steer.BSS{}
	for _, b := range tr.Site.BSSes {
		bss[b.BSSID] = b
	}
	blocked := map[[2]string]time.Time{} // (client, bssid) → until
	clients := make([]*simClient, len(tr.Clients))
	for i, spec := range tr.Clients {
		h := fnv.New64a()
		h.Write([]byte(spec.MAC))
		c := &simClient{spec: spec, rng: rand.New(rand.NewPCG(tr.Seed, h.Sum64())), fade: map[string]float64{},
			truth: map[string]float64{}, mean: map[string]float64{}, cache: map[string]cacheEntry{}, leftAt: map[string]time.Time{}}
		c.connectAt = epoch.Add(time.Duration(c.rng.IntN(20000)) * time.Millisecond)
		c.nextBg = c.connectAt.Add(time.Duration(60+c.rng.IntN(240)) * time.Second)
		clients[i] = c
	}
	caps := func(c *simClient) steer.Caps {
		k := c.spec.Kind
		cp := steer.Caps{BTM: k.BTMCapable(), Beacon: k == Smart || k == Rejecter, FT: k == Smart, Bands: []steer.Band{steer.Band24}}
		if c.spec.FiveG {
			cp.Bands = append(cp.Bands, steer.Band5)
		}
		return cp
	}
	usable := func(c *simClient, b steer.BSS) bool { return b.Band == steer.Band24 || c.spec.FiveG }
	// bestThroughput is the throughput a BSS needs to count as best for c now.
	bestThroughput := func(c *simClient) float64 {
		bestT := 0.0
		for _, b := range tr.Site.BSSes {
			if usable(c, b) {
				bestT = math.Max(bestT, steer.Throughput(c.mean[b.BSSID]-opt.BestTolerance, b))
			}
		}
		return bestT
	}
	// choose is the client's own choice: the strongest BSS it knows of, 5 GHz preferred when
	// heard above -70 dBm, skipping BSSes that refused it.
	choose := func(now time.Time, c *simClient) string {
		best, bestScore := "", math.Inf(-1)
		for _, b := range tr.Site.BSSes {
			e, ok := c.cache[b.BSSID]
			if !ok || !usable(c, b) || e.sig < -88 {
				continue
			}
			if until, bl := blocked[[2]string{c.spec.MAC, b.BSSID}]; bl && now.Before(until) {
				continue
			}
			score := e.sig
			if b.Band != steer.Band24 && e.sig > -70 {
				score += 10
			}
			if score > bestScore {
				best, bestScore = b.BSSID, score
			}
		}
		return best
	}
	noise := func(c *simClient, sd float64) float64 { return sd * c.rng.NormFloat64() }
	scan := func(now time.Time, c *simClient, then string) {
		c.scanUntil, c.scanThen, c.lastScan = now.Add(1500*time.Millisecond), then, now
	}
	leave := func(now time.Time, c *simClient) {
		if c.bss != "" {
			t.Disassociated(now, c.spec.MAC, c.bss)
			c.leftAt[c.bss] = now
			c.bss = ""
		}
	}
	associate := func(now time.Time, c *simClient, to string) {
		if to == c.bss || to == "" {
			return
		}
		from := c.bss
		if from == "" {
			from = c.lastBSS
		}
		if from != "" && from != to {
			res.Roams++
			var back time.Duration
			if left, ok := c.leftAt[to]; ok && now.Sub(left) < time.Minute {
				back = now.Sub(left)
				res.PingPongs++
				switch {
				case c.steeredTo == to:
					res.SteeredPingPongs++
				case c.arrivedSteered:
					res.InducedPingPongs++
				}
				if opt.Debug != nil {
					opt.Debug(fmt.Sprintf("%v PINGPONG %s %s -> %s (left %v ago) mean from %.0f to %.0f", now.Sub(epoch), c.spec.MAC[12:], from[12:], to[12:], now.Sub(left), c.mean[from], c.mean[to]))
				}
			}
			if opt.Record {
				why := c.why
				if c.steeredTo == to {
					why = "steered"
				}
				bestT := bestThroughput(c)
				res.RoamLog = append(res.RoamLog, RoamRecord{At: now.Sub(epoch), Client: c.spec.MAC, Kind: c.spec.Kind, From: from, To: to,
					Cause: why, Reason: c.reason, FromMean: c.mean[from], ToMean: c.mean[to], FromTruth: c.truth[from], ToTruth: c.truth[to],
					FromBest: steer.Throughput(c.mean[from], bss[from]) >= bestT, ToBest: steer.Throughput(c.mean[to], bss[to]) >= bestT, Back: back})
			}
		}
		if c.bss != "" {
			c.leftAt[c.bss] = now
			t.Disassociated(now, c.spec.MAC, c.bss)
		}
		c.arrivedSteered = c.steeredTo == to
		c.why = ""
		c.bss, c.lastBSS = to, to
		c.btm, c.disTimer, c.steeredTo, c.firstSteer = nil, time.Time{}, "", time.Time{}
		t.Associated(now, c.spec.MAC, to, caps(c))
	}
	deliver := func(now time.Time, a steer.Action) {
		var c *simClient
		for _, x := range clients {
			if x.spec.MAC == a.Client {
				c = x
			}
		}
		if c == nil || c.bss != a.From {
			return
		}
		switch a.Kind {
		case steer.ActBeaconRequest:
			res.BeaconRequests++
			if c.spec.Kind == Smart || c.spec.Kind == Rejecter {
				c.beaconAt, c.beaconWant = now.Add(300*time.Millisecond), true
			}
		case steer.ActSteer:
			res.Steers++
			c.reason = a.Reason
			if c.firstSteer.IsZero() || now.Sub(c.lastSteer) > time.Minute {
				c.firstSteer = now
			}
			c.lastSteer = now
			if a.DisassocTimer > 0 {
				c.disTimer = now.Add(time.Duration(a.DisassocTimer) * 1024 * time.Microsecond * 100)
				c.disFrom = a.From
			}
			switch c.spec.Kind {
			case Smart, Rejecter:
				c.btm = &btmReq{a: a, respondAt: now.Add(time.Duration(100+c.rng.IntN(200)) * time.Millisecond)}
			}
		case steer.ActKick:
			res.Kicks++
			// Kicks are rate limited per client (steer.Config.KickEvery): a request made
			// while the client's last kick is recent does not start the clock.
			if !c.firstSteer.IsZero() && (c.lastKick.IsZero() || c.firstSteer.Sub(c.lastKick) >= 5*time.Minute) {
				res.Fallback = append(res.Fallback, now.Sub(c.firstSteer))
			}
			c.firstSteer, c.lastKick = time.Time{}, now
			for _, b := range a.Block {
				blocked[[2]string{c.spec.MAC, b}] = now.Add(a.BlockFor)
			}
			leave(now, c)
			c.connectTo, c.connectAt, c.why, c.reason = "", now.Add(time.Second), "kicked", a.Reason
		}
	}

	var capTime, capOK, capStrict float64
	kindTime, kindOK := map[Kind]float64{}, map[Kind]float64{}
	var connected, total float64
	step := opt.Step
	rho := math.Exp(-float64(step) / float64(opt.FadeTau))
	nextTick := epoch
	for now := epoch; now.Before(epoch.Add(tr.Duration)); now = now.Add(step) {
		d0 := now.Sub(epoch)
		for _, c := range clients {
			pos := c.spec.Position(d0)
			for _, n := range tr.Site.Nodes {
				c.fade[n.Name] = rho*c.fade[n.Name] + math.Sqrt(1-rho*rho)*opt.FadeDB*c.rng.NormFloat64()
			}
			for _, b := range tr.Site.BSSes {
				c.mean[b.BSSID] = tr.Site.Signal(c.spec.MAC, pos, b.BSSID)
				c.truth[b.BSSID] = c.mean[b.BSSID] + c.fade[b.Node]
			}
			heard := func() {
				for _, b := range tr.Site.BSSes {
					sig := c.truth[b.BSSID]
					if sig < -92 || !usable(c, b) {
						continue
					}
					c.cache[b.BSSID] = cacheEntry{sig: sig + noise(c, opt.ReportNoise), at: now}
					t.Signal(now, c.spec.MAC, b.BSSID, sig+noise(c, opt.ProbeNoise), steer.Probe)
				}
			}
			// A scan ends.
			if !c.scanUntil.IsZero() && !now.Before(c.scanUntil) {
				c.scanUntil = time.Time{}
				heard()
				switch c.scanThen {
				case "connect":
					c.connectTo, c.connectAt = choose(now, c), now.Add(100*time.Millisecond)
				case "trigger", "background":
					if c.bss != "" {
						cur := c.truth[c.bss]
						delta := 12.0
						switch {
						case cur < -75:
							delta = 4
						case cur < -65:
							delta = 8
						}
						if to := choose(now, c); to != "" && to != c.bss && c.cache[to].sig >= cur+delta {
							c.connectTo, c.connectAt, c.why = to, now.Add(150*time.Millisecond), c.scanThen
						}
					}
				case "btm":
					// Decide the pending BSS transition request now that the results are fresh.
					if c.btm != nil {
						c.btm.scanned = true
						c.btm.respondAt = now
					}
				}
			}
			// An association completes.
			if !c.connectAt.IsZero() && !now.Before(c.connectAt) && c.scanUntil.IsZero() {
				to := c.connectTo
				c.connectAt, c.connectTo = time.Time{}, ""
				if to == "" && (len(c.cache) == 0 || now.Sub(c.lastScan) > 5*time.Second) {
					scan(now, c, "connect")
				} else {
					if to == "" {
						to = choose(now, c)
					}
					if until, bl := blocked[[2]string{c.spec.MAC, to}]; bl && now.Before(until) {
						to = choose(now, c)
					}
					if to != "" && c.truth[to] >= -88 {
						associate(now, c, to)
					} else if c.bss == "" {
						c.connectAt = now.Add(2 * time.Second)
					}
				}
			}
			if c.bss != "" {
				cur := c.truth[c.bss]
				switch {
				case cur < -90:
					leave(now, c)
					c.connectAt, c.why = now.Add(500*time.Millisecond), "lost"
				case !c.disTimer.IsZero() && !now.Before(c.disTimer) && c.disFrom == c.bss:
					// hostapd disassociates after the BSS transition request's timer.
					c.disTimer = time.Time{}
					leave(now, c)
					c.connectAt, c.why = now.Add(500*time.Millisecond), "disassoc"
				}
			}
			if c.bss != "" && c.scanUntil.IsZero() && c.connectAt.IsZero() {
				// Beacon report.
				if c.beaconWant && !now.Before(c.beaconAt) {
					c.beaconWant = false
					for _, b := range tr.Site.BSSes {
						sig := c.truth[b.BSSID]
						if sig < -92 || !usable(c, b) {
							continue
						}
						m := sig + noise(c, opt.ReportNoise)
						c.cache[b.BSSID] = cacheEntry{sig: m, at: now}
						t.Signal(now, c.spec.MAC, b.BSSID, m, steer.Report)
					}
				}
				// BSS transition request.
				if c.btm != nil && !now.Before(c.btm.respondAt) {
					r := c.btm
					if c.spec.Kind == Rejecter {
						c.btm = nil
						t.BTMResponse(now, c.spec.MAC, 7, "")
					} else {
						target := ""
						stale := false
						for _, cd := range r.a.Candidates {
							e, ok := c.cache[cd.BSSID]
							if !ok || now.Sub(e.at) > 10*time.Second {
								stale = true
								continue
							}
							if e.sig >= -82 && (r.a.DisassocImminent || e.sig >= c.truth[c.bss]-5) {
								target = cd.BSSID
								break
							}
						}
						switch {
						case target == "" && stale && !r.scanned:
							scan(now, c, "btm")
						case target == "":
							c.btm = nil
							t.BTMResponse(now, c.spec.MAC, 7, "")
						default:
							c.btm = nil
							t.BTMResponse(now, c.spec.MAC, 0, target)
							c.connectTo, c.connectAt, c.steeredTo = target, now.Add(50*time.Millisecond), target
						}
					}
				}
				// The client's own roaming and background scans.
				if c.btm == nil && c.connectAt.IsZero() && c.scanUntil.IsZero() {
					if c.truth[c.bss] < c.spec.RoamTrigger && now.Sub(c.lastScan) >= 15*time.Second {
						scan(now, c, "trigger")
					} else if !now.Before(c.nextBg) {
						c.nextBg = now.Add(time.Duration(120+c.rng.IntN(180)) * time.Second)
						scan(now, c, "background")
					}
				}
			}

			// Score.
			total += step.Seconds()
			if c.bss == "" {
				continue
			}
			connected += step.Seconds()
			bestT := bestThroughput(c)
			on := steer.Throughput(c.mean[c.bss], bss[c.bss]) >= bestT
			if on {
				c.offBestSince = time.Time{}
			} else if c.offBestSince.IsZero() {
				c.offBestSince = now
			}
			ok := on || now.Sub(c.offBestSince) <= opt.Grace
			if !ok && opt.Debug != nil && now.Sub(epoch)%time.Second == 0 {
				line := fmt.Sprintf("%v %s(%s) on %s(%.0f) off %v:", now.Sub(epoch), c.spec.MAC[12:], c.spec.Kind, c.bss[12:], c.mean[c.bss], now.Sub(c.offBestSince))
				tc := t.Client(c.spec.MAC)
				for _, b := range tr.Site.BSSes {
					smp := tc.Samples[b.BSSID]
					line += fmt.Sprintf(" %s=%.0f/%.0f(est %.0f %v %d)", b.BSSID[12:], c.mean[b.BSSID], steer.Throughput(c.mean[b.BSSID], b), smp.Smoothed(), now.Sub(smp.At).Round(time.Second), smp.Src)
				}
				opt.Debug(line)
			}
			k := c.spec.Kind
			kindTime[k] += step.Seconds()
			if ok {
				kindOK[k] += step.Seconds()
			}
			if k.BTMCapable() {
				capTime += step.Seconds()
				if ok {
					capOK += step.Seconds()
				}
				if on {
					capStrict += step.Seconds()
				}
			}
		}
		// The controller.
		if !now.Before(nextTick) {
			nextTick = nextTick.Add(opt.Tick)
			for _, c := range clients {
				if c.bss != "" {
					t.Signal(now, c.spec.MAC, c.bss, c.truth[c.bss]+noise(c, opt.UplinkNoise), steer.Uplink)
				}
			}
			if d != nil {
				for _, a := range d.Decide(now, t) {
					if opt.Debug != nil && a.Kind != steer.ActBeaconRequest {
						opt.Debug(fmt.Sprintf("%v ACTION %s %s from %s to %v %s", now.Sub(epoch), a.Kind, a.Client[12:], a.From[12:], a.Targets(), a.Reason))
					}
					t.Steered(now, a)
					deliver(now, a)
				}
			}
		}
	}
	if capTime > 0 {
		res.OnBest, res.OnBestStrict = capOK/capTime, capStrict/capTime
	}
	for k, v := range kindTime {
		if v > 0 {
			res.OnBestByKind[k] = kindOK[k] / v
		}
	}
	res.ClientHours = connected / 3600
	if total > 0 {
		res.Disconnected = 1 - connected/total
	}
	sort.Slice(res.Fallback, func(i, j int) bool { return res.Fallback[i] < res.Fallback[j] })
	return res
}
