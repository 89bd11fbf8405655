// Package logship sends the device's logs to the fleet cloud's log ingest (POST /v1/device/logs
// through the provisioning agent's mTLS client): the device's own slog records (already
// redacted by firmware.Logging) and the VPN's tunnel activity and BGP records (vpn/vpnlog), as
// JSON lines. Lines wait in a bounded buffer (lines and bytes) while the device is not enrolled
// or the cloud is unreachable; when it is full the oldest lines go, and the next upload starts
// with a line saying how many were dropped (the count is also in Stats, for /status and
// /metrics). An upload that fails puts its lines back in front of newer ones (within the bounds),
// so delivery is at least once and in order.
//
// After a failed upload the next one comes after 1 s, doubling up to the upload interval (not a
// whole interval later), and a Kick (the device kicks when the WAN comes up) abandons an upload
// stuck in flight while uploads are failing: the backlog of a WAN outage leaves within seconds of
// the uplink's return. (The mTLS client's connections have TCP_USER_TIMEOUT and keepalive, see
// provision/agent, so a connection that died with the uplink does not hold the uploads.)
//
// Delivery is at least once: an upload whose answer is lost (the uplink fails while it is in
// flight, and the HTTP client's retry or ours sends it again) reaches the cloud twice. Every line
// therefore carries "log_id": "<boot id>-<sequence>", unique per device boot, so the ingest (or
// whoever reads it) can drop duplicates.
//
// Why not provision/agent's LogShipper: it bounds lines but not bytes, has no counters for the
// status API and metrics, and takes only slog records; the VPN's records need their own
// translation (the tunnel's outside address as the ingest's "tunnel" field).
package logship

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"meshroot/vpn/vpnlog"
)

// Poster uploads a batch of JSON lines (enroll.Client.PostLogs).
type Poster func(ctx context.Context, body []byte) error

// Config bounds the buffer and paces uploads.
type Config struct {
	// MaxLines and MaxBytes bound the buffer (defaults 5000 lines, 1 MiB).
	MaxLines, MaxBytes int
	// BatchBytes bounds one upload (default 256 KiB; the cloud takes up to 1 MiB).
	BatchBytes int
	// Interval is the pause between uploads (default 10 s); Timeout bounds one upload (default
	// 12 s: shorter than the mTLS client's 15 s attempt, so a dead uplink costs one attempt per
	// upload, not a pile of retries that all arrive when it comes back).
	Interval, Timeout time.Duration
	// Retry is the pause after a failed upload (default 1 s); it doubles with every further
	// failure up to Interval (with jitter: uniform in [d/2, d]), so a backlog leaves soon after
	// the uplink returns instead of on the next Interval tick. A success goes back to Interval.
	Retry time.Duration
	// Now is the clock for the dropped-lines line (default time.Now).
	Now func() time.Time
}

// Stats are the shipper's counters.
type Stats struct {
	// Pending lines and bytes in the buffer.
	Pending      int `json:"pending_lines"`
	PendingBytes int `json:"pending_bytes"`
	// Shipped lines (accepted by the cloud), Dropped lines (buffer full) since boot.
	Shipped uint64 `json:"shipped_lines"`
	Dropped uint64 `json:"dropped_lines"`
	// Uploads and Failures count upload attempts.
	Uploads  uint64    `json:"uploads"`
	Failures uint64    `json:"upload_failures"`
	LastOK   time.Time `json:"last_upload,omitzero"`
	// LastError is the last failure ("" after a success).
	LastError string `json:"last_error,omitempty"`
}

// Shipper is the buffer and its uploader.
type Shipper struct {
	cfg Config

	mu         sync.Mutex
	lines      [][]byte
	bytes      int
	unreported uint64 // dropped since the last successful upload
	stats      Stats
	wake       chan struct{}
	boot       string // this boot's id for log_id
	seq        uint64
	failing    bool               // the last upload failed
	abort      context.CancelFunc // cancels the upload in flight while failing
}

