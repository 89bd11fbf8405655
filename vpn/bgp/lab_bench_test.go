package bgp

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"meshroot/internal/lab"
	"meshroot/vpn/route"
)

func benchNetworks(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("172.%d.%d.0/24", 16+i/256, i%256)
	}
	return out
}

// countRoutes counts IPv4 routes of one protocol in the main table of a namespace.
func countRoutes(h *netlink.Handle, proto int) (int, error) {
	rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 254, Protocol: netlink.RouteProtocol(proto)},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	return len(rs), err
}

func nsHandle(tb testing.TB, ns *lab.NS) *netlink.Handle {
	tb.Helper()
	nsh, err := netns.GetFromName(ns.Name)
	if err != nil {
		tb.Fatal(err)
	}
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		nsh.Close()
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.Close(); nsh.Close() })
	return h
}

// waitRoutes polls until the namespace has n routes of proto; it returns when it first saw one
// and when it saw all n.
func waitRoutes(ctx context.Context, tb testing.TB, h *netlink.Handle, proto, n int) (first, all time.Time) {
	tb.Helper()
	for {
		c, err := countRoutes(h, proto)
		if err != nil {
			tb.Fatal(err)
		}
		if c > 0 && first.IsZero() {
			first = time.Now()
		}
		if c >= n {
			return first, time.Now()
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("waiting for %d routes of proto %d: have %d: %v", n, proto, c, ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// establishedAt is when the concentrator-side FRR logged its session with addr as Up (its log
// has millisecond timestamps: see msLog), the same reference for ours and the baseline.
func establishedAt(ctx context.Context, tb testing.TB, f *lab.FRR, addr string) time.Time {
	tb.Helper()
	for {
		b, err := os.ReadFile(f.LogPath())
		if err != nil {
			tb.Fatal(err)
		}
		var last string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "%ADJCHANGE: neighbor "+addr) && strings.HasSuffix(strings.TrimSpace(l), "Up") {
				last = l
			}
		}
		if len(last) > 23 {
			t, err := time.ParseInLocation("2006/01/02 15:04:05.000", last[:23], time.Local)
			if err != nil {
				tb.Fatalf("FRR log line %q: %v", last, err)
			}
			return t
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("FRR %s: no %%ADJCHANGE Up line for %s in %s", f.Config().Name, addr, f.LogPath())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// msLog makes an FRR instance log neighbor changes with millisecond timestamps.
func msLog(tb testing.TB, f *lab.FRR) {
	tb.Helper()
	if err := f.Configure("log timestamp precision 3", fmt.Sprintf("router bgp %d", f.Config().ASN), "bgp log-neighbor-changes"); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkLabBGPConvergence: a concentrator endpoint (FRR, update coalescing 10 ms) advertises
// 1,000 prefixes; the time from the BGP session reaching Established (the endpoint's log, ms
// timestamps) to all 1,000 routes in the kernel of the site namespace, and from the first route
// in the kernel to the last. Ours: gobgp + vpn/route in the agent. Baseline, same run:
// FRR (bgpd + zebra) as the customer gateway, the usual OpenWrt/strongSwan+FRR setup.
//
//	make bench BENCH=BenchmarkLabBGPConvergence PKG=./vpn/bgp/
func BenchmarkLabBGPConvergence(b *testing.B) {
	const n = 1000
	nets := benchNetworks(n)
	var ours, frr, oursStart, oursSpread, frrSpread time.Duration
	fast := func(c *lab.FRRConfig) { c.Extra = "coalesce-time 10" } // the endpoint sends at once
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		bl := newBGPLab(b, 2)
		aws1 := bl.frr(b, 0, nets, func(c *lab.FRRConfig) { fast(c); c.Neighbors[0].Families = []string{"ipv4"} })
		msLog(b, aws1)
		// The baseline's site: its own namespace behind tunnel 2's endpoint.
		fsite, err := bl.l.NewNS("fsite")
		if err != nil {
			b.Fatal(err)
		}
		if err := bl.l.Veth(fsite, "tun2", bl.aws[1], "out1"); err != nil {
			b.Fatal(err)
		}
		if err := fsite.AddAddr("tun2", "169.254.20.2/30"); err != nil {
			b.Fatal(err)
		}
		if err := bl.aws[1].AddAddr("out1", "169.254.20.1/30"); err != nil {
			b.Fatal(err)
		}
		aws2 := bl.frr(b, 1, nets, func(c *lab.FRRConfig) {
			fast(c)
			c.Neighbors = []lab.BGPNeighbor{{Addr: "169.254.20.2", RemoteAS: siteASN, Families: []string{"ipv4"}}}
		})
		msLog(b, aws2)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		hSite, hF := nsHandle(b, bl.site), nsHandle(b, fsite)
		b.StartTimer()

		start := time.Now()
		p := peerV4(0)
		p.Families = []Family{IPv4}
		a := startAgent(b, bl.l, bl.site, agentConfig{BGP: Config{ASN: siteASN, Peers: []PeerConfig{p}}, Tunnels: tunnels(1)})
		first, done := waitRoutes(ctx, b, hSite, route.DefaultProtocol, n)
		ours += done.Sub(establishedAt(ctx, b, aws1, ours4(0)))
		oursSpread += done.Sub(first)
		oursStart += done.Sub(start)
		a.must(agentRequest{Op: "close"})

		if _, err := bl.l.StartFRR(fsite, lab.FRRConfig{Name: "cgw", ASN: siteASN, RouterID: "169.254.20.2",
			Neighbors: []lab.BGPNeighbor{{Addr: "169.254.20.1", RemoteAS: awsASN, Families: []string{"ipv4"}}}}); err != nil {
			b.Fatal(err)
		}
		first, done = waitRoutes(ctx, b, hF, 186, n) // zebra's "proto bgp"
		frr += done.Sub(establishedAt(ctx, b, aws2, "169.254.20.2"))
		frrSpread += done.Sub(first)
		cancel()
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
	b.ReportMetric(ms(ours), "ours-ms")
	b.ReportMetric(ms(frr), "frr-ms")
	b.ReportMetric(ms(ours)/ms(frr), "ours/frr")
	b.ReportMetric(ms(oursStart), "ours-from-start-ms")
	b.ReportMetric(ms(oursSpread), "ours-first-to-all-ms")
	b.ReportMetric(ms(frrSpread), "frr-first-to-all-ms")
}
