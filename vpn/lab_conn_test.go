package vpn

import (
	"slices"
	"strings"
	"testing"
	"time"

	"meshroot/internal/lab"
	"meshroot/vpn/vpnlog"
)

// TestLabConnection: both tunnels up, BGP Established on all four sessions (IPv4 over the /30
// and IPv6 over the /126 of each tunnel), the VPC's prefixes in the kernel active/standby
// (tunnel 1 has the lower MED), and the LAN host and the VPC host reach each other over IPv4
// and IPv6. The concentrator's FRR sees our prefixes on both tunnels.
func TestLabConnection(t *testing.T) {
	r := newConcRig(t, lab.ConcentratorConfig{}, nil)
	st := r.waitStatus(60*time.Second, "both tunnels and all BGP sessions up with the VPC's prefixes", bgpConverged)
	t.Logf("status:\n%s", st.Format())
	for _, tu := range st.Tunnels {
		for _, p := range tu.BGP {
			if p.PrefixesIn < 1 || p.PrefixesOut < 1 {
				t.Errorf("tunnel %s session %s: %d prefixes in, %d out; want the VPC's in and ours out", tu.Name, p.Peer, p.PrefixesIn, p.PrefixesOut)
			}
		}
	}
	t1, t2 := r.c.Tunnels()[0].Outside, r.c.Tunnels()[1].Outside
	for _, pf := range []string{"10.0.0.0/16", "fd00:a00::/64"} {
		var rs RouteStatus
		for _, x := range st.Routes {
			if x.Prefix == pf {
				rs = x
			}
		}
		if !slices.Equal(rs.Tunnels, []string{t1}) || !slices.Equal(rs.Standby, []string{t2}) {
			t.Errorf("route %s: active %v standby %v; want %s active (MED 100) and %s standby (MED 200)", pf, rs.Tunnels, rs.Standby, t1, t2)
		}
		if kr := r.kernelRoute(pf); !strings.Contains(kr, "dev mrvpn0") || strings.Contains(kr, "mrvpn1") {
			t.Errorf("kernel route to %s = %q; want it through mrvpn0 only", pf, kr)
		}
	}
	a := r.c.Addrs
	for _, c := range []struct {
		ns  *lab.NS
		dst string
	}{
		{r.c.SiteLAN, a.VPCHost4}, {r.c.SiteLAN, a.VPCHost6}, {r.c.VPC, a.SiteLANHost4}, {r.c.VPC, a.SiteLANHost6},
	} {
		if err := c.ns.WaitPing(r.ctx(20*time.Second), "", c.dst); err != nil {
			t.Errorf("ping %s from %s: %v", c.dst, c.ns, err)
			continue
		}
		if err := c.ns.Ping("", c.dst, 3); err != nil {
			t.Error(err)
		}
	}
	for i, ep := range r.c.Endpoints {
		tu := ep.Tunnel
		for _, pf := range []string{"192.168.1.0/24", "fd00:c0a8:1::/64"} {
			route, err := ep.FRR.WaitRoute(r.ctx(20*time.Second), pf)
			if err != nil {
				t.Errorf("endpoint %d: no route to %s: %v", i+1, pf, err)
				continue
			}
			if !slices.Contains(route.NextHops, tu.SiteInside4) && !slices.Contains(route.NextHops, tu.SiteInside6) && route.PeerID != tu.SiteInside4 && route.PeerID != tu.SiteInside6 {
				t.Logf("endpoint %d: best path to %s via %v (peer %s)", i+1, pf, route.NextHops, route.PeerID)
			}
		}
	}
	// The BGP log has the sessions coming up, in AWS's schema, one stream per tunnel.
	for _, tu := range r.c.Tunnels() {
		stream := connID + "_" + tu.Outside
		for _, peer := range []string{tu.AWSInside4, tu.AWSInside6} {
			r.waitBGPRecord(10*time.Second, "Established with "+peer, func(rec *vpnlog.BGPRecord) bool {
				return rec.ResourceID == stream && rec.Status == vpnlog.StatusUp &&
					strings.HasSuffix(rec.Details, "to Established with neighbor "+peer)
			})
		}
	}
	// And the activity log both tunnels' IKE and CHILD SAs.
	for _, tu := range r.c.Tunnels() {
		var ike, child bool
		for _, l := range r.streamLines(vpnlog.LogTunnel, connID+"_"+tu.Outside) {
			rec, err := vpnlog.ParseTunnelRecord(connID+"_"+tu.Outside, []byte(l))
			if err != nil {
				t.Fatalf("tunnel log line %q: %v", l, err)
			}
			ike = ike || strings.HasPrefix(rec.Details, "IKE_SA established with "+tu.Outside)
			child = child || strings.HasPrefix(rec.Details, "CHILD_SA installed")
		}
		if !ike || !child {
			t.Errorf("tunnel log: IKE_SA established with %s %v, CHILD_SA installed %v; want both", tu.Outside, ike, child)
		}
	}
}
