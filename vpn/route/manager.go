package route

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Defaults of Config.
const (
	DefaultTable    = 254 // main
	DefaultProtocol = 77  // "meshroot"; FRR uses 186-197, bird 12, zebra 11
	DefaultMetric   = 20
)

// Config configures a Manager.
type Config struct {
	// Table, Protocol and Metric of every route the manager installs (0: the defaults). The
	// manager lists, replaces and deletes only routes with this table and protocol number.
	Table, Protocol, Metric int
	// NoHashPolicy leaves net.ipv{4,6}.fib_multipath_hash_policy alone; by default New sets
	// both to 1 (layer-4 hashing, so a flow stays on one tunnel of an ECMP route).
	NoHashPolicy bool
	// Logger gets failed kernel operations and batch summaries (nil: discard).
	Logger *slog.Logger
}

// Tunnel is a tunnel as routes see it: the kernel device its traffic leaves through.
type Tunnel struct {
	Name   string
	Device string
	// OnLink installs routes through the device without a gateway (a TUN is point-to-point:
	// the next hop address is never resolved). Use it for the tunnel layer's TUN devices.
	OnLink bool
}

// Stats counts the manager's kernel work.
type Stats struct {
	Batches   int // Apply calls
	Replaced  int // successful replace ops
	Deleted   int // successful delete ops
	Failed    int // failed ops (retried with the next batch)
	LastBatch time.Duration
}

type tunnelState struct {
	cfg  Tunnel
	link int // 0: device not found
	up   bool
	err  error
}

// Manager turns candidate paths into kernel routes: per prefix it selects the active set
// (Select), builds one route whose nexthops are the active tunnels (ECMP when several), and
// reconciles the kernel in batches against what it installed. Methods are safe for concurrent
// use; each call that changes something returns after its batch has been applied.
type Manager struct {
	mu  sync.Mutex
	k   Kernel
	cfg Config
	log *slog.Logger

	tunnels   map[string]*tunnelState
	paths     map[netip.Prefix]map[Source]Path
	bySource  map[Source]map[netip.Prefix]struct{}
	installed map[netip.Prefix]KernelRoute
	selection map[netip.Prefix]Selection
	dirty     map[netip.Prefix]struct{} // failed ops, retried with the next batch
	stats     Stats
}

// Selection is the outcome of Select for one prefix, as tunnel names.
type Selection struct {
	Active, Standby []string
}

