package route

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netns"

	"meshroot/internal/lab"
	"meshroot/internal/testenv"
)

// routeLab is a site namespace with two "tunnels": veths tun1 and tun2 to two peer namespaces,
// each with an inside /30 and /126 like AWS's tunnels (169.254.1N.0/30, fd00:1N::/126).
type routeLab struct {
	l     *lab.Lab
	site  *lab.NS
	peers [2]*lab.NS
	k     *Netlink
}

func newRouteLab(tb testing.TB) *routeLab {
	tb.Helper()
	l := lab.New(tb)
	site, err := l.NewNS("rsite")
	if err != nil {
		tb.Fatal(err)
	}
	rl := &routeLab{l: l, site: site}
	for i := range rl.peers {
		p, err := l.NewNS(fmt.Sprintf("rpeer%d", i+1))
		if err != nil {
			tb.Fatal(err)
		}
		dev := fmt.Sprintf("tun%d", i+1)
		if err := l.Veth(site, dev, p, "out0"); err != nil {
			tb.Fatal(err)
		}
		if err := site.AddAddr(dev, fmt.Sprintf("169.254.1%d.2/30", i), fmt.Sprintf("fd00:1%d::2/126", i)); err != nil {
			tb.Fatal(err)
		}
		if err := p.AddAddr("out0", fmt.Sprintf("169.254.1%d.1/30", i), fmt.Sprintf("fd00:1%d::1/126", i)); err != nil {
			tb.Fatal(err)
		}
		rl.peers[i] = p
	}
	// Our own netlink sockets into the site namespace (the lab's handle is shared with its
	// helpers).
	nsh, err := netns.GetFromName(site.Name)
	if err != nil {
		tb.Fatal(err)
	}
	rl.k, err = NewNetlinkAt(nsh)
	if err != nil {
		nsh.Close()
		tb.Fatal(err)
	}
	tb.Cleanup(func() { rl.k.Close(); nsh.Close() })
	rl.k.Sysctl = site.Sysctl
	return rl
}

func (rl *routeLab) manager(tb testing.TB) *Manager {
	tb.Helper()
	m, err := New(rl.k, Config{})
	if err != nil {
		tb.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		if err := m.SetTunnel(Tunnel{Name: fmt.Sprintf("t%d", i), Device: fmt.Sprintf("tun%d", i)}); err != nil {
			tb.Fatal(err)
		}
	}
	return m
}

// ipRoute is `ip [-6] route show DST proto 77` in the site namespace: iproute2's view, not ours.
func (rl *routeLab) ipRoute(t *testing.T, dst string) string {
	t.Helper()
	args := []string{"route", "show", dst, "proto", fmt.Sprint(DefaultProtocol)}
	if strings.Contains(dst, ":") {
		args = append([]string{"-6"}, args...)
	}
	out, err := rl.site.Run("ip", args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(strings.Fields(out), " ")
}

func wantIPRoute(t *testing.T, rl *routeLab, dst string, want ...string) {
	t.Helper()
	got := rl.ipRoute(t, dst)
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("ip route show %s = %q; want it to contain %q", dst, got, w)
		}
	}
	if len(want) == 0 && got != "" {
		t.Errorf("ip route show %s = %q; want no route", dst, got)
	}
}

func wantNotIPRoute(t *testing.T, rl *routeLab, dst, unwanted string) {
	t.Helper()
	if got := rl.ipRoute(t, dst); strings.Contains(got, unwanted) {
		t.Errorf("ip route show %s = %q; want no %q", dst, got, unwanted)
	}
}

// devFor is the device `ip route get` picks for a TCP flow to dst from source port sport.
func (rl *routeLab) devFor(t *testing.T, dst string, sport int) string {
	t.Helper()
	out, err := rl.site.Run("ip", "route", "get", dst, "ipproto", "tcp", "sport", fmt.Sprint(sport), "dport", "443")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(out)
	for i := range f {
		if f[i] == "dev" && i+1 < len(f) {
			return f[i+1]
		}
	}
	t.Fatalf("ip route get %s: no dev in %q", dst, out)
	return ""
}

