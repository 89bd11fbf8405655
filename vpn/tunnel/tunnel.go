package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"meshroot/vpn/esp"
	"meshroot/vpn/ike"
	"meshroot/vpn/vpnlog"
)

// Defaults.
const (
	DefaultFailoverWindow  = 250 * time.Millisecond
	DefaultProbeTimeout    = 400 * time.Millisecond
	DefaultRecheckInterval = time.Second
	// DefaultMTU is the TUN device's MTU. The tunnel's own, smaller limit for inner packets is
	// enforced by vpn/esp (fragmentation before encryption, ICMP), so that the kernel hands
	// full-size packets from the LAN to the data plane instead of refusing them.
	DefaultMTU = 1500
	// slowRecheck is how often a tunnel whose peer stays dead after the DPD timeout (action
	// none) is checked again.
	slowRecheck = 5 * time.Second
)

// Config is one tunnel: an IKE connection to one concentrator endpoint, its CHILD SA carried
// by the ESP data plane, and a TUN device with our inside addresses.
type Config struct {
	// Name identifies the tunnel in events, status, logs and (in vpn) routes and BGP; default:
	// the remote address.
	Name string
	// ResourceID is the stream of the tunnel activity log (vpnlog.ResourceID(connection,
	// remote)); default: Name.
	ResourceID string
	// Remote is the concentrator endpoint's outside address (the family of the Transport).
	Remote netip.Addr
	// Device is the TUN device's name (at most 15 bytes).
	Device string
	// Inside4 and Inside6 are our inside addresses with their prefix lengths
	// ("169.254.10.2/30", "fd00:a9fe:10::2/126"); at least one. They go on the TUN device and
	// are the source of the ICMP errors the data plane sends into it.
	Inside4, Inside6 netip.Prefix
	// IKE is the IKE configuration. The tunnel sets Name, LocalAddr and LocalPort/NATTPort (the
	// transport's), RemoteAddr (Remote), ForceEncap (ESP only travels in UDP here) and
	// DPDAction (see DPDAction below). StartAction "" means start: we initiate; add: we wait
	// for the peer (AWS startup action "start").
	IKE ike.Config
	// DPDAction is what this side does when the peer stops answering for IKE.DPDTimeout
	// (default restart: delete the SAs and initiate again; clear: delete them and wait for the
	// peer; none: keep them). The tunnel applies it itself, so that fast failover can take a
	// tunnel out of service after a failed probe without tearing its SAs down.
	DPDAction ike.DPDAction
	// MTU is the largest inner packet sent whole (0: AWS's value for the negotiated suite); MSS
	// the TCP MSS clamped on SYNs (0: AWS's 1379).
	MTU int
	MSS uint16
	// Failover tunes the data-plane liveness check.
	Failover Failover
}

// Failover tunes fast failover: while outbound ESP flows and nothing comes back for Window,
// the tunnel asks the peer for a liveness proof at once (an IKE INFORMATIONAL) and takes the
// tunnel out of service if none arrives within ProbeTimeout — long before BGP's hold time or
// DPD would. An idle tunnel sends no probes (normal DPD covers it). While out of service it
// probes every Recheck and comes back into service at the first answer or inbound ESP packet.
type Failover struct {
	// Disabled turns the data-plane check off (DPD alone decides).
	Disabled bool
	// Window (default 250 ms), ProbeTimeout (400 ms), Recheck (1 s): a dead path costs
	// about Window+ProbeTimeout of traffic, under the 1 s goal with room for a loaded CPU.
	Window, ProbeTimeout, Recheck time.Duration
}

func (f Failover) withDefaults() Failover {
	if f.Window <= 0 {
		f.Window = DefaultFailoverWindow
	}
	if f.ProbeTimeout <= 0 {
		f.ProbeTimeout = DefaultProbeTimeout
	}
	if f.Recheck <= 0 {
		f.Recheck = DefaultRecheckInterval
	}
	return f
}

