// Package nft is the router's firewall and NAT: one nftables table (inet meshroot) built from a
// small rule description (Ruleset, Chain, Rule) and programmed over netlink with
// github.com/google/nftables, replaced atomically in one batch. No nft binary is needed.
//
// Policy (Build):
//
//   - input (policy drop): established/related accepted, invalid dropped, loopback and the LAN
//     bridge accepted (DHCP, DNS, status, onboarding), the tunnels accepted (BGP over the inside
//     addresses), from the WAN (chain wan_in) only DHCP client replies, IKE/NAT-T (UDP 500 and
//     4500) from the profile's concentrator endpoints and IPv6 neighbour discovery; everything
//     else is counted and dropped. wan_in is replaced on its own when the profile changes
//     (UpdateChain), without touching the hooks or NAT (established connections keep flowing).
//   - forward (policy drop): established/related accepted, invalid dropped, LAN → WAN,
//     LAN → tunnels, tunnels → LAN and LAN → LAN accepted; WAN → LAN (and all else) counted and
//     dropped.
//   - postrouting (NAT): IPv4 leaving the WAN is masqueraded.
//
// TCP MSS clamping for the tunnels is done by the ESP data plane (vpn/esp), not here.
//
// Kernel access goes through Kernel: Netlink programs the kernel (optionally in another network
// namespace), Fake records what was applied for unit tests.
package nft

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Table is the name of the router's table (family inet).
const Table = "meshroot"

// Counter comments: rules with these comments count what the policy drops.
const (
	CommentInputDrop   = "input: drop the rest"
	CommentForwardDrop = "forward: drop the rest"
)

// Rule is one rule: all the set matches must hold, then the verdict applies.
type Rule struct {
	// Comment names the rule (kept in the kernel as the rule's comment).
	Comment string
	// IIF and OIF match the input/output interface name exactly; IIFPrefix and OIFPrefix match
	// names starting with the prefix (nft's "mrtun*").
	IIF, OIF             string
	IIFPrefix, OIFPrefix string
	// NFProto is "", "ipv4" or "ipv6".
	NFProto string
	// CtState matches any of the conntrack states: "invalid", "established", "related", "new".
	CtState []string
	// L4Proto is "", "tcp", "udp", "icmp" or "icmpv6".
	L4Proto string
	// SAddr matches the source address (IPv4 or IPv6; implies NFProto).
	SAddr netip.Addr
	// SPort and DPort match the transport ports (0: any); they need L4Proto tcp or udp.
	SPort, DPort uint16
	// ICMPv6Type matches the ICMPv6 type when HasICMPv6Type.
	ICMPv6Type    uint8
	HasICMPv6Type bool
	// Verdict is "accept", "drop", "masquerade" or "jump" (to the regular chain Target);
	// Counter counts matching packets.
	Verdict string
	Target  string
	Counter bool
}

// Chain is a chain of the table: a base chain (with a Hook) or a regular chain (Hook "",
// reached by jumps; when its rules are done, the calling chain continues).
type Chain struct {
	Name string
	// Type is "filter" or "nat"; Hook "prerouting", "input", "forward", "output" or
	// "postrouting"; Priority the hook priority (filter 0, srcnat 100). All empty for a
	// regular chain.
	Type, Hook string
	Priority   int
	// Policy is "accept" or "drop" (base chains).
	Policy string
	Rules  []Rule
}

// Chain returns the chain named name.
func (rs Ruleset) Chain(name string) (Chain, bool) {
	for _, c := range rs.Chains {
		if c.Name == name {
			return c, true
		}
	}
	return Chain{}, false
}

// Ruleset is the whole table.
type Ruleset struct {
	Table  string
	Chains []Chain
}

var ctStates = map[string]uint32{"invalid": 1, "established": 2, "related": 4, "new": 8}

