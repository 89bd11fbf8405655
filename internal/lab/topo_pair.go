package lab

import (
	"fmt"
	"net/netip"
)

// PairAddrs is the addressing plan of a PeerPair (and StrongSwanPair). A is "ours" (the site,
// the shared/notes cgw), B the peer (the notes' aws). Addresses without a length are host
// addresses; prefixes have one.
type PairAddrs struct {
	// Outside (veth A:out0 <-> B:out0): 198.51.100.0/24 and 2001:db8:100::/64.
	AOutside4, BOutside4, AOutside6, BOutside6 string
	// Inside (tunnel) addresses with their /30 and /126.
	AInside4, BInside4, AInside6, BInside6 string
	// LAN prefixes, the gateway address on each side's lan0, and the LAN host behind it.
	ALAN4, ALAN6, BLAN4, BLAN6                 string
	AGateway4, AGateway6, BGateway4, BGateway6 string
	AHost4, AHost6, BHost4, BHost6             string
}

// DefaultPairAddrs is the plan of the shared/notes lab, plus IPv6.
var DefaultPairAddrs = PairAddrs{
	AOutside4: "198.51.100.2", BOutside4: "198.51.100.1",
	AOutside6: "2001:db8:100::2", BOutside6: "2001:db8:100::1",
	AInside4: "169.254.10.2/30", BInside4: "169.254.10.1/30",
	AInside6: "fd00:a9fe:a::2/126", BInside6: "fd00:a9fe:a::1/126",
	ALAN4: "192.168.1.0/24", ALAN6: "fd00:c0a8:1::/64",
	BLAN4: "10.0.0.0/16", BLAN6: "fd00:a00::/64",
	AGateway4: "192.168.1.1", AGateway6: "fd00:c0a8:1::1",
	BGateway4: "10.0.0.1", BGateway6: "fd00:a00::1",
	AHost4: "192.168.1.10", AHost6: "fd00:c0a8:1::10",
	BHost4: "10.0.0.10", BHost6: "fd00:a00::10",
}

// PeerPairConfig configures NewPeerPair.
type PeerPairConfig struct {
	// Charon, if set, runs strongSwan in B. Connections with no LocalAddrs/RemoteAddrs get B's
	// and A's outside addresses (IPv6 ones when OutsideIPv6); nil TunAddrs get BInside4 and
	// BInside6. After it starts, B routes A's LAN prefixes into ipsec0.
	Charon *CharonConfig
	// OutsideIPv6 makes defaulted connection addresses IPv6 (IKE and ESP-in-UDP over IPv6).
	OutsideIPv6 bool
	// NoLANHosts skips the LAN host namespaces (ALANHost, BLANHost); lan0 still exists on
	// both sides with the gateway addresses.
	NoLANHosts bool
}

// PeerPair is namespace A (ours: empty apart from its addresses; the test runs our code there)
// and namespace B (optionally strongSwan), joined by a veth with IPv4 and IPv6 outside
// addresses, each with a LAN behind it: lan0 carries the gateway address and leads to a LAN host
// namespace (AHost, BHost) whose default routes point at the gateway.
//
//	AHost ── lan0 [A] out0 ══ 198.51.100.0/24, 2001:db8:100::/64 ══ out0 [B] lan0 ── BHost
//	192.168.1.10               (strongSwan ipsec0 169.254.10.1/30)             10.0.0.10
type PeerPair struct {
	A, B         *NS
	AHost, BHost *NS // nil with NoLANHosts
	Addrs        PairAddrs
	Charon       *Charon // B's strongSwan, or nil
	lab          *Lab
}

