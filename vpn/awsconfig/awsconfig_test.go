package awsconfig

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func read(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var cmpOpts = cmp.Options{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
	cmp.Comparer(func(a, b PSK) bool { return a.v == b.v }),
}

func ip(s string) netip.Addr    { return netip.MustParseAddr(s) }
func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ptr[T any](v T) *T         { return &v }
func mustImport(t *testing.T, x, o []byte) *Result {
	t.Helper()
	r, err := Import(x, o)
	if err != nil {
		t.Fatalf("Import() = %v", err)
	}
	return r
}

var legacyIKE = IKE{AuthenticationProtocol: "sha1", EncryptionProtocol: "aes-128-cbc", Lifetime: 28800, PerfectForwardSecrecy: "group2", Mode: "main"}
var legacyIPsec = IPsec{Protocol: "esp", AuthenticationProtocol: "hmac-sha1-96", EncryptionProtocol: "aes-128-cbc", Lifetime: 3600,
	PerfectForwardSecrecy: "group2", Mode: "tunnel", ClearDFBit: true, FragmentationBeforeEncryption: true, TCPMSSAdjustment: 1379, DPDInterval: 10, DPDRetries: 3}

func wantBGP() Connection {
	return Connection{
		ID: "vpn-0e3c1f2a9b8d7c6e5", CustomerGatewayID: "cgw-04f1d2c3b4a596870", VPNGatewayID: "vgw-0a9b8c7d6e5f40312", Type: "ipsec.1",
		Tunnels: []Tunnel{
			{OutsideAddress: ip("3.15.245.169"), CustomerOutsideAddress: ip("198.51.100.77"), InsideCIDR: pfx("169.254.44.108/30"),
				AWSInside: ip("169.254.44.109"), CustomerInside: ip("169.254.44.110"), CustomerASN: 65010, AmazonASN: 64512, HoldTime: 30,
				PSK: NewPSK("Pq7_x2.LmN0vB8cR4tY6uI9oP1aS3dF5"), IKE: legacyIKE, IPsec: legacyIPsec},
			{OutsideAddress: ip("3.18.239.122"), CustomerOutsideAddress: ip("198.51.100.77"), InsideCIDR: pfx("169.254.225.8/30"),
				AWSInside: ip("169.254.225.9"), CustomerInside: ip("169.254.225.10"), CustomerASN: 65010, AmazonASN: 64512, HoldTime: 30,
				PSK: NewPSK("xlk6lMNzd4CNRP8YUX4PlRLVL4pV1FWS"), IKE: legacyIKE, IPsec: legacyIPsec},
		},
	}
}

func TestImportBGP(t *testing.T) {
	for _, f := range []string{"bgp-vgw.xml", "bgp-vgw-swapped.xml"} {
		t.Run(f, func(t *testing.T) {
			r := mustImport(t, read(t, f), nil)
			if diff := cmp.Diff(wantBGP(), r.Connection, cmpOpts); diff != "" {
				t.Errorf("Import(%s) mismatch (-want +got):\n%s", f, diff)
			}
			if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "legacy minimums") {
				t.Errorf("Import(%s) warnings = %q; want the legacy-minimums warning", f, r.Warnings)
			}
		})
	}
}

