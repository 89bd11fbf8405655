package esp

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// FuzzOpen feeds arbitrary bytes to Open on GCM and CBC SAs with known keys: no panic, and
// anything accepted is a well-formed inner packet that lies within the input's length.
func FuzzOpen(f *testing.F) {
	suites := []Suite{SuiteAES256GCM16, SuiteAES128CBCSHA1, {Encr: EncrAESGCM12, KeyBits: 128}, {Encr: EncrAESCBC, KeyBits: 256, Integ: AuthHMACSHA512256}}
	for i, s := range suites {
		out := mustSA(f, testParams(f, 0x1234, s, 1))
		for _, n := range []int{20, 40, 61, 1400} {
			inner := make([]byte, n)
			inner[0] = 0x45
			if n == 40 {
				inner[0] = 0x60
			}
			nh := NextHeaderIPv4
			if n == 40 {
				nh = NextHeaderIPv6
			}
			pkt, err := out.Seal(nil, inner, nh)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(uint8(i), pkt)
			f.Add(uint8(i), pkt[:len(pkt)-1])
			bad := append([]byte{}, pkt...)
			bad[len(bad)/2] ^= 1
			f.Add(uint8(i), bad)
		}
	}
	f.Add(uint8(0), []byte{})
	f.Add(uint8(1), []byte{0, 0, 0x12, 0x34, 0, 0, 0, 1})
	sas := make([]*SA, len(suites))
	f.Fuzz(func(t *testing.T, which uint8, pkt []byte) {
		i := int(which) % len(suites)
		if sas[i] == nil {
			sas[i] = mustSA(t, testParams(t, 0x1234, suites[i], 1))
		}
		sa := sas[i]
		sa.replay.top = 0 // every input judged on its own
		clear(sa.replay.bits)
		orig := append([]byte(nil), pkt...)
		inner, nh, err := sa.Open(nil, pkt)
		if !bytes.Equal(pkt, orig) {
			t.Fatalf("Open modified its input")
		}
		if err != nil {
			return
		}
		if len(inner) > len(pkt) {
			t.Fatalf("Open returned %d bytes from a %d-byte packet", len(inner), len(pkt))
		}
		switch nh {
		case NextHeaderIPv4, NextHeaderIPv6, NextHeaderDummy:
		default:
			t.Fatalf("Open accepted next header %d", nh)
		}
		// In place gives the same answer.
		sa.replay.top = 0
		clear(sa.replay.bits)
		cp := append([]byte(nil), pkt...)
		inner2, nh2, err2 := sa.Open(cp[sa.HeaderLen():sa.HeaderLen()], cp)
		if err2 != nil || nh2 != nh || !bytes.Equal(inner, inner2) {
			t.Fatalf("Open in place = %x, %d, %v; out of place %x, %d", inner2, nh2, err2, inner, nh)
		}
	})
}

