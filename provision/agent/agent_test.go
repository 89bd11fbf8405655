package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"meshroot/internal/testenv"
	"meshroot/provision/api"
	"meshroot/provision/devcloud"
	"meshroot/provision/devcloud/devcloudtest"
	"meshroot/provision/enroll"
	"meshroot/provision/identity"
	"meshroot/provision/onboard"
	"meshroot/provision/pake"
	"meshroot/provision/profile"
)

const (
	testCode   = identity.SetupCode(20202021)
	psk1       = "Pq7_x2.LmN0vB8cR4tY6uI9oP1aS3dF5"
	psk2       = "xlk6lMNzd4CNRP8YUX4PlRLVL4pV1FWS"
	passphrase = "correct horse battery"
)

type syncBuffer = testenv.Buffer

var fast = enroll.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond, Multiplier: 2, AttemptTimeout: 10 * time.Second}

// exampleVPN is a valid VPN section whose PSK references are in the cloud's store.
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

type world struct {
	cloud   *devcloudtest.Cloud
	claim   *api.Claim
	label   identity.Payload
	factory *identity.Factory
	dataDir string
	logs    *syncBuffer
	now     func() time.Time
}

func newWorld(t *testing.T, cloudDir string) *world {
	t.Helper()
	c := devcloudtest.Start(t, cloudDir, devcloud.Config{})
	ctx := context.Background()
	if _, err := c.Op.CreateSite(ctx, api.CreateSiteRequest{ID: "berlin-1"}); err != nil {
		t.Fatal(err)
	}
	vpn := exampleVPN()
	c.Op.PutSecret(ctx, vpn.Tunnels[0].PSKRef, psk1)
	c.Op.PutSecret(ctx, vpn.Tunnels[1].PSKRef, psk2)
	cl, err := c.Op.Claim(ctx, "berlin-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f, label, err := identity.NewFactory("MR-0001", "test", testCode, 0x0abc, pake.MinIterations, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &world{cloud: c, claim: cl, label: label, factory: f, dataDir: t.TempDir(), logs: &syncBuffer{}}
}

// startAgent runs an agent on w's data directory until the returned stop is called.
func (w *world) startAgent(t *testing.T) (a *Agent, addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a, err = New(Config{DataDir: w.dataDir, Factory: w.factory, OnboardListener: ln, Backoff: fast,
		PollWait: 2 * time.Second, ErrorDelay: 50 * time.Millisecond, OnboardGrace: time.Second,
		Lockout: onboard.Lockout{Free: 3, Base: time.Second, Max: time.Minute}, Now: w.now,
		Logger: slog.New(slog.NewJSONHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	upped := make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, func() { once.Do(func() { close(upped) }) }) }()
	select {
	case <-upped:
	case err := <-done:
		t.Fatalf("Run() = %v before up", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run() did not call up")
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
	}
	t.Cleanup(stop)
	return a, "http://" + ln.Addr().String(), stop
}

func (w *world) setup() onboard.Setup {
	return onboard.Setup{ClaimToken: w.claim.Token, CloudURL: w.cloud.URL, CAPin: w.claim.CAPin,
		SiteName: "Berlin office", WiFiSSID: "Meshroot", WiFiPassphrase: passphrase, Country: "DE"}
}

// pairAndWait is what `meshctl app pair` does.
func pairAndWait(t *testing.T, addr string, label identity.Payload, s onboard.Setup) (*onboard.Progress, error) {
	t.Helper()
	_, p, err := pairSession(t, addr, label, s)
	return p, err
}

func pairSession(t *testing.T, addr string, label identity.Payload, s onboard.Setup) (*onboard.Session, *onboard.Progress, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sess, err := onboard.Pair(ctx, &onboard.HTTPTransport{URL: addr}, label)
	if err != nil {
		return nil, nil, err
	}
	if _, err := sess.Setup(ctx, s); err != nil {
		return sess, nil, err
	}
	p, err := sess.WaitProfile(ctx, 50*time.Millisecond, nil)
	return sess, p, err
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestZeroTouch(t *testing.T) {
	w := newWorld(t, "")
	shipper := NewLogShipper(100, 100*time.Millisecond)
	a, addr, _ := w.startAgent(t)
	var seen []uint64
	var mu sync.Mutex
	unsub := a.Subscribe(func(v *profile.Verified) { mu.Lock(); seen = append(seen, v.Version); mu.Unlock() })
	defer unsub()
	if a.Profile() != nil {
		t.Fatalf("Profile() before onboarding = v%d; want nil", a.Profile().Version)
	}
	p, err := pairAndWait(t, addr, w.label, w.setup())
	if err != nil {
		t.Fatalf("pairing and waiting for the profile: %v", err)
	}
	if p.Phase != onboard.PhaseProfile || p.SiteID != "berlin-1" || p.ProfileVersion != 1 {
		t.Errorf("final progress = %+v; want profile v1 of berlin-1", p)
	}
	v := a.Profile()
	if v == nil || v.Version != 1 || v.WiFi.SSID != "Meshroot" || v.Country != "DE" || v.Site.Name != "Berlin office" {
		t.Fatalf("Profile() = %+v; want v1 with the app's settings", v)
	}
	if pw, ok := a.WiFiPassphrase(); !ok || pw != passphrase {
		t.Errorf("WiFiPassphrase() = %v; want the app's", ok)
	}
	// The operator adds the VPN: the device picks up v2 through the long poll, with its PSKs.
	raw, _ := json.Marshal(exampleVPN())
	if _, err := w.cloud.Op.PutVPN(context.Background(), "berlin-1", raw); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "profile v2", func() bool { v := a.Profile(); return v != nil && v.Version == 2 })
	v = a.Profile()
	if got, ok := a.Secret(v.VPN.Tunnels[0].PSKRef); !ok || got != psk1 {
		t.Errorf("Secret(tunnel 0 psk) = %v; want the stored PSK", ok)
	}
	if got, ok := a.Secret(v.VPN.Tunnels[1].PSKRef); !ok || got != psk2 {
		t.Errorf("Secret(tunnel 1 psk) = %v; want the stored PSK", ok)
	}
	waitFor(t, "the subscriber to see v2", func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) >= 2 })
	mu.Lock()
	if len(seen) != 2 || seen[0] != 1 || seen[1] != 2 {
		t.Errorf("subscriber saw versions %v; want [1 2]", seen)
	}
	mu.Unlock()
	// The cloud knows the device and its version.
	devs, err := w.cloud.Op.Devices(context.Background(), "berlin-1")
	if err != nil || len(devs) != 1 || devs[0].Serial != "MR-0001" {
		t.Errorf("cloud devices = %+v, %v", devs, err)
	}
	// Logs shipped through the shipper reach the cloud, queryable by tunnel.
	lg := slog.New(shipper.Handler(slog.DiscardHandler))
	lg.Info("tunnel up", "tunnel", "3.15.245.169")
	body, n, _ := shipper.take()
	if n != 1 {
		t.Fatalf("shipper holds %d lines; want 1", n)
	}
	if err := a.Client().PostLogs(context.Background(), body); err != nil {
		t.Fatal(err)
	}
	recs, err := w.cloud.Op.Logs(context.Background(), api.LogQuery{Site: "berlin-1", Tunnel: "3.15.245.169"})
	if err != nil || len(recs) != 1 || recs[0].Msg != "tunnel up" {
		t.Errorf("cloud logs for the tunnel = %+v, %v", recs, err)
	}
	w.checkNoSecrets(t, a)
}

func TestCertificateRenewal(t *testing.T) {
	w := newWorld(t, "")
	var mu sync.Mutex
	offset := time.Duration(0)
	w.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return time.Now().Add(offset) }
	a, addr, _ := w.startAgent(t)
	if _, err := pairAndWait(t, addr, w.label, w.setup()); err != nil {
		t.Fatal(err)
	}
	before := a.Client().NotAfter
	mu.Lock()
	offset = 340 * 24 * time.Hour // 25 days before the 1-year certificate expires
	mu.Unlock()
	waitFor(t, "the renewal", func() bool { return strings.Contains(w.logs.String(), "device certificate renewed") })
	mu.Lock()
	offset = 0
	mu.Unlock()
	if after := a.Client().NotAfter; !after.After(before) {
		t.Errorf("certificate NotAfter %v after renewal; want later than %v", after, before)
	}
	// The new certificate works: the operator's next profile arrives.
	raw, _ := json.Marshal(exampleVPN())
	if _, err := w.cloud.Op.PutVPN(context.Background(), "berlin-1", raw); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "profile v2 after renewal", func() bool { v := a.Profile(); return v != nil && v.Version == 2 })
	b, _ := os.ReadFile(filepath.Join(w.dataDir, "provision", credsFile))
	var c enroll.Credentials
	json.Unmarshal(b, &c)
	if !strings.Contains(string(b), "BEGIN CERTIFICATE") || c.CertPEM == "" {
		t.Errorf("renewed credentials not kept")
	}
}

