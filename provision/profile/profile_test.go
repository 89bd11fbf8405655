package profile

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// example returns a complete, valid profile with a two-tunnel BGP VPN.
func example() *Profile {
	opts := DefaultTunnelOptions()
	opts2 := DefaultTunnelOptions()
	opts2.IKEVersions = []string{"ikev2"}
	opts2.Phase1EncryptionAlgorithms = []string{"AES256-GCM-16"}
	opts2.Phase1DHGroupNumbers = []int{20}
	return &Profile{
		SchemaVersion: SchemaVersion,
		Version:       3,
		IssuedAt:      t0,
		ExpiresAt:     t0.Add(30 * 24 * time.Hour),
		Site:          Site{ID: "berlin-1", Name: "Berlin office"},
		Country:       "DE",
		WiFi:          WiFi{SSID: "Meshroot", Security: "wpa2-wpa3"},
		Mesh:          Mesh{ID: "mesh-berlin-1", Backhaul: "auto", KeyRef: "site/berlin-1/mesh"},
		OTA:           OTA{Channel: "stable"},
		Logs:          Logs{Level: "info"},
		VPN: &VPN{
			ConnectionID: "vpn-0a1b2c3d4e5f60718",
			Type:         "ipsec.1",
			BGP:          &BGP{CustomerASN: 65000, AmazonASN: 64512, HoldTimeSeconds: 30},
			SitePrefixes: []string{"192.168.1.0/24", "10.20.0.0/16"},
			Tunnels: []Tunnel{
				{OutsideAddress: "3.18.239.122", InsideCIDR: "169.254.225.8/30", PSKRef: "vpn/vpn-0a1b2c3d4e5f60718/3.18.239.122", Options: opts},
				{OutsideAddress: "3.21.7.4", InsideCIDR: "169.254.10.0/30", InsideIPv6CIDR: "fd00:1::/126", PSKRef: "vpn/vpn-0a1b2c3d4e5f60718/3.21.7.4", Options: opts2},
			},
		},
	}
}

// static makes p's VPN a static connection to a VPC with an IPv4 and an IPv6 network.
func static(p *Profile) {
	p.VPN.StaticRoutesOnly, p.VPN.BGP = true, nil
	p.VPN.RemotePrefixes = []string{"172.31.0.0/16", "2600:1f18:4d3:b500::/56"}
}

func TestValidateExample(t *testing.T) {
	if err := example().Validate(); err != nil {
		t.Fatalf("example().Validate() = %v; want nil", err)
	}
	p := NewSiteProfile("a-very-long-site-identifier-that-goes-on-and-on", "x")
	p.Version, p.IssuedAt, p.ExpiresAt, p.WiFi.SSID, p.Country, p.Mesh.KeyRef = 1, t0, t0.Add(time.Hour), "x", "US", "k"
	if err := p.Validate(); err != nil {
		t.Errorf("NewSiteProfile(...).Validate() = %v; want nil", err)
	}
}

func TestValidateFieldErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		mut  func(p *Profile)
		want string
	}{
		{"reserved inside", func(p *Profile) { p.VPN.Tunnels[1].InsideCIDR = "169.254.1.0/30" }, "vpn.tunnels[1].inside_cidr: 169.254.1.0/30 is reserved by AWS"},
		{"reserved 169.254.169.252", func(p *Profile) { p.VPN.Tunnels[0].InsideCIDR = "169.254.169.252/30" }, "vpn.tunnels[0].inside_cidr: 169.254.169.252/30 is reserved by AWS"},
		{"inside /29", func(p *Profile) { p.VPN.Tunnels[0].InsideCIDR = "169.254.100.0/29" }, "vpn.tunnels[0].inside_cidr: 169.254.100.0/29 is a /29; want a /30"},
		{"inside host bits", func(p *Profile) { p.VPN.Tunnels[0].InsideCIDR = "169.254.100.1/30" }, "not a network address"},
		{"inside not link-local", func(p *Profile) { p.VPN.Tunnels[0].InsideCIDR = "10.0.0.0/30" }, "outside 169.254.0.0/16"},
		{"inside overlap", func(p *Profile) { p.VPN.Tunnels[1].InsideCIDR = "169.254.225.8/30" }, "vpn.tunnels[1].inside_cidr: 169.254.225.8/30 overlaps tunnels[0]"},
		{"v6 inside /64", func(p *Profile) { p.VPN.Tunnels[1].InsideIPv6CIDR = "fd00:1::/64" }, "vpn.tunnels[1].inside_ipv6_cidr: fd00:1::/64 is a /64; want a /126"},
		{"v6 inside not ULA", func(p *Profile) { p.VPN.Tunnels[1].InsideIPv6CIDR = "2001:db8::/126" }, "outside fd00::/8"},
		{"outside bad", func(p *Profile) { p.VPN.Tunnels[0].OutsideAddress = "3.18.239" }, "vpn.tunnels[0].outside_address"},
		{"outside same", func(p *Profile) { p.VPN.Tunnels[1].OutsideAddress = "3.18.239.122" }, "is also tunnels[0]'s"},
		{"outside mixed family", func(p *Profile) { p.VPN.Tunnels[1].OutsideAddress = "2600:1f18::1" }, "same address family"},
		{"outside loopback", func(p *Profile) { p.VPN.Tunnels[1].OutsideAddress = "127.0.0.1" }, "cannot be a tunnel endpoint"},
		{"psk missing", func(p *Profile) { p.VPN.Tunnels[0].PSKRef = "" }, "vpn.tunnels[0].psk_ref: missing"},
		{"one tunnel", func(p *Profile) { p.VPN.Tunnels = p.VPN.Tunnels[:1] }, "vpn.tunnels: 1 tunnels; want 2"},
		{"asn 7224", func(p *Profile) { p.VPN.BGP.CustomerASN = 7224 }, "vpn.bgp.customer_asn: 7224 is reserved by AWS in all Regions"},
		{"asn 17943", func(p *Profile) { p.VPN.BGP.CustomerASN = 17943 }, "vpn.bgp.customer_asn: 17943 is reserved by AWS"},
		{"asn equal", func(p *Profile) { p.VPN.BGP.CustomerASN = 64512 }, "vpn.bgp.amazon_asn: 64512 equals customer_asn"},
		{"bgp missing", func(p *Profile) { p.VPN.BGP = nil }, "vpn.bgp: missing"},
		{"bgp with static", func(p *Profile) { p.VPN.StaticRoutesOnly = true }, "vpn.bgp: must be omitted"},
		{"phase2 >= phase1", func(p *Profile) { p.VPN.Tunnels[0].Options.Phase1LifetimeSeconds = 3600 }, "vpn.tunnels[0].options.phase2_lifetime_s: 3600; must be less than phase1_lifetime_s 3600"},
		{"phase1 lifetime", func(p *Profile) { p.VPN.Tunnels[0].Options.Phase1LifetimeSeconds = 30000 }, "vpn.tunnels[0].options.phase1_lifetime_s: 30000; want 900-28800"},
		{"rekey margin", func(p *Profile) { p.VPN.Tunnels[0].Options.RekeyMarginTimeSeconds = 1801 }, "rekey_margin_time_s: 1801; want 60 to half"},
		{"fuzz", func(p *Profile) { p.VPN.Tunnels[0].Options.RekeyFuzzPercentage = 101 }, "rekey_fuzz_percentage"},
		{"replay", func(p *Profile) { p.VPN.Tunnels[0].Options.ReplayWindowSize = 32 }, "replay_window_size: 32; want 64-2048"},
		{"dpd", func(p *Profile) { p.VPN.Tunnels[0].Options.DPDTimeoutSeconds = 10 }, "dpd_timeout_s: 10; want at least 30"},
		{"dpd action", func(p *Profile) { p.VPN.Tunnels[0].Options.DPDTimeoutAction = "hold" }, "dpd_timeout_action"},
		{"startup", func(p *Profile) { p.VPN.Tunnels[0].Options.StartupAction = "now" }, "startup_action"},
		{"start without ikev2", func(p *Profile) {
			p.VPN.Tunnels[0].Options.StartupAction = "start"
			p.VPN.Tunnels[0].Options.IKEVersions = []string{"ikev1"}
		}, "start needs ikev2"},
		{"dh 5 in phase1", func(p *Profile) { p.VPN.Tunnels[1].Options.Phase1DHGroupNumbers = []int{5} }, "vpn.tunnels[1].options.phase1_dh_group_numbers[0]: 5"},
		{"dh 5 in phase2 ok, 1 not", func(p *Profile) { p.VPN.Tunnels[1].Options.Phase2DHGroupNumbers = []int{5, 1} }, "phase2_dh_group_numbers[1]: 1"},
		{"enc unknown", func(p *Profile) { p.VPN.Tunnels[0].Options.Phase2EncryptionAlgorithms = []string{"3DES"} }, `phase2_encryption_algorithms[0]: "3DES"`},
		{"integ empty", func(p *Profile) { p.VPN.Tunnels[0].Options.Phase1IntegrityAlgorithms = nil }, "phase1_integrity_algorithms: empty"},
		{"ike dup", func(p *Profile) { p.VPN.Tunnels[0].Options.IKEVersions = []string{"ikev2", "ikev2"} }, "listed twice"},
		{"prefix host bits", func(p *Profile) { p.VPN.SitePrefixes[0] = "192.168.1.1/24" }, "vpn.site_prefixes[0]: 192.168.1.1/24 has host bits set"},
		{"prefix link-local", func(p *Profile) { p.VPN.SitePrefixes[0] = "169.254.0.0/24" }, "overlaps 169.254.0.0/16"},
		{"prefix default", func(p *Profile) { p.VPN.SitePrefixes[0] = "0.0.0.0/0" }, "default route"},
		{"prefixes missing", func(p *Profile) { p.VPN.SitePrefixes = nil }, "vpn.site_prefixes: missing"},
		{"prefix v6 link-local", func(p *Profile) { p.VPN.SitePrefixes[0] = "fe80::/64" }, "vpn.site_prefixes[0]: fe80::/64 overlaps fe80::/10"},
		{"static without remote", func(p *Profile) { static(p); p.VPN.RemotePrefixes = nil }, "vpn.remote_prefixes: missing; a static connection routes"},
		{"remote with bgp", func(p *Profile) { p.VPN.RemotePrefixes = []string{"10.0.0.0/16"} }, "vpn.remote_prefixes: only for static_routes_only"},
		{"remote not cidr", func(p *Profile) { static(p); p.VPN.RemotePrefixes[1] = "10.0.0.0" }, `vpn.remote_prefixes[1]: "10.0.0.0" is not a CIDR prefix`},
		{"remote host bits", func(p *Profile) { static(p); p.VPN.RemotePrefixes[0] = "172.31.5.0/16" }, "vpn.remote_prefixes[0]: 172.31.5.0/16 has host bits set (want 172.31.0.0/16)"},
		{"remote default", func(p *Profile) { static(p); p.VPN.RemotePrefixes[0] = "0.0.0.0/0" }, "vpn.remote_prefixes[0]: 0.0.0.0/0 is a default route, not a remote network"},
		{"remote v6 default", func(p *Profile) { static(p); p.VPN.RemotePrefixes[1] = "::/0" }, "vpn.remote_prefixes[1]: ::/0 is a default route"},
		{"remote link-local", func(p *Profile) { static(p); p.VPN.RemotePrefixes[0] = "169.254.0.0/16" }, "vpn.remote_prefixes[0]: 169.254.0.0/16 overlaps 169.254.0.0/16"},
		{"remote twice", func(p *Profile) { static(p); p.VPN.RemotePrefixes[1] = p.VPN.RemotePrefixes[0] }, "vpn.remote_prefixes[1]: 172.31.0.0/16 is listed twice"},
		{"remote overlaps site", func(p *Profile) { static(p); p.VPN.RemotePrefixes[0] = "10.0.0.0/8" }, "vpn.remote_prefixes[0]: 10.0.0.0/8 overlaps site_prefixes[1] 10.20.0.0/16"},
		{"remote too many", func(p *Profile) {
			static(p)
			p.VPN.RemotePrefixes = nil
			for i := range MaxRemotePrefixes + 1 {
				p.VPN.RemotePrefixes = append(p.VPN.RemotePrefixes, fmt.Sprintf("172.%d.%d.0/24", 16+i/256, i%256))
			}
		}, "vpn.remote_prefixes: 1001 prefixes; at most 1000"},
		{"conn id", func(p *Profile) { p.VPN.ConnectionID = "" }, "vpn.connection_id"},
		{"type", func(p *Profile) { p.VPN.Type = "ipsec.2" }, "vpn.type"},
		{"country", func(p *Profile) { p.Country = "de" }, "country"},
		{"ssid", func(p *Profile) { p.WiFi.SSID = strings.Repeat("x", 33) }, "wifi.ssid: 33 bytes"},
		{"security", func(p *Profile) { p.WiFi.Security = "wep" }, "wifi.security"},
		{"band", func(p *Profile) { p.WiFi.Bands = []string{"60GHz"} }, "wifi.bands[0]"},
		{"mesh key", func(p *Profile) { p.Mesh.KeyRef = "" }, "mesh.key_ref: missing"},
		{"channel", func(p *Profile) { p.OTA.Channel = "Stable!" }, "ota.channel"},
		{"log endpoint", func(p *Profile) { p.Logs.Endpoint = "ftp://x" }, "logs.endpoint"},
		{"expiry", func(p *Profile) { p.ExpiresAt = p.IssuedAt }, "expires_at"},
		{"version", func(p *Profile) { p.Version = 0 }, "version: must be at least 1"},
		{"site id", func(p *Profile) { p.Site.ID = "Berlin 1" }, "site.id"},
		{"schema", func(p *Profile) { p.SchemaVersion = 2 }, "schema_version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := example()
			tc.mut(p)
			err := p.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v; want an error containing %q", err, tc.want)
			}
			var fe FieldErrors
			if err != nil && !errors.As(err, &fe) {
				t.Errorf("Validate() error is %T; want FieldErrors", err)
			}
		})
	}
	// Static mode without BGP, with the remote networks, is fine.
	p := example()
	static(p)
	if err := p.Validate(); err != nil {
		t.Errorf("static VPN: Validate() = %v; want nil", err)
	}
	// IPv6 outside addresses (a TGW connection with OutsideIpAddressType Ipv6) are fine.
	p = example()
	p.VPN.Tunnels[0].OutsideAddress, p.VPN.Tunnels[1].OutsideAddress = "2600:1f18:4d3:b500::10", "2600:1f18:4d3:b500::20"
	p.VPN.SitePrefixes = append(p.VPN.SitePrefixes, "2001:db8:10::/48")
	if err := p.Validate(); err != nil {
		t.Errorf("IPv6 outside addresses: Validate() = %v; want nil", err)
	}
}

