// Package pake implements SPAKE2+ (RFC 9383) on the P-256 group, for pairing the phone app with a
// device from the setup code printed on the device's label.
//
// The prover (the phone app) knows the setup code and derives w0 and w1 from it; the verifier (the
// device) holds only the registration record (w0, L = w1*P), computed at the factory. Both sides
// run the RFC's protocol flow: shareP → shareV + confirmV → confirmP, after which both hold
// K_shared. The four P-256 ciphersuites of the RFC are implemented (SHA-256 or SHA-512 for the
// hash, HKDF and HMAC, or HKDF with CMAC-AES-128) and checked against all of the RFC's P-256 test
// vectors.
//
// The setup code is stretched as Matter does it: w0s || w1s = PBKDF2-HMAC-SHA256(passcode as a
// 4-byte little-endian integer, salt, iterations, 80 bytes), each half reduced modulo the group
// order (RFC 9383 §3.2 asks for at least 64 extra bits per half: 40 bytes = 320 bits ≥ 256 + 64).
//
// Point arithmetic is filippo.io/nistec (constant time). Scalars (w0, w1 reductions and random
// ephemerals) are reduced with math/big, once per session; that reduction is not constant time.
package pake

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/big"

	"crypto/hkdf"

	"filippo.io/nistec"
)

// Sizes of the P-256 encodings used on the wire.
const (
	// ScalarSize is the size of an encoded scalar (w0, w1, x, y).
	ScalarSize = 32
	// PointSize is the size of an uncompressed SEC1 point (shares, L).
	PointSize = 65
)

// PBKDF2 limits as Matter sets them for setup-code stretching.
const (
	MinIterations = 1000
	MaxIterations = 100000
	MinSaltLen    = 16
	MaxSaltLen    = 32
	// stretchedLen is the PBKDF2 output: two halves of 40 bytes (256 + 64 bits each).
	stretchedLen = 80
)

// Errors the protocol returns. Callers match them with errors.Is.
var (
	// ErrConfirmation means a key-confirmation MAC did not verify: the peers do not share the
	// same password (a wrong setup code) or a message was tampered with.
	ErrConfirmation = errors.New("spake2+: key confirmation failed")
	// ErrInvalidShare means a received share is not an encoded point of the P-256 group.
	ErrInvalidShare = errors.New("spake2+: invalid share")
	// ErrState means a method was called out of protocol order (e.g. twice).
	ErrState = errors.New("spake2+: out of order")
)

// Suite is one SPAKE2+ ciphersuite on P-256.
type Suite struct {
	name    string
	newHash func() hash.Hash
	cmac    bool // CMAC-AES-128 for confirmation instead of HMAC with newHash
}

// The P-256 ciphersuites of RFC 9383 §4.
var (
	P256SHA256HMAC = &Suite{name: "P256-SHA256-HKDF-SHA256-HMAC-SHA256", newHash: sha256.New}
	P256SHA512HMAC = &Suite{name: "P256-SHA512-HKDF-SHA512-HMAC-SHA512", newHash: sha512.New}
	P256SHA256CMAC = &Suite{name: "P256-SHA256-HKDF-SHA256-CMAC-AES-128", newHash: sha256.New, cmac: true}
	P256SHA512CMAC = &Suite{name: "P256-SHA512-HKDF-SHA512-CMAC-AES-128", newHash: sha512.New, cmac: true}
)

// String returns the suite's name as RFC 9383 writes it.
func (s *Suite) String() string { return s.name }

// hashSize is the digest length of the suite's hash.
func (s *Suite) hashSize() int { return s.newHash().Size() }

// confirmKeyLen is the length of each confirmation key: the hash size for HMAC, 16 bytes for
// CMAC-AES-128 (RFC 9383 §3.4).
func (s *Suite) confirmKeyLen() int {
	if s.cmac {
		return 16
	}
	return s.hashSize()
}

// mac computes the suite's MAC over msg.
func (s *Suite) mac(key, msg []byte) []byte {
	if s.cmac {
		return cmacAES(key, msg)
	}
	m := hmac.New(s.newHash, key)
	m.Write(msg)
	return m.Sum(nil)
}

