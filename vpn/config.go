package vpn

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"meshroot/vpn/ike"
	"meshroot/vpn/vpnlog"
)

// Secret is a pre-shared key. It prints, logs and marshals as "[redacted]".
type Secret = ike.Secret

// Config is one VPN connection to a concentrator: two tunnels to two endpoints (one is
// accepted too, for labs and field tests), with BGP over each or static routes.
//
// The fields mirror the VPN section of the site profile (provision/profile.VPN) so that the
// firmware's conversion is mechanical: connection_id → ConnectionID, static_routes_only →
// StaticRoutesOnly, customer_gateway_address → CustomerGatewayAddress, bgp.customer_asn /
// amazon_asn / hold_time_s → BGP, site_prefixes → SitePrefixes, remote_prefixes →
// RemotePrefixes (static mode), and per tunnel outside_address, inside_cidr, inside_ipv6_cidr,
// the PSK behind psk_ref, and options (AWS's TunnelOptions, field by field, seconds →
// time.Duration). What the profile does not carry is this side's own: LocalAddress,
// Tunnel.DPDAction, devices and Failover; their zero values are the defaults.
//
// Zero values take the documented defaults; Validate names the first bad field with its JSON
// name (the file format of `meshctl vpn up`, see LoadConfig), e.g.
// "tunnels[1].options.phase2_lifetime_s".
type Config struct {
	// ConnectionID is the concentrator's name for the connection ("vpn-0123456789abcdef0"):
	// the log streams are "<ConnectionID>_<tunnel outside address>" (vpnlog.ResourceID).
	ConnectionID string
	// LocalAddress is our outside (WAN) address. Zero: per tunnel, the address the kernel
	// sends from to reach the endpoint.
	LocalAddress netip.Addr
	// CustomerGatewayAddress is the site's address as the concentrator knows it (the customer
	// gateway IP, which differs from LocalAddress behind a NAT): our IKE identity. Zero: the
	// local address.
	CustomerGatewayAddress netip.Addr
	// StaticRoutesOnly is the non-BGP VPN type: RemotePrefixes are routed into both tunnels
	// and BGP must be nil.
	StaticRoutesOnly bool
	// BGP is the BGP session on each tunnel; required unless StaticRoutesOnly.
	BGP *BGP
	// SitePrefixes are the site's networks, advertised over BGP (at most 1,000).
	SitePrefixes []netip.Prefix
	// RemotePrefixes are the concentrator side's networks in static mode, routed into every
	// tunnel in service (ECMP over both; one when the other fails).
	RemotePrefixes []netip.Prefix
	// Tunnels are the tunnels (one or two), identified by their outside address.
	Tunnels []Tunnel
	// Failover tunes the data-plane liveness check of every tunnel (tunnel.Failover).
	Failover Failover
}

// BGP is the BGP configuration shared by the tunnels' sessions.
type BGP struct {
	// CustomerASN is our (the site's) AS number; AmazonASN the concentrator's (AWS default
	// 64512).
	CustomerASN, AmazonASN uint32
	// HoldTime is the BGP hold time (default 30 s, AWS's); the keepalive is a third of it.
	HoldTime time.Duration
	// MaxPrefixes is the import limit per session and address family (default 5,000, what a
	// concentrator sends a site at most); exceeding it ends the session with Cease 6/1.
	MaxPrefixes int
	// MED is sent with our prefixes on every session (default 100), and NoSteering turns off
	// return-path steering: while a tunnel is out of service the sessions of the tunnels in
	// service send MED 0, so that the concentrator (which prefers the shortest AS path, then
	// the lowest MED) sends the site's traffic over them at once, instead of into the dead
	// tunnel until its hold timer or DPD expires. The usual MED comes back with the tunnel.
	MED        uint32
	NoSteering bool
}

// Tunnel is one tunnel of the connection.
type Tunnel struct {
	// OutsideAddress is the concentrator endpoint's outside address (IPv4 or IPv6; both
	// tunnels of one family).
	OutsideAddress netip.Addr
	// InsideCIDR is the tunnel's inside /30 (169.254.0.0/16): the concentrator takes the first
	// host address, we take the second. InsideIPv6CIDR is the optional /126 (fd00::/8), same
	// rule; with it, IPv6 gets a BGP session of its own over the IPv6 inside addresses.
	InsideCIDR, InsideIPv6CIDR netip.Prefix
	// PSK is the pre-shared key (8-64 characters). It never reaches a log.
	PSK Secret
	// Options are AWS's tunnel options.
	Options TunnelOptions
	// DPDAction is what this side does when the endpoint stops answering for the DPD timeout:
	// "restart" (default: initiate again), "clear" (wait for the endpoint to initiate) or
	// "none". The profile's dpd_timeout_action is the concentrator's own action, not this.
	DPDAction string
	// Device is the tunnel's TUN device (default "mrvpn0", "mrvpn1" by position).
	Device string
}