// New returns a shipper.
func New(cfg Config) *Shipper {
	if cfg.MaxLines <= 0 {
		cfg.MaxLines = 5000
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 1 << 20
	}
	if cfg.BatchBytes <= 0 {
		cfg.BatchBytes = 256 << 10
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 12 * time.Second
	}
	if cfg.Retry <= 0 {
		cfg.Retry = time.Second
	}
	cfg.Retry = min(cfg.Retry, cfg.Interval)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	var b [4]byte
	crand.Read(b[:])
	return &Shipper{cfg: cfg, wake: make(chan struct{}, 1), boot: hex.EncodeToString(b[:])}
}

// withID puts "log_id" first in a JSON object line (caller holds mu).
func (s *Shipper) withID(line []byte) []byte {
	if len(line) < 2 || line[0] != '{' {
		return line
	}
	s.seq++
	id := fmt.Sprintf(`{"log_id":"%s-%d"`, s.boot, s.seq)
	rest := bytes.TrimLeft(line[1:], " ")
	if len(rest) > 0 && rest[0] != '}' {
		id += ","
	}
	return append([]byte(id), rest...)
}

// Write takes one JSON line (slog's JSON handler writes one record per call); it never fails.
// It is what firmware.Logging.AddSink gets.
func (s *Shipper) Write(p []byte) (int, error) {
	line := bytes.TrimRight(p, "\n")
	if len(line) == 0 {
		return len(p), nil
	}
	s.add(bytes.Clone(line))
	return len(p), nil
}

func (s *Shipper) add(line []byte) {
	if len(line) > s.cfg.MaxBytes {
		line = nil // cannot ever fit: count it as dropped
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if line == nil {
		s.unreported++
		s.stats.Dropped++
		return
	}
	line = s.withID(line)
	for len(s.lines) > 0 && (len(s.lines) >= s.cfg.MaxLines || s.bytes+len(line) > s.cfg.MaxBytes) {
		s.bytes -= len(s.lines[0])
		s.lines[0] = nil
		s.lines = s.lines[1:]
		s.unreported++
		s.stats.Dropped++
	}
	s.lines = append(s.lines, line)
	s.bytes += len(line)
}

// vpnLine is how a VPN record travels to the ingest: the ingest's known members (time, level,
// msg, tunnel) and the record itself in AWS's schema.
type vpnLine struct {
	Time   time.Time       `json:"time"`
	Level  string          `json:"level"`
	Msg    string          `json:"msg"`
	Log    vpnlog.Log      `json:"log"`
	Tunnel string          `json:"tunnel,omitempty"`
	Stream string          `json:"stream"`
	Record json.RawMessage `json:"record"`
}

// VPNSink returns a vpnlog.Sink feeding this shipper (wrap it in a vpnlog.Redactor with the
// connection's PSKs).
func (s *Shipper) VPNSink() vpnlog.Sink { return vpnSink{s} }

type vpnSink struct{ s *Shipper }

func (v vpnSink) Write(r vpnlog.Record) {
	b, err := r.MarshalJSON()
	if err != nil {
		v.s.mu.Lock()
		v.s.unreported++
		v.s.stats.Dropped++
		v.s.mu.Unlock()
		return
	}
	msg := "vpn log"
	switch r.Log() {
	case vpnlog.LogBGP:
		msg = "bgp log"
	case vpnlog.LogTunnel:
		msg = "tunnel activity log"
	}
	line, _ := json.Marshal(vpnLine{Time: r.EventTime().UTC(), Level: "INFO", Msg: msg, Log: r.Log(), Tunnel: TunnelOf(r.Stream()),
		Stream: r.Stream(), Record: b})
	v.s.add(line)
}

// TunnelOf returns the tunnel's outside address from an AWS stream name ("vpn-1234abcd_1.2.3.4"),
// or "" when the name has none.
func TunnelOf(stream string) string {
	i := strings.LastIndexByte(stream, '_')
	if i < 0 {
		return ""
	}
	return stream[i+1:]
}

// Stats returns the counters.
func (s *Shipper) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Pending, st.PendingBytes = len(s.lines), s.bytes
	return st
}