// The P-256 point generation seeds M and N (RFC 9383 §4), compressed SEC1.
var (
	pointM = mustPoint("02886e2f97ace46e55ba9dd7242579f2993b64e16ef3dcab95afd497333d8fa12f")
	pointN = mustPoint("03d8bbd6c639c62937b04d997f38c3770719c629d7014d49a24b4f98baa1292b49")
	// order is the order n of the P-256 group.
	order, _ = new(big.Int).SetString("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551", 16)
)

func mustPoint(h string) *nistec.P256Point {
	b, err := hex.DecodeString(h)
	if err != nil {
		panic(err)
	}
	p, err := nistec.NewP256Point().SetBytes(b)
	if err != nil {
		panic(err)
	}
	return p
}

// reduce returns b (big endian, any length) modulo the group order as a 32-byte scalar.
func reduce(b []byte) []byte {
	v := new(big.Int).SetBytes(b)
	v.Mod(v, order)
	out := make([]byte, ScalarSize)
	v.FillBytes(out)
	return out
}

// randomScalar draws a scalar uniformly from [1, n-1]: 40 random bytes reduced mod n (bias below
// 2^-64), retried in the negligible case of zero.
func randomScalar(rand io.Reader) ([]byte, error) {
	var buf [40]byte
	for {
		if _, err := io.ReadFull(rand, buf[:]); err != nil {
			return nil, fmt.Errorf("spake2+: random scalar: %w", err)
		}
		s := reduce(buf[:])
		if !isZero(s) {
			return s, nil
		}
	}
}

func isZero(b []byte) bool {
	var acc byte
	for _, c := range b {
		acc |= c
	}
	return acc == 0
}

// checkScalar returns an error unless s is a 32-byte scalar in [0, n-1].
func checkScalar(name string, s []byte) error {
	if len(s) != ScalarSize {
		return fmt.Errorf("spake2+: %s is %d bytes; want %d", name, len(s), ScalarSize)
	}
	if new(big.Int).SetBytes(s).Cmp(order) >= 0 {
		return fmt.Errorf("spake2+: %s is not reduced modulo the group order", name)
	}
	return nil
}

// parseShare decodes a peer's share: an uncompressed SEC1 point on P-256 other than the identity.
// P-256 has cofactor 1, so every point on the curve is in the prime-order group.
func parseShare(b []byte) (*nistec.P256Point, error) {
	if len(b) != PointSize || b[0] != 4 {
		return nil, fmt.Errorf("%w: want a %d-byte uncompressed point", ErrInvalidShare, PointSize)
	}
	p, err := nistec.NewP256Point().SetBytes(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidShare, err)
	}
	if p.IsInfinity() == 1 {
		return nil, fmt.Errorf("%w: identity element", ErrInvalidShare)
	}
	return p, nil
}

// W0W1 stretches a setup code (passcode) into w0 and w1 as Matter does: PBKDF2-HMAC-SHA256 over
// the passcode as a 4-byte little-endian integer, 80 bytes out, each 40-byte half reduced mod n.
func W0W1(passcode uint32, salt []byte, iterations int) (w0, w1 []byte, err error) {
	if iterations < MinIterations || iterations > MaxIterations {
		return nil, nil, fmt.Errorf("spake2+: pbkdf2 iterations %d outside [%d, %d]", iterations, MinIterations, MaxIterations)
	}
	if len(salt) < MinSaltLen || len(salt) > MaxSaltLen {
		return nil, nil, fmt.Errorf("spake2+: pbkdf2 salt is %d bytes; want %d to %d", len(salt), MinSaltLen, MaxSaltLen)
	}
	var pw [4]byte
	binary.LittleEndian.PutUint32(pw[:], passcode)
	out, err := pbkdf2.Key(sha256.New, string(pw[:]), salt, iterations, stretchedLen)
	if err != nil {
		return nil, nil, fmt.Errorf("spake2+: pbkdf2: %w", err)
	}
	return reduce(out[:stretchedLen/2]), reduce(out[stretchedLen/2:]), nil
}

// Record returns the registration record L = w1*P that the verifier stores instead of w1.
func Record(w1 []byte) ([]byte, error) {
	if err := checkScalar("w1", w1); err != nil {
		return nil, err
	}
	p, err := nistec.NewP256Point().ScalarBaseMult(w1)
	if err != nil {
		return nil, fmt.Errorf("spake2+: L: %w", err)
	}
	return p.Bytes(), nil
}

// keys is the output of the key schedule (RFC 9383 §3.4).
type keys struct {
	tt, kMain, kConfirmP, kConfirmV, kShared []byte
}

