// Package agent is the device side of zero-touch provisioning as one service the firmware
// starts: Run(ctx, up) onboards the device when it has no site (serving the pairing protocol on
// the LAN), enrolls it with the fleet cloud, and keeps the signed site profile fresh, exposing
// the verified profile in force and its changes. It does not import firmware; the firmware wraps
// it (firmware.Func("provision", deps, agent.Run)) and turns each profile into a vpn.Config.
//
// State on the data partition (Config.DataDir):
//
//	identity/device.key              the device key (identity)
//	provision/setup.sealed           the app's setup (claim token until enrolled, Wi-Fi passphrase)
//	provision/credentials.json       device certificate, fleet CA, profile keys (public)
//	provision/profile.dsse.json      the last good profile, exactly as verified
//	provision/secrets.sealed         the resolved secret references (PSKs, mesh key)
//	provision/onboard/attempts.json  the wrong-code counter and lockout
//
// Sealed files are AES-256-GCM under a key derived from the device key (internal/persist);
// nothing secret is in a file in clear, and the agent never logs a secret.
package agent

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"meshroot/provision/api"
	"meshroot/provision/enroll"
	"meshroot/provision/identity"
	"meshroot/provision/internal/persist"
	"meshroot/provision/onboard"
	"meshroot/provision/profile"
)

// Config configures the agent.
type Config struct {
	// DataDir is the data partition's mount point (or a directory on it).
	DataDir string
	// Factory is the device's factory data.
	Factory *identity.Factory
	// OnboardAddr is where the pairing protocol listens while the device has no site: the LAN
	// bridge's address, e.g. "192.168.1.1:8080" (default ":8080", every interface — pass the LAN
	// address so the pairing API is not offered on the WAN). OnboardListener, when set, is used
	// instead (by one Run only: Run closes it; tests and labs pass one made in a namespace).
	OnboardAddr     string
	OnboardListener net.Listener
	// Dial, when set, makes the agent's connections to the cloud.
	Dial enroll.DialFunc
	// Backoff is the cloud retry policy (zero: enroll.DefaultBackoff).
	Backoff enroll.Backoff
	// PollWait is the long-poll wait for profile changes (default 50 s); ErrorDelay the pause
	// after a failed round (default 5 s, doubling to 5 min).
	PollWait   time.Duration
	ErrorDelay time.Duration
	// OnboardGrace keeps the pairing server up after the profile arrived, for the app's last
	// status request (default 2 min).
	OnboardGrace time.Duration
	// Lockout is the wrong-code policy (zero: onboard.DefaultLockout).
	Lockout onboard.Lockout
	// RenewBefore renews the device certificate when it expires within this (default 30 days).
	RenewBefore time.Duration
	// Now is the clock for renewal decisions (default time.Now).
	Now func() time.Time
	// Logs, when set, ships the device's logs to the cloud once enrolled.
	Logs   *LogShipper
	Logger *slog.Logger
}

// Agent runs provisioning.
type Agent struct {
	cfg  Config
	log  *slog.Logger
	dir  string
	key  *ecdsa.PrivateKey
	box  *persist.Box
	dev  *onboard.Device
	subs subscribers

	mu       sync.Mutex
	setup    *onboard.Setup
	creds    *enroll.Credentials
	store    *profile.Store
	cur      *profile.Verified // in force: set together with secrets
	secrets  map[string]string
	progress onboard.Progress
	client   *enroll.Client
	setupCh  chan struct{} // closed (and replaced) when a setup arrives
}

const (
	setupFile   = "setup.sealed"
	credsFile   = "credentials.json"
	secretsFile = "secrets.sealed"
	setupLabel  = "provision/setup v1"
	secretLabel = "provision/secrets v1"
)

