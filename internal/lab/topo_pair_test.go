package lab

import (
	"strings"
	"testing"

	"meshroot/internal/testenv"
)

func TestLabPeerPair(t *testing.T) {
	testenv.Integration(t)
	testenv.Command(t, "charon")
	l := New(t)
	p, err := NewPeerPair(l, PeerPairConfig{
		OutsideIPv6: true,
		Charon:      &CharonConfig{Conns: []Conn{{Name: "tun1", PSK: "pp-psk-123456"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	a := p.Addrs
	for _, c := range []struct {
		ns  *NS
		dst string
	}{
		{p.A, a.BOutside4}, {p.A, a.BOutside6}, {p.AHost, a.AGateway4}, {p.AHost, a.AGateway6},
		{p.BHost, a.BGateway4}, {p.BHost, a.BGateway6},
	} {
		if err := c.ns.Ping("", c.dst, 1); err != nil {
			t.Errorf("ping %s -> %s: %v", c.ns, c.dst, err)
		}
	}
	// B's charon got the defaulted IPv6 outside addresses and the inside addresses on ipsec0.
	conf := readFile(t, p.Charon.SwanctlConfPath())
	for _, want := range []string{"local_addrs = " + a.BOutside6, "remote_addrs = " + a.AOutside6} {
		if !strings.Contains(conf, want) {
			t.Errorf("B swanctl.conf lacks %q", want)
		}
	}
	addrs, err := p.B.Addrs(TunDevice)
	if err != nil || !contains(addrs, a.BInside4) || !contains(addrs, a.BInside6) {
		t.Errorf("B ipsec0 addresses = %v, %v; want %s and %s", addrs, err, a.BInside4, a.BInside6)
	}
	out, err := p.B.Run("ip", "route", "show", a.ALAN4)
	if err != nil || !strings.Contains(out, "dev ipsec0") {
		t.Errorf("B route to A's LAN = %q, %v; want dev ipsec0", out, err)
	}
	// A is ours: no process runs there.
	for _, pr := range l.procs {
		if pr.ns == p.A {
			t.Errorf("process %s runs in A; want A empty", pr.Name())
		}
	}
	if c := p.AConn(Conn{Name: "x"}, false); c.LocalAddrs[0] != a.AOutside4 || c.RemoteAddrs[0] != a.BOutside4 {
		t.Errorf("AConn() addrs = %v -> %v; want %s -> %s", c.LocalAddrs, c.RemoteAddrs, a.AOutside4, a.BOutside4)
	}
}
