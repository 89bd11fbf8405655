package onboard

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	"meshroot/provision/identity"
	"meshroot/provision/internal/persist"
	"meshroot/provision/pake"
)

// Lockout is the wrong-code policy.
type Lockout struct {
	// Free is the number of failed attempts allowed before lockouts start.
	Free int
	// Base is the first lockout; each further failure doubles it, up to Max.
	Base, Max time.Duration
}

// DefaultLockout allows 3 attempts, then locks for 2 s, 4 s, 8 s ... up to an hour. With 10^8
// codes that puts brute force at centuries.
var DefaultLockout = Lockout{Free: 3, Base: 2 * time.Second, Max: time.Hour}

func (l Lockout) after(failures int) time.Duration {
	k := failures - l.Free
	if k <= 0 {
		return 0
	}
	d := float64(l.Base) * math.Pow(2, float64(k-1))
	if d > float64(l.Max) {
		return l.Max
	}
	return time.Duration(d)
}

// DeviceConfig configures the device side.
type DeviceConfig struct {
	// Factory holds the serial, discriminator and the SPAKE2+ verifier.
	Factory *identity.Factory
	// StateDir keeps the attempt counter (attempts.json) across restarts.
	StateDir string
	// Lockout is the wrong-code policy (zero: DefaultLockout).
	Lockout Lockout
	// OnSetup receives the app's setup once the channel is up; an error goes back to the app.
	// It is called again with the same setup when the app retries, and must be idempotent.
	OnSetup func(ctx context.Context, s Setup) error
	// Progress reports what happened since the setup, for the app's status requests.
	Progress func() Progress
	// HandshakeTimeout bounds the handshake (default 60 s); IdleTimeout a paired session
	// without records (default 10 min).
	HandshakeTimeout, IdleTimeout time.Duration
	Logger                        *slog.Logger
	Now                           func() time.Time
	Rand                          io.Reader
}

type sessionState int

const (
	stParamsSent sessionState = iota + 1
	stPake2Sent
	stPaired
	stDead
)

type session struct {
	id       uint64
	state    sessionState
	verifier *pake.Verifier
	ch       *channel
	started  time.Time
	last     time.Time
	counted  bool // the Pake1 of this session was counted as an attempt
}

// attempts is the persisted wrong-code state.
type attempts struct {
	Failures    int       `json:"failures"`
	LockedUntil time.Time `json:"locked_until,omitzero"`
}

// Device is the device side of the protocol. Handle is safe for concurrent use (frames are
// processed one at a time).
type Device struct {
	cfg DeviceConfig
	log *slog.Logger

	mu   sync.Mutex
	cur  *session
	att  attempts
	path string
}

// NewDevice returns the device side; it loads the attempt counter from cfg.StateDir.
func NewDevice(cfg DeviceConfig) (*Device, error) {
	if cfg.Factory == nil {
		return nil, errors.New("onboard: no factory data")
	}
	if err := cfg.Factory.Validate(); err != nil {
		return nil, fmt.Errorf("onboard: %w", err)
	}
	if cfg.Lockout == (Lockout{}) {
		cfg.Lockout = DefaultLockout
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = time.Minute
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 10 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Progress == nil {
		cfg.Progress = func() Progress { return Progress{Phase: PhasePaired} }
	}
	d := &Device{cfg: cfg, log: cfg.Logger.With("component", "onboard")}
	if cfg.StateDir != "" {
		d.path = filepath.Join(cfg.StateDir, "attempts.json")
		b, err := os.ReadFile(d.path)
		switch {
		case err == nil:
			if err := json.Unmarshal(b, &d.att); err != nil {
				// A damaged counter must not reset the lockout: assume the worst.
				d.att = attempts{Failures: cfg.Lockout.Free + 1, LockedUntil: cfg.Now().Add(cfg.Lockout.Base)}
				d.log.Warn("attempt counter damaged; locking pairing briefly", "err", err.Error())
			}
		case errors.Is(err, fs.ErrNotExist):
		default:
			return nil, fmt.Errorf("onboard: %w", err)
		}
	}
	return d, nil
}

func (d *Device) saveAttempts() error {
	if d.path == "" {
		return nil
	}
	b, _ := json.Marshal(d.att)
	return persist.WriteFile(d.path, b, 0o600)
}

// Session says how far the current pairing session got: PhasePairing while a handshake is
// under way, PhasePaired once the app has proved the setup code, "" when there is none (or it
// timed out). It must not be called from the DeviceConfig callbacks (they run under the
// device's lock).
func (d *Device) Session() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.expire(d.cfg.Now())
	switch {
	case d.cur == nil:
		return ""
	case d.cur.state == stPaired:
		return PhasePaired
	}
	return PhasePairing
}

