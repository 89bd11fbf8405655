// Package profile is the signed site profile: the one document that tells a device everything
// about its site — Wi-Fi and mesh settings, country, OTA channel, log endpoint and the VPN
// connection to the concentrator — its validation, its signature envelope, and the device-side
// store that keeps the last good profile in force.
//
// # Envelope
//
// A profile travels in a DSSE envelope (Dead Simple Signing Envelope, the in-toto/sigstore
// format):
//
//	{"payloadType": "application/vnd.meshroot.profile+json",
//	 "payload":     "<base64 of the profile JSON>",
//	 "signatures":  [{"keyid": "<hex SHA-256 of the raw ed25519 public key>", "sig": "<base64>"}]}
//
// Each signature is ed25519 over PAE(payloadType, payload) = "DSSEv1" SP len(type) SP type SP
// len(payload) SP payload, lengths in ASCII decimal. The payload is signed as bytes, so no JSON
// canonicalization is needed; several signatures allow a fleet to rotate its profile key (the
// device accepts the envelope when any signature is by a key it trusts).
//
// # Acceptance rules (Verify)
//
//   - a signature by a trusted key, over the exact payload bytes;
//   - schema_version: a newer schema than this build knows is refused, with the fields this build
//     does not know listed as reasons; unknown fields in the same schema version are refused as
//     well (decision: the schema version is the compatibility contract — the cloud knows the
//     schema each device speaks, and silently dropping a field the signer meant, say a stricter
//     algorithm list, is worse than keeping the last good profile);
//   - version strictly greater than the version in force (anti-rollback); the same version with
//     the same payload is "unchanged", with different content it is refused;
//   - not expired (expires_at in the future). The stored last good profile stays in force after
//     it expires when nothing newer verifies: a router keeps its VPN up rather than cut the site
//     off because the cloud is unreachable (Store.Load reports it as stale);
//   - issued for this device's site (and device, when the profile names one);
//   - every field valid (Validate); errors name the field, e.g.
//     "vpn.tunnels[1].inside_cidr: 169.254.1.0/30 is reserved by AWS".
package profile

import (
	"encoding/json"
	"time"
)

// SchemaVersion is the profile schema this build reads and writes.
const SchemaVersion = 1

// Profile is one version of a site's profile.
type Profile struct {
	// SchemaVersion is the version of this document's schema.
	SchemaVersion int `json:"schema_version"`
	// Version increases with every profile issued for the site (anti-rollback).
	Version uint64 `json:"version"`
	// IssuedAt and ExpiresAt bound the profile's validity (RFC 3339, UTC).
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// Site is the site the profile is for.
	Site Site `json:"site"`
	// Device, when set, is the serial number of the one device the profile is for.
	Device string `json:"device,omitempty"`
	// Country is the ISO 3166-1 alpha-2 code setting the regulatory domain.
	Country string `json:"country"`
	// WiFi is the access network the mesh serves.
	WiFi WiFi `json:"wifi"`
	// Mesh is the mesh backhaul.
	Mesh Mesh `json:"mesh"`
	// OTA says which release channel the device follows.
	OTA OTA `json:"ota"`
	// Logs says where and how much the device logs.
	Logs Logs `json:"logs"`
	// VPN is the site-to-site VPN connection; nil when the site has none.
	VPN *VPN `json:"vpn,omitempty"`
}

// Site names the site.
type Site struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// WiFi is the Wi-Fi network the mesh serves to clients.
type WiFi struct {
	SSID string `json:"ssid"`
	// Security is "wpa3-sae", "wpa2-psk" or "wpa2-wpa3" (transition mode).
	Security string `json:"security"`
	// PassphraseRef is a secret reference; empty means the passphrase the app gave at pairing.
	PassphraseRef string `json:"passphrase_ref,omitempty"`
	// Bands limits the bands served ("2.4GHz", "5GHz", "6GHz"); empty means all the radios have.
	Bands []string `json:"bands,omitempty"`
}

// Mesh is the backhaul between the site's routers.
type Mesh struct {
	// ID is the mesh identifier shared by the site's routers.
	ID string `json:"id"`
	// Backhaul is "auto", "wired" or "wireless".
	Backhaul string `json:"backhaul"`
	// KeyRef is a secret reference to the backhaul's SAE password; empty for a wired-only mesh.
	KeyRef string `json:"key_ref,omitempty"`
}

// OTA selects the update channel.
type OTA struct {
	// Channel is the release channel, e.g. "stable" or "beta".
	Channel string `json:"channel"`
	// RepositoryURL overrides the cloud's TUF repository location; empty means the cloud's.
	RepositoryURL string `json:"repository_url,omitempty"`
}

