package vpnhook

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"meshroot/firmware"
	"meshroot/provision/profile"
	"meshroot/vpn"
	"meshroot/vpn/vpnlog"
)

// Engine is what the service drives: vpn.Connection (Start once, Update with what changed,
// Status, Stop).
type Engine interface {
	Start(ctx context.Context, cfg vpn.Config) error
	Update(cfg vpn.Config) error
	Status() vpn.Status
	Stop() error
}

// NewEngine makes this build's VPN engine: a vpn.Connection whose tunnel activity and BGP logs
// go to logs. Set it to nil for a build without a VPN: the service then reports the state
// "unavailable" and logs "vpn: not available in this build".
var NewEngine = func(log *slog.Logger, logs vpnlog.Sink) Engine {
	return &vpn.Connection{Log: logs, Logger: log}
}

// States of the service (Status.State).
const (
	StateNone        = "none"        // the profile has no VPN (or there is no profile yet)
	StateUnavailable = "unavailable" // a plan is ready but this build has no VPN engine
	StateWaiting     = "waiting"     // a plan is ready; the WAN has no address yet
	StateRunning     = "running"     // the engine runs the plan (see the tunnels)
	StateError       = "error"       // the engine refused the plan (retried)
)

// TunnelStatus is one tunnel as the status API shows it.
type TunnelStatus struct {
	Name    string `json:"name"`    // "tunnel1", "tunnel2" (profile order)
	Outside string `json:"outside"` // the endpoint
	Device  string `json:"device,omitempty"`
	// IKE and ESP are AWS's phase states (Established, Rekeying, Negotiating, Down).
	IKE string `json:"ike"`
	ESP string `json:"esp"`
	// InService: the data plane carries traffic through this tunnel.
	InService bool `json:"in_service"`
	// BGP is the IPv4 session's state ("" in static mode).
	BGP         string `json:"bgp,omitempty"`
	PrefixesIn  int    `json:"prefixes_in"`
	PrefixesOut int    `json:"prefixes_out"`
	BytesIn     uint64 `json:"bytes_in"`
	BytesOut    uint64 `json:"bytes_out"`
	Failovers   uint64 `json:"failovers"`
	LastError   string `json:"last_error,omitempty"`
}

// Status is the VPN as the status API shows it (no secrets).
type Status struct {
	State          string         `json:"state"`
	Detail         string         `json:"detail,omitempty"`
	ConnectionID   string         `json:"connection_id,omitempty"`
	ProfileVersion uint64         `json:"profile_version,omitempty"`
	LocalAddress   string         `json:"local_address,omitempty"`
	Peers          []string       `json:"peers,omitempty"`
	Tunnels        []TunnelStatus `json:"tunnels,omitempty"`
	// Routes are the kernel routes into the tunnels (prefix → tunnels).
	Routes map[string][]string `json:"routes,omitempty"`
	// LastError is the last refused profile or engine error.
	LastError string `json:"last_error,omitempty"`
}

// Service runs the VPN from the verified profiles.
type Service struct {
	// Subscribe delivers verified profiles (provision/agent.Agent.Subscribe).
	Subscribe func(fn func(*profile.Verified)) (cancel func())
	// Secret resolves secret references (agent.Secret).
	Secret func(ref string) (string, bool)
	// LocalAddress is the WAN's address now (invalid while the WAN has none).
	LocalAddress func() netip.Addr
	// Secrets, when set, learns every PSK (the device logger scrubs them).
	Secrets *firmware.Secrets
	// Logs receives the VPN's BGP and tunnel records (the log shipper's sink).
	Logs vpnlog.Sink
	// OnPlan is called with every accepted plan (the firewall admits IKE from its peers).
	OnPlan func(*Plan)
	// NewEngine overrides the package's NewEngine (tests; nil uses the package's).
	NewEngine func(log *slog.Logger, logs vpnlog.Sink) Engine
	// NoEngine forces the "not available" path (as a build without a VPN).
	NoEngine bool
	// Retry is how often a failed start is retried and the WAN address checked (default 5 s).
	Retry time.Duration
	Log   *slog.Logger

	mu      sync.Mutex
	status  Status
	plan    *Plan
	engine  Engine
	started bool
	local   netip.Addr // the WAN address the engine runs with
	applied uint64     // the profile version the engine runs
}

// Name is "vpn".
func (*Service) Name() string { return "vpn" }

// Status returns the VPN's state, with the engine's tunnels when it runs.
func (s *Service) Status() Status {
	s.mu.Lock()
	st, eng, started, plan := s.status, s.engine, s.started, s.plan
	s.mu.Unlock()
	if st.State == "" {
		st.State = StateNone
	}
	if eng == nil || !started || plan == nil {
		return st
	}
	vs := eng.Status()
	names := map[string]vpn.Tunnel{}
	order := map[string]int{}
	for i, t := range plan.Config.Tunnels {
		names[t.OutsideAddress.String()] = t
		order[t.OutsideAddress.String()] = i
	}
	st.Tunnels = make([]TunnelStatus, 0, len(vs.Tunnels))
	for _, t := range vs.Tunnels {
		ts := TunnelStatus{Name: t.Name, Outside: t.Name, Device: t.Device, IKE: t.Phase1, ESP: t.Phase2, InService: t.Usable,
			BytesIn: t.BytesIn, BytesOut: t.BytesOut, Failovers: t.Failovers, LastError: t.LastError}
		if i, ok := order[t.Name]; ok {
			ts.Name = "tunnel" + string(rune('1'+i))
		}
		for j, p := range t.BGP {
			if j == 0 {
				ts.BGP = p.State
			}
			ts.PrefixesIn += p.PrefixesIn
			ts.PrefixesOut += p.PrefixesOut
		}
		st.Tunnels = append(st.Tunnels, ts)
	}
	if len(vs.Routes) > 0 {
		st.Routes = map[string][]string{}
		for _, r := range vs.Routes {
			st.Routes[r.Prefix] = r.Tunnels
		}
	}
	return st
}

