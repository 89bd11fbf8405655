package esp

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatalf("hex.DecodeString(%q) = %v", s, err)
	}
	return b
}

// allSuites is every suite NewSA accepts, at both key sizes.
func allSuites() []Suite {
	var ss []Suite
	for _, bits := range []int{128, 256} {
		ss = append(ss, Suite{Encr: EncrAESGCM16, KeyBits: bits}, Suite{Encr: EncrAESGCM12, KeyBits: bits})
		for _, integ := range []uint16{AuthHMACSHA1_96, AuthHMACSHA256128, AuthHMACSHA384192, AuthHMACSHA512256} {
			ss = append(ss, Suite{Encr: EncrAESCBC, KeyBits: bits, Integ: integ})
		}
	}
	return ss
}

// testParams makes Params with deterministic keys for suite s.
func testParams(t testing.TB, spi uint32, s Suite, seed byte) Params {
	t.Helper()
	km := make([]byte, s.KeymatLen())
	for i := range km {
		km[i] = seed + byte(i)
	}
	p, err := ParamsFromKeymat(spi, s, km, 0)
	if err != nil {
		t.Fatalf("ParamsFromKeymat(%s) = %v", s, err)
	}
	return p
}

func mustSA(t testing.TB, p Params) *SA {
	t.Helper()
	sa, err := NewSA(p)
	if err != nil {
		t.Fatalf("NewSA(%v) = %v", p, err)
	}
	return sa
}

// TestGCMKnownAnswer runs the AEAD step with the GCM specification's test cases 3, 4, 15 and 16
// (McGrew and Viega, "The Galois/Counter Mode of Operation"), whose 12-byte IV cafebabe
// facedbaddecaf888 is exactly RFC 4106's salt || explicit IV: the SA is built from KEYMAT =
// key || salt as IKE hands it over.
func TestGCMKnownAnswer(t *testing.T) {
	const (
		key128 = "feffe9928665731c6d6a8f9467308308"
		salt   = "cafebabe"
		iv     = "facedbaddecaf888"
		pt     = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
		aad    = "feedfacedeadbeeffeedfacedeadbeefabaddad2"
	)
	tests := []struct {
		name        string
		key         string
		pt, aad     string
		wantCT      string
		wantTag     string
		keyBitsWant int
	}{
		{"case3", key128, pt, "", "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985", "4d5c2af327cd64a62cf35abd2ba6fab4", 128},
		{"case4", key128, pt[:120], aad, "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091", "5bc94fbc3221a5db94fae95ae7121a47", 128},
		{"case15", key128 + key128, pt, "", "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad", "b094dac5d93471bdec1a502270e3cc6c", 256},
		{"case16", key128 + key128, pt[:120], aad, "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad"[:120], "76fc6ece0f4e1768cddf8853bb2d551b", 256},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			suite := Suite{Encr: EncrAESGCM16, KeyBits: tc.keyBitsWant}
			p, err := ParamsFromKeymat(1, suite, unhex(t, tc.key+salt), 0)
			if err != nil {
				t.Fatalf("ParamsFromKeymat = %v", err)
			}
			sa := mustSA(t, p)
			body := append(make([]byte, 0, 256), unhex(t, tc.pt)...)
			got := sa.gcmSeal(body, unhex(t, iv), unhex(t, tc.aad))
			want := unhex(t, tc.wantCT+tc.wantTag)
			if !bytes.Equal(got, want) {
				t.Errorf("gcmSeal(%s) = %x; want %x", tc.name, got, want)
			}
			opened, err := sa.gcmOpen(nil, unhex(t, iv), want, unhex(t, tc.aad))
			if err != nil || !bytes.Equal(opened, unhex(t, tc.pt)) {
				t.Errorf("gcmOpen(%s) = %x, %v; want %s, nil", tc.name, opened, err, tc.pt)
			}
		})
	}
}

// The golden ESP packets below were generated once, independently of this package, with
// Python's cryptography package (OpenSSL): RFC 4303 layout, RFC 4106 nonce and AAD, RFC 3602
// CBC, RFC 2404/4868 truncated HMACs, padding 1, 2, 3... The inner packet is an IPv4 ICMP echo
// of 33 bytes, so GCM pads 1 byte and CBC 13.
const goldenInner = "45000021000100004001f787c0a80101c0a801020800b42b0001000168656c6c6f"

