package bgp

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	"github.com/osrg/gobgp/v3/pkg/log"
	bgppkt "github.com/osrg/gobgp/v3/pkg/packet/bgp"

	"meshroot/vpn/route"
	"meshroot/vpn/vpnlog"
)

var netipCmp = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

func goodConfig() Config {
	return Config{ASN: 65001, Prefixes: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")}, Peers: []PeerConfig{{
		Tunnel: "t1", Address: netip.MustParseAddr("169.254.10.1"), Local: netip.MustParsePrefix("169.254.10.2/30"), ASN: 64512,
	}}}
}

func TestConfigDefaults(t *testing.T) {
	c := goodConfig().withDefaults()
	p := c.Peers[0]
	if c.RouterID.String() != "169.254.10.2" || c.MaxAdvertised != 1000 {
		t.Errorf("defaults: router ID %v, MaxAdvertised %d; want 169.254.10.2 (our first inside address), 1000", c.RouterID, c.MaxAdvertised)
	}
	if p.HoldTime != 30*time.Second || p.Keepalive != 10*time.Second || p.MaxPrefixes != 5000 || p.WarnPercent != 90 ||
		!slices.Equal(p.Families, []Family{IPv4}) || p.resourceID() != "t1" {
		t.Errorf("peer defaults = %+v; want hold 30 s, keepalive 10 s, 5000 prefixes, warn 90 %%, ipv4, resource t1", p)
	}
	c2 := goodConfig()
	c2.Peers[0].HoldTime = 9 * time.Second
	if k := c2.withDefaults().Peers[0].Keepalive; k != 3*time.Second {
		t.Errorf("keepalive for hold 9 s = %v; want 3 s", k)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := goodConfig().Validate(); err != nil {
		t.Fatalf("Validate(good) = %v", err)
	}
	for _, c := range []struct {
		name  string
		mod   func(*Config)
		field string
	}{
		{"no ASN", func(c *Config) { c.ASN = 0 }, "ASN"},
		{"AS_TRANS", func(c *Config) { c.ASN = 23456 }, "ASN"},
		{"no router ID", func(c *Config) {
			c.Peers[0].Address, c.Peers[0].Local = netip.MustParseAddr("fd00::1"), netip.MustParsePrefix("fd00::2/126")
		}, "RouterID"},
		{"too many prefixes", func(c *Config) {
			c.MaxAdvertised = 1
			c.Prefixes = append(c.Prefixes, netip.MustParsePrefix("192.168.2.0/24"))
		}, "MaxAdvertised"},
		{"no tunnel", func(c *Config) { c.Peers[0].Tunnel = "" }, "Tunnel"},
		{"no address", func(c *Config) { c.Peers[0].Address = netip.Addr{} }, "Address"},
		{"duplicate", func(c *Config) { c.Peers = append(c.Peers, c.Peers[0]) }, "duplicate"},
		{"local family", func(c *Config) {
			c.Peers[0].Local, c.RouterID = netip.MustParsePrefix("fd00::2/126"), netip.MustParseAddr("1.1.1.1")
		}, "Local"},
		{"not the other end", func(c *Config) { c.Peers[0].Local = netip.MustParsePrefix("169.254.20.2/30") }, "other end"},
		{"same address", func(c *Config) { c.Peers[0].Local = netip.MustParsePrefix("169.254.10.1/30") }, "other end"},
		{"Local6 v4", func(c *Config) { c.Peers[0].Local6 = netip.MustParsePrefix("10.0.0.1/30") }, "Local6"},
		{"iBGP", func(c *Config) { c.Peers[0].ASN = 65001 }, "eBGP"},
		{"family", func(c *Config) { c.Peers[0].Families = []Family{"ipx"} }, "Families"},
		{"v4 over v6", func(c *Config) {
			c.Peers[0].Address, c.Peers[0].Local, c.Peers[0].Families = netip.MustParseAddr("fd00::1"), netip.MustParsePrefix("fd00::2/126"), []Family{IPv4}
			c.RouterID = netip.MustParseAddr("1.1.1.1")
		}, "IPv4 over an IPv6"},
		{"hold", func(c *Config) { c.Peers[0].HoldTime = 2 * time.Second }, "HoldTime"},
		{"hold fraction", func(c *Config) { c.Peers[0].HoldTime = 3500 * time.Millisecond }, "HoldTime"},
		{"keepalive", func(c *Config) { c.Peers[0].Keepalive = 30 * time.Second }, "Keepalive"},
		{"warn", func(c *Config) { c.Peers[0].WarnPercent = 101 }, "WarnPercent"},
		{"prepend", func(c *Config) { c.Peers[0].Prepend = 11 }, "Prepend"},
		{"passive", func(c *Config) { c.Peers[0].Passive = true }, "Listen"},
	} {
		cfg := goodConfig()
		c.mod(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%s: Validate() = %v; want an error naming %q", c.name, err, c.field)
		}
	}
}

func TestConnected(t *testing.T) {
	p := PeerConfig{Local: netip.MustParsePrefix("169.254.10.2/30"), Local6: netip.MustParsePrefix("fd00:10::2/126")}
	for _, c := range []struct {
		nh   string
		want bool
	}{
		{"169.254.10.1", true}, {"169.254.10.5", false}, {"::ffff:169.254.10.1", true},
		{"fd00:10::1", true}, {"fd00:11::1", false}, {"fe80::1", true}, {"10.0.0.1", false},
	} {
		if got := p.connected(netip.MustParseAddr(c.nh)); got != c.want {
			t.Errorf("connected(%s) = %v; want %v", c.nh, got, c.want)
		}
	}
}

func TestNotificationTexts(t *testing.T) {
	peer := netip.MustParseAddr("169.254.10.1")
	for _, c := range []struct {
		sent          bool
		code, subcode uint8
		want          string
	}{
		{true, 6, 1, "CGW-side peer sent a notification 6/1 (Cease/Maximum Number of Prefixes Reached) to neighbor 169.254.10.1"},
		{false, 6, 1, "CGW-side peer received notification 6/1 (Cease/Maximum Number of Prefixes Reached) from neighbor 169.254.10.1"},
		{true, 6, 2, "CGW-side peer sent a notification 6/2 (Cease/Administrative Shutdown) to neighbor 169.254.10.1"},
		{false, 6, 3, "CGW-side peer received notification 6/3 (Cease/Peer Unconfigured) from neighbor 169.254.10.1"},
		{true, 6, 4, "CGW-side peer sent a notification 6/4 (Cease/Administrative Reset) to neighbor 169.254.10.1"},
		{true, 6, 5, "CGW-side peer sent a notification 6/5 (Cease/Connection Rejected) to neighbor 169.254.10.1"},
		{true, 6, 6, "CGW-side peer sent a notification 6/6 (Cease/Other Configuration Change) to neighbor 169.254.10.1"},
		{false, 6, 7, "CGW-side peer received notification 6/7 (Cease/Connection Collision Resolution) from neighbor 169.254.10.1"},
		{true, 4, 0, "CGW-side peer sent a Hold Timer Expired notification to neighbor 169.254.10.1"},
		{true, 2, 2, "CGW-side peer sent a notification 2/2 (OPEN Message Error/Bad Peer AS) to neighbor 169.254.10.1"},
		{true, 9, 9, "CGW-side peer sent a notification 9/9 (Code 9/Subcode 9) to neighbor 169.254.10.1"},
	} {
		if got := textNotification(DefaultSide, c.sent, c.code, c.subcode, peer); got != c.want {
			t.Errorf("textNotification(%v, %d, %d) = %q; want %q", c.sent, c.code, c.subcode, got, c.want)
		}
	}
}

func TestPolicies(t *testing.T) {
	med := uint32(50)
	c := Config{ASN: 65001, Peers: []PeerConfig{
		{Tunnel: "t1", Address: netip.MustParseAddr("169.254.10.1"), Local: netip.MustParsePrefix("169.254.10.2/30"), Local6: netip.MustParsePrefix("fd00:10::2/126"),
			ASN: 64512, Families: []Family{IPv4, IPv6}, MED: &med, Prepend: 2},
		{Tunnel: "t2", Address: netip.MustParseAddr("169.254.11.1"), Local: netip.MustParsePrefix("169.254.11.2/30"), ASN: 64512, Families: []Family{IPv4, IPv6}},
		{Tunnel: "t2", Address: netip.MustParseAddr("fd00:11::1"), Local: netip.MustParsePrefix("fd00:11::2/126"), ASN: 64512},
	}}
	req := policies(c)
	if got := req.DefinedSets[0].List; !slices.Equal(got, []string{"_65001_"}) {
		t.Errorf("own-AS set = %v; want [_65001_]", got)
	}
	exp := req.Policies[1]
	var names []string
	for _, s := range exp.Statements {
		names = append(names, s.Name)
	}
	want := []string{"meshroot-export-0-v6", "meshroot-export-0", "meshroot-export-1-v6", "meshroot-export-1", "meshroot-export-2"}
	if d := cmp.Diff(want, names); d != "" {
		t.Errorf("export statements (-want +got):\n%s", d)
	}
	if nh := exp.Statements[0].Actions.Nexthop.GetAddress(); nh != "fd00:10::2" {
		t.Errorf("IPv6 next hop over tunnel 1's IPv4 session = %q; want Local6 fd00:10::2", nh)
	}
	if nh := exp.Statements[2].Actions.Nexthop.GetAddress(); nh != "::ffff:169.254.11.2" {
		t.Errorf("IPv6 next hop over tunnel 2's IPv4 session = %q; want the IPv4-mapped local address", nh)
	}
	a := exp.Statements[1].Actions
	if a.Med.GetValue() != 50 || a.AsPrepend.GetRepeat() != 2 || a.AsPrepend.GetAsn() != 65001 || a.RouteAction != api.RouteAction_ACCEPT {
		t.Errorf("tunnel 1 export actions = %v; want MED 50, prepend 65001 x2, accept", a)
	}
	for _, s := range exp.Statements {
		if s.Conditions.RouteType != api.Conditions_ROUTE_TYPE_LOCAL {
			t.Errorf("export statement %s exports more than our own prefixes: %v", s.Name, s.Conditions)
		}
	}
}

// recordingSink is a RouteSink for unit tests.
type recordingSink struct {
	mu    sync.Mutex
	calls []sinkCall
}

type sinkCall struct {
	Src       route.Source
	Paths     []route.Path
	Withdrawn []netip.Prefix
}

func (r *recordingSink) Update(src route.Source, paths []route.Path, wd []netip.Prefix) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	slices.SortFunc(paths, func(a, b route.Path) int { return comparePrefix(a.Prefix, b.Prefix) })
	slices.SortFunc(wd, comparePrefix)
	r.calls = append(r.calls, sinkCall{src, paths, wd})
	return nil
}