func TestLabRouteECMPHashingAndFailover(t *testing.T) {
	testenv.Integration(t)
	testenv.Command(t, "ip")
	rl := newRouteLab(t)
	m := rl.manager(t)
	for _, key := range []string{"net.ipv4.fib_multipath_hash_policy", "net.ipv6.fib_multipath_hash_policy"} {
		if v, err := rl.site.ReadSysctl(key); err != nil || v != "1" {
			t.Errorf("sysctl %s = %q, %v; want 1 (layer-4 hashing)", key, v, err)
		}
	}
	s1 := Source{Tunnel: "t1", Peer: netip.MustParseAddr("169.254.10.1")}
	s2 := Source{Tunnel: "t2", Peer: netip.MustParseAddr("169.254.11.1")}
	vpc, vpc6 := netip.MustParsePrefix("10.0.0.0/16"), netip.MustParsePrefix("2001:db8:a::/48")
	offer := func(src Source, med uint32, nh4, nh6 string) {
		t.Helper()
		if err := m.Update(src, []Path{
			{Prefix: vpc, ASPathLen: 1, MED: med, NextHop: netip.MustParseAddr(nh4)},
			{Prefix: vpc6, ASPathLen: 1, MED: med, NextHop: netip.MustParseAddr(nh6)},
		}, nil); err != nil {
			t.Fatal(err)
		}
	}
	offer(s1, 100, "169.254.10.1", "fd00:10::1")
	offer(s2, 100, "169.254.11.1", "fd00:11::1")
	// Equal MED: one route, a nexthop per tunnel, both families.
	wantIPRoute(t, rl, "10.0.0.0/16", "nexthop via 169.254.10.1 dev tun1", "nexthop via 169.254.11.1 dev tun2")
	wantIPRoute(t, rl, "2001:db8:a::/48", "nexthop via fd00:10::1 dev tun1", "nexthop via fd00:11::1 dev tun2")

	// Layer-4 hashing: a flow always maps to the same tunnel, and flows spread over both.
	for _, dst := range []string{"10.0.5.5", "2001:db8:a::5"} {
		seen := map[string]int{}
		for sport := 1000; sport < 1032; sport++ {
			dev := rl.devFor(t, dst, sport)
			if again := rl.devFor(t, dst, sport); again != dev {
				t.Errorf("flow to %s from port %d: %s, then %s; want one tunnel per flow", dst, sport, dev, again)
			}
			seen[dev]++
		}
		if seen["tun1"] == 0 || seen["tun2"] == 0 {
			t.Errorf("32 flows to %s went %v; want both tunnels used", dst, seen)
		}
	}

	// AWS raises tunnel 2's MED: active/standby, tunnel 1 only.
	offer(s2, 200, "169.254.11.1", "fd00:11::1")
	wantIPRoute(t, rl, "10.0.0.0/16", "via 169.254.10.1 dev tun1")
	wantNotIPRoute(t, rl, "10.0.0.0/16", "tun2")
	wantIPRoute(t, rl, "2001:db8:a::/48", "via fd00:10::1 dev tun1")
	wantNotIPRoute(t, rl, "2001:db8:a::/48", "tun2")

	// Tunnel 1's data plane dies: the standby takes over at once.
	if err := m.SetTunnelUp("t1", false); err != nil {
		t.Fatal(err)
	}
	wantIPRoute(t, rl, "10.0.0.0/16", "via 169.254.11.1 dev tun2")
	wantNotIPRoute(t, rl, "10.0.0.0/16", "tun1")
	wantIPRoute(t, rl, "2001:db8:a::/48", "via fd00:11::1 dev tun2")
	wantNotIPRoute(t, rl, "2001:db8:a::/48", "tun1")
	if err := m.SetTunnelUp("t1", true); err != nil {
		t.Fatal(err)
	}
	wantIPRoute(t, rl, "10.0.0.0/16", "via 169.254.10.1 dev tun1")

	// Back to ECMP, then one ECMP member withdrawn: IPv6 multipath shrinks to one nexthop.
	offer(s2, 100, "169.254.11.1", "fd00:11::1")
	wantIPRoute(t, rl, "2001:db8:a::/48", "nexthop via fd00:10::1 dev tun1", "nexthop via fd00:11::1 dev tun2")
	if err := m.ClearSource(s1); err != nil {
		t.Fatal(err)
	}
	wantIPRoute(t, rl, "10.0.0.0/16", "via 169.254.11.1 dev tun2")
	wantIPRoute(t, rl, "2001:db8:a::/48", "via fd00:11::1 dev tun2")
	wantNotIPRoute(t, rl, "2001:db8:a::/48", "tun1")
	if err := m.ClearSource(s2); err != nil {
		t.Fatal(err)
	}
	wantIPRoute(t, rl, "10.0.0.0/16")
	wantIPRoute(t, rl, "2001:db8:a::/48")
	if n := rl.k.Fallbacks(); n != 0 {
		t.Errorf("Fallbacks() = %d; want every batch pipelined", n)
	}
}

