package vpn

import (
	"context"
	"fmt"
	"strings"
	"time"

	"meshroot/vpn/bgp"
	"meshroot/vpn/tunnel"
)

// Status is a snapshot of a connection (also the JSON that `meshctl vpn status` reads).
type Status struct {
	ConnectionID string         `json:"connection_id"`
	Running      bool           `json:"running"`
	Mode         string         `json:"mode"` // "bgp" or "static"
	Started      time.Time      `json:"started"`
	Tunnels      []TunnelStatus `json:"tunnels"`
	// Routes are the routes in the kernel: prefix → the tunnels carrying it now.
	Routes []RouteStatus `json:"routes"`
}

// TunnelStatus is one tunnel's state.
type TunnelStatus struct {
	Name         string       `json:"name"` // the outside address
	Device       string       `json:"device"`
	Local        string       `json:"local"`
	Remote       string       `json:"remote"`
	Phase1       string       `json:"ike_phase1_state"`
	Phase2       string       `json:"ike_phase2_state"`
	Usable       bool         `json:"in_service"`
	UsableSince  time.Time    `json:"in_service_since,omitzero"`
	NATT         bool         `json:"nat_t_detected"`
	DPD          bool         `json:"dpd_enabled"`
	Initiator    bool         `json:"initiator"`
	IKESuite     string       `json:"ike_suite,omitempty"`
	ESPSuite     string       `json:"esp_suite,omitempty"`
	SPIIn        string       `json:"spi_in,omitempty"`
	SPIOut       string       `json:"spi_out,omitempty"`
	Established  time.Time    `json:"established,omitzero"`
	BytesIn      uint64       `json:"bytes_in"`
	BytesOut     uint64       `json:"bytes_out"`
	PacketsIn    uint64       `json:"packets_in"`
	PacketsOut   uint64       `json:"packets_out"`
	DroppedIn    uint64       `json:"dropped_in"` // replayed, failed authentication, malformed
	DroppedOut   uint64       `json:"dropped_out"`
	LastInbound  time.Time    `json:"last_inbound,omitzero"`
	LastOutbound time.Time    `json:"last_outbound,omitzero"`
	Failovers    uint64       `json:"failovers"`
	Recoveries   uint64       `json:"recoveries"`
	DPDActions   uint64       `json:"dpd_actions"`
	LastFailover time.Time    `json:"last_failover,omitzero"`
	LastRecovery time.Time    `json:"last_recovery,omitzero"`
	LastError    string       `json:"last_error,omitempty"`
	BGP          []PeerStatus `json:"bgp,omitempty"`
}

// PeerStatus is one BGP session of a tunnel.
type PeerStatus struct {
	Peer        string        `json:"peer"`
	State       string        `json:"state"`
	PrefixesIn  int           `json:"prefixes_in"`  // accepted from the concentrator
	PrefixesOut int           `json:"prefixes_out"` // advertised to it
	Uptime      time.Duration `json:"uptime_ns"`
	HoldTime    time.Duration `json:"hold_time_ns"`
	LocallyDown bool          `json:"withdrawn_locally"` // routes withdrawn by failover
	PrefixLimit bool          `json:"prefix_limit_hit"`
	LastReason  string        `json:"last_reason,omitempty"`
}

// RouteStatus is one kernel route the connection installed.
type RouteStatus struct {
	Prefix  string   `json:"prefix"`
	Tunnels []string `json:"tunnels"`
	Standby []string `json:"standby,omitempty"`
}

// Status returns a snapshot: per tunnel the IKE and CHILD states, whether it is in service,
// traffic counters, failovers, the last error and its BGP sessions; and the routes.
func (c *Connection) Status() Status {
	c.mu.Lock()
	st := Status{Running: c.state == stateRunning, Started: c.started}
	var runs []*tunnelRun
	if c.cfg != nil {
		st.ConnectionID = c.cfg.ConnectionID
		st.Mode = "bgp"
		if c.cfg.BGP == nil {
			st.Mode = "static"
		}
		for _, t := range c.cfg.tunnels {
			if r := c.tunnels[t.name]; r != nil {
				runs = append(runs, r)
			}
		}
	}
	c.mu.Unlock()

	c.rmu.Lock()
	sp, routes := c.speaker, c.routes
	c.rmu.Unlock()
	var peers []bgp.PeerStatus
	if sp != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		peers, _ = sp.Peers(ctx)
		cancel()
	}
	for _, r := range runs {
		ts := tunnelStatus(r.tun.Status())
		for _, p := range peers {
			if p.Tunnel != ts.Name {
				continue
			}
			ts.BGP = append(ts.BGP, PeerStatus{
				Peer: p.Address.String(), State: string(p.State), PrefixesIn: p.Accepted, PrefixesOut: p.Advertised,
				Uptime: p.Uptime, HoldTime: p.NegotiatedHold, LocallyDown: p.LocallyDown, PrefixLimit: p.PrefixLimitHit,
				LastReason: p.LastReason,
			})
		}
		st.Tunnels = append(st.Tunnels, ts)
	}
	if routes != nil {
		for _, kr := range routes.Installed() {
			rs := RouteStatus{Prefix: kr.Dst.String()}
			sel := routes.Selection(kr.Dst)
			rs.Tunnels, rs.Standby = sel.Active, sel.Standby
			st.Routes = append(st.Routes, rs)
		}
	}
	return st
}

