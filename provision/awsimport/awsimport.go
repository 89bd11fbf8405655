// Package awsimport turns an imported AWS VPN connection (vpn/awsconfig) into the VPN section of
// a site profile and the secrets to put in the cloud's secret store. It is the only place where
// the two meet: vpn/awsconfig knows nothing of profiles, and profiles know nothing of AWS's XML.
package awsimport

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"meshroot/provision/profile"
	"meshroot/vpn/awsconfig"
)

// Secret is a value for the cloud's secret store. Value never prints itself.
type Secret struct {
	Ref   string
	Value awsconfig.PSK
}

// Options are what the XML does not say.
type Options struct {
	// SitePrefixes are the site's networks. Required for a BGP connection; for a static one
	// they are added to the connection's static routes (AWS's Routes, which are the site's
	// networks: the routes the concentrator sends into the VPN).
	SitePrefixes []string
	// RemotePrefixes are the concentrator side's networks (the VPC's CIDRs) that a static
	// connection routes into the tunnels, added to those Describe names. Required, one way or
	// the other, for a static connection; refused for a BGP one (BGP learns them).
	RemotePrefixes []string
	// Describe is the DescribeVpnConnections JSON (the document awsconfig.Import merged), or
	// nil. Its Options.RemoteIpv4NetworkCidr and RemoteIpv6NetworkCidr are the remote networks
	// of a static connection unless they are AWS's defaults 0.0.0.0/0 and ::/0 ("everything"),
	// which a router cannot route into a tunnel without losing its own uplink.
	Describe []byte
	// RefPrefix starts every secret reference; default "vpn".
	RefPrefix string
}

// Convert builds the profile's VPN section. Tunnel options missing from the import (no JSON, or
// a field the JSON left out) take AWS's defaults, and each such case is a warning. The PSKs
// become references "<prefix>/<connection id>/<outside address>" — keyed by address, not by
// position — and are returned as secrets; a PSK kept in Secrets Manager (an ARN) is used as its
// own reference, with nothing to store.
func Convert(c *awsconfig.Connection, o Options) (*profile.VPN, []Secret, []string, error) {
	if len(c.Tunnels) != 2 {
		return nil, nil, nil, fmt.Errorf("aws import: %d tunnels; a connection has 2", len(c.Tunnels))
	}
	if c.ID == "" {
		return nil, nil, nil, errors.New("aws import: the connection has no id")
	}
	prefix := o.RefPrefix
	if prefix == "" {
		prefix = "vpn"
	}
	var warnings []string
	v := &profile.VPN{ConnectionID: c.ID, Type: c.Type, StaticRoutesOnly: c.StaticRoutesOnly}
	if a := c.Tunnels[0].CustomerOutsideAddress; a.IsValid() {
		v.CustomerGatewayAddress = a.String()
	}
	if !c.StaticRoutesOnly {
		t0, t1 := c.Tunnels[0], c.Tunnels[1]
		if t0.CustomerASN != t1.CustomerASN || t0.AmazonASN != t1.AmazonASN {
			return nil, nil, nil, fmt.Errorf("aws import: the tunnels disagree on ASNs (%d/%d and %d/%d)", t0.CustomerASN, t0.AmazonASN, t1.CustomerASN, t1.AmazonASN)
		}
		v.BGP = &profile.BGP{CustomerASN: t0.CustomerASN, AmazonASN: t0.AmazonASN, HoldTimeSeconds: t0.HoldTime}
	}
	seen := map[netip.Prefix]bool{}
	addPrefix := func(s string) error {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("aws import: site prefix %q: %w", s, err)
		}
		if !seen[p] {
			seen[p] = true
			v.SitePrefixes = append(v.SitePrefixes, p.String())
		}
		return nil
	}
	for _, p := range c.StaticRoutes {
		addPrefix(p.String())
	}
	for _, s := range o.SitePrefixes {
		if err := addPrefix(s); err != nil {
			return nil, nil, nil, err
		}
	}
	if len(v.SitePrefixes) == 0 {
		return nil, nil, nil, errors.New("aws import: no site prefixes: the XML does not list the site's networks; give them (--prefix)")
	}
	remote, rw, err := remotePrefixes(c, o)
	warnings = append(warnings, rw...)
	if err != nil {
		return nil, nil, warnings, err
	}
	v.RemotePrefixes = remote
	var secrets []Secret
	for _, t := range c.Tunnels {
		pt := profile.Tunnel{OutsideAddress: t.OutsideAddress.String(), InsideCIDR: t.InsideCIDR.String()}
		if t.InsideIPv6CIDR.IsValid() {
			pt.InsideIPv6CIDR = t.InsideIPv6CIDR.String()
		}
		if t.PSK.IsARN() {
			pt.PSKRef = t.PSK.Reveal()
			warnings = append(warnings, fmt.Sprintf("tunnel %s: the PSK is in Secrets Manager: store its value in the cloud under %s", t.OutsideAddress, pt.PSKRef))
		} else {
			pt.PSKRef = fmt.Sprintf("%s/%s/%s", prefix, c.ID, t.OutsideAddress)
			secrets = append(secrets, Secret{Ref: pt.PSKRef, Value: t.PSK})
		}
		var defaulted []string
		pt.Options, defaulted = options(t.Options)
		if len(defaulted) > 0 {
			warnings = append(warnings, fmt.Sprintf("tunnel %s: AWS defaults for %v", t.OutsideAddress, defaulted))
		}
		v.Tunnels = append(v.Tunnels, pt)
	}
	if err := v.Validate(); err != nil {
		return nil, nil, warnings, fmt.Errorf("aws import: %w", err)
	}
	return v, secrets, warnings, nil
}

