package esp

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// vnetHdr builds a virtio-net header (host byte order, as TUN uses it).
func vnetHdr(flags, gsoType byte, hdrLen, gsoSize, csumStart, csumOffset int) []byte {
	h := make([]byte, virtioNetHdrLen)
	h[0], h[1] = flags, gsoType
	binary.NativeEndian.PutUint16(h[2:], uint16(hdrLen))
	binary.NativeEndian.PutUint16(h[4:], uint16(gsoSize))
	binary.NativeEndian.PutUint16(h[6:], uint16(csumStart))
	binary.NativeEndian.PutUint16(h[8:], uint16(csumOffset))
	return h
}

func newTestReader(n int) *tunReader {
	r := &tunReader{vnet: true, bufs: make([][]byte, n), sizes: make([]int, n), offset: outOffset}
	for i := range r.bufs {
		r.bufs[i] = make([]byte, outOffset+1500+MaxTrailerLen)
	}
	return r
}

func udpChecksumOK(src, dst netip.Addr, seg []byte) bool {
	var ph []byte
	ph = append(ph, src.AsSlice()...)
	ph = append(ph, dst.AsSlice()...)
	if src.Is4() {
		ph = append(ph, 0, 17, byte(len(seg)>>8), byte(len(seg)))
	} else {
		ph = append(ph, 0, 0, byte(len(seg)>>8), byte(len(seg)), 0, 0, 0, 17)
	}
	return sum16(ph, seg) == 0xffff
}

func TestTUNReaderSplitTCP(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		src, dst := v4src, v4dst
		if v6 {
			src, dst = v6src, v6dst
		}
		data := make([]byte, 5000)
		for i := range data {
			data[i] = byte(i * 3)
		}
		const psh, fin, ack, cwr = 0x08, 0x01, 0x10, 0x80
		seg := buildTCP(src, dst, psh|fin|ack|cwr, []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}, data)
		var pkt []byte
		iph := 20
		gsoType := byte(vnetGSOTCPv4)
		if v6 {
			pkt, iph, gsoType = buildIPv6(src, dst, protoTCP, seg), 40, vnetGSOTCPv6
		} else {
			pkt = buildIPv4(src, dst, protoTCP, 100, ipv4DF, nil, seg)
		}
		// TSO hands over the pseudo-header sum in the checksum field; the split recomputes it.
		binary.BigEndian.PutUint16(pkt[iph+16:], 0x1234)
		const mss = 1388
		r := newTestReader(8)
		if !r.consume(append(vnetHdr(vnetFlagNeedsCsum, gsoType, iph+32, mss, iph, 16), pkt...)) {
			t.Fatal("consume() = false; want the super-packet split")
		}
		if r.n != 4 || r.bad != 0 {
			t.Fatalf("v6=%v: %d segments (%d bad); want 4", v6, r.n, r.bad)
		}
		var got []byte
		for i := 0; i < r.n; i++ {
			p := r.bufs[i][outOffset : outOffset+r.sizes[i]]
			th := p[iph:]
			if v6 {
				if int(binary.BigEndian.Uint16(p[4:])) != len(p)-40 {
					t.Errorf("segment %d: payload length %d; want %d", i, binary.BigEndian.Uint16(p[4:]), len(p)-40)
				}
			} else {
				if int(binary.BigEndian.Uint16(p[2:])) != len(p) || sum16(p[:20]) != 0xffff || binary.BigEndian.Uint16(p[4:]) != uint16(100+i) {
					t.Errorf("segment %d: IPv4 length/checksum/ID wrong", i)
				}
			}
			if !tcpChecksumOK(src, dst, th) {
				t.Errorf("v6=%v segment %d: TCP checksum invalid", v6, i)
			}
			if got, want := binary.BigEndian.Uint32(th[4:]), uint32(1000+i*mss); got != want {
				t.Errorf("segment %d: seq %d; want %d", i, got, want)
			}
			flags := th[13]
			last := i == r.n-1
			if (flags&(psh|fin) != 0) != last || (flags&cwr != 0) != (i == 0) || flags&ack == 0 {
				t.Errorf("segment %d: flags %#x", i, flags)
			}
			got = append(got, th[32:]...)
		}
		if string(got) != string(data) {
			t.Errorf("v6=%v: segments do not add up to the payload", v6)
		}
		// Not enough room left in the batch: kept for later.
		r2 := newTestReader(5)
		r2.n = 2
		if r2.consume(append(vnetHdr(vnetFlagNeedsCsum, gsoType, iph+32, mss, iph, 16), pkt...)) {
			t.Errorf("consume() with 3 free slots for 4 segments = true; want false (pending)")
		}
	}
}