func tunnelStatus(s tunnel.Status) TunnelStatus {
	ts := TunnelStatus{
		Name: s.Name, Device: s.Device, Local: s.Local.String(), Remote: s.Remote.String(),
		Phase1: string(s.Phase1), Phase2: string(s.Phase2), Usable: s.Usable, UsableSince: s.UsableSince,
		NATT: s.NATDetected, DPD: s.DPDEnabled,
		BytesIn: s.ESP.BytesIn, BytesOut: s.ESP.BytesOut, PacketsIn: s.ESP.PacketsIn, PacketsOut: s.ESP.PacketsOut,
		DroppedIn:   s.ESP.Replayed + s.ESP.AuthFailed + s.ESP.MalformedIn,
		DroppedOut:  s.ESP.NoSAOut + s.ESP.MalformedOut + s.ESP.SeqExhausted + s.ESP.SendErrors,
		LastInbound: wall(s.ESP.LastInbound), LastOutbound: wall(s.ESP.LastOutbound),
		Failovers: s.Failovers, Recoveries: s.Recoveries, DPDActions: s.DPDActions,
		LastFailover: s.LastFailover, LastRecovery: s.LastRecovery, LastError: s.LastError,
	}
	if s.IKE != nil {
		ts.Initiator, ts.IKESuite, ts.Established = s.IKE.Initiator, s.IKE.Suite, s.IKE.Established
	}
	if len(s.Children) > 0 {
		ch := s.Children[len(s.Children)-1]
		ts.ESPSuite, ts.SPIIn, ts.SPIOut = ch.Suite, fmt.Sprintf("%08x", ch.SPIIn), fmt.Sprintf("%08x", ch.SPIOut)
	}
	return ts
}

// wall drops the monotonic reading (JSON and display want wall-clock time).
func wall(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.Round(0)
}

// Tunnel returns the status of the tunnel named name (its outside address).
func (s Status) Tunnel(name string) (TunnelStatus, bool) {
	for _, t := range s.Tunnels {
		if t.Name == name {
			return t, true
		}
	}
	return TunnelStatus{}, false
}

// Format writes the status as text, for `meshctl vpn status`.
func (s Status) Format() string {
	var b strings.Builder
	state := "stopped"
	if s.Running {
		state = "running since " + s.Started.Format(time.RFC3339)
	}
	fmt.Fprintf(&b, "connection %s (%s), %s\n", s.ConnectionID, s.Mode, state)
	for _, t := range s.Tunnels {
		svc := "OUT OF SERVICE"
		if t.Usable {
			svc = "in service"
		}
		fmt.Fprintf(&b, "tunnel %s (%s, from %s): IKE %s, CHILD %s, %s\n", t.Name, t.Device, t.Local, t.Phase1, t.Phase2, svc)
		if t.IKESuite != "" {
			role := "responder"
			if t.Initiator {
				role = "initiator"
			}
			fmt.Fprintf(&b, "  ike %s as %s, esp %s, SPIs %s in / %s out, NAT-T %v\n", t.IKESuite, role, t.ESPSuite, t.SPIIn, t.SPIOut, t.NATT)
		}
		fmt.Fprintf(&b, "  in %d packets / %d bytes, out %d packets / %d bytes, dropped %d in / %d out\n", t.PacketsIn, t.BytesIn, t.PacketsOut, t.BytesOut, t.DroppedIn, t.DroppedOut)
		fmt.Fprintf(&b, "  failovers %d, recoveries %d, DPD actions %d\n", t.Failovers, t.Recoveries, t.DPDActions)
		for _, p := range t.BGP {
			fmt.Fprintf(&b, "  bgp %s: %s, %d prefixes in, %d out", p.Peer, p.State, p.PrefixesIn, p.PrefixesOut)
			if p.LocallyDown {
				b.WriteString(", withdrawn locally")
			}
			if p.LastReason != "" {
				fmt.Fprintf(&b, " (%s)", p.LastReason)
			}
			b.WriteString("\n")
		}
		if t.LastError != "" {
			fmt.Fprintf(&b, "  last error: %s\n", t.LastError)
		}
	}
	if len(s.Routes) > 0 {
		fmt.Fprintf(&b, "routes:\n")
		for _, r := range s.Routes {
			fmt.Fprintf(&b, "  %s via %s", r.Prefix, strings.Join(r.Tunnels, ", "))
			if len(r.Standby) > 0 {
				fmt.Fprintf(&b, " (standby %s)", strings.Join(r.Standby, ", "))
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}
