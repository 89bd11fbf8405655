package hostapd

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"meshroot/radio/chanplan"
)

// Security is the authentication mode of a BSS.
type Security string

// The security modes.
const (
	SecurityOpen Security = "open"
	// SecurityWPA2 is WPA2-Personal (PSK, CCMP), PMF optional.
	SecurityWPA2 Security = "wpa2-psk"
	// SecurityWPA3 is WPA3-Personal (SAE, CCMP), PMF required.
	SecurityWPA3 Security = "wpa3-sae"
	// SecurityTransition is WPA2/WPA3 transition mode: PSK and SAE on one BSS, PMF optional
	// for PSK and required for SAE.
	SecurityTransition Security = "wpa2-wpa3"
)

// BSSConfig is one SSID served by the radio.
type BSSConfig struct {
	// Iface is the netdev of the BSS; the first BSS uses Config.Interface and may leave it empty.
	Iface string
	// BSSID is needed for the second and later BSSes (hostapd bss= sections).
	BSSID net.HardwareAddr
	// SSID is 1..32 bytes.
	SSID     string
	Security Security
	// Passphrase is the PSK/SAE password (8..63 printable ASCII characters). Secret: it only
	// reaches the rendered file, never a log line or an error.
	Passphrase string
	// RRMNeighborReport and RRMBeaconReport enable 802.11k (rrm_neighbor_report,
	// rrm_beacon_report); BSSTransition enables 802.11v BSS transition management.
	RRMNeighborReport bool
	RRMBeaconReport   bool
	BSSTransition     bool
	// BeaconProtection enables beacon protection (beacon_prot=1; needs PMF, so not with open).
	// It defeats spoofed channel-switch announcements.
	BeaconProtection bool
	// Hidden hides the SSID in beacons (ignore_broadcast_ssid=1).
	Hidden bool
	// FT enables 802.11r fast BSS transition (nil: off); see FT.
	FT *FT
	// Bridge is the bridge hostapd adds the BSS's interface to (bridge=), e.g. br-lan; FT key
	// holder messages (RRB) also travel there.
	Bridge string
	// DisablePMKSACaching refuses PMKSA caching (disable_pmksa_caching=1): every non-FT
	// (re)association runs the full authentication.
	DisablePMKSACaching bool
}

// Config is a hostapd configuration for one radio, generated from the site profile.
type Config struct {
	// Interface is the first BSS's netdev, e.g. "wlan0".
	Interface string
	// Driver defaults to "nl80211".
	Driver string
	// CtrlInterface is the control-socket directory (default DefaultCtrlDir).
	CtrlInterface string
	// Country is the ISO 3166-1 alpha-2 regulatory country, e.g. "US", "DE".
	Country string
	// Channel is the operating channel.
	Channel chanplan.Spec
	// HE enables 802.11ax (always on for 6 GHz).
	HE bool
	// BeaconInterval in TU (default 100) and DTIMPeriod (default 2).
	BeaconInterval int
	DTIMPeriod     int
	// BSS are the SSIDs; at least one.
	BSS []BSSConfig
}

// LogValue keeps secrets out of logs: a Config logs its shape, never passphrases.
func (c Config) LogValue() slog.Value {
	ssids := make([]string, len(c.BSS))
	for i, b := range c.BSS {
		ssids[i] = b.SSID + "(" + string(b.Security) + ")"
	}
	return slog.GroupValue(
		slog.String("interface", c.Interface),
		slog.String("country", c.Country),
		slog.String("channel", c.Channel.String()),
		slog.Any("ssids", ssids),
	)
}

// String is LogValue's text; Passphrase never appears.
func (c Config) String() string { return c.LogValue().String() }

// LogValue redacts the passphrase.
func (b BSSConfig) LogValue() slog.Value {
	return slog.GroupValue(slog.String("ssid", b.SSID), slog.String("security", string(b.Security)))
}

// FieldError names the configuration field that is wrong.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return "hostapd config: " + e.Field + ": " + e.Msg }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

func validToken(s string) bool {
	for _, r := range s {
		if r < 0x21 || r > 0x7e {
			return false
		}
	}
	return s != ""
}

