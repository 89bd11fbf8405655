package bgp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v3/pkg/packet/bgp"
	"github.com/osrg/gobgp/v3/pkg/server"

	"meshroot/vpn/route"
	"meshroot/vpn/vpnlog"
)

// RouteSink takes the paths each session accepted: the best path per prefix per peer after
// import policy, and their withdrawals. *route.Manager is one.
type RouteSink interface {
	Update(src route.Source, paths []route.Path, withdrawn []netip.Prefix) error
}

// Options are the speaker's outputs and hooks; all are optional.
type Options struct {
	// Log receives the BGP log in the concentrator's schema.
	Log vpnlog.Sink
	// Routes receives accepted paths and withdrawals, per session (route.Source{Tunnel, Peer}).
	Routes RouteSink
	// OnEvent receives state changes, accepted paths and End-of-RIB markers, in order, from one
	// goroutine. It must not block for long; it may call the Speaker's methods.
	OnEvent func(Event)
	// Logger gets the speaker's and gobgp's own diagnostics (nil: discard).
	Logger *slog.Logger
	// Now stamps events and log records (nil: time.Now); tests inject a fake clock.
	Now func() time.Time
	// Side is the subject of the BGP log's sentences (default DefaultSide, "CGW-side peer").
	Side string
}

// EventType says what an Event reports.
type EventType int

// Event types.
const (
	EventState    EventType = iota + 1 // the session's FSM state changed
	EventPaths                         // accepted paths learned or withdrawn
	EventEndOfRIB                      // the peer finished its initial updates for a family
)

// Event is what the speaker reports through Options.OnEvent.
type Event struct {
	Type   EventType
	Time   time.Time
	Tunnel string
	Peer   netip.Addr
	// State and OldState (EventState); Reason says why a session left Established (the last
	// notification, a hold timer expiry, a local PeerDown).
	State, OldState State
	Reason          string
	// Paths (EventPaths): per prefix, the peer's best path after import policy, or Withdrawn.
	Paths []Path
	// Family (EventEndOfRIB).
	Family Family
}

// Path is a peer's path to a prefix as the speaker accepted it.
type Path struct {
	Prefix    netip.Prefix
	Withdrawn bool
	ASPath    []uint32 // flattened (AS sets in order)
	ASPathLen int      // BGP's length: an AS set counts 1
	Origin    route.Origin
	MED       uint32
	LocalPref uint32 // 0 when the path carries none (eBGP)
	NextHop   netip.Addr
}

// Route converts an accepted path for vpn/route.
func (p Path) Route() route.Path {
	return route.Path{Prefix: p.Prefix, ASPathLen: p.ASPathLen, Origin: p.Origin, MED: p.MED, LocalPref: p.LocalPref, NextHop: p.NextHop}
}

// PeerStatus is a session's state for Status displays.
type PeerStatus struct {
	Tunnel, ResourceID string
	Address            netip.Addr
	State              State
	AdminDown          bool // disabled by PeerDown, or stopped by the prefix limit
	PrefixLimitHit     bool
	LocallyDown        bool // PeerDown in force
	Uptime             time.Duration
	NegotiatedHold     time.Duration
	Keepalive          time.Duration
	RouterID           string
	Accepted           int // prefixes accepted from the peer (in the route sink)
	Advertised         int // our prefixes sent to it
	LastReason         string
}

// Speaker is an embedded gobgp server speaking eBGP over the VPN's tunnels. Make one with
// Start; Close it when done.
type Speaker struct {
	srv  *server.BgpServer
	gl   *gobgpLogger
	opts Options
	log  *slog.Logger
	now  func() time.Time
	side string
	q    *queue

	admin sync.Mutex // serializes Update, PeerDown, PeerUp and Close (gobgp calls)

	mu      sync.Mutex // guards everything below
	cfg     Config
	peers   map[netip.Addr]*peer
	pathIDs map[netip.Prefix][]byte
	closed  bool

	cancel context.CancelFunc
	done   chan struct{}
}

type peer struct {
	cfg        PeerConfig
	idx        int
	state      State
	prefixHit  bool
	suppressed bool // PeerDown in force: accepted paths are kept but not passed to the route sink
	lastReason string
	accepted   map[netip.Prefix]Path
	received   map[netip.Prefix]vpnlog.Route // what the peer sent (pre-policy), for the log
	restart    *time.Timer
}

