package esp

import (
	"fmt"
	"log/slog"
)

// IANA IKEv2 transform IDs (https://www.iana.org/assignments/ikev2-parameters), the vocabulary
// vpn/ike hands CHILD SAs over in, so that this package imports nothing from it.
const (
	// Transform type 1 (ENCR).
	EncrAESCBC   uint16 = 12 // RFC 3602, with a separate INTEG transform
	EncrAESGCM8  uint16 = 18 // RFC 4106, 8-byte ICV (not supported: see NewSA)
	EncrAESGCM12 uint16 = 19 // RFC 4106, 12-byte ICV
	EncrAESGCM16 uint16 = 20 // RFC 4106, 16-byte ICV

	// Transform type 3 (INTEG).
	AuthNone          uint16 = 0
	AuthHMACSHA1_96   uint16 = 2  // RFC 2404
	AuthHMACSHA256128 uint16 = 12 // RFC 4868
	AuthHMACSHA384192 uint16 = 13 // RFC 4868
	AuthHMACSHA512256 uint16 = 14 // RFC 4868
)

// Next-header values of the ESP trailer in tunnel mode.
const (
	NextHeaderIPv4  byte = 4
	NextHeaderIPv6  byte = 41
	NextHeaderDummy byte = 59 // RFC 4303 §2.6: dummy packet, discarded by the receiver
)

// Suite is the algorithm part of an SA: encryption transform, key size and integrity transform.
type Suite struct {
	// Encr is the ENCR transform ID (EncrAESCBC, EncrAESGCM12, EncrAESGCM16).
	Encr uint16
	// KeyBits is the AES key size from the Key Length attribute: 128 or 256 (192 is accepted too).
	KeyBits int
	// Integ is the INTEG transform ID; AuthNone for GCM (combined mode).
	Integ uint16
}

// The suites AWS Site-to-Site VPN offers for phase 2 (and the AWS XML legacy default).
var (
	SuiteAES256GCM16     = Suite{Encr: EncrAESGCM16, KeyBits: 256}
	SuiteAES128GCM16     = Suite{Encr: EncrAESGCM16, KeyBits: 128}
	SuiteAES128CBCSHA1   = Suite{Encr: EncrAESCBC, KeyBits: 128, Integ: AuthHMACSHA1_96}
	SuiteAES256CBCSHA256 = Suite{Encr: EncrAESCBC, KeyBits: 256, Integ: AuthHMACSHA256128}
)

// AEAD reports whether the suite is a combined-mode (GCM) suite.
func (s Suite) AEAD() bool {
	return s.Encr == EncrAESGCM12 || s.Encr == EncrAESGCM16 || s.Encr == EncrAESGCM8
}

// String names the suite the way strongSwan's proposal keywords do (aes256gcm16, aes128-sha1).
func (s Suite) String() string {
	switch s.Encr {
	case EncrAESGCM8, EncrAESGCM12, EncrAESGCM16:
		return fmt.Sprintf("aes%dgcm%d", s.KeyBits, s.icvLenOrZero())
	case EncrAESCBC:
		return fmt.Sprintf("aes%d-%s", s.KeyBits, integName(s.Integ))
	}
	return fmt.Sprintf("encr%d-%d-integ%d", s.Encr, s.KeyBits, s.Integ)
}

func integName(id uint16) string {
	switch id {
	case AuthHMACSHA1_96:
		return "sha1"
	case AuthHMACSHA256128:
		return "sha256"
	case AuthHMACSHA384192:
		return "sha384"
	case AuthHMACSHA512256:
		return "sha512"
	case AuthNone:
		return "none"
	}
	return fmt.Sprintf("integ%d", id)
}

// Validate reports whether this package implements the suite, naming the bad field.
func (s Suite) Validate() error {
	switch s.Encr {
	case EncrAESGCM12, EncrAESGCM16:
		if s.Integ != AuthNone {
			return fmt.Errorf("esp suite: integ transform %d with combined-mode encr %d; want none", s.Integ, s.Encr)
		}
	case EncrAESCBC:
		if _, ok := integKeyLen(s.Integ); !ok {
			return fmt.Errorf("esp suite: integ transform %d not supported (want 2, 12, 13 or 14)", s.Integ)
		}
	case EncrAESGCM8:
		return fmt.Errorf("esp suite: encr transform 18 (AES-GCM with 8-byte ICV) not supported")
	default:
		return fmt.Errorf("esp suite: encr transform %d not supported (want 12, 19 or 20)", s.Encr)
	}
	switch s.KeyBits {
	case 128, 192, 256:
	default:
		return fmt.Errorf("esp suite: key length %d bits; want 128, 192 or 256", s.KeyBits)
	}
	return nil
}

// integKeyLen is the HMAC key length (RFC 4868: the hash output length).
func integKeyLen(id uint16) (int, bool) {
	switch id {
	case AuthHMACSHA1_96:
		return 20, true
	case AuthHMACSHA256128:
		return 32, true
	case AuthHMACSHA384192:
		return 48, true
	case AuthHMACSHA512256:
		return 64, true
	}
	return 0, false
}

