// Package devcloud is the reference fleet cloud: what a device enrolls with and fetches its site
// profile from, used by the tests, `make run` and anyone evaluating the firmware. It issues
// single-use claim tokens, signs device CSRs with a fleet CA, issues and signs site profiles,
// keeps a write-only secret store (the VPN PSKs), ingests device logs (queryable by site and
// tunnel), serves an OTA repository directory, and lets other domains mount handlers.
//
// One HTTPS listener serves three audiences (provision/devcloud/openapi.yaml documents them):
//
//   - devices: POST /v1/enroll with a claim token, then every /v1/device/... call with the
//     device certificate (mTLS); a client without a valid, unrevoked certificate gets 401;
//   - the phone app and operators: /v1/sites, claims, devices, logs and secrets, with the
//     bearer token in <data>/admin.token (the reference cloud has one account);
//   - anyone: /v1/fleet (CA and profile keys), /healthz, /openapi.yaml.
//
// State lives in <data>: cloud.db (bbolt), the fleet CA (ca.key 0600, ca.pem), the profile
// signing key (profile.key, ed25519, 0600), the secret store's master key (master.key, 0600) and
// admin.token (0600). Claim tokens are stored only as SHA-256 hashes and secrets only sealed, so
// neither is in a file in clear. The TLS server certificate is issued afresh at each start for
// the names it is reached by.
package devcloud

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"meshroot/provision/api"
	"meshroot/provision/internal/persist"
	"meshroot/provision/profile"
)

//go:embed openapi.yaml
var openapiYAML []byte

// OpenAPI returns the API's OpenAPI 3 document.
func OpenAPI() []byte { return openapiYAML }

// Config configures a Server.
type Config struct {
	// DataDir holds the cloud's state; created if missing.
	DataDir string
	// Addr is the listen address for ListenAndServe, e.g. "10.0.0.1:8443" or ":8443".
	Addr string
	// PublicURL is how devices reach the cloud (https://host:port); default https://<Addr>, or
	// the listener's address.
	PublicURL string
	// TLSNames are extra DNS names and IPs for the server certificate.
	TLSNames []string
	// OTADir, when set, is served read-only at /ota/ to devices.
	OTADir string
	// Logger gets the cloud's logs (default: discard).
	Logger *slog.Logger
	// ClaimTTL is the default claim token lifetime (24 h); ProfileTTL a profile's (30 days);
	// CertTTL a device certificate's (1 year).
	ClaimTTL, ProfileTTL, CertTTL time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// LogDedupeWindow is how many recent log_ids the log ingest remembers per device to drop
	// re-sent lines (default DefaultLogDedupeWindow).
	LogDedupeWindow int
}

// DefaultLogDedupeWindow is the log ingest's default per-device dedupe window: twice the
// device shipper's buffer (firmware/logship: 5,000 lines), so any line an upload can re-send is
// still remembered when it comes again.
const DefaultLogDedupeWindow = 10000

// Access says who may call a mounted handler.
type Access int

// Access levels for Mount.
const (
	// Public: anyone.
	Public Access = iota
	// DeviceOnly: a device with a valid certificate (mTLS); DeviceFromContext works.
	DeviceOnly
	// OperatorOnly: the bearer admin token.
	OperatorOnly
)

// Server is the reference fleet cloud.
type Server struct {
	cfg        Config
	log        *slog.Logger
	now        func() time.Time
	ca         *fleetCA
	profileKey ed25519.PrivateKey
	adminToken string
	st         *store
	mux        *http.ServeMux
	routes     []Route

	mu       sync.Mutex
	url      string
	siteWait map[string]chan struct{} // closed when the site's profile changes
	issueMu  sync.Mutex
}

// Route is one registered API route (for documentation checks).
type Route struct {
	Method, Pattern string
	Access          Access
}