// Validate checks every field. It returns every problem joined (errors.As finds the first
// *FieldError; each line names its field).
func (c Config) Validate() error {
	var errs []error
	if !validToken(c.Interface) || len(c.Interface) > 15 || strings.ContainsAny(c.Interface, "/=") {
		errs = append(errs, fieldErr("interface", "%q is not an interface name (1..15 printable characters)", c.Interface))
	}
	if c.Driver != "" && !validToken(c.Driver) {
		errs = append(errs, fieldErr("driver", "%q is not a driver name", c.Driver))
	}
	if c.CtrlInterface != "" && (!validToken(c.CtrlInterface) || !strings.HasPrefix(c.CtrlInterface, "/")) {
		errs = append(errs, fieldErr("ctrl_interface", "%q is not an absolute path without spaces", c.CtrlInterface))
	}
	if len(c.Country) != 2 || c.Country[0] < 'A' || c.Country[0] > 'Z' || c.Country[1] < 'A' || c.Country[1] > 'Z' {
		errs = append(errs, fieldErr("country", "%q is not a two-letter upper-case country code", c.Country))
	}
	if err := c.Channel.Validate(); err != nil {
		errs = append(errs, fieldErr("channel", "%v", err))
	}
	if c.BeaconInterval != 0 && (c.BeaconInterval < 15 || c.BeaconInterval > 65535) {
		errs = append(errs, fieldErr("beacon_int", "%d TU out of 15..65535", c.BeaconInterval))
	}
	if c.DTIMPeriod != 0 && (c.DTIMPeriod < 1 || c.DTIMPeriod > 255) {
		errs = append(errs, fieldErr("dtim_period", "%d out of 1..255", c.DTIMPeriod))
	}
	if len(c.BSS) == 0 {
		errs = append(errs, fieldErr("bss", "at least one BSS (SSID) is needed"))
	}
	if len(c.BSS) > 16 {
		errs = append(errs, fieldErr("bss", "%d BSSes; at most 16", len(c.BSS)))
	}
	seen := map[string]bool{}
	for i, b := range c.BSS {
		f := fmt.Sprintf("bss[%d]", i)
		if i > 0 || b.Iface != "" {
			if !validToken(b.Iface) || len(b.Iface) > 15 || strings.ContainsAny(b.Iface, "/=") {
				errs = append(errs, fieldErr(f+".iface", "%q is not an interface name", b.Iface))
			}
		}
		name := b.Iface
		if i == 0 && name == "" {
			name = c.Interface
		}
		if seen[name] {
			errs = append(errs, fieldErr(f+".iface", "%q used twice", name))
		}
		seen[name] = true
		if i > 0 && len(b.BSSID) != 6 {
			errs = append(errs, fieldErr(f+".bssid", "needed for every BSS after the first"))
		}
		if len(b.SSID) < 1 || len(b.SSID) > 32 {
			errs = append(errs, fieldErr(f+".ssid", "%d bytes; must be 1..32", len(b.SSID)))
		}
		switch b.Security {
		case SecurityOpen:
			if b.Passphrase != "" {
				errs = append(errs, fieldErr(f+".passphrase", "set on an open BSS"))
			}
			if b.BeaconProtection {
				errs = append(errs, fieldErr(f+".beacon_protection", "needs PMF, which an open BSS does not have"))
			}
		case SecurityWPA2, SecurityWPA3, SecurityTransition:
			if n := len(b.Passphrase); n < 8 || n > 63 {
				errs = append(errs, fieldErr(f+".passphrase", "%d characters; must be 8..63", n))
			} else {
				for _, r := range b.Passphrase {
					if r < 0x20 || r > 0x7e {
						errs = append(errs, fieldErr(f+".passphrase", "must be printable ASCII"))
						break
					}
				}
				if b.Security != SecurityWPA2 && strings.Contains(b.Passphrase, "|") {
					errs = append(errs, fieldErr(f+".passphrase", "must not contain '|' (hostapd's sae_password separator)"))
				}
			}
		default:
			errs = append(errs, fieldErr(f+".security", "%q is not open, wpa2-psk, wpa3-sae or wpa2-wpa3", b.Security))
		}
		if c.Channel.Band() == chanplan.Band6G && b.Security != SecurityWPA3 {
			errs = append(errs, fieldErr(f+".security", "6 GHz allows only wpa3-sae"))
		}
		errs = append(errs, b.FT.validate(f+".ft", b.Security)...)
		if b.Bridge != "" && (!validToken(b.Bridge) || len(b.Bridge) > 15 || strings.ContainsAny(b.Bridge, "/=")) {
			errs = append(errs, fieldErr(f+".bridge", "%q is not an interface name", b.Bridge))
		}
	}
	return errors.Join(errs...)
}

