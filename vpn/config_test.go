package vpn

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const (
	testPSK1 = "unit-psk-one-4Fq9zR"
	testPSK2 = "unit-psk-two-8Lw2xM"
)

// validConfig is a BGP connection with two tunnels.
func validConfig() Config {
	return Config{
		ConnectionID: "vpn-0123456789abcdef0",
		BGP:          &BGP{CustomerASN: 65000, AmazonASN: 64512},
		SitePrefixes: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24"), netip.MustParsePrefix("fd00:c0a8:1::/64")},
		Tunnels: []Tunnel{
			{OutsideAddress: netip.MustParseAddr("198.51.100.2"), InsideCIDR: netip.MustParsePrefix("169.254.10.0/30"),
				InsideIPv6CIDR: netip.MustParsePrefix("fd00:a9fe:10::/126"), PSK: testPSK1},
			{OutsideAddress: netip.MustParseAddr("203.0.113.2"), InsideCIDR: netip.MustParsePrefix("169.254.11.0/30"), PSK: testPSK2},
		},
	}
}

func TestConfigValidate(t *testing.T) {
	if err := validConfig().Validate(); err != nil {
		t.Fatalf("Validate(valid) = %v; want nil", err)
	}
	for _, tc := range []struct {
		name  string
		mod   func(*Config)
		field string
	}{
		{"no id", func(c *Config) { c.ConnectionID = "" }, "connection_id"},
		{"bgp and static", func(c *Config) { c.StaticRoutesOnly = true }, "bgp"},
		{"no bgp", func(c *Config) { c.BGP = nil }, "bgp"},
		{"same asn", func(c *Config) { c.BGP.AmazonASN = 65000 }, "bgp.amazon_asn"},
		{"hold", func(c *Config) { c.BGP.HoldTime = time.Second }, "bgp.hold_time_s"},
		{"no prefixes", func(c *Config) { c.SitePrefixes = nil }, "site_prefixes"},
		{"host bits", func(c *Config) { c.SitePrefixes[0] = netip.MustParsePrefix("192.168.1.1/24") }, "site_prefixes[0]"},
		{"link-local prefix", func(c *Config) { c.SitePrefixes[1] = netip.MustParsePrefix("169.254.0.0/24") }, "site_prefixes[1]"},
		{"remote with bgp", func(c *Config) { c.RemotePrefixes = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")} }, "remote_prefixes"},
		{"three tunnels", func(c *Config) { c.Tunnels = append(c.Tunnels, c.Tunnels[0]) }, "tunnels"},
		{"no outside", func(c *Config) { c.Tunnels[1].OutsideAddress = netip.Addr{} }, "tunnels[1].outside_address"},
		{"same outside", func(c *Config) { c.Tunnels[1].OutsideAddress = c.Tunnels[0].OutsideAddress }, "tunnels[1].outside_address"},
		{"mixed families", func(c *Config) { c.Tunnels[1].OutsideAddress = netip.MustParseAddr("2001:db8::2") }, "tunnels[1].outside_address"},
		{"inside /29", func(c *Config) { c.Tunnels[0].InsideCIDR = netip.MustParsePrefix("169.254.10.0/29") }, "tunnels[0].inside_cidr"},
		{"inside not link-local", func(c *Config) { c.Tunnels[0].InsideCIDR = netip.MustParsePrefix("10.0.0.0/30") }, "tunnels[0].inside_cidr"},
		{"inside overlap", func(c *Config) { c.Tunnels[1].InsideCIDR = c.Tunnels[0].InsideCIDR }, "tunnels[1].inside_cidr"},
		{"inside6 /64", func(c *Config) { c.Tunnels[0].InsideIPv6CIDR = netip.MustParsePrefix("fd00:a9fe:10::/64") }, "tunnels[0].inside_ipv6_cidr"},
		{"short psk", func(c *Config) { c.Tunnels[0].PSK = "short" }, "tunnels[0].psk"},
		{"dpd action", func(c *Config) { c.Tunnels[0].DPDAction = "hold" }, "tunnels[0].dpd_action"},
		{"device", func(c *Config) { c.Tunnels[0].Device = "a-device-name-too-long" }, "tunnels[0].device"},
		{"same device", func(c *Config) { c.Tunnels[0].Device, c.Tunnels[1].Device = "tun9", "tun9" }, "tunnels[1].device"},
		{"ikev1 only", func(c *Config) { c.Tunnels[0].Options.IKEVersions = []string{"ikev1"} }, "tunnels[0].options.ike_versions"},
		{"bad encryption", func(c *Config) { c.Tunnels[0].Options.Phase2EncryptionAlgorithms = []string{"DES"} }, "tunnels[0].options.phase2_encryption_algorithms[0]"},
		{"bad group", func(c *Config) { c.Tunnels[0].Options.Phase1DHGroupNumbers = []int{5} }, "tunnels[0].options.phase1_dh_group_numbers[0]"},
		{"phase2 >= phase1", func(c *Config) {
			c.Tunnels[0].Options.Phase1Lifetime, c.Tunnels[0].Options.Phase2Lifetime = time.Hour, time.Hour
		}, "tunnels[0].options.phase2_lifetime_s"},
		{"margin", func(c *Config) { c.Tunnels[0].Options.RekeyMarginTime = 2000 * time.Second }, "tunnels[0].options.rekey_margin_time_s"},
		{"fuzz", func(c *Config) { c.Tunnels[0].Options.RekeyFuzzPercentage = 101 }, "tunnels[0].options.rekey_fuzz_percentage"},
		{"replay", func(c *Config) { c.Tunnels[0].Options.ReplayWindowSize = 10 }, "tunnels[0].options.replay_window_size"},
		{"dpd interval", func(c *Config) { c.Tunnels[0].Options.DPDInterval = time.Minute }, "tunnels[0].options.dpd_interval_s"},
		{"startup", func(c *Config) { c.Tunnels[0].Options.StartupAction = "now" }, "tunnels[0].options.startup_action"},
		{"proposal", func(c *Config) { c.Tunnels[0].Options.IKEProposals = []string{"aes256-nonsense"} }, "tunnels[0].options.ike_proposals"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mod(&c)
			err := c.Validate()
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Errorf("Validate() = %v; want an error for field %q", err, tc.field)
			}
			if err != nil && strings.Contains(err.Error(), testPSK1) {
				t.Errorf("the error %q shows the PSK", err)
			}
		})
	}
	static := validConfig()
	static.BGP, static.StaticRoutesOnly = nil, true
	static.RemotePrefixes = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}
	if err := static.Validate(); err != nil {
		t.Errorf("Validate(static) = %v; want nil", err)
	}
}