// Start validates cfg, starts an embedded gobgp server (no gRPC listener; no BGP listener
// unless cfg.Listen), installs the import/export policy, advertises cfg.Prefixes and adds one
// peer per PeerConfig. ctx bounds the start only.
func Start(ctx context.Context, cfg Config, opts Options) (*Speaker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if opts.Log == nil {
		opts.Log = vpnlog.Discard
	}
	s := &Speaker{
		opts: opts, log: opts.Logger, now: opts.Now, side: opts.Side,
		cfg: cfg, peers: map[netip.Addr]*peer{}, pathIDs: map[netip.Prefix][]byte{},
		q: newQueue(), done: make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.side == "" {
		s.side = DefaultSide
	}
	s.gl = newGobgpLogger(s.log, s.push)
	s.srv = server.NewBgpServer(server.LoggerOption(s.gl))
	go s.srv.Serve()
	if err := s.start(ctx); err != nil {
		s.srv.Stop()
		if s.cancel != nil {
			s.cancel()
		}
		return nil, err
	}
	go s.worker()
	return s, nil
}

func (s *Speaker) start(ctx context.Context) error {
	cfg := s.cfg
	global := &api.Global{Asn: cfg.ASN, RouterId: cfg.RouterID.String(), ListenPort: -1}
	if cfg.Listen {
		global.ListenPort = 179
		for _, p := range cfg.Peers {
			if !slices.Contains(global.ListenAddresses, p.Local.Addr().String()) {
				global.ListenAddresses = append(global.ListenAddresses, p.Local.Addr().String())
			}
		}
	}
	if err := s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: global}); err != nil {
		return fmt.Errorf("bgp: start: %w", err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	// Watch 1: session states, what each peer sends (pre-policy) and End-of-RIB, in order.
	if err := s.srv.WatchEvent(wctx, &api.WatchEventRequest{
		Peer: &api.WatchEventRequest_Peer{},
		Table: &api.WatchEventRequest_Table{Filters: []*api.WatchEventRequest_Table_Filter{
			{Type: api.WatchEventRequest_Table_Filter_ADJIN}, {Type: api.WatchEventRequest_Table_Filter_EOR},
		}},
	}, s.onWatchIn); err != nil {
		return fmt.Errorf("bgp: watch: %w", err)
	}
	// Watch 2: what import policy accepted, per path (rejections come as withdrawals).
	if err := s.srv.WatchEvent(wctx, &api.WatchEventRequest{
		Table: &api.WatchEventRequest_Table{Filters: []*api.WatchEventRequest_Table_Filter{{Type: api.WatchEventRequest_Table_Filter_POST_POLICY}}},
	}, s.onWatchAccepted); err != nil {
		return fmt.Errorf("bgp: watch: %w", err)
	}
	if err := s.srv.SetPolicies(ctx, policies(cfg)); err != nil {
		return fmt.Errorf("bgp: policy: %w", err)
	}
	for _, a := range []*api.PolicyAssignment{
		{Name: "global", Direction: api.PolicyDirection_IMPORT, Policies: []*api.Policy{{Name: importPolicy}}, DefaultAction: api.RouteAction_ACCEPT},
		{Name: "global", Direction: api.PolicyDirection_EXPORT, Policies: []*api.Policy{{Name: exportPolicy}}, DefaultAction: api.RouteAction_REJECT},
	} {
		if err := s.srv.AddPolicyAssignment(ctx, &api.AddPolicyAssignmentRequest{Assignment: a}); err != nil {
			return fmt.Errorf("bgp: policy assignment: %w", err)
		}
	}
	for _, pf := range cfg.Prefixes {
		if err := s.addPrefix(ctx, pf); err != nil {
			return err
		}
	}
	for i, p := range cfg.Peers {
		if err := s.addPeer(ctx, i, p); err != nil {
			return err
		}
	}
	return nil
}

func lanPath(pf netip.Prefix) (*api.Path, error) {
	origin := bgppkt.NewPathAttributeOrigin(bgppkt.BGP_ORIGIN_ATTR_TYPE_IGP)
	if pf.Addr().Is4() {
		nlri := bgppkt.NewIPAddrPrefix(uint8(pf.Bits()), pf.Addr().String())
		return apiutil.NewPath(nlri, false, []bgppkt.PathAttributeInterface{origin, bgppkt.NewPathAttributeNextHop("0.0.0.0")}, time.Now())
	}
	nlri := bgppkt.NewIPv6AddrPrefix(uint8(pf.Bits()), pf.Addr().String())
	return apiutil.NewPath(nlri, false, []bgppkt.PathAttributeInterface{origin,
		bgppkt.NewPathAttributeMpReachNLRI("::", []bgppkt.AddrPrefixInterface{nlri})}, time.Now())
}

func (s *Speaker) addPrefix(ctx context.Context, pf netip.Prefix) error {
	p, err := lanPath(pf)
	if err != nil {
		return fmt.Errorf("bgp: prefix %s: %w", pf, err)
	}
	resp, err := s.srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: p})
	if err != nil {
		return fmt.Errorf("bgp: advertise %s: %w", pf, err)
	}
	s.mu.Lock()
	s.pathIDs[pf] = resp.Uuid
	s.mu.Unlock()
	return nil
}

