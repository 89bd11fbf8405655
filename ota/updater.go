package ota

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"net/http"
	"strings"
	"sync"
	"time"

	"meshroot/ota/bootenv"
	"meshroot/ota/fetch"
	"meshroot/ota/repo"
	"meshroot/ota/rollout"
	"meshroot/ota/slot"
	"meshroot/ota/slotimage"
)

// VarTrialSlot is the slot holding the release on trial.
const VarTrialSlot = "ota_trial_slot"

// Config wires an Updater to the device. Slots, Env and Repo are required.
type Config struct {
	// Board, Channel and DeviceID identify the device (DeviceID seeds its rollout bucket).
	Board, Channel, DeviceID string
	// Repo is the TUF repository client.
	Repo *repo.Client
	// Slots are the two slots by letter ("a", "b").
	Slots map[string]slot.Slot
	// Env is the bootloader environment.
	Env *bootenv.Store
	// RunningSlot is the slot the bootloader booted (meshroot.slot= on the kernel command
	// line); "" means the environment's boot_slot.
	RunningSlot string
	// RunningVersion is the version of the running image; "" means ota_version_<slot>.
	RunningVersion string
	// HTTPClient downloads images (http.DefaultClient when nil).
	HTTPClient *http.Client
	// Reporter sends install reports (none when nil).
	Reporter rollout.Reporter
	// Health is the caller's health check for a trial boot: nil when the device is healthy
	// (services up, cloud reachable or VPN up). It is polled every HealthInterval until it
	// passes or HealthDeadline passes.
	Health                         func(ctx context.Context) error
	HealthDeadline, HealthInterval time.Duration
	// Reboot restarts the device (Run returns after calling it).
	Reboot func() error
	// CheckInterval is the time between repository checks in Run (1 h when 0), with ±10 %
	// jitter.
	CheckInterval time.Duration
	// Now is the clock (time.Now when nil); Location the device's time zone for maintenance
	// windows (time.Local when nil).
	Now      func() time.Time
	Location *time.Location
	// BootLimit is written as bootlimit on every switch (DefaultBootLimit when 0).
	BootLimit int
	// ChunkSize and RateLimit tune the download (see fetch.Options).
	ChunkSize, RateLimit int64
	// Progress receives download progress.
	Progress func(done, total int64)
	// Log receives the updater's log lines (discarded when nil).
	Log *slog.Logger
}

// Updater installs releases into the inactive slot, switches the bootloader to them, and
// commits or lets the bootloader fall back. Its methods are safe for concurrent use (they
// serialise).
type Updater struct {
	cfg Config
	mu  sync.Mutex
	log *slog.Logger
}

// Refusals and states, tested with errors.Is.
var (
	ErrNoUpdate     = errors.New("no newer release")
	ErrWrongBoard   = errors.New("release is for another board")
	ErrWrongChan    = errors.New("release is for another channel")
	ErrNotNewer     = errors.New("release is not newer than the running version")
	ErrBelowFloor   = errors.New("release is below the anti-rollback floor")
	ErrOnTrial      = errors.New("an update is on trial; it must commit or roll back first")
	ErrTooBig       = errors.New("release does not fit in the slot")
	ErrBadImage     = errors.New("image does not match its release")
	ErrHealthCheck  = errors.New("health check did not pass before the deadline")
	ErrFailedBefore = errors.New("release rolled back on this device before; not trying it again")
)

