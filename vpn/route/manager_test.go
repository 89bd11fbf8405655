package route

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var netipCmp = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

var (
	pfVPC  = netip.MustParsePrefix("10.0.0.0/16")
	pfVPC6 = netip.MustParsePrefix("2001:db8:a::/48")
	peer1  = netip.MustParseAddr("169.254.10.1")
	peer2  = netip.MustParseAddr("169.254.11.1")
	src1   = Source{Tunnel: "t1", Peer: peer1}
	src2   = Source{Tunnel: "t2", Peer: peer2}
)

const (
	if1 = 11
	if2 = 12
)

func newTestManager(t *testing.T) (*Manager, *FakeKernel) {
	t.Helper()
	k := NewFakeKernel(map[string]int{"tun1": if1, "tun2": if2, "lan0": 3})
	m, err := New(k, Config{})
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	for _, tn := range []Tunnel{{Name: "t1", Device: "tun1"}, {Name: "t2", Device: "tun2"}} {
		if err := m.SetTunnel(tn); err != nil {
			t.Fatalf("SetTunnel(%v) = %v", tn, err)
		}
	}
	k.ResetBatches()
	return m, k
}

func kr(dst netip.Prefix, hops ...Nexthop) KernelRoute {
	return KernelRoute{Dst: dst, Table: DefaultTable, Protocol: DefaultProtocol, Metric: DefaultMetric, Nexthops: hops}
}

func hop(link int, gw string) Nexthop {
	n := Nexthop{LinkIndex: link}
	if gw != "" {
		n.Gw = netip.MustParseAddr(gw)
	}
	return n
}

func path(pf netip.Prefix, med uint32, nh netip.Addr) Path {
	return Path{Prefix: pf, ASPathLen: 1, MED: med, NextHop: nh}
}

func wantRoutes(t *testing.T, k *FakeKernel, want ...KernelRoute) {
	t.Helper()
	got, _ := k.Routes(DefaultTable, DefaultProtocol)
	if d := cmp.Diff(want, got, netipCmp, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("kernel routes (-want +got):\n%s", d)
	}
}

func TestNewSetsHashPolicyAndCleansLeftovers(t *testing.T) {
	k := NewFakeKernel(map[string]int{"tun1": if1})
	foreign := KernelRoute{Dst: pfVPC, Table: DefaultTable, Protocol: 186, Metric: 20, Nexthops: []Nexthop{hop(if1, "169.254.10.1")}}
	k.AddForeign(foreign)
	k.AddForeign(kr(netip.MustParsePrefix("192.0.2.0/24"), hop(if1, ""))) // ours, from a crashed run
	if _, err := New(k, Config{}); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"net.ipv4.fib_multipath_hash_policy", "net.ipv6.fib_multipath_hash_policy"} {
		if got := k.Sysctl(key); got != "1" {
			t.Errorf("sysctl %s = %q; want 1", key, got)
		}
	}
	if d := cmp.Diff([]KernelRoute{foreign}, k.AllRoutes(), netipCmp); d != "" {
		t.Errorf("routes after New (-want +got):\n%s", d)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []Config{{Protocol: 2}, {Protocol: 300}, {Metric: -1}} {
		if _, err := New(NewFakeKernel(nil), c); err == nil {
			t.Errorf("New(%+v) = nil error; want one", c)
		}
	}
	k := NewFakeKernel(nil)
	k2, _ := New(k, Config{NoHashPolicy: true})
	if k.Sysctl("net.ipv4.fib_multipath_hash_policy") != "" || k2 == nil {
		t.Errorf("NoHashPolicy: sysctl written anyway")
	}
}

