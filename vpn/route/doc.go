// Package route puts the VPN's learned paths into the kernel: per prefix it chooses among the
// paths that each tunnel's BGP session (or static configuration) offers, and installs one route
// through the chosen tunnels' devices with github.com/vishvananda/netlink.
//
// # Selection (Select, Compare)
//
// The concentrator's rules (AWS "Route priority" for identical prefixes): longest prefix first,
// which the kernel does since every prefix is a route of its own; static routes over BGP; then
// the shortest AS path, the lowest origin (IGP, EGP, incomplete), the lowest MED. BGP's local
// preference (higher wins) comes before the AS path as the site's own knob and is equal for
// eBGP paths. What still ties is ECMP: one route with a nexthop per tunnel. Otherwise the best
// tunnel is active and the next tier is the standby, computed with every change so that a
// failover costs one netlink batch and no selection work (AWS marks its primary tunnel with
// the lower MED: the other one is the standby).
//
// ECMP routes hash on layer 4 (New sets net.ipv4.fib_multipath_hash_policy and
// net.ipv6.fib_multipath_hash_policy to 1): a flow keeps its tunnel, as AWS wants for symmetric
// return traffic, and flows spread over both.
//
// # Manager
//
// Sources (route.Source: a tunnel and a BGP neighbor, or StaticSource) feed paths with Update,
// ReplaceSource and ClearSource; tunnels map to devices (SetTunnel; OnLink for a TUN: routes
// without a gateway) and can be marked down (SetTunnelUp: every prefix moves to its standby in
// one batch, before BGP's hold time notices anything). Each call recomputes only the prefixes it
// touched, diffs the result against what the manager installed and applies the difference as
// one batch of replace/delete operations. Routes carry the manager's own table and protocol
// number (DefaultProtocol 77): Sync lists exactly those, so routes the manager did not make are
// never touched, and leftovers of a crashed run are cleaned up by New. A failed operation is
// retried with the next batch; Sync re-reads the kernel.
//
// # Kernel
//
// Kernel is the seam: Netlink is the real one (NewNetlink for the process's namespace,
// NewNetlinkAt for another), FakeKernel an in-memory table for unit tests. Netlink pipelines a
// batch over a socket of its own, 128 requests per sendmsg with their acknowledgements matched by
// sequence number, and falls back to vishvananda/netlink's one request per operation (PerOp) if
// that socket fails. IPv4-via-IPv6 nexthops go in as RTA_VIA, ECMP as RTA_MULTIPATH. TestLab...
// tests run the real one in a lab namespace and check the result with iproute2.
package route