// Options are a tunnel's collaborators.
type Options struct {
	// Transport is the shared socket pair of the tunnel's local address (required).
	Transport *Transport
	// Host creates the TUN device and configures its addresses (required).
	Host Host
	// Log receives the tunnel activity log (nil: discard).
	Log vpnlog.Sink
	// Logger gets diagnostics, the IKE connection's included (nil: discard).
	Logger *slog.Logger
	// OnEvent receives the tunnel's events in order, from the tunnel's goroutine (and, for the
	// last one, from Close). It must not block for long; it must not call Close.
	OnEvent func(Event)
}

// EventType says what an Event reports.
type EventType int

// Event types.
const (
	// EventIKE: an IKE event (IKEType); the phase states may have changed.
	EventIKE EventType = iota + 1
	// EventOutOfService: the tunnel stopped carrying traffic (no CHILD SA, or the data plane
	// failed its liveness check). Routes through it should be withdrawn now.
	EventOutOfService
	// EventInService: the tunnel carries traffic again.
	EventInService
	// EventDPDAction: the peer was dead for the DPD timeout and the DPD action was applied.
	EventDPDAction
)

func (t EventType) String() string {
	switch t {
	case EventIKE:
		return "ike"
	case EventOutOfService:
		return "out-of-service"
	case EventInService:
		return "in-service"
	case EventDPDAction:
		return "dpd-action"
	}
	return fmt.Sprintf("event(%d)", int(t))
}

// Event is something that happened to a tunnel.
type Event struct {
	Time    time.Time
	Tunnel  string
	Type    EventType
	IKEType ike.EventType // for EventIKE
	// Phase1 and Phase2 are the IKE and CHILD states after the event; Usable whether the
	// tunnel carries traffic.
	Phase1, Phase2 ike.State
	Usable         bool
	// Details says what happened in words (the tunnel activity log's details).
	Details string
}

// Status is a snapshot of a tunnel.
type Status struct {
	Name, ResourceID, Device string
	Local, Remote            netip.Addr
	Phase1, Phase2           ike.State
	// Usable: a CHILD SA is installed and the data plane passed its liveness checks.
	Usable      bool
	UsableSince time.Time
	DPDEnabled  bool
	NATDetected bool
	IKE         *ike.IKEInfo
	Children    []ike.ChildInfo
	IKECounters ike.Counters
	ESP         esp.TunnelStats
	LastError   string
	// Failovers counts the times the liveness check took the tunnel out of service,
	// Recoveries the times it came back; DPDActions the DPD actions applied.
	Failovers, Recoveries, DPDActions uint64
	LastFailover, LastRecovery        time.Time
}

// Tunnel is one running tunnel. Its goroutine turns IKE events into phase states, activity
// log records and events, watches the data plane for fast failover, and applies the DPD action.
type Tunnel struct {
	cfg   Config
	opts  Options
	log   *slog.Logger
	sink  vpnlog.Sink
	fo    Failover
	ikeFn ike.Config // the IKE configuration as handed to ike.NewConn
	tr    *Transport
	esp   *esp.Tunnel
	dp    *dataPlane

	mu   sync.Mutex // guards conn, gen, st
	conn *ike.Conn
	gen  int
	st   state

	evMu   sync.Mutex
	evQ    []genEvent
	evWake chan struct{}

	probeRes chan probeResult
	stop     chan struct{}
	done     chan struct{}
	closeMu  sync.Mutex
	closed   bool
}

// state is what the tunnel's goroutine keeps (guarded by Tunnel.mu for Status).
type state struct {
	phase1, phase2 ike.State
	nat            bool
	usable         bool
	usableSince    time.Time
	lastError      string

	// liveness
	lastIn, lastProof time.Time // last inbound ESP seen, last liveness proof
	waitSince         time.Time // outbound seen after the last proof, since
	probing           bool
	probeAt           time.Time
	suspect           bool // out of service after a failed probe
	suspectSince      time.Time
	dpdDeadline       time.Time

	failovers, recoveries, dpdActions uint64
	lastFailover, lastRecovery        time.Time
}

type genEvent struct {
	gen int
	ev  ike.Event
}

type probeResult struct {
	gen   int
	start time.Time
	err   error
}

