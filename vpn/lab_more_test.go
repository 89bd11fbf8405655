package vpn

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"meshroot/internal/lab"
	"meshroot/vpn/vpnlog"
)

// sendFlow sends n UDP datagrams from the LAN host's port sport to the VPC host's port dport
// (one flow).
func sendFlow(t *testing.T, r *concRig, sport, dport, n int) {
	t.Helper()
	var c *net.UDPConn
	err := r.c.SiteLAN.Do(func() error {
		var err error
		c, err = net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(r.c.Addrs.SiteLANHost4), uint16(sport))),
			net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(r.c.Addrs.VPCHost4), uint16(dport))))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range n {
		c.Write([]byte("meshroot ecmp flow test"))
		time.Sleep(time.Millisecond)
	}
}

func packetsOut(t *testing.T, r *concRig) [2]uint64 {
	t.Helper()
	st, err := r.status()
	if err != nil {
		t.Fatal(err)
	}
	var out [2]uint64
	for i, tu := range r.c.Tunnels() {
		s, _ := st.Tunnel(tu.Outside)
		out[i] = s.PacketsOut
	}
	return out
}

// TestLabECMP: with equal MEDs on both tunnels the VPC's prefixes are one ECMP route over both
// TUN devices, hashed on layer 4: flows spread over both tunnels, and each flow stays on one.
func TestLabECMP(t *testing.T) {
	t.Parallel()
	cc := lab.ConcentratorConfig{}
	cc.Tunnels[0].MED, cc.Tunnels[1].MED = 150, 150
	r := newConcRig(t, cc, nil)
	st := r.waitStatus(60*time.Second, "converged", bgpConverged)
	t1, t2 := r.c.Tunnels()[0].Outside, r.c.Tunnels()[1].Outside
	for _, pf := range []string{"10.0.0.0/16", "fd00:a00::/64"} {
		if got := routeOf(st, pf).Tunnels; !slices.Equal(got, []string{t1, t2}) {
			t.Errorf("route %s over %v; want ECMP over %s and %s", pf, got, t1, t2)
		}
		if kr := r.kernelRoute(pf); !strings.Contains(kr, "dev mrvpn0") || !strings.Contains(kr, "dev mrvpn1") {
			all, _ := r.c.Site.Run("ip", "-6", "route", "show", "table", "all")
			t.Errorf("kernel route to %s = %q; want nexthops through both devices\n%s", pf, kr, all)
		}
	}
	// 32 flows of 20 datagrams: both tunnels carry some.
	before := packetsOut(t, r)
	for i := range 32 {
		sendFlow(t, r, 40000+i, 9, 20)
	}
	after := packetsOut(t, r)
	d := [2]uint64{after[0] - before[0], after[1] - before[1]}
	t.Logf("32 flows of 20 datagrams: %d packets on tunnel 1, %d on tunnel 2", d[0], d[1])
	if d[0] < 20 || d[1] < 20 {
		t.Errorf("flows spread %v over the tunnels; want some flows on each", d)
	}
	// One flow of 200 datagrams: on one tunnel only (a few BGP keepalives may cross the other).
	for _, sport := range []int{41000, 41001, 41002} {
		before := packetsOut(t, r)
		sendFlow(t, r, sport, 9, 200)
		after := packetsOut(t, r)
		d := [2]uint64{after[0] - before[0], after[1] - before[1]}
		if !(d[0] >= 190 && d[1] < 20) && !(d[1] >= 190 && d[0] < 20) {
			t.Errorf("flow from port %d: %v packets on the tunnels; want all 200 on one", sport, d)
		}
	}
}

