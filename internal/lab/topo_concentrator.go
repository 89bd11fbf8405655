package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// ConcentratorConfig configures NewConcentrator. The zero value is an AWS-like VPN connection:
// two endpoints, AS 64512, PSK auth, AES-256-GCM/DH 14 first, DPD 10 s with action clear,
// responder (startup action "add"), BGP with `timers 10 30` and MED 100 on tunnel 1, 200 on
// tunnel 2, VPC 10.0.0.0/16 and fd00:a00::/64, the site LAN 192.168.1.0/24 and fd00:c0a8:1::/64.
type ConcentratorConfig struct {
	// Tunnels configures endpoint 1 and endpoint 2.
	Tunnels [2]TunnelConfig
	// ASN is the concentrator's AS (default 64512); SiteASN the site's (default 65000).
	ASN, SiteASN uint32
	// VPCPrefixes are advertised by both endpoints (default 10.0.0.0/16, fd00:a00::/64). The
	// first IPv4 and first IPv6 prefix are the VPC subnet (host .10, endpoints .2 and .3).
	VPCPrefixes []string
	// SiteLANPrefixes is the site's LAN (default 192.168.1.0/24, fd00:c0a8:1::/64): the site
	// LAN namespace sits there, and static mode routes it into the tunnels.
	SiteLANPrefixes []string
	// Static is the non-BGP VPN type: no FRR; each endpoint routes SiteLANPrefixes into its
	// ipsec0, and the VPC host routes them via endpoint 1.
	Static bool
	// OutsideIPv6 makes the tunnels use the IPv6 outside addresses.
	OutsideIPv6 bool
	// Log sets the endpoints' charon log levels.
	Log LogLevels
	// BGPDebug turns on FRR's neighbor-event and update debugging.
	BGPDebug bool
	// ExternalSite leaves the site to the caller: no site or site LAN namespace is made (Site
	// and SiteLAN stay nil, StartSiteStrongSwan refuses), and the caller plugs its own site's
	// uplink into the internet namespace with AttachSite — a QEMU router's WAN cable, say. The
	// endpoints still expect the site at Addrs.SiteWAN4 (or SiteWAN6) behind the gateway
	// Addrs.SiteGateway4/6, and the VPC still routes SiteLANPrefixes via endpoint 1.
	ExternalSite bool
}

// TunnelConfig configures one endpoint of the concentrator (AWS TunnelOptions, roughly).
type TunnelConfig struct {
	// PSK (default "tunnel1-psk-lab-0123456789" / "tunnel2-psk-lab-0123456789").
	PSK string
	// Inside4 is the inside IPv4 /30 (default 169.254.10.0/30, 169.254.11.0/30): the
	// concentrator takes the first host address, the site the second. Inside6 the /126
	// (default fd00:a9fe:10::/126, fd00:a9fe:11::/126), same rule.
	Inside4, Inside6 string
	// IKEProposals and ESPProposals (default: AWS's full default lists, GCM first).
	IKEProposals, ESPProposals []string
	// MED set on routes advertised to the site (defaults 100 and 200: AWS marks its primary
	// tunnel with the lower MED). Give both tunnels the same value for equal paths (ECMP).
	MED uint32
	// MaxPrefix from the site (AWS: 100 per VPN connection; 0: none).
	MaxPrefix int
	// StartAction "start" makes the endpoint initiate (AWS startup action "start"); default
	// "none" (AWS "add": wait for the site).
	StartAction string
	// DPDAction (default "clear"; "restart" or "none" as AWS).
	DPDAction string
	// DPDDelay (default 10 s).
	DPDDelay time.Duration
	// IKELifetime (default 28800 s) and ChildLifetime (3600 s); RekeyMargin (540 s) and
	// RekeyFuzz (100 % of the margin, i.e. RandTime = margin).
	IKELifetime, ChildLifetime, RekeyMargin, RekeyFuzz time.Duration
	// ReplayWindow (default 1024).
	ReplayWindow int
	// Disabled leaves this endpoint's charon and FRR stopped (start them with
	// Endpoint.Start).
	Disabled bool
	// ModifyCharon, if set, can change the generated charon configuration (retransmits, log
	// levels, extra connection options...) before it starts.
	ModifyCharon func(*CharonConfig)
	// ModifyFRR, if set, can change the generated FRR configuration.
	ModifyFRR func(*FRRConfig)
}

