package awsimport

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"meshroot/provision/profile"
	"meshroot/vpn/awsconfig"
)

func load(t *testing.T, x, o string) *awsconfig.Connection {
	t.Helper()
	dir := filepath.Join("..", "..", "vpn", "awsconfig", "testdata")
	xb, err := os.ReadFile(filepath.Join(dir, x))
	if err != nil {
		t.Fatal(err)
	}
	var ob []byte
	if o != "" {
		if ob, err = os.ReadFile(filepath.Join(dir, o)); err != nil {
			t.Fatal(err)
		}
	}
	r, err := awsconfig.Import(xb, ob)
	if err != nil {
		t.Fatal(err)
	}
	return &r.Connection
}

func TestConvertBGPSwappedIsIdentical(t *testing.T) {
	opts := Options{SitePrefixes: []string{"192.168.10.0/24"}}
	a, sa, _, err := Convert(load(t, "bgp-vgw.xml", "bgp-vgw-describe.json"), opts)
	if err != nil {
		t.Fatal(err)
	}
	b, sb, _, err := Convert(load(t, "bgp-vgw-swapped.xml", "bgp-vgw-describe.json"), opts)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("Convert(swapped) differs (-a +b):\n%s", diff)
	}
	if len(sa) != 2 || len(sb) != 2 || sa[0].Ref != sb[0].Ref || sa[0].Value.Reveal() != sb[0].Value.Reveal() {
		t.Errorf("secrets differ between tunnel orders")
	}
	t0 := a.Tunnels[0]
	if t0.OutsideAddress != "3.15.245.169" || t0.PSKRef != "vpn/vpn-0e3c1f2a9b8d7c6e5/3.15.245.169" ||
		t0.Options.Phase1DHGroupNumbers[0] != 20 || t0.Options.StartupAction != "start" || t0.Options.DPDTimeoutSeconds != 40 {
		t.Errorf("tunnel 0 = %+v; want 3.15.245.169 with its GCM/DH20/start/DPD40 options", t0)
	}
	if sa[0].Ref != t0.PSKRef || sa[0].Value.Reveal() != "Pq7_x2.LmN0vB8cR4tY6uI9oP1aS3dF5" {
		t.Errorf("secret 0 = %s; want tunnel 3.15.245.169's PSK under its ref", sa[0].Ref)
	}
	if a.BGP == nil || a.BGP.CustomerASN != 65010 || a.BGP.AmazonASN != 64512 || a.BGP.HoldTimeSeconds != 30 {
		t.Errorf("BGP = %+v; want 65010/64512/30", a.BGP)
	}
	// The PSK is only a reference in the profile section.
	p := profile.NewSiteProfile("s", "s")
	p.VPN = a
	for _, s := range sa {
		if strings.Contains(string(mustJSON(t, p)), s.Value.Reveal()) {
			t.Errorf("profile JSON holds a PSK in clear")
		}
	}
}

