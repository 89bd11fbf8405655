package ota

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"meshroot/board"
	"meshroot/ota/bootenv"
	"meshroot/ota/repo"
	"meshroot/ota/rollout"
	"meshroot/ota/slot"
)

// DeviceConfig is what the firmware knows when it starts the OTA service.
type DeviceConfig struct {
	// Board is the detected board: its Flash says where the slots and the environment are.
	Board board.Board
	// Root is the file-system root ("/" on the device; a directory in tests): /proc/cmdline,
	// /sys and the device nodes are looked up under it.
	Root string
	// RepoURL is the OTA repository; Channel the release channel ("stable" when "").
	RepoURL, Channel string
	// DeviceID seeds the rollout bucket (the device's identity, not a secret).
	DeviceID string
	// TrustedRoot is the TUF root metadata shipped in the image.
	TrustedRoot []byte
	// CacheDir keeps the trusted TUF metadata (on the data partition).
	CacheDir string
	// RunningVersion is the image's version (/etc/meshroot/release).
	RunningVersion string
	// ReportURL is the fleet cloud's base URL for install reports ("" sends none).
	ReportURL string
	// HTTPClient is used for the repository and the reports (http.DefaultClient when nil).
	HTTPClient *http.Client
	// Health is the firmware's health check for a trial boot (see Config.Health);
	// HealthDeadline bounds it (5 min when 0).
	Health         func(ctx context.Context) error
	HealthDeadline time.Duration
	// Reboot restarts the device.
	Reboot func() error
	// CheckInterval is the time between repository checks (1 h when 0).
	CheckInterval time.Duration
	Log           *slog.Logger
}

// OpenDevice opens the board's slots and U-Boot environment and returns the Updater the
// firmware runs as its "ota" service (Updater.Run has the Service shape), and a function that
// closes the devices. The running slot comes from meshroot.slot= on the kernel command line
// (the boot script adds it), else from the environment.
func OpenDevice(cfg DeviceConfig) (*Updater, func() error, error) {
	root := cfg.Root
	if root == "" {
		root = "/"
	}
	if cfg.Channel == "" {
		cfg.Channel = "stable"
	}
	var closers []func() error
	closeAll := func() error {
		var errs []error
		for i := len(closers) - 1; i >= 0; i-- {
			errs = append(errs, closers[i]())
		}
		return errors.Join(errs...)
	}
	envCfg, err := bootenv.FromBoard(cfg.Board.Flash.Env)
	if err != nil {
		return nil, nil, fmt.Errorf("ota: %w", err)
	}
	for i := range envCfg {
		envCfg[i].Device = filepath.Join(root, envCfg[i].Device)
	}
	env, closeEnv, err := bootenv.Open(envCfg)
	if err != nil {
		return nil, nil, fmt.Errorf("ota: %w", err)
	}
	closers = append(closers, closeEnv)
	slots := map[string]slot.Slot{}
	for _, n := range slot.Names {
		s, c, err := slot.FromBoard(cfg.Board.Flash, n, root)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("ota: %w", err)
		}
		closers = append(closers, c.Close)
		slots[n] = s
	}
	rc, err := repo.NewClient(repo.ClientConfig{BaseURL: cfg.RepoURL, Board: cfg.Board.Name, Channel: cfg.Channel,
		CacheDir: cfg.CacheDir, TrustedRoot: cfg.TrustedRoot, HTTPClient: cfg.HTTPClient})
	if err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("ota: %w", err)
	}
	var rep rollout.Reporter
	if cfg.ReportURL != "" {
		rep = &rollout.HTTPReporter{BaseURL: cfg.ReportURL, Client: cfg.HTTPClient}
	}
	u, err := New(Config{
		Board: cfg.Board.Name, Channel: cfg.Channel, DeviceID: cfg.DeviceID, Repo: rc, Slots: slots, Env: env,
		RunningSlot: RunningSlot(root), RunningVersion: cfg.RunningVersion, HTTPClient: cfg.HTTPClient, Reporter: rep,
		Health: cfg.Health, HealthDeadline: cfg.HealthDeadline, Reboot: cfg.Reboot, CheckInterval: cfg.CheckInterval, Log: cfg.Log,
	})
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	return u, closeAll, nil
}

// RunningSlot returns the slot named by meshroot.slot= in <root>/proc/cmdline, or "".
func RunningSlot(root string) string {
	b, err := os.ReadFile(filepath.Join(root, "proc/cmdline"))
	if err != nil {
		return ""
	}
	for _, f := range strings.Fields(string(b)) {
		if v, ok := strings.CutPrefix(f, "meshroot.slot="); ok && (v == "a" || v == "b") {
			return v
		}
	}
	return ""
}