// New validates cfg, creates the TUN device with the inside addresses, adds the tunnel to the
// transport's sockets, and starts IKE (initiating, unless IKE.StartAction is add).
func New(cfg Config, opts Options) (*Tunnel, error) {
	if opts.Transport == nil || opts.Host == nil {
		return nil, errors.New("tunnel: Options.Transport and Options.Host are required")
	}
	if err := cfg.validate(opts.Transport); err != nil {
		return nil, err
	}
	t := &Tunnel{
		cfg: cfg, opts: opts, tr: opts.Transport, fo: cfg.Failover.withDefaults(),
		evWake: make(chan struct{}, 1), probeRes: make(chan probeResult, 4),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	t.log = opts.Logger
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	t.log = t.log.With("tunnel", cfg.Name)
	t.sink = opts.Log
	if t.sink == nil {
		t.sink = vpnlog.Discard
	}
	t.ikeFn = t.ikeConfig()
	if err := t.ikeFn.Validate(); err != nil {
		return nil, fmt.Errorf("tunnel %s: ike: %w", cfg.Name, err)
	}

	tun, err := opts.Host.CreateTUN(cfg.Device, DefaultMTU)
	if err != nil {
		return nil, fmt.Errorf("tunnel %s: tun %s: %w", cfg.Name, cfg.Device, err)
	}
	ec := esp.TunnelConfig{
		Name: cfg.Name, TUN: tun, MTU: cfg.MTU, MSS: cfg.MSS,
		Remote:        netip.AddrPortFrom(cfg.Remote, t.ikeFn.RemoteNATTPort),
		OnRekeyNeeded: func(uint32) { t.rekeyForSequence() },
	}
	if cfg.Inside4.IsValid() {
		ec.ICMPSource4 = cfg.Inside4.Addr()
	}
	if cfg.Inside6.IsValid() {
		ec.ICMPSource6 = cfg.Inside6.Addr()
	}
	if t.esp, err = t.tr.mux.NewTunnel(ec); err != nil {
		tun.Close()
		return nil, fmt.Errorf("tunnel %s: %w", cfg.Name, err)
	}
	var addrs []netip.Prefix
	for _, p := range []netip.Prefix{cfg.Inside4, cfg.Inside6} {
		if p.IsValid() {
			addrs = append(addrs, p)
		}
	}
	if err := opts.Host.SetupLink(cfg.Device, addrs); err != nil {
		t.esp.Close()
		return nil, fmt.Errorf("tunnel %s: %w", cfg.Name, err)
	}
	t.dp = newDataPlane(t.esp, t.tr.mux, t.log)
	t.st = state{phase1: ike.StateDown, phase2: ike.StateDown}
	conn, err := t.newConn(0)
	if err != nil {
		t.esp.Close()
		return nil, err
	}
	t.conn = conn
	t.tr.conns.Add(conn)
	t.record(time.Now(), fmt.Sprintf("Tunnel configured: %s to %s, device %s, %s", t.role(), cfg.Remote, cfg.Device, t.ikeFn.IKEProposals[0]))
	go t.run()
	conn.Start()
	return t, nil
}

func (cfg *Config) validate(tr *Transport) error {
	if !cfg.Remote.IsValid() || cfg.Remote.IsUnspecified() {
		return fmt.Errorf("tunnel %q: Remote %q: want the endpoint's outside address", cfg.Name, cfg.Remote)
	}
	cfg.Remote = cfg.Remote.Unmap()
	if cfg.Name == "" {
		cfg.Name = cfg.Remote.String()
	}
	if cfg.ResourceID == "" {
		cfg.ResourceID = cfg.Name
	}
	if cfg.Remote.Is4() != tr.Local().Is4() {
		return fmt.Errorf("tunnel %s: Remote %s: not of the transport's address family (%s)", cfg.Name, cfg.Remote, tr.Local())
	}
	if cfg.Device == "" || len(cfg.Device) > 15 {
		return fmt.Errorf("tunnel %s: Device %q: want a name of 1 to 15 bytes", cfg.Name, cfg.Device)
	}
	if !cfg.Inside4.IsValid() && !cfg.Inside6.IsValid() {
		return fmt.Errorf("tunnel %s: Inside4/Inside6: want at least one inside address", cfg.Name)
	}
	if cfg.Inside4.IsValid() && !cfg.Inside4.Addr().Is4() {
		return fmt.Errorf("tunnel %s: Inside4 %s: not IPv4", cfg.Name, cfg.Inside4)
	}
	if cfg.Inside6.IsValid() && (!cfg.Inside6.Addr().Is6() || cfg.Inside6.Addr().Is4In6()) {
		return fmt.Errorf("tunnel %s: Inside6 %s: not IPv6", cfg.Name, cfg.Inside6)
	}
	switch cfg.DPDAction {
	case "":
		cfg.DPDAction = ike.DPDRestart
	case ike.DPDClear, ike.DPDRestart, ike.DPDNone:
	default:
		return fmt.Errorf("tunnel %s: DPDAction %q: want clear, restart or none", cfg.Name, cfg.DPDAction)
	}
	if cfg.MTU != 0 && (cfg.MTU < esp.MinTunnelMTU || cfg.MTU > DefaultMTU) {
		return fmt.Errorf("tunnel %s: MTU %d: want %d to %d, or 0 for AWS's value", cfg.Name, cfg.MTU, esp.MinTunnelMTU, DefaultMTU)
	}
	return nil
}

// ikeConfig is cfg.IKE completed by the tunnel.
func (t *Tunnel) ikeConfig() ike.Config {
	c := t.cfg.IKE
	c.Name = t.cfg.Name
	c.LocalAddr = t.tr.Local()
	c.RemoteAddr = t.cfg.Remote
	c.LocalPort, c.LocalNATTPort = t.tr.cfg.IKEPort, t.tr.cfg.NATTPort
	if c.RemotePort == 0 {
		c.RemotePort = IKEPort
	}
	if c.RemoteNATTPort == 0 {
		c.RemoteNATTPort = NATTPort
	}
	c.ForceEncap = true
	// The tunnel applies the DPD action (see Config.DPDAction): IKE only reports.
	c.DPDAction = ike.DPDNone
	if c.StartAction == "" {
		c.StartAction = ike.StartStart
	}
	if c.CloseAction == "" && c.StartAction == ike.StartStart {
		c.CloseAction = ike.DPDRestart
	}
	if c.DPDInterval == 0 {
		c.DPDInterval = 10 * time.Second
	}
	if c.DPDTimeout == 0 {
		c.DPDTimeout = 30 * time.Second
	}
	if len(c.IKEProposals) == 0 {
		c.IKEProposals = ike.DefaultIKEProposals
	}
	if len(c.ESPProposals) == 0 {
		c.ESPProposals = ike.DefaultESPProposals
	}
	return c
}

func (t *Tunnel) role() string {
	if t.ikeFn.StartAction == ike.StartAdd {
		return "responder"
	}
	return "initiator"
}

// newConn makes the IKE connection of generation gen.
func (t *Tunnel) newConn(gen int) (*ike.Conn, error) {
	c, err := ike.NewConn(t.ikeFn, ike.Options{
		Sender:    t.tr.sender(),
		DataPlane: t.dp,
		OnEvent:   func(e ike.Event) { t.pushEvent(gen, e) },
		Logger:    t.log,
		AllocSPI:  t.dp.allocSPI,
	})
	if err != nil {
		return nil, fmt.Errorf("tunnel %s: ike: %w", t.cfg.Name, err)
	}
	return c, nil
}

// pushEvent queues an IKE event for the tunnel's goroutine; it never blocks (IKE's event
// goroutine must be able to finish while the tunnel closes its connection).
func (t *Tunnel) pushEvent(gen int, e ike.Event) {
	t.evMu.Lock()
	t.evQ = append(t.evQ, genEvent{gen, e})
	t.evMu.Unlock()
	select {
	case t.evWake <- struct{}{}:
	default:
	}
}

// Name is the tunnel's name.
func (t *Tunnel) Name() string { return t.cfg.Name }

// Config returns the tunnel's configuration (defaults filled in).
func (t *Tunnel) Config() Config { return t.cfg }

// Device is the TUN device's name.
func (t *Tunnel) Device() string { return t.cfg.Device }

// Conn returns the current IKE connection (it changes when a DPD action restarts IKE).
func (t *Tunnel) Conn() *ike.Conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.conn
}

