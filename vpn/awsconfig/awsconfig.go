// Package awsconfig imports an AWS Site-to-Site VPN connection: the CustomerGatewayConfiguration
// XML document that DescribeVpnConnections returns, optionally with the connection's JSON
// (Options.TunnelOptions), which holds the real algorithm policy — the XML's <ike> and <ipsec>
// values are AWS's legacy minimums (aes-128-cbc, sha1, group2), not what the tunnel negotiates.
//
// Tunnels are identified by the AWS endpoint's outside address, never by their position:
// AWS lists them in no guaranteed order, so the XML's tunnels and the JSON's TunnelOptions are
// matched by address, and Import returns them sorted by address.
//
// The package returns its own types and imports nothing from provision (the conversion into a
// site profile lives in provision/awsimport). The pre-shared keys come back as PSK values,
// which never print themselves: the caller moves them into a secret store.
package awsconfig

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// MaxDocumentSize bounds the XML and JSON documents Import reads.
const MaxDocumentSize = 1 << 20

// PSK is a tunnel's pre-shared key, or the ARN of the Secrets Manager secret holding it. It
// hides itself from fmt, log/slog and encoding/json; Reveal returns the value.
type PSK struct{ v string }

// NewPSK wraps a pre-shared key value.
func NewPSK(v string) PSK { return PSK{v: v} }

// Reveal returns the key (or ARN).
func (p PSK) Reveal() string { return p.v }

// IsZero reports whether there is no key.
func (p PSK) IsZero() bool { return p.v == "" }

// IsARN reports whether the value is a Secrets Manager ARN rather than the key itself (AWS
// returns the ARN when the connection's PreSharedKeyStorage is SecretsManager).
func (p PSK) IsARN() bool { return strings.HasPrefix(p.v, "arn:") }

func (p PSK) String() string { return "[psk]" }

// GoString hides the key from %#v.
func (p PSK) GoString() string { return "awsconfig.PSK(hidden)" }

// LogValue hides the key from log/slog.
func (p PSK) LogValue() slog.Value { return slog.StringValue("[psk]") }

// MarshalJSON hides the key from encoding/json.
func (p PSK) MarshalJSON() ([]byte, error) { return []byte(`"[psk]"`), nil }

var rePSK = regexp.MustCompile(`^[A-Za-z1-9._][A-Za-z0-9._]{7,63}$`)

// Validate applies AWS's PSK rules: 8-64 characters of letters, digits, '.' and '_', not
// starting with 0. An ARN is accepted as is.
func (p PSK) Validate() error {
	switch {
	case p.v == "":
		return errors.New("missing")
	case p.IsARN():
		return nil
	case !rePSK.MatchString(p.v):
		return errors.New("not 8-64 characters of A-Z, a-z, 0-9, '.', '_' not starting with 0")
	}
	return nil
}

// Connection is one VPN connection.
type Connection struct {
	ID                string
	CustomerGatewayID string
	VPNGatewayID      string
	TransitGatewayID  string
	Type              string
	// StaticRoutesOnly is true for a static connection: the XML carries no <bgp>, the
	// attributes say NoBGPVPNConnection, or the JSON's Options.StaticRoutesOnly says so.
	StaticRoutesOnly bool
	// StaticRoutes are the connection's static routes (the JSON's Routes), if given.
	StaticRoutes []netip.Prefix
	// Tunnels are sorted by OutsideAddress.
	Tunnels []Tunnel
	// HasOptions is true when TunnelOptions JSON was merged in.
	HasOptions bool
}

