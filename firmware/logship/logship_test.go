package logship

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"meshroot/vpn/vpnlog"
)

// cloud records uploads; fail makes them fail.
type cloud struct {
	mu     sync.Mutex
	bodies []string
	fail   bool
}

func (c *cloud) post(_ context.Context, b []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail {
		return errors.New("cloud unreachable")
	}
	c.bodies = append(c.bodies, string(b))
	return nil
}

func (c *cloud) lines() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, b := range c.bodies {
		out = append(out, strings.Split(strings.TrimSuffix(b, "\n"), "\n")...)
	}
	return out
}

func run(t *testing.T, s *Shipper, poster func() Poster) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx, poster); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestBoundedBufferReportsDrops(t *testing.T) {
	s := New(Config{MaxLines: 3, MaxBytes: 1 << 20, Interval: time.Hour})
	for i := range 5 {
		fmt.Fprintf(s, `{"msg":"line %d"}`+"\n", i)
	}
	if st := s.Stats(); st.Pending != 3 || st.Dropped != 2 {
		t.Errorf("Stats() = %+v; want 3 pending, 2 dropped", st)
	}
	c := &cloud{}
	run(t, s, func() Poster { return c.post })
	s.Kick()
	waitFor(t, "an upload", func() bool { return len(c.lines()) == 4 })
	got := c.lines()
	if !strings.Contains(got[0], `"dropped":2`) || !strings.Contains(got[1], "line 2") || !strings.Contains(got[3], "line 4") {
		t.Errorf("upload = %q; want the dropped count first, then the three newest lines in order", got)
	}
	if st := s.Stats(); st.Shipped != 3 || st.Pending != 0 || st.Uploads != 1 {
		t.Errorf("Stats() after upload = %+v", st)
	}
}

func TestByteBound(t *testing.T) {
	s := New(Config{MaxLines: 100, MaxBytes: 40})
	s.Write([]byte(strings.Repeat("a", 30)))
	s.Write([]byte(strings.Repeat("b", 30)))
	s.Write([]byte(strings.Repeat("c", 50))) // larger than the whole buffer
	if st := s.Stats(); st.Pending != 1 || st.PendingBytes != 30 || st.Dropped != 2 {
		t.Errorf("Stats() = %+v; want only the b line kept", st)
	}
}

func TestUnreachableCloudKeepsOrder(t *testing.T) {
	s := New(Config{MaxLines: 4, Interval: 5 * time.Millisecond})
	c := &cloud{fail: true}
	var enrolled sync.Mutex
	var post Poster
	run(t, s, func() Poster { enrolled.Lock(); defer enrolled.Unlock(); return post })
	s.Write([]byte(`{"msg":"before enrollment"}`))
	time.Sleep(20 * time.Millisecond)
	if st := s.Stats(); st.Uploads != 0 || st.Pending != 1 {
		t.Fatalf("Stats() before enrollment = %+v; want no upload, the line kept", st)
	}
	enrolled.Lock()
	post = c.post
	enrolled.Unlock()
	waitFor(t, "failed uploads", func() bool { return s.Stats().Failures >= 2 })
	for i := range 5 {
		fmt.Fprintf(s, `{"msg":"offline %d"}`, i)
	}
	c.mu.Lock()
	c.fail = false
	c.mu.Unlock()
	waitFor(t, "the backlog", func() bool { return s.Stats().Pending == 0 && len(c.lines()) > 0 })
	got := c.lines()
	want := []string{`"dropped":2`, "offline 1", "offline 2", "offline 3", "offline 4"}
	if len(got) != len(want) {
		t.Fatalf("uploaded %q; want %d lines", got, len(want))
	}
	for i, w := range want {
		if !strings.Contains(got[i], w) {
			t.Errorf("line %d = %q; want it to contain %q", i, got[i], w)
		}
	}
	if st := s.Stats(); st.Dropped != 2 || st.LastError != "" {
		t.Errorf("Stats() = %+v; want 2 dropped (the first line and offline 0), no error", st)
	}
}

