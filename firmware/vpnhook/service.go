package vpnhook

import (
	"context"
	"log/slog"
	"sync"

	"meshroot/firmware"
	"meshroot/provision/profile"
	"meshroot/vpn/vpnlog"
)

// TunnelStatus is one tunnel as the engine reports it.
type TunnelStatus struct {
	Name    string `json:"name"`
	Outside string `json:"outside"`
	// IKE and ESP states (AWS phase states: Established, Rekeying, Negotiating, Down).
	IKE string `json:"ike"`
	ESP string `json:"esp"`
	// BGP is the session state ("Established", "Idle"...; "" in static mode).
	BGP         string `json:"bgp,omitempty"`
	PrefixesIn  int    `json:"prefixes_in"`
	PrefixesOut int    `json:"prefixes_out"`
	BytesIn     uint64 `json:"bytes_in"`
	BytesOut    uint64 `json:"bytes_out"`
	LastError   string `json:"last_error,omitempty"`
}

// Engine is what the service needs of the VPN connection (vpn.Connection, issue 4: Start(ctx,
// Config), Update(Config) changing only what changed, Status(), Stop()). An adapter maps the
// Plan to the engine's configuration.
type Engine interface {
	Start(ctx context.Context, p *Plan) error
	Update(p *Plan) error
	Status() []TunnelStatus
	Stop() error
}

// NewEngine makes this build's VPN engine; nil means the build has none.
//
// TODO(issue 4): vpn.Connection is not written yet. When it lands, set NewEngine (from a file
// in this package, e.g. engine.go) to a function returning an adapter whose Start/Update map
// the Plan to vpn.Config — per tunnel: ike.Config{Name, LocalAddr: the WAN address (the wan
// service's State().Address), RemoteAddr: Outside, PSK, IKEProposals/ESPProposals via
// ike.ParseProposals, lifetimes, RekeyMargin/RekeyFuzz, ReplayWindow, DPDTimeout/DPDAction,
// StartAction}, the TUN Device with LocalInside4/6, and bgp.Config{ASN: LocalASN, Prefixes:
// SitePrefixes, Peers: one per tunnel (Tunnel: Name, Address: PeerInside4, Local:
// LocalInside4, Local6: LocalInside6, ASN: PeerASN, HoldTime)} — with logs going to the sink
// passed here, and whose Status fills TunnelStatus. Until then the service reports
// "unavailable" and logs "vpn: not available in this build".
var NewEngine func(log *slog.Logger, logs vpnlog.Sink) Engine

// States of the service (Status.State).
const (
	StateNone        = "none"        // the profile has no VPN (or there is no profile yet)
	StateUnavailable = "unavailable" // a plan is ready but this build has no VPN engine
	StateRunning     = "running"     // the engine runs the plan (see the tunnels)
	StateError       = "error"       // the engine refused the plan
)

// Status is the VPN as the status API shows it (no secrets).
type Status struct {
	State          string         `json:"state"`
	Detail         string         `json:"detail,omitempty"`
	ConnectionID   string         `json:"connection_id,omitempty"`
	ProfileVersion uint64         `json:"profile_version,omitempty"`
	Peers          []string       `json:"peers,omitempty"`
	Tunnels        []TunnelStatus `json:"tunnels,omitempty"`
	// LastError is the last refused profile or engine error.
	LastError string `json:"last_error,omitempty"`
}

// Service runs the VPN from the verified profiles.
type Service struct {
	// Subscribe delivers verified profiles (provision/agent.Agent.Subscribe).
	Subscribe func(fn func(*profile.Verified)) (cancel func())
	// Secret resolves secret references (agent.Secret).
	Secret func(ref string) (string, bool)
	// Secrets, when set, learns every PSK (the device logger scrubs them).
	Secrets *firmware.Secrets
	// Logs receives the VPN's BGP and tunnel records (the log shipper's sink).
	Logs vpnlog.Sink
	// OnPlan is called with every accepted plan (the firewall admits IKE from its peers).
	OnPlan func(*Plan)
	// NewEngine overrides the package's NewEngine (tests).
	NewEngine func(log *slog.Logger, logs vpnlog.Sink) Engine
	Log       *slog.Logger

	mu     sync.Mutex
	status Status
	plan   *Plan
	engine Engine
}

// Name is "vpn".
func (*Service) Name() string { return "vpn" }

// Status returns the VPN's state, with the engine's tunnels when it runs.
func (s *Service) Status() Status {
	s.mu.Lock()
	st, eng := s.status, s.engine
	s.mu.Unlock()
	if st.State == "" {
		st.State = StateNone
	}
	if eng != nil {
		st.Tunnels = eng.Status()
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

// Run follows the profiles until ctx ends, then stops the engine.
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
	profiles := make(chan *profile.Verified, 1)
	cancel := s.Subscribe(func(v *profile.Verified) {
		select { // only the newest matters
		case <-profiles:
		default:
		}
		profiles <- v
	})
	defer cancel()
	up()
	defer func() {
		s.mu.Lock()
		eng := s.engine
		s.engine = nil
		s.mu.Unlock()
		if eng != nil {
			if err := eng.Stop(); err != nil {
				log.Warn("vpn: stop", "err", err)
			}
		}
	}()
	var said uint64
	for {
		var v *profile.Verified
		select {
		case <-ctx.Done():
			return nil
		case v = <-profiles:
		}
		if v.VPN == nil {
			s.mu.Lock()
			eng := s.engine
			s.engine, s.plan = nil, nil
			s.status = Status{State: StateNone, ProfileVersion: v.Version, Detail: "the site profile has no VPN connection"}
			s.mu.Unlock()
			if eng != nil {
				eng.Stop()
				log.Info("vpn: stopped (the new profile has no VPN)", "profile_version", v.Version)
			}
			continue
		}
		plan, err := NewPlan(v.Version, v.VPN, s.Secret)
		if err != nil {
			log.Error("vpn: profile refused; the plan in force stays", "profile_version", v.Version, "err", err)
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
		eng := s.engine
		s.mu.Unlock()
		if s.OnPlan != nil {
			s.OnPlan(plan)
		}
		peers := []string{}
		for _, p := range plan.Peers() {
			peers = append(peers, p.String())
		}
		base := Status{ConnectionID: plan.ConnectionID, ProfileVersion: plan.ProfileVersion, Peers: peers}
		if newEngine == nil {
			if said != plan.ProfileVersion {
				log.Warn("vpn: not available in this build", "connection", plan.ConnectionID, "tunnels", len(plan.Tunnels), "profile_version", plan.ProfileVersion)
				said = plan.ProfileVersion
			}
			base.State, base.Detail = StateUnavailable, "vpn: not available in this build (the VPN engine, issue 4, is not part of this firmware yet)"
			s.set(func(st *Status) { *st = base })
			continue
		}
		if eng == nil {
			eng = newEngine(log, s.Logs)
			err = eng.Start(ctx, plan)
		} else {
			err = eng.Update(plan)
		}
		if err != nil {
			log.Error("vpn: engine refused the plan", "profile_version", plan.ProfileVersion, "err", err)
			base.State, base.LastError = StateError, err.Error()
		} else {
			log.Info("vpn: plan in force", "connection", plan.ConnectionID, "profile_version", plan.ProfileVersion)
			base.State = StateRunning
		}
		s.mu.Lock()
		s.status = base
		if err == nil || s.engine != nil {
			s.engine = eng // a failed first Start is retried with the next plan
		}
		s.mu.Unlock()
	}
}
