package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"meshroot/internal/testenv"
)

func TestLabStrongSwanPair(t *testing.T) {
	testenv.Integration(t)
	for _, c := range []string{"charon", "swanctl", "zebra", "bgpd", "vtysh", "ping"} {
		testenv.Command(t, c)
	}
	tests := []struct {
		name                  string
		cfg                   StrongSwanPairConfig
		encr                  string
		keySize               int
		prf, integ, childEncr string
	}{
		{"notes-gcm-ipv4", StrongSwanPairConfig{}, "AES_GCM_16", 256, "PRF_HMAC_SHA2_256", "", "AES_GCM_16"},
		{"cbc-ipv6-outside", StrongSwanPairConfig{IKEProposal: "aes128-sha1-modp2048", ESPProposal: "aes128-sha1-modp2048", OutsideIPv6: true},
			"AES_CBC", 128, "PRF_HMAC_SHA1", "HMAC_SHA1_96", "AES_CBC"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			testStrongSwanPair(t, tc.cfg, tc.encr, tc.keySize, tc.prf, tc.integ, tc.childEncr)
		})
	}
}

func testStrongSwanPair(t *testing.T, cfg StrongSwanPairConfig, encr string, keySize int, prf, integ, childEncr string) {
	l := New(t)
	p, err := NewStrongSwanPair(l, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := p.WaitUp(ctx); err != nil {
		t.Fatal(err)
	}
	a := p.Addrs

	// IKE ESTABLISHED, CHILD INSTALLED, TUNNEL-in-UDP, the notes' algorithms, on both sides.
	for _, c := range []*Charon{p.ACharon, p.BCharon} {
		sa, ok, err := c.IKE(ctx, "tun1")
		if err != nil || !ok {
			t.Fatalf("%s IKE(tun1) = %v, %v", c.NS, ok, err)
		}
		if sa.State != "ESTABLISHED" || sa.EncrAlg != encr || sa.EncrKeySize != keySize || sa.PRFAlg != prf || sa.IntegAlg != integ || sa.DHGroup != "MODP_2048" {
			t.Errorf("%s IKE_SA = %s %s-%d %s %s %s; want ESTABLISHED %s-%d %s %s MODP_2048", c.NS, sa.State, sa.EncrAlg, sa.EncrKeySize, sa.IntegAlg, sa.PRFAlg, sa.DHGroup, encr, keySize, integ, prf)
		}
		wantHost := a.AOutside4
		if cfg.OutsideIPv6 {
			wantHost = a.AOutside6
		}
		if c == p.BCharon && sa.RemoteHost != wantHost {
			t.Errorf("B IKE_SA remote host = %s; want %s", sa.RemoteHost, wantHost)
		}
		if sa.LocalPort != 4500 || sa.RemotePort != 4500 {
			t.Errorf("%s IKE ports = %d/%d; want 4500/4500 (NAT-T forced)", c.NS, sa.LocalPort, sa.RemotePort)
		}
		ch, ok := sa.Child("tun1")
		if !ok || ch.State != "INSTALLED" || ch.Mode != "TUNNEL" || !ch.Encap || ch.Protocol != "ESP" || ch.EncrAlg != childEncr {
			t.Errorf("%s CHILD_SA = %+v; want INSTALLED TUNNEL ESP in UDP", c.NS, ch)
		}
	}
	if sa, _, _ := p.ACharon.IKE(ctx, "tun1"); !sa.Initiator {
		t.Errorf("A IKE_SA initiator = false; want A to initiate")
	}

	// BGP: Established both ways, 1 prefix each per family, timers 10/30.
	for _, w := range []struct {
		f    *FRR
		peer string
	}{{p.AFRR, a.BInside4}, {p.AFRR, a.BInside6}, {p.BFRR, a.AInside4}, {p.BFRR, a.AInside6}} {
		pe, ok, err := w.f.Peer(addrOf(w.peer))
		if err != nil || !ok || pe.State != "Established" || pe.PfxRcd != 1 {
			t.Errorf("%s peer %s = %+v, %v, %v; want Established with 1 prefix", w.f.NS, w.peer, pe, ok, err)
		}
	}
	n, err := p.BFRR.Neighbor(addrOf(a.AInside4))
	if err != nil || n.HoldTimeMsecs != 30000 || n.KeepaliveMsecs != 10000 {
		t.Errorf("B neighbor %s = hold %d keepalive %d, %v; want 30000/10000", a.AInside4, n.HoldTimeMsecs, n.KeepaliveMsecs, err)
	}
	if r, err := p.AFRR.WaitRoute(ctx, a.BLAN4); err != nil || r.ASPath != "64512" {
		t.Errorf("A route %s = %+v, %v; want best path with AS path 64512", a.BLAN4, r, err)
	}

	// Pings over the tunnel (inside addresses) and LAN to LAN over the BGP routes.
	for _, c := range []struct {
		ns       *NS
		src, dst string
	}{
		{p.A, "", addrOf(a.BInside4)},
		{p.A, "", addrOf(a.BInside6)},
		{p.AHost, "", a.BHost4},
		{p.AHost, "", a.BHost6},
		{p.BHost, "", a.AHost4},
		{p.A, a.AGateway4, a.BGateway4},
	} {
		if err := c.ns.WaitPing(ctx, c.src, c.dst); err != nil {
			t.Errorf("ping %s -> %s: %v", c.ns, c.dst, err)
			continue
		}
		if err := c.ns.Ping(c.src, c.dst, 3); err != nil {
			t.Errorf("ping %s -> %s: %v", c.ns, c.dst, err)
		}
	}
	// The BGP route is in A's kernel via ipsec0.
	if out, err := p.A.Run("ip", "route", "show", a.BLAN4); err != nil || !strings.Contains(out, "dev ipsec0") || !strings.Contains(out, "proto bgp") {
		t.Errorf("ip route show %s in A = %q, %v; want a bgp route via ipsec0", a.BLAN4, out, err)
	}
	// The traffic went through ESP: byte counters moved.
	if _, ch, err := p.ACharon.WaitChild(ctx, "tun1", "", "INSTALLED"); err != nil || ch.PacketsOut == 0 || ch.PacketsIn == 0 {
		t.Errorf("A CHILD_SA counters = in %d out %d, %v; want > 0", ch.PacketsIn, ch.PacketsOut, err)
	}
	for _, c := range []*Charon{p.ACharon, p.BCharon} {
		if strings.Contains(c.Log(), "lab-psk-0123456789abcdef") {
			t.Errorf("%s charon log contains the PSK", c.NS)
		}
	}
}

// TestLabStrongSwanPairTeardown checks that closing a full lab leaves no namespace, process or
// directory behind.
func TestLabStrongSwanPairTeardown(t *testing.T) {
	testenv.Integration(t)
	l, err := Open(Options{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewStrongSwanPair(l, StrongSwanPairConfig{})
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := p.ACharon.WaitUp(ctx, "tun1"); err != nil {
		l.Close()
		t.Fatal(err)
	}
	var pids []int
	for _, pr := range l.procs {
		pids = append(pids, pr.PID())
	}
	nss := []*NS{p.A, p.B, p.AHost, p.BHost}
	dir := l.Dir()
	if err := l.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if len(pids) != 6 {
		t.Errorf("lab started %d processes; want 6 (2 charon, 2 zebra, 2 bgpd)", len(pids))
	}
	for _, pid := range pids {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			t.Errorf("pid %d still exists after Close", pid)
		}
	}
	for _, ns := range nss {
		if _, err := os.Stat(filepath.Join("/run/netns", ns.Name)); !os.IsNotExist(err) {
			t.Errorf("netns %s still exists after Close", ns.Name)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("lab dir %s still exists after Close", dir)
	}
}
