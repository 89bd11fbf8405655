package esp

// Kind is what a UDP/4500 payload carries (RFC 3948 §2).
type Kind uint8

// The kinds of UDP-encapsulated payloads.
const (
	// KindInvalid: too short to be anything (ESP needs at least SPI and sequence number).
	KindInvalid Kind = iota
	// KindESP: an ESP packet; its first four bytes are the (non-zero) SPI.
	KindESP
	// KindIKE: an IKE message behind the 4-byte non-ESP marker.
	KindIKE
	// KindKeepalive: a NAT keepalive, the single byte 0xFF (RFC 3948 §2.3).
	KindKeepalive
)

func (k Kind) String() string {
	switch k {
	case KindESP:
		return "esp"
	case KindIKE:
		return "ike"
	case KindKeepalive:
		return "nat-keepalive"
	}
	return "invalid"
}

// MarkerLen is the length of the non-ESP marker (four zero bytes) that precedes IKE messages on
// the NAT-T port.
const MarkerLen = 4

// KeepaliveByte is the whole payload of a NAT keepalive.
const KeepaliveByte = 0xFF

// Classify demultiplexes one UDP payload received on the NAT-T port. For KindIKE, payload is the
// IKE message with the marker stripped; for KindESP it is b itself.
func Classify(b []byte) (k Kind, payload []byte) {
	switch {
	case len(b) == 1 && b[0] == KeepaliveByte:
		return KindKeepalive, nil
	case len(b) >= MarkerLen && b[0]|b[1]|b[2]|b[3] == 0:
		return KindIKE, b[MarkerLen:]
	case len(b) >= 8:
		return KindESP, b
	}
	return KindInvalid, nil
}

// AppendIKE appends the non-ESP marker and the IKE message ike to dst, ready to send on the
// NAT-T port.
func AppendIKE(dst, ike []byte) []byte {
	dst = append(dst, 0, 0, 0, 0)
	return append(dst, ike...)
}