func TestVPNSink(t *testing.T) {
	s := New(Config{})
	at := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	rid := vpnlog.ResourceID("vpn-0123456789abcdef0", netip.MustParseAddr("198.51.100.2"))
	sink := vpnlog.NewRedactor(s.VPNSink(), "tunnel1-psk-secret")
	sink.Write(vpnlog.NewBGPStatus(rid, at, vpnlog.Status("UP"), "BGP session is UP (psk tunnel1-psk-secret)"))
	sink.Write(vpnlog.NewTunnelRecord(rid, at, "Established", "Established", true, false, "tunnel up"))
	c := &cloud{}
	run(t, s, func() Poster { return c.post })
	s.Kick()
	waitFor(t, "upload", func() bool { return len(c.lines()) == 2 })
	var l vpnLine
	if err := json.Unmarshal([]byte(c.lines()[0]), &l); err != nil {
		t.Fatal(err)
	}
	if l.Tunnel != "198.51.100.2" || l.Log != vpnlog.LogBGP || l.Msg != "bgp log" || !l.Time.Equal(at) {
		t.Errorf("BGP line = %+v; want tunnel 198.51.100.2, log bgp", l)
	}
	rec, err := vpnlog.ParseBGPRecord(l.Record)
	if err != nil {
		t.Fatalf("ParseBGPRecord(shipped record) = %v", err)
	}
	if rec.ResourceID != rid {
		t.Errorf("record resource id = %q; want %q", rec.ResourceID, rid)
	}
	for _, line := range c.lines() {
		if strings.Contains(line, "tunnel1-psk-secret") {
			t.Errorf("shipped line carries the PSK: %s", line)
		}
	}
	if !strings.Contains(c.lines()[1], `"msg":"tunnel activity log"`) {
		t.Errorf("tunnel line = %s", c.lines()[1])
	}
}

