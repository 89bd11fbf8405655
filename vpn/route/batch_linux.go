package route

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// batchWindow is how many route messages go to the kernel in one sendmsg before their
// acknowledgements are read: large enough to amortize the syscalls, small enough that the
// acknowledgements never overflow the socket's receive buffer.
const batchWindow = 128

// nlBatch pipelines route changes over its own NETLINK_ROUTE socket: a window of requests in
// one write, then their acknowledgements, matched by sequence number. vishvananda/netlink's
// Handle waits for each acknowledgement before sending the next request.
type nlBatch struct {
	mu   sync.Mutex
	sock *nl.NetlinkSocket
	rbuf []byte
	sbuf []byte
}

func newBatch(ns netns.NsHandle) (*nlBatch, error) {
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	tv := unix.Timeval{Sec: 5}
	if err := unix.SetsockoptTimeval(s.GetFd(), unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		s.Close()
		return nil, err
	}
	return &nlBatch{sock: s, rbuf: make([]byte, 64*1024)}, nil
}

func (b *nlBatch) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sock != nil {
		b.sock.Close()
		b.sock = nil
	}
}

// routeMessage builds the RTM_NEWROUTE (replace) or RTM_DELROUTE request for an op, the same
// message vishvananda/netlink's RouteReplace/RouteDel would send for toNetlink(op.Route).
func routeMessage(op Op) (*nl.NetlinkRequest, error) {
	r := op.Route
	dst := r.Dst.Masked()
	var req *nl.NetlinkRequest
	var msg *nl.RtMsg
	switch op.Kind {
	case OpReplace:
		req = nl.NewNetlinkRequest(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE|unix.NLM_F_ACK)
		msg = nl.NewRtMsg()
	case OpDelete:
		req = nl.NewNetlinkRequest(unix.RTM_DELROUTE, unix.NLM_F_ACK)
		msg = nl.NewRtDelMsg() // scope nowhere: match any scope, as `ip route del` does
	default:
		return nil, fmt.Errorf("op kind %d", op.Kind)
	}
	msg.Family = unix.AF_INET
	if dst.Addr().Is6() {
		msg.Family = unix.AF_INET6
	}
	msg.Dst_len = uint8(dst.Bits())
	msg.Protocol = uint8(r.Protocol)
	var attrs []*nl.RtAttr
	attrs = append(attrs, nl.NewRtAttr(unix.RTA_DST, dst.Addr().AsSlice()))
	if r.Table >= 256 {
		msg.Table = unix.RT_TABLE_UNSPEC
		attrs = append(attrs, nl.NewRtAttr(unix.RTA_TABLE, nl.Uint32Attr(uint32(r.Table))))
	} else if r.Table > 0 {
		msg.Table = uint8(r.Table)
	}
	if r.Metric > 0 {
		attrs = append(attrs, nl.NewRtAttr(unix.RTA_PRIORITY, nl.Uint32Attr(uint32(r.Metric))))
	}
	if op.Kind == OpReplace {
		if len(r.Nexthops) == 0 {
			return nil, errors.New("route without nexthops")
		}
		allDevice := true
		for _, nh := range r.Nexthops {
			if nh.Gw.IsValid() {
				allDevice = false
			}
		}
		if allDevice {
			msg.Scope = unix.RT_SCOPE_LINK
		}
		gwAttr := func(gw netip.Addr) *nl.RtAttr {
			if !gw.IsValid() {
				return nil
			}
			if gw.Is4() == dst.Addr().Is4() {
				return nl.NewRtAttr(unix.RTA_GATEWAY, gw.AsSlice())
			}
			fam := uint16(unix.AF_INET)
			if gw.Is6() {
				fam = unix.AF_INET6
			}
			v := binary.NativeEndian.AppendUint16(nil, fam)
			return nl.NewRtAttr(unix.RTA_VIA, append(v, gw.AsSlice()...))
		}
		if len(r.Nexthops) == 1 {
			nh := r.Nexthops[0]
			attrs = append(attrs, nl.NewRtAttr(unix.RTA_OIF, nl.Uint32Attr(uint32(nh.LinkIndex))))
			if a := gwAttr(nh.Gw); a != nil {
				attrs = append(attrs, a)
			}
		} else {
			var buf []byte
			for _, nh := range r.Nexthops {
				rtnh := &nl.RtNexthop{RtNexthop: unix.RtNexthop{Ifindex: int32(nh.LinkIndex)}}
				if a := gwAttr(nh.Gw); a != nil {
					rtnh.Children = []nl.NetlinkRequestData{a}
				}
				buf = append(buf, rtnh.Serialize()...)
			}
			attrs = append(attrs, nl.NewRtAttr(unix.RTA_MULTIPATH, buf))
		}
	}
	req.AddData(msg)
	for _, a := range attrs {
		req.AddData(a)
	}
	return req, nil
}

// apply carries out ops in windows. The per-op errors are as Kernel.Apply's; err reports a
// socket failure, after which the caller replays the batch another way (replace and delete
// are idempotent).
func (b *nlBatch) apply(ops []Op) (errs []error, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sock == nil {
		return nil, errors.New("batch socket closed")
	}
	fd := b.sock.GetFd()
	setErr := func(i int, e error) {
		if errs == nil {
			errs = make([]error, len(ops))
		}
		errs[i] = e
	}
	for start := 0; start < len(ops); start += batchWindow {
		end := min(start+batchWindow, len(ops))
		pending := map[uint32]int{}
		b.sbuf = b.sbuf[:0]
		for i := start; i < end; i++ {
			req, err := routeMessage(ops[i])
			if err != nil {
				setErr(i, err)
				continue
			}
			b.sbuf = append(b.sbuf, req.Serialize()...)
			pending[req.Seq] = i
		}
		if len(pending) == 0 {
			continue
		}
		if err := unix.Sendto(fd, b.sbuf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return nil, fmt.Errorf("netlink send: %w", err)
		}
		for len(pending) > 0 {
			n, _, err := unix.Recvfrom(fd, b.rbuf, 0)
			if err != nil {
				return nil, fmt.Errorf("netlink receive (%d acknowledgements missing): %w", len(pending), err)
			}
			msgs, err := syscall.ParseNetlinkMessage(b.rbuf[:n])
			if err != nil {
				return nil, fmt.Errorf("netlink receive: %w", err)
			}
			for _, m := range msgs {
				i, ok := pending[m.Header.Seq]
				if !ok || m.Header.Type != unix.NLMSG_ERROR || len(m.Data) < 4 {
					continue // not ours (a stale answer)
				}
				delete(pending, m.Header.Seq)
				if code := int32(binary.NativeEndian.Uint32(m.Data[:4])); code != 0 {
					e := syscall.Errno(-code)
					if ops[i].Kind == OpDelete && e == unix.ESRCH {
						continue // already gone
					}
					setErr(i, e)
				}
			}
		}
	}
	return errs, nil
}