// TunnelOptions are AWS's tunnel options (VpnTunnelOptionsSpecification) with AWS's values;
// zero values are AWS's defaults. From the allowed algorithms we offer the strong ones: the
// concentrator picks the lowest value both sides allow, so offering everything would get
// AES-128-CBC, SHA-1 and DH group 2. IKEProposals and ESPProposals override that choice.
type TunnelOptions struct {
	// IKEVersions: "ikev1", "ikev2" (ours speaks IKEv2 only, which must be allowed).
	IKEVersions []string
	// Phase1/2EncryptionAlgorithms: "AES128", "AES256", "AES128-GCM-16", "AES256-GCM-16".
	Phase1EncryptionAlgorithms, Phase2EncryptionAlgorithms []string
	// Phase1/2IntegrityAlgorithms: "SHA1", "SHA2-256", "SHA2-384", "SHA2-512".
	Phase1IntegrityAlgorithms, Phase2IntegrityAlgorithms []string
	// Phase1DHGroupNumbers: 2, 14-24; Phase2DHGroupNumbers: 2, 5, 14-24 (PFS).
	Phase1DHGroupNumbers, Phase2DHGroupNumbers []int
	// Phase1Lifetime (AWS 900-28,800 s, default 28,800 s) and Phase2Lifetime (900-3,600 s,
	// default 3,600 s). Shorter lifetimes are accepted here for tests.
	Phase1Lifetime, Phase2Lifetime time.Duration
	// RekeyMarginTime (default 270 s) and RekeyFuzzPercentage (0-100): rekeys happen at
	// lifetime - margin - random(fuzz % of margin). Unlike the other fields, a zero
	// RekeyFuzzPercentage means 0 % (as in the profile, which always carries it); AWS's
	// default is 100, which the configuration file uses when the field is absent.
	RekeyMarginTime     time.Duration
	RekeyFuzzPercentage int
	// ReplayWindowSize (64-2,048 packets, default 1,024).
	ReplayWindowSize int
	// DPDTimeout: the endpoint is dead when DPD goes unanswered this long (default 30 s).
	DPDTimeout time.Duration
	// StartupAction: "add" (default: we initiate) or "start" (the concentrator initiates and we
	// answer).
	StartupAction string

	// Beyond AWS's options:

	// DPDInterval is the idle time before a DPD check (default 10 s, AWS's).
	DPDInterval time.Duration
	// IKEProposals and ESPProposals, in strongSwan's notation ("aes256gcm16-prfsha256-modp2048"),
	// replace the offer built from the algorithm lists.
	IKEProposals, ESPProposals []string
}

// Failover tunes fast failover (see vpn/tunnel): zero values are the defaults (250 ms window,
// 400 ms probe timeout, 1 s recheck).
type Failover struct {
	Disabled                      bool
	Window, ProbeTimeout, Recheck time.Duration
}

// Limits and defaults.
const (
	MaxSitePrefixes    = 1000
	DefaultHoldTime    = 30 * time.Second
	DefaultMaxPrefixes = 5000
	DefaultMED         = 100
)

// AWS's tunnel option values.
var (
	awsEncryption = []string{"AES128", "AES256", "AES128-GCM-16", "AES256-GCM-16"}
	awsIntegrity  = []string{"SHA1", "SHA2-256", "SHA2-384", "SHA2-512"}
	awsDHPhase1   = []int{2, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24}
	awsDHPhase2   = []int{2, 5, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24}
)

// FieldError is a configuration error naming the field (its JSON path).
type FieldError struct {
	Field, Msg string
}