// New loads (or creates) the device key and the agent's state.
func New(cfg Config) (*Agent, error) {
	if cfg.DataDir == "" || cfg.Factory == nil {
		return nil, errors.New("agent: DataDir and Factory are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PollWait == 0 {
		cfg.PollWait = 50 * time.Second
	}
	if cfg.ErrorDelay == 0 {
		cfg.ErrorDelay = 5 * time.Second
	}
	if cfg.OnboardGrace == 0 {
		cfg.OnboardGrace = 2 * time.Minute
	}
	if cfg.OnboardAddr == "" {
		cfg.OnboardAddr = ":8080"
	}
	if cfg.RenewBefore == 0 {
		cfg.RenewBefore = 30 * 24 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &Agent{cfg: cfg, log: cfg.Logger.With("component", "provision"), dir: filepath.Join(cfg.DataDir, "provision"), setupCh: make(chan struct{})}
	if err := os.MkdirAll(a.dir, 0o700); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	key, created, err := identity.LoadOrCreateKey(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if created {
		a.log.Info("device key generated", "fingerprint", identity.Fingerprint(&key.PublicKey))
	}
	a.key = key
	if a.box, err = persist.NewBox(key); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if err := a.load(); err != nil {
		return nil, err
	}
	a.dev, err = onboard.NewDevice(onboard.DeviceConfig{
		Factory: cfg.Factory, StateDir: filepath.Join(a.dir, "onboard"), Lockout: cfg.Lockout,
		OnSetup: a.onSetup, Progress: a.channelProgress, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return a, nil
}

// load reads the state files; a damaged one is reported and ignored where that is safe.
func (a *Agent) load() error {
	if b, err := a.box.ReadSealed(filepath.Join(a.dir, setupFile), setupLabel); err == nil {
		var s onboard.Setup
		if err := json.Unmarshal(b, &s); err != nil {
			a.log.Error("stored setup unreadable; the device will need pairing again", "err", err.Error())
		} else {
			a.setup = &s
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		a.log.Error("stored setup unreadable; the device will need pairing again", "err", err.Error())
	}
	if b, err := os.ReadFile(filepath.Join(a.dir, credsFile)); err == nil {
		var c enroll.Credentials
		if err := json.Unmarshal(b, &c); err != nil {
			return fmt.Errorf("agent: %s: %w", credsFile, err)
		}
		a.creds = &c
	}
	if b, err := a.box.ReadSealed(filepath.Join(a.dir, secretsFile), secretLabel); err == nil {
		json.Unmarshal(b, &a.secrets)
	}
	keys := profile.KeySet{}
	site := ""
	if a.creds != nil {
		keys = profileKeys(a.creds.ProfileKeys)
		site = a.creds.SiteID
	}
	st, err := profile.OpenStore(a.dir, keys, profile.Expect{SiteID: site, Device: a.cfg.Factory.Serial})
	if err != nil {
		a.log.Error("last good profile not loaded", "err", err.Error())
	}
	a.store = st
	v, stale := st.Current()
	a.cur = v
	switch {
	case v != nil:
		a.progress = onboard.Progress{Phase: onboard.PhaseProfile, SiteID: v.Site.ID, ProfileVersion: v.Version}
		a.log.Info("last good profile in force", "version", v.Version, "stale", stale)
	case a.creds != nil:
		a.progress = onboard.Progress{Phase: onboard.PhaseEnrolled, SiteID: a.creds.SiteID}
	case a.setup != nil:
		a.progress = onboard.Progress{Phase: onboard.PhaseConfigured}
	}
	return nil
}

func profileKeys(ks []api.ProfileKey) profile.KeySet {
	set := profile.KeySet{}
	for _, k := range ks {
		set[profile.KeyID(k.PublicKey)] = k.PublicKey
	}
	return set
}

// Progress is how far provisioning got (the device's status): before any setup it is
// "unpaired" (waiting for the app), "pairing" while a handshake is under way and "paired" once
// the app proved the setup code; then "configured", "enrolling", "enrolled", "profile" (or
// "failed"), as onboard.Progress describes.
func (a *Agent) Progress() onboard.Progress {
	a.mu.Lock()
	p := a.progress
	a.mu.Unlock()
	if p.Phase != "" {
		return p
	}
	switch s := a.dev.Session(); s {
	case onboard.PhasePairing, onboard.PhasePaired:
		return onboard.Progress{Phase: s}
	}
	return onboard.Progress{Phase: onboard.PhaseUnpaired}
}

// channelProgress is Progress as the app sees it over the paired channel (the onboard device
// calls it under its lock, so it must not ask the device for its session): before the setup,
// the asking app is paired.
func (a *Agent) channelProgress() onboard.Progress {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.progress.Phase == "" {
		return onboard.Progress{Phase: onboard.PhasePaired}
	}
	return a.progress
}

func (a *Agent) setProgress(p onboard.Progress) {
	a.mu.Lock()
	a.progress = p
	a.mu.Unlock()
}

// Profile returns the verified profile in force, or nil.
func (a *Agent) Profile() *profile.Verified {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cur
}

// Secret returns a resolved secret reference of the profile in force (a PSK for the VPN, the
// mesh key). Never log the value.
func (a *Agent) Secret(ref string) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	v, ok := a.secrets[ref]
	return v, ok
}

// WiFiPassphrase is the passphrase the app gave at pairing (used when the profile's
// wifi.passphrase_ref is empty). Never log it.
func (a *Agent) WiFiPassphrase() (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.setup == nil {
		return "", false
	}
	return a.setup.WiFiPassphrase, true
}

// Client is the mTLS cloud client once enrolled (nil before), for other domains' device calls.
func (a *Agent) Client() *enroll.Client {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.client
}

// Subscribe calls fn with every new verified profile (and at once with the one in force, if
// any), from the agent's goroutine; fn must not block for long. The returned func unsubscribes.
func (a *Agent) Subscribe(fn func(*profile.Verified)) (cancel func()) {
	id := a.subs.add(fn)
	if v := a.Profile(); v != nil {
		fn(v)
	}
	return func() { a.subs.remove(id) }
}

type subscribers struct {
	mu   sync.Mutex
	next int
	fns  map[int]func(*profile.Verified)
}

func (s *subscribers) add(fn func(*profile.Verified)) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fns == nil {
		s.fns = map[int]func(*profile.Verified){}
	}
	s.next++
	s.fns[s.next] = fn
	return s.next
}

func (s *subscribers) remove(id int) {
	s.mu.Lock()
	delete(s.fns, id)
	s.mu.Unlock()
}

func (s *subscribers) notify(v *profile.Verified) {
	s.mu.Lock()
	fns := make([]func(*profile.Verified), 0, len(s.fns))
	for _, fn := range s.fns {
		fns = append(fns, fn)
	}
	s.mu.Unlock()
	for _, fn := range fns {
		fn(v)
	}
}

// onSetup is the pairing protocol's callback: keep the setup (sealed) and wake Run.
func (a *Agent) onSetup(ctx context.Context, s onboard.Setup) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.creds != nil {
		if a.setup != nil && a.setup.WiFiSSID == s.WiFiSSID && a.setup.Country == s.Country {
			return nil // a retry of a setup that already took
		}
		return errors.New("the device is already enrolled; factory-reset it to move it")
	}
	if a.setup != nil && *a.setup == s {
		return nil
	}
	b, _ := json.Marshal(s)
	if err := a.box.WriteSealed(filepath.Join(a.dir, setupFile), setupLabel, b); err != nil {
		return fmt.Errorf("cannot store the setup: %w", err)
	}
	a.setup = &s
	a.progress = onboard.Progress{Phase: onboard.PhaseConfigured}
	close(a.setupCh)
	a.setupCh = make(chan struct{})
	return nil
}

// Run runs provisioning until ctx ends. It calls up once it is doing its job: the pairing
// server is listening (no site yet), or the state is loaded and the cloud loop started.
func (a *Agent) Run(ctx context.Context, up func()) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var srvDone chan struct{}
	var srv *http.Server
	a.mu.Lock()
	needPairing := a.creds == nil && a.setup == nil
	a.mu.Unlock()
	if needPairing || a.creds == nil {
		// Also serve while enrolling: the app follows progress over the paired channel.
		var err error
		srv, srvDone, err = a.serveOnboarding(ctx)
		if err != nil {
			return err
		}
		defer func() {
			srv.Close()
			<-srvDone
		}()
	}
	if a.cfg.Logs != nil {
		go a.cfg.Logs.run(ctx, a)
	}
	up()
	for {
		if err := a.waitSetup(ctx); err != nil {
			return nil
		}
		if err := a.ensureEnrolled(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			continue // claim refused: back to pairing
		}
		break
	}
	if srv != nil {
		go func() {
			// Keep answering the app's status for a while after the profile arrived.
			a.waitPhase(ctx, onboard.PhaseProfile)
			select {
			case <-time.After(a.cfg.OnboardGrace):
			case <-ctx.Done():
			}
			srv.Close()
		}()
	}
	a.profileLoop(ctx)
	return nil
}

func (a *Agent) serveOnboarding(ctx context.Context) (*http.Server, chan struct{}, error) {
	ln := a.cfg.OnboardListener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", a.cfg.OnboardAddr); err != nil {
			return nil, nil, fmt.Errorf("agent: onboarding listener: %w", err)
		}
	}
	srv := &http.Server{Handler: a.dev.HTTPHandler(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelDebug)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	a.log.Info("waiting for the app to pair", "addr", ln.Addr().String(), "serial", a.cfg.Factory.Serial)
	return srv, done, nil
}

func (a *Agent) waitSetup(ctx context.Context) error {
	for {
		a.mu.Lock()
		ok, ch := a.setup != nil || a.creds != nil, a.setupCh
		a.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (a *Agent) waitPhase(ctx context.Context, phase string) {
	for ctx.Err() == nil && a.Progress().Phase != phase {
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ensureEnrolled enrolls with the setup's claim unless credentials exist. A refused claim
// forgets the setup, so the app can pair again with a fresh claim.
func (a *Agent) ensureEnrolled(ctx context.Context) error {
	a.mu.Lock()
	creds, setup := a.creds, a.setup
	a.mu.Unlock()
	if creds == nil {
		a.setProgress(onboard.Progress{Phase: onboard.PhaseEnrolling})
		a.log.Info("enrolling with the fleet cloud", "cloud", setup.CloudURL)
		c, err := enroll.Enroll(ctx, enroll.Request{
			CloudURL: setup.CloudURL, CAPin: setup.CAPin, ClaimToken: setup.ClaimToken,
			Serial: a.cfg.Factory.Serial, Key: a.key, Backoff: a.cfg.Backoff, Logger: a.log, Dial: a.cfg.Dial,
			Settings: &api.SiteSettings{Name: setup.SiteName, WiFiSSID: setup.WiFiSSID, Country: setup.Country},
		})
		if err != nil {
			if ctx.Err() == nil {
				a.log.Error("enrollment refused; pair again with a new claim", "err", err.Error())
				a.mu.Lock()
				a.setup = nil
				a.progress = onboard.Progress{Phase: onboard.PhaseFailed, Detail: "enrollment: " + err.Error()}
				a.mu.Unlock()
				os.Remove(filepath.Join(a.dir, setupFile))
			}
			return err
		}
		b, _ := json.MarshalIndent(c, "", "  ")
		if err := persist.WriteFile(filepath.Join(a.dir, credsFile), b, 0o600); err != nil {
			return fmt.Errorf("agent: keep credentials: %w", err)
		}
		// The claim is spent: keep the site settings, drop the token.
		s := *setup
		s.ClaimToken = ""
		sb, _ := json.Marshal(s)
		if err := a.box.WriteSealed(filepath.Join(a.dir, setupFile), setupLabel, sb); err != nil {
			a.log.Error("cannot rewrite the setup without the claim", "err", err.Error())
		}
		a.mu.Lock()
		a.creds, a.setup = c, &s
		a.progress = onboard.Progress{Phase: onboard.PhaseEnrolled, SiteID: c.SiteID}
		a.mu.Unlock()
		a.store.SetKeys(profileKeys(c.ProfileKeys))
		a.log.Info("enrolled", "site", c.SiteID)
		creds = c
	}
	cl, err := enroll.NewClient(creds, a.key, enroll.Options{Backoff: a.cfg.Backoff, Logger: a.log, Dial: a.clientDial()})
	if err != nil {
		return fmt.Errorf("agent: credentials: %w", err)
	}
	a.mu.Lock()
	a.client = cl
	a.mu.Unlock()
	return nil
}

// profileLoop keeps the profile fresh: long-poll, verify, resolve secrets, keep, notify. The
// last good profile stays in force through every failure.
func (a *Agent) profileLoop(ctx context.Context) {
	cl := a.Client()
	defer func() { cl.Close() }()
	a.mu.Lock()
	site := a.creds.SiteID
	a.mu.Unlock()
	etag := ""
	delay := a.cfg.ErrorDelay
	fail := func(msg string, err error) {
		a.log.Warn(msg+"; keeping the last good profile", "err", err.Error(), "retry_in", delay.String())
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Minute)
	}
	for ctx.Err() == nil {
		cl = a.renewIfDue(ctx, cl)
		wait := a.cfg.PollWait
		if etag == "" {
			wait = 0
		}
		env, newTag, changed, err := cl.Profile(ctx, etag, wait)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			fail("profile fetch failed", err)
			continue
		}
		if !changed {
			delay = a.cfg.ErrorDelay
			continue
		}
		cur := a.Profile()
		v, err := profile.Verify(env, a.storeKeys(), profile.Expect{SiteID: site, Device: a.cfg.Factory.Serial, Current: cur})
		if errors.Is(err, profile.ErrUnchanged) {
			etag = newTag
			continue
		}
		if err != nil {
			a.log.Error("new profile refused", "err", err.Error())
			etag = newTag // do not refetch the same refused document in a loop
			fail("profile refused", err)
			continue
		}
		secrets, err := a.resolve(ctx, cl, v)
		if err != nil {
			fail("profile secrets unavailable", err)
			continue
		}
		if _, err := a.store.Offer(env, profile.Expect{SiteID: site, Device: a.cfg.Factory.Serial}); err != nil && !errors.Is(err, profile.ErrUnchanged) {
			fail("profile not kept", err)
			continue
		}
		sb, _ := json.Marshal(secrets)
		if err := a.box.WriteSealed(filepath.Join(a.dir, secretsFile), secretLabel, sb); err != nil {
			a.log.Error("cannot keep the resolved secrets", "err", err.Error())
		}
		a.mu.Lock()
		a.cur, a.secrets = v, secrets
		a.progress = onboard.Progress{Phase: onboard.PhaseProfile, SiteID: site, ProfileVersion: v.Version}
		a.mu.Unlock()
		etag, delay = newTag, a.cfg.ErrorDelay
		a.log.Info("profile in force", "version", v.Version, "site", site, "expires_at", v.ExpiresAt)
		a.subs.notify(v)
	}
}

// renewIfDue renews the device certificate when it is close to expiry and returns the client
// to use from now on. A failed renewal keeps the current certificate (and is retried next round).
func (a *Agent) renewIfDue(ctx context.Context, cl *enroll.Client) *enroll.Client {
	if cl.NotAfter.Sub(a.cfg.Now()) > a.cfg.RenewBefore {
		return cl
	}
	a.mu.Lock()
	creds := a.creds
	a.mu.Unlock()
	n, err := cl.Renew(ctx, creds, a.key)
	if err != nil {
		a.log.Warn("certificate renewal failed; keeping the current one", "err", err.Error(), "not_after", cl.NotAfter)
		return cl
	}
	b, _ := json.MarshalIndent(n, "", "  ")
	if err := persist.WriteFile(filepath.Join(a.dir, credsFile), b, 0o600); err != nil {
		a.log.Error("cannot keep the renewed certificate", "err", err.Error())
		return cl
	}
	ncl, err := enroll.NewClient(n, a.key, enroll.Options{Backoff: a.cfg.Backoff, Logger: a.log, Dial: a.clientDial()})
	if err != nil {
		a.log.Error("renewed certificate unusable", "err", err.Error())
		return cl
	}
	a.mu.Lock()
	a.creds, a.client = n, ncl
	a.mu.Unlock()
	cl.Close()
	a.log.Info("device certificate renewed", "not_after", ncl.NotAfter)
	return ncl
}

func (a *Agent) storeKeys() profile.KeySet {
	a.mu.Lock()
	defer a.mu.Unlock()
	return profileKeys(a.creds.ProfileKeys)
}

// resolve fetches every secret reference of the profile.
func (a *Agent) resolve(ctx context.Context, cl *enroll.Client, v *profile.Verified) (map[string]string, error) {
	// Always fetch afresh: a rotated PSK keeps its reference.
	out := map[string]string{}
	for _, ref := range v.SecretRefs() {
		val, err := cl.Secret(ctx, ref)
		if err != nil {
			return nil, err
		}
		out[ref] = val
	}
	return out, nil
}

// Refs returns the secret references the agent holds (names only), sorted.
func (a *Agent) Refs() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]string, 0, len(a.secrets))
	for k := range a.secrets {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
