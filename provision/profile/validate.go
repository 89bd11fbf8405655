package profile

import (
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// FieldError is one invalid field.
type FieldError struct {
	// Field is the JSON path, e.g. "vpn.tunnels[1].inside_cidr".
	Field string
	// Msg says what is wrong with it.
	Msg string
}

func (e FieldError) Error() string { return e.Field + ": " + e.Msg }

// FieldErrors is every invalid field of a document.
type FieldErrors []FieldError

func (es FieldErrors) Error() string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "; ")
}

type checker struct{ errs FieldErrors }

func (c *checker) add(field, format string, args ...any) {
	c.errs = append(c.errs, FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (c *checker) err() error {
	if len(c.errs) == 0 {
		return nil
	}
	return c.errs
}

var (
	reSiteID    = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	reSerial    = regexp.MustCompile(`^[A-Z0-9-]{1,32}$`)
	reCountry   = regexp.MustCompile(`^[A-Z]{2}$`)
	reChannel   = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,31}$`)
	reSecretRef = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/@+=-]{0,255}$`)
	reConnID    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]{0,63}$`)
	reMeshID    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$`)
)

// AWS's reserved tunnel inside CIDRs (VPNTunnels, "Inside tunnel IPv4 CIDR").
var awsReservedInside = []netip.Prefix{
	netip.MustParsePrefix("169.254.0.0/30"),
	netip.MustParsePrefix("169.254.1.0/30"),
	netip.MustParsePrefix("169.254.2.0/30"),
	netip.MustParsePrefix("169.254.3.0/30"),
	netip.MustParsePrefix("169.254.4.0/30"),
	netip.MustParsePrefix("169.254.5.0/30"),
	netip.MustParsePrefix("169.254.169.252/30"),
}

var (
	linkLocal4 = netip.MustParsePrefix("169.254.0.0/16")
	ula6       = netip.MustParsePrefix("fd00::/8")
)

// ASNs AWS refuses for a customer gateway: 7224 everywhere, 9059, 10124 and 17943 in some
// Regions (a device does not know the Region, so all four are refused).
var awsReservedASNs = map[uint32]string{
	7224:  "reserved by AWS in all Regions",
	9059:  "reserved by AWS (eu-west-1)",
	10124: "reserved by AWS (ap-northeast-1)",
	17943: "reserved by AWS (ap-southeast-1)",
}

var (
	encAlgs    = []string{"AES128", "AES256", "AES128-GCM-16", "AES256-GCM-16"}
	integAlgs  = []string{"SHA1", "SHA2-256", "SHA2-384", "SHA2-512"}
	ikeVers    = []string{"ikev1", "ikev2"}
	dhPhase1   = []int{2, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24}
	dhPhase2   = []int{2, 5, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24}
	dpdActions = []string{"clear", "none", "restart"}
	startups   = []string{"add", "start"}
	securities = []string{"wpa3-sae", "wpa2-psk", "wpa2-wpa3"}
	bands      = []string{"2.4GHz", "5GHz", "6GHz"}
	backhauls  = []string{"auto", "wired", "wireless"}
	levels     = []string{"debug", "info", "warn", "error"}
)

// MaxSitePrefixes is the number of prefixes a site may advertise (AWS: 1,000 CGW→TGW; a
// virtual private gateway accepts only 100).
const MaxSitePrefixes = 1000

// MaxRemotePrefixes is the number of remote networks a static connection may route into its
// tunnels (the device installs each as a kernel route per tunnel).
const MaxRemotePrefixes = 1000