// AWS's default proposal lists (Site-to-Site VPN tunnel options, all allowed values), GCM
// first as our notes' peer prefers.
var (
	AWSIKEProposals = []string{
		"aes256gcm16-prfsha256-modp2048", "aes128gcm16-prfsha256-modp2048",
		"aes256-sha256-modp2048", "aes128-sha256-modp2048", "aes256-sha1-modp2048", "aes128-sha1-modp2048",
		"aes256gcm16-prfsha384-ecp384", "aes256-sha384-ecp384",
		"aes128-sha1-modp1024",
	}
	AWSESPProposals = []string{
		"aes256gcm16-modp2048", "aes128gcm16-modp2048",
		"aes256-sha256-modp2048", "aes128-sha256-modp2048", "aes256-sha1-modp2048", "aes128-sha1-modp2048",
		"aes128-sha1-modp1024",
	}
)

// ConcentratorAddrs is the fixed outside addressing of a Concentrator.
type ConcentratorAddrs struct {
	// Site WAN (site:wan0) and its gateway in the internet namespace.
	SiteWAN4, SiteWAN6, SiteGateway4, SiteGateway6 string
	// Site LAN gateway (site:lan0) and the LAN host (sitelan:eth0).
	SiteLANGateway4, SiteLANGateway6, SiteLANHost4, SiteLANHost6 string
	// Endpoint outside addresses (endpoint i: index i-1).
	EndpointOutside4, EndpointOutside6 [2]string
	// VPC host and the endpoints' addresses in the VPC subnet.
	VPCHost4, VPCHost6 string
	EndpointVPC4       [2]string
	EndpointVPC6       [2]string
	// WANHost4/6 are "somewhere on the internet" (on the internet namespace's lo): what a
	// site reaches through NAT rather than through the VPN.
	WANHost4, WANHost6 string
}

// Tunnel is what the site's client needs to dial one tunnel.
type Tunnel struct {
	Name         string // "tunnel1", "tunnel2": the connection name in the endpoint's charon
	Outside      string // endpoint outside address (IPv4, or IPv6 with OutsideIPv6)
	SiteOutside  string // the site's WAN address the endpoint expects
	PSK          string
	Inside4      string // /30, e.g. 169.254.10.0/30
	Inside6      string // /126
	AWSInside4   string // concentrator inside address (no length)
	AWSInside6   string
	SiteInside4  string // the site's inside address (no length), for its TUN
	SiteInside6  string
	ASN, SiteASN uint32
	MED          uint32
	IKEProposals []string
	ESPProposals []string
	DPDDelay     time.Duration
}

// Endpoint is one concentrator endpoint (a namespace with its charon and FRR).
type Endpoint struct {
	NS     *NS
	Charon *Charon // nil until started (Disabled)
	FRR    *FRR    // nil in static mode or until started
	Tunnel Tunnel
	// PathDev is the interface in the internet namespace that leads to this endpoint; taking
	// it down cuts the path to this endpoint only.
	PathDev string

	charonCfg    CharonConfig
	frrCfg       *FRRConfig
	staticRoutes []string // static mode: prefixes routed into ipsec0
	lab          *Lab
}

