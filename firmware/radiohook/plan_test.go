package radiohook

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"meshroot/board"
	"meshroot/provision/profile"
	"meshroot/radio/chanplan"
	"meshroot/radio/ft"
	"meshroot/radio/hostapd"
	"meshroot/radio/nl80211"
)

const (
	testPass    = "correct horse battery staple"
	testMeshKey = "MESHKEY-abcdefghijklmnopqrstuvwx"
)

func testProfile(version uint64, ssid string) *profile.Verified {
	p := profile.NewSiteProfile("site-1", "Test site")
	p.Version, p.Country, p.WiFi.SSID = version, "DE", ssid
	p.IssuedAt, p.ExpiresAt = time.Now(), time.Now().Add(time.Hour)
	p.Mesh.KeyRef = "site/site-1/mesh-key"
	return &profile.Verified{Profile: p}
}

func secrets(ref string) (string, bool) {
	switch ref {
	case "site/site-1/mesh-key":
		return testMeshKey, true
	case "wifi/other":
		return "another passphrase 123", true
	}
	return "", false
}

func pairing() (string, bool) { return testPass, true }

func TestSiteFrom(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mutate  func(p *profile.Profile)
		pairing func() (string, bool)
		want    func(s *Site)
		err     string
	}{
		{name: "defaults: transition mode, pairing passphrase, mesh key", want: func(s *Site) {}},
		{name: "wpa3", mutate: func(p *profile.Profile) { p.WiFi.Security = "wpa3-sae" }, want: func(s *Site) { s.Security = hostapd.SecurityWPA3 }},
		{name: "wpa2", mutate: func(p *profile.Profile) { p.WiFi.Security = "wpa2-psk" }, want: func(s *Site) { s.Security = hostapd.SecurityWPA2 }},
		{name: "passphrase by reference", mutate: func(p *profile.Profile) { p.WiFi.PassphraseRef = "wifi/other" },
			want: func(s *Site) { s.Passphrase = "another passphrase 123" }},
		{name: "bands", mutate: func(p *profile.Profile) { p.WiFi.Bands = []string{"5GHz"} }, want: func(s *Site) { s.Bands = []board.Band{board.Band5G} }},
		{name: "wired mesh without key", mutate: func(p *profile.Profile) { p.Mesh.KeyRef, p.Mesh.Backhaul = "", "wired" },
			want: func(s *Site) { s.MeshKey, s.Backhaul = nil, "wired" }},
		{name: "unresolved passphrase", mutate: func(p *profile.Profile) { p.WiFi.PassphraseRef = "wifi/missing" }, err: `wifi.passphrase_ref: secret "wifi/missing" not resolved`},
		{name: "no pairing passphrase", pairing: func() (string, bool) { return "", false }, err: "wifi.passphrase_ref: empty"},
		{name: "short passphrase", pairing: func() (string, bool) { return "short", true }, err: "5 characters; must be 8..63"},
		{name: "unresolved mesh key", mutate: func(p *profile.Profile) { p.Mesh.KeyRef = "nope" }, err: `mesh.key_ref: secret "nope" not resolved`},
		{name: "bad security", mutate: func(p *profile.Profile) { p.WiFi.Security = "wep" }, err: `wifi.security: "wep"`},
		{name: "bad band", mutate: func(p *profile.Profile) { p.WiFi.Bands = []string{"60GHz"} }, err: "wifi.bands[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := testProfile(7, "Meshroot")
			if tc.mutate != nil {
				tc.mutate(v.Profile)
			}
			pair := pairing
			if tc.pairing != nil {
				pair = tc.pairing
			}
			got, err := SiteFrom(v, secrets, pair)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("SiteFrom() = %v; want an error containing %q", err, tc.err)
				}
				var fe *FieldError
				if !errors.As(err, &fe) {
					t.Errorf("SiteFrom() error %v is no *FieldError", err)
				}
				for _, secret := range []string{testPass, testMeshKey, "short"} {
					if strings.Contains(err.Error(), secret) {
						t.Errorf("SiteFrom() error %q shows a secret", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("SiteFrom() = %v", err)
			}
			want := Site{ProfileVersion: 7, ID: "site-1", Country: "DE", SSID: "Meshroot", Security: hostapd.SecurityTransition,
				Passphrase: testPass, MeshKey: []byte(testMeshKey), Backhaul: "auto"}
			tc.want(&want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("SiteFrom() mismatch (-want +got):\n%s", diff)
			}
			if s := got.String(); strings.Contains(s, testPass) || strings.Contains(s, testMeshKey) || strings.Contains(s, "another passphrase") {
				t.Errorf("Site.String() = %q; shows a secret", s)
			}
		})
	}
}

func channels(band board.Band, mutate func(c *nl80211.Channel)) []nl80211.Channel {
	var out []nl80211.Channel
	for _, f := range chanplan.Channels20(chanplan.Band(band)) {
		c := nl80211.Channel{Freq: f}
		if band == board.Band5G && f >= 5260 && f <= 5720 {
			c.Radar = true
		}
		if mutate != nil {
			mutate(&c)
		}
		out = append(out, c)
	}
	return out
}