func TestTUNReaderSplitUDPAndChecksum(t *testing.T) {
	payload := make([]byte, 3000)
	udp := append([]byte{0x30, 0x39, 0x00, 0x35, 0, 0, 0, 0}, payload...)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	pkt := buildIPv4(v4src, v4dst, 17, 7, 0, nil, udp)
	r := newTestReader(8)
	r.consume(append(vnetHdr(vnetFlagNeedsCsum, vnetGSOUDPL4, 28, 1200, 20, 6), pkt...))
	if r.n != 3 {
		t.Fatalf("USO split into %d; want 3", r.n)
	}
	for i := 0; i < r.n; i++ {
		p := r.bufs[i][outOffset : outOffset+r.sizes[i]]
		if int(binary.BigEndian.Uint16(p[24:])) != len(p)-20 || !udpChecksumOK(v4src, v4dst, p[20:]) {
			t.Errorf("UDP segment %d: length %d / checksum wrong", i, binary.BigEndian.Uint16(p[24:]))
		}
	}
	// No segmentation, checksum to complete: the field holds the pseudo-header sum.
	small := buildIPv4(v4src, v4dst, 17, 8, 0, nil, append([]byte{0x30, 0x39, 0x00, 0x35, 0, 13, 0, 0}, []byte("hello")...))
	ph := append(append(append([]byte{}, v4src.AsSlice()...), v4dst.AsSlice()...), 0, 17, 0, 13)
	binary.BigEndian.PutUint16(small[26:], sum16(ph))
	r = newTestReader(2)
	r.consume(append(vnetHdr(vnetFlagNeedsCsum, vnetGSONone, 0, 0, 20, 6), small...))
	if r.n != 1 || !udpChecksumOK(v4src, v4dst, r.bufs[0][outOffset+20:outOffset+r.sizes[0]]) {
		t.Errorf("NEEDS_CSUM packet: n %d, checksum valid %v", r.n, r.n == 1 && udpChecksumOK(v4src, v4dst, r.bufs[0][outOffset+20:outOffset+r.sizes[0]]))
	}
	// Malformed reads are dropped, not fatal.
	r = newTestReader(2)
	for _, b := range [][]byte{{1, 2}, vnetHdr(0, vnetGSOTCPv4, 0, 0, 0, 0), append(vnetHdr(0, vnetGSOTCPv6, 0, 100, 20, 16), pkt...), append(vnetHdr(0, 9, 0, 100, 20, 16), pkt...)} {
		if !r.consume(b) {
			t.Errorf("consume(malformed) = false")
		}
	}
	if r.n != 0 || r.bad != 4 {
		t.Errorf("malformed reads: %d packets, %d bad; want 0, 4", r.n, r.bad)
	}
}

// FuzzTUNRead feeds arbitrary reads (virtio-net header + packet) to the TUN reader's parser.
func FuzzTUNRead(f *testing.F) {
	seg := buildTCP(v4src, v4dst, 0x18, nil, make([]byte, 4000))
	f.Add(append(vnetHdr(vnetFlagNeedsCsum, vnetGSOTCPv4, 40, 1400, 20, 16), buildIPv4(v4src, v4dst, protoTCP, 1, 0, nil, seg)...))
	f.Add(append(vnetHdr(0, 0, 0, 0, 0, 0), udp4(1, 100)...))
	f.Add([]byte{1})
	r := newTestReader(64)
	f.Fuzz(func(t *testing.T, b []byte) {
		r.n, r.bad = 0, 0
		r.consume(b)
		for i := 0; i < r.n; i++ {
			if r.sizes[i] > len(r.bufs[i])-r.offset {
				t.Fatalf("segment %d of %d bytes overflows its buffer", i, r.sizes[i])
			}
		}
	})
}