// Validate checks that every rule can be programmed.
func (rs Ruleset) Validate() error {
	if rs.Table == "" {
		return errors.New("nft: table name is empty")
	}
	regular := map[string]bool{}
	for _, c := range rs.Chains {
		if c.Hook == "" {
			regular[c.Name] = true
		}
	}
	for _, c := range rs.Chains {
		if err := c.validate(); err != nil {
			return err
		}
		for i, r := range c.Rules {
			if r.Verdict == "jump" && !regular[r.Target] {
				return fmt.Errorf("nft: chain %s rule %d (%s): jump to %q: no such regular chain", c.Name, i, r.Comment, r.Target)
			}
		}
	}
	return nil
}

func (c Chain) validate() error {
	if c.Name == "" || len(c.Name) > 64 {
		return fmt.Errorf("nft: chain name %q", c.Name)
	}
	if c.Hook == "" {
		if c.Type != "" || c.Policy != "" || c.Priority != 0 {
			return fmt.Errorf("nft: regular chain %s: no type, priority or policy", c.Name)
		}
	} else {
		switch c.Type {
		case "filter", "nat":
		default:
			return fmt.Errorf("nft: chain %s: type %q: want filter or nat", c.Name, c.Type)
		}
		switch c.Hook {
		case "prerouting", "input", "forward", "output", "postrouting":
		default:
			return fmt.Errorf("nft: chain %s: hook %q", c.Name, c.Hook)
		}
		if c.Policy != "accept" && c.Policy != "drop" {
			return fmt.Errorf("nft: chain %s: policy %q: want accept or drop", c.Name, c.Policy)
		}
	}
	for i, r := range c.Rules {
		if err := r.validate(); err != nil {
			return fmt.Errorf("nft: chain %s rule %d (%s): %w", c.Name, i, r.Comment, err)
		}
	}
	return nil
}

func (r Rule) validate() error {
	for _, n := range []string{r.IIF, r.OIF, r.IIFPrefix, r.OIFPrefix} {
		if len(n) > 15 {
			return fmt.Errorf("interface name %q: longer than 15 bytes", n)
		}
	}
	if r.IIF != "" && r.IIFPrefix != "" || r.OIF != "" && r.OIFPrefix != "" {
		return errors.New("both an exact and a prefix interface match")
	}
	switch r.NFProto {
	case "", "ipv4", "ipv6":
	default:
		return fmt.Errorf("nfproto %q", r.NFProto)
	}
	if r.SAddr.IsValid() {
		fam := "ipv4"
		if r.SAddr.Is6() && !r.SAddr.Is4In6() {
			fam = "ipv6"
		}
		if r.NFProto != "" && r.NFProto != fam {
			return fmt.Errorf("source %s is not %s", r.SAddr, r.NFProto)
		}
	}
	for _, s := range r.CtState {
		if _, ok := ctStates[s]; !ok {
			return fmt.Errorf("ct state %q", s)
		}
	}
	switch r.L4Proto {
	case "", "tcp", "udp", "icmp", "icmpv6":
	default:
		return fmt.Errorf("l4proto %q", r.L4Proto)
	}
	if (r.SPort != 0 || r.DPort != 0) && r.L4Proto != "tcp" && r.L4Proto != "udp" {
		return errors.New("ports need l4proto tcp or udp")
	}
	if r.HasICMPv6Type && r.L4Proto != "icmpv6" {
		return errors.New("an ICMPv6 type needs l4proto icmpv6")
	}
	switch r.Verdict {
	case "accept", "drop", "masquerade":
		if r.Target != "" {
			return errors.New("a jump target without the jump verdict")
		}
	case "jump":
		if r.Target == "" {
			return errors.New("jump without a target")
		}
	default:
		return fmt.Errorf("verdict %q", r.Verdict)
	}
	return nil
}

