// Package bgp is the VPN's BGP speaker: an embedded github.com/osrg/gobgp/v3 server (its Go API,
// pkg/server; no gRPC listener, and no BGP listener unless Config.Listen) with one eBGP session
// per tunnel on the inside addresses, as the concentrator (AWS Site-to-Site VPN) expects.
//
// # What it does
//
//   - Sessions: one per PeerConfig on the tunnel's inside /30 (and /126 when IPv6 has its own
//     session), hold 30 s / keepalive 10 s by default, active open from our inside address.
//     MP-BGP carries IPv6 unicast over the IPv4 session (Families), with Local6 (or our
//     IPv4-mapped address) as the IPv6 next hop we send.
//   - Export: the site's LAN prefixes only (Config.Prefixes, at most MaxAdvertised = 1,000, the
//     concentrator's limit), never a path learned from the other tunnel; per peer an optional MED
//     and AS-path prepend (AWS picks its tunnel towards us by AS path, then MED).
//   - Import, as the concentrator enforces it on its side: a prefix limit per family (default
//     5,000, what a concentrator sends a site at most) that ends the session with Cease 6/1 and
//     restarts it after PrefixLimitRestart; paths containing our own AS are rejected; paths whose
//     next hop is not on the tunnel's inside link are not installed.
//   - Outputs: accepted paths per session go to a RouteSink (*route.Manager) in batches; Events
//     (FSM state changes, accepted paths with AS path, MED, local preference, origin and next hop,
//     End-of-RIB) go to Options.OnEvent; the BGP log goes to a vpnlog.Sink in the concentrator's
//     schema with the event texts of AWS's catalogue (state changes, OPEN sent/received,
//     notifications sent/received including 6/1-6/7 and Hold Timer Expired, bad OPEN "remote AS
//     is X, expected Y", maximum-prefix warning and exceeded, End-of-RIB, and per route
//     ADVERTISED/UPDATED/WITHDRAWN with "DENIED due to: ..." when refused).
//   - Fast failover: PeerDown(tunnel, reason) withdraws the tunnel's paths from the route sink
//     before it returns, long before a hold timer would, and keeps them out until PeerUp. The
//     session is left alone: when the tunnel is back within the hold time, PeerUp puts the paths
//     the session still holds back in one batch, with no re-establishment (and no wait for the
//     concentrator's side of a dead session to time out); otherwise the hold timer ends it.
//     When the tunnel is back after that, PeerUp restarts each of its sessions that is not
//     Established (gobgp Idle, Connect or Active, administratively up) at once, as a router does
//     on interface up, instead of leaving gobgp's idle hold (5 s after every session end) and
//     connect retry (ConnectRetry to twice that), whose attempts went into the dead tunnel, to
//     run out: the peer is deleted from gobgp and added again with the same configuration (a
//     new peer has no idle hold; gobgp's first connect attempt still comes 1-2 s after). An
//     Established session, or one exchanging OPENs, is left alone.
//     Update applies a new Config without a restart (prefixes, peers, policy); a new local ASN or
//     router ID needs a new Speaker (ErrRestartRequired). A session Update removes ends with
//     Cease 6/3 and Close ends every Established session with Cease 6/2 (Administrative
//     Shutdown); both are in the BGP log with the change to Idle (gobgp's own stop sends its
//     Cease silently).
//
// # How events are gathered
//
// gobgp's watch API gives session states, the paths each peer sent (pre-policy Adj-RIB-In) and
// End-of-RIB on one watch (the log), and what import policy accepted on another (the routes).
// What the watch API does not carry (notifications, hold timer expiry, the prefix limit) comes
// from gobgp's logger, which the speaker provides (gobgplog.go). All of it goes through one queue
// handled by one goroutine, in the order gobgp reported it. gobgp does not expose the peer's
// OPEN message, so the "received an OPEN message" line gives the negotiated hold time.
//
// # Wiring (the tunnel layer)
//
//	routes, _ := route.New(route.NewNetlink(nil), route.Config{})
//	routes.SetTunnel(route.Tunnel{Name: "t1", Device: "mr-t1", OnLink: true}) // per tunnel
//	sp, _ := bgp.Start(ctx, bgp.Config{ASN: 65001, Prefixes: lan, Peers: []bgp.PeerConfig{{
//		Tunnel: "t1", Address: awsInside, Local: ourInside /30, ASN: 64512,
//		Families: []bgp.Family{bgp.IPv4, bgp.IPv6}, ResourceID: vpnlog.ResourceID(vpnID, awsOutside),
//	}}}, bgp.Options{Routes: routes, Log: sink, OnEvent: status})
//	// data plane of t1 dead:  routes.SetTunnelUp("t1", false); sp.PeerDown("t1", "DPD timeout")
//	// t1 back:                routes.SetTunnelUp("t1", true);  sp.PeerUp("t1")
package bgp