func (s *Speaker) deletePrefix(ctx context.Context, pf netip.Prefix) error {
	s.mu.Lock()
	id, ok := s.pathIDs[pf]
	delete(s.pathIDs, pf)
	s.mu.Unlock()
	if !ok {
		return nil
	}
	if err := s.srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Uuid: id}); err != nil {
		return fmt.Errorf("bgp: withdraw %s: %w", pf, err)
	}
	return nil
}

func secs(d time.Duration) uint64 { return uint64(d / time.Second) }

func apiPeer(p PeerConfig) *api.Peer {
	ap := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(), PeerAsn: p.ASN, Description: p.Tunnel,
			// Our AS in a path is rejected by the import policy, after the pre-policy watch has
			// seen it (for the DENIED line); gobgp's silent loop check is relaxed for that.
			AllowOwnAsn: 255,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry: secs(p.ConnectRetry), HoldTime: secs(p.HoldTime), KeepaliveInterval: secs(p.Keepalive),
			IdleHoldTimeAfterReset: 1,
		}},
		Transport: &api.Transport{LocalAddress: p.Local.Addr().String(), PassiveMode: p.Passive, RemotePort: uint32(p.port)},
	}
	for _, f := range p.families() {
		as := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: apiFamily(f), Enabled: true}}
		if p.MaxPrefixes > 0 {
			as.PrefixLimits = &api.PrefixLimit{Family: apiFamily(f), MaxPrefixes: uint32(p.MaxPrefixes)}
		}
		ap.AfiSafis = append(ap.AfiSafis, as)
	}
	return ap
}

func (s *Speaker) addPeer(ctx context.Context, idx int, p PeerConfig) error {
	s.gl.setLimit(p.Address, p.MaxPrefixes, p.WarnPercent)
	s.mu.Lock()
	s.peers[p.Address] = &peer{cfg: p, idx: idx, state: StateIdle, accepted: map[netip.Prefix]Path{}, received: map[netip.Prefix]vpnlog.Route{}}
	s.mu.Unlock()
	if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(p)}); err != nil {
		s.mu.Lock()
		delete(s.peers, p.Address)
		s.mu.Unlock()
		return fmt.Errorf("bgp: peer %s (%s): %w", p.Address, p.Tunnel, err)
	}
	return nil
}

// deletePeer removes a session and withdraws what it offered. gobgp ends an Established
// session with Cease 6/3 (Peer De-configured) without reporting it (neither its logger nor the
// watch sees the notification or the state change), so the BGP log gets both lines here.
func (s *Speaker) deletePeer(ctx context.Context, addr netip.Addr) error {
	err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()})
	s.gl.forget(addr)
	s.mu.Lock()
	if p := s.peers[addr]; p != nil {
		if err == nil && p.state == StateEstablished {
			at := s.now()
			s.bgpLog(p, at, vpnlog.StatusDown, textNotification(s.side, true, 6, 3, addr))
			s.bgpLog(p, at, vpnlog.StatusDown, textStateChange(s.side, StateEstablished, StateIdle, addr))
		}
		s.withdrawAllLocked(p, true)
		if p.restart != nil {
			p.restart.Stop()
		}
		delete(s.peers, addr)
	}
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("bgp: delete peer %s: %w", addr, err)
	}
	return nil
}