func (e *FieldError) Error() string { return "vpn config: " + e.Field + ": " + e.Msg }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// withDefaults returns a copy of c with defaults filled in (slices copied).
func (c Config) withDefaults() Config {
	c.SitePrefixes = slices.Clone(c.SitePrefixes)
	c.RemotePrefixes = slices.Clone(c.RemotePrefixes)
	c.Tunnels = slices.Clone(c.Tunnels)
	if c.BGP != nil {
		b := *c.BGP
		if b.HoldTime == 0 {
			b.HoldTime = DefaultHoldTime
		}
		if b.MaxPrefixes == 0 {
			b.MaxPrefixes = DefaultMaxPrefixes
		}
		if b.MED == 0 {
			b.MED = DefaultMED
		}
		c.BGP = &b
	}
	for i := range c.Tunnels {
		t := &c.Tunnels[i]
		if t.DPDAction == "" {
			t.DPDAction = string(ike.DPDRestart)
		}
		if t.Device == "" {
			t.Device = fmt.Sprintf("mrvpn%d", i)
		}
		t.OutsideAddress = t.OutsideAddress.Unmap()
		t.Options = t.Options.withDefaults()
	}
	return c
}

func (o TunnelOptions) withDefaults() TunnelOptions {
	def := func(s []string, d []string) []string {
		if len(s) == 0 {
			return slices.Clone(d)
		}
		return slices.Clone(s)
	}
	o.IKEVersions = def(o.IKEVersions, []string{"ikev1", "ikev2"})
	o.Phase1EncryptionAlgorithms = def(o.Phase1EncryptionAlgorithms, awsEncryption)
	o.Phase2EncryptionAlgorithms = def(o.Phase2EncryptionAlgorithms, awsEncryption)
	o.Phase1IntegrityAlgorithms = def(o.Phase1IntegrityAlgorithms, awsIntegrity)
	o.Phase2IntegrityAlgorithms = def(o.Phase2IntegrityAlgorithms, awsIntegrity)
	if len(o.Phase1DHGroupNumbers) == 0 {
		o.Phase1DHGroupNumbers = slices.Clone(awsDHPhase1)
	}
	if len(o.Phase2DHGroupNumbers) == 0 {
		o.Phase2DHGroupNumbers = slices.Clone(awsDHPhase2)
	}
	if o.Phase1Lifetime == 0 {
		o.Phase1Lifetime = 28800 * time.Second
	}
	if o.Phase2Lifetime == 0 {
		o.Phase2Lifetime = 3600 * time.Second
	}
	if o.RekeyMarginTime == 0 {
		o.RekeyMarginTime = 270 * time.Second
	}
	if o.ReplayWindowSize == 0 {
		o.ReplayWindowSize = 1024
	}
	if o.DPDTimeout == 0 {
		o.DPDTimeout = 30 * time.Second
	}
	if o.DPDInterval == 0 {
		o.DPDInterval = 10 * time.Second
	}
	if o.StartupAction == "" {
		o.StartupAction = "add"
	}
	return o
}

// Validate checks the configuration (defaults filled in) and names the first bad field.
func (c Config) Validate() error {
	_, err := c.compile()
	return err
}

// compiled is a validated configuration with everything derived from it.
type compiled struct {
	Config
	tunnels []compiledTunnel
}

type compiledTunnel struct {
	Tunnel
	name                 string // the outside address: the tunnel's name everywhere
	resourceID           string
	aws4, site4          netip.Prefix // host addresses with the /30 length
	aws6, site6          netip.Prefix
	ikeProps, espProps   []ike.Proposal
	dpdAction            ike.DPDAction
	startAction          ike.StartAction
	localID              string
	insideIPv6Configured bool
}

var (
	linkLocal4 = netip.MustParsePrefix("169.254.0.0/16")
	ula6       = netip.MustParsePrefix("fd00::/8")
)