func TestImportWithDescribeJSON(t *testing.T) {
	// The JSON lists 3.15.245.169 first, the XML 3.18.239.122 first; either XML order gives the
	// GCM/ikev2-only policy to 3.15.245.169 and the defaults to 3.18.239.122.
	for _, f := range []string{"bgp-vgw.xml", "bgp-vgw-swapped.xml"} {
		r := mustImport(t, read(t, f), read(t, "bgp-vgw-describe.json"))
		want := wantBGP()
		want.HasOptions = true
		want.Tunnels[0].Options = &TunnelOptions{
			OutsideIPAddress: "3.15.245.169", TunnelInsideCIDR: "169.254.44.108/30", PreSharedKey: NewPSK("Pq7_x2.LmN0vB8cR4tY6uI9oP1aS3dF5"),
			IKEVersions: []string{"ikev2"}, Phase1EncryptionAlgorithms: []string{"AES256-GCM-16"}, Phase2EncryptionAlgorithms: []string{"AES256-GCM-16"},
			Phase1IntegrityAlgorithms: []string{"SHA2-256"}, Phase2IntegrityAlgorithms: []string{"SHA2-256"},
			Phase1DHGroupNumbers: []int{20}, Phase2DHGroupNumbers: []int{20},
			Phase1LifetimeSeconds: ptr(28000), Phase2LifetimeSeconds: ptr(3000), RekeyMarginTimeSeconds: ptr(540), RekeyFuzzPercentage: ptr(100),
			ReplayWindowSize: ptr(1024), DPDTimeoutSeconds: ptr(40), DPDTimeoutAction: "restart", StartupAction: "start",
		}
		got := r.Connection
		if diff := cmp.Diff(want.Tunnels[0].Options, got.Tunnels[0].Options, cmpOpts); diff != "" {
			t.Errorf("Import(%s, describe.json) tunnel 3.15.245.169 options mismatch (-want +got):\n%s", f, diff)
		}
		if o := got.Tunnels[1].Options; o == nil || o.OutsideIPAddress != "3.18.239.122" || len(o.Phase1DHGroupNumbers) != 12 || o.StartupAction != "add" {
			t.Errorf("Import(%s, describe.json) tunnel 3.18.239.122 options = %+v; want its own (all groups, add)", f, o)
		}
		if len(r.Warnings) != 0 {
			t.Errorf("Import(%s, describe.json) warnings = %q; want none", f, r.Warnings)
		}
	}
}

func TestImportStaticMinimal(t *testing.T) {
	r := mustImport(t, read(t, "static-tgw-minimal.xml"), read(t, "static-tgw-options.json"))
	c := r.Connection
	if !c.StaticRoutesOnly {
		t.Errorf("StaticRoutesOnly = false; want true (NoBGPVPNConnection)")
	}
	if len(c.Tunnels) != 2 || c.Tunnels[0].OutsideAddress != ip("52.94.12.17") || c.Tunnels[1].OutsideAddress != ip("52.94.12.201") {
		t.Fatalf("tunnels = %v; want sorted 52.94.12.17, 52.94.12.201", c.Tunnels)
	}
	t17, t201 := c.Tunnels[0], c.Tunnels[1]
	if t17.CustomerOutsideAddress.IsValid() {
		t.Errorf("tunnel 52.94.12.17 customer outside = %v; want absent", t17.CustomerOutsideAddress)
	}
	if t201.InsideCIDR != pfx("169.254.100.0/30") {
		t.Errorf("tunnel 52.94.12.201 inside = %v; want 169.254.100.0/30 (from network_mask)", t201.InsideCIDR)
	}
	if t17.InsideIPv6CIDR != pfx("fd00:ec2:0:1::/126") {
		t.Errorf("tunnel 52.94.12.17 inside v6 = %v; want fd00:ec2:0:1::/126", t17.InsideIPv6CIDR)
	}
	if t17.CustomerASN != 0 || t17.IPsec != (IPsec{}) || t17.IKE != (IKE{}) {
		t.Errorf("tunnel 52.94.12.17 = %+v; want no BGP, empty IKE/IPsec", t17)
	}
	if t17.Options == nil || t17.Options.Phase1LifetimeSeconds != nil || t201.Options != nil {
		t.Errorf("options: 52.94.12.17 %+v, 52.94.12.201 %+v; want partial options, none", t17.Options, t201.Options)
	}
	if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "52.94.12.201: no TunnelOptions entry") {
		t.Errorf("warnings = %q; want the missing-options warning for 52.94.12.201", r.Warnings)
	}
}

