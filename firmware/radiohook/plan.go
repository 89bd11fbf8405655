package radiohook

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"

	"meshroot/board"
	"meshroot/provision/profile"
	"meshroot/radio/chanplan"
	"meshroot/radio/ft"
	"meshroot/radio/hostapd"
	"meshroot/radio/nl80211"
)

// Site is what the radio service takes from a verified site profile, with its two secrets
// resolved: the Wi-Fi passphrase and the mesh key never reach a log line, an error or the
// status document (Site's LogValue and String leave them out).
type Site struct {
	ProfileVersion uint64
	// ID is the site's ID (profile site.id): the 802.11r mobility domain and the FT key holders'
	// keys derive from it.
	ID      string
	Country string
	SSID    string
	// Security is the access network's mode (profile wifi.security).
	Security hostapd.Security
	// Passphrase is the access network's passphrase: the secret wifi.passphrase_ref names, or
	// the one the app gave at pairing. Secret.
	Passphrase string
	// Bands limits the bands served (empty: every radio's).
	Bands []board.Band
	// MeshKey is the site's mesh key (the secret mesh.key_ref names; nil without one). It keys
	// the control plane (meshproto.DeriveKey) and FT-SAE's key holders. Secret.
	MeshKey []byte
	// Backhaul is the profile's mesh.backhaul ("auto", "wired", "wireless").
	Backhaul string
}

// LogValue shows the site without its secrets.
func (s Site) LogValue() slog.Value {
	return slog.GroupValue(slog.Uint64("profile_version", s.ProfileVersion), slog.String("site", s.ID),
		slog.String("ssid", s.SSID), slog.String("security", string(s.Security)), slog.String("country", s.Country),
		slog.Bool("mesh_key", len(s.MeshKey) > 0))
}

// String is LogValue's text: no passphrase, no mesh key.
func (s Site) String() string { return s.LogValue().String() }

// FieldError names the profile field a site cannot be served from.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return "radio: profile " + e.Field + ": " + e.Msg }

