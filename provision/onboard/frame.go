// Package onboard is the pairing protocol between the phone app and a device that has no site
// yet: SPAKE2+ (provision/pake) with the setup code from the device's label, then an encrypted,
// authenticated channel in which the app hands over the account's claim token, the site name,
// the Wi-Fi name and passphrase and the country, and can follow the device's progress until it
// holds a verified site profile.
//
// The protocol is a sequence of frames, each answered by one frame, so any transport that
// carries a request and its answer can carry it: HTTP on the LAN today (POST /onboard/v1, see
// HTTPHandler and HTTPTransport), a BLE GATT characteristic later. It follows Matter's PASE:
//
//	app → device   PBKDFParamRequest   app nonce
//	device → app   PBKDFParamResponse  device nonce, session id, PBKDF2 iterations and salt,
//	                                   serial number, discriminator
//	app → device   Pake1               shareP
//	device → app   Pake2               shareV, confirmV
//	app → device   Pake3               confirmP
//	device → app   Status              ok, or why not
//	app ⇄ device   Sealed              AES-256-GCM records (setup, status)
//
// # Frame
//
//	offset size
//	0      1    version (1)
//	1      1    type
//	2      8    session id (zero in a PBKDFParamRequest)
//	10     4    counter, big endian (0 in the handshake; the record number in Sealed)
//	14     2    body length n, big endian
//	16     n    body
//
// # Keys
//
// The SPAKE2+ context is SHA-256("Meshroot PAKE v1 onboarding" ‖ PBKDFParamRequest frame ‖
// PBKDFParamResponse frame), so both nonces and the parameters are bound into the keys; the
// identities are "meshroot-app" and the device's serial. From K_shared, HKDF-SHA256 with info
// "Meshroot onboarding keys v1" gives one AES-256-GCM key per direction. A record's nonce is
// the direction (1 app→device, 2 device→app), three zero bytes and the 8-byte counter; its
// associated data is the 16-byte frame header. Each side's counter starts at 1 and must grow:
// a record whose counter is not above the last one accepted is a replay and is refused.
//
// # Wrong codes
//
// The device counts an attempt when it answers a Pake1 (that answer is what lets an attacker
// test one guess), persists the count before answering, and clears it on a good Pake3. After
// Lockout.Free attempts without success, each further attempt locks pairing for Base·2^k, up to
// Max; the lockout survives restarts. Failures are logged with the count and the lockout, never
// with a code (the device does not know the code, only its SPAKE2+ verifier).
package onboard

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Version is the frame version.
const Version = 1

// MaxFrame bounds a frame (header included).
const MaxFrame = 16 << 10

const headerLen = 16

// Type is a frame type.
type Type byte

// Frame types.
const (
	TypePBKDFParamRequest  Type = 0x01
	TypePBKDFParamResponse Type = 0x02
	TypePake1              Type = 0x03
	TypePake2              Type = 0x04
	TypePake3              Type = 0x05
	TypeStatus             Type = 0x06
	TypeSealed             Type = 0x10
)

func (t Type) String() string {
	switch t {
	case TypePBKDFParamRequest:
		return "PBKDFParamRequest"
	case TypePBKDFParamResponse:
		return "PBKDFParamResponse"
	case TypePake1:
		return "Pake1"
	case TypePake2:
		return "Pake2"
	case TypePake3:
		return "Pake3"
	case TypeStatus:
		return "Status"
	case TypeSealed:
		return "Sealed"
	}
	return fmt.Sprintf("Type(%#x)", byte(t))
}

// Frame is one protocol message.
type Frame struct {
	Type    Type
	Session uint64
	Counter uint32
	Body    []byte
}

// Encode returns the wire form.
func (f Frame) Encode() []byte {
	b := make([]byte, headerLen, headerLen+len(f.Body))
	b[0] = Version
	b[1] = byte(f.Type)
	binary.BigEndian.PutUint64(b[2:], f.Session)
	binary.BigEndian.PutUint32(b[10:], f.Counter)
	binary.BigEndian.PutUint16(b[14:], uint16(len(f.Body)))
	return append(b, f.Body...)
}

// header returns the first 16 bytes of the encoding (the AEAD's associated data).
func (f Frame) header() []byte { return f.Encode()[:headerLen] }

// ErrFrame is a malformed frame.
var ErrFrame = errors.New("onboard: malformed frame")

