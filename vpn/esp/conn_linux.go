package esp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// UDPOptions tune ListenUDP. The zero value is what the data plane wants.
type UDPOptions struct {
	// DisableGSO turns off UDP segmentation offload on send (one datagram per message).
	DisableGSO bool
	// DisableGRO turns off UDP receive coalescing.
	DisableGRO bool
	// SocketBuffer is SO_RCVBUF and SO_SNDBUF in bytes (forced past the sysctl limits when
	// running as root); 0 means 4 MiB.
	SocketBuffer int
	// RecvBatch is how many messages one recvmmsg fills; 0 means 8 with GRO and 64 without.
	RecvBatch int
}

const (
	udpMaxSegments = 64 // kernel limit on UDP GSO segments per send (UDP_MAX_SEGMENTS)
	writerBatch    = 128
	sockaddrLen    = unix.SizeofSockaddrInet6
)

// ListenUDP opens the NAT-T socket on addr (an IPv4 or IPv6 address and port; the unspecified
// address binds all), with batched I/O, UDP GSO/GRO where the kernel has them, IP_PKTINFO, large
// socket buffers, and outer DF off (IP_PMTUDISC_DONT: an ESP packet too big for the path is
// fragmented by the kernel rather than dropped).
func ListenUDP(addr netip.AddrPort, opts UDPOptions) (PacketConn, error) {
	network := "udp4"
	v6 := addr.Addr().Is6() && !addr.Addr().Is4In6()
	if v6 {
		network = "udp6"
	}
	uc, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil, fmt.Errorf("esp: listen %s: %w", addr, err)
	}
	c := &udpConn{uc: uc, v6: v6}
	c.local = uc.LocalAddr().(*net.UDPAddr).AddrPort()
	if c.rc, err = uc.SyscallConn(); err != nil {
		uc.Close()
		return nil, fmt.Errorf("esp: listen %s: %w", addr, err)
	}
	bufSize := opts.SocketBuffer
	if bufSize == 0 {
		bufSize = 4 << 20
	}
	var serr error
	cerr := c.rc.Control(func(fd uintptr) {
		s := int(fd)
		if unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, bufSize) != nil {
			_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUF, bufSize)
		}
		if unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, bufSize) != nil {
			_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_SNDBUF, bufSize)
		}
		if v6 {
			serr = unix.SetsockoptInt(s, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
			if serr == nil {
				serr = unix.SetsockoptInt(s, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DONT)
			}
		} else {
			serr = unix.SetsockoptInt(s, unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
			if serr == nil {
				serr = unix.SetsockoptInt(s, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT)
			}
		}
		if !opts.DisableGSO {
			// Probe: getsockopt(UDP_SEGMENT) succeeds on kernels with UDP GSO (4.18+).
			if _, err := unix.GetsockoptInt(s, unix.IPPROTO_UDP, unix.UDP_SEGMENT); err == nil {
				c.gso.Store(true)
			}
		}
		if !opts.DisableGRO {
			c.gro = unix.SetsockoptInt(s, unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
		}
	})
	if cerr == nil {
		cerr = serr
	}
	if cerr != nil {
		uc.Close()
		return nil, fmt.Errorf("esp: listen %s: socket options: %w", addr, cerr)
	}
	n := opts.RecvBatch
	if n == 0 {
		n = 64
		if c.gro {
			n = 8
		}
	}
	c.ctrlLen = unix.CmsgSpace(4) + unix.CmsgSpace(unix.SizeofInet6Pktinfo) + unix.CmsgSpace(unix.SizeofInet4Pktinfo)
	c.rhdrs = make([]unix.Mmsghdr, n)
	c.riovs = make([]unix.Iovec, n)
	c.rnames = make([][sockaddrLen]byte, n)
	c.rctrl = make([]byte, n*c.ctrlLen)
	c.readFn = c.doRead
	return c, nil
}

type udpConn struct {
	uc    *net.UDPConn
	rc    syscall.RawConn
	local netip.AddrPort
	v6    bool
	gso   atomic.Bool
	gro   bool

	// Reader state: one reader goroutine at a time (ReadBatch's contract).
	ctrlLen int
	rhdrs   []unix.Mmsghdr
	riovs   []unix.Iovec
	rnames  [][sockaddrLen]byte
	rctrl   []byte
	rwant   int
	rgot    int
	rerr    error
	readFn  func(fd uintptr) bool
}

func (c *udpConn) LocalAddr() netip.AddrPort { return c.local }
func (c *udpConn) GRO() bool                 { return c.gro }
func (c *udpConn) Close() error              { return c.uc.Close() }