// ESP returns the tunnel's data plane.
func (t *Tunnel) ESP() *esp.Tunnel { return t.esp }

// Usable reports whether the tunnel carries traffic now.
func (t *Tunnel) Usable() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.st.usable
}

// Status returns a snapshot.
func (t *Tunnel) Status() Status {
	t.mu.Lock()
	st, conn := t.st, t.conn
	t.mu.Unlock()
	is := conn.Status()
	s := Status{
		Name: t.cfg.Name, ResourceID: t.cfg.ResourceID, Device: t.cfg.Device,
		Local: t.tr.Local(), Remote: t.cfg.Remote,
		Phase1: st.phase1, Phase2: st.phase2, Usable: st.usable, UsableSince: st.usableSince,
		DPDEnabled: is.DPDEnabled, NATDetected: is.NATDetected, IKE: is.IKE, Children: is.Children,
		IKECounters: is.Counters, ESP: t.esp.Stats(), LastError: st.lastError,
		Failovers: st.failovers, Recoveries: st.recoveries, DPDActions: st.dpdActions,
		LastFailover: st.lastFailover, LastRecovery: st.lastRecovery,
	}
	if s.LastError == "" {
		s.LastError = is.LastError
	}
	return s
}

// Probe runs an IKE liveness check now (see ike.Conn.Probe).
func (t *Tunnel) Probe(timeout time.Duration) <-chan error { return t.Conn().Probe(timeout) }

