package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"meshroot/provision/agent"
	"meshroot/provision/api"
	"meshroot/provision/devcloud"
	"meshroot/provision/devcloud/devcloudtest"
	"meshroot/provision/identity"
	"meshroot/provision/profile"
)

// provRun runs meshctl with args and returns stdout, stderr and the error.
func provRun(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), err
}

func provCloud(t *testing.T) (*devcloudtest.Cloud, []string) {
	t.Helper()
	dir := t.TempDir()
	c := devcloudtest.Start(t, dir, devcloud.Config{})
	return c, []string{"--cloud", c.URL, "--data", dir}
}

func TestCloudCommands(t *testing.T) {
	c, cf := provCloud(t)
	if _, stderr, err := provRun(t, append([]string{"cloud", "site", "create", "--id", "berlin-1", "--country", "DE", "--wifi", "Meshroot"}, cf...)...); err != nil {
		t.Fatalf("cloud site create: %v\n%s", err, stderr)
	}
	out, _, err := provRun(t, append([]string{"cloud", "sites"}, cf...)...)
	if err != nil || !regexp.MustCompile(`berlin-1\s+v1`).MatchString(out) {
		t.Errorf("cloud sites = %q, %v; want berlin-1 at v1", out, err)
	}
	claimPath := filepath.Join(t.TempDir(), "claim.json")
	if _, _, err := provRun(t, append([]string{"cloud", "claim", "--site", "berlin-1", "-o", claimPath}, cf...)...); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(claimPath)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("claim file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	var cl api.Claim
	b, _ := os.ReadFile(claimPath)
	if json.Unmarshal(b, &cl); cl.CAPin != c.CAPin() || cl.Token == "" {
		t.Errorf("claim file = %s", b)
	}
	secretFile := filepath.Join(t.TempDir(), "v")
	os.WriteFile(secretFile, []byte("Pq7_x2.LmN0vB8cR4tY6uI9oP1aS3dF5\n"), 0o600)
	if out, _, err := provRun(t, append([]string{"cloud", "secret", "put", "vpn/x/1.2.3.4", "--value-file", secretFile}, cf...)...); err != nil || !strings.Contains(out, "stored") {
		t.Errorf("cloud secret put = %q, %v", out, err)
	}
	env, _, err := provRun(t, append([]string{"cloud", "profile", "get", "--site", "berlin-1"}, cf...)...)
	if err != nil {
		t.Fatal(err)
	}
	v, err := profile.Verify([]byte(env), profile.NewKeySet(c.ProfileKey()), profile.Expect{SiteID: "berlin-1"})
	if err != nil {
		t.Fatalf("profile get output does not verify: %v", err)
	}
	tmpl := v.Profile
	tmpl.OTA.Channel = "beta"
	tb, _ := json.Marshal(tmpl)
	tf := filepath.Join(t.TempDir(), "p.json")
	os.WriteFile(tf, tb, 0o644)
	if out, _, err := provRun(t, append([]string{"cloud", "profile", "set", "--site", "berlin-1", tf}, cf...)...); err != nil || !strings.Contains(out, "profile v2 issued") {
		t.Errorf("cloud profile set = %q, %v", out, err)
	}
	tmpl.Country = "de"
	tb, _ = json.Marshal(tmpl)
	os.WriteFile(tf, tb, 0o644)
	if _, _, err := provRun(t, append([]string{"cloud", "profile", "set", "--site", "berlin-1", tf}, cf...)...); err == nil || !strings.Contains(err.Error(), "country") {
		t.Errorf("cloud profile set (bad country) = %v; want an error naming country", err)
	}
	if out, _, err := provRun(t, append([]string{"cloud", "devices"}, cf...)...); err != nil || !strings.Contains(out, "SERIAL") {
		t.Errorf("cloud devices = %q, %v", out, err)
	}
	if out, _, err := provRun(t, append([]string{"cloud", "logs", "--site", "berlin-1", "--since", "1h"}, cf...)...); err != nil || out != "" {
		t.Errorf("cloud logs (none yet) = %q, %v", out, err)
	}
	if _, _, err := provRun(t, append([]string{"cloud", "revoke", "MR-NOPE"}, cf...)...); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("cloud revoke unknown = %v; want a 404", err)
	}
	if _, _, err := provRun(t, "cloud", "sites", "--cloud", c.URL); err == nil {
		t.Errorf("cloud sites without credentials = nil error")
	}
	if _, _, err := provRun(t, "cloud", "frobnicate"); err == nil {
		t.Errorf("cloud frobnicate = nil error")
	}
}

