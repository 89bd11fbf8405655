package route

import (
	"net/netip"
	"testing"
)

// BenchmarkManagerSwitch10k is the Go side of a 10,000-route failover (fake kernel): selection,
// diff and batch building, without netlink.
func BenchmarkManagerSwitch10k(b *testing.B) {
	const n = 10000
	pfs := benchPrefixes(n)
	s1 := Source{Tunnel: "t1", Peer: netip.MustParseAddr("169.254.10.1")}
	s2 := Source{Tunnel: "t2", Peer: netip.MustParseAddr("169.254.11.1")}
	p1, p2 := make([]Path, n), make([]Path, n)
	for i, pf := range pfs {
		p1[i] = Path{Prefix: pf, ASPathLen: 1, MED: 100, NextHop: s1.Peer}
		p2[i] = Path{Prefix: pf, ASPathLen: 1, MED: 200, NextHop: s2.Peer}
	}
	k := NewFakeKernel(map[string]int{"tun1": 1, "tun2": 2})
	m, err := New(k, Config{})
	if err != nil {
		b.Fatal(err)
	}
	m.SetTunnel(Tunnel{Name: "t1", Device: "tun1"})
	m.SetTunnel(Tunnel{Name: "t2", Device: "tun2"})
	if err := m.Update(s1, p1, nil); err != nil {
		b.Fatal(err)
	}
	if err := m.Update(s2, p2, nil); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		up := i%2 == 1
		if err := m.SetTunnelUp("t1", up); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRouteMessage10k is building the netlink messages of 10,000 replaces.
func BenchmarkRouteMessage10k(b *testing.B) {
	pfs := benchPrefixes(10000)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		for _, pf := range pfs {
			if _, err := routeMessage(Op{Kind: OpReplace, Route: KernelRoute{Dst: pf, Table: 254, Protocol: 77, Metric: 20,
				Nexthops: []Nexthop{{LinkIndex: 3, Gw: netip.MustParseAddr("169.254.10.1")}}}}); err != nil {
				b.Fatal(err)
			}
		}
	}
}
