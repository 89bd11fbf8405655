package radiohook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"meshroot/board"
	"meshroot/firmware"
	"meshroot/provision/profile"
	"meshroot/radio/backhaul"
	"meshroot/radio/chanplan"
	"meshroot/radio/hostapd"
	"meshroot/radio/manager"
	"meshroot/radio/mesh"
	"meshroot/radio/nl80211"
)

// Paths under the root.
const (
	// CtrlDir is hostapd's control-socket directory (ctrl_interface).
	CtrlDir = "run/hostapd"
	// RunDir holds the rendered configurations (0600: they hold the passphrase) and PID files.
	RunDir = "run/meshroot/radio"
	// StoreDoc is the config-store document remembering each radio's channel across restarts.
	StoreDoc = "radio"
)

// Tuning are the service's timers (zero: the defaults).
type Tuning struct {
	// RestartMin and RestartMax bound hostapd's restart backoff (1 s doubling to 30 s); it
	// starts over once hostapd ran StableAfter (30 s).
	RestartMin, RestartMax, StableAfter time.Duration
	// Poll is how often each hostapd's STATUS is read and setup errors retried (2 s).
	Poll time.Duration
	// EnableWait bounds the control plane's wait for every hostapd to be ENABLED (90 s); the
	// radios still starting then join when they are.
	EnableWait time.Duration
	// Manager and Mesh adjust the radio manager's and the mesh node's configurations (tests).
	Manager func(*manager.Config)
	Mesh    func(*mesh.Config)
}

func (t Tuning) withDefaults() Tuning {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.RestartMin, time.Second)
	def(&t.RestartMax, 30*time.Second)
	def(&t.StableAfter, 30*time.Second)
	def(&t.Poll, 2*time.Second)
	def(&t.EnableWait, 90*time.Second)
	return t
}

// Service is the firmware's radio service ("radio"): it serves the site's Wi-Fi on the node's
// radios from the verified site profile and runs the site's mesh control plane. See the package
// documentation.
type Service struct {
	// Board is the detected board (its Radios, or Hwsim for simulated ones).
	Board board.Board
	// Root is the root of the file system ("/" on the device): /proc/cmdline, /run.
	Root string
	// Subscribe delivers verified profiles (provision/agent.Agent.Subscribe).
	Subscribe func(fn func(*profile.Verified)) (cancel func())
	// Secret resolves the profile's secret references (agent.Secret) and WiFiPassphrase is
	// the passphrase the app gave at pairing (agent.WiFiPassphrase).
	Secret         func(ref string) (string, bool)
	WiFiPassphrase func() (string, bool)
	// Secrets, when set, learns the passphrase and the mesh key (the device's log redactor).
	Secrets *firmware.Secrets
	// Node is this node's site-unique name (its serial number).
	Node func() string
	// Gateway reports whether this node is the site's gateway (it has a WAN address).
	Gateway func() bool
	// LAN returns the LAN bridge and the router's address on it.
	LAN func() (bridge string, addr netip.Prefix)
	// Store is the config store (channel memory; nil: none).
	Store func() *firmware.Store
	// LoadModule loads a kernel module with its dependencies (the simulated radios).
	LoadModule func(name, params string) error
	// NL opens nl80211 (default nl80211.Open).
	NL func() (nl80211.Client, error)
	// Runner starts hostapd (default ExecRunner: Debian's hostapd).
	Runner Runner
	// ControlNet opens the control plane's socket on the LAN bridge, BackhaulNet the backhaul
	// agent's ports (defaults: sockets bound to the bridge; the backhaul installs no route:
	// see the package documentation).
	ControlNet  backhaul.Net
	BackhaulNet backhaul.Net
	Log         *slog.Logger
	Tune        Tuning

	log  *slog.Logger
	tune Tuning

	mu       sync.Mutex
	status   Status
	site     *Site
	radios   []Radio
	found    bool
	hwsim    int
	country  string
	plans    map[string]RadioPlan
	procs    map[string]*radioProc
	chosen   map[string]chanplan.Spec
	ctl      *controlRun
	ctlSince time.Time // when the hostapds the control plane waits for were (re)started
	gwSticky bool
	lastFind time.Time // the last attempt to find the radios (retried every 15 s)

	trackMu sync.Mutex
	tracked map[string][]*hostapd.Client // by interface: clients dialed by the manager and the mesh node
}

