package esp

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"sync/atomic"
)

// Errors from Seal and Open. They are sentinels (never wrapped on the hot path) so that the data
// plane can count them without allocating.
var (
	// ErrMalformed: too short, bad length or alignment, bad padding or next header.
	ErrMalformed = errors.New("esp: malformed packet")
	// ErrAuth: the ICV did not verify (wrong key, corrupted or forged packet).
	ErrAuth = errors.New("esp: authentication failed")
	// ErrReplay: the sequence number is a duplicate or left of the anti-replay window.
	ErrReplay = errors.New("esp: replayed packet")
	// ErrSeqExhausted: the outbound SA used its last 32-bit sequence number; it must be rekeyed.
	ErrSeqExhausted = errors.New("esp: sequence numbers exhausted; rekey needed")
	// ErrWrongSPI: the packet's SPI is not this SA's.
	ErrWrongSPI = errors.New("esp: packet SPI does not match SA")
	// ErrNoRoom: the buffer given to Seal has not enough head- or tailroom.
	ErrNoRoom = errors.New("esp: no head- or tailroom for the ESP header and trailer")
)

// Sequence-number limits of an outbound SA (32-bit sequence numbers, no ESN).
const (
	// SeqSoftLimit is the sequence number after which SoftLimitReached turns true: 15/16 of the
	// space, which leaves 2^28 packets (about 40 minutes at 1.25 Gbit/s of 1400-byte packets)
	// for the rekey.
	SeqSoftLimit = 0xF000_0000
	seqHardLimit = 0xFFFF_FFFF
)

// Headroom and tailroom that Seal needs around an inner packet, for every suite.
const (
	// MaxHeaderLen is the largest ESP header: SPI, sequence number and a 16-byte CBC IV.
	MaxHeaderLen = 8 + 16
	// MaxTrailerLen is the largest trailer: 15 bytes of CBC padding, pad length, next header and
	// a 32-byte HMAC-SHA-512 ICV.
	MaxTrailerLen = 15 + 2 + 32
)

// SA is one direction of an ESP security association in tunnel mode.
//
// Concurrency: Seal must not run concurrently with another Seal on the same SA, nor Open with
// another Open (the data plane has one sending goroutine per tunnel and one receiving goroutine
// per socket). Seal and Open may run concurrently with each other and with the read-only
// methods (SPI, Suite, SeqSent, SoftLimitReached).
type SA struct {
	spi    uint32
	suite  Suite
	hdrLen int
	icvLen int
	block  int

	// GCM
	aead cipher.AEAD

	// CBC + HMAC; separate states for the two directions of use.
	cbc       cipher.Block
	cbcEnc    cbcMode
	cbcDec    cbcMode
	macSeal   hash.Hash
	macOpen   hash.Hash
	ivSecret  [16]byte // CBC IVs are AES_K(ivSecret XOR counter) (NIST SP 800-38A appendix C)
	ivScratch [16]byte

	// outbound
	seq atomic.Uint64 // last sequence number used

	// inbound
	opened    atomic.Uint64 // packets that passed Open
	lastIn    atomic.Int64  // Mux clock (Mux.now) of the last batch with a packet on this SA
	replay    replayWindow
	sealNonce [12]byte
	openNonce [12]byte
	sealSum   [64]byte
	openSum   [64]byte
}

type cbcMode interface {
	cipher.BlockMode
	SetIV([]byte)
}