func (r *recordingSink) get() []sinkCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

func apiPathFor(t *testing.T, pf, nh string, asPath []uint32, med uint32, withdraw bool, from string) *api.Path {
	t.Helper()
	p := netip.MustParsePrefix(pf)
	var nlri bgppkt.AddrPrefixInterface
	var attrs []bgppkt.PathAttributeInterface
	attrs = append(attrs, bgppkt.NewPathAttributeOrigin(0),
		bgppkt.NewPathAttributeAsPath([]bgppkt.AsPathParamInterface{bgppkt.NewAs4PathParam(bgppkt.BGP_ASPATH_ATTR_TYPE_SEQ, asPath)}),
		bgppkt.NewPathAttributeMultiExitDisc(med))
	if p.Addr().Is4() {
		nlri = bgppkt.NewIPAddrPrefix(uint8(p.Bits()), p.Addr().String())
		attrs = append(attrs, bgppkt.NewPathAttributeNextHop(nh))
	} else {
		nlri = bgppkt.NewIPv6AddrPrefix(uint8(p.Bits()), p.Addr().String())
		attrs = append(attrs, bgppkt.NewPathAttributeMpReachNLRI(nh, []bgppkt.AddrPrefixInterface{nlri}))
	}
	ap, err := apiutil.NewPath(nlri, withdraw, attrs, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ap.NeighborIp = from
	return ap
}

// eventLog collects events for tests.
type eventLog struct {
	mu     sync.Mutex
	events []Event
}

func (l *eventLog) add(e Event) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

func (l *eventLog) get() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events)
}

