// Package enroll is the device's side of the fleet cloud: enrollment (a CSR from the device key
// plus the single-use claim token, over TLS pinned to the fleet CA by the SHA-256 the claim
// carried, for an X.509 device certificate) and then mutual TLS for every call — the signed site
// profile (with a long poll), secret references (the PSKs), log upload and the OTA repository
// location. A device without a certificate gets nothing from the cloud.
//
// Every call retries with exponential backoff and full jitter on network errors, timeouts, 5xx
// and 429 (the uplink may be lossy); 4xx answers are final.
package enroll

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"meshroot/provision/api"
	"meshroot/provision/identity"
)

// ErrUnauthorized is the cloud refusing the device (claim refused, certificate unknown or
// revoked): retrying cannot help.
var ErrUnauthorized = errors.New("unauthorized by the cloud")

// Backoff is the retry policy.
type Backoff struct {
	// Initial is the first delay, Max the largest, Multiplier the growth per attempt.
	Initial, Max time.Duration
	Multiplier   float64
	// Attempts bounds the tries (0: until the context ends).
	Attempts int
	// AttemptTimeout bounds one request.
	AttemptTimeout time.Duration
}

// DefaultBackoff starts at 250 ms, doubles to 10 s, 15 s per attempt, until the context ends.
var DefaultBackoff = Backoff{Initial: 250 * time.Millisecond, Max: 10 * time.Second, Multiplier: 2, AttemptTimeout: 15 * time.Second}

// delay is the wait before retry n (0-based), with full jitter: uniform in [d/2, d].
func (b Backoff) delay(n int) time.Duration {
	d := float64(b.Initial)
	for i := 0; i < n; i++ {
		d *= b.Multiplier
		if d >= float64(b.Max) {
			d = float64(b.Max)
			break
		}
	}
	return time.Duration(d/2 + rand.Float64()*d/2)
}

// statusError is a non-2xx answer.
type statusError struct {
	status int
	msg    string
}

func (e *statusError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.status, e.msg) }

func retryable(err error) bool {
	var se *statusError
	if errors.As(err, &se) {
		return se.status >= 500 || se.status == http.StatusTooManyRequests || se.status == http.StatusRequestTimeout
	}
	var cve *tls.CertificateVerificationError
	var uae x509.UnknownAuthorityError
	var hne x509.HostnameError
	if errors.Is(err, api.ErrPinMismatch) || errors.As(err, &cve) || errors.As(err, &uae) || errors.As(err, &hne) {
		return false // the wrong server: retrying will not make it the right one
	}
	return !errors.Is(err, ErrUnauthorized) && !errors.Is(err, context.Canceled)
}

// retry runs fn until it succeeds, fails for good, or ctx ends.
func retry(ctx context.Context, b Backoff, log *slog.Logger, what string, fn func(ctx context.Context) error) error {
	for n := 0; ; n++ {
		actx, cancel := context.WithTimeout(ctx, b.AttemptTimeout)
		err := fn(actx)
		cancel()
		if err == nil || !retryable(err) {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), err)
		}
		if b.Attempts > 0 && n+1 >= b.Attempts {
			return fmt.Errorf("%s: %d attempts: %w", what, n+1, err)
		}
		d := b.delay(n)
		log.Debug("retrying", "what", what, "attempt", n+1, "in", d, "err", err.Error())
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), err)
		}
	}
}

// Credentials are what enrollment gives the device: keep them on the data partition.
type Credentials struct {
	CloudURL    string           `json:"cloud_url"`
	SiteID      string           `json:"site_id"`
	Serial      string           `json:"serial"`
	CertPEM     string           `json:"certificate"`
	CAPEM       string           `json:"ca"`
	ProfileKeys []api.ProfileKey `json:"profile_keys"`
}

// Request is one enrollment.
type Request struct {
	CloudURL   string
	CAPin      string
	ClaimToken string
	Serial     string
	Key        *ecdsa.PrivateKey
	Settings   *api.SiteSettings
	Backoff    Backoff
	Logger     *slog.Logger
	// Dial, when set, makes the connections (tests and labs dial inside a namespace).
	Dial DialFunc
}

