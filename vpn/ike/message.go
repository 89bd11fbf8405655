package ike

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Message is one IKEv2 message with its payloads decoded (the content of an SK payload, when
// there is one, is in Payloads too; whether a message travels encrypted is decided by its
// exchange type and the SA).
type Message struct {
	SPIi, SPIr uint64
	Exchange   ExchangeType
	Flags      uint8
	MsgID      uint32
	Payloads   []Payload
}

// IsResponse reports whether the R flag is set.
func (m *Message) IsResponse() bool { return m.Flags&flagResponse != 0 }

// FromInitiator reports whether the I flag is set (the sender is the IKE SA's original initiator).
func (m *Message) FromInitiator() bool { return m.Flags&flagInitiator != 0 }

// Notify returns the first notify payload of type t, or nil.
func (m *Message) Notify(t NotifyType) *NotifyPayload {
	for _, p := range m.Payloads {
		if n, ok := p.(*NotifyPayload); ok && n.NotifyType == t {
			return n
		}
	}
	return nil
}

// ErrorNotify returns the first error notify (type < 16384), or nil.
func (m *Message) ErrorNotify() *NotifyPayload {
	for _, p := range m.Payloads {
		if n, ok := p.(*NotifyPayload); ok && n.NotifyType.IsError() {
			return n
		}
	}
	return nil
}

// Get returns the first payload of type t, or nil.
func (m *Message) Get(t PayloadType) Payload {
	for _, p := range m.Payloads {
		if p.Type() == t {
			return p
		}
	}
	return nil
}

// Summary is a strongSwan-like one-line description: "IKE_AUTH request 1 [ IDi AUTH SA TSi TSr ]".
func (m *Message) Summary() string {
	var b strings.Builder
	b.WriteString(m.Exchange.String())
	if m.IsResponse() {
		b.WriteString(" response ")
	} else {
		b.WriteString(" request ")
	}
	fmt.Fprintf(&b, "%d [", m.MsgID)
	for _, p := range m.Payloads {
		b.WriteByte(' ')
		if n, ok := p.(*NotifyPayload); ok {
			fmt.Fprintf(&b, "N(%s)", n.NotifyType)
			continue
		}
		if d, ok := p.(*DeletePayload); ok {
			fmt.Fprintf(&b, "D(%s)", d.Protocol)
			continue
		}
		b.WriteString(p.Type().String())
	}
	b.WriteString(" ]")
	return b.String()
}

// Payload is one decoded payload.
type Payload interface {
	Type() PayloadType
	appendBody(b []byte) []byte
}

// Transform is one transform of a proposal. KeyLen is the Key Length attribute in bits (0: absent).
type Transform struct {
	Type   TransformType
	ID     uint16
	KeyLen uint16
	// Unknown is set when the transform carried an attribute this package does not know; such a
	// transform must not be selected (RFC 7296 §3.3.6).
	Unknown bool
}

// SAProposal is one proposal substructure of an SA payload.
type SAProposal struct {
	Num        uint8
	Protocol   ProtocolID
	SPI        []byte
	Transforms []Transform
}

// SAPayload is the Security Association payload.
type SAPayload struct{ Proposals []SAProposal }

// KEPayload is the Key Exchange payload.
type KEPayload struct {
	Group uint16
	Data  []byte
}

// NoncePayload is the Ni/Nr payload.
type NoncePayload struct{ Data []byte }

// IDPayload is IDi (Responder false) or IDr.
type IDPayload struct {
	Responder bool
	IDType    IDType
	Data      []byte
}

// AuthPayload is the Authentication payload.
type AuthPayload struct {
	Method AuthMethod
	Data   []byte
}

// NotifyPayload is a Notify payload.
type NotifyPayload struct {
	Protocol   ProtocolID
	SPI        []byte
	NotifyType NotifyType
	Data       []byte
}

// DeletePayload is a Delete payload. For IKE it carries no SPIs; for ESP/AH 4-byte SPIs.
type DeletePayload struct {
	Protocol ProtocolID
	SPIs     []uint32
}

// VendorPayload is a Vendor ID payload.
type VendorPayload struct{ Data []byte }

// TrafficSelector is one selector of a TS payload. Only address-range types are decoded; other
// types keep Type and are ignored by selection.
type TrafficSelector struct {
	Type      uint8
	IPProto   uint8
	StartPort uint16
	EndPort   uint16
	Start     netip.Addr
	End       netip.Addr
	raw       []byte // body of unknown selector types
}

func (ts TrafficSelector) String() string {
	if ts.Type != tsIPv4AddrRange && ts.Type != tsIPv6AddrRange {
		return fmt.Sprintf("ts-type-%d", ts.Type)
	}
	s := ts.Start.String() + ".." + ts.End.String()
	if p, ok := rangePrefix(ts.Start, ts.End); ok {
		s = p.String()
	}
	if ts.IPProto != 0 || ts.StartPort != 0 || ts.EndPort != 0xffff {
		s += fmt.Sprintf("[%d/%d-%d]", ts.IPProto, ts.StartPort, ts.EndPort)
	}
	return s
}

// TSPayload is TSi (Responder false) or TSr.
type TSPayload struct {
	Responder bool
	Selectors []TrafficSelector
}

// CPAttribute is one configuration attribute (parsed and ignored).
type CPAttribute struct {
	Type  uint16
	Value []byte
}

// CPPayload is the Configuration payload (parsed and ignored).
type CPPayload struct {
	CfgType uint8
	Attrs   []CPAttribute
}

// CertReqPayload is a Certificate Request (ignored).
type CertReqPayload struct {
	Encoding uint8
	Data     []byte
}

// RawPayload is a payload kept undecoded (CERT, EAP, unknown non-critical types).
type RawPayload struct {
	PType    PayloadType
	Critical bool
	Body     []byte
}

func (*SAPayload) Type() PayloadType      { return PayloadSA }
func (*KEPayload) Type() PayloadType      { return PayloadKE }
func (*NoncePayload) Type() PayloadType   { return PayloadNonce }
func (*AuthPayload) Type() PayloadType    { return PayloadAUTH }
func (*NotifyPayload) Type() PayloadType  { return PayloadNotify }
func (*DeletePayload) Type() PayloadType  { return PayloadDelete }
func (*VendorPayload) Type() PayloadType  { return PayloadVendor }
func (*CPPayload) Type() PayloadType      { return PayloadCP }
func (*CertReqPayload) Type() PayloadType { return PayloadCERTREQ }
func (p *RawPayload) Type() PayloadType   { return p.PType }

// Type is IDi or IDr.
func (p *IDPayload) Type() PayloadType {
	if p.Responder {
		return PayloadIDr
	}
	return PayloadIDi
}

// Type is TSi or TSr.
func (p *TSPayload) Type() PayloadType {
	if p.Responder {
		return PayloadTSr
	}
	return PayloadTSi
}

// ---- encoding ----

func (p *SAPayload) appendBody(b []byte) []byte {
	for i, pr := range p.Proposals {
		start := len(b)
		more := byte(2)
		if i == len(p.Proposals)-1 {
			more = 0
		}
		b = append(b, more, 0, 0, 0, pr.Num, byte(pr.Protocol), byte(len(pr.SPI)), byte(len(pr.Transforms)))
		b = append(b, pr.SPI...)
		for j, t := range pr.Transforms {
			tstart := len(b)
			tmore := byte(3)
			if j == len(pr.Transforms)-1 {
				tmore = 0
			}
			b = append(b, tmore, 0, 0, 0, byte(t.Type), 0, byte(t.ID>>8), byte(t.ID))
			if t.KeyLen != 0 {
				b = append(b, 0x80|byte(attrKeyLength>>8), byte(attrKeyLength&0xff), byte(t.KeyLen>>8), byte(t.KeyLen))
			}
			binary.BigEndian.PutUint16(b[tstart+2:], uint16(len(b)-tstart))
		}
		binary.BigEndian.PutUint16(b[start+2:], uint16(len(b)-start))
	}
	return b
}

func (p *KEPayload) appendBody(b []byte) []byte {
	b = append(b, byte(p.Group>>8), byte(p.Group), 0, 0)
	return append(b, p.Data...)
}

func (p *NoncePayload) appendBody(b []byte) []byte { return append(b, p.Data...) }

func (p *IDPayload) appendBody(b []byte) []byte {
	b = append(b, byte(p.IDType), 0, 0, 0)
	return append(b, p.Data...)
}

func (p *AuthPayload) appendBody(b []byte) []byte {
	b = append(b, byte(p.Method), 0, 0, 0)
	return append(b, p.Data...)
}

func (p *NotifyPayload) appendBody(b []byte) []byte {
	b = append(b, byte(p.Protocol), byte(len(p.SPI)), byte(p.NotifyType>>8), byte(p.NotifyType))
	b = append(b, p.SPI...)
	return append(b, p.Data...)
}

func (p *DeletePayload) appendBody(b []byte) []byte {
	size := byte(0)
	if p.Protocol != ProtoIKE {
		size = 4
	}
	b = append(b, byte(p.Protocol), size, byte(len(p.SPIs)>>8), byte(len(p.SPIs)))
	for _, s := range p.SPIs {
		b = binary.BigEndian.AppendUint32(b, s)
	}
	return b
}

func (p *VendorPayload) appendBody(b []byte) []byte { return append(b, p.Data...) }

func (p *TSPayload) appendBody(b []byte) []byte {
	b = append(b, byte(len(p.Selectors)), 0, 0, 0)
	for _, ts := range p.Selectors {
		switch ts.Type {
		case tsIPv4AddrRange, tsIPv6AddrRange:
			s, e := ts.Start.AsSlice(), ts.End.AsSlice()
			l := 8 + len(s) + len(e)
			b = append(b, ts.Type, ts.IPProto, byte(l>>8), byte(l), byte(ts.StartPort>>8), byte(ts.StartPort), byte(ts.EndPort>>8), byte(ts.EndPort))
			b = append(b, s...)
			b = append(b, e...)
		default:
			l := 4 + len(ts.raw)
			b = append(b, ts.Type, ts.IPProto, byte(l>>8), byte(l))
			b = append(b, ts.raw...)
		}
	}
	return b
}

func (p *CPPayload) appendBody(b []byte) []byte {
	b = append(b, p.CfgType, 0, 0, 0)
	for _, a := range p.Attrs {
		b = append(b, byte(a.Type>>8), byte(a.Type), byte(len(a.Value)>>8), byte(len(a.Value)))
		b = append(b, a.Value...)
	}
	return b
}

func (p *CertReqPayload) appendBody(b []byte) []byte {
	b = append(b, p.Encoding)
	return append(b, p.Data...)
}

func (p *RawPayload) appendBody(b []byte) []byte { return append(b, p.Body...) }

// appendChain appends the payloads with generic headers; each next-payload field names the
// following payload, the last one's is PayloadNone.
func appendChain(b []byte, ps []Payload) []byte {
	for i, p := range ps {
		next := PayloadNone
		if i+1 < len(ps) {
			next = ps[i+1].Type()
		}
		start := len(b)
		crit := byte(0)
		if r, ok := p.(*RawPayload); ok && r.Critical {
			crit = 0x80
		}
		b = append(b, byte(next), crit, 0, 0)
		b = p.appendBody(b)
		binary.BigEndian.PutUint16(b[start+2:], uint16(len(b)-start))
	}
	return b
}

func firstType(ps []Payload) PayloadType {
	if len(ps) == 0 {
		return PayloadNone
	}
	return ps[0].Type()
}

// appendHeader appends the 28-byte IKE header with a zero length (set later by setLength).
func appendHeader(b []byte, m *Message, next PayloadType) []byte {
	b = binary.BigEndian.AppendUint64(b, m.SPIi)
	b = binary.BigEndian.AppendUint64(b, m.SPIr)
	b = append(b, byte(next), ikeVersion, byte(m.Exchange), m.Flags)
	b = binary.BigEndian.AppendUint32(b, m.MsgID)
	return append(b, 0, 0, 0, 0)
}

func setLength(b []byte) { binary.BigEndian.PutUint32(b[24:28], uint32(len(b))) }

// encodePlain encodes an unencrypted message (IKE_SA_INIT).
func encodePlain(m *Message) []byte {
	b := appendHeader(make([]byte, 0, 512), m, firstType(m.Payloads))
	b = appendChain(b, m.Payloads)
	setLength(b)
	return b
}

// ---- decoding ----

// header is the decoded fixed IKE header.
type header struct {
	spiI, spiR uint64
	next       PayloadType
	version    uint8
	exchange   ExchangeType
	flags      uint8
	msgID      uint32
	length     uint32
}

func (h *header) isResponse() bool { return h.flags&flagResponse != 0 }

// parseError is a malformed-message error; field names what was wrong.
type parseError struct {
	field string
	msg   string
}

func (e *parseError) Error() string { return "malformed " + e.field + ": " + e.msg }

func perr(field, format string, args ...any) error {
	return &parseError{field: field, msg: fmt.Sprintf(format, args...)}
}

// errUnsupportedCritical reports an unknown payload with the critical bit set.
type errUnsupportedCritical struct{ typ PayloadType }

func (e *errUnsupportedCritical) Error() string {
	return fmt.Sprintf("unsupported critical payload %s", e.typ)
}

// errMajorVersion reports a major version other than 2.
var errMajorVersion = errors.New("unsupported IKE major version")

// parseHeader decodes the fixed header and checks the length field against the datagram.
func parseHeader(b []byte) (header, error) {
	var h header
	if len(b) < headerLen {
		return h, perr("header", "message of %d bytes is shorter than the %d-byte header", len(b), headerLen)
	}
	h.spiI = binary.BigEndian.Uint64(b[0:8])
	h.spiR = binary.BigEndian.Uint64(b[8:16])
	h.next = PayloadType(b[16])
	h.version = b[17]
	h.exchange = ExchangeType(b[18])
	h.flags = b[19]
	h.msgID = binary.BigEndian.Uint32(b[20:24])
	h.length = binary.BigEndian.Uint32(b[24:28])
	if h.version>>4 != 2 {
		return h, errMajorVersion
	}
	if int64(h.length) != int64(len(b)) {
		return h, perr("header", "length field %d does not match the %d-byte datagram", h.length, len(b))
	}
	return h, nil
}

// encPayload is an SK or SKF payload found at the end of a chain (still encrypted).
type encPayload struct {
	typ        PayloadType // PayloadSK or PayloadSKF
	innerFirst PayloadType // its next-payload field: the first inner payload (SKF: only fragment 1)
	offset     int         // offset of its generic header in the message
	fragNum    uint16      // SKF only
	fragTotal  uint16      // SKF only
	body       []byte      // IV | ciphertext | ICV
}

// parseChain decodes a payload chain starting with first. When allowEnc is set, an SK or SKF
// payload ends the chain and is returned undecoded; base is the offset of data in the message.
func parseChain(first PayloadType, data []byte, base int, allowEnc bool) ([]Payload, *encPayload, error) {
	var ps []Payload
	next := first
	off := 0
	for next != PayloadNone {
		if len(data)-off < 4 {
			return nil, nil, perr(next.String(), "truncated generic payload header")
		}
		typ := next
		next = PayloadType(data[off])
		critical := data[off+1]&0x80 != 0
		plen := int(binary.BigEndian.Uint16(data[off+2 : off+4]))
		if plen < 4 || plen > len(data)-off {
			return nil, nil, perr(typ.String(), "payload length %d out of range (%d bytes left)", plen, len(data)-off)
		}
		body := data[off+4 : off+plen]
		if typ == PayloadSK || typ == PayloadSKF {
			if !allowEnc {
				return nil, nil, perr(typ.String(), "encrypted payload inside an encrypted payload")
			}
			if off+plen != len(data) {
				return nil, nil, perr(typ.String(), "encrypted payload is not the last payload")
			}
			ep := &encPayload{typ: typ, innerFirst: next, offset: base + off, body: body}
			if typ == PayloadSKF {
				if len(body) < 4 {
					return nil, nil, perr("SKF", "truncated fragment header")
				}
				ep.fragNum = binary.BigEndian.Uint16(body[0:2])
				ep.fragTotal = binary.BigEndian.Uint16(body[2:4])
				ep.body = body[4:]
				if ep.fragNum == 0 || ep.fragTotal == 0 || ep.fragNum > ep.fragTotal {
					return nil, nil, perr("SKF", "fragment %d of %d", ep.fragNum, ep.fragTotal)
				}
				if ep.fragNum != 1 {
					ep.innerFirst = PayloadNone // RFC 7383 §2.5: only fragment 1 names it
				}
			}
			return ps, ep, nil
		}
		p, err := parseBody(typ, critical, body)
		if err != nil {
			return nil, nil, err
		}
		if p != nil {
			ps = append(ps, p)
		}
		off += plen
	}
	if off != len(data) {
		return nil, nil, perr("message", "%d trailing bytes after the last payload", len(data)-off)
	}
	return ps, nil, nil
}

// parseBody decodes one payload body. Unknown payloads are skipped (nil) unless critical.
func parseBody(typ PayloadType, critical bool, b []byte) (Payload, error) {
	switch typ {
	case PayloadSA:
		return parseSA(b)
	case PayloadKE:
		if len(b) < 5 {
			return nil, perr("KE", "body of %d bytes", len(b))
		}
		return &KEPayload{Group: binary.BigEndian.Uint16(b[0:2]), Data: clone(b[4:])}, nil
	case PayloadNonce:
		if len(b) < 16 || len(b) > 256 {
			return nil, perr("Nonce", "length %d not in 16..256", len(b))
		}
		return &NoncePayload{Data: clone(b)}, nil
	case PayloadIDi, PayloadIDr:
		if len(b) < 5 {
			return nil, perr(typ.String(), "body of %d bytes", len(b))
		}
		p := &IDPayload{Responder: typ == PayloadIDr, IDType: IDType(b[0]), Data: clone(b[4:])}
		switch p.IDType {
		case IDIPv4Addr:
			if len(p.Data) != 4 {
				return nil, perr(typ.String(), "ID_IPV4_ADDR of %d bytes", len(p.Data))
			}
		case IDIPv6Addr:
			if len(p.Data) != 16 {
				return nil, perr(typ.String(), "ID_IPV6_ADDR of %d bytes", len(p.Data))
			}
		}
		return p, nil
	case PayloadAUTH:
		if len(b) < 5 {
			return nil, perr("AUTH", "body of %d bytes", len(b))
		}
		return &AuthPayload{Method: AuthMethod(b[0]), Data: clone(b[4:])}, nil
	case PayloadNotify:
		if len(b) < 4 {
			return nil, perr("Notify", "body of %d bytes", len(b))
		}
		spiSize := int(b[1])
		if len(b) < 4+spiSize {
			return nil, perr("Notify", "SPI size %d exceeds body", spiSize)
		}
		return &NotifyPayload{
			Protocol:   ProtocolID(b[0]),
			NotifyType: NotifyType(binary.BigEndian.Uint16(b[2:4])),
			SPI:        clone(b[4 : 4+spiSize]),
			Data:       clone(b[4+spiSize:]),
		}, nil
	case PayloadDelete:
		if len(b) < 4 {
			return nil, perr("Delete", "body of %d bytes", len(b))
		}
		proto, size, n := ProtocolID(b[0]), int(b[1]), int(binary.BigEndian.Uint16(b[2:4]))
		switch {
		case proto == ProtoIKE && size == 0 && n == 0 && len(b) == 4:
			return &DeletePayload{Protocol: proto}, nil
		case (proto == ProtoESP || proto == ProtoAH) && size == 4 && len(b) == 4+4*n:
			d := &DeletePayload{Protocol: proto, SPIs: make([]uint32, n)}
			for i := range n {
				d.SPIs[i] = binary.BigEndian.Uint32(b[4+4*i:])
			}
			return d, nil
		}
		return nil, perr("Delete", "protocol %d, SPI size %d, %d SPIs in %d bytes", proto, size, n, len(b))
	case PayloadVendor:
		return &VendorPayload{Data: clone(b)}, nil
	case PayloadTSi, PayloadTSr:
		return parseTS(typ, b)
	case PayloadCP:
		return parseCP(b)
	case PayloadCERTREQ:
		if len(b) < 1 {
			return nil, perr("CERTREQ", "empty body")
		}
		return &CertReqPayload{Encoding: b[0], Data: clone(b[1:])}, nil
	case PayloadCERT, PayloadEAP:
		return &RawPayload{PType: typ, Critical: critical, Body: clone(b)}, nil
	}
	if critical {
		return nil, &errUnsupportedCritical{typ: typ}
	}
	return nil, nil
}

func parseSA(b []byte) (*SAPayload, error) {
	sa := &SAPayload{}
	off := 0
	for {
		if len(b)-off < 8 {
			return nil, perr("SA", "truncated proposal")
		}
		more := b[off]
		plen := int(binary.BigEndian.Uint16(b[off+2:]))
		if plen < 8 || plen > len(b)-off {
			return nil, perr("SA", "proposal length %d out of range", plen)
		}
		p := b[off : off+plen]
		spiSize := int(p[6])
		nt := int(p[7])
		if 8+spiSize > plen {
			return nil, perr("SA", "SPI size %d exceeds proposal", spiSize)
		}
		pr := SAProposal{Num: p[4], Protocol: ProtocolID(p[5]), SPI: clone(p[8 : 8+spiSize])}
		toff := 8 + spiSize
		for i := range nt {
			if plen-toff < 8 {
				return nil, perr("SA", "truncated transform %d of proposal %d", i+1, pr.Num)
			}
			tmore := p[toff]
			tlen := int(binary.BigEndian.Uint16(p[toff+2:]))
			if tlen < 8 || tlen > plen-toff {
				return nil, perr("SA", "transform length %d out of range", tlen)
			}
			if (i == nt-1) != (tmore == 0) || (tmore != 0 && tmore != 3) {
				return nil, perr("SA", "transform %d of proposal %d has last-substructure %d", i+1, pr.Num, tmore)
			}
			t := Transform{Type: TransformType(p[toff+4]), ID: binary.BigEndian.Uint16(p[toff+6:])}
			attrs := p[toff+8 : toff+tlen]
			for len(attrs) > 0 {
				if len(attrs) < 4 {
					return nil, perr("SA", "truncated transform attribute")
				}
				at := binary.BigEndian.Uint16(attrs[0:2])
				if at&0x8000 != 0 {
					if at&0x7fff == attrKeyLength {
						t.KeyLen = binary.BigEndian.Uint16(attrs[2:4])
					} else {
						t.Unknown = true
					}
					attrs = attrs[4:]
					continue
				}
				alen := int(binary.BigEndian.Uint16(attrs[2:4]))
				if 4+alen > len(attrs) {
					return nil, perr("SA", "transform attribute length %d exceeds transform", alen)
				}
				t.Unknown = true // key length must be TV; any TLV attribute is unknown to us
				attrs = attrs[4+alen:]
			}
			pr.Transforms = append(pr.Transforms, t)
			toff += tlen
		}
		if toff != plen {
			return nil, perr("SA", "proposal %d has %d bytes after its %d transforms", pr.Num, plen-toff, nt)
		}
		sa.Proposals = append(sa.Proposals, pr)
		off += plen
		if more == 0 {
			if off != len(b) {
				return nil, perr("SA", "%d bytes after the last proposal", len(b)-off)
			}
			return sa, nil
		}
		if more != 2 {
			return nil, perr("SA", "proposal last-substructure value %d", more)
		}
	}
}

func parseTS(typ PayloadType, b []byte) (*TSPayload, error) {
	if len(b) < 4 {
		return nil, perr(typ.String(), "body of %d bytes", len(b))
	}
	n := int(b[0])
	p := &TSPayload{Responder: typ == PayloadTSr}
	off := 4
	for i := range n {
		if len(b)-off < 4 {
			return nil, perr(typ.String(), "truncated selector %d of %d", i+1, n)
		}
		tt, proto := b[off], b[off+1]
		l := int(binary.BigEndian.Uint16(b[off+2:]))
		if l < 4 || l > len(b)-off {
			return nil, perr(typ.String(), "selector length %d out of range", l)
		}
		s := b[off : off+l]
		ts := TrafficSelector{Type: tt, IPProto: proto}
		switch tt {
		case tsIPv4AddrRange, tsIPv6AddrRange:
			alen := 4
			if tt == tsIPv6AddrRange {
				alen = 16
			}
			if l != 8+2*alen {
				return nil, perr(typ.String(), "selector type %d of length %d", tt, l)
			}
			ts.StartPort = binary.BigEndian.Uint16(s[4:6])
			ts.EndPort = binary.BigEndian.Uint16(s[6:8])
			ts.Start, _ = netip.AddrFromSlice(s[8 : 8+alen])
			ts.End, _ = netip.AddrFromSlice(s[8+alen : 8+2*alen])
		default:
			ts.raw = clone(s[4:])
		}
		p.Selectors = append(p.Selectors, ts)
		off += l
	}
	if off != len(b) {
		return nil, perr(typ.String(), "%d bytes after %d selectors", len(b)-off, n)
	}
	return p, nil
}

func parseCP(b []byte) (*CPPayload, error) {
	if len(b) < 4 {
		return nil, perr("CP", "body of %d bytes", len(b))
	}
	p := &CPPayload{CfgType: b[0]}
	a := b[4:]
	for len(a) > 0 {
		if len(a) < 4 {
			return nil, perr("CP", "truncated attribute")
		}
		t := binary.BigEndian.Uint16(a[0:2]) & 0x7fff
		l := int(binary.BigEndian.Uint16(a[2:4]))
		if 4+l > len(a) {
			return nil, perr("CP", "attribute length %d exceeds payload", l)
		}
		p.Attrs = append(p.Attrs, CPAttribute{Type: t, Value: clone(a[4 : 4+l])})
		a = a[4+l:]
	}
	return p, nil
}

func clone(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

// rangePrefix returns the prefix exactly covering start..end, if there is one.
func rangePrefix(start, end netip.Addr) (netip.Prefix, bool) {
	if !start.IsValid() || !end.IsValid() || start.BitLen() != end.BitLen() {
		return netip.Prefix{}, false
	}
	for bits := 0; bits <= start.BitLen(); bits++ {
		p := netip.PrefixFrom(start, bits).Masked()
		if p.Addr() == start && lastAddr(p) == end {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// lastAddr is the highest address in p.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().AsSlice()
	bits := p.Bits()
	for i := range a {
		for j := range 8 {
			if i*8+j >= bits {
				a[i] |= 0x80 >> j
			}
		}
	}
	r, _ := netip.AddrFromSlice(a)
	return r
}
