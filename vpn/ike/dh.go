package ike

import (
	"crypto/ecdh"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sync"
)

// dhGroup is a Diffie-Hellman group (RFC 7296 §3.3.2 transform type 4).
type dhGroup interface {
	id() uint16
	// generate makes a fresh private value.
	generate(rand io.Reader) (dhKey, error)
}

// dhKey is one side's private value.
type dhKey interface {
	// public is the KE payload data.
	public() []byte
	// shared validates the peer's KE data and returns g^ir, padded to the group's length.
	shared(peer []byte) ([]byte, error)
}

var errBadPublic = errors.New("invalid Diffie-Hellman public value")

func dhByID(id uint16) (dhGroup, bool) {
	switch id {
	case DHModp1024, DHModp1536, DHModp2048, DHModp3072, DHModp4096, DHModp6144, DHModp8192,
		DHModp1024s160, DHModp2048s224, DHModp2048s256:
		return modpGroups[id], true
	case DHECP256:
		return ecpGroup{DHECP256, ecdh.P256(), 32}, true
	case DHECP384:
		return ecpGroup{DHECP384, ecdh.P384(), 48}, true
	case DHECP521:
		return ecpGroup{DHECP521, ecdh.P521(), 66}, true
	case DHCurve25519:
		return x25519Group{}, true
	}
	return nil, false
}

// ---- MODP ----

// modpGroup is a MODP group. The RFC 2409/3526 primes are
// p = 2^n - 2^(n-64) - 1 + 2^64 * (floor(2^(n-130) * pi) + k), generator 2; they are computed
// from pi on first use (and checked against fingerprints in the tests). The RFC 5114 groups
// (22-24) have explicit p, g and a prime-order subgroup q, and need the subgroup check.
type modpGroup struct {
	gid     uint16
	bits    uint
	k       int64  // pi-formula constant (RFC 2409/3526 groups)
	pHex    string // RFC 5114 groups
	gHex    string
	qHex    string
	expBits int // private exponent length for the safe-prime groups

	once    sync.Once
	p, g, q *big.Int
	pm1     *big.Int
}