// TestLabBGPPolicy: the concentrator's endpoint 1 sends more prefixes than our limit: the
// session ends with Cease 6/1, the BGP log says so, and the VPC's route moves to tunnel 2;
// endpoint 2 sends a path with our own AS in it: refused (DENIED in the log), never in the
// kernel.
func TestLabBGPPolicy(t *testing.T) {
	t.Parallel()
	r := newConcRig(t, lab.ConcentratorConfig{}, func(d fileDoc) {
		d["bgp"].(map[string]any)["max_prefixes"] = 4
	})
	r.waitStatus(60*time.Second, "converged", bgpConverged)
	tu := r.c.Tunnels()
	ep1, ep2 := r.c.Endpoints[0].FRR, r.c.Endpoints[1].FRR

	// Own AS on tunnel 2.
	if err := ep2.Configure(
		"ip prefix-list OWNAS seq 5 permit 10.99.0.0/16",
		"route-map OWNAS permit 10", "match ip address prefix-list OWNAS", "set as-path prepend 65000", "set metric 200", "exit",
		"route-map OWNAS permit 20", "set metric 200", "exit",
		"router bgp 64512", "address-family ipv4 unicast", "network 10.99.0.0/16", "neighbor "+tu[1].SiteInside4+" route-map OWNAS out",
	); err != nil {
		t.Fatal(err)
	}
	denied := r.waitBGPRecord(30*time.Second, "10.99.0.0/16 denied", func(rec *vpnlog.BGPRecord) bool {
		return rec.Type == vpnlog.RouteStatus && rec.Route.Prefix.String() == "10.99.0.0/16" && rec.ResourceID == connID+"_"+tu[1].Outside
	})
	if denied.Details != "DENIED due to: as-path contains our own AS" || !strings.Contains(denied.Route.ASPath, "65000") {
		t.Errorf("record for 10.99.0.0/16 = %+v, route %+v; want DENIED due to: as-path contains our own AS on tunnel 2's stream", denied, *denied.Route)
	}
	// Endpoint 1 learns 10.99.0.0/16 over iBGP and sends it to us without our AS: that path,
	// through tunnel 1, is fine; tunnel 2's never reaches the kernel.
	if kr := r.kernelRoute("10.99.0.0/16"); strings.Contains(kr, "mrvpn1") {
		t.Errorf("kernel route to 10.99.0.0/16 = %q; want tunnel 2's path (own AS) never used", kr)
	}

	// Prefix limit on tunnel 1: 10.0.0.0/16 and our own prefix echoed back count 2 of 4; three
	// more break the limit. (Endpoint 2 keeps them from its iBGP session with endpoint 1, so
	// tunnel 2 stays under the limit.)
	if err := ep2.Configure(
		"ip prefix-list EXTRA seq 5 permit 10.48.0.0/12 le 16",
		"route-map FROMEP1 deny 10", "match ip address prefix-list EXTRA", "exit",
		"route-map FROMEP1 permit 20", "exit",
		"router bgp 64512", "address-family ipv4 unicast", "neighbor "+r.c.Addrs.EndpointVPC4[0]+" route-map FROMEP1 in",
	); err != nil {
		t.Fatal(err)
	}
	if err := ep1.Configure("router bgp 64512", "address-family ipv4 unicast", "network 10.51.0.0/16", "network 10.52.0.0/16", "network 10.53.0.0/16"); err != nil {
		t.Fatal(err)
	}
	r.waitBGPRecord(30*time.Second, "prefix limit exceeded", func(rec *vpnlog.BGPRecord) bool {
		return rec.ResourceID == connID+"_"+tu[0].Outside && strings.Contains(rec.Details, "maximum prefix limit was exceeded") &&
			strings.Contains(rec.Details, "neighbor "+tu[0].AWSInside4+", limit is 4")
	})
	r.waitBGPRecord(10*time.Second, "Cease 6/1 sent", func(rec *vpnlog.BGPRecord) bool {
		return rec.Status == vpnlog.StatusDown && strings.Contains(rec.Details, "sent a notification 6/1 (Cease/Maximum Number of Prefixes Reached) to neighbor "+tu[0].AWSInside4)
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, err := ep1.Neighbor(tu[0].SiteInside4)
		if err == nil && (n.LastErrorCodeSub == "0601" || strings.Contains(n.LastResetDueTo+n.LastNotification, "Maximum Number of Prefixes")) {
			t.Logf("endpoint 1's side: last reset %q, error %s", n.LastResetDueTo, n.LastErrorCodeSub)
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("endpoint 1's session: %+v (%v); want it reset by Cease 6/1", n, err)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	st := r.waitStatus(10*time.Second, "10.0.0.0/16 on tunnel 2", func(st Status) bool {
		return slices.Equal(routeOf(st, "10.0.0.0/16").Tunnels, []string{tu[1].Outside})
	})
	s1, _ := st.Tunnel(tu[0].Outside)
	var limited bool
	for _, p := range s1.BGP {
		limited = limited || p.Peer == tu[0].AWSInside4 && p.PrefixLimit
	}
	if !limited {
		t.Errorf("tunnel 1's BGP status %+v; want the IPv4 session marked as stopped by the prefix limit", s1.BGP)
	}
}

// TestLabStatic: the static VPN type against endpoints without BGP: the configured VPC prefixes
// over both tunnels (ECMP), pings both ways, and a cut of one path moves them to the other
// tunnel; back to both when it returns. (The lab's VPC routes the site via endpoint 1, so the
// cut is endpoint 2's, with a one-way flow hashed onto tunnel 2 running.)
func TestLabStatic(t *testing.T) {
	t.Parallel()
	r := newConcRig(t, lab.ConcentratorConfig{Static: true}, nil)
	st := r.waitStatus(60*time.Second, "both tunnels up", allUp)
	t1, t2 := r.c.Tunnels()[0].Outside, r.c.Tunnels()[1].Outside
	if st.Mode != "static" || !slices.Equal(routeOf(st, "10.0.0.0/16").Tunnels, []string{t1, t2}) || !slices.Equal(routeOf(st, "fd00:a00::/64").Tunnels, []string{t1, t2}) {
		t.Errorf("static status: mode %s routes %+v; want both VPC prefixes over both tunnels", st.Mode, st.Routes)
	}
	a := r.c.Addrs
	for _, c := range []struct {
		ns  *lab.NS
		dst string
	}{{r.c.SiteLAN, a.VPCHost4}, {r.c.SiteLAN, a.VPCHost6}, {r.c.VPC, a.SiteLANHost4}} {
		if err := c.ns.WaitPing(r.ctx(20*time.Second), "", c.dst); err != nil {
			t.Errorf("ping %s from %s: %v", c.dst, c.ns, err)
		}
	}
	// A flow that hashes onto tunnel 2 (an idle tunnel would not fail over fast: DPD's job).
	// The kernel hashes a local socket's packets with the socket's random hash, which the
	// packets keep on their way through the site router: a new socket until one lands there.
	var udp *udpProbes
	for try := 0; try < 32 && udp == nil; try++ {
		before := packetsOut(t, r)
		u := startUDPProbes(t, r.c.SiteLAN, r.c.VPC, netip.AddrPortFrom(netip.MustParseAddr(a.VPCHost4), 5002), 0, time.Millisecond)
		time.Sleep(200 * time.Millisecond)
		if after := packetsOut(t, r); after[1]-before[1] >= 100 {
			udp = u
		} else {
			u.close()
		}
	}
	if udp == nil {
		t.Fatal("no flow of 32 hashed onto tunnel 2")
	}
	time.Sleep(time.Second)
	cut := time.Now()
	if err := r.c.CutPath(2); err != nil {
		t.Fatal(err)
	}
	r.waitStatus(10*time.Second, "the routes on tunnel 1 alone", func(st Status) bool {
		return !usable(st, t2) && slices.Equal(routeOf(st, "10.0.0.0/16").Tunnels, []string{t1})
	})
	t.Logf("static: routes on tunnel 1 alone %v after the cut", time.Since(cut).Round(time.Millisecond))
	if kr := r.kernelRoute("10.0.0.0/16"); strings.Contains(kr, "mrvpn1") {
		t.Errorf("kernel route during the cut = %q; want tunnel 2's device gone from it", kr)
	}
	if err := r.c.SiteLAN.Ping("", a.VPCHost4, 3); err != nil {
		t.Errorf("during the cut: %v", err)
	}
	if err := r.c.RestorePath(2); err != nil {
		t.Fatal(err)
	}
	r.waitStatus(20*time.Second, "ECMP again", func(st Status) bool {
		return slices.Equal(routeOf(st, "10.0.0.0/16").Tunnels, []string{t1, t2})
	})
	udp.close()
	t.Logf("static: the flow on tunnel 2: longest gap across the cut %v", udp.gap(cut).Round(time.Millisecond))
}

// TestLabOutsideIPv6: IKE and ESP-in-UDP over IPv6 outside addresses (AWS's IPv6 outer
// addresses), with BGP and IPv4 and IPv6 traffic inside.
func TestLabOutsideIPv6(t *testing.T) {
	t.Parallel()
	r := newConcRig(t, lab.ConcentratorConfig{OutsideIPv6: true}, nil)
	st := r.waitStatus(60*time.Second, "converged", bgpConverged)
	for _, tu := range st.Tunnels {
		if !strings.Contains(tu.Local, ":") || !strings.Contains(tu.Remote, ":") {
			t.Errorf("tunnel %s: %s -> %s; want IPv6 outside addresses", tu.Name, tu.Local, tu.Remote)
		}
	}
	a := r.c.Addrs
	for _, dst := range []string{a.VPCHost4, a.VPCHost6} {
		if err := r.c.SiteLAN.WaitPing(r.ctx(20*time.Second), "", dst); err != nil {
			t.Error(err)
		}
	}
	// The wire: ESP in UDP between IPv6 addresses.
	out, err := r.c.Internet.Run("ip", "-6", "-s", "link", "show", r.c.Endpoints[0].PathDev)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "RX:") {
		t.Errorf("no counters on the IPv6 path: %s", out)
	}
	_ = fmt.Sprint
}

// TestLabStartupActionStart: AWS's startup action "start": the concentrator's endpoints
// initiate, our tunnels answer (and only answer), and everything converges as usual.
func TestLabStartupActionStart(t *testing.T) {
	t.Parallel()
	cc := lab.ConcentratorConfig{}
	for i := range cc.Tunnels {
		cc.Tunnels[i].StartAction = "start"
	}
	r := newConcRig(t, cc, func(d fileDoc) {
		for i := range 2 {
			d.tunnel(i)["options"] = map[string]any{"startup_action": "start"}
		}
	})
	st := r.waitStatus(60*time.Second, "converged", bgpConverged)
	for _, tu := range st.Tunnels {
		if tu.Initiator {
			t.Errorf("tunnel %s: we initiated; want the concentrator to (startup action start)", tu.Name)
		}
	}
	if err := r.c.SiteLAN.WaitPing(r.ctx(20*time.Second), "", r.c.Addrs.VPCHost4); err != nil {
		t.Error(err)
	}
}