var goldenPackets = []struct {
	suite         Suite
	encr, integ   string
	packet        string
	cbcIVSecretHx string
}{
	{SuiteAES128GCM16, "0102030405060708090a0b0c0d0e0f10a0a1a2a3", "",
		"11223344000000010000000000000001b247e1f189cd9427cfa74e340767bc62c008d5cc7e446c0d2734e57584e2ca90b94e840c0c9708d767f7b526edbb53c2819768e9", ""},
	{SuiteAES256GCM16, "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20a0a1a2a3", "",
		"11223344000000010000000000000001504d476501c4432825a5946245faaa7941091b54d4131d2abae927b6a52c052abd7307c23024c72888834e5337a084c21985ff6a", ""},
	{SuiteAES128CBCSHA1, "404142434445464748494a4b4c4d4e4f", "808182838485868788898a8b8c8d8e8f90919293",
		"1122334400000001c661054961aea4ad8b434a54dd6735314885ddfd3099e39b2902c390600ccd0a87f5b8ec46a8c0827f0fe1d4111ce8ebb86257c987107a20b540c93e45282f78c15ebf91717029d1fbc54821", "000102030405060708090a0b0c0d0e0f"},
	{SuiteAES256CBCSHA256, "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f", "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
		"112233440000000164234793ca07e9ef5b68de7885c4f5c4730674af6794a0cc9c9676d4f18c753a10761337ecb95d7084d044e0b5b83c772552b4dcda49a8b9e0c792b578588336a3f8a8974d71c59f885e44012fd2af8f", "000102030405060708090a0b0c0d0e0f"},
	{Suite{Encr: EncrAESCBC, KeyBits: 256, Integ: AuthHMACSHA384192}, "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f", "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9fa0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
		"112233440000000164234793ca07e9ef5b68de7885c4f5c4730674af6794a0cc9c9676d4f18c753a10761337ecb95d7084d044e0b5b83c772552b4dcda49a8b9e0c792b5785883366b6b5bb919dc35bb73ac324e43b02c99e617ae1ffab0538b", "000102030405060708090a0b0c0d0e0f"},
	{Suite{Encr: EncrAESCBC, KeyBits: 256, Integ: AuthHMACSHA512256}, "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f", "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9fa0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf",
		"112233440000000164234793ca07e9ef5b68de7885c4f5c4730674af6794a0cc9c9676d4f18c753a10761337ecb95d7084d044e0b5b83c772552b4dcda49a8b9e0c792b5785883361b3a635f9a9b351c02e1ef11a49cffc10601996b98e4e4678754c351c4001bbc", "000102030405060708090a0b0c0d0e0f"},
}

func TestSealOpenGolden(t *testing.T) {
	inner := unhex(t, goldenInner)
	for _, g := range goldenPackets {
		t.Run(g.suite.String(), func(t *testing.T) {
			p := Params{SPI: 0x11223344, Suite: g.suite, EncrKey: unhex(t, g.encr), IntegKey: unhex(t, g.integ)}
			sa := mustSA(t, p)
			if g.cbcIVSecretHx != "" {
				copy(sa.ivSecret[:], unhex(t, g.cbcIVSecretHx))
			}
			got, err := sa.Seal(nil, inner, NextHeaderIPv4)
			if err != nil {
				t.Fatalf("Seal() = %v", err)
			}
			want := unhex(t, g.packet)
			if !bytes.Equal(got, want) {
				t.Errorf("Seal(golden inner) =\n%x\nwant\n%x", got, want)
			}
			in := mustSA(t, p)
			opened, nh, err := in.Open(nil, want)
			if err != nil || nh != NextHeaderIPv4 || !bytes.Equal(opened, inner) {
				t.Errorf("Open(golden packet) = %x, %d, %v; want %x, 4, nil", opened, nh, err, inner)
			}
		})
	}
}