// checkNoSecrets scans the agent's logs and data directory for every secret of the run.
func (w *world) checkNoSecrets(t *testing.T, a *Agent) {
	t.Helper()
	meshKey, _ := a.Secret("site/berlin-1/mesh-key")
	secrets := map[string]string{
		"setup code": testCode.Digits(), "claim token": w.claim.Token, "wifi passphrase": passphrase,
		"psk 1": psk1, "psk 2": psk2, "admin token": w.cloud.AdminToken(),
	}
	if meshKey != "" {
		secrets["mesh key"] = meshKey
	}
	der, _ := a.key.Bytes()
	secrets["device key (raw)"] = string(der)
	secrets["device key (hex)"] = hex.EncodeToString(der)
	logs := w.logs.String()
	if logs == "" {
		t.Fatal("no logs captured")
	}
	for name, v := range secrets {
		if strings.Contains(logs, v) {
			t.Errorf("device logs hold the %s", name)
		}
	}
	keyFile := filepath.Join(w.dataDir, identity.KeyFile)
	filepath.WalkDir(w.dataDir, func(p string, de os.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		b, _ := os.ReadFile(p)
		if p == keyFile {
			// The key file is the key's one home; check it is what it says and 0600.
			fi, _ := de.Info()
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s mode %v; want 0600", p, fi.Mode().Perm())
			}
			blk, _ := pem.Decode(b)
			if _, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err != nil {
				t.Errorf("%s: %v", p, err)
			}
			return nil
		}
		for name, v := range secrets {
			if bytes.Contains(b, []byte(v)) {
				t.Errorf("%s holds the %s in clear", p, name)
			}
		}
		return nil
	})
}

