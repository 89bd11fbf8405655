package enroll

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"meshroot/provision/api"
	"meshroot/provision/devcloud"
	"meshroot/provision/devcloud/devcloudtest"
	"meshroot/provision/identity"
	"meshroot/provision/profile"
)

var fast = Backoff{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond, Multiplier: 2, AttemptTimeout: 5 * time.Second}

func setup(t *testing.T) (*devcloudtest.Cloud, *api.Claim) {
	t.Helper()
	c := devcloudtest.Start(t, "", devcloud.Config{})
	ctx := context.Background()
	if _, err := c.Op.CreateSite(ctx, api.CreateSiteRequest{ID: "berlin-1", Name: "Berlin", Country: "DE", WiFiSSID: "Meshroot"}); err != nil {
		t.Fatal(err)
	}
	cl, err := c.Op.Claim(ctx, "berlin-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c, cl
}

func TestEnrollAndMTLS(t *testing.T) {
	c, cl := setup(t)
	ctx := context.Background()
	key, _, _ := identity.LoadOrCreateKey(t.TempDir())
	creds, err := Enroll(ctx, Request{CloudURL: c.URL, CAPin: cl.CAPin, ClaimToken: cl.Token, Serial: "MR-0001", Key: key, Backoff: fast})
	if err != nil {
		t.Fatalf("Enroll() = %v", err)
	}
	if creds.SiteID != "berlin-1" || len(creds.ProfileKeys) != 1 {
		t.Errorf("credentials = %+v", creds)
	}
	cli, err := NewClient(creds, key, Options{Backoff: fast})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	self, err := cli.Self(ctx)
	if err != nil || self.Serial != "MR-0001" {
		t.Errorf("Self() = %+v, %v", self, err)
	}
	env, etag, changed, err := cli.Profile(ctx, "", 0)
	if err != nil || !changed || etag == "" {
		t.Fatalf("Profile() = changed %v, %v", changed, err)
	}
	ks := profile.KeySet{}
	for _, k := range creds.ProfileKeys {
		ks[k.KeyID] = k.PublicKey
	}
	if _, err := profile.Verify(env, ks, profile.Expect{SiteID: "berlin-1"}); err != nil {
		t.Errorf("profile from the cloud does not verify with the enrollment's keys: %v", err)
	}
	if _, _, changed, err := cli.Profile(ctx, etag, 0); err != nil || changed {
		t.Errorf("Profile(etag) = changed %v, %v; want unchanged", changed, err)
	}
	if v, err := cli.Secret(ctx, "site/berlin-1/mesh-key"); err != nil || v == "" {
		t.Errorf("Secret(mesh key) = %v", err)
	}
	if _, err := cli.Secret(ctx, "site/other/x"); err == nil {
		t.Errorf("Secret(unreferenced) = nil error")
	}
	if err := cli.PostLogs(ctx, []byte(`{"msg":"hello","tunnel":"3.15.245.169"}`+"\n")); err != nil {
		t.Errorf("PostLogs() = %v", err)
	}
	recs, err := c.Op.Logs(ctx, api.LogQuery{Site: "berlin-1", Tunnel: "3.15.245.169"})
	if err != nil || len(recs) != 1 || recs[0].Device != "MR-0001" {
		t.Errorf("logs in the cloud = %+v, %v", recs, err)
	}
	if o, err := cli.OTA(ctx); err != nil || !strings.HasSuffix(o.RepositoryURL, "/ota/") {
		t.Errorf("OTA() = %+v, %v", o, err)
	}
	// Renewal: a new certificate for the same key; the old one keeps working until it expires.
	renewed, err := cli.Renew(ctx, creds, key)
	if err != nil || renewed.CertPEM == creds.CertPEM {
		t.Fatalf("Renew() = %v; want a new certificate", err)
	}
	cli2, err := NewClient(renewed, key, Options{Backoff: fast})
	if err != nil {
		t.Fatal(err)
	}
	defer cli2.Close()
	if _, err := cli2.Self(ctx); err != nil {
		t.Errorf("Self() with the renewed certificate = %v", err)
	}
	cli.Close()
	if _, err := cli.Self(ctx); err != nil {
		t.Errorf("Self() with the replaced certificate = %v; want it to work until it expires", err)
	}
	// Revoked: every call is refused for good (no endless retries).
	if err := c.Op.RevokeDevice(ctx, "MR-0001"); err != nil {
		t.Fatal(err)
	}
	cli.Close()
	start := time.Now()
	if _, _, _, err := cli.Profile(ctx, "", 0); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("Profile() after revocation = %v; want ErrUnauthorized", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Profile() after revocation took %v; want an immediate refusal", d)
	}
	// Credentials for another key are refused locally.
	other, _, _ := identity.LoadOrCreateKey(t.TempDir())
	if _, err := NewClient(creds, other, Options{Backoff: fast}); err == nil {
		t.Errorf("NewClient(another key) = nil error")
	}
}

func TestEnrollRefusals(t *testing.T) {
	c, cl := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	key, _, _ := identity.LoadOrCreateKey(t.TempDir())
	for _, tc := range []struct {
		name string
		req  Request
		is   error
	}{
		{"unknown claim", Request{CloudURL: c.URL, CAPin: cl.CAPin, ClaimToken: "mrc_nope", Serial: "MR-0001", Key: key}, ErrUnauthorized},
		{"wrong pin", Request{CloudURL: c.URL, CAPin: strings.Repeat("ab", 32), ClaimToken: cl.Token, Serial: "MR-0001", Key: key}, api.ErrPinMismatch},
		{"http url", Request{CloudURL: strings.Replace(c.URL, "https", "http", 1), CAPin: cl.CAPin, ClaimToken: cl.Token, Serial: "MR-0001", Key: key}, nil},
	} {
		tc.req.Backoff = fast
		start := time.Now()
		_, err := Enroll(ctx, tc.req)
		if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) {
			t.Errorf("Enroll(%s) = %v; want %v", tc.name, err, tc.is)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Enroll(%s) took %v; want a final answer, not retries", tc.name, d)
		}
	}
}

