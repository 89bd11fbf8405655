package identity

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math/big"
	"strconv"
	"strings"
)

// The label's QR payload, version 1
//
//	MR1:<base32 of the body, RFC 4648 alphabet, no padding>
//
// The text uses only QR alphanumeric-mode characters (A-Z, 2-7, ':'), so a version 3 symbol holds
// it at level M. The body is:
//
//	offset  size  field
//	0       1     flags: bit 0 = onboarding over HTTP on the LAN, bit 1 = over BLE; others 0
//	1       2     discriminator, big endian; 12 bits (0-4095), upper 4 bits 0
//	3       4     setup code, big endian; 27 bits holding 8 decimal digits (see SetupCode)
//	7       1     n, the length of the serial number (1-32)
//	8       n     serial number: A-Z, 0-9 and '-'
//	8+n     4     CRC-32C (Castagnoli) of the prefix "MR1:" followed by body bytes 0 to 8+n-1
//
// A parser refuses other versions ("MR2:" ...) with an error naming the version, so a newer label
// is reported as such instead of as damage. The checksum catches misreads and hand-typed errors.

// PayloadVersion is the QR payload version this package writes and reads.
const PayloadVersion = 1

// Payload flags.
const (
	FlagLAN = 1 << 0 // onboarding API over HTTP on the LAN / setup network
	FlagBLE = 1 << 1 // onboarding over BLE (reserved: no BLE transport yet)
)

const maxSerialLen = 32

var (
	b32         = base32.StdEncoding.WithPadding(base32.NoPadding)
	castagnoli  = crc32.MakeTable(crc32.Castagnoli)
	errNotLabel = errors.New("qr payload: not a Meshroot label (want prefix MR<version>:)")
)

// Payload is what the label's QR code carries.
type Payload struct {
	Flags         byte
	Discriminator uint16
	SetupCode     SetupCode
	Serial        string
}

func payloadPrefix(v int) string { return "MR" + strconv.Itoa(v) + ":" }

// String encodes the payload; it fails (returns "") only for an invalid payload: call Validate.
func (p Payload) String() string {
	s, err := p.Encode()
	if err != nil {
		return ""
	}
	return s
}

// Encode returns the payload text for the label.
func (p Payload) Encode() (string, error) {
	if err := p.Validate(); err != nil {
		return "", err
	}
	body := make([]byte, 0, 12+len(p.Serial))
	body = append(body, p.Flags)
	body = binary.BigEndian.AppendUint16(body, p.Discriminator)
	body = binary.BigEndian.AppendUint32(body, uint32(p.SetupCode))
	body = append(body, byte(len(p.Serial)))
	body = append(body, p.Serial...)
	prefix := payloadPrefix(PayloadVersion)
	crc := crc32.Update(crc32.Checksum([]byte(prefix), castagnoli), castagnoli, body)
	body = binary.BigEndian.AppendUint32(body, crc)
	return prefix + b32.EncodeToString(body), nil
}

// Validate checks every field; errors name the field.
func (p Payload) Validate() error {
	if p.Flags&^(FlagLAN|FlagBLE) != 0 {
		return fmt.Errorf("qr payload: flags: unknown bits %#x", p.Flags&^(FlagLAN|FlagBLE))
	}
	if p.Discriminator > 0xfff {
		return fmt.Errorf("qr payload: discriminator: %d exceeds 12 bits", p.Discriminator)
	}
	if err := p.SetupCode.Validate(); err != nil {
		return fmt.Errorf("qr payload: %w", err)
	}
	if err := ValidateSerial(p.Serial); err != nil {
		return fmt.Errorf("qr payload: %w", err)
	}
	return nil
}