func (c *udpConn) ReadBatch(msgs []RecvMsg) (int, error) {
	n := len(msgs)
	if n > len(c.rhdrs) {
		n = len(c.rhdrs)
	}
	for i := 0; i < n; i++ {
		b := msgs[i].Buf
		if len(b) == 0 {
			return 0, errors.New("esp: ReadBatch with an empty buffer")
		}
		c.riovs[i].Base = &b[0]
		c.riovs[i].SetLen(len(b))
		h := &c.rhdrs[i].Hdr
		h.Name = &c.rnames[i][0]
		h.Namelen = sockaddrLen
		h.Iov = &c.riovs[i]
		h.SetIovlen(1)
		h.Control = &c.rctrl[i*c.ctrlLen]
		h.SetControllen(c.ctrlLen)
		h.Flags = 0
		c.rhdrs[i].Len = 0
	}
	c.rwant, c.rgot, c.rerr = n, 0, nil
	if err := c.rc.Read(c.readFn); err != nil {
		return 0, err
	}
	if c.rerr != nil {
		return 0, c.rerr
	}
	for i := 0; i < c.rgot; i++ {
		m := &msgs[i]
		h := &c.rhdrs[i]
		m.N = int(h.Len)
		m.Truncated = h.Hdr.Flags&unix.MSG_TRUNC != 0
		m.From = parseSockaddr(c.rnames[i][:h.Hdr.Namelen])
		m.Seg, m.To = parseControl(c.rctrl[i*c.ctrlLen : i*c.ctrlLen+int(h.Hdr.Controllen)])
	}
	// The buffers stay referenced by the iovecs until the next call; that is fine, they are
	// the caller's and live longer than the conn's use of them.
	return c.rgot, nil
}

func (c *udpConn) doRead(fd uintptr) bool {
	for {
		r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&c.rhdrs[0])), uintptr(c.rwant), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			c.rgot = int(r)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		c.rerr = fmt.Errorf("esp: recvmmsg: %w", e)
		return true
	}
}

// parseSockaddr reads a struct sockaddr_in or sockaddr_in6 without allocating.
func parseSockaddr(b []byte) netip.AddrPort {
	if len(b) < 2 {
		return netip.AddrPort{}
	}
	switch binary.NativeEndian.Uint16(b) {
	case unix.AF_INET:
		if len(b) >= 8 {
			return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), binary.BigEndian.Uint16(b[2:]))
		}
	case unix.AF_INET6:
		if len(b) >= 24 {
			a := netip.AddrFrom16([16]byte(b[8:24])).Unmap()
			return netip.AddrPortFrom(a, binary.BigEndian.Uint16(b[2:]))
		}
	}
	return netip.AddrPort{}
}

// parseControl finds the GRO segment size and the packet's destination address in the
// control messages, without allocating.
func parseControl(b []byte) (seg int, to netip.Addr) {
	for len(b) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(b) {
			return seg, to
		}
		data := b[unix.CmsgLen(0):l]
		switch {
		case h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_GRO && len(data) >= 4:
			seg = int(binary.NativeEndian.Uint32(data)) // an int (udp_cmsg_recv)
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			to = netip.AddrFrom4([4]byte(data[8:12]))
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= 16:
			to = netip.AddrFrom16([16]byte(data[:16]))
		}
		next := unix.CmsgSpace(l - unix.CmsgLen(0))
		if next > len(b) {
			return seg, to
		}
		b = b[next:]
	}
	return seg, to
}

func (c *udpConn) NewWriter() BatchWriter {
	w := &udpWriter{c: c}
	w.hdrs = make([]unix.Mmsghdr, writerBatch)
	w.iovs = make([]unix.Iovec, writerBatch)
	w.first = make([]int, writerBatch)
	w.count = make([]int, writerBatch)
	w.ctrl = make([]byte, writerBatch*unix.CmsgSpace(2))
	w.writeFn = w.doWrite
	return w
}

// udpWriter is one goroutine's sendmmsg state.
type udpWriter struct {
	c       *udpConn
	hdrs    []unix.Mmsghdr
	iovs    []unix.Iovec
	first   []int // index into pkts of the first datagram of message i
	count   []int // datagrams in message i
	ctrl    []byte
	name    [sockaddrLen]byte
	nameLen uint32
	n, sent int
	errno   syscall.Errno
	gsoMax  int // 0: no limit; > 0: largest datagram sent with GSO; -1: no GSO
	writeFn func(fd uintptr) bool
}

