// Package vpnhook is the firmware's side of the site-to-site VPN: it turns each verified site
// profile's VPN section (provision/profile.VPN, with its PSK references resolved by the
// provisioning agent) into a vpn.Config — the connection ID, BGP ASNs and hold time, the site
// prefixes, and per tunnel the outside address, inside CIDRs, the PSK, AWS's tunnel options
// (seconds become durations) and the TUN device (mrtun1, mrtun2, which the firewall admits) —
// and runs vpn.Connection with it (Service): Start once the WAN has an address (our outside
// address), Update on a new profile or a new WAN address (the connection changes only what
// changed), Stop at shutdown or when a profile drops the VPN. A profile that does not make a
// valid configuration is refused with the field named (vpn's own validation, as the profile's
// "vpn." path) and the configuration in force stays.
//
// The IKE/ESP offer is vpn's: from AWS's allowed algorithm lists it offers the strong ones
// (the concentrator picks the lowest value both sides allow, so offering every allowed
// algorithm would get AES-128-CBC, SHA-1 and DH group 2).
package vpnhook

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"meshroot/provision/profile"
	"meshroot/vpn"
)

// TunnelPrefix is the name prefix of the tunnels' TUN devices (mrtun1, mrtun2); the firewall
// matches it.
const TunnelPrefix = "mrtun"

// Plan is a profile's VPN connection as the engine takes it.
type Plan struct {
	// ProfileVersion is the profile the plan came from.
	ProfileVersion uint64
	// Config is the connection; LocalAddress is left zero (the service sets the WAN's).
	Config vpn.Config
}

// Peers returns the concentrator endpoints' outside addresses (for the firewall).
func (p *Plan) Peers() []netip.Addr {
	var out []netip.Addr
	for _, t := range p.Config.Tunnels {
		out = append(out, t.OutsideAddress)
	}
	return out
}

// PSKs returns the keys, for log redactors.
func (p *Plan) PSKs() []string {
	var out []string
	for _, t := range p.Config.Tunnels {
		out = append(out, string(t.PSK))
	}
	return out
}

func seconds(s int) time.Duration { return time.Duration(s) * time.Second }

// NewPlan builds the plan of a profile's VPN section; secret resolves PSK references. The
// errors name the profile field ("vpn.tunnels[1].psk_ref ...").
func NewPlan(version uint64, v *profile.VPN, secret func(ref string) (string, bool)) (*Plan, error) {
	if v == nil {
		return nil, errors.New("vpn: the profile has no VPN section")
	}
	if v.Type != "ipsec.1" {
		return nil, fmt.Errorf("vpn.type %q: want ipsec.1", v.Type)
	}
	c := vpn.Config{ConnectionID: v.ConnectionID, StaticRoutesOnly: v.StaticRoutesOnly}
	if v.CustomerGatewayAddress != "" {
		a, err := netip.ParseAddr(v.CustomerGatewayAddress)
		if err != nil {
			return nil, fmt.Errorf("vpn.customer_gateway_address %q: %w", v.CustomerGatewayAddress, err)
		}
		c.CustomerGatewayAddress = a
	}
	if v.BGP != nil {
		c.BGP = &vpn.BGP{CustomerASN: v.BGP.CustomerASN, AmazonASN: v.BGP.AmazonASN, HoldTime: seconds(v.BGP.HoldTimeSeconds)}
	}
	for i, s := range v.SitePrefixes {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("vpn.site_prefixes[%d] %q: %w", i, s, err)
		}
		c.SitePrefixes = append(c.SitePrefixes, p)
	}
	for i, s := range v.RemotePrefixes {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("vpn.remote_prefixes[%d] %q: %w", i, s, err)
		}
		c.RemotePrefixes = append(c.RemotePrefixes, p)
	}
	for i, t := range v.Tunnels {
		f := fmt.Sprintf("vpn.tunnels[%d]", i)
		out, err := netip.ParseAddr(t.OutsideAddress)
		if err != nil {
			return nil, fmt.Errorf("%s.outside_address %q: %w", f, t.OutsideAddress, err)
		}
		in4, err := netip.ParsePrefix(t.InsideCIDR)
		if err != nil {
			return nil, fmt.Errorf("%s.inside_cidr %q: %w", f, t.InsideCIDR, err)
		}
		var in6 netip.Prefix
		if t.InsideIPv6CIDR != "" {
			if in6, err = netip.ParsePrefix(t.InsideIPv6CIDR); err != nil {
				return nil, fmt.Errorf("%s.inside_ipv6_cidr %q: %w", f, t.InsideIPv6CIDR, err)
			}
		}
		psk, ok := secret(t.PSKRef)
		if t.PSKRef == "" || !ok || psk == "" {
			return nil, fmt.Errorf("%s.psk_ref %q: not resolved", f, t.PSKRef)
		}
		o := t.Options
		c.Tunnels = append(c.Tunnels, vpn.Tunnel{
			OutsideAddress: out.Unmap(), InsideCIDR: in4, InsideIPv6CIDR: in6, PSK: vpn.Secret(psk),
			Device: fmt.Sprintf("%s%d", TunnelPrefix, i+1),
			Options: vpn.TunnelOptions{
				IKEVersions:                o.IKEVersions,
				Phase1EncryptionAlgorithms: o.Phase1EncryptionAlgorithms, Phase2EncryptionAlgorithms: o.Phase2EncryptionAlgorithms,
				Phase1IntegrityAlgorithms: o.Phase1IntegrityAlgorithms, Phase2IntegrityAlgorithms: o.Phase2IntegrityAlgorithms,
				Phase1DHGroupNumbers: o.Phase1DHGroupNumbers, Phase2DHGroupNumbers: o.Phase2DHGroupNumbers,
				Phase1Lifetime: seconds(o.Phase1LifetimeSeconds), Phase2Lifetime: seconds(o.Phase2LifetimeSeconds),
				RekeyMarginTime: seconds(o.RekeyMarginTimeSeconds), RekeyFuzzPercentage: o.RekeyFuzzPercentage,
				ReplayWindowSize: o.ReplayWindowSize, DPDTimeout: seconds(o.DPDTimeoutSeconds), StartupAction: o.StartupAction,
			},
		})
	}
	if err := c.Validate(); err != nil {
		var fe *vpn.FieldError
		if errors.As(err, &fe) {
			return nil, fmt.Errorf("vpn.%s: %s", fe.Field, fe.Msg)
		}
		return nil, err
	}
	return &Plan{ProfileVersion: version, Config: c}, nil
}
