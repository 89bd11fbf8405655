package hostapd

import (
	"encoding/hex"
	"fmt"
	"net"
	"strings"
)

// FT is a BSS's IEEE 802.11r fast BSS transition configuration (hostapd's mobility_domain,
// nas_identifier, r1_key_holder, ft_over_ds, ft_psk_generate_local, r0kh/r1kh, pmk_r1_push,
// reassociation_deadline). radio/ft derives one for every BSS of a site from the site profile.
type FT struct {
	// MobilityDomain is the 2-octet mobility domain identifier as 4 hex digits ("a1b2"); all
	// BSSes a station may roam between share it (and the SSID and security).
	MobilityDomain string
	// NASIdentifier is this BSS's R0KH-ID (1..48 octets).
	NASIdentifier string
	// R1KeyHolder is this BSS's R1KH-ID (a MAC address; default: hostapd uses the BSSID).
	R1KeyHolder net.HardwareAddr
	// OverDS enables FT over the distribution system; false is FT over the air.
	OverDS bool
	// PSKGenerateLocal derives PMK-R0/PMK-R1 locally from the PSK (FT-PSK only), so no key
	// holder messages are needed between APs.
	PSKGenerateLocal bool
	// R0KH and R1KH are the key holders this BSS exchanges keys with (FT-SAE, or FT-PSK without
	// PSKGenerateLocal). Secret keys: they reach only the rendered file.
	R0KH []KeyHolder
	R1KH []KeyHolder
	// PMKR1Push pushes PMK-R1s to every R1KH at association (pmk_r1_push=1).
	PMKR1Push bool
	// ReassociationDeadline in TUs (default 1000).
	ReassociationDeadline int
}

// KeyHolder is one r0kh= or r1kh= line: the key holder's MAC address, its ID (a NAS
// identifier for R0KHs, a MAC address for R1KHs) and the 256-bit key shared with it.
type KeyHolder struct {
	MAC net.HardwareAddr
	ID  string
	Key [32]byte
}

// String never shows the key.
func (k KeyHolder) String() string { return fmt.Sprintf("%s %s <key>", k.MAC, k.ID) }

func (f *FT) validate(field string, sec Security) []error {
	if f == nil {
		return nil
	}
	var errs []error
	if sec == SecurityOpen {
		errs = append(errs, fieldErr(field, "802.11r needs WPA2 or WPA3 (an RSN), not an open BSS"))
	}
	if d, err := hex.DecodeString(f.MobilityDomain); err != nil || len(d) != 2 {
		errs = append(errs, fieldErr(field+".mobility_domain", "%q is not 4 hex digits", f.MobilityDomain))
	}
	if n := len(f.NASIdentifier); n < 1 || n > 48 || !validToken(f.NASIdentifier) {
		errs = append(errs, fieldErr(field+".nas_identifier", "%q: need 1..48 printable characters without spaces", f.NASIdentifier))
	}
	if f.R1KeyHolder != nil && len(f.R1KeyHolder) != 6 {
		errs = append(errs, fieldErr(field+".r1_key_holder", "need a MAC address"))
	}
	if f.PSKGenerateLocal && sec == SecurityWPA3 {
		errs = append(errs, fieldErr(field+".ft_psk_generate_local", "only for FT-PSK; FT-SAE needs r0kh/r1kh key holders"))
	}
	if sec == SecurityWPA3 && (len(f.R0KH) == 0 || len(f.R1KH) == 0) {
		errs = append(errs, fieldErr(field+".r0kh", "FT-SAE needs r0kh and r1kh key holders"))
	}
	if !f.PSKGenerateLocal && sec == SecurityWPA2 && (len(f.R0KH) == 0 || len(f.R1KH) == 0) {
		errs = append(errs, fieldErr(field+".r0kh", "FT-PSK needs ft_psk_generate_local or r0kh/r1kh key holders"))
	}
	for i, k := range f.R0KH {
		if len(k.MAC) != 6 {
			errs = append(errs, fieldErr(fmt.Sprintf("%s.r0kh[%d].mac", field, i), "need a MAC address"))
		}
		if n := len(k.ID); n < 1 || n > 48 || !validToken(k.ID) {
			errs = append(errs, fieldErr(fmt.Sprintf("%s.r0kh[%d].id", field, i), "%q is not a NAS identifier", k.ID))
		}
	}
	for i, k := range f.R1KH {
		if len(k.MAC) != 6 {
			errs = append(errs, fieldErr(fmt.Sprintf("%s.r1kh[%d].mac", field, i), "need a MAC address"))
		}
		if m, err := net.ParseMAC(k.ID); err != nil || len(m) != 6 {
			errs = append(errs, fieldErr(fmt.Sprintf("%s.r1kh[%d].id", field, i), "%q is not an R1KH-ID (a MAC address)", k.ID))
		}
	}
	if f.ReassociationDeadline != 0 && (f.ReassociationDeadline < 1000 || f.ReassociationDeadline > 65535) {
		errs = append(errs, fieldErr(field+".reassociation_deadline", "%d TU out of 1000..65535", f.ReassociationDeadline))
	}
	return errs
}

// keyMgmt returns hostapd's wpa_key_mgmt value for a security mode, with the FT variants when
// 802.11r is on.
func keyMgmt(sec Security, ft bool) string {
	var m []string
	switch sec {
	case SecurityWPA2:
		m = []string{"WPA-PSK"}
		if ft {
			m = append(m, "FT-PSK")
		}
	case SecurityWPA3:
		m = []string{"SAE"}
		if ft {
			m = append(m, "FT-SAE")
		}
	case SecurityTransition:
		m = []string{"WPA-PSK"}
		if ft {
			m = append(m, "FT-PSK")
		}
		m = append(m, "SAE")
		if ft {
			m = append(m, "FT-SAE")
		}
	}
	return strings.Join(m, " ")
}

func (f *FT) render(w func(format string, args ...any)) {
	if f == nil {
		return
	}
	w("mobility_domain=%s", strings.ToLower(f.MobilityDomain))
	w("nas_identifier=%s", f.NASIdentifier)
	if len(f.R1KeyHolder) == 6 {
		w("r1_key_holder=%s", strings.ReplaceAll(f.R1KeyHolder.String(), ":", ""))
	}
	w("ft_over_ds=%d", b2i(f.OverDS))
	if f.PSKGenerateLocal {
		w("ft_psk_generate_local=1")
	}
	w("reassociation_deadline=%d", defInt(f.ReassociationDeadline, 1000))
	for _, k := range f.R0KH {
		w("r0kh=%s %s %x", k.MAC, k.ID, k.Key[:])
	}
	for _, k := range f.R1KH {
		w("r1kh=%s %s %x", k.MAC, k.ID, k.Key[:])
	}
	if f.PMKR1Push {
		w("pmk_r1_push=1")
	}
}