// TestLastGoodProfile: the device keeps its profile across a restart with the cloud down, and
// keeps it when the cloud sends one that does not verify (signed by a key it does not trust).
func TestLastGoodProfile(t *testing.T) {
	cloudDir := t.TempDir()
	w := newWorld(t, cloudDir)
	a, addr, stop := w.startAgent(t)
	if _, err := pairAndWait(t, addr, w.label, w.setup()); err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(exampleVPN())
	w.cloud.Op.PutVPN(context.Background(), "berlin-1", raw)
	waitFor(t, "profile v2", func() bool { v := a.Profile(); return v != nil && v.Version == 2 })
	stop()

	// Restart with the cloud unreachable: v2 and its secrets are in force at once.
	w2 := *w
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	deadURL := "https://" + closed.Addr().String()
	closed.Close() // nothing listens there now
	credsPath := filepath.Join(w.dataDir, "provision", credsFile)
	credsJSON, _ := os.ReadFile(credsPath)
	var creds enroll.Credentials
	json.Unmarshal(credsJSON, &creds)
	creds.CloudURL = deadURL
	b, _ := json.Marshal(creds)
	os.WriteFile(credsPath, b, 0o600)
	a2, _, stop2 := w2.startAgent(t)
	if v := a2.Profile(); v == nil || v.Version != 2 {
		t.Fatalf("after restart with the cloud down: Profile() = %v; want v2", v)
	}
	if got, ok := a2.Secret(exampleVPN().Tunnels[1].PSKRef); !ok || got != psk2 {
		t.Errorf("after restart: Secret(psk) = %v; want the cached PSK", ok)
	}
	time.Sleep(300 * time.Millisecond) // a few failed rounds
	if v := a2.Profile(); v == nil || v.Version != 2 {
		t.Fatalf("with the cloud down: Profile() = %v; want v2 still", v)
	}
	stop2()
	os.WriteFile(credsPath, credsJSON, 0o600)

	// The cloud's profile key is replaced by one the device does not trust: v3 is refused.
	w.cloud.Stop()
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	os.WriteFile(filepath.Join(cloudDir, "profile.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	c2 := restartCloudAt(t, cloudDir, w.cloud.URL)
	a3, _, _ := w.startAgent(t)
	if _, err := c2.Op.PutVPN(context.Background(), "berlin-1", raw); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the refusal", func() bool { return strings.Contains(w.logs.String(), "new profile refused") })
	if v := a3.Profile(); v == nil || v.Version != 2 {
		t.Errorf("after an untrusted v3: Profile() = %v; want v2 in force", v)
	}
	if !strings.Contains(w.logs.String(), "is not trusted") {
		t.Errorf("the refusal does not say why")
	}
}

// restartCloudAt starts a cloud from an existing data dir on the same address as before.
func restartCloudAt(t *testing.T, dir, u string) *devcloudtest.Cloud {
	t.Helper()
	addr := strings.TrimPrefix(u, "https://")
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	s, err := devcloud.New(devcloud.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done; s.Close() })
	hc, _ := api.TrustCA(s.CACertPEM(), 10*time.Second)
	return &devcloudtest.Cloud{Server: s, URL: u, HTTP: hc, Op: &api.Client{BaseURL: u, Token: s.AdminToken(), HTTP: hc}}
}

// TestClaimRefusedBackToPairing: an unknown claim fails enrollment; the device forgets the
// setup and tells the app, which sends a corrected setup over the same paired session.
func TestClaimRefusedBackToPairing(t *testing.T) {
	w := newWorld(t, "")
	a, addr, _ := w.startAgent(t)
	bad := w.setup()
	bad.ClaimToken = "mrc_thisclaimdoesnotexist"
	sess, p, err := pairSession(t, addr, w.label, bad)
	if err == nil || p == nil || p.Phase != onboard.PhaseFailed || !strings.Contains(p.Detail, "unknown claim token") {
		t.Fatalf("pairing with a bogus claim: %+v, %v; want phase failed, unknown claim token", p, err)
	}
	if _, err := os.Stat(filepath.Join(w.dataDir, "provision", setupFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused setup is still stored: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := sess.Setup(ctx, w.setup()); err != nil {
		t.Fatalf("Setup(good claim) on the same session = %v", err)
	}
	p2, err := sess.WaitProfile(ctx, 50*time.Millisecond, nil)
	if err != nil || p2.ProfileVersion != 1 {
		t.Fatalf("WaitProfile() after the corrected setup = %+v, %v", p2, err)
	}
	if a.Profile() == nil {
		t.Errorf("no profile after the corrected setup")
	}
	// Once enrolled, a different setup is refused.
	other := w.setup()
	other.WiFiSSID = "Elsewhere"
	if _, err := sess.Setup(ctx, other); err == nil || !strings.Contains(err.Error(), "already enrolled") {
		t.Errorf("Setup(other site) after enrollment = %v; want 'already enrolled'", err)
	}
}