// TestSealLayout checks the RFC 4303 layout byte by byte for many inner lengths.
func TestSealLayout(t *testing.T) {
	for _, s := range allSuites() {
		sa := mustSA(t, testParams(t, 0xdeadbeef, s, 1))
		for n := 20; n <= 80; n++ {
			inner := make([]byte, n)
			inner[0] = 0x45
			pkt, err := sa.Seal(nil, inner, NextHeaderIPv4)
			if err != nil {
				t.Fatalf("%s: Seal(%d bytes) = %v", s, n, err)
			}
			seq := uint64(n - 19)
			if got, want := len(pkt), sa.SealedLen(n); got != want {
				t.Errorf("%s: len(Seal(%d bytes)) = %d; want %d", s, n, got, want)
			}
			if got := hex.EncodeToString(pkt[:8]); got != fmt.Sprintf("deadbeef%08x", seq) {
				t.Errorf("%s: header = %s; want SPI deadbeef, seq %d", s, got, seq)
			}
			ctLen := len(pkt) - 8 - s.IVLen() - s.ICVLen()
			if ctLen%s.blockLen() != 0 || ctLen < n+2 || ctLen >= n+2+s.blockLen() {
				t.Errorf("%s: payload+trailer = %d bytes for %d inner; want the smallest multiple of %d >= %d", s, ctLen, n, s.blockLen(), n+2)
			}
			if s.AEAD() {
				if got, want := hex.EncodeToString(pkt[8:16]), fmt.Sprintf("%016x", seq); got != want {
					t.Errorf("%s: GCM explicit IV = %s; want the counter %s", s, got, want)
				}
			}
			// Decrypt in place and check the trailer by hand.
			in := mustSA(t, testParams(t, 0xdeadbeef, s, 1))
			inner2, nh, err := in.Open(pkt[sa.HeaderLen():sa.HeaderLen()], pkt)
			if err != nil || nh != 4 || !bytes.Equal(inner2, inner) {
				t.Fatalf("%s: Open(in place) = %x, %d, %v; want %x, 4, nil", s, inner2, nh, err, inner)
			}
			body := pkt[sa.HeaderLen() : sa.HeaderLen()+ctLen]
			padLen := int(body[ctLen-2])
			if padLen != ctLen-n-2 || body[ctLen-1] != 4 {
				t.Errorf("%s: trailer pad length %d next header %d; want %d, 4", s, padLen, body[ctLen-1], ctLen-n-2)
			}
			for i := 0; i < padLen; i++ {
				if body[n+i] != byte(i+1) {
					t.Errorf("%s: pad byte %d = %d; want %d", s, i, body[n+i], i+1)
				}
			}
		}
	}
}

// TestRoundTrip seals and opens every suite for IPv4 and IPv6 inner packets of many sizes.
func TestRoundTrip(t *testing.T) {
	for _, s := range allSuites() {
		out := mustSA(t, testParams(t, 0x1000, s, 7))
		in := mustSA(t, testParams(t, 0x1000, s, 7))
		for _, n := range []int{20, 40, 41, 63, 64, 65, 576, 1279, 1280, 1398, 1438, 1446, 1500, 8000} {
			for _, v := range []byte{4, 6} {
				if v == 6 && n < 40 {
					continue
				}
				inner := make([]byte, n)
				for i := range inner {
					inner[i] = byte(i * 7)
				}
				inner[0] = v << 4
				nh := NextHeaderIPv4
				if v == 6 {
					nh = NextHeaderIPv6
				}
				pkt, err := out.Seal(nil, inner, nh)
				if err != nil {
					t.Fatalf("%s: Seal(%d) = %v", s, n, err)
				}
				got, gotNH, err := in.Open(make([]byte, 0, len(pkt)), pkt)
				if err != nil || gotNH != nh || !bytes.Equal(got, inner) {
					t.Fatalf("%s: Open(Seal(%d bytes IPv%d)) = %d bytes, %d, %v; want the inner packet, %d, nil", s, n, v, len(got), gotNH, err, nh)
				}
			}
		}
	}
}