// Validate checks every field of the profile and returns FieldErrors naming each invalid one.
// It does not check signatures, versions against a stored profile or expiry (see Verify).
func (p *Profile) Validate() error {
	c := &checker{}
	if p.SchemaVersion != SchemaVersion {
		c.add("schema_version", "%d; want %d", p.SchemaVersion, SchemaVersion)
	}
	if p.Version == 0 {
		c.add("version", "must be at least 1")
	}
	if p.IssuedAt.IsZero() {
		c.add("issued_at", "missing")
	}
	if p.ExpiresAt.IsZero() {
		c.add("expires_at", "missing")
	} else if !p.ExpiresAt.After(p.IssuedAt) {
		c.add("expires_at", "%s is not after issued_at %s", p.ExpiresAt.Format(timeFmt), p.IssuedAt.Format(timeFmt))
	}
	if !reSiteID.MatchString(p.Site.ID) {
		c.add("site.id", "%q; want 1-63 of a-z, 0-9, '-'", p.Site.ID)
	}
	if n := len(p.Site.Name); n == 0 || n > 64 {
		c.add("site.name", "%d bytes; want 1-64", n)
	}
	if p.Device != "" && !reSerial.MatchString(p.Device) {
		c.add("device", "%q is not a serial number", p.Device)
	}
	if !reCountry.MatchString(p.Country) {
		c.add("country", "%q; want an ISO 3166-1 alpha-2 code such as DE", p.Country)
	}
	if n := len(p.WiFi.SSID); n == 0 || n > 32 {
		c.add("wifi.ssid", "%d bytes; want 1-32", n)
	}
	if !slices.Contains(securities, p.WiFi.Security) {
		c.add("wifi.security", "%q; want one of %s", p.WiFi.Security, strings.Join(securities, ", "))
	}
	c.ref("wifi.passphrase_ref", p.WiFi.PassphraseRef, false)
	for i, b := range p.WiFi.Bands {
		if !slices.Contains(bands, b) {
			c.add(fmt.Sprintf("wifi.bands[%d]", i), "%q; want one of %s", b, strings.Join(bands, ", "))
		}
	}
	if !reMeshID.MatchString(p.Mesh.ID) {
		c.add("mesh.id", "%q; want 1-32 of A-Z, a-z, 0-9, '.', '_', '-'", p.Mesh.ID)
	}
	if !slices.Contains(backhauls, p.Mesh.Backhaul) {
		c.add("mesh.backhaul", "%q; want one of %s", p.Mesh.Backhaul, strings.Join(backhauls, ", "))
	}
	c.ref("mesh.key_ref", p.Mesh.KeyRef, p.Mesh.Backhaul != "wired")
	if !reChannel.MatchString(p.OTA.Channel) {
		c.add("ota.channel", "%q; want a channel name such as stable", p.OTA.Channel)
	}
	c.url("ota.repository_url", p.OTA.RepositoryURL)
	c.url("logs.endpoint", p.Logs.Endpoint)
	if !slices.Contains(levels, p.Logs.Level) {
		c.add("logs.level", "%q; want one of %s", p.Logs.Level, strings.Join(levels, ", "))
	}
	if p.VPN != nil {
		p.VPN.validate(c, "vpn")
	}
	return c.err()
}

const timeFmt = "2006-01-02T15:04:05Z07:00"

func (c *checker) ref(field, ref string, required bool) {
	if ref == "" {
		if required {
			c.add(field, "missing")
		}
		return
	}
	if !reSecretRef.MatchString(ref) {
		c.add(field, "%q is not a secret reference", ref)
	}
}

func (c *checker) url(field, s string) {
	if s == "" {
		return
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		c.add(field, "%q; want an absolute http(s) URL", s)
	}
}

// Validate checks the VPN section alone; field names start at "vpn".
func (v *VPN) Validate() error {
	c := &checker{}
	v.validate(c, "vpn")
	return c.err()
}