// New checks the configuration and returns an Updater.
func New(cfg Config) (*Updater, error) {
	if cfg.Env == nil || cfg.Repo == nil || cfg.Slots["a"] == nil || cfg.Slots["b"] == nil {
		return nil, errors.New("ota: Env, Repo and both Slots are required")
	}
	if cfg.DeviceID == "" {
		return nil, errors.New("ota: DeviceID is empty")
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Location == nil {
		cfg.Location = time.Local
	}
	if cfg.BootLimit <= 0 {
		cfg.BootLimit = DefaultBootLimit
	}
	if cfg.HealthDeadline <= 0 {
		cfg.HealthDeadline = 5 * time.Minute
	}
	if cfg.HealthInterval <= 0 {
		cfg.HealthInterval = 2 * time.Second
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = time.Hour
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Updater{cfg: cfg, log: log.With("service", "ota")}, nil
}

// running returns the booted slot and the running version.
func (u *Updater) running(env *bootenv.Env) (string, string) {
	s := u.cfg.RunningSlot
	if s == "" {
		s, _ = env.Get(VarBootSlot)
	}
	if s != "b" {
		s = "a"
	}
	v := u.cfg.RunningVersion
	if v == "" {
		v, _ = env.Get(VarVersionPrefix + s)
	}
	return s, v
}

func (u *Updater) loadEnv() (*bootenv.Env, error) {
	env, err := u.cfg.Env.Load()
	if errors.Is(err, bootenv.ErrNoValidEnv) {
		return env, nil // a blank environment: defaults apply, the first Save creates it
	}
	if err != nil {
		return nil, fmt.Errorf("ota: boot environment: %w", err)
	}
	return env, nil
}

// Offer is a release the device may install, with the rollout decision for this device.
type Offer struct {
	Release  repo.Release
	Decision rollout.Decision
}

// Check refreshes the repository and returns the newest release for this board and channel
// that is newer than the running version and that this device may install now. Releases are
// considered newest first: a halted, not-yet-open or refused newest release does not hide an
// older one that is open (1.2 halted, 1.1 rolling out: the device takes 1.1). When none may be
// installed, the error says why for the newest candidate: ErrNoUpdate when there is no newer
// release, a rollout reason (rollout.ErrHalted, ErrNotYourWave, ErrOutOfWindow; the Offer is
// returned with it, NotBefore says when to look again), ErrFailedBefore, or a refusal (wrong
// board, below the floor, too big).
func (u *Updater) Check(ctx context.Context) (*Offer, error) {
	snap, err := u.cfg.Repo.Refresh(ctx)
	if err != nil {
		return nil, fmt.Errorf("ota: %w", err)
	}
	for _, bad := range snap.Invalid {
		u.log.Warn("ota: unusable release in the repository", "err", bad.Error())
	}
	env, err := u.loadEnv()
	if err != nil {
		return nil, err
	}
	_, ver := u.running(env)
	failed, _ := env.Get(VarFailed)
	var firstOffer *Offer
	var firstErr error
	for _, r := range snap.Releases {
		if ver != "" && repo.Compare(r.Meta.Version, ver) <= 0 {
			break // sorted newest first: nothing newer follows
		}
		var err error
		var offer *Offer
		if r.Path == failed {
			err = fmt.Errorf("ota: %s: %w (%w)", r.Path, ErrFailedBefore, ErrNoUpdate)
		} else if err = u.admissible(env, r); err == nil {
			d := r.Meta.Rollout.Decide(rollout.Bucket(u.cfg.DeviceID, r.Path), u.cfg.Now().In(u.cfg.Location))
			offer = &Offer{Release: r, Decision: d}
			if d.Err == nil {
				return offer, nil
			}
			err = fmt.Errorf("ota: %s: %w", r.Path, d.Err)
		}
		if firstErr == nil {
			firstOffer, firstErr = offer, err
		}
	}
	if firstErr == nil {
		return nil, ErrNoUpdate
	}
	return firstOffer, firstErr
}

// admissible applies the device's policy to a release.
func (u *Updater) admissible(env *bootenv.Env, r repo.Release) error {
	_, ver := u.running(env)
	m := r.Meta
	switch {
	case m.Board != u.cfg.Board:
		return fmt.Errorf("ota: %s: %w (%s; this device is %s)", r.Path, ErrWrongBoard, m.Board, u.cfg.Board)
	case m.Channel != u.cfg.Channel:
		return fmt.Errorf("ota: %s: %w (%s; this device follows %s)", r.Path, ErrWrongChan, m.Channel, u.cfg.Channel)
	case ver != "" && repo.Compare(m.Version, ver) <= 0:
		return fmt.Errorf("ota: %s: %w (%s; running %s)", r.Path, ErrNotNewer, m.Version, ver)
	}
	if floor, ok := env.Get(VarFloor); ok && repo.Compare(m.Version, floor) < 0 {
		return fmt.Errorf("ota: %s: %w (%s < %s)", r.Path, ErrBelowFloor, m.Version, floor)
	}
	for _, s := range u.cfg.Slots {
		if r.Length > s.Size()-fetch.TrailerSize {
			return fmt.Errorf("ota: %s: %w (%d bytes; slot %s holds %d)", r.Path, ErrTooBig, r.Length, s.Name(), s.Size()-fetch.TrailerSize)
		}
	}
	return nil
}

// Apply downloads the release into the inactive slot (resuming an interrupted download),
// re-reads and verifies it, and switches the bootloader to it on trial. The running slot and the
// data partition are never written; the environment keeps booting the running slot until the
// single, atomic switch at the end. The caller reboots.
func (u *Updater) Apply(ctx context.Context, r repo.Release) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	env, err := u.loadEnv()
	if err != nil {
		return err
	}
	if err := u.admissible(env, r); err != nil {
		u.report(ctx, r, rollout.Refused, err.Error(), env)
		return err
	}
	if up, _ := env.Get(VarUpgradeAvailable); up == "1" {
		return ErrOnTrial
	}
	run, ver := u.running(env)
	target := slot.Other(run)
	// The environment must boot the running slot while the other one is written.
	if bs, _ := env.Get(VarBootSlot); bs != run {
		if err := u.cfg.Env.Update(func(e *bootenv.Env) error {
			e.Set(VarBootSlot, run)
			e.Set(VarUpgradeAvailable, "0")
			return nil
		}); err != nil {
			return fmt.Errorf("ota: pin boot slot %s: %w", run, err)
		}
	}
	s := u.cfg.Slots[target]
	cp := &fetch.TrailerStore{Dev: s, Offset: s.Size() - fetch.TrailerSize}
	log := u.log.With("release", r.Path, "slot", target)
	log.Info("ota: downloading", "bytes", r.Length)
	st, err := fetch.Download(ctx, fetch.Target{URL: u.cfg.Repo.TargetURL(r), Length: r.Length, SHA256: r.SHA256}, s, cp,
		fetch.Options{Client: u.cfg.HTTPClient, ChunkSize: u.cfg.ChunkSize, RateLimit: u.cfg.RateLimit, Progress: u.cfg.Progress})
	if err != nil {
		if errors.Is(err, fetch.ErrHashMismatch) || errors.Is(err, fetch.ErrTooLong) {
			err = fmt.Errorf("ota: %s: %w: %w", r.Path, ErrBadImage, err)
			u.report(ctx, r, rollout.Failed, err.Error(), env)
			return err
		}
		return fmt.Errorf("ota: %s: %w", r.Path, err)
	}
	log.Info("ota: downloaded", "resumed_at", st.ResumedAt, "fetched", st.Fetched, "requests", st.Requests)
	// Re-read what the slot holds, not what we meant to write (from the flash, not the page
	// cache, when the slot can drop it).
	if dc, ok := s.(interface{ DropCache() error }); ok {
		if err := dc.DropCache(); err != nil {
			log.Warn("ota: cannot drop the slot's page cache before verifying", "err", err.Error())
		}
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(s, 0, r.Length)); err != nil {
		return fmt.Errorf("ota: re-read slot %s: %w", target, err)
	}
	if string(h.Sum(nil)) != string(r.SHA256) {
		cp.Clear()
		return fmt.Errorf("ota: %s: %w: slot %s reads back a different SHA-256 (flash error?)", r.Path, ErrBadImage, target)
	}
	hdr, err := slotimage.Verify(s)
	if err != nil {
		err = fmt.Errorf("ota: %s: %w: %w", r.Path, ErrBadImage, err)
		u.report(ctx, r, rollout.Failed, err.Error(), env)
		return err
	}
	if hdr.Board != r.Meta.Board || repo.Compare(hdr.Version, r.Meta.Version) != 0 {
		err := fmt.Errorf("ota: %s: %w: the image says board %s version %s, the signed metadata %s %s", r.Path, ErrBadImage, hdr.Board, hdr.Version, r.Meta.Board, r.Meta.Version)
		u.report(ctx, r, rollout.Failed, err.Error(), env)
		return err
	}
	if err := cp.Clear(); err != nil {
		return fmt.Errorf("ota: clear checkpoint: %w", err)
	}
	// The switch: one redundant-environment write.
	err = u.cfg.Env.Update(func(e *bootenv.Env) error {
		e.Set(VarBootSlot, target)
		e.Set(VarUpgradeAvailable, "1")
		e.Set(VarBootCount, "0")
		e.Set(VarBootLimit, FormatCount(u.cfg.BootLimit))
		e.Set(VarAltBootCmd, DefaultAltBootCmd)
		e.Set(VarTrial, r.Path)
		e.Set(VarTrialSlot, target)
		e.Set(VarTrialFrom, ver)
		e.Set(VarTrialFloor, r.Meta.MinVersion)
		e.Set(VarVersionPrefix+target, r.Meta.Version)
		if ver != "" {
			e.Set(VarVersionPrefix+run, ver)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ota: switch to slot %s: %w", target, err)
	}
	log.Info("ota: switched; reboot to try it", "version", r.Meta.Version, "bootlimit", u.cfg.BootLimit)
	u.report(ctx, r, rollout.Installed, "", env)
	return nil
}

// State is what the updater found at boot.
type State int

// The boot states.
const (
	// Normal: no update in flight.
	Normal State = iota
	// Trial: the running slot is a new release on trial; health decides.
	Trial
	// RolledBack: a trial failed and the bootloader went back to this slot.
	RolledBack
)

func (s State) String() string {
	return [...]string{"normal", "trial", "rolled back"}[s]
}

// Startup inspects the environment after a boot: a trial to judge, or a rollback to record.
func (u *Updater) Startup(ctx context.Context) (State, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	env, err := u.loadEnv()
	if err != nil {
		return Normal, err
	}
	run, _ := u.running(env)
	trial, _ := env.Get(VarTrial)
	trialSlot, _ := env.Get(VarTrialSlot)
	up, _ := env.Get(VarUpgradeAvailable)
	bootSlot, _ := env.Get(VarBootSlot)
	switch {
	case trial != "" && trialSlot == run && up == "1" && bootSlot == run:
		bc, _ := env.Get(VarBootCount)
		u.log.Info("ota: trial boot", "release", trial, "slot", run, "bootcount", bc)
		return Trial, nil
	case trial != "" && trialSlot != run:
		from, _ := env.Get(VarTrialFrom)
		ver, _ := env.Get(VarVersionPrefix + trialSlot)
		rep := strings.Join([]string{string(rollout.RolledBack), trial, ver, from}, " ")
		err := u.cfg.Env.Update(func(e *bootenv.Env) error {
			for _, v := range []string{VarTrial, VarTrialSlot, VarTrialFrom, VarTrialFloor} {
				e.Delete(v)
			}
			e.Set(VarBootSlot, run)
			e.Set(VarUpgradeAvailable, "0")
			e.Set(VarBootCount, "0")
			e.Set(VarReport, rep)
			e.Set(VarFailed, trial)
			return nil
		})
		if err != nil {
			return RolledBack, fmt.Errorf("ota: record rollback: %w", err)
		}
		u.log.Warn("ota: the bootloader rolled back", "release", trial, "slot", run)
		return RolledBack, nil
	}
	return Normal, nil
}

// Commit accepts the running trial: upgrade_available=0, bootcount=0, the anti-rollback floor
// raised to the release's min_version.
func (u *Updater) Commit(ctx context.Context) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	env, err := u.loadEnv()
	if err != nil {
		return err
	}
	run, _ := u.running(env)
	trial, _ := env.Get(VarTrial)
	if ts, _ := env.Get(VarTrialSlot); trial == "" || ts != run {
		return errors.New("ota: commit: no trial running")
	}
	from, _ := env.Get(VarTrialFrom)
	ver, _ := env.Get(VarVersionPrefix + run)
	err = u.cfg.Env.Update(func(e *bootenv.Env) error {
		e.Set(VarUpgradeAvailable, "0")
		e.Set(VarBootCount, "0")
		e.Set(VarBootSlot, run)
		if f, _ := e.Get(VarTrialFloor); f != "" {
			if old, _ := e.Get(VarFloor); repo.Compare(f, old) > 0 {
				e.Set(VarFloor, f)
			}
		}
		for _, v := range []string{VarTrial, VarTrialSlot, VarTrialFrom, VarTrialFloor} {
			e.Delete(v)
		}
		e.Set(VarReport, strings.Join([]string{string(rollout.Committed), trial, ver, from}, " "))
		return nil
	})
	if err != nil {
		return fmt.Errorf("ota: commit: %w", err)
	}
	u.log.Info("ota: committed", "release", trial, "slot", run, "version", ver)
	return nil
}

// DeliverReport sends a pending final result (committed, rolled back) recorded in the
// environment and clears it once the cloud has it.
func (u *Updater) DeliverReport(ctx context.Context) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.cfg.Reporter == nil {
		return nil
	}
	env, err := u.loadEnv()
	if err != nil {
		return err
	}
	pending, ok := env.Get(VarReport)
	if !ok {
		return nil
	}
	f := strings.Fields(pending)
	if len(f) < 3 {
		return u.cfg.Env.Update(func(e *bootenv.Env) error { return e.Delete(VarReport) })
	}
	rep := rollout.Report{Device: u.cfg.DeviceID, Board: u.cfg.Board, Result: rollout.Result(f[0]), Release: f[1], Version: f[2],
		Bucket: rollout.Bucket(u.cfg.DeviceID, f[1]), Time: u.cfg.Now().UTC()}
	if len(f) > 3 {
		rep.FromVersion = f[3]
	}
	if err := u.cfg.Reporter.Report(ctx, rep); err != nil {
		return fmt.Errorf("ota: deliver report: %w", err)
	}
	return u.cfg.Env.Update(func(e *bootenv.Env) error { return e.Delete(VarReport) })
}

// report sends an immediate (non-final) result; failures are only logged.
func (u *Updater) report(ctx context.Context, r repo.Release, res rollout.Result, reason string, env *bootenv.Env) {
	if u.cfg.Reporter == nil {
		return
	}
	_, ver := u.running(env)
	rep := rollout.Report{Device: u.cfg.DeviceID, Board: u.cfg.Board, Release: r.Path, Version: r.Meta.Version, FromVersion: ver,
		Result: res, Reason: reason, Bucket: rollout.Bucket(u.cfg.DeviceID, r.Path), Time: u.cfg.Now().UTC()}
	if len(rep.Reason) > 1024 {
		rep.Reason = rep.Reason[:1024]
	}
	if err := u.cfg.Reporter.Report(ctx, rep); err != nil {
		u.log.Warn("ota: report not delivered", "result", string(res), "err", err.Error())
	}
}

// JudgeTrial runs the health check of a trial boot until it passes (then commits) or the
// deadline passes (then returns ErrHealthCheck; the caller reboots and the bootloader counts).
func (u *Updater) JudgeTrial(ctx context.Context) error {
	if u.cfg.Health == nil {
		return u.Commit(ctx)
	}
	hctx, cancel := context.WithTimeout(ctx, u.cfg.HealthDeadline)
	defer cancel()
	var last error
	for {
		if last = u.cfg.Health(hctx); last == nil {
			return u.Commit(ctx)
		}
		select {
		case <-hctx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("ota: %w: %w", ErrHealthCheck, last)
		case <-time.After(u.cfg.HealthInterval):
		}
	}
}

// Name is the service name for the supervisor.
func (u *Updater) Name() string { return "ota" }

// Run is the OTA service body (the firmware's Service shape): judge a trial boot (commit, or
// reboot when the health check fails), record a rollback, report, call up, then check the
// repository every CheckInterval and install what the rollout allows, rebooting into it.
func (u *Updater) Run(ctx context.Context, up func()) error {
	st, err := u.Startup(ctx)
	if err != nil {
		return err
	}
	if st == Trial {
		if err := u.JudgeTrial(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			u.log.Error("ota: trial failed; rebooting so the bootloader counts it", "err", err.Error())
			return u.reboot()
		}
	}
	if err := u.DeliverReport(ctx); err != nil {
		u.log.Warn("ota: report pending", "err", err.Error())
	}
	up()
	wait := time.Duration(rand.Int63n(int64(time.Minute)))
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = jitter(u.cfg.CheckInterval)
		if err := u.DeliverReport(ctx); err != nil {
			u.log.Warn("ota: report pending", "err", err.Error())
		}
		offer, err := u.Check(ctx)
		switch {
		case errors.Is(err, ErrNoUpdate):
			continue
		case err != nil:
			u.log.Info("ota: not installing", "err", err.Error())
			if offer != nil && !offer.Decision.NotBefore.IsZero() {
				if d := time.Until(offer.Decision.NotBefore); d > 0 && d < wait {
					wait = d + time.Duration(rand.Int63n(int64(time.Minute)))
				}
			}
			continue
		}
		if err := u.Apply(ctx, offer.Release); err != nil {
			u.log.Error("ota: install failed", "err", err.Error())
			continue
		}
		return u.reboot()
	}
}

func (u *Updater) reboot() error {
	if u.cfg.Reboot == nil {
		return errors.New("ota: reboot needed but no Reboot function configured")
	}
	return u.cfg.Reboot()
}

func jitter(d time.Duration) time.Duration {
	return d - d/10 + time.Duration(rand.Int63n(int64(d/5)+1))
}
