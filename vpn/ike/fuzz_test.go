package ike

import (
	"bytes"
	"context"
	"crypto/sha256"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// strongswanSeeds reads the datagrams captured from strongSwan (FuzzParseMessage's corpus).
func strongswanSeeds(tb testing.TB) [][]byte {
	files, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzParseMessage", "strongswan-*"))
	var out [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[1], "[]byte(") {
			tb.Fatalf("%s: not a one-value corpus file", f)
		}
		v, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		if err != nil {
			tb.Fatalf("%s: %v", f, err)
		}
		out = append(out, []byte(v))
	}
	return out
}

// FuzzParseMessage: the header and payload parsers must never panic, whatever the input, and
// what they accept must re-encode to something they accept again. The seed corpus in
// testdata/fuzz/FuzzParseMessage holds datagrams captured from strongSwan 5.9.8 in the lab
// (MESHROOT_IKE_CAPTURE=dir go test -run TestLab ./vpn/ike).
func FuzzParseMessage(f *testing.F) {
	f.Add(encodePlain(sampleMessage()))
	f.Add([]byte{})
	f.Add(make([]byte, headerLen))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseHeader(b)
		if err != nil {
			return
		}
		ps, ep, err := parseChain(h.next, b[headerLen:], headerLen, true)
		if err != nil {
			return
		}
		if ep != nil {
			_, _, _ = parseChain(ep.innerFirst, ep.body, 0, false) // garbage "plaintext" must not panic either
			return
		}
		m := &Message{SPIi: h.spiI, SPIr: h.spiR, Exchange: h.exchange, Flags: h.flags, MsgID: h.msgID, Payloads: ps}
		_ = m.Summary()
		again := encodePlain(m)
		h2, err := parseHeader(again)
		if err != nil {
			t.Fatalf("re-encoded message does not parse: %v", err)
		}
		if _, _, err := parseChain(h2.next, again[headerLen:], headerLen, true); err != nil {
			t.Fatalf("re-encoded payloads do not parse: %v", err)
		}
	})
}

// fixedReader is a deterministic "random" source for reproducible fuzz state.
type fixedReader struct{ n byte }

func (r *fixedReader) Read(p []byte) (int, error) {
	for i := range p {
		r.n++
		p[i] = r.n*31 + 7
	}
	return len(p), nil
}

// fuzzSA builds an established-looking IKE SA with fixed keys for the given suite.
func fuzzSA(t testing.TB, suite string, initiator bool) *ikeSA {
	p, err := ParseProposal(suite)
	if err != nil {
		t.Fatal(err)
	}
	q, _ := p.normalize(ProtoIKE)
	s, err := newIKESuite(q.Algs)
	if err != nil {
		t.Fatal(err)
	}
	c := &Conn{cfg: &compiled{Config: Config{FragmentSize: 1280}}, opts: Options{Rand: &fixedReader{}}}
	sa := &ikeSA{c: c, initiator: initiator, spiI: 0x1111111111111111, spiR: 0x2222222222222222, suite: s}
	seed := sha256.Sum256([]byte(suite))
	k, err := deriveIKEKeys(s.prf, s, seed[:], seed[:16], seed[16:], sa.spiI, sa.spiR)
	if err != nil {
		t.Fatal(err)
	}
	if err := sa.setKeys(k); err != nil {
		t.Fatal(err)
	}
	return sa
}

var fuzzSuites = []string{"aes256gcm16-prfsha256-modp2048", "aes128-sha1-modp2048", "aes256-sha512-modp2048"}