// TestOffer: from AWS's allowed lists we offer the strong tier (the concentrator picks the
// lowest value both allow).
func TestOffer(t *testing.T) {
	for _, tc := range []struct {
		name     string
		opts     TunnelOptions
		ike, esp string
	}{
		{"AWS defaults", TunnelOptions{},
			"aes256gcm16-aes128gcm16-prfsha256-prfsha384-prfsha512-modp2048-modp3072-modp4096-modp6144-modp8192-ecp256-ecp384-ecp521",
			"aes256gcm16-aes128gcm16-modp2048-modp3072-modp4096-modp6144-modp8192-ecp256-ecp384-ecp521"},
		{"XML legacy", TunnelOptions{
			Phase1EncryptionAlgorithms: []string{"AES128"}, Phase2EncryptionAlgorithms: []string{"AES128"},
			Phase1IntegrityAlgorithms: []string{"SHA1"}, Phase2IntegrityAlgorithms: []string{"SHA1"},
			Phase1DHGroupNumbers: []int{2}, Phase2DHGroupNumbers: []int{2},
		}, "aes128-sha1-modp1024", "aes128-sha1-modp1024"},
		{"CBC and SHA2", TunnelOptions{
			Phase1EncryptionAlgorithms: []string{"AES128", "AES256"}, Phase2EncryptionAlgorithms: []string{"AES256"},
			Phase1IntegrityAlgorithms: []string{"SHA1", "SHA2-384"}, Phase2IntegrityAlgorithms: []string{"SHA2-512", "SHA1"},
			Phase1DHGroupNumbers: []int{2, 20}, Phase2DHGroupNumbers: []int{5, 24},
		}, "aes256-aes128-sha384-ecp384", "aes256-sha512-modp1536-modp2048s256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.opts.withDefaults()
			ip, err := offerIKE(o)
			if err != nil {
				t.Fatal(err)
			}
			ep, err := offerESP(o)
			if err != nil {
				t.Fatal(err)
			}
			if got := ip[0].String(); got != mustCanon(t, tc.ike) {
				t.Errorf("offerIKE = %s; want %s", got, mustCanon(t, tc.ike))
			}
			if got := ep[0].String(); got != mustCanon(t, tc.esp) {
				t.Errorf("offerESP = %s; want %s", got, mustCanon(t, tc.esp))
			}
		})
	}
}