// DialFunc makes a network connection.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Enroll exchanges the claim token and a CSR for a device certificate.
func Enroll(ctx context.Context, r Request) (*Credentials, error) {
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	if r.Backoff.Initial == 0 {
		r.Backoff = DefaultBackoff
	}
	u, err := url.Parse(r.CloudURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("enroll: cloud url %q: want https://host[:port]", r.CloudURL)
	}
	csr, err := identity.CSR(r.Key, r.Serial)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	body, _ := json.Marshal(api.EnrollRequest{ClaimToken: r.ClaimToken, Serial: r.Serial, CSR: string(csr), Settings: r.Settings})
	hc := &http.Client{Transport: transport(api.PinnedTLS(r.CAPin, u.Hostname()), r.Dial)}
	defer hc.CloseIdleConnections()
	var resp api.EnrollResponse
	err = retry(ctx, r.Backoff, r.Logger, "enroll", func(ctx context.Context) error {
		return do(ctx, hc, http.MethodPost, strings.TrimSuffix(r.CloudURL, "/")+api.PathEnroll, nil, body, &resp)
	})
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	c := &Credentials{CloudURL: r.CloudURL, SiteID: resp.SiteID, Serial: resp.Serial, CertPEM: resp.Certificate, CAPEM: resp.CA, ProfileKeys: resp.ProfileKeys}
	if _, err := c.check(r.Key); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	return c, nil
}

// check verifies that the certificate is for key, chains to the CA, and returns it.
func (c *Credentials) check(key *ecdsa.PrivateKey) (*x509.Certificate, error) {
	blk, _ := pem.Decode([]byte(c.CertPEM))
	if blk == nil {
		return nil, errors.New("certificate: no PEM")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	pk, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pk.Equal(&key.PublicKey) {
		return nil, errors.New("certificate: not for this device's key")
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(c.CAPEM)) {
		return nil, errors.New("ca: no certificate")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	return cert, nil
}

func transport(tc *tls.Config, dial DialFunc) *http.Transport {
	if dial == nil {
		dial = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 15 * time.Second}).DialContext
	}
	return &http.Transport{
		TLSClientConfig:       tc,
		DialContext:           dial,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 0, // per-attempt contexts bound requests; long polls need more
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   2,
		ForceAttemptHTTP2:     true,
	}
}

// do sends one request and decodes a JSON answer into out (or the raw bytes into *[]byte).
func do(ctx context.Context, hc *http.Client, method, u string, hdr http.Header, body []byte, out any) error {
	_, _, err := doResp(ctx, hc, method, u, hdr, body, out)
	return err
}

func doResp(ctx context.Context, hc *http.Client, method, u string, hdr http.Header, body []byte, out any) (int, http.Header, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != nil && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return 0, nil, err
	}
	switch {
	case resp.StatusCode == http.StatusNotModified:
		return resp.StatusCode, resp.Header, nil
	case resp.StatusCode == http.StatusUnauthorized:
		var e api.Error
		json.Unmarshal(b, &e)
		return resp.StatusCode, resp.Header, fmt.Errorf("%w: %s", ErrUnauthorized, e.Error)
	case resp.StatusCode/100 != 2:
		var e api.Error
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = http.StatusText(resp.StatusCode)
		}
		return resp.StatusCode, resp.Header, &statusError{status: resp.StatusCode, msg: e.Error}
	}
	if out != nil {
		if raw, ok := out.(*[]byte); ok {
			*raw = b
		} else if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, resp.Header, fmt.Errorf("answer: %w", err)
		}
	}
	return resp.StatusCode, resp.Header, nil
}

// Client makes the device's mTLS calls.
type Client struct {
	base    string
	hc      *http.Client
	backoff Backoff
	log     *slog.Logger
	// NotAfter is when the device certificate expires.
	NotAfter time.Time
}

// Options tune a Client.
type Options struct {
	Backoff Backoff
	Logger  *slog.Logger
	Dial    DialFunc
}

// NewClient returns the mTLS client for enrolled credentials.
func NewClient(creds *Credentials, key *ecdsa.PrivateKey, o Options) (*Client, error) {
	cert, err := creds.check(key)
	if err != nil {
		return nil, err
	}
	b, log := o.Backoff, o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if b.Initial == 0 {
		b = DefaultBackoff
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(creds.CAPEM))
	tc := &tls.Config{
		RootCAs:      pool,
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}},
	}
	return &Client{base: strings.TrimSuffix(creds.CloudURL, "/"), hc: &http.Client{Transport: transport(tc, o.Dial)}, backoff: b, log: log, NotAfter: cert.NotAfter}, nil
}

