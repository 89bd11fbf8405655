package ike

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"time"
)

type childState int

const (
	childCreating  childState = iota // being negotiated (not in the data plane yet)
	childInstalled                   // up
	childRekeying                    // our rekey of it is outstanding
	childRekeyed                     // replaced (successor set); waiting for its deletion
	childDeleting                    // our DELETE is outstanding
	childDeleted                     // gone (the inbound half may linger DeleteDelay)
)

var childStateNames = [...]string{"CREATING", "INSTALLED", "REKEYING", "REKEYED", "DELETING", "DELETED"}

func (s childState) String() string { return childStateNames[s] }

// childSA is one CHILD SA (an ESP SA pair). All methods run with the Conn locked.
type childSA struct {
	ike           *ikeSA
	spiIn, spiOut uint32
	suite         *espSuite
	encIn, encOut []byte
	intIn, intOut []byte
	localTS       []TrafficSelector
	remoteTS      []TrafficSelector
	state         childState
	initiator     bool   // we initiated the exchange that created it
	ni, nr        []byte // nonces of that exchange
	inInstalled   bool
	outbound      bool // the data plane sends with it
	installed     time.Time
	redundant     bool     // created in a rekey collision we (or the peer) must delete
	successor     *childSA // replacement after a rekey
	predecessor   *childSA
	peerRekey     *childSA // created answering the peer's rekey while ours was outstanding
	rekeyRetries  int
	rekeyTimer    Timer
	lifeTimer     Timer
	cleanupTimer  Timer
	// offered selectors (initiator side) for checking the responder's narrowing
	offLocal, offRemote []netip.Prefix
}

func (c *Conn) newChild(sa *ikeSA, initiator bool) *childSA {
	ch := &childSA{ike: sa, spiIn: c.newSPI32(), initiator: initiator}
	c.children = append(c.children, ch)
	return ch
}

func (ch *childSA) offerLocal(c *Conn) []netip.Prefix {
	if ch.offLocal != nil {
		return ch.offLocal
	}
	return c.cfg.LocalTS
}

func (ch *childSA) offerRemote(c *Conn) []netip.Prefix {
	if ch.offRemote != nil {
		return ch.offRemote
	}
	return c.cfg.RemoteTS
}

func (ch *childSA) info() ChildInfo {
	i := ChildInfo{SPIIn: ch.spiIn, SPIOut: ch.spiOut, LocalTS: tsPrefixes(ch.localTS), RemoteTS: tsPrefixes(ch.remoteTS), Installed: ch.installed}
	if ch.suite != nil {
		i.Suite = ch.suite.String()
	}
	return i
}

// deriveKeys computes KEYMAT (RFC 7296 §2.17) with the nonces of the creating exchange.
func (ch *childSA) deriveKeys(sa *ikeSA, shared []byte) error {
	k, err := deriveChildKeys(sa.suite.prf, sa.keys.d, ch.suite, shared, ch.ni, ch.nr)
	if err != nil {
		return err
	}
	if ch.initiator {
		ch.encOut, ch.intOut, ch.encIn, ch.intIn = k.encI, k.integI, k.encR, k.integR
	} else {
		ch.encOut, ch.intOut, ch.encIn, ch.intIn = k.encR, k.integR, k.encI, k.integI
	}
	return nil
}

// export is what the data plane gets.
func (ch *childSA) export(c *Conn) *ChildSA {
	sa := ch.ike
	x := &ChildSA{
		SPIIn: ch.spiIn, SPIOut: ch.spiOut,
		EncrID: ch.suite.encr.id, EncrKeyBits: ch.suite.encr.keyBits,
		IntegID: ch.suite.integ.id, ESN: ch.suite.esn,
		EncKeyIn: ch.encIn, EncKeyOut: ch.encOut, IntegKeyIn: ch.intIn, IntegKeyOut: ch.intOut,
		ReplayWindow: c.cfg.ReplayWindow,
		Local:        sa.local, Remote: sa.remote,
		Encap:   sa.natLocal || sa.natRemote || c.cfg.ForceEncap,
		LocalTS: tsPrefixes(ch.localTS), RemoteTS: tsPrefixes(ch.remoteTS),
		Lifetime: c.cfg.ChildLifetime, Suite: ch.suite.String(),
	}
	if x.Encap {
		x.Local = netip.AddrPortFrom(sa.local.Addr(), c.cfg.LocalNATTPort)
		x.Remote = netip.AddrPortFrom(sa.remote.Addr(), sa.remote.Port())
		if !sa.natT {
			x.Remote = netip.AddrPortFrom(sa.remote.Addr(), c.cfg.RemoteNATTPort)
		}
	}
	return x
}

