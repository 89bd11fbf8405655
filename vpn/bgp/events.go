package bgp

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v3/pkg/packet/bgp"

	"meshroot/vpn/route"
	"meshroot/vpn/vpnlog"
)

type itemKind int

const (
	itemPeer           itemKind = iota + 1 // a session's FSM state (watch 1)
	itemReceived                           // paths as the peer sent them (watch 1, pre-policy)
	itemEndOfRIB                           // End-of-RIB (watch 1)
	itemAccepted                           // paths after import policy (watch 2)
	itemNotification                       // a notification sent or received (gobgp's log)
	itemPrefixWarning                      // count crossed the warning share (gobgp's log)
	itemPrefixExceeded                     // prefix limit exceeded (gobgp's log)
	itemLocalDown                          // PeerDown withdrew a peer's paths
	itemLocalUp                            // PeerUp restored them
	itemBarrier                            // closes barrier once everything before it is handled
)

// item is one thing that happened, queued in the order the sources report it. gobgp's watches
// and log calls happen on gobgp's goroutines; the speaker's worker handles items one batch at
// a time, in order.
type item struct {
	kind itemKind
	at   time.Time
	peer netip.Addr

	// itemPeer
	state    State
	admin    api.PeerState_AdminState
	routerID string
	peerAS   uint32
	// itemReceived, itemAccepted
	paths []*api.Path
	// itemEndOfRIB
	family Family
	// itemNotification
	sent          bool
	code, subcode uint8
	badOpen       *[2]uint32 // remote AS, expected AS
	// itemPrefixWarning, itemPrefixExceeded
	count, limit int
	// itemLocalDown
	reason     string
	localPaths []Path
	// itemBarrier
	barrier chan struct{}
}

type queue struct {
	mu     sync.Mutex
	items  []item
	wake   chan struct{}
	closed bool
}

func newQueue() *queue { return &queue{wake: make(chan struct{}, 1)} }

