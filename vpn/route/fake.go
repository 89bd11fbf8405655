package route

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
)

// FakeKernel is an in-memory Kernel for unit tests: a routing table keyed like the kernel's
// (table, destination, metric), links by name, sysctls, the batches applied and injectable
// failures. Routes of other protocols can be added (AddForeign) to check they are never touched.
type FakeKernel struct {
	mu      sync.Mutex
	links   map[string]int
	routes  map[fakeKey]KernelRoute
	sysctls map[string]string
	batches [][]Op
	// Fail, when set, is asked about every op; a non-nil error fails it (nothing changes).
	Fail func(Op) error
}

type fakeKey struct {
	table  int
	dst    netip.Prefix
	metric int
}

// NewFakeKernel returns an empty fake with the given links (name → index).
func NewFakeKernel(links map[string]int) *FakeKernel {
	return &FakeKernel{links: maps.Clone(links), routes: map[fakeKey]KernelRoute{}, sysctls: map[string]string{}}
}

// SetLink adds or changes a link; index 0 removes it (and, like the kernel, every route
// through it).
func (f *FakeKernel) SetLink(name string, index int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	old, had := f.links[name]
	if index == 0 {
		delete(f.links, name)
	} else {
		f.links[name] = index
	}
	if had && old != index {
		for k, r := range f.routes {
			for _, n := range r.Nexthops {
				if n.LinkIndex == old {
					delete(f.routes, k)
					break
				}
			}
		}
	}
}

// LinkIndex implements Kernel.
func (f *FakeKernel) LinkIndex(name string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if i, ok := f.links[name]; ok {
		return i, nil
	}
	return 0, fmt.Errorf("link %s: not found", name)
}

// Routes implements Kernel.
func (f *FakeKernel) Routes(table, protocol int) ([]KernelRoute, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []KernelRoute
	for _, r := range f.routes {
		if r.Table == table && r.Protocol == protocol {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b KernelRoute) int { return comparePrefix(a.Dst, b.Dst) })
	return out, nil
}

// AllRoutes returns every route of the fake, ours or not, sorted by destination.
func (f *FakeKernel) AllRoutes() []KernelRoute {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := slices.Collect(maps.Values(f.routes))
	slices.SortFunc(out, func(a, b KernelRoute) int {
		if c := comparePrefix(a.Dst, b.Dst); c != 0 {
			return c
		}
		return a.Protocol - b.Protocol
	})
	return out
}

// AddForeign puts a route into the fake directly (another protocol's route).
func (f *FakeKernel) AddForeign(r KernelRoute) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r = r.normalize()
	f.routes[fakeKey{r.Table, r.Dst, r.Metric}] = r
}

// Apply implements Kernel.
func (f *FakeKernel) Apply(ops []Op) []error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.batches = append(f.batches, slices.Clone(ops))
	var errs []error
	for i, op := range ops {
		err := f.apply(op)
		if err != nil {
			if errs == nil {
				errs = make([]error, len(ops))
			}
			errs[i] = err
		}
	}
	return errs
}

var errNoSuchLink = errors.New("no such device")

func (f *FakeKernel) apply(op Op) error {
	if f.Fail != nil {
		if err := f.Fail(op); err != nil {
			return err
		}
	}
	r := op.Route.normalize()
	k := fakeKey{r.Table, r.Dst, r.Metric}
	switch op.Kind {
	case OpReplace:
		if len(r.Nexthops) == 0 {
			return errors.New("route without nexthops")
		}
		for _, n := range r.Nexthops {
			if !slices.Contains(slices.Collect(maps.Values(f.links)), n.LinkIndex) {
				return fmt.Errorf("nexthop if%d: %w", n.LinkIndex, errNoSuchLink)
			}
		}
		if cur, ok := f.routes[k]; ok && cur.Protocol != r.Protocol {
			// The kernel would replace it; the manager must never ask for that.
			return fmt.Errorf("replace %s: would replace a route of protocol %d", r.Dst, cur.Protocol)
		}
		f.routes[k] = r
	case OpDelete:
		if cur, ok := f.routes[k]; ok {
			if cur.Protocol != r.Protocol {
				return fmt.Errorf("delete %s: no such route with protocol %d", r.Dst, r.Protocol)
			}
			delete(f.routes, k)
		}
	default:
		return fmt.Errorf("op kind %d", op.Kind)
	}
	return nil
}

// Batches returns the batches applied so far.
func (f *FakeKernel) Batches() [][]Op {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.batches)
}

// ResetBatches forgets the batches applied so far.
func (f *FakeKernel) ResetBatches() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.batches = nil
}

// SetSysctl implements Kernel.
func (f *FakeKernel) SetSysctl(key, value string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sysctls[key] = value
	return nil
}

// Sysctl returns a sysctl written through the fake.
func (f *FakeKernel) Sysctl(key string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sysctls[key]
}