// SiteFrom reads a verified profile's Wi-Fi, mesh and country fields and resolves their secrets:
// secret resolves a reference (provision/agent's Secret), pairing returns the passphrase the app
// gave (agent's WiFiPassphrase), used when the profile names none. Errors name the field and
// never carry a secret.
func SiteFrom(v *profile.Verified, secret func(ref string) (string, bool), pairing func() (string, bool)) (Site, error) {
	if v == nil || v.Profile == nil {
		return Site{}, errors.New("radio: no profile")
	}
	p := v.Profile
	s := Site{ProfileVersion: p.Version, ID: p.Site.ID, Country: p.Country, SSID: p.WiFi.SSID, Backhaul: p.Mesh.Backhaul}
	var errs []error
	switch p.WiFi.Security {
	case "wpa3-sae":
		s.Security = hostapd.SecurityWPA3
	case "wpa2-psk":
		s.Security = hostapd.SecurityWPA2
	case "wpa2-wpa3":
		s.Security = hostapd.SecurityTransition
	default:
		errs = append(errs, &FieldError{"wifi.security", fmt.Sprintf("%q is not wpa3-sae, wpa2-psk or wpa2-wpa3", p.WiFi.Security)})
	}
	var ok bool
	if ref := p.WiFi.PassphraseRef; ref != "" {
		if s.Passphrase, ok = lookup(secret, ref); !ok {
			errs = append(errs, &FieldError{"wifi.passphrase_ref", fmt.Sprintf("secret %q not resolved", ref)})
		}
	} else if pairing == nil {
		errs = append(errs, &FieldError{"wifi.passphrase_ref", "empty, and no passphrase from the pairing"})
	} else if s.Passphrase, ok = pairing(); !ok || s.Passphrase == "" {
		errs = append(errs, &FieldError{"wifi.passphrase_ref", "empty, and no passphrase from the pairing"})
	}
	if s.Passphrase != "" {
		if n := len(s.Passphrase); n < 8 || n > 63 {
			errs = append(errs, &FieldError{"wifi passphrase", fmt.Sprintf("%d characters; must be 8..63", n)})
		}
	}
	if n := len(s.SSID); n < 1 || n > 32 {
		errs = append(errs, &FieldError{"wifi.ssid", fmt.Sprintf("%d bytes; must be 1..32", n)})
	}
	if len(p.Country) != 2 || strings.ToUpper(p.Country) != p.Country {
		errs = append(errs, &FieldError{"country", fmt.Sprintf("%q is not an ISO 3166-1 alpha-2 code", p.Country)})
	}
	for i, b := range p.WiFi.Bands {
		switch board.Band(b) {
		case board.Band2G4, board.Band5G, board.Band6G:
			s.Bands = append(s.Bands, board.Band(b))
		default:
			errs = append(errs, &FieldError{fmt.Sprintf("wifi.bands[%d]", i), fmt.Sprintf("%q is not a band", b)})
		}
	}
	if ref := p.Mesh.KeyRef; ref != "" {
		k, ok := lookup(secret, ref)
		switch {
		case !ok:
			errs = append(errs, &FieldError{"mesh.key_ref", fmt.Sprintf("secret %q not resolved", ref)})
		case len(k) < 16:
			errs = append(errs, &FieldError{"mesh.key_ref", fmt.Sprintf("the mesh key has %d bytes; need at least 16", len(k))})
		default:
			s.MeshKey = []byte(k)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Site{}, err
	}
	return s, nil
}

func lookup(f func(string) (string, bool), ref string) (string, bool) {
	if f == nil {
		return "", false
	}
	return f(ref)
}

// serves reports whether the site serves band b.
func (s Site) serves(b board.Band) bool { return len(s.Bands) == 0 || slices.Contains(s.Bands, b) }

// Radio is one of the node's radios as found at run time: the board's description (or a
// simulated radio's) with its phy, netdev and the channels the regulatory domain allows now.
type Radio struct {
	// ID is site-unique: "<node>/phy<N>".
	ID    string
	Phy   int
	Iface string
	MAC   net.HardwareAddr
	Band  board.Band
	// MaxWidth is the widest channel the radio may use; DFS whether it may use DFS channels.
	MaxWidth int
	DFS      bool
	// Channels are the band's channels with their regulatory flags and DFS state.
	Channels []nl80211.Channel
}

// RadioPlan is what one radio serves: its hostapd configuration and the rendered file, or why
// it serves nothing.
type RadioPlan struct {
	Radio  Radio
	Config hostapd.Config
	// Conf is the rendered hostapd.conf (it holds the passphrase: written 0600, never logged).
	Conf []byte
	// Skip says why the radio serves nothing (its band is not in the profile), "" otherwise.
	Skip string
	// MobilityDomain is the 802.11r mobility domain ("" without FT).
	MobilityDomain string
}

// Layout says where the service's files go and what hostapd bridges to.
type Layout struct {
	// CtrlDir is hostapd's control-socket directory (ctrl_interface), e.g. /run/hostapd.
	CtrlDir string
	// Bridge is the LAN bridge the BSSes join (hostapd's bridge=), e.g. br-lan.
	Bridge string
}

// Plan renders every radio's hostapd configuration for a site: SSID and security from the
// profile, the country, a channel (chosen: the one a radio had, while the regulatory domain
// still allows it; else a safe default for its band), 802.11k/v on, 802.11r from radio/ft
// with the site's mobility domain, beacon protection with WPA3, the BSS on the LAN bridge.
// A radio whose band the site does not serve gets Skip; a radio no channel fits is an error.
func Plan(node string, site Site, radios []Radio, lay Layout, chosen map[string]chanplan.Spec) ([]RadioPlan, error) {
	var bsses []ft.BSS
	for _, r := range radios {
		if site.serves(r.Band) && len(r.MAC) == 6 {
			bsses = append(bsses, ft.BSS{Node: node, Iface: r.Iface, BSSID: r.MAC})
		}
	}
	var out []RadioPlan
	var errs []error
	for _, r := range radios {
		rp := RadioPlan{Radio: r}
		if !site.serves(r.Band) {
			rp.Skip = fmt.Sprintf("the site serves %v only", site.Bands)
			out = append(out, rp)
			continue
		}
		spec, err := Channel(r, chosen[r.ID])
		if err != nil {
			errs = append(errs, fmt.Errorf("radio %s: %w", r.ID, err))
			continue
		}
		sec := site.Security
		if r.Band == board.Band6G {
			sec = hostapd.SecurityWPA3 // 6 GHz allows SAE only
		}
		bss := hostapd.BSSConfig{SSID: site.SSID, Security: sec, Passphrase: site.Passphrase,
			RRMNeighborReport: true, RRMBeaconReport: true, BSSTransition: true,
			BeaconProtection: sec != hostapd.SecurityWPA2, Bridge: lay.Bridge}
		if len(r.MAC) == 6 {
			f, err := ft.Config(ft.Site{ID: site.ID, SSID: site.SSID, Security: sec, MeshKey: site.MeshKey},
				ft.BSS{Node: node, Iface: r.Iface, BSSID: r.MAC}, bsses)
			if err == nil {
				bss.FT = f
				rp.MobilityDomain = f.MobilityDomain
			}
			// Without a mesh key FT-SAE has no key holders: the BSS serves without 802.11r.
		}
		rp.Config = hostapd.Config{Interface: r.Iface, CtrlInterface: lay.CtrlDir, Country: site.Country, Channel: spec,
			BSS: []hostapd.BSSConfig{bss}}
		rp.Conf, err = rp.Config.Render()
		if err != nil {
			errs = append(errs, fmt.Errorf("radio %s: %w", r.ID, err))
			continue
		}
		out = append(out, rp)
	}
	return out, errors.Join(errs...)
}

// CtrlPath is a radio's control socket.
func (rp RadioPlan) CtrlPath() string {
	return filepath.Join(rp.Config.CtrlInterface, rp.Radio.Iface)
}

// defaults are the channels a radio starts on when it has none yet, in order of preference:
// channels every regulatory domain allows without DFS or indoor-only limits where possible
// (2.4 GHz: 6, 1, 11; 5 GHz: 36, 44, 149, 157; 6 GHz: PSC channels 5, 21, 37), at the widest
// width up to the radio's maximum (80 MHz at most: a wider first channel rarely survives the
// planner's first look, and on 2.4 GHz 20 MHz is the only polite width).
var defaults = map[board.Band][]int{
	board.Band2G4: {2437, 2412, 2462},
	board.Band5G:  {5180, 5220, 5745, 5785},
	board.Band6G:  {5975, 6055, 6135},
}

// Channel picks where a radio starts: prev when the regulatory domain still allows it (no
// subchannel disabled or no-IR, and no radar channel that is not cleared), else the first
// allowed default, at the widest width that fits; an error when none does.
func Channel(r Radio, prev chanplan.Spec) (chanplan.Spec, error) {
	st := map[int]nl80211.Channel{}
	for _, c := range r.Channels {
		st[c.Freq] = c
	}
	ok := func(s chanplan.Spec, allowCleared bool) bool {
		if s.Validate() != nil || board.Band(s.Band()) != r.Band || s.Width > max(r.MaxWidth, 20) {
			return false
		}
		for _, f := range s.Subchannels() {
			c, found := st[f]
			if !found || c.Disabled || c.NoIR {
				return false
			}
			if c.Radar && (!r.DFS || !allowCleared || c.DFS != nl80211.DFSAvailable) {
				return false
			}
		}
		switch s.Width {
		case 40:
			if (s.SecOffset() > 0 && st[s.Freq].NoHT40Plus) || (s.SecOffset() < 0 && st[s.Freq].NoHT40Minus) {
				return false
			}
		case 80:
			return !st[s.Freq].No80
		case 160:
			return !st[s.Freq].No160
		}
		return true
	}
	if !prev.IsZero() && ok(prev, true) {
		return prev, nil
	}
	widths := []int{80, 40, 20}
	if r.Band == board.Band2G4 {
		widths = []int{20}
	}
	for _, w := range widths {
		if w > max(r.MaxWidth, 20) {
			continue
		}
		for _, f := range defaults[r.Band] {
			for _, s := range chanplan.SpecsFor(chanplan.Band(r.Band), w) {
				if s.Freq == f && ok(s, false) {
					return s, nil
				}
			}
		}
	}
	// Any channel at all, narrowest first.
	for _, s := range chanplan.SpecsFor(chanplan.Band(r.Band), 20) {
		if ok(s, false) {
			return s, nil
		}
	}
	return chanplan.Spec{}, fmt.Errorf("no %s channel the regulatory domain allows without radar detection", r.Band)
}