var modpGroups = map[uint16]*modpGroup{
	DHModp1024: {gid: DHModp1024, bits: 1024, k: 129093, expBits: 256},
	DHModp1536: {gid: DHModp1536, bits: 1536, k: 741804, expBits: 256},
	DHModp2048: {gid: DHModp2048, bits: 2048, k: 124476, expBits: 320},
	DHModp3072: {gid: DHModp3072, bits: 3072, k: 1690314, expBits: 420},
	DHModp4096: {gid: DHModp4096, bits: 4096, k: 240904, expBits: 480},
	DHModp6144: {gid: DHModp6144, bits: 6144, k: 929484, expBits: 540},
	DHModp8192: {gid: DHModp8192, bits: 8192, k: 4743158, expBits: 620},
	// RFC 5114 §2.1-2.3.
	DHModp1024s160: {gid: DHModp1024s160, bits: 1024,
		pHex: "B10B8F96A080E01DDE92DE5EAE5D54EC52C99FBCFB06A3C69A6A9DCA52D23B616073E28675A23D189838EF1E2EE652C013ECB4AEA906112324975C3CD49B83BFACCBDD7D90C4BD7098488E9C219A73724EFFD6FAE5644738FAA31A4FF55BCCC0A151AF5F0DC8B4BD45BF37DF365C1A65E68CFDA76D4DA708DF1FB2BC2E4A4371",
		gHex: "A4D1CBD5C3FD34126765A442EFB99905F8104DD258AC507FD6406CFF14266D31266FEA1E5C41564B777E690F5504F213160217B4B01B886A5E91547F9E2749F4D7FBD7D3B9A92EE1909D0D2263F80A76A6A24C087A091F531DBF0A0169B6A28AD662A4D18E73AFA32D779D5918D08BC8858F4DCEF97C2A24855E6EEB22B3B2E5",
		qHex: "F518AA8781A8DF278ABA4E7D64B7CB9D49462353"},
	DHModp2048s224: {gid: DHModp2048s224, bits: 2048,
		pHex: "AD107E1E9123A9D0D660FAA79559C51FA20D64E5683B9FD1B54B1597B61D0A75E6FA141DF95A56DBAF9A3C407BA1DF15EB3D688A309C180E1DE6B85A1274A0A66D3F8152AD6AC2129037C9EDEFDA4DF8D91E8FEF55B7394B7AD5B7D0B6C12207C9F98D11ED34DBF6C6BA0B2C8BBC27BE6A00E0A0B9C49708B3BF8A317091883681286130BC8985DB1602E714415D9330278273C7DE31EFDC7310F7121FD5A07415987D9ADC0A486DCDF93ACC44328387315D75E198C641A480CD86A1B9E587E8BE60E69CC928B2B9C52172E413042E9B23F10B0E16E79763C9B53DCF4BA80A29E3FB73C16B8E75B97EF363E2FFA31F71CF9DE5384E71B81C0AC4DFFE0C10E64F",
		gHex: "AC4032EF4F2D9AE39DF30B5C8FFDAC506CDEBE7B89998CAF74866A08CFE4FFE3A6824A4E10B9A6F0DD921F01A70C4AFAAB739D7700C29F52C57DB17C620A8652BE5E9001A8D66AD7C17669101999024AF4D027275AC1348BB8A762D0521BC98AE247150422EA1ED409939D54DA7460CDB5F6C6B250717CBEF180EB34118E98D119529A45D6F834566E3025E316A330EFBB77A86F0C1AB15B051AE3D428C8F8ACB70A8137150B8EEB10E183EDD19963DDD9E263E4770589EF6AA21E7F5F2FF381B539CCE3409D13CD566AFBB48D6C019181E1BCFE94B30269EDFE72FE9B6AA4BD7B5A0F1C71CFFF4C19C418E1F6EC017981BC087F2A7065B384B890D3191F2BFA",
		qHex: "801C0D34C58D93FE997177101F80535A4738CEBCBF389A99B36371EB"},
	DHModp2048s256: {gid: DHModp2048s256, bits: 2048,
		pHex: "87A8E61DB4B6663CFFBBD19C651959998CEEF608660DD0F25D2CEED4435E3B00E00DF8F1D61957D4FAF7DF4561B2AA3016C3D91134096FAA3BF4296D830E9A7C209E0C6497517ABD5A8A9D306BCF67ED91F9E6725B4758C022E0B1EF4275BF7B6C5BFC11D45F9088B941F54EB1E59BB8BC39A0BF12307F5C4FDB70C581B23F76B63ACAE1CAA6B7902D52526735488A0EF13C6D9A51BFA4AB3AD8347796524D8EF6A167B5A41825D967E144E5140564251CCACB83E6B486F6B3CA3F7971506026C0B857F689962856DED4010ABD0BE621C3A3960A54E710C375F26375D7014103A4B54330C198AF126116D2276E11715F693877FAD7EF09CADB094AE91E1A1597",
		gHex: "3FB32C9B73134D0B2E77506660EDBD484CA7B18F21EF205407F4793A1A0BA12510DBC15077BE463FFF4FED4AAC0BB555BE3A6C1B0C6B47B1BC3773BF7E8C6F62901228F8C28CBB18A55AE31341000A650196F931C77A57F2DDF463E5E9EC144B777DE62AAAB8A8628AC376D282D6ED3864E67982428EBC831D14348F6F2F9193B5045AF2767164E1DFC967C1FB3F2E55A4BD1BFFE83B9C80D052B985D182EA0ADB2A3B7313D3FE14C8484B1E052588B9B7D2BBD2DF016199ECD06E1557CD0915B3353BBB64E0EC377FD028370DF92B52C7891428CDC67EB6184B523D1DB246C32F63078490F00EF8D647D148D47954515E2327CFEF98C582664B4C0F6CC41659",
		qHex: "8CF83642A709A097B447997640129DA299B1A47D1EB3750BA308B0FE64F5FBD3"},
}

