// Package api holds the wire types of the fleet cloud's HTTP API (the device-facing, app-facing
// and operator endpoints that provision/devcloud serves and provision/devcloud/openapi.yaml
// documents), shared by the cloud, the device's enrollment client and meshctl. It has no
// dependencies beyond the standard library, so the device binary does not pull in the cloud.
package api

import "time"

// Paths of the API (Go 1.22 ServeMux patterns; {ref...} matches the rest of the path).
const (
	PathHealth      = "/healthz"
	PathOpenAPI     = "/openapi.yaml"
	PathFleet       = "/v1/fleet"
	PathEnroll      = "/v1/enroll"
	PathDeviceSelf  = "/v1/device"
	PathRenew       = "/v1/device/renew"
	PathProfile     = "/v1/device/profile"
	PathSecrets     = "/v1/device/secrets/"
	PathLogs        = "/v1/device/logs"
	PathOTA         = "/v1/device/ota"
	PathSites       = "/v1/sites"
	PathDevices     = "/v1/devices"
	PathLogQuery    = "/v1/logs"
	PathSecretStore = "/v1/secrets/"
	PathOTARepo     = "/ota/"
)

// Error is the body of every non-2xx response.
type Error struct {
	Error string `json:"error"`
	// Fields lists invalid fields ("vpn.tunnels[1].inside_cidr: ...") when the request was a
	// document that failed validation.
	Fields []string `json:"fields,omitempty"`
}

// ProfileKey is a profile-signing public key (ed25519, base64 in JSON).
type ProfileKey struct {
	KeyID     string `json:"keyid"`
	PublicKey []byte `json:"public_key"`
}

// FleetInfo is the cloud's public identity.
type FleetInfo struct {
	CloudURL    string       `json:"cloud_url"`
	CAPEM       string       `json:"ca_pem"`
	CAPin       string       `json:"ca_pin_sha256"`
	ProfileKeys []ProfileKey `json:"profile_keys"`
}

// SiteSettings are what the phone app told the device at pairing and the device reports when it
// enrolls; the cloud fills the site's profile template with them where it has nothing yet.
// The Wi-Fi passphrase is not among them: it stays on the device.
type SiteSettings struct {
	Name     string `json:"site_name,omitempty"`
	WiFiSSID string `json:"wifi_ssid,omitempty"`
	Country  string `json:"country,omitempty"`
}

// EnrollRequest asks for a device certificate with a claim token (TLS, no client certificate).
type EnrollRequest struct {
	ClaimToken string        `json:"claim_token"`
	Serial     string        `json:"serial"`
	CSR        string        `json:"csr"`
	Settings   *SiteSettings `json:"site_settings,omitempty"`
}

// EnrollResponse carries the device certificate and what the device must trust from now on.
type EnrollResponse struct {
	Serial      string       `json:"serial"`
	SiteID      string       `json:"site_id"`
	Certificate string       `json:"certificate"`
	CA          string       `json:"ca"`
	ProfileKeys []ProfileKey `json:"profile_keys"`
}

// RenewRequest asks for a new certificate for the same device key (mTLS with the current one).
type RenewRequest struct {
	CSR string `json:"csr"`
}

// DeviceSelf is what the cloud knows about the calling device (GET /v1/device).
type DeviceSelf struct {
	Serial         string `json:"serial"`
	SiteID         string `json:"site_id"`
	ProfileVersion uint64 `json:"profile_version"`
}

// Secret is a resolved secret reference. Value is secret: never log it.
type Secret struct {
	Ref   string `json:"ref"`
	Value string `json:"value"`
}

// OTAInfo tells the device where its update repository is.
type OTAInfo struct {
	RepositoryURL string `json:"repository_url"`
	Channel       string `json:"channel"`
}

// LogsAccepted answers a log upload: Accepted lines were stored, Duplicates were skipped
// because a line with the same log_id was stored before. Both are delivered.
type LogsAccepted struct {
	Accepted   int `json:"accepted"`
	Duplicates int `json:"duplicates,omitempty"`
}

// CreateSiteRequest creates a site. WiFiSSID and Country seed the profile template.
type CreateSiteRequest struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Country  string `json:"country,omitempty"`
	WiFiSSID string `json:"wifi_ssid,omitempty"`
}

// Site is a site as the cloud shows it.
type Site struct {
	ID               string    `json:"id"`
	Name             string    `json:"name"`
	CreatedAt        time.Time `json:"created_at"`
	ProfileVersion   uint64    `json:"profile_version"`
	ProfileExpiresAt time.Time `json:"profile_expires_at,omitzero"`
}

// ClaimRequest asks for a claim token for a site.
type ClaimRequest struct {
	// TTLSeconds is the token's lifetime; 0 means the cloud's default (24 h).
	TTLSeconds int `json:"ttl_s,omitempty"`
}

// Claim is a single-use claim token and what a device needs to reach the cloud with it. The
// phone app hands all of it to the device over the paired channel.
type Claim struct {
	Token     string    `json:"token"`
	SiteID    string    `json:"site_id"`
	ExpiresAt time.Time `json:"expires_at"`
	CloudURL  string    `json:"cloud_url"`
	CAPin     string    `json:"ca_pin_sha256"`
}

// ProfileIssued answers a profile change: the new signed version.
type ProfileIssued struct {
	SiteID    string    `json:"site_id"`
	Version   uint64    `json:"version"`
	Digest    string    `json:"digest"`
	ExpiresAt time.Time `json:"expires_at"`
}

// PutSecretRequest stores a secret value. The store is write-only for operators.
type PutSecretRequest struct {
	Value string `json:"value"`
}

// Device is an enrolled device.
type Device struct {
	Serial       string    `json:"serial"`
	SiteID       string    `json:"site_id"`
	CertSerial   string    `json:"cert_serial"`
	CertNotAfter time.Time `json:"cert_not_after"`
	// PrevCertSerial is the certificate the last renewal replaced; it keeps working until it
	// expires, so a renewal whose answer was lost does not lock the device out.
	PrevCertSerial string    `json:"prev_cert_serial,omitempty"`
	KeyFingerprint string    `json:"key_fingerprint"`
	EnrolledAt     time.Time `json:"enrolled_at"`
	LastSeen       time.Time `json:"last_seen"`
	ProfileVersion uint64    `json:"profile_version"`
}

// LogRecord is one ingested log line. Tunnel is the tunnel's outside address when the line
// is about a tunnel (the line's "tunnel" attribute). LogID is the line's log_id, the device's
// unique id for it ("<boot id>-<sequence>"), when it has one.
type LogRecord struct {
	LogID    string         `json:"log_id,omitempty"`
	Time     time.Time      `json:"time"`
	Received time.Time      `json:"received_at"`
	SiteID   string         `json:"site_id"`
	Device   string         `json:"device"`
	Tunnel   string         `json:"tunnel,omitempty"`
	Level    string         `json:"level,omitempty"`
	Msg      string         `json:"msg"`
	Attrs    map[string]any `json:"attrs,omitempty"`
}