// installChild puts the inbound half into the data plane, and the outbound half too when
// outbound is set (make-before-break: inbound always first).
func (c *Conn) installChild(sa *ikeSA, ch *childSA, outbound bool) {
	ch.ike = sa
	ch.state = childInstalled
	ch.installed = c.now()
	if dp := c.opts.DataPlane; dp != nil && !ch.inInstalled {
		if err := dp.AddInbound(ch.export(c)); err != nil {
			c.log.Error("data plane refused inbound CHILD_SA", "spi_in", fmt.Sprintf("%08x", ch.spiIn), "err", err)
		}
	}
	ch.inInstalled = true
	if outbound {
		c.setOutbound(ch)
	}
	c.scheduleChildTimers(ch)
}

// setOutbound switches outbound traffic to ch.
func (c *Conn) setOutbound(ch *childSA) {
	for _, o := range c.children {
		if o != ch && o.outbound {
			o.outbound = false
		}
	}
	ch.outbound = true
	if dp := c.opts.DataPlane; dp != nil {
		if err := dp.SetOutbound(ch.export(c)); err != nil {
			c.log.Error("data plane refused outbound CHILD_SA", "spi_out", fmt.Sprintf("%08x", ch.spiOut), "err", err)
		}
	}
}

func (c *Conn) childUp(sa *ikeSA, ch *childSA, how string) {
	sa.logger().Info("CHILD_SA installed"+how, "spi_in", fmt.Sprintf("%08x", ch.spiIn), "spi_out", fmt.Sprintf("%08x", ch.spiOut),
		"suite", ch.suite.String(), "ts", fmt.Sprintf("%v === %v", ch.localTS, ch.remoteTS))
	c.emit(Event{Type: EventChildUp, Reason: "CHILD_SA installed" + how, IKE: sa.info(), Child: ch.info()})
}

// removeChild takes ch out of the data plane: the outbound half now, the inbound half now or
// after DeleteDelay (rekeyed SAs keep receiving packets in flight).
func (c *Conn) removeChild(ch *childSA, now bool, reason string, event bool) {
	if ch.state == childDeleted && !ch.inInstalled {
		return
	}
	wasOut := ch.outbound
	ch.state = childDeleted
	stop(ch.rekeyTimer)
	stop(ch.lifeTimer)
	dp := c.opts.DataPlane
	if ch.outbound {
		ch.outbound = false
		if dp != nil {
			dp.DelOutbound(ch.spiOut)
		}
	}
	drop := func() {
		if ch.inInstalled && dp != nil {
			dp.DelInbound(ch.spiIn)
		}
		ch.inInstalled = false
		c.children = slices.DeleteFunc(c.children, func(o *childSA) bool { return o == ch })
	}
	if now || !ch.inInstalled {
		drop()
	} else {
		ch.cleanupTimer = c.after(c.cfg.DeleteDelay, drop)
	}
	if event && wasOut {
		c.log.Info("CHILD_SA down", "spi_in", fmt.Sprintf("%08x", ch.spiIn), "spi_out", fmt.Sprintf("%08x", ch.spiOut), "reason", reason)
		c.emit(Event{Type: EventChildDown, Reason: reason, Child: ch.info()})
	}
}

// rekeyDelay is when to rekey an SA with lifetime l: l - margin - random(fuzz% of margin).
func (c *Conn) rekeyDelay(l time.Duration) time.Duration {
	m := c.cfg.RekeyMargin
	if m > l/2 {
		m = l / 2
	}
	return l - m - c.randDur(m*time.Duration(c.cfg.RekeyFuzz)/100)
}