// remotePrefixes gathers a static connection's remote networks: the JSON's, then the
// operator's, without duplicates.
func remotePrefixes(c *awsconfig.Connection, o Options) ([]string, []string, error) {
	var fromJSON []netip.Prefix
	var warnings []string
	if len(o.Describe) > 0 {
		nets, err := RemoteNetworks(o.Describe, c.ID)
		if err != nil {
			return nil, nil, fmt.Errorf("aws import: %w", err)
		}
		for _, p := range nets {
			if p.Bits() == 0 {
				if c.StaticRoutesOnly {
					warnings = append(warnings, fmt.Sprintf("the connection's remote network is %s (AWS's default, everything): not routed into the tunnels; give the VPC's networks (--remote-prefix)", p))
				}
				continue
			}
			fromJSON = append(fromJSON, p)
		}
	}
	if !c.StaticRoutesOnly {
		if len(o.RemotePrefixes) > 0 {
			return nil, warnings, errors.New("aws import: remote prefixes are only for a static connection; this one runs BGP, which learns the remote networks")
		}
		return nil, warnings, nil
	}
	var out []string
	seen := map[netip.Prefix]bool{}
	for _, p := range fromJSON {
		if !seen[p] {
			seen[p] = true
			out = append(out, p.String())
		}
	}
	for _, s := range o.RemotePrefixes {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, warnings, fmt.Errorf("aws import: remote prefix %q: want a CIDR such as 10.0.0.0/16", s)
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p.String())
		}
	}
	if len(out) == 0 {
		return nil, warnings, errors.New("aws import: static connection without remote prefixes: neither the XML nor AWS's options name the VPC's networks; give them (--remote-prefix)")
	}
	return out, warnings, nil
}

// options fills the profile's options from the import, with AWS defaults for what is missing.
func options(o *awsconfig.TunnelOptions) (profile.TunnelOptions, []string) {
	d := profile.DefaultTunnelOptions()
	if o == nil {
		return d, []string{"all options (no TunnelOptions)"}
	}
	var defaulted []string
	strs := func(name string, got []string, dst *[]string) {
		if len(got) == 0 {
			defaulted = append(defaulted, name)
			return
		}
		*dst = slices.Clone(got)
	}
	ints := func(name string, got []int, dst *[]int) {
		if len(got) == 0 {
			defaulted = append(defaulted, name)
			return
		}
		*dst = slices.Clone(got)
	}
	num := func(name string, got *int, dst *int) {
		if got == nil {
			defaulted = append(defaulted, name)
			return
		}
		*dst = *got
	}
	str := func(name, got string, dst *string) {
		if got == "" {
			defaulted = append(defaulted, name)
			return
		}
		*dst = got
	}
	strs("ike_versions", o.IKEVersions, &d.IKEVersions)
	strs("phase1_encryption_algorithms", o.Phase1EncryptionAlgorithms, &d.Phase1EncryptionAlgorithms)
	strs("phase2_encryption_algorithms", o.Phase2EncryptionAlgorithms, &d.Phase2EncryptionAlgorithms)
	strs("phase1_integrity_algorithms", o.Phase1IntegrityAlgorithms, &d.Phase1IntegrityAlgorithms)
	strs("phase2_integrity_algorithms", o.Phase2IntegrityAlgorithms, &d.Phase2IntegrityAlgorithms)
	ints("phase1_dh_group_numbers", o.Phase1DHGroupNumbers, &d.Phase1DHGroupNumbers)
	ints("phase2_dh_group_numbers", o.Phase2DHGroupNumbers, &d.Phase2DHGroupNumbers)
	num("phase1_lifetime_s", o.Phase1LifetimeSeconds, &d.Phase1LifetimeSeconds)
	num("phase2_lifetime_s", o.Phase2LifetimeSeconds, &d.Phase2LifetimeSeconds)
	num("rekey_margin_time_s", o.RekeyMarginTimeSeconds, &d.RekeyMarginTimeSeconds)
	num("rekey_fuzz_percentage", o.RekeyFuzzPercentage, &d.RekeyFuzzPercentage)
	num("replay_window_size", o.ReplayWindowSize, &d.ReplayWindowSize)
	num("dpd_timeout_s", o.DPDTimeoutSeconds, &d.DPDTimeoutSeconds)
	str("dpd_timeout_action", o.DPDTimeoutAction, &d.DPDTimeoutAction)
	str("startup_action", o.StartupAction, &d.StartupAction)
	return d, defaulted
}