// Name is "radio".
func (*Service) Name() string { return "radio" }

// Status returns the radios' and the mesh's state (no secrets).
func (s *Service) Status() Status {
	s.mu.Lock()
	st := s.status
	procs := make([]*radioProc, 0, len(s.procs))
	for _, p := range s.procs {
		procs = append(procs, p)
	}
	plans := make(map[string]RadioPlan, len(s.plans))
	for k, v := range s.plans {
		plans[k] = v
	}
	radios := slices.Clone(s.radios)
	ctl := s.ctl
	s.mu.Unlock()
	if st.State == "" {
		st.State = StateNone
	}
	st.Radios = nil
	for _, r := range radios {
		rs := RadioStatus{ID: r.ID, Phy: "phy" + strconv.Itoa(r.Phy), Iface: r.Iface, Band: string(r.Band), State: RadioStopped}
		if len(r.MAC) == 6 {
			rs.BSSID = r.MAC.String()
		}
		if rp, ok := plans[r.ID]; ok {
			if rp.Skip != "" {
				rs.State, rs.LastError = RadioSkipped, rp.Skip
			}
			rs.MobilityDomain = rp.MobilityDomain
		}
		for _, p := range procs {
			if p.id == r.ID {
				p.fill(&rs)
			}
		}
		st.Radios = append(st.Radios, rs)
	}
	if ctl != nil {
		st.Mesh = ctl.status()
	}
	if st.State == StateStarting {
		for _, r := range st.Radios {
			if r.State == "ENABLED" {
				st.State = StateRunning
			}
		}
	}
	st.Node, st.Hwsim = s.nodeName(), s.hwsimCount()
	if st.State == StateRunning || st.State == StateStarting {
		st.Role = "satellite"
		if s.isGateway() {
			st.Role = "gateway"
		}
	}
	return st
}

func (s *Service) set(f func(*Status)) {
	s.mu.Lock()
	f(&s.status)
	s.mu.Unlock()
}

func (s *Service) path(rel string) string { return filepath.Join(s.Root, rel) }

// Run serves the profiles until ctx ends, then stops the control plane and every hostapd.
func (s *Service) Run(ctx context.Context, up func()) error {
	if s.Root == "" {
		s.Root = "/"
	}
	s.log = s.Log
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("service", "radio")
	s.tune = s.Tune.withDefaults()
	if s.Runner == nil {
		s.Runner = ExecRunner{}
	}
	if s.NL == nil {
		s.NL = nl80211.Open
	}
	if s.Subscribe == nil {
		return firmware.Permanent(errors.New("radio: no profile source"))
	}
	s.mu.Lock()
	s.plans, s.procs, s.chosen = map[string]RadioPlan{}, map[string]*radioProc{}, map[string]chanplan.Spec{}
	s.status = Status{State: StateNone, Detail: "waiting for the site profile"}
	s.mu.Unlock()
	s.loadChosen()
	if err := s.prepareDirs(); err != nil {
		return fmt.Errorf("radio: %w", err)
	}
	profiles, cancel := profile.Latest(s.Subscribe)
	defer cancel()
	up()
	defer s.stopAll()
	tick := time.NewTicker(s.tune.Poll)
	defer tick.Stop()
	var latest *profile.Verified
	for {
		select {
		case <-ctx.Done():
			return nil
		case v := <-profiles:
			latest = v
			s.apply(ctx, v)
		case <-tick.C:
			if latest != nil {
				s.reconcile(ctx, false)
			}
		}
	}
}

