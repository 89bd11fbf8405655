package ft

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"

	"meshroot/radio/chanplan"
	"meshroot/radio/hostapd"
)

var meshKey = []byte("site mesh key of the test site!!")

func bsses() []BSS {
	return []BSS{
		{Node: "gw", Iface: "wlan0", BSSID: net.HardwareAddr{2, 0, 0, 0, 0, 0}},
		{Node: "sat1", Iface: "wlan0", BSSID: net.HardwareAddr{2, 0, 0, 0, 1, 0}},
		{Node: "sat2", Iface: "wlan1", BSSID: net.HardwareAddr{2, 0, 0, 0, 2, 0}},
	}
}

func TestFTPSK(t *testing.T) {
	site := Site{ID: "site-1", SSID: "home", Security: hostapd.SecurityWPA2}
	all := bsses()
	var mdid string
	for _, b := range all {
		f, err := Config(site, b, all)
		if err != nil {
			t.Fatalf("Config(%s) = %v", b.Node, err)
		}
		if !f.PSKGenerateLocal || len(f.R0KH) != 0 || f.OverDS {
			t.Errorf("Config(%s) = %+v; want FT-PSK over the air with local derivation", b.Node, f)
		}
		if mdid == "" {
			mdid = f.MobilityDomain
		}
		if f.MobilityDomain != mdid || f.NASIdentifier != b.Node+"."+b.Iface || f.R1KeyHolder.String() != b.BSSID.String() {
			t.Errorf("Config(%s) = mdid %s nas %s r1kh %s", b.Node, f.MobilityDomain, f.NASIdentifier, f.R1KeyHolder)
		}
	}
	if d, err := hex.DecodeString(mdid); err != nil || len(d) != 2 || mdid == "0000" {
		t.Errorf("mobility domain %q", mdid)
	}
	if MobilityDomain("site-1", "guest") == mdid || MobilityDomain("site-2", "home") == mdid {
		t.Errorf("mobility domain does not depend on the site and SSID")
	}
}

// TestFTSAEKeysMatch: every pair of APs computed the same key on both ends (R0KH X's r1kh
// line for Y equals Y's r0kh line for X), keys differ between pairs, and every rendered
// hostapd.conf is valid.
func TestFTSAEKeysMatch(t *testing.T) {
	site := Site{ID: "site-1", SSID: "home", Security: hostapd.SecurityWPA3, MeshKey: meshKey}
	all := bsses()
	cfgs := map[string]*hostapd.FT{}
	for _, b := range all {
		f, err := Config(site, b, all)
		if err != nil {
			t.Fatalf("Config(%s) = %v", b.Node, err)
		}
		if len(f.R0KH) != 2 || len(f.R1KH) != 2 || f.PSKGenerateLocal {
			t.Fatalf("Config(%s): %d r0kh, %d r1kh; want 2 each", b.Node, len(f.R0KH), len(f.R1KH))
		}
		cfgs[b.BSSID.String()] = f
		spec, _ := chanplan.NewSpec(5180, 80, 0)
		hc := hostapd.Config{Interface: b.Iface, Country: "US", Channel: spec,
			BSS: []hostapd.BSSConfig{{SSID: "home", Security: hostapd.SecurityWPA3, Passphrase: "passphrase1", FT: f}}}
		if _, err := hc.Render(); err != nil {
			t.Errorf("Render(%s) = %v", b.Node, err)
		}
	}
	keys := map[[32]byte]string{}
	for _, x := range all {
		for _, y := range all {
			if x.Node == y.Node {
				continue
			}
			var onX, onY *hostapd.KeyHolder
			for i, k := range cfgs[x.BSSID.String()].R1KH {
				if k.MAC.String() == y.BSSID.String() {
					onX = &cfgs[x.BSSID.String()].R1KH[i]
				}
			}
			for i, k := range cfgs[y.BSSID.String()].R0KH {
				if k.MAC.String() == x.BSSID.String() {
					onY = &cfgs[y.BSSID.String()].R0KH[i]
				}
			}
			if onX == nil || onY == nil {
				t.Fatalf("pair %s→%s: key holder missing", x.Node, y.Node)
			}
			if onX.Key != onY.Key || onY.ID != x.NASIdentifier() || onX.ID != y.BSSID.String() {
				t.Errorf("pair R0KH %s → R1KH %s: keys or ids differ (%s, %s)", x.Node, y.Node, onX, onY)
			}
			if prev, dup := keys[onX.Key]; dup {
				t.Errorf("pair %s→%s has the same key as %s", x.Node, y.Node, prev)
			}
			keys[onX.Key] = x.Node + "→" + y.Node
		}
	}
	// Another site key gives other keys.
	site2 := site
	site2.MeshKey = []byte("another mesh key, another site!!")
	f2, _ := Config(site2, all[0], all)
	if f2.R1KH[0].Key == cfgs[all[0].BSSID.String()].R1KH[0].Key {
		t.Errorf("keys do not depend on the mesh key")
	}
	// The key never reaches a log line.
	var logs bytes.Buffer
	f := cfgs[all[0].BSSID.String()]
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("ft", "r0kh", f.R0KH[0], "r1kh", fmt.Sprint(f.R1KH))
	if strings.Contains(logs.String(), hex.EncodeToString(f.R0KH[0].Key[:])) {
		t.Errorf("log holds a key: %s", logs.String())
	}
}

func TestConfigErrors(t *testing.T) {
	all := bsses()
	for _, tt := range []struct {
		name string
		site Site
		self BSS
	}{
		{"no site", Site{SSID: "x", Security: hostapd.SecurityWPA2}, all[0]},
		{"open", Site{ID: "s", SSID: "x", Security: hostapd.SecurityOpen}, all[0]},
		{"sae short key", Site{ID: "s", SSID: "x", Security: hostapd.SecurityWPA3, MeshKey: []byte("short")}, all[0]},
		{"no bssid", Site{ID: "s", SSID: "x", Security: hostapd.SecurityWPA2}, BSS{Node: "n", Iface: "w"}},
		{"space", Site{ID: "s", SSID: "x", Security: hostapd.SecurityWPA2}, BSS{Node: "a b", Iface: "w", BSSID: all[0].BSSID}},
	} {
		if _, err := Config(tt.site, tt.self, all); err == nil {
			t.Errorf("%s: Config() = nil error", tt.name)
		}
	}
	long := BSS{Node: strings.Repeat("n", 60), Iface: "wlan0"}
	if id := long.NASIdentifier(); len(id) > 48 {
		t.Errorf("NASIdentifier() of %d bytes; want at most 48", len(id))
	}
}