// Tunnel is one tunnel of the connection.
type Tunnel struct {
	// OutsideAddress is the AWS endpoint's outside address: the tunnel's identity.
	OutsideAddress netip.Addr
	// CustomerOutsideAddress is the customer gateway's address (invalid when absent).
	CustomerOutsideAddress netip.Addr
	// InsideCIDR is the tunnel's inside network; AWSInside and CustomerInside its two ends.
	InsideCIDR     netip.Prefix
	AWSInside      netip.Addr
	CustomerInside netip.Addr
	// InsideIPv6CIDR is the optional inside IPv6 /126 (JSON only).
	InsideIPv6CIDR netip.Prefix
	// BGP: zero ASNs when the tunnel has no <bgp>.
	CustomerASN, AmazonASN uint32
	HoldTime               int
	// PSK is the pre-shared key (from the XML or the JSON).
	PSK PSK
	// IKE and IPsec are the XML's legacy values (informational).
	IKE   IKE
	IPsec IPsec
	// Options are the JSON's TunnelOptions for this tunnel, nil without JSON.
	Options *TunnelOptions
}

// IKE is the XML's <ike> element.
type IKE struct {
	AuthenticationProtocol string `xml:"authentication_protocol"`
	EncryptionProtocol     string `xml:"encryption_protocol"`
	Lifetime               int    `xml:"lifetime"`
	PerfectForwardSecrecy  string `xml:"perfect_forward_secrecy"`
	Mode                   string `xml:"mode"`
}

// IPsec is the XML's <ipsec> element.
type IPsec struct {
	Protocol                      string `xml:"protocol"`
	AuthenticationProtocol        string `xml:"authentication_protocol"`
	EncryptionProtocol            string `xml:"encryption_protocol"`
	Lifetime                      int    `xml:"lifetime"`
	PerfectForwardSecrecy         string `xml:"perfect_forward_secrecy"`
	Mode                          string `xml:"mode"`
	ClearDFBit                    bool   `xml:"clear_df_bit"`
	FragmentationBeforeEncryption bool   `xml:"fragmentation_before_encryption"`
	TCPMSSAdjustment              int    `xml:"tcp_mss_adjustment"`
	DPDInterval                   int    `xml:"dead_peer_detection>interval"`
	DPDRetries                    int    `xml:"dead_peer_detection>retries"`
}

// TunnelOptions is the JSON's per-tunnel options (DescribeVpnConnections
// Options.TunnelOptions); nil pointers and nil slices are options the document left out.
type TunnelOptions struct {
	OutsideIPAddress           string
	TunnelInsideCIDR           string
	TunnelInsideIPv6CIDR       string
	PreSharedKey               PSK
	IKEVersions                []string
	Phase1EncryptionAlgorithms []string
	Phase2EncryptionAlgorithms []string
	Phase1IntegrityAlgorithms  []string
	Phase2IntegrityAlgorithms  []string
	Phase1DHGroupNumbers       []int
	Phase2DHGroupNumbers       []int
	Phase1LifetimeSeconds      *int
	Phase2LifetimeSeconds      *int
	RekeyMarginTimeSeconds     *int
	RekeyFuzzPercentage        *int
	ReplayWindowSize           *int
	DPDTimeoutSeconds          *int
	DPDTimeoutAction           string
	StartupAction              string
}

// Result is an import and its warnings (things left to defaults, values to check).
type Result struct {
	Connection Connection
	Warnings   []string
}

// --- XML ---

type xmlDoc struct {
	XMLName           xml.Name    `xml:"vpn_connection"`
	ID                string      `xml:"id,attr"`
	CustomerGatewayID string      `xml:"customer_gateway_id"`
	VPNGatewayID      string      `xml:"vpn_gateway_id"`
	TransitGatewayID  string      `xml:"transit_gateway_id"`
	Type              string      `xml:"vpn_connection_type"`
	Attributes        string      `xml:"vpn_connection_attributes"`
	Tunnels           []xmlTunnel `xml:"ipsec_tunnel"`
}

type xmlTunnel struct {
	Customer xmlGateway `xml:"customer_gateway"`
	AWS      xmlGateway `xml:"vpn_gateway"`
	IKE      *xmlIKE    `xml:"ike"`
	IPsec    *IPsec     `xml:"ipsec"`
}

