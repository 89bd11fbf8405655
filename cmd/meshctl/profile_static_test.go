package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"meshroot/provision/profile"
)

// TestStaticVPNRemotePrefixes: a static AWS connection imported with its remote networks
// (from the DescribeVpnConnections JSON and --remote-prefix), pushed to the cloud, shown and
// edited with 'cloud profile vpn'; bad prefixes are refused with the field named.
func TestStaticVPNRemotePrefixes(t *testing.T) {
	xml := filepath.Join("..", "..", "vpn", "awsconfig", "testdata", "static-tgw-minimal.xml")
	describe := filepath.Join("..", "..", "provision", "awsimport", "testdata", "static-tgw-describe.json")
	c, cf := provCloud(t)
	if _, stderr, err := provRun(t, append([]string{"cloud", "site", "create", "--id", "hamburg-1", "--country", "DE", "--wifi", "Meshroot"}, cf...)...); err != nil {
		t.Fatalf("cloud site create: %v\n%s", err, stderr)
	}
	sitePrefixes := func() (*profile.Verified, error) {
		env, err := c.Op.SiteProfile(context.Background(), "hamburg-1")
		if err != nil {
			return nil, err
		}
		return profile.Verify(env, profile.NewKeySet(c.ProfileKey()), profile.Expect{SiteID: "hamburg-1"})
	}

	// Without the JSON and without --remote-prefix, the XML alone cannot make a static profile.
	if _, _, err := provRun(t, "profile", "import-aws", xml, "--prefix", "192.168.50.0/24"); err == nil || !strings.Contains(err.Error(), "--remote-prefix") {
		t.Errorf("import-aws(static, no remote networks) = %v; want an error asking for --remote-prefix", err)
	}
	push := append([]string{"profile", "import-aws", xml, "--options", describe, "--remote-prefix", "10.60.0.0/16", "--push", "--site", "hamburg-1"}, cf...)
	if out, stderr, err := provRun(t, push...); err != nil || !strings.Contains(out, "profile v2 issued") {
		t.Fatalf("import-aws --push = %q, %v\n%s", out, err, stderr)
	}
	v, err := sitePrefixes()
	if err != nil || v.VPN == nil {
		t.Fatalf("site profile after --push: %v", err)
	}
	if diff := cmp.Diff([]string{"10.50.0.0/16", "2600:1f18:4d3:b500::/56", "10.60.0.0/16"}, v.VPN.RemotePrefixes); diff != "" {
		t.Errorf("remote_prefixes after import mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"192.168.50.0/24"}, v.VPN.SitePrefixes); diff != "" {
		t.Errorf("site_prefixes after import (AWS's Routes) mismatch (-want +got):\n%s", diff)
	}

	out, _, err := provRun(t, append([]string{"cloud", "profile", "vpn", "--site", "hamburg-1"}, cf...)...)
	if err != nil || !strings.Contains(out, "(static)") || !strings.Contains(out, "remote_prefix\t2600:1f18:4d3:b500::/56") || !strings.Contains(out, "site_prefix\t192.168.50.0/24") {
		t.Errorf("cloud profile vpn = %q, %v; want the static connection's prefixes", out, err)
	}
	if out, stderr, err := provRun(t, append([]string{"cloud", "profile", "vpn", "--site", "hamburg-1", "--remote-prefix", "10.70.0.0/16,2600:1f18:aaaa::/48"}, cf...)...); err != nil || !strings.Contains(out, "profile v3 issued") {
		t.Fatalf("cloud profile vpn --remote-prefix = %q, %v\n%s", out, err, stderr)
	}
	if v, err = sitePrefixes(); err != nil || !cmp.Equal(v.VPN.RemotePrefixes, []string{"10.70.0.0/16", "2600:1f18:aaaa::/48"}) {
		t.Errorf("remote_prefixes after cloud profile vpn = %v, %v; want the new two", v.VPN.RemotePrefixes, err)
	}
	for _, tc := range []struct {
		flag, value, want string
	}{
		{"--remote-prefix", "10.70.0.1/16", "vpn.remote_prefixes[0]: 10.70.0.1/16 has host bits set"},
		{"--remote-prefix", "0.0.0.0/0", "vpn.remote_prefixes[0]: 0.0.0.0/0 is a default route"},
		{"--remote-prefix", "192.168.0.0/16", "vpn.remote_prefixes[0]: 192.168.0.0/16 overlaps site_prefixes[0]"},
		{"--site-prefix", "10.70.1.0/24", "vpn.remote_prefixes[0]: 10.70.0.0/16 overlaps site_prefixes[0] 10.70.1.0/24"},
	} {
		_, _, err := provRun(t, append([]string{"cloud", "profile", "vpn", "--site", "hamburg-1", tc.flag, tc.value}, cf...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("cloud profile vpn %s %s = %v; want an error containing %q", tc.flag, tc.value, err, tc.want)
		}
	}
	// The refused edits left the profile in force alone.
	if v, err := sitePrefixes(); err != nil || v.Version != 3 {
		t.Errorf("profile after refused edits = v%d, %v; want v3", v.Version, err)
	}
}