// Logs configures logging.
type Logs struct {
	// Endpoint is where the device posts its logs; empty means the cloud's log ingest.
	Endpoint string `json:"endpoint,omitempty"`
	// Level is "debug", "info", "warn" or "error".
	Level string `json:"level"`
}

// VPN is the site-to-site VPN connection: two tunnels to two concentrator endpoints, as AWS
// Site-to-Site VPN defines them. It is self-contained: the firmware turns it into the VPN
// engine's configuration without looking anywhere else, except to resolve the PSK references.
type VPN struct {
	// ConnectionID is the concentrator's name for the connection, e.g. "vpn-0123456789abcdef0".
	ConnectionID string `json:"connection_id"`
	// Type is the connection type; only "ipsec.1".
	Type string `json:"type"`
	// StaticRoutesOnly is true for a static connection: no BGP; the concentrator routes
	// SitePrefixes (AWS: the connection's static routes) to the site, and the site routes
	// RemotePrefixes into the tunnels.
	StaticRoutesOnly bool `json:"static_routes_only"`
	// CustomerGatewayAddress is the site's own outside address as the concentrator knows it
	// (the CGW IP); informational, empty when unknown.
	CustomerGatewayAddress string `json:"customer_gateway_address,omitempty"`
	// BGP is the BGP session on each tunnel; nil for a static connection.
	BGP *BGP `json:"bgp,omitempty"`
	// SitePrefixes are the site's networks, advertised over BGP (or routed statically).
	SitePrefixes []string `json:"site_prefixes"`
	// RemotePrefixes are the concentrator side's networks (the VPC's or transit gateway's
	// CIDRs, IPv4 or IPv6) that a static connection routes into the tunnels: required when
	// static_routes_only is true, absent otherwise (BGP learns them). AWS keeps one of each
	// family in the connection's options (RemoteIpv4NetworkCidr, RemoteIpv6NetworkCidr,
	// 0.0.0.0/0 and ::/0 unless set); a profile lists them, at most MaxRemotePrefixes.
	RemotePrefixes []string `json:"remote_prefixes,omitempty"`
	// Tunnels are the two tunnels, identified by their outside address (never by position).
	Tunnels []Tunnel `json:"tunnels"`
}

// BGP holds the ASNs of both ends and the hold time.
type BGP struct {
	// CustomerASN is the site's ASN (the customer gateway's).
	CustomerASN uint32 `json:"customer_asn"`
	// AmazonASN is the concentrator side's ASN (AWS default 64512).
	AmazonASN uint32 `json:"amazon_asn"`
	// HoldTimeSeconds is the BGP hold time (AWS uses 30).
	HoldTimeSeconds int `json:"hold_time_s"`
}

// Tunnel is one IPsec tunnel.
type Tunnel struct {
	// OutsideAddress is the concentrator endpoint's outside IP address (IPv4 or IPv6).
	OutsideAddress string `json:"outside_address"`
	// InsideCIDR is the tunnel's inside /30 in 169.254.0.0/16; the concentrator takes the first
	// host address, the site the second.
	InsideCIDR string `json:"inside_cidr"`
	// InsideIPv6CIDR is the optional inside /126 in fd00::/8.
	InsideIPv6CIDR string `json:"inside_ipv6_cidr,omitempty"`
	// PSKRef is the secret reference of the tunnel's pre-shared key. The key itself is never in
	// the profile: the device fetches it from the cloud over mTLS.
	PSKRef string `json:"psk_ref"`
	// Options are the IKE/IPsec options, mirroring AWS's TunnelOptions.
	Options TunnelOptions `json:"options"`
}

// TunnelOptions mirror AWS's VpnTunnelOptionsSpecification (names in snake case, same values).
type TunnelOptions struct {
	// IKEVersions: "ikev1", "ikev2".
	IKEVersions []string `json:"ike_versions"`
	// Phase1EncryptionAlgorithms and Phase2EncryptionAlgorithms: "AES128", "AES256",
	// "AES128-GCM-16", "AES256-GCM-16".
	Phase1EncryptionAlgorithms []string `json:"phase1_encryption_algorithms"`
	Phase2EncryptionAlgorithms []string `json:"phase2_encryption_algorithms"`
	// Phase1IntegrityAlgorithms and Phase2IntegrityAlgorithms: "SHA1", "SHA2-256", "SHA2-384",
	// "SHA2-512".
	Phase1IntegrityAlgorithms []string `json:"phase1_integrity_algorithms"`
	Phase2IntegrityAlgorithms []string `json:"phase2_integrity_algorithms"`
	// Phase1DHGroupNumbers: 2, 14-24. Phase2DHGroupNumbers: 2, 5, 14-24.
	Phase1DHGroupNumbers []int `json:"phase1_dh_group_numbers"`
	Phase2DHGroupNumbers []int `json:"phase2_dh_group_numbers"`
	// Phase1LifetimeSeconds: 900-28800. Phase2LifetimeSeconds: 900-3600, below phase 1's.
	Phase1LifetimeSeconds int `json:"phase1_lifetime_s"`
	Phase2LifetimeSeconds int `json:"phase2_lifetime_s"`
	// RekeyMarginTimeSeconds: 60 to half the phase 2 lifetime.
	RekeyMarginTimeSeconds int `json:"rekey_margin_time_s"`
	// RekeyFuzzPercentage: 0-100.
	RekeyFuzzPercentage int `json:"rekey_fuzz_percentage"`
	// ReplayWindowSize: 64-2048 packets.
	ReplayWindowSize int `json:"replay_window_size"`
	// DPDTimeoutSeconds: at least 30.
	DPDTimeoutSeconds int `json:"dpd_timeout_s"`
	// DPDTimeoutAction: "clear", "none" or "restart".
	DPDTimeoutAction string `json:"dpd_timeout_action"`
	// StartupAction: "add" (the site initiates) or "start" (the concentrator initiates).
	StartupAction string `json:"startup_action"`
}

// DefaultTunnelOptions returns AWS's defaults: every algorithm and group allowed, lifetimes
// 28800/3600 s, rekey margin 270 s with 100 % fuzz, replay window 1024, DPD 30 s then clear,
// startup action add.
func DefaultTunnelOptions() TunnelOptions {
	return TunnelOptions{
		IKEVersions:                []string{"ikev1", "ikev2"},
		Phase1EncryptionAlgorithms: []string{"AES128", "AES256", "AES128-GCM-16", "AES256-GCM-16"},
		Phase2EncryptionAlgorithms: []string{"AES128", "AES256", "AES128-GCM-16", "AES256-GCM-16"},
		Phase1IntegrityAlgorithms:  []string{"SHA1", "SHA2-256", "SHA2-384", "SHA2-512"},
		Phase2IntegrityAlgorithms:  []string{"SHA1", "SHA2-256", "SHA2-384", "SHA2-512"},
		Phase1DHGroupNumbers:       []int{2, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24},
		Phase2DHGroupNumbers:       []int{2, 5, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24},
		Phase1LifetimeSeconds:      28800,
		Phase2LifetimeSeconds:      3600,
		RekeyMarginTimeSeconds:     270,
		RekeyFuzzPercentage:        100,
		ReplayWindowSize:           1024,
		DPDTimeoutSeconds:          30,
		DPDTimeoutAction:           "clear",
		StartupAction:              "add",
	}
}

// SecretRefs lists the secret references the profile uses (PSKs, Wi-Fi passphrase, mesh key), in
// a stable order without duplicates.
func (p *Profile) SecretRefs() []string {
	var refs []string
	seen := map[string]bool{}
	add := func(r string) {
		if r != "" && !seen[r] {
			seen[r] = true
			refs = append(refs, r)
		}
	}
	add(p.WiFi.PassphraseRef)
	add(p.Mesh.KeyRef)
	if p.VPN != nil {
		for _, t := range p.VPN.Tunnels {
			add(t.PSKRef)
		}
	}
	return refs
}

// Marshal encodes the profile as the JSON payload that gets signed.
func (p *Profile) Marshal() ([]byte, error) {
	q := *p
	q.IssuedAt = q.IssuedAt.UTC().Truncate(time.Second)
	q.ExpiresAt = q.ExpiresAt.UTC().Truncate(time.Second)
	return json.Marshal(&q)
}

// NewSiteProfile returns a profile template for a new site with the fleet's defaults: WPA2/WPA3
// transition mode, automatic backhaul, the stable channel, info logging, and no VPN. The
// caller sets the version, times, Wi-Fi name, country and mesh key before signing.
func NewSiteProfile(siteID, name string) *Profile {
	meshID := "mesh-" + siteID
	if len(meshID) > 32 {
		meshID = meshID[:32]
	}
	return &Profile{
		SchemaVersion: SchemaVersion,
		Site:          Site{ID: siteID, Name: name},
		WiFi:          WiFi{Security: "wpa2-wpa3"},
		Mesh:          Mesh{ID: meshID, Backhaul: "auto"},
		OTA:           OTA{Channel: "stable"},
		Logs:          Logs{Level: "info"},
	}
}