type xmlIKE struct {
	IKE
	PreSharedKey string `xml:"pre_shared_key"`
}

type xmlGateway struct {
	Outside struct {
		IP string `xml:"ip_address"`
	} `xml:"tunnel_outside_address"`
	Inside *struct {
		IP   string `xml:"ip_address"`
		Mask string `xml:"network_mask"`
		CIDR string `xml:"network_cidr"`
	} `xml:"tunnel_inside_address"`
	BGP *struct {
		ASN      string `xml:"asn"`
		HoldTime string `xml:"hold_time"`
	} `xml:"bgp"`
}

// ParseXML parses a CustomerGatewayConfiguration document.
func ParseXML(doc []byte) (*Result, error) {
	if len(doc) > MaxDocumentSize {
		return nil, fmt.Errorf("aws xml: %d bytes; at most %d", len(doc), MaxDocumentSize)
	}
	var d xmlDoc
	dec := xml.NewDecoder(bytes.NewReader(doc))
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("aws xml: %w", err)
	}
	r := &Result{Connection: Connection{
		ID:                strings.TrimSpace(d.ID),
		CustomerGatewayID: strings.TrimSpace(d.CustomerGatewayID),
		VPNGatewayID:      strings.TrimSpace(d.VPNGatewayID),
		TransitGatewayID:  strings.TrimSpace(d.TransitGatewayID),
		Type:              strings.TrimSpace(d.Type),
	}}
	c := &r.Connection
	if c.Type == "" {
		c.Type = "ipsec.1"
		r.warn("vpn_connection_type missing: assuming ipsec.1")
	}
	if c.Type != "ipsec.1" {
		return nil, fmt.Errorf("aws xml: vpn_connection_type %q; want ipsec.1", c.Type)
	}
	if len(d.Tunnels) == 0 {
		return nil, errors.New("aws xml: no ipsec_tunnel elements")
	}
	if len(d.Tunnels) > 2 {
		return nil, fmt.Errorf("aws xml: %d ipsec_tunnel elements; a connection has 2", len(d.Tunnels))
	}
	noBGP := strings.Contains(d.Attributes, "NoBGPVPNConnection")
	bgpCount := 0
	for i, xt := range d.Tunnels {
		t, hasBGP, err := xt.convert(r)
		if err != nil {
			return nil, fmt.Errorf("aws xml: ipsec_tunnel[%d]: %w", i, err)
		}
		if hasBGP {
			bgpCount++
		}
		for _, o := range c.Tunnels {
			if o.OutsideAddress == t.OutsideAddress {
				return nil, fmt.Errorf("aws xml: ipsec_tunnel[%d]: vpn_gateway outside address %s appears twice", i, t.OutsideAddress)
			}
		}
		c.Tunnels = append(c.Tunnels, t)
	}
	switch {
	case noBGP:
		c.StaticRoutesOnly = true
	case bgpCount == 0:
		c.StaticRoutesOnly = true
		r.warn("no <bgp> in any tunnel: treating the connection as static")
	case bgpCount != len(c.Tunnels):
		return nil, errors.New("aws xml: only some tunnels carry <bgp>")
	}
	sortTunnels(c.Tunnels)
	return r, nil
}

func (r *Result) warn(format string, args ...any) {
	r.Warnings = append(r.Warnings, fmt.Sprintf(format, args...))
}

func sortTunnels(ts []Tunnel) {
	slices.SortFunc(ts, func(a, b Tunnel) int { return a.OutsideAddress.Compare(b.OutsideAddress) })
}

