package firmware

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestReadyLine(t *testing.T) {
	info := ReadyInfo{Board: "qemu-virt-arm64", Version: "0.1.0", Services: []string{"data", "lan", "watchdog", "console"}, UptimeMS: 1234}
	got := ReadyLine(info)
	want := `MESHROOT-READY {"board":"qemu-virt-arm64","version":"0.1.0","services":["data","lan","watchdog","console"],"uptime_ms":1234}` + "\n"
	if got != want {
		t.Errorf("ReadyLine() = %q; want %q", got, want)
	}
	if strings.Count(got, "\n") != 1 {
		t.Errorf("ReadyLine() spans %d lines; want exactly one", strings.Count(got, "\n"))
	}
	// What the VM test does: find the marker, parse the JSON.
	back, err := ParseReadyLine("\x1b[0m" + got)
	if err != nil || !cmp.Equal(back, info) {
		t.Errorf("ParseReadyLine(ReadyLine(x)) = %+v, %v; want %+v", back, err, info)
	}
	// No services is [] not null; HTML characters are not escaped.
	got = ReadyLine(ReadyInfo{Board: "generic", Version: "1.0<rc>"})
	if !strings.Contains(got, `"services":[]`) || !strings.Contains(got, `"1.0<rc>"`) {
		t.Errorf("ReadyLine(empty) = %q; want services [] and the version verbatim", got)
	}
}

func TestParseReadyLineErrors(t *testing.T) {
	for _, in := range []string{
		"no marker here",
		"MESHROOT-READY not json",
		`MESHROOT-READY {"board":"x","version":"v","services":["a"],"uptime_ms":1} trailing`,
		`MESHROOT-READY {"board":"x","version":"v","services":["a"],"uptime_ms":1,"extra":1}`,
		`MESHROOT-READY {"board":"","version":"v","services":[],"uptime_ms":1}`,
		`MESHROOT-READY {"board":"x","version":"v","uptime_ms":1}`,
	} {
		if info, err := ParseReadyLine(in); err == nil {
			t.Errorf("ParseReadyLine(%q) = %+v; want an error", in, info)
		}
	}
}

func FuzzParseReadyLine(f *testing.F) {
	f.Add(ReadyLine(ReadyInfo{Board: "qemu-x86_64", Version: "dev", Services: []string{"data"}, UptimeMS: 5}))
	f.Add("MESHROOT-READY {}")
	f.Add("junk MESHROOT-READY {\"board\":1}")
	f.Fuzz(func(t *testing.T, line string) {
		info, err := ParseReadyLine(line)
		if err != nil {
			return
		}
		// Whatever parsed formats back into a line that parses to the same thing.
		again, err := ParseReadyLine(ReadyLine(info))
		if err != nil || !cmp.Equal(again, info) {
			t.Fatalf("round trip of %+v = %+v, %v", info, again, err)
		}
	})
}

func TestRelease(t *testing.T) {
	root := t.TempDir()
	r, err := ReadRelease(root)
	if err != nil || r.Version != DevVersion {
		t.Fatalf("ReadRelease(no file) = %+v, %v; want version dev", r, err)
	}
	p := filepath.Join(root, ReleasePath)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(`{"version":"0.3.1","board":"qemu-virt-arm64","built":"2026-11-22T10:00:00Z","commit":"abc"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err = ReadRelease(root)
	want := Release{Version: "0.3.1", Board: "qemu-virt-arm64", Built: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)}
	if err != nil || !cmp.Equal(r, want) {
		t.Fatalf("ReadRelease() = %+v, %v; want %+v", r, err, want)
	}
	if err := os.WriteFile(p, []byte(`{"version":""}`), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err = ReadRelease(root)
	if err == nil || !strings.Contains(err.Error(), "version is required") || r.Version != DevVersion {
		t.Errorf("ReadRelease(empty version) = %+v, %v; want dev and an error naming version", r, err)
	}
}

func TestParseReleaseErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"version":"1 0"}`, "version"},
		{`{"version":"1.0","board":"a\u0001b"}`, "board"},
		{`{"version":"1.0","built":"yesterday"}`, "built"},
		{`{"version":"1.0"} {}`, "trailing"},
		{`[]`, "release"},
		{`{"version":"` + strings.Repeat("x", 65) + `"}`, "at most 64"},
	} {
		if r, err := ParseRelease([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseRelease(%s) = %+v, %v; want an error about %s", tc.in, r, err, tc.want)
		}
	}
}