// craft builds an authenticated ESP packet whose decrypted payload is exactly body (no padding
// added), so Open's post-decryption checks can be exercised.
func craft(t *testing.T, sa *SA, seq uint32, body []byte) []byte {
	t.Helper()
	if len(body)%sa.block != 0 {
		t.Fatalf("craft: body of %d bytes not a multiple of %d", len(body), sa.block)
	}
	buf := make([]byte, sa.hdrLen+len(body), sa.hdrLen+len(body)+64)
	copy(buf[sa.hdrLen:], body)
	pkt := buf
	pkt[0], pkt[1], pkt[2], pkt[3] = byte(sa.spi>>24), byte(sa.spi>>16), byte(sa.spi>>8), byte(sa.spi)
	pkt[4], pkt[5], pkt[6], pkt[7] = byte(seq>>24), byte(seq>>16), byte(seq>>8), byte(seq)
	if sa.aead != nil {
		copy(pkt[8:16], []byte{0, 0, 0, 0, pkt[4], pkt[5], pkt[6], pkt[7]})
		ct := sa.gcmSeal(pkt[sa.hdrLen:], pkt[8:16], pkt[:8])
		return pkt[:sa.hdrLen+len(ct)]
	}
	sa.cbcEnc.SetIV(pkt[8:24])
	sa.cbcEnc.CryptBlocks(pkt[sa.hdrLen:], pkt[sa.hdrLen:])
	sa.macSeal.Reset()
	sa.macSeal.Write(pkt)
	sum := sa.macSeal.Sum(nil)
	return append(pkt, sum[:sa.icvLen]...)
}

func TestOpenRejects(t *testing.T) {
	ipv4 := func(n int) []byte {
		b := make([]byte, n)
		b[0] = 0x45
		return b
	}
	for _, s := range []Suite{SuiteAES256GCM16, SuiteAES128CBCSHA1, {Encr: EncrAESGCM12, KeyBits: 128}} {
		t.Run(s.String(), func(t *testing.T) {
			p := testParams(t, 0xabcd, s, 3)
			bl := s.blockLen()
			trailer := func(inner []byte, pad []byte, nh byte) []byte {
				b := append(append(append([]byte{}, inner...), pad...), byte(len(pad)), nh)
				return b
			}
			// A valid pad for a 20-byte IPv4 packet (20+2 rounded to the block).
			goodPadLen := (20+2+bl-1)/bl*bl - 22
			goodPad := make([]byte, goodPadLen)
			for i := range goodPad {
				goodPad[i] = byte(i + 1)
			}
			badPad := append([]byte{}, goodPad...)
			if len(badPad) > 0 {
				badPad[len(badPad)-1] ^= 0xff
			}
			tests := []struct {
				name string
				pkt  func(sa *SA) []byte
				want error
			}{
				{"empty", func(sa *SA) []byte { return nil }, ErrMalformed},
				{"header only", func(sa *SA) []byte { return make([]byte, sa.hdrLen) }, ErrMalformed},
				{"wrong spi", func(sa *SA) []byte {
					pkt, _ := mustSA(t, testParams(t, 0xabce, s, 3)).Seal(nil, ipv4(20), 4)
					return pkt
				}, ErrWrongSPI},
				{"flipped ciphertext bit", func(sa *SA) []byte {
					pkt, _ := mustSA(t, p).Seal(nil, ipv4(20), 4)
					pkt[sa.hdrLen+1] ^= 1
					return pkt
				}, ErrAuth},
				{"flipped icv bit", func(sa *SA) []byte {
					pkt, _ := mustSA(t, p).Seal(nil, ipv4(20), 4)
					pkt[len(pkt)-1] ^= 0x80
					return pkt
				}, ErrAuth},
				{"flipped seq bit", func(sa *SA) []byte {
					pkt, _ := mustSA(t, p).Seal(nil, ipv4(20), 4)
					pkt[7] ^= 4
					return pkt
				}, ErrAuth},
				{"wrong key", func(sa *SA) []byte {
					pkt, _ := mustSA(t, testParams(t, 0xabcd, s, 4)).Seal(nil, ipv4(20), 4)
					return pkt
				}, ErrAuth},
				{"truncated icv", func(sa *SA) []byte {
					pkt, _ := mustSA(t, p).Seal(nil, ipv4(20), 4)
					return pkt[:len(pkt)-1]
				}, ErrMalformed},
				{"seq zero", func(sa *SA) []byte { return craft(t, mustSA(t, p), 0, trailer(ipv4(20), goodPad, 4)) }, ErrReplay},
				{"bad pad byte", func(sa *SA) []byte { return craft(t, mustSA(t, p), 1, trailer(ipv4(20), badPad, 4)) }, ErrMalformed},
				{"pad length past start", func(sa *SA) []byte {
					b := trailer(ipv4(20), goodPad, 4)
					b[len(b)-2] = byte(len(b) - 1)
					return craft(t, mustSA(t, p), 1, b)
				}, ErrMalformed},
				{"next header udp", func(sa *SA) []byte { return craft(t, mustSA(t, p), 1, trailer(ipv4(20), goodPad, 17)) }, ErrMalformed},
				{"ipv6 next header, ipv4 packet", func(sa *SA) []byte {
					b := trailer(ipv4(20), goodPad, 41)
					return craft(t, mustSA(t, p), 1, b)
				}, ErrMalformed},
				{"inner too short", func(sa *SA) []byte {
					pad := make([]byte, (10+2+bl-1)/bl*bl-12)
					for i := range pad {
						pad[i] = byte(i + 1)
					}
					return craft(t, mustSA(t, p), 1, trailer(ipv4(10), pad, 4))
				}, ErrMalformed},
			}
			for _, tc := range tests {
				sa := mustSA(t, p)
				_, _, err := sa.Open(nil, tc.pkt(sa))
				if !errors.Is(err, tc.want) {
					t.Errorf("Open(%s) = %v; want %v", tc.name, err, tc.want)
				}
			}
			// Dummy packets (next header 59) are accepted and empty.
			sa := mustSA(t, p)
			inner, nh, err := sa.Open(nil, craft(t, mustSA(t, p), 5, trailer(ipv4(20), goodPad, NextHeaderDummy)))
			if err != nil || nh != NextHeaderDummy || len(inner) != 0 {
				t.Errorf("Open(dummy) = %x, %d, %v; want empty, 59, nil", inner, nh, err)
			}
		})
	}
}