func (g *modpGroup) id() uint16 { return g.gid }

func (g *modpGroup) init() {
	g.once.Do(func() {
		if g.pHex != "" {
			g.p, _ = new(big.Int).SetString(g.pHex, 16)
			g.g, _ = new(big.Int).SetString(g.gHex, 16)
			g.q, _ = new(big.Int).SetString(g.qHex, 16)
		} else {
			g.p = piPrime(g.bits, g.k)
			g.g = big.NewInt(2)
		}
		g.pm1 = new(big.Int).Sub(g.p, big.NewInt(1))
	})
}

func (g *modpGroup) byteLen() int { return int(g.bits / 8) }

type modpKey struct {
	g *modpGroup
	x *big.Int
}

func (g *modpGroup) generate(rand io.Reader) (dhKey, error) {
	g.init()
	var x *big.Int
	if g.q != nil {
		// x uniform in [2, q-2]
		lim := new(big.Int).Sub(g.q, big.NewInt(3))
		r, err := randInt(rand, lim)
		if err != nil {
			return nil, err
		}
		x = r.Add(r, big.NewInt(2))
	} else {
		buf := make([]byte, g.expBits/8)
		if _, err := io.ReadFull(rand, buf); err != nil {
			return nil, err
		}
		buf[0] |= 0x80 // full length exponent
		x = new(big.Int).SetBytes(buf)
	}
	return &modpKey{g: g, x: x}, nil
}

// newModpKey builds a key from a known private value (tests with published vectors).
func newModpKey(id uint16, x *big.Int) *modpKey {
	g := modpGroups[id]
	g.init()
	return &modpKey{g: g, x: x}
}

func (k *modpKey) public() []byte {
	y := new(big.Int).Exp(k.g.g, k.x, k.g.p)
	return y.FillBytes(make([]byte, k.g.byteLen()))
}

func (k *modpKey) shared(peer []byte) ([]byte, error) {
	g := k.g
	if len(peer) != g.byteLen() {
		return nil, fmt.Errorf("%w: %d bytes for a %d-bit group", errBadPublic, len(peer), g.bits)
	}
	y := new(big.Int).SetBytes(peer)
	// RFC 6989 / NIST SP 800-56A: 1 < y < p-1
	if y.Cmp(big.NewInt(1)) <= 0 || y.Cmp(g.pm1) >= 0 {
		return nil, fmt.Errorf("%w: not in (1, p-1)", errBadPublic)
	}
	if g.q != nil && new(big.Int).Exp(y, g.q, g.p).Cmp(big.NewInt(1)) != 0 {
		return nil, fmt.Errorf("%w: not in the prime-order subgroup", errBadPublic)
	}
	z := new(big.Int).Exp(y, k.x, g.p)
	return z.FillBytes(make([]byte, g.byteLen())), nil
}

// randInt returns a uniform integer in [0, max].
func randInt(rand io.Reader, max *big.Int) (*big.Int, error) {
	n := (max.BitLen() + 7) / 8
	buf := make([]byte, n)
	extra := uint(n*8 - max.BitLen())
	for {
		if _, err := io.ReadFull(rand, buf); err != nil {
			return nil, err
		}
		buf[0] &= byte(0xff >> extra)
		r := new(big.Int).SetBytes(buf)
		if r.Cmp(max) <= 0 {
			return r, nil
		}
	}
}

var (
	piOnce sync.Once
	piBits *big.Int // floor(pi * 2^piPrec)
)

const piPrec = 8192 - 130