// DecodeFrame parses the wire form strictly.
func DecodeFrame(b []byte) (Frame, error) {
	if len(b) < headerLen {
		return Frame{}, fmt.Errorf("%w: %d bytes, shorter than the header", ErrFrame, len(b))
	}
	if len(b) > MaxFrame {
		return Frame{}, fmt.Errorf("%w: %d bytes, over %d", ErrFrame, len(b), MaxFrame)
	}
	if b[0] != Version {
		return Frame{}, fmt.Errorf("%w: version %d (want %d)", ErrFrame, b[0], Version)
	}
	n := int(binary.BigEndian.Uint16(b[14:]))
	if len(b) != headerLen+n {
		return Frame{}, fmt.Errorf("%w: body length %d, %d bytes follow the header", ErrFrame, n, len(b)-headerLen)
	}
	f := Frame{Type: Type(b[1]), Session: binary.BigEndian.Uint64(b[2:]), Counter: binary.BigEndian.Uint32(b[10:]), Body: b[headerLen:]}
	switch f.Type {
	case TypePBKDFParamRequest, TypePBKDFParamResponse, TypePake1, TypePake2, TypePake3, TypeStatus, TypeSealed:
	default:
		return Frame{}, fmt.Errorf("%w: unknown type %#x", ErrFrame, b[1])
	}
	return f, nil
}

// Bodies.

const nonceLen = 32

// paramResponse is the body of a PBKDFParamResponse.
type paramResponse struct {
	DeviceNonce   []byte
	Iterations    uint32
	Salt          []byte
	Serial        string
	Discriminator uint16
}

func (p paramResponse) encode() []byte {
	b := append([]byte(nil), p.DeviceNonce...)
	b = binary.BigEndian.AppendUint32(b, p.Iterations)
	b = append(b, byte(len(p.Salt)))
	b = append(b, p.Salt...)
	b = append(b, byte(len(p.Serial)))
	b = append(b, p.Serial...)
	return binary.BigEndian.AppendUint16(b, p.Discriminator)
}

func decodeParamResponse(b []byte) (paramResponse, error) {
	var p paramResponse
	if len(b) < nonceLen+4+1 {
		return p, fmt.Errorf("%w: PBKDFParamResponse too short", ErrFrame)
	}
	p.DeviceNonce, b = b[:nonceLen], b[nonceLen:]
	p.Iterations, b = binary.BigEndian.Uint32(b), b[4:]
	n := int(b[0])
	b = b[1:]
	if len(b) < n+1 {
		return p, fmt.Errorf("%w: PBKDFParamResponse salt", ErrFrame)
	}
	p.Salt, b = b[:n], b[n:]
	n = int(b[0])
	b = b[1:]
	if len(b) != n+2 {
		return p, fmt.Errorf("%w: PBKDFParamResponse serial", ErrFrame)
	}
	p.Serial, b = string(b[:n]), b[n:]
	p.Discriminator = binary.BigEndian.Uint16(b)
	return p, nil
}

// StatusCode is the result a Status frame carries.
type StatusCode byte

// Status codes.
const (
	StatusOK                 StatusCode = 0
	StatusBusy               StatusCode = 1 // another app is paired right now
	StatusLockedOut          StatusCode = 2 // too many failed attempts; message says for how long
	StatusUnexpected         StatusCode = 3 // message not valid in the session's state (replays land here)
	StatusBadMessage         StatusCode = 4 // undecodable frame or body
	StatusConfirmationFailed StatusCode = 5 // confirmP did not verify: wrong code or tampering
	StatusUnknownSession     StatusCode = 6 // no such session (expired, replaced, or made up)
	StatusReplay             StatusCode = 7 // sealed record with an old counter
	StatusInternal           StatusCode = 8
)

func (c StatusCode) String() string {
	switch c {
	case StatusOK:
		return "ok"
	case StatusBusy:
		return "busy"
	case StatusLockedOut:
		return "locked out"
	case StatusUnexpected:
		return "unexpected message"
	case StatusBadMessage:
		return "bad message"
	case StatusConfirmationFailed:
		return "confirmation failed"
	case StatusUnknownSession:
		return "unknown session"
	case StatusReplay:
		return "replayed record"
	case StatusInternal:
		return "internal error"
	}
	return fmt.Sprintf("status(%d)", byte(c))
}

type status struct {
	Code StatusCode
	// RetryAfter is the lockout's remaining seconds (StatusLockedOut).
	RetryAfter uint32
	Msg        string
}

func (s status) encode() []byte {
	b := []byte{byte(s.Code)}
	b = binary.BigEndian.AppendUint32(b, s.RetryAfter)
	msg := s.Msg
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	return append(b, msg...)
}

func decodeStatus(b []byte) (status, error) {
	if len(b) < 7 {
		return status{}, fmt.Errorf("%w: Status too short", ErrFrame)
	}
	n := int(binary.BigEndian.Uint16(b[5:]))
	if len(b) != 7+n {
		return status{}, fmt.Errorf("%w: Status message length", ErrFrame)
	}
	return status{Code: StatusCode(b[0]), RetryAfter: binary.BigEndian.Uint32(b[1:]), Msg: string(b[7:])}, nil
}
