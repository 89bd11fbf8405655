package route

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"meshroot/internal/testenv"
)

func benchPrefixes(n int) []netip.Prefix {
	out := make([]netip.Prefix, n)
	for i := range out {
		out[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
	}
	return out
}

// BenchmarkLabRoutes10k measures, in a lab namespace, the kernel work of 10,000 routes through
// the Manager: install (tunnel 1), switch to ECMP (tunnel 2 offers the same paths), fail over
// (tunnel 1 marked down: every route rewritten to tunnel 2), and withdraw everything; once with
// pipelined batches (the default) and once with one request per op (vishvananda/netlink's
// RouteReplace/RouteDel, the baseline). The second baseline is iproute2 in the same namespace:
// `ip -batch` adding and deleting the same 10,000 routes (what a script-driven CGW does).
// Metrics are milliseconds per 10,000 routes.
//
//	make bench BENCH=BenchmarkLabRoutes10k PKG=./vpn/route/
func BenchmarkLabRoutes10k(b *testing.B) {
	testenv.Integration(b)
	testenv.Command(b, "ip")
	const n = 10000
	rl := newRouteLab(b)
	pfs := benchPrefixes(n)
	s1 := Source{Tunnel: "t1", Peer: netip.MustParseAddr("169.254.10.1")}
	s2 := Source{Tunnel: "t2", Peer: netip.MustParseAddr("169.254.11.1")}
	paths := func(nh string) []Path {
		ps := make([]Path, n)
		for i, pf := range pfs {
			ps[i] = Path{Prefix: pf, ASPathLen: 1, MED: 100, NextHop: netip.MustParseAddr(nh)}
		}
		return ps
	}
	p1, p2 := paths("169.254.10.1"), paths("169.254.11.1")
	dir := b.TempDir()
	add, del := filepath.Join(dir, "add"), filepath.Join(dir, "del")
	var ab, db strings.Builder
	for _, pf := range pfs {
		fmt.Fprintf(&ab, "route add %s via 169.254.10.1 dev tun1 proto 78 metric 20\n", pf)
		fmt.Fprintf(&db, "route del %s proto 78 metric 20\n", pf)
	}
	if err := os.WriteFile(add, []byte(ab.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(del, []byte(db.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	type phases struct{ install, ecmp, failover, withdraw time.Duration }
	var piped, perOp phases
	var ipAdd, ipDel time.Duration
	timeIt := func(d *time.Duration, f func() error) {
		b.Helper()
		start := time.Now()
		if err := f(); err != nil {
			b.Fatal(err)
		}
		*d += time.Since(start)
	}
	run := func(ph *phases) {
		m := rl.manager(b)
		timeIt(&ph.install, func() error { return m.Update(s1, p1, nil) })
		timeIt(&ph.ecmp, func() error { return m.Update(s2, p2, nil) })
		timeIt(&ph.failover, func() error { return m.SetTunnelUp("t1", false) })
		timeIt(&ph.withdraw, func() error {
			if err := m.ClearSource(s1); err != nil {
				return err
			}
			return m.ClearSource(s2)
		})
		if got := len(m.Installed()); got != 0 {
			b.Fatalf("Installed() after withdraw = %d; want 0", got)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rl.k.PerOp = false
		run(&piped)
		rl.k.PerOp = true
		run(&perOp)
		timeIt(&ipAdd, func() error { _, err := rl.site.Run("ip", "-batch", add); return err })
		timeIt(&ipDel, func() error { _, err := rl.site.Run("ip", "-batch", del); return err })
	}
	b.StopTimer()
	if rl.k.Fallbacks() != 0 {
		b.Fatalf("%d pipelined batches fell back to one request per op", rl.k.Fallbacks())
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
	b.ReportMetric(ms(piped.install), "install-ms")
	b.ReportMetric(ms(piped.ecmp), "ecmp-replace-ms")
	b.ReportMetric(ms(piped.failover), "failover-ms")
	b.ReportMetric(ms(piped.withdraw), "withdraw-ms")
	b.ReportMetric(ms(perOp.install), "perop-install-ms")
	b.ReportMetric(ms(perOp.failover), "perop-failover-ms")
	b.ReportMetric(ms(ipAdd), "ipbatch-add-ms")
	b.ReportMetric(ms(ipDel), "ipbatch-del-ms")
	b.ReportMetric(ms(piped.install)/ms(ipAdd), "install/ipbatch")
	b.ReportMetric(ms(piped.install)/ms(perOp.install), "install/perop")
}
