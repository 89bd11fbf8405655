package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"meshroot/ota/repo"
	"meshroot/ota/rollout"
	"meshroot/ota/slotimage"
)

func init() {
	register(command{name: "ota", summary: "OTA repository: keygen, publish, rollout, halt, rotate-root, refresh, list, serve", run: runOTA})
}

const otaUsage = `usage: meshctl ota <subcommand> [flags]

subcommands:
  keygen       create the signing keys (--keys) and an empty TUF repository (--repo)
  publish      add a release: --image DIR (from meshctl image build) or --slot-image FILE
  rollout      set a release's waves and maintenance windows
  halt         halt a release (--resume lifts the halt)
  rotate-root  replace the root key (and --also targets,snapshot,timestamp keys)
  refresh      re-sign snapshot and timestamp (run more often than the timestamp expiry)
  list         list the releases
  serve        serve the repository and the install-report endpoint with automatic halt

The repository directory (--repo) can be served by any static web host; the keys directory
(--keys) must stay private. Run "meshctl ota <subcommand> -h" for the flags.
`

// errHelpShown ends a subcommand after -h printed its flags.
var errHelpShown = errors.New("help shown")

func runOTA(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	err := otaSub(ctx, args, stdout, stderr)
	if errors.Is(err, errHelpShown) {
		return nil
	}
	return err
}

