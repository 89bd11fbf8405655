package agent

import (
	"bytes"
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"
)

// LogShipper tees the device's logs (JSON lines) into a bounded buffer that the agent uploads to
// the cloud (POST /v1/device/logs) once the device is enrolled. When the buffer is full the
// oldest lines go, and the next upload says how many.
type LogShipper struct {
	max      int
	interval time.Duration

	mu      sync.Mutex
	lines   [][]byte
	dropped int
}

// NewLogShipper keeps at most max lines and uploads every interval.
func NewLogShipper(max int, interval time.Duration) *LogShipper {
	return &LogShipper{max: max, interval: interval}
}

// Handler returns a handler that passes records to next and keeps a JSON copy for upload.
func (s *LogShipper) Handler(next slog.Handler) slog.Handler {
	return tee{next, slog.NewJSONHandler(lineWriter{s}, &slog.HandlerOptions{Level: slog.LevelInfo})}
}

type lineWriter struct{ s *LogShipper }

func (w lineWriter) Write(p []byte) (int, error) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	if len(w.s.lines) >= w.s.max {
		w.s.lines = w.s.lines[1:]
		w.s.dropped++
	}
	w.s.lines = append(w.s.lines, bytes.TrimRight(bytes.Clone(p), "\n"))
	return len(p), nil
}

func (s *LogShipper) take() ([]byte, int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.lines) == 0 {
		return nil, 0, 0
	}
	body := append(bytes.Join(s.lines, []byte("\n")), '\n')
	n, d := len(s.lines), s.dropped
	s.lines, s.dropped = nil, 0
	return body, n, d
}

func (s *LogShipper) giveBack(body []byte, dropped int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := bytes.Split(bytes.TrimRight(body, "\n"), []byte("\n"))
	s.lines = append(old, s.lines...)
	if over := len(s.lines) - s.max; over > 0 {
		s.lines = s.lines[over:]
		dropped += over
	}
	s.dropped += dropped
}

// run uploads the buffer every interval while the agent has a cloud client.
func (s *LogShipper) run(ctx context.Context, a *Agent) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cl := a.Client()
		if cl == nil {
			continue
		}
		body, n, dropped := s.take()
		if n == 0 {
			continue
		}
		if dropped > 0 {
			body = append([]byte(`{"level":"WARN","msg":"log lines dropped before upload","dropped":`+strconv.Itoa(dropped)+"}\n"), body...)
		}
		if err := cl.PostLogs(ctx, body); err != nil {
			s.giveBack(body, 0)
		}
	}
}

// tee sends records to two handlers.
type tee struct{ a, b slog.Handler }

func (t tee) Enabled(ctx context.Context, l slog.Level) bool {
	return t.a.Enabled(ctx, l) || t.b.Enabled(ctx, l)
}

func (t tee) Handle(ctx context.Context, r slog.Record) error {
	var err error
	if t.a.Enabled(ctx, r.Level) {
		err = t.a.Handle(ctx, r.Clone())
	}
	if t.b.Enabled(ctx, r.Level) {
		t.b.Handle(ctx, r)
	}
	return err
}

func (t tee) WithAttrs(as []slog.Attr) slog.Handler {
	return tee{t.a.WithAttrs(as), t.b.WithAttrs(as)}
}

func (t tee) WithGroup(n string) slog.Handler { return tee{t.a.WithGroup(n), t.b.WithGroup(n)} }
