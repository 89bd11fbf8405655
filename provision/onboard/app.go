package onboard

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"meshroot/provision/identity"
	"meshroot/provision/pake"
)

// Transport carries one frame to the device and returns its answer.
type Transport interface {
	RoundTrip(ctx context.Context, frame []byte) ([]byte, error)
}

// Errors the app side returns.
var (
	// ErrWrongCode: the device's confirmation did not verify — the setup code is wrong (or
	// someone tampered with the exchange).
	ErrWrongCode = errors.New("onboard: the device did not confirm the setup code (wrong code?)")
	// ErrWrongDevice: the device answering is not the one on the label.
	ErrWrongDevice = errors.New("onboard: the device answering is not the one on the label")
)

// StatusError is a Status frame other than ok from the device.
type StatusError struct {
	Code       StatusCode
	RetryAfter time.Duration
	Msg        string
}

func (e *StatusError) Error() string {
	s := "onboard: device says " + e.Code.String()
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	return s
}

// Session is the app's paired session with a device.
type Session struct {
	t      Transport
	mu     sync.Mutex
	ch     *channel
	Serial string
}

// Pair runs the handshake with the device the label's payload describes.
func Pair(ctx context.Context, t Transport, label identity.Payload) (*Session, error) {
	return pair(ctx, t, label, rand.Reader)
}

func pair(ctx context.Context, t Transport, label identity.Payload, rnd io.Reader) (*Session, error) {
	if err := label.Validate(); err != nil {
		return nil, err
	}
	nonce := make([]byte, nonceLen)
	if _, err := io.ReadFull(rnd, nonce); err != nil {
		return nil, err
	}
	req := Frame{Type: TypePBKDFParamRequest, Body: nonce}.Encode()
	respRaw, resp, err := exchange(ctx, t, req, TypePBKDFParamResponse)
	if err != nil {
		return nil, err
	}
	pr, err := decodeParamResponse(resp.Body)
	if err != nil {
		return nil, err
	}
	if pr.Serial != label.Serial || pr.Discriminator != label.Discriminator {
		return nil, fmt.Errorf("%w: it is %s/%d, the label says %s/%d", ErrWrongDevice, pr.Serial, pr.Discriminator, label.Serial, label.Discriminator)
	}
	if resp.Session == 0 {
		return nil, fmt.Errorf("%w: session id 0", ErrFrame)
	}
	w0, w1, err := pake.W0W1(uint32(label.SetupCode), pr.Salt, int(pr.Iterations))
	if err != nil {
		return nil, fmt.Errorf("onboard: device's PBKDF parameters: %w", err)
	}
	params := pake.Params{Suite: pake.P256SHA256HMAC, Context: pakeContext(req, respRaw), IDProver: []byte(IDProver), IDVerifier: []byte(pr.Serial)}
	p, err := pake.NewProver(params, w0, w1)
	if err != nil {
		return nil, err
	}
	shareP, err := p.Start(rnd)
	if err != nil {
		return nil, err
	}
	_, p2, err := exchange(ctx, t, Frame{Type: TypePake1, Session: resp.Session, Body: shareP}.Encode(), TypePake2)
	if err != nil {
		return nil, err
	}
	if p2.Session != resp.Session || len(p2.Body) != pake.PointSize+32 {
		return nil, fmt.Errorf("%w: Pake2", ErrFrame)
	}
	confirmP, k, err := p.Finish(p2.Body[:pake.PointSize], p2.Body[pake.PointSize:])
	if err != nil {
		// Tell the device, so it closes the session and logs the failure now (best effort).
		abort := Frame{Type: TypeStatus, Session: resp.Session, Body: status{Code: StatusConfirmationFailed}.encode()}
		t.RoundTrip(ctx, abort.Encode())
		if errors.Is(err, pake.ErrConfirmation) {
			return nil, ErrWrongCode
		}
		return nil, fmt.Errorf("onboard: %w", err)
	}
	if _, _, err := exchange(ctx, t, Frame{Type: TypePake3, Session: resp.Session, Body: confirmP}.Encode(), TypeStatus); err != nil {
		return nil, err
	}
	ch, err := newChannel(resp.Session, k, false)
	if err != nil {
		return nil, err
	}
	return &Session{t: t, ch: ch, Serial: pr.Serial}, nil
}