func TestECMPAndActiveStandby(t *testing.T) {
	m, k := newTestManager(t)
	if err := m.Update(src1, []Path{path(pfVPC, 100, peer1)}, nil); err != nil {
		t.Fatal(err)
	}
	wantRoutes(t, k, kr(pfVPC, hop(if1, "169.254.10.1")))

	// The same prefix with the same MED on tunnel 2: one ECMP route.
	if err := m.Update(src2, []Path{path(pfVPC, 100, peer2)}, nil); err != nil {
		t.Fatal(err)
	}
	wantRoutes(t, k, kr(pfVPC, hop(if1, "169.254.10.1"), hop(if2, "169.254.11.1")))
	if d := cmp.Diff(Selection{Active: []string{"t1", "t2"}}, m.Selection(pfVPC)); d != "" {
		t.Errorf("Selection (-want +got):\n%s", d)
	}

	// Tunnel 2's MED rises (AWS marks it the standby): tunnel 1 only, tunnel 2 standby.
	if err := m.Update(src2, []Path{path(pfVPC, 200, peer2)}, nil); err != nil {
		t.Fatal(err)
	}
	wantRoutes(t, k, kr(pfVPC, hop(if1, "169.254.10.1")))
	if d := cmp.Diff(Selection{Active: []string{"t1"}, Standby: []string{"t2"}}, m.Selection(pfVPC)); d != "" {
		t.Errorf("Selection (-want +got):\n%s", d)
	}

	// Tunnel 1 dies: the standby is installed in one batch with one op.
	k.ResetBatches()
	if err := m.SetTunnelUp("t1", false); err != nil {
		t.Fatal(err)
	}
	wantRoutes(t, k, kr(pfVPC, hop(if2, "169.254.11.1")))
	if b := k.Batches(); len(b) != 1 || len(b[0]) != 1 || b[0][0].Kind != OpReplace {
		t.Errorf("batches for SetTunnelUp(t1, false) = %v; want one replace", b)
	}
	// Back up: tunnel 1 again.
	if err := m.SetTunnelUp("t1", true); err != nil {
		t.Fatal(err)
	}
	wantRoutes(t, k, kr(pfVPC, hop(if1, "169.254.10.1")))
	// Tunnel 1 withdraws: tunnel 2; tunnel 2 withdraws too: no route.
	if err := m.Update(src1, nil, []netip.Prefix{pfVPC}); err != nil {
		t.Fatal(err)
	}
	wantRoutes(t, k, kr(pfVPC, hop(if2, "169.254.11.1")))
	if err := m.ClearSource(src2); err != nil {
		t.Fatal(err)
	}
	wantRoutes(t, k)
	if got := m.Selection(pfVPC); len(got.Active)+len(got.Standby) != 0 {
		t.Errorf("Selection after all withdrawn = %+v; want none", got)
	}
}

func TestTunnelDownSwitchesAllPrefixesInOneBatch(t *testing.T) {
	m, k := newTestManager(t)
	var p1, p2 []Path
	for i := 0; i < 300; i++ {
		pf := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
		p1 = append(p1, path(pf, 100, peer1))
		p2 = append(p2, path(pf, 200, peer2))
	}
	if err := m.Update(src1, p1, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.Update(src2, p2, nil); err != nil {
		t.Fatal(err)
	}
	k.ResetBatches()
	if err := m.SetTunnelUp("t1", false); err != nil {
		t.Fatal(err)
	}
	b := k.Batches()
	if len(b) != 1 || len(b[0]) != 300 {
		t.Fatalf("SetTunnelUp(t1, false) made %d batches (first %d ops); want 1 batch of 300", len(b), len(b[0]))
	}
	for _, r := range m.Installed() {
		if len(r.Nexthops) != 1 || r.Nexthops[0].LinkIndex != if2 {
			t.Fatalf("route %v after tunnel 1 down; want via tun2 only", r)
		}
	}
	// Tunnel 2's own paths changing while t1 is down does not resurrect t1.
	if err := m.Update(src1, []Path{path(p1[0].Prefix, 50, peer1)}, nil); err != nil {
		t.Fatal(err)
	}
	if r := m.Installed()[0]; r.Nexthops[0].LinkIndex != if2 {
		t.Errorf("route %v: a down tunnel's update was installed", r)
	}
}

func TestReconcileDiff(t *testing.T) {
	m, k := newTestManager(t)
	a := netip.MustParsePrefix("10.1.0.0/16")
	b := netip.MustParsePrefix("10.2.0.0/16")
	c := netip.MustParsePrefix("10.3.0.0/16")
	if err := m.Update(src1, []Path{path(a, 0, peer1), path(b, 0, peer1)}, nil); err != nil {
		t.Fatal(err)
	}
	k.ResetBatches()
	// Same attributes again: nothing to do. Withdrawing an unknown prefix: nothing.
	if err := m.Update(src1, []Path{path(a, 0, peer1)}, []netip.Prefix{c}); err != nil {
		t.Fatal(err)
	}
	if n := len(k.Batches()); n != 0 {
		t.Errorf("no-op Update made %d batches; want 0", n)
	}
	// ReplaceSource: b stays, a goes, c comes.
	if err := m.ReplaceSource(src1, []Path{path(b, 0, peer1), path(c, 0, peer1)}); err != nil {
		t.Fatal(err)
	}
	got := k.Batches()
	want := [][]Op{{
		{Kind: OpDelete, Route: kr(a, hop(if1, "169.254.10.1"))},
		{Kind: OpReplace, Route: kr(c, hop(if1, "169.254.10.1"))},
	}}
	if d := cmp.Diff(want, got, netipCmp); d != "" {
		t.Errorf("ReplaceSource batch (-want +got):\n%s", d)
	}
	wantRoutes(t, k, kr(b, hop(if1, "169.254.10.1")), kr(c, hop(if1, "169.254.10.1")))
}

func TestForeignRoutesUntouched(t *testing.T) {
	m, k := newTestManager(t)
	foreign := KernelRoute{Dst: netip.MustParsePrefix("10.9.0.0/16"), Table: DefaultTable, Protocol: 4, Metric: 0, Nexthops: []Nexthop{hop(3, "")}}
	k.AddForeign(foreign)
	if err := m.Update(src1, []Path{path(pfVPC, 0, peer1)}, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]KernelRoute{foreign.normalize()}, k.AllRoutes(), netipCmp); d != "" {
		t.Errorf("routes after Close (-want +got):\n%s", d)
	}
}

