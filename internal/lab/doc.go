// Package lab builds network-namespace labs for integration tests, benchmarks and `make run`:
// namespaces joined by veth pairs, the concentrator peer (strongSwan charon with kernel-libipsec and
// FRR bgpd, configured from Go), iperf3, the reference cloud, and QEMU routers on TAP devices.
// Every lab names its namespaces uniquely, tracks the processes it starts by PID, and tears down
// everything it made, also when a test fails.
//
// # Core API (stable: add, don't break)
//
//   - Lab: New(t) in tests (closed in t.Cleanup; on failure process logs go to t.Log), or
//     Open(Options{Dir, Logger}) + Close() elsewhere (`make run`).
//   - Lab.NewNS(name) → *NS named "mr-<name>-<6 hex>" with lo up, forwarding on, rp_filter 0,
//     IPv6 DAD off; Lab.Veth(a, "out0", b, "out0") joins two namespaces (or one to itself for a
//     LAN stub); NS.AddAddr, NS.AddRoute, NS.LinkUp/LinkDown (cut a path), NS.Sysctl, NS.Ping.
//   - NS.Do(func() error) runs Go code on a thread inside the namespace: sockets and TUN devices
//     it creates stay there. Only fn's goroutine is inside; goroutines it starts are not, so
//     create sockets in fn and hand them out. NS.Command / NS.Run run programs inside
//     (`ip netns exec`).
//   - NS.Start / Lab.StartProcess: a tracked process (PID, log file, SIGTERM then SIGKILL on
//     Close). CPUTime / StartCPUMeter read /proc/PID/stat.
//   - Lab.StartCharon(ns, CharonConfig{...}) → *Charon: strongswan.conf and swanctl.conf from
//     Go, charon started as in shared/notes/vpn-lab.md (private /run per instance,
//     kernel-libipsec, install_routes = no), TunAddrs put on ipsec0, connections loaded.
//     Charon.ListSAs / WaitUp / WaitIKE / WaitChild / Initiate / TerminateIKE / RekeyChild /
//     RekeyIKE over vici; Charon.LogPath for assertions; Charon.Stop / Restart.
//
// Example (an interop test of our IKEv2 initiator against a strongSwan responder):
//
//	func TestLabInterop(t *testing.T) {
//		testenv.Integration(t)
//		l := lab.New(t)
//		ours, _ := l.NewNS("ours")   // check errors in real code
//		peer, _ := l.NewNS("peer")
//		_ = l.Veth(ours, "out0", peer, "out0")
//		_ = ours.AddAddr("out0", "198.51.100.2/24")
//		_ = peer.AddAddr("out0", "198.51.100.1/24")
//		sw, err := l.StartCharon(peer, lab.CharonConfig{
//			TunAddrs: []string{"169.254.10.1/30"},
//			Conns: []lab.Conn{{Name: "tun1", PSK: "secret",
//				LocalAddrs: []string{"198.51.100.1"}, RemoteAddrs: []string{"198.51.100.2"}}},
//		})
//		if err != nil {
//			t.Fatal(err)
//		}
//		err = ours.Do(func() error { return startOurInitiator() }) // sockets + TUN inside "ours"
//		sa, err := sw.WaitUp(ctx, "tun1")  // IKE ESTABLISHED, CHILD INSTALLED
//		err = ours.Ping("", "169.254.10.1", 3)
//	}
//
// # Debugging a lab by hand
//
// Set MESHROOT_LAB_KEEP=1 and run one test with -v and no timeout: when the test ends, the lab
// prints its namespaces, processes, logs and inspection commands, and stays up until Ctrl-C:
//
//	MESHROOT_LAB_KEEP=1 go test -run TestLabStrongSwanPair -v -timeout 0 ./internal/lab/
//	ip netns exec mr-cgw-1a2b3c bash
//	STRONGSWAN_CONF=/tmp/mrlab-.../cgw-cgw/strongswan.conf swanctl --list-sas
//
// With the variable set, the lab directory (configs and logs) is also kept after teardown.
//
// # Impairment
//
// The host kernel (6.18, no loadable modules) has no netem qdisc, so delay/loss emulation with
// tc is not available; link down/up is the path cut.
package lab