// withdrawAllLocked takes everything the peer offered out of the route sink at once; forget
// also drops it from the speaker's copy (the session is gone), otherwise it stays for PeerUp.
func (s *Speaker) withdrawAllLocked(p *peer, forget bool) []Path {
	if len(p.accepted) == 0 {
		return nil
	}
	wd := make([]netip.Prefix, 0, len(p.accepted))
	paths := make([]Path, 0, len(p.accepted))
	for pf := range p.accepted {
		wd = append(wd, pf)
		paths = append(paths, Path{Prefix: pf, Withdrawn: true})
	}
	slices.SortFunc(wd, comparePrefix)
	slices.SortFunc(paths, func(a, b Path) int { return comparePrefix(a.Prefix, b.Prefix) })
	if forget {
		p.accepted = map[netip.Prefix]Path{}
	}
	if s.opts.Routes != nil && !(p.suppressed && forget) {
		if err := s.opts.Routes.Update(route.Source{Tunnel: p.cfg.Tunnel, Peer: p.cfg.Address}, nil, wd); err != nil {
			s.log.Warn("bgp: route sink: withdraw", "peer", p.cfg.Address, "err", err)
		}
	}
	return paths
}

// PeerDown withdraws a tunnel's routes locally, now: every path its sessions accepted leaves
// the route sink before PeerDown returns, and nothing they learn reaches it until PeerUp. The
// tunnel layer calls it when the data plane dies, long before BGP's hold timer would notice.
// The sessions themselves are left alone: if the tunnel is back before the hold timer expires,
// PeerUp restores the routes from what the session still holds, with no new session and no
// wait for the concentrator to notice; if not, the hold timer ends the session as usual.
func (s *Speaker) PeerDown(tunnel, reason string) error {
	s.admin.Lock()
	defer s.admin.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("bgp: speaker closed")
	}
	found := false
	for addr, p := range s.peers {
		if p.cfg.Tunnel != tunnel {
			continue
		}
		found = true
		if p.suppressed {
			continue
		}
		paths := s.withdrawAllLocked(p, false)
		p.suppressed = true
		s.q.push(item{kind: itemLocalDown, at: s.now(), peer: addr, reason: reason, localPaths: paths})
	}
	if !found {
		return fmt.Errorf("bgp: PeerDown: no session on tunnel %q", tunnel)
	}
	return nil
}

// PeerUp ends PeerDown for a tunnel (the tunnel layer calls it when the tunnel is back in
// service): what its sessions hold goes back into the route sink in one batch, a session stopped
// by the prefix limit is started again, and a session that is not Established (the hold timer
// ended it while the tunnel was out) is restarted at once, as a router does on interface up.
// gobgp would otherwise wait out its own timers, whose attempts went into the dead tunnel: an
// idle hold of 5 s after every session end, then a connect retry of ConnectRetry to twice that.
// An Established session, or one already exchanging OPENs, is left alone.
func (s *Speaker) PeerUp(tunnel string) error {
	s.admin.Lock()
	defer s.admin.Unlock()
	var restart []netip.Addr
	var kick []PeerConfig
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("bgp: speaker closed")
	}
	found := false
	for addr, p := range s.peers {
		if p.cfg.Tunnel != tunnel {
			continue
		}
		found = true
		if !p.prefixHit {
			kick = append(kick, p.cfg)
		}
		if p.prefixHit {
			restart = append(restart, addr)
			p.prefixHit = false
			if p.restart != nil {
				p.restart.Stop()
				p.restart = nil
			}
		}
		if !p.suppressed {
			continue
		}
		p.suppressed = false
		var paths []Path
		var rps []route.Path
		for _, path := range p.accepted {
			paths = append(paths, path)
			rps = append(rps, path.Route())
		}
		slices.SortFunc(paths, func(a, b Path) int { return comparePrefix(a.Prefix, b.Prefix) })
		if s.opts.Routes != nil && len(rps) > 0 {
			if err := s.opts.Routes.Update(route.Source{Tunnel: p.cfg.Tunnel, Peer: p.cfg.Address}, rps, nil); err != nil {
				s.log.Warn("bgp: route sink: restore", "peer", addr, "err", err)
			}
		}
		s.q.push(item{kind: itemLocalUp, at: s.now(), peer: addr, localPaths: paths})
	}
	s.mu.Unlock()
	if !found {
		return fmt.Errorf("bgp: PeerUp: no session on tunnel %q", tunnel)
	}
	var errs []error
	for _, a := range restart {
		if err := s.srv.EnablePeer(context.Background(), &api.EnablePeerRequest{Address: a.String()}); err != nil {
			errs = append(errs, fmt.Errorf("bgp: enable %s: %w", a, err))
		}
	}
	for _, p := range kick {
		errs = append(errs, s.kick(p))
	}
	return errors.Join(errs...)
}