// String renders the rule in nft's syntax (for logs, tests and people).
func (r Rule) String() string {
	var f []string
	if r.IIF != "" {
		f = append(f, fmt.Sprintf("iifname %q", r.IIF))
	}
	if r.IIFPrefix != "" {
		f = append(f, fmt.Sprintf("iifname %q", r.IIFPrefix+"*"))
	}
	if r.OIF != "" {
		f = append(f, fmt.Sprintf("oifname %q", r.OIF))
	}
	if r.OIFPrefix != "" {
		f = append(f, fmt.Sprintf("oifname %q", r.OIFPrefix+"*"))
	}
	if r.NFProto != "" && !r.SAddr.IsValid() {
		f = append(f, "meta nfproto "+r.NFProto)
	}
	if len(r.CtState) > 0 {
		f = append(f, "ct state "+strings.Join(r.CtState, ","))
	}
	if r.SAddr.IsValid() {
		if r.SAddr.Unmap().Is4() {
			f = append(f, "ip saddr "+r.SAddr.Unmap().String())
		} else {
			f = append(f, "ip6 saddr "+r.SAddr.String())
		}
	}
	if r.L4Proto != "" && r.SPort == 0 && r.DPort == 0 && !r.HasICMPv6Type {
		f = append(f, "meta l4proto "+r.L4Proto)
	}
	if r.SPort != 0 {
		f = append(f, fmt.Sprintf("%s sport %d", r.L4Proto, r.SPort))
	}
	if r.DPort != 0 {
		f = append(f, fmt.Sprintf("%s dport %d", r.L4Proto, r.DPort))
	}
	if r.HasICMPv6Type {
		f = append(f, fmt.Sprintf("icmpv6 type %d", r.ICMPv6Type))
	}
	if r.Counter {
		f = append(f, "counter")
	}
	f = append(f, r.Verdict)
	if r.Verdict == "jump" {
		f = append(f, r.Target)
	}
	return strings.Join(f, " ")
}