// Attempts returns the failed-attempt count and the lockout's end.
func (d *Device) Attempts() (failures int, lockedUntil time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.att.Failures, d.att.LockedUntil
}

func statusFrame(session uint64, code StatusCode, retryAfter time.Duration, msg string) []byte {
	return Frame{Type: TypeStatus, Session: session, Body: status{Code: code, RetryAfter: uint32(math.Ceil(retryAfter.Seconds())), Msg: msg}.encode()}.Encode()
}

// Handle processes one frame from the app and returns the answer frame. It never fails: errors
// are answered with a Status frame.
func (d *Device) Handle(ctx context.Context, in []byte) []byte {
	f, err := DecodeFrame(in)
	if err != nil {
		d.log.Info("pairing message refused", "reason", err.Error())
		return statusFrame(0, StatusBadMessage, 0, err.Error())
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.cfg.Now()
	d.expire(now)
	switch f.Type {
	case TypePBKDFParamRequest:
		return d.paramRequest(now, in, f)
	case TypePake1:
		return d.pake1(now, f)
	case TypePake3:
		return d.pake3(now, f)
	case TypeSealed:
		return d.sealed(ctx, now, f)
	case TypeStatus:
		return d.appStatus(f)
	}
	d.log.Info("pairing message refused", "type", f.Type.String(), "reason", "not an app message")
	return statusFrame(f.Session, StatusUnexpected, 0, f.Type.String()+" is not an app message")
}

// expire drops a session whose handshake took too long or that went idle.
func (d *Device) expire(now time.Time) {
	s := d.cur
	if s == nil {
		return
	}
	if (s.state != stPaired && now.Sub(s.started) > d.cfg.HandshakeTimeout) || (s.state == stPaired && now.Sub(s.last) > d.cfg.IdleTimeout) || s.state == stDead {
		d.drop(now, "timed out")
	}
}

// drop ends the current session; an attempt that got a Pake2 and never confirmed is logged
// as the failure it is.
func (d *Device) drop(now time.Time, why string) {
	s := d.cur
	d.cur = nil
	if s == nil || s.state != stPake2Sent {
		return
	}
	d.logFailure(now, "pairing attempt failed: never confirmed ("+why+"; wrong setup code on the app, or a guess being tested)")
}

func (d *Device) logFailure(now time.Time, msg string) {
	lock := d.att.LockedUntil.Sub(now)
	d.log.Warn(msg, "failures", d.att.Failures, "lockout_s", max(0, math.Ceil(lock.Seconds())))
}

// appStatus handles the app's abort of the handshake (it found confirmV wrong).
func (d *Device) appStatus(f Frame) []byte {
	s, refusal := d.session(f)
	if refusal != nil {
		return refusal
	}
	st, err := decodeStatus(f.Body)
	if err != nil || st.Code == StatusOK || s.state != stPake2Sent {
		return statusFrame(f.Session, StatusUnexpected, 0, "Status not expected now")
	}
	d.drop(d.cfg.Now(), "the app reported "+st.Code.String())
	return statusFrame(f.Session, StatusOK, 0, "session closed")
}

// session returns the current session if f belongs to it.
func (d *Device) session(f Frame) (*session, []byte) {
	if d.cur == nil || f.Session == 0 || d.cur.id != f.Session {
		d.log.Info("pairing message refused", "type", f.Type.String(), "reason", "unknown session")
		return nil, statusFrame(f.Session, StatusUnknownSession, 0, "no such session (expired or replaced)")
	}
	return d.cur, nil
}

func (d *Device) lockedOut(now time.Time, session uint64) []byte {
	if now.Before(d.att.LockedUntil) {
		left := d.att.LockedUntil.Sub(now)
		d.log.Info("pairing refused: locked out", "failures", d.att.Failures, "retry_after_s", math.Ceil(left.Seconds()))
		return statusFrame(session, StatusLockedOut, left, fmt.Sprintf("too many failed attempts; retry in %ds", int(math.Ceil(left.Seconds()))))
	}
	return nil
}

func (d *Device) paramRequest(now time.Time, raw []byte, f Frame) []byte {
	if f.Session != 0 || f.Counter != 0 || len(f.Body) != nonceLen {
		return statusFrame(0, StatusBadMessage, 0, "PBKDFParamRequest: want session 0 and a 32-byte nonce")
	}
	if r := d.lockedOut(now, 0); r != nil {
		return r
	}
	if d.cur != nil && d.cur.state == stPaired {
		d.log.Info("pairing refused: another app is paired")
		return statusFrame(0, StatusBusy, 0, "another app is paired with this device")
	}
	if d.cur != nil {
		d.log.Info("pairing session replaced by a new one")
		d.drop(now, "replaced by a new session")
	}
	var idb [8]byte
	var id uint64
	for id == 0 {
		if _, err := io.ReadFull(d.cfg.Rand, idb[:]); err != nil {
			return statusFrame(0, StatusInternal, 0, "no randomness")
		}
		id = binary.BigEndian.Uint64(idb[:])
	}
	devNonce := make([]byte, nonceLen)
	if _, err := io.ReadFull(d.cfg.Rand, devNonce); err != nil {
		return statusFrame(0, StatusInternal, 0, "no randomness")
	}
	fa := d.cfg.Factory
	resp := Frame{Type: TypePBKDFParamResponse, Session: id, Body: paramResponse{
		DeviceNonce: devNonce, Iterations: uint32(fa.Verifier.Iterations), Salt: fa.Verifier.Salt,
		Serial: fa.Serial, Discriminator: fa.Discriminator,
	}.encode()}.Encode()
	params := pake.Params{Suite: pake.P256SHA256HMAC, Context: pakeContext(raw, resp), IDProver: []byte(IDProver), IDVerifier: []byte(fa.Serial)}
	v, err := pake.NewVerifier(params, fa.Verifier.W0, fa.Verifier.L)
	if err != nil {
		return statusFrame(0, StatusInternal, 0, "verifier unusable")
	}
	d.cur = &session{id: id, state: stParamsSent, verifier: v, started: now, last: now}
	d.log.Info("pairing started", "session", fmt.Sprintf("%016x", id))
	return resp
}

func (d *Device) pake1(now time.Time, f Frame) []byte {
	s, refusal := d.session(f)
	if refusal != nil {
		return refusal
	}
	if s.state != stParamsSent {
		d.log.Info("pairing message refused", "type", "Pake1", "reason", "unexpected in this state (replay?)")
		return statusFrame(f.Session, StatusUnexpected, 0, "Pake1 not expected now")
	}
	if r := d.lockedOut(now, f.Session); r != nil {
		s.state = stDead
		return r
	}
	// Count the attempt before answering: the answer lets the peer test one guess.
	d.att.Failures++
	if lock := d.cfg.Lockout.after(d.att.Failures); lock > 0 {
		d.att.LockedUntil = now.Add(lock)
	}
	if err := d.saveAttempts(); err != nil {
		d.att.Failures--
		s.state = stDead
		d.log.Error("pairing refused: cannot persist the attempt counter", "err", err.Error())
		return statusFrame(f.Session, StatusInternal, 0, "cannot record the attempt")
	}
	s.counted = true
	shareV, confirmV, err := s.verifier.Respond(d.cfg.Rand, f.Body)
	if err != nil {
		s.state = stDead
		d.log.Info("pairing failed", "reason", err.Error(), "failures", d.att.Failures)
		return statusFrame(f.Session, StatusBadMessage, 0, "Pake1: "+err.Error())
	}
	s.state, s.last = stPake2Sent, now
	return Frame{Type: TypePake2, Session: f.Session, Body: append(shareV, confirmV...)}.Encode()
}

func (d *Device) pake3(now time.Time, f Frame) []byte {
	s, refusal := d.session(f)
	if refusal != nil {
		return refusal
	}
	if s.state != stPake2Sent {
		d.log.Info("pairing message refused", "type", "Pake3", "reason", "unexpected in this state (replay?)")
		return statusFrame(f.Session, StatusUnexpected, 0, "Pake3 not expected now")
	}
	k, err := s.verifier.Finish(f.Body)
	if err != nil {
		s.state = stDead
		d.logFailure(now, "pairing failed: key confirmation mismatch (wrong setup code or tampered message)")
		return statusFrame(f.Session, StatusConfirmationFailed, max(d.att.LockedUntil.Sub(now), 0), "confirmation failed")
	}
	ch, err := newChannel(s.id, k, true)
	if err != nil {
		s.state = stDead
		return statusFrame(f.Session, StatusInternal, 0, "channel")
	}
	d.att = attempts{}
	if err := d.saveAttempts(); err != nil {
		d.log.Error("cannot clear the attempt counter", "err", err.Error())
	}
	s.ch, s.state, s.last = ch, stPaired, now
	d.log.Info("paired with the app", "session", fmt.Sprintf("%016x", s.id))
	return statusFrame(f.Session, StatusOK, 0, "paired")
}

func (d *Device) sealed(ctx context.Context, now time.Time, f Frame) []byte {
	s, refusal := d.session(f)
	if refusal != nil {
		return refusal
	}
	if s.state != stPaired {
		return statusFrame(f.Session, StatusUnexpected, 0, "not paired")
	}
	pt, err := s.ch.open(f)
	if errors.Is(err, ErrReplay) {
		d.log.Info("pairing record refused", "reason", err.Error())
		return statusFrame(f.Session, StatusReplay, 0, err.Error())
	}
	if err != nil {
		d.log.Info("pairing record refused", "reason", err.Error())
		return statusFrame(f.Session, StatusBadMessage, 0, err.Error())
	}
	s.last = now
	var req Request
	resp := Response{OK: true}
	if err := decodeJSON(pt, &req); err != nil {
		resp = Response{Error: err.Error()}
	} else {
		switch req.Op {
		case "setup":
			if req.Setup == nil {
				resp = Response{Error: "setup: missing"}
				break
			}
			if err := req.Setup.Validate(); err != nil {
				resp = Response{Error: "setup: " + err.Error()}
				break
			}
			if d.cfg.OnSetup != nil {
				// The callback persists; it must not hold up the session lock for long.
				if err := d.cfg.OnSetup(ctx, *req.Setup); err != nil {
					resp = Response{Error: "setup: " + err.Error()}
					break
				}
			}
			d.log.Info("site setup received", "setup", *req.Setup)
			p := d.cfg.Progress()
			resp.Progress = &p
		case "status":
			p := d.cfg.Progress()
			resp.Progress = &p
		default:
			resp = Response{Error: fmt.Sprintf("unknown op %q", req.Op)}
		}
	}
	b, _ := json.Marshal(resp)
	out, err := s.ch.seal(b)
	if err != nil {
		return statusFrame(f.Session, StatusInternal, 0, err.Error())
	}
	return out.Encode()
}