// loopbackSpeaker starts a real gobgp speaker whose only peer is on loopback (127.0.0.2, where
// nothing listens): the session goes Idle -> Active and stays there (refused connections keep
// it in Active); the pipeline is then driven by injected items.
func loopbackSpeaker(t *testing.T, mem *vpnlog.Memory, sink RouteSink, events *eventLog) *Speaker {
	t.Helper()
	cfg := Config{ASN: 65001, RouterID: netip.MustParseAddr("10.255.0.1"), Prefixes: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")},
		Peers: []PeerConfig{{Tunnel: "t1", Address: netip.MustParseAddr("127.0.0.2"), Local: netip.MustParsePrefix("127.0.0.1/8"),
			ASN: 64512, Families: []Family{IPv4, IPv6}, ConnectRetry: 60 * time.Second, ResourceID: "vpn-1_1.2.3.4"}}}
	opts := Options{Log: mem, Routes: sink, Now: func() time.Time { return time.UnixMilli(1762580400000) }}
	if events != nil {
		opts.OnEvent = events.add
	}
	s, err := Start(context.Background(), cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		settle(s)
		s.mu.Lock()
		st := s.peers[netip.MustParseAddr("127.0.0.2")].state
		s.mu.Unlock()
		if st == StateActive {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("loopback session state %s; want Active", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
	mem.Reset()
	return s
}

// settle waits until the worker has handled everything queued so far.
func settle(s *Speaker) {
	b := make(chan struct{})
	s.push(item{kind: itemBarrier, barrier: b})
	<-b
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestSpeakerPipeline(t *testing.T) {
	var mem vpnlog.Memory
	var sink recordingSink
	var events eventLog
	s := loopbackSpeaker(t, &mem, &sink, &events)
	peer := "127.0.0.2"
	src := route.Source{Tunnel: "t1", Peer: netip.MustParseAddr(peer)}

	// The peer sends three routes: one fine, one with our AS, one with a far next hop.
	received := []*api.Path{
		apiPathFor(t, "10.0.0.0/16", "127.0.0.2", []uint32{64512}, 100, false, peer),
		apiPathFor(t, "10.9.0.0/16", "127.0.0.2", []uint32{64512, 65001}, 0, false, peer),
		apiPathFor(t, "10.8.0.0/16", "192.0.2.1", []uint32{64512}, 0, false, peer),
		apiPathFor(t, "2001:db8:a::/48", "::ffff:127.0.0.2", []uint32{64512}, 7, false, peer),
	}
	s.push(item{kind: itemReceived, peer: src.Peer, paths: received})
	// Import policy accepts the first, third and fourth (the own-AS one comes as a withdrawal).
	s.push(item{kind: itemAccepted, peer: src.Peer, paths: []*api.Path{received[0], received[2], received[3],
		apiPathFor(t, "10.9.0.0/16", "", nil, 0, true, peer)}})
	settle(s)

	var lines []string
	for _, r := range mem.BGP() {
		if r.Type == vpnlog.RouteStatus {
			lines = append(lines, string(r.Status)+" "+r.Route.Prefix.String()+" "+r.Route.ASPath+" "+r.Details)
		} else {
			lines = append(lines, r.Details)
		}
	}
	want := []string{
		"ADVERTISED 10.0.0.0/16 64512 ",
		"ADVERTISED 10.9.0.0/16 64512 65001 DENIED due to: as-path contains our own AS",
		"ADVERTISED 10.8.0.0/16 64512 DENIED due to: non-connected next-hop",
		"ADVERTISED 2001:db8:a::/48 64512 ",
		"CGW-side peer received update with attributes from neighbor 127.0.0.2: AS path: 64512",
		"CGW-side peer received update with attributes from neighbor 127.0.0.2: AS path: 64512 65001",
	}
	if d := cmp.Diff(want, lines); d != "" {
		t.Errorf("BGP log (-want +got):\n%s", d)
	}
	wantSink := []sinkCall{{Src: src, Paths: []route.Path{
		{Prefix: netip.MustParsePrefix("10.0.0.0/16"), ASPathLen: 1, MED: 100, NextHop: netip.MustParseAddr("127.0.0.2")},
		{Prefix: netip.MustParsePrefix("2001:db8:a::/48"), ASPathLen: 1, MED: 7, NextHop: netip.MustParseAddr("::ffff:127.0.0.2")},
	}}}
	if d := cmp.Diff(wantSink, sink.get(), netipCmp, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("route sink (-want +got):\n%s", d)
	}

	// PeerDown: the accepted paths leave the sink before PeerDown returns.
	if err := s.PeerDown("t1", "DPD timeout"); err != nil {
		t.Fatal(err)
	}
	calls := sink.get()
	last := calls[len(calls)-1]
	if d := cmp.Diff(sinkCall{Src: src, Withdrawn: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16"), netip.MustParsePrefix("2001:db8:a::/48")}}, last, netipCmp, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("sink call made by PeerDown (-want +got):\n%s", d)
	}
	// While down, what the session still reports does not reach the sink, but is kept.
	s.push(item{kind: itemAccepted, peer: src.Peer, paths: []*api.Path{apiPathFor(t, "10.1.0.0/16", "127.0.0.2", []uint32{64512}, 0, false, peer)}})
	settle(s)
	if n := len(sink.get()); n != len(calls) {
		t.Errorf("sink calls after PeerDown = %d; want still %d", n, len(calls))
	}
	if err := s.PeerDown("nope", ""); err == nil {
		t.Errorf("PeerDown(unknown tunnel) = nil; want an error")
	}
	// PeerUp: everything the session holds goes back at once, without a new session.
	if err := s.PeerUp("t1"); err != nil {
		t.Fatal(err)
	}
	calls = sink.get()
	var restored []string
	for _, p := range calls[len(calls)-1].Paths {
		restored = append(restored, p.Prefix.String())
	}
	if d := cmp.Diff([]string{"10.0.0.0/16", "10.1.0.0/16", "2001:db8:a::/48"}, restored); d != "" {
		t.Errorf("paths restored by PeerUp (-want +got):\n%s", d)
	}
	s.push(item{kind: itemAccepted, peer: src.Peer, paths: []*api.Path{apiPathFor(t, "10.1.0.0/16", "", nil, 0, true, peer)}})
	settle(s)
	if calls := sink.get(); len(calls[len(calls)-1].Withdrawn) != 1 {
		t.Errorf("sink after PeerUp and a withdrawal: %+v; want 10.1.0.0/16 withdrawn", calls[len(calls)-1])
	}
	var local []string
	for _, r := range mem.BGP() {
		if strings.Contains(r.Details, "routes of neighbor") {
			local = append(local, string(r.Status)+" "+r.Details)
		}
	}
	if d := cmp.Diff([]string{
		"DOWN CGW-side peer withdrew the routes of neighbor 127.0.0.2 locally: DPD timeout",
		"UP CGW-side peer restored the routes of neighbor 127.0.0.2: 3 prefixes",
	}, local); d != "" {
		t.Errorf("local withdraw/restore lines (-want +got):\n%s", d)
	}
	var pathEvents int
	for _, e := range events.get() {
		if e.Type == EventPaths {
			pathEvents++
		}
	}
	if pathEvents != 4 {
		t.Errorf("EventPaths events = %d; want 4 (learned, withdrawn locally, restored, withdrawn)", pathEvents)
	}
}

func TestSpeakerStateAndNotificationLines(t *testing.T) {
	var mem vpnlog.Memory
	var events eventLog
	s := loopbackSpeaker(t, &mem, nil, &events)
	peer := netip.MustParseAddr("127.0.0.2")
	s.push(item{kind: itemPeer, peer: peer, state: StateOpenSent})
	s.push(item{kind: itemPeer, peer: peer, state: StateOpenConfirm, peerAS: 64512, routerID: "169.254.10.1"})
	s.push(item{kind: itemPeer, peer: peer, state: StateEstablished})
	s.push(item{kind: itemEndOfRIB, peer: peer, family: IPv6})
	s.push(item{kind: itemNotification, peer: peer, sent: true, code: 4})
	s.push(item{kind: itemPeer, peer: peer, state: StateIdle})
	s.push(item{kind: itemNotification, peer: peer, sent: true, code: 2, subcode: 2, badOpen: &[2]uint32{64512, 64999}})
	s.push(item{kind: itemPrefixWarning, peer: peer, count: 4500, limit: 5000})
	s.push(item{kind: itemPrefixExceeded, peer: peer, count: 5001, limit: 5000})
	settle(s)
	var got []string
	for _, r := range mem.BGP() {
		got = append(got, string(r.Status)+" "+r.Details)
		if r.ResourceID != "vpn-1_1.2.3.4" || r.Time.UnixMilli() != 1762580400000 {
			t.Errorf("record %+v: want resource vpn-1_1.2.3.4 and the injected time", r)
		}
	}
	want := []string{
		"DOWN CGW-side peer BGP session state has changed from Active to OpenSent with neighbor 127.0.0.2",
		"DOWN CGW-side peer sent an OPEN message to neighbor 127.0.0.2: version 4, AS 65001, holdtime 30, router-id 10.255.0.1",
		"DOWN CGW-side peer received an OPEN message from neighbor 127.0.0.2: version 4, AS 64512, negotiated holdtime 30, router-id 169.254.10.1",
		"DOWN CGW-side peer BGP session state has changed from OpenSent to OpenConfirm with neighbor 127.0.0.2",
		"UP CGW-side peer BGP session state has changed from OpenConfirm to Established with neighbor 127.0.0.2",
		"UP CGW-side peer received an End-of-RIB message (ipv6 unicast) from neighbor 127.0.0.2",
		"DOWN CGW-side peer sent a Hold Timer Expired notification to neighbor 127.0.0.2",
		"DOWN CGW-side peer BGP session state has changed from Established to Idle with neighbor 127.0.0.2",
		"DOWN CGW-side peer detected a bad OPEN message from neighbor 127.0.0.2: remote AS is 64512, expected 64999",
		"DOWN CGW-side peer sent a notification 2/2 (OPEN Message Error/Bad Peer AS) to neighbor 127.0.0.2",
		"UP CGW-side peer is reporting a maximum prefix limit warning: received 4500 prefixes from neighbor 127.0.0.2, limit is 5000",
		"DOWN CGW-side peer detected the maximum prefix limit was exceeded: received 5001 prefixes from neighbor 127.0.0.2, limit is 5000",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("BGP log (-want +got):\n%s", d)
	}
	var down *Event
	evs := events.get()
	for i := range evs {
		if evs[i].Type == EventState && evs[i].State == StateIdle {
			down = &evs[i]
		}
	}
	if down == nil || down.OldState != StateEstablished || down.Reason != "sent a Hold Timer Expired notification to neighbor 127.0.0.2" {
		t.Errorf("down event = %+v; want Established -> Idle with the hold timer as reason", down)
	}
}

func TestGobgpLoggerCounts(t *testing.T) {
	var items []item
	g := newGobgpLogger(discardLogger(), func(it item) { items = append(items, it) })
	peer := netip.MustParseAddr("169.254.10.1")
	g.setLimit(peer, 10, 50)
	v4 := func(s string) *bgppkt.IPAddrPrefix {
		p := netip.MustParsePrefix(s)
		return bgppkt.NewIPAddrPrefix(uint8(p.Bits()), p.Addr().String())
	}
	v6 := func(s string) bgppkt.AddrPrefixInterface {
		p := netip.MustParsePrefix(s)
		return bgppkt.NewIPv6AddrPrefix(uint8(p.Bits()), p.Addr().String())
	}
	update := func(nlri, wd []*bgppkt.IPAddrPrefix, attrs ...bgppkt.PathAttributeInterface) {
		g.Debug("received update", log.Fields{"Key": peer.String(), "nlri": nlri, "withdrawals": wd, "attributes": attrs})
	}
	update([]*bgppkt.IPAddrPrefix{v4("10.1.0.0/16"), v4("10.2.0.0/16"), v4("10.3.0.0/16")}, nil)
	update([]*bgppkt.IPAddrPrefix{v4("10.1.0.0/16")}, nil) // again: no change
	update(nil, nil, bgppkt.NewPathAttributeMpReachNLRI("fd00::1", []bgppkt.AddrPrefixInterface{v6("2001:db8::/32")}))
	if len(items) != 0 {
		t.Fatalf("items after 3 of 10 prefixes = %+v; want none", items)
	}
	update([]*bgppkt.IPAddrPrefix{v4("10.4.0.0/16"), v4("10.5.0.0/16"), v4("10.6.0.0/16")}, nil)
	if len(items) != 1 || items[0].kind != itemPrefixWarning || items[0].count != 6 || items[0].limit != 10 || items[0].family != IPv4 {
		t.Fatalf("items after 6 of 10 = %+v; want one warning at 6", items)
	}
	update([]*bgppkt.IPAddrPrefix{v4("10.7.0.0/16")}, []*bgppkt.IPAddrPrefix{v4("10.1.0.0/16")})
	if len(items) != 1 {
		t.Errorf("a second warning while still over: %+v", items)
	}
	// Below the threshold and over again: warned again.
	update(nil, []*bgppkt.IPAddrPrefix{v4("10.2.0.0/16"), v4("10.3.0.0/16")})
	update([]*bgppkt.IPAddrPrefix{v4("10.2.0.0/16"), v4("10.3.0.0/16")}, nil)
	if len(items) != 2 || items[1].count != 6 {
		t.Errorf("items after dropping under and back = %+v; want a second warning at 6", items)
	}
	for i := 20; i < 25; i++ {
		update([]*bgppkt.IPAddrPrefix{v4(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16).String())}, nil)
	}
	g.Warn("prefix limit reached", log.Fields{"Key": peer.String(), "Family": "ipv4-unicast"})
	last := items[len(items)-1]
	if last.kind != itemPrefixExceeded || last.count != 11 || last.limit != 10 {
		t.Errorf("exceeded item = %+v; want count 11, limit 10", last)
	}
	g.Info("Peer Down", log.Fields{"Key": peer.String()})
	update([]*bgppkt.IPAddrPrefix{v4("10.1.0.0/16")}, nil)
	g.Warn("prefix limit reached", log.Fields{"Key": peer.String(), "Family": "ipv4-unicast"})
	if last := items[len(items)-1]; last.count != 1 {
		t.Errorf("count after Peer Down and one prefix = %d; want 1", last.count)
	}

	items = nil
	g.Warn("sent notification", log.Fields{"Key": peer.String(), "Data": bgppkt.NewMessageError(2, 2, nil, "as number mismatch expected 64999, received 64512")})
	g.Warn("sent notification", log.Fields{"Key": peer.String(), "Code": uint8(4), "Subcode": uint8(0)}) // after "hold timer expired"
	g.Warn("hold timer expired", log.Fields{"Key": peer.String()})
	g.Warn("received notification", log.Fields{"Key": peer.String(), "Code": uint8(6), "Subcode": uint8(2)})
	want := []item{
		{kind: itemNotification, peer: peer, sent: true, code: 2, subcode: 2, badOpen: &[2]uint32{64512, 64999}},
		{kind: itemNotification, peer: peer, sent: true, code: 4},
		{kind: itemNotification, peer: peer, code: 6, subcode: 2},
	}
	if d := cmp.Diff(want, items, cmp.AllowUnexported(item{}), netipCmp); d != "" {
		t.Errorf("notification items (-want +got):\n%s", d)
	}
	if g.GetLevel() != log.DebugLevel {
		t.Errorf("GetLevel() = %v; want Debug (the counts need gobgp's update calls)", g.GetLevel())
	}
	g.Error("x", log.Fields{"AuthPassword": "secret-value"}) // must not panic; password fields are dropped
}

func TestSpeakerUpdate(t *testing.T) {
	var mem vpnlog.Memory
	s := loopbackSpeaker(t, &mem, nil, nil)
	ctx := context.Background()
	cfg := s.cfg
	cfg.Prefixes = []netip.Prefix{netip.MustParsePrefix("192.168.2.0/24"), netip.MustParsePrefix("2001:db8:1::/48")}
	med := uint32(9)
	cfg.Peers[0].MED = &med
	cfg.Peers = append(cfg.Peers, PeerConfig{Tunnel: "t2", Address: netip.MustParseAddr("127.0.1.2"), Local: netip.MustParsePrefix("127.0.1.1/24"), ASN: 64512, ConnectRetry: 60 * time.Second})
	if err := s.Update(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	var prefixes []string
	if err := s.srv.ListPath(ctx, &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: familyV4}, func(d *api.Destination) { prefixes = append(prefixes, d.Prefix) }); err != nil {
		t.Fatal(err)
	}
	if err := s.srv.ListPath(ctx, &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: familyV6}, func(d *api.Destination) { prefixes = append(prefixes, d.Prefix) }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(prefixes)
	if d := cmp.Diff([]string{"192.168.2.0/24", "2001:db8:1::/48"}, prefixes); d != "" {
		t.Errorf("advertised after Update (-want +got):\n%s", d)
	}
	st, err := s.Peers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 || st[1].Tunnel != "t2" {
		t.Errorf("Peers() after Update = %+v; want t1 and t2", st)
	}
	// Remove t2 again.
	cfg.Peers = cfg.Peers[:1]
	if err := s.Update(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.Peers(ctx); len(st) != 1 {
		t.Errorf("Peers() after removing t2 = %+v; want t1 only", st)
	}
	bad := cfg
	bad.ASN = 65002
	if err := s.Update(ctx, bad); !errors.Is(err, ErrRestartRequired) {
		t.Errorf("Update(new ASN) = %v; want ErrRestartRequired", err)
	}
	bad = cfg
	bad.Peers = append(slices.Clone(cfg.Peers), cfg.Peers[0])
	if err := s.Update(ctx, bad); err == nil {
		t.Errorf("Update(duplicate peer) = nil; want a validation error")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.PeerUp("t1"); err == nil {
		t.Errorf("PeerUp after Close = nil; want an error")
	}
}
