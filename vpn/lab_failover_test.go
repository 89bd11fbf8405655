package vpn

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"meshroot/internal/lab"
)

func routeOf(st Status, prefix string) RouteStatus {
	for _, r := range st.Routes {
		if r.Prefix == prefix {
			return r
		}
	}
	return RouteStatus{}
}

func usable(st Status, name string) bool {
	t, ok := st.Tunnel(name)
	return ok && t.Usable
}

// TestLabFailover: a paced TCP stream (sequence-checked) and a one-way UDP probe stream from
// the LAN host to the VPC host while the path to the active endpoint is cut for a few seconds:
// the tunnel leaves service and its routes move to tunnel 2 long before BGP's hold time, the
// TCP stream survives without a missing byte, the gaps are measured, and when the path comes
// back tunnel 1 returns (same SAs, same BGP session) and the probes rebalance without loss.
func TestLabFailover(t *testing.T) {
	r := newConcRig(t, lab.ConcentratorConfig{}, nil)
	r.waitStatus(60*time.Second, "converged", bgpConverged)
	a := r.c.Addrs
	t1, t2 := r.c.Tunnels()[0].Outside, r.c.Tunnels()[1].Outside
	vpc := netip.MustParseAddr(a.VPCHost4)
	if err := r.c.SiteLAN.WaitPing(r.ctx(10*time.Second), "", a.VPCHost4); err != nil {
		t.Fatal(err)
	}
	before, _ := r.status()
	spi := func(st Status) string { s, _ := st.Tunnel(t1); return s.SPIIn }

	tcp := startTCPStream(t, r.c.SiteLAN, r.c.VPC, netip.AddrPortFrom(vpc, 5001), 2*time.Millisecond)
	udp := startUDPProbes(t, r.c.SiteLAN, r.c.VPC, netip.AddrPortFrom(vpc, 5002), 0, time.Millisecond)
	time.Sleep(2 * time.Second)

	cut := time.Now()
	if err := r.c.CutPath(1); err != nil {
		t.Fatal(err)
	}
	r.waitStatus(10*time.Second, "tunnel 1 out of service", func(st Status) bool { return !usable(st, t1) })
	out := time.Since(cut)
	st := r.waitStatus(5*time.Second, "the routes on tunnel 2", func(st Status) bool {
		return slices.Equal(routeOf(st, "10.0.0.0/16").Tunnels, []string{t2})
	})
	if kr := r.kernelRoute("10.0.0.0/16"); !strings.Contains(kr, "dev mrvpn1") || strings.Contains(kr, "mrvpn0") {
		t.Errorf("kernel route during the cut = %q; want it through mrvpn1", kr)
	}
	if s, _ := st.Tunnel(t1); s.Phase1 != "Established" || len(s.BGP) == 0 || !s.BGP[0].LocallyDown || s.BGP[0].State != "Established" {
		t.Errorf("tunnel 1 during the cut: %+v; want its SAs and BGP sessions kept, routes withdrawn locally", s)
	}
	// Return-path steering: tunnel 2's sessions now send MED 0, so endpoint 1 hands the site's
	// traffic to endpoint 2 (over iBGP) instead of into its dead tunnel.
	deadline := time.Now().Add(10 * time.Second)
	for {
		rt, err := r.c.Endpoints[0].FRR.WaitRoute(r.ctx(5*time.Second), "192.168.1.0/24")
		if err == nil && slices.Contains(rt.NextHops, a.EndpointVPC4[1]) {
			t.Logf("endpoint 1's best path to the site during the cut: via %v (endpoint 2), MED %d, %v after the cut", rt.NextHops, rt.MED, time.Since(cut).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("endpoint 1's best path to the site during the cut: %+v (%v); want via endpoint 2 (%s)", rt, err, a.EndpointVPC4[1])
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(4 * time.Second)

	restored := time.Now()
	sentAtRestore := udp.sent.Load()
	if err := r.c.RestorePath(1); err != nil {
		t.Fatal(err)
	}
	r.waitStatus(20*time.Second, "tunnel 1 back in service with its routes", func(st Status) bool {
		return usable(st, t1) && slices.Equal(routeOf(st, "10.0.0.0/16").Tunnels, []string{t1})
	})
	back := time.Since(restored)
	time.Sleep(2 * time.Second)
	sentAfter := udp.sent.Load() - sentAtRestore
	udp.close()
	tcpGap, err := tcp.finish(90*time.Second, cut)
	if err != nil {
		t.Errorf("the TCP stream did not survive the failover: %v", err)
	}
	udpGap := udp.gap(cut)
	arrivedAfter := udp.arrivedSince(restored)
	t.Logf("tunnel 1 out of service %v after the cut, back %v after the path returned", out.Round(time.Millisecond), back.Round(time.Millisecond))
	t.Logf("gaps: UDP site→cloud %v, TCP stream %v (%d chunks, none missing)", udpGap.Round(time.Millisecond), tcpGap.Round(time.Millisecond), tcp.received.Load())
	t.Logf("after the path returned: %d probes sent, %d arrived", sentAfter, arrivedAfter)
	if arrivedAfter < int(sentAfter)-20 {
		t.Errorf("after the path returned %d of %d probes arrived; want the rebalancing without loss", arrivedAfter, sentAfter)
	}
	for _, want := range []string{"return-path steering: MED 0 on " + t2, "return-path steering off"} {
		if !strings.Contains(r.proc.Log(), want) {
			t.Errorf("agent output has no %q", want)
		}
	}
	after, _ := r.status()
	if spi(after) != spi(before) {
		t.Errorf("tunnel 1's CHILD SA changed (%s -> %s); want the SAs kept through a short outage", spi(before), spi(after))
	}
	if s, _ := after.Tunnel(t1); s.Failovers != 1 || s.Recoveries != 1 {
		t.Errorf("tunnel 1: %d failovers, %d recoveries; want 1 and 1", s.Failovers, s.Recoveries)
	}
	// The concentrator's session on tunnel 1 never dropped: FRR saw one connection.
	n, err := r.c.Endpoints[0].FRR.Neighbor(r.c.Tunnels()[0].SiteInside4)
	if err != nil {
		t.Fatal(err)
	}
	if n.State != "Established" || n.ConnectionsEstab != 1 {
		t.Errorf("endpoint 1's BGP session: %s after %d connections; want the first one still Established", n.State, n.ConnectionsEstab)
	}
}
