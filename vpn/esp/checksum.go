package esp

import (
	"encoding/binary"
	"math/bits"
)

// sumFast is the RFC 1071 one's-complement sum of b, 8 bytes per step. It adds little-endian
// 64-bit words with end-around carry and swaps the folded result: the one's-complement sum is
// independent of byte order up to a final swap (RFC 1071 §2(B)). The result is the unfolded
// big-endian sum ready for checksumFold or to be added to a pseudo-header sum.
func sumFast(b []byte) uint64 {
	var s, c uint64
	for len(b) >= 32 {
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[8:]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[16:]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[24:]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b), c)
		b = b[8:]
	}
	s += c // cannot overflow: s < 2^64-1 when c is 1
	var tail uint64
	switch len(b) {
	case 7:
		tail |= uint64(b[6]) << 48
		fallthrough
	case 6:
		tail |= uint64(b[5]) << 40
		fallthrough
	case 5:
		tail |= uint64(b[4]) << 32
		fallthrough
	case 4:
		tail |= uint64(b[3]) << 24
		fallthrough
	case 3:
		tail |= uint64(b[2]) << 16
		fallthrough
	case 2:
		tail |= uint64(b[1]) << 8
		fallthrough
	case 1:
		tail |= uint64(b[0])
	}
	s, c = bits.Add64(s, tail, 0)
	s += c
	// Fold 64 -> 16 bits (little-endian view), then swap to big-endian.
	s = s&0xffffffff + s>>32
	s = s&0xffffffff + s>>32
	s = s&0xffff + s>>16
	s = s&0xffff + s>>16
	return uint64(bits.ReverseBytes16(uint16(s)))
}