// TestEnrollAnswerLost: the cloud enrolls the device but the answer never arrives (a lossy
// uplink). The retry with the same claim and key gets a certificate.
func TestEnrollAnswerLost(t *testing.T) {
	c, cl := setup(t)
	upstream, _ := url.Parse(c.URL)
	rp := httputil.NewSingleHostReverseProxy(upstream)
	rp.Transport = c.HTTP.Transport
	var enrolls atomic.Int32
	proxy := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == api.PathEnroll && enrolls.Add(1) == 1 {
			// Forward, let the cloud enroll, then drop the connection without an answer.
			rec := &discard{h: http.Header{}}
			rp.ServeHTTP(rec, r)
			hj, _ := w.(http.Hijacker)
			conn, _, _ := hj.Hijack()
			conn.Close()
			return
		}
		rp.ServeHTTP(w, r)
	})
	tc, err := c.TLSConfig([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	tc.NextProtos = []string{"http/1.1"} // hijacking needs HTTP/1
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: proxy, TLSConfig: tc}
	go srv.ServeTLS(ln, "", "")
	defer srv.Close()

	key, _, _ := identity.LoadOrCreateKey(t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	creds, err := Enroll(ctx, Request{CloudURL: "https://" + ln.Addr().String(), CAPin: cl.CAPin, ClaimToken: cl.Token, Serial: "MR-0001", Key: key, Backoff: fast})
	if err != nil {
		t.Fatalf("Enroll() through a connection that loses the first answer = %v", err)
	}
	if n := enrolls.Load(); n != 2 {
		t.Errorf("enroll requests = %d; want 2 (lost, retried)", n)
	}
	creds.CloudURL = c.URL
	cli, err := NewClient(creds, key, Options{Backoff: fast})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Self(ctx); err != nil {
		t.Errorf("Self() with the retried enrollment's certificate = %v", err)
	}
}

type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}

func TestRetry(t *testing.T) {
	var n int
	err := retry(context.Background(), fast, nilLog(), "x", func(context.Context) error {
		n++
		if n < 3 {
			return &statusError{status: 503, msg: "busy"}
		}
		return nil
	})
	if err != nil || n != 3 {
		t.Errorf("retry(503, 503, ok) = %v after %d calls; want nil after 3", err, n)
	}
	n = 0
	err = retry(context.Background(), fast, nilLog(), "x", func(context.Context) error { n++; return &statusError{status: 400} })
	if err == nil || n != 1 {
		t.Errorf("retry(400) = %v after %d calls; want the error after 1", err, n)
	}
	b := Backoff{Initial: 100 * time.Millisecond, Max: time.Second, Multiplier: 2, Attempts: 3, AttemptTimeout: time.Second}
	n = 0
	err = retry(context.Background(), b, nilLog(), "x", func(context.Context) error { n++; return io.ErrUnexpectedEOF })
	if err == nil || n != 3 {
		t.Errorf("retry(Attempts 3) = %v after %d calls; want an error after 3", err, n)
	}
	for i := 0; i < 10; i++ {
		for _, tc := range []struct {
			n        int
			min, max time.Duration
		}{{0, 50 * time.Millisecond, 100 * time.Millisecond}, {2, 200 * time.Millisecond, 400 * time.Millisecond}, {10, 500 * time.Millisecond, time.Second}} {
			if d := b.delay(tc.n); d < tc.min || d > tc.max {
				t.Errorf("delay(%d) = %v; want in [%v, %v]", tc.n, d, tc.min, tc.max)
			}
		}
	}
}

func nilLog() *slog.Logger { return slog.New(slog.DiscardHandler) }