func (c Config) compile() (*compiled, error) {
	c = c.withDefaults()
	out := &compiled{Config: c}
	if c.ConnectionID == "" {
		return nil, fieldErr("connection_id", "missing; want the connection's id, e.g. vpn-0123456789abcdef0")
	}
	if strings.ContainsAny(c.ConnectionID, " /\\\t\n") || len(c.ConnectionID) > 64 {
		return nil, fieldErr("connection_id", "%q: want a short id without spaces or slashes", c.ConnectionID)
	}
	if c.LocalAddress.IsValid() && (c.LocalAddress.IsUnspecified() || c.LocalAddress.IsMulticast()) {
		return nil, fieldErr("local_address", "%s cannot be a tunnel's local address", c.LocalAddress)
	}
	switch {
	case c.StaticRoutesOnly && c.BGP != nil:
		return nil, fieldErr("bgp", "must be omitted when static_routes_only is true")
	case !c.StaticRoutesOnly && c.BGP == nil:
		return nil, fieldErr("bgp", "missing (required unless static_routes_only is true)")
	case c.BGP != nil:
		b := c.BGP
		if b.CustomerASN == 0 {
			return nil, fieldErr("bgp.customer_asn", "missing; want 1-4294967295")
		}
		if b.AmazonASN == 0 {
			return nil, fieldErr("bgp.amazon_asn", "missing (AWS default 64512)")
		}
		if b.AmazonASN == b.CustomerASN {
			return nil, fieldErr("bgp.amazon_asn", "%d equals customer_asn: the tunnels run eBGP", b.AmazonASN)
		}
		if b.HoldTime < 3*time.Second || b.HoldTime > 65535*time.Second {
			return nil, fieldErr("bgp.hold_time_s", "%v; want 3-65535 s (AWS uses 30)", b.HoldTime)
		}
		if b.MaxPrefixes < 0 {
			return nil, fieldErr("bgp.max_prefixes", "%d; want a positive limit", b.MaxPrefixes)
		}
	}
	if !c.StaticRoutesOnly && len(c.SitePrefixes) == 0 {
		return nil, fieldErr("site_prefixes", "missing; want the site's networks to advertise")
	}
	if len(c.SitePrefixes) > MaxSitePrefixes {
		return nil, fieldErr("site_prefixes", "%d prefixes; at most %d", len(c.SitePrefixes), MaxSitePrefixes)
	}
	if err := checkPrefixes("site_prefixes", c.SitePrefixes); err != nil {
		return nil, err
	}
	if c.StaticRoutesOnly && len(c.RemotePrefixes) == 0 {
		return nil, fieldErr("remote_prefixes", "missing; static mode routes these into the tunnels")
	}
	if !c.StaticRoutesOnly && len(c.RemotePrefixes) > 0 {
		return nil, fieldErr("remote_prefixes", "only for static_routes_only (BGP learns the remote networks)")
	}
	if err := checkPrefixes("remote_prefixes", c.RemotePrefixes); err != nil {
		return nil, err
	}
	if f := c.Failover; f.Window < 0 || f.ProbeTimeout < 0 || f.Recheck < 0 {
		return nil, fieldErr("failover", "durations must not be negative")
	}
	if len(c.Tunnels) == 0 || len(c.Tunnels) > 2 {
		return nil, fieldErr("tunnels", "%d tunnels; want 2 (or 1)", len(c.Tunnels))
	}
	devices := map[string]int{}
	for i, t := range c.Tunnels {
		ct, err := compileTunnel(c, i, t)
		if err != nil {
			return nil, err
		}
		f := fmt.Sprintf("tunnels[%d]", i)
		for j, o := range out.tunnels {
			if o.OutsideAddress == ct.OutsideAddress {
				return nil, fieldErr(f+".outside_address", "%s is also tunnels[%d]'s", ct.OutsideAddress, j)
			}
			if o.OutsideAddress.Is4() != ct.OutsideAddress.Is4() {
				return nil, fieldErr(f+".outside_address", "%s: both tunnels must use the same address family", ct.OutsideAddress)
			}
			if o.InsideCIDR.Overlaps(ct.InsideCIDR) {
				return nil, fieldErr(f+".inside_cidr", "%s overlaps tunnels[%d]'s %s", ct.InsideCIDR, j, o.InsideCIDR)
			}
			if o.insideIPv6Configured && ct.insideIPv6Configured && o.InsideIPv6CIDR.Overlaps(ct.InsideIPv6CIDR) {
				return nil, fieldErr(f+".inside_ipv6_cidr", "%s overlaps tunnels[%d]'s %s", ct.InsideIPv6CIDR, j, o.InsideIPv6CIDR)
			}
		}
		if j, dup := devices[ct.Device]; dup {
			return nil, fieldErr(f+".device", "%q is also tunnels[%d]'s", ct.Device, j)
		}
		devices[ct.Device] = i
		if c.LocalAddress.IsValid() && c.LocalAddress.Is4() != ct.OutsideAddress.Is4() {
			return nil, fieldErr("local_address", "%s is not of the tunnels' address family", c.LocalAddress)
		}
		out.tunnels = append(out.tunnels, ct)
	}
	return out, nil
}