// NewPeerPair builds a PeerPair in l.
func NewPeerPair(l *Lab, cfg PeerPairConfig) (*PeerPair, error) {
	p := &PeerPair{Addrs: DefaultPairAddrs, lab: l}
	if err := p.build(cfg.NoLANHosts); err != nil {
		return nil, err
	}
	if cfg.Charon != nil {
		cc := *cfg.Charon
		if cc.Name == "" {
			cc.Name = "peer"
		}
		cc.Conns = append([]Conn(nil), cc.Conns...)
		for i := range cc.Conns {
			p.defaultConnAddrs(&cc.Conns[i], false, cfg.OutsideIPv6)
		}
		if cc.TunAddrs == nil {
			cc.TunAddrs = []string{p.Addrs.BInside4, p.Addrs.BInside6}
		}
		c, err := l.StartCharon(p.B, cc)
		if err != nil {
			return nil, err
		}
		p.Charon = c
		if err := p.RouteLANVia(p.B, TunDevice, ""); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// defaultConnAddrs fills in outside addresses of a connection on side A (ours) or B.
func (p *PeerPair) defaultConnAddrs(cn *Conn, sideA, v6 bool) {
	local, remote := p.Addrs.BOutside4, p.Addrs.AOutside4
	if v6 {
		local, remote = p.Addrs.BOutside6, p.Addrs.AOutside6
	}
	if sideA {
		local, remote = remote, local
	}
	if len(cn.LocalAddrs) == 0 {
		cn.LocalAddrs = []string{local}
	}
	if len(cn.RemoteAddrs) == 0 {
		cn.RemoteAddrs = []string{remote}
	}
}

func (p *PeerPair) build(noHosts bool) error {
	l, a := p.lab, p.Addrs
	var err error
	if p.A, err = l.NewNS("a"); err != nil {
		return err
	}
	if p.B, err = l.NewNS("b"); err != nil {
		return err
	}
	if err := l.Veth(p.A, "out0", p.B, "out0"); err != nil {
		return err
	}
	if err := p.A.AddAddr("out0", a.AOutside4+"/24", a.AOutside6+"/64"); err != nil {
		return err
	}
	if err := p.B.AddAddr("out0", a.BOutside4+"/24", a.BOutside6+"/64"); err != nil {
		return err
	}
	sides := []struct {
		gw               *NS
		host             **NS
		name             string
		lan4, lan6       string
		gw4, gw6, h4, h6 string
	}{
		{p.A, &p.AHost, "ahost", a.ALAN4, a.ALAN6, a.AGateway4, a.AGateway6, a.AHost4, a.AHost6},
		{p.B, &p.BHost, "bhost", a.BLAN4, a.BLAN6, a.BGateway4, a.BGateway6, a.BHost4, a.BHost6},
	}
	for _, s := range sides {
		b4, b6 := prefixLen(s.lan4), prefixLen(s.lan6)
		if noHosts {
			if err := l.Veth(s.gw, "lan0", s.gw, "lan0-peer"); err != nil {
				return err
			}
		} else {
			h, err := l.NewNS(s.name)
			if err != nil {
				return err
			}
			*s.host = h
			if err := l.Veth(s.gw, "lan0", h, "eth0"); err != nil {
				return err
			}
			if err := h.AddAddr("eth0", fmt.Sprintf("%s/%d", s.h4, b4), fmt.Sprintf("%s/%d", s.h6, b6)); err != nil {
				return err
			}
			if err := h.AddRoute(Route{Dst: "default", Via: s.gw4}); err != nil {
				return err
			}
			if err := h.AddRoute(Route{Dst: "default6", Via: s.gw6}); err != nil {
				return err
			}
		}
		if err := s.gw.AddAddr("lan0", fmt.Sprintf("%s/%d", s.gw4, b4), fmt.Sprintf("%s/%d", s.gw6, b6)); err != nil {
			return err
		}
	}
	return nil
}

// RouteLANVia routes the other side's LAN prefixes in ns (p.A or p.B) out of dev, e.g. ipsec0
// or our TUN. With via "" both families go to dev (TUN devices need no gateway); with a gateway
// address only the prefix of via's family is routed (use RouteLANViaGateways for both).
func (p *PeerPair) RouteLANVia(ns *NS, dev, via string) error {
	if via == "" {
		return p.RouteLANViaGateways(ns, dev, "", "")
	}
	if a, err := netip.ParseAddr(via); err == nil && a.Is6() {
		return p.routeLAN(ns, dev, "", via, false, true)
	}
	return p.routeLAN(ns, dev, via, "", true, false)
}

// RouteLANViaGateways routes the other side's IPv4 LAN prefix via via4 and its IPv6 prefix via
// via6, out of dev ("" gateways: directly to dev).
func (p *PeerPair) RouteLANViaGateways(ns *NS, dev, via4, via6 string) error {
	return p.routeLAN(ns, dev, via4, via6, true, true)
}

func (p *PeerPair) routeLAN(ns *NS, dev, via4, via6 string, v4, v6 bool) error {
	lan4, lan6 := p.Addrs.ALAN4, p.Addrs.ALAN6
	if ns == p.A {
		lan4, lan6 = p.Addrs.BLAN4, p.Addrs.BLAN6
	}
	if v4 {
		if err := ns.AddRoute(Route{Dst: lan4, Dev: dev, Via: via4}); err != nil {
			return err
		}
	}
	if v6 {
		if err := ns.AddRoute(Route{Dst: lan6, Dev: dev, Via: via6}); err != nil {
			return err
		}
	}
	return nil
}

// AConn returns c with its outside addresses defaulted for side A (ours): A's address local,
// B's remote (IPv6 when v6). Handy to build the strongSwan config of a strongSwan A side, or
// to know what our client should dial.
func (p *PeerPair) AConn(c Conn, v6 bool) Conn {
	p.defaultConnAddrs(&c, true, v6)
	return c
}

func prefixLen(cidr string) int {
	pf, err := netip.ParsePrefix(cidr)
	if err != nil {
		panic(fmt.Sprintf("lab: bad built-in prefix %q", cidr))
	}
	return pf.Bits()
}