func (q *queue) push(it item) {
	q.mu.Lock()
	if !q.closed {
		q.items = append(q.items, it)
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *queue) drain() (items []item, closed bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	items, q.items = q.items, nil
	return items, q.closed
}

func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// push stamps an item and queues it (gobgp's logger and watch callbacks).
func (s *Speaker) push(it item) {
	if it.at.IsZero() {
		it.at = s.now()
	}
	s.q.push(it)
}

func (s *Speaker) onWatchIn(r *api.WatchEventResponse) {
	switch ev := r.Event.(type) {
	case *api.WatchEventResponse_Peer:
		pe := ev.Peer
		if pe.GetType() != api.WatchEventResponse_PeerEvent_STATE {
			return
		}
		st := pe.GetPeer().GetState()
		addr, err := netip.ParseAddr(st.GetNeighborAddress())
		if err != nil {
			return
		}
		s.push(item{kind: itemPeer, peer: addr, state: fromAPIState(st.GetSessionState()), admin: st.GetAdminState(),
			routerID: st.GetRouterId(), peerAS: st.GetPeerAsn()})
	case *api.WatchEventResponse_Table:
		s.pushPaths(itemReceived, ev.Table.GetPaths())
	}
}

func (s *Speaker) onWatchAccepted(r *api.WatchEventResponse) {
	if ev, ok := r.Event.(*api.WatchEventResponse_Table); ok {
		s.pushPaths(itemAccepted, ev.Table.GetPaths())
	}
}

// pushPaths queues paths grouped by the peer they came from (End-of-RIB markers apart).
func (s *Speaker) pushPaths(kind itemKind, paths []*api.Path) {
	at := s.now()
	var cur *item
	for _, p := range paths {
		addr, err := netip.ParseAddr(p.GetNeighborIp())
		if err != nil {
			continue
		}
		if p.GetNlri() == nil && len(p.GetNlriBinary()) == 0 {
			if kind == itemReceived {
				f := IPv4
				if p.GetFamily().GetAfi() == api.Family_AFI_IP6 {
					f = IPv6
				}
				if cur != nil {
					s.q.push(*cur)
					cur = nil
				}
				s.q.push(item{kind: itemEndOfRIB, at: at, peer: addr, family: f})
			}
			continue
		}
		if cur == nil || cur.peer != addr {
			if cur != nil {
				s.q.push(*cur)
			}
			cur = &item{kind: kind, at: at, peer: addr}
		}
		cur.paths = append(cur.paths, p)
	}
	if cur != nil {
		s.q.push(*cur)
	}
}

func fromAPIState(st api.PeerState_SessionState) State {
	switch st {
	case api.PeerState_IDLE:
		return StateIdle
	case api.PeerState_CONNECT:
		return StateConnect
	case api.PeerState_ACTIVE:
		return StateActive
	case api.PeerState_OPENSENT:
		return StateOpenSent
	case api.PeerState_OPENCONFIRM:
		return StateOpenConfirm
	case api.PeerState_ESTABLISHED:
		return StateEstablished
	}
	return StateUnknown
}

// decodePath turns a watched path into ours; ok is false for what is not IPv4/IPv6 unicast.
func decodePath(p *api.Path) (Path, bool) {
	nlri, err := apiutil.GetNativeNlri(p)
	if err != nil {
		return Path{}, false
	}
	pf, ok := nativePrefix(nlri)
	if !ok {
		return Path{}, false
	}
	out := Path{Prefix: pf, Withdrawn: p.GetIsWithdraw()}
	if out.Withdrawn {
		return out, true
	}
	attrs, err := apiutil.GetNativePathAttributes(p)
	if err != nil {
		return Path{}, false
	}
	for _, a := range attrs {
		switch v := a.(type) {
		case *bgppkt.PathAttributeOrigin:
			out.Origin = route.Origin(v.Value)
		case *bgppkt.PathAttributeAsPath:
			for _, seg := range v.Value {
				switch seg.GetType() {
				case bgppkt.BGP_ASPATH_ATTR_TYPE_SEQ:
					out.ASPathLen += len(seg.GetAS())
				case bgppkt.BGP_ASPATH_ATTR_TYPE_SET:
					out.ASPathLen++
				}
				out.ASPath = append(out.ASPath, seg.GetAS()...)
			}
		case *bgppkt.PathAttributeNextHop:
			if a, ok := netip.AddrFromSlice(v.Value); ok {
				out.NextHop = a.Unmap()
			}
		case *bgppkt.PathAttributeMpReachNLRI:
			if a, ok := netip.AddrFromSlice(v.Nexthop); ok && !a.IsUnspecified() {
				out.NextHop = a
				if len(v.Nexthop) == 4 {
					out.NextHop = a.Unmap()
				}
			} else if a, ok := netip.AddrFromSlice(v.LinkLocalNexthop); ok {
				out.NextHop = a
			}
		case *bgppkt.PathAttributeMultiExitDisc:
			out.MED = v.Value
		case *bgppkt.PathAttributeLocalPref:
			out.LocalPref = v.Value
		}
	}
	return out, true
}

// asPathText renders a path's AS path as the log writes it, from the attributes.
func asPathText(p *api.Path) string {
	attrs, err := apiutil.GetNativePathAttributes(p)
	if err != nil {
		return ""
	}
	for _, a := range attrs {
		if v, ok := a.(*bgppkt.PathAttributeAsPath); ok {
			var segs [][]uint32
			var sets []bool
			for _, seg := range v.Value {
				segs = append(segs, seg.GetAS())
				sets = append(sets, seg.GetType() == bgppkt.BGP_ASPATH_ATTR_TYPE_SET || seg.GetType() == bgppkt.BGP_ASPATH_ATTR_TYPE_CONFED_SET)
			}
			return vpnlog.FormatASPath(segs, sets)
		}
	}
	return ""
}

func logRoute(p Path, asPath string) vpnlog.Route {
	lp := p.LocalPref
	if lp == 0 {
		lp = route.DefaultLocalPref
	}
	return vpnlog.Route{Prefix: p.Prefix, ASPath: asPath, LocalPref: lp, MED: p.MED, NextHop: p.NextHop}
}

// worker handles queued items until the queue is closed and empty.
func (s *Speaker) worker() {
	defer close(s.done)
	for range s.q.wake {
		items, closed := s.q.drain()
		if len(items) > 0 {
			s.handle(items)
		}
		if closed {
			if items, _ := s.q.drain(); len(items) > 0 {
				s.handle(items)
			}
			return
		}
	}
}

// routeBatch collects one drain's changes per source for the route sink: the last word per
// prefix wins.
type routeBatch map[route.Source]map[netip.Prefix]*Path

func (b routeBatch) set(src route.Source, p Path) {
	m := b[src]
	if m == nil {
		m = map[netip.Prefix]*Path{}
		b[src] = m
	}
	m[p.Prefix] = &p
}

func (s *Speaker) handle(items []item) {
	var events []Event
	var barriers []chan struct{}
	batch := routeBatch{}
	s.mu.Lock()
	for _, it := range items {
		if it.kind == itemBarrier {
			barriers = append(barriers, it.barrier)
			continue
		}
		p := s.peers[it.peer]
		if p == nil {
			continue // deleted meanwhile
		}
		switch it.kind {
		case itemPeer:
			events = s.handleState(p, it, events)
		case itemReceived:
			s.handleReceived(p, it)
		case itemEndOfRIB:
			s.bgpLog(p, it.at, vpnlog.StatusUp, textEndOfRIB(s.side, p.cfg.Address, it.family))
			events = append(events, Event{Type: EventEndOfRIB, Time: it.at, Tunnel: p.cfg.Tunnel, Peer: p.cfg.Address, Family: it.family})
		case itemAccepted:
			events = s.handleAccepted(p, it, batch, events)
		case itemNotification:
			if it.badOpen != nil {
				s.bgpLog(p, it.at, vpnlog.StatusDown, textBadOpen(s.side, p.cfg.Address, it.badOpen[0], it.badOpen[1]))
			}
			text := textNotification(s.side, it.sent, it.code, it.subcode, p.cfg.Address)
			p.lastReason = strings.TrimPrefix(text, s.side+" ")
			s.bgpLog(p, it.at, vpnlog.StatusDown, text)
		case itemPrefixWarning:
			s.bgpLog(p, it.at, vpnlog.StatusUp, textPrefixWarning(s.side, it.count, it.limit, p.cfg.Address))
		case itemPrefixExceeded:
			p.prefixHit = true
			s.bgpLog(p, it.at, vpnlog.StatusDown, textPrefixExceeded(s.side, it.count, it.limit, p.cfg.Address))
		case itemLocalDown:
			p.lastReason = "withdrawn locally: " + it.reason
			s.bgpLog(p, it.at, vpnlog.StatusDown, textLocalDown(s.side, p.cfg.Address, it.reason))
			if len(it.localPaths) > 0 {
				events = append(events, Event{Type: EventPaths, Time: it.at, Tunnel: p.cfg.Tunnel, Peer: p.cfg.Address, Paths: it.localPaths})
			}
		case itemLocalUp:
			s.bgpLog(p, it.at, vpnlog.StatusUp, textLocalUp(s.side, p.cfg.Address, len(it.localPaths)))
			if len(it.localPaths) > 0 {
				events = append(events, Event{Type: EventPaths, Time: it.at, Tunnel: p.cfg.Tunnel, Peer: p.cfg.Address, Paths: it.localPaths})
			}
		}
	}
	s.flushRoutes(batch)
	s.mu.Unlock()
	if s.opts.OnEvent != nil {
		for _, e := range events {
			s.opts.OnEvent(e)
		}
	}
	for _, b := range barriers {
		close(b)
	}
}

func (s *Speaker) bgpLog(p *peer, at time.Time, st vpnlog.Status, text string) {
	s.opts.Log.Write(vpnlog.NewBGPStatus(p.cfg.resourceID(), at, st, text))
}

func (s *Speaker) handleState(p *peer, it item, events []Event) []Event {
	if it.admin == api.PeerState_PFX_CT && p.restart == nil && p.cfg.PrefixLimitRestart > 0 {
		addr := p.cfg.Address
		p.prefixHit = true
		p.restart = time.AfterFunc(p.cfg.PrefixLimitRestart, func() { s.prefixLimitRestart(addr) })
	}
	if it.state == p.state || it.state == StateUnknown {
		return events
	}
	old := p.state
	p.state = it.state
	status := vpnlog.StatusDown
	if it.state == StateEstablished {
		status = vpnlog.StatusUp
	}
	if it.state == StateOpenConfirm {
		// Both OPENs have crossed: ours as configured; the peer's AS and router ID from the
		// event, the hold time as negotiated (gobgp's API does not expose the peer's OPEN).
		s.bgpLog(p, it.at, vpnlog.StatusDown, textOpenSent(s.side, p.cfg.Address, s.cfg.ASN, int(p.cfg.HoldTime/time.Second), s.cfg.RouterID))
		s.bgpLog(p, it.at, vpnlog.StatusDown, textOpenReceived(s.side, p.cfg.Address, it.peerAS, s.negotiatedHold(p), it.routerID))
	}
	s.bgpLog(p, it.at, status, textStateChange(s.side, old, it.state, p.cfg.Address))
	ev := Event{Type: EventState, Time: it.at, Tunnel: p.cfg.Tunnel, Peer: p.cfg.Address, State: it.state, OldState: old}
	if old == StateEstablished {
		ev.Reason = p.lastReason
		p.received = map[netip.Prefix]vpnlog.Route{} // gobgp dropped the Adj-RIB-In
	}
	if it.state == StateEstablished {
		p.lastReason = ""
	}
	return append(events, ev)
}

// negotiatedHold asks gobgp (the OPEN was just processed; the value stays until the next one).
func (s *Speaker) negotiatedHold(p *peer) int {
	hold := int(p.cfg.HoldTime / time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = s.srv.ListPeer(ctx, &api.ListPeerRequest{Address: p.cfg.Address.String()}, func(ap *api.Peer) {
		if n := ap.GetTimers().GetState().GetNegotiatedHoldTime(); n > 0 {
			hold = int(n)
		}
	})
	return hold
}

func (s *Speaker) prefixLimitRestart(addr netip.Addr) {
	s.mu.Lock()
	p := s.peers[addr]
	if p == nil || s.closed {
		s.mu.Unlock()
		return
	}
	p.restart = nil
	p.prefixHit = false
	s.mu.Unlock()
	if err := s.srv.EnablePeer(context.Background(), &api.EnablePeerRequest{Address: addr.String()}); err != nil {
		s.log.Warn("bgp: restart after prefix limit", "peer", addr, "err", err)
	}
}

// handleReceived logs what the peer sent, with our verdict on each route.
func (s *Speaker) handleReceived(p *peer, it item) {
	var asPaths []string
	for _, ap := range it.paths {
		path, ok := decodePath(ap)
		if !ok {
			continue
		}
		if path.Withdrawn {
			lr, known := p.received[path.Prefix]
			if !known {
				lr = vpnlog.Route{Prefix: path.Prefix}
			}
			delete(p.received, path.Prefix)
			s.opts.Log.Write(vpnlog.NewRouteStatus(p.cfg.resourceID(), it.at, vpnlog.StatusWithdrawn, lr, ""))
			continue
		}
		text := asPathText(ap)
		if !slices.Contains(asPaths, text) {
			asPaths = append(asPaths, text)
		}
		lr := logRoute(path, text)
		status := vpnlog.StatusAdvertised
		if _, known := p.received[path.Prefix]; known {
			status = vpnlog.StatusUpdated
		}
		p.received[path.Prefix] = lr
		details := ""
		switch {
		case slices.Contains(path.ASPath, s.cfg.ASN):
			details = deniedOwnAS
		case !p.cfg.connected(path.NextHop):
			details = deniedNonConnected
		}
		s.opts.Log.Write(vpnlog.NewRouteStatus(p.cfg.resourceID(), it.at, status, lr, details))
	}
	for _, a := range asPaths {
		s.bgpLog(p, it.at, vpnlog.StatusUp, textUpdateAttrs(s.side, p.cfg.Address, a))
	}
}

// handleAccepted keeps what import policy accepted and feeds it to the route sink (unless
// PeerDown is in force), refusing non-connected next hops as the concentrator does.
func (s *Speaker) handleAccepted(p *peer, it item, batch routeBatch, events []Event) []Event {
	src := route.Source{Tunnel: p.cfg.Tunnel, Peer: p.cfg.Address}
	var changed []Path
	for _, ap := range it.paths {
		path, ok := decodePath(ap)
		if !ok {
			continue
		}
		if !path.Withdrawn && !p.cfg.connected(path.NextHop) {
			path = Path{Prefix: path.Prefix, Withdrawn: true}
		}
		if path.Withdrawn {
			if _, had := p.accepted[path.Prefix]; !had {
				continue
			}
			delete(p.accepted, path.Prefix)
		} else {
			if cur, had := p.accepted[path.Prefix]; had && slices.Equal(cur.ASPath, path.ASPath) &&
				cur.ASPathLen == path.ASPathLen && cur.Origin == path.Origin && cur.MED == path.MED &&
				cur.LocalPref == path.LocalPref && cur.NextHop == path.NextHop {
				continue // unchanged
			}
			p.accepted[path.Prefix] = path
		}
		if p.suppressed {
			continue // kept for PeerUp, not passed on
		}
		batch.set(src, path)
		changed = append(changed, path)
	}
	if len(changed) > 0 {
		events = append(events, Event{Type: EventPaths, Time: it.at, Tunnel: p.cfg.Tunnel, Peer: p.cfg.Address, Paths: changed})
	}
	return events
}

func (s *Speaker) flushRoutes(b routeBatch) {
	if s.opts.Routes == nil {
		return
	}
	for src, m := range b {
		var add []route.Path
		var wd []netip.Prefix
		for pf, p := range m {
			if p.Withdrawn {
				wd = append(wd, pf)
			} else {
				add = append(add, p.Route())
			}
		}
		if err := s.opts.Routes.Update(src, add, wd); err != nil {
			s.log.Warn("bgp: route sink", "source", src.String(), "err", err)
		}
	}
}
