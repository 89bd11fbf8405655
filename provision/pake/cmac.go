package pake

import (
	"crypto/aes"
	"crypto/subtle"
)

// cmacAES computes AES-CMAC (RFC 4493) of msg under a 16-byte key. It panics on a key of the wrong
// size: callers pass keys from the key schedule, which are always 16 bytes for the CMAC suites.
func cmacAES(key, msg []byte) []byte {
	c, err := aes.NewCipher(key)
	if err != nil {
		panic("spake2+: cmac key: " + err.Error())
	}
	const bs = aes.BlockSize
	// Subkeys K1, K2 from L = AES(K, 0^128).
	var l [bs]byte
	c.Encrypt(l[:], l[:])
	k1 := dbl(l)
	k2 := dbl(k1)

	n := (len(msg) + bs - 1) / bs
	complete := n > 0 && len(msg)%bs == 0
	if n == 0 {
		n = 1
	}
	var last [bs]byte
	tail := msg[(n-1)*bs:]
	if complete {
		copy(last[:], tail)
		subtle.XORBytes(last[:], last[:], k1[:])
	} else {
		copy(last[:], tail)
		last[len(tail)] = 0x80
		subtle.XORBytes(last[:], last[:], k2[:])
	}
	var x [bs]byte
	for i := 0; i < n-1; i++ {
		subtle.XORBytes(x[:], x[:], msg[i*bs:(i+1)*bs])
		c.Encrypt(x[:], x[:])
	}
	subtle.XORBytes(x[:], x[:], last[:])
	c.Encrypt(x[:], x[:])
	return x[:]
}

// dbl multiplies a block by x in GF(2^128) (RFC 4493 §2.3, Rb = 0x87).
func dbl(in [16]byte) [16]byte {
	var out [16]byte
	carry := in[0] >> 7
	for i := 0; i < 15; i++ {
		out[i] = in[i]<<1 | in[i+1]>>7
	}
	out[15] = in[15] << 1
	out[15] ^= byte(-int8(carry)) & 0x87
	return out
}