func (v *VPN) validate(c *checker, f string) {
	if !reConnID.MatchString(v.ConnectionID) {
		c.add(f+".connection_id", "%q; want a connection id such as vpn-0123456789abcdef0", v.ConnectionID)
	}
	if v.Type != "ipsec.1" {
		c.add(f+".type", "%q; want ipsec.1", v.Type)
	}
	if v.CustomerGatewayAddress != "" {
		if _, err := netip.ParseAddr(v.CustomerGatewayAddress); err != nil {
			c.add(f+".customer_gateway_address", "%q is not an IP address", v.CustomerGatewayAddress)
		}
	}
	switch {
	case v.StaticRoutesOnly && v.BGP != nil:
		c.add(f+".bgp", "must be omitted when static_routes_only is true")
	case !v.StaticRoutesOnly && v.BGP == nil:
		c.add(f+".bgp", "missing (required unless static_routes_only is true)")
	case v.BGP != nil:
		b := v.BGP
		if b.CustomerASN == 0 {
			c.add(f+".bgp.customer_asn", "missing; want 1-4294967295")
		} else if why, ok := awsReservedASNs[b.CustomerASN]; ok {
			c.add(f+".bgp.customer_asn", "%d is %s", b.CustomerASN, why)
		}
		if b.AmazonASN == 0 {
			c.add(f+".bgp.amazon_asn", "missing (AWS default 64512)")
		} else if b.AmazonASN == b.CustomerASN {
			c.add(f+".bgp.amazon_asn", "%d equals customer_asn: the tunnels run eBGP", b.AmazonASN)
		}
		if b.HoldTimeSeconds < 3 || b.HoldTimeSeconds > 65535 {
			c.add(f+".bgp.hold_time_s", "%d; want 3-65535 (AWS uses 30)", b.HoldTimeSeconds)
		}
	}
	if len(v.SitePrefixes) == 0 {
		c.add(f+".site_prefixes", "missing; want the site's networks")
	}
	if len(v.SitePrefixes) > MaxSitePrefixes {
		c.add(f+".site_prefixes", "%d prefixes; at most %d", len(v.SitePrefixes), MaxSitePrefixes)
	}
	site := checkPrefixes(c, f+".site_prefixes", v.SitePrefixes, "site prefix")
	switch {
	case v.StaticRoutesOnly && len(v.RemotePrefixes) == 0:
		c.add(f+".remote_prefixes", "missing; a static connection routes the concentrator side's networks (AWS RemoteIpv4NetworkCidr/RemoteIpv6NetworkCidr) into the tunnels")
	case !v.StaticRoutesOnly && len(v.RemotePrefixes) > 0:
		c.add(f+".remote_prefixes", "only for static_routes_only (BGP learns the remote networks)")
	case len(v.RemotePrefixes) > MaxRemotePrefixes:
		c.add(f+".remote_prefixes", "%d prefixes; at most %d", len(v.RemotePrefixes), MaxRemotePrefixes)
	}
	remote := checkPrefixes(c, f+".remote_prefixes", v.RemotePrefixes, "remote network")
	for _, r := range remote {
		for _, l := range site {
			if r.p.Overlaps(l.p) {
				c.add(fmt.Sprintf("%s.remote_prefixes[%d]", f, r.i), "%s overlaps site_prefixes[%d] %s (the site's own network would be routed into the tunnels)", r.p, l.i, l.p)
				break
			}
		}
	}
	if len(v.Tunnels) != 2 {
		c.add(f+".tunnels", "%d tunnels; want 2", len(v.Tunnels))
	}
	var outs []netip.Addr
	var insides []netip.Prefix
	for i := range v.Tunnels {
		ft := fmt.Sprintf("%s.tunnels[%d]", f, i)
		t := &v.Tunnels[i]
		if a, ok := checkOutside(c, ft+".outside_address", t.OutsideAddress); ok {
			for j, o := range outs {
				if o == a {
					c.add(ft+".outside_address", "%s is also tunnels[%d]'s", a, j)
				} else if o.Is4() != a.Is4() {
					c.add(ft+".outside_address", "%s: both tunnels must use the same address family", a)
				}
			}
			outs = append(outs, a)
		}
		if pf, ok := checkInside4(c, ft+".inside_cidr", t.InsideCIDR); ok {
			for j, o := range insides {
				if o.Overlaps(pf) {
					c.add(ft+".inside_cidr", "%s overlaps tunnels[%d]'s %s", pf, j, o)
				}
			}
			insides = append(insides, pf)
		}
		if t.InsideIPv6CIDR != "" {
			checkInside6(c, ft+".inside_ipv6_cidr", t.InsideIPv6CIDR)
		}
		if t.PSKRef == "" {
			c.add(ft+".psk_ref", "missing; the PSK is referenced, never inlined")
		} else {
			c.ref(ft+".psk_ref", t.PSKRef, true)
		}
		t.Options.validate(c, ft+".options")
	}
}

