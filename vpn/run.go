package vpn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"meshroot/vpn/vpnlog"
)

// RunOptions configure Run.
type RunOptions struct {
	Config Config
	// ControlSocket is where status queries are answered ("" : none).
	ControlSocket string
	// LogDir, when set, receives the logs as JSON lines, appended, one file per log and
	// stream as the concentrator's log groups and streams are laid out:
	// LogDir/tunnel/<stream>.jsonl (the tunnel activity log) and LogDir/bgp/<stream>.jsonl,
	// where the stream is "<connection id>_<tunnel outside address>".
	LogDir string
	// Stdout gets one line per event (nil: none).
	Stdout io.Writer
	// Logger gets diagnostics (nil: discard).
	Logger *slog.Logger
	// Log, when set, also receives every log record (tests).
	Log vpnlog.Sink
	// Started is called once the connection is up (tests).
	Started func(*Connection)
	// Reload, when it delivers, makes Run call Load and apply the result with
	// Connection.Update (meshctl: SIGHUP after editing the file). A configuration that does
	// not load or apply is reported and the running one stays.
	Reload <-chan struct{}
	Load   func() (Config, error)
}

// Run runs one connection in the foreground until ctx ends, then tears it down: what `meshctl
// vpn up` does. Events are printed as they happen.
func Run(ctx context.Context, o RunOptions) error {
	var sinks []vpnlog.Sink
	var closers []func() error
	if o.LogDir != "" {
		for _, l := range []vpnlog.Log{vpnlog.LogTunnel, vpnlog.LogBGP} {
			if err := os.MkdirAll(filepath.Join(o.LogDir, string(l)), 0o755); err != nil {
				return fmt.Errorf("vpn: log dir: %w", err)
			}
		}
		files := &streamFiles{dir: o.LogDir, logger: o.Logger, sinks: map[string]*vpnlog.JSONLines{}}
		buf := vpnlog.NewBuffered(files, 0)
		closers = append(closers, func() error { buf.Close(); return files.close() })
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
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case runErr = <-ctlErr:
			break wait
		case <-o.Reload:
			if o.Load == nil {
				continue
			}
			cfg, err := o.Load()
			if err == nil {
				err = conn.Update(cfg)
			}
			if err != nil {
				conn.event("", "routes", "configuration not applied: "+err.Error())
				if o.Logger != nil {
					o.Logger.Error("reload", "err", err)
				}
			}
		}
	}
	stopCtl()
	err = conn.Stop()
	if ctlErr != nil && runErr == nil {
		runErr = <-ctlErr
	}
	return errors.Join(runErr, err)
}

// streamFiles writes each record to DIR/<log>/<stream>.jsonl (opened on first use). It runs
// behind a Buffered sink: one goroutine at a time.
type streamFiles struct {
	dir    string
	logger *slog.Logger
	files  []*os.File
	sinks  map[string]*vpnlog.JSONLines
	failed bool
}

func (s *streamFiles) Write(r vpnlog.Record) {
	stream := r.Stream()
	if stream == "" || strings.ContainsAny(stream, "/\\") || strings.HasPrefix(stream, ".") {
		stream = "connection"
	}
	key := filepath.Join(string(r.Log()), stream+".jsonl")
	j := s.sinks[key]
	if j == nil {
		f, err := os.OpenFile(filepath.Join(s.dir, key), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			if !s.failed && s.logger != nil {
				s.logger.Error("log file", "err", err)
			}
			s.failed = true
			return
		}
		s.files = append(s.files, f)
		j = vpnlog.NewJSONLines(f)
		s.sinks[key] = j
	}
	j.Write(r)
}

func (s *streamFiles) close() error {
	var errs []error
	for _, f := range s.files {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}