// NewSA builds an SA from negotiated parameters. The key bytes are copied into the cipher
// state; p's slices may be reused afterwards.
func NewSA(p Params) (*SA, error) {
	if err := p.Suite.Validate(); err != nil {
		return nil, fmt.Errorf("esp sa 0x%08x: %w", p.SPI, err)
	}
	s := &SA{spi: p.SPI, suite: p.Suite, hdrLen: 8 + p.IVLen(), icvLen: p.ICVLen(), block: p.blockLen()}
	keyLen := p.KeyBits / 8
	if p.AEAD() {
		if len(p.EncrKey) != keyLen+4 {
			return nil, fmt.Errorf("esp sa 0x%08x: encryption key is %d bytes; want %d (%d-bit AES key and 4-byte salt)", p.SPI, len(p.EncrKey), keyLen+4, p.KeyBits)
		}
		if len(p.IntegKey) != 0 {
			return nil, fmt.Errorf("esp sa 0x%08x: integrity key given for combined-mode %s; want none", p.SPI, p.Suite)
		}
		b, err := aes.NewCipher(p.EncrKey[:keyLen])
		if err != nil {
			return nil, fmt.Errorf("esp sa 0x%08x: %w", p.SPI, err)
		}
		if s.icvLen == 16 {
			s.aead, err = cipher.NewGCM(b)
		} else {
			s.aead, err = cipher.NewGCMWithTagSize(b, s.icvLen)
		}
		if err != nil {
			return nil, fmt.Errorf("esp sa 0x%08x: %w", p.SPI, err)
		}
		copy(s.sealNonce[:4], p.EncrKey[keyLen:])
		copy(s.openNonce[:4], p.EncrKey[keyLen:])
	} else {
		if len(p.EncrKey) != keyLen {
			return nil, fmt.Errorf("esp sa 0x%08x: encryption key is %d bytes; want %d", p.SPI, len(p.EncrKey), keyLen)
		}
		ik, _ := integKeyLen(p.Integ)
		if len(p.IntegKey) != ik {
			return nil, fmt.Errorf("esp sa 0x%08x: integrity key is %d bytes; want %d for %s", p.SPI, len(p.IntegKey), ik, integName(p.Integ))
		}
		b, err := aes.NewCipher(p.EncrKey)
		if err != nil {
			return nil, fmt.Errorf("esp sa 0x%08x: %w", p.SPI, err)
		}
		s.cbc = b
		var zero [16]byte
		var ok bool
		if s.cbcEnc, ok = cipher.NewCBCEncrypter(b, zero[:]).(cbcMode); !ok {
			return nil, fmt.Errorf("esp sa 0x%08x: CBC encrypter without SetIV", p.SPI)
		}
		if s.cbcDec, ok = cipher.NewCBCDecrypter(b, zero[:]).(cbcMode); !ok {
			return nil, fmt.Errorf("esp sa 0x%08x: CBC decrypter without SetIV", p.SPI)
		}
		h := hashFor(p.Integ)
		s.macSeal = hmac.New(h, p.IntegKey)
		s.macOpen = hmac.New(h, p.IntegKey)
		if _, err := rand.Read(s.ivSecret[:]); err != nil {
			return nil, fmt.Errorf("esp sa 0x%08x: iv secret: %w", p.SPI, err)
		}
	}
	w, err := newReplayWindow(p.ReplayWindow)
	if err != nil {
		return nil, fmt.Errorf("esp sa 0x%08x: %w", p.SPI, err)
	}
	s.replay = w
	return s, nil
}

func hashFor(id uint16) func() hash.Hash {
	switch id {
	case AuthHMACSHA1_96:
		return sha1.New
	case AuthHMACSHA256128:
		return sha256.New
	case AuthHMACSHA384192:
		return sha512.New384
	}
	return sha512.New
}

// SPI is the SA's SPI.
func (s *SA) SPI() uint32 { return s.spi }

// Suite is the SA's algorithm suite.
func (s *SA) Suite() Suite { return s.suite }

// HeaderLen is the ESP header length for this SA (SPI, sequence number, IV).
func (s *SA) HeaderLen() int { return s.hdrLen }

// SeqSent is the last sequence number Seal used (0 before the first packet).
func (s *SA) SeqSent() uint64 { return s.seq.Load() }

// PacketsOpened counts the packets that authenticated on this (inbound) SA: once it moves on a
// new SA after a rekey, the peer has switched, and everything it sent on the old SA earlier
// has been received.
func (s *SA) PacketsOpened() uint64 { return s.opened.Load() }

