package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// KeepEnv names the environment variable that keeps a lab up for debugging: when it is set to a
// non-empty value, Close (and so a test's cleanup) prints what is running and blocks until the
// process gets SIGINT or SIGTERM, and the lab directory is kept. See the package doc.
const KeepEnv = "MESHROOT_LAB_KEEP"

// Options configure Open.
type Options struct {
	// Dir is where per-instance directories (configs, logs, run dirs) go. Empty: a new
	// directory under os.TempDir, removed by Close.
	Dir string
	// Logger receives the lab's own progress lines. Nil: discarded.
	Logger *slog.Logger
	// Prefix starts every namespace name (default "mr"). Namespace names are
	// Prefix-name-randomsuffix, so concurrent labs never collide.
	Prefix string
}

// Lab owns everything it creates — namespaces, processes, directories — and removes it in Close,
// in the reverse order of creation. A Lab is safe for concurrent use.
type Lab struct {
	dir     string
	ownDir  bool
	log     *slog.Logger
	prefix  string
	tb      testing.TB // nil outside tests
	mu      sync.Mutex
	closers []closer
	procs   []*Process
	nss     []*NS
	closed  bool
	seq     map[string]int
}

type closer struct {
	what string
	fn   func() error
}

// Open creates a lab outside a test (for `make run` or a debugging command). Call Close when done.
func Open(opts Options) (*Lab, error) {
	l := &Lab{log: opts.Logger, prefix: opts.Prefix, seq: map[string]int{}}
	if l.log == nil {
		l.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if l.prefix == "" {
		l.prefix = "mr"
	}
	if opts.Dir == "" {
		d, err := os.MkdirTemp("", "mrlab-")
		if err != nil {
			return nil, fmt.Errorf("lab: %w", err)
		}
		l.dir, l.ownDir = d, true
	} else {
		if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("lab: dir: %w", err)
		}
		d, err := filepath.Abs(opts.Dir)
		if err != nil {
			return nil, fmt.Errorf("lab: dir: %w", err)
		}
		l.dir = d
	}
	// FRR runs as user frr and must reach its per-instance directory.
	if err := os.Chmod(l.dir, 0o755); err != nil {
		return nil, fmt.Errorf("lab: dir: %w", err)
	}
	return l, nil
}

// New creates a lab for a test: its logger writes to t.Log (debug lines with -v), it is closed in t.Cleanup (also when
// the test fails; then the tail of every process log is written to t.Log first). Call
// testenv.Integration(t) before.
func New(tb testing.TB) *Lab {
	tb.Helper()
	level := slog.LevelInfo
	if testing.Verbose() {
		level = slog.LevelDebug
	}
	l, err := Open(Options{Logger: slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: level}))})
	if err != nil {
		tb.Fatalf("lab.Open() = %v", err)
	}
	l.tb = tb
	tb.Cleanup(func() {
		if tb.Failed() {
			l.dumpLogs()
		}
		if err := l.Close(); err != nil {
			tb.Errorf("lab.Close() = %v", err)
		}
	})
	return l
}

// tbWriter adapts testing.TB to an io.Writer for slog (one Log call per record).
type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Helper()
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Dir is the lab's directory; each instance (charon, FRR, process logs) has a subdirectory.
func (l *Lab) Dir() string { return l.dir }

// Logger is the lab's logger.
func (l *Lab) Logger() *slog.Logger { return l.log }

// instanceDir makes (and returns) a new, uniquely named subdirectory for an instance.
func (l *Lab) instanceDir(name string) (string, error) {
	l.mu.Lock()
	l.seq[name]++
	n := l.seq[name]
	l.mu.Unlock()
	if n > 1 {
		name = fmt.Sprintf("%s.%d", name, n)
	}
	d := filepath.Join(l.dir, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", fmt.Errorf("lab: %w", err)
	}
	return d, nil
}

// onClose registers fn to run in Close (last registered runs first).
func (l *Lab) onClose(what string, fn func() error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closers = append(l.closers, closer{what, fn})
}

// Close stops every process the lab started (by PID: SIGTERM, then SIGKILL), deletes its
// namespaces, and removes its directory if Open created it. It is idempotent.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	cs := l.closers
	l.closers = nil
	l.mu.Unlock()
	if os.Getenv(KeepEnv) != "" {
		l.keep(context.Background())
	}
	var errs []error
	for i := len(cs) - 1; i >= 0; i-- {
		if err := cs[i].fn(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", cs[i].what, err))
		}
	}
	if l.ownDir && os.Getenv(KeepEnv) == "" {
		if err := os.RemoveAll(l.dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// dumpLogs writes the tail of every process log to the test log.
func (l *Lab) dumpLogs() {
	l.mu.Lock()
	procs := append([]*Process(nil), l.procs...)
	l.mu.Unlock()
	for _, p := range procs {
		l.tb.Logf("---- %s (pid %d, ns %s) log %s, last lines:\n%s", p.name, p.PID(), p.nsName(), p.LogPath(), tail(p.LogPath(), 40))
		for _, extra := range p.extraLogs {
			l.tb.Logf("---- %s: %s, last lines:\n%s", p.name, extra, tail(extra, 40))
		}
	}
}

// tail returns the last n lines of a file (or the error reading it).
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// randSuffix returns n random hex characters.
func randSuffix(n int) string {
	b := make([]byte, (n+1)/2)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b)[:n]
}