// Concentrator is the AWS-like VPN concentrator lab with a site in front of it:
//
//	sitelan ── lan0 [site] wan0 ── [internet] ── out0 [ep1: charon+FRR] vpc0 ──┐
//	192.168.1.10   192.0.2.2/30          └───── out0 [ep2: charon+FRR] vpc0 ──┴── br0 [vpc] 10.0.0.10
//
// The site namespace is empty apart from its addresses and default routes: our client runs
// there (NS.Do). With ExternalSite there is no site or site LAN namespace: the caller plugs its
// own site (a QEMU router's WAN, firmware/sitelab) into the internet namespace with AttachSite. The endpoints iBGP-peer with each other across the VPC
// bridge (next-hop-self), so the VPC's return traffic follows whichever tunnel still has the
// site's routes. Build it with NewConcentrator; Lab.Close tears it down.
type Concentrator struct {
	Site, SiteLAN, Internet, VPC *NS
	Endpoints                    [2]*Endpoint
	Addrs                        ConcentratorAddrs
	Config                       ConcentratorConfig
	lab                          *Lab
}

// DefaultConcentratorAddrs is the outside addressing plan.
var DefaultConcentratorAddrs = ConcentratorAddrs{
	SiteWAN4: "192.0.2.2", SiteWAN6: "2001:db8:1::2", SiteGateway4: "192.0.2.1", SiteGateway6: "2001:db8:1::1",
	SiteLANGateway4: "192.168.1.1", SiteLANGateway6: "fd00:c0a8:1::1",
	SiteLANHost4: "192.168.1.10", SiteLANHost6: "fd00:c0a8:1::10",
	EndpointOutside4: [2]string{"198.51.100.2", "203.0.113.2"},
	EndpointOutside6: [2]string{"2001:db8:11::2", "2001:db8:12::2"},
	VPCHost4:         "10.0.0.10", VPCHost6: "fd00:a00::10",
	EndpointVPC4: [2]string{"10.0.0.2", "10.0.0.3"},
	EndpointVPC6: [2]string{"fd00:a00::2", "fd00:a00::3"},
	WANHost4:     "198.18.0.1", WANHost6: "2001:db8:ff::1",
}

// insideHosts returns the concentrator (first) and site (second) host addresses of a /30 or /126.
func insideHosts(cidr string) (aws, site string, err error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return "", "", err
	}
	p = p.Masked()
	if (p.Addr().Is4() && p.Bits() != 30) || (p.Addr().Is6() && p.Bits() != 126) {
		return "", "", fmt.Errorf("want a /30 (IPv4) or /126 (IPv6), got /%d", p.Bits())
	}
	a := p.Addr().Next()
	return a.String(), a.Next().String(), nil
}

func (c *ConcentratorConfig) defaults() error {
	if c.ASN == 0 {
		c.ASN = 64512
	}
	if c.SiteASN == 0 {
		c.SiteASN = 65000
	}
	if len(c.VPCPrefixes) == 0 {
		c.VPCPrefixes = []string{"10.0.0.0/16", "fd00:a00::/64"}
	}
	if len(c.SiteLANPrefixes) == 0 {
		c.SiteLANPrefixes = []string{"192.168.1.0/24", "fd00:c0a8:1::/64"}
	}
	for _, p := range append(append([]string(nil), c.VPCPrefixes...), c.SiteLANPrefixes...) {
		if _, err := netip.ParsePrefix(p); err != nil {
			return fmt.Errorf("concentrator config: prefix %q: %w", p, err)
		}
	}
	for i := range c.Tunnels {
		t := &c.Tunnels[i]
		n := i + 1
		if t.PSK == "" {
			t.PSK = fmt.Sprintf("tunnel%d-psk-lab-0123456789", n)
		}
		if t.Inside4 == "" {
			t.Inside4 = fmt.Sprintf("169.254.%d.0/30", 9+n)
		}
		if t.Inside6 == "" {
			t.Inside6 = fmt.Sprintf("fd00:a9fe:%d::/126", 9+n)
		}
		for _, in := range []string{t.Inside4, t.Inside6} {
			if _, _, err := insideHosts(in); err != nil {
				return fmt.Errorf("concentrator config: Tunnels[%d] inside %q: %w", i, in, err)
			}
		}
		if len(t.IKEProposals) == 0 {
			t.IKEProposals = AWSIKEProposals
		}
		if len(t.ESPProposals) == 0 {
			t.ESPProposals = AWSESPProposals
		}
		if t.MED == 0 {
			t.MED = uint32(100 * n)
		}
		if t.DPDAction == "" {
			t.DPDAction = "clear"
		}
		if t.StartAction == "" {
			t.StartAction = "none"
		}
		if t.DPDDelay == 0 {
			t.DPDDelay = 10 * time.Second
		}
		if t.IKELifetime == 0 {
			t.IKELifetime = 28800 * time.Second
		}
		if t.ChildLifetime == 0 {
			t.ChildLifetime = 3600 * time.Second
		}
		if t.RekeyMargin == 0 {
			t.RekeyMargin = 540 * time.Second
		}
		if t.RekeyFuzz == 0 {
			t.RekeyFuzz = t.RekeyMargin
		}
		if t.RekeyMargin >= t.ChildLifetime || t.RekeyMargin >= t.IKELifetime {
			return fmt.Errorf("concentrator config: Tunnels[%d] RekeyMargin %v: want less than the lifetimes", i, t.RekeyMargin)
		}
	}
	return nil
}