// TestOpenReplayAfterAuthOnly checks that a forged packet does not move the window (RFC 4303
// §3.4.3: update only after the ICV verifies) and that a verified one does.
func TestOpenReplayAfterAuthOnly(t *testing.T) {
	p := testParams(t, 9, SuiteAES128GCM16, 1)
	out, in := mustSA(t, p), mustSA(t, p)
	ip := make([]byte, 20)
	ip[0] = 0x45
	var pkts [][]byte
	for i := 0; i < 3000; i++ {
		pkt, err := out.Seal(nil, ip, 4)
		if err != nil {
			t.Fatal(err)
		}
		pkts = append(pkts, pkt)
	}
	// A forgery claiming seq 3000 must not slide the window past seq 1.
	forged := append([]byte{}, pkts[2999]...)
	forged[len(forged)-1] ^= 1
	if _, _, err := in.Open(nil, forged); !errors.Is(err, ErrAuth) {
		t.Fatalf("Open(forged seq 3000) = %v; want ErrAuth", err)
	}
	if _, _, err := in.Open(nil, pkts[0]); err != nil {
		t.Fatalf("Open(seq 1) after a forgery = %v; want nil", err)
	}
	if _, _, err := in.Open(nil, pkts[0]); !errors.Is(err, ErrReplay) {
		t.Fatalf("Open(seq 1) twice = %v; want ErrReplay", err)
	}
	if _, _, err := in.Open(nil, pkts[2999]); err != nil {
		t.Fatalf("Open(seq 3000) = %v; want nil", err)
	}
	// seq 1000 is now left of the 1024 window (3000-1000 >= 1024); seq 2000 is inside.
	if _, _, err := in.Open(nil, pkts[999]); !errors.Is(err, ErrReplay) {
		t.Errorf("Open(seq 1000) after 3000 = %v; want ErrReplay (too old)", err)
	}
	if _, _, err := in.Open(nil, pkts[1999]); err != nil {
		t.Errorf("Open(seq 2000) after 3000 = %v; want nil", err)
	}
}

func TestSeqExhaustion(t *testing.T) {
	sa := mustSA(t, testParams(t, 1, SuiteAES128GCM16, 1))
	ip := make([]byte, 20)
	ip[0] = 0x45
	sa.seq.Store(SeqSoftLimit - 2)
	if sa.SoftLimitReached() {
		t.Errorf("SoftLimitReached() at %#x = true; want false", SeqSoftLimit-2)
	}
	if _, err := sa.Seal(nil, ip, 4); err != nil {
		t.Fatal(err)
	}
	if _, err := sa.Seal(nil, ip, 4); err != nil {
		t.Fatal(err)
	}
	if !sa.SoftLimitReached() {
		t.Errorf("SoftLimitReached() at %#x = false; want true", sa.SeqSent())
	}
	sa.seq.Store(0xFFFF_FFFE)
	pkt, err := sa.Seal(nil, ip, 4)
	if err != nil || !bytes.Equal(pkt[4:8], []byte{0xff, 0xff, 0xff, 0xff}) {
		t.Fatalf("Seal() at the last sequence number = %x, %v; want seq ffffffff, nil", pkt[4:8], err)
	}
	for i := 0; i < 3; i++ {
		if _, err := sa.Seal(nil, ip, 4); !errors.Is(err, ErrSeqExhausted) {
			t.Fatalf("Seal() after the last sequence number = %v; want ErrSeqExhausted", err)
		}
	}
	if got := sa.SeqSent(); got != 0x1_0000_0000 {
		t.Errorf("SeqSent() after exhaustion = %#x; want %#x (never wraps)", got, uint64(0x1_0000_0000))
	}
}

