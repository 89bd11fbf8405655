package awsimport

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	"meshroot/vpn/awsconfig"
)

// describeOptions are the members of a VpnConnection's Options that awsconfig does not keep.
type describeOptions struct {
	RemoteIpv4NetworkCidr string `json:"RemoteIpv4NetworkCidr"`
	RemoteIpv6NetworkCidr string `json:"RemoteIpv6NetworkCidr"`
}

type describeConnection struct {
	VpnConnectionID string           `json:"VpnConnectionId"`
	Options         *describeOptions `json:"Options"`
}

// RemoteNetworks returns the remote (AWS side) network CIDRs a DescribeVpnConnections document
// names for connection connID: Options.RemoteIpv4NetworkCidr and RemoteIpv6NetworkCidr, IPv4
// first, as given (AWS's defaults 0.0.0.0/0 and ::/0 included; the caller decides). It reads the
// shapes awsconfig.Import accepts: the whole output ({"VpnConnections": [...]}, the connection
// with connID, or the only one when connID is empty), one connection ({"VpnConnectionId",
// "Options"}), or an Options object; the bare TunnelOptions array names none.
func RemoteNetworks(doc []byte, connID string) ([]netip.Prefix, error) {
	if len(doc) > awsconfig.MaxDocumentSize {
		return nil, fmt.Errorf("aws options: %d bytes; at most %d", len(doc), awsconfig.MaxDocumentSize)
	}
	doc = bytes.TrimSpace(doc)
	if len(doc) == 0 || doc[0] == '[' {
		return nil, nil
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(doc, &probe); err != nil {
		return nil, fmt.Errorf("aws options: %w", err)
	}
	var opts *describeOptions
	where := "Options"
	switch {
	case probe["VpnConnections"] != nil:
		var conns []describeConnection
		if err := json.Unmarshal(probe["VpnConnections"], &conns); err != nil {
			return nil, fmt.Errorf("aws options: VpnConnections: %w", err)
		}
		found := false
		for i, c := range conns {
			if c.VpnConnectionID == connID || (connID == "" && len(conns) == 1) {
				opts, found = c.Options, true
				where = fmt.Sprintf("VpnConnections[%d].Options", i)
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("aws options: no connection %q among %d in VpnConnections", connID, len(conns))
		}
	case probe["Options"] != nil:
		var c describeConnection
		if err := json.Unmarshal(doc, &c); err != nil {
			return nil, fmt.Errorf("aws options: %w", err)
		}
		opts = c.Options
	default:
		var o describeOptions
		if err := json.Unmarshal(doc, &o); err != nil {
			return nil, fmt.Errorf("aws options: %w", err)
		}
		opts, where = &o, "options"
	}
	if opts == nil {
		return nil, nil
	}
	var out []netip.Prefix
	for _, f := range []struct {
		name, v string
		v4      bool
	}{
		{"RemoteIpv4NetworkCidr", opts.RemoteIpv4NetworkCidr, true},
		{"RemoteIpv6NetworkCidr", opts.RemoteIpv6NetworkCidr, false},
	} {
		s := strings.TrimSpace(f.v)
		if s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil || p.Addr().Is4() != f.v4 {
			fam := "IPv6"
			if f.v4 {
				fam = "IPv4"
			}
			return nil, fmt.Errorf("aws options: %s.%s: %q is not an %s CIDR", where, f.name, f.v, fam)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