// RekeyChild rekeys the CHILD SA now.
func (t *Tunnel) RekeyChild() error { return t.Conn().RekeyChild() }

// RekeyIKE rekeys the IKE SA now.
func (t *Tunnel) RekeyIKE() error { return t.Conn().RekeyIKE() }

func (t *Tunnel) rekeyForSequence() {
	if err := t.Conn().RekeyChild(); err != nil {
		t.log.Warn("rekey for sequence numbers failed", "err", err)
	}
}

// Close deletes the IKE SA (sending DELETE, waiting for the answer at most until ctx ends),
// removes the SAs from the data plane, closes the TUN device and stops the tunnel's goroutine.
func (t *Tunnel) Close(ctx context.Context) error {
	t.closeMu.Lock()
	defer t.closeMu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	close(t.stop)
	<-t.done
	conn := t.Conn()
	err := conn.Close(ctx)
	t.tr.conns.Remove(conn)
	t.dp.releaseStale(0)
	err = errors.Join(err, t.esp.Close())
	t.mu.Lock()
	wasUsable := t.st.usable
	t.st.phase1, t.st.phase2, t.st.usable = ike.StateDown, ike.StateDown, false
	t.mu.Unlock()
	now := time.Now()
	t.record(now, "Tunnel closed locally")
	if wasUsable {
		t.emit(Event{Time: now, Type: EventOutOfService, Details: "tunnel closed locally"})
	}
	return err
}

// run is the tunnel's goroutine.
func (t *Tunnel) run() {
	defer close(t.done)
	poll := min(t.fo.Window/6, 50*time.Millisecond)
	tick := time.NewTicker(max(poll, 5*time.Millisecond))
	defer tick.Stop()
	sweep := time.NewTicker(time.Minute)
	defer sweep.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-t.evWake:
			t.evMu.Lock()
			q := t.evQ
			t.evQ = nil
			t.evMu.Unlock()
			for _, ge := range q {
				t.handleIKE(ge)
			}
		case r := <-t.probeRes:
			t.handleProbe(r)
		case now := <-tick.C:
			t.check(now)
		case <-sweep.C:
			t.dp.releaseStale(2 * time.Minute)
		}
	}
}

