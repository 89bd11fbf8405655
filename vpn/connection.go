package vpn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"meshroot/vpn/bgp"
	"meshroot/vpn/ike"
	"meshroot/vpn/route"
	"meshroot/vpn/tunnel"
	"meshroot/vpn/vpnlog"
)

// Connection is a running VPN connection: its tunnels (vpn/tunnel), one BGP speaker with a
// session per tunnel (vpn/bgp) or static routes, the kernel routes (vpn/route), fast failover
// and the logs (vpn/vpnlog). Set the exported fields, then Start; Status, Update and Stop may
// be called from any goroutine.
type Connection struct {
	// Log receives the tunnel activity log and the BGP log in the concentrator's schema, with
	// the PSKs scrubbed (nil: discard).
	Log vpnlog.Sink
	// Logger gets diagnostics (nil: discard).
	Logger *slog.Logger
	// OnEvent receives what happens (tunnel states, failovers, BGP sessions), for display. It
	// is called from the connection's goroutines and must not block for long or call Stop or
	// Update.
	OnEvent func(Event)

	// Host and Kernel are the kernel seams (nil: the real ones, in this process's network
	// namespace). Tests run tunnels on tunnel.FakeHost and routes on route.FakeKernel.
	Host   tunnel.Host
	Kernel route.Kernel

	mu      sync.Mutex // guards the fields below; never held while a tunnel closes
	state   connState
	cfg     *compiled
	log     *slog.Logger
	sink    *vpnlog.Redactor
	trs     map[netip.Addr]*tunnel.Transport
	tunnels map[string]*tunnelRun
	started time.Time

	rmu     sync.Mutex // guards routes, speaker and the per-tunnel routing state
	routes  *route.Manager
	speaker *bgp.Speaker
	peers   map[netip.Addr]bgp.State // last BGP state per session
	failed  map[string]bool          // tunnels that left service and have not come back
	seen    map[string]bool          // tunnels that have been in service: their BGP sessions run

	smu      sync.Mutex        // serializes syncBGP
	steering map[string]uint32 // MED sent per tunnel now (nil: the configured MED everywhere)
	applied  *bgp.Config       // the speaker's configuration now
	// current is c.cfg while running, for the tunnels' goroutines (which must not take c.mu:
	// Update and Stop hold it while they wait for tunnels to close).
	current atomic.Pointer[compiled]
}

type connState int

const (
	stateNew connState = iota
	stateRunning
	stateStopped
)

// tunnelRun is one tunnel of the running connection.
type tunnelRun struct {
	cfg        compiledTunnel
	tun        *tunnel.Tunnel
	suppressed bool // bgp PeerDown in force (guarded by Connection.rmu)
}

// Event is something that happened to the connection, for display (meshctl vpn up prints
// them). The logs in the concentrator's schema go to Connection.Log.
type Event struct {
	Time time.Time
	// Tunnel is the tunnel's outside address ("" for the connection).
	Tunnel string
	// Source is "tunnel", "bgp" or "routes".
	Source string
	Text   string
}