func TestProfileImportAWS(t *testing.T) {
	td := filepath.Join("..", "..", "vpn", "awsconfig", "testdata")
	secrets := filepath.Join(t.TempDir(), "secrets.json")
	args := func(xml string) []string {
		return []string{"profile", "import-aws", filepath.Join(td, xml), "--options", filepath.Join(td, "bgp-vgw-describe.json"),
			"--prefix", "192.168.10.0/24", "--site", "berlin-1", "--country", "DE", "--wifi", "Meshroot", "--secrets-out", secrets}
	}
	out1, stderr, err := provRun(t, args("bgp-vgw.xml")...)
	if err != nil {
		t.Fatalf("import-aws: %v\n%s", err, stderr)
	}
	out2, _, err := provRun(t, args("bgp-vgw-swapped.xml")...)
	if err != nil || out1 != out2 {
		t.Errorf("import-aws of the swapped document differs:\n%s\n---\n%s", out1, out2)
	}
	var p profile.Profile
	if err := json.Unmarshal([]byte(out1), &p); err != nil {
		t.Fatal(err)
	}
	p.Version, p.IssuedAt, p.ExpiresAt, p.Mesh.KeyRef = 1, time.Now(), time.Now().Add(time.Hour), "k"
	if err := p.Validate(); err != nil {
		t.Errorf("imported profile does not validate: %v", err)
	}
	for _, psk := range []string{"Pq7_x2.LmN0vB8cR4tY6uI9oP1aS3dF5", "xlk6lMNzd4CNRP8YUX4PlRLVL4pV1FWS"} {
		if strings.Contains(out1, psk) || strings.Contains(stderr, psk) {
			t.Errorf("import-aws printed a PSK")
		}
	}
	sb, _ := os.ReadFile(secrets)
	fi, _ := os.Stat(secrets)
	if !bytes.Contains(sb, []byte("xlk6lMNzd4CNRP8YUX4PlRLVL4pV1FWS")) || fi.Mode().Perm() != 0o600 {
		t.Errorf("secrets file = %s, mode %v; want the PSKs, 0600", sb, fi.Mode().Perm())
	}
	// Push into a cloud: secrets stored, the site's VPN set.
	c, cf := provCloud(t)
	provRun(t, append([]string{"cloud", "site", "create", "--id", "berlin-1", "--country", "DE", "--wifi", "Meshroot"}, cf...)...)
	push := append([]string{"profile", "import-aws", filepath.Join(td, "bgp-vgw.xml"), "--prefix", "192.168.10.0/24", "--push", "--site", "berlin-1"}, cf...)
	if out, stderr, err := provRun(t, push...); err != nil || !strings.Contains(out, "profile v2 issued") {
		t.Fatalf("import-aws --push = %q, %v\n%s", out, err, stderr)
	}
	env, _ := c.Op.SiteProfile(context.Background(), "berlin-1")
	v, err := profile.Verify(env, profile.NewKeySet(c.ProfileKey()), profile.Expect{})
	if err != nil || v.VPN == nil || v.VPN.Tunnels[0].PSKRef != "vpn/vpn-0e3c1f2a9b8d7c6e5/3.15.245.169" {
		t.Errorf("site profile after --push: %v", err)
	}
	// Errors name what is wrong.
	if _, _, err := provRun(t, "profile", "import-aws", filepath.Join(td, "bgp-vgw.xml")); err == nil || !strings.Contains(err.Error(), "no site prefixes") {
		t.Errorf("import-aws without --prefix = %v", err)
	}
}

