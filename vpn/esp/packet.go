package esp

import (
	"encoding/binary"
	"net/netip"
)

// Inner-packet work done on the way into and out of a tunnel: TCP MSS clamping, IPv4
// fragmentation before encryption, and the ICMP errors sent back into the TUN when a packet
// cannot be fragmented. All functions work in caller-provided buffers and never allocate.

// DefaultMSS is AWS's tcp_mss_adjustment: the TCP MSS clamped on SYNs in both directions.
const DefaultMSS = 1379

// MinTunnelMTU is the smallest inner MTU a tunnel accepts (RFC 791's 576; IPv6 needs 1280 and
// gets "packet too big" with the tunnel MTU, which must then be at least 1280 to be useful).
const MinTunnelMTU = 576

const (
	protoICMP   = 1
	protoTCP    = 6
	protoICMPv6 = 58

	ipv4DF = 0x4000
	ipv4MF = 0x2000
)

// checksumAdd adds b to a running one's-complement sum (RFC 1071) of big-endian 16-bit words.
func checksumAdd(sum uint64, b []byte) uint64 {
	return sum + sumFast(b)
}

// checksumFold folds a running sum into the 16-bit Internet checksum (complemented).
func checksumFold(sum uint64) uint16 {
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// checksumUpdate adjusts checksum hc for a 16-bit word changing from old to new (RFC 1624 eqn 3).
func checksumUpdate(hc, old, new uint16) uint16 {
	sum := uint32(^hc) + uint32(^old) + uint32(new)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// tcpOf returns the TCP segment of an IPv4 or IPv6 packet carrying TCP, and the MSS limit that
// applies to it, or nil when pkt is not an unfragmented (or first-fragment) TCP packet.
func tcpOf(pkt []byte, mss4, mss6 uint16) ([]byte, uint16) {
	if len(pkt) < 20 {
		return nil, 0
	}
	switch pkt[0] >> 4 {
	case 4:
		ihl := int(pkt[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(pkt[2:]))
		if pkt[9] != protoTCP || ihl < 20 || total > len(pkt) || total < ihl {
			return nil, 0
		}
		if binary.BigEndian.Uint16(pkt[6:])&0x1fff != 0 {
			return nil, 0 // not the first fragment
		}
		return pkt[ihl:total], mss4
	case 6:
		if len(pkt) < 40 {
			return nil, 0
		}
		end := 40 + int(binary.BigEndian.Uint16(pkt[4:]))
		if end > len(pkt) {
			return nil, 0
		}
		nh, off := pkt[6], 40
		for i := 0; i < 8; i++ {
			switch nh {
			case protoTCP:
				return pkt[off:end], mss6
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if off+8 > end {
					return nil, 0
				}
				nh, off = pkt[off], off+(int(pkt[off+1])+1)*8
			case 44: // fragment header: only the first fragment has the TCP header
				if off+8 > end || binary.BigEndian.Uint16(pkt[off+2:])&0xfff8 != 0 {
					return nil, 0
				}
				nh, off = pkt[off], off+8
			default:
				return nil, 0
			}
			if off > end {
				return nil, 0
			}
		}
	}
	return nil, 0
}

// clampMSS lowers the MSS option of a TCP SYN (or SYN-ACK) in pkt to mss4 (IPv4) or mss6 (IPv6)
// when it is larger, fixing the TCP checksum incrementally. A SYN without an MSS option is left
// alone: the default MSS (536 for IPv4, 1220 for IPv6) is already below any tunnel's. A zero
// limit disables clamping for that family. It reports whether pkt changed.
func clampMSS(pkt []byte, mss4, mss6 uint16) bool {
	tcp, mss := tcpOf(pkt, mss4, mss6)
	if mss == 0 || len(tcp) < 20 || tcp[13]&0x02 == 0 { // SYN
		return false
	}
	doff := int(tcp[12]>>4) * 4
	if doff < 20 || doff > len(tcp) {
		return false
	}
	for i := 20; i < doff; {
		switch tcp[i] {
		case 0: // end of options
			return false
		case 1: // no-op
			i++
			continue
		}
		if i+1 >= doff {
			return false
		}
		l := int(tcp[i+1])
		if l < 2 || i+l > doff {
			return false
		}
		if tcp[i] == 2 && l == 4 {
			old := binary.BigEndian.Uint16(tcp[i+2:])
			if old <= mss {
				return false
			}
			binary.BigEndian.PutUint16(tcp[i+2:], mss)
			hc := binary.BigEndian.Uint16(tcp[16:])
			if (i+2)%2 == 0 {
				hc = checksumUpdate(hc, old, mss)
			} else {
				// The value straddles two checksum words: its bytes count swapped.
				hc = checksumUpdate(hc, old>>8|old<<8, mss>>8|mss<<8)
			}
			binary.BigEndian.PutUint16(tcp[16:], hc)
			return true
		}
		i += l
	}
	return false
}

// ipv4OptionsCopied returns the options of an IPv4 header that must be copied into every
// fragment (RFC 791: the copied flag, bit 7 of the option type), written into dst, padded to a
// multiple of 4 bytes, and their length.
func ipv4OptionsCopied(dst, opts []byte) int {
	n := 0
	for i := 0; i < len(opts); {
		t := opts[i]
		if t == 0 {
			break
		}
		if t == 1 {
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 || i+int(opts[i+1]) > len(opts) {
			break
		}
		l := int(opts[i+1])
		if t&0x80 != 0 {
			n += copy(dst[n:], opts[i:i+l])
		}
		i += l
	}
	for n%4 != 0 {
		dst[n] = 0
		n++
	}
	return n
}

// fragmentIPv4 splits the IPv4 packet pkt into fragments of at most mtu bytes (RFC 791 §3.2),
// writing fragment i to dst[i][off:off+sizes[i]]. The DF bit must already be clear. Fragments
// of an already fragmented packet keep their place (offsets add up, MF stays on the last
// fragment). It returns the number of fragments, or 0 when pkt is not a well-formed IPv4
// packet, mtu is too small, or dst has too few buffers (or too small ones).
func fragmentIPv4(pkt []byte, mtu int, dst [][]byte, off int, sizes []int) int {
	if len(pkt) < 20 || pkt[0]>>4 != 4 || mtu < 68 {
		return 0
	}
	ihl := int(pkt[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(pkt[2:]))
	if ihl < 20 || total > len(pkt) || total <= ihl {
		return 0
	}
	frag := binary.BigEndian.Uint16(pkt[6:])
	if frag&ipv4DF != 0 {
		return 0
	}
	origOff := int(frag&0x1fff) * 8
	origMF := frag&ipv4MF != 0
	payload := pkt[ihl:total]
	n := 0
	for pos := 0; pos < len(payload); n++ {
		if n >= len(dst) || n >= len(sizes) {
			return 0
		}
		out := dst[n]
		if len(out) < off+mtu {
			return 0
		}
		out = out[off:]
		// Header: the whole header in the first fragment, copied options only afterwards.
		hl := ihl
		copy(out[:20], pkt[:20])
		if n == 0 {
			copy(out[20:ihl], pkt[20:ihl])
		} else if ihl > 20 {
			hl = 20 + ipv4OptionsCopied(out[20:ihl], pkt[20:ihl])
		}
		chunk := (mtu - hl) &^ 7
		more := true
		if pos+chunk >= len(payload) {
			chunk = len(payload) - pos
			more = origMF
		}
		if chunk <= 0 {
			return 0
		}
		copy(out[hl:], payload[pos:pos+chunk])
		out[0] = 0x40 | byte(hl/4)
		binary.BigEndian.PutUint16(out[2:], uint16(hl+chunk))
		f := uint16((origOff + pos) / 8)
		if more {
			f |= ipv4MF
		}
		binary.BigEndian.PutUint16(out[6:], f)
		out[10], out[11] = 0, 0
		binary.BigEndian.PutUint16(out[10:], checksumFold(checksumAdd(0, out[:hl])))
		sizes[n] = hl + chunk
		pos += chunk
	}
	return n
}

// icmpErrorAllowed reports whether an ICMP error may be sent about pkt (RFC 1122 §3.2.2,
// RFC 4443 §2.4(e)): not about an ICMP error, not about a non-first fragment, not to an
// unspecified, multicast or broadcast source.
func icmpErrorAllowed(pkt []byte) bool {
	if len(pkt) == 0 {
		return false
	}
	switch pkt[0] >> 4 {
	case 4:
		ihl := int(pkt[0]&0x0f) * 4
		if len(pkt) < 20 || ihl < 20 || len(pkt) < ihl {
			return false
		}
		src, _ := netip.AddrFromSlice(pkt[12:16])
		if src.IsUnspecified() || src.IsMulticast() || src == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			return false
		}
		if binary.BigEndian.Uint16(pkt[6:])&0x1fff != 0 {
			return false
		}
		if pkt[9] == protoICMP {
			if len(pkt) < ihl+1 {
				return false
			}
			switch pkt[ihl] {
			case 3, 4, 5, 11, 12: // errors
				return false
			}
		}
		return true
	case 6:
		if len(pkt) < 40 {
			return false
		}
		src, _ := netip.AddrFromSlice(pkt[8:24])
		if src.IsUnspecified() || src.IsMulticast() {
			return false
		}
		if pkt[6] == protoICMPv6 && (len(pkt) < 41 || pkt[40] < 128) {
			return false
		}
		return true
	}
	return false
}

// icmpFragNeeded writes into dst an IPv4 ICMP "destination unreachable, fragmentation needed
// and DF set" (RFC 792, RFC 1191) about pkt, with next-hop MTU mtu, from src (or, when src is
// not IPv4, from pkt's destination), and returns its length; 0 when none may be sent. dst needs
// room for 576 bytes.
func icmpFragNeeded(dst, pkt []byte, mtu int, src netip.Addr) int {
	if len(pkt) < 20 || pkt[0]>>4 != 4 || !icmpErrorAllowed(pkt) || len(dst) < 576 {
		return 0
	}
	quote := len(pkt)
	if quote > 576-28 {
		quote = 576 - 28
	}
	n := 28 + quote
	ip := dst[:20]
	ip[0], ip[1] = 0x45, 0
	binary.BigEndian.PutUint16(ip[2:], uint16(n))
	binary.BigEndian.PutUint32(ip[4:], 0) // ID 0, no flags: never fragmented (576 bytes)
	ip[8], ip[9] = 64, protoICMP
	ip[10], ip[11] = 0, 0
	if src.Is4() {
		a := src.As4()
		copy(ip[12:16], a[:])
	} else {
		copy(ip[12:16], pkt[16:20])
	}
	copy(ip[16:20], pkt[12:16])
	binary.BigEndian.PutUint16(ip[10:], checksumFold(checksumAdd(0, ip)))
	icmp := dst[20:n]
	icmp[0], icmp[1] = 3, 4
	icmp[2], icmp[3], icmp[4], icmp[5] = 0, 0, 0, 0
	binary.BigEndian.PutUint16(icmp[6:], uint16(mtu))
	copy(icmp[8:], pkt[:quote])
	binary.BigEndian.PutUint16(icmp[2:], checksumFold(checksumAdd(0, icmp)))
	return n
}

// icmpv6TooBig writes into dst an ICMPv6 "packet too big" (RFC 4443 §3.2) about pkt with MTU
// mtu, from src (or, when src is not IPv6, from pkt's destination), quoting as much of pkt as
// fits in 1280 bytes, and returns its length; 0 when none may be sent. dst needs room for 1280
// bytes.
func icmpv6TooBig(dst, pkt []byte, mtu int, src netip.Addr) int {
	if len(pkt) < 40 || pkt[0]>>4 != 6 || !icmpErrorAllowed(pkt) || len(dst) < 1280 {
		return 0
	}
	quote := len(pkt)
	if quote > 1280-48 {
		quote = 1280 - 48
	}
	n := 48 + quote
	ip := dst[:40]
	binary.BigEndian.PutUint32(ip[0:], 6<<28)
	binary.BigEndian.PutUint16(ip[4:], uint16(n-40))
	ip[6], ip[7] = protoICMPv6, 64
	if src.Is6() && !src.Is4In6() {
		a := src.As16()
		copy(ip[8:24], a[:])
	} else {
		copy(ip[8:24], pkt[24:40])
	}
	copy(ip[24:40], pkt[8:24])
	icmp := dst[40:n]
	icmp[0], icmp[1], icmp[2], icmp[3] = 2, 0, 0, 0
	binary.BigEndian.PutUint32(icmp[4:], uint32(mtu))
	copy(icmp[8:], pkt[:quote])
	// Pseudo-header: source, destination, upper-layer length, next header.
	sum := checksumAdd(0, ip[8:40])
	sum += uint64(n-40) + protoICMPv6
	sum = checksumAdd(sum, icmp)
	binary.BigEndian.PutUint16(icmp[2:], checksumFold(sum))
	return n
}
