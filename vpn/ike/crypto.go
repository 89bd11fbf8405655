package ike

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
)

// prfAlg is a negotiated pseudorandom function (HMAC-based; RFC 7296 §2.13).
type prfAlg struct {
	id      uint16
	newHash func() hash.Hash
	size    int // output and preferred key length in bytes
}

func prfByID(id uint16) (prfAlg, bool) {
	switch id {
	case PRFHMACSHA1:
		return prfAlg{id, sha1.New, 20}, true
	case PRFHMACSHA2256:
		return prfAlg{id, sha256.New, 32}, true
	case PRFHMACSHA2384:
		return prfAlg{id, sha512.New384, 48}, true
	case PRFHMACSHA2512:
		return prfAlg{id, sha512.New, 64}, true
	}
	return prfAlg{}, false
}

// mac computes prf(key, data[0] | data[1] | ...).
func (p prfAlg) mac(key []byte, data ...[]byte) []byte {
	h := hmac.New(p.newHash, key)
	for _, d := range data {
		h.Write(d)
	}
	return h.Sum(nil)
}

// plus is prf+ (RFC 7296 §2.13): T1 | T2 | ... truncated to n bytes, where
// T1 = prf(K, S | 0x01) and Tn = prf(K, Tn-1 | S | n). n may not exceed 255 blocks.
func (p prfAlg) plus(key, seed []byte, n int) ([]byte, error) {
	if n > 255*p.size {
		return nil, fmt.Errorf("prf+: %d bytes requested, at most %d", n, 255*p.size)
	}
	out := make([]byte, 0, n+p.size)
	var t []byte
	h := hmac.New(p.newHash, key)
	for i := 1; len(out) < n; i++ {
		h.Reset()
		h.Write(t)
		h.Write(seed)
		h.Write([]byte{byte(i)})
		t = h.Sum(nil)
		out = append(out, t...)
	}
	return out[:n], nil
}

// integAlg is a negotiated integrity algorithm (truncated HMAC).
type integAlg struct {
	id      uint16
	newHash func() hash.Hash
	keyLen  int
	icvLen  int
}

func integByID(id uint16) (integAlg, bool) {
	switch id {
	case IntegHMACSHA196:
		return integAlg{id, sha1.New, 20, 12}, true
	case IntegHMACSHA2256128:
		return integAlg{id, sha256.New, 32, 16}, true
	case IntegHMACSHA2384192:
		return integAlg{id, sha512.New384, 48, 24}, true
	case IntegHMACSHA2512256:
		return integAlg{id, sha512.New, 64, 32}, true
	}
	return integAlg{}, false
}

// encrAlg is a negotiated encryption algorithm.
type encrAlg struct {
	id      uint16
	keyBits int
	aead    bool
	icvLen  int // AEAD tag length
}

func encrByID(id uint16, keyBits uint16) (encrAlg, bool) {
	switch keyBits {
	case 128, 192, 256:
	default:
		return encrAlg{}, false
	}
	switch id {
	case EncrAESCBC:
		return encrAlg{id: id, keyBits: int(keyBits)}, true
	case EncrAESGCM16:
		return encrAlg{id: id, keyBits: int(keyBits), aead: true, icvLen: 16}, true
	case EncrAESGCM12:
		return encrAlg{id: id, keyBits: int(keyBits), aead: true, icvLen: 12}, true
	}
	return encrAlg{}, false
}

// keyMatLen is the number of key bytes the algorithm takes from a key stream: the AES key plus,
// for GCM, the 4-byte salt (RFC 4106 §8.1, RFC 5282 §7.1).
func (e encrAlg) keyMatLen() int {
	n := e.keyBits / 8
	if e.aead {
		n += 4
	}
	return n
}

// skDir protects SK payloads in one direction.
type skDir struct {
	encr  encrAlg
	integ integAlg
	ikey  []byte
	block cipher.Block
	aead  cipher.AEAD
	salt  []byte
	seq   uint64 // GCM explicit IV counter (this side only ever encrypts with its own key)
}

func newSKDir(e encrAlg, in integAlg, ekey, ikey []byte) (*skDir, error) {
	d := &skDir{encr: e, integ: in, ikey: ikey}
	k := ekey
	if e.aead {
		k, d.salt = ekey[:len(ekey)-4], ekey[len(ekey)-4:]
	}
	b, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	d.block = b
	if e.aead {
		d.aead, err = cipher.NewGCMWithTagSize(b, e.icvLen)
		if err != nil {
			return nil, err
		}
	}
	return d, nil
}

func (d *skDir) ivLen() int {
	if d.encr.aead {
		return 8
	}
	return aes.BlockSize
}

func (d *skDir) icvLen() int {
	if d.encr.aead {
		return d.encr.icvLen
	}
	return d.integ.icvLen
}

// paddedLen is the length of plaintext plus padding plus the pad-length byte.
func (d *skDir) paddedLen(n int) int {
	if d.encr.aead {
		return n + 1
	}
	return (n + 1 + aes.BlockSize - 1) / aes.BlockSize * aes.BlockSize
}

// sealedLen is the length of IV | ciphertext | ICV for n plaintext bytes.
func (d *skDir) sealedLen(n int) int { return d.ivLen() + d.paddedLen(n) + d.icvLen() }