// String renders the ruleset like `nft list table`.
func (rs Ruleset) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", rs.Table)
	for _, c := range rs.Chains {
		fmt.Fprintf(&b, "\tchain %s {\n", c.Name)
		if c.Hook != "" {
			fmt.Fprintf(&b, "\t\ttype %s hook %s priority %d; policy %s;\n", c.Type, c.Hook, c.Priority, c.Policy)
		}
		for _, r := range c.Rules {
			fmt.Fprintf(&b, "\t\t%s", r)
			if r.Comment != "" {
				fmt.Fprintf(&b, " comment %q", r.Comment)
			}
			b.WriteByte('\n')
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// Config is what the firewall needs to know about the router.
type Config struct {
	// WAN is the WAN interface; LAN the LAN bridge.
	WAN, LAN string
	// TunnelPrefix is the name prefix of the VPN's TUN devices ("" when there is no VPN).
	TunnelPrefix string
	// IKEPeers are the concentrator endpoints' outside addresses: UDP 500 and 4500 from them
	// are accepted on the WAN.
	IKEPeers []netip.Addr
}

// Validate checks the interface names.
func (c Config) Validate() error {
	if c.WAN == "" || c.LAN == "" {
		return errors.New("nft: WAN and LAN interfaces are required")
	}
	if c.WAN == c.LAN {
		return fmt.Errorf("nft: WAN and LAN are both %q", c.WAN)
	}
	for _, n := range []string{c.WAN, c.LAN, c.TunnelPrefix} {
		if len(n) > 15 || strings.ContainsAny(n, "*/ \x00") {
			return fmt.Errorf("nft: interface name %q: want at most 15 bytes, no '*', '/', space", n)
		}
	}
	for _, p := range c.IKEPeers {
		if !p.IsValid() || p.IsUnspecified() || p.IsMulticast() {
			return fmt.Errorf("nft: IKE peer %v: want a unicast address", p)
		}
	}
	return nil
}

// Build returns the router's ruleset (see the package documentation for the policy).
func Build(c Config) (Ruleset, error) {
	if err := c.Validate(); err != nil {
		return Ruleset{}, err
	}
	peers := c.IKEPeers

	in := []Rule{
		{Comment: "input: replies", CtState: []string{"established", "related"}, Verdict: "accept"},
		{Comment: "input: invalid", CtState: []string{"invalid"}, Verdict: "drop"},
		{Comment: "input: loopback", IIF: "lo", Verdict: "accept"},
		{Comment: "input: LAN", IIF: c.LAN, Verdict: "accept"},
	}
	if c.TunnelPrefix != "" {
		in = append(in, Rule{Comment: "input: tunnels (BGP)", IIFPrefix: c.TunnelPrefix, Verdict: "accept"})
	}
	in = append(in, Rule{Comment: "input: from the WAN", IIF: c.WAN, Verdict: "jump", Target: ChainWANIn},
		Rule{Comment: CommentInputDrop, Counter: true, Verdict: "drop"})
	rs := Ruleset{Table: Table, Chains: []Chain{
		{Name: "input", Type: "filter", Hook: "input", Priority: 0, Policy: "drop", Rules: in},
		WANIn(peers),
	}}
	fwd := []Rule{
		{Comment: "forward: replies", CtState: []string{"established", "related"}, Verdict: "accept"},
		{Comment: "forward: invalid", CtState: []string{"invalid"}, Verdict: "drop"},
		{Comment: "forward: LAN to WAN", IIF: c.LAN, OIF: c.WAN, Verdict: "accept"},
		{Comment: "forward: LAN to LAN", IIF: c.LAN, OIF: c.LAN, Verdict: "accept"},
	}
	if c.TunnelPrefix != "" {
		fwd = append(fwd,
			Rule{Comment: "forward: LAN to tunnels", IIF: c.LAN, OIFPrefix: c.TunnelPrefix, Verdict: "accept"},
			Rule{Comment: "forward: tunnels to LAN", IIFPrefix: c.TunnelPrefix, OIF: c.LAN, Verdict: "accept"},
		)
	}
	fwd = append(fwd, Rule{Comment: CommentForwardDrop, Counter: true, Verdict: "drop"})
	rs.Chains = append(rs.Chains,
		Chain{Name: "forward", Type: "filter", Hook: "forward", Priority: 0, Policy: "drop", Rules: fwd},
		Chain{Name: "postrouting", Type: "nat", Hook: "postrouting", Priority: 100, Policy: "accept", Rules: []Rule{
			{Comment: "nat: masquerade to the WAN", OIF: c.WAN, NFProto: "ipv4", Verdict: "masquerade"},
		}})
	return rs, rs.Validate()
}

// ChainWANIn is the regular chain holding what the WAN may send to the router itself: it
// changes with the profile (the concentrator's endpoints), and is replaced on its own
// (Kernel.UpdateChain) so that the base chains, their hooks and NAT stay untouched.
const ChainWANIn = "wan_in"

// WANIn returns the wan_in chain: DHCP client replies, IKE/NAT-T from the peers, IPv6
// neighbour discovery.
func WANIn(peers []netip.Addr) Chain {
	peers = slices.Clone(peers)
	slices.SortFunc(peers, func(a, b netip.Addr) int { return a.Compare(b) })
	peers = slices.Compact(peers)
	in := []Rule{{Comment: "wan: DHCP client replies", NFProto: "ipv4", L4Proto: "udp", SPort: 67, DPort: 68, Verdict: "accept"}}
	for _, p := range peers {
		p = p.Unmap()
		fam := "ipv4"
		if p.Is6() {
			fam = "ipv6"
		}
		for _, port := range []uint16{500, 4500} {
			in = append(in, Rule{Comment: fmt.Sprintf("wan: IKE from %s", p), NFProto: fam, SAddr: p, L4Proto: "udp", DPort: port, Verdict: "accept"})
		}
	}
	// Neighbour discovery (router/neighbour solicitation and advertisement, redirect).
	for _, t := range []uint8{133, 134, 135, 136, 137} {
		in = append(in, Rule{Comment: "wan: IPv6 neighbour discovery", NFProto: "ipv6", L4Proto: "icmpv6", ICMPv6Type: t, HasICMPv6Type: true, Verdict: "accept"})
	}
	return Chain{Name: ChainWANIn, Rules: in}
}
