// Package ft derives the IEEE 802.11r (fast BSS transition) settings of every BSS of a site from
// the site profile, so that every node renders a consistent hostapd configuration without
// talking to the others: one mobility domain per site and SSID, FT over the air, and either
// ft_psk_generate_local (FT-PSK: each AP derives PMK-R0/PMK-R1 from the passphrase itself, no
// key holder messages) or, for SAE, r0kh/r1kh key holders with pairwise keys derived from the
// site's mesh key (each pair of APs shares a key nobody configured by hand, and a node joining
// the site computes the same keys as the others).
//
// Names: the R0KH-ID (nas_identifier) of a BSS is "<node>.<iface>"; the R1KH-ID is its BSSID.
// The mobility domain is two octets of SHA-256 over the site ID and SSID, never 0000.
package ft

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"

	"meshroot/radio/hostapd"
)

// Site is what the derivation needs from the site profile.
type Site struct {
	// ID is the site's identifier (profile site.id).
	ID string
	// SSID is the access network's name; each SSID has its own mobility domain.
	SSID string
	// Security is the BSS's security mode.
	Security hostapd.Security
	// MeshKey is the site's mesh secret (the profile's mesh key). Secret: only HKDF sees it.
	MeshKey []byte
}

// BSS is one BSS of the site.
type BSS struct {
	Node  string
	Iface string
	BSSID net.HardwareAddr
}

// NASIdentifier is the BSS's R0KH-ID.
func (b BSS) NASIdentifier() string {
	id := b.Node + "." + b.Iface
	if len(id) > 48 {
		sum := sha256.Sum256([]byte(id))
		id = id[:35] + "-" + hex.EncodeToString(sum[:6])
	}
	return id
}

// MobilityDomain returns the site's mobility domain for an SSID as 4 hex digits.
func MobilityDomain(siteID, ssid string) string {
	h := sha256.Sum256([]byte("meshroot ft mdid\x00" + siteID + "\x00" + ssid))
	if h[0] == 0 && h[1] == 0 {
		h[1] = 1
	}
	return hex.EncodeToString(h[:2])
}

// pairKey derives the key an R0KH and an R1KH share.
func pairKey(meshKey []byte, siteID, r0khID, r1khID string) ([32]byte, error) {
	var k [32]byte
	b, err := hkdf.Key(sha256.New, meshKey, []byte("meshroot ft key holders v1"), siteID+"\x00"+r0khID+"\x00"+r1khID, 32)
	if err != nil {
		return k, err
	}
	copy(k[:], b)
	return k, nil
}

// Config returns the FT configuration of self among all of the site's BSSes of this SSID
// (self included or not). FT-PSK uses ft_psk_generate_local; SAE and the WPA2/WPA3 transition
// mode get key holders for every other BSS.
func Config(site Site, self BSS, all []BSS) (*hostapd.FT, error) {
	if site.ID == "" {
		return nil, errors.New("ft: site id: empty")
	}
	if len(self.BSSID) != 6 {
		return nil, fmt.Errorf("ft: bss %s.%s: bssid: need a MAC address", self.Node, self.Iface)
	}
	if self.Node == "" || self.Iface == "" || strings.ContainsAny(self.Node+self.Iface, " \t") {
		return nil, fmt.Errorf("ft: bss %q.%q: node and iface must be non-empty without spaces", self.Node, self.Iface)
	}
	f := &hostapd.FT{
		MobilityDomain: MobilityDomain(site.ID, site.SSID),
		NASIdentifier:  self.NASIdentifier(),
		R1KeyHolder:    append(net.HardwareAddr(nil), self.BSSID...),
	}
	switch site.Security {
	case hostapd.SecurityWPA2:
		f.PSKGenerateLocal = true
		return f, nil
	case hostapd.SecurityWPA3, hostapd.SecurityTransition:
	default:
		return nil, fmt.Errorf("ft: security %q: 802.11r needs wpa2-psk, wpa3-sae or wpa2-wpa3", site.Security)
	}
	if len(site.MeshKey) < 16 {
		return nil, fmt.Errorf("ft: mesh key of %d bytes; need at least 16 for SAE key holders", len(site.MeshKey))
	}
	// FT-PSK stations of a transition-mode BSS still derive locally.
	f.PSKGenerateLocal = site.Security == hostapd.SecurityTransition
	peers := append([]BSS(nil), all...)
	sort.Slice(peers, func(i, j int) bool { return peers[i].BSSID.String() < peers[j].BSSID.String() })
	for _, p := range peers {
		if p.BSSID.String() == self.BSSID.String() {
			continue
		}
		if len(p.BSSID) != 6 {
			return nil, fmt.Errorf("ft: bss %s.%s: bssid: need a MAC address", p.Node, p.Iface)
		}
		// r0kh: the peer as R0KH, we as R1KH; r1kh: we as R0KH, the peer as R1KH.
		k0, err := pairKey(site.MeshKey, site.ID, p.NASIdentifier(), self.BSSID.String())
		if err != nil {
			return nil, err
		}
		k1, err := pairKey(site.MeshKey, site.ID, self.NASIdentifier(), p.BSSID.String())
		if err != nil {
			return nil, err
		}
		mac := append(net.HardwareAddr(nil), p.BSSID...)
		f.R0KH = append(f.R0KH, hostapd.KeyHolder{MAC: mac, ID: p.NASIdentifier(), Key: k0})
		f.R1KH = append(f.R1KH, hostapd.KeyHolder{MAC: mac, ID: p.BSSID.String(), Key: k1})
	}
	f.PMKR1Push = true
	return f, nil
}