func newKey(t testing.TB) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pub(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

func sign(t testing.TB, p *Profile, k ed25519.PrivateKey) []byte {
	t.Helper()
	b, err := Sign(p, k)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVerify(t *testing.T) {
	key, other := newKey(t), newKey(t)
	keys := NewKeySet(pub(key))
	now := t0.Add(time.Hour)
	good := sign(t, example(), key)
	cur, err := Verify(good, keys, Expect{SiteID: "berlin-1", Now: now})
	if err != nil {
		t.Fatalf("Verify(good) = %v", err)
	}
	if diff := cmp.Diff(example(), cur.Profile); diff != "" {
		t.Errorf("Verify(good) profile mismatch (-want +got):\n%s", diff)
	}

	older := example()
	older.Version = 2
	sameVersion := example()
	sameVersion.WiFi.SSID = "Other"
	expired := example()
	expired.Version = 4
	expired.ExpiresAt = now.Add(-time.Second)
	otherSite := example()
	otherSite.Version = 4
	otherSite.Site.ID = "paris-1"
	otherDevice := example()
	otherDevice.Version = 4
	otherDevice.Device = "MR-9999"

	tampered := func() []byte {
		var env Envelope
		json.Unmarshal(good, &env)
		pl, _ := base64.StdEncoding.DecodeString(env.Payload)
		pl = []byte(strings.Replace(string(pl), `"version":3`, `"version":9`, 1))
		env.Payload = base64.StdEncoding.EncodeToString(pl)
		b, _ := json.Marshal(env)
		return b
	}()
	newer := func(p *Profile, extra string) []byte {
		b, _ := p.Marshal()
		b = []byte(strings.Replace(string(b), `"schema_version":1`, `"schema_version":2`+extra, 1))
		env, _ := SignPayload(b, key)
		return env
	}
	sameSchemaUnknown := func() []byte {
		p := example()
		p.Version = 4
		b, _ := p.Marshal()
		b = []byte(strings.Replace(string(b), `"replay_window_size":1024`, `"replay_window_size":1024,"esp_tfc_padding":true`, 1))
		env, _ := SignPayload(b, key)
		return env
	}()
	v4 := example()
	v4.Version = 4

	for _, tc := range []struct {
		name    string
		env     []byte
		kind    error
		reasons []string
	}{
		{"tampered payload", tampered, ErrSignature, []string{"does not verify"}},
		{"untrusted key", sign(t, v4, other), ErrSignature, []string{"is not trusted"}},
		{"older version", sign(t, older, key), ErrRollback, []string{"version: 2 is older than 3 in force"}},
		{"same version other content", sign(t, sameVersion, key), ErrRollback, []string{"different content"}},
		{"expired", sign(t, expired, key), ErrExpired, []string{"expires_at"}},
		{"other site", sign(t, otherSite, key), ErrBinding, []string{`site.id: "paris-1"`}},
		{"other device", sign(t, otherDevice, key), ErrBinding, []string{`device: "MR-9999"`}},
		{"newer schema with unknown fields", newer(v4, `,"sdwan":{"enabled":true}`), ErrSchema,
			[]string{"schema_version 2 is newer than this build's 1", "unknown field sdwan"}},
		{"newer schema", newer(v4, ""), ErrSchema, []string{"schema_version 2 is newer"}},
		{"unknown field same schema", sameSchemaUnknown, ErrSchema, []string{"unknown field vpn.tunnels[0].options.esp_tfc_padding in schema_version 1"}},
		{"not json", []byte("{"), ErrInvalid, nil},
		{"no signatures", []byte(`{"payloadType":"` + PayloadType + `","payload":"e30=","signatures":[]}`), ErrSignature, []string{"none"}},
		{"wrong type", []byte(`{"payloadType":"text/plain","payload":"e30=","signatures":[]}`), ErrInvalid, []string{"payloadType"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := Verify(tc.env, keys, Expect{SiteID: "berlin-1", Device: "MR-0001", Now: now, Current: cur})
			if v != nil || !errors.Is(err, tc.kind) {
				t.Fatalf("Verify(%s) = %v, %v; want nil, %v", tc.name, v, err, tc.kind)
			}
			var re *RefusedError
			if !errors.As(err, &re) {
				t.Fatalf("Verify(%s) error %T; want *RefusedError", tc.name, err)
			}
			for _, r := range tc.reasons {
				if !strings.Contains(err.Error(), r) {
					t.Errorf("Verify(%s) = %v; want a reason containing %q", tc.name, err, r)
				}
			}
		})
	}

	// The same envelope again is "unchanged", not a refusal.
	if v, err := Verify(good, keys, Expect{Now: now, Current: cur}); !errors.Is(err, ErrUnchanged) || v != cur {
		t.Errorf("Verify(profile in force) = %v, %v; want current, ErrUnchanged", v, err)
	}
	// Key rotation: an envelope signed by an untrusted and a trusted key verifies.
	b, _ := v4.Marshal()
	both, _ := SignPayload(b, other, key)
	if v, err := Verify(both, keys, Expect{Now: now, Current: cur}); err != nil || v.Version != 4 {
		t.Errorf("Verify(two signatures, one trusted) = %v; want v4", err)
	}
}

func TestStoreKeepsLastGood(t *testing.T) {
	key := newKey(t)
	keys := NewKeySet(pub(key))
	dir := t.TempDir()
	now := t0.Add(time.Hour)
	exp := Expect{SiteID: "berlin-1", Now: now}
	s, err := OpenStore(dir, keys, exp)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := s.Current(); v != nil {
		t.Fatalf("empty store Current() = v%d; want nil", v.Version)
	}
	if _, err := s.Offer(sign(t, example(), key), exp); err != nil {
		t.Fatalf("Offer(v3) = %v", err)
	}
	bad := []struct {
		name string
		env  []byte
	}{
		{"bad signature", sign(t, func() *Profile { p := example(); p.Version = 5; return p }(), newKey(t))},
		{"older", sign(t, func() *Profile { p := example(); p.Version = 1; return p }(), key)},
		{"expired", sign(t, func() *Profile { p := example(); p.Version = 6; p.ExpiresAt = now; return p }(), key)},
		{"garbage", []byte("not an envelope")},
	}
	for _, b := range bad {
		if _, err := s.Offer(b.env, exp); err == nil {
			t.Errorf("Offer(%s) = nil; want refusal", b.name)
		}
		if v, _ := s.Current(); v == nil || v.Version != 3 {
			t.Errorf("after Offer(%s): Current() = %v; want v3 still in force", b.name, v != nil)
		}
	}
	// A restart finds v3, re-verified from disk.
	s2, err := OpenStore(dir, keys, exp)
	if err != nil {
		t.Fatal(err)
	}
	if v, stale := s2.Current(); v == nil || v.Version != 3 || stale {
		t.Errorf("reopened store Current() = %v, stale %v; want v3, fresh", v != nil, stale)
	}
	// After expiry it stays in force across a restart, reported stale.
	late := Expect{SiteID: "berlin-1", Now: t0.Add(31 * 24 * time.Hour)}
	s3, err := OpenStore(dir, keys, late)
	if err != nil {
		t.Fatalf("OpenStore(after expiry) = %v; want the stored profile", err)
	}
	if v, stale := s3.Current(); v == nil || !stale {
		t.Errorf("Current() after expiry = %v, stale %v; want v3, stale", v != nil, stale)
	}
	// Newer profiles replace it.
	v7 := example()
	v7.Version = 7
	if v, err := s.Offer(sign(t, v7, key), exp); err != nil || v.Version != 7 {
		t.Fatalf("Offer(v7) = %v", err)
	}
	// A damaged file is reported and nothing is in force.
	os.WriteFile(filepath.Join(dir, StoreFile), []byte("{"), 0o600)
	if _, err := OpenStore(dir, keys, exp); err == nil {
		t.Errorf("OpenStore(damaged) = nil error; want one")
	}
	// A file that is a validly signed profile by an untrusted key is refused on load.
	os.WriteFile(filepath.Join(dir, StoreFile), sign(t, v7, newKey(t)), 0o600)
	if _, err := OpenStore(dir, keys, exp); !errors.Is(err, ErrSignature) {
		t.Errorf("OpenStore(untrusted) = %v; want ErrSignature", err)
	}
}

// TestStaticProfileRoundTrip: a static profile's remote networks survive signing and
// verification (the field is part of schema 1, not an unknown field).
func TestStaticProfileRoundTrip(t *testing.T) {
	key := newKey(t)
	p := example()
	static(p)
	v, err := Verify(sign(t, p, key), NewKeySet(pub(key)), Expect{Now: t0, SiteID: "berlin-1"})
	if err != nil {
		t.Fatalf("Verify(static profile) = %v; want nil", err)
	}
	if diff := cmp.Diff([]string{"172.31.0.0/16", "2600:1f18:4d3:b500::/56"}, v.VPN.RemotePrefixes); diff != "" {
		t.Errorf("Verify(static profile).VPN.RemotePrefixes mismatch (-want +got):\n%s", diff)
	}
	// A BGP profile's payload does not carry the member at all.
	b, _ := example().Marshal()
	if strings.Contains(string(b), "remote_prefixes") {
		t.Errorf("BGP profile payload = %s; want no remote_prefixes member", b)
	}
}

func TestUnknownFields(t *testing.T) {
	got, err := UnknownFields([]byte(`{"version":1,"x":1,"vpn":{"tunnels":[{"options":{"y":2}},{"z":[1]}],"bgp":{"asn":1}},"issued_at":"2026-01-01T00:00:00Z","wifi":{"bands":["5GHz"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"vpn.bgp.asn", "vpn.tunnels[0].options.y", "vpn.tunnels[1].z", "x"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("UnknownFields mismatch (-want +got):\n%s", diff)
	}
}

func FuzzVerify(f *testing.F) {
	seed := ed25519.NewKeyFromSeed(make([]byte, 32))
	keys := NewKeySet(pub(seed))
	good, _ := Sign(example(), seed)
	f.Add(good)
	f.Add([]byte(`{"payloadType":"` + PayloadType + `","payload":"e30=","signatures":[{"keyid":"00","sig":""}]}`))
	f.Fuzz(func(t *testing.T, env []byte) {
		v, err := Verify(env, keys, Expect{Now: t0})
		if err == nil && v.Validate() != nil {
			t.Fatalf("Verify accepted an invalid profile")
		}
	})
}

// FuzzProfilePayload signs arbitrary payloads with the trusted key, so the fuzzer reaches the
// schema, unknown-field and validation code behind the signature check.
func FuzzProfilePayload(f *testing.F) {
	seed := ed25519.NewKeyFromSeed(make([]byte, 32))
	keys := NewKeySet(pub(seed))
	b, _ := example().Marshal()
	f.Add(b)
	sp := example()
	static(sp)
	b, _ = sp.Marshal()
	f.Add(b)
	f.Add([]byte(`{"schema_version":2,"extra":{"a":[1,{"b":2}]}}`))
	f.Add([]byte(`{"schema_version":1,"vpn":{"tunnels":[{},{}]}}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		env, err := SignPayload(payload, seed)
		if err != nil {
			t.Fatal(err)
		}
		v, err := Verify(env, keys, Expect{Now: t0})
		if err != nil {
			var re *RefusedError
			if !errors.As(err, &re) {
				t.Fatalf("Verify error %T %v; want *RefusedError", err, err)
			}
			return
		}
		if err := v.Validate(); err != nil {
			t.Fatalf("Verify accepted a profile that does not validate: %v", err)
		}
	})
}