func firstOfFamily(prefixes []string, v6 bool) (netip.Prefix, bool) {
	for _, s := range prefixes {
		p := netip.MustParsePrefix(s) // validated in defaults
		if p.Addr().Is6() == v6 {
			return p.Masked(), true
		}
	}
	return netip.Prefix{}, false
}

// NewConcentrator builds the namespaces and links, and starts each enabled endpoint's charon
// and (unless Static) FRR. It does not wait for anything the site has to do.
func NewConcentrator(l *Lab, cfg ConcentratorConfig) (*Concentrator, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	c := &Concentrator{Addrs: DefaultConcentratorAddrs, Config: cfg, lab: l}
	a := c.Addrs
	var err error
	mk := func(dst **NS, name string) {
		if err == nil {
			*dst, err = l.NewNS(name)
		}
	}
	if !cfg.ExternalSite {
		mk(&c.Site, "site")
		mk(&c.SiteLAN, "sitelan")
	}
	mk(&c.Internet, "inet")
	mk(&c.VPC, "vpc")
	var eps [2]*NS
	mk(&eps[0], "ep1")
	mk(&eps[1], "ep2")
	if err != nil {
		return nil, err
	}
	var steps []func() error
	if !cfg.ExternalSite {
		steps = c.siteSteps()
	}
	steps = append(steps,
		func() error { return c.VPC.AddBridge("br0") },
		func() error { return c.Internet.AddAddr("lo", a.WANHost4+"/32", a.WANHost6+"/128") },
	)
	vpc4, _ := firstOfFamily(cfg.VPCPrefixes, false)
	vpc6, _ := firstOfFamily(cfg.VPCPrefixes, true)
	steps = append(steps, func() error {
		return c.VPC.AddAddr("br0", fmt.Sprintf("%s/%d", a.VPCHost4, vpc4.Bits()), fmt.Sprintf("%s/%d", a.VPCHost6, vpc6.Bits()))
	})
	for i := range eps {
		i := i
		pathDev := fmt.Sprintf("ep%d", i+1)
		gw4 := netip.MustParseAddr(a.EndpointOutside4[i]).Prev().String()
		gw6 := netip.MustParseAddr(a.EndpointOutside6[i]).Prev().String()
		port := fmt.Sprintf("ep%d", i+1)
		steps = append(steps,
			func() error { return l.Veth(c.Internet, pathDev, eps[i], "out0") },
			func() error { return c.Internet.AddAddr(pathDev, gw4+"/30", gw6+"/64") },
			func() error { return eps[i].AddAddr("out0", a.EndpointOutside4[i]+"/30", a.EndpointOutside6[i]+"/64") },
			func() error { return eps[i].AddRoute(Route{Dst: "default", Via: gw4}) },
			func() error { return eps[i].AddRoute(Route{Dst: "default6", Via: gw6}) },
			func() error { return l.Veth(eps[i], "vpc0", c.VPC, port) },
			func() error { return c.VPC.SetMaster(port, "br0") },
			func() error {
				return eps[i].AddAddr("vpc0", fmt.Sprintf("%s/%d", a.EndpointVPC4[i], vpc4.Bits()), fmt.Sprintf("%s/%d", a.EndpointVPC6[i], vpc6.Bits()))
			},
		)
	}
	// The VPC host's way back to the site: endpoint 1 (which hands over to endpoint 2 over
	// iBGP when its tunnel has no route).
	for _, p := range cfg.SiteLANPrefixes {
		p := p
		via := a.EndpointVPC4[0]
		if netip.MustParsePrefix(p).Addr().Is6() {
			via = a.EndpointVPC6[0]
		}
		steps = append(steps, func() error { return c.VPC.AddRoute(Route{Dst: p, Via: via}) })
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return nil, err
		}
	}
	for i := range eps {
		ep, err := c.newEndpoint(i, eps[i])
		if err != nil {
			return nil, err
		}
		c.Endpoints[i] = ep
		if !cfg.Tunnels[i].Disabled {
			if err := ep.Start(); err != nil {
				return nil, err
			}
		}
	}
	return c, nil
}