func (c *Conn) scheduleChildTimers(ch *childSA) {
	stop(ch.rekeyTimer)
	stop(ch.lifeTimer)
	if ch.redundant {
		return
	}
	ch.rekeyTimer = c.after(c.rekeyDelay(c.cfg.ChildLifetime), func() {
		if ch.state == childInstalled {
			c.queueChildRekey(ch)
		}
	})
	ch.lifeTimer = c.after(c.cfg.ChildLifetime, func() { c.childExpired(ch) })
}

// childExpired: the hard lifetime passed without a successful rekey.
func (c *Conn) childExpired(ch *childSA) {
	if ch.state == childDeleted {
		return
	}
	sa := ch.ike
	if ch.state == childRekeyed && ch.successor != nil {
		// the peer was supposed to delete it: switch to the successor and delete quietly
		if !ch.successor.redundant && ch.successor.state == childInstalled && ch.outbound {
			c.setOutbound(ch.successor)
			c.emitRekeyed(ch, ch.successor)
		}
		c.removeChild(ch, false, "expired after rekey", false)
		return
	}
	c.log.Warn("CHILD_SA hard lifetime expired", "spi_in", fmt.Sprintf("%08x", ch.spiIn))
	wasOut := ch.outbound
	if sa != nil && sa.state >= saEstablished && sa.state < saDead {
		c.queueChildDelete(sa, ch, "expired")
		if wasOut || c.activeChild() == nil {
			c.queueChildCreate(sa)
		}
		return
	}
	c.removeChild(ch, true, "expired", true)
}

func (c *Conn) emitRekeyed(old, nw *childSA) {
	nw.ike.logger().Info("CHILD_SA rekeyed: outbound moved", "old_spi_out", fmt.Sprintf("%08x", old.spiOut), "new_spi_in", fmt.Sprintf("%08x", nw.spiIn), "new_spi_out", fmt.Sprintf("%08x", nw.spiOut))
	c.emit(Event{Type: EventChildRekeyed, Reason: "CHILD_SA rekeyed", IKE: nw.ike.info(), Child: nw.info(), Replaced: old.info()})
}

// ---- responder side: choosing and accepting a CHILD SA ----

// acceptChild handles the CHILD SA part of a request (IKE_AUTH or CREATE_CHILD_SA). It returns
// the new child (keys derived, not installed) and the response payloads (SA, [KE,] TSi, TSr —
// or an error notify). For CREATE_CHILD_SA the caller adds Nr; ni/nr are the exchange nonces.
// prefer keeps the algorithms of a rekeyed SA.
func (c *Conn) acceptChild(sa *ikeSA, m *Message, inAuth bool, ni, nr []byte, prefer []Algorithm, what string) (*childSA, []Payload) {
	sap, _ := m.Get(PayloadSA).(*SAPayload)
	tsi, _ := m.Get(PayloadTSi).(*TSPayload)
	tsr, _ := m.Get(PayloadTSr).(*TSPayload)
	if sap == nil || tsi == nil || tsr == nil {
		return nil, []Payload{&NotifyPayload{NotifyType: NotifyInvalidSyntax}}
	}
	sel, ok := selectProposal(c.cfg.esp, sap.Proposals, ProtoESP, inAuth, prefer)
	if !ok {
		c.counters.NoProposal++
		reason := fmt.Sprintf("no proposal match for %s: peer offered %s; we allow %s", what, formatSAProposals(sap.Proposals), formatProposals(c.cfg.esp))
		c.log.Error(reason)
		c.setError(reason)
		c.emit(Event{Type: EventNoProposal, Reason: reason, IKE: sa.info()})
		return nil, []Payload{&NotifyPayload{NotifyType: NotifyNoProposalChosen}}
	}
	if len(sel.prop.SPI) != 4 {
		return nil, []Payload{&NotifyPayload{NotifyType: NotifyInvalidSyntax}}
	}
	suite, err := newESPSuite(sel.key)
	if err != nil {
		return nil, []Payload{&NotifyPayload{NotifyType: NotifyNoProposalChosen}}
	}
	ntsi := narrowTS(tsi.Selectors, c.cfg.RemoteTS)
	ntsr := narrowTS(tsr.Selectors, c.cfg.LocalTS)
	if len(ntsi) == 0 || len(ntsr) == 0 {
		reason := fmt.Sprintf("TS_UNACCEPTABLE: traffic selectors %v === %v do not fit our %v === %v", tsi.Selectors, tsr.Selectors, c.cfg.RemoteTS, c.cfg.LocalTS)
		c.log.Error(reason)
		c.setError(reason)
		return nil, []Payload{&NotifyPayload{NotifyType: NotifyTSUnacceptable}}
	}
	var shared []byte
	var kePayload Payload
	if !inAuth && suite.dh != 0 {
		ke, _ := m.Get(PayloadKE).(*KEPayload)
		if ke == nil || ke.Group != suite.dh {
			return nil, []Payload{&NotifyPayload{NotifyType: NotifyInvalidKEPayload, Data: binary.BigEndian.AppendUint16(nil, suite.dh)}}
		}
		g, _ := dhByID(suite.dh)
		k, err := g.generate(c.opts.Rand)
		if err != nil {
			return nil, []Payload{&NotifyPayload{NotifyType: NotifyNoProposalChosen}}
		}
		if shared, err = k.shared(ke.Data); err != nil {
			c.counters.MalformedDropped++
			return nil, []Payload{&NotifyPayload{NotifyType: NotifyInvalidSyntax}}
		}
		kePayload = &KEPayload{Group: suite.dh, Data: k.public()}
	}
	ch := c.newChild(sa, false)
	ch.spiOut = binary.BigEndian.Uint32(sel.prop.SPI)
	ch.suite = suite
	ch.ni, ch.nr = ni, nr
	ch.localTS, ch.remoteTS = ntsr, ntsi
	if err := ch.deriveKeys(sa, shared); err != nil {
		c.removeChild(ch, true, "", false)
		return nil, []Payload{&NotifyPayload{NotifyType: NotifyNoProposalChosen}}
	}
	resp := sel.prop
	resp.SPI = binary.BigEndian.AppendUint32(nil, ch.spiIn)
	ps := []Payload{&SAPayload{Proposals: []SAProposal{resp}}}
	if kePayload != nil {
		ps = append(ps, kePayload)
	}
	ps = append(ps, &TSPayload{Selectors: ntsi}, &TSPayload{Responder: true, Selectors: ntsr})
	return ch, ps
}