func checkPrefixes(field string, ps []netip.Prefix) error {
	seen := map[netip.Prefix]bool{}
	for i, p := range ps {
		f := fmt.Sprintf("%s[%d]", field, i)
		switch {
		case !p.IsValid():
			return fieldErr(f, "not a CIDR prefix")
		case p != p.Masked():
			return fieldErr(f, "%s has host bits set (want %s)", p, p.Masked())
		case p.Bits() == 0:
			return fieldErr(f, "%s is a default route", p)
		case p.Addr().Is4() && p.Overlaps(linkLocal4):
			return fieldErr(f, "%s overlaps 169.254.0.0/16 (the tunnel inside range)", p)
		case seen[p]:
			return fieldErr(f, "%s is listed twice", p)
		}
		seen[p] = true
	}
	return nil
}

func compileTunnel(c Config, i int, t Tunnel) (compiledTunnel, error) {
	f := fmt.Sprintf("tunnels[%d]", i)
	ct := compiledTunnel{Tunnel: t}
	a := t.OutsideAddress
	if !a.IsValid() || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() || a.Zone() != "" {
		return ct, fieldErr(f+".outside_address", "%q cannot be a tunnel endpoint", a)
	}
	ct.name = a.String()
	ct.resourceID = vpnlog.ResourceID(c.ConnectionID, a)
	p := t.InsideCIDR
	switch {
	case !p.IsValid() || !p.Addr().Is4():
		return ct, fieldErr(f+".inside_cidr", "missing or not IPv4; want a /30 in 169.254.0.0/16")
	case p.Bits() != 30:
		return ct, fieldErr(f+".inside_cidr", "%s is a /%d; want a /30", p, p.Bits())
	case p != p.Masked():
		return ct, fieldErr(f+".inside_cidr", "%s is not a network address (want %s)", p, p.Masked())
	case !linkLocal4.Contains(p.Addr()):
		return ct, fieldErr(f+".inside_cidr", "%s is outside 169.254.0.0/16", p)
	}
	ct.aws4 = netip.PrefixFrom(p.Addr().Next(), 30)
	ct.site4 = netip.PrefixFrom(p.Addr().Next().Next(), 30)
	if p6 := t.InsideIPv6CIDR; p6.IsValid() {
		switch {
		case !p6.Addr().Is6() || p6.Addr().Is4In6():
			return ct, fieldErr(f+".inside_ipv6_cidr", "%s is not IPv6", p6)
		case p6.Bits() != 126:
			return ct, fieldErr(f+".inside_ipv6_cidr", "%s is a /%d; want a /126", p6, p6.Bits())
		case p6 != p6.Masked():
			return ct, fieldErr(f+".inside_ipv6_cidr", "%s is not a network address (want %s)", p6, p6.Masked())
		case !ula6.Contains(p6.Addr()):
			return ct, fieldErr(f+".inside_ipv6_cidr", "%s is outside fd00::/8", p6)
		}
		ct.aws6 = netip.PrefixFrom(p6.Addr().Next(), 126)
		ct.site6 = netip.PrefixFrom(p6.Addr().Next().Next(), 126)
		ct.insideIPv6Configured = true
	}
	if n := len(t.PSK); n < 8 || n > 64 {
		return ct, fieldErr(f+".psk", "%d characters; want 8-64", n)
	}
	switch ike.DPDAction(t.DPDAction) {
	case ike.DPDClear, ike.DPDRestart, ike.DPDNone:
		ct.dpdAction = ike.DPDAction(t.DPDAction)
	default:
		return ct, fieldErr(f+".dpd_action", "%q; want restart, clear or none", t.DPDAction)
	}
	if t.Device == "" || len(t.Device) > 15 || strings.ContainsAny(t.Device, "/ \t:") {
		return ct, fieldErr(f+".device", "%q; want an interface name of 1-15 characters", t.Device)
	}
	if err := compileOptions(&ct, f+".options", t.Options); err != nil {
		return ct, err
	}
	ct.localID = ""
	if c.CustomerGatewayAddress.IsValid() {
		ct.localID = c.CustomerGatewayAddress.Unmap().String()
	}
	return ct, nil
}