// siteSteps build the built-in site: the site namespace on the internet's site0 and a LAN host
// namespace behind it.
func (c *Concentrator) siteSteps() []func() error {
	l, a, cfg := c.lab, c.Addrs, c.Config
	lan4, _ := firstOfFamily(cfg.SiteLANPrefixes, false)
	lan6, _ := firstOfFamily(cfg.SiteLANPrefixes, true)
	return []func() error{
		// internet <-> site
		func() error { return l.Veth(c.Internet, "site0", c.Site, "wan0") },
		func() error { return c.Internet.AddAddr("site0", a.SiteGateway4+"/30", a.SiteGateway6+"/64") },
		func() error { return c.Site.AddAddr("wan0", a.SiteWAN4+"/30", a.SiteWAN6+"/64") },
		func() error { return c.Site.AddRoute(Route{Dst: "default", Via: a.SiteGateway4}) },
		func() error { return c.Site.AddRoute(Route{Dst: "default6", Via: a.SiteGateway6}) },
		// site <-> site LAN host
		func() error { return l.Veth(c.Site, "lan0", c.SiteLAN, "eth0") },
		func() error {
			return c.Site.AddAddr("lan0", fmt.Sprintf("%s/%d", a.SiteLANGateway4, lan4.Bits()), fmt.Sprintf("%s/%d", a.SiteLANGateway6, lan6.Bits()))
		},
		func() error {
			return c.SiteLAN.AddAddr("eth0", fmt.Sprintf("%s/%d", a.SiteLANHost4, lan4.Bits()), fmt.Sprintf("%s/%d", a.SiteLANHost6, lan6.Bits()))
		},
		func() error { return c.SiteLAN.AddRoute(Route{Dst: "default", Via: a.SiteLANGateway4}) },
		func() error { return c.SiteLAN.AddRoute(Route{Dst: "default6", Via: a.SiteLANGateway6}) },
	}
}

// AttachSite plugs an external site's uplink into the internet namespace (ExternalSite): a
// veth pair from the internet's site0 — the site's gateway, Addrs.SiteGateway4/30 and
// SiteGateway6/64 — to dev in ns, which the caller addresses or bridges (to a router VM's WAN
// TAP, say). CutSiteUplink, RestoreSiteUplink and ImpairSiteUplink act on it as on the
// built-in site's link.
func (c *Concentrator) AttachSite(ns *NS, dev string) error {
	if !c.Config.ExternalSite {
		return errors.New("lab: concentrator: AttachSite needs ExternalSite (the built-in site holds site0)")
	}
	a := c.Addrs
	if err := c.lab.Veth(c.Internet, "site0", ns, dev); err != nil {
		return err
	}
	return c.Internet.AddAddr("site0", a.SiteGateway4+"/30", a.SiteGateway6+"/64")
}

