package tunnel

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"testing"
	"time"

	"meshroot/internal/lab"
	"meshroot/internal/testenv"
	"meshroot/vpn/ike"
)

// BenchmarkLabThroughput is issue 3's table, in one run, through the same lab.PeerPair path
// (LAN host A → A → tunnel → B → LAN host B), AES-256-GCM with UDP encapsulation, tunnels
// negotiated by IKE:
//
//	(a) strongSwan ↔ strongSwan (kernel-libipsec on both sides: the baseline)
//	(b) ours ↔ strongSwan (our tunnel layer in A, charon in B)
//	(c) ours ↔ ours (our tunnel layer in A, initiating, and in B, responding)
//
// with lab.RunThroughput's suite: one TCP stream, -P 4, and 64-byte UDP datagrams (packet
// rate), plus the CPU of the tunnel endpoints during the single stream per Gbit/s (strongSwan:
// both charons; ours: this process, which runs our data planes and nothing else; (b): both).
// Run with:
//
//	go test -run '^$' -bench LabThroughput -benchtime 1x ./vpn/tunnel/
func BenchmarkLabThroughput(b *testing.B) {
	testenv.Integration(b)
	testenv.Command(b, "iperf3")
	testenv.Command(b, "charon")
	dur := 5 * time.Second
	if d, err := time.ParseDuration(os.Getenv("TUNNEL_BENCH_DURATION")); err == nil {
		dur = d
	}
	var a, bb, c lab.ThroughputResult
	for range b.N {
		a = benchStrongSwan(b, dur)
		bb = benchOursStrongSwan(b, dur)
		c = benchOursOurs(b, dur)
	}
	a.Report(b, "a")
	bb.Report(b, "b")
	c.Report(b, "c")
	for _, r := range []struct {
		name string
		x    lab.ThroughputResult
	}{{"b", bb}, {"c", c}} {
		if a.TCP1Mbps > 0 && a.TCPP4Mbps > 0 && a.UDP64PPS > 0 {
			b.ReportMetric(r.x.TCP1Mbps/a.TCP1Mbps, r.name+"/a_tcp1")
			b.ReportMetric(r.x.TCPP4Mbps/a.TCPP4Mbps, r.name+"/a_tcpP4")
			b.ReportMetric(r.x.UDP64PPS/a.UDP64PPS, r.name+"/a_udp64")
		}
	}
	b.ReportMetric(0, "ns/op")
	b.Logf("(a) strongSwan <-> strongSwan: %s", a)
	b.Logf("(b) ours <-> strongSwan:       %s", bb)
	b.Logf("(c) ours <-> ours:             %s", c)
}

func throughput(b *testing.B, l *lab.Lab, p *lab.PeerPair, dur time.Duration, pids ...int) lab.ThroughputResult {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := p.AHost.WaitPing(ctx, "", p.Addrs.BHost4); err != nil {
		b.Fatal(err)
	}
	r, err := lab.RunThroughput(ctx, l, lab.ThroughputOptions{Client: p.AHost, Server: p.BHost, ServerAddr: p.Addrs.BHost4, Duration: dur, CPUPIDs: pids})
	if err != nil {
		b.Fatal(err)
	}
	return r
}

func benchStrongSwan(b *testing.B, dur time.Duration) lab.ThroughputResult {
	l := lab.New(b)
	defer l.Close()
	sp, err := lab.NewStrongSwanPair(l, lab.StrongSwanPairConfig{NoBGP: true})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := sp.WaitUp(ctx); err != nil {
		b.Fatal(err)
	}
	return throughput(b, l, sp.PeerPair, dur, sp.TunnelPIDs()...)
}

func benchOursStrongSwan(b *testing.B, dur time.Duration) lab.ThroughputResult {
	r := newLabRig(b, labOpts{})
	defer r.l.Close()
	r.waitUp()
	return throughput(b, r.l, r.p, dur, os.Getpid(), r.sw.PID())
}

// ourSide starts our tunnel in one namespace of a PeerPair.
func ourSide(b *testing.B, ns *lab.NS, local, remote netip.Addr, inside4, inside6 string, start ike.StartAction) *Tunnel {
	b.Helper()
	h := LinuxHost{Enter: ns.Do}
	tr, err := NewTransport(h, TransportConfig{Local: local})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tr.Close() })
	t, err := New(Config{
		Remote: remote, Device: labDevice, Inside4: netip.MustParsePrefix(inside4), Inside6: netip.MustParsePrefix(inside6),
		IKE: ike.Config{PSK: labPSK, StartAction: start},
	}, Options{Transport: tr, Host: h, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		t.Close(ctx)
	})
	return t
}

func benchOursOurs(b *testing.B, dur time.Duration) lab.ThroughputResult {
	l := lab.New(b)
	defer l.Close()
	p, err := lab.NewPeerPair(l, lab.PeerPairConfig{})
	if err != nil {
		b.Fatal(err)
	}
	ad := p.Addrs
	ta := netip.MustParseAddr(ad.AOutside4)
	tb := netip.MustParseAddr(ad.BOutside4)
	bt := ourSide(b, p.B, tb, ta, ad.BInside4, ad.BInside6, ike.StartAdd)
	at := ourSide(b, p.A, ta, tb, ad.AInside4, ad.AInside6, ike.StartStart)
	for _, side := range []struct {
		ns *lab.NS
		t  *Tunnel
	}{{p.A, at}, {p.B, bt}} {
		if err := p.RouteLANVia(side.ns, labDevice, ""); err != nil {
			b.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for !at.Usable() || !bt.Usable() {
		if time.Now().After(deadline) {
			b.Fatalf("ours <-> ours: not up: %+v / %+v", at.Status(), bt.Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
	r := throughput(b, l, p, dur, os.Getpid())
	sa, sb := at.Status().ESP, bt.Status().ESP
	b.Logf("(c) A's tunnel: %d packets / %d bytes out, B's: %d packets / %d bytes in", sa.PacketsOut, sa.BytesOut, sb.PacketsIn, sb.BytesIn)
	return r
}
