package esp

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// sum16 is a deliberately naive RFC 1071 sum, independent of checksumAdd, for test oracles.
func sum16(b ...[]byte) uint16 {
	var all []byte
	for _, x := range b {
		all = append(all, x...)
	}
	var s uint32
	for i := 0; i < len(all); i += 2 {
		w := uint32(all[i]) << 8
		if i+1 < len(all) {
			w |= uint32(all[i+1])
		}
		s += w
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

var (
	v4src = netip.MustParseAddr("192.168.1.10")
	v4dst = netip.MustParseAddr("10.0.0.1")
	v6src = netip.MustParseAddr("fd00:1::10")
	v6dst = netip.MustParseAddr("fd00:2::1")
)

// buildIPv4 makes an IPv4 packet with a valid header checksum.
func buildIPv4(src, dst netip.Addr, proto byte, id uint16, flags uint16, opts, payload []byte) []byte {
	hl := 20 + len(opts)
	p := make([]byte, hl+len(payload))
	p[0] = 0x40 | byte(hl/4)
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	binary.BigEndian.PutUint16(p[4:], id)
	binary.BigEndian.PutUint16(p[6:], flags)
	p[8], p[9] = 64, proto
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	copy(p[20:], opts)
	binary.BigEndian.PutUint16(p[10:], ^sum16(p[:hl]))
	copy(p[hl:], payload)
	return p
}

// buildIPv6 makes an IPv6 packet; ext is a chain of extension headers already linked to proto.
func buildIPv6(src, dst netip.Addr, firstNH byte, payload []byte) []byte {
	p := make([]byte, 40+len(payload))
	binary.BigEndian.PutUint32(p, 6<<28)
	binary.BigEndian.PutUint16(p[4:], uint16(len(payload)))
	p[6], p[7] = firstNH, 64
	s, d := src.As16(), dst.As16()
	copy(p[8:], s[:])
	copy(p[24:], d[:])
	copy(p[40:], payload)
	return p
}

// buildTCP makes a TCP segment with the given flags and options and a valid checksum for the
// pseudo-header of src/dst.
func buildTCP(src, dst netip.Addr, flags byte, opts, data []byte) []byte {
	for len(opts)%4 != 0 {
		opts = append(opts, 0)
	}
	hl := 20 + len(opts)
	t := make([]byte, hl+len(data))
	binary.BigEndian.PutUint16(t[0:], 40000)
	binary.BigEndian.PutUint16(t[2:], 443)
	binary.BigEndian.PutUint32(t[4:], 1000)
	t[12] = byte(hl/4) << 4
	t[13] = flags
	binary.BigEndian.PutUint16(t[14:], 64240)
	copy(t[20:], opts)
	copy(t[hl:], data)
	binary.BigEndian.PutUint16(t[16:], ^tcpPseudoSum(src, dst, t))
	return t
}

func tcpPseudoSum(src, dst netip.Addr, seg []byte) uint16 {
	var ph []byte
	ph = append(ph, src.AsSlice()...)
	ph = append(ph, dst.AsSlice()...)
	if src.Is4() {
		ph = append(ph, 0, protoTCP, byte(len(seg)>>8), byte(len(seg)))
	} else {
		ph = append(ph, 0, 0, byte(len(seg)>>8), byte(len(seg)), 0, 0, 0, protoTCP)
	}
	return sum16(ph, seg)
}

func tcpChecksumOK(src, dst netip.Addr, seg []byte) bool {
	return tcpPseudoSum(src, dst, seg) == 0xffff
}

func mssOption(v uint16) []byte { return []byte{2, 4, byte(v >> 8), byte(v)} }

var linuxSynOpts = func() []byte {
	// MSS, SACK permitted, timestamps, NOP, window scale: what Linux sends.
	o := mssOption(1460)
	o = append(o, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7)
	return o
}()

func TestClampMSS(t *testing.T) {
	const syn, synAck, ack = 0x02, 0x12, 0x10
	withMSSAt := func(nops int, v uint16) []byte {
		o := bytes.Repeat([]byte{1}, nops)
		return append(o, mssOption(v)...)
	}
	tests := []struct {
		name    string
		v6      bool
		flags   byte
		opts    []byte
		hbh     bool // IPv6 hop-by-hop header before TCP
		frag    uint16
		wantMSS int // -1: no MSS option expected
		changed bool
	}{
		{"v4 syn linux options", false, syn, linuxSynOpts, false, 0, 1379, true},
		{"v4 syn-ack", false, synAck, mssOption(1460), false, 0, 1379, true},
		{"v4 syn with DF", false, syn, mssOption(8960), false, ipv4DF, 1379, true},
		{"v4 syn small mss kept", false, syn, mssOption(1200), false, 0, 1200, false},
		{"v4 syn equal mss kept", false, syn, mssOption(1379), false, 0, 1379, false},
		{"v4 syn without mss", false, syn, []byte{1, 1, 4, 2}, false, 0, -1, false},
		{"v4 syn no options", false, syn, nil, false, 0, -1, false},
		{"v4 ack not touched", false, ack, mssOption(1460), false, 0, 1460, false},
		{"v4 mss at odd offset", false, syn, withMSSAt(1, 1460), false, 0, 1379, true},
		{"v4 mss after three nops", false, syn, withMSSAt(3, 65535), false, 0, 1379, true},
		{"v4 non-first fragment", false, syn, mssOption(1460), false, 100, 1460, false},
		{"v6 syn", true, syn, linuxSynOpts, false, 0, 1359, true},
		{"v6 syn hop-by-hop", true, syn, mssOption(1440), true, 0, 1359, true},
		{"v6 syn-ack odd offset", true, synAck, withMSSAt(1, 1440), false, 0, 1359, true},
		{"v6 ack", true, ack, mssOption(1440), false, 0, 1440, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src, dst := v4src, v4dst
			if tc.v6 {
				src, dst = v6src, v6dst
			}
			seg := buildTCP(src, dst, tc.flags, tc.opts, []byte("data"))
			var pkt []byte
			tcpOff := 20
			if tc.v6 {
				if tc.hbh {
					hbh := []byte{protoTCP, 0, 1, 4, 0, 0, 0, 0} // PadN
					pkt = buildIPv6(src, dst, 0, append(hbh, seg...))
					tcpOff = 48
				} else {
					pkt = buildIPv6(src, dst, protoTCP, seg)
					tcpOff = 40
				}
			} else {
				pkt = buildIPv4(src, dst, protoTCP, 7, tc.frag, nil, seg)
			}
			orig := append([]byte{}, pkt...)
			changed := clampMSS(pkt, DefaultMSS, DefaultMSS-20)
			if changed != tc.changed {
				t.Errorf("clampMSS() = %v; want %v", changed, tc.changed)
			}
			if !changed && !bytes.Equal(pkt, orig) {
				t.Errorf("clampMSS() changed the packet but returned false")
			}
			got := pkt[tcpOff:]
			if !tcpChecksumOK(src, dst, got) {
				t.Errorf("TCP checksum invalid after clampMSS: %x", got)
			}
			mss := -1
			for i := 20; i < int(got[12]>>4)*4; {
				if got[i] == 0 {
					break
				}
				if got[i] == 1 {
					i++
					continue
				}
				if got[i] == 2 {
					mss = int(binary.BigEndian.Uint16(got[i+2:]))
				}
				i += int(got[i+1])
			}
			if mss != tc.wantMSS {
				t.Errorf("MSS after clampMSS = %d; want %d", mss, tc.wantMSS)
			}
		})
	}
}

func TestClampMSSNoPanicOnTruncation(t *testing.T) {
	seg := buildTCP(v4src, v4dst, 0x02, linuxSynOpts, nil)
	pkt := buildIPv4(v4src, v4dst, protoTCP, 1, 0, nil, seg)
	for n := 0; n < len(pkt); n++ {
		b := append([]byte{}, pkt[:n]...)
		clampMSS(b, DefaultMSS, DefaultMSS)
		// Lie about the total length too.
		if n >= 4 {
			binary.BigEndian.PutUint16(b[2:], uint16(n))
			clampMSS(b, DefaultMSS, DefaultMSS)
		}
	}
}

// reassemble is a simple RFC 791 reassembler for test oracles: it checks every fragment's
// header and returns the payload and the first fragment's header.
func reassemble(t *testing.T, frags [][]byte, mtu int) (hdr, payload []byte, lastMF bool) {
	t.Helper()
	buf := make([]byte, 65536)
	covered := 0
	maxEnd := 0
	for i, f := range frags {
		if len(f) > mtu {
			t.Errorf("fragment %d is %d bytes; want <= mtu %d", i, len(f), mtu)
		}
		hl := int(f[0]&0xf) * 4
		if sum16(f[:hl]) != 0xffff {
			t.Errorf("fragment %d header checksum invalid", i)
		}
		if int(binary.BigEndian.Uint16(f[2:])) != len(f) {
			t.Errorf("fragment %d total length %d; want %d", i, binary.BigEndian.Uint16(f[2:]), len(f))
		}
		fl := binary.BigEndian.Uint16(f[6:])
		if fl&ipv4DF != 0 {
			t.Errorf("fragment %d has DF set", i)
		}
		off := int(fl&0x1fff) * 8
		mf := fl&ipv4MF != 0
		if i < len(frags)-1 && (!mf || (len(f)-hl)%8 != 0) {
			t.Errorf("fragment %d: MF=%v, payload %d bytes; want MF and a multiple of 8", i, mf, len(f)-hl)
		}
		if i == 0 {
			hdr = f[:hl]
		}
		copy(buf[off:], f[hl:])
		covered += len(f) - hl
		if off+len(f)-hl > maxEnd {
			maxEnd = off + len(f) - hl
		}
		lastMF = mf
	}
	if covered != maxEnd-int(binary.BigEndian.Uint16(frags[0][6:])&0x1fff)*8 {
		t.Errorf("fragments cover %d bytes but span %d", covered, maxEnd)
	}
	return hdr, buf[int(binary.BigEndian.Uint16(frags[0][6:])&0x1fff)*8 : maxEnd], lastMF
}

func TestFragmentIPv4(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	dst := make([][]byte, 64)
	for i := range dst {
		dst[i] = make([]byte, 2048)
	}
	sizes := make([]int, 64)
	// Options: record route (not copied) and a copied option (type 0x86 is CIPSO-like; any
	// type with the copied bit set).
	rr := []byte{7, 7, 4, 0, 0, 0, 0, 1}
	copiedOpt := []byte{0x86, 6, 1, 2, 3, 4, 1, 1}
	for _, tc := range []struct {
		name string
		opts []byte
		frag uint16
	}{
		{"plain", nil, 0},
		{"record route", rr, 0},
		{"copied option", append(append([]byte{}, copiedOpt...), rr...), 0},
		{"already a middle fragment", nil, ipv4MF | 100},
		{"already the last fragment", nil, 200},
	} {
		for _, mtu := range []int{576, 1000, 1279, 1399, 1422, 1438} {
			for _, n := range []int{mtu + 1, mtu + 7, 1500, 2000, 4000, 9000} {
				payload := make([]byte, n-20-len(tc.opts))
				for i := range payload {
					payload[i] = byte(rng.Uint32())
				}
				pkt := buildIPv4(v4src, v4dst, 17, 0x1234, tc.frag, tc.opts, payload)
				k := fragmentIPv4(pkt, mtu, dst, 8, sizes)
				if k == 0 {
					if n <= 4000 {
						t.Errorf("%s: fragmentIPv4(%d bytes, mtu %d) = 0 fragments", tc.name, n, mtu)
					}
					continue
				}
				var frags [][]byte
				for i := 0; i < k; i++ {
					frags = append(frags, dst[i][8:8+sizes[i]])
				}
				hdr, got, lastMF := reassemble(t, frags, mtu)
				if !bytes.Equal(got, payload) {
					t.Errorf("%s mtu %d n %d: reassembled payload differs", tc.name, mtu, n)
				}
				if !bytes.Equal(hdr[20:], pkt[20:20+len(tc.opts)]) {
					t.Errorf("%s: first fragment options = %x; want %x", tc.name, hdr[20:], tc.opts)
				}
				if gotOff, wantOff := binary.BigEndian.Uint16(frags[0][6:])&0x1fff, tc.frag&0x1fff; gotOff != wantOff {
					t.Errorf("%s: first fragment offset = %d; want %d", tc.name, gotOff, wantOff)
				}
				if lastMF != (tc.frag&ipv4MF != 0) {
					t.Errorf("%s: last fragment MF = %v; want %v", tc.name, lastMF, tc.frag&ipv4MF != 0)
				}
				for i, f := range frags {
					if binary.BigEndian.Uint16(f[4:]) != 0x1234 || f[9] != 17 || !bytes.Equal(f[12:20], pkt[12:20]) {
						t.Errorf("%s: fragment %d lost ID, protocol or addresses", tc.name, i)
					}
					hl := int(f[0]&0xf) * 4
					if i > 0 && len(tc.opts) > 0 {
						wantOpts := 0
						if tc.opts[0] == 0x86 {
							wantOpts = 8
						}
						if hl-20 != wantOpts {
							t.Errorf("%s: fragment %d has %d bytes of options; want %d (copied only)", tc.name, i, hl-20, wantOpts)
						}
					}
				}
			}
		}
	}
	// Refusals: DF set, too few buffers, not IPv4.
	big := buildIPv4(v4src, v4dst, 17, 1, ipv4DF, nil, make([]byte, 3000))
	if k := fragmentIPv4(big, 1400, dst, 0, sizes); k != 0 {
		t.Errorf("fragmentIPv4(DF set) = %d; want 0", k)
	}
	big = buildIPv4(v4src, v4dst, 17, 1, 0, nil, make([]byte, 3000))
	if k := fragmentIPv4(big, 1400, dst[:2], 0, sizes); k != 0 {
		t.Errorf("fragmentIPv4(2 buffers for 3 fragments) = %d; want 0", k)
	}
	if k := fragmentIPv4(buildIPv6(v6src, v6dst, 17, make([]byte, 3000)), 1400, dst, 0, sizes); k != 0 {
		t.Errorf("fragmentIPv4(IPv6) = %d; want 0", k)
	}
}

func TestICMPFragNeeded(t *testing.T) {
	orig := buildIPv4(v4src, v4dst, protoTCP, 9, ipv4DF, nil, buildTCP(v4src, v4dst, 0x10, nil, make([]byte, 1460)))
	buf := make([]byte, 2048)
	for _, src := range []netip.Addr{{}, netip.MustParseAddr("169.254.10.2")} {
		n := icmpFragNeeded(buf, orig, 1438, src)
		if n != 576 {
			t.Fatalf("icmpFragNeeded() length = %d; want 576", n)
		}
		p := buf[:n]
		wantSrc := v4dst
		if src.IsValid() {
			wantSrc = src
		}
		if got, _ := netip.AddrFromSlice(p[12:16]); got != wantSrc {
			t.Errorf("ICMP source = %v; want %v", got, wantSrc)
		}
		if got, _ := netip.AddrFromSlice(p[16:20]); got != v4src {
			t.Errorf("ICMP destination = %v; want %v", got, v4src)
		}
		if sum16(p[:20]) != 0xffff || sum16(p[20:]) != 0xffff {
			t.Errorf("ICMP checksums invalid")
		}
		if p[20] != 3 || p[21] != 4 || binary.BigEndian.Uint16(p[26:]) != 1438 {
			t.Errorf("ICMP type/code/mtu = %d/%d/%d; want 3/4/1438", p[20], p[21], binary.BigEndian.Uint16(p[26:]))
		}
		if !bytes.Equal(p[28:], orig[:548]) {
			t.Errorf("ICMP does not quote the original packet")
		}
	}
	// Never about an ICMP error.
	icmpErr := buildIPv4(v4src, v4dst, protoICMP, 1, ipv4DF, nil, append([]byte{3, 1, 0, 0, 0, 0, 0, 0}, make([]byte, 1500)...))
	if n := icmpFragNeeded(buf, icmpErr, 1438, netip.Addr{}); n != 0 {
		t.Errorf("icmpFragNeeded(ICMP error) = %d; want 0", n)
	}
	echo := buildIPv4(v4src, v4dst, protoICMP, 1, ipv4DF, nil, append([]byte{8, 0, 0, 0, 0, 0, 0, 0}, make([]byte, 1500)...))
	if n := icmpFragNeeded(buf, echo, 1438, netip.Addr{}); n == 0 {
		t.Errorf("icmpFragNeeded(echo request) = 0; want an ICMP error")
	}
}

func TestICMPv6TooBig(t *testing.T) {
	orig := buildIPv6(v6src, v6dst, protoTCP, buildTCP(v6src, v6dst, 0x10, nil, make([]byte, 1440)))
	buf := make([]byte, 2048)
	n := icmpv6TooBig(buf, orig, 1418, netip.Addr{})
	if n != 1280 {
		t.Fatalf("icmpv6TooBig() length = %d; want 1280", n)
	}
	p := buf[:n]
	if got, _ := netip.AddrFromSlice(p[8:24]); got != v6dst {
		t.Errorf("ICMPv6 source = %v; want %v", got, v6dst)
	}
	if got, _ := netip.AddrFromSlice(p[24:40]); got != v6src {
		t.Errorf("ICMPv6 destination = %v; want %v", got, v6src)
	}
	if p[6] != protoICMPv6 || p[40] != 2 || p[41] != 0 || binary.BigEndian.Uint32(p[44:]) != 1418 {
		t.Errorf("next header/type/code/mtu = %d/%d/%d/%d; want 58/2/0/1418", p[6], p[40], p[41], binary.BigEndian.Uint32(p[44:]))
	}
	if int(binary.BigEndian.Uint16(p[4:])) != n-40 {
		t.Errorf("payload length = %d; want %d", binary.BigEndian.Uint16(p[4:]), n-40)
	}
	ph := append(append(append([]byte{}, p[8:40]...), 0, 0, byte((n-40)>>8), byte(n-40)), 0, 0, 0, protoICMPv6)
	if sum16(ph, p[40:]) != 0xffff {
		t.Errorf("ICMPv6 checksum invalid")
	}
	if !bytes.Equal(p[48:], orig[:1232]) {
		t.Errorf("ICMPv6 does not quote the original packet")
	}
	tooBig := buildIPv6(v6src, v6dst, protoICMPv6, append([]byte{2, 0, 0, 0}, make([]byte, 1500)...))
	if n := icmpv6TooBig(buf, tooBig, 1418, netip.Addr{}); n != 0 {
		t.Errorf("icmpv6TooBig(ICMPv6 error) = %d; want 0", n)
	}
	mcast := buildIPv6(netip.MustParseAddr("ff02::1"), v6dst, 17, make([]byte, 1500))
	if n := icmpv6TooBig(buf, mcast, 1418, netip.Addr{}); n != 0 {
		t.Errorf("icmpv6TooBig(multicast source) = %d; want 0", n)
	}
}

func TestChecksumUpdateMatchesRecompute(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 10000; i++ {
		b := make([]byte, 2*(1+rng.IntN(40)))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		cs := checksumFold(checksumAdd(0, b))
		k := 2 * rng.IntN(len(b)/2)
		old := binary.BigEndian.Uint16(b[k:])
		nw := uint16(rng.Uint32())
		binary.BigEndian.PutUint16(b[k:], nw)
		got := checksumUpdate(cs, old, nw)
		want := checksumFold(checksumAdd(0, b))
		// One's complement has two zeros; both verify.
		if got != want && !(got == 0xffff && want == 0) && !(got == 0 && want == 0xffff) {
			t.Fatalf("checksumUpdate(%#x, %#x, %#x) = %#x; want %#x", cs, old, nw, got, want)
		}
		if sum16(b) != ^want && want != 0 && want != 0xffff {
			t.Fatalf("checksumAdd disagrees with the naive sum")
		}
	}
}

func TestSumFast(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	buf := make([]byte, 3000)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	for i := range 64 {
		buf[i] = 0xff // runs of 0xff stress the carries
	}
	for off := 0; off < 9; off++ {
		for n := 0; n < 200; n++ {
			b := buf[off : off+n]
			if got, want := checksumFold(sumFast(b)), ^sum16(b); got != want && !(n == 0 && got == 0xffff) {
				t.Fatalf("checksum of %d bytes at offset %d = %#04x; want %#04x", n, off, got, want)
			}
		}
	}
	for _, n := range []int{1379, 1400, 2999} {
		if got, want := checksumFold(sumFast(buf[1:1+n])), ^sum16(buf[1:1+n]); got != want {
			t.Fatalf("checksum of %d bytes = %#04x; want %#04x", n, got, want)
		}
	}
}

func BenchmarkChecksum(b *testing.B) {
	buf := make([]byte, 1400)
	b.SetBytes(1400)
	for i := 0; i < b.N; i++ {
		sumFast(buf)
	}
}