func testRadios() []Radio {
	return []Radio{
		{ID: "MR-1/phy0", Phy: 0, Iface: "wlan0", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 0}, Band: board.Band2G4, MaxWidth: 40, Channels: channels(board.Band2G4, nil)},
		{ID: "MR-1/phy1", Phy: 1, Iface: "wlan1", MAC: net.HardwareAddr{2, 0, 0, 0, 1, 0}, Band: board.Band5G, MaxWidth: 80, DFS: true, Channels: channels(board.Band5G, nil)},
	}
}

func mustSpec(t *testing.T, freq, width int) chanplan.Spec {
	t.Helper()
	s, err := chanplan.NewSpec(freq, width, 1)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPlanRendersProfile(t *testing.T) {
	site, err := SiteFrom(testProfile(3, "Meshroot"), secrets, pairing)
	if err != nil {
		t.Fatal(err)
	}
	plans, err := Plan("MR-1", site, testRadios(), Layout{CtrlDir: "/run/hostapd", Bridge: "br-lan"}, nil)
	if err != nil {
		t.Fatalf("Plan() = %v", err)
	}
	if len(plans) != 2 {
		t.Fatalf("Plan() = %d plans; want 2", len(plans))
	}
	mdid := ft.MobilityDomain("site-1", "Meshroot")
	for i, want := range []struct {
		iface, channel string
		lines          []string
	}{
		{"wlan0", "6/20", []string{"hw_mode=g", "channel=6", "ht_capab=[SHORT-GI-20]"}},
		{"wlan1", "36/80", []string{"hw_mode=a", "channel=36", "vht_oper_chwidth=1", "vht_oper_centr_freq_seg0_idx=42", "ieee80211h=1"}},
	} {
		rp := plans[i]
		if rp.Skip != "" || rp.Radio.Iface != want.iface {
			t.Fatalf("plans[%d] = radio %s skip %q; want %s served", i, rp.Radio.Iface, rp.Skip, want.iface)
		}
		if got := rp.Config.Channel.String(); got != want.channel {
			t.Errorf("plans[%d] channel = %s; want %s (the safe default)", i, got, want.channel)
		}
		conf := string(rp.Conf)
		lines := append([]string{
			"interface=" + want.iface, "ctrl_interface=/run/hostapd", "country_code=DE", "ssid=Meshroot",
			"wpa_key_mgmt=WPA-PSK FT-PSK SAE FT-SAE", "wpa_passphrase=" + testPass, "sae_password=" + testPass, "ieee80211w=1",
			"rrm_neighbor_report=1", "rrm_beacon_report=1", "bss_transition=1", "beacon_prot=1", "bridge=br-lan",
			"mobility_domain=" + mdid, "nas_identifier=MR-1." + want.iface, "ft_psk_generate_local=1", "pmk_r1_push=1",
		}, want.lines...)
		for _, l := range lines {
			if !strings.Contains(conf, "\n"+l+"\n") {
				t.Errorf("plans[%d] config lacks %q:\n%s", i, l, conf)
			}
		}
		if rp.MobilityDomain != mdid {
			t.Errorf("plans[%d].MobilityDomain = %q; want %q", i, rp.MobilityDomain, mdid)
		}
		// The other BSS of the node is its FT key holder peer (r0kh/r1kh for SAE).
		other := plans[1-i].Radio.MAC.String()
		if !strings.Contains(conf, "r1kh="+other+" "+other+" ") {
			t.Errorf("plans[%d] config has no r1kh for the node's other BSS %s", i, other)
		}
		if s := rp.Config.String(); strings.Contains(s, testPass) {
			t.Errorf("Config.String() = %q; shows the passphrase", s)
		}
	}
}

func TestPlanVariants(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(p *profile.Profile)
		radios func([]Radio) []Radio
		check  func(t *testing.T, plans []RadioPlan, err error)
	}{
		{name: "5 GHz only", mutate: func(p *profile.Profile) { p.WiFi.Bands = []string{"5GHz"} }, check: func(t *testing.T, plans []RadioPlan, err error) {
			if err != nil || plans[0].Skip == "" || plans[1].Skip != "" {
				t.Errorf("Plan() = skips %q, %q, %v; want the 2.4 GHz radio skipped", plans[0].Skip, plans[1].Skip, err)
			}
		}},
		{name: "wpa2 without mesh key: FT-PSK", mutate: func(p *profile.Profile) { p.WiFi.Security, p.Mesh.KeyRef = "wpa2-psk", "" }, check: func(t *testing.T, plans []RadioPlan, err error) {
			if err != nil || !strings.Contains(string(plans[1].Conf), "wpa_key_mgmt=WPA-PSK FT-PSK\n") || strings.Contains(string(plans[1].Conf), "r0kh=") {
				t.Errorf("Plan() = %v\n%s; want FT-PSK with local key derivation", err, plans[1].Conf)
			}
		}},
		{name: "wpa3 without mesh key: no FT", mutate: func(p *profile.Profile) { p.WiFi.Security, p.Mesh.KeyRef = "wpa3-sae", "" }, check: func(t *testing.T, plans []RadioPlan, err error) {
			if err != nil || !strings.Contains(string(plans[1].Conf), "wpa_key_mgmt=SAE\n") || plans[1].MobilityDomain != "" {
				t.Errorf("Plan() = %v\n%s; want SAE without 802.11r", err, plans[1].Conf)
			}
		}},
		{name: "6 GHz radio serves SAE only", radios: func(rs []Radio) []Radio {
			return append(rs, Radio{ID: "MR-1/phy2", Phy: 2, Iface: "wlan2", MAC: net.HardwareAddr{2, 0, 0, 0, 2, 0}, Band: board.Band6G, MaxWidth: 160, Channels: channels(board.Band6G, nil)})
		}, check: func(t *testing.T, plans []RadioPlan, err error) {
			if err != nil || plans[2].Config.BSS[0].Security != hostapd.SecurityWPA3 || !strings.Contains(string(plans[2].Conf), "sae_pwe=1") {
				t.Errorf("Plan() = %v; 6 GHz security %s; want wpa3-sae with hash-to-element", err, plans[2].Config.BSS[0].Security)
			}
		}},
		{name: "no channel allowed", radios: func(rs []Radio) []Radio {
			rs[1].Channels = channels(board.Band5G, func(c *nl80211.Channel) { c.NoIR = true })
			return rs
		}, check: func(t *testing.T, plans []RadioPlan, err error) {
			if err == nil || !strings.Contains(err.Error(), "radio MR-1/phy1: no 5GHz channel") || len(plans) != 1 {
				t.Errorf("Plan() = %d plans, %v; want the 2.4 GHz one and an error naming the 5 GHz radio", len(plans), err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := testProfile(3, "Meshroot")
			if tc.mutate != nil {
				tc.mutate(v.Profile)
			}
			site, err := SiteFrom(v, secrets, pairing)
			if err != nil {
				t.Fatal(err)
			}
			radios := testRadios()
			if tc.radios != nil {
				radios = tc.radios(radios)
			}
			plans, err := Plan("MR-1", site, radios, Layout{CtrlDir: "/run/hostapd", Bridge: "br-lan"}, nil)
			tc.check(t, plans, err)
		})
	}
}

func TestChannel(t *testing.T) {
	r5 := testRadios()[1]
	cleared := r5
	cleared.Channels = channels(board.Band5G, func(c *nl80211.Channel) {
		if c.Radar {
			c.DFS = nl80211.DFSAvailable
		}
	})
	narrow := r5
	narrow.Channels = channels(board.Band5G, func(c *nl80211.Channel) { c.No80 = true })
	blocked36 := r5
	blocked36.Channels = channels(board.Band5G, func(c *nl80211.Channel) { c.Disabled = c.Disabled || c.Freq <= 5240 })
	for _, tc := range []struct {
		name  string
		radio Radio
		prev  chanplan.Spec
		want  chanplan.Spec
	}{
		{"default", r5, chanplan.Spec{}, mustSpec(t, 5180, 80)},
		{"previous kept", r5, mustSpec(t, 5745, 80), mustSpec(t, 5745, 80)},
		{"previous DFS not cleared: default", r5, mustSpec(t, 5260, 80), mustSpec(t, 5180, 80)},
		{"previous DFS cleared: kept", cleared, mustSpec(t, 5260, 80), mustSpec(t, 5260, 80)},
		{"previous wider than the radio: default", r5, mustSpec(t, 5180, 160), mustSpec(t, 5180, 80)},
		{"no 80 MHz: 40", narrow, chanplan.Spec{}, mustSpec(t, 5180, 40)},
		{"36-48 disabled: 149", blocked36, chanplan.Spec{}, mustSpec(t, 5745, 80)},
		{"2.4 GHz: 20 MHz on 6", testRadios()[0], chanplan.Spec{}, chanplan.Spec{Freq: 2437, Width: 20, Center1: 2437}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Channel(tc.radio, tc.prev)
			if err != nil || got != tc.want {
				t.Errorf("Channel(%s, prev %s) = %s, %v; want %s", tc.radio.ID, tc.prev, got, err, tc.want)
			}
		})
	}
}

func TestHwsim(t *testing.T) {
	for _, tc := range []struct {
		cmdline string
		want    int
	}{
		{"console=ttyAMA0 panic=-1", 0},
		{"console=ttyAMA0 meshroot.hwsim=2", 2},
		{"meshroot.hwsim=3 quiet", 3},
		{"meshroot.hwsim=-1", 0},
		{"meshroot.hwsim=x", 0},
		{"meshroot.hwsimx=2", 0},
	} {
		if got := Hwsim(tc.cmdline); got != tc.want {
			t.Errorf("Hwsim(%q) = %d; want %d", tc.cmdline, got, tc.want)
		}
	}
}
