package ike

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func sampleMessage() *Message {
	return &Message{
		SPIi: 0x0102030405060708, SPIr: 0, Exchange: ExchangeIKESAInit, Flags: flagInitiator, MsgID: 0,
		Payloads: []Payload{
			&SAPayload{Proposals: []SAProposal{
				{Num: 1, Protocol: ProtoIKE, Transforms: []Transform{
					{Type: TransformENCR, ID: EncrAESGCM16, KeyLen: 256},
					{Type: TransformPRF, ID: PRFHMACSHA2256},
					{Type: TransformDH, ID: DHModp2048},
				}},
				{Num: 2, Protocol: ProtoIKE, Transforms: []Transform{
					{Type: TransformENCR, ID: EncrAESCBC, KeyLen: 128},
					{Type: TransformINTEG, ID: IntegHMACSHA196},
					{Type: TransformPRF, ID: PRFHMACSHA1},
					{Type: TransformDH, ID: DHModp1024},
				}},
			}},
			&KEPayload{Group: DHModp2048, Data: bytes.Repeat([]byte{7}, 256)},
			&NoncePayload{Data: bytes.Repeat([]byte{9}, 32)},
			&NotifyPayload{NotifyType: NotifyNATDetectionSourceIP, Data: bytes.Repeat([]byte{1}, 20)},
			&NotifyPayload{Protocol: ProtoESP, SPI: []byte{1, 2, 3, 4}, NotifyType: NotifyRekeySA},
			&IDPayload{IDType: IDIPv4Addr, Data: []byte{198, 51, 100, 2}},
			&IDPayload{Responder: true, IDType: IDFQDN, Data: []byte("vpn.example")},
			&AuthPayload{Method: AuthPSK, Data: bytes.Repeat([]byte{3}, 32)},
			&DeletePayload{Protocol: ProtoESP, SPIs: []uint32{0xc0ffee01, 0xc0ffee02}},
			&DeletePayload{Protocol: ProtoIKE},
			&VendorPayload{Data: []byte("meshroot")},
			&TSPayload{Selectors: []TrafficSelector{
				{Type: tsIPv4AddrRange, EndPort: 0xffff, Start: netip.MustParseAddr("0.0.0.0"), End: netip.MustParseAddr("255.255.255.255")},
				{Type: tsIPv6AddrRange, IPProto: 6, StartPort: 80, EndPort: 80, Start: netip.MustParseAddr("::"), End: netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")},
			}},
			&TSPayload{Responder: true},
			&CPPayload{CfgType: 1, Attrs: []CPAttribute{{Type: 1}}},
			&CertReqPayload{Encoding: 4, Data: []byte{1}},
		},
	}
}

var msgCmp = []cmp.Option{cmp.AllowUnexported(TrafficSelector{}), cmpopts.EquateEmpty(), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })}

func TestMessageRoundTrip(t *testing.T) {
	m := sampleMessage()
	b := encodePlain(m)
	h, err := parseHeader(b)
	if err != nil {
		t.Fatalf("parseHeader() = %v", err)
	}
	ps, ep, err := parseChain(h.next, b[headerLen:], headerLen, true)
	if err != nil || ep != nil {
		t.Fatalf("parseChain() = %v, %v; want payloads", ep, err)
	}
	if diff := cmp.Diff(m.Payloads, ps, msgCmp...); diff != "" {
		t.Errorf("payloads after round trip (-want +got):\n%s", diff)
	}
	if h.spiI != m.SPIi || h.exchange != m.Exchange || h.flags != m.Flags {
		t.Errorf("header = %+v; want SPIi %x exchange %v flags %x", h, m.SPIi, m.Exchange, m.Flags)
	}
}

// TestParseRejects checks strict length handling on hand-made bad messages.
func TestParseRejects(t *testing.T) {
	good := encodePlain(sampleMessage())
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"short", good[:20]},
		{"length field too big", mutate(func(b []byte) []byte { b[27]++; return b })},
		{"truncated datagram", good[:len(good)-1]},
		{"major version 3", mutate(func(b []byte) []byte { b[17] = 0x30; return b })},
		{"payload length past end", mutate(func(b []byte) []byte { b[headerLen+2] = 0xff; return b })},
		{"payload length < 4", mutate(func(b []byte) []byte { b[headerLen+2], b[headerLen+3] = 0, 3; return b })},
	} {
		h, err := parseHeader(tc.b)
		if err == nil {
			_, _, err = parseChain(h.next, tc.b[headerLen:], headerLen, true)
		}
		if err == nil {
			t.Errorf("%s: parse = nil error; want an error", tc.name)
		}
	}
}