func compileOptions(ct *compiledTunnel, f string, o TunnelOptions) error {
	if !slices.Contains(o.IKEVersions, "ikev2") {
		return fieldErr(f+".ike_versions", "%q: this side speaks IKEv2 only; want ikev2 allowed", o.IKEVersions)
	}
	for i, v := range o.IKEVersions {
		if v != "ikev1" && v != "ikev2" {
			return fieldErr(fmt.Sprintf("%s.ike_versions[%d]", f, i), "%q; want ikev1 or ikev2", v)
		}
	}
	lists := []struct {
		name    string
		got     []string
		allowed []string
	}{
		{"phase1_encryption_algorithms", o.Phase1EncryptionAlgorithms, awsEncryption},
		{"phase2_encryption_algorithms", o.Phase2EncryptionAlgorithms, awsEncryption},
		{"phase1_integrity_algorithms", o.Phase1IntegrityAlgorithms, awsIntegrity},
		{"phase2_integrity_algorithms", o.Phase2IntegrityAlgorithms, awsIntegrity},
	}
	for _, l := range lists {
		for i, v := range l.got {
			if !slices.Contains(l.allowed, v) {
				return fieldErr(fmt.Sprintf("%s.%s[%d]", f, l.name, i), "%q; want one of %s", v, strings.Join(l.allowed, ", "))
			}
		}
	}
	for i, g := range o.Phase1DHGroupNumbers {
		if !slices.Contains(awsDHPhase1, g) {
			return fieldErr(fmt.Sprintf("%s.phase1_dh_group_numbers[%d]", f, i), "%d; want one of %v", g, awsDHPhase1)
		}
	}
	for i, g := range o.Phase2DHGroupNumbers {
		if !slices.Contains(awsDHPhase2, g) {
			return fieldErr(fmt.Sprintf("%s.phase2_dh_group_numbers[%d]", f, i), "%d; want one of %v", g, awsDHPhase2)
		}
	}
	if o.Phase1Lifetime < 0 || o.Phase1Lifetime > 28800*time.Second {
		return fieldErr(f+".phase1_lifetime_s", "%v; want at most 28800 s", o.Phase1Lifetime)
	}
	if o.Phase2Lifetime < 0 || o.Phase2Lifetime > 3600*time.Second {
		return fieldErr(f+".phase2_lifetime_s", "%v; want at most 3600 s", o.Phase2Lifetime)
	}
	if o.Phase2Lifetime >= o.Phase1Lifetime {
		return fieldErr(f+".phase2_lifetime_s", "%v; must be less than phase1_lifetime_s %v", o.Phase2Lifetime, o.Phase1Lifetime)
	}
	if o.RekeyMarginTime < 0 || o.RekeyMarginTime*2 > o.Phase2Lifetime {
		return fieldErr(f+".rekey_margin_time_s", "%v; want at most half of phase2_lifetime_s (%v)", o.RekeyMarginTime, o.Phase2Lifetime)
	}
	if o.RekeyFuzzPercentage < 0 || o.RekeyFuzzPercentage > 100 {
		return fieldErr(f+".rekey_fuzz_percentage", "%d; want 0-100", o.RekeyFuzzPercentage)
	}
	if o.ReplayWindowSize < 64 || o.ReplayWindowSize > 2048 {
		return fieldErr(f+".replay_window_size", "%d; want 64-2048", o.ReplayWindowSize)
	}
	if o.DPDTimeout <= 0 {
		return fieldErr(f+".dpd_timeout_s", "%v; want a positive timeout (AWS: at least 30 s)", o.DPDTimeout)
	}
	if o.DPDInterval <= 0 || o.DPDInterval > o.DPDTimeout {
		return fieldErr(f+".dpd_interval_s", "%v; want a positive interval no longer than dpd_timeout_s (%v)", o.DPDInterval, o.DPDTimeout)
	}
	switch o.StartupAction {
	case "add":
		ct.startAction = ike.StartStart
	case "start":
		ct.startAction = ike.StartAdd
	default:
		return fieldErr(f+".startup_action", "%q; want add (we initiate) or start (the concentrator initiates)", o.StartupAction)
	}
	var err error
	if len(o.IKEProposals) > 0 {
		if ct.ikeProps, err = parseProposals(o.IKEProposals); err != nil {
			return fieldErr(f+".ike_proposals", "%v", err)
		}
	} else if ct.ikeProps, err = offerIKE(o); err != nil {
		return fieldErr(f, "%v", err)
	}
	if len(o.ESPProposals) > 0 {
		if ct.espProps, err = parseProposals(o.ESPProposals); err != nil {
			return fieldErr(f+".esp_proposals", "%v", err)
		}
	} else if ct.espProps, err = offerESP(o); err != nil {
		return fieldErr(f, "%v", err)
	}
	return nil
}

func parseProposals(ss []string) ([]ike.Proposal, error) {
	var out []ike.Proposal
	for _, s := range ss {
		p, err := ike.ParseProposal(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, errors.New("empty")
	}
	return out, nil
}