// handleIKE turns an IKE event into states, a log record and tunnel events.
func (t *Tunnel) handleIKE(ge genEvent) {
	t.mu.Lock()
	stale := ge.gen != t.gen
	t.mu.Unlock()
	if stale {
		return
	}
	e := ge.ev
	now := time.Now()
	t.mu.Lock()
	st := &t.st
	st.phase1, st.phase2, st.nat = e.Phase1, e.Phase2, e.NATDetected
	switch e.Type {
	case ike.EventIKEUp, ike.EventIKERekeyed, ike.EventChildUp, ike.EventChildRekeyed:
		st.lastProof = now
		if e.Type == ike.EventChildUp && st.suspect {
			// A new CHILD SA: the peer answers; start over.
			st.suspect, st.dpdDeadline = false, time.Time{}
		}
	case ike.EventAuthFailed, ike.EventNoProposal, ike.EventNegotiationFailed:
		st.lastError = e.Reason
	}
	checking := st.probing || st.suspect
	peerDead := e.Type == ike.EventPeerDead && !checking
	t.mu.Unlock()

	details := ikeDetails(e)
	if e.Type == ike.EventPeerDead && checking {
		// One of our own liveness checks went unanswered: the failover record says so, and
		// the DPD action record will if it comes to that.
		t.log.Debug("liveness check unanswered", "reason", e.Reason)
		return
	}
	t.record(now, details)
	t.emit(Event{Time: now, Type: EventIKE, IKEType: e.Type, Details: details})
	if peerDead {
		// IKE's own DPD (an idle tunnel) or an exchange that ran out of retransmissions:
		// the peer is dead for the DPD timeout.
		t.applyDPD(now, e.Reason)
	}
	t.updateUsable(now, "")
}

// ikeDetails words an IKE event for the activity log.
func ikeDetails(e ike.Event) string {
	switch e.Type {
	case ike.EventIKEUp:
		role := "responder"
		if e.IKE.Initiator {
			role = "initiator"
		}
		nat := ""
		if e.IKE.NATT {
			nat = ", UDP-encapsulated (NAT-T)"
		}
		return fmt.Sprintf("IKE_SA established with %s as %s: %s%s", e.IKE.Remote.Addr(), role, e.IKE.Suite, nat)
	case ike.EventIKERekeyed:
		return fmt.Sprintf("IKE_SA rekeyed: %s", e.IKE.Suite)
	case ike.EventChildUp:
		return fmt.Sprintf("%s: SPIs %08x (in) %08x (out), %s", e.Reason, e.Child.SPIIn, e.Child.SPIOut, e.Child.Suite)
	case ike.EventChildRekeyed:
		return fmt.Sprintf("CHILD_SA rekeyed: SPIs %08x (in) %08x (out) replace %08x %08x, %s", e.Child.SPIIn, e.Child.SPIOut, e.Replaced.SPIIn, e.Replaced.SPIOut, e.Child.Suite)
	case ike.EventChildDown:
		return fmt.Sprintf("CHILD_SA %08x (in) %08x (out) deleted: %s", e.Child.SPIIn, e.Child.SPIOut, e.Reason)
	case ike.EventIKEDown:
		return "IKE_SA deleted: " + e.Reason
	case ike.EventPeerDead:
		// IKE runs with DPD action none (the tunnel applies the configured action): its
		// sentence about keeping the SAs is not ours to report.
		r := strings.TrimSuffix(e.Reason, "; DPD action none: keeping the SAs")
		r = strings.TrimSuffix(strings.TrimPrefix(r, "peer dead ("), ")")
		return "Peer not answering: " + r
	case ike.EventAuthFailed:
		return "Authentication failed (AUTHENTICATION_FAILED): " + e.Reason
	case ike.EventNoProposal:
		return "No proposal match (NO_PROPOSAL_CHOSEN): " + e.Reason
	case ike.EventNegotiationFailed:
		return "Negotiation failed: " + e.Reason
	}
	return e.Reason
}