// prepareDirs makes /run/hostapd's parent, the service's 0700 directory, and /var/run → /run
// (hostapd and tools expect /var/run; a u-root image has no /var).
func (s *Service) prepareDirs() error {
	if err := os.MkdirAll(s.path(RunDir), 0o700); err != nil {
		return err
	}
	if err := os.Chmod(s.path(RunDir), 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll(s.path(CtrlDir), 0o755); err != nil {
		return err
	}
	varRun := s.path("var/run")
	if _, err := os.Lstat(varRun); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(s.path("var"), 0o755); err != nil {
			return err
		}
		if err := os.Symlink("../run", varRun); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	return nil
}

// apply takes a new verified profile: a refused one leaves the configuration in force.
func (s *Service) apply(ctx context.Context, v *profile.Verified) {
	site, err := SiteFrom(v, s.Secret, s.WiFiPassphrase)
	if err != nil {
		s.log.Error("radio: profile refused; the configuration in force stays", "profile_version", v.Version, "err", err)
		s.set(func(st *Status) { st.LastError = err.Error() })
		return
	}
	if s.Secrets != nil {
		s.Secrets.Add(site.Passphrase)
		if len(site.MeshKey) > 0 {
			s.Secrets.Add(string(site.MeshKey))
		}
	}
	s.mu.Lock()
	s.site = &site
	s.status.ProfileVersion, s.status.SSID, s.status.Security, s.status.Country = site.ProfileVersion, site.SSID, string(site.Security), site.Country
	s.status.LastError = ""
	if s.status.State == StateNone {
		// Not "none" any more: a profile is in force and the radios are being set up.
		s.status.State, s.status.Detail = StateStarting, "setting up the radios"
	}
	s.mu.Unlock()
	s.log.Info("radio: site profile", "site", site)
	s.reconcile(ctx, true)
}

// reconcile brings the radios and the control plane to the site in force: find the radios
// (once), set the country, render each radio's configuration and (re)start its hostapd when it
// changed, and (re)start the control plane when its inputs changed.
func (s *Service) reconcile(ctx context.Context, newProfile bool) {
	s.mu.Lock()
	site := s.site
	found := s.found
	s.mu.Unlock()
	if site == nil {
		return
	}
	if !found {
		s.mu.Lock()
		wait := time.Since(s.lastFind) < 15*time.Second
		if !wait {
			s.lastFind = time.Now()
		}
		s.mu.Unlock()
		if wait && !newProfile {
			return
		}
		radios, n, err := s.discover(ctx)
		if err != nil {
			s.setupError(err)
			return
		}
		s.mu.Lock()
		s.radios, s.hwsim, s.found = radios, n, true
		s.mu.Unlock()
		if len(radios) == 0 {
			detail := "the board has no radios"
			if s.Board.Hwsim != nil {
				detail = "no radios: a QEMU board has simulated ones only when booted with " + board.HwsimParam + "=N"
			}
			s.log.Info("radio: " + detail)
			s.set(func(st *Status) { st.State, st.Detail = StateNoRadios, detail })
			return
		}
	}
	s.mu.Lock()
	radios := slices.Clone(s.radios)
	country := s.country
	s.mu.Unlock()
	if len(radios) == 0 {
		return
	}
	if country != site.Country || newProfile {
		if err := s.setCountry(ctx, site.Country); err != nil {
			s.setupError(err)
			return
		}
		var err error
		if radios, err = s.refreshChannels(radios); err != nil {
			s.setupError(err)
			return
		}
	}
	s.applyPlans(ctx, *site, radios)
	s.reconcileControl(ctx, *site)
}

func (s *Service) setupError(err error) {
	s.log.Error("radio: setup failed; retrying", "err", err)
	s.set(func(st *Status) { st.State, st.Detail, st.LastError = StateError, err.Error(), err.Error() })
}

// Hwsim returns N of meshroot.hwsim=N on a kernel command line (0 when absent or invalid).
func Hwsim(cmdline string) int {
	for _, f := range firmware.KernelArgs(cmdline) {
		if v, ok := strings.CutPrefix(f, board.HwsimParam+"="); ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return 0
			}
			return n
		}
	}
	return 0
}

