package manager

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"meshroot/radio/chanplan"
	"meshroot/radio/hostapd"
	"meshroot/radio/meshproto"
	"meshroot/radio/nl80211"
)

// radio is the manager's state of one radio.
type radio struct {
	cfg RadioConfig
	ap  AP

	mu      sync.Mutex
	current chanplan.Spec
	status  hostapd.Status
	bssids  []string
	// radar memory: per 20 MHz channel the time radar was last seen (NOP = +30 min).
	radar map[int]time.Time
	// survey counters of the previous sample, by frequency.
	prev map[int]nl80211.Survey
	// switching is closed when the switch in progress ends (nil: none).
	switching chan struct{}
	switchTo  chanplan.Spec
	// hostapdCSA is signalled when hostapd announces a channel switch; csaTo is the target of
	// a switch hostapd announced and has not finished (hostapd's own, after radar, or ours).
	hostapdCSA chan chanplan.Spec
	csaTo      chanplan.Spec
	csaAt      time.Time
	// last report of the radio (for the local radar fallback).
	last chanplan.Radio
}

// attach connects to the radio's hostapd (retrying for up to 30 s: hostapd may still be
// starting) and reads its state.
func (m *Manager) attach(ctx context.Context, rc RadioConfig) (*radio, error) {
	deadline := m.cfg.Now().Add(30 * time.Second)
	var ap AP
	var err error
	for {
		ap, err = m.deps.DialAP(ctx, rc)
		if err == nil {
			break
		}
		if ctx.Err() != nil || m.cfg.Now().After(deadline) {
			return nil, fmt.Errorf("radio %s: hostapd %s: %w", rc.ID, rc.Ctrl, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	if err := ap.Attach(ctx); err != nil {
		ap.Close()
		return nil, fmt.Errorf("radio %s: %w", rc.ID, err)
	}
	r := &radio{cfg: rc, ap: ap, radar: map[int]time.Time{}, prev: map[int]nl80211.Survey{}, hostapdCSA: make(chan chanplan.Spec, 4)}
	if err := r.refresh(ctx); err != nil {
		ap.Close()
		return nil, fmt.Errorf("radio %s: %w", rc.ID, err)
	}
	return r, nil
}

// refresh re-reads STATUS.
func (r *radio) refresh(ctx context.Context) error {
	st, err := r.ap.Status(ctx)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status = st
	r.bssids = r.bssids[:0]
	for _, b := range st.BSS {
		r.bssids = append(r.bssids, b.BSSID.String())
	}
	if s, err := st.Spec(); err == nil {
		r.current = s
	}
	return nil
}

func (r *radio) spec() chanplan.Spec {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.current
}

// csaStale is how long an announced switch counts as in progress without hostapd reporting
// its end (a CSA lasts count × beacon interval, 1-2 s; a failed one never ends).
const csaStale = 30 * time.Second

// pendingLocked returns the target of a switch hostapd announced and has not finished.
func (r *radio) pendingLocked() chanplan.Spec {
	if r.csaTo.IsZero() || time.Since(r.csaAt) > csaStale {
		return chanplan.Spec{}
	}
	return r.csaTo
}

// effective is where the radio is or is being moved by a switch hostapd announced.
func (r *radio) effective() chanplan.Spec {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p := r.pendingLocked(); !p.IsZero() {
		return p
	}
	return r.current
}

// watch handles one radio's hostapd events.
func (m *Manager) watch(ctx context.Context, r *radio) {
	log := m.log.With("radio", r.cfg.ID)
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-r.ap.Events():
			if !ok {
				return
			}
			switch ev.Name {
			case hostapd.EventChannelSwitchStarted:
				if cs, ok := ev.ChannelSwitch(); ok {
					if s, err := specFromSwitch(cs); err == nil {
						r.mu.Lock()
						r.csaTo, r.csaAt = s, time.Now()
						r.mu.Unlock()
						select {
						case r.hostapdCSA <- s:
						default:
						}
					}
				}
			case hostapd.EventCSAFinished, hostapd.EventChannelSwitch, hostapd.EventAPEnabled, hostapd.EventReattached:
				if err := r.refresh(ctx); err != nil {
					log.Warn("status after event", "event", ev.Name, "err", err)
				}
				r.mu.Lock()
				if ev.Name != hostapd.EventReattached {
					r.csaTo = chanplan.Spec{}
				}
				if r.switching != nil && r.current == r.switchTo {
					close(r.switching)
					r.switching = nil
				}
				r.mu.Unlock()
			case hostapd.EventRadarDetected:
				d, _ := ev.DFS()
				log.Warn("radar detected", "freq", d.Freq, "channel", r.spec().String())
				// Only a channel switch hostapd starts from now on answers this radar.
			drain:
				for {
					select {
					case <-r.hostapdCSA:
					default:
						break drain
					}
				}
				go m.onRadar(ctx, r, d)
			case hostapd.EventNOPFinished:
				d, _ := ev.DFS()
				log.Info("radar non-occupancy period over", "freq", d.Freq)
			case hostapd.EventAPDisabled:
				log.Warn("AP disabled")
			case hostapd.EventTerminating:
				log.Warn("hostapd terminating")
			}
		}
	}
}

func specFromSwitch(cs hostapd.ChannelSwitch) (chanplan.Spec, error) {
	if cs.Width <= 20 {
		return chanplan.NewSpec(cs.Freq, 20, 0)
	}
	s := chanplan.Spec{Freq: cs.Freq, Width: cs.Width, Center1: cs.CF1}
	return s, s.Validate()
}

// channelStates builds the radio's per-channel states from nl80211 (regulation, DFS) and the
// manager's radar memory, which wins: a channel stays blocked for its whole NOP even when the
// kernel forgot (a driver reload) or never knew (radar seen by another radio of the site).
func (m *Manager) channelStates(r *radio, phys []nl80211.PHY, now time.Time) map[int]chanplan.ChannelState {
	out := map[int]chanplan.ChannelState{}
	var phyIdx = -1
	ifs, err := m.deps.NL.Interfaces()
	if err == nil {
		for _, i := range ifs {
			if i.Name == r.cfg.Iface {
				phyIdx = i.PHY
			}
		}
	}
	for _, p := range phys {
		if p.Index != phyIdx {
			continue
		}
		for _, b := range p.Bands {
			for _, c := range b.Channels {
				if chanplan.BandOf(c.Freq) != r.cfg.Band {
					continue
				}
				st := chanplan.ChannelState{Freq: c.Freq, Disabled: c.Disabled, NoIR: c.NoIR, Radar: c.Radar,
					NoHT40Minus: c.NoHT40Minus, NoHT40Plus: c.NoHT40Plus, No80: c.No80, No160: c.No160, MaxPowerDBm: c.MaxPowerDBm}
				if c.Radar {
					switch c.DFS {
					case nl80211.DFSAvailable:
						st.DFS = chanplan.DFSAvailable
					case nl80211.DFSUnavailable:
						st.DFS = chanplan.DFSUnavailable
						if c.DFSTime > 0 && c.DFSTime < chanplan.NOP {
							st.NOPUntil = now.Add(chanplan.NOP - c.DFSTime)
						}
					default:
						st.DFS = chanplan.DFSUsable
					}
				}
				out[c.Freq] = st
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for f, t := range r.radar {
		st, ok := out[f]
		if !ok {
			continue
		}
		st.LastRadar = t
		if now.Before(t.Add(chanplan.NOP)) {
			st.DFS, st.NOPUntil = chanplan.DFSUnavailable, t.Add(chanplan.NOP)
		}
		out[f] = st
	}
	return out
}

// measure builds the radio's planner report: channels, survey deltas, scan results, load.
func (m *Manager) measure(ctx context.Context, r *radio, phys []nl80211.PHY, scan bool) chanplan.Radio {
	now := m.cfg.Now()
	log := m.log.With("radio", r.cfg.ID)
	cur := r.effective()
	out := chanplan.Radio{ID: r.cfg.ID, Node: m.cfg.Node, Band: r.cfg.Band, MaxWidth: r.cfg.MaxWidth, MinWidth: r.cfg.MinWidth,
		DFS: r.cfg.DFS, Weight: r.cfg.Weight, Group: r.cfg.Group, Current: cur, Channels: m.channelStates(r, phys, now)}
	if surveys, err := m.deps.NL.Survey(r.cfg.Iface); err != nil {
		log.Warn("survey", "err", err)
	} else {
		r.mu.Lock()
		for _, s := range surveys {
			if chanplan.BandOf(s.Freq) != r.cfg.Band {
				continue
			}
			d := s
			if p, ok := r.prev[s.Freq]; ok && s.Time >= p.Time {
				d.Time, d.TimeBusy, d.TimeTx, d.TimeBSSRx = s.Time-p.Time, s.TimeBusy-p.TimeBusy, s.TimeTx-p.TimeTx, s.TimeBSSRx-p.TimeBSSRx
			}
			r.prev[s.Freq] = s
			if d.Time <= 0 || d.TimeBusy < 0 {
				continue
			}
			busy := float64(d.TimeBusy-d.TimeTx) / float64(d.Time-d.TimeTx)
			if d.Time <= d.TimeTx {
				busy = 0
			}
			sp := chanplan.SurveyPoint{Freq: s.Freq, Busy: clamp01(busy)}
			if s.HasNoise {
				sp.NoiseDBm = float64(s.Noise)
			}
			out.Survey = append(out.Survey, sp)
			if s.Freq == cur.Freq {
				out.Load = clamp01(float64(d.TimeTx+d.TimeBSSRx) / float64(d.Time))
			}
		}
		r.mu.Unlock()
	}
	if scan {
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		err := m.deps.NL.Scan(sctx, r.cfg.Iface, nl80211.ScanOptions{AP: true})
		cancel()
		if err != nil {
			log.Warn("scan", "err", err)
		}
	}
	if bss, err := m.deps.NL.ScanResults(r.cfg.Iface); err == nil {
		for _, b := range bss {
			if chanplan.BandOf(b.Freq) != r.cfg.Band {
				continue
			}
			spec := chanplan.Spec{Freq: b.Freq, Width: b.Width, Center1: b.Center1}
			if spec.Validate() != nil {
				spec = chanplan.Spec{Freq: b.Freq, Width: 20, Center1: b.Freq}
				if spec.Validate() != nil {
					continue
				}
			}
			load := 0.1 // unknown: beacons and light traffic
			if b.HasLoad {
				load = float64(b.Load) / 255
			}
			out.Neighbors = append(out.Neighbors, chanplan.Neighbor{BSSID: b.BSSID.String(), Spec: spec, SignalDBm: b.Signal, Load: load})
		}
	}
	r.mu.Lock()
	r.last = out
	r.mu.Unlock()
	return out
}

func clamp01(x float64) float64 {
	if x < 0 {
		return 0
	}
	if x > 1 {
		return 1
	}
	return x
}

// surveyAndReport measures every radio and reports to the gateway (or to the local planner).
func (m *Manager) surveyAndReport(ctx context.Context, scan bool) {
	phys, err := m.deps.NL.PHYs()
	if err != nil {
		m.log.Warn("phys", "err", err)
	}
	rep := meshproto.RadioReport{Node: m.cfg.Node, At: m.cfg.Now()}
	for _, r := range m.sortedRadios() {
		rr := m.measure(ctx, r, phys, scan)
		r.mu.Lock()
		bssids := append([]string(nil), r.bssids...)
		r.mu.Unlock()
		rep.Radios = append(rep.Radios, meshproto.RadioStatus{Radio: rr, BSSIDs: bssids})
	}
	if m.gw != nil {
		m.gw.ingest(rep, nil)
		return
	}
	if err := m.deps.Conn.Send(m.cfg.GatewayAddr, meshproto.TypeRadioReport, rep); err != nil {
		m.log.Warn("report to gateway", "err", err)
	}
}

// ErrSwitchTimeout means hostapd did not finish a channel switch in time.
var ErrSwitchTimeout = errors.New("channel switch did not complete")

// switchChannel moves a radio with a CSA and waits until hostapd reports the new channel.
func (m *Manager) switchChannel(ctx context.Context, r *radio, to chanplan.Spec, radar bool) error {
	r.mu.Lock()
	pending := r.pendingLocked()
	if r.current == to || (r.switching == nil && pending == to) {
		r.mu.Unlock()
		return nil
	}
	if r.switching != nil || !pending.IsZero() {
		r.mu.Unlock()
		return fmt.Errorf("radio %s: a channel switch is in progress", r.cfg.ID)
	}
	st := r.status
	done := make(chan struct{})
	r.switching, r.switchTo = done, to
	// Leaving a channel in its radar NOP: tell stations to stop transmitting now.
	now := m.cfg.Now()
	for _, f := range r.current.Subchannels() {
		if t, ok := r.radar[f]; ok && now.Before(t.Add(chanplan.NOP)) {
			radar = true
		}
	}
	r.mu.Unlock()
	cs := hostapd.ChanSwitch{
		Count:   hostapd.CSACount(len(st.BSS)),
		Spec:    to,
		HT:      st.IEEE80211N,
		VHT:     st.IEEE80211AC && to.Band() == chanplan.Band5G,
		HE:      st.IEEE80211AX,
		BlockTx: radar,
	}
	beacon := time.Duration(max(st.BeaconInt, 100)) * 1024 * time.Microsecond
	timeout := time.Duration(cs.Count)*beacon + 5*time.Second
	if u, _ := chanplan.Allowed(to, m.lastChannels(r), m.cfg.Now()); u == chanplan.NeedsCAC {
		timeout += 11 * time.Minute // CAC: 60 s, 10 min on ETSI weather-radar channels
	}
	err := r.ap.ChanSwitch(ctx, cs)
	if err == nil {
		m.log.Info("channel switch", "radio", r.cfg.ID, "from", r.spec().String(), "to", to.String(), "count", cs.Count, "radar", radar)
		select {
		case <-done:
		case <-time.After(timeout):
			err = fmt.Errorf("radio %s: %v after %v: %w", r.cfg.ID, to, timeout, ErrSwitchTimeout)
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	r.mu.Lock()
	if r.switching == done {
		r.switching = nil
	}
	r.mu.Unlock()
	if err != nil {
		return fmt.Errorf("radio %s: switch to %v: %w", r.cfg.ID, to, err)
	}
	return nil
}

func (m *Manager) lastChannels(r *radio) map[int]chanplan.ChannelState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last.Channels
}

// applyPlan applies the moves of a plan that concern this node's radios and reports back.
func (m *Manager) applyPlan(ctx context.Context, p meshproto.ChannelPlan, sender string, from net.Addr) {
	for _, mv := range p.Moves {
		m.mu.Lock()
		r := m.radios[mv.Radio]
		m.mu.Unlock()
		if r == nil {
			continue
		}
		err := m.switchChannel(ctx, r, mv.Spec, false)
		res := meshproto.PlanResult{Plan: p.ID, Radio: mv.Radio, Spec: r.spec(), OK: err == nil}
		if err != nil {
			res.Error = err.Error()
			m.log.Warn("plan move failed", "radio", mv.Radio, "to", mv.Spec.String(), "err", err)
		}
		if m.gw != nil {
			m.gw.result(res)
			continue
		}
		if from != nil {
			if err := m.deps.Conn.Send(from, meshproto.TypePlanResult, res); err != nil {
				m.log.Warn("plan result", "to", sender, "err", err)
			}
		}
	}
}

// onRadar handles DFS-RADAR-DETECTED: remember the NOP, let hostapd's own CSA happen if it
// starts one to a channel usable at once, else move the radio ourselves.
func (m *Manager) onRadar(ctx context.Context, r *radio, d hostapd.DFSEvent) {
	now := m.cfg.Now()
	cur := r.spec()
	blocked := cur.Subchannels()
	if d.Width > 0 && d.CF1 > 0 {
		if s := (chanplan.Spec{Freq: d.Freq, Width: d.Width, Center1: d.CF1}); s.Validate() == nil {
			blocked = s.Subchannels()
		}
	}
	if len(blocked) == 0 {
		blocked = []int{d.Freq}
	}
	r.mu.Lock()
	for _, f := range blocked {
		r.radar[f] = now
	}
	r.mu.Unlock()

	phys, _ := m.deps.NL.PHYs()
	states := m.channelStates(r, phys, now)
	var moved chanplan.Spec
	select {
	case s := <-r.hostapdCSA:
		if u, _ := chanplan.Allowed(s, states, now); u == chanplan.Immediate {
			moved = s
			m.log.Info("hostapd moved off radar", "radio", r.cfg.ID, "to", s.String())
		}
	case <-time.After(m.cfg.RadarGrace):
	case <-ctx.Done():
		return
	}
	if moved.IsZero() {
		// A planned or forced move may have taken the radio away meanwhile.
		r.mu.Lock()
		busy, to := r.switching != nil, r.switchTo
		r.mu.Unlock()
		if busy {
			moved = to
		} else if now2 := r.spec(); !overlaps(now2, blocked) {
			moved = now2
		}
	}
	if moved.IsZero() {
		target, err := m.radarFallback(r, states, now)
		if err != nil {
			m.log.Error("no channel to leave radar for", "radio", r.cfg.ID, "err", err)
		} else if err := m.switchChannel(ctx, r, target, true); err != nil {
			m.log.Error("radar move", "radio", r.cfg.ID, "to", target.String(), "err", err)
		} else {
			moved = target
		}
	}
	ev := meshproto.Radar{Radio: r.cfg.ID, Spec: cur, At: now, MovedTo: moved}
	if m.gw != nil {
		m.gw.radar(ctx, ev)
		return
	}
	if err := m.deps.Conn.Send(m.cfg.GatewayAddr, meshproto.TypeRadar, ev); err != nil {
		m.log.Warn("radar report", "err", err)
	}
}

// radarFallback picks where to go now: the planner on this radio alone (its last scan and
// survey), forced, so only channels usable without CAC qualify.
func (m *Manager) radarFallback(r *radio, states map[int]chanplan.ChannelState, now time.Time) (chanplan.Spec, error) {
	r.mu.Lock()
	me := r.last
	me.Current = r.current
	r.mu.Unlock()
	me.ID, me.Band, me.MaxWidth, me.DFS, me.Channels = r.cfg.ID, r.cfg.Band, r.cfg.MaxWidth, r.cfg.DFS, states
	p, err := chanplan.Solve(chanplan.Input{Radios: []chanplan.Radio{me}, Now: now, Force: []string{me.ID}}, chanplan.Constraints{}, chanplan.Options{})
	if err != nil {
		return chanplan.Spec{}, err
	}
	return p.Assign[me.ID], nil
}

func overlaps(s chanplan.Spec, freqs []int) bool {
	for _, a := range s.Subchannels() {
		for _, b := range freqs {
			if a == b {
				return true
			}
		}
	}
	return false
}

// ownBSSIDs lists the radios' BSSIDs (lower case) for the report.
func ownBSSIDs(rs []meshproto.RadioStatus) map[string]string {
	out := map[string]string{}
	for _, r := range rs {
		for _, b := range r.BSSIDs {
			out[strings.ToLower(b)] = r.Radio.ID
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
