package firmware

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
)

// Logging is the device's log pipeline: slog JSON lines to the console and into a bounded
// in-memory ring (which the status API serves), with secrets redacted on the way.
type Logging struct {
	Logger  *slog.Logger
	Ring    *Ring
	Secrets *Secrets
	Level   *slog.LevelVar

	sinks sinkList
}

// sinkList is the extra destinations of the log lines (AddSink).
type sinkList struct {
	mu sync.RWMutex
	ws []io.Writer
}

func (l *sinkList) write(p []byte) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, w := range l.ws {
		_, _ = w.Write(p)
	}
}

// AddSink makes every later log line (one JSON record per Write, secrets already redacted) go
// to w as well: the log shipper. w must not block and must not log through this Logging.
func (l *Logging) AddSink(w io.Writer) {
	l.sinks.mu.Lock()
	defer l.sinks.mu.Unlock()
	l.sinks.ws = append(l.sinks.ws, w)
}

// NewLogging builds the pipeline. console may be nil (ring only). The ring keeps at most
// maxEntries lines and maxBytes bytes.
func NewLogging(console io.Writer, maxEntries, maxBytes int) *Logging {
	l := &Logging{
		Ring:    NewRing(maxEntries, maxBytes),
		Secrets: &Secrets{},
		Level:   new(slog.LevelVar),
	}
	out := teeWriter{console: console, ring: l.Ring, sinks: &l.sinks}
	h := slog.NewJSONHandler(out, &slog.HandlerOptions{Level: l.Level})
	l.Logger = slog.New(&redactHandler{inner: h, secrets: l.Secrets})
	return l
}

// teeWriter hands each record (slog's JSON handler writes one record per Write) to the ring,
// the console and the sinks. A console that fails (unplugged serial, closed pipe) does not stop the
// ring from recording.
type teeWriter struct {
	console io.Writer // may be nil
	ring    *Ring
	sinks   *sinkList
}

func (t teeWriter) Write(p []byte) (int, error) {
	_, _ = t.ring.Write(p)
	if t.console != nil {
		_, _ = t.console.Write(p)
	}
	t.sinks.write(p)
	return len(p), nil
}

// LockedWriter serializes writes to the console, so a log record and the ready line never
// interleave.
type LockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// NewLockedWriter wraps w.
func NewLockedWriter(w io.Writer) *LockedWriter { return &LockedWriter{w: w} }

func (l *LockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Ring is a bounded in-memory log: the newest lines, at most maxEntries of them and maxBytes
// in total. It is an io.Writer where each Write is one line.
type Ring struct {
	mu         sync.Mutex
	lines      [][]byte // circular
	head, n    int
	size       int
	maxBytes   int
	dropped    uint64
	maxEntries int
}

// NewRing returns a ring holding at most maxEntries lines and maxBytes bytes.
func NewRing(maxEntries, maxBytes int) *Ring {
	if maxEntries < 1 {
		maxEntries = 1
	}
	return &Ring{lines: make([][]byte, maxEntries), maxEntries: maxEntries, maxBytes: maxBytes}
}

// Write stores a copy of p as one line (a line longer than maxBytes is cut).
func (r *Ring) Write(p []byte) (int, error) {
	n := len(p)
	line := append([]byte(nil), p...)
	if r.maxBytes > 0 && len(line) > r.maxBytes {
		line = line[:r.maxBytes]
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.n > 0 && (r.n == r.maxEntries || (r.maxBytes > 0 && r.size+len(line) > r.maxBytes)) {
		old := r.lines[r.head]
		r.size -= len(old)
		r.lines[r.head] = nil
		r.head = (r.head + 1) % r.maxEntries
		r.n--
		r.dropped++
	}
	r.lines[(r.head+r.n)%r.maxEntries] = line
	r.n++
	r.size += len(line)
	return n, nil
}

// Lines returns copies of the stored lines, oldest first, and how many older lines were
// dropped to stay within bounds.
func (r *Ring) Lines() (lines []string, dropped uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, r.n)
	for i := range r.n {
		out[i] = string(r.lines[(r.head+i)%r.maxEntries])
	}
	return out, r.dropped
}

// Redacted replaces secret values in logs.
const Redacted = "[redacted]"

// Secret is a string that never prints: logging it, or formatting it with %v/%s, gives
// "[redacted]". Use string(s) where the value is really needed.
type Secret string

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue(Redacted) }

