package devcloud

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"meshroot/internal/testenv"
	"meshroot/provision/api"
	"meshroot/provision/identity"
	"meshroot/provision/profile"
)

// syncBuffer is a log sink safe for concurrent handlers.
type syncBuffer = testenv.Buffer

type testCloud struct {
	*Server
	url  string
	logs *syncBuffer
	dir  string
	op   *api.Client
	sp   *spec
	t    *testing.T
}

func startCloud(t *testing.T, cfg Config) *testCloud {
	t.Helper()
	cfg.DataDir = t.TempDir()
	c, stop := serveCloud(t, cfg)
	t.Cleanup(stop)
	return c
}

// serveCloud starts a cloud in cfg.DataDir; stop ends it (idempotent; the test's cleanup calls
// it too), so that a test can start another one on the same directory.
func serveCloud(t *testing.T, cfg Config) (*testCloud, func()) {
	t.Helper()
	logs := &syncBuffer{}
	cfg.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Serve() = %v", err)
			}
			s.Close()
		})
	}
	t.Cleanup(stop)
	hc, err := api.TrustCA(s.CACertPEM(), 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	u := "https://" + ln.Addr().String()
	return &testCloud{Server: s, url: u, logs: logs, dir: cfg.DataDir, op: &api.Client{BaseURL: u, Token: s.AdminToken(), HTTP: hc}, sp: loadSpec(t), t: t}, stop
}

// call makes a request with client hc and checks the answer against the OpenAPI document:
// the status must be documented for the operation and a JSON body must match its schema.
func (c *testCloud) call(hc *http.Client, method, docPath, path string, hdr http.Header, body []byte) (int, []byte, http.Header) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.url+path, bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	schema, err := c.sp.response(method, docPath, resp.StatusCode)
	if err != nil {
		c.t.Errorf("%s %s = %d: %v", method, path, resp.StatusCode, err)
	} else if schema != nil {
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			c.t.Errorf("%s %s = %d with non-JSON body %q", method, path, resp.StatusCode, b)
		} else if errs := c.sp.validate(schema, v, "body"); len(errs) > 0 {
			c.t.Errorf("%s %s = %d: body does not match openapi.yaml: %s", method, path, resp.StatusCode, strings.Join(errs, "; "))
		}
	}
	return resp.StatusCode, b, resp.Header
}

func (c *testCloud) opHTTP() *http.Client { return c.op.HTTP }

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testDevice is a test device: a key and, after enrolling, a client certificate.
type testDevice struct {
	serial string
	key    *ecdsa.PrivateKey
	hc     *http.Client // mTLS once enrolled
}

func newDevice(t *testing.T, c *testCloud, serial string) *testDevice {
	t.Helper()
	k, _, err := identity.LoadOrCreateKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &testDevice{serial: serial, key: k}
}

func (d *testDevice) enrollRequest(t *testing.T, token string) []byte {
	csr, err := identity.CSR(d.key, d.serial)
	if err != nil {
		t.Fatal(err)
	}
	return mustJSON(t, api.EnrollRequest{ClaimToken: token, Serial: d.serial, CSR: string(csr),
		Settings: &api.SiteSettings{Name: "Berlin office", WiFiSSID: "Meshroot", Country: "DE"}})
}

func (d *testDevice) useCert(t *testing.T, c *testCloud, certPEM string) {
	blk, _ := pem.Decode([]byte(certPEM))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.CACertPEM())
	d.hc = &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs:      pool,
		Certificates: []tls.Certificate{{Certificate: [][]byte{blk.Bytes}, PrivateKey: d.key}},
	}}}
}

func TestEnrollmentScenario(t *testing.T) {
	otaDir := t.TempDir()
	os.WriteFile(filepath.Join(otaDir, "timestamp.json"), []byte(`{"signed":{}}`), 0o644)
	os.Mkdir(filepath.Join(otaDir, "targets"), 0o755)
	c := startCloud(t, Config{OTADir: otaDir})
	op := c.opHTTP()
	tok := bearer(c.AdminToken())

	// Public endpoints.
	if st, _, _ := c.call(op, "GET", "/healthz", "/healthz", nil, nil); st != 200 {
		t.Errorf("GET /healthz = %d", st)
	}
	st, b, _ := c.call(op, "GET", "/v1/fleet", "/v1/fleet", nil, nil)
	var fleet api.FleetInfo
	json.Unmarshal(b, &fleet)
	if st != 200 || fleet.CAPin != c.CAPin() || len(fleet.ProfileKeys) != 1 {
		t.Fatalf("GET /v1/fleet = %d %+v", st, fleet)
	}
	if st, b, _ := c.call(op, "GET", "/openapi.yaml", "/openapi.yaml", nil, nil); st != 200 || !bytes.Equal(b, OpenAPI()) {
		t.Errorf("GET /openapi.yaml = %d", st)
	}

	// Operator: sites (without a token: 401).
	if st, _, _ := c.call(op, "POST", "/v1/sites", "/v1/sites", nil, mustJSON(t, api.CreateSiteRequest{ID: "berlin-1"})); st != 401 {
		t.Errorf("POST /v1/sites without token = %d; want 401", st)
	}
	if st, _, _ := c.call(op, "POST", "/v1/sites", "/v1/sites", tok, mustJSON(t, api.CreateSiteRequest{ID: "Berlin 1"})); st != 400 {
		t.Errorf("POST /v1/sites bad id = %d; want 400", st)
	}
	st, b, _ = c.call(op, "POST", "/v1/sites", "/v1/sites", tok, mustJSON(t, api.CreateSiteRequest{ID: "berlin-1"}))
	if st != 201 {
		t.Fatalf("POST /v1/sites = %d %s", st, b)
	}
	if st, _, _ := c.call(op, "POST", "/v1/sites", "/v1/sites", tok, mustJSON(t, api.CreateSiteRequest{ID: "berlin-1"})); st != 409 {
		t.Errorf("POST /v1/sites again = %d; want 409", st)
	}
	c.call(op, "POST", "/v1/sites", "/v1/sites", tok, mustJSON(t, api.CreateSiteRequest{ID: "paris-1", Country: "FR", WiFiSSID: "Paris"}))
	c.call(op, "GET", "/v1/sites", "/v1/sites", tok, nil)
	if st, _, _ := c.call(op, "GET", "/v1/sites/{site}", "/v1/sites/berlin-1", tok, nil); st != 200 {
		t.Errorf("GET /v1/sites/berlin-1 = %d", st)
	}
	if st, _, _ := c.call(op, "GET", "/v1/sites/{site}", "/v1/sites/nowhere", tok, nil); st != 404 {
		t.Errorf("GET /v1/sites/nowhere = %d; want 404", st)
	}
	// berlin-1 has no Wi-Fi name or country yet: no profile. paris-1 has v1.
	if st, _, _ := c.call(op, "GET", "/v1/sites/{site}/profile", "/v1/sites/berlin-1/profile", tok, nil); st != 404 {
		t.Errorf("GET berlin-1 profile before enrollment = %d; want 404", st)
	}
	if st, _, _ := c.call(op, "GET", "/v1/sites/{site}/profile", "/v1/sites/paris-1/profile", tok, nil); st != 200 {
		t.Errorf("GET paris-1 profile = %d; want 200", st)
	}

	// Claims.
	st, b, _ = c.call(op, "POST", "/v1/sites/{site}/claims", "/v1/sites/berlin-1/claims", tok, mustJSON(t, api.ClaimRequest{TTLSeconds: 600}))
	var claim api.Claim
	json.Unmarshal(b, &claim)
	if st != 201 || !strings.HasPrefix(claim.Token, "mrc_") || claim.CAPin != c.CAPin() {
		t.Fatalf("POST claims = %d %+v", st, claim)
	}
	if st, _, _ := c.call(op, "POST", "/v1/sites/{site}/claims", "/v1/sites/berlin-1/claims", tok, mustJSON(t, api.ClaimRequest{TTLSeconds: -1})); st != 400 {
		t.Errorf("POST claims ttl -1 = %d; want 400", st)
	}

	// Enrollment over TLS pinned by the claim's CA pin, no client certificate.
	host, _, _ := net.SplitHostPort(strings.TrimPrefix(c.url, "https://"))
	pinned := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: api.PinnedTLS(claim.CAPin, host)}}
	d := newDevice(t, c, "MR-0001")
	if st, _, _ := c.call(pinned, "POST", "/v1/enroll", "/v1/enroll", nil, d.enrollRequest(t, "mrc_unknown")); st != 401 {
		t.Errorf("enroll with unknown claim = %d; want 401", st)
	}
	bad := d.enrollRequest(t, claim.Token)
	bad = bytes.Replace(bad, []byte(`"MR-0001"`), []byte(`"MR-0002"`), 1) // CSR CN no longer matches
	if st, _, _ := c.call(pinned, "POST", "/v1/enroll", "/v1/enroll", nil, bad); st != 400 {
		t.Errorf("enroll with CSR of another serial = %d; want 400", st)
	}
	st, b, _ = c.call(pinned, "POST", "/v1/enroll", "/v1/enroll", nil, d.enrollRequest(t, claim.Token))
	var er api.EnrollResponse
	json.Unmarshal(b, &er)
	if st != 201 || er.SiteID != "berlin-1" || er.Serial != "MR-0001" {
		t.Fatalf("enroll = %d %s", st, b)
	}
	// The same device asking again (its answer was lost) gets a new certificate for its key...
	st, b, _ = c.call(pinned, "POST", "/v1/enroll", "/v1/enroll", nil, d.enrollRequest(t, claim.Token))
	var er2 api.EnrollResponse
	json.Unmarshal(b, &er2)
	if st != 201 || er2.Certificate == er.Certificate {
		t.Fatalf("enroll retry by the same device and key = %d; want 201 with a new certificate", st)
	}
	lost := er
	er = er2
	// ...and another key of the same serial does not.
	dSameSerial := newDevice(t, c, "MR-0001")
	if st, _, _ := c.call(pinned, "POST", "/v1/enroll", "/v1/enroll", nil, dSameSerial.enrollRequest(t, claim.Token)); st != 401 {
		t.Errorf("enroll with a used claim by the same serial, another key = %d; want 401", st)
	}
	// The claim is single use.
	d2 := newDevice(t, c, "MR-0002")
	if st, b, _ := c.call(pinned, "POST", "/v1/enroll", "/v1/enroll", nil, d2.enrollRequest(t, claim.Token)); st != 401 || !strings.Contains(string(b), "already used") {
		t.Errorf("enroll with a used claim = %d %s; want 401 already used", st, b)
	}
	// A wrong pin refuses the server.
	wrongPin := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: api.PinnedTLS(strings.Repeat("0", 64), host)}}
	if _, err := wrongPin.Get(c.url + "/healthz"); err == nil {
		t.Errorf("GET with a wrong CA pin succeeded; want a TLS error")
	}

	// Device endpoints: no certificate → 401 for each; a certificate from another CA → refused.
	for _, p := range []struct{ doc, path string }{
		{"/v1/device", "/v1/device"}, {"/v1/device/profile", "/v1/device/profile"}, {"/v1/device/ota", "/v1/device/ota"},
		{"/v1/device/secrets/{ref}", "/v1/device/secrets/site/berlin-1/mesh-key"}, {"/ota/{path}", "/ota/timestamp.json"},
	} {
		if st, _, _ := c.call(op, "GET", p.doc, p.path, nil, nil); st != 401 {
			t.Errorf("GET %s without a device certificate = %d; want 401", p.path, st)
		}
	}
	if st, _, _ := c.call(op, "POST", "/v1/device/logs", "/v1/device/logs", nil, []byte(`{"msg":"x"}`)); st != 401 {
		t.Errorf("POST logs without a device certificate = %d; want 401", st)
	}
	// A certificate from another CA fails the handshake (or, at most, gets 401).
	if resp, err := foreignCertClient(t, c).Get(c.url + "/v1/device"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("GET /v1/device with a foreign certificate = %d; want a TLS error or 401", resp.StatusCode)
		}
	}

	d.useCert(t, c, lost.Certificate)
	if st, _, _ := c.call(d.hc, "GET", "/v1/device", "/v1/device", nil, nil); st != 401 {
		t.Errorf("GET /v1/device with the superseded certificate = %d; want 401", st)
	}
	d.useCert(t, c, er.Certificate)
	st, b, _ = c.call(d.hc, "GET", "/v1/device", "/v1/device", nil, nil)
	if st != 200 || !strings.Contains(string(b), `"berlin-1"`) {
		t.Errorf("GET /v1/device = %d %s", st, b)
	}
	// The enrollment's site settings completed berlin-1's template: v1 exists.
	st, env, hdr := c.call(d.hc, "GET", "/v1/device/profile", "/v1/device/profile", nil, nil)
	if st != 200 {
		t.Fatalf("GET profile = %d %s", st, env)
	}
	keys := profile.NewKeySet(c.ProfileKey())
	v1, err := profile.Verify(env, keys, profile.Expect{SiteID: "berlin-1", Device: "MR-0001"})
	if err != nil {
		t.Fatalf("profile from the cloud: %v", err)
	}
	if v1.Version != 1 || v1.WiFi.SSID != "Meshroot" || v1.Country != "DE" || v1.Site.Name != "Berlin office" {
		t.Errorf("profile v1 = %+v", v1.Profile)
	}
	// The payload matches the document's Profile schema too.
	var envObj profile.Envelope
	json.Unmarshal(env, &envObj)
	payload, _ := base64.StdEncoding.DecodeString(envObj.Payload)
	var pv any
	json.Unmarshal(payload, &pv)
	if errs := c.sp.validate(c.sp.doc["components"].(map[string]any)["schemas"].(map[string]any)["Profile"].(map[string]any), pv, "profile"); len(errs) > 0 {
		t.Errorf("profile payload does not match the Profile schema: %v", errs)
	}
	etag := hdr.Get("ETag")
	if st, _, _ := c.call(d.hc, "GET", "/v1/device/profile", "/v1/device/profile", http.Header{"If-None-Match": {etag}}, nil); st != 304 {
		t.Errorf("GET profile If-None-Match = %d; want 304", st)
	}

	// A long poll returns as soon as the operator issues a new version (the VPN section).
	vpn := exampleVPN()
	if err := c.op.PutSecret(context.Background(), vpn.Tunnels[0].PSKRef, "Pq7_x2.LmN0vB8cR4tY6uI9oP1aS3dF5"); err != nil {
		t.Fatal(err)
	}
	type pollResult struct {
		st  int
		env []byte
		d   time.Duration
	}
	polled := make(chan pollResult, 1)
	go func() {
		start := time.Now()
		req, _ := http.NewRequest("GET", c.url+"/v1/device/profile?wait=30s", nil)
		req.Header.Set("If-None-Match", etag)
		resp, err := d.hc.Do(req)
		if err != nil {
			polled <- pollResult{}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		polled <- pollResult{resp.StatusCode, b, time.Since(start)}
	}()
	time.Sleep(300 * time.Millisecond)
	// An invalid VPN section is refused with the field named, and nothing is issued.
	badVPN := exampleVPN()
	badVPN.Tunnels[1].InsideCIDR = "169.254.1.0/30"
	st, b, _ = c.call(op, "PUT", "/v1/sites/{site}/vpn", "/v1/sites/berlin-1/vpn", tok, mustJSON(t, badVPN))
	if st != 422 || !strings.Contains(string(b), "vpn.tunnels[1].inside_cidr: 169.254.1.0/30 is reserved by AWS") {
		t.Errorf("PUT invalid vpn = %d %s; want 422 naming vpn.tunnels[1].inside_cidr", st, b)
	}
	st, b, _ = c.call(op, "PUT", "/v1/sites/{site}/vpn", "/v1/sites/berlin-1/vpn", tok, mustJSON(t, vpn))
	if st != 200 || !strings.Contains(string(b), `"version":2`) {
		t.Fatalf("PUT vpn = %d %s", st, b)
	}
	pr := <-polled
	v2, err := profile.Verify(pr.env, keys, profile.Expect{SiteID: "berlin-1", Current: v1})
	if pr.st != 200 || err != nil || v2.Version != 2 || v2.VPN == nil {
		t.Fatalf("long poll = %d, %v; want v2 with the VPN", pr.st, err)
	}

	// Secrets: a reference of the profile resolves; anything else is 403.
	st, b, _ = c.call(d.hc, "GET", "/v1/device/secrets/{ref}", "/v1/device/secrets/"+vpn.Tunnels[0].PSKRef, nil, nil)
	if st != 200 || !strings.Contains(string(b), "Pq7_x2.LmN0vB8cR4tY6uI9oP1aS3dF5") {
		t.Errorf("GET secret = %d %s", st, b)
	}
	if st, _, _ := c.call(d.hc, "GET", "/v1/device/secrets/{ref}", "/v1/device/secrets/"+vpn.Tunnels[1].PSKRef, nil, nil); st != 404 {
		t.Errorf("GET referenced but unstored secret = %d; want 404", st)
	}
	c.op.PutSecret(context.Background(), "site/paris-1/other", "not-yours-1234")
	if st, _, _ := c.call(d.hc, "GET", "/v1/device/secrets/{ref}", "/v1/device/secrets/site/paris-1/other", nil, nil); st != 403 {
		t.Errorf("GET another site's secret = %d; want 403", st)
	}
	if st, _, _ := c.call(d.hc, "GET", "/v1/device/secrets/{ref}", "/v1/device/secrets/site/berlin-1/mesh-key", nil, nil); st != 200 {
		t.Errorf("GET mesh key = %d; want 200", st)
	}
	if st, _, _ := c.call(op, "PUT", "/v1/secrets/{ref}", "/v1/secrets/x", tok, mustJSON(t, api.PutSecretRequest{})); st != 400 {
		t.Errorf("PUT empty secret = %d; want 400", st)
	}

	// Logs: JSON lines in, queryable by site and tunnel.
	lines := `{"time":"2026-11-01T10:00:00Z","level":"INFO","msg":"tunnel up","tunnel":"3.15.245.169"}
{"level":"WARN","msg":"dpd timeout","tunnel":"3.18.239.122","retries":3}

{"level":"INFO","msg":"radio plan"}
`
	st, b, _ = c.call(d.hc, "POST", "/v1/device/logs", "/v1/device/logs", http.Header{"Content-Type": {"application/x-ndjson"}}, []byte(lines))
	if st != 202 || !strings.Contains(string(b), `"accepted":3`) {
		t.Errorf("POST logs = %d %s; want 202 accepted 3", st, b)
	}
	if st, _, _ := c.call(d.hc, "POST", "/v1/device/logs", "/v1/device/logs", nil, []byte("{not json\n")); st != 400 {
		t.Errorf("POST bad logs = %d; want 400", st)
	}
	st, b, _ = c.call(op, "GET", "/v1/logs", "/v1/logs?site=berlin-1&tunnel=3.18.239.122", tok, nil)
	var recs []api.LogRecord
	json.Unmarshal(b, &recs)
	if st != 200 || len(recs) != 1 || recs[0].Msg != "dpd timeout" || recs[0].Attrs["retries"] != float64(3) || recs[0].Device != "MR-0001" {
		t.Errorf("GET logs by tunnel = %d %s", st, b)
	}
	st, b, _ = c.call(op, "GET", "/v1/logs", "/v1/logs?site=berlin-1", tok, nil)
	json.Unmarshal(b, &recs)
	if st != 200 || len(recs) != 3 {
		t.Errorf("GET logs by site = %d, %d records; want 3", st, len(recs))
	}
	if st, _, _ := c.call(op, "GET", "/v1/logs", "/v1/logs?site=paris-1", tok, nil); st != 200 {
		t.Errorf("GET logs of a quiet site = %d", st)
	}
	if st, _, _ := c.call(op, "GET", "/v1/logs", "/v1/logs", tok, nil); st != 400 {
		t.Errorf("GET logs without site = %d; want 400", st)
	}

	// OTA location and repository.
	if st, b, _ := c.call(d.hc, "GET", "/v1/device/ota", "/v1/device/ota", nil, nil); st != 200 || !strings.Contains(string(b), "/ota/") {
		t.Errorf("GET ota = %d %s", st, b)
	}
	if st, b, _ := c.call(d.hc, "GET", "/ota/{path}", "/ota/timestamp.json", nil, nil); st != 200 || string(b) != `{"signed":{}}` {
		t.Errorf("GET /ota/timestamp.json = %d %s", st, b)
	}
	if st, _, _ := c.call(d.hc, "GET", "/ota/{path}", "/ota/targets/", nil, nil); st != 404 {
		t.Errorf("GET /ota/targets/ (a directory) = %d; want 404", st)
	}

	// Certificate renewal: same key only; the replaced certificate works until the next renewal.
	csr, _ := identity.CSR(d.key, d.serial)
	st, b, _ = c.call(d.hc, "POST", "/v1/device/renew", "/v1/device/renew", nil, mustJSON(t, api.RenewRequest{CSR: string(csr)}))
	var rr api.EnrollResponse
	json.Unmarshal(b, &rr)
	if st != 200 || rr.Certificate == "" || rr.Certificate == er.Certificate {
		t.Fatalf("POST renew = %d %s", st, b)
	}
	otherCSR, _ := identity.CSR(d2.key, d.serial)
	if st, _, _ := c.call(d.hc, "POST", "/v1/device/renew", "/v1/device/renew", nil, mustJSON(t, api.RenewRequest{CSR: string(otherCSR)})); st != 400 {
		t.Errorf("POST renew with another key = %d; want 400", st)
	}
	if st, _, _ := c.call(op, "POST", "/v1/device/renew", "/v1/device/renew", nil, mustJSON(t, api.RenewRequest{CSR: string(csr)})); st != 401 {
		t.Errorf("POST renew without a certificate = %d; want 401", st)
	}
	oldHC := d.hc
	d.useCert(t, c, rr.Certificate)
	if st, _, _ := c.call(d.hc, "GET", "/v1/device", "/v1/device", nil, nil); st != 200 {
		t.Errorf("GET /v1/device with the renewed certificate = %d", st)
	}
	if st, _, _ := c.call(oldHC, "GET", "/v1/device", "/v1/device", nil, nil); st != 200 {
		t.Errorf("GET /v1/device with the replaced certificate = %d; want 200 until the next renewal", st)
	}
	c.call(d.hc, "POST", "/v1/device/renew", "/v1/device/renew", nil, mustJSON(t, api.RenewRequest{CSR: string(csr)}))
	oldHC.CloseIdleConnections()
	if st, _, _ := c.call(oldHC, "GET", "/v1/device", "/v1/device", nil, nil); st != 401 {
		t.Errorf("GET /v1/device with a certificate two renewals old = %d; want 401", st)
	}

	// Devices and revocation.
	st, b, _ = c.call(op, "GET", "/v1/devices", "/v1/devices?site=berlin-1", tok, nil)
	if st != 200 || !strings.Contains(string(b), `"profile_version":2`) {
		t.Errorf("GET devices = %d %s", st, b)
	}
	if st, _, _ := c.call(op, "DELETE", "/v1/devices/{serial}", "/v1/devices/MR-0001", tok, nil); st != 204 {
		t.Errorf("DELETE device = %d; want 204", st)
	}
	if st, _, _ := c.call(op, "DELETE", "/v1/devices/{serial}", "/v1/devices/MR-0001", tok, nil); st != 404 {
		t.Errorf("DELETE device again = %d; want 404", st)
	}
	d.hc.CloseIdleConnections()
	if st, _, _ := c.call(d.hc, "GET", "/v1/device/profile", "/v1/device/profile", nil, nil); st != 401 {
		t.Errorf("GET profile after revocation = %d; want 401", st)
	}

	// Nothing secret in the cloud's logs or in its files in clear.
	secrets := map[string]string{"claim token": claim.Token, "psk": "Pq7_x2.LmN0vB8cR4tY6uI9oP1aS3dF5", "admin token": c.AdminToken()}
	for name, v := range secrets {
		if strings.Contains(c.logs.String(), v) {
			t.Errorf("the cloud logged the %s", name)
		}
	}
	delete(secrets, "admin token") // it is the admin.token file itself
	scanDir(t, c.dir, secrets)
}

// scanDir fails when a file under dir holds one of the values.
func scanDir(t *testing.T, dir string, values map[string]string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, de os.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for name, v := range values {
			if bytes.Contains(b, []byte(v)) {
				t.Errorf("%s holds the %s in clear", p, name)
			}
		}
		return nil
	})
}

func foreignCertClient(t *testing.T, c *testCloud) *http.Client {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "MR-0001"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.CACertPEM())
	cert := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pool,
		// Send it even though the server's CA list does not name its issuer.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil },
	}}}
}

func exampleVPN() *profile.VPN {
	return &profile.VPN{
		ConnectionID: "vpn-0e3c1f2a9b8d7c6e5", Type: "ipsec.1",
		BGP:          &profile.BGP{CustomerASN: 65010, AmazonASN: 64512, HoldTimeSeconds: 30},
		SitePrefixes: []string{"192.168.10.0/24"},
		Tunnels: []profile.Tunnel{
			{OutsideAddress: "3.15.245.169", InsideCIDR: "169.254.44.108/30", PSKRef: "vpn/vpn-0e3c1f2a9b8d7c6e5/3.15.245.169", Options: profile.DefaultTunnelOptions()},
			{OutsideAddress: "3.18.239.122", InsideCIDR: "169.254.225.8/30", PSKRef: "vpn/vpn-0e3c1f2a9b8d7c6e5/3.18.239.122", Options: profile.DefaultTunnelOptions()},
		},
	}
}

func TestClaimExpiry(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	c := startCloud(t, Config{Now: clock})
	ctx := context.Background()
	if _, err := c.op.CreateSite(ctx, api.CreateSiteRequest{ID: "s1", Country: "DE", WiFiSSID: "x"}); err != nil {
		t.Fatal(err)
	}
	cl, err := c.op.Claim(ctx, "s1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	now = now.Add(61 * time.Second)
	mu.Unlock()
	host, _, _ := net.SplitHostPort(strings.TrimPrefix(c.url, "https://"))
	pinned := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: api.PinnedTLS(cl.CAPin, host)}}
	d := newDevice(t, c, "MR-0009")
	st, b, _ := c.call(pinned, "POST", "/v1/enroll", "/v1/enroll", nil, d.enrollRequest(t, cl.Token))
	if st != 401 || !strings.Contains(string(b), "expired") {
		t.Errorf("enroll with an expired claim = %d %s; want 401 expired", st, b)
	}
}

func TestMountDeviceHandler(t *testing.T) {
	otaDir := t.TempDir()
	os.WriteFile(filepath.Join(otaDir, "1.root.json"), []byte("{}"), 0o644)
	c := startCloud(t, Config{OTADir: otaDir})
	// The OTA domain's handlers mount beside the repository directory, with or without a method.
	c.Mount("/ota/v1/reports", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) }), DeviceOnly)
	c.Mount("GET /ota/v1/status", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("{}")) }), OperatorOnly)
	var got api.Device
	c.Mount("POST /v1/device/ota/report", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ = DeviceFromContext(r.Context())
		w.WriteHeader(http.StatusNoContent)
	}), DeviceOnly)
	ctx := context.Background()
	c.op.CreateSite(ctx, api.CreateSiteRequest{ID: "s1"})
	cl, _ := c.op.Claim(ctx, "s1", 0)
	d := newDevice(t, c, "MR-0010")
	resp, err := c.op.HTTP.Post(c.url+"/v1/enroll", "application/json", bytes.NewReader(d.enrollRequest(t, cl.Token)))
	if err != nil {
		t.Fatal(err)
	}
	var er api.EnrollResponse
	json.NewDecoder(resp.Body).Decode(&er)
	resp.Body.Close()
	d.useCert(t, c, er.Certificate)
	if resp, err := c.op.HTTP.Post(c.url+"/v1/device/ota/report", "application/json", nil); err != nil || resp.StatusCode != 401 {
		t.Errorf("mounted DeviceOnly handler without a certificate: %v; want 401", err)
	}
	resp, err = d.hc.Post(c.url+"/v1/device/ota/report", "application/json", nil)
	if err != nil || resp.StatusCode != 204 || got.Serial != "MR-0010" || got.SiteID != "s1" {
		t.Errorf("mounted DeviceOnly handler = %v, device %+v; want 204 from MR-0010 of s1", err, got)
	}
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"POST", "/ota/v1/reports", 202},
		{"GET", "/ota/1.root.json", 200},
		{"POST", "/ota/1.root.json", 405},
		{"GET", "/ota/v1/status", 401}, // operator only
	} {
		req, _ := http.NewRequest(tc.method, c.url+tc.path, nil)
		resp, err := d.hc.Do(req)
		if err != nil || resp.StatusCode != tc.want {
			t.Errorf("%s %s = %v, %v; want %d", tc.method, tc.path, err, resp.StatusCode, tc.want)
			continue
		}
		resp.Body.Close()
	}
}

func TestRestartKeepsState(t *testing.T) {
	dir := t.TempDir()
	s, err := New(Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	pin, tok, key := s.CAPin(), s.AdminToken(), s.ProfileKey()
	s.Close()
	s2, err := New(Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.CAPin() != pin || s2.AdminToken() != tok || !key.Equal(s2.ProfileKey()) {
		t.Errorf("after restart: CA, admin token or profile key changed")
	}
	for _, f := range []string{caKeyFile, profileKeyFile, masterKeyFile, adminTokenFile} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v; want 0600", f, fi.Mode().Perm(), err)
		}
	}
	if _, err := New(Config{}); err == nil || !errors.Is(err, err) {
		t.Errorf("New(no data dir) = nil error")
	}
}