func TestImportErrors(t *testing.T) {
	bgp := string(read(t, "bgp-vgw.xml"))
	desc := string(read(t, "bgp-vgw-describe.json"))
	for _, tc := range []struct {
		name     string
		xml, opt string
		want     string
	}{
		{"not xml", "{}", "", "aws xml"},
		{"no tunnels", `<vpn_connection id="vpn-1"><vpn_connection_type>ipsec.1</vpn_connection_type></vpn_connection>`, "", "no ipsec_tunnel"},
		{"wrong type", strings.Replace(bgp, "ipsec.1", "ipsec.2", 1), "", `vpn_connection_type "ipsec.2"`},
		{"missing outside", strings.Replace(bgp, "<ip_address>3.18.239.122</ip_address>", "", 1), "", "vpn_gateway/tunnel_outside_address/ip_address"},
		{"duplicate outside", strings.Replace(bgp, "3.18.239.122", "3.15.245.169", 1), "", "appears twice"},
		{"three tunnels", strings.Replace(bgp, "</vpn_connection>", bgp[strings.Index(bgp, "<ipsec_tunnel>"):strings.Index(bgp, "</ipsec_tunnel>")+15]+"</vpn_connection>", 1), "", "3 ipsec_tunnel"},
		{"psk starts with 0", strings.Replace(bgp, "xlk6lMNzd4CNRP8YUX4PlRLVL4pV1FWS", "0lk6lMNzd4CNRP8YUX4PlRLVL4pV1FWS", 1), "", "tunnel 3.18.239.122: pre-shared key"},
		{"psk short", strings.Replace(bgp, "xlk6lMNzd4CNRP8YUX4PlRLVL4pV1FWS", "short", 1), "", "pre-shared key"},
		{"psk missing", strings.Replace(bgp, "<pre_shared_key>xlk6lMNzd4CNRP8YUX4PlRLVL4pV1FWS</pre_shared_key>", "", 1), "", "pre-shared key: missing"},
		{"inside mismatch", strings.Replace(bgp, "169.254.225.9", "169.254.226.9", 1), "", "not in one network"},
		{"bad asn", strings.Replace(bgp, "<asn>65010</asn>", "<asn>sixty</asn>", 1), "", "customer_gateway/bgp/asn"},
		{"bgp one side", strings.Replace(bgp, "<bgp>\n        <asn>64512</asn>\n        <hold_time>30</hold_time>\n      </bgp>", "", 1), "", "<bgp> on one side only"},
		{"options unknown address", bgp, strings.Replace(desc, "3.15.245.169", "3.15.245.170", 1), "3.15.245.170 matches no tunnel"},
		{"options psk differs", bgp, strings.Replace(desc, `"PreSharedKey": "xlk6l`, `"PreSharedKey": "ylk6l`, 1), "pre-shared key differs"},
		{"options inside differs", bgp, strings.Replace(desc, "169.254.225.8/30", "169.254.225.12/30", 1), "TunnelInsideCidr"},
		{"options other connection", bgp, strings.Replace(desc, `"VpnConnectionId": "vpn-0e3c1f2a9b8d7c6e5"`, `"VpnConnectionId": "vpn-1"`, 1), `no connection "vpn-0e3c1f2a9b8d7c6e5"`},
		{"options static mismatch", bgp, strings.Replace(desc, `"StaticRoutesOnly": false`, `"StaticRoutesOnly": true`, 1), "StaticRoutesOnly is true"},
		{"options not json", bgp, "{", "aws options"},
		{"options nothing useful", bgp, `{"Foo": 1}`, "no Options.TunnelOptions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Import([]byte(tc.xml), []byte(tc.opt))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Import(%s) = %v; want error containing %q", tc.name, err, tc.want)
			}
		})
	}
}