func otaSub(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, otaUsage)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	sub, rest := args[0], args[1:]
	fs := flag.NewFlagSet("meshctl ota "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	repoDir := fs.String("repo", "out/ota-repo", "repository directory (served)")
	keysDir := fs.String("keys", "out/ota-keys", "signing keys directory (private)")
	parse := func() error {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return errHelpShown
			}
			return errUsage
		}
		if fs.NArg() > 0 {
			fmt.Fprintf(stderr, "meshctl ota %s: unexpected arguments %q\n", sub, fs.Args())
			return errUsage
		}
		return nil
	}
	open := func() (*repo.Publisher, error) { return repo.Open(*repoDir, *keysDir) }

	switch sub {
	case "keygen":
		if err := parse(); err != nil {
			return err
		}
		p, err := repo.Init(*repoDir, *keysDir)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "repository %s initialised; keys in %s\n", p.Dir(), *keysDir)
		fmt.Fprintf(stdout, "trust anchor for images: %s\n", filepath.Join(p.Dir(), repo.MetadataDir, "root.json"))
		return nil

	case "publish":
		imageDir := fs.String("image", "", "image directory built by `meshctl image build` (manifest.json, kernel, initramfs)")
		slotImage := fs.String("slot-image", "", "a ready slot image file (instead of --image)")
		version := fs.String("version", "", "release version (semver; default: the image manifest's)")
		board := fs.String("board", "", "board name (default: the image manifest's)")
		channel := fs.String("channel", "stable", "release channel")
		minVersion := fs.String("min-version", "", "anti-rollback floor set when the release commits")
		notes := fs.String("notes", "", "release notes")
		waves := fs.String("waves", "", `wave schedule, e.g. "now:1%,+1h:10%,+24h:100%" (default: everyone at once)`)
		var windows windowFlags
		fs.Var(&windows, "window", `maintenance window "DAYS@HH:MM+DURATION", e.g. "mon,tue@02:00+3h" or "@01:00+4h" (repeatable)`)
		halted := fs.Bool("halted", false, "publish halted (start the rollout later with `ota halt --resume`)")
		if err := parse(); err != nil {
			return err
		}
		if (*imageDir == "") == (*slotImage == "") {
			fmt.Fprintln(stderr, "meshctl ota publish: give exactly one of --image and --slot-image")
			return errUsage
		}
		path := *slotImage
		if *imageDir != "" {
			m, err := readImageManifest(*imageDir)
			if err != nil {
				return err
			}
			if *board == "" {
				*board = m.Board
			}
			if *version == "" {
				*version = m.Version
			}
			if *board != m.Board {
				return fmt.Errorf("publish: --board %s but the image is built for %s", *board, m.Board)
			}
			if repo.Canon(*version) == "" {
				return fmt.Errorf("publish: version %q is not semver; pass --version", *version)
			}
			tmp, err := os.CreateTemp("", "meshroot-slot-*.img")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			cmdline := ""
			if m.Console != "" {
				cmdline = "console=" + m.Console
			}
			h, err := slotimage.Pack(tmp, *board, strings.TrimPrefix(repo.Canon(*version), "v"), cmdline,
				filepath.Join(*imageDir, m.Kernel.Name), filepath.Join(*imageDir, m.Initramfs.Name))
			if cerr := tmp.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("publish: %w", err)
			}
			fmt.Fprintf(stderr, "slot image: kernel %d bytes, initramfs %d bytes, %d bytes in all\n", h.KernelSize, h.InitrdSize, h.Total())
			path = tmp.Name()
		} else if *board == "" || *version == "" {
			fmt.Fprintln(stderr, "meshctl ota publish: --slot-image needs --board and --version")
			return errUsage
		}
		plan := rollout.Plan{Windows: windows, Halted: *halted}
		if *halted {
			now := time.Now().UTC()
			plan.HaltReason, plan.HaltedAt = "published halted", &now
		}
		if *waves != "" {
			w, err := rollout.ParseWaves(*waves, time.Now())
			if err != nil {
				return err
			}
			plan.Waves = w
		}
		p, err := open()
		if err != nil {
			return err
		}
		r, err := p.Publish(path, repo.PublishSpec{Board: *board, Channel: *channel, Version: strings.TrimPrefix(repo.Canon(*version), "v"),
			MinVersion: *minVersion, Notes: *notes, Rollout: plan})
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, r)
		return nil

	case "rollout":
		release := fs.String("release", "", "release target path (see `meshctl ota list`)")
		waves := fs.String("waves", "", `wave schedule, e.g. "now:1%,+1h:10%,+24h:100%"`)
		var windows windowFlags
		fs.Var(&windows, "window", `maintenance window "DAYS@HH:MM+DURATION" (repeatable)`)
		if err := parse(); err != nil {
			return err
		}
		if *release == "" {
			fmt.Fprintln(stderr, "meshctl ota rollout: --release is required")
			return errUsage
		}
		var w []rollout.Wave
		if *waves != "" {
			var err error
			if w, err = rollout.ParseWaves(*waves, time.Now()); err != nil {
				return err
			}
		}
		p, err := open()
		if err != nil {
			return err
		}
		if err := p.SetRollout(*release, w, windows); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: %d waves, %d windows\n", *release, len(w), len(windows))
		return nil

	case "halt":
		release := fs.String("release", "", "release target path")
		reason := fs.String("reason", "halted by the operator", "why (shown in status and logs)")
		resume := fs.Bool("resume", false, "lift the halt instead")
		if err := parse(); err != nil {
			return err
		}
		if *release == "" {
			fmt.Fprintln(stderr, "meshctl ota halt: --release is required")
			return errUsage
		}
		p, err := open()
		if err != nil {
			return err
		}
		if *resume {
			err = p.Resume(*release)
		} else {
			err = p.Halt(*release, *reason)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: halted=%v\n", *release, !*resume)
		return nil

	case "rotate-root":
		also := fs.String("also", "", "comma-separated top-level keys to rotate with root: targets,snapshot,timestamp")
		if err := parse(); err != nil {
			return err
		}
		var roles []string
		if *also != "" {
			roles = strings.Split(*also, ",")
		}
		p, err := open()
		if err != nil {
			return err
		}
		if err := p.RotateRoot(roles...); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "root rotated; devices follow the chain of root versions on their next refresh")
		return nil

	case "refresh":
		if err := parse(); err != nil {
			return err
		}
		p, err := open()
		if err != nil {
			return err
		}
		return p.Refresh()

	case "list":
		if err := parse(); err != nil {
			return err
		}
		p, err := open()
		if err != nil {
			return err
		}
		rels, err := p.List()
		if err != nil {
			return err
		}
		for _, r := range rels {
			fmt.Fprintln(stdout, r)
		}
		return nil

	case "serve":
		addr := fs.String("addr", "127.0.0.1:8470", "listen address")
		window := fs.Int("halt-window", rollout.DefaultMonitor.Window, "automatic halt: reports considered")
		rate := fs.Float64("halt-rate", rollout.DefaultMonitor.MaxFailureRate, "automatic halt: rollback share that halts")
		minReports := fs.Int("halt-min", rollout.DefaultMonitor.MinReports, "automatic halt: reports needed first")
		if err := parse(); err != nil {
			return err
		}
		p, err := open()
		if err != nil {
			return err
		}
		log := slog.New(slog.NewJSONHandler(stderr, nil))
		mux := http.NewServeMux()
		h := rollout.NewHandler(rollout.MonitorConfig{Window: *window, MaxFailureRate: *rate, MinReports: *minReports}, p, log)
		mux.Handle(rollout.ReportsPath, h)
		mux.Handle(rollout.StatusPath, h)
		mux.Handle("/", http.FileServer(http.Dir(p.Dir())))
		ln, err := net.Listen("tcp", *addr)
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			<-ctx.Done()
			srv.Close()
		}()
		fmt.Fprintf(stdout, "serving %s on http://%s (reports at %s)\n", p.Dir(), ln.Addr(), rollout.ReportsPath)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
	fmt.Fprintf(stderr, "meshctl ota: unknown subcommand %q\n\n%s", sub, otaUsage)
	return errUsage
}