func TestProfileValidateCommand(t *testing.T) {
	p := profile.NewSiteProfile("s1", "S")
	p.Version, p.IssuedAt, p.ExpiresAt, p.WiFi.SSID, p.Country, p.Mesh.KeyRef = 1, time.Now(), time.Now().Add(time.Hour), "x", "DE", "k"
	b, _ := json.Marshal(p)
	f := filepath.Join(t.TempDir(), "p.json")
	os.WriteFile(f, b, 0o644)
	if out, _, err := provRun(t, "profile", "validate", f); err != nil || !strings.Contains(out, "valid") {
		t.Errorf("profile validate(good) = %q, %v", out, err)
	}
	p.Country = "Germany"
	b, _ = json.Marshal(p)
	os.WriteFile(f, b, 0o644)
	if _, stderr, err := provRun(t, "profile", "validate", f); err == nil || !strings.Contains(stderr, "country:") {
		t.Errorf("profile validate(bad) = %v, %q; want the country field named", err, stderr)
	}
}

func TestAppFactoryAndPair(t *testing.T) {
	c, cf := provCloud(t)
	provRun(t, append([]string{"cloud", "site", "create", "--id", "berlin-1"}, cf...)...)
	dir := t.TempDir()
	fpath := filepath.Join(dir, "factory.json")
	out, _, err := provRun(t, "app", "factory", "--serial", "MR-0042", "--code", "2020-2021", "--iterations", "1000", "-o", fpath)
	if err != nil {
		t.Fatal(err)
	}
	qr := regexp.MustCompile(`qr: (MR1:\S+)`).FindStringSubmatch(out)
	if qr == nil || !strings.Contains(out, "2020-2021") {
		t.Fatalf("app factory output = %q; want the code and a QR payload", out)
	}
	if b, _ := os.ReadFile(fpath); bytes.Contains(b, []byte("20202021")) {
		t.Errorf("factory file holds the setup code")
	}
	fac, err := identity.LoadFactory(fpath)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{DataDir: t.TempDir(), Factory: fac, OnboardListener: ln, PollWait: 2 * time.Second,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, func() {}) }()
	defer func() { cancel(); <-done }()

	passFile := filepath.Join(dir, "pass")
	os.WriteFile(passFile, []byte("correct horse battery\n"), 0o600)
	pair := append([]string{"app", "pair", "--qr", qr[1], "--device", "http://" + ln.Addr().String(), "--site", "Berlin office",
		"--wifi", "Meshroot", "--country", "DE", "--wifi-pass-file", passFile, "--site-id", "berlin-1", "--poll", "50ms"}, cf...)
	out, stderr, err := provRun(t, pair...)
	if err != nil {
		t.Fatalf("app pair: %v\n%s", err, stderr)
	}
	if !strings.Contains(out, "device MR-0042 holds profile v1 of site berlin-1") {
		t.Errorf("app pair output = %q", out)
	}
	if strings.Contains(stderr+out, "correct horse battery") {
		t.Errorf("app pair printed the passphrase")
	}
	if v := a.Profile(); v == nil || v.WiFi.SSID != "Meshroot" {
		t.Errorf("device profile after app pair = %v", v)
	}
	devs, _ := c.Op.Devices(context.Background(), "berlin-1")
	if len(devs) != 1 || devs[0].Serial != "MR-0042" {
		t.Errorf("cloud devices = %+v; want MR-0042", devs)
	}
	// A wrong code is reported as such.
	bad := regexp.MustCompile(`^MR1:`).ReplaceAllString(qr[1], "MR1:")
	lbl, _ := identity.ParsePayload(bad)
	lbl.SetupCode = 11223344
	wrong, _ := lbl.Encode()
	pair[3] = wrong
	if _, _, err := provRun(t, pair...); err == nil {
		t.Errorf("app pair with a wrong code = nil error")
	}
}