// transcript builds TT (RFC 9383 §3.3): every field prefixed by its length as 8 bytes little endian.
func transcript(context, idProver, idVerifier, shareP, shareV, z, v, w0 []byte) []byte {
	var tt []byte
	for _, f := range [][]byte{context, idProver, idVerifier, pointM.Bytes(), pointN.Bytes(), shareP, shareV, z, v, w0} {
		tt = binary.LittleEndian.AppendUint64(tt, uint64(len(f)))
		tt = append(tt, f...)
	}
	return tt
}

// schedule derives K_main = Hash(TT), K_confirmP || K_confirmV = KDF(nil, K_main,
// "ConfirmationKeys") and K_shared = KDF(nil, K_main, "SharedKey").
func (s *Suite) schedule(tt []byte) (keys, error) {
	h := s.newHash()
	h.Write(tt)
	kMain := h.Sum(nil)
	cl := s.confirmKeyLen()
	conf, err := hkdf.Key(s.newHash, kMain, nil, "ConfirmationKeys", 2*cl)
	if err != nil {
		return keys{}, fmt.Errorf("spake2+: confirmation keys: %w", err)
	}
	shared, err := hkdf.Key(s.newHash, kMain, nil, "SharedKey", s.hashSize())
	if err != nil {
		return keys{}, fmt.Errorf("spake2+: shared key: %w", err)
	}
	return keys{tt: tt, kMain: kMain, kConfirmP: conf[:cl], kConfirmV: conf[cl:], kShared: shared}, nil
}

// Params are the inputs both parties share: the suite, the context string (which should bind the
// application, its version and the negotiated parameters) and the two identities.
type Params struct {
	Suite      *Suite
	Context    []byte
	IDProver   []byte
	IDVerifier []byte
}

func (p Params) check() error {
	if p.Suite == nil {
		return errors.New("spake2+: no ciphersuite")
	}
	return nil
}

// Prover is the party that knows the password (the phone app). Use it once: Start, then Finish.
type Prover struct {
	params Params
	w0, w1 []byte
	x      []byte
	shareP []byte
	done   bool
}

// NewProver returns a prover for w0 and w1 (see W0W1).
func NewProver(params Params, w0, w1 []byte) (*Prover, error) {
	if err := params.check(); err != nil {
		return nil, err
	}
	if err := checkScalar("w0", w0); err != nil {
		return nil, err
	}
	if err := checkScalar("w1", w1); err != nil {
		return nil, err
	}
	return &Prover{params: params, w0: clone(w0), w1: clone(w1)}, nil
}

// Start draws the ephemeral x and returns shareP = X = x*P + w0*M.
func (p *Prover) Start(rand io.Reader) ([]byte, error) {
	x, err := randomScalar(rand)
	if err != nil {
		return nil, err
	}
	return p.startWith(x)
}

func (p *Prover) startWith(x []byte) ([]byte, error) {
	if p.shareP != nil || p.done {
		return nil, ErrState
	}
	if err := checkScalar("x", x); err != nil {
		return nil, err
	}
	xp, err := nistec.NewP256Point().ScalarBaseMult(x)
	if err != nil {
		return nil, err
	}
	wm, err := nistec.NewP256Point().ScalarMult(pointM, p.w0)
	if err != nil {
		return nil, err
	}
	p.x = clone(x)
	p.shareP = xp.Add(xp, wm).Bytes()
	return clone(p.shareP), nil
}

// Finish takes the verifier's shareV and confirmV, checks confirmV, and returns confirmP for the
// verifier and K_shared. A wrong password shows up here as ErrConfirmation.
func (p *Prover) Finish(shareV, confirmV []byte) (confirmP, sharedKey []byte, err error) {
	k, err := p.derive(shareV)
	if err != nil {
		return nil, nil, err
	}
	want := p.params.Suite.mac(k.kConfirmV, p.shareP)
	if subtle.ConstantTimeCompare(want, confirmV) != 1 {
		return nil, nil, ErrConfirmation
	}
	return p.params.Suite.mac(k.kConfirmP, shareV), k.kShared, nil
}