func (c *Concentrator) newEndpoint(i int, ns *NS) (*Endpoint, error) {
	cfg, a, t := c.Config, c.Addrs, c.Config.Tunnels[i]
	name := fmt.Sprintf("tunnel%d", i+1)
	aws4, site4, _ := insideHosts(t.Inside4)
	aws6, site6, _ := insideHosts(t.Inside6)
	local, remote := a.EndpointOutside4[i], a.SiteWAN4
	if cfg.OutsideIPv6 {
		local, remote = a.EndpointOutside6[i], a.SiteWAN6
	}
	ep := &Endpoint{NS: ns, PathDev: fmt.Sprintf("ep%d", i+1), lab: c.lab}
	ep.Tunnel = Tunnel{
		Name: name, Outside: local, SiteOutside: remote, PSK: t.PSK,
		Inside4: t.Inside4, Inside6: t.Inside6, AWSInside4: aws4, AWSInside6: aws6,
		SiteInside4: site4, SiteInside6: site6, ASN: cfg.ASN, SiteASN: cfg.SiteASN, MED: t.MED,
		IKEProposals: t.IKEProposals, ESPProposals: t.ESPProposals, DPDDelay: t.DPDDelay,
	}
	ep.charonCfg = CharonConfig{
		Name:     name,
		TunAddrs: []string{aws4 + "/30", aws6 + "/126"},
		Log:      cfg.Log,
		Conns: []Conn{{
			Name: name, LocalAddrs: []string{local}, RemoteAddrs: []string{remote}, PSK: t.PSK,
			Proposals: t.IKEProposals, KeyingTries: -1,
			RekeyTime: t.IKELifetime - t.RekeyMargin, OverTime: t.RekeyMargin, RandTime: t.RekeyFuzz,
			DPDDelay: t.DPDDelay,
			Children: []Child{{
				ESPProposals: t.ESPProposals, LifeTime: t.ChildLifetime,
				RekeyTime: t.ChildLifetime - t.RekeyMargin, RandTime: t.RekeyFuzz,
				ReplayWindow: t.ReplayWindow, DPDAction: t.DPDAction, StartAction: t.StartAction, CloseAction: "none",
			}},
		}},
	}
	if t.ModifyCharon != nil {
		t.ModifyCharon(&ep.charonCfg)
	}
	if err := ep.charonCfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Static {
		ep.staticRoutes = cfg.SiteLANPrefixes
		return ep, nil
	}
	other := 1 - i
	fc := FRRConfig{
		Name: name, ASN: cfg.ASN, RouterID: aws4, Debug: cfg.BGPDebug,
		Neighbors: []BGPNeighbor{
			{Addr: site4, RemoteAS: cfg.SiteASN, MED: t.MED, SetMED: true, MaxPrefix: t.MaxPrefix},
			{Addr: site6, RemoteAS: cfg.SiteASN, MED: t.MED, SetMED: true, MaxPrefix: t.MaxPrefix},
			{Addr: a.EndpointVPC4[other], RemoteAS: cfg.ASN, NextHopSelf: true},
			{Addr: a.EndpointVPC6[other], RemoteAS: cfg.ASN, NextHopSelf: true},
		},
		Networks: cfg.VPCPrefixes,
	}
	if t.ModifyFRR != nil {
		t.ModifyFRR(&fc)
	}
	if err := fc.validate(); err != nil {
		return nil, err
	}
	ep.frrCfg = &fc
	return ep, nil
}