func FuzzParseRelease(f *testing.F) {
	f.Add([]byte(`{"version":"0.1.0","board":"qemu-virt-arm64","built":"2026-11-22T10:00:00Z"}`))
	f.Add([]byte(`{"version":"dev"}`))
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRelease(b)
		if err != nil {
			return
		}
		if r.Version == "" || len(r.Version) > 64 || strings.ContainsAny(r.Version, " \n\t") {
			t.Fatalf("ParseRelease accepted version %q", r.Version)
		}
		// A valid release survives a round trip.
		out, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := ParseRelease(out)
		if err != nil || r2.Version != r.Version || r2.Board != r.Board || !r2.Built.Equal(r.Built) {
			t.Fatalf("round trip of %+v = %+v, %v", r, r2, err)
		}
	})
}

func TestLoggingRingAndConsole(t *testing.T) {
	var console bytes.Buffer
	l := NewLogging(&console, 3, 1<<20)
	for i := range 5 {
		l.Logger.Info("event", "i", i)
	}
	lines, dropped := l.Ring.Lines()
	if len(lines) != 3 || dropped != 2 {
		t.Fatalf("ring holds %d lines, dropped %d; want 3 and 2", len(lines), dropped)
	}
	var rec struct {
		Msg string `json:"msg"`
		I   int    `json:"i"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil || rec.I != 2 || rec.Msg != "event" {
		t.Errorf("oldest kept line = %s (%v); want i=2", lines[0], err)
	}
	if n := strings.Count(console.String(), "\n"); n != 5 {
		t.Errorf("console got %d lines; want all 5", n)
	}
	// Byte bound.
	r := NewRing(100, 50)
	for range 10 {
		r.Write([]byte("0123456789012345678\n")) // 20 bytes
	}
	lines, _ = r.Lines()
	total := 0
	for _, s := range lines {
		total += len(s)
	}
	if total > 50 || len(lines) != 2 {
		t.Errorf("byte-bounded ring holds %d lines, %d bytes; want 2 lines within 50 bytes", len(lines), total)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("console gone") }

func TestLoggingConsoleFailureKeepsRing(t *testing.T) {
	l := NewLogging(failingWriter{}, 10, 1<<20)
	l.Logger.Info("still recorded")
	if lines, _ := l.Ring.Lines(); len(lines) != 1 {
		t.Errorf("ring holds %d lines after a console failure; want 1", len(lines))
	}
}

// TestRedaction captures the logs and scans them for secrets logged in every way a careless
// caller might: by key, inside an error, in the message, in a group, via WithAttrs, in a
// struct, and as a Secret value.
func TestRedaction(t *testing.T) {
	const psk = "s3cr3t-PSK-value-<&>"
	const setupCode = "ABCD-1234-EFGH"
	var console bytes.Buffer
	l := NewLogging(&console, 100, 1<<20)
	l.Secrets.Add(psk, setupCode, "ab") // too short to register
	log := l.Logger
	log.Info("tunnel configured", "psk", "any-value-at-all", "peer", "198.51.100.1")
	log.Error("ike auth failed", "err", errors.New("auth with "+psk+" rejected"))
	log.Info("pairing with setup code " + setupCode)
	log.Info("profile", slog.Group("tunnel", "pre_shared_key", "x", "note", "uses "+psk))
	log.With("token", "bearer-xyz").Info("enrolled")
	log.With("context", psk).Info("with attrs")
	log.Info("struct", "cfg", struct{ Name, Key string }{"t1", psk})
	log.Info("secret type", "value", Secret(psk), "formatted", Secret(psk).String())
	log.Info("routing table ready")
	out := console.String()
	ring, _ := l.Ring.Lines()
	for _, s := range []string{out, strings.Join(ring, "")} {
		for _, secret := range []string{psk, setupCode, "any-value-at-all", "bearer-xyz", `s3cr3t-PSK-value-\u003c\u0026\u003e`} {
			if strings.Contains(s, secret) {
				t.Errorf("log output contains secret %q:\n%s", secret, s)
			}
		}
	}
	if !strings.Contains(out, "198.51.100.1") || !strings.Contains(out, `"peer"`) {
		t.Errorf("redaction removed ordinary fields:\n%s", out)
	}
	if strings.Count(out, Redacted) < 8 {
		t.Errorf("expected redaction markers in every line:\n%s", out)
	}
	if !strings.Contains(out, "routing table ready") {
		t.Errorf("a short value (%q) was registered as a secret and scrubbed ordinary text:\n%s", "ab", out)
	}
}