func TestOptionsForms(t *testing.T) {
	x := read(t, "bgp-vgw.xml")
	one := `{"OutsideIpAddress": "3.18.239.122", "IkeVersions": [{"Value": "ikev2"}], "DPDTimeoutSeconds": 45}`
	for _, form := range []string{
		"[" + one + "]",
		`{"TunnelOptions": [` + one + `]}`,
		`{"VpnConnectionId": "vpn-0e3c1f2a9b8d7c6e5", "Options": {"TunnelOptions": [` + one + `]}}`,
		`{"VpnConnections": [{"VpnConnectionId": "vpn-0e3c1f2a9b8d7c6e5", "Options": {"TunnelOptions": [` + one + `]}}]}`,
	} {
		r, err := Import(x, []byte(form))
		if err != nil {
			t.Fatalf("Import(options %s) = %v", form, err)
		}
		o := r.Connection.Tunnels[1].Options
		if o == nil || len(o.IKEVersions) != 1 || o.DPDTimeoutSeconds == nil || *o.DPDTimeoutSeconds != 45 {
			t.Errorf("Import(options %s) tunnel 3.18.239.122 options = %+v; want ikev2, DPD 45 (DPD spelled either way)", form, o)
		}
	}
	// Secrets Manager storage: the key is an ARN, kept as the reference.
	arn := `[{"OutsideIpAddress": "3.18.239.122", "PreSharedKey": "arn:aws:secretsmanager:us-east-2:111122223333:secret:vpn-psk-AbCdEf"}]`
	noPSK := strings.Replace(string(x), "<pre_shared_key>xlk6lMNzd4CNRP8YUX4PlRLVL4pV1FWS</pre_shared_key>", "", 1)
	r, err := Import([]byte(noPSK), []byte(arn))
	if err != nil {
		t.Fatal(err)
	}
	if p := r.Connection.Tunnels[1].PSK; !p.IsARN() {
		t.Errorf("PSK from an ARN: IsARN() = false")
	}
}

func TestPSKNeverPrinted(t *testing.T) {
	r := mustImport(t, read(t, "bgp-vgw.xml"), read(t, "bgp-vgw-describe.json"))
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("imported", "result", r, "psk", r.Connection.Tunnels[0].PSK)
	j, _ := json.Marshal(r)
	out := buf.String() + string(j) + fmt.Sprintf("%v %+v %#v", r, r.Connection, r.Connection.Tunnels)
	for _, psk := range []string{"xlk6lMNzd4CNRP8YUX4PlRLVL4pV1FWS", "Pq7_x2.LmN0vB8cR4tY6uI9oP1aS3dF5"} {
		if strings.Contains(out, psk) {
			t.Errorf("PSK %s printed in %s", psk, out)
		}
	}
}

func FuzzImport(f *testing.F) {
	for _, x := range []string{"bgp-vgw.xml", "bgp-vgw-swapped.xml", "static-tgw-minimal.xml"} {
		f.Add(read(f, x), []byte(nil))
	}
	f.Add(read(f, "bgp-vgw.xml"), read(f, "bgp-vgw-describe.json"))
	f.Add(read(f, "static-tgw-minimal.xml"), read(f, "static-tgw-options.json"))
	f.Fuzz(func(t *testing.T, x, o []byte) {
		r, err := Import(x, o)
		if err != nil {
			return
		}
		c := r.Connection
		if len(c.Tunnels) == 0 || len(c.Tunnels) > 2 {
			t.Fatalf("Import accepted %d tunnels", len(c.Tunnels))
		}
		for i, tn := range c.Tunnels {
			if !tn.OutsideAddress.IsValid() || !tn.InsideCIDR.IsValid() || tn.PSK.Validate() != nil {
				t.Fatalf("tunnel %d incomplete: %+v", i, tn)
			}
			if i > 0 && c.Tunnels[i-1].OutsideAddress.Compare(tn.OutsideAddress) >= 0 {
				t.Fatalf("tunnels not sorted by outside address")
			}
		}
	})
}