// ---- traffic selectors ----

func prefixesTS(ps []netip.Prefix) []TrafficSelector {
	var ts []TrafficSelector
	for _, p := range ps {
		t := tsIPv4AddrRange
		if !p.Addr().Is4() {
			t = tsIPv6AddrRange
		}
		ts = append(ts, TrafficSelector{Type: t, EndPort: 0xffff, Start: p.Masked().Addr(), End: lastAddr(p)})
	}
	return ts
}

// narrowTS intersects the proposed selectors with our allowed prefixes.
func narrowTS(proposed []TrafficSelector, allowed []netip.Prefix) []TrafficSelector {
	var out []TrafficSelector
	for _, ts := range proposed {
		if ts.Type != tsIPv4AddrRange && ts.Type != tsIPv6AddrRange || ts.Start.Compare(ts.End) > 0 || ts.StartPort > ts.EndPort {
			continue
		}
		for _, p := range allowed {
			if p.Addr().Is4() != ts.Start.Is4() {
				continue
			}
			s, e := p.Masked().Addr(), lastAddr(p)
			if ts.Start.Compare(s) > 0 {
				s = ts.Start
			}
			if ts.End.Compare(e) < 0 {
				e = ts.End
			}
			if s.Compare(e) > 0 {
				continue
			}
			n := TrafficSelector{Type: ts.Type, IPProto: ts.IPProto, StartPort: ts.StartPort, EndPort: ts.EndPort, Start: s, End: e}
			if !slices.ContainsFunc(out, func(o TrafficSelector) bool { return o.String() == n.String() }) {
				out = append(out, n)
			}
		}
	}
	return out
}