// kick restarts a session that is waiting to connect (Idle, Connect or Active in gobgp, and
// administratively up) so that it connects now. gobgp has no call for that: a hard ResetPeer
// only shortens the next idle hold and leaves a waiting session alone, and Disable/EnablePeer
// restarts the idle hold (5 s). A peer added afresh starts with no idle hold and makes its
// first attempt within 1-2 s (gobgp's fixed first connect delay), so the peer is deleted and
// added again with the same configuration; a session that is not Established has nothing to
// withdraw and nothing to log, and its policy and prefix limit stay as they are. gobgp's own
// state is read just before: an Established session, or one exchanging OPENs, is not touched.
func (s *Speaker) kick(p PeerConfig) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	waiting := false
	if err := s.srv.ListPeer(ctx, &api.ListPeerRequest{Address: p.Address.String()}, func(ap *api.Peer) {
		st := ap.GetState()
		switch st.GetSessionState() {
		case api.PeerState_IDLE, api.PeerState_CONNECT, api.PeerState_ACTIVE:
			waiting = st.GetAdminState() == api.PeerState_UP
		}
	}); err != nil {
		return fmt.Errorf("bgp: restart %s: %w", p.Address, err)
	}
	if !waiting {
		return nil
	}
	s.log.Info("bgp: tunnel back in service: restarting a session that is not Established", "peer", p.Address, "tunnel", p.Tunnel)
	if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: p.Address.String()}); err != nil {
		return fmt.Errorf("bgp: restart %s: delete: %w", p.Address, err)
	}
	if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(p)}); err != nil {
		return fmt.Errorf("bgp: restart %s: add: %w", p.Address, err)
	}
	return nil
}

// Update applies a new configuration without a restart: prefixes added and withdrawn, peers
// added and removed (a changed peer is removed and added again, except for MED, prepend and
// Local6, which only change the policy), the policy rebuilt and re-applied (soft reset out).
// A new local ASN or router ID returns ErrRestartRequired and changes nothing.
func (s *Speaker) Update(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	s.admin.Lock()
	defer s.admin.Unlock()
	s.mu.Lock()
	old := s.cfg
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return errors.New("bgp: speaker closed")
	}
	if cfg.ASN != old.ASN || cfg.RouterID != old.RouterID || cfg.Listen != old.Listen {
		return ErrRestartRequired
	}
	var errs []error
	// Prefixes.
	for _, pf := range old.Prefixes {
		if !slices.Contains(cfg.Prefixes, pf) {
			errs = append(errs, s.deletePrefix(ctx, pf))
		}
	}
	for _, pf := range cfg.Prefixes {
		if !slices.Contains(old.Prefixes, pf) {
			errs = append(errs, s.addPrefix(ctx, pf))
		}
	}
	// Peers.
	oldPeers := map[netip.Addr]PeerConfig{}
	for _, p := range old.Peers {
		oldPeers[p.Address] = p
	}
	newPeers := map[netip.Addr]bool{}
	for _, p := range cfg.Peers {
		newPeers[p.Address] = true
	}
	for addr := range oldPeers {
		if !newPeers[addr] {
			errs = append(errs, s.deletePeer(ctx, addr))
		}
	}
	s.mu.Lock()
	s.cfg = cfg // the new policy's neighbor sets are indexed by the new list
	s.mu.Unlock()
	if err := s.srv.SetPolicies(ctx, policies(cfg)); err != nil {
		errs = append(errs, fmt.Errorf("bgp: policy: %w", err))
	}
	for i, p := range cfg.Peers {
		o, had := oldPeers[p.Address]
		switch {
		case !had:
			errs = append(errs, s.addPeer(ctx, i, p))
		case !samePeerSession(o, p):
			errs = append(errs, s.deletePeer(ctx, p.Address))
			errs = append(errs, s.addPeer(ctx, i, p))
		default:
			s.mu.Lock()
			if pp := s.peers[p.Address]; pp != nil {
				pp.cfg, pp.idx = p, i
			}
			s.mu.Unlock()
		}
	}
	if err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: "all", Soft: true, Direction: api.ResetPeerRequest_OUT}); err != nil {
		s.log.Debug("bgp: soft reset out", "err", err)
	}
	return errors.Join(errs...)
}

// samePeerSession reports whether two peer configs differ only in what the policy carries.
func samePeerSession(a, b PeerConfig) bool {
	a.MED, b.MED = nil, nil
	a.Prepend, b.Prepend = 0, 0
	a.Local6, b.Local6 = netip.Prefix{}, netip.Prefix{}
	a.ResourceID, b.ResourceID = "", ""
	return a.Tunnel == b.Tunnel && a.Address == b.Address && a.Local == b.Local && a.ASN == b.ASN &&
		slices.Equal(a.Families, b.Families) && a.HoldTime == b.HoldTime && a.Keepalive == b.Keepalive &&
		a.ConnectRetry == b.ConnectRetry && a.MaxPrefixes == b.MaxPrefixes && a.WarnPercent == b.WarnPercent &&
		a.PrefixLimitRestart == b.PrefixLimitRestart && a.Passive == b.Passive && a.port == b.port
}