func (xt xmlTunnel) convert(r *Result) (Tunnel, bool, error) {
	var t Tunnel
	out, err := netip.ParseAddr(strings.TrimSpace(xt.AWS.Outside.IP))
	if err != nil {
		return t, false, fmt.Errorf("vpn_gateway/tunnel_outside_address/ip_address: %q is not an IP address", xt.AWS.Outside.IP)
	}
	t.OutsideAddress = out.Unmap()
	if s := strings.TrimSpace(xt.Customer.Outside.IP); s != "" {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return t, false, fmt.Errorf("customer_gateway/tunnel_outside_address/ip_address: %q is not an IP address", s)
		}
		t.CustomerOutsideAddress = a.Unmap()
	}
	if xt.Customer.Inside == nil || xt.AWS.Inside == nil {
		return t, false, fmt.Errorf("tunnel %s: tunnel_inside_address missing", t.OutsideAddress)
	}
	cp, err := insidePrefix(r, t.OutsideAddress, "customer_gateway", xt.Customer.Inside.IP, xt.Customer.Inside.CIDR, xt.Customer.Inside.Mask)
	if err != nil {
		return t, false, err
	}
	ap, err := insidePrefix(r, t.OutsideAddress, "vpn_gateway", xt.AWS.Inside.IP, xt.AWS.Inside.CIDR, xt.AWS.Inside.Mask)
	if err != nil {
		return t, false, err
	}
	if cp.Masked() != ap.Masked() {
		return t, false, fmt.Errorf("tunnel %s: inside addresses %s and %s are not in one network", t.OutsideAddress, cp, ap)
	}
	t.InsideCIDR, t.CustomerInside, t.AWSInside = cp.Masked(), cp.Addr(), ap.Addr()
	hasBGP := xt.Customer.BGP != nil || xt.AWS.BGP != nil
	if hasBGP {
		if xt.Customer.BGP == nil || xt.AWS.BGP == nil {
			return t, false, fmt.Errorf("tunnel %s: <bgp> on one side only", t.OutsideAddress)
		}
		if t.CustomerASN, err = parseASN(xt.Customer.BGP.ASN); err != nil {
			return t, false, fmt.Errorf("tunnel %s: customer_gateway/bgp/asn: %w", t.OutsideAddress, err)
		}
		if t.AmazonASN, err = parseASN(xt.AWS.BGP.ASN); err != nil {
			return t, false, fmt.Errorf("tunnel %s: vpn_gateway/bgp/asn: %w", t.OutsideAddress, err)
		}
		t.HoldTime = 30
		if s := strings.TrimSpace(xt.AWS.BGP.HoldTime); s != "" {
			if t.HoldTime, err = strconv.Atoi(s); err != nil || t.HoldTime < 0 {
				return t, false, fmt.Errorf("tunnel %s: vpn_gateway/bgp/hold_time: %q is not a number", t.OutsideAddress, s)
			}
		} else {
			r.warn("tunnel %s: bgp hold_time missing: assuming 30", t.OutsideAddress)
		}
	}
	if xt.IKE != nil {
		t.IKE = xt.IKE.IKE
		t.PSK = NewPSK(strings.TrimSpace(xt.IKE.PreSharedKey))
	}
	if xt.IPsec != nil {
		t.IPsec = *xt.IPsec
	}
	return t, hasBGP, nil
}

func insidePrefix(r *Result, tunnel netip.Addr, side, ip, cidr, mask string) (netip.Prefix, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(ip))
	if err != nil || !a.Is4() {
		return netip.Prefix{}, fmt.Errorf("tunnel %s: %s/tunnel_inside_address/ip_address: %q is not an IPv4 address", tunnel, side, ip)
	}
	bits := -1
	if s := strings.TrimSpace(cidr); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > 32 {
			return netip.Prefix{}, fmt.Errorf("tunnel %s: %s/tunnel_inside_address/network_cidr: %q", tunnel, side, s)
		}
		bits = n
	} else if s := strings.TrimSpace(mask); s != "" {
		m, err := netip.ParseAddr(s)
		if err != nil || !m.Is4() {
			return netip.Prefix{}, fmt.Errorf("tunnel %s: %s/tunnel_inside_address/network_mask: %q", tunnel, side, s)
		}
		b := m.As4()
		v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		ones := 0
		for v&0x80000000 != 0 {
			ones++
			v <<= 1
		}
		if v != 0 {
			return netip.Prefix{}, fmt.Errorf("tunnel %s: %s/tunnel_inside_address/network_mask: %s is not contiguous", tunnel, side, s)
		}
		bits = ones
	} else {
		bits = 30
		r.warn("tunnel %s: %s inside address has no network_cidr or network_mask: assuming /30", tunnel, side)
	}
	return netip.PrefixFrom(a, bits), nil
}