// Start starts the endpoint's charon and FRR (if they are not running: a Disabled endpoint, or
// after Stop).
func (ep *Endpoint) Start() error {
	if ep.Charon == nil {
		ch, err := ep.lab.StartCharon(ep.NS, ep.charonCfg)
		if err != nil {
			return err
		}
		ep.Charon = ch
	} else if ep.Charon.Process().Exited() {
		if err := ep.Charon.Restart(); err != nil {
			return err
		}
	}
	if ep.frrCfg == nil {
		// static mode: the site LAN goes into this tunnel
		for _, p := range ep.staticRoutes {
			if err := ep.NS.AddRoute(Route{Dst: p, Dev: TunDevice}); err != nil {
				return err
			}
		}
		return nil
	}
	if ep.FRR == nil || ep.FRR.BGPd.Exited() || ep.FRR.Zebra.Exited() {
		if ep.FRR != nil {
			if err := ep.FRR.Stop(); err != nil {
				return err
			}
		}
		f, err := ep.lab.StartFRR(ep.NS, *ep.frrCfg)
		if err != nil {
			return err
		}
		ep.FRR = f
	}
	return nil
}

// Stop stops the endpoint's FRR and charon (the endpoint "dies"; its path stays up).
func (ep *Endpoint) Stop() error {
	var errs []error
	if ep.FRR != nil {
		errs = append(errs, ep.FRR.Stop())
	}
	if ep.Charon != nil {
		errs = append(errs, ep.Charon.Stop())
	}
	return errors.Join(errs...)
}

// Tunnels returns what the site's client needs for both tunnels.
func (c *Concentrator) Tunnels() [2]Tunnel {
	return [2]Tunnel{c.Endpoints[0].Tunnel, c.Endpoints[1].Tunnel}
}

// CutPath takes down the internet's link to endpoint i (1 or 2): packets between the site and
// that endpoint are lost both ways; the other endpoint is unaffected.
func (c *Concentrator) CutPath(i int) error {
	ep, err := c.endpoint(i)
	if err != nil {
		return err
	}
	return c.Internet.LinkDown(ep.PathDev)
}

// RestorePath brings the internet's link to endpoint i back up.
func (c *Concentrator) RestorePath(i int) error {
	ep, err := c.endpoint(i)
	if err != nil {
		return err
	}
	return c.Internet.LinkUp(ep.PathDev)
}

// ImpairPath drops loss percent of the packets on the internet's link to endpoint i (both
// directions); 0 removes the impairment.
func (c *Concentrator) ImpairPath(i int, lossPercent float64) error {
	ep, err := c.endpoint(i)
	if err != nil {
		return err
	}
	return c.Internet.Impair(ep.PathDev, Impairment{LossPercent: lossPercent})
}

// CutSiteUplink takes the site's WAN link down (on the internet's side): the site loses both
// endpoints and the WAN host; its LAN is unaffected.
func (c *Concentrator) CutSiteUplink() error { return c.Internet.LinkDown("site0") }

// RestoreSiteUplink brings the site's WAN link back up.
func (c *Concentrator) RestoreSiteUplink() error { return c.Internet.LinkUp("site0") }

// ImpairSiteUplink drops loss percent of the site's WAN packets (both directions, on the
// internet's side of the link); 0 removes it.
func (c *Concentrator) ImpairSiteUplink(lossPercent float64) error {
	return c.Internet.Impair("site0", Impairment{LossPercent: lossPercent})
}

func (c *Concentrator) endpoint(i int) (*Endpoint, error) {
	if i != 1 && i != 2 {
		return nil, fmt.Errorf("lab: concentrator endpoint %d: want 1 or 2", i)
	}
	return c.Endpoints[i-1], nil
}

// Endpoint returns endpoint i (1 or 2), or nil.
func (c *Concentrator) Endpoint(i int) *Endpoint {
	ep, _ := c.endpoint(i)
	return ep
}