// piPrime computes the RFC 2409/3526 prime of n bits with constant k.
func piPrime(n uint, k int64) *big.Int {
	piOnce.Do(func() { piBits = computePi(piPrec) })
	t := new(big.Int).Rsh(piBits, piPrec-(n-130)) // floor(2^(n-130) * pi)
	t.Add(t, big.NewInt(k))
	t.Lsh(t, 64)
	p := new(big.Int).Lsh(big.NewInt(1), n)
	p.Sub(p, new(big.Int).Lsh(big.NewInt(1), n-64))
	p.Sub(p, big.NewInt(1))
	return p.Add(p, t)
}

// computePi returns floor(pi * 2^prec) by Machin's formula pi = 16 atan(1/5) - 4 atan(1/239),
// with 128 guard bits.
func computePi(prec uint) *big.Int {
	const guard = 128
	a := atanInv(5, prec+guard)
	b := atanInv(239, prec+guard)
	a.Mul(a, big.NewInt(16))
	a.Sub(a, b.Mul(b, big.NewInt(4)))
	return a.Rsh(a, guard)
}

// atanInv returns atan(1/x) * 2^prec (truncated series).
func atanInv(x int64, prec uint) *big.Int {
	xb := big.NewInt(x)
	x2 := new(big.Int).Mul(xb, xb)
	term := new(big.Int).Lsh(big.NewInt(1), prec)
	term.Quo(term, xb)
	sum := new(big.Int).Set(term)
	t := new(big.Int)
	for n, neg := int64(3), true; term.Sign() != 0; n, neg = n+2, !neg {
		term.Quo(term, x2)
		t.Quo(term, big.NewInt(n))
		if neg {
			sum.Sub(sum, t)
		} else {
			sum.Add(sum, t)
		}
	}
	return sum
}

// ---- ECP (RFC 5903) ----

type ecpGroup struct {
	gid   uint16
	curve ecdh.Curve
	clen  int
}

func (g ecpGroup) id() uint16 { return g.gid }

func (g ecpGroup) generate(rand io.Reader) (dhKey, error) {
	k, err := g.curve.GenerateKey(rand)
	if err != nil {
		return nil, err
	}
	return &ecpKey{g: g, k: k}, nil
}

type ecpKey struct {
	g ecpGroup
	k *ecdh.PrivateKey
}

// public is x | y without the SEC1 0x04 prefix (RFC 5903 §7).
func (k *ecpKey) public() []byte { return k.k.PublicKey().Bytes()[1:] }

// shared is the x coordinate of the shared point (RFC 5903 §7).
func (k *ecpKey) shared(peer []byte) ([]byte, error) {
	if len(peer) != 2*k.g.clen {
		return nil, fmt.Errorf("%w: %d bytes for a %d-byte curve", errBadPublic, len(peer), k.g.clen)
	}
	pub, err := k.g.curve.NewPublicKey(append([]byte{4}, peer...))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadPublic, err)
	}
	s, err := k.k.ECDH(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadPublic, err)
	}
	return s, nil
}

// ---- Curve25519 (RFC 8031) ----

type x25519Group struct{}

func (x25519Group) id() uint16 { return DHCurve25519 }

func (x25519Group) generate(rand io.Reader) (dhKey, error) {
	k, err := ecdh.X25519().GenerateKey(rand)
	if err != nil {
		return nil, err
	}
	return &x25519Key{k: k}, nil
}

type x25519Key struct{ k *ecdh.PrivateKey }

func (k *x25519Key) public() []byte { return k.k.PublicKey().Bytes() }

// shared rejects a peer value of the wrong length and an all-zero result (RFC 8031 §2.3).
func (k *x25519Key) shared(peer []byte) ([]byte, error) {
	if len(peer) != 32 {
		return nil, fmt.Errorf("%w: %d bytes for curve25519", errBadPublic, len(peer))
	}
	pub, err := ecdh.X25519().NewPublicKey(peer)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadPublic, err)
	}
	s, err := k.k.ECDH(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadPublic, err)
	}
	return s, nil
}