// seal appends IV | ciphertext | ICV to msg, which holds everything that precedes the IV (IKE
// header and the SK/SKF header) with its final lengths already set.
func (d *skDir) seal(msg, plain []byte, rnd io.Reader) ([]byte, error) {
	pl := d.paddedLen(len(plain))
	buf := make([]byte, pl)
	copy(buf, plain)
	buf[pl-1] = byte(pl - len(plain) - 1)
	if d.encr.aead {
		d.seq++
		iv := binary.BigEndian.AppendUint64(nil, d.seq)
		nonce := append(append(make([]byte, 0, 12), d.salt...), iv...)
		aad := msg
		msg = append(msg, iv...)
		return d.aead.Seal(msg, nonce, buf, aad), nil
	}
	iv := make([]byte, aes.BlockSize)
	if _, err := io.ReadFull(rnd, iv); err != nil {
		return nil, err
	}
	msg = append(msg, iv...)
	ctStart := len(msg)
	msg = append(msg, buf...)
	cipher.NewCBCEncrypter(d.block, iv).CryptBlocks(msg[ctStart:], msg[ctStart:])
	h := hmac.New(d.integ.newHash, d.ikey)
	h.Write(msg)
	return append(msg, h.Sum(nil)[:d.integ.icvLen]...), nil
}

var errIntegrity = errors.New("integrity check failed")

// open verifies and decrypts body (IV | ciphertext | ICV), the tail of msg, and returns the
// plaintext without padding.
func (d *skDir) open(msg, body []byte) ([]byte, error) {
	ivl, icvl := d.ivLen(), d.icvLen()
	if len(body) < ivl+icvl+1 {
		return nil, perr("SK", "encrypted body of %d bytes", len(body))
	}
	prefix := msg[:len(msg)-len(body)]
	var plain []byte
	if d.encr.aead {
		iv := body[:ivl]
		nonce := append(append(make([]byte, 0, 12), d.salt...), iv...)
		var err error
		plain, err = d.aead.Open(nil, nonce, body[ivl:], prefix)
		if err != nil {
			return nil, errIntegrity
		}
	} else {
		ct := body[ivl : len(body)-icvl]
		if len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
			return nil, perr("SK", "ciphertext of %d bytes is not a whole number of blocks", len(ct))
		}
		h := hmac.New(d.integ.newHash, d.ikey)
		h.Write(msg[:len(msg)-icvl])
		if subtle.ConstantTimeCompare(h.Sum(nil)[:icvl], body[len(body)-icvl:]) != 1 {
			return nil, errIntegrity
		}
		plain = make([]byte, len(ct))
		cipher.NewCBCDecrypter(d.block, body[:ivl]).CryptBlocks(plain, ct)
	}
	if len(plain) == 0 {
		return nil, perr("SK", "empty plaintext")
	}
	pad := int(plain[len(plain)-1])
	if pad+1 > len(plain) {
		return nil, perr("SK", "pad length %d exceeds plaintext", pad)
	}
	return plain[:len(plain)-pad-1], nil
}

// ikeKeys are the keys of one IKE SA (RFC 7296 §2.14).
type ikeKeys struct {
	d, ai, ar, ei, er, pi, pr []byte
}

// deriveIKEKeys expands SKEYSEED into the seven IKE SA keys with prf+ (of kdf, which strongSwan
// 5.9 takes from the old SA when rekeying; see doc.go) for the negotiated suite s.
func deriveIKEKeys(kdf prfAlg, s *ikeSuite, skeyseed, ni, nr []byte, spiI, spiR uint64) (*ikeKeys, error) {
	seed := make([]byte, 0, len(ni)+len(nr)+16)
	seed = append(seed, ni...)
	seed = append(seed, nr...)
	seed = binary.BigEndian.AppendUint64(seed, spiI)
	seed = binary.BigEndian.AppendUint64(seed, spiR)
	il, el, pl := s.integ.keyLen, s.encr.keyMatLen(), s.prf.size
	km, err := kdf.plus(skeyseed, seed, 3*pl+2*il+2*el)
	if err != nil {
		return nil, err
	}
	k := &ikeKeys{}
	take := func(n int) []byte { v := km[:n:n]; km = km[n:]; return v }
	k.d = take(pl)
	k.ai = take(il)
	k.ar = take(il)
	k.ei = take(el)
	k.er = take(el)
	k.pi = take(pl)
	k.pr = take(pl)
	return k, nil
}

// childKeys is the KEYMAT split of one CHILD SA (RFC 7296 §2.17): initiator-to-responder keys
// first, encryption before integrity.
type childKeys struct {
	encI, integI, encR, integR []byte
}

func deriveChildKeys(p prfAlg, skd []byte, s *espSuite, shared, ni, nr []byte) (*childKeys, error) {
	seed := make([]byte, 0, len(shared)+len(ni)+len(nr))
	seed = append(seed, shared...)
	seed = append(seed, ni...)
	seed = append(seed, nr...)
	el, il := s.encr.keyMatLen(), s.integ.keyLen
	km, err := p.plus(skd, seed, 2*el+2*il)
	if err != nil {
		return nil, err
	}
	take := func(n int) []byte { v := km[:n:n]; km = km[n:]; return v }
	k := &childKeys{}
	k.encI = take(el)
	k.integI = take(il)
	k.encR = take(el)
	k.integR = take(il)
	return k, nil
}

// keyPad is the PSK key pad of RFC 7296 §2.15.
var keyPad = []byte("Key Pad for IKEv2")

// pskAuth computes AUTH = prf(prf(PSK, "Key Pad for IKEv2"), msg | nonce | prf(SK_p, IDbody)).
func pskAuth(p prfAlg, psk, realMsg, nonce, skP, idBody []byte) []byte {
	k := p.mac(psk, keyPad)
	return p.mac(k, realMsg, nonce, p.mac(skP, idBody))
}