// imageManifest is the part of image/manifest.json (written by `meshctl image build`) that a
// release needs.
type imageManifest struct {
	Board     string                `json:"board"`
	Version   string                `json:"version"`
	Console   string                `json:"console"`
	Kernel    struct{ Name string } `json:"kernel"`
	Initramfs struct{ Name string } `json:"initramfs"`
}

func readImageManifest(dir string) (*imageManifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return nil, fmt.Errorf("image manifest: %w", err)
	}
	var m imageManifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("image manifest %s: %w", dir, err)
	}
	if m.Board == "" || m.Kernel.Name == "" || m.Initramfs.Name == "" {
		return nil, fmt.Errorf("image manifest %s: board, kernel.name and initramfs.name are required", dir)
	}
	for _, n := range []string{m.Kernel.Name, m.Initramfs.Name} {
		if strings.Contains(n, "..") || filepath.IsAbs(n) {
			return nil, fmt.Errorf("image manifest %s: file name %q leaves the directory", dir, n)
		}
	}
	return &m, nil
}

// windowFlags collects --window "DAYS@HH:MM+DURATION".
type windowFlags []rollout.Window

func (w *windowFlags) String() string { return fmt.Sprint(*w) }

func (w *windowFlags) Set(s string) error {
	days, rest, ok := strings.Cut(s, "@")
	if !ok {
		return fmt.Errorf("window %q: want DAYS@HH:MM+DURATION", s)
	}
	start, dur, ok := strings.Cut(rest, "+")
	if !ok {
		return fmt.Errorf("window %q: want DAYS@HH:MM+DURATION", s)
	}
	d, err := time.ParseDuration(dur)
	if err != nil {
		return fmt.Errorf("window %q: %w", s, err)
	}
	win := rollout.Window{Start: start, Duration: rollout.Duration(d)}
	if days != "" {
		win.Days = strings.Split(days, ",")
	}
	p := rollout.Plan{Windows: []rollout.Window{win}}
	if err := p.Validate(); err != nil {
		return err
	}
	*w = append(*w, win)
	return nil
}