// SoftLimitReached reports that the outbound sequence number passed SeqSoftLimit: the tunnel
// layer should rekey now, before Seal starts failing with ErrSeqExhausted.
func (s *SA) SoftLimitReached() bool { return s.seq.Load() >= SeqSoftLimit }

// String names the SA without its keys.
func (s *SA) String() string { return fmt.Sprintf("esp sa spi=0x%08x %s", s.spi, s.suite) }

// LogValue keeps keys out of logs.
func (s *SA) LogValue() slog.Value {
	return slog.GroupValue(slog.String("spi", fmt.Sprintf("0x%08x", s.spi)), slog.String("suite", s.suite.String()))
}

// GoString keeps %#v from printing cipher state.
func (s *SA) GoString() string { return s.String() }

// SealedLen is the ESP packet length for an inner packet of n bytes.
func (s *SA) SealedLen(n int) int {
	return s.hdrLen + (n+2+s.block-1)/s.block*s.block + s.icvLen
}

// SealInPlace encrypts the inner packet buf[off:off+n] with next header nh into an ESP packet
// that starts HeaderLen() bytes before off, and returns it (a subslice of buf). off must be at
// least HeaderLen() and cap(buf) at least off+n+MaxTrailerLen. It allocates nothing.
func (s *SA) SealInPlace(buf []byte, off, n int, nh byte) ([]byte, error) {
	start := off - s.hdrLen
	padded := (n + 2 + s.block - 1) / s.block * s.block
	end := off + padded + s.icvLen
	if start < 0 || n < 0 || end > cap(buf) {
		return nil, ErrNoRoom
	}
	seq := s.seq.Add(1)
	if seq > seqHardLimit {
		s.seq.Store(seqHardLimit + 1) // stay exhausted, never wrap
		return nil, ErrSeqExhausted
	}
	buf = buf[:end]
	pkt := buf[start:end]
	binary.BigEndian.PutUint32(pkt[0:], s.spi)
	binary.BigEndian.PutUint32(pkt[4:], uint32(seq))
	// RFC 4303 §2.4: padding bytes 1, 2, 3, ...; then pad length and next header.
	padLen := padded - n - 2
	tr := buf[off+n : off+padded]
	for i := 0; i < padLen; i++ {
		tr[i] = byte(i + 1)
	}
	tr[padLen] = byte(padLen)
	tr[padLen+1] = nh
	body := buf[off : off+padded]
	if s.aead != nil {
		// RFC 4106: explicit IV = the 64-bit counter, unique per key because sequence
		// numbers never repeat; nonce = salt || IV; AAD = SPI || sequence number.
		binary.BigEndian.PutUint64(pkt[8:16], seq)
		s.gcmSeal(body, pkt[8:16], pkt[:8])
		return pkt, nil
	}
	// CBC: IV = AES_K(secret XOR seq), unpredictable without the key and never repeated.
	iv := pkt[8:24]
	copy(s.ivScratch[:], s.ivSecret[:])
	binary.BigEndian.PutUint64(s.ivScratch[8:], binary.BigEndian.Uint64(s.ivSecret[8:])^seq)
	s.cbc.Encrypt(iv, s.ivScratch[:])
	s.cbcEnc.SetIV(iv)
	s.cbcEnc.CryptBlocks(body, body)
	s.macSeal.Reset()
	s.macSeal.Write(pkt[:s.hdrLen+padded])
	sum := s.macSeal.Sum(s.sealSum[:0])
	copy(pkt[s.hdrLen+padded:], sum[:s.icvLen])
	return pkt, nil
}

// Seal appends the ESP packet for inner (next header nh) to dst and returns the extended
// slice. It is the convenient form of SealInPlace; it copies inner.
func (s *SA) Seal(dst, inner []byte, nh byte) ([]byte, error) {
	need := s.SealedLen(len(inner))
	total := len(dst) + need
	if cap(dst) < total+MaxTrailerLen {
		nd := make([]byte, len(dst), total+MaxTrailerLen)
		copy(nd, dst)
		dst = nd
	}
	buf := dst[:len(dst)+s.hdrLen+len(inner)]
	copy(buf[len(dst)+s.hdrLen:], inner)
	pkt, err := s.SealInPlace(buf, len(dst)+s.hdrLen, len(inner), nh)
	if err != nil {
		return dst, err
	}
	return dst[:len(dst)+len(pkt)], nil
}