func (w *udpWriter) setDst(dst netip.AddrPort) {
	clear(w.name[:])
	if w.c.v6 {
		binary.NativeEndian.PutUint16(w.name[0:], unix.AF_INET6)
		binary.BigEndian.PutUint16(w.name[2:], dst.Port())
		a := dst.Addr().As16()
		copy(w.name[8:24], a[:])
		w.nameLen = unix.SizeofSockaddrInet6
		return
	}
	binary.NativeEndian.PutUint16(w.name[0:], unix.AF_INET)
	binary.BigEndian.PutUint16(w.name[2:], dst.Port())
	a := dst.Addr().Unmap().As4()
	copy(w.name[4:8], a[:])
	w.nameLen = unix.SizeofSockaddrInet4
}

// maxGSOPayload bounds one coalesced send (the UDP length field, minus headers).
const maxGSOPayload = 65507

func (w *udpWriter) WriteBatch(dst netip.AddrPort, pkts [][]byte) error {
	if !dst.Addr().Is4() && !dst.Addr().Is4In6() && !w.c.v6 {
		return fmt.Errorf("esp: send to %s on an IPv4 socket", dst)
	}
	if dst.Addr().Is4() && w.c.v6 {
		return fmt.Errorf("esp: send to %s on an IPv6 socket", dst)
	}
	w.setDst(dst)
	var firstErr error
	for i := 0; i < len(pkts); {
		gso := w.c.gso.Load()
		nmsg, used := w.build(pkts[i:], i, gso)
		w.n, w.sent, w.errno = nmsg, 0, 0
		for w.sent < w.n {
			if err := w.c.rc.Write(w.writeFn); err != nil {
				return err // closed
			}
			if w.errno == 0 {
				break
			}
			// Message w.sent failed.
			if w.count[w.sent] > 1 {
				switch w.errno {
				case unix.EIO:
					// No checksum offload on the path: no GSO on this socket at all.
					w.c.gso.Store(false)
				case unix.EMSGSIZE, unix.EINVAL:
					// A segment above the route MTU: GSO refuses what plain sends
					// fragment. Send datagrams of this size one by one from now on.
					w.gsoMax = len(pkts[w.first[w.sent]]) - 1
				default:
					w.gsoMax = -1 // unknown: stop coalescing on this writer
				}
				used = w.first[w.sent] - i
				break
			}
			if firstErr == nil {
				firstErr = fmt.Errorf("esp: sendmmsg to %s: %w", dst, w.errno)
			}
			w.sent++
			w.errno = 0
		}
		i += used
	}
	return firstErr
}

// build fills hdrs from pkts (whose first element is pkts index base) and returns how many
// messages it made and how many datagrams they hold.
func (w *udpWriter) build(pkts [][]byte, base int, gso bool) (nmsg, used int) {
	cs := unix.CmsgSpace(2)
	for used < len(pkts) && nmsg < len(w.hdrs) && used < len(w.iovs) {
		m := nmsg
		w.first[m] = base + used
		seg := len(pkts[used])
		cnt, total := 0, 0
		for used < len(pkts) && used < len(w.iovs) {
			l := len(pkts[used])
			if cnt > 0 && (!gso || l > seg || cnt >= udpMaxSegments || total+l > maxGSOPayload || (w.gsoMax != 0 && seg > w.gsoMax)) {
				break
			}
			if l == 0 {
				w.iovs[used].Base = nil
			} else {
				w.iovs[used].Base = &pkts[used][0]
			}
			w.iovs[used].SetLen(l)
			cnt++
			total += l
			used++
			if l < seg {
				break // a short datagram ends a GSO run
			}
		}
		h := &w.hdrs[m].Hdr
		h.Name = &w.name[0]
		h.Namelen = w.nameLen
		h.Iov = &w.iovs[used-cnt]
		h.SetIovlen(cnt)
		h.Flags = 0
		if cnt > 1 {
			ctl := w.ctrl[m*cs : (m+1)*cs]
			ch := (*unix.Cmsghdr)(unsafe.Pointer(&ctl[0]))
			ch.Level = unix.IPPROTO_UDP
			ch.Type = unix.UDP_SEGMENT
			ch.SetLen(unix.CmsgLen(2))
			binary.NativeEndian.PutUint16(ctl[unix.CmsgLen(0):], uint16(seg))
			h.Control = &ctl[0]
			h.SetControllen(cs)
		} else {
			h.Control = nil
			h.SetControllen(0)
		}
		w.count[m] = cnt
		nmsg++
	}
	return nmsg, used
}

func (w *udpWriter) doWrite(fd uintptr) bool {
	for w.sent < w.n {
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&w.hdrs[w.sent])), uintptr(w.n-w.sent), 0, 0, 0)
		switch e {
		case 0:
			w.sent += int(r)
			continue
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		w.errno = e
		return true
	}
	return true
}
