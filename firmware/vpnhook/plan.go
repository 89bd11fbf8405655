// Package vpnhook is the firmware's side of the site-to-site VPN: it turns each verified site
// profile's VPN section (provision/profile.VPN, with its PSK references resolved by the
// provisioning agent) into a Plan — everything the VPN engine needs, in the engine's terms:
// outside and inside addresses, TUN device names, IKE/ESP proposals in strongSwan notation
// from AWS's TunnelOptions, lifetimes, DPD, BGP ASNs, the site prefixes — and runs the engine
// with it (Service): Start on the first plan, Update on later ones, Stop at shutdown. A profile
// that does not make a valid plan is refused with the field named and the plan in force stays.
//
// The engine is vpn.Connection (issue 4), which is not in this build yet: NewEngine is nil, and
// the service says so ("vpn: not available in this build") and reports the state
// "unavailable" — it never pretends a tunnel is up. The Plan is built and validated all the
// same, so the firewall already admits IKE from the profile's endpoints and the mapping is
// tested; wiring the engine is one adapter from Plan to vpn.Config (see NewEngine).
package vpnhook

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"meshroot/firmware"
	"meshroot/provision/profile"
	"meshroot/vpn/ike"
)

// TunnelPrefix is the name prefix of the tunnels' TUN devices (mrtun1, mrtun2); the firewall
// matches it.
const TunnelPrefix = "mrtun"

// Tunnel is one tunnel of the plan.
type Tunnel struct {
	// Name is "tunnel1" or "tunnel2" (profile order); Device its TUN device.
	Name, Device string
	// Outside is the concentrator endpoint's outside address.
	Outside netip.Addr
	// LocalInside4 is the site's inside address with its /30; PeerInside4 the concentrator's.
	LocalInside4 netip.Prefix
	PeerInside4  netip.Addr
	// LocalInside6 and PeerInside6 are the optional /126 pair.
	LocalInside6 netip.Prefix
	PeerInside6  netip.Addr
	// PSK is the resolved pre-shared key (never printed).
	PSK firmware.Secret
	// IKEProposals and ESPProposals in strongSwan notation (AEAD first when offered).
	IKEProposals, ESPProposals []string
	// Lifetimes and rekeying as AWS defines them.
	IKELifetime, ChildLifetime, RekeyMargin time.Duration
	RekeyFuzz                               int
	ReplayWindow                            int
	// DPDTimeout and DPDAction ("clear", "restart", "none"); StartAction "add" or "start".
	DPDTimeout             time.Duration
	DPDAction, StartAction string
}

// Plan is a profile's VPN connection ready for the engine.
type Plan struct {
	// ProfileVersion is the profile the plan came from.
	ProfileVersion uint64
	ConnectionID   string
	// Static is the non-BGP connection type (SitePrefixes routed into both tunnels).
	Static bool
	// LocalASN, PeerASN and HoldTime are the BGP session's (zero in static mode).
	LocalASN, PeerASN uint32
	HoldTime          time.Duration
	// SitePrefixes are advertised over BGP (or routed statically).
	SitePrefixes []netip.Prefix
	Tunnels      []Tunnel
}

// Peers returns the concentrator endpoints' outside addresses (for the firewall).
func (p *Plan) Peers() []netip.Addr {
	var out []netip.Addr
	for _, t := range p.Tunnels {
		out = append(out, t.Outside)
	}
	return out
}

// PSKs returns the keys, for log redactors.
func (p *Plan) PSKs() []string {
	var out []string
	for _, t := range p.Tunnels {
		out = append(out, string(t.PSK))
	}
	return out
}

var (
	encNames = map[string]string{"AES128": "aes128", "AES256": "aes256", "AES128-GCM-16": "aes128gcm16", "AES256-GCM-16": "aes256gcm16"}
	intNames = map[string]string{"SHA1": "sha1", "SHA2-256": "sha256", "SHA2-384": "sha384", "SHA2-512": "sha512"}
	dhNames  = map[int]string{2: "modp1024", 5: "modp1536", 14: "modp2048", 15: "modp3072", 16: "modp4096", 17: "modp6144",
		18: "modp8192", 19: "ecp256", 20: "ecp384", 21: "ecp521", 22: "modp1024s160", 23: "modp2048s224", 24: "modp2048s256"}
)