// Kick asks for an upload now (e.g. when the device just enrolled, or the WAN came up). While
// uploads are failing, an upload in flight is abandoned (its lines go back in front) and the
// new one starts at once: after the uplink returns, the one in flight is likely stuck on the
// dead path or in its client's retry pause. (Should it have reached the cloud after all, the
// lines arrive twice, with the same log_ids.)
func (s *Shipper) Kick() {
	s.mu.Lock()
	if s.abort != nil {
		s.abort()
		s.abort = nil
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// take removes up to BatchBytes of lines and returns them with the dropped-lines line in front.
func (s *Shipper) take() (body []byte, n int, dropped uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.lines) == 0 && s.unreported == 0 {
		return nil, 0, 0
	}
	var b bytes.Buffer
	dropped = s.unreported
	if dropped > 0 {
		fmt.Fprintf(&b, `{"time":%q,"level":"WARN","msg":"log lines dropped on the device before upload (buffer full)","dropped":%d}`+"\n",
			s.cfg.Now().UTC().Format(time.RFC3339Nano), dropped)
	}
	for n < len(s.lines) && (n == 0 || b.Len()+len(s.lines[n])+1 <= s.cfg.BatchBytes) {
		b.Write(s.lines[n])
		b.WriteByte('\n')
		s.bytes -= len(s.lines[n])
		n++
	}
	s.lines = s.lines[n:]
	s.unreported = 0
	return b.Bytes(), n, dropped
}

// giveBack puts a failed batch back in front (within the bounds: what does not fit is dropped,
// newest lines kept).
func (s *Shipper) giveBack(body []byte, dropped uint64) {
	back := bytes.Split(bytes.TrimRight(body, "\n"), []byte("\n"))
	if dropped > 0 {
		back = back[1:] // take's dropped-lines line: the count goes back instead
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unreported += dropped
	all := append(back, s.lines...)
	size := 0
	for _, l := range all {
		size += len(l)
	}
	for len(all) > 0 && (len(all) > s.cfg.MaxLines || size > s.cfg.MaxBytes) {
		size -= len(all[0])
		all = all[1:]
		s.unreported++
		s.stats.Dropped++
	}
	s.lines, s.bytes = all, size
}

// retryDelay is the pause before the next upload after failures consecutive failed ones:
// Retry doubled per further failure up to Interval, with jitter (uniform in [d/2, d]) so that a
// fleet coming back from the same outage does not retry in step.
func (s *Shipper) retryDelay(failures int) time.Duration {
	d := s.cfg.Retry
	for i := 1; i < failures && d < s.cfg.Interval; i++ {
		d *= 2
	}
	d = min(d, s.cfg.Interval)
	return d/2 + rand.N(d/2+1)
}

// Run uploads every Interval (or when kicked) while poster returns a Poster (nil: not enrolled
// yet, keep buffering), until ctx ends. After a failed upload the next one comes after
// retryDelay (1 s, 2 s, 4 s ... Interval), not a whole Interval later.
func (s *Shipper) Run(ctx context.Context, poster func() Poster) {
	t := time.NewTimer(s.cfg.Interval)
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.wake:
		}
		next := s.cfg.Interval
		if post := poster(); post != nil {
			if s.upload(ctx, post) {
				failures = 0
			} else {
				failures++
				next = s.retryDelay(failures)
			}
		}
		t.Reset(next) // Go 1.23 timers: no stale tick survives Reset
	}
}

// upload sends the buffer in batches until it is empty or an upload fails (false).
func (s *Shipper) upload(ctx context.Context, post Poster) bool {
	for ctx.Err() == nil {
		body, n, dropped := s.take()
		if body == nil {
			return true
		}
		pctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		s.mu.Lock()
		if s.failing {
			s.abort = cancel
		}
		s.mu.Unlock()
		err := post(pctx, body)
		cancel()
		s.mu.Lock()
		s.abort, s.failing = nil, err != nil
		s.stats.Uploads++
		if err != nil {
			s.stats.Failures++
			s.stats.LastError = err.Error()
		} else {
			s.stats.Shipped += uint64(n)
			s.stats.LastOK, s.stats.LastError = s.cfg.Now(), ""
		}
		s.mu.Unlock()
		if err != nil {
			s.giveBack(body, dropped)
			return false
		}
	}
	return true
}