// derive computes Z = x*(Y - w0*N), V = w1*(Y - w0*N) (h = 1 on P-256) and the key schedule.
func (p *Prover) derive(shareV []byte) (keys, error) {
	if p.shareP == nil || p.done {
		return keys{}, ErrState
	}
	p.done = true
	y, err := parseShare(shareV)
	if err != nil {
		return keys{}, err
	}
	wn, err := nistec.NewP256Point().ScalarMult(pointN, p.w0)
	if err != nil {
		return keys{}, err
	}
	t := nistec.NewP256Point().Add(y, wn.Negate(wn))
	z, err := nistec.NewP256Point().ScalarMult(t, p.x)
	if err != nil {
		return keys{}, err
	}
	v, err := nistec.NewP256Point().ScalarMult(t, p.w1)
	if err != nil {
		return keys{}, err
	}
	if z.IsInfinity() == 1 || v.IsInfinity() == 1 {
		return keys{}, fmt.Errorf("%w: shared point is the identity", ErrInvalidShare)
	}
	tt := transcript(p.params.Context, p.params.IDProver, p.params.IDVerifier, p.shareP, shareV, z.Bytes(), v.Bytes(), p.w0)
	return p.params.Suite.schedule(tt)
}

// Verifier is the party holding the registration record (the device). Use it once: Respond,
// then Finish.
type Verifier struct {
	params   Params
	w0       []byte
	l        *nistec.P256Point
	shareV   []byte
	k        keys
	answered bool
	done     bool
}

// NewVerifier returns a verifier for the registration record (w0, L).
func NewVerifier(params Params, w0, l []byte) (*Verifier, error) {
	if err := params.check(); err != nil {
		return nil, err
	}
	if err := checkScalar("w0", w0); err != nil {
		return nil, err
	}
	lp, err := parseShare(l)
	if err != nil {
		return nil, fmt.Errorf("spake2+: registration record L: %w", err)
	}
	return &Verifier{params: params, w0: clone(w0), l: lp}, nil
}

// Respond takes the prover's shareP and returns shareV = Y = y*P + w0*N and confirmV.
func (v *Verifier) Respond(rand io.Reader, shareP []byte) (shareV, confirmV []byte, err error) {
	y, err := randomScalar(rand)
	if err != nil {
		return nil, nil, err
	}
	return v.respondWith(y, shareP)
}

func (v *Verifier) respondWith(y, shareP []byte) (shareV, confirmV []byte, err error) {
	if v.answered {
		return nil, nil, ErrState
	}
	v.answered = true
	if err := checkScalar("y", y); err != nil {
		return nil, nil, err
	}
	x, err := parseShare(shareP)
	if err != nil {
		return nil, nil, err
	}
	yp, err := nistec.NewP256Point().ScalarBaseMult(y)
	if err != nil {
		return nil, nil, err
	}
	wn, err := nistec.NewP256Point().ScalarMult(pointN, v.w0)
	if err != nil {
		return nil, nil, err
	}
	v.shareV = yp.Add(yp, wn).Bytes()
	wm, err := nistec.NewP256Point().ScalarMult(pointM, v.w0)
	if err != nil {
		return nil, nil, err
	}
	t := nistec.NewP256Point().Add(x, wm.Negate(wm))
	z, err := nistec.NewP256Point().ScalarMult(t, y)
	if err != nil {
		return nil, nil, err
	}
	vv, err := nistec.NewP256Point().ScalarMult(v.l, y)
	if err != nil {
		return nil, nil, err
	}
	if z.IsInfinity() == 1 || vv.IsInfinity() == 1 {
		return nil, nil, fmt.Errorf("%w: shared point is the identity", ErrInvalidShare)
	}
	tt := transcript(v.params.Context, v.params.IDProver, v.params.IDVerifier, shareP, v.shareV, z.Bytes(), vv.Bytes(), v.w0)
	v.k, err = v.params.Suite.schedule(tt)
	if err != nil {
		return nil, nil, err
	}
	return clone(v.shareV), v.params.Suite.mac(v.k.kConfirmV, shareP), nil
}

// Finish checks the prover's confirmP and returns K_shared. A wrong password shows up here as
// ErrConfirmation; the verifier must not use the session after an error.
func (v *Verifier) Finish(confirmP []byte) ([]byte, error) {
	if !v.answered || v.k.kMain == nil || v.done {
		return nil, ErrState
	}
	v.done = true
	want := v.params.Suite.mac(v.k.kConfirmP, v.shareV)
	if subtle.ConstantTimeCompare(want, confirmP) != 1 {
		return nil, ErrConfirmation
	}
	return v.k.kShared, nil
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }
