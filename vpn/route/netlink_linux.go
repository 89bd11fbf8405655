package route

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Netlink is the Kernel of a network namespace, through github.com/vishvananda/netlink, with
// batches pipelined over a socket of its own (batch_linux.go).
type Netlink struct {
	h     *netlink.Handle
	ownH  bool
	batch *nlBatch
	// Sysctl writes a sysctl; nil writes /proc/sys in the calling thread's namespace (the
	// device's, or the namespace a test process runs in). A test driving another namespace
	// through its handle sets it (lab's NS.Sysctl).
	Sysctl func(key, value string) error
	// PerOp sends one request per op and waits for its answer (vishvananda/netlink's way)
	// instead of pipelining: the benchmark's baseline, and the fallback when the pipelined
	// socket fails.
	PerOp bool

	fallbacks atomic.Int64
}

// Fallbacks counts batches replayed one request per op after the pipelined socket failed.
func (n *Netlink) Fallbacks() int64 { return n.fallbacks.Load() }

// NewNetlink returns the Kernel of the calling process's namespace (h nil), with pipelined
// batches; or, given a handle, the Kernel behind it with one request per op.
func NewNetlink(h *netlink.Handle) *Netlink {
	n := &Netlink{h: h}
	if h == nil {
		var err error
		if n.h, err = netlink.NewHandle(); err != nil {
			n.h = &netlink.Handle{} // a socket per request instead of one kept open
		} else {
			n.ownH = true
		}
		if b, err := newBatch(netns.None()); err == nil {
			n.batch = b
		}
	}
	return n
}

// NewNetlinkAt returns the Kernel of namespace ns, with pipelined batches. Close it when done.
func NewNetlinkAt(ns netns.NsHandle) (*Netlink, error) {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("route: netlink handle: %w", err)
	}
	b, err := newBatch(ns)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("route: netlink socket: %w", err)
	}
	return &Netlink{h: h, ownH: true, batch: b}, nil
}

// Close releases the sockets the Netlink opened.
func (n *Netlink) Close() {
	if n.batch != nil {
		n.batch.close()
	}
	if n.ownH {
		n.h.Close()
	}
}

// LinkIndex implements Kernel.
func (n *Netlink) LinkIndex(name string) (int, error) {
	l, err := n.h.LinkByName(name)
	if err != nil {
		return 0, err
	}
	return l.Attrs().Index, nil
}

// Routes implements Kernel.
func (n *Netlink) Routes(table, protocol int) ([]KernelRoute, error) {
	rs, err := n.h.RouteListFiltered(netlink.FAMILY_ALL,
		&netlink.Route{Table: table, Protocol: netlink.RouteProtocol(protocol)},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return nil, err
	}
	out := make([]KernelRoute, 0, len(rs))
	for _, r := range rs {
		kr, ok := fromNetlink(r)
		if ok {
			out = append(out, kr)
		}
	}
	return out, nil
}

func fromNetlink(r netlink.Route) (KernelRoute, bool) {
	kr := KernelRoute{Table: r.Table, Protocol: int(r.Protocol), Metric: r.Priority}
	if r.Dst != nil {
		a, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			return kr, false
		}
		ones, _ := r.Dst.Mask.Size()
		if r.Family == unix.AF_INET {
			a = a.Unmap()
		}
		kr.Dst = netip.PrefixFrom(a, ones)
	} else if r.Family == unix.AF_INET6 {
		kr.Dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	} else {
		kr.Dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	gw := func(ip net.IP, via netlink.Destination) netip.Addr {
		if a, ok := netip.AddrFromSlice(ip); ok && len(ip) > 0 {
			return a.Unmap()
		}
		if v, ok := via.(*netlink.Via); ok && v != nil {
			if a, ok := netip.AddrFromSlice(v.Addr); ok {
				return a.Unmap()
			}
		}
		return netip.Addr{}
	}
	if len(r.MultiPath) > 0 {
		for _, nh := range r.MultiPath {
			kr.Nexthops = append(kr.Nexthops, Nexthop{LinkIndex: nh.LinkIndex, Gw: gw(nh.Gw, nh.Via)})
		}
	} else {
		kr.Nexthops = []Nexthop{{LinkIndex: r.LinkIndex, Gw: gw(r.Gw, r.Via)}}
	}
	return kr.normalize(), true
}

func toNetlink(kr KernelRoute, withNexthops bool) *netlink.Route {
	dst := kr.Dst.Masked()
	family := unix.AF_INET
	if dst.Addr().Is6() {
		family = unix.AF_INET6
	}
	r := &netlink.Route{
		Family:   family,
		Dst:      &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())},
		Table:    kr.Table,
		Protocol: netlink.RouteProtocol(kr.Protocol),
		Priority: kr.Metric,
	}
	if !withNexthops {
		r.Scope = netlink.SCOPE_NOWHERE // delete matches any scope (as `ip route del` does)
		return r
	}
	allDevice := true
	for _, nh := range kr.Nexthops {
		if nh.Gw.IsValid() {
			allDevice = false
		}
	}
	if allDevice {
		r.Scope = netlink.SCOPE_LINK
	}
	gwVia := func(gw netip.Addr) (net.IP, netlink.Destination) {
		if !gw.IsValid() {
			return nil, nil
		}
		if gw.Is4() == dst.Addr().Is4() {
			return gw.AsSlice(), nil
		}
		fam := netlink.FAMILY_V4
		if gw.Is6() {
			fam = netlink.FAMILY_V6
		}
		return nil, &netlink.Via{AddrFamily: fam, Addr: gw.AsSlice()}
	}
	if len(kr.Nexthops) == 1 {
		r.LinkIndex = kr.Nexthops[0].LinkIndex
		r.Gw, r.Via = gwVia(kr.Nexthops[0].Gw)
		return r
	}
	for _, nh := range kr.Nexthops {
		info := &netlink.NexthopInfo{LinkIndex: nh.LinkIndex}
		info.Gw, info.Via = gwVia(nh.Gw)
		r.MultiPath = append(r.MultiPath, info)
	}
	return r
}

// Apply implements Kernel: pipelined windows of requests, or one request per op (PerOp, no
// batch socket, or the batch socket failed: replace and delete are idempotent, so the whole
// batch is simply replayed).
func (n *Netlink) Apply(ops []Op) []error {
	if n.batch != nil && !n.PerOp {
		errs, err := n.batch.apply(ops)
		if err == nil {
			return errs
		}
		n.fallbacks.Add(1)
	}
	var errs []error
	for i, op := range ops {
		var err error
		switch op.Kind {
		case OpReplace:
			err = n.h.RouteReplace(toNetlink(op.Route, true))
		case OpDelete:
			err = n.h.RouteDel(toNetlink(op.Route, false))
			if errors.Is(err, unix.ESRCH) {
				err = nil
			}
		default:
			err = fmt.Errorf("op kind %d", op.Kind)
		}
		if err != nil {
			if errs == nil {
				errs = make([]error, len(ops))
			}
			errs[i] = err
		}
	}
	return errs
}

// SetSysctl implements Kernel.
func (n *Netlink) SetSysctl(key, value string) error {
	if n.Sysctl != nil {
		return n.Sysctl(key, value)
	}
	if strings.Contains(key, "..") || strings.ContainsAny(key, "/") {
		return fmt.Errorf("sysctl %q: want a dotted name", key)
	}
	p := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return nil
}
