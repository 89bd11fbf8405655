// Package manager is the radio service of a Meshroot node: it watches the node's hostapd
// instances and nl80211 radios, surveys and scans periodically, reports to the site's gateway over
// the authenticated control plane (radio/meshproto), and applies the channel plans the gateway's
// planner (radio/chanplan) decides, with channel-switch announcements so that clients stay
// associated. On the gateway it also runs the planner.
//
// Radar: when hostapd reports DFS-RADAR-DETECTED the manager remembers the 30-minute
// non-occupancy period of every 20 MHz channel of the operating channel (and the radar itself for
// a day), lets hostapd's own immediate CSA happen if hostapd starts one, and otherwise (or if
// hostapd falls back to a channel that needs a CAC, i.e. an outage) moves the radio itself at once
// to a channel usable without CAC. Blocked channels are never chosen again before their NOP ends,
// whatever the kernel says.
//
// The service has the supervisor's shape: Run(ctx, up) returns when ctx ends or on a fatal error.
package manager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"meshroot/radio/chanplan"
	"meshroot/radio/hostapd"
	"meshroot/radio/meshproto"
	"meshroot/radio/nl80211"
)

// AP is what the manager needs from a hostapd control client (*hostapd.Client implements it).
type AP interface {
	Status(ctx context.Context) (hostapd.Status, error)
	ChanSwitch(ctx context.Context, cs hostapd.ChanSwitch) error
	Attach(ctx context.Context) error
	Events() <-chan hostapd.Event
	Close() error
}

var _ AP = (*hostapd.Client)(nil)

// RadioConfig is one of the node's radios.
type RadioConfig struct {
	// ID is unique in the site, e.g. "<node>/phy1".
	ID string
	// Iface is hostapd's (first BSS) interface; Ctrl its control socket (default
	// /var/run/hostapd/<Iface>).
	Iface string
	Ctrl  string
	Band  chanplan.Band
	// MaxWidth is the width the site wants (the board's maximum at most); MinWidth the least
	// the planner may use (default 20).
	MaxWidth, MinWidth int
	// DFS: the radio may use DFS channels.
	DFS bool
	// Weight and Group are passed to the planner (see chanplan.Radio).
	Weight float64
	Group  string
}

// Config configures the manager.
type Config struct {
	// Node is this node's site-unique name.
	Node string
	// Gateway is true on the node that plans (the one with the WAN).
	Gateway bool
	// GatewayAddr is where satellites send reports (ignored on the gateway).
	GatewayAddr net.Addr
	Radios      []RadioConfig
	// SurveyEvery is the survey/report period (default 15 min); ScanEvery the period of the
	// off-channel scans, which cost clients a few hundred ms (default 1 h); PlanEvery the
	// gateway's planning period (default 1 h).
	SurveyEvery, ScanEvery, PlanEvery time.Duration
	// Policy is the gateway's hysteresis policy (Busy defaults to the learned busy hour).
	Policy chanplan.Policy
	// Location is the site's time zone for the busy hour (default UTC).
	Location *time.Location
	// RadarGrace is how long to wait for hostapd's own radar CSA before moving the radio
	// (default 300 ms).
	RadarGrace time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Log receives the service's lines (default discard). No secret ever reaches it.
	Log *slog.Logger
	// After names the supervisor services the radio service starts after (Deps).
	After []string
}

// Deps are the manager's handles on the system.
type Deps struct {
	NL nl80211.Client
	// DialAP connects to a radio's hostapd (default: hostapd.Dial on its control socket).
	DialAP func(ctx context.Context, r RadioConfig) (AP, error)
	// Conn is the control plane; nil on a single-node site (the gateway plans alone).
	Conn *meshproto.Conn
}

// Manager is the radio service.
type Manager struct {
	cfg  Config
	deps Deps
	log  *slog.Logger

	mu     sync.Mutex
	radios map[string]*radio
	gw     *gateway
}