// Plan returns the plan in force, or nil.
func (s *Service) Plan() *Plan {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.plan
}

func (s *Service) set(f func(*Status)) {
	s.mu.Lock()
	f(&s.status)
	s.mu.Unlock()
}

// Run follows the profiles and the WAN address until ctx ends, then stops the engine.
func (s *Service) Run(ctx context.Context, up func()) error {
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("service", "vpn")
	newEngine := s.NewEngine
	if newEngine == nil {
		newEngine = NewEngine
	}
	if s.NoEngine {
		newEngine = nil
	}
	retry := s.Retry
	if retry <= 0 {
		retry = 5 * time.Second
	}
	localAddr := s.LocalAddress
	if localAddr == nil {
		localAddr = func() netip.Addr { return netip.Addr{} }
	}
	profiles, cancel := profile.Latest(s.Subscribe)
	defer cancel()
	up()
	defer s.stopEngine(log)
	tick := time.NewTicker(retry)
	defer tick.Stop()
	var said uint64
	for {
		select {
		case <-ctx.Done():
			return nil
		case v := <-profiles:
			if v.VPN == nil {
				s.stopEngine(log)
				s.mu.Lock()
				s.plan = nil
				s.status = Status{State: StateNone, ProfileVersion: v.Version, Detail: "the site profile has no VPN connection"}
				s.mu.Unlock()
				continue
			}
			plan, err := NewPlan(v.Version, v.VPN, s.Secret)
			if err != nil {
				log.Error("vpn: profile refused; the configuration in force stays", "profile_version", v.Version, "err", err)
				s.set(func(st *Status) { st.LastError = err.Error() })
				continue
			}
			if s.Secrets != nil {
				s.Secrets.Add(plan.PSKs()...)
			}
			if r, ok := s.Logs.(*vpnlog.Redactor); ok {
				r.Add(plan.PSKs()...)
			}
			s.mu.Lock()
			s.plan = plan
			s.mu.Unlock()
			if s.OnPlan != nil {
				s.OnPlan(plan)
			}
			if newEngine == nil {
				if said != plan.ProfileVersion {
					log.Warn("vpn: not available in this build", "connection", plan.Config.ConnectionID, "tunnels", len(plan.Config.Tunnels), "profile_version", plan.ProfileVersion)
					said = plan.ProfileVersion
				}
				st := s.base(plan)
				st.State, st.Detail = StateUnavailable, "vpn: not available in this build"
				s.set(func(x *Status) { *x = st })
				continue
			}
		case <-tick.C:
		}
		if newEngine != nil {
			s.reconcile(ctx, log, localAddr(), newEngine)
		}
	}
}

func (s *Service) base(p *Plan) Status {
	st := Status{ConnectionID: p.Config.ConnectionID, ProfileVersion: p.ProfileVersion}
	for _, a := range p.Peers() {
		st.Peers = append(st.Peers, a.String())
	}
	return st
}

// reconcile makes the engine run the plan in force from the WAN's address: start it, update it
// (new plan or new address), or wait for the WAN.
func (s *Service) reconcile(ctx context.Context, log *slog.Logger, local netip.Addr, newEngine func(*slog.Logger, vpnlog.Sink) Engine) {
	s.mu.Lock()
	plan, eng, started, cur, applied := s.plan, s.engine, s.started, s.local, s.applied
	s.mu.Unlock()
	if plan == nil {
		return
	}
	st := s.base(plan)
	if !local.IsValid() {
		if !started {
			st.State, st.Detail = StateWaiting, "for the WAN's address"
			s.set(func(x *Status) { *x = st })
		}
		return // a running connection rides out a WAN outage; its tunnels come back by themselves
	}
	if started && applied == plan.ProfileVersion && local == cur {
		return
	}
	cfg := plan.Config
	cfg.LocalAddress = local
	var err error
	if !started {
		if eng == nil {
			eng = newEngine(log, s.Logs)
		}
		err = eng.Start(ctx, cfg)
		if err != nil {
			eng = nil // a connection starts once: the next try gets a new one
		}
	} else {
		err = eng.Update(cfg)
	}
	st.LocalAddress = local.String()
	if err != nil {
		log.Error("vpn: the connection did not take the configuration; retrying", "profile_version", plan.ProfileVersion, "err", err)
		st.State, st.LastError = StateError, err.Error()
		if started {
			// The previous configuration stays in force.
			st.State, st.ProfileVersion, st.LocalAddress = StateRunning, applied, cur.String()
		}
	} else {
		if !started || local != cur {
			log.Info("vpn: connection running", "connection", cfg.ConnectionID, "local", local.String(), "profile_version", plan.ProfileVersion)
		} else {
			log.Info("vpn: connection updated", "connection", cfg.ConnectionID, "profile_version", plan.ProfileVersion)
		}
		st.State = StateRunning
	}
	s.mu.Lock()
	s.status = st
	if err == nil {
		s.engine, s.started, s.local, s.applied = eng, true, local, plan.ProfileVersion
	} else if !started {
		s.engine = nil
	}
	s.mu.Unlock()
}

func (s *Service) stopEngine(log *slog.Logger) {
	s.mu.Lock()
	eng, started := s.engine, s.started
	s.engine, s.started, s.local, s.applied = nil, false, netip.Addr{}, 0
	s.mu.Unlock()
	if eng != nil && started {
		if err := eng.Stop(); err != nil {
			log.Warn("vpn: stop", "err", err)
		}
	}
}