// Start validates cfg and brings the connection up: the route manager (removing routes an
// earlier run left behind), the sockets, the BGP speaker (or the static routes) and the
// tunnels, which then establish by themselves. ctx bounds the start only; the connection runs
// until Stop. A bad configuration is an error naming the field, and nothing is started.
func (c *Connection) Start(ctx context.Context, cfg Config) error {
	cc, err := cfg.compile()
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateNew {
		return errors.New("vpn: Start: the connection was already started")
	}
	c.log = c.Logger
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.Host == nil {
		c.Host = tunnel.LinuxHost{}
	}
	next := c.Log
	if next == nil {
		next = vpnlog.Discard
	}
	c.sink = vpnlog.NewRedactor(next)
	c.trs = map[netip.Addr]*tunnel.Transport{}
	c.tunnels = map[string]*tunnelRun{}
	c.peers = map[netip.Addr]bgp.State{}
	c.failed = map[string]bool{}
	c.seen = map[string]bool{}
	k := c.Kernel
	if k == nil {
		k = route.NewNetlink(nil)
	}
	routes, err := route.New(k, route.Config{Logger: c.log.With("part", "routes")})
	if err != nil {
		return fmt.Errorf("vpn: routes: %w", err)
	}
	c.rmu.Lock()
	c.routes = routes
	c.rmu.Unlock()
	c.cfg = cc
	c.current.Store(cc)
	c.state = stateRunning
	c.started = time.Now()
	fail := func(err error) error {
		c.mu.Unlock()
		c.Stop()
		c.mu.Lock()
		return err
	}
	if cc.BGP != nil {
		if err := c.startSpeaker(ctx, cc); err != nil {
			return fail(err)
		}
	} else {
		for _, t := range cc.tunnels {
			if err := c.setStatic(t.name, cc.RemotePrefixes); err != nil {
				return fail(err)
			}
		}
	}
	for _, t := range cc.tunnels {
		if err := c.startTunnel(t); err != nil {
			return fail(err)
		}
	}
	c.event("", "routes", fmt.Sprintf("connection %s started: %d tunnels, %s", cc.ConnectionID, len(cc.tunnels), cc.mode()))
	return nil
}

func (cc *compiled) mode() string {
	if cc.BGP == nil {
		return "static routes"
	}
	return "BGP"
}

