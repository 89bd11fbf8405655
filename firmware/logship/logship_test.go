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