// New opens (or initializes) the cloud in cfg.DataDir.
func New(cfg Config) (*Server, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("devcloud: no data directory")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("devcloud: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ClaimTTL == 0 {
		cfg.ClaimTTL = 24 * time.Hour
	}
	if cfg.ProfileTTL == 0 {
		cfg.ProfileTTL = 30 * 24 * time.Hour
	}
	if cfg.CertTTL == 0 {
		cfg.CertTTL = 365 * 24 * time.Hour
	}
	if cfg.LogDedupeWindow <= 0 {
		cfg.LogDedupeWindow = DefaultLogDedupeWindow
	}
	s := &Server{cfg: cfg, log: cfg.Logger, now: cfg.Now, mux: http.NewServeMux(), siteWait: map[string]chan struct{}{}}
	var err error
	if s.ca, err = loadOrCreateCA(cfg.DataDir, s.now()); err != nil {
		return nil, err
	}
	if s.profileKey, err = loadOrCreateProfileKey(cfg.DataDir); err != nil {
		return nil, err
	}
	master, err := loadOrCreateRandom(filepath.Join(cfg.DataDir, masterKeyFile), 32,
		func(b []byte) []byte { return []byte(hex.EncodeToString(b) + "\n") },
		func(b []byte) ([]byte, error) { return hex.DecodeString(strings.TrimSpace(string(b))) })
	if err != nil {
		return nil, fmt.Errorf("devcloud: master key: %w", err)
	}
	box, err := persist.NewBoxKey(master)
	if err != nil {
		return nil, err
	}
	tok, err := loadOrCreateRandom(filepath.Join(cfg.DataDir, adminTokenFile), 24,
		func(b []byte) []byte { return []byte("mra_" + b32(b) + "\n") },
		func(b []byte) ([]byte, error) { return []byte(strings.TrimSpace(string(b))), nil })
	if err != nil {
		return nil, fmt.Errorf("devcloud: admin token: %w", err)
	}
	s.adminToken = string(tok)
	if !strings.HasPrefix(s.adminToken, "mra_") {
		s.adminToken = "mra_" + b32(tok)
	}
	if s.st, err = openStore(filepath.Join(cfg.DataDir, "cloud.db"), box); err != nil {
		return nil, fmt.Errorf("devcloud: %w", err)
	}
	s.routesInit()
	return s, nil
}

// Close closes the database.
func (s *Server) Close() error { return s.st.close() }

// AdminToken is the operator's bearer token.
func (s *Server) AdminToken() string { return s.adminToken }

// CACertPEM is the fleet CA certificate.
func (s *Server) CACertPEM() []byte { return s.ca.pem }

// CAPin is the hex SHA-256 of the fleet CA certificate.
func (s *Server) CAPin() string { return s.ca.pin() }

// ProfileKey is the public profile-signing key.
func (s *Server) ProfileKey() ed25519.PublicKey { return s.profileKey.Public().(ed25519.PublicKey) }

// URL is the cloud's public URL (set once serving).
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.url
}

// Routes lists the API routes (not the mounted extras).
func (s *Server) Routes() []Route { return append([]Route(nil), s.routes...) }

// Handler is the cloud's HTTP handler. It expects to run behind TLS (Serve).
func (s *Server) Handler() http.Handler { return s.mux }

