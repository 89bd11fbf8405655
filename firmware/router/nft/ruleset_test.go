package nft

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables/expr"
)

func rulesOf(rs Ruleset, chain string) []string {
	for _, c := range rs.Chains {
		if c.Name == chain {
			var out []string
			for _, r := range c.Rules {
				out = append(out, r.String())
			}
			return out
		}
	}
	return nil
}

func TestBuild(t *testing.T) {
	rs, err := Build(Config{WAN: "eth0", LAN: "br-lan", TunnelPrefix: "mrtun",
		IKEPeers: []netip.Addr{netip.MustParseAddr("203.0.113.2"), netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("198.51.100.2")}})
	if err != nil {
		t.Fatalf("Build() = %v", err)
	}
	wantIn := []string{
		`ct state established,related accept`,
		`ct state invalid drop`,
		`iifname "lo" accept`,
		`iifname "br-lan" accept`,
		`iifname "mrtun*" accept`,
		`iifname "eth0" jump wan_in`,
		`counter drop`,
	}
	if diff := cmp.Diff(wantIn, rulesOf(rs, "input")); diff != "" {
		t.Errorf("input chain (-want +got):\n%s", diff)
	}
	wantWAN := []string{
		`meta nfproto ipv4 udp sport 67 udp dport 68 accept`,
		`ip saddr 198.51.100.2 udp dport 500 accept`,
		`ip saddr 198.51.100.2 udp dport 4500 accept`,
		`ip saddr 203.0.113.2 udp dport 500 accept`,
		`ip saddr 203.0.113.2 udp dport 4500 accept`,
		`meta nfproto ipv6 icmpv6 type 133 accept`,
		`meta nfproto ipv6 icmpv6 type 134 accept`,
		`meta nfproto ipv6 icmpv6 type 135 accept`,
		`meta nfproto ipv6 icmpv6 type 136 accept`,
		`meta nfproto ipv6 icmpv6 type 137 accept`,
	}
	if diff := cmp.Diff(wantWAN, rulesOf(rs, ChainWANIn)); diff != "" {
		t.Errorf("wan_in chain (-want +got):\n%s", diff)
	}
	wantFwd := []string{
		`ct state established,related accept`,
		`ct state invalid drop`,
		`iifname "br-lan" oifname "eth0" accept`,
		`iifname "br-lan" oifname "br-lan" accept`,
		`iifname "br-lan" oifname "mrtun*" accept`,
		`iifname "mrtun*" oifname "br-lan" accept`,
		`counter drop`,
	}
	if diff := cmp.Diff(wantFwd, rulesOf(rs, "forward")); diff != "" {
		t.Errorf("forward chain (-want +got):\n%s", diff)
	}
	if got, want := rulesOf(rs, "postrouting"), []string{`oifname "eth0" meta nfproto ipv4 masquerade`}; !cmp.Equal(got, want) {
		t.Errorf("postrouting = %q; want %q", got, want)
	}
	for _, c := range rs.Chains {
		if c.Hook != "postrouting" && c.Hook != "" && c.Policy != "drop" {
			t.Errorf("chain %s policy = %s; want drop", c.Name, c.Policy)
		}
	}
	if s := rs.String(); !strings.Contains(s, "type filter hook input priority 0; policy drop;") || !strings.Contains(s, `comment "input: drop the rest"`) {
		t.Errorf("Ruleset.String() =\n%s\nwant the input chain header and comments", s)
	}
}

func TestBuildNoVPN(t *testing.T) {
	rs, err := Build(Config{WAN: "wan", LAN: "br-lan"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range append(rulesOf(rs, "input"), rulesOf(rs, "forward")...) {
		if strings.Contains(r, "dport 500") || strings.Contains(r, `*"`) {
			t.Errorf("rule %q without a VPN; want no IKE or tunnel rules", r)
		}
	}
}

func TestBuildErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no wan", Config{LAN: "br-lan"}, "WAN and LAN"},
		{"same", Config{WAN: "eth0", LAN: "eth0"}, "both"},
		{"long", Config{WAN: "a-very-long-interface", LAN: "br-lan"}, "15 bytes"},
		{"wildcard", Config{WAN: "eth*", LAN: "br-lan"}, "'*'"},
		{"peer", Config{WAN: "eth0", LAN: "br-lan", IKEPeers: []netip.Addr{netip.IPv4Unspecified()}}, "unicast"},
	} {
		_, err := Build(c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Build(%+v) = %v; want an error containing %q", c.name, c.cfg, err, c.want)
		}
	}
}