// Render validates c and returns the hostapd.conf text. The file holds the passphrase: write it
// with mode 0600.
func (c Config) Render() ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# hostapd.conf generated by meshroot radio/hostapd; changes are overwritten")
	w("interface=%s", c.Interface)
	w("driver=%s", def(c.Driver, "nl80211"))
	w("ctrl_interface=%s", def(c.CtrlInterface, DefaultCtrlDir))
	w("ctrl_interface_group=0")
	w("country_code=%s", c.Country)
	w("ieee80211d=1")
	spec := c.Channel
	band := spec.Band()
	if band == chanplan.Band5G {
		w("ieee80211h=1") // spectrum management: DFS and TPC
	}
	switch band {
	case chanplan.Band2G4:
		w("hw_mode=g")
	default:
		w("hw_mode=a")
	}
	w("channel=%d", spec.Channel())
	if band == chanplan.Band6G {
		oc, err := OpClass(spec)
		if err != nil {
			return nil, fieldErr("channel", "%v", err)
		}
		w("op_class=%d", oc)
	}
	w("beacon_int=%d", defInt(c.BeaconInterval, 100))
	w("dtim_period=%d", defInt(c.DTIMPeriod, 2))
	w("wmm_enabled=1")
	if band != chanplan.Band6G {
		w("ieee80211n=1")
		switch spec.SecOffset() {
		case 1:
			w("ht_capab=[HT40+][SHORT-GI-20][SHORT-GI-40]")
		case -1:
			w("ht_capab=[HT40-][SHORT-GI-20][SHORT-GI-40]")
		default:
			w("ht_capab=[SHORT-GI-20]")
		}
	}
	chw := map[int]int{20: 0, 40: 0, 80: 1, 160: 2}[spec.Width]
	if band == chanplan.Band5G {
		w("ieee80211ac=1")
		w("vht_oper_chwidth=%d", chw)
		w("vht_oper_centr_freq_seg0_idx=%d", spec.CenterChannel())
		if spec.Width == 160 {
			w("vht_capab=[VHT160][SHORT-GI-80][SHORT-GI-160]")
		} else {
			w("vht_capab=[SHORT-GI-80]")
		}
	}
	if c.HE || band == chanplan.Band6G {
		w("ieee80211ax=1")
		w("he_oper_chwidth=%d", chw)
		w("he_oper_centr_freq_seg0_idx=%d", spec.CenterChannel())
	}
	for i, bss := range c.BSS {
		if i > 0 {
			w("")
			w("bss=%s", bss.Iface)
			w("bssid=%s", bss.BSSID)
		}
		renderBSS(&b, bss, band)
	}
	return []byte(b.String()), nil
}

func renderBSS(b *strings.Builder, bss BSSConfig, band chanplan.Band) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format+"\n", args...) }
	if printableSSID(bss.SSID) {
		w("ssid=%s", bss.SSID)
	} else {
		w("ssid2=%x", bss.SSID)
	}
	w("utf8_ssid=1")
	if bss.Hidden {
		w("ignore_broadcast_ssid=1")
	}
	switch bss.Security {
	case SecurityOpen:
		w("auth_algs=1")
		w("wpa=0")
	case SecurityWPA2:
		w("auth_algs=1")
		w("wpa=2")
		w("wpa_key_mgmt=%s", keyMgmt(SecurityWPA2, bss.FT != nil))
		w("rsn_pairwise=CCMP")
		w("wpa_passphrase=%s", bss.Passphrase)
		w("ieee80211w=1")
	case SecurityWPA3:
		w("auth_algs=1")
		w("wpa=2")
		w("wpa_key_mgmt=%s", keyMgmt(SecurityWPA3, bss.FT != nil))
		w("rsn_pairwise=CCMP")
		w("sae_password=%s", bss.Passphrase)
		w("ieee80211w=2")
		if band == chanplan.Band6G {
			w("sae_pwe=1") // 6 GHz: hash-to-element only
		} else {
			w("sae_pwe=2")
		}
	case SecurityTransition:
		w("auth_algs=1")
		w("wpa=2")
		w("wpa_key_mgmt=%s", keyMgmt(SecurityTransition, bss.FT != nil))
		w("rsn_pairwise=CCMP")
		w("wpa_passphrase=%s", bss.Passphrase)
		w("sae_password=%s", bss.Passphrase)
		w("ieee80211w=1")
		w("sae_require_mfp=1")
		w("sae_pwe=2")
	}
	if bss.BeaconProtection {
		w("beacon_prot=1")
	}
	if bss.RRMNeighborReport {
		w("rrm_neighbor_report=1")
	}
	if bss.RRMBeaconReport {
		w("rrm_beacon_report=1")
	}
	if bss.BSSTransition {
		w("bss_transition=1")
	}
	if bss.Bridge != "" {
		w("bridge=%s", bss.Bridge)
	}
	if bss.DisablePMKSACaching {
		w("disable_pmksa_caching=1")
	}
	bss.FT.render(w)
}

// printableSSID reports whether ssid can go on an ssid= line as is (printable ASCII without
// leading or trailing spaces); anything else is written as ssid2=<hex>.
func printableSSID(s string) bool {
	if s == "" || s[0] == ' ' || s[len(s)-1] == ' ' || s[0] == '"' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func def(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func defInt(n, d int) int {
	if n == 0 {
		return d
	}
	return n
}

// CSACount returns the channel-switch countdown for a radio with nBSS SSIDs: at least 5
// beacons, and 10 with several BSSes (TIP wlan-ap#247: multi-SSID radios lose stations with
// short counts).
func CSACount(nBSS int) int {
	if nBSS > 1 {
		return 10
	}
	return 5
}