func TestSyncRepairsDrift(t *testing.T) {
	m, k := newTestManager(t)
	if err := m.Update(src1, []Path{path(pfVPC, 0, peer1)}, nil); err != nil {
		t.Fatal(err)
	}
	// Someone deletes our route, and another of ours appears.
	k.Apply([]Op{{Kind: OpDelete, Route: kr(pfVPC)}, {Kind: OpReplace, Route: kr(netip.MustParsePrefix("192.0.2.0/24"), hop(if1, ""))}})
	if err := m.Sync(); err != nil {
		t.Fatal(err)
	}
	wantRoutes(t, k, kr(pfVPC, hop(if1, "169.254.10.1")))
}

func TestFailedOpsAreRetried(t *testing.T) {
	m, k := newTestManager(t)
	fail := true
	k.Fail = func(op Op) error {
		if fail && op.Route.Dst == pfVPC {
			return errors.New("ENOBUFS")
		}
		return nil
	}
	other := netip.MustParsePrefix("10.5.0.0/16")
	err := m.Update(src1, []Path{path(pfVPC, 0, peer1), path(other, 0, peer1)}, nil)
	if err == nil || !strings.Contains(err.Error(), "1 of 2") {
		t.Errorf("Update() with one failing op = %v; want an error saying 1 of 2 failed", err)
	}
	wantRoutes(t, k, kr(other, hop(if1, "169.254.10.1")))
	if s := m.Stats(); s.Failed != 1 || s.Replaced != 1 {
		t.Errorf("Stats() = %+v; want 1 failed, 1 replaced", s)
	}
	fail = false
	// Any next batch retries the failed prefix.
	if err := m.Update(src2, []Path{path(netip.MustParsePrefix("10.6.0.0/16"), 0, peer2)}, nil); err != nil {
		t.Fatal(err)
	}
	wantRoutes(t, k, kr(pfVPC, hop(if1, "169.254.10.1")), kr(other, hop(if1, "169.254.10.1")), kr(netip.MustParsePrefix("10.6.0.0/16"), hop(if2, "169.254.11.1")))
}