func TestTunnelOf(t *testing.T) {
	for in, want := range map[string]string{"vpn-1234abcd_1.2.3.4": "1.2.3.4", "vpn-x_2001:db8::1": "2001:db8::1", "nounderscore": ""} {
		if got := TunnelOf(in); got != want {
			t.Errorf("TunnelOf(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestLogIDs(t *testing.T) {
	s := New(Config{})
	s.Write([]byte(`{"msg":"a"}`))
	s.Write([]byte(`{}`))
	s.Write([]byte(`not json`))
	body, _, _ := s.take()
	lines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
	seen := map[string]bool{}
	for _, l := range lines[:2] {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		id, _ := m["log_id"].(string)
		if id == "" || seen[id] || !strings.HasPrefix(id, s.boot+"-") {
			t.Errorf("line %q: log_id %q; want a new id of this boot", l, id)
		}
		seen[id] = true
	}
	if lines[2] != "not json" {
		t.Errorf("a non-object line was changed: %q", lines[2])
	}
	if New(Config{}).boot == s.boot {
		t.Errorf("two shippers share a boot id")
	}
}

// flaky fails its first n uploads (a dead connection, the uplink still down), then takes them.
type flaky struct {
	mu       sync.Mutex
	n        int
	attempts []string
	ok       []string
}

func (f *flaky) post(_ context.Context, b []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attempts = append(f.attempts, string(b))
	if len(f.attempts) <= f.n {
		return errors.New("post logs: context deadline exceeded")
	}
	f.ok = append(f.ok, string(b))
	return nil
}

func (f *flaky) delivered() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.ok...)
}

// A failed upload is retried after Retry (doubling), not on the next Interval tick: with an
// Interval of an hour the backlog still leaves as soon as the poster works again, once, with
// the log_ids it had.
func TestRetryAfterFailureWithoutWaitingForInterval(t *testing.T) {
	s := New(Config{Interval: time.Hour, Retry: 5 * time.Millisecond})
	f := &flaky{n: 3}
	run(t, s, func() Poster { return f.post })
	for i := range 3 {
		fmt.Fprintf(s, `{"msg":"during the outage %d"}`, i)
	}
	s.Kick() // the only kick: the retries must come by themselves
	waitFor(t, "the backlog after 3 failed uploads", func() bool { return len(f.delivered()) > 0 })
	f.mu.Lock()
	attempts, ok := f.attempts, f.ok
	f.mu.Unlock()
	if len(attempts) != 4 || len(ok) != 1 {
		t.Fatalf("uploads = %d, delivered %d; want 3 failures then 1 success", len(attempts), len(ok))
	}
	for i, a := range attempts[:3] {
		if a != ok[0] {
			t.Errorf("failed upload %d = %q; want the same lines and log_ids as the delivered one %q", i, a, ok[0])
		}
	}
	if got := strings.Count(ok[0], `"log_id"`); got != 3 {
		t.Errorf("delivered %q; want the 3 lines once each", ok[0])
	}
	if st := s.Stats(); st.Uploads != 4 || st.Failures != 3 || st.Shipped != 3 || st.Pending != 0 || st.LastError != "" {
		t.Errorf("Stats() = %+v; want 4 uploads, 3 failures, 3 shipped, none pending, no error", st)
	}
}

// After a success the shipper waits for Interval again (no busy retrying with nothing wrong).
func TestNoRetryAfterSuccess(t *testing.T) {
	s := New(Config{Interval: time.Hour, Retry: time.Millisecond})
	f := &flaky{}
	run(t, s, func() Poster { return f.post })
	s.Write([]byte(`{"msg":"a"}`))
	s.Kick()
	waitFor(t, "the upload", func() bool { return len(f.delivered()) == 1 })
	s.Write([]byte(`{"msg":"b"}`))
	time.Sleep(50 * time.Millisecond)
	if got := len(f.delivered()); got != 1 {
		t.Errorf("uploads before the next Interval = %d; want 1", got)
	}
}

func TestRetryDelay(t *testing.T) {
	s := New(Config{Interval: 10 * time.Second, Retry: time.Second})
	for _, tc := range []struct {
		failures int
		max      time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {4, 8 * time.Second}, {5, 10 * time.Second}, {1000, 10 * time.Second}} {
		for range 50 {
			if d := s.retryDelay(tc.failures); d < tc.max/2 || d > tc.max {
				t.Fatalf("retryDelay(%d) = %v; want in [%v, %v]", tc.failures, d, tc.max/2, tc.max)
			}
		}
	}
	if d := New(Config{Interval: 100 * time.Millisecond}).retryDelay(1); d > 100*time.Millisecond {
		t.Errorf("retryDelay(1) with Interval 100ms = %v; want at most the Interval", d)
	}
}

// stuck fails its first upload, hangs in the second until its context ends (a connection that
// died with the WAN), and takes the rest.
type stuck struct {
	mu    sync.Mutex
	calls int
	ok    []string
}

func (p *stuck) post(ctx context.Context, b []byte) error {
	p.mu.Lock()
	p.calls++
	n := p.calls
	p.mu.Unlock()
	switch n {
	case 1:
		return errors.New("connect: network is unreachable")
	case 2:
		<-ctx.Done()
		return ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ok = append(p.ok, string(b))
	return nil
}

func (p *stuck) state() (int, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls, len(p.ok)
}

// A kick (the WAN came up) while uploads fail abandons the upload in flight and sends again at
// once, instead of waiting out its Timeout.
func TestKickRestartsStuckUploadWhileFailing(t *testing.T) {
	s := New(Config{Interval: time.Hour, Retry: time.Millisecond, Timeout: time.Hour})
	p := &stuck{}
	run(t, s, func() Poster { return p.post })
	s.Write([]byte(`{"msg":"during the outage"}`))
	s.Kick()
	waitFor(t, "the second upload in flight", func() bool { c, _ := p.state(); return c == 2 })
	s.Kick()
	waitFor(t, "the upload after the kick", func() bool { _, ok := p.state(); return ok == 1 })
	if st := s.Stats(); st.Uploads != 3 || st.Failures != 2 || st.Shipped != 1 || st.Pending != 0 {
		t.Errorf("Stats() = %+v; want 3 uploads, 2 failed, 1 line shipped", st)
	}
}

// A kick while uploads succeed leaves the upload in flight alone.
func TestKickKeepsHealthyUpload(t *testing.T) {
	s := New(Config{Interval: time.Hour, Timeout: time.Hour})
	release := make(chan struct{})
	var calls sync.WaitGroup
	calls.Add(1)
	var mu sync.Mutex
	var errs []error
	post := func(ctx context.Context, b []byte) error {
		calls.Done()
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			mu.Lock()
			errs = append(errs, ctx.Err())
			mu.Unlock()
			return ctx.Err()
		}
	}
	run(t, s, func() Poster { return post })
	s.Write([]byte(`{"msg":"a"}`))
	s.Kick()
	calls.Wait()
	s.Kick()
	time.Sleep(20 * time.Millisecond)
	close(release)
	waitFor(t, "the upload", func() bool { return s.Stats().Shipped == 1 })
	mu.Lock()
	defer mu.Unlock()
	if len(errs) != 0 {
		t.Errorf("a kick with uploads healthy cancelled the upload in flight: %v", errs)
	}
}