// check runs every poll interval: the data-plane liveness check of fast failover.
func (t *Tunnel) check(now time.Time) {
	in, out := t.esp.LastInbound(), t.esp.LastOutbound()
	t.mu.Lock()
	st := &t.st
	recovered := false
	if in.After(st.lastIn) {
		st.lastIn, st.waitSince = in, time.Time{}
		if st.suspect {
			recovered = true
		}
	}
	var probe time.Duration
	switch {
	case recovered || st.probing || t.fo.Disabled:
	case st.suspect:
		every := t.fo.Recheck
		if !st.dpdDeadline.IsZero() && now.After(st.dpdDeadline) || st.dpdDeadline.IsZero() && now.Sub(st.suspectSince) > 30*time.Second {
			every = slowRecheck
		}
		if now.Sub(st.probeAt) >= every {
			probe = t.fo.Recheck
		}
	case st.usable:
		alive := st.lastIn
		if st.lastProof.After(alive) {
			alive = st.lastProof
		}
		if !out.After(alive) {
			st.waitSince = time.Time{}
			break
		}
		if st.waitSince.IsZero() {
			st.waitSince = now
		}
		if now.Sub(st.waitSince) >= t.fo.Window {
			probe = t.fo.ProbeTimeout
		}
	}
	if !st.dpdDeadline.IsZero() && st.suspect && !now.Before(st.dpdDeadline) && !recovered {
		st.dpdDeadline = time.Time{}
		t.mu.Unlock()
		t.applyDPD(now, fmt.Sprintf("no answer to liveness checks for %v", t.ikeFn.DPDTimeout))
		return
	}
	var ch <-chan error
	gen := t.gen
	if probe > 0 {
		st.probing, st.probeAt = true, now
		ch = t.conn.Probe(probe)
	}
	t.mu.Unlock()
	if recovered {
		t.recover(now, "inbound ESP arrived")
		return
	}
	if ch != nil {
		go func() {
			err := <-ch
			select {
			case t.probeRes <- probeResult{gen: gen, start: now, err: err}:
			case <-t.stop:
			}
		}()
	}
}

func (t *Tunnel) handleProbe(r probeResult) {
	now := time.Now()
	t.mu.Lock()
	st := &t.st
	if r.gen != t.gen {
		t.mu.Unlock()
		return
	}
	st.probing = false
	switch {
	case r.err == nil:
		st.lastProof, st.waitSince = now, time.Time{}
		suspect := st.suspect
		t.mu.Unlock()
		if suspect {
			t.recover(now, "the peer answered a liveness check")
		}
		return
	case !errors.Is(r.err, ike.ErrPeerDead):
		// No SA to probe (being set up, or gone): nothing learned.
		st.waitSince = time.Time{}
		t.mu.Unlock()
		return
	case st.suspect:
		t.mu.Unlock()
		return
	}
	st.suspect, st.suspectSince = true, r.start
	st.failovers++
	st.lastFailover = now
	if t.ikeFn.DPDInterval > 0 {
		st.dpdDeadline = r.start.Add(t.ikeFn.DPDTimeout)
	}
	silent := now.Sub(st.lastIn)
	if st.lastIn.IsZero() {
		silent = now.Sub(st.waitSince)
	}
	t.mu.Unlock()
	t.updateUsable(now, fmt.Sprintf("Data plane: no inbound ESP for %v while sending, liveness check unanswered after %v: tunnel out of service",
		silent.Round(time.Millisecond), now.Sub(r.start).Round(time.Millisecond)))
}

// recover ends a failover: the path answers again.
func (t *Tunnel) recover(now time.Time, why string) {
	t.mu.Lock()
	st := &t.st
	if !st.suspect {
		t.mu.Unlock()
		return
	}
	st.suspect, st.dpdDeadline, st.waitSince = false, time.Time{}, time.Time{}
	st.lastProof = now
	st.recoveries++
	st.lastRecovery = now
	down := now.Sub(st.suspectSince)
	t.mu.Unlock()
	t.updateUsable(now, fmt.Sprintf("Data plane: %s after %v: tunnel back in service", why, down.Round(time.Millisecond)))
}