// Proposals maps AWS's algorithm lists to strongSwan proposals: one AEAD proposal (GCM
// ciphers, with PRFs for IKE) and one classic proposal (CBC ciphers with integrity), each with
// every allowed DH group; for ESP the groups are PFS groups (none: no PFS). field names the
// options for errors ("phase1", "phase2").
func Proposals(field string, encs, integs []string, groups []int, isIKE bool) ([]string, error) {
	var aead, cbc, integ, prf, dh []string
	for i, e := range encs {
		n, ok := encNames[e]
		if !ok {
			return nil, fmt.Errorf("%s_encryption_algorithms[%d] %q: unknown", field, i, e)
		}
		if strings.Contains(n, "gcm") {
			aead = append(aead, n)
		} else {
			cbc = append(cbc, n)
		}
	}
	for i, a := range integs {
		n, ok := intNames[a]
		if !ok {
			return nil, fmt.Errorf("%s_integrity_algorithms[%d] %q: unknown", field, i, a)
		}
		integ = append(integ, n)
		prf = append(prf, "prf"+n)
	}
	for i, g := range groups {
		n, ok := dhNames[g]
		if !ok {
			return nil, fmt.Errorf("%s_dh_group_numbers[%d] %d: unknown", field, i, g)
		}
		dh = append(dh, n)
	}
	if isIKE && len(dh) == 0 {
		return nil, fmt.Errorf("%s_dh_group_numbers: empty (IKE needs a DH group)", field)
	}
	var out []string
	if len(aead) > 0 {
		parts := slices.Clone(aead)
		if isIKE {
			if len(prf) == 0 {
				return nil, fmt.Errorf("%s_integrity_algorithms: empty (an AEAD IKE proposal needs a PRF)", field)
			}
			parts = append(parts, prf...)
		}
		out = append(out, strings.Join(append(parts, dh...), "-"))
	}
	if len(cbc) > 0 {
		if len(integ) == 0 {
			return nil, fmt.Errorf("%s_integrity_algorithms: empty (AES-CBC needs integrity)", field)
		}
		out = append(out, strings.Join(append(append(slices.Clone(cbc), integ...), dh...), "-"))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s_encryption_algorithms: empty", field)
	}
	for _, p := range out {
		if _, err := ike.ParseProposal(p); err != nil { // the engine's own parser
			return nil, fmt.Errorf("%s proposal %q: %w", field, p, err)
		}
	}
	return out, nil
}

// insidePair returns the site's address (second host, with the prefix length) and the
// concentrator's (first host) of an inside /30 or /126.
func insidePair(field, cidr string, bits int) (netip.Prefix, netip.Addr, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil || p.Bits() != bits || p.Masked() != p {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("%s %q: want a /%d network", field, cidr, bits)
	}
	peer := p.Addr().Next()
	return netip.PrefixFrom(peer.Next(), bits), peer, nil
}