// discover finds the node's radios: the board's, or the simulated ones the kernel command line
// asks for (creating them), each with its netdev.
func (s *Service) discover(ctx context.Context) ([]Radio, int, error) {
	node := s.nodeName()
	var descs []board.Radio
	n := 0
	if h := s.Board.Hwsim; h != nil {
		b, _ := os.ReadFile(s.path("proc/cmdline"))
		n = Hwsim(string(b))
		if n == 0 {
			return nil, 0, nil
		}
		if n > h.Max {
			s.log.Warn("radio: too many simulated radios asked for; creating the most the board allows", "asked", n, "max", h.Max)
			n = h.Max
		}
		if s.LoadModule == nil {
			return nil, n, errors.New("radio: cannot load the simulated radios' module (no module loader)")
		}
		if err := s.LoadModule(h.Module, "radios="+strconv.Itoa(n)); err != nil {
			return nil, n, fmt.Errorf("radio: load %s radios=%d: %w", h.Module, n, err)
		}
		for _, m := range h.Modules {
			if err := s.LoadModule(m, ""); err != nil {
				s.log.Warn("radio: module for Wi-Fi crypto not loaded", "module", m, "err", err)
			}
		}
		for i := 0; i < n; i++ {
			descs = append(descs, h.Radios[i%len(h.Radios)])
		}
	} else {
		descs = slices.Clone(s.Board.Radios)
	}
	if len(descs) == 0 {
		return nil, n, nil
	}
	nl, err := s.NL()
	if err != nil {
		return nil, n, fmt.Errorf("radio: nl80211: %w", err)
	}
	defer nl.Close()
	// The phys (simulated ones appear a moment after the module loads).
	var phys []nl80211.PHY
	deadline := time.Now().Add(15 * time.Second)
	for {
		phys, err = nl.PHYs()
		if err == nil && len(phys) >= len(descs) {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, n, fmt.Errorf("radio: %d radios expected, %d phys found (%v)", len(descs), len(phys), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	sort.Slice(phys, func(i, j int) bool { return phys[i].Index < phys[j].Index })
	if s.Board.Hwsim != nil {
		// The simulated radios are the first n phys: radios made later (a test's station, say)
		// are not the router's.
		for i := range descs {
			descs[i].Phy = phys[i].Index
		}
	}
	ifs, err := nl.Interfaces()
	if err != nil {
		return nil, n, fmt.Errorf("radio: nl80211 interfaces: %w", err)
	}
	sort.Slice(ifs, func(i, j int) bool { return ifs[i].Name < ifs[j].Name })
	var out []Radio
	var errs []error
	for _, d := range descs {
		r := Radio{ID: fmt.Sprintf("%s/phy%d", node, d.Phy), Phy: d.Phy, Band: d.Band, MaxWidth: d.MaxWidthMHz, DFS: d.DFS}
		for _, i := range ifs {
			if i.PHY == d.Phy && (i.Type == nl80211.IfStation || i.Type == nl80211.IfAP) {
				r.Iface, r.MAC = i.Name, i.MAC
				break
			}
		}
		if r.Iface == "" {
			errs = append(errs, fmt.Errorf("radio phy%d: no station or AP netdev on it", d.Phy))
			continue
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, n, errors.Join(errs...)
	}
	for _, e := range errs {
		s.log.Error("radio: radio left out", "err", e)
	}
	s.log.Info("radio: radios found", "radios", len(out), "hwsim", n)
	return out, n, nil
}

// setCountry sets the regulatory domain and waits until the kernel applied it.
func (s *Service) setCountry(ctx context.Context, country string) error {
	nl, err := s.NL()
	if err != nil {
		return fmt.Errorf("radio: nl80211: %w", err)
	}
	defer nl.Close()
	if cur, err := nl.Country(); err == nil && cur == country {
		s.mu.Lock()
		s.country = country
		s.mu.Unlock()
		return nil
	}
	if err := nl.SetCountry(country); err != nil {
		return fmt.Errorf("radio: set country %s: %w", country, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		cur, err := nl.Country()
		if err == nil && cur == country {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("radio: country %s not applied (the kernel says %q: is regulatory.db there?)", country, cur)
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.mu.Lock()
	s.country = country
	s.mu.Unlock()
	s.log.Info("radio: regulatory domain set", "country", country)
	return nil
}

// refreshChannels reads each radio's channels (regulatory flags, DFS state).
func (s *Service) refreshChannels(radios []Radio) ([]Radio, error) {
	nl, err := s.NL()
	if err != nil {
		return nil, fmt.Errorf("radio: nl80211: %w", err)
	}
	defer nl.Close()
	phys, err := nl.PHYs()
	if err != nil {
		return nil, fmt.Errorf("radio: nl80211 phys: %w", err)
	}
	for i := range radios {
		radios[i].Channels = nil
		for _, p := range phys {
			if p.Index != radios[i].Phy {
				continue
			}
			for _, b := range p.Bands {
				for _, c := range b.Channels {
					if board.Band(chanplan.BandOf(c.Freq)) == radios[i].Band {
						radios[i].Channels = append(radios[i].Channels, c)
					}
				}
			}
		}
	}
	s.mu.Lock()
	s.radios = slices.Clone(radios)
	s.mu.Unlock()
	return radios, nil
}

// applyPlans renders every radio's configuration and (re)starts the hostapds whose file changed.
func (s *Service) applyPlans(ctx context.Context, site Site, radios []Radio) {
	bridge := ""
	if s.LAN != nil {
		bridge, _ = s.LAN()
	}
	// A running hostapd keeps the channel it runs on (the planner moves it with a CSA, not a
	// restart): only what else changed restarts it.
	s.mu.Lock()
	chosen := make(map[string]chanplan.Spec, len(s.chosen))
	for k, v := range s.chosen {
		chosen[k] = v
	}
	for id, rp := range s.plans {
		if s.procs[id] != nil && rp.Skip == "" {
			chosen[id] = rp.Config.Channel
		}
	}
	s.mu.Unlock()
	plans, err := Plan(s.nodeName(), site, radios, Layout{CtrlDir: s.path(CtrlDir), Bridge: bridge}, chosen)
	if err != nil {
		s.log.Error("radio: some radios cannot serve the site", "err", err)
		s.set(func(st *Status) { st.LastError = err.Error() })
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	running := 0
	for _, rp := range plans {
		old, had := s.plans[rp.Radio.ID]
		s.plans[rp.Radio.ID] = rp
		p := s.procs[rp.Radio.ID]
		if rp.Skip != "" {
			if p != nil {
				s.log.Info("radio: the site no longer serves this radio's band; stopping it", "radio", rp.Radio.ID)
				p.stop()
				delete(s.procs, rp.Radio.ID)
			}
			continue
		}
		running++
		if had && p != nil && string(old.Conf) == string(rp.Conf) {
			continue
		}
		conf := filepath.Join(s.path(RunDir), "hostapd-"+rp.Radio.Iface+".conf")
		if err := firmware.WriteFileAtomic(conf, rp.Conf, 0o600); err != nil {
			s.log.Error("radio: cannot write hostapd's configuration", "radio", rp.Radio.ID, "err", err)
			continue
		}
		s.log.Info("radio: hostapd configuration", "radio", rp.Radio.ID, "config", rp.Config)
		s.ctlSince = time.Now()
		if p != nil {
			p.reload()
			continue
		}
		p = s.newProc(rp, conf)
		s.procs[rp.Radio.ID] = p
		go p.run(ctx)
	}
	if running > 0 && s.status.State != StateRunning {
		s.status.State, s.status.Detail = StateStarting, ""
	}
}

// rerender renders radio id's configuration again with the channel it had last (before a
// restart after hostapd ended: the planner may have moved it since the file was written) and
// writes it; it returns the plan in force.
func (s *Service) rerender(id string) (RadioPlan, bool) {
	s.mu.Lock()
	site, radios := s.site, slices.Clone(s.radios)
	chosen := make(map[string]chanplan.Spec, len(s.chosen))
	for k, v := range s.chosen {
		chosen[k] = v
	}
	cur, ok := s.plans[id]
	p := s.procs[id]
	s.mu.Unlock()
	if site == nil || !ok || p == nil {
		return cur, ok
	}
	bridge := ""
	if s.LAN != nil {
		bridge, _ = s.LAN()
	}
	plans, _ := Plan(s.nodeName(), *site, radios, Layout{CtrlDir: s.path(CtrlDir), Bridge: bridge}, chosen)
	for _, rp := range plans {
		if rp.Radio.ID != id || rp.Skip != "" || string(rp.Conf) == string(cur.Conf) {
			continue
		}
		if err := firmware.WriteFileAtomic(p.conf, rp.Conf, 0o600); err != nil {
			s.log.Warn("radio: cannot rewrite hostapd's configuration", "radio", id, "err", err)
			return cur, true
		}
		s.mu.Lock()
		s.plans[id] = rp
		s.mu.Unlock()
		return rp, true
	}
	return cur, true
}

// stopAll stops the control plane, then every hostapd, and removes the configurations (they
// hold the passphrase).
func (s *Service) stopAll() {
	s.mu.Lock()
	ctl := s.ctl
	s.ctl = nil
	procs := s.procs
	s.procs = map[string]*radioProc{}
	s.mu.Unlock()
	if ctl != nil {
		ctl.stop()
	}
	for _, p := range procs {
		p.stop()
	}
	for _, p := range procs {
		p.wait()
		os.Remove(p.conf)
	}
	s.set(func(st *Status) {
		if st.State == StateRunning || st.State == StateStarting {
			st.State, st.Detail = StateNone, "stopped"
		}
	})
	s.log.Info("radio: stopped")
}

func (s *Service) hwsimCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hwsim
}

func (s *Service) nodeName() string {
	if s.Node != nil {
		if n := s.Node(); n != "" {
			return n
		}
	}
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "node"
	}
	return h
}

// isGateway is sticky: once this node had the WAN in this boot it stays the gateway (a WAN
// outage does not make the site's only planner a satellite).
func (s *Service) isGateway() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gwSticky {
		return true
	}
	if s.Gateway == nil || s.Gateway() {
		s.gwSticky = true
	}
	return s.gwSticky
}

// chosenDoc is the "radio" config-store document: each radio's last channel.
type chosenDoc struct {
	Channels map[string]chanplan.Spec `json:"channels"`
}

func (s *Service) loadChosen() {
	if s.Store == nil {
		return
	}
	st := s.Store()
	if st == nil {
		return
	}
	var d chosenDoc
	if err := st.Get(StoreDoc, &d); err != nil {
		return
	}
	s.mu.Lock()
	for k, v := range d.Channels {
		if v.Validate() == nil {
			s.chosen[k] = v
		}
	}
	s.mu.Unlock()
}

// remember keeps a radio's channel (the planner's or radar's moves) for its next start.
func (s *Service) remember(id string, spec chanplan.Spec) {
	if spec.Validate() != nil {
		return
	}
	s.mu.Lock()
	if s.chosen[id] == spec {
		s.mu.Unlock()
		return
	}
	s.chosen[id] = spec
	d := chosenDoc{Channels: map[string]chanplan.Spec{}}
	for k, v := range s.chosen {
		d.Channels[k] = v
	}
	s.mu.Unlock()
	if s.Store == nil {
		return
	}
	if st := s.Store(); st != nil {
		if err := st.Put(StoreDoc, d); err != nil {
			s.log.Warn("radio: cannot keep the channel", "radio", id, "err", err)
		}
	}
}

// dialTracked connects to a radio's hostapd for the manager or the mesh node and keeps the
// client, so that after hostapd restarts the service makes it reconnect and attach again at
// once (a client only notices a new hostapd at its next request, and the manager's next one
// may be a survey minutes away: radar events would be missed meanwhile).
func (s *Service) dialTracked(ctx context.Context, iface, ctrl string) (*hostapd.Client, error) {
	c, err := hostapd.Dial(ctx, ctrl, hostapd.Options{Logger: s.log})
	if err != nil {
		return nil, err
	}
	s.trackMu.Lock()
	if s.tracked == nil {
		s.tracked = map[string][]*hostapd.Client{}
	}
	s.tracked[iface] = append(s.tracked[iface], c)
	s.trackMu.Unlock()
	return c, nil
}

// reattach pings every tracked client of iface (a new hostapd took the socket): each
// reconnects and re-attaches, and its owner gets hostapd.EventReattached.
func (s *Service) reattach(iface string) {
	s.trackMu.Lock()
	cs := slices.Clone(s.tracked[iface])
	s.trackMu.Unlock()
	for _, c := range cs {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := c.Ping(ctx); errors.Is(err, hostapd.ErrClosed) {
				s.trackMu.Lock()
				s.tracked[iface] = slices.DeleteFunc(s.tracked[iface], func(x *hostapd.Client) bool { return x == c })
				s.trackMu.Unlock()
			}
		}()
	}
}
