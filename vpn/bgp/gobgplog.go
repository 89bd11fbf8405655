package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/osrg/gobgp/v3/pkg/log"
	bgppkt "github.com/osrg/gobgp/v3/pkg/packet/bgp"
)

// gobgpLogger is gobgp's logger. It forwards gobgp's own lines to slog and turns the few that
// carry protocol events gobgp's watch API does not (notifications sent and received, hold
// timer expiry, prefix limit) into items for the speaker's event queue. It also keeps, per
// peer and family, the set of prefixes in gobgp's Adj-RIB-In, from gobgp's "received update"
// debug call (made before the prefix limit is checked): that gives the exact counts for the
// maximum-prefix warning and exceeded lines. Written against gobgp v3.37.0's messages; the
// TestLab tests fail if a newer gobgp changes them.
type gobgpLogger struct {
	log  *slog.Logger
	push func(item)

	mu     sync.Mutex
	limits map[netip.Addr]prefixLimit
	rib    map[netip.Addr]map[Family]map[netip.Prefix]struct{}
	warned map[netip.Addr]map[Family]bool
}

type prefixLimit struct{ max, warnPct int }

func newGobgpLogger(l *slog.Logger, push func(item)) *gobgpLogger {
	return &gobgpLogger{
		log: l, push: push,
		limits: map[netip.Addr]prefixLimit{},
		rib:    map[netip.Addr]map[Family]map[netip.Prefix]struct{}{},
		warned: map[netip.Addr]map[Family]bool{},
	}
}

func (g *gobgpLogger) setLimit(peer netip.Addr, max, warnPct int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.limits[peer] = prefixLimit{max, warnPct}
}

func (g *gobgpLogger) forget(peer netip.Addr) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.limits, peer)
	delete(g.rib, peer)
	delete(g.warned, peer)
}

func (g *gobgpLogger) reset(peer netip.Addr) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.rib, peer)
	delete(g.warned, peer)
}

// GetLevel is always Debug: the "received update" call is needed for the counts. Debug lines
// reach slog only when its handler has debug enabled.
func (g *gobgpLogger) GetLevel() log.LogLevel { return log.DebugLevel }
func (g *gobgpLogger) SetLevel(log.LogLevel)  {}

func (g *gobgpLogger) Panic(msg string, f log.Fields) { g.out(slog.LevelError, msg, f) }
func (g *gobgpLogger) Fatal(msg string, f log.Fields) { g.out(slog.LevelError, msg, f) }
func (g *gobgpLogger) Error(msg string, f log.Fields) { g.out(slog.LevelError, msg, f) }

func (g *gobgpLogger) Warn(msg string, f log.Fields) {
	peer := fieldAddr(f, "Key")
	switch msg {
	case "sent notification", "received notification":
		it := item{kind: itemNotification, peer: peer, sent: msg == "sent notification"}
		it.code, _ = f["Code"].(uint8)
		it.subcode, _ = f["Subcode"].(uint8)
		if me, ok := f["Data"].(*bgppkt.MessageError); ok && me != nil {
			it.code, it.subcode = me.TypeCode, me.SubTypeCode
			var expected, remote uint32
			if n, _ := fmt.Sscanf(me.Message, "as number mismatch expected %d, received %d", &expected, &remote); n == 2 {
				it.badOpen = &[2]uint32{remote, expected}
			}
		}
		if !(it.sent && it.code == 4) { // our hold timer expiry is reported by "hold timer expired"
			g.push(it)
		}
	case "hold timer expired":
		g.push(item{kind: itemNotification, peer: peer, sent: true, code: 4})
	case "prefix limit reached":
		if _, warning := f["Pct"]; !warning { // we leave gobgp's threshold warning off
			fam := IPv4
			if s, _ := f["Family"].(string); strings.HasPrefix(s, "ipv6") {
				fam = IPv6
			}
			g.mu.Lock()
			n, lim := len(g.rib[peer][fam]), g.limits[peer]
			g.mu.Unlock()
			g.push(item{kind: itemPrefixExceeded, peer: peer, family: fam, count: n, limit: lim.max})
		}
	}
	if msg == "No matching path for withdraw found, may be path was not installed into table" {
		// A peer withdrawing what it never sent (FRR withdraws our own prefixes towards us).
		g.out(slog.LevelDebug, msg, f)
		return
	}
	g.out(slog.LevelWarn, msg, f)
}

