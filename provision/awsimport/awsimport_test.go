package awsimport

import (
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
	v, _, warnings, err = Convert(load(t, "static-tgw-minimal.xml", "static-tgw-options.json"), Options{SitePrefixes: []string{"10.9.0.0/16"}})
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