func TestParseBodyRejects(t *testing.T) {
	for _, tc := range []struct {
		typ  PayloadType
		body []byte
	}{
		{PayloadKE, []byte{0, 14, 0, 0}},
		{PayloadNonce, make([]byte, 15)},
		{PayloadNonce, make([]byte, 257)},
		{PayloadIDi, []byte{1, 0, 0, 0, 1, 2, 3}},    // IPv4 of 3 bytes
		{PayloadIDr, []byte{5, 0, 0, 0, 1, 2, 3, 4}}, // IPv6 of 4 bytes
		{PayloadAUTH, []byte{2, 0, 0}},
		{PayloadNotify, []byte{3, 4, 0x40, 0x09, 1}}, // SPI size 4, 1 byte
		{PayloadDelete, []byte{3, 4, 0, 2, 1, 2, 3, 4}},
		{PayloadDelete, []byte{1, 8, 0, 0}},
		{PayloadTSi, []byte{1, 0, 0, 0, 7, 0, 0, 15, 0, 0, 255, 255, 0, 0, 0, 0, 255, 255, 255}},
		{PayloadTSi, []byte{2, 0, 0, 0, 7, 0, 0, 16, 0, 0, 255, 255, 0, 0, 0, 0, 255, 255, 255, 255}},
		{PayloadSA, []byte{0, 0, 0, 8, 1, 1, 0, 1}},                           // 1 transform announced, none present
		{PayloadSA, []byte{2, 0, 0, 8, 1, 1, 0, 0}},                           // "more" but nothing follows
		{PayloadSA, []byte{0, 0, 0, 16, 1, 1, 0, 1, 3, 0, 0, 8, 1, 0, 0, 12}}, // last transform marked "more"
		{PayloadCP, []byte{1, 0, 0, 0, 0, 1, 0, 9}},
	} {
		if _, err := parseBody(tc.typ, false, tc.body); err == nil {
			t.Errorf("parseBody(%s, %x) = nil error; want an error", tc.typ, tc.body)
		}
	}
}

func TestUnknownPayloads(t *testing.T) {
	// An unknown non-critical payload (type 200) between two known ones is skipped; a critical one
	// is an error naming the type.
	build := func(critical bool) []byte {
		m := &Message{Exchange: ExchangeIKESAInit, Flags: flagInitiator, SPIi: 1}
		b := appendHeader(nil, m, PayloadNonce)
		b = append(b, 200, 0, 0, 36)
		b = append(b, bytes.Repeat([]byte{1}, 32)...)
		crit := byte(0)
		if critical {
			crit = 0x80
		}
		b = append(b, byte(PayloadVendor), crit, 0, 6, 0xaa, 0xbb)
		b = append(b, 0, 0, 0, 5, 'x')
		setLength(b)
		return b
	}
	ps, _, err := parseChain(PayloadNonce, build(false)[headerLen:], headerLen, true)
	if err != nil || len(ps) != 2 {
		t.Fatalf("parseChain(unknown non-critical) = %d payloads, %v; want 2, nil", len(ps), err)
	}
	_, _, err = parseChain(PayloadNonce, build(true)[headerLen:], headerLen, true)
	var uc *errUnsupportedCritical
	if !errors.As(err, &uc) || uc.typ != 200 {
		t.Errorf("parseChain(unknown critical) = %v; want errUnsupportedCritical{200}", err)
	}
}

func TestRangePrefix(t *testing.T) {
	for _, tc := range []struct{ s, e, want string }{
		{"0.0.0.0", "255.255.255.255", "0.0.0.0/0"},
		{"10.0.0.0", "10.0.255.255", "10.0.0.0/16"},
		{"::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::/0"},
	} {
		p, ok := rangePrefix(netip.MustParseAddr(tc.s), netip.MustParseAddr(tc.e))
		if !ok || p.String() != tc.want {
			t.Errorf("rangePrefix(%s, %s) = %v, %v; want %s", tc.s, tc.e, p, ok, tc.want)
		}
	}
	if _, ok := rangePrefix(netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.5")); ok {
		t.Errorf("rangePrefix(10.0.0.1, 10.0.0.5) = ok; want not a prefix")
	}
}