func (g *gobgpLogger) Info(msg string, f log.Fields) {
	if msg == "Peer Down" {
		// gobgp drops the peer's Adj-RIB-In right after: start counting afresh.
		g.reset(fieldAddr(f, "Key"))
	}
	g.out(slog.LevelInfo, msg, f)
}

func (g *gobgpLogger) Debug(msg string, f log.Fields) {
	if msg == "received update" {
		g.countUpdate(f)
		return
	}
	g.out(slog.LevelDebug, msg, f)
}

// countUpdate applies one received UPDATE (withdrawals, then announcements) to the peer's
// prefix sets, and queues a maximum-prefix warning when a family crosses the warning share.
func (g *gobgpLogger) countUpdate(f log.Fields) {
	peer := fieldAddr(f, "Key")
	if !peer.IsValid() {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	rib := g.rib[peer]
	if rib == nil {
		rib = map[Family]map[netip.Prefix]struct{}{}
		g.rib[peer] = rib
	}
	touched := map[Family]bool{}
	set := func(fam Family, p bgppkt.AddrPrefixInterface, add bool) {
		pf, ok := nativePrefix(p)
		if !ok {
			return
		}
		m := rib[fam]
		if m == nil {
			m = map[netip.Prefix]struct{}{}
			rib[fam] = m
		}
		if add {
			m[pf] = struct{}{}
		} else {
			delete(m, pf)
		}
		touched[fam] = true
	}
	if wd, ok := f["withdrawals"].([]*bgppkt.IPAddrPrefix); ok {
		for _, p := range wd {
			set(IPv4, p, false)
		}
	}
	attrs, _ := f["attributes"].([]bgppkt.PathAttributeInterface)
	for _, a := range attrs {
		if u, ok := a.(*bgppkt.PathAttributeMpUnreachNLRI); ok {
			for _, p := range u.Value {
				set(familyOf(u.AFI), p, false)
			}
		}
	}
	if nlri, ok := f["nlri"].([]*bgppkt.IPAddrPrefix); ok {
		for _, p := range nlri {
			set(IPv4, p, true)
		}
	}
	for _, a := range attrs {
		if r, ok := a.(*bgppkt.PathAttributeMpReachNLRI); ok {
			for _, p := range r.Value {
				set(familyOf(r.AFI), p, true)
			}
		}
	}
	lim, ok := g.limits[peer]
	if !ok || lim.max <= 0 {
		return
	}
	for _, fam := range []Family{IPv4, IPv6} {
		if !touched[fam] {
			continue
		}
		n := len(rib[fam])
		w := g.warned[peer]
		if w == nil {
			w = map[Family]bool{}
			g.warned[peer] = w
		}
		over := n*100 > lim.max*lim.warnPct
		switch {
		case over && !w[fam] && n <= lim.max:
			w[fam] = true
			g.push(item{kind: itemPrefixWarning, peer: peer, family: fam, count: n, limit: lim.max})
		case !over:
			w[fam] = false
		}
	}
}

func familyOf(afi uint16) Family {
	if afi == bgppkt.AFI_IP6 {
		return IPv6
	}
	return IPv4
}

func nativePrefix(p bgppkt.AddrPrefixInterface) (netip.Prefix, bool) {
	var ip []byte
	var l uint8
	switch v := p.(type) {
	case *bgppkt.IPAddrPrefix:
		ip, l = v.Prefix, v.Length
	case *bgppkt.IPv6AddrPrefix:
		ip, l = v.Prefix, v.Length
	default:
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Prefix{}, false
	}
	if _, is6 := p.(*bgppkt.IPv6AddrPrefix); !is6 {
		a = a.Unmap()
	}
	pf, err := a.Prefix(int(l))
	return pf, err == nil
}

func fieldAddr(f log.Fields, key string) netip.Addr {
	s, _ := f[key].(string)
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}
	}
	return a
}

// out forwards a gobgp line to slog: scalar fields only, never anything password-like.
func (g *gobgpLogger) out(level slog.Level, msg string, f log.Fields) {
	ctx := context.Background()
	if !g.log.Enabled(ctx, level) {
		return
	}
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	attrs := make([]any, 0, 2*len(keys)+2)
	attrs = append(attrs, "component", "gobgp")
	for _, k := range keys {
		if strings.Contains(strings.ToLower(k), "password") || k == "Topic" {
			continue
		}
		s := fmt.Sprint(f[k])
		if len(s) > 200 {
			s = s[:200] + "..."
		}
		attrs = append(attrs, k, s)
	}
	g.log.Log(ctx, level, msg, attrs...)
}
