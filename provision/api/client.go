package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client calls the operator and app endpoints with the bearer token.
type Client struct {
	// BaseURL is the cloud's URL, e.g. https://10.0.0.1:8443.
	BaseURL string
	// Token is the bearer token.
	Token string
	// HTTP is the client to use; it must trust the fleet CA (see TrustCA).
	HTTP *http.Client
}

// HTTPError is a non-2xx answer.
type HTTPError struct {
	Status int
	Body   Error
}

func (e *HTTPError) Error() string {
	s := fmt.Sprintf("HTTP %d: %s", e.Status, e.Body.Error)
	if len(e.Body.Fields) > 0 {
		s += ": " + strings.Join(e.Body.Fields, "; ")
	}
	return s
}

// TrustCA returns an HTTP client that trusts only the given CA certificate (PEM).
func TrustCA(caPEM []byte, timeout time.Duration) (*http.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no CA certificate in PEM")
	}
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}}, nil
}

// ErrPinMismatch means the server is not the fleet the claim named.
var ErrPinMismatch = errors.New("server chain holds no CA with the pinned SHA-256")

// PinnedTLS returns a TLS configuration that accepts a server whose chain verifies to a CA
// certificate with the given SHA-256 pin (hex) that the server presents itself, for host (a
// name or IP the server certificate must carry): how a device that only has the pin from its
// claim reaches the cloud the first time.
func PinnedTLS(pin, host string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // verified below, against the pinned CA
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no server certificate")
			}
			roots := x509.NewCertPool()
			found := false
			for _, c := range cs.PeerCertificates[1:] {
				sum := sha256.Sum256(c.Raw)
				if hex.EncodeToString(sum[:]) == strings.ToLower(pin) {
					roots.AddCert(c)
					found = true
				}
			}
			if !found {
				return ErrPinMismatch
			}
			opts := x509.VerifyOptions{Roots: roots, DNSName: host, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
			if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
				return fmt.Errorf("server certificate: %w", err)
			}
			return nil
		},
	}
}

// Do sends a JSON request (in may be nil) and decodes a JSON answer into out (may be nil).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.BaseURL, "/")+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		he := &HTTPError{Status: resp.StatusCode}
		if json.Unmarshal(b, &he.Body) != nil || he.Body.Error == "" {
			he.Body.Error = strings.TrimSpace(string(b))
		}
		return he
	}
	if out == nil || len(b) == 0 {
		return nil
	}
	if raw, ok := out.(*[]byte); ok {
		*raw = b
		return nil
	}
	return json.Unmarshal(b, out)
}

// CreateSite creates a site.
func (c *Client) CreateSite(ctx context.Context, req CreateSiteRequest) (*Site, error) {
	var s Site
	return &s, c.Do(ctx, http.MethodPost, PathSites, req, &s)
}

// Sites lists the sites.
func (c *Client) Sites(ctx context.Context) ([]Site, error) {
	var s []Site
	return s, c.Do(ctx, http.MethodGet, PathSites, nil, &s)
}

// Claim issues a claim token for a site.
func (c *Client) Claim(ctx context.Context, site string, ttl time.Duration) (*Claim, error) {
	var cl Claim
	return &cl, c.Do(ctx, http.MethodPost, PathSites+"/"+url.PathEscape(site)+"/claims", ClaimRequest{TTLSeconds: int(ttl / time.Second)}, &cl)
}

// Devices lists enrolled devices (of one site when site is not empty).
func (c *Client) Devices(ctx context.Context, site string) ([]Device, error) {
	var ds []Device
	p := PathDevices
	if site != "" {
		p += "?site=" + url.QueryEscape(site)
	}
	return ds, c.Do(ctx, http.MethodGet, p, nil, &ds)
}

// RevokeDevice forgets a device.
func (c *Client) RevokeDevice(ctx context.Context, serial string) error {
	return c.Do(ctx, http.MethodDelete, PathDevices+"/"+url.PathEscape(serial), nil, nil)
}

// PutSecret stores a secret.
func (c *Client) PutSecret(ctx context.Context, ref, value string) error {
	return c.Do(ctx, http.MethodPut, PathSecretStore+ref, PutSecretRequest{Value: value}, nil)
}

// PutVPN sets a site's VPN section (raw JSON of a profile.VPN, or "null").
func (c *Client) PutVPN(ctx context.Context, site string, vpn json.RawMessage) (*ProfileIssued, error) {
	var pi ProfileIssued
	return &pi, c.Do(ctx, http.MethodPut, PathSites+"/"+url.PathEscape(site)+"/vpn", vpn, &pi)
}

// PutProfile replaces a site's profile template (raw JSON of a profile.Profile).
func (c *Client) PutProfile(ctx context.Context, site string, p json.RawMessage) (*ProfileIssued, error) {
	var pi ProfileIssued
	return &pi, c.Do(ctx, http.MethodPut, PathSites+"/"+url.PathEscape(site)+"/profile", p, &pi)
}

// SiteProfile returns a site's current signed envelope.
func (c *Client) SiteProfile(ctx context.Context, site string) ([]byte, error) {
	var b []byte
	return b, c.Do(ctx, http.MethodGet, PathSites+"/"+url.PathEscape(site)+"/profile", nil, &b)
}

// LogQuery selects log records.
type LogQuery struct {
	Site, Tunnel, Device string
	Since                time.Time
	Limit                int
}

// Logs queries the log store.
func (c *Client) Logs(ctx context.Context, q LogQuery) ([]LogRecord, error) {
	v := url.Values{"site": {q.Site}}
	if q.Tunnel != "" {
		v.Set("tunnel", q.Tunnel)
	}
	if q.Device != "" {
		v.Set("device", q.Device)
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.Format(time.RFC3339Nano))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var recs []LogRecord
	return recs, c.Do(ctx, http.MethodGet, PathLogQuery+"?"+v.Encode(), nil, &recs)
}