func TestLabRouteNexthopKindsAndOwnership(t *testing.T) {
	testenv.Integration(t)
	testenv.Command(t, "ip")
	rl := newRouteLab(t)
	// A route of someone else's in the same table, and a leftover of ours from a "crashed run".
	if err := rl.site.AddRoute(lab.Route{Dst: "192.0.2.0/24", Via: "169.254.10.1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := rl.site.Run("ip", "route", "add", "198.51.100.0/24", "via", "169.254.11.1", "proto", fmt.Sprint(DefaultProtocol), "metric", "20"); err != nil {
		t.Fatal(err)
	}
	m := rl.manager(t)
	wantIPRoute(t, rl, "198.51.100.0/24") // the leftover is gone
	if err := m.SetTunnel(Tunnel{Name: "p2p", Device: "tun2", OnLink: true}); err != nil {
		t.Fatal(err)
	}
	s1 := Source{Tunnel: "t1", Peer: netip.MustParseAddr("169.254.10.1")}
	if err := m.Update(s1, []Path{
		// MP-BGP IPv6 over the IPv4 session with an IPv4-mapped next hop: a device route.
		{Prefix: netip.MustParsePrefix("2001:db8:c::/48"), ASPathLen: 1, NextHop: netip.MustParseAddr("::ffff:169.254.10.1")},
		// IPv4 with an IPv6 next hop (RFC 8950): via inet6.
		{Prefix: netip.MustParsePrefix("10.40.0.0/16"), ASPathLen: 1, NextHop: netip.MustParseAddr("fd00:10::1")},
		{Prefix: netip.MustParsePrefix("10.20.0.0/16"), ASPathLen: 1, NextHop: netip.MustParseAddr("169.254.10.1")},
	}, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.ReplaceSource(StaticSource("p2p"), []Path{{Prefix: netip.MustParsePrefix("10.30.0.0/16")}, {Prefix: netip.MustParsePrefix("2001:db8:d::/48")}}); err != nil {
		t.Fatal(err)
	}
	wantIPRoute(t, rl, "2001:db8:c::/48", "dev tun1")
	wantNotIPRoute(t, rl, "2001:db8:c::/48", "via")
	wantIPRoute(t, rl, "10.40.0.0/16", "via inet6 fd00:10::1 dev tun1")
	wantIPRoute(t, rl, "10.30.0.0/16", "dev tun2", "scope link")
	wantIPRoute(t, rl, "2001:db8:d::/48", "dev tun2")
	// Our view agrees with the kernel's.
	got, err := rl.k.Routes(DefaultTable, DefaultProtocol)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 {
		t.Errorf("Routes() = %v; want our 5 routes", got)
	}
	if err := m.Sync(); err != nil {
		t.Fatal(err)
	}
	if s := m.Stats(); s.Failed != 0 {
		t.Errorf("Stats() = %+v; want no failures", s)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if n := rl.k.Fallbacks(); n != 0 {
		t.Errorf("Fallbacks() = %d; want every batch pipelined", n)
	}
	out, err := rl.site.Run("ip", "-4", "route", "show", "192.0.2.0/24")
	if err != nil || !strings.Contains(out, "via 169.254.10.1") {
		t.Errorf("someone else's route after Close = %q, %v; want it untouched", out, err)
	}
	for _, dst := range []string{"2001:db8:c::/48", "10.20.0.0/16", "10.30.0.0/16", "2001:db8:d::/48", "10.40.0.0/16"} {
		wantIPRoute(t, rl, dst)
	}
}
