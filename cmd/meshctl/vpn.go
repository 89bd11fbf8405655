package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"meshroot/vpn"
)

func init() {
	register(command{name: "vpn", summary: "run a VPN connection in the foreground (vpn up), show a running one (vpn status), check a config (vpn check)", run: runVPN})
}

const vpnUsage = `usage:
  meshctl vpn up --config FILE [--control SOCKET] [--log-dir DIR] [--log-level LEVEL] [--log-json]
      Run the connection described by FILE in the foreground, printing what happens; Ctrl-C
      tears it down (DELETE to the endpoints, routes and devices removed); SIGHUP re-reads FILE
      and applies what changed. The tunnel activity log and the BGP log go to
      DIR/tunnel/<stream>.jsonl and DIR/bgp/<stream>.jsonl as JSON lines.
  meshctl vpn status [--control SOCKET] [--json]
      Show the status of the connection running behind SOCKET.
  meshctl vpn check --config FILE
      Validate FILE (and read its PSKs) without starting anything.

The file format is documented in vpn/file.go (the profile's VPN section, with psk_file or
psk_env instead of psk_ref). SOCKET defaults to ` + vpn.DefaultControlSocket + `.
`

func runVPN(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, vpnUsage)
		return errUsage
	}
	switch args[0] {
	case "up":
		return vpnUp(ctx, args[1:], stdout, stderr)
	case "status":
		return vpnStatus(ctx, args[1:], stdout, stderr)
	case "check":
		return vpnCheck(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, vpnUsage)
		return nil
	}
	fmt.Fprintf(stderr, "meshctl vpn: unknown subcommand %q\n%s", args[0], vpnUsage)
	return errUsage
}

func vpnFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("vpn "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, vpnUsage) }
	return fs
}

func vpnUp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := vpnFlags("up", stderr)
	config := fs.String("config", "", "connection configuration (JSON)")
	control := fs.String("control", vpn.DefaultControlSocket, "control socket for `meshctl vpn status` (empty: none)")
	logDir := fs.String("log-dir", "", "directory for tunnel.jsonl and bgp.jsonl")
	level := fs.String("log-level", "warn", "diagnostics on stderr: debug, info, warn or error")
	logJSON := fs.Bool("log-json", false, "diagnostics as JSON (as on the device)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *config == "" || fs.NArg() > 0 {
		fs.Usage()
		return errUsage
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("vpn up: --log-level %q: want debug, info, warn or error", *level)
	}
	var h slog.Handler = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv})
	if *logJSON {
		h = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: lv})
	}
	cfg, err := vpn.LoadConfig(*config)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "connection %s: %d tunnels; Ctrl-C to stop, SIGHUP to reload %s\n", cfg.ConnectionID, len(cfg.Tunnels), *config)
	reload := make(chan struct{}, 1)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}()
	err = vpn.Run(ctx, vpn.RunOptions{
		Config: cfg, ControlSocket: *control, LogDir: *logDir, Stdout: stdout, Logger: slog.New(h),
		Reload: reload, Load: func() (vpn.Config, error) { return vpn.LoadConfig(*config) },
	})
	if err != nil {
		return fmt.Errorf("vpn up: %w", err)
	}
	fmt.Fprintln(stdout, "stopped")
	return nil
}

func vpnStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := vpnFlags("status", stderr)
	control := fs.String("control", vpn.DefaultControlSocket, "control socket of the running connection")
	asJSON := fs.Bool("json", false, "print the status as JSON")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return errUsage
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := vpn.QueryStatus(ctx, *control)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	_, err = io.WriteString(stdout, st.Format())
	return err
}

func vpnCheck(args []string, stdout, stderr io.Writer) error {
	fs := vpnFlags("check", stderr)
	config := fs.String("config", "", "connection configuration (JSON)")
	if err := fs.Parse(args); err != nil || *config == "" || fs.NArg() > 0 {
		return errUsage
	}
	cfg, err := vpn.LoadConfig(*config)
	if err != nil {
		return err
	}
	mode := "BGP"
	if cfg.BGP == nil {
		mode = "static routes"
	}
	fmt.Fprintf(stdout, "%s: connection %s, %d tunnels, %s: OK\n", *config, cfg.ConnectionID, len(cfg.Tunnels), mode)
	return nil
}