func (s Suite) icvLenOrZero() int {
	switch s.Encr {
	case EncrAESGCM8:
		return 8
	case EncrAESGCM12:
		return 12
	case EncrAESGCM16:
		return 16
	case EncrAESCBC:
		switch s.Integ {
		case AuthHMACSHA1_96:
			return 12
		case AuthHMACSHA256128:
			return 16
		case AuthHMACSHA384192:
			return 24
		case AuthHMACSHA512256:
			return 32
		}
	}
	return 0
}

// ICVLen is the length of the integrity check value that ends each ESP packet.
func (s Suite) ICVLen() int { return s.icvLenOrZero() }

// IVLen is the length of the explicit IV after the sequence number: 8 for GCM, 16 for CBC.
func (s Suite) IVLen() int {
	if s.AEAD() {
		return 8
	}
	return 16
}

// blockLen is the alignment of payload||padding||pad length||next header: the cipher block for
// CBC, and ESP's 4-byte minimum for GCM (RFC 4303 §2.4).
func (s Suite) blockLen() int {
	if s.AEAD() {
		return 4
	}
	return 16
}

// KeymatLen is how many bytes of IKE KEYMAT the suite takes per direction (RFC 7296 §2.17:
// encryption key first, then integrity key; RFC 4106 §8.1: a GCM key is followed by a 4-byte salt).
func (s Suite) KeymatLen() int {
	n := s.KeyBits / 8
	if s.AEAD() {
		return n + 4
	}
	k, _ := integKeyLen(s.Integ)
	return n + k
}

// Overhead is the largest number of bytes ESP-in-UDP adds to an inner packet of n bytes, not
// counting the outer IP header: UDP header, ESP header, IV, padding, trailer and ICV.
func (s Suite) Overhead(n int, udp bool) int {
	o := 8 + s.IVLen() + s.ICVLen()
	if udp {
		o += 8
	}
	bl := s.blockLen()
	padded := (n + 2 + bl - 1) / bl * bl
	return o + padded - n
}

// MTU is the largest inner packet that fits an outer packet of outerMTU bytes without
// fragmentation, for an outer IPv4 (or IPv6) header, with or without UDP encapsulation.
func (s Suite) MTU(outerMTU int, outerIPv6, udp bool) int {
	room := outerMTU - 20 - 8 - s.IVLen() - s.ICVLen()
	if outerIPv6 {
		room -= 20
	}
	if udp {
		room -= 8
	}
	bl := s.blockLen()
	room = room / bl * bl // payload||pad||padlen||nh is a whole number of blocks
	return room - 2
}

// AWSMTU is the MTU and TCP MSS AWS recommends for a tunnel interface with this suite (the table in
// "Best practices for your customer gateway device", for an Ethernet 1500-byte outer MTU and an
// outer IPv4 header); the table is exactly MTU(1500, false, natT) and MTU-40.
func AWSMTU(s Suite, natT bool) (mtu, mss int) {
	mtu = s.MTU(1500, false, natT)
	return mtu, mtu - 40
}

// Params is a CHILD SA in one direction as IKE negotiated it.
type Params struct {
	// SPI is the SPI in the ESP header: the receiver's choice for that direction.
	SPI uint32
	Suite
	// EncrKey is the encryption keying material: the AES key, followed by the 4-byte salt for GCM.
	EncrKey []byte
	// IntegKey is the HMAC key for CBC suites; empty for GCM.
	IntegKey []byte
	// ReplayWindow is the anti-replay window in packets for an inbound SA: 0 for the default
	// (1024), 64 to 2048 otherwise. Outbound SAs ignore it.
	ReplayWindow int
}

// LogValue keeps keys out of logs: only the SPI and the suite are shown.
func (p Params) LogValue() slog.Value {
	return slog.GroupValue(slog.String("spi", fmt.Sprintf("0x%08x", p.SPI)), slog.String("suite", p.Suite.String()))
}

// String is the fmt form, also without keys.
func (p Params) String() string {
	return fmt.Sprintf("esp spi=0x%08x %s", p.SPI, p.Suite)
}

// GoString keeps %#v from printing the keys.
func (p Params) GoString() string { return p.String() }

// ParamsFromKeymat splits one direction's KEYMAT slice as RFC 7296 §2.17 lays it out.
func ParamsFromKeymat(spi uint32, s Suite, keymat []byte, replayWindow int) (Params, error) {
	if err := s.Validate(); err != nil {
		return Params{}, err
	}
	if len(keymat) != s.KeymatLen() {
		return Params{}, fmt.Errorf("esp sa 0x%08x: keymat is %d bytes; want %d for %s", spi, len(keymat), s.KeymatLen(), s)
	}
	p := Params{SPI: spi, Suite: s, ReplayWindow: replayWindow}
	if s.AEAD() {
		p.EncrKey = keymat
	} else {
		p.EncrKey = keymat[:s.KeyBits/8]
		p.IntegKey = keymat[s.KeyBits/8:]
	}
	return p, nil
}