// Close drops idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Profile fetches the signed profile. With etag (the last answer's) it returns changed=false
// when nothing changed; wait > 0 long-polls for up to that long.
func (c *Client) Profile(ctx context.Context, etag string, wait time.Duration) (envelope []byte, newETag string, changed bool, err error) {
	u := c.base + api.PathProfile
	if wait > 0 {
		u += "?wait=" + wait.String()
	}
	hdr := http.Header{}
	if etag != "" {
		hdr.Set("If-None-Match", etag)
	}
	b := c.backoff
	b.AttemptTimeout += wait
	var status int
	var h http.Header
	err = retry(ctx, b, c.log, "fetch profile", func(ctx context.Context) error {
		var e error
		envelope = nil
		status, h, e = doResp(ctx, c.hc, http.MethodGet, u, hdr, nil, &envelope)
		return e
	})
	if err != nil {
		return nil, etag, false, fmt.Errorf("profile: %w", err)
	}
	if status == http.StatusNotModified {
		return nil, etag, false, nil
	}
	return envelope, h.Get("ETag"), true, nil
}

// Secret resolves a secret reference. The value must not be logged.
func (c *Client) Secret(ctx context.Context, ref string) (string, error) {
	var s api.Secret
	err := retry(ctx, c.backoff, c.log, "fetch secret", func(ctx context.Context) error {
		return do(ctx, c.hc, http.MethodGet, c.base+api.PathSecrets+ref, nil, nil, &s)
	})
	if err != nil {
		return "", fmt.Errorf("secret %s: %w", ref, err)
	}
	return s.Value, nil
}

// PostLogs uploads JSON lines.
func (c *Client) PostLogs(ctx context.Context, lines []byte) error {
	hdr := http.Header{"Content-Type": {"application/x-ndjson"}}
	err := retry(ctx, c.backoff, c.log, "post logs", func(ctx context.Context) error {
		return do(ctx, c.hc, http.MethodPost, c.base+api.PathLogs, hdr, lines, nil)
	})
	if err != nil {
		return fmt.Errorf("logs: %w", err)
	}
	return nil
}

// OTA returns the update repository location.
func (c *Client) OTA(ctx context.Context) (api.OTAInfo, error) {
	var o api.OTAInfo
	err := retry(ctx, c.backoff, c.log, "ota location", func(ctx context.Context) error {
		return do(ctx, c.hc, http.MethodGet, c.base+api.PathOTA, nil, nil, &o)
	})
	return o, err
}

// Self returns what the cloud knows about this device.
func (c *Client) Self(ctx context.Context) (api.DeviceSelf, error) {
	var d api.DeviceSelf
	err := retry(ctx, c.backoff, c.log, "whoami", func(ctx context.Context) error {
		return do(ctx, c.hc, http.MethodGet, c.base+api.PathDeviceSelf, nil, nil, &d)
	})
	return d, err
}

// Renew asks for a new certificate for the device key and returns the credentials with it;
// build a new Client from them. The current certificate keeps working until it expires.
func (c *Client) Renew(ctx context.Context, creds *Credentials, key *ecdsa.PrivateKey) (*Credentials, error) {
	csr, err := identity.CSR(key, creds.Serial)
	if err != nil {
		return nil, fmt.Errorf("renew: %w", err)
	}
	body, _ := json.Marshal(api.RenewRequest{CSR: string(csr)})
	var resp api.EnrollResponse
	err = retry(ctx, c.backoff, c.log, "renew certificate", func(ctx context.Context) error {
		return do(ctx, c.hc, http.MethodPost, c.base+api.PathRenew, nil, body, &resp)
	})
	if err != nil {
		return nil, fmt.Errorf("renew: %w", err)
	}
	n := *creds
	n.CertPEM, n.CAPEM, n.ProfileKeys = resp.Certificate, resp.CA, resp.ProfileKeys
	if _, err := n.check(key); err != nil {
		return nil, fmt.Errorf("renew: %w", err)
	}
	return &n, nil
}

// HTTPClient is the mTLS client itself, for other domains' device calls (OTA downloads).
func (c *Client) HTTPClient() *http.Client { return c.hc }
