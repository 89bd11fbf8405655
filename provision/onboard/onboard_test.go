package onboard

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"meshroot/internal/testenv"
	"meshroot/provision/identity"
	"meshroot/provision/pake"
)

const testCode = identity.SetupCode(20202021)

var testSetup = Setup{
	ClaimToken: "mrc_claimtokenclaimtokenclaimtok", CloudURL: "https://10.0.0.1:8443", CAPin: strings.Repeat("ab", 32),
	SiteName: "Berlin office", WiFiSSID: "Meshroot", WiFiPassphrase: "correct horse battery", Country: "DE",
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type syncBuffer = testenv.Buffer

type fixture struct {
	dev    *Device
	label  identity.Payload
	clock  *clock
	logs   *syncBuffer
	dir    string
	setups []Setup
	mu     sync.Mutex
}

func newFixture(t *testing.T, lock Lockout) *fixture {
	t.Helper()
	f, label, err := identity.NewFactory("MR-0001", "test", testCode, 0x0f00, pake.MinIterations, nil)
	if err != nil {
		t.Fatal(err)
	}
	fx := &fixture{label: label, clock: &clock{t: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}, logs: &syncBuffer{}, dir: t.TempDir()}
	fx.dev = fx.newDevice(t, f, lock)
	return fx
}

func (fx *fixture) newDevice(t *testing.T, f *identity.Factory, lock Lockout) *Device {
	t.Helper()
	d, err := NewDevice(DeviceConfig{
		Factory: f, StateDir: fx.dir, Lockout: lock, Now: fx.clock.now,
		Logger: slog.New(slog.NewJSONHandler(fx.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnSetup: func(ctx context.Context, s Setup) error {
			fx.mu.Lock()
			fx.setups = append(fx.setups, s)
			fx.mu.Unlock()
			return nil
		},
		Progress: func() Progress { return Progress{Phase: PhaseConfigured, SiteID: "berlin-1"} },
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// direct carries frames to the device in process; tamper, when set, may change each frame in
// either direction, and every frame is recorded.
type direct struct {
	d      *Device
	tamper func(dir string, f []byte) []byte
	sent   [][]byte
	got    [][]byte
}

func (tr *direct) RoundTrip(ctx context.Context, f []byte) ([]byte, error) {
	if tr.tamper != nil {
		f = tr.tamper("to-device", append([]byte(nil), f...))
	}
	tr.sent = append(tr.sent, f)
	out := tr.d.Handle(ctx, f)
	if tr.tamper != nil {
		out = tr.tamper("to-app", out)
	}
	tr.got = append(tr.got, out)
	return out, nil
}

func label(code identity.SetupCode, fx *fixture) identity.Payload {
	l := fx.label
	l.SetupCode = code
	return l
}

func statusOf(t *testing.T, raw []byte) StatusCode {
	t.Helper()
	f, err := DecodeFrame(raw)
	if err != nil || f.Type != TypeStatus {
		t.Fatalf("answer = %v, %v; want a Status frame", f.Type, err)
	}
	s, err := decodeStatus(f.Body)
	if err != nil {
		t.Fatal(err)
	}
	return s.Code
}

func TestPairAndSetup(t *testing.T) {
	fx := newFixture(t, Lockout{})
	ctx := context.Background()
	tr := &direct{d: fx.dev}
	s, err := Pair(ctx, tr, fx.label)
	if err != nil {
		t.Fatalf("Pair() = %v", err)
	}
	p, err := s.Setup(ctx, testSetup)
	if err != nil {
		t.Fatalf("Setup() = %v", err)
	}
	if p == nil || p.Phase != PhaseConfigured {
		t.Errorf("Setup() progress = %+v; want configured", p)
	}
	if len(fx.setups) != 1 || fx.setups[0] != testSetup {
		t.Errorf("device got setups %v; want the app's", fx.setups)
	}
	// A retried setup (new record) is fine; status works; bad setups are refused with reasons.
	if _, err := s.Setup(ctx, testSetup); err != nil {
		t.Errorf("Setup() again = %v", err)
	}
	if p, err := s.Status(ctx); err != nil || p.SiteID != "berlin-1" {
		t.Errorf("Status() = %+v, %v", p, err)
	}
	bad := testSetup
	bad.WiFiPassphrase = "short"
	if _, err := s.call(ctx, Request{Op: "setup", Setup: &bad}); err == nil || !strings.Contains(err.Error(), "wifi_passphrase") {
		t.Errorf("setup with a short passphrase = %v; want a wifi_passphrase error", err)
	}
	if _, err := s.call(ctx, Request{Op: "launch"}); err == nil {
		t.Errorf("unknown op = nil error")
	}
	if n, _ := fx.dev.Attempts(); n != 0 {
		t.Errorf("failures after a good pairing = %d; want 0", n)
	}
	// A second app cannot barge in while this one is paired.
	if _, err := Pair(ctx, &direct{d: fx.dev}, fx.label); !isStatus(err, StatusBusy) {
		t.Errorf("Pair() while another app is paired = %v; want busy", err)
	}
	noSecrets(t, fx)
}

func isStatus(err error, c StatusCode) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code == c
}

// noSecrets fails if the device's logs or state files hold a secret.
func noSecrets(t *testing.T, fx *fixture) {
	t.Helper()
	secrets := map[string]string{"setup code": testCode.Digits(), "claim token": testSetup.ClaimToken, "wifi passphrase": testSetup.WiFiPassphrase}
	logs := fx.logs.String()
	for name, v := range secrets {
		if strings.Contains(logs, v) {
			t.Errorf("device logs hold the %s", name)
		}
	}
	filepath.WalkDir(fx.dir, func(p string, de os.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		b, _ := os.ReadFile(p)
		for name, v := range secrets {
			if bytes.Contains(b, []byte(v)) {
				t.Errorf("%s holds the %s", p, name)
			}
		}
		return nil
	})
}

func TestWrongCodeLockoutPersists(t *testing.T) {
	lock := Lockout{Free: 2, Base: 10 * time.Second, Max: 40 * time.Second}
	fx := newFixture(t, lock)
	ctx := context.Background()
	wrong := label(20202022, fx)
	for i := 1; i <= 2; i++ {
		if _, err := Pair(ctx, &direct{d: fx.dev}, wrong); !errors.Is(err, ErrWrongCode) {
			t.Fatalf("Pair(wrong code) #%d = %v; want ErrWrongCode", i, err)
		}
		if n, until := fx.dev.Attempts(); n != i || !until.IsZero() {
			t.Errorf("after %d wrong codes: failures %d, locked until %v; want %d, no lockout", i, n, until, i)
		}
	}
	// The third failure locks for Base.
	if _, err := Pair(ctx, &direct{d: fx.dev}, wrong); !errors.Is(err, ErrWrongCode) {
		t.Fatal(err)
	}
	_, until := fx.dev.Attempts()
	if want := fx.clock.now().Add(10 * time.Second); !until.Equal(want) {
		t.Errorf("locked until %v; want %v", until, want)
	}
	// Even the right code is refused while locked out, with the time left.
	_, err := Pair(ctx, &direct{d: fx.dev}, fx.label)
	var se *StatusError
	if !errors.As(err, &se) || se.Code != StatusLockedOut || se.RetryAfter != 10*time.Second {
		t.Fatalf("Pair(right code) while locked = %v; want locked out, retry after 10s", err)
	}
	// A restart does not lift the lockout.
	f, _ := identity.ParseFactory(mustMarshal(t, fx))
	fx.dev = fx.newDevice(t, f, lock)
	if _, err := Pair(ctx, &direct{d: fx.dev}, fx.label); !isStatus(err, StatusLockedOut) {
		t.Fatalf("Pair() after restart while locked = %v; want locked out", err)
	}
	// After the lockout, another wrong code doubles it.
	fx.clock.add(10 * time.Second)
	if _, err := Pair(ctx, &direct{d: fx.dev}, wrong); !errors.Is(err, ErrWrongCode) {
		t.Fatalf("Pair(wrong) after lockout = %v", err)
	}
	if _, until := fx.dev.Attempts(); !until.Equal(fx.clock.now().Add(20 * time.Second)) {
		t.Errorf("second lockout until %v; want +20s", until)
	}
	// Exponential up to Max.
	for _, want := range []time.Duration{40 * time.Second, 40 * time.Second} {
		fx.clock.add(time.Hour)
		Pair(ctx, &direct{d: fx.dev}, wrong)
		if _, until := fx.dev.Attempts(); !until.Equal(fx.clock.now().Add(want)) {
			t.Errorf("lockout until %v; want +%v", until, want)
		}
	}
	// The right code after the lockout pairs and clears the counter.
	fx.clock.add(time.Hour)
	if _, err := Pair(ctx, &direct{d: fx.dev}, fx.label); err != nil {
		t.Fatalf("Pair(right code) after lockout = %v", err)
	}
	if n, until := fx.dev.Attempts(); n != 0 || !until.IsZero() {
		t.Errorf("after success: failures %d, until %v; want 0, none", n, until)
	}
	logs := fx.logs.String()
	if !strings.Contains(logs, "pairing attempt failed") || !strings.Contains(logs, `"failures":3,"lockout_s":10`) || !strings.Contains(logs, "locked out") {
		t.Errorf("logs do not record the failures and the lockout:\n%s", logs)
	}
	noSecrets(t, fx)
}

func mustMarshal(t *testing.T, fx *fixture) []byte {
	b, err := fx.dev.cfg.Factory.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAbandonedAttemptCounts: a peer that takes the Pake2 (one guess tested offline against
// confirmV) and never sends Pake3 has still used an attempt.
func TestAbandonedAttemptCounts(t *testing.T) {
	fx := newFixture(t, Lockout{Free: 1, Base: time.Minute, Max: time.Hour})
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		tr := &direct{d: fx.dev, tamper: func(dir string, f []byte) []byte {
			if dir == "to-device" && Type(f[1]) == TypePake3 {
				return Frame{Type: TypePBKDFParamRequest, Body: make([]byte, nonceLen)}.Encode()[:3] // never deliver Pake3
			}
			return f
		}}
		Pair(ctx, tr, label(11223344, fx))
	}
	if n, until := fx.dev.Attempts(); n != 2 || until.IsZero() {
		t.Errorf("after 2 abandoned attempts: failures %d, until %v; want 2 and a lockout", n, until)
	}
}

func TestTamperedConfirmations(t *testing.T) {
	ctx := context.Background()
	flip := func(typ Type, dir string, off int) func(string, []byte) []byte {
		return func(d string, f []byte) []byte {
			if d == dir && len(f) > headerLen && Type(f[1]) == typ {
				f[len(f)-1-off] ^= 0x01
			}
			return f
		}
	}
	for _, tc := range []struct {
		name   string
		tamper func(string, []byte) []byte
		check  func(error) bool
	}{
		{"confirmV", flip(TypePake2, "to-app", 0), func(err error) bool { return errors.Is(err, ErrWrongCode) }},
		{"shareV", flip(TypePake2, "to-app", 40), func(err error) bool { return err != nil }},
		{"confirmP", flip(TypePake3, "to-device", 0), func(err error) bool { return isStatus(err, StatusConfirmationFailed) }},
		{"shareP", flip(TypePake1, "to-device", 5), func(err error) bool { return err != nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixture(t, Lockout{})
			tr := &direct{d: fx.dev, tamper: tc.tamper}
			s, err := Pair(ctx, tr, fx.label)
			if s != nil || !tc.check(err) {
				t.Fatalf("Pair() with tampered %s = %v", tc.name, err)
			}
			if n, _ := fx.dev.Attempts(); n != 1 {
				t.Errorf("failures = %d; want 1", n)
			}
			// The device is not left paired: a clean pairing works.
			if _, err := Pair(ctx, &direct{d: fx.dev}, fx.label); err != nil {
				t.Errorf("clean Pair() afterwards = %v", err)
			}
		})
	}
}

func TestReplays(t *testing.T) {
	fx := newFixture(t, Lockout{})
	ctx := context.Background()
	tr := &direct{d: fx.dev}
	s, err := Pair(ctx, tr, fx.label)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Setup(ctx, testSetup); err != nil {
		t.Fatal(err)
	}
	pake1, pake3, setupRec := tr.sent[1], tr.sent[2], tr.sent[3]
	for _, tc := range []struct {
		name  string
		frame []byte
		want  StatusCode
	}{
		{"Pake1 again", pake1, StatusUnexpected},
		{"Pake3 again", pake3, StatusUnexpected},
		{"setup record again", setupRec, StatusReplay},
		{"PBKDFParamRequest again", tr.sent[0], StatusBusy},
		{"setup record with a new counter", func() []byte {
			f := append([]byte(nil), setupRec...)
			f[13] += 5
			return f
		}(), StatusBadMessage},
		{"setup record for another session", func() []byte {
			f := append([]byte(nil), setupRec...)
			f[2] ^= 0xff
			return f
		}(), StatusUnknownSession},
		{"device's own answer", tr.got[3], StatusReplay},
		{"device's own answer, counter raised", func() []byte {
			f := append([]byte(nil), tr.got[3]...)
			f[13] += 50
			return f
		}(), StatusBadMessage},
		{"garbage", []byte("hello"), StatusBadMessage},
	} {
		if got := statusOf(t, fx.dev.Handle(ctx, tc.frame)); got != tc.want {
			t.Errorf("Handle(%s) = %v; want %v", tc.name, got, tc.want)
		}
	}
	if len(fx.setups) != 1 {
		t.Errorf("device applied %d setups; want 1 (replays refused)", len(fx.setups))
	}
	// The session still works after the refused replays.
	if _, err := s.Status(ctx); err != nil {
		t.Errorf("Status() after replays = %v", err)
	}
	// The app refuses a replayed answer too.
	if _, err := s.ch.open(mustFrame(t, tr.got[3])); !errors.Is(err, ErrReplay) {
		t.Errorf("app open(replayed answer) = %v; want ErrReplay", err)
	}
	// Once the session idles out, its frames belong to no session.
	fx.clock.add(11 * time.Minute)
	if got := statusOf(t, fx.dev.Handle(ctx, setupRec)); got != StatusUnknownSession {
		t.Errorf("Handle(old record after idle timeout) = %v; want unknown session", got)
	}
	// Replaying a whole old handshake into a new session fails: its Pake1 names the old session.
	tr2 := &direct{d: fx.dev}
	if _, err := Pair(ctx, tr2, fx.label); err != nil {
		t.Fatal(err)
	}
	if got := statusOf(t, fx.dev.Handle(ctx, pake1)); got != StatusUnknownSession {
		t.Errorf("Handle(old session's Pake1) = %v; want unknown session", got)
	}
}

func mustFrame(t *testing.T, b []byte) Frame {
	f, err := DecodeFrame(b)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestRecordRetry: a lost request or a lost answer during setup is retried with a new record.
func TestRecordRetry(t *testing.T) {
	fx := newFixture(t, Lockout{})
	ctx := context.Background()
	lose := &lossy{d: fx.dev}
	s, err := Pair(ctx, lose, fx.label)
	if err != nil {
		t.Fatal(err)
	}
	lose.dropRequest, lose.dropAnswer = 1, 1 // the first record never arrives; the second's answer is lost
	if _, err := s.Setup(ctx, testSetup); err != nil {
		t.Fatalf("Setup() over a lossy transport = %v", err)
	}
	if len(fx.setups) != 2 || fx.setups[0] != testSetup {
		t.Errorf("device applied %d setups; want 2 identical (one answer lost)", len(fx.setups))
	}
	if _, err := s.Status(ctx); err != nil {
		t.Errorf("Status() afterwards = %v", err)
	}
}

type lossy struct {
	d                       *Device
	dropRequest, dropAnswer int
}

func (l *lossy) RoundTrip(ctx context.Context, f []byte) ([]byte, error) {
	if l.dropRequest > 0 {
		l.dropRequest--
		return nil, errors.New("request lost")
	}
	out := l.d.Handle(ctx, f)
	if l.dropAnswer > 0 {
		l.dropAnswer--
		return nil, errors.New("answer lost")
	}
	return out, nil
}

func TestHandshakeTimeoutAndWrongDevice(t *testing.T) {
	fx := newFixture(t, Lockout{})
	ctx := context.Background()
	other := fx.label
	other.Serial = "MR-9999"
	if _, err := Pair(ctx, &direct{d: fx.dev}, other); !errors.Is(err, ErrWrongDevice) {
		t.Errorf("Pair(label of another device) = %v; want ErrWrongDevice", err)
	}
	// A handshake that stalls past the timeout is dropped.
	stall := &direct{d: fx.dev, tamper: func(dir string, f []byte) []byte {
		if dir == "to-device" && Type(f[1]) == TypePake1 {
			fx.clock.add(2 * time.Minute)
		}
		return f
	}}
	if _, err := Pair(ctx, stall, fx.label); !isStatus(err, StatusUnknownSession) {
		t.Errorf("Pair() stalled past the handshake timeout = %v; want unknown session", err)
	}
}

func TestHTTPTransport(t *testing.T) {
	fx := newFixture(t, Lockout{})
	srv := httptest.NewServer(fx.dev.HTTPHandler())
	defer srv.Close()
	ctx := context.Background()
	s, err := Pair(ctx, &HTTPTransport{URL: srv.URL}, fx.label)
	if err != nil {
		t.Fatalf("Pair() over HTTP = %v", err)
	}
	if _, err := s.Setup(ctx, testSetup); err != nil {
		t.Fatalf("Setup() over HTTP = %v", err)
	}
	resp, err := srv.Client().Get(srv.URL + HTTPPath + "/info")
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("GET info = %v", err)
	}
	resp.Body.Close()
	big := bytes.Repeat([]byte{1}, MaxFrame+10)
	resp, err = srv.Client().Post(srv.URL+HTTPPath, "application/octet-stream", bytes.NewReader(big))
	if err != nil || resp.StatusCode != 413 {
		t.Errorf("POST oversized frame = %v, %d; want 413", err, resp.StatusCode)
	}
	resp.Body.Close()
}

func TestFrameRoundTrip(t *testing.T) {
	f := Frame{Type: TypePake2, Session: 0x0102030405060708, Counter: 9, Body: []byte("body")}
	got, err := DecodeFrame(f.Encode())
	if err != nil || got.Type != f.Type || got.Session != f.Session || got.Counter != f.Counter || string(got.Body) != "body" {
		t.Errorf("DecodeFrame(Encode(f)) = %+v, %v", got, err)
	}
	for _, bad := range [][]byte{nil, make([]byte, 15), append([]byte{2}, make([]byte, 15)...), Frame{Type: 0x7f}.Encode(), append(f.Encode(), 0)} {
		if _, err := DecodeFrame(bad); !errors.Is(err, ErrFrame) {
			t.Errorf("DecodeFrame(%x) = %v; want ErrFrame", bad, err)
		}
	}
	pr := paramResponse{DeviceNonce: make([]byte, 32), Iterations: 1000, Salt: []byte("saltsaltsaltsalt"), Serial: "MR-1", Discriminator: 7}
	if got, err := decodeParamResponse(pr.encode()); err != nil || got.Serial != "MR-1" || got.Iterations != 1000 || got.Discriminator != 7 {
		t.Errorf("decodeParamResponse round trip = %+v, %v", got, err)
	}
}

func FuzzDecodeFrame(f *testing.F) {
	f.Add(Frame{Type: TypePBKDFParamRequest, Body: make([]byte, 32)}.Encode())
	f.Add(Frame{Type: TypePBKDFParamResponse, Session: 1, Body: paramResponse{DeviceNonce: make([]byte, 32), Iterations: 1000, Salt: make([]byte, 16), Serial: "A", Discriminator: 1}.encode()}.Encode())
	f.Add(Frame{Type: TypeStatus, Body: status{Code: StatusLockedOut, RetryAfter: 3, Msg: "x"}.encode()}.Encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := DecodeFrame(b)
		if err != nil {
			return
		}
		if !bytes.Equal(fr.Encode(), b) {
			t.Fatalf("Encode(DecodeFrame(b)) != b")
		}
		decodeParamResponse(fr.Body)
		decodeStatus(fr.Body)
	})
}

// FuzzDeviceHandle drives a device with a pairing prefix (so the fuzzer can reach every state)
// followed by arbitrary frames; the device must answer every frame with a frame and never panic.
func FuzzDeviceHandle(f *testing.F) {
	fac, lbl, err := identity.NewFactory("MR-0001", "", testCode, 1, pake.MinIterations, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(uint8(0), []byte{})
	f.Add(uint8(1), Frame{Type: TypePake1, Session: 1, Body: make([]byte, 65)}.Encode())
	f.Add(uint8(3), Frame{Type: TypeSealed, Session: 1, Counter: 1, Body: make([]byte, 40)}.Encode())
	f.Fuzz(func(t *testing.T, steps uint8, extra []byte) {
		d, err := NewDevice(DeviceConfig{Factory: fac, Lockout: Lockout{Free: 1000, Base: time.Second, Max: time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		// Run the first steps%4 frames of a genuine pairing, then the fuzz frame, raw and with
		// the live session id patched in.
		tr := &stopAfter{d: d, n: int(steps % 4)}
		Pair(ctx, tr, lbl)
		for _, fr := range [][]byte{extra, tr.patch(extra)} {
			out := d.Handle(ctx, fr)
			if _, err := DecodeFrame(out); err != nil {
				t.Fatalf("Handle() answered an undecodable frame: %v", err)
			}
		}
	})
}

type stopAfter struct {
	d       *Device
	n       int
	session uint64
}

func (s *stopAfter) RoundTrip(ctx context.Context, f []byte) ([]byte, error) {
	if s.n == 0 {
		return nil, errors.New("stop")
	}
	s.n--
	out := s.d.Handle(ctx, f)
	if fr, err := DecodeFrame(out); err == nil && fr.Session != 0 {
		s.session = fr.Session
	}
	return out, nil
}

func (s *stopAfter) patch(b []byte) []byte {
	if len(b) < headerLen {
		return b
	}
	p := append([]byte(nil), b...)
	for i := 0; i < 8; i++ {
		p[2+i] = byte(s.session >> (56 - 8*i))
	}
	return p
}

// TestSessionPhase: Device.Session follows a pairing: none, "pairing" during the handshake (seen
// from inside it), "paired" after the app's confirmation, none again once it idles out.
func TestSessionPhase(t *testing.T) {
	fx := newFixture(t, Lockout{})
	ctx := context.Background()
	if got := fx.dev.Session(); got != "" {
		t.Errorf("Session() before pairing = %q; want none", got)
	}
	var during []string
	tr := &direct{d: fx.dev, tamper: func(dir string, f []byte) []byte {
		if dir == "to-device" && (Type(f[1]) == TypePake1 || Type(f[1]) == TypePake3) {
			during = append(during, fx.dev.Session())
		}
		return f
	}}
	s, err := Pair(ctx, tr, fx.label)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{PhasePairing, PhasePairing}; !slices.Equal(during, want) {
		t.Errorf("Session() during the handshake = %q; want %q", during, want)
	}
	if got := fx.dev.Session(); got != PhasePaired {
		t.Errorf("Session() after pairing = %q; want %q", got, PhasePaired)
	}
	if _, err := s.Setup(ctx, testSetup); err != nil {
		t.Fatal(err)
	}
	fx.clock.add(11 * time.Minute) // past the idle timeout
	if got := fx.dev.Session(); got != "" {
		t.Errorf("Session() after the idle timeout = %q; want none", got)
	}
}