// New returns a manager on k. It sets the multipath hash policy (unless NoHashPolicy) and
// reconciles once: routes with its table and protocol left by an earlier run are deleted.
func New(k Kernel, cfg Config) (*Manager, error) {
	if cfg.Table == 0 {
		cfg.Table = DefaultTable
	}
	if cfg.Protocol == 0 {
		cfg.Protocol = DefaultProtocol
	}
	if cfg.Metric == 0 {
		cfg.Metric = DefaultMetric
	}
	if cfg.Protocol < 0 || cfg.Protocol > 255 {
		return nil, fmt.Errorf("route: config: Protocol %d: want 1-255", cfg.Protocol)
	}
	if cfg.Protocol <= 4 {
		return nil, fmt.Errorf("route: config: Protocol %d: reserved for the kernel (unspec, redirect, kernel, boot, static)", cfg.Protocol)
	}
	if cfg.Table < 0 || cfg.Metric < 0 {
		return nil, fmt.Errorf("route: config: Table %d, Metric %d: want positive", cfg.Table, cfg.Metric)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m := &Manager{
		k: k, cfg: cfg, log: log,
		tunnels:   map[string]*tunnelState{},
		paths:     map[netip.Prefix]map[Source]Path{},
		bySource:  map[Source]map[netip.Prefix]struct{}{},
		installed: map[netip.Prefix]KernelRoute{},
		selection: map[netip.Prefix]Selection{},
		dirty:     map[netip.Prefix]struct{}{},
	}
	if !cfg.NoHashPolicy {
		for _, key := range []string{"net.ipv4.fib_multipath_hash_policy", "net.ipv6.fib_multipath_hash_policy"} {
			if err := k.SetSysctl(key, "1"); err != nil {
				return nil, fmt.Errorf("route: layer-4 multipath hashing: %w", err)
			}
		}
	}
	if err := m.Sync(); err != nil {
		return nil, err
	}
	return m, nil
}

// SetTunnel adds a tunnel or changes its device (call it again when the device was recreated).
// Routes through the tunnel are recomputed. A new tunnel starts up.
func (m *Manager) SetTunnel(t Tunnel) error {
	if t.Name == "" || t.Device == "" {
		return fmt.Errorf("route: tunnel %q: Name and Device are required", t.Name)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.tunnels[t.Name]
	if !ok {
		st = &tunnelState{up: true}
		m.tunnels[t.Name] = st
	}
	st.cfg = t
	st.link, st.err = m.k.LinkIndex(t.Device)
	if st.err != nil {
		st.link = 0
	}
	m.applyLocked(m.prefixesOfTunnel(t.Name))
	if st.err != nil {
		return fmt.Errorf("route: tunnel %s: device %s: %w", t.Name, t.Device, st.err)
	}
	return nil
}

// RemoveTunnel forgets a tunnel and every path through it.
func (m *Manager) RemoveTunnel(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	affected := m.prefixesOfTunnel(name)
	for src := range m.bySource {
		if src.Tunnel == name {
			m.dropSource(src)
		}
	}
	delete(m.tunnels, name)
	return m.applyLocked(affected)
}

// SetTunnelUp marks a tunnel usable or not. Down, its paths stay known but no route uses it:
// every prefix it carried moves to its standby (or disappears) in one batch. The tunnel layer
// calls it the moment the data plane dies, long before BGP's hold time.
func (m *Manager) SetTunnelUp(name string, up bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.tunnels[name]
	if !ok {
		return fmt.Errorf("route: tunnel %q: not configured", name)
	}
	if st.up == up {
		return nil
	}
	st.up = up
	return m.applyLocked(m.prefixesOfTunnel(name))
}

// Update changes what a source offers: paths added or replaced, prefixes withdrawn. Paths for
// a tunnel that is not configured are kept and used once it is.
func (m *Manager) Update(src Source, paths []Path, withdrawn []netip.Prefix) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	affected := map[netip.Prefix]struct{}{}
	for _, pf := range withdrawn {
		pf = pf.Masked()
		if m.removePath(src, pf) {
			affected[pf] = struct{}{}
		}
	}
	for _, p := range paths {
		if !p.Prefix.IsValid() {
			continue
		}
		p.Prefix = p.Prefix.Masked()
		m.addPath(src, p)
		affected[p.Prefix] = struct{}{}
	}
	return m.applyLocked(affected)
}

// ReplaceSource sets the complete set of paths of a source: what is not in paths is withdrawn.
// Static routing: ReplaceSource(StaticSource(tunnel), paths) for each tunnel.
func (m *Manager) ReplaceSource(src Source, paths []Path) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	affected := map[netip.Prefix]struct{}{}
	keep := map[netip.Prefix]struct{}{}
	for _, p := range paths {
		if p.Prefix.IsValid() {
			keep[p.Prefix.Masked()] = struct{}{}
		}
	}
	for pf := range m.bySource[src] {
		if _, ok := keep[pf]; !ok && m.removePath(src, pf) {
			affected[pf] = struct{}{}
		}
	}
	for _, p := range paths {
		if !p.Prefix.IsValid() {
			continue
		}
		p.Prefix = p.Prefix.Masked()
		m.addPath(src, p)
		affected[p.Prefix] = struct{}{}
	}
	return m.applyLocked(affected)
}

// ClearSource withdraws everything a source offered (a BGP session went down).
func (m *Manager) ClearSource(src Source) error { return m.ReplaceSource(src, nil) }

// Sync reconciles the whole table: it lists the kernel's routes with our table and protocol,
// and replaces or deletes whatever differs from the selection. New calls it; call it again
// after the kernel may have changed behind the manager's back (a device deleted and created).
func (m *Manager) Sync() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	routes, err := m.k.Routes(m.cfg.Table, m.cfg.Protocol)
	if err != nil {
		return fmt.Errorf("route: sync: list routes: %w", err)
	}
	m.installed = make(map[netip.Prefix]KernelRoute, len(routes))
	affected := make(map[netip.Prefix]struct{}, len(routes)+len(m.paths))
	for _, r := range routes {
		r = r.normalize()
		if _, dup := m.installed[r.Dst]; dup {
			m.dirty[r.Dst] = struct{}{} // same prefix at another metric: replace, then delete
		}
		m.installed[r.Dst] = r
		affected[r.Dst] = struct{}{}
	}
	for pf := range m.paths {
		affected[pf] = struct{}{}
	}
	for _, st := range m.tunnels {
		if st.link == 0 {
			st.link, st.err = m.k.LinkIndex(st.cfg.Device)
			if st.err != nil {
				st.link = 0
			}
		}
	}
	return m.applyLocked(affected)
}

// Close deletes every route the manager installed.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	affected := make(map[netip.Prefix]struct{}, len(m.installed))
	for pf := range m.installed {
		affected[pf] = struct{}{}
	}
	m.paths = map[netip.Prefix]map[Source]Path{}
	m.bySource = map[Source]map[netip.Prefix]struct{}{}
	return m.applyLocked(affected)
}

// Installed returns the routes the manager has in the kernel, sorted by destination.
func (m *Manager) Installed() []KernelRoute {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := slices.Collect(maps.Values(m.installed))
	slices.SortFunc(out, func(a, b KernelRoute) int { return comparePrefix(a.Dst, b.Dst) })
	return out
}

// comparePrefix orders prefixes by address (IPv4 first), then length.
func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// Selection returns the tunnels a prefix uses now (Active) and would fail over to (Standby).
func (m *Manager) Selection(pf netip.Prefix) Selection {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.selection[pf.Masked()]
}

// Stats returns counters of the kernel work done so far.
func (m *Manager) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stats
}

func (m *Manager) addPath(src Source, p Path) {
	ps := m.paths[p.Prefix]
	if ps == nil {
		ps = map[Source]Path{}
		m.paths[p.Prefix] = ps
	}
	ps[src] = p
	bs := m.bySource[src]
	if bs == nil {
		bs = map[netip.Prefix]struct{}{}
		m.bySource[src] = bs
	}
	bs[p.Prefix] = struct{}{}
}

func (m *Manager) removePath(src Source, pf netip.Prefix) bool {
	ps, ok := m.paths[pf]
	if !ok {
		return false
	}
	if _, ok := ps[src]; !ok {
		return false
	}
	delete(ps, src)
	if len(ps) == 0 {
		delete(m.paths, pf)
	}
	if bs := m.bySource[src]; bs != nil {
		delete(bs, pf)
		if len(bs) == 0 {
			delete(m.bySource, src)
		}
	}
	return true
}

func (m *Manager) dropSource(src Source) {
	for pf := range m.bySource[src] {
		m.removePath(src, pf)
	}
}

// prefixesOfTunnel is every prefix a source on the tunnel offers, plus every installed prefix
// using the tunnel's device.
func (m *Manager) prefixesOfTunnel(name string) map[netip.Prefix]struct{} {
	out := map[netip.Prefix]struct{}{}
	for src, pfs := range m.bySource {
		if src.Tunnel == name {
			for pf := range pfs {
				out[pf] = struct{}{}
			}
		}
	}
	return out
}

func (m *Manager) usable(tunnel string) bool {
	st, ok := m.tunnels[tunnel]
	return ok && st.up && st.link > 0
}

// desired computes the route for a prefix (ok false: no route).
func (m *Manager) desired(pf netip.Prefix) (KernelRoute, bool) {
	ps := m.paths[pf]
	cands := make([]Candidate, 0, len(ps))
	for src, p := range ps {
		cands = append(cands, Candidate{Source: src, Path: p})
	}
	active, standby := Select(cands, m.usable)
	sel := Selection{}
	for _, c := range active {
		sel.Active = append(sel.Active, c.Source.Tunnel)
	}
	for _, c := range standby {
		sel.Standby = append(sel.Standby, c.Source.Tunnel)
	}
	if len(sel.Active) == 0 && len(sel.Standby) == 0 {
		delete(m.selection, pf)
	} else {
		m.selection[pf] = sel
	}
	if len(active) == 0 {
		return KernelRoute{}, false
	}
	r := KernelRoute{Dst: pf, Table: m.cfg.Table, Protocol: m.cfg.Protocol, Metric: m.cfg.Metric}
	for _, c := range active {
		r.Nexthops = append(r.Nexthops, m.nexthop(m.tunnels[c.Source.Tunnel], c.Path))
	}
	return r.normalize(), true
}

func (m *Manager) nexthop(t *tunnelState, p Path) Nexthop {
	nh := Nexthop{LinkIndex: t.link}
	if t.cfg.OnLink || !p.NextHop.IsValid() || p.NextHop.IsUnspecified() {
		return nh
	}
	gw := p.NextHop.Unmap() // ::ffff:169.254.10.1 (MP-BGP IPv6 over an IPv4 session) is IPv4
	if p.Prefix.Addr().Is6() && gw.Is4() {
		// Linux has no IPv6 route via an IPv4 gateway ("IPv6 does not support RTA_VIA"): a
		// device route, which is what a point-to-point tunnel needs anyway.
		return nh
	}
	nh.Gw = gw // IPv4 via IPv6 (RFC 8950 next hop) goes in as RTA_VIA
	return nh
}

// applyLocked recomputes the given prefixes (and retries the dirty ones) and applies the
// difference to the kernel as one batch.
func (m *Manager) applyLocked(affected map[netip.Prefix]struct{}) error {
	for pf := range m.dirty {
		affected[pf] = struct{}{}
	}
	if len(affected) == 0 {
		return nil
	}
	ops := make([]Op, 0, len(affected))
	for pf := range affected {
		want, ok := m.desired(pf)
		have, installed := m.installed[pf]
		_, dirty := m.dirty[pf]
		switch {
		case ok && (!installed || !have.equal(want) || dirty):
			ops = append(ops, Op{Kind: OpReplace, Route: want})
			if installed && have.Metric != want.Metric {
				ops = append(ops, Op{Kind: OpDelete, Route: have})
			}
		case !ok && (installed || dirty):
			del := have
			if !installed {
				del = KernelRoute{Dst: pf, Table: m.cfg.Table, Protocol: m.cfg.Protocol, Metric: m.cfg.Metric}
			}
			ops = append(ops, Op{Kind: OpDelete, Route: del})
		}
	}
	if len(ops) == 0 {
		return nil
	}
	// Deterministic order (tests, logs): by destination, replace before delete.
	slices.SortFunc(ops, func(a, b Op) int {
		if c := comparePrefix(a.Route.Dst, b.Route.Dst); c != 0 {
			return c
		}
		return int(a.Kind) - int(b.Kind)
	})
	start := time.Now()
	errs := m.k.Apply(ops)
	m.stats.LastBatch = time.Since(start)
	m.stats.Batches++
	var failed []error
	for i, op := range ops {
		var err error
		if errs != nil {
			err = errs[i]
		}
		pf := op.Route.Dst
		if err != nil {
			m.stats.Failed++
			m.dirty[pf] = struct{}{}
			failed = append(failed, fmt.Errorf("%s: %w", op, err))
			continue
		}
		delete(m.dirty, pf)
		switch op.Kind {
		case OpReplace:
			m.stats.Replaced++
			m.installed[pf] = op.Route
		case OpDelete:
			m.stats.Deleted++
			if cur, ok := m.installed[pf]; ok && cur.Metric == op.Route.Metric {
				delete(m.installed, pf)
			}
		}
	}
	m.log.Debug("routes applied", "ops", len(ops), "failed", len(failed), "took", m.stats.LastBatch)
	if len(failed) > 0 {
		m.log.Warn("route changes failed; retried with the next batch", "failed", len(failed), "first", failed[0].Error())
		if len(failed) > 3 {
			failed = append(failed[:3], fmt.Errorf("and %d more", len(failed)-3))
		}
		return fmt.Errorf("route: %d of %d kernel changes failed: %w", m.countFailed(errs), len(ops), errors.Join(failed...))
	}
	return nil
}

func (m *Manager) countFailed(errs []error) int {
	n := 0
	for _, e := range errs {
		if e != nil {
			n++
		}
	}
	return n
}