// exchange sends a frame and expects an answer of type want; a Status other than ok (or any
// Status when want is not Status) becomes a *StatusError.
func exchange(ctx context.Context, t Transport, frame []byte, want Type) ([]byte, Frame, error) {
	raw, err := t.RoundTrip(ctx, frame)
	if err != nil {
		return nil, Frame{}, err
	}
	f, err := DecodeFrame(raw)
	if err != nil {
		return nil, Frame{}, err
	}
	if f.Type == TypeStatus {
		st, err := decodeStatus(f.Body)
		if err != nil {
			return nil, Frame{}, err
		}
		if st.Code != StatusOK || want != TypeStatus {
			return nil, Frame{}, &StatusError{Code: st.Code, RetryAfter: time.Duration(st.RetryAfter) * time.Second, Msg: st.Msg}
		}
		return raw, f, nil
	}
	if f.Type != want {
		return nil, Frame{}, fmt.Errorf("%w: got %s, want %s", ErrFrame, f.Type, want)
	}
	return raw, f, nil
}

// call sends one request record and returns the device's answer record. A transport error
// (the phone's Wi-Fi dropped a request or an answer) is retried a few times, each time as a new
// record with the next counter — never the same record twice, which the device would refuse as a
// replay. Setup is idempotent on the device, so a retry of one that did arrive is harmless.
func (s *Session) call(ctx context.Context, req Request) (*Response, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, _ := json.Marshal(req)
	var ans Frame
	for attempt := 0; ; attempt++ {
		f, err := s.ch.seal(b)
		if err != nil {
			return nil, err
		}
		_, ans, err = exchange(ctx, s.t, f.Encode(), TypeSealed)
		if err == nil {
			break
		}
		var se *StatusError
		if errors.As(err, &se) || errors.Is(err, ErrFrame) || attempt >= 3 || ctx.Err() != nil {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
		}
	}
	pt, err := s.ch.open(ans)
	if err != nil {
		return nil, err
	}
	var resp Response
	if err := decodeJSON(pt, &resp); err != nil {
		return nil, err
	}
	if !resp.OK {
		return &resp, fmt.Errorf("onboard: device: %s", resp.Error)
	}
	return &resp, nil
}

// Setup hands the site setup to the device.
func (s *Session) Setup(ctx context.Context, setup Setup) (*Progress, error) {
	if err := setup.Validate(); err != nil {
		return nil, fmt.Errorf("onboard: %w", err)
	}
	r, err := s.call(ctx, Request{Op: "setup", Setup: &setup})
	if err != nil {
		return nil, err
	}
	return r.Progress, nil
}

// Status asks the device how far it got.
func (s *Session) Status(ctx context.Context) (*Progress, error) {
	r, err := s.call(ctx, Request{Op: "status"})
	if err != nil {
		return nil, err
	}
	if r.Progress == nil {
		return nil, errors.New("onboard: device sent no progress")
	}
	return r.Progress, nil
}

// WaitProfile polls Status until the device holds a verified profile (or failed, or ctx ends).
// onProgress, if not nil, sees each new phase.
func (s *Session) WaitProfile(ctx context.Context, every time.Duration, onProgress func(Progress)) (*Progress, error) {
	last := ""
	for {
		p, err := s.Status(ctx)
		if err != nil {
			return nil, err
		}
		if onProgress != nil && p.Phase+p.Detail != last {
			onProgress(*p)
			last = p.Phase + p.Detail
		}
		switch p.Phase {
		case PhaseProfile:
			return p, nil
		case PhaseFailed:
			return p, fmt.Errorf("onboard: the device failed: %s", p.Detail)
		}
		select {
		case <-ctx.Done():
			return p, fmt.Errorf("onboard: waiting for the device: %w (last phase %s)", ctx.Err(), p.Phase)
		case <-time.After(every):
		}
	}
}

// HTTPPath is where the device serves the protocol on the LAN.
const HTTPPath = "/onboard/v1"

// HTTPTransport carries frames as POST bodies (application/octet-stream).
type HTTPTransport struct {
	// URL is the device's base URL, e.g. http://192.168.1.1:8080.
	URL    string
	Client *http.Client
}

// RoundTrip posts the frame to URL/onboard/v1.
func (h *HTTPTransport) RoundTrip(ctx context.Context, frame []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(h.URL, "/")+HTTPPath, bytes.NewReader(frame))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	c := h.Client
	if c == nil {
		c = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("onboard: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxFrame+1))
	if err != nil {
		return nil, fmt.Errorf("onboard: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("onboard: HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return b, nil
}

// HTTPHandler serves the device side at HTTPPath (POST, one frame per request) and a small
// unauthenticated discovery document at HTTPPath+"/info" (serial and discriminator, what the
// label shows anyway).
func (d *Device) HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+HTTPPath, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxFrame))
		if err != nil {
			http.Error(w, "frame too large", http.StatusRequestEntityTooLarge)
			return
		}
		out := d.Handle(r.Context(), b)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(out)
	})
	mux.HandleFunc("GET "+HTTPPath+"/info", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"serial": d.cfg.Factory.Serial, "discriminator": d.cfg.Factory.Discriminator, "version": Version})
	})
	return mux
}