func (c *Connection) setStatic(name string, prefixes []netip.Prefix) error {
	var t compiledTunnel
	if cc := c.current.Load(); cc != nil {
		for _, x := range cc.tunnels {
			if x.name == name {
				t = x
			}
		}
	}
	paths := make([]route.Path, 0, len(prefixes))
	for _, p := range prefixes {
		// Via the concentrator's inside address of the prefix's family (an IPv6 prefix on a
		// tunnel without an inside /126 gets a device route).
		nh := t.aws4.Addr()
		if p.Addr().Is6() {
			nh = t.aws6.Addr()
		}
		paths = append(paths, route.Path{Prefix: p, NextHop: nh})
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if err := c.routes.ReplaceSource(route.StaticSource(name), paths); err != nil {
		return fmt.Errorf("vpn: tunnel %s: static routes: %w", name, err)
	}
	return nil
}

// bgpConfig is the speaker's configuration for cc: sessions for the tunnels in seen only (a
// session starts when its tunnel first comes into service, so that its first TCP SYN goes
// through instead of waiting for the kernel's retransmission), with the MEDs of return-path
// steering (meds: per tunnel; nil: the configured MED). The router ID is the first tunnel's
// inside address whether or not its sessions run.
func bgpConfig(cc *compiled, meds map[string]uint32, seen map[string]bool) bgp.Config {
	b := cc.BGP
	bc := bgp.Config{ASN: b.CustomerASN, Prefixes: slices.Clone(cc.SitePrefixes), RouterID: cc.tunnels[0].site4.Addr()}
	for _, t := range cc.tunnels {
		if !seen[t.name] {
			continue
		}
		med := b.MED
		if m, ok := meds[t.name]; ok {
			med = m
		}
		pc := bgp.PeerConfig{
			Tunnel: t.name, Address: t.aws4.Addr(), Local: t.site4, ASN: b.AmazonASN,
			Families: []bgp.Family{bgp.IPv4}, HoldTime: b.HoldTime, Keepalive: b.HoldTime / 3,
			MaxPrefixes: b.MaxPrefixes, ResourceID: t.resourceID, MED: &med,
		}
		bc.Peers = append(bc.Peers, pc)
		if t.insideIPv6Configured {
			pc.Address, pc.Local, pc.Families = t.aws6.Addr(), t.site6, []bgp.Family{bgp.IPv6}
			bc.Peers = append(bc.Peers, pc)
		}
	}
	return bc
}

func (c *Connection) startSpeaker(ctx context.Context, cc *compiled) error {
	c.rmu.Lock()
	routes := c.routes
	c.rmu.Unlock()
	c.smu.Lock()
	defer c.smu.Unlock()
	c.rmu.Lock()
	seen := maps.Clone(c.seen)
	c.rmu.Unlock()
	bc := bgpConfig(cc, c.steering, seen)
	sp, err := bgp.Start(ctx, bc, bgp.Options{
		Log: c.sink, Routes: routes, OnEvent: c.onBGP, Logger: c.log.With("part", "bgp"),
	})
	if err != nil {
		return fmt.Errorf("vpn: bgp: %w", err)
	}
	c.rmu.Lock()
	c.speaker = sp
	c.rmu.Unlock()
	c.applied = &bc
	return nil
}

// transport returns the shared sockets of the local address used for t (c.mu held).
func (c *Connection) transport(t compiledTunnel) (*tunnel.Transport, error) {
	local := c.cfg.LocalAddress
	if !local.IsValid() {
		var err error
		if local, err = c.Host.SourceFor(t.OutsideAddress); err != nil {
			return nil, fmt.Errorf("vpn: tunnel %s: local address: %w", t.name, err)
		}
	}
	local = local.Unmap()
	if tr := c.trs[local]; tr != nil {
		return tr, nil
	}
	tr, err := tunnel.NewTransport(c.Host, tunnel.TransportConfig{Local: local, Logger: c.log.With("part", "sockets")})
	if err != nil {
		return nil, fmt.Errorf("vpn: %w", err)
	}
	c.trs[local] = tr
	return tr, nil
}

// tunnelConfig is the tunnel layer's configuration for t.
func tunnelConfig(cc *compiled, t compiledTunnel) tunnel.Config {
	o := t.Options
	tc := tunnel.Config{
		Name: t.name, ResourceID: t.resourceID, Remote: t.OutsideAddress, Device: t.Device,
		Inside4: t.site4, DPDAction: t.dpdAction,
		IKE: ike.Config{
			LocalID: t.localID, PSK: t.PSK,
			IKEProposals: t.ikeProps, ESPProposals: t.espProps,
			IKELifetime: o.Phase1Lifetime, ChildLifetime: o.Phase2Lifetime,
			RekeyMargin: o.RekeyMarginTime, RekeyFuzz: o.RekeyFuzzPercentage,
			ReplayWindow: uint32(o.ReplayWindowSize),
			DPDInterval:  o.DPDInterval, DPDTimeout: o.DPDTimeout,
			StartAction: t.startAction,
			// Keep initiating while the endpoint is unreachable: the site must come back by
			// itself. The backoff tops out at 30 s.
			RetryMax: 30 * time.Second,
		},
		Failover: tunnel.Failover{Disabled: cc.Failover.Disabled, Window: cc.Failover.Window, ProbeTimeout: cc.Failover.ProbeTimeout, Recheck: cc.Failover.Recheck},
	}
	if o.RekeyFuzzPercentage == 0 {
		tc.IKE.RekeyFuzz = -1
	}
	if t.insideIPv6Configured {
		tc.Inside6 = t.site6
	}
	return tc
}

// startTunnel starts one tunnel and gives its device to the route manager, out of service
// until the tunnel says otherwise (c.mu held). The tunnel's events wait for rmu until then.
func (c *Connection) startTunnel(t compiledTunnel) error {
	tr, err := c.transport(t)
	if err != nil {
		return err
	}
	c.sink.Add(string(t.PSK))
	run := &tunnelRun{cfg: t}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	tun, err := tunnel.New(tunnelConfig(c.cfg, t), tunnel.Options{
		Transport: tr, Host: c.Host, Log: c.sink, Logger: c.log.With("part", "tunnel"),
		OnEvent: func(e tunnel.Event) { c.onTunnel(run, e) },
	})
	if err != nil {
		return fmt.Errorf("vpn: %w", err)
	}
	run.tun = tun
	c.tunnels[t.name] = run
	// Routes go via the concentrator's inside address, not just out of the device: Linux
	// merges IPv6 routes into one ECMP route only when their nexthops have gateways.
	err = c.routes.SetTunnel(route.Tunnel{Name: t.name, Device: t.Device})
	if err == nil {
		err = c.routes.SetTunnelUp(t.name, tun.Usable())
	}
	if err != nil {
		return fmt.Errorf("vpn: tunnel %s: routes: %w", t.name, err)
	}
	return nil
}

// onTunnel acts on a tunnel's events: in service, its routes are in the kernel; out of
// service, they leave it at once (route manager and BGP), before anything else notices.
func (c *Connection) onTunnel(run *tunnelRun, e tunnel.Event) {
	name := run.cfg.name
	switch e.Type {
	case tunnel.EventOutOfService:
		start := time.Now()
		c.rmu.Lock()
		var errs []error
		if c.routes != nil {
			errs = append(errs, c.routes.SetTunnelUp(name, false))
		}
		if c.speaker != nil && !run.suppressed {
			errs = append(errs, c.speaker.PeerDown(name, e.Details))
			run.suppressed = true
		}
		c.failed[name] = true
		c.rmu.Unlock()
		if err := errors.Join(errs...); err != nil {
			c.log.Warn("withdrawing a tunnel's routes failed", "tunnel", name, "err", err)
		}
		c.event(name, "routes", fmt.Sprintf("out of service: routes withdrawn in %v (%s)", time.Since(start).Round(time.Microsecond), e.Details))
		c.syncBGP()
	case tunnel.EventInService:
		start := time.Now()
		c.rmu.Lock()
		var errs []error
		if c.routes != nil {
			errs = append(errs, c.routes.SetTunnelUp(name, true))
		}
		if c.speaker != nil && run.suppressed {
			errs = append(errs, c.speaker.PeerUp(name))
			run.suppressed = false
		}
		delete(c.failed, name)
		c.seen[name] = true
		c.rmu.Unlock()
		if err := errors.Join(errs...); err != nil {
			c.log.Warn("restoring a tunnel's routes failed", "tunnel", name, "err", err)
		}
		c.event(name, "routes", fmt.Sprintf("in service: routes restored in %v (%s)", time.Since(start).Round(time.Microsecond), e.Details))
		c.syncBGP()
	default:
		c.event(name, "tunnel", fmt.Sprintf("%s (IKE %s, CHILD %s)", e.Details, e.Phase1, e.Phase2))
	}
}

// syncBGP brings the speaker's configuration up to date with the tunnels: sessions for every
// tunnel that has been in service, and return-path steering (see BGP.NoSteering): with some
// tunnels out of service and some in service, the latter advertise MED 0; otherwise every
// tunnel the configured MED. It runs after the routes have moved, so it never delays a
// failover.
func (c *Connection) syncBGP() {
	c.smu.Lock()
	defer c.smu.Unlock()
	cc := c.current.Load()
	if cc == nil || cc.BGP == nil {
		return
	}
	c.rmu.Lock()
	sp := c.speaker
	seen := maps.Clone(c.seen)
	var up, down []string
	for _, t := range cc.tunnels {
		if c.failed[t.name] {
			down = append(down, t.name)
		} else if seen[t.name] {
			up = append(up, t.name)
		}
	}
	c.rmu.Unlock()
	if sp == nil {
		return
	}
	var meds map[string]uint32
	if !cc.BGP.NoSteering && len(up) > 0 && len(down) > 0 {
		meds = map[string]uint32{}
		for _, n := range up {
			meds[n] = 0
		}
	}
	bc := bgpConfig(cc, meds, seen)
	if c.applied != nil && reflect.DeepEqual(*c.applied, bc) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := sp.Update(ctx, bc); err != nil {
		c.log.Warn("BGP update failed", "err", err)
		return
	}
	c.applied = &bc
	if reflect.DeepEqual(meds, c.steering) {
		return
	}
	c.steering = meds
	if meds == nil {
		c.event("", "bgp", fmt.Sprintf("return-path steering off: MED %d on every tunnel (%v)", cc.BGP.MED, time.Since(start).Round(time.Millisecond)))
	} else {
		c.event("", "bgp", fmt.Sprintf("return-path steering: MED 0 on %s while %s is out of service (%v)", strings.Join(up, ", "), strings.Join(down, ", "), time.Since(start).Round(time.Millisecond)))
	}
}

// onBGP follows the sessions for Status and the event stream.
func (c *Connection) onBGP(e bgp.Event) {
	switch e.Type {
	case bgp.EventState:
		c.rmu.Lock()
		c.peers[e.Peer] = e.State
		c.rmu.Unlock()
		text := fmt.Sprintf("session with %s: %s -> %s", e.Peer, e.OldState, e.State)
		if e.Reason != "" {
			text += " (" + e.Reason + ")"
		}
		c.event(e.Tunnel, "bgp", text)
	case bgp.EventPaths:
		var learned, withdrawn int
		for _, p := range e.Paths {
			if p.Withdrawn {
				withdrawn++
			} else {
				learned++
			}
		}
		c.event(e.Tunnel, "bgp", fmt.Sprintf("from %s: %d paths accepted, %d withdrawn", e.Peer, learned, withdrawn))
	case bgp.EventEndOfRIB:
		c.event(e.Tunnel, "bgp", fmt.Sprintf("from %s: End-of-RIB (%s)", e.Peer, e.Family))
	}
}

func (c *Connection) event(tunnelName, source, text string) {
	if c.OnEvent != nil {
		c.OnEvent(Event{Time: time.Now(), Tunnel: tunnelName, Source: source, Text: text})
	}
}

// closeTunnels closes tunnels in parallel, each given up to d for its DELETE exchange.
func closeTunnels(runs []*tunnelRun, d time.Duration) error {
	var wg sync.WaitGroup
	errs := make([]error, len(runs))
	for i, r := range runs {
		if r.tun == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), d)
			defer cancel()
			errs[i] = r.tun.Close(ctx)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Stop tears the connection down: the tunnels send DELETE (waiting up to 2 s for the answers),
// the BGP sessions end with Cease, the routes leave the kernel, the TUN devices and sockets
// close. It is safe to call more than once; a stopped Connection does not start again (make a
// new one).
func (c *Connection) Stop() error {
	c.mu.Lock()
	if c.state != stateRunning {
		c.mu.Unlock()
		return nil
	}
	c.state = stateStopped
	c.current.Store(nil)
	runs := make([]*tunnelRun, 0, len(c.tunnels))
	for _, r := range c.tunnels {
		runs = append(runs, r)
	}
	c.tunnels = map[string]*tunnelRun{}
	trs := c.trs
	c.trs = nil
	c.mu.Unlock()

	var errs []error
	c.rmu.Lock()
	sp := c.speaker
	c.speaker = nil
	c.rmu.Unlock()
	if sp != nil {
		errs = append(errs, sp.Close())
	}
	errs = append(errs, closeTunnels(runs, 2*time.Second))
	c.rmu.Lock()
	if c.routes != nil {
		errs = append(errs, c.routes.Close())
		c.routes = nil
	}
	c.rmu.Unlock()
	for _, tr := range trs {
		errs = append(errs, tr.Close())
	}
	c.event("", "routes", "connection stopped")
	return errors.Join(errs...)
}

// Update applies a new configuration to the running connection, changing what changed and
// keeping what did not: a tunnel whose settings are unchanged keeps its SAs, device and BGP
// session; a changed one (PSK, options, inside addresses, device...) is restarted alone;
// tunnels are added and removed by outside address; prefixes and peers change in the running
// BGP speaker (a new local ASN restarts it); static routes are replaced. A configuration that
// does not validate is an error naming the field, and the running one stays in force.
func (c *Connection) Update(cfg Config) error {
	cc, err := cfg.compile()
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateRunning {
		return errors.New("vpn: Update: the connection is not running")
	}
	old := c.cfg
	oldByName := map[string]compiledTunnel{}
	for _, t := range old.tunnels {
		oldByName[t.name] = t
	}
	newByName := map[string]bool{}
	var stop []*tunnelRun
	var start []compiledTunnel
	for _, t := range cc.tunnels {
		newByName[t.name] = true
		ot, ok := oldByName[t.name]
		switch {
		case !ok:
			start = append(start, t)
		case !reflect.DeepEqual(tunnelConfig(old, ot), tunnelConfig(cc, t)) || old.LocalAddress != cc.LocalAddress:
			stop = append(stop, c.tunnels[t.name])
			start = append(start, t)
		}
	}
	var removed []string
	for _, t := range old.tunnels {
		if !newByName[t.name] {
			stop = append(stop, c.tunnels[t.name])
			removed = append(removed, t.name)
		}
	}
	stop = slices.DeleteFunc(stop, func(r *tunnelRun) bool { return r == nil })
	var errs []error
	if len(stop) > 0 {
		errs = append(errs, closeTunnels(stop, 2*time.Second))
		for _, r := range stop {
			delete(c.tunnels, r.cfg.name)
		}
	}
	c.rmu.Lock()
	for _, name := range removed {
		errs = append(errs, c.routes.RemoveTunnel(name))
		delete(c.failed, name)
		delete(c.seen, name)
	}
	c.rmu.Unlock()
	c.cfg = cc
	c.current.Store(cc)

	// BGP or static routes.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c.rmu.Lock()
	sp := c.speaker
	c.rmu.Unlock()
	switch {
	case cc.BGP == nil && sp != nil:
		c.rmu.Lock()
		c.speaker = nil
		c.rmu.Unlock()
		errs = append(errs, sp.Close())
	case cc.BGP != nil && sp != nil:
		c.smu.Lock()
		c.rmu.Lock()
		seen := maps.Clone(c.seen)
		c.rmu.Unlock()
		bc := bgpConfig(cc, c.steering, seen)
		err := sp.Update(ctx, bc)
		if err == nil {
			c.applied = &bc
		}
		c.smu.Unlock()
		if errors.Is(err, bgp.ErrRestartRequired) {
			c.rmu.Lock()
			c.speaker = nil
			c.rmu.Unlock()
			errs = append(errs, sp.Close())
			sp = nil
		} else if err != nil {
			errs = append(errs, fmt.Errorf("vpn: bgp update: %w", err))
		}
	}
	if cc.BGP != nil && sp == nil {
		if err := c.startSpeaker(ctx, cc); err != nil {
			errs = append(errs, err)
		} else {
			// A new speaker: withdraw the tunnels that are out of service, as failover did.
			c.rmu.Lock()
			for _, r := range c.tunnels {
				r.suppressed = false
				if !r.tun.Usable() {
					errs = append(errs, c.speaker.PeerDown(r.cfg.name, "tunnel out of service"))
					r.suppressed = true
				}
			}
			c.rmu.Unlock()
		}
	}
	for _, t := range cc.tunnels {
		var prefixes []netip.Prefix
		if cc.BGP == nil {
			prefixes = cc.RemotePrefixes
		}
		if old.BGP == nil || cc.BGP == nil {
			errs = append(errs, c.setStatic(t.name, prefixes))
		}
	}
	for _, t := range start {
		if cc.BGP == nil {
			errs = append(errs, c.setStatic(t.name, cc.RemotePrefixes))
		}
		if err := c.startTunnel(t); err != nil {
			errs = append(errs, err)
		}
	}
	// Sockets no tunnel uses any more.
	used := map[*tunnel.Transport]bool{}
	for _, t := range cc.tunnels {
		if tr, err := c.transport(t); err == nil {
			used[tr] = true
		}
	}
	for addr, tr := range c.trs {
		if !used[tr] {
			errs = append(errs, tr.Close())
			delete(c.trs, addr)
		}
	}
	c.syncBGP()
	c.event("", "routes", fmt.Sprintf("configuration updated: %d tunnels restarted or added, %d removed", len(start), len(removed)))
	return errors.Join(errs...)
}
