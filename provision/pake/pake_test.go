package pake

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
)

// vector is one RFC 9383 Appendix C test vector.
type vector struct {
	context, idProver, idVerifier string
	v                             map[string][]byte
}

// readVectors parses testdata/rfc9383-p256.txt: blocks between "~~~" lines, "[name=b'...']"
// inputs and "name = 0x..." values continued on the following lines.
func readVectors(t *testing.T) []vector {
	t.Helper()
	f, err := os.Open("testdata/rfc9383-p256.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		out     []vector
		cur     *vector
		logical []string // logical lines of the current block (wrapped lines joined)
	)
	flush := func() {
		if cur == nil {
			return
		}
		cur.v = map[string][]byte{}
		for _, l := range logical {
			if strings.HasPrefix(l, "[") {
				l = strings.TrimSuffix(strings.TrimPrefix(l, "["), "]")
				name, val, _ := strings.Cut(l, "=b'")
				val = strings.TrimSuffix(val, "'")
				switch name {
				case "Context":
					cur.context = val
				case "idProver":
					cur.idProver = val
				case "idVerifier":
					cur.idVerifier = val
				}
				continue
			}
			name, val, ok := strings.Cut(l, " = 0x")
			if !ok {
				t.Fatalf("vector line %q: no ' = 0x'", l)
			}
			b, err := hex.DecodeString(val)
			if err != nil {
				t.Fatalf("vector %s: %v", name, err)
			}
			cur.v[name] = b
		}
		out = append(out, *cur)
		cur, logical = nil, nil
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#"):
		case line == "~~~":
			if cur == nil {
				cur = &vector{}
			} else {
				flush()
			}
		case cur == nil:
		case strings.HasPrefix(line, "[") || strings.Contains(line, " = 0x"):
			logical = append(logical, line)
		default: // continuation of the previous logical line
			logical[len(logical)-1] += line
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func suiteFor(t *testing.T, context string) *Suite {
	t.Helper()
	for _, s := range []*Suite{P256SHA256HMAC, P256SHA512HMAC, P256SHA256CMAC, P256SHA512CMAC} {
		if strings.HasPrefix(context, "SPAKE2+-"+s.name+" ") {
			return s
		}
	}
	t.Fatalf("no suite for context %q", context)
	return nil
}

// TestRFC9383Vectors runs both roles on every P-256 vector of RFC 9383 Appendix C with the
// vector's x and y, and compares every intermediate value the RFC lists.
func TestRFC9383Vectors(t *testing.T) {
	vecs := readVectors(t)
	if len(vecs) != 4 {
		t.Fatalf("readVectors() = %d vectors; want the RFC's 4 P-256 vectors", len(vecs))
	}
	for _, vec := range vecs {
		t.Run(vec.context, func(t *testing.T) {
			s := suiteFor(t, vec.context)
			macName := "HMAC"
			if s.cmac {
				macName = "CMAC"
			}
			params := Params{Suite: s, Context: []byte(vec.context), IDProver: []byte(vec.idProver), IDVerifier: []byte(vec.idVerifier)}
			w := vec.v

			gotL, err := Record(w["w1"])
			if err != nil {
				t.Fatal(err)
			}
			check(t, "L", gotL, w["L"])

			p, err := NewProver(params, w["w0"], w["w1"])
			if err != nil {
				t.Fatal(err)
			}
			v, err := NewVerifier(params, w["w0"], w["L"])
			if err != nil {
				t.Fatal(err)
			}
			shareP, err := p.startWith(w["x"])
			if err != nil {
				t.Fatal(err)
			}
			check(t, "shareP", shareP, w["shareP"])
			shareV, confirmV, err := v.respondWith(w["y"], shareP)
			if err != nil {
				t.Fatal(err)
			}
			check(t, "shareV", shareV, w["shareV"])
			check(t, "TT", v.k.tt, w["TT"])
			check(t, "K_main", v.k.kMain, w["K_main"])
			check(t, "K_confirmP", v.k.kConfirmP, w["K_confirmP"])
			check(t, "K_confirmV", v.k.kConfirmV, w["K_confirmV"])
			check(t, "K_shared", v.k.kShared, w["K_shared"])
			check(t, macName+"(K_confirmV, shareP)", confirmV, w[macName+"(K_confirmV, shareP)"])

			// The prover's own view of Z and V must match the RFC's too.
			pk, err := (&Prover{params: params, w0: w["w0"], w1: w["w1"], x: w["x"], shareP: shareP}).derive(shareV)
			if err != nil {
				t.Fatal(err)
			}
			wantTT := transcript([]byte(vec.context), []byte(vec.idProver), []byte(vec.idVerifier), w["shareP"], w["shareV"], w["Z"], w["V"], w["w0"])
			check(t, "TT(from RFC Z, V)", wantTT, w["TT"])
			check(t, "prover TT", pk.tt, w["TT"])

			confirmP, kp, err := p.Finish(shareV, confirmV)
			if err != nil {
				t.Fatalf("Prover.Finish() = %v; want nil", err)
			}
			check(t, macName+"(K_confirmP, shareV)", confirmP, w[macName+"(K_confirmP, shareV)"])
			check(t, "prover K_shared", kp, w["K_shared"])
			kv, err := v.Finish(confirmP)
			if err != nil {
				t.Fatalf("Verifier.Finish() = %v; want nil", err)
			}
			check(t, "verifier K_shared", kv, w["K_shared"])
		})
	}
}

func check(t *testing.T, name string, got, want []byte) {
	t.Helper()
	if want == nil {
		t.Fatalf("%s: no expected value in the vector", name)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s = %x; want %x", name, got, want)
	}
}

// TestCMACRFC4493 checks the AES-CMAC helper against RFC 4493 §4's examples.
func TestCMACRFC4493(t *testing.T) {
	key := mustHex("2b7e151628aed2a6abf7158809cf4f3c")
	msg := mustHex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710")
	for _, tc := range []struct {
		n    int
		want string
	}{
		{0, "bb1d6929e95937287fa37d129b756746"},
		{16, "070a16b46b4d4144f79bdd9dd04a287c"},
		{40, "dfa66747de9ae63030ca32611497c827"},
		{64, "51f0bebf7e3b9d92fc49741779363cfe"},
	} {
		if got := hex.EncodeToString(cmacAES(key, msg[:tc.n])); got != tc.want {
			t.Errorf("cmacAES(key, msg[:%d]) = %s; want %s", tc.n, got, tc.want)
		}
	}
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func testParams(s *Suite) Params {
	return Params{Suite: s, Context: []byte("meshroot test"), IDProver: []byte("app"), IDVerifier: []byte("device")}
}

// run runs a full exchange between a prover with passcode code and a verifier registered with
// passcode reg, returning the errors each side saw.
func run(t *testing.T, s *Suite, code, reg uint32) (kp, kv []byte, proverErr, verifierErr error) {
	t.Helper()
	salt := []byte("0123456789abcdef")
	w0, w1, err := W0W1(code, salt, MinIterations)
	if err != nil {
		t.Fatal(err)
	}
	rw0, rw1, err := W0W1(reg, salt, MinIterations)
	if err != nil {
		t.Fatal(err)
	}
	l, err := Record(rw1)
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewProver(testParams(s), w0, w1)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(testParams(s), rw0, l)
	if err != nil {
		t.Fatal(err)
	}
	x, err := p.Start(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	y, cv, err := v.Respond(rand.Reader, x)
	if err != nil {
		t.Fatal(err)
	}
	cp, kp, proverErr := p.Finish(y, cv)
	if proverErr != nil {
		// A real prover stops here; an attacker would still send something: a guess.
		cp = make([]byte, len(cv))
	}
	kv, verifierErr = v.Finish(cp)
	return kp, kv, proverErr, verifierErr
}

func TestExchange(t *testing.T) {
	for _, s := range []*Suite{P256SHA256HMAC, P256SHA512HMAC, P256SHA256CMAC, P256SHA512CMAC} {
		t.Run(s.String(), func(t *testing.T) {
			kp, kv, pe, ve := run(t, s, 20202021, 20202021)
			if pe != nil || ve != nil {
				t.Fatalf("exchange with the right code: prover %v, verifier %v; want nil, nil", pe, ve)
			}
			if !bytes.Equal(kp, kv) || len(kp) == 0 {
				t.Errorf("K_shared prover %x, verifier %x; want equal", kp, kv)
			}
			_, _, pe, ve = run(t, s, 20202021, 20202022)
			if !errors.Is(pe, ErrConfirmation) || !errors.Is(ve, ErrConfirmation) {
				t.Errorf("exchange with a wrong code: prover %v, verifier %v; want ErrConfirmation for both", pe, ve)
			}
		})
	}
}

func TestTamperedConfirmation(t *testing.T) {
	w0, w1, _ := W0W1(12341234, []byte("saltsaltsaltsalt"), MinIterations)
	l, _ := Record(w1)
	p, _ := NewProver(testParams(P256SHA256HMAC), w0, w1)
	v, _ := NewVerifier(testParams(P256SHA256HMAC), w0, l)
	x, _ := p.Start(rand.Reader)
	y, cv, err := v.Respond(rand.Reader, x)
	if err != nil {
		t.Fatal(err)
	}
	bad := clone(cv)
	bad[0] ^= 1
	if _, _, err := p.Finish(y, bad); !errors.Is(err, ErrConfirmation) {
		t.Errorf("Prover.Finish(tampered confirmV) = %v; want ErrConfirmation", err)
	}
	// The prover is single use: a retry with the genuine confirmV is refused too.
	if _, _, err := p.Finish(y, cv); !errors.Is(err, ErrState) {
		t.Errorf("Prover.Finish() again = %v; want ErrState", err)
	}
	// A verifier given a tampered confirmP refuses, and refuses the genuine one afterwards.
	p2, _ := NewProver(testParams(P256SHA256HMAC), w0, w1)
	v2, _ := NewVerifier(testParams(P256SHA256HMAC), w0, l)
	x2, _ := p2.Start(rand.Reader)
	y2, cv2, _ := v2.Respond(rand.Reader, x2)
	cp2, _, err := p2.Finish(y2, cv2)
	if err != nil {
		t.Fatal(err)
	}
	badP := clone(cp2)
	badP[len(badP)-1] ^= 0x80
	if _, err := v2.Finish(badP); !errors.Is(err, ErrConfirmation) {
		t.Errorf("Verifier.Finish(tampered confirmP) = %v; want ErrConfirmation", err)
	}
	if _, err := v2.Finish(cp2); !errors.Is(err, ErrState) {
		t.Errorf("Verifier.Finish() again = %v; want ErrState", err)
	}
}

func TestInvalidShares(t *testing.T) {
	w0, w1, _ := W0W1(12341234, []byte("saltsaltsaltsalt"), MinIterations)
	l, _ := Record(w1)
	g, _ := Record(mustHex("0000000000000000000000000000000000000000000000000000000000000001"))
	offCurve := clone(g)
	offCurve[64] ^= 1
	compressed := append([]byte{2 + g[64]&1}, g[1:33]...)
	for _, tc := range []struct {
		name  string
		share []byte
	}{
		{"empty", nil},
		{"identity", []byte{0}},
		{"compressed", compressed},
		{"off curve", offCurve},
		{"short", g[:64]},
		{"long", append(clone(g), 0)},
	} {
		v, _ := NewVerifier(testParams(P256SHA256HMAC), w0, l)
		if _, _, err := v.Respond(rand.Reader, tc.share); !errors.Is(err, ErrInvalidShare) {
			t.Errorf("Verifier.Respond(%s) = %v; want ErrInvalidShare", tc.name, err)
		}
		p, _ := NewProver(testParams(P256SHA256HMAC), w0, w1)
		if _, err := p.Start(rand.Reader); err != nil {
			t.Fatal(err)
		}
		if _, _, err := p.Finish(tc.share, make([]byte, 32)); !errors.Is(err, ErrInvalidShare) {
			t.Errorf("Prover.Finish(%s) = %v; want ErrInvalidShare", tc.name, err)
		}
	}
	// X = w0*M makes X - w0*M the identity: Z would be the identity and must be refused.
	wm, _ := NewProver(testParams(P256SHA256HMAC), w0, w1)
	xZero, err := wm.startWith(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	v, _ := NewVerifier(testParams(P256SHA256HMAC), w0, l)
	if _, _, err := v.Respond(rand.Reader, xZero); !errors.Is(err, ErrInvalidShare) {
		t.Errorf("Verifier.Respond(w0*M) = %v; want ErrInvalidShare", err)
	}
}

func TestW0W1Limits(t *testing.T) {
	salt := []byte("0123456789abcdef")
	for _, tc := range []struct {
		name string
		salt []byte
		iter int
		ok   bool
	}{
		{"min", salt, MinIterations, true},
		{"max", salt, MaxIterations, true},
		{"too few iterations", salt, MinIterations - 1, false},
		{"too many iterations", salt, MaxIterations + 1, false},
		{"short salt", salt[:15], MinIterations, false},
		{"long salt", bytes.Repeat(salt, 3), MinIterations, false},
	} {
		_, _, err := W0W1(1, tc.salt, tc.iter)
		if (err == nil) != tc.ok {
			t.Errorf("W0W1(%s) = %v; want ok=%v", tc.name, err, tc.ok)
		}
	}
	// Deterministic and dependent on every input.
	a0, a1, _ := W0W1(20202021, salt, 1000)
	b0, b1, _ := W0W1(20202021, salt, 1000)
	c0, _, _ := W0W1(20202021, salt, 1001)
	d0, _, _ := W0W1(20202022, salt, 1000)
	if !bytes.Equal(a0, b0) || !bytes.Equal(a1, b1) {
		t.Errorf("W0W1 not deterministic")
	}
	if bytes.Equal(a0, c0) || bytes.Equal(a0, d0) || bytes.Equal(a0, a1) {
		t.Errorf("W0W1 outputs collide across inputs")
	}
}

func BenchmarkExchange(b *testing.B) {
	w0, w1, _ := W0W1(12341234, []byte("saltsaltsaltsalt"), MinIterations)
	l, _ := Record(w1)
	for b.Loop() {
		p, _ := NewProver(testParams(P256SHA256HMAC), w0, w1)
		v, _ := NewVerifier(testParams(P256SHA256HMAC), w0, l)
		x, _ := p.Start(rand.Reader)
		y, cv, _ := v.Respond(rand.Reader, x)
		cp, _, _ := p.Finish(y, cv)
		if _, err := v.Finish(cp); err != nil {
			b.Fatal(err)
		}
	}
}