func mustCanon(t *testing.T, s string) string {
	t.Helper()
	p, err := parseProposals([]string{s})
	if err != nil {
		t.Fatalf("parse %q: %v", s, err)
	}
	return p[0].String()
}

// fileSource is a ConfigSource over a map of files and variables.
func fileSource(files map[string]string, modes map[string]fs.FileMode, env map[string]string) ConfigSource {
	return ConfigSource{
		Dir: "/etc/vpn",
		ReadFile: func(name string) ([]byte, error) {
			if b, ok := files[name]; ok {
				return []byte(b), nil
			}
			return nil, fs.ErrNotExist
		},
		Stat: func(name string) (fs.FileInfo, error) {
			if _, ok := files[name]; !ok {
				return nil, fs.ErrNotExist
			}
			m, ok := modes[name]
			if !ok {
				m = 0o600
			}
			return fakeInfo{mode: m}, nil
		},
		LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok },
	}
}

type fakeInfo struct {
	fs.FileInfo
	mode fs.FileMode
}

func (f fakeInfo) Mode() fs.FileMode { return f.mode }

const exampleFile = `{
  "connection_id": "vpn-0123456789abcdef0",
  "type": "ipsec.1",
  "bgp": {"customer_asn": 65000, "amazon_asn": 64512, "hold_time_s": 30},
  "site_prefixes": ["192.168.1.0/24", "fd00:c0a8:1::/64"],
  "tunnels": [
    {"outside_address": "198.51.100.2", "inside_cidr": "169.254.10.0/30", "inside_ipv6_cidr": "fd00:a9fe:10::/126",
     "psk_file": "t1.psk",
     "options": {"phase1_lifetime_s": 28800, "phase2_lifetime_s": 3600, "rekey_margin_time_s": 270,
                 "rekey_fuzz_percentage": 0, "dpd_timeout_s": 30, "dpd_timeout_action": "clear", "startup_action": "add",
                 "ike_proposals": ["aes256gcm16-prfsha256-modp2048"]}},
    {"outside_address": "203.0.113.2", "inside_cidr": "169.254.11.0/30", "psk_env": "T2_PSK", "dpd_action": "none"}
  ],
  "failover": {"window_ms": 250}
}`

func TestParseConfig(t *testing.T) {
	src := fileSource(map[string]string{"/etc/vpn/t1.psk": testPSK1 + "\n"}, nil, map[string]string{"T2_PSK": testPSK2})
	got, err := ParseConfig([]byte(exampleFile), src)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		ConnectionID: "vpn-0123456789abcdef0",
		BGP:          &BGP{CustomerASN: 65000, AmazonASN: 64512, HoldTime: 30 * time.Second},
		SitePrefixes: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24"), netip.MustParsePrefix("fd00:c0a8:1::/64")},
		Tunnels: []Tunnel{
			{OutsideAddress: netip.MustParseAddr("198.51.100.2"), InsideCIDR: netip.MustParsePrefix("169.254.10.0/30"),
				InsideIPv6CIDR: netip.MustParsePrefix("fd00:a9fe:10::/126"), PSK: testPSK1,
				Options: TunnelOptions{Phase1Lifetime: 28800 * time.Second, Phase2Lifetime: 3600 * time.Second,
					RekeyMarginTime: 270 * time.Second, DPDTimeout: 30 * time.Second, StartupAction: "add",
					IKEProposals: []string{"aes256gcm16-prfsha256-modp2048"}}},
			{OutsideAddress: netip.MustParseAddr("203.0.113.2"), InsideCIDR: netip.MustParsePrefix("169.254.11.0/30"),
				PSK: testPSK2, DPDAction: "none", Options: TunnelOptions{RekeyFuzzPercentage: 100}},
		},
		Failover: Failover{Window: 250 * time.Millisecond},
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("ParseConfig(example) mismatch (-want +got):\n%s", diff)
	}

	for _, tc := range []struct {
		name, from, to, field string
	}{
		{"unknown field", `"type": "ipsec.1",`, `"type": "ipsec.1", "colour": "blue",`, ""},
		{"inline psk", `"psk_file": "t1.psk",`, `"psk": "` + testPSK1 + `",`, "tunnels[0].psk"},
		{"psk ref", `"psk_file": "t1.psk",`, `"psk_ref": "vpn/x/1",`, "tunnels[0].psk_ref"},
		{"no psk", `"psk_file": "t1.psk",`, ``, "tunnels[0].psk_file"},
		{"missing file", `"t1.psk"`, `"t9.psk"`, "tunnels[0].psk_file"},
		{"unset env", `"T2_PSK"`, `"T3_PSK"`, "tunnels[1].psk_env"},
		{"bad address", `"198.51.100.2"`, `"198.51.100"`, "tunnels[0].outside_address"},
		{"bad prefix", `"192.168.1.0/24"`, `"192.168.1.0/33"`, "site_prefixes[0]"},
		{"wrong type", `"customer_asn": 65000`, `"customer_asn": "65000"`, "bgp.customer_asn"},
		{"negative lifetime", `"phase1_lifetime_s": 28800`, `"phase1_lifetime_s": -1`, "tunnels[0].options.phase1_lifetime_s"},
		{"validation", `"amazon_asn": 64512`, `"amazon_asn": 65000`, "bgp.amazon_asn"},
		{"type", `"ipsec.1"`, `"ipsec.2"`, "type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := strings.Replace(exampleFile, tc.from, tc.to, 1)
			if doc == exampleFile {
				t.Fatalf("test case does not change the document")
			}
			_, err := ParseConfig([]byte(doc), src)
			if err == nil {
				t.Fatalf("ParseConfig(%s) = nil; want an error", tc.name)
			}
			var fe *FieldError
			if tc.field != "" && (!errors.As(err, &fe) || fe.Field != tc.field) {
				t.Errorf("ParseConfig(%s) = %v; want an error for field %q", tc.name, err, tc.field)
			}
			if strings.Contains(err.Error(), testPSK1) {
				t.Errorf("the error %q shows the PSK", err)
			}
		})
	}

	// A PSK file others can read is refused.
	src = fileSource(map[string]string{"/etc/vpn/t1.psk": testPSK1}, map[string]fs.FileMode{"/etc/vpn/t1.psk": 0o644}, map[string]string{"T2_PSK": testPSK2})
	if _, err := ParseConfig([]byte(exampleFile), src); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Errorf("ParseConfig with a world-readable PSK file = %v; want it refused", err)
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "t1.psk"), []byte(testPSK1+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "vpn.json")
	if err := os.WriteFile(path, []byte(exampleFile), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("T2_PSK", testPSK2)
	c, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Tunnels[0].PSK != testPSK1 || c.Tunnels[1].PSK != testPSK2 {
		t.Errorf("LoadConfig: PSKs not read from the file and the environment")
	}
}

// FuzzParseConfig: any input gives a config or an error, never a panic; what parses
// validates.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(exampleFile))
	f.Add([]byte(`{"connection_id":"vpn-1","static_routes_only":true,"remote_prefixes":["10.0.0.0/16"],"tunnels":[{"outside_address":"::1","inside_cidr":"169.254.1.0/30","psk_env":"T2_PSK"}]}`))
	f.Add([]byte(`{"tunnels":[{"options":{"rekey_fuzz_percentage":0,"phase2_dh_group_numbers":[2,5]}}]}`))
	f.Add([]byte(`[]`))
	src := fileSource(map[string]string{"/etc/vpn/t1.psk": testPSK1}, nil, map[string]string{"T2_PSK": testPSK2})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b, src)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("ParseConfig accepted a config that does not validate: %v", err)
		}
	})
}