// Peers returns every session's status.
func (s *Speaker) Peers(ctx context.Context) ([]PeerStatus, error) {
	var out []PeerStatus
	var apiPeers []*api.Peer
	if err := s.srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) { apiPeers = append(apiPeers, p) }); err != nil {
		return nil, fmt.Errorf("bgp: list peers: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ap := range apiPeers {
		addr, err := netip.ParseAddr(ap.GetConf().GetNeighborAddress())
		if err != nil {
			continue
		}
		p := s.peers[addr]
		if p == nil {
			continue
		}
		st := PeerStatus{
			Tunnel: p.cfg.Tunnel, ResourceID: p.cfg.resourceID(), Address: addr, State: p.state,
			AdminDown: ap.GetState().GetAdminState() != api.PeerState_UP, PrefixLimitHit: p.prefixHit,
			LocallyDown: p.suppressed, RouterID: ap.GetState().GetRouterId(), Accepted: len(p.accepted), LastReason: p.lastReason,
		}
		if ts := ap.GetTimers().GetState(); ts != nil {
			st.NegotiatedHold = time.Duration(ts.NegotiatedHoldTime) * time.Second
			st.Keepalive = time.Duration(ts.KeepaliveInterval) * time.Second
			if p.state == StateEstablished && ts.Uptime != nil {
				st.Uptime = s.now().Sub(ts.Uptime.AsTime()).Truncate(time.Second)
			}
		}
		for _, af := range ap.GetAfiSafis() {
			st.Advertised += int(af.GetState().GetAdvertised())
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b PeerStatus) int {
		if a.Tunnel != b.Tunnel {
			if a.Tunnel < b.Tunnel {
				return -1
			}
			return 1
		}
		return a.Address.Compare(b.Address)
	})
	return out, nil
}

// closeWait bounds how long Close waits for the Established sessions to end with their Cease.
const closeWait = 3 * time.Second

// Close ends the sessions — an Established one with Cease 6/2 (Administrative Shutdown), in the
// BGP log as "sent a notification 6/2 (Cease/Administrative Shutdown)" and the change to Idle —
// takes every accepted path out of the route sink, and stops the event goroutine. gobgp's
// server loop has no exit: one idle goroutine stays.
func (s *Speaker) Close() error {
	s.admin.Lock()
	defer s.admin.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	var est []netip.Addr
	for addr, p := range s.peers {
		if p.restart != nil {
			p.restart.Stop()
		}
		if p.state == StateEstablished {
			est = append(est, addr)
		}
	}
	s.mu.Unlock()
	s.shutdownSessions(est)
	err := s.srv.StopBgp(context.Background(), &api.StopBgpRequest{})
	s.cancel()
	s.q.close()
	<-s.done
	s.mu.Lock()
	for _, p := range s.peers {
		s.withdrawAllLocked(p, true)
	}
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("bgp: stop: %w", err)
	}
	return nil
}

// shutdownSessions ends Established sessions with Cease 6/2 (Administrative Shutdown) and waits
// (up to closeWait) until the worker has seen each leave Established. gobgp's StopBgp would end
// them with a Cease 6/3 that nothing reports, so the log would stop before the session did; a
// disabled peer's notification goes through gobgp's logger ("sent notification") and its state
// change through the watch, in order, like any other.
func (s *Speaker) shutdownSessions(addrs []netip.Addr) {
	if len(addrs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeWait)
	defer cancel()
	for _, a := range addrs {
		if err := s.srv.DisablePeer(ctx, &api.DisablePeerRequest{Address: a.String()}); err != nil {
			s.log.Warn("bgp: shutdown", "peer", a, "err", err)
		}
	}
	for {
		settled := true
		s.mu.Lock()
		for _, a := range addrs {
			if p := s.peers[a]; p != nil && p.state == StateEstablished {
				settled = false
			}
		}
		s.mu.Unlock()
		if settled {
			return
		}
		select {
		case <-ctx.Done():
			s.log.Warn("bgp: sessions still Established after the administrative shutdown; stopping anyway", "wait", closeWait)
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}