// minLen is the shortest ESP packet this SA can have produced.
func (s *SA) minLen() int { return s.hdrLen + s.block + s.icvLen }

// Open authenticates and decrypts the ESP packet pkt, checking the anti-replay window first
// and updating it once the ICV verified. The decrypted payload is written to dst[:len] (which
// is grown when its capacity is too small; pass pkt[HeaderLen():HeaderLen()] to decrypt in place)
// and the inner packet is returned with its next-header value. A dummy packet (next header 59)
// comes back with an empty inner packet and no error.
func (s *SA) Open(dst, pkt []byte) (inner []byte, nh byte, err error) {
	if len(pkt) < s.minLen() {
		return nil, 0, ErrMalformed
	}
	if binary.BigEndian.Uint32(pkt) != s.spi {
		return nil, 0, ErrWrongSPI
	}
	seq := binary.BigEndian.Uint32(pkt[4:])
	if !s.replay.check(seq) {
		return nil, 0, ErrReplay
	}
	ctLen := len(pkt) - s.hdrLen - s.icvLen
	if ctLen%s.block != 0 {
		return nil, 0, ErrMalformed
	}
	var pt []byte
	if s.aead != nil {
		pt, err = s.gcmOpen(dst, pkt[8:16], pkt[s.hdrLen:], pkt[:8])
		if err != nil {
			return nil, 0, ErrAuth
		}
	} else {
		s.macOpen.Reset()
		s.macOpen.Write(pkt[:len(pkt)-s.icvLen])
		sum := s.macOpen.Sum(s.openSum[:0])
		if !hmac.Equal(sum[:s.icvLen], pkt[len(pkt)-s.icvLen:]) {
			return nil, 0, ErrAuth
		}
		if cap(dst) < ctLen {
			dst = make([]byte, ctLen)
		}
		pt = dst[:ctLen]
		s.cbcDec.SetIV(pkt[8:24]) // copied by the decrypter
		s.cbcDec.CryptBlocks(pt, pkt[s.hdrLen:s.hdrLen+ctLen])
	}
	s.replay.update(seq)
	s.opened.Add(1)
	padLen := int(pt[len(pt)-2])
	nh = pt[len(pt)-1]
	if padLen+2 > len(pt) {
		return nil, 0, ErrMalformed
	}
	pad := pt[len(pt)-2-padLen : len(pt)-2]
	for i, b := range pad {
		if b != byte(i+1) {
			return nil, 0, ErrMalformed
		}
	}
	inner = pt[:len(pt)-2-padLen]
	switch nh {
	case NextHeaderIPv4:
		if len(inner) < 20 || inner[0]>>4 != 4 {
			return nil, 0, ErrMalformed
		}
	case NextHeaderIPv6:
		if len(inner) < 40 || inner[0]>>4 != 6 {
			return nil, 0, ErrMalformed
		}
	case NextHeaderDummy:
		return inner[:0], nh, nil
	default:
		return nil, 0, ErrMalformed
	}
	return inner, nh, nil
}

// gcmSeal is the RFC 4106 AEAD step: nonce = salt || iv (8 bytes), encrypting body in place and
// writing the ICV after it (body must have the capacity).
func (s *SA) gcmSeal(body, iv, aad []byte) []byte {
	copy(s.sealNonce[4:], iv)
	return s.aead.Seal(body[:0], s.sealNonce[:], body, aad)
}

// gcmOpen is the inverse AEAD step: ct is ciphertext || ICV; the plaintext goes to dst[:0].
func (s *SA) gcmOpen(dst, iv, ct, aad []byte) ([]byte, error) {
	copy(s.openNonce[4:], iv)
	return s.aead.Open(dst[:0], s.openNonce[:], ct, aad)
}