func TestSealNoRoom(t *testing.T) {
	sa := mustSA(t, testParams(t, 1, SuiteAES128CBCSHA1, 1))
	buf := make([]byte, 100)
	if _, err := sa.SealInPlace(buf, 10, 20, 4); !errors.Is(err, ErrNoRoom) {
		t.Errorf("SealInPlace(headroom 10) = %v; want ErrNoRoom", err)
	}
	if _, err := sa.SealInPlace(buf, 24, 70, 4); !errors.Is(err, ErrNoRoom) {
		t.Errorf("SealInPlace(no tailroom) = %v; want ErrNoRoom", err)
	}
	if got := sa.SeqSent(); got != 0 {
		t.Errorf("SeqSent() after failed seals = %d; want 0 (no sequence number burnt)", got)
	}
}

func TestNewSAErrors(t *testing.T) {
	good := testParams(t, 1, SuiteAES128CBCSHA1, 1)
	gcm := testParams(t, 1, SuiteAES256GCM16, 1)
	tests := []struct {
		name    string
		p       Params
		wantSub string
	}{
		{"gcm8", Params{SPI: 1, Suite: Suite{Encr: EncrAESGCM8, KeyBits: 128}, EncrKey: make([]byte, 20)}, "transform 18"},
		{"3des", Params{SPI: 1, Suite: Suite{Encr: 3, KeyBits: 192}}, "encr transform 3"},
		{"md5", Params{SPI: 1, Suite: Suite{Encr: EncrAESCBC, KeyBits: 128, Integ: 1}}, "integ transform 1"},
		{"gcm with integ", Params{SPI: 1, Suite: Suite{Encr: EncrAESGCM16, KeyBits: 128, Integ: 2}}, "combined-mode"},
		{"key bits", Params{SPI: 1, Suite: Suite{Encr: EncrAESCBC, KeyBits: 100, Integ: 2}}, "key length 100"},
		{"short cbc key", Params{SPI: 1, Suite: good.Suite, EncrKey: good.EncrKey[:15], IntegKey: good.IntegKey}, "encryption key is 15 bytes"},
		{"short integ key", Params{SPI: 1, Suite: good.Suite, EncrKey: good.EncrKey, IntegKey: good.IntegKey[:19]}, "integrity key is 19 bytes"},
		{"gcm without salt", Params{SPI: 1, Suite: gcm.Suite, EncrKey: gcm.EncrKey[:32]}, "encryption key is 32 bytes; want 36"},
		{"gcm with integ key", Params{SPI: 1, Suite: gcm.Suite, EncrKey: gcm.EncrKey, IntegKey: []byte{1}}, "integrity key given"},
		{"window too small", Params{SPI: 1, Suite: gcm.Suite, EncrKey: gcm.EncrKey, ReplayWindow: 32}, "replay window 32"},
		{"window too big", Params{SPI: 1, Suite: gcm.Suite, EncrKey: gcm.EncrKey, ReplayWindow: 4096}, "replay window 4096"},
	}
	for _, tc := range tests {
		_, err := NewSA(tc.p)
		if err == nil || !strings.Contains(err.Error(), tc.wantSub) {
			t.Errorf("NewSA(%s) = %v; want an error containing %q", tc.name, err, tc.wantSub)
		}
	}
	if _, err := ParamsFromKeymat(1, SuiteAES256GCM16, make([]byte, 35), 0); err == nil || !strings.Contains(err.Error(), "keymat is 35 bytes; want 36") {
		t.Errorf("ParamsFromKeymat(35 bytes) = %v; want a keymat length error", err)
	}
}