func (c Config) withDefaults() Config {
	if c.SurveyEvery == 0 {
		c.SurveyEvery = 15 * time.Minute
	}
	if c.ScanEvery == 0 {
		c.ScanEvery = time.Hour
	}
	if c.PlanEvery == 0 {
		c.PlanEvery = time.Hour
	}
	if c.RadarGrace == 0 {
		c.RadarGrace = 300 * time.Millisecond
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Location == nil {
		c.Location = time.UTC
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	for i := range c.Radios {
		if c.Radios[i].Ctrl == "" {
			c.Radios[i].Ctrl = hostapd.DefaultCtrlDir + "/" + c.Radios[i].Iface
		}
	}
	return c
}

// New checks the configuration.
func New(cfg Config, deps Deps) (*Manager, error) {
	cfg = cfg.withDefaults()
	if cfg.Node == "" {
		return nil, errors.New("radio manager: node: empty")
	}
	if deps.NL == nil {
		return nil, errors.New("radio manager: nl80211 client: nil")
	}
	if !cfg.Gateway && deps.Conn == nil {
		return nil, errors.New("radio manager: a satellite needs the control plane (deps.Conn)")
	}
	if !cfg.Gateway && cfg.GatewayAddr == nil {
		return nil, errors.New("radio manager: gateway_addr: needed on a satellite")
	}
	seen := map[string]bool{}
	for i, r := range cfg.Radios {
		f := fmt.Sprintf("radio manager: radios[%d]", i)
		if r.ID == "" || seen[r.ID] {
			return nil, fmt.Errorf("%s.id: %q empty or duplicate", f, r.ID)
		}
		seen[r.ID] = true
		if r.Iface == "" {
			return nil, fmt.Errorf("%s.iface: empty", f)
		}
		switch r.Band {
		case chanplan.Band2G4, chanplan.Band5G, chanplan.Band6G:
		default:
			return nil, fmt.Errorf("%s.band: %q", f, r.Band)
		}
		if r.MaxWidth != 20 && r.MaxWidth != 40 && r.MaxWidth != 80 && r.MaxWidth != 160 {
			return nil, fmt.Errorf("%s.max_width: %d not 20/40/80/160", f, r.MaxWidth)
		}
	}
	if deps.DialAP == nil {
		deps.DialAP = func(ctx context.Context, r RadioConfig) (AP, error) {
			return hostapd.Dial(ctx, r.Ctrl, hostapd.Options{Logger: cfg.Log})
		}
	}
	m := &Manager{cfg: cfg, deps: deps, log: cfg.Log.With("svc", "radio", "node", cfg.Node), radios: map[string]*radio{}}
	if cfg.Gateway {
		m.gw = newGateway(m)
	}
	return m, nil
}

// Name is the service name for the supervisor.
func (m *Manager) Name() string { return "radio" }

// Deps names the services that must be up first (Config.After).
func (m *Manager) Deps() []string { return append([]string(nil), m.cfg.After...) }

// Run connects to every radio's hostapd, then surveys, reports, plans (on the gateway) and
// applies plans until ctx ends. up is called once every radio is attached.
func (m *Manager) Run(ctx context.Context, up func()) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, rc := range m.cfg.Radios {
		r, err := m.attach(ctx, rc)
		if err != nil {
			m.closeAll()
			return err
		}
		m.mu.Lock()
		m.radios[rc.ID] = r
		m.mu.Unlock()
	}
	defer m.closeAll()
	errc := make(chan error, 2+len(m.radios))
	var wg sync.WaitGroup
	for _, r := range m.sortedRadios() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.watch(ctx, r)
		}()
	}
	if m.deps.Conn != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := m.receive(ctx); err != nil && ctx.Err() == nil {
				errc <- err
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.loop(ctx)
	}()
	if up != nil {
		up()
	}
	m.log.Info("radio manager up", "radios", len(m.radios), "gateway", m.cfg.Gateway)
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel()
	wg.Wait()
	return err
}

// loop runs the periodic survey/report and, on the gateway, the planning rounds.
func (m *Manager) loop(ctx context.Context) {
	survey := time.NewTicker(m.cfg.SurveyEvery)
	defer survey.Stop()
	var plan <-chan time.Time
	if m.gw != nil {
		t := time.NewTicker(m.cfg.PlanEvery)
		defer t.Stop()
		plan = t.C
	}
	lastScan := time.Time{}
	report := func() {
		scan := m.cfg.Now().Sub(lastScan) >= m.cfg.ScanEvery
		if scan {
			lastScan = m.cfg.Now()
		}
		m.surveyAndReport(ctx, scan)
	}
	report()
	if m.gw != nil {
		m.gw.plan(ctx, "first plan")
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-survey.C:
			report()
		case <-plan:
			m.gw.plan(ctx, "periodic")
		}
	}
}

func (m *Manager) sortedRadios() []*radio {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*radio, 0, len(m.radios))
	for _, rc := range m.cfg.Radios {
		if r := m.radios[rc.ID]; r != nil {
			out = append(out, r)
		}
	}
	return out
}

func (m *Manager) closeAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.radios {
		r.ap.Close()
	}
}

// receive handles control-plane messages.
func (m *Manager) receive(ctx context.Context) error {
	for {
		msg, from, err := m.deps.Conn.Receive(ctx)
		if err != nil {
			return err
		}
		switch msg.Type {
		case meshproto.TypeChannelPlan:
			var p meshproto.ChannelPlan
			if err := msg.Decode(&p); err != nil {
				m.log.Warn("bad channel plan", "from", msg.Sender, "err", err)
				continue
			}
			go m.applyPlan(ctx, p, msg.Sender, from)
		case meshproto.TypeRadioReport, meshproto.TypeRadar, meshproto.TypePlanResult:
			if m.gw == nil {
				continue
			}
			m.gw.handle(ctx, msg, from)
		}
	}
}