func parseASN(s string) (uint32, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not an ASN", s)
	}
	return uint32(n), nil
}

// --- JSON ---

type jsonValue[T any] struct {
	Value T `json:"Value"`
}

type jsonTunnelOptions struct {
	OutsideIPAddress           string              `json:"OutsideIpAddress"`
	TunnelInsideCidr           string              `json:"TunnelInsideCidr"`
	TunnelInsideIpv6Cidr       string              `json:"TunnelInsideIpv6Cidr"`
	PreSharedKey               string              `json:"PreSharedKey"`
	Phase1LifetimeSeconds      *int                `json:"Phase1LifetimeSeconds"`
	Phase2LifetimeSeconds      *int                `json:"Phase2LifetimeSeconds"`
	RekeyMarginTimeSeconds     *int                `json:"RekeyMarginTimeSeconds"`
	RekeyFuzzPercentage        *int                `json:"RekeyFuzzPercentage"`
	ReplayWindowSize           *int                `json:"ReplayWindowSize"`
	DpdTimeoutSeconds          *int                `json:"DpdTimeoutSeconds"` // also matches DPDTimeoutSeconds
	DpdTimeoutAction           string              `json:"DpdTimeoutAction"`
	Phase1EncryptionAlgorithms []jsonValue[string] `json:"Phase1EncryptionAlgorithms"`
	Phase2EncryptionAlgorithms []jsonValue[string] `json:"Phase2EncryptionAlgorithms"`
	Phase1IntegrityAlgorithms  []jsonValue[string] `json:"Phase1IntegrityAlgorithms"`
	Phase2IntegrityAlgorithms  []jsonValue[string] `json:"Phase2IntegrityAlgorithms"`
	Phase1DHGroupNumbers       []jsonValue[int]    `json:"Phase1DHGroupNumbers"`
	Phase2DHGroupNumbers       []jsonValue[int]    `json:"Phase2DHGroupNumbers"`
	IkeVersions                []jsonValue[string] `json:"IkeVersions"`
	StartupAction              string              `json:"StartupAction"`
}

type jsonOptions struct {
	StaticRoutesOnly *bool               `json:"StaticRoutesOnly"`
	TunnelOptions    []jsonTunnelOptions `json:"TunnelOptions"`
}

type jsonConnection struct {
	VpnConnectionID string       `json:"VpnConnectionId"`
	Options         *jsonOptions `json:"Options"`
	Routes          []struct {
		DestinationCidrBlock string `json:"DestinationCidrBlock"`
		State                string `json:"State"`
	} `json:"Routes"`
}