// tsWithin reports whether every selector of got lies within one of offered.
func tsWithin(got, offered []TrafficSelector) bool {
	if len(got) == 0 {
		return false
	}
	for _, g := range got {
		ok := false
		for _, o := range offered {
			if g.Type == o.Type && (o.IPProto == 0 || o.IPProto == g.IPProto) &&
				g.StartPort >= o.StartPort && g.EndPort <= o.EndPort &&
				g.Start.Compare(o.Start) >= 0 && g.End.Compare(o.End) <= 0 {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// tsPrefixes converts address ranges to the prefixes covering exactly the same addresses.
func tsPrefixes(ts []TrafficSelector) []netip.Prefix {
	var out []netip.Prefix
	for _, t := range ts {
		if t.Type != tsIPv4AddrRange && t.Type != tsIPv6AddrRange {
			continue
		}
		out = append(out, rangeToPrefixes(t.Start, t.End)...)
	}
	return out
}

func rangeToPrefixes(start, end netip.Addr) []netip.Prefix {
	if p, ok := rangePrefix(start, end); ok {
		return []netip.Prefix{p}
	}
	bits := start.BitLen()
	s := new(big.Int).SetBytes(start.AsSlice())
	e := new(big.Int).SetBytes(end.AsSlice())
	one := big.NewInt(1)
	var out []netip.Prefix
	for s.Cmp(e) <= 0 && len(out) < 256 {
		// largest block aligned at s that fits in [s, e]
		size := 0
		for size < bits {
			blk := new(big.Int).Lsh(one, uint(size+1))
			if new(big.Int).Mod(s, blk).Sign() != 0 {
				break
			}
			last := new(big.Int).Add(s, new(big.Int).Sub(blk, one))
			if last.Cmp(e) > 0 {
				break
			}
			size++
		}
		b := s.FillBytes(make([]byte, bits/8))
		a, _ := netip.AddrFromSlice(b)
		out = append(out, netip.PrefixFrom(a, bits-size))
		s.Add(s, new(big.Int).Lsh(one, uint(size)))
	}
	return out
}

// lowerNonce returns the lower of two nonces as strongSwan compares them (memcmp over the
// shorter length).
func lowerNonce(a, b []byte) []byte {
	n := min(len(a), len(b))
	if bytes.Compare(a[:n], b[:n]) < 0 {
		return a
	}
	return b
}

// nonceCmp compares two nonces over the shorter length (strongSwan's memcmp rule).
func nonceCmp(a, b []byte) int {
	n := min(len(a), len(b))
	return bytes.Compare(a[:n], b[:n])
}

// dedupeChildren keeps one CHILD SA pair per tunnel (AWS: "one unique SA pair per tunnel").
// Independent creations can race (both sides re-creating after a hard expiry, or a create
// meeting a CHILD_SA_NOT_FOUND recovery) and leave two; as for rekey collisions (RFC 7296
// §2.8.1), the one created with the lowest nonce is deleted by the side that created it.
// Children still tied to a live predecessor are a rekey in progress and are left to the
// collision logic.
func (c *Conn) dedupeChildren() {
	var cands []*childSA
	for _, ch := range c.children {
		if ch.redundant || (ch.state != childInstalled && ch.state != childRekeying) || ch.ike == nil {
			continue
		}
		if p := ch.predecessor; p != nil && p.state != childDeleted {
			continue
		}
		cands = append(cands, ch)
	}
	if len(cands) < 2 {
		return
	}
	survivor := cands[0]
	for _, ch := range cands[1:] {
		if nonceCmp(lowerNonce(ch.ni, ch.nr), lowerNonce(survivor.ni, survivor.nr)) > 0 {
			survivor = ch
		}
	}
	c.counters.Collisions++
	for _, ch := range cands {
		if ch == survivor {
			continue
		}
		ch.redundant = true
		if ch.outbound {
			c.setOutbound(survivor)
			c.emitRekeyed(ch, survivor)
		}
		if ch.initiator {
			ch.ike.logger().Info("duplicate CHILD_SA: deleting the one we created with the lower nonce", "spi_in", fmt.Sprintf("%08x", ch.spiIn), "survivor_spi_in", fmt.Sprintf("%08x", survivor.spiIn))
			if ch.state == childInstalled {
				c.queueChildDelete(ch.ike, ch, "duplicate")
			}
		} else {
			ch.ike.logger().Info("duplicate CHILD_SA: the peer deletes the one it created with the lower nonce", "spi_in", fmt.Sprintf("%08x", ch.spiIn), "survivor_spi_in", fmt.Sprintf("%08x", survivor.spiIn))
			c.expectPeerDelete(ch)
		}
	}
	if c.activeChild() == nil {
		c.setOutbound(survivor)
	}
}