// NewPlan builds the plan of a profile's VPN section; secret resolves PSK references. The
// errors name the profile field.
func NewPlan(version uint64, v *profile.VPN, secret func(ref string) (string, bool)) (*Plan, error) {
	if v == nil {
		return nil, errors.New("vpn: the profile has no VPN section")
	}
	if v.Type != "ipsec.1" {
		return nil, fmt.Errorf("vpn.type %q: want ipsec.1", v.Type)
	}
	if len(v.Tunnels) != 2 {
		return nil, fmt.Errorf("vpn.tunnels: %d tunnels; want 2", len(v.Tunnels))
	}
	p := &Plan{ProfileVersion: version, ConnectionID: v.ConnectionID, Static: v.StaticRoutesOnly}
	if !p.Static {
		if v.BGP == nil {
			return nil, errors.New("vpn.bgp: required unless static_routes_only")
		}
		p.LocalASN, p.PeerASN = v.BGP.CustomerASN, v.BGP.AmazonASN
		p.HoldTime = time.Duration(v.BGP.HoldTimeSeconds) * time.Second
		if p.HoldTime == 0 {
			p.HoldTime = 30 * time.Second
		}
		if p.LocalASN == 0 || p.PeerASN == 0 || p.LocalASN == p.PeerASN {
			return nil, fmt.Errorf("vpn.bgp: ASNs %d and %d: want two different non-zero ASNs", p.LocalASN, p.PeerASN)
		}
	}
	for i, s := range v.SitePrefixes {
		pf, err := netip.ParsePrefix(s)
		if err != nil || pf.Masked() != pf {
			return nil, fmt.Errorf("vpn.site_prefixes[%d] %q: want a network prefix", i, s)
		}
		p.SitePrefixes = append(p.SitePrefixes, pf)
	}
	for i, t := range v.Tunnels {
		f := fmt.Sprintf("vpn.tunnels[%d]", i)
		out, err := netip.ParseAddr(t.OutsideAddress)
		if err != nil || out.IsUnspecified() || out.IsLoopback() || out.IsMulticast() {
			return nil, fmt.Errorf("%s.outside_address %q: want a unicast address", f, t.OutsideAddress)
		}
		tun := Tunnel{Name: fmt.Sprintf("tunnel%d", i+1), Device: fmt.Sprintf("%s%d", TunnelPrefix, i+1), Outside: out.Unmap()}
		if tun.LocalInside4, tun.PeerInside4, err = insidePair(f+".inside_cidr", t.InsideCIDR, 30); err != nil {
			return nil, err
		}
		if t.InsideIPv6CIDR != "" {
			if tun.LocalInside6, tun.PeerInside6, err = insidePair(f+".inside_ipv6_cidr", t.InsideIPv6CIDR, 126); err != nil {
				return nil, err
			}
		}
		psk, ok := secret(t.PSKRef)
		if t.PSKRef == "" || !ok || psk == "" {
			return nil, fmt.Errorf("%s.psk_ref %q: not resolved", f, t.PSKRef)
		}
		tun.PSK = firmware.Secret(psk)
		o := t.Options
		if !slices.Contains(o.IKEVersions, "ikev2") {
			return nil, fmt.Errorf("%s.options.ike_versions %q: this firmware speaks IKEv2 only", f, o.IKEVersions)
		}
		if tun.IKEProposals, err = Proposals(f+".options.phase1", o.Phase1EncryptionAlgorithms, o.Phase1IntegrityAlgorithms, o.Phase1DHGroupNumbers, true); err != nil {
			return nil, err
		}
		if tun.ESPProposals, err = Proposals(f+".options.phase2", o.Phase2EncryptionAlgorithms, o.Phase2IntegrityAlgorithms, o.Phase2DHGroupNumbers, false); err != nil {
			return nil, err
		}
		tun.IKELifetime = time.Duration(o.Phase1LifetimeSeconds) * time.Second
		tun.ChildLifetime = time.Duration(o.Phase2LifetimeSeconds) * time.Second
		tun.RekeyMargin = time.Duration(o.RekeyMarginTimeSeconds) * time.Second
		tun.RekeyFuzz, tun.ReplayWindow = o.RekeyFuzzPercentage, o.ReplayWindowSize
		tun.DPDTimeout = time.Duration(o.DPDTimeoutSeconds) * time.Second
		tun.DPDAction, tun.StartAction = o.DPDTimeoutAction, o.StartupAction
		if tun.ChildLifetime <= 0 || tun.IKELifetime <= tun.ChildLifetime || tun.RekeyMargin <= 0 || tun.RekeyMargin >= tun.ChildLifetime {
			return nil, fmt.Errorf("%s.options: lifetimes %v/%v, rekey margin %v: want margin < phase 2 < phase 1", f, tun.IKELifetime, tun.ChildLifetime, tun.RekeyMargin)
		}
		p.Tunnels = append(p.Tunnels, tun)
	}
	if p.Tunnels[0].Outside == p.Tunnels[1].Outside {
		return nil, fmt.Errorf("vpn.tunnels: both tunnels go to %s", p.Tunnels[0].Outside)
	}
	return p, nil
}