// FuzzReceiveDatagram drives the socket demultiplexer (RFC 3948 classification, SPI lookup,
// replay, open, MSS clamp, TUN batch) with arbitrary UDP payloads, synchronously.
func FuzzReceiveDatagram(f *testing.F) {
	p := testParams(f, 0x0badcafe, SuiteAES128GCM16, 1)
	out := mustSA(f, p)
	syn := buildIPv4(v4src, v4dst, protoTCP, 1, 0, nil, buildTCP(v4src, v4dst, 0x02, linuxSynOpts, nil))
	for _, inner := range [][]byte{syn, udp4(1, 100), buildIPv6(v6src, v6dst, protoTCP, buildTCP(v6src, v6dst, 0x12, mssOption(1440), nil))} {
		nh := NextHeaderIPv4
		if inner[0]>>4 == 6 {
			nh = NextHeaderIPv6
		}
		pkt, err := out.Seal(nil, inner, nh)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(pkt)
	}
	f.Add([]byte{KeepaliveByte})
	f.Add(AppendIKE(nil, []byte("ikev2 header ...")))
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0x0b, 0xad, 0xca, 0xfe, 0, 0, 0, 9})
	f.Add([]byte{1, 2, 3})

	fn := NewFakeNetwork()
	conn, err := fn.Listen(addrB)
	if err != nil {
		f.Fatal(err)
	}
	var ikeSeen int
	m := newMux(conn, MuxConfig{Logger: quietLog, OnIKE: func(b []byte, local, remote netip.AddrPort) { ikeSeen += len(b) }})
	tun := NewFakeTUN(1500, 1)
	tt, err := m.NewTunnel(TunnelConfig{TUN: tun, Remote: addrA})
	if err != nil {
		f.Fatal(err)
	}
	sa, err := tt.AddInbound(p)
	if err != nil {
		f.Fatal(err)
	}
	r := newReceiver(m)
	msg := &RecvMsg{From: addrA, To: addrB.Addr()}
	f.Fuzz(func(t *testing.T, d []byte) {
		sa.replay.top = 0
		clear(sa.replay.bits)
		spis := *m.spis.Load()
		// As one datagram, and as a GRO run of two copies.
		r.datagram(d, msg, spis)
		r.flush()
		if len(d) > 0 {
			sa.replay.top = 0
			clear(sa.replay.bits)
			run := append(append([]byte(nil), d...), d...)
			grp := RecvMsg{Buf: run, N: len(run), Seg: len(d)}
			grp.Datagrams(func(b []byte) bool {
				if len(b) != len(d) {
					t.Fatalf("GRO split gave %d bytes; want %d", len(b), len(d))
				}
				r.datagram(b, msg, spis)
				return true
			})
			r.flush()
		}
		for {
			select {
			case w := <-tun.Written():
				if len(w) == 0 || (w[0]>>4 != 4 && w[0]>>4 != 6) {
					t.Fatalf("wrote a non-IP packet to the TUN: %x", w)
				}
				continue
			default:
			}
			break
		}
	})
}

// FuzzInnerPacket runs the inner-packet functions (MSS clamp, fragmentation, ICMP errors) on
// arbitrary packets from the LAN side: no panic, lengths kept, fragments reassemble.
func FuzzInnerPacket(f *testing.F) {
	f.Add(buildIPv4(v4src, v4dst, protoTCP, 1, ipv4DF, nil, buildTCP(v4src, v4dst, 0x02, linuxSynOpts, make([]byte, 1500))), uint16(1379), uint16(1400))
	f.Add(buildIPv6(v6src, v6dst, 0, append([]byte{protoTCP, 0, 1, 4, 0, 0, 0, 0}, buildTCP(v6src, v6dst, 0x02, mssOption(1440), nil)...)), uint16(1359), uint16(1280))
	f.Add(buildIPv4(v4src, v4dst, 17, 1, ipv4MF|3, []byte{0x86, 6, 1, 2, 3, 4, 7, 3}, make([]byte, 3000)), uint16(1379), uint16(576))
	f.Add([]byte{0x45}, uint16(0), uint16(0))
	dst := make([][]byte, 128)
	for i := range dst {
		dst[i] = make([]byte, 2048)
	}
	sizes := make([]int, len(dst))
	icmp := make([]byte, 1500)
	f.Fuzz(func(t *testing.T, pkt []byte, mss uint16, mtu uint16) {
		n := len(pkt)
		cp := append([]byte(nil), pkt...)
		clampMSS(cp, mss, mss)
		if len(cp) != n {
			t.Fatalf("clampMSS changed the length")
		}
		m := int(mtu)%1500 + 68
		k := fragmentIPv4(pkt, m, dst, 16, sizes)
		if k > 0 {
			var frags [][]byte
			for i := 0; i < k; i++ {
				if sizes[i] > m {
					t.Fatalf("fragment %d is %d bytes; mtu %d", i, sizes[i], m)
				}
				frags = append(frags, dst[i][16:16+sizes[i]])
			}
			ihl := int(pkt[0]&0xf) * 4
			total := int(binary.BigEndian.Uint16(pkt[2:]))
			_, payload, _ := reassemble(t, frags, m)
			if !bytes.Equal(payload, pkt[ihl:total]) {
				t.Fatalf("fragments do not reassemble to the payload")
			}
		}
		if l := icmpFragNeeded(icmp, pkt, m, netip.Addr{}); l > 0 && (l > 576 || sum16(icmp[:20]) != 0xffff) {
			t.Fatalf("bad ICMP error of %d bytes", l)
		}
		if l := icmpv6TooBig(icmp, pkt, m, netip.Addr{}); l > 1280 {
			t.Fatalf("ICMPv6 error of %d bytes", l)
		}
	})
}
