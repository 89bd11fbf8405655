package lab

import (
	"context"
	"net/netip"
	"time"
)

// StrongSwanPairConfig configures NewStrongSwanPair. The zero value is the shared/notes lab
// (AES-256-GCM, DH 14, PSK, DPD 10 s, BGP 65000 ↔ 64512 with timers 10 30).
type StrongSwanPairConfig struct {
	// IKEProposal and ESPProposal (defaults DefaultIKEProposal, DefaultESPProposal).
	IKEProposal, ESPProposal string
	// PSK (default "lab-psk-0123456789abcdef").
	PSK string
	// OutsideIPv6 runs IKE and ESP-in-UDP over the IPv6 outside addresses.
	OutsideIPv6 bool
	// NoBGP skips FRR; the LAN prefixes are then routed statically into ipsec0.
	NoBGP bool
	// AASN and BASN (defaults 65000 and 64512).
	AASN, BASN uint32
	// Log sets both charons' log levels.
	Log LogLevels
}

// StrongSwanPair is a PeerPair with strongSwan on both sides (A initiates: start_action=start,
// dpd_action=restart, keyingtries=0; B responds: start_action=none, dpd_action=clear) and FRR
// bgpd on both sides peering over the inside addresses (IPv4 /30 for IPv4 unicast, IPv6 /126 for
// IPv6 unicast), each advertising its LAN prefix: exactly the notes' cgw ↔ aws lab. It is the
// throughput baseline "strongSwan ↔ strongSwan".
type StrongSwanPair struct {
	*PeerPair
	ACharon, BCharon *Charon
	AFRR, BFRR       *FRR // nil with NoBGP
	// ConnName is the connection (and child) name on both sides: "tun1".
	ConnName string
}

// NewStrongSwanPair builds the pair and starts everything; use WaitUp to wait for the tunnel and
// BGP.
func NewStrongSwanPair(l *Lab, cfg StrongSwanPairConfig) (*StrongSwanPair, error) {
	psk := orStr(cfg.PSK, "lab-psk-0123456789abcdef")
	ike := orList(nonEmpty(cfg.IKEProposal), DefaultIKEProposal)
	esp := orList(nonEmpty(cfg.ESPProposal), DefaultESPProposal)
	conn := Conn{
		Name: "tun1", PSK: psk, Proposals: ike,
		RekeyTime: 28260 * time.Second, OverTime: 540 * time.Second, RandTime: 540 * time.Second,
		DPDDelay: 10 * time.Second,
	}
	child := Child{ESPProposals: esp, LifeTime: 3600 * time.Second, RekeyTime: 3060 * time.Second, RandTime: 540 * time.Second}
	bConn := conn
	bChild := child
	bChild.DPDAction, bChild.StartAction, bChild.CloseAction = "clear", "none", "none"
	bConn.Children = []Child{bChild}
	bConn.KeyingTries = 1
	pp, err := NewPeerPair(l, PeerPairConfig{
		Charon:      &CharonConfig{Name: "aws", Conns: []Conn{bConn}, Log: cfg.Log},
		OutsideIPv6: cfg.OutsideIPv6,
	})
	if err != nil {
		return nil, err
	}
	p := &StrongSwanPair{PeerPair: pp, BCharon: pp.Charon, ConnName: "tun1"}
	aChild := child
	aChild.DPDAction, aChild.StartAction, aChild.CloseAction = "restart", "start", "none"
	aConn := conn
	aConn.Children = []Child{aChild}
	aConn.KeyingTries = -1
	aConn = pp.AConn(aConn, cfg.OutsideIPv6)
	p.ACharon, err = l.StartCharon(pp.A, CharonConfig{
		Name: "cgw", Conns: []Conn{aConn}, Log: cfg.Log,
		TunAddrs: []string{pp.Addrs.AInside4, pp.Addrs.AInside6},
	})
	if err != nil {
		return nil, err
	}
	a := pp.Addrs
	if cfg.NoBGP {
		if err := pp.RouteLANVia(pp.A, TunDevice, ""); err != nil {
			return nil, err
		}
		return p, nil
	}
	// B already routes A's LAN statically into ipsec0 (PeerPair); BGP will add the same
	// prefixes — remove the static ones so the BGP routes are the ones in use.
	for _, dst := range []string{a.ALAN4, a.ALAN6} {
		if err := pp.B.DelRoute(Route{Dst: dst, Dev: TunDevice}); err != nil {
			return nil, err
		}
	}
	aASN, bASN := cfg.AASN, cfg.BASN
	if aASN == 0 {
		aASN = 65000
	}
	if bASN == 0 {
		bASN = 64512
	}
	p.BFRR, err = l.StartFRR(pp.B, FRRConfig{
		Name: "aws", ASN: bASN, RouterID: addrOf(a.BInside4),
		Neighbors: []BGPNeighbor{
			{Addr: addrOf(a.AInside4), RemoteAS: aASN},
			{Addr: addrOf(a.AInside6), RemoteAS: aASN},
		},
		Networks: []string{a.BLAN4, a.BLAN6},
	})
	if err != nil {
		return nil, err
	}
	p.AFRR, err = l.StartFRR(pp.A, FRRConfig{
		Name: "cgw", ASN: aASN, RouterID: addrOf(a.AInside4),
		Neighbors: []BGPNeighbor{
			{Addr: addrOf(a.BInside4), RemoteAS: bASN},
			{Addr: addrOf(a.BInside6), RemoteAS: bASN},
		},
		Networks: []string{a.ALAN4, a.ALAN6},
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// WaitUp waits until both charons have the IKE_SA ESTABLISHED and the CHILD_SA INSTALLED and,
// unless NoBGP, both FRRs have both sessions (IPv4 and IPv6) Established with a prefix received.
func (p *StrongSwanPair) WaitUp(ctx context.Context) error {
	for _, c := range []*Charon{p.ACharon, p.BCharon} {
		if _, err := c.WaitUp(ctx, p.ConnName); err != nil {
			return err
		}
	}
	a := p.Addrs
	if p.AFRR != nil {
		for _, w := range []struct {
			f    *FRR
			peer string
		}{{p.AFRR, a.BInside4}, {p.AFRR, a.BInside6}, {p.BFRR, a.AInside4}, {p.BFRR, a.AInside6}} {
			if _, err := w.f.WaitEstablished(ctx, addrOf(w.peer), 1); err != nil {
				return err
			}
		}
	}
	return nil
}

// TunnelPIDs returns both charons' PIDs (A, B), e.g. for a CPUMeter.
func (p *StrongSwanPair) TunnelPIDs() []int { return []int{p.ACharon.PID(), p.BCharon.PID()} }

// addrOf returns the address part of "addr/len" (or addr itself).
func addrOf(cidr string) string {
	if pf, err := netip.ParsePrefix(cidr); err == nil {
		return pf.Addr().String()
	}
	return cidr
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}