func TestRuleValidate(t *testing.T) {
	for _, r := range []Rule{
		{Verdict: "reject"},
		{DPort: 53, Verdict: "accept"},
		{L4Proto: "sctp", Verdict: "accept"},
		{CtState: []string{"weird"}, Verdict: "accept"},
		{NFProto: "ipv6", SAddr: netip.MustParseAddr("192.0.2.1"), Verdict: "accept"},
		{IIF: "eth0", IIFPrefix: "eth", Verdict: "accept"},
		{HasICMPv6Type: true, L4Proto: "udp", Verdict: "accept"},
		{Verdict: "jump"},
		{Verdict: "jump", Target: "nowhere"},
		{Verdict: "accept", Target: "c"},
	} {
		rs := Ruleset{Table: "t", Chains: []Chain{{Name: "c", Type: "filter", Hook: "input", Policy: "drop", Rules: []Rule{r}}}}
		if err := rs.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil; want an error", r)
		}
	}
}

// TestExprs checks the translation of the trickier matches into nftables expressions.
func TestExprs(t *testing.T) {
	e := Exprs(Rule{IIFPrefix: "mrtun", SAddr: netip.MustParseAddr("2001:db8::1"), L4Proto: "udp", DPort: 4500, Counter: true, Verdict: "accept"})
	var kinds []string
	for _, x := range e {
		switch v := x.(type) {
		case *expr.Meta:
			kinds = append(kinds, "meta")
		case *expr.Cmp:
			kinds = append(kinds, "cmp"+string(rune('0'+len(v.Data)/10))+string(rune('0'+len(v.Data)%10)))
		case *expr.Payload:
			kinds = append(kinds, "payload")
		case *expr.Counter:
			kinds = append(kinds, "counter")
		case *expr.Verdict:
			kinds = append(kinds, "verdict")
		default:
			kinds = append(kinds, "?")
		}
	}
	want := []string{"meta", "cmp05", "meta", "cmp01", "payload", "cmp16", "meta", "cmp01", "payload", "cmp02", "counter", "verdict"}
	if !cmp.Equal(kinds, want) {
		t.Errorf("Exprs() kinds = %v; want %v (iifname prefix of 5 bytes, nfproto, 16-byte saddr, l4proto, dport)", kinds, want)
	}
	// An exact name is compared with its NUL padding (IFNAMSIZ), so "eth0" does not match "eth01".
	e = Exprs(Rule{IIF: "eth0", Verdict: "drop"})
	if c, ok := e[1].(*expr.Cmp); !ok || len(c.Data) != 16 {
		t.Errorf("Exprs(iifname eth0)[1] = %#v; want a 16-byte compare", e[1])
	}
}

func TestFake(t *testing.T) {
	f := &Fake{}
	rs, _ := Build(Config{WAN: "eth0", LAN: "br-lan"})
	if err := f.Apply(rs); err != nil {
		t.Fatal(err)
	}
	f.Fail = errors.New("boom")
	rs2, _ := Build(Config{WAN: "eth1", LAN: "br-lan"})
	if err := f.Apply(rs2); err == nil {
		t.Errorf("Apply() with Fail = nil; want the error")
	}
	got, n, ok := f.Table(Table)
	if !ok || n != 1 || !cmp.Equal(got, rs, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })) {
		t.Errorf("Table() = %v, %d applies; want the first ruleset in force after the failed apply", ok, n)
	}
	f.Fail = nil
	if err := f.UpdateChain(Table, WANIn([]netip.Addr{netip.MustParseAddr("198.51.100.2")})); err != nil {
		t.Fatal(err)
	}
	got, _, _ = f.Table(Table)
	if r := rulesOf(got, ChainWANIn); len(r) != 8 || f.Updates() != 1 {
		t.Errorf("wan_in after UpdateChain = %q", r)
	}
	if err := f.UpdateChain(Table, Chain{Name: "input", Type: "filter", Hook: "input", Policy: "drop"}); err == nil {
		t.Errorf("UpdateChain(base chain) = nil; want an error")
	}
}
