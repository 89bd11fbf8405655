package pake

import (
	"bytes"
	"testing"
)

// FuzzVerifierRespond feeds arbitrary shares to a verifier: it must return an error or a valid
// response, never panic.
func FuzzVerifierRespond(f *testing.F) {
	w0, w1, err := W0W1(20202021, []byte("0123456789abcdef"), MinIterations)
	if err != nil {
		f.Fatal(err)
	}
	l, _ := Record(w1)
	p, _ := NewProver(testParams(P256SHA256HMAC), w0, w1)
	x, _ := p.startWith(mustHex("d1232c8e8693d02368976c174e2088851b8365d0d79a9eee709c6a05a2fad539"))
	f.Add(x)
	f.Add(l)
	f.Add([]byte{4})
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, share []byte) {
		v, err := NewVerifier(testParams(P256SHA256HMAC), w0, l)
		if err != nil {
			t.Fatal(err)
		}
		y, cv, err := v.Respond(bytes.NewReader(bytes.Repeat([]byte{7}, 40)), share)
		if err != nil {
			return
		}
		if len(y) != PointSize || len(cv) != 32 {
			t.Fatalf("Respond() = %d-byte share, %d-byte confirmV; want %d, 32", len(y), len(cv), PointSize)
		}
	})
}