// TLSConfig returns the server TLS configuration: the server certificate (issued for names)
// and optional client certificates verified against the fleet CA.
func (s *Server) TLSConfig(names []string) (*tls.Config, error) {
	cert, err := s.ca.serverCert(names, s.now())
	if err != nil {
		return nil, fmt.Errorf("devcloud: server certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(s.ca.cert)
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12,
	}, nil
}

// Serve serves HTTPS on ln until ctx is done.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	names := append([]string{"localhost", "127.0.0.1", "::1"}, s.cfg.TLSNames...)
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		names = append(names, localIPs()...)
	} else {
		names = append(names, host)
	}
	if u := s.cfg.PublicURL; u != "" {
		if pu, err := url.Parse(u); err == nil {
			names = append(names, pu.Hostname())
		}
	}
	tc, err := s.TLSConfig(names)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.url = s.cfg.PublicURL
	if s.url == "" {
		h := host
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			h = "localhost"
		}
		s.url = "https://" + net.JoinHostPort(h, port)
	}
	s.mu.Unlock()
	srv := &http.Server{
		Handler:           s.mux,
		TLSConfig:         tc,
		ReadHeaderTimeout: 20 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			srv.Shutdown(sctx)
			cancel()
		case <-done:
		}
	}()
	s.log.Info("meshcloud serving", "url", s.url, "ca_pin_sha256", s.CAPin())
	err = srv.ServeTLS(ln, "", "")
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// ListenAndServe listens on cfg.Addr and serves until ctx is done.
func (s *Server) ListenAndServe(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("devcloud: %w", err)
	}
	return s.Serve(ctx, ln)
}

func localIPs() []string {
	var out []string
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			out = append(out, n.IP.String())
		}
	}
	return out
}

// Mount adds an extra handler (e.g. the OTA install-report endpoint) under pattern, a Go
// ServeMux pattern, reachable by who.
func (s *Server) Mount(pattern string, h http.Handler, who Access) {
	s.mux.Handle(pattern, s.guard(who, h))
}

// MountStatic serves a directory read-only (GET and HEAD) under prefix, which must end in "/".
// The pattern has no method, so more specific handlers mounted under the same prefix (e.g. the
// OTA report endpoint at /ota/v1/reports, with or without a method) take precedence over it.
func (s *Server) MountStatic(prefix, dir string, who Access) {
	fs := http.StripPrefix(strings.TrimSuffix(prefix, "/"), http.FileServer(noDirs{http.Dir(dir)}))
	s.mux.Handle(prefix, s.guard(who, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, "read-only")
			return
		}
		fs.ServeHTTP(w, r)
	})))
}

// noDirs refuses directory listings.
type noDirs struct{ fs http.FileSystem }

func (n noDirs) Open(name string) (http.File, error) {
	f, err := n.fs.Open(name)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		f.Close()
		return nil, os.ErrNotExist
	}
	return f, nil
}

type ctxKey struct{}

// DeviceFromContext returns the calling device in a DeviceOnly handler.
func DeviceFromContext(ctx context.Context) (api.Device, bool) {
	d, ok := ctx.Value(ctxKey{}).(*Device)
	if !ok {
		return api.Device{}, false
	}
	return *d, true
}

func (s *Server) handle(method, pattern string, who Access, h http.HandlerFunc) {
	s.routes = append(s.routes, Route{Method: method, Pattern: pattern, Access: who})
	s.mux.Handle(method+" "+pattern, s.guard(who, h))
}

func (s *Server) routesInit() {
	s.handle("GET", api.PathHealth, Public, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.handle("GET", api.PathOpenAPI, Public, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		w.Write(openapiYAML)
	})
	s.handle("GET", api.PathFleet, Public, s.getFleet)
	s.handle("POST", api.PathEnroll, Public, s.postEnroll)
	s.handle("GET", api.PathDeviceSelf, DeviceOnly, s.getDeviceSelf)
	s.handle("POST", api.PathRenew, DeviceOnly, s.postRenew)
	s.handle("GET", api.PathProfile, DeviceOnly, s.getProfile)
	s.handle("GET", api.PathSecrets+"{ref...}", DeviceOnly, s.getSecret)
	s.handle("POST", api.PathLogs, DeviceOnly, s.postLogs)
	s.handle("GET", api.PathOTA, DeviceOnly, s.getOTA)
	s.handle("POST", api.PathSites, OperatorOnly, s.postSite)
	s.handle("GET", api.PathSites, OperatorOnly, s.getSites)
	s.handle("GET", api.PathSites+"/{site}", OperatorOnly, s.getSite)
	s.handle("GET", api.PathSites+"/{site}/profile", OperatorOnly, s.getSiteProfile)
	s.handle("PUT", api.PathSites+"/{site}/profile", OperatorOnly, s.putSiteProfile)
	s.handle("PUT", api.PathSites+"/{site}/vpn", OperatorOnly, s.putSiteVPN)
	s.handle("POST", api.PathSites+"/{site}/claims", OperatorOnly, s.postClaim)
	s.handle("GET", api.PathDevices, OperatorOnly, s.getDevices)
	s.handle("DELETE", api.PathDevices+"/{serial}", OperatorOnly, s.deleteDevice)
	s.handle("PUT", api.PathSecretStore+"{ref...}", OperatorOnly, s.putSecret)
	s.handle("GET", api.PathLogQuery, OperatorOnly, s.getLogs)
	if s.cfg.OTADir != "" {
		s.MountStatic(api.PathOTARepo, s.cfg.OTADir, DeviceOnly)
	}
}