// indexedPrefix is a valid prefix of a list and its index there.
type indexedPrefix struct {
	i int
	p netip.Prefix
}

var linkLocal6 = netip.MustParsePrefix("fe80::/10")

// checkPrefixes checks a list of network prefixes (field f, entries f[i]) and returns the valid
// ones: CIDR notation without host bits, not a default route, not in the tunnels' inside range
// or IPv6 link-local, no duplicates.
func checkPrefixes(c *checker, f string, list []string, what string) []indexedPrefix {
	var ok []indexedPrefix
	seen := map[netip.Prefix]bool{}
	for i, s := range list {
		fi := fmt.Sprintf("%s[%d]", f, i)
		pf, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			c.add(fi, "%q is not a CIDR prefix", s)
			continue
		case pf != pf.Masked():
			c.add(fi, "%s has host bits set (want %s)", s, pf.Masked())
		case pf.Bits() == 0:
			c.add(fi, "%s is a default route, not a %s", s, what)
		case pf.Overlaps(linkLocal4):
			c.add(fi, "%s overlaps 169.254.0.0/16 (the tunnel inside range)", s)
		case pf.Overlaps(linkLocal6):
			c.add(fi, "%s overlaps fe80::/10 (link-local)", s)
		case seen[pf]:
			c.add(fi, "%s is listed twice", s)
		default:
			ok = append(ok, indexedPrefix{i, pf})
		}
		seen[pf] = true
	}
	return ok
}

func checkOutside(c *checker, f, s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		c.add(f, "%q is not an IP address", s)
		return a, false
	}
	if a.Zone() != "" || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() {
		c.add(f, "%s cannot be a tunnel endpoint", s)
		return a, false
	}
	return a.Unmap(), true
}

func checkInside4(c *checker, f, s string) (netip.Prefix, bool) {
	pf, err := netip.ParsePrefix(s)
	switch {
	case err != nil || !pf.Addr().Is4():
		c.add(f, "%q is not an IPv4 CIDR", s)
	case pf.Bits() != 30:
		c.add(f, "%s is a /%d; want a /30", s, pf.Bits())
	case pf != pf.Masked():
		c.add(f, "%s is not a network address (want %s)", s, pf.Masked())
	case !linkLocal4.Contains(pf.Addr()):
		c.add(f, "%s is outside 169.254.0.0/16", s)
	default:
		for _, r := range awsReservedInside {
			if r == pf {
				c.add(f, "%s is reserved by AWS", s)
				return pf, false
			}
		}
		return pf, true
	}
	return pf, false
}

func checkInside6(c *checker, f, s string) {
	pf, err := netip.ParsePrefix(s)
	switch {
	case err != nil || !pf.Addr().Is6() || pf.Addr().Is4In6():
		c.add(f, "%q is not an IPv6 CIDR", s)
	case pf.Bits() != 126:
		c.add(f, "%s is a /%d; want a /126", s, pf.Bits())
	case pf != pf.Masked():
		c.add(f, "%s is not a network address (want %s)", s, pf.Masked())
	case !ula6.Contains(pf.Addr()):
		c.add(f, "%s is outside fd00::/8", s)
	}
}

// Validate checks the options alone; field names start at "options".
func (o *TunnelOptions) Validate() error {
	c := &checker{}
	o.validate(c, "options")
	return c.err()
}