// FuzzSKDecrypt drives the SK payload path with known keys: mode bit 0 selects whether data is
// a whole datagram to verify and decrypt (seeds are valid encrypted messages) or a plaintext
// to seal, open and parse (reaching the inner parser with arbitrary content); bits 1-2 pick
// the cipher suite.
func FuzzSKDecrypt(f *testing.F) {
	for i, s := range fuzzSuites {
		sender := fuzzSA(f, s, true)
		m := sampleMessage()
		m.Exchange, m.SPIi, m.SPIr, m.MsgID = ExchangeIKEAuth, sender.spiI, sender.spiR, 1
		pkts, err := sender.encode(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(pkts[0], uint8(i<<1|1))
		f.Add(appendChain(nil, m.Payloads), uint8(i<<1))
	}
	f.Fuzz(func(t *testing.T, data []byte, mode uint8) {
		suite := fuzzSuites[int(mode>>1)%len(fuzzSuites)]
		sender := fuzzSA(t, suite, true)
		receiver := fuzzSA(t, suite, false)
		if mode&1 == 1 {
			h, err := parseHeader(data)
			if err != nil {
				return
			}
			_, _ = receiver.decrypt(data, h, false)
			return
		}
		if len(data) > 60000 {
			return
		}
		first := PayloadNotify
		if len(data) > 0 {
			first = PayloadType(data[0])
		}
		b := appendHeader(nil, &Message{SPIi: sender.spiI, SPIr: sender.spiR, Exchange: ExchangeInformational, Flags: flagInitiator, MsgID: 5}, PayloadSK)
		b = append(b, byte(first), 0, 0, 0)
		total := len(b) + sender.out.sealedLen(len(data))
		b[headerLen+2], b[headerLen+3] = byte((total-headerLen)>>8), byte(total-headerLen)
		b[24], b[25], b[26], b[27] = byte(total>>24), byte(total>>16), byte(total>>8), byte(total)
		msg, err := sender.out.seal(b, data, sender.c.opts.Rand)
		if err != nil {
			t.Fatal(err)
		}
		h, err := parseHeader(msg)
		if err != nil {
			t.Fatalf("sealed message header: %v", err)
		}
		_, ep, err := parseChain(h.next, msg[headerLen:], headerLen, true)
		if err != nil || ep == nil {
			t.Fatalf("sealed message outer chain: %v", err)
		}
		plain, err := receiver.in.open(msg, ep.body)
		if err != nil {
			t.Fatalf("open(seal(x)) = %v", err)
		}
		if !bytes.Equal(plain, data) {
			t.Fatalf("open(seal(x)) = %x; want %x", plain, data)
		}
		_, _ = receiver.decrypt(msg, h, false)
	})
}

// FuzzConnHandlePacket feeds arbitrary datagrams to a Conn in each interesting state (fresh
// responder; established responder) on both ports: nothing may panic and the Conn must still
// close cleanly.
func FuzzConnHandlePacket(f *testing.F) {
	f.Add(encodePlain(sampleMessage()), false, false)
	f.Add(append([]byte{0, 0, 0, 0}, encodePlain(sampleMessage())...), true, true)
	f.Add([]byte{0xff}, true, false)
	for _, b := range strongswanSeeds(f) {
		f.Add(b, false, false)
		f.Add(b, true, false)
	}
	f.Fuzz(func(t *testing.T, b []byte, established, natt bool) {
		cfg := func(c *Config) { withSuite("aes128gcm16-prfsha256-curve25519", "aes128gcm16")(c) }
		p := newFuzzPair(t, cfg)
		local := netip.AddrPortFrom(addrB, 500)
		if natt {
			local = netip.AddrPortFrom(addrB, 4500)
		}
		if established {
			p.start()
			p.net.run(5*time.Second, p.up)
		}
		p.b.c.HandlePacket(b, local, netip.AddrPortFrom(addrA, 500))
		p.net.run(time.Minute, nil)
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		_ = p.a.c.Close(ctx)
		_ = p.b.c.Close(ctx)
	})
}

// newFuzzPair is newPair without logging and test-failure dumps (cheap per fuzz input).
func newFuzzPair(t testing.TB, mod func(*Config)) *pair {
	p := &pair{t: t, clock: newFakeClock()}
	p.net = newFakeNet(p.clock)
	mk := func(local, remote netip.Addr, start bool) *end {
		cfg := baseConfig(local, remote)
		mod(&cfg)
		if start {
			cfg.StartAction = StartStart
		}
		e := &end{dp: newFakeDP(), logs: &logBuf{}}
		c, err := NewConn(cfg, Options{Sender: netSender{p.net}, DataPlane: e.dp, Clock: p.clock, Rand: &fixedReader{}})
		if err != nil {
			t.Fatal(err)
		}
		e.c = c
		p.net.conns[local] = c
		return e
	}
	p.a = mk(addrA, addrB, true)
	p.b = mk(addrB, addrA, false)
	return p
}
