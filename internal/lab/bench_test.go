package lab

import (
	"context"
	"testing"
	"time"

	"meshroot/internal/testenv"
)

// BenchmarkLabStrongSwanThroughput is baseline (a) of issue 3: strongSwan ↔ strongSwan
// (kernel-libipsec, AES-256-GCM) between the LAN hosts of a StrongSwanPair (AHost → A → tunnel →
// B → BHost), with the raw path without a tunnel (AHost → A → veth → B → BHost, static routes,
// same hops) for reference in the same run. Metrics: a_* tunnel, raw_* no tunnel; a_cpu0/1 are
// the A and B charons.
//
//	go test -run '^$' -bench LabStrongSwanThroughput -benchtime 1x ./internal/lab/
func BenchmarkLabStrongSwanThroughput(b *testing.B) {
	testenv.Integration(b)
	testenv.Command(b, "iperf3")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		l := New(b)
		p, err := NewStrongSwanPair(l, StrongSwanPairConfig{})
		if err != nil {
			b.Fatal(err)
		}
		if err := p.WaitUp(ctx); err != nil {
			b.Fatal(err)
		}
		if err := p.AHost.WaitPing(ctx, "", p.Addrs.BHost4); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		a, err := RunThroughput(ctx, l, ThroughputOptions{Client: p.AHost, Server: p.BHost, ServerAddr: p.Addrs.BHost4, CPUPIDs: p.TunnelPIDs()})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		// Raw reference on a plain pair (same LAN-host-to-LAN-host hops, no tunnel).
		raw, err := NewPeerPair(l, PeerPairConfig{})
		if err != nil {
			b.Fatal(err)
		}
		ad := raw.Addrs
		if err := raw.RouteLANViaGateways(raw.A, "out0", ad.BOutside4, ad.BOutside6); err != nil {
			b.Fatal(err)
		}
		if err := raw.RouteLANViaGateways(raw.B, "out0", ad.AOutside4, ad.AOutside6); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		r, err := RunThroughput(ctx, l, ThroughputOptions{Client: raw.AHost, Server: raw.BHost, ServerAddr: ad.BHost4})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		b.Logf("strongSwan ↔ strongSwan: %v", a)
		b.Logf("raw (no tunnel):        %v", r)
		a.Report(b, "a")
		b.ReportMetric(r.TCP1Mbps, "raw_tcp1_Mbps")
		b.ReportMetric(r.TCPP4Mbps, "raw_tcpP4_Mbps")
		b.ReportMetric(r.UDP64PPS, "raw_udp64_pps")
		b.ReportMetric(a.LoadAvgPrev, "loadavg1")
	}
}