func (o *TunnelOptions) validate(c *checker, f string) {
	strList(c, f+".ike_versions", o.IKEVersions, ikeVers)
	strList(c, f+".phase1_encryption_algorithms", o.Phase1EncryptionAlgorithms, encAlgs)
	strList(c, f+".phase2_encryption_algorithms", o.Phase2EncryptionAlgorithms, encAlgs)
	strList(c, f+".phase1_integrity_algorithms", o.Phase1IntegrityAlgorithms, integAlgs)
	strList(c, f+".phase2_integrity_algorithms", o.Phase2IntegrityAlgorithms, integAlgs)
	intList(c, f+".phase1_dh_group_numbers", o.Phase1DHGroupNumbers, dhPhase1)
	intList(c, f+".phase2_dh_group_numbers", o.Phase2DHGroupNumbers, dhPhase2)
	if o.Phase1LifetimeSeconds < 900 || o.Phase1LifetimeSeconds > 28800 {
		c.add(f+".phase1_lifetime_s", "%d; want 900-28800", o.Phase1LifetimeSeconds)
	}
	if o.Phase2LifetimeSeconds < 900 || o.Phase2LifetimeSeconds > 3600 {
		c.add(f+".phase2_lifetime_s", "%d; want 900-3600", o.Phase2LifetimeSeconds)
	} else if o.Phase2LifetimeSeconds >= o.Phase1LifetimeSeconds {
		c.add(f+".phase2_lifetime_s", "%d; must be less than phase1_lifetime_s %d", o.Phase2LifetimeSeconds, o.Phase1LifetimeSeconds)
	}
	if half := o.Phase2LifetimeSeconds / 2; o.RekeyMarginTimeSeconds < 60 || o.RekeyMarginTimeSeconds > max(half, 60) {
		c.add(f+".rekey_margin_time_s", "%d; want 60 to half of phase2_lifetime_s (%d)", o.RekeyMarginTimeSeconds, half)
	}
	if o.RekeyFuzzPercentage < 0 || o.RekeyFuzzPercentage > 100 {
		c.add(f+".rekey_fuzz_percentage", "%d; want 0-100", o.RekeyFuzzPercentage)
	}
	if o.ReplayWindowSize < 64 || o.ReplayWindowSize > 2048 {
		c.add(f+".replay_window_size", "%d; want 64-2048", o.ReplayWindowSize)
	}
	if o.DPDTimeoutSeconds < 30 {
		c.add(f+".dpd_timeout_s", "%d; want at least 30", o.DPDTimeoutSeconds)
	}
	if !slices.Contains(dpdActions, o.DPDTimeoutAction) {
		c.add(f+".dpd_timeout_action", "%q; want one of %s", o.DPDTimeoutAction, strings.Join(dpdActions, ", "))
	}
	if !slices.Contains(startups, o.StartupAction) {
		c.add(f+".startup_action", "%q; want one of %s", o.StartupAction, strings.Join(startups, ", "))
	}
	if o.StartupAction == "start" && len(o.IKEVersions) > 0 && !slices.Contains(o.IKEVersions, "ikev2") {
		c.add(f+".startup_action", "start needs ikev2 in ike_versions (AWS initiates with IKEv2 only)")
	}
}

func strList(c *checker, f string, got, allowed []string) {
	if len(got) == 0 {
		c.add(f, "empty; want some of %s", strings.Join(allowed, ", "))
		return
	}
	seen := map[string]bool{}
	for i, s := range got {
		if !slices.Contains(allowed, s) {
			c.add(fmt.Sprintf("%s[%d]", f, i), "%q; want one of %s", s, strings.Join(allowed, ", "))
		} else if seen[s] {
			c.add(fmt.Sprintf("%s[%d]", f, i), "%q is listed twice", s)
		}
		seen[s] = true
	}
}

func intList(c *checker, f string, got, allowed []int) {
	if len(got) == 0 {
		c.add(f, "empty; want some of %v", allowed)
		return
	}
	seen := map[int]bool{}
	for i, n := range got {
		if !slices.Contains(allowed, n) {
			c.add(fmt.Sprintf("%s[%d]", f, i), "%d; want one of %v", n, allowed)
		} else if seen[n] {
			c.add(fmt.Sprintf("%s[%d]", f, i), "%d is listed twice", n)
		}
		seen[n] = true
	}
}