// TestKeysNeverPrinted scans slog (JSON and text) and fmt output of Params and SA for the key.
func TestKeysNeverPrinted(t *testing.T) {
	s := SuiteAES128CBCSHA1
	km := bytes.Repeat([]byte{0x5a}, s.KeymatLen())
	p, err := ParamsFromKeymat(0x01020304, s, km, 0)
	if err != nil {
		t.Fatal(err)
	}
	sa := mustSA(t, p)
	var out bytes.Buffer
	for _, h := range []slog.Handler{slog.NewJSONHandler(&out, nil), slog.NewTextHandler(&out, nil)} {
		l := slog.New(h)
		l.Info("install", "params", p, "sa", sa)
		l.Info("install", slog.Any("params", p), slog.Any("sa", sa))
	}
	fmt.Fprintf(&out, "%v %+v %#v %s %v %+v %#v %s\n", p, p, p, p, sa, sa, sa, sa)
	got := out.String()
	for _, secret := range []string{"5a5a5a", "ZZZ", "90 90 90", "[90 90"} {
		if strings.Contains(got, secret) {
			t.Errorf("log/fmt output contains key material %q:\n%s", secret, got)
		}
	}
	if !strings.Contains(got, "0x01020304") {
		t.Errorf("log/fmt output does not name the SPI:\n%s", got)
	}
}

func TestMTU(t *testing.T) {
	// The AWS table ("Best practices for your customer gateway device"): MTU / MSS.
	tests := []struct {
		suite             Suite
		plain, natT       int
		plainMSS, natTMSS int
	}{
		{SuiteAES256GCM16, 1446, 1438, 1406, 1398},
		{SuiteAES128GCM16, 1446, 1438, 1406, 1398},
		{SuiteAES128CBCSHA1, 1438, 1422, 1398, 1382},
		{SuiteAES256CBCSHA256, 1438, 1422, 1398, 1382},
		{Suite{Encr: EncrAESCBC, KeyBits: 256, Integ: AuthHMACSHA384192}, 1422, 1422, 1382, 1382},
		{Suite{Encr: EncrAESCBC, KeyBits: 128, Integ: AuthHMACSHA512256}, 1422, 1406, 1382, 1366},
	}
	for _, tc := range tests {
		mtu, mss := AWSMTU(tc.suite, false)
		if mtu != tc.plain || mss != tc.plainMSS {
			t.Errorf("AWSMTU(%s, natT=false) = %d, %d; want %d, %d", tc.suite, mtu, mss, tc.plain, tc.plainMSS)
		}
		mtu, mss = AWSMTU(tc.suite, true)
		if mtu != tc.natT || mss != tc.natTMSS {
			t.Errorf("AWSMTU(%s, natT=true) = %d, %d; want %d, %d", tc.suite, mtu, mss, tc.natT, tc.natTMSS)
		}
	}
	// The computed MTU really is the largest inner packet that fits: sealed + outer headers.
	for _, s := range allSuites() {
		for _, v6 := range []bool{false, true} {
			for _, udp := range []bool{false, true} {
				sa := mustSA(t, testParams(t, 1, s, 1))
				mtu := s.MTU(1500, v6, udp)
				outer := 20 + sa.SealedLen(mtu)
				if v6 {
					outer += 20
				}
				if udp {
					outer += 8
				}
				outerNext := outer - sa.SealedLen(mtu) + sa.SealedLen(mtu+1)
				if outer > 1500 || outerNext <= 1500 {
					t.Errorf("%s v6=%v udp=%v: MTU %d gives outer %d, MTU+1 gives %d; want <= 1500 and > 1500", s, v6, udp, mtu, outer, outerNext)
				}
				if got, want := s.Overhead(mtu, udp), sa.SealedLen(mtu)-mtu+map[bool]int{true: 8}[udp]; got != want {
					t.Errorf("%s: Overhead(%d, %v) = %d; want %d", s, mtu, udp, got, want)
				}
			}
		}
	}
}

func TestSuiteString(t *testing.T) {
	got := []string{SuiteAES256GCM16.String(), SuiteAES128CBCSHA1.String(), Suite{Encr: EncrAESGCM12, KeyBits: 128}.String(), SuiteAES256CBCSHA256.String()}
	want := []string{"aes256gcm16", "aes128-sha1", "aes128gcm12", "aes256-sha256"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Suite.String() mismatch (-want +got):\n%s", diff)
	}
}
