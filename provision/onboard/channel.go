package onboard

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
)

// Record directions (the first nonce byte).
const (
	dirAppToDevice = 1
	dirDeviceToApp = 2
)

// context binds the SPAKE2+ run to this session's parameter exchange.
func pakeContext(req, resp []byte) []byte {
	h := sha256.New()
	h.Write([]byte("Meshroot PAKE v1 onboarding"))
	h.Write(req)
	h.Write(resp)
	return h.Sum(nil)
}

// IDProver is the SPAKE2+ identity of the app.
const IDProver = "meshroot-app"

// channel is one side of the record layer.
type channel struct {
	session     uint64
	send, recv  cipher.AEAD
	sendDir     byte
	recvDir     byte
	sendCounter uint32 // last counter sent
	recvCounter uint32 // last counter accepted
}

// ErrReplay is a record whose counter is not above the last accepted one.
var ErrReplay = errors.New("onboard: replayed or reordered record")

// ErrAuth is a record that does not authenticate.
var ErrAuth = errors.New("onboard: record does not authenticate")

func newChannel(session uint64, kShared []byte, device bool) (*channel, error) {
	keys, err := hkdf.Key(sha256.New, kShared, nil, "Meshroot onboarding keys v1", 64)
	if err != nil {
		return nil, err
	}
	a2d, err := gcm(keys[:32])
	if err != nil {
		return nil, err
	}
	d2a, err := gcm(keys[32:])
	if err != nil {
		return nil, err
	}
	c := &channel{session: session}
	if device {
		c.send, c.recv, c.sendDir, c.recvDir = d2a, a2d, dirDeviceToApp, dirAppToDevice
	} else {
		c.send, c.recv, c.sendDir, c.recvDir = a2d, d2a, dirAppToDevice, dirDeviceToApp
	}
	return c, nil
}

func gcm(k []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

func nonce(dir byte, counter uint32) []byte {
	n := make([]byte, 12)
	n[0] = dir
	binary.BigEndian.PutUint64(n[4:], uint64(counter))
	return n
}

// seal encrypts a record with the next counter.
func (c *channel) seal(plaintext []byte) (Frame, error) {
	if c.sendCounter == ^uint32(0) {
		return Frame{}, errors.New("onboard: record counter exhausted")
	}
	c.sendCounter++
	f := Frame{Type: TypeSealed, Session: c.session, Counter: c.sendCounter}
	// The header's body length must be the ciphertext's.
	f.Body = make([]byte, len(plaintext)+c.send.Overhead())
	hdr := f.header()
	f.Body = c.send.Seal(f.Body[:0], nonce(c.sendDir, f.Counter), plaintext, hdr)
	return f, nil
}

// open authenticates and decrypts a record, refusing replays.
func (c *channel) open(f Frame) ([]byte, error) {
	if f.Type != TypeSealed || f.Session != c.session {
		return nil, fmt.Errorf("%w: not a record of this session", ErrAuth)
	}
	if f.Counter <= c.recvCounter {
		return nil, fmt.Errorf("%w: counter %d, last accepted %d", ErrReplay, f.Counter, c.recvCounter)
	}
	pt, err := c.recv.Open(nil, nonce(c.recvDir, f.Counter), f.Body, f.header())
	if err != nil {
		return nil, ErrAuth
	}
	c.recvCounter = f.Counter
	return pt, nil
}

// Messages inside the channel (JSON).

// Setup is what the app hands the device. It holds secrets (the claim token, the Wi-Fi
// passphrase): it never prints them.
type Setup struct {
	// ClaimToken is the account's single-use claim for this device.
	ClaimToken string `json:"claim_token"`
	// CloudURL and CAPin say where the fleet cloud is and which CA it must present.
	CloudURL string `json:"cloud_url"`
	CAPin    string `json:"ca_pin_sha256"`
	// SiteName, WiFiSSID, WiFiPassphrase and Country are the site's settings.
	SiteName       string `json:"site_name"`
	WiFiSSID       string `json:"wifi_ssid"`
	WiFiPassphrase string `json:"wifi_passphrase"`
	Country        string `json:"country"`
}

// LogValue shows a Setup without its secrets.
func (s Setup) LogValue() slog.Value {
	return slog.GroupValue(slog.String("cloud_url", s.CloudURL), slog.String("site_name", s.SiteName),
		slog.String("wifi_ssid", s.WiFiSSID), slog.String("country", s.Country))
}

// String shows a Setup without its secrets.
func (s Setup) String() string {
	return fmt.Sprintf("Setup{cloud %s, site %q, wifi %q, country %s}", s.CloudURL, s.SiteName, s.WiFiSSID, s.Country)
}

// GoString hides the secrets from %#v.
func (s Setup) GoString() string { return s.String() }

var (
	rePin     = regexp.MustCompile(`^[0-9a-f]{64}$`)
	reCountry = regexp.MustCompile(`^[A-Z]{2}$`)
)

// Validate checks the setup; errors name the field (and never show a secret).
func (s Setup) Validate() error {
	if n := len(s.ClaimToken); n < 8 || n > 256 {
		return fmt.Errorf("claim_token: %d characters; want 8-256", n)
	}
	u, err := url.Parse(s.CloudURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("cloud_url: %q; want https://host[:port]", s.CloudURL)
	}
	if !rePin.MatchString(s.CAPin) {
		return errors.New("ca_pin_sha256: want 64 lowercase hex digits")
	}
	if n := len(s.SiteName); n > 64 {
		return fmt.Errorf("site_name: %d bytes; at most 64", n)
	}
	if n := len(s.WiFiSSID); n < 1 || n > 32 {
		return fmt.Errorf("wifi_ssid: %d bytes; want 1-32", n)
	}
	if n := len(s.WiFiPassphrase); n < 8 || n > 63 {
		return fmt.Errorf("wifi_passphrase: %d characters; want 8-63", n)
	}
	if !reCountry.MatchString(s.Country) {
		return fmt.Errorf("country: %q; want an ISO 3166-1 alpha-2 code", s.Country)
	}
	return nil
}

// Request is an app → device record.
type Request struct {
	// Op is "setup" or "status".
	Op    string `json:"op"`
	Setup *Setup `json:"setup,omitempty"`
}

// Progress is how far the device got. The app asks for it over the paired channel, so it sees
// "paired" onwards; the device's own status also shows the phases before that.
type Progress struct {
	// Phase is, in order: "unpaired" (waiting for the app), "pairing" (a handshake is under
	// way), "paired" (the app proved the setup code; no setup yet), "configured" (the app's
	// setup is stored), "enrolling", "enrolled", "profile" (a verified profile is in force: the
	// end of onboarding); or "failed" (Detail says why; the device waits for a new pairing).
	Phase          string `json:"phase"`
	SiteID         string `json:"site_id,omitempty"`
	ProfileVersion uint64 `json:"profile_version,omitempty"`
	// Detail says what went wrong (phase failed) or what is being retried.
	Detail string `json:"detail,omitempty"`
}

// Progress phases.
const (
	PhaseUnpaired   = "unpaired"
	PhasePairing    = "pairing"
	PhasePaired     = "paired"
	PhaseConfigured = "configured"
	PhaseEnrolling  = "enrolling"
	PhaseEnrolled   = "enrolled"
	PhaseProfile    = "profile"
	PhaseFailed     = "failed"
)

// Response is a device → app record.
type Response struct {
	OK       bool      `json:"ok"`
	Error    string    `json:"error,omitempty"`
	Progress *Progress `json:"progress,omitempty"`
}

func decodeJSON(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: record: %v", ErrFrame, err)
	}
	return nil
}