func TestNexthops(t *testing.T) {
	k := NewFakeKernel(map[string]int{"tun1": if1, "tun2": if2})
	m, err := New(k, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SetTunnel(Tunnel{Name: "t1", Device: "tun1"}); err != nil {
		t.Fatal(err)
	}
	if err := m.SetTunnel(Tunnel{Name: "t2", Device: "tun2", OnLink: true}); err != nil {
		t.Fatal(err)
	}
	mapped := netip.MustParseAddr("::ffff:169.254.10.1")
	v6nh := netip.MustParseAddr("fd00:10::1")
	v6b := netip.MustParsePrefix("2001:db8:b::/48")
	v4via6 := netip.MustParsePrefix("10.8.0.0/16")
	if err := m.Update(src1, []Path{path(pfVPC6, 0, mapped), path(v6b, 0, v6nh), path(pfVPC, 0, netip.Addr{}), path(v4via6, 0, v6nh)}, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.Update(src2, []Path{path(netip.MustParsePrefix("10.7.0.0/16"), 0, peer2)}, nil); err != nil {
		t.Fatal(err)
	}
	wantRoutes(t, k,
		kr(pfVPC, hop(if1, "")),                                // no next hop: device route
		kr(netip.MustParsePrefix("10.7.0.0/16"), hop(if2, "")), // OnLink tunnel: no gateway
		kr(v4via6, hop(if1, "fd00:10::1")),                     // IPv4 via IPv6 (RTA_VIA)
		kr(pfVPC6, hop(if1, "")),                               // IPv6 with an IPv4 next hop: device route
		kr(v6b, hop(if1, "fd00:10::1")),                        // IPv6 gateway
	)
}

func TestTunnelDevices(t *testing.T) {
	k := NewFakeKernel(map[string]int{"tun1": if1})
	m, _ := New(k, Config{})
	if err := m.SetTunnel(Tunnel{Name: "t2", Device: "tun2"}); err == nil {
		t.Errorf("SetTunnel(missing device) = nil; want an error")
	}
	if err := m.SetTunnel(Tunnel{Name: "", Device: "x"}); err == nil {
		t.Errorf("SetTunnel(no name) = nil; want an error")
	}
	// Paths through the device-less tunnel wait.
	if err := m.Update(src2, []Path{path(pfVPC, 0, peer2)}, nil); err != nil {
		t.Fatal(err)
	}
	wantRoutes(t, k)
	if got := m.Selection(pfVPC); len(got.Active) != 0 {
		t.Errorf("Selection = %+v; want nothing active without a device", got)
	}
	// The device appears: the route comes.
	k.SetLink("tun2", if2)
	if err := m.SetTunnel(Tunnel{Name: "t2", Device: "tun2"}); err != nil {
		t.Fatal(err)
	}
	wantRoutes(t, k, kr(pfVPC, hop(if2, "169.254.11.1")))
	// The device is recreated with a new index (the kernel dropped the routes): SetTunnel again.
	k.SetLink("tun2", 0)
	k.SetLink("tun2", 42)
	if err := m.SetTunnel(Tunnel{Name: "t2", Device: "tun2"}); err != nil {
		t.Fatal(err)
	}
	wantRoutes(t, k, kr(pfVPC, hop(42, "169.254.11.1")))
	if err := m.SetTunnelUp("nope", false); err == nil {
		t.Errorf("SetTunnelUp(unknown) = nil; want an error")
	}
	if err := m.RemoveTunnel("t2"); err != nil {
		t.Fatal(err)
	}
	wantRoutes(t, k)
}

func TestStaticOverBGP(t *testing.T) {
	m, k := newTestManager(t)
	if err := m.Update(src1, []Path{path(pfVPC, 0, peer1)}, nil); err != nil {
		t.Fatal(err)
	}
	// Static routes over both tunnels win over the BGP path and are ECMP.
	for _, tn := range []string{"t1", "t2"} {
		if err := m.ReplaceSource(StaticSource(tn), []Path{{Prefix: pfVPC}}); err != nil {
			t.Fatal(err)
		}
	}
	wantRoutes(t, k, kr(pfVPC, hop(if1, ""), hop(if2, "")))
	if err := m.ClearSource(StaticSource("t1")); err != nil {
		t.Fatal(err)
	}
	wantRoutes(t, k, kr(pfVPC, hop(if2, "")))
}

func TestManyPrefixesOneBatch(t *testing.T) {
	m, k := newTestManager(t)
	var ps []Path
	for i := 0; i < 10000; i++ {
		ps = append(ps, path(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24), 0, peer1))
	}
	if err := m.Update(src1, ps, nil); err != nil {
		t.Fatal(err)
	}
	if b := k.Batches(); len(b) != 1 || len(b[0]) != 10000 {
		t.Errorf("10000 paths in one Update: %d batches; want 1 of 10000 ops", len(b))
	}
	if n := len(m.Installed()); n != 10000 {
		t.Errorf("Installed() = %d routes; want 10000", n)
	}
	_ = fmt.Sprint(m.Stats())
}