// updateUsable recomputes whether the tunnel carries traffic and reports a change. details,
// when set, is logged whether or not anything changed.
func (t *Tunnel) updateUsable(now time.Time, details string) {
	t.mu.Lock()
	st := &t.st
	usable := (st.phase2 == ike.StateEstablished || st.phase2 == ike.StateRekeying) && !st.suspect
	changed := usable != st.usable
	st.usable = usable
	if changed && usable {
		st.usableSince = now
	}
	t.mu.Unlock()
	if details != "" {
		t.record(now, details)
	}
	if !changed {
		return
	}
	typ := EventOutOfService
	if usable {
		typ = EventInService
	}
	if details == "" {
		details = "tunnel out of service"
		if usable {
			details = "tunnel in service"
		}
	}
	t.emit(Event{Time: now, Type: typ, Details: details})
}

// applyDPD applies the DPD action: the peer did not answer for the DPD timeout.
func (t *Tunnel) applyDPD(now time.Time, reason string) {
	action := t.cfg.DPDAction
	t.mu.Lock()
	t.st.dpdActions++
	if action == ike.DPDNone {
		if !t.st.suspect {
			t.st.suspect, t.st.suspectSince = true, now
			t.st.failovers++
			t.st.lastFailover = now
		}
		t.mu.Unlock()
		details := fmt.Sprintf("DPD timed out (%s); DPD action none: keeping the SAs", reason)
		t.emit(Event{Time: now, Type: EventDPDAction, Details: details})
		t.updateUsable(now, details)
		return
	}
	old := t.conn
	gen := t.gen + 1
	t.mu.Unlock()
	cfg := t.ikeFn
	cfg.StartAction = ike.StartStart // restart initiates, also on a responder
	if action == ike.DPDClear {
		cfg.StartAction = ike.StartAdd
	}
	conn, err := ike.NewConn(cfg, ike.Options{
		Sender: t.tr.sender(), DataPlane: t.dp, Logger: t.log, AllocSPI: t.dp.allocSPI,
		OnEvent: func(e ike.Event) { t.pushEvent(gen, e) },
	})
	if err != nil { // cannot happen: the same configuration made the first one
		t.log.Error("DPD action: new IKE connection", "err", err)
		return
	}
	t.tr.conns.Remove(old)
	t.tr.conns.Add(conn)
	t.mu.Lock()
	t.conn, t.gen = conn, gen
	st := &t.st
	st.phase1, st.phase2 = ike.StateDown, ike.StateDown
	st.suspect, st.dpdDeadline, st.probing, st.waitSince = false, time.Time{}, false, time.Time{}
	t.mu.Unlock()
	go func() {
		// The peer is gone: the DELETE goes unanswered; do not hold anything up for it.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		old.Close(ctx)
	}()
	what := "DPD action clear: SAs deleted, waiting for the peer to initiate"
	if action == ike.DPDRestart {
		what = "DPD action restart: SAs deleted, initiating a new IKE_SA"
	}
	details := fmt.Sprintf("DPD timed out (%s); %s", reason, what)
	t.emit(Event{Time: now, Type: EventDPDAction, Details: details})
	t.updateUsable(now, details)
	if action == ike.DPDRestart {
		conn.Start()
	}
}

// record writes a tunnel activity log record with the current states.
func (t *Tunnel) record(now time.Time, details string) {
	t.mu.Lock()
	p1, p2, nat := t.st.phase1, t.st.phase2, t.st.nat
	t.mu.Unlock()
	t.sink.Write(vpnlog.NewTunnelRecord(t.cfg.ResourceID, now, vpnlog.IKEState(p1), vpnlog.IKEState(p2), t.ikeFn.DPDInterval > 0, nat, details))
}

// emit delivers an event with the current states.
func (t *Tunnel) emit(e Event) {
	t.mu.Lock()
	e.Tunnel, e.Phase1, e.Phase2, e.Usable = t.cfg.Name, t.st.phase1, t.st.phase2, t.st.usable
	t.mu.Unlock()
	if t.opts.OnEvent != nil {
		t.opts.OnEvent(e)
	}
}
