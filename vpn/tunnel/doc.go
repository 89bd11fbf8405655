// Package tunnel is the VPN's tunnel layer: one tunnel is an IKEv2 connection to one
// concentrator endpoint (vpn/ike), the CHILD SA it negotiates carried by the userspace ESP data
// plane (vpn/esp), and a TUN device of its own with our inside addresses (the /30 and the
// optional /126), as AWS Site-to-Site VPN defines a tunnel.
//
// It is a package of its own, below vpn.Connection, for two reasons: it is the layer the
// interop tests against strongSwan exercise on its own (issue 3), and it runs inside one
// goroutine-safe process without gobgp, so those tests can run it in a lab namespace through
// LinuxHost{Enter: ns.Do} instead of a child process.
//
// # Parts
//
//   - Host: the kernel seam (UDP sockets, TUN devices, addresses, source-address lookup).
//     LinuxHost is the real one; FakeHost (on an esp.FakeNetwork, with esp.FakeTUNs) runs
//     whole tunnels, ours against ours, in unit tests.
//   - Transport: the sockets one local address shares between tunnels — the IKE port (500),
//     and the NAT-T port (4500) as an esp.Mux carrying every tunnel's ESP and, behind the
//     non-ESP marker, IKE — with an ike.Mux handing IKE to the tunnel that owns it. IKE taken
//     off the NAT-T socket is handled on a goroutine of its own, so that a rekey's
//     Diffie-Hellman never stalls ESP.
//   - Tunnel: New creates the TUN device, the esp.Tunnel on the transport's Mux and the
//     ike.Conn; a data-plane adapter turns ike.ChildSA into esp.Params in IKE's
//     make-before-break order (AddInbound, SetOutbound, then the old SA's removal), reserves
//     inbound SPIs on the shared socket, and reports per-SA inbound activity to IKE's DPD.
//
// # States, events and the activity log
//
// Phase1 and Phase2 are AWS's ike_phase1_state and ike_phase2_state (Negotiating,
// Established, Rekeying, Down) as IKE reports them. Usable says whether the tunnel carries
// traffic: a CHILD SA is installed and the data plane passed its liveness checks. Every IKE
// event, failover, recovery and DPD action is a record of the tunnel activity log
// (vpnlog.TunnelRecord: event_timestamp, details, dpd_enabled, nat_t_detected, both phase
// states) and an Event; EventOutOfService and EventInService are what the connection acts on
// (routes and BGP).
//
// # Fast failover and DPD
//
// The tunnel's goroutine reads the data plane's last-inbound and last-outbound times every
// 50 ms. When outbound ESP flows and nothing authenticated came back for Failover.Window
// (250 ms), it asks IKE for a liveness check with a short deadline (ike.Conn.Probe,
// ProbeTimeout 400 ms). Unanswered, the tunnel goes out of service at once — its SAs are
// kept — and is checked again every Recheck (1 s); the first answer or inbound ESP packet
// puts it back in service. An idle tunnel sends no probes: IKE's DPD (DPDInterval idle, then
// DPDTimeout) covers it, so a quiet link never fails over.
//
// The DPD action (clear, restart, none) is this layer's, not IKE's: IKE runs with DPD action
// none and only reports. The tunnel applies the configured action when IKE's own DPD gives up,
// or when the DPD timeout has passed since the first unanswered liveness check (AWS: "peer
// dead 30 seconds after the first failed keep-alive"). clear and restart replace the
// ike.Conn with a fresh one (responding only, or initiating); none keeps the SAs and keeps
// checking. That way a failed fast probe costs a route change, not a renegotiation, and a
// path that comes back within the DPD timeout finds its SAs (and BGP its session) intact.
//
// Secrets: the PSK travels in ike.Config as an ike.Secret and never reaches a log line; the
// tests scan every log they capture for it.
package tunnel