// String implements fmt.Stringer.
func (Secret) String() string { return Redacted }

// Format implements fmt.Formatter, so %q, %x and %#v do not leak either.
func (Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, Redacted) }

// Secrets is the set of secret values the logger scrubs from every message and string
// attribute, wherever they appear (error strings included). Register a secret as soon as it
// is known (PSKs when a profile loads, the setup code at boot).
type Secrets struct {
	mu   sync.RWMutex
	vals []string
}

// Add registers secret values; values shorter than 4 bytes are ignored (they would scrub
// ordinary text).
func (s *Secrets) Add(vals ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range vals {
		if len(v) >= 4 {
			s.vals = append(s.vals, v)
		}
	}
}

// Scrub replaces every registered secret in text.
func (s *Secrets) Scrub(text string) string {
	if s == nil {
		return text
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, v := range s.vals {
		if strings.Contains(text, v) {
			text = strings.ReplaceAll(text, v, Redacted)
		}
		// The same secret as it appears inside JSON strings (quotes, <, >, & escaped).
		if q, err := json.Marshal(v); err == nil {
			if e := string(q[1 : len(q)-1]); e != v && strings.Contains(text, e) {
				text = strings.ReplaceAll(text, e, Redacted)
			}
		}
	}
	return text
}

// sensitiveKey reports whether an attribute key names a secret, whatever its value.
func sensitiveKey(k string) bool {
	k = strings.ToLower(k)
	for _, w := range []string{"psk", "password", "passphrase", "secret", "token", "setup_code", "setupcode", "private", "privkey", "credential"} {
		if strings.Contains(k, w) {
			return true
		}
	}
	return k == "key" || strings.HasSuffix(k, "_key") || strings.HasSuffix(k, "-key")
}

// Redact returns attr with its value replaced when the key names a secret, and with
// registered secret values scrubbed from string values (groups included).
func (s *Secrets) Redact(a slog.Attr) slog.Attr {
	if sensitiveKey(a.Key) {
		return slog.String(a.Key, Redacted)
	}
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, s.Scrub(v.String()))
	case slog.KindGroup:
		as := v.Group()
		out := make([]any, len(as))
		for i, g := range as {
			out[i] = s.Redact(g)
		}
		return slog.Group(a.Key, out...)
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			return slog.String(a.Key, s.Scrub(err.Error()))
		}
		if st, ok := v.Any().(fmt.Stringer); ok {
			return slog.String(a.Key, s.Scrub(st.String()))
		}
		// Anything else is logged as the JSON it would have been, scrubbed.
		b, err := json.Marshal(v.Any())
		if err != nil {
			return slog.String(a.Key, s.Scrub(fmt.Sprint(v.Any())))
		}
		if sb := s.Scrub(string(b)); json.Valid([]byte(sb)) {
			return slog.Any(a.Key, json.RawMessage(sb))
		}
		return slog.String(a.Key, Redacted)
	}
	return slog.Attr{Key: a.Key, Value: v}
}

// redactHandler applies Secrets.Redact to the message and every attribute.
type redactHandler struct {
	inner   slog.Handler
	secrets *Secrets
}

func (h *redactHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *redactHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, h.secrets.Scrub(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.secrets.Redact(a))
		return true
	})
	return h.inner.Handle(ctx, out)
}

func (h *redactHandler) WithAttrs(as []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(as))
	for i, a := range as {
		red[i] = h.secrets.Redact(a)
	}
	return &redactHandler{inner: h.inner.WithAttrs(red), secrets: h.secrets}
}

func (h *redactHandler) WithGroup(name string) slog.Handler {
	return &redactHandler{inner: h.inner.WithGroup(name), secrets: h.secrets}
}
