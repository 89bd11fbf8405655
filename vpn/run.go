package vpn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"meshroot/vpn/vpnlog"
)

// RunOptions configure Run.
type RunOptions struct {
	Config Config
	// ControlSocket is where status queries are answered ("" : none).
	ControlSocket string
	// LogDir, when set, receives the tunnel activity log (tunnel.jsonl) and the BGP log
	// (bgp.jsonl) as JSON lines, appended.
	LogDir string
	// Stdout gets one line per event (nil: none).
	Stdout io.Writer
	// Logger gets diagnostics (nil: discard).
	Logger *slog.Logger
	// Log, when set, also receives every log record (tests).
	Log vpnlog.Sink
	// Started is called once the connection is up (tests).
	Started func(*Connection)
}

// Run runs one connection in the foreground until ctx ends, then tears it down: what `meshctl
// vpn up` does. Events are printed as they happen.
func Run(ctx context.Context, o RunOptions) error {
	var sinks []vpnlog.Sink
	var closers []func() error
	if o.LogDir != "" {
		if err := os.MkdirAll(o.LogDir, 0o755); err != nil {
			return fmt.Errorf("vpn: log dir: %w", err)
		}
		files := map[vpnlog.Log]vpnlog.Sink{}
		for log, name := range map[vpnlog.Log]string{vpnlog.LogTunnel: "tunnel.jsonl", vpnlog.LogBGP: "bgp.jsonl"} {
			f, err := os.OpenFile(filepath.Join(o.LogDir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				return fmt.Errorf("vpn: log: %w", err)
			}
			closers = append(closers, f.Close)
			files[log] = vpnlog.NewJSONLines(f)
		}
		buf := vpnlog.NewBuffered(splitSink(files), 0)
		closers = append([]func() error{func() error { buf.Close(); return nil }}, closers...)
		sinks = append(sinks, buf)
	}
	if o.Log != nil {
		sinks = append(sinks, o.Log)
	}
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	var outMu sync.Mutex
	conn := &Connection{Log: vpnlog.Multi(sinks...), Logger: o.Logger}
	if o.Stdout != nil {
		conn.OnEvent = func(e Event) {
			outMu.Lock()
			defer outMu.Unlock()
			who := "connection"
			if e.Tunnel != "" {
				who = "tunnel " + e.Tunnel
			}
			fmt.Fprintf(o.Stdout, "%s %-22s %-6s %s\n", e.Time.UTC().Format("15:04:05.000"), who, e.Source, e.Text)
		}
	}
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := conn.Start(startCtx, o.Config)
	cancel()
	if err != nil {
		return err
	}
	var ctlErr chan error
	ctlCtx, stopCtl := context.WithCancel(context.Background())
	if o.ControlSocket != "" {
		ctlErr = make(chan error, 1)
		go func() { ctlErr <- ServeControl(ctlCtx, o.ControlSocket, conn) }()
	}
	if o.Started != nil {
		o.Started(conn)
	}
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-ctlErr:
	}
	stopCtl()
	err = conn.Stop()
	if ctlErr != nil && runErr == nil {
		runErr = <-ctlErr
	}
	return errors.Join(runErr, err)
}

// splitSink sends each record to the sink of its log.
type splitSink map[vpnlog.Log]vpnlog.Sink

func (s splitSink) Write(r vpnlog.Record) {
	if k := s[r.Log()]; k != nil {
		k.Write(r)
	}
}
