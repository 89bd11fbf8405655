// Package lab builds network-namespace labs for integration tests, benchmarks and `make run`:
// namespaces joined by veth pairs, the concentrator peer (strongSwan charon with kernel-libipsec and
// FRR bgpd, configured from Go), iperf3, the reference cloud, and QEMU routers on TAP devices.
// Every lab names its namespaces uniquely, tracks the processes it starts by PID, and tears down
// everything it made, also when a test fails.
//
// The recipe is shared/notes/vpn-lab.md (measured there); this package is its Go form.
//
// # Core API (stable: add, don't break)
//
//   - Lab: New(t) in tests (closed in t.Cleanup; on failure the tail of every process log and
//     charon/FRR log goes to t.Log), or Open(Options{Dir, Logger, Prefix}) + Close() elsewhere
//     (`make run`, cmd/mrlab). Close stops processes (SIGTERM, then SIGKILL after 5 s), deletes
//     namespaces, removes the directory it created.
//   - Lab.NewNS(name) → *NS named "<prefix>-<name>-<6 hex>" (prefix "mr") with lo up,
//     forwarding on, rp_filter 0, IPv6 DAD off, IPv6 addresses kept on link down.
//     Lab.Veth(a, "out0", b, "out0") joins two namespaces (or one to itself for a LAN stub);
//     NS.AddAddr (IPv4/IPv6, NODAD), NS.AddRoute / DelRoute, NS.LinkUp / LinkDown (cut a path),
//     NS.Sysctl, NS.AddBridge / SetMaster, NS.Ping / WaitPing, NS.Handle (raw netlink).
//   - NS.Do(func() error) runs Go code on an OS thread inside the namespace and waits: sockets
//     and TUN devices it creates belong to the namespace and stay there. Caveat: only fn's own
//     goroutine is inside; goroutines it starts run in the test's namespace, so create sockets
//     and TUNs in fn and hand them out. The thread is discarded afterwards.
//     NS.Command / NS.Run run programs inside (`ip netns exec`).
//   - NS.Start / Lab.StartProcess: a tracked process (PID, log file, stop on Close), forked
//     with Pdeathsig from a thread that never exits, so children die with a crashed test.
//     CPUTime / StartCPUMeter read /proc/PID/stat; LoadAvg for benchmark reports.
//   - NS.Impair(dev, Impairment{LossPercent: 5}): random loss on an interface, both directions
//     (nftables netdev ingress+egress hooks via github.com/google/nftables; the kernel has no
//     netem, so there is no delay emulation). NS.ImpairStats counts seen/dropped packets.
//
// # strongSwan
//
// Lab.StartCharon(ns, CharonConfig{...}) writes strongswan.conf and swanctl.conf from Go
// (connections: addresses incl. IPv6, IP or FQDN IDs, PSK written hex-encoded, IKE/ESP
// proposals, lifetimes/rekey/rand, DPD, dpd/start/close actions, keyingtries, replay window,
// encap=yes, mobike=no, 0.0.0.0/0 + ::/0 selectors by default; retransmit_* and log levels per
// instance), starts charon exactly as the notes do (`ip netns exec` + bind-mounting a private run
// dir onto /run, kernel-libipsec before kernel-netlink, install_routes = no, own vici socket),
// waits for vici and ipsec0, puts TunAddrs on ipsec0 and loads the connections. One fix beyond
// the notes: kernel-libipsec installs "default dev ipsec0 table 220" whatever install_routes
// says, which swallows all forwarded traffic (LAN hosts behind the gateways could not talk);
// the generated config gates the table-220 rule on a firewall mark nothing sets, so routing is
// purely route-based (static or BGP routes into ipsec0).
//
// *Charon: ListSAs / IKE (IKE and CHILD state, SPIs, algorithms, counters, parsed from vici
// list-sas via github.com/strongswan/govici), WaitUp / WaitIKE / WaitChild / WaitNoIKE,
// Initiate, TerminateIKE / TerminateChild, RekeyChild, RekeyIKE, Reconfigure, Stop / Restart
// (re-adds the inside addresses), Swanctl(args...), LogPath / Log / WaitLog for assertions.
//
// # FRR
//
// Lab.StartFRR(ns, FRRConfig{ASN, RouterID, Neighbors, Networks}) runs zebra + bgpd with
// per-instance -f/-i/-z/--vty_socket (as user frr). Neighbors: remote-as, `timers 10 30` by
// default, MED per neighbor (outbound route-map), maximum-prefix, address families (IPv6
// neighbors, MP-BGP), next-hop-self, passive, shutdown. Queries through `vtysh ... json`:
// Summary / Peer, Routes(family), Neighbor(addr); WaitEstablished, WaitRoute; Configure for
// live changes.
//
// # Topologies
//
//   - NewPeerPair: A (ours, empty) and B (optionally a strongSwan responder or initiator)
//     joined by out0 (198.51.100.0/24, 2001:db8:100::/64), each with a LAN host namespace
//     behind lan0 (192.168.1.0/24 and 10.0.0.0/16 plus IPv6); PairAddrs has the plan.
//   - NewStrongSwanPair: both sides strongSwan + FRR, the notes' cgw ↔ aws lab (AES-256-GCM,
//     BGP 65000 ↔ 64512 over the /30 and /126), the throughput baseline.
//   - NewConcentrator: the AWS-like VPN connection — two endpoint namespaces (strongSwan +
//     FRR, AS 64512, MED 100/200), a VPC bridge namespace behind them (the endpoints iBGP-peer
//     there so return traffic follows the surviving tunnel), an internet router namespace so
//     the path to one endpoint can be cut (CutPath / RestorePath / ImpairPath), and the site
//     namespace for our client with a LAN host namespace behind it (ImpairSiteUplink for issue
//     5's 5 % loss). Tunnels() gives the client everything it needs per tunnel.
//     StartSiteStrongSwan runs a strongSwan stand-in for our client on one tunnel. Static mode,
//     IPv6 outside addresses, disabled endpoints, and per-tunnel hooks (ModifyCharon,
//     ModifyFRR) are in ConcentratorConfig; ExternalSite leaves the site out so that the caller
//     plugs its own (firmware/sitelab's QEMU router) into the internet with AttachSite. It only needs a *Lab, so `make run` builds the same
//     thing with Open(Options{...}) and tears it down with Close.
//   - RunThroughput: the iperf3 suite (TCP single stream, -P 4, 64-byte UDP, CPU of given PIDs)
//     that every data plane is measured with, on the same path.
//
// Example (an interop test of our IKEv2 initiator against a strongSwan responder):
//
//	func TestLabInterop(t *testing.T) {
//		testenv.Integration(t)
//		l := lab.New(t)
//		p, err := lab.NewPeerPair(l, lab.PeerPairConfig{
//			Charon: &lab.CharonConfig{Conns: []lab.Conn{{Name: "tun1", PSK: "secret"}}},
//		})
//		if err != nil {
//			t.Fatal(err)
//		}
//		// our client in A: sockets and the TUN are created inside the namespace
//		if err := p.A.Do(func() error { return startOurInitiator(p.Addrs) }); err != nil {
//			t.Fatal(err)
//		}
//		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
//		defer cancel()
//		if _, err := p.Charon.WaitUp(ctx, "tun1"); err != nil { // IKE ESTABLISHED, CHILD INSTALLED
//			t.Fatal(err)
//		}
//		if err := p.AHost.WaitPing(ctx, "", p.Addrs.BHost4); err != nil { // LAN to LAN
//			t.Fatal(err)
//		}
//	}
//
// # Debugging a lab by hand
//
// Keep a test's lab up: set MESHROOT_LAB_KEEP=1 and run one test with -v and no timeout. When
// the test ends, the lab prints its namespaces, processes, logs and inspection commands and
// stays up until Ctrl-C; its directory (configs and logs) is kept afterwards.
//
//	MESHROOT_LAB_KEEP=1 go test -run 'TestLabStrongSwanPair$' -v -timeout 0 ./internal/lab/
//	ip netns exec mr-a-1a2b3c bash
//	STRONGSWAN_CONF=/tmp/mrlab-.../a-charon-cgw/strongswan.conf swanctl --list-sas
//	vtysh --vty_socket /tmp/mrlab-.../a-frr-cgw -c 'show bgp summary'
//
// Or bring a topology up without a test (root; Ctrl-C tears down; namespaces are mrlab-*):
//
//	go run ./internal/lab/cmd/mrlab concentrator          # -site 1: with a strongSwan site
//	go run ./internal/lab/cmd/mrlab sspair
//
// # Pitfalls (see also the notes)
//
//   - Interface names are at most 15 characters and only need to be unique per namespace.
//   - Do not call NS.Start from inside NS.Do.
//   - One charon per namespace (one ipsec0): two AWS tunnels need two namespaces (Concentrator).
//   - Bind iperf3 servers to an address (IperfServer does): an unbound server answers UDP from
//     the inside address, which the client ignores.
package lab
