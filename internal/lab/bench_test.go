package lab

import (
	"context"
	"testing"
	"time"

	"meshroot/internal/testenv"
)

// BenchmarkLabStrongSwanThroughput is baseline (a) of issue 3: strongSwan ↔ strongSwan
// (kernel-libipsec, AES-256-GCM) between the LAN hosts of a StrongSwanPair (AHost → A → tunnel →
// B → BHost), with the raw veth path (A → B outside addresses) for reference in the same run.
// Run with: go test -run '^$' -bench LabStrongSwanThroughput -benchtime 1x ./internal/lab/
func BenchmarkLabStrongSwanThroughput(b *testing.B) {
	testenv.Integration(b)
	testenv.Command(b, "iperf3")
	l := New(b)
	p, err := NewStrongSwanPair(l, StrongSwanPairConfig{})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := p.WaitUp(ctx); err != nil {
		b.Fatal(err)
	}
	a := p.Addrs
	tunSrv, err := l.StartIperfServer(p.BHost, a.BHost4, 5201)
	if err != nil {
		b.Fatal(err)
	}
	rawSrv, err := l.StartIperfServer(p.B, a.BOutside4, 5202)
	if err != nil {
		b.Fatal(err)
	}
	if err := p.AHost.WaitPing(ctx, "", a.BHost4); err != nil {
		b.Fatal(err)
	}
	const dur = 5 * time.Second
	load, _ := LoadAvg()
	b.ResetTimer()
	var tcp1, tcp4, udpPPS, udpLoss, raw1, raw4, cpuA, cpuB, retr float64
	for i := 0; i < b.N; i++ {
		m, err := StartCPUMeter(p.TunnelPIDs()...)
		if err != nil {
			b.Fatal(err)
		}
		r, err := RunIperf(ctx, p.AHost, IperfOptions{Server: tunSrv.Addr, Port: tunSrv.Port, Duration: dur})
		if err != nil {
			b.Fatal(err)
		}
		cpu, err := m.Percent()
		if err != nil {
			b.Fatal(err)
		}
		tcp1 += r.ReceivedBps / 1e6
		retr += float64(r.Retransmits)
		cpuA += cpu[0]
		cpuB += cpu[1]
		r, err = RunIperf(ctx, p.AHost, IperfOptions{Server: tunSrv.Addr, Port: tunSrv.Port, Duration: dur, Parallel: 4})
		if err != nil {
			b.Fatal(err)
		}
		tcp4 += r.ReceivedBps / 1e6
		r, err = RunIperf(ctx, p.AHost, IperfOptions{Server: tunSrv.Addr, Port: tunSrv.Port, Duration: dur, UDP: true, Length: 64, Bitrate: "200M"})
		if err != nil {
			b.Fatal(err)
		}
		udpPPS += r.ReceivedPPS
		udpLoss += r.LostPercent
		r, err = RunIperf(ctx, p.A, IperfOptions{Server: rawSrv.Addr, Port: rawSrv.Port, Duration: dur})
		if err != nil {
			b.Fatal(err)
		}
		raw1 += r.ReceivedBps / 1e6
		r, err = RunIperf(ctx, p.A, IperfOptions{Server: rawSrv.Addr, Port: rawSrv.Port, Duration: dur, Parallel: 4})
		if err != nil {
			b.Fatal(err)
		}
		raw4 += r.ReceivedBps / 1e6
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(tcp1/n, "tun_tcp1_Mbps")
	b.ReportMetric(tcp4/n, "tun_tcpP4_Mbps")
	b.ReportMetric(udpPPS/n, "tun_udp64_pps")
	b.ReportMetric(udpLoss/n, "tun_udp64_loss_%")
	b.ReportMetric(retr/n, "tun_tcp1_retr")
	b.ReportMetric(cpuA/n, "charonA_cpu_%")
	b.ReportMetric(cpuB/n, "charonB_cpu_%")
	if tcp1 > 0 {
		b.ReportMetric((cpuA+cpuB)/n/(tcp1/n/1000), "charon_cpu_%_per_Gbps")
	}
	b.ReportMetric(raw1/n, "raw_tcp1_Mbps")
	b.ReportMetric(raw4/n, "raw_tcpP4_Mbps")
	b.ReportMetric(load, "loadavg1_before")
	b.ReportMetric(0, "ns/op") // wall time per op is meaningless here
}