// guard enforces the access level, recovers panics and logs the request (method, path,
// status; never bodies, tokens or query strings).
func (s *Server) guard(who Access, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := &statusWriter{ResponseWriter: w, status: 200}
		start := s.now()
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("handler panic", "path", r.URL.Path, "panic", fmt.Sprint(p))
				writeError(rw, http.StatusInternalServerError, "internal error")
			}
			s.log.Debug("request", "method", r.Method, "path", r.URL.Path, "status", rw.status, "ms", s.now().Sub(start).Milliseconds())
		}()
		switch who {
		case DeviceOnly:
			d, err := s.authDevice(r)
			if err != nil {
				s.log.Info("device refused", "path", r.URL.Path, "remote", r.RemoteAddr, "reason", err.Error())
				writeError(rw, http.StatusUnauthorized, "a device certificate issued by this fleet is required")
				return
			}
			r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, d))
		case OperatorOnly:
			tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(tok), []byte(s.adminToken)) != 1 {
				writeError(rw, http.StatusUnauthorized, "operator bearer token required")
				return
			}
		}
		h.ServeHTTP(rw, r)
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// authDevice maps the verified client certificate to an enrolled, unrevoked device.
func (s *Server) authDevice(r *http.Request) (*Device, error) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return nil, errors.New("no verified client certificate")
	}
	leaf := r.TLS.VerifiedChains[0][0]
	d, err := s.st.deviceByCert(leaf.SerialNumber.Text(16))
	if err != nil {
		return nil, fmt.Errorf("certificate %s: not an enrolled device", leaf.SerialNumber.Text(16))
	}
	if s.now().After(leaf.NotAfter) {
		return nil, errors.New("certificate expired")
	}
	return d, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string, fields ...string) {
	writeJSON(w, status, api.Error{Error: msg, Fields: fields})
}

// readJSON decodes a request body strictly, with a size limit.
func readJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
		return false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "body: trailing data after the JSON value")
		return false
	}
	return true
}

func b32(b []byte) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	var sb strings.Builder
	var acc, bits uint
	for _, c := range b {
		acc = acc<<8 | uint(c)
		bits += 8
		for bits >= 5 {
			bits -= 5
			sb.WriteByte(alphabet[(acc>>bits)&31])
		}
	}
	if bits > 0 {
		sb.WriteByte(alphabet[(acc<<(5-bits))&31])
	}
	return sb.String()
}

func hashToken(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

func (s *Server) fleetInfo() api.FleetInfo {
	pub := s.ProfileKey()
	return api.FleetInfo{
		CloudURL:    s.URL(),
		CAPEM:       string(s.ca.pem),
		CAPin:       s.CAPin(),
		ProfileKeys: []api.ProfileKey{{KeyID: profile.KeyID(pub), PublicKey: pub}},
	}
}

func (s *Server) getFleet(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.fleetInfo())
}

// ProfileKeyB64 is the profile key as base64 (for printing).
func (s *Server) ProfileKeyB64() string { return base64.StdEncoding.EncodeToString(s.ProfileKey()) }