func TestConvertDefaultsAndWarnings(t *testing.T) {
	v, secrets, warnings, err := Convert(load(t, "bgp-vgw.xml", ""), Options{SitePrefixes: []string{"10.1.0.0/16"}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(profile.DefaultTunnelOptions(), v.Tunnels[1].Options); diff != "" {
		t.Errorf("XML-only options are not AWS's defaults (-want +got):\n%s", diff)
	}
	if len(secrets) != 2 || len(warnings) != 2 {
		t.Errorf("Convert(XML only) = %d secrets, warnings %q; want 2 and a defaults warning per tunnel", len(secrets), warnings)
	}
	// Static with partial options: the missing fields default, named in the warning.
	v, _, warnings, err = Convert(load(t, "static-tgw-minimal.xml", "static-tgw-options.json"), Options{SitePrefixes: []string{"10.9.0.0/16"}, RemotePrefixes: []string{"10.50.0.0/16"}})
	if err != nil {
		t.Fatal(err)
	}
	if !v.StaticRoutesOnly || v.BGP != nil || v.Tunnels[0].InsideIPv6CIDR != "fd00:ec2:0:1::/126" || v.Tunnels[0].Options.Phase1LifetimeSeconds != 28800 {
		t.Errorf("static convert = %+v", v)
	}
	if !strings.Contains(strings.Join(warnings, "\n"), "tunnel 52.94.12.17: AWS defaults for [phase1_lifetime_s") {
		t.Errorf("warnings = %q; want the defaulted fields of 52.94.12.17 named", warnings)
	}
}

func TestConvertErrors(t *testing.T) {
	if _, _, _, err := Convert(load(t, "bgp-vgw.xml", ""), Options{}); err == nil || !strings.Contains(err.Error(), "no site prefixes") {
		t.Errorf("Convert(no prefixes) = %v; want 'no site prefixes'", err)
	}
	if _, _, _, err := Convert(load(t, "bgp-vgw.xml", ""), Options{SitePrefixes: []string{"169.254.7.0/24"}}); err == nil || !strings.Contains(err.Error(), "vpn.site_prefixes[0]") {
		t.Errorf("Convert(link-local prefix) = %v; want a vpn.site_prefixes[0] error", err)
	}
	c := load(t, "bgp-vgw.xml", "")
	c.Tunnels[0].InsideCIDR = mustPrefix("169.254.3.0/30")
	if _, _, _, err := Convert(c, Options{SitePrefixes: []string{"10.0.0.0/8"}}); err == nil || !strings.Contains(err.Error(), "vpn.tunnels[0].inside_cidr: 169.254.3.0/30 is reserved by AWS") {
		t.Errorf("Convert(reserved inside) = %v; want the field named", err)
	}
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestConvertStaticRemotePrefixes: a static connection's remote networks come from AWS's
// options (RemoteIpv4/6NetworkCidr) and from the operator; AWS's Routes are the site's.
func TestConvertStaticRemotePrefixes(t *testing.T) {
	td := filepath.Join("..", "..", "vpn", "awsconfig", "testdata")
	xb, err := os.ReadFile(filepath.Join(td, "static-tgw-minimal.xml"))
	if err != nil {
		t.Fatal(err)
	}
	describe := readTestdata(t, "static-tgw-describe.json")
	r, err := awsconfig.Import(xb, describe)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		opts       Options
		wantSite   []string
		wantRemote []string
		wantErr    string
		wantWarn   string
	}{
		{
			name:       "from the JSON",
			opts:       Options{Describe: describe},
			wantSite:   []string{"192.168.50.0/24"},
			wantRemote: []string{"10.50.0.0/16", "2600:1f18:4d3:b500::/56"},
		},
		{
			name:       "JSON and operator, duplicates once",
			opts:       Options{Describe: describe, SitePrefixes: []string{"192.168.60.0/24"}, RemotePrefixes: []string{"10.51.0.0/16", "10.50.0.0/16"}},
			wantSite:   []string{"192.168.50.0/24", "192.168.60.0/24"},
			wantRemote: []string{"10.50.0.0/16", "2600:1f18:4d3:b500::/56", "10.51.0.0/16"},
		},
		{
			name:       "operator only",
			opts:       Options{RemotePrefixes: []string{"172.16.0.0/12"}},
			wantSite:   []string{"192.168.50.0/24"},
			wantRemote: []string{"172.16.0.0/12"},
		},
		{
			name:     "AWS default everything is not routed",
			opts:     Options{Describe: []byte(`{"RemoteIpv4NetworkCidr": "0.0.0.0/0", "RemoteIpv6NetworkCidr": "::/0"}`)},
			wantErr:  "static connection without remote prefixes",
			wantWarn: "remote network is 0.0.0.0/0 (AWS's default, everything): not routed",
		},
		{
			name:    "none at all",
			opts:    Options{},
			wantErr: "give them (--remote-prefix)",
		},
		{
			name:    "not a CIDR",
			opts:    Options{RemotePrefixes: []string{"10.0.0.0"}},
			wantErr: `remote prefix "10.0.0.0"`,
		},
		{
			name:    "host bits: the profile names the field",
			opts:    Options{RemotePrefixes: []string{"10.1.2.3/16"}},
			wantErr: "vpn.remote_prefixes[0]: 10.1.2.3/16 has host bits set",
		},
		{
			name:    "overlapping the site",
			opts:    Options{RemotePrefixes: []string{"192.168.0.0/16"}},
			wantErr: "vpn.remote_prefixes[0]: 192.168.0.0/16 overlaps site_prefixes[0]",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := r.Connection
			v, _, warnings, err := Convert(&c, tc.opts)
			if tc.wantWarn != "" && !strings.Contains(strings.Join(warnings, "\n"), tc.wantWarn) {
				t.Errorf("Convert() warnings = %q; want one containing %q", warnings, tc.wantWarn)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("Convert() = %v; want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Convert() = %v", err)
			}
			if !v.StaticRoutesOnly || v.BGP != nil {
				t.Errorf("Convert() = static %v, BGP %+v; want a static connection", v.StaticRoutesOnly, v.BGP)
			}
			if diff := cmp.Diff(tc.wantSite, v.SitePrefixes); diff != "" {
				t.Errorf("Convert().SitePrefixes mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantRemote, v.RemotePrefixes); diff != "" {
				t.Errorf("Convert().RemotePrefixes mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestConvertBGPRefusesRemotePrefixes(t *testing.T) {
	c := load(t, "bgp-vgw.xml", "bgp-vgw-describe.json")
	describe, err := os.ReadFile(filepath.Join("..", "..", "vpn", "awsconfig", "testdata", "bgp-vgw-describe.json"))
	if err != nil {
		t.Fatal(err)
	}
	// AWS's default 0.0.0.0/0 in a BGP connection's options is neither used nor warned about.
	v, _, warnings, err := Convert(c, Options{SitePrefixes: []string{"10.1.0.0/16"}, Describe: describe})
	if err != nil || v.RemotePrefixes != nil || strings.Contains(strings.Join(warnings, "\n"), "remote network") {
		t.Errorf("Convert(BGP with describe JSON) = remote %q, warnings %q, %v; want none and nil", v.RemotePrefixes, warnings, err)
	}
	if _, _, _, err := Convert(c, Options{SitePrefixes: []string{"10.1.0.0/16"}, RemotePrefixes: []string{"10.50.0.0/16"}}); err == nil || !strings.Contains(err.Error(), "only for a static connection") {
		t.Errorf("Convert(BGP, remote prefixes) = %v; want 'only for a static connection'", err)
	}
}

func TestRemoteNetworks(t *testing.T) {
	for _, tc := range []struct {
		name, doc, conn string
		want            []netip.Prefix
		wantErr         string
	}{
		{"describe output", string(readTestdata(t, "static-tgw-describe.json")), "vpn-07d1c2b3a4f5e6d70",
			[]netip.Prefix{mustPrefix("10.50.0.0/16"), mustPrefix("2600:1f18:4d3:b500::/56")}, ""},
		{"other connection", string(readTestdata(t, "static-tgw-describe.json")), "vpn-0000", nil, `no connection "vpn-0000"`},
		{"one connection", `{"VpnConnectionId": "vpn-1", "Options": {"RemoteIpv4NetworkCidr": "10.0.0.0/8"}}`, "vpn-1", []netip.Prefix{mustPrefix("10.0.0.0/8")}, ""},
		{"options object", `{"RemoteIpv6NetworkCidr": "2001:db8::/32", "TunnelOptions": []}`, "", []netip.Prefix{mustPrefix("2001:db8::/32")}, ""},
		{"defaults kept for the caller", `{"RemoteIpv4NetworkCidr": "0.0.0.0/0"}`, "", []netip.Prefix{mustPrefix("0.0.0.0/0")}, ""},
		{"bare tunnel options", `[{"OutsideIpAddress": "1.2.3.4"}]`, "", nil, ""},
		{"no options", `{"VpnConnectionId": "vpn-1", "Options": null}`, "", nil, ""},
		{"v6 in the v4 field", `{"Options": {"RemoteIpv4NetworkCidr": "2001:db8::/32"}}`, "", nil, `Options.RemoteIpv4NetworkCidr: "2001:db8::/32" is not an IPv4 CIDR`},
		{"garbage", `{"Options": {"RemoteIpv6NetworkCidr": "fish"}}`, "", nil, "RemoteIpv6NetworkCidr"},
		{"not JSON", `{`, "", nil, "aws options"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RemoteNetworks([]byte(tc.doc), tc.conn)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("RemoteNetworks() = %v, %v; want an error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("RemoteNetworks() = %v", err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("RemoteNetworks() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzRemoteNetworks(f *testing.F) {
	f.Add(readTestdata(f, "static-tgw-describe.json"), "vpn-07d1c2b3a4f5e6d70")
	f.Add([]byte(`{"Options": {"RemoteIpv4NetworkCidr": "10.0.0.0/8", "RemoteIpv6NetworkCidr": "::/0"}}`), "")
	f.Add([]byte(`{"VpnConnections": [{"VpnConnectionId": "a", "Options": {}}]}`), "")
	f.Add([]byte(`[]`), "")
	f.Fuzz(func(t *testing.T, doc []byte, conn string) {
		nets, err := RemoteNetworks(doc, conn)
		if err != nil {
			return
		}
		if len(nets) > 2 {
			t.Fatalf("RemoteNetworks() = %d prefixes; want at most one per family", len(nets))
		}
		for _, p := range nets {
			if !p.IsValid() || p != p.Masked() {
				t.Fatalf("RemoteNetworks() = %v; want valid, masked prefixes", nets)
			}
		}
	})
}