// ParsePayload parses a label's QR payload text (surrounding white space is ignored).
func ParsePayload(s string) (Payload, error) {
	s = strings.TrimSpace(s)
	head, enc, ok := strings.Cut(s, ":")
	if !ok || len(head) < 3 || head[:2] != "MR" {
		return Payload{}, errNotLabel
	}
	v, err := strconv.Atoi(head[2:])
	if err != nil || v < 0 {
		return Payload{}, errNotLabel
	}
	if v != PayloadVersion {
		return Payload{}, fmt.Errorf("qr payload: version %d is not supported (this build reads version %d)", v, PayloadVersion)
	}
	body, err := b32.DecodeString(enc)
	if err != nil {
		return Payload{}, fmt.Errorf("qr payload: body: not base32: %v", err)
	}
	if len(body) < 8+1+4 {
		return Payload{}, fmt.Errorf("qr payload: body: %d bytes is too short", len(body))
	}
	n := int(body[7])
	if len(body) != 8+n+4 {
		return Payload{}, fmt.Errorf("qr payload: body: %d bytes; want %d for a %d-byte serial", len(body), 8+n+4, n)
	}
	crc := crc32.Update(crc32.Checksum([]byte(head+":"), castagnoli), castagnoli, body[:8+n])
	if got := binary.BigEndian.Uint32(body[8+n:]); got != crc {
		return Payload{}, errors.New("qr payload: checksum mismatch (misread or damaged label)")
	}
	p := Payload{
		Flags:         body[0],
		Discriminator: binary.BigEndian.Uint16(body[1:3]),
		SetupCode:     SetupCode(binary.BigEndian.Uint32(body[3:7])),
		Serial:        string(body[8 : 8+n]),
	}
	if err := p.Validate(); err != nil {
		return Payload{}, err
	}
	return p, nil
}

// SetupCode is the 8-digit setup code printed on the label (as Matter's passcode: 27 bits, values
// 00000001-99999998, trivial codes refused). It is a secret until the device is paired: String
// and slog never show it; Digits does.
type SetupCode uint32

// MaxSetupCode is the largest valid setup code.
const MaxSetupCode = 99999998

// String hides the code, so a stray %v or %s cannot print it.
func (c SetupCode) String() string { return "[setup code]" }

// GoString hides the code from %#v too.
func (c SetupCode) GoString() string { return "identity.SetupCode(hidden)" }

// LogValue hides the code from log/slog.
func (c SetupCode) LogValue() slog.Value { return slog.StringValue("[setup code]") }

// MarshalJSON hides the code from encoding/json (it is never serialized: use Digits).
func (c SetupCode) MarshalJSON() ([]byte, error) { return []byte(`"[setup code]"`), nil }

// LogValue shows the payload without its setup code.
func (p Payload) LogValue() slog.Value {
	return slog.GroupValue(slog.String("serial", p.Serial), slog.Int("discriminator", int(p.Discriminator)))
}

// Digits returns the 8 digits, for the label and the app.
func (c SetupCode) Digits() string { return fmt.Sprintf("%08d", uint32(c)) }

// Validate refuses out-of-range and trivial codes.
func (c SetupCode) Validate() error {
	switch {
	case c == 0 || c > MaxSetupCode:
		return fmt.Errorf("setup_code: out of range (want 00000001-%08d)", MaxSetupCode)
	case c == 12345678 || c == 87654321 || uint32(c)%11111111 == 0:
		return errors.New("setup_code: trivial code refused")
	}
	return nil
}

// ParseSetupCode parses 8 digits, allowing '-' and spaces between groups.
func ParseSetupCode(s string) (SetupCode, error) {
	s = strings.NewReplacer("-", "", " ", "").Replace(s)
	if len(s) != 8 {
		return 0, errors.New("setup_code: want 8 digits")
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, errors.New("setup_code: want 8 digits")
	}
	c := SetupCode(n)
	return c, c.Validate()
}

// NewSetupCode draws a valid setup code uniformly at random.
func NewSetupCode(r io.Reader) (SetupCode, error) {
	if r == nil {
		r = rand.Reader
	}
	for {
		n, err := rand.Int(r, big.NewInt(MaxSetupCode))
		if err != nil {
			return 0, fmt.Errorf("setup code: %w", err)
		}
		c := SetupCode(n.Uint64() + 1)
		if c.Validate() == nil {
			return c, nil
		}
	}
}

// NewDiscriminator draws a 12-bit discriminator.
func NewDiscriminator(r io.Reader) (uint16, error) {
	if r == nil {
		r = rand.Reader
	}
	var b [2]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, fmt.Errorf("discriminator: %w", err)
	}
	return binary.BigEndian.Uint16(b[:]) & 0xfff, nil
}

// ValidateSerial checks a serial number: 1-32 characters of A-Z, 0-9 and '-'.
func ValidateSerial(s string) error {
	if len(s) == 0 || len(s) > maxSerialLen {
		return fmt.Errorf("serial: %d characters; want 1-%d", len(s), maxSerialLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("serial: character %q at %d; want A-Z, 0-9 or '-'", c, i)
		}
	}
	return nil
}