// WaitReady waits until every started endpoint's charon answers and its FRR has the iBGP
// session to the other endpoint Established (when both run BGP).
func (c *Concentrator) WaitReady(ctx context.Context) error {
	for _, ep := range c.Endpoints {
		if ep.Charon != nil {
			if err := ep.Charon.Ping(ctx); err != nil {
				return err
			}
		}
	}
	if c.Endpoints[0].FRR != nil && c.Endpoints[1].FRR != nil {
		for i, ep := range c.Endpoints {
			if _, err := ep.FRR.WaitEstablished(ctx, c.Addrs.EndpointVPC4[1-i], 0); err != nil {
				return err
			}
		}
	}
	return nil
}

// SiteStrongSwan is a strongSwan + FRR stand-in for our client in the site namespace, dialing
// one tunnel (one charon per namespace: libipsec has one ipsec0). It proves the concentrator
// end to end without our code, and is a reference for comparisons.
type SiteStrongSwan struct {
	Charon *Charon
	FRR    *FRR // nil in static mode
	Tunnel Tunnel
}

// StartSiteStrongSwan starts strongSwan (initiator: start_action=start, dpd_action=restart,
// keyingtries=0) and, unless static, FRR in the site namespace for tunnel i (1 or 2). In static
// mode it routes the VPC prefixes into ipsec0.
func (c *Concentrator) StartSiteStrongSwan(i int) (*SiteStrongSwan, error) {
	ep, err := c.endpoint(i)
	if err != nil {
		return nil, err
	}
	if c.Site == nil {
		return nil, errors.New("lab: concentrator: no site namespace (ExternalSite): the caller runs the site")
	}
	t := ep.Tunnel
	s := &SiteStrongSwan{Tunnel: t}
	s.Charon, err = c.lab.StartCharon(c.Site, CharonConfig{
		Name:     "site-" + t.Name,
		TunAddrs: []string{t.SiteInside4 + "/30", t.SiteInside6 + "/126"},
		Log:      c.Config.Log,
		Conns: []Conn{{
			Name: t.Name, LocalAddrs: []string{t.SiteOutside}, RemoteAddrs: []string{t.Outside}, PSK: t.PSK,
			Proposals: t.IKEProposals, KeyingTries: -1, DPDDelay: t.DPDDelay,
			Children: []Child{{ESPProposals: t.ESPProposals, DPDAction: "restart", StartAction: "start", CloseAction: "none"}},
		}},
	})
	if err != nil {
		return nil, err
	}
	if c.Config.Static {
		for _, p := range c.Config.VPCPrefixes {
			if err := c.Site.AddRoute(Route{Dst: p, Dev: TunDevice}); err != nil {
				return nil, err
			}
		}
		return s, nil
	}
	s.FRR, err = c.lab.StartFRR(c.Site, FRRConfig{
		Name: "site-" + t.Name, ASN: t.SiteASN, RouterID: t.SiteInside4, Debug: c.Config.BGPDebug,
		Neighbors: []BGPNeighbor{
			{Addr: t.AWSInside4, RemoteAS: t.ASN},
			{Addr: t.AWSInside6, RemoteAS: t.ASN},
		},
		Networks: c.Config.SiteLANPrefixes,
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// WaitUp waits for the site strongSwan's IKE and CHILD SAs and (unless static) both BGP
// sessions Established with at least one prefix.
func (s *SiteStrongSwan) WaitUp(ctx context.Context) error {
	if _, err := s.Charon.WaitUp(ctx, s.Tunnel.Name); err != nil {
		return err
	}
	if s.FRR != nil {
		for _, p := range []string{s.Tunnel.AWSInside4, s.Tunnel.AWSInside6} {
			if _, err := s.FRR.WaitEstablished(ctx, p, 1); err != nil {
				return err
			}
		}
	}
	return nil
}

// Stop stops the site's FRR and charon.
func (s *SiteStrongSwan) Stop() error {
	var errs []error
	if s.FRR != nil {
		errs = append(errs, s.FRR.Stop())
	}
	return errors.Join(append(errs, s.Charon.Stop())...)
}
