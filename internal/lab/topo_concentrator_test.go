package lab

import (
	"context"
	"strings"
	"testing"
	"time"

	"meshroot/internal/testenv"
)

func TestLabConcentrator(t *testing.T) {
	testenv.Integration(t)
	for _, c := range []string{"charon", "swanctl", "zebra", "bgpd", "vtysh", "ping"} {
		testenv.Command(t, c)
	}
	l := New(t)
	c, err := NewConcentrator(l, ConcentratorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	a := c.Addrs
	for i, ep := range c.Endpoints {
		if ep.Charon == nil || ep.Charon.Process().Exited() || ep.FRR == nil || ep.FRR.BGPd.Exited() || ep.FRR.Zebra.Exited() {
			t.Fatalf("endpoint %d: charon/FRR not running", i+1)
		}
		// VPC reachable from each endpoint.
		for _, dst := range []string{a.VPCHost4, a.VPCHost6} {
			if err := ep.NS.Ping("", dst, 2); err != nil {
				t.Errorf("endpoint %d ping VPC %s: %v", i+1, dst, err)
			}
		}
		// The site reaches both endpoints' outside addresses (v4 and v6).
		for _, dst := range []string{a.EndpointOutside4[i], a.EndpointOutside6[i]} {
			if err := c.Site.Ping("", dst, 2); err != nil {
				t.Errorf("site ping endpoint %d %s: %v", i+1, dst, err)
			}
		}
		// Connection loaded and listening: charon knows tunnelN.
		if out, err := ep.Charon.Swanctl("--list-conns"); err != nil || !strings.Contains(out, ep.Tunnel.Name+":") {
			t.Errorf("endpoint %d list-conns = %q, %v; want %s", i+1, out, err, ep.Tunnel.Name)
		}
		// FRR advertises the VPC prefix with the tunnel's MED toward the site.
		if !strings.Contains(readFile(t, ep.FRR.ConfPath()), "set metric "+itoa(100*(i+1))) {
			t.Errorf("endpoint %d frr.conf has no MED %d route-map", i+1, 100*(i+1))
		}
	}
	for _, dst := range []string{a.WANHost4, a.WANHost6} {
		if err := c.Site.Ping("", dst, 1); err != nil {
			t.Errorf("site ping WAN host %s: %v", dst, err)
		}
	}
	tun := c.Tunnels()
	if tun[0].AWSInside4 != "169.254.10.1" || tun[0].SiteInside4 != "169.254.10.2" || tun[1].AWSInside6 != "fd00:a9fe:11::1" || tun[1].SiteInside6 != "fd00:a9fe:11::2" {
		t.Errorf("Tunnels() inside addresses = %+v; want AWS .1/::1, site .2/::2", tun)
	}

	// Cut the path to endpoint 1 only.
	if err := c.CutPath(1); err != nil {
		t.Fatal(err)
	}
	if err := c.Site.Ping("", a.EndpointOutside4[0], 1); err == nil {
		t.Errorf("site reaches endpoint 1 with its path cut")
	}
	if err := c.Site.Ping("", a.EndpointOutside4[1], 2); err != nil {
		t.Errorf("site ping endpoint 2 with path 1 cut: %v", err)
	}
	if err := c.RestorePath(1); err != nil {
		t.Fatal(err)
	}
	if err := c.Site.WaitPing(ctx, "", a.EndpointOutside4[0]); err != nil {
		t.Errorf("site ping endpoint 1 after restore: %v", err)
	}

	// Cut and restore the site's uplink.
	if err := c.CutSiteUplink(); err != nil {
		t.Fatal(err)
	}
	if err := c.Site.Ping("", a.WANHost4, 1); err == nil {
		t.Errorf("site reaches the WAN host with its uplink cut")
	}
	if err := c.SiteLAN.Ping("", a.SiteLANGateway4, 1); err != nil {
		t.Errorf("site LAN with the uplink cut: %v", err)
	}
	if err := c.RestoreSiteUplink(); err != nil {
		t.Fatal(err)
	}
	if err := c.Site.WaitPing(ctx, "", a.WANHost4); err != nil {
		t.Errorf("site ping WAN host after restore: %v", err)
	}

	// End to end with a strongSwan stand-in for our client on tunnel 1: site LAN host <-> VPC
	// host over the BGP routes (MED 100 seen at the site).
	s, err := c.StartSiteStrongSwan(1)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WaitUp(ctx); err != nil {
		t.Fatal(err)
	}
	if r, err := s.FRR.WaitRoute(ctx, "10.0.0.0/16"); err != nil || r.MED != 100 || r.ASPath != "64512" {
		t.Errorf("site route 10.0.0.0/16 = %+v, %v; want MED 100 from AS 64512", r, err)
	}
	for _, dst := range []string{a.VPCHost4, a.VPCHost6} {
		if err := c.SiteLAN.WaitPing(ctx, "", dst); err != nil {
			t.Errorf("site LAN -> VPC %s: %v", dst, err)
		}
	}
	// Endpoint 2 learned the site LAN from endpoint 1 over iBGP.
	if r, err := c.Endpoints[1].FRR.WaitRoute(ctx, "192.168.1.0/24"); err != nil || len(r.NextHops) == 0 || r.NextHops[0] != a.EndpointVPC4[0] {
		t.Errorf("endpoint 2 route to the site LAN = %+v, %v; want via endpoint 1 (%s)", r, err, a.EndpointVPC4[0])
	}
}

func TestLabConcentratorStatic(t *testing.T) {
	testenv.Integration(t)
	l := New(t)
	c, err := NewConcentrator(l, ConcentratorConfig{Static: true, Tunnels: [2]TunnelConfig{{}, {Disabled: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Endpoints[0].FRR != nil || c.Endpoints[1].Charon != nil {
		t.Fatalf("static concentrator: FRR %v, endpoint 2 charon %v; want no FRR and endpoint 2 stopped", c.Endpoints[0].FRR, c.Endpoints[1].Charon)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := c.StartSiteStrongSwan(1)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WaitUp(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.SiteLAN.WaitPing(ctx, "", c.Addrs.VPCHost4); err != nil {
		t.Errorf("site LAN -> VPC over static routes: %v", err)
	}
	// Endpoint 2 can be started later.
	if err := c.Endpoints[1].Start(); err != nil {
		t.Fatal(err)
	}
	if err := c.Endpoints[1].Charon.Ping(ctx); err != nil {
		t.Errorf("endpoint 2 charon after Start: %v", err)
	}
}

// TestLabConcentratorExternalSite: with ExternalSite the concentrator makes no site
// namespaces; a site of the caller's plugged in with AttachSite reaches the endpoints and the
// WAN host at the built-in site's addresses, and the uplink methods act on its link.
func TestLabConcentratorExternalSite(t *testing.T) {
	testenv.Integration(t)
	testenv.Command(t, "ping")
	l := New(t)
	// No charon or FRR: this is about the namespaces and links.
	c, err := NewConcentrator(l, ConcentratorConfig{ExternalSite: true, Tunnels: [2]TunnelConfig{{Disabled: true}, {Disabled: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Site != nil || c.SiteLAN != nil {
		t.Fatalf("ExternalSite: Site %v, SiteLAN %v; want no site namespaces", c.Site, c.SiteLAN)
	}
	if _, err := c.StartSiteStrongSwan(1); err == nil {
		t.Errorf("StartSiteStrongSwan(1) with ExternalSite = nil error; want a refusal")
	}
	mine, err := l.NewNS("mysite")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AttachSite(mine, "up0"); err != nil {
		t.Fatal(err)
	}
	if err := c.AttachSite(mine, "up1"); err == nil {
		t.Errorf("second AttachSite = nil error; want one (site0 exists)")
	}
	a := c.Addrs
	if err := mine.AddAddr("up0", a.SiteWAN4+"/30"); err != nil {
		t.Fatal(err)
	}
	if err := mine.AddRoute(Route{Dst: "default", Via: a.SiteGateway4}); err != nil {
		t.Fatal(err)
	}
	for _, dst := range []string{a.EndpointOutside4[0], a.EndpointOutside4[1], a.WANHost4} {
		if err := mine.Ping("", dst, 1); err != nil {
			t.Errorf("attached site ping %s: %v", dst, err)
		}
	}
	if err := c.CutSiteUplink(); err != nil {
		t.Fatal(err)
	}
	if err := mine.Ping("", a.WANHost4, 1); err == nil {
		t.Errorf("attached site reaches the WAN host with its uplink cut")
	}
	if err := c.RestoreSiteUplink(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := mine.WaitPing(ctx, "", a.WANHost4); err != nil {
		t.Errorf("attached site after restore: %v", err)
	}
	plain, err := NewConcentrator(l, ConcentratorConfig{Tunnels: [2]TunnelConfig{{Disabled: true}, {Disabled: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := plain.AttachSite(mine, "up2"); err == nil {
		t.Errorf("AttachSite without ExternalSite = nil error; want a refusal")
	}
}