// parseOptions accepts: the whole describe-vpn-connections output ({"VpnConnections": [...]}),
// one connection ({"VpnConnectionId": ..., "Options": {...}}), an Options object
// ({"TunnelOptions": [...]}), or the bare TunnelOptions array.
func parseOptions(doc []byte, connID string) (*jsonConnection, error) {
	if len(doc) > MaxDocumentSize {
		return nil, fmt.Errorf("aws options: %d bytes; at most %d", len(doc), MaxDocumentSize)
	}
	doc = bytes.TrimSpace(doc)
	if len(doc) > 0 && doc[0] == '[' {
		var tos []jsonTunnelOptions
		if err := json.Unmarshal(doc, &tos); err != nil {
			return nil, fmt.Errorf("aws options: %w", err)
		}
		return &jsonConnection{Options: &jsonOptions{TunnelOptions: tos}}, nil
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(doc, &probe); err != nil {
		return nil, fmt.Errorf("aws options: %w", err)
	}
	if raw, ok := probe["VpnConnections"]; ok {
		var conns []jsonConnection
		if err := json.Unmarshal(raw, &conns); err != nil {
			return nil, fmt.Errorf("aws options: VpnConnections: %w", err)
		}
		for i := range conns {
			if conns[i].VpnConnectionID == connID || (connID == "" && len(conns) == 1) {
				return &conns[i], nil
			}
		}
		return nil, fmt.Errorf("aws options: no connection %q among %d in VpnConnections", connID, len(conns))
	}
	if _, ok := probe["TunnelOptions"]; ok {
		var o jsonOptions
		if err := json.Unmarshal(doc, &o); err != nil {
			return nil, fmt.Errorf("aws options: %w", err)
		}
		return &jsonConnection{Options: &o}, nil
	}
	var c jsonConnection
	if err := json.Unmarshal(doc, &c); err != nil {
		return nil, fmt.Errorf("aws options: %w", err)
	}
	if c.Options == nil {
		return nil, errors.New("aws options: no Options.TunnelOptions, TunnelOptions or VpnConnections")
	}
	if connID != "" && c.VpnConnectionID != "" && c.VpnConnectionID != connID {
		return nil, fmt.Errorf("aws options: VpnConnectionId %q; the XML is %q", c.VpnConnectionID, connID)
	}
	return &c, nil
}

func values[T any](vs []jsonValue[T]) []T {
	if vs == nil {
		return nil
	}
	out := make([]T, len(vs))
	for i, v := range vs {
		out[i] = v.Value
	}
	return out
}

// Import parses the XML and, when options is not empty, merges the JSON's tunnel options into
// the tunnels with the same outside address.
func Import(xmlDoc, options []byte) (*Result, error) {
	r, err := ParseXML(xmlDoc)
	if err != nil {
		return nil, err
	}
	c := &r.Connection
	if len(bytes.TrimSpace(options)) > 0 {
		jc, err := parseOptions(options, c.ID)
		if err != nil {
			return nil, err
		}
		if err := r.merge(jc); err != nil {
			return nil, err
		}
	} else {
		r.warn("no TunnelOptions JSON: the XML's <ike>/<ipsec> values are AWS's legacy minimums, not the negotiable policy")
	}
	for _, t := range c.Tunnels {
		if err := t.PSK.Validate(); err != nil {
			return nil, fmt.Errorf("tunnel %s: pre-shared key: %w", t.OutsideAddress, err)
		}
	}
	return r, nil
}

func (r *Result) merge(jc *jsonConnection) error {
	c := &r.Connection
	c.HasOptions = true
	if jc.Options.StaticRoutesOnly != nil && *jc.Options.StaticRoutesOnly != c.StaticRoutesOnly {
		if *jc.Options.StaticRoutesOnly {
			return errors.New("aws options: StaticRoutesOnly is true but the XML carries <bgp>")
		}
		return errors.New("aws options: StaticRoutesOnly is false but the XML has no <bgp>")
	}
	for i, rt := range jc.Routes {
		if rt.State == "deleted" || rt.State == "deleting" {
			continue
		}
		p, err := netip.ParsePrefix(strings.TrimSpace(rt.DestinationCidrBlock))
		if err != nil {
			return fmt.Errorf("aws options: Routes[%d].DestinationCidrBlock: %q", i, rt.DestinationCidrBlock)
		}
		c.StaticRoutes = append(c.StaticRoutes, p)
	}
	used := map[netip.Addr]bool{}
	for i, jo := range jc.Options.TunnelOptions {
		a, err := netip.ParseAddr(strings.TrimSpace(jo.OutsideIPAddress))
		if err != nil {
			return fmt.Errorf("aws options: TunnelOptions[%d].OutsideIpAddress: %q is not an IP address", i, jo.OutsideIPAddress)
		}
		a = a.Unmap()
		if used[a] {
			return fmt.Errorf("aws options: TunnelOptions[%d]: outside address %s appears twice", i, a)
		}
		used[a] = true
		idx := slices.IndexFunc(c.Tunnels, func(t Tunnel) bool { return t.OutsideAddress == a })
		if idx < 0 {
			return fmt.Errorf("aws options: TunnelOptions[%d]: outside address %s matches no tunnel of the XML", i, a)
		}
		t := &c.Tunnels[idx]
		o := &TunnelOptions{
			OutsideIPAddress:           a.String(),
			TunnelInsideCIDR:           strings.TrimSpace(jo.TunnelInsideCidr),
			TunnelInsideIPv6CIDR:       strings.TrimSpace(jo.TunnelInsideIpv6Cidr),
			PreSharedKey:               NewPSK(strings.TrimSpace(jo.PreSharedKey)),
			IKEVersions:                values(jo.IkeVersions),
			Phase1EncryptionAlgorithms: values(jo.Phase1EncryptionAlgorithms),
			Phase2EncryptionAlgorithms: values(jo.Phase2EncryptionAlgorithms),
			Phase1IntegrityAlgorithms:  values(jo.Phase1IntegrityAlgorithms),
			Phase2IntegrityAlgorithms:  values(jo.Phase2IntegrityAlgorithms),
			Phase1DHGroupNumbers:       values(jo.Phase1DHGroupNumbers),
			Phase2DHGroupNumbers:       values(jo.Phase2DHGroupNumbers),
			Phase1LifetimeSeconds:      jo.Phase1LifetimeSeconds,
			Phase2LifetimeSeconds:      jo.Phase2LifetimeSeconds,
			RekeyMarginTimeSeconds:     jo.RekeyMarginTimeSeconds,
			RekeyFuzzPercentage:        jo.RekeyFuzzPercentage,
			ReplayWindowSize:           jo.ReplayWindowSize,
			DPDTimeoutSeconds:          jo.DpdTimeoutSeconds,
			DPDTimeoutAction:           strings.TrimSpace(jo.DpdTimeoutAction),
			StartupAction:              strings.TrimSpace(jo.StartupAction),
		}
		if o.TunnelInsideCIDR != "" {
			p, err := netip.ParsePrefix(o.TunnelInsideCIDR)
			if err != nil || p.Masked() != t.InsideCIDR {
				return fmt.Errorf("aws options: tunnel %s: TunnelInsideCidr %q differs from the XML's %s", a, o.TunnelInsideCIDR, t.InsideCIDR)
			}
		}
		if o.TunnelInsideIPv6CIDR != "" {
			p, err := netip.ParsePrefix(o.TunnelInsideIPv6CIDR)
			if err != nil || !p.Addr().Is6() {
				return fmt.Errorf("aws options: tunnel %s: TunnelInsideIpv6Cidr %q is not an IPv6 CIDR", a, o.TunnelInsideIPv6CIDR)
			}
			t.InsideIPv6CIDR = p
		}
		switch {
		case o.PreSharedKey.IsZero():
		case t.PSK.IsZero():
			t.PSK = o.PreSharedKey
		case t.PSK.Reveal() != o.PreSharedKey.Reveal():
			return fmt.Errorf("aws options: tunnel %s: the pre-shared key differs between the XML and the JSON", a)
		}
		t.Options = o
	}
	for _, t := range c.Tunnels {
		if t.Options == nil {
			r.warn("tunnel %s: no TunnelOptions entry: AWS defaults assumed", t.OutsideAddress)
		}
	}
	return nil
}

// ReadAll reads a document with the size limit applied.
func ReadAll(rd io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(rd, MaxDocumentSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxDocumentSize {
		return nil, fmt.Errorf("document larger than %d bytes", MaxDocumentSize)
	}
	return b, nil
}
