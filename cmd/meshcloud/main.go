// Command meshcloud runs the reference fleet cloud (provision/devcloud): device enrollment with
// claim tokens and a fleet CA, signed site profiles, the secret store, log ingest, the OTA
// repository directory, and the operator API that `meshctl cloud` uses.
//
//	meshcloud --listen 10.0.0.1:8443 --data /var/lib/meshcloud [--ota-dir out/ota-repo]
//
// On first start it creates the fleet CA, the profile-signing key, the secret store's master key
// and the admin token in --data (all private files 0600) and prints the CA's SHA-256 pin.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"meshroot/provision/devcloud"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "meshcloud:", err)
		os.Exit(1)
	}
}

type names []string

func (n *names) String() string     { return strings.Join(*n, ",") }
func (n *names) Set(v string) error { *n = append(*n, strings.Split(v, ",")...); return nil }

// run parses the flags and serves until ctx ends. ready, when not nil, gets the server once it
// is listening (tests use it).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return serve(ctx, args, stdout, stderr, nil)
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer, ready func(*devcloud.Server)) error {
	fs := flag.NewFlagSet("meshcloud", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", ":8443", "listen address (host:port)")
	data := fs.String("data", "/var/lib/meshcloud", "data directory (state, keys, database)")
	publicURL := fs.String("public-url", "", "URL devices use (default https://<listen address>)")
	var tlsNames names
	fs.Var(&tlsNames, "tls-name", "extra DNS name or IP for the server certificate (repeatable)")
	otaDir := fs.String("ota-dir", "", "serve this OTA repository directory at /ota/ to devices")
	claimTTL := fs.Duration("claim-ttl", 24*time.Hour, "default claim token lifetime")
	profileTTL := fs.Duration("profile-ttl", 30*24*time.Hour, "profile lifetime (re-issued at half)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: lv}))
	s, err := devcloud.New(devcloud.Config{
		DataDir: *data, Addr: *listen, PublicURL: *publicURL, TLSNames: tlsNames, OTADir: *otaDir,
		ClaimTTL: *claimTTL, ProfileTTL: *profileTTL, Logger: log,
	})
	if err != nil {
		return err
	}
	defer s.Close()
	errc := make(chan error, 1)
	go func() { errc <- s.ListenAndServe(ctx) }()
	for s.URL() == "" {
		select {
		case err := <-errc:
			return err
		case <-time.After(10 * time.Millisecond):
		}
	}
	abs, _ := filepath.Abs(*data)
	fmt.Fprintf(stdout, "meshcloud listening at %s\nfleet CA pin (sha256): %s\noperator: meshctl cloud --cloud %s --data %s ...\n", s.URL(), s.CAPin(), s.URL(), abs)
	if ready != nil {
		ready(s)
	}
	return <-errc
}
