package route

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Nexthop is one way out of a kernel route.
type Nexthop struct {
	LinkIndex int
	// Gw is the gateway; invalid for a device route. When its family differs from the
	// destination's (IPv4 via IPv6), the kernel gets it as RTA_VIA.
	Gw netip.Addr
}

func (n Nexthop) String() string {
	if n.Gw.IsValid() {
		return fmt.Sprintf("via %s if%d", n.Gw, n.LinkIndex)
	}
	return fmt.Sprintf("if%d", n.LinkIndex)
}

// KernelRoute is a route as this package installs it: one destination, one or more nexthops
// (several: ECMP), in one table with one protocol number and metric.
type KernelRoute struct {
	Dst      netip.Prefix
	Table    int
	Protocol int
	Metric   int
	Nexthops []Nexthop // sorted (see normalize)
}

func (r KernelRoute) String() string {
	hops := make([]string, len(r.Nexthops))
	for i, n := range r.Nexthops {
		hops[i] = n.String()
	}
	return fmt.Sprintf("%s table %d proto %d metric %d [%s]", r.Dst, r.Table, r.Protocol, r.Metric, strings.Join(hops, ", "))
}

// normalize sorts the nexthops and masks the destination, so equal routes compare equal.
func (r KernelRoute) normalize() KernelRoute {
	r.Dst = r.Dst.Masked()
	r.Nexthops = slices.Clone(r.Nexthops)
	for i := range r.Nexthops {
		r.Nexthops[i].Gw = r.Nexthops[i].Gw.WithZone("")
	}
	slices.SortFunc(r.Nexthops, func(a, b Nexthop) int {
		if c := cmp.Compare(a.LinkIndex, b.LinkIndex); c != 0 {
			return c
		}
		return a.Gw.Compare(b.Gw)
	})
	r.Nexthops = slices.Compact(r.Nexthops)
	return r
}

func (r KernelRoute) equal(o KernelRoute) bool {
	return r.Dst == o.Dst && r.Table == o.Table && r.Protocol == o.Protocol && r.Metric == o.Metric &&
		slices.Equal(r.Nexthops, o.Nexthops)
}

// OpKind is what an Op does.
type OpKind uint8

// Op kinds.
const (
	// OpReplace creates the route or replaces the one with the same destination, table and
	// metric (NLM_F_CREATE|NLM_F_REPLACE).
	OpReplace OpKind = iota + 1
	// OpDelete deletes the route with the destination, table, protocol and metric, whatever its
	// nexthops; a route that is already gone is not an error.
	OpDelete
)

func (k OpKind) String() string {
	switch k {
	case OpReplace:
		return "replace"
	case OpDelete:
		return "delete"
	}
	return "op?"
}

// Op is one change of a batch.
type Op struct {
	Kind  OpKind
	Route KernelRoute
}

func (o Op) String() string { return o.Kind.String() + " " + o.Route.String() }

// Kernel is the routing table as the Manager needs it: netlink on the device (Netlink), an
// in-memory table in unit tests (FakeKernel).
type Kernel interface {
	// LinkIndex resolves an interface name.
	LinkIndex(name string) (int, error)
	// Routes lists the routes of one table with one protocol number (both families): the
	// routes this package made, and only those.
	Routes(table, protocol int) ([]KernelRoute, error)
	// Apply carries out a batch in order. It returns nil when every op succeeded, otherwise a
	// slice as long as ops with the error of each failed op (nil for the others).
	Apply(ops []Op) []error
	// SetSysctl writes a sysctl ("net.ipv4.fib_multipath_hash_policy") in the routing
	// table's network namespace.
	SetSysctl(key, value string) error
}
