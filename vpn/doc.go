// Package vpn is the site-to-site VPN to a concentrator (the AWS Site-to-Site VPN contract): a
// connection of two tunnels, each an IKEv2 SA (vpn/ike) with a CHILD SA carried by the userspace
// ESP data plane over a TUN device (vpn/esp), joined by the tunnel layer (vpn/tunnel); BGP over
// each tunnel (vpn/bgp); learned routes into the kernel (vpn/route); fast failover; and logs in
// the concentrator's schema (vpn/vpnlog). vpn/awsconfig imports AWS's
// CustomerGatewayConfiguration document. vpn never imports provision: the firmware turns a
// verified site profile into a vpn.Config (the fields mirror the profile's VPN section; see
// Config).
//
// # Connection
//
// A Connection is the API the firmware uses: Start(ctx, Config), Status(), Update(Config),
// Stop(). Start validates the configuration (errors name the field), starts the route
// manager, one tunnel.Transport per local address (the IKE port and the NAT-T port shared by
// the tunnels), the tunnels, and the BGP speaker (or the static routes). Status reports per
// tunnel the IKE and CHILD states, whether it is in service, traffic counters, failovers, the
// last error and its BGP sessions (state, prefixes in and out), and the routes with their
// active and standby tunnels. Update changes what changed and keeps the rest (a tunnel with
// unchanged settings keeps its SAs and BGP session); a bad configuration leaves the running
// one in force. Stop sends DELETE and Cease, removes the routes, devices and sockets.
//
// # Routing and failover
//
// Each tunnel's device is a route.Manager tunnel, out of service until the tunnel says
// otherwise. BGP: a session per tunnel and inside address family (IPv4 over the /30, IPv6 over
// the /126 when configured), started when its tunnel first comes into service; accepted paths
// go to the route manager, which installs the concentrator's choice (shortest AS path, then
// lowest MED: active/standby, or ECMP with layer-4 hashing when equal) via the concentrator's
// inside addresses. Static mode: RemotePrefixes over every tunnel in service.
//
// When a tunnel leaves service (vpn/tunnel's data-plane liveness check: no inbound ESP for
// 250 ms while sending, then an IKE liveness probe unanswered for 400 ms; or no CHILD SA), its
// routes leave the kernel at once: route.SetTunnelUp(false) moves every prefix to its
// precomputed standby in one netlink batch, and bgp.PeerDown withdraws the session's paths
// locally without ending the session. Then return-path steering tells the concentrator: the
// tunnels still in service advertise our prefixes with MED 0 instead of the usual 100, so the
// concentrator (which prefers the lowest MED among equal AS paths) sends the site's traffic
// over them at once rather than into the dead tunnel until its hold timer or DPD expires. When
// the tunnel answers again it comes back with its SAs and BGP session intact (PeerUp restores
// the paths in one batch) and the usual MEDs return. The tunnel's DPD action (restart by
// default) applies only after the DPD timeout.
//
// # Logs
//
// The tunnel activity log (vpnlog.TunnelRecord, one record per IKE event, failover, recovery
// and DPD action) and the BGP log (vpnlog.BGPRecord) go to Connection.Log with every PSK
// scrubbed (vpnlog.Redactor); each record carries its stream, "<connection id>_<tunnel
// outside address>". Run writes them as JSON lines per log and stream.
//
// # Running one by hand
//
// `meshctl vpn up --config FILE` runs a connection in the foreground (Run: events on stdout,
// logs in --log-dir, status on a unix control socket), `meshctl vpn status` reads it
// (QueryStatus), `meshctl vpn check` validates a file. The file format is documented in
// file.go (LoadConfig): the profile's VPN section with psk_file or psk_env instead of psk_ref.
//
// # Tests
//
// Unit tests run connections on fakes (tunnel.FakeHost, route.FakeKernel) against endpoints
// made of our own tunnel layer. TestLab... tests run the connection as `meshctl vpn up` does,
// in a child process in the site namespace of a lab.Concentrator (two strongSwan + FRR
// endpoints as AWS's, a VPC host, a LAN host); gobgp dials from goroutines of its own, so the
// whole process must be inside the namespace.
package vpn
