package ike

import (
	"bytes"
	"crypto/hmac"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
)

// ---- initiator: IKE_SA_INIT ----

// initiate starts a new IKE SA as initiator.
func (c *Conn) initiate() {
	sa := c.newSA(true)
	sa.spiI = c.newSPI64()
	sa.ni = c.nonce()
	c.sas[sa.spiI] = sa
	c.cur = sa
	sa.state = saInitSent
	group := c.cfg.ike[0].of(TransformDH)[0].ID
	if err := sa.newDH(group); err != nil {
		c.establishFailed(sa, fmt.Sprintf("cannot create DH group %d key: %v", group, err), EventNegotiationFailed)
		return
	}
	c.log.Info("initiating IKE_SA", "to", sa.remote, "proposals", formatProposals(c.cfg.ike))
	sa.sendInit()
}

func (sa *ikeSA) newDH(group uint16) error {
	g, ok := dhByID(group)
	if !ok {
		return fmt.Errorf("unsupported DH group %d", group)
	}
	k, err := g.generate(sa.c.opts.Rand)
	if err != nil {
		return err
	}
	sa.dh = k
	sa.dhGroup = group
	return nil
}

func (sa *ikeSA) sendInit() {
	c := sa.c
	var ps []Payload
	if sa.cookie != nil {
		ps = append(ps, &NotifyPayload{NotifyType: NotifyCookie, Data: sa.cookie})
	}
	sp := &SAPayload{}
	for i, p := range c.cfg.ike {
		sp.Proposals = append(sp.Proposals, p.toSA(uint8(i+1), ProtoIKE, nil, true))
	}
	src := natdHash(sa.spiI, 0, sa.local)
	if c.cfg.ForceEncap {
		src = c.random(20) // as strongSwan's encap=yes: the peer sees a NAT and we both float
	}
	ps = append(ps, sp,
		&KEPayload{Group: sa.dhGroup, Data: sa.dh.public()},
		&NoncePayload{Data: sa.ni},
		&NotifyPayload{NotifyType: NotifyNATDetectionSourceIP, Data: src},
		&NotifyPayload{NotifyType: NotifyNATDetectionDestinationIP, Data: natdHash(sa.spiI, 0, sa.remote)})
	if c.cfg.Fragmentation {
		ps = append(ps, &NotifyPayload{NotifyType: NotifyIKEv2FragmentationSupport})
	}
	if sa.pending != nil {
		stop(sa.pending.timer)
		sa.pending = nil
	}
	sa.nextID = 0
	sa.sendRequest(ExchangeIKESAInit, "IKE_SA_INIT", ps, nil, func(reason string) {
		c.establishFailed(sa, reason, EventNegotiationFailed)
	})
	if sa.pending != nil {
		sa.initReq = sa.pending.packets[0]
	}
}

func (sa *ikeSA) handleInitResponse(b []byte, h header, local, remote netip.AddrPort) {
	c := sa.c
	ps, _, err := parseChain(h.next, b[headerLen:], headerLen, false)
	if err != nil {
		c.counters.MalformedDropped++
		sa.logger().Debug("dropping malformed IKE_SA_INIT response", "err", err)
		return
	}
	m := &Message{SPIi: h.spiI, SPIr: h.spiR, Exchange: h.exchange, Flags: h.flags, Payloads: ps}
	sa.logger().Debug("received "+m.Summary(), "from", remote)
	finish := func() {
		if sa.pending != nil {
			stop(sa.pending.timer)
			sa.pending = nil
		}
	}
	if n := m.Notify(NotifyCookie); n != nil && m.Get(PayloadSA) == nil {
		if sa.retries >= 3 || len(n.Data) < 1 || len(n.Data) > 64 {
			finish()
			c.establishFailed(sa, "responder keeps demanding cookies", EventNegotiationFailed)
			return
		}
		sa.retries++
		sa.cookie = n.Data
		sa.logger().Info("responder demands a cookie, retrying IKE_SA_INIT with it")
		sa.sendInit()
		return
	}
	if n := m.Notify(NotifyInvalidKEPayload); n != nil {
		group := uint16(0)
		if len(n.Data) == 2 {
			group = binary.BigEndian.Uint16(n.Data)
		}
		if sa.retries >= 3 || !c.offersDH(group, c.cfg.ike) || group == sa.dhGroup {
			finish()
			c.establishFailed(sa, fmt.Sprintf("peer requested DH group %d, which we do not offer for IKE", group), EventNoProposal)
			return
		}
		sa.retries++
		sa.logger().Info("peer requested another DH group, retrying IKE_SA_INIT", "group", Algorithm{Type: TransformDH, ID: group}.String())
		if err := sa.newDH(group); err != nil {
			finish()
			c.establishFailed(sa, err.Error(), EventNegotiationFailed)
			return
		}
		sa.sendInit()
		return
	}
	if n := m.ErrorNotify(); n != nil {
		finish()
		if n.NotifyType == NotifyNoProposalChosen {
			c.counters.NoProposal++
			reason := fmt.Sprintf("no proposal match: the peer accepted none of our IKE proposals (we offered: %s; the peer does not reveal its own)", formatProposals(c.cfg.ike))
			c.log.Error(reason)
			c.establishFailed(sa, reason, EventNoProposal)
			return
		}
		c.establishFailed(sa, fmt.Sprintf("peer answered IKE_SA_INIT with %s", n.NotifyType), EventNegotiationFailed)
		return
	}
	if h.spiR == 0 {
		c.counters.MalformedDropped++
		return
	}
	sap, _ := m.Get(PayloadSA).(*SAPayload)
	ke, _ := m.Get(PayloadKE).(*KEPayload)
	nr, _ := m.Get(PayloadNonce).(*NoncePayload)
	if sap == nil || ke == nil || nr == nil {
		c.counters.MalformedDropped++
		sa.logger().Debug("IKE_SA_INIT response lacks SA, KE or Nonce")
		return
	}
	algs, err := checkChosen(c.cfg.ike, sap, ProtoIKE, false)
	if err != nil {
		finish()
		c.establishFailed(sa, "no proposal match: "+err.Error(), EventNoProposal)
		return
	}
	suite, err := newIKESuite(algs)
	if err != nil {
		finish()
		c.establishFailed(sa, err.Error(), EventNoProposal)
		return
	}
	if ke.Group != suite.dh || ke.Group != sa.dhGroup {
		finish()
		c.establishFailed(sa, fmt.Sprintf("peer's KE is for group %d, the chosen proposal says %d and we sent %d", ke.Group, suite.dh, sa.dhGroup), EventNegotiationFailed)
		return
	}
	shared, err := sa.dh.shared(ke.Data)
	if err != nil {
		c.counters.MalformedDropped++
		sa.logger().Debug("bad KE in IKE_SA_INIT response", "err", err)
		return
	}
	finish()
	sa.spiR = h.spiR
	sa.nr = nr.Data
	sa.suite = suite
	sa.initResp = append([]byte(nil), b...)
	sa.natRemote, sa.natLocal = natDetect(m, sa.spiI, sa.spiR, remote, local)
	sa.peerFrag = m.Notify(NotifyIKEv2FragmentationSupport) != nil
	skeyseed := suite.prf.mac(append(append([]byte(nil), sa.ni...), sa.nr...), shared)
	keys, err := deriveIKEKeys(suite.prf, suite, skeyseed, sa.ni, sa.nr, sa.spiI, sa.spiR)
	if err == nil {
		err = sa.setKeys(keys)
	}
	if err != nil {
		c.establishFailed(sa, "key derivation: "+err.Error(), EventNegotiationFailed)
		return
	}
	sa.dh = nil
	sa.nextID = 1
	if sa.natLocal || sa.natRemote || c.cfg.ForceEncap {
		sa.floatToNATT()
	}
	sa.logger().Info("IKE_SA_INIT done", "suite", suite.String(), "nat_local", sa.natLocal, "nat_remote", sa.natRemote, "natt", sa.natT)
	sa.state = saAuthSent
	sa.sendAuth()
}

// natDetect evaluates the peer's NAT_DETECTION notifies of m (hashes over the SPIs as they
// appear in m's header): natRemote when no SOURCE hash matches the address the message came
// from, natLocal when the DESTINATION hash does not match the address it arrived on. Without
// NAT-D notifies the peer does not support NAT-T and neither is set.
func natDetect(m *Message, spiI, spiR uint64, remote, local netip.AddrPort) (natRemote, natLocal bool) {
	var srcSeen, srcMatch, dstSeen, dstMatch bool
	src := natdHash(spiI, spiR, remote)
	dst := natdHash(spiI, spiR, local)
	for _, p := range m.Payloads {
		n, ok := p.(*NotifyPayload)
		if !ok {
			continue
		}
		switch n.NotifyType {
		case NotifyNATDetectionSourceIP:
			srcSeen = true
			srcMatch = srcMatch || bytes.Equal(n.Data, src)
		case NotifyNATDetectionDestinationIP:
			dstSeen = true
			dstMatch = dstMatch || bytes.Equal(n.Data, dst)
		}
	}
	return srcSeen && !srcMatch, dstSeen && !dstMatch
}

func (c *Conn) offersDH(group uint16, ps []Proposal) bool {
	for _, p := range ps {
		for _, a := range p.of(TransformDH) {
			if a.ID == group && group != 0 {
				return true
			}
		}
	}
	return false
}

// ---- initiator: IKE_AUTH ----

func (sa *ikeSA) sendAuth() {
	c := sa.c
	ch := c.newChild(sa, true)
	ch.ni, ch.nr = sa.ni, sa.nr
	sa.authChild = ch
	ps := []Payload{&IDPayload{IDType: c.cfg.localID.Type, Data: c.cfg.localID.Data}}
	if !c.cfg.remoteAny {
		ps = append(ps, &IDPayload{Responder: true, IDType: c.cfg.remoteID.Type, Data: c.cfg.remoteID.Data})
	}
	ps = append(ps, &AuthPayload{Method: AuthPSK, Data: pskAuth(sa.suite.prf, []byte(c.cfg.PSK), sa.initReq, sa.nr, sa.keys.pi, c.cfg.localID.body())})
	if !c.haveOtherEstablished(sa) {
		ps = append(ps, &NotifyPayload{NotifyType: NotifyInitialContact})
	}
	ps = append(ps, c.childSAPayload(ch.spiIn, false, nil),
		&TSPayload{Selectors: prefixesTS(c.cfg.LocalTS)},
		&TSPayload{Responder: true, Selectors: prefixesTS(c.cfg.RemoteTS)})
	sa.sendRequest(ExchangeIKEAuth, "IKE_AUTH", ps, sa.handleAuthResponse, func(reason string) {
		c.establishFailed(sa, reason, EventNegotiationFailed)
	})
}

// childSAPayload is our ESP offer; withDH adds the PFS groups (CREATE_CHILD_SA). first, if set,
// is offered first (rekeys keep the algorithms).
func (c *Conn) childSAPayload(spi uint32, withDH bool, first []Algorithm) *SAPayload {
	sp := &SAPayload{}
	spib := binary.BigEndian.AppendUint32(nil, spi)
	n := uint8(1)
	if first != nil {
		sp.Proposals = append(sp.Proposals, Proposal{Algs: first}.toSA(n, ProtoESP, spib, withDH))
		n++
	}
	for _, p := range c.cfg.esp {
		sp.Proposals = append(sp.Proposals, p.toSA(n, ProtoESP, spib, withDH))
		n++
	}
	return sp
}

func (c *Conn) haveOtherEstablished(sa *ikeSA) bool {
	for _, o := range c.sas {
		if o != sa && o.state >= saEstablished && o.state < saDead {
			return true
		}
	}
	return false
}

func (sa *ikeSA) handleAuthResponse(m *Message) {
	c := sa.c
	if m.Notify(NotifyAuthenticationFailed) != nil {
		c.counters.AuthFailures++
		reason := fmt.Sprintf("AUTHENTICATION_FAILED: the peer rejected our authentication; the pre-shared key probably doesn't match (or the peer does not expect our identity %s)", c.cfg.localID)
		c.log.Error(reason)
		c.establishFailed(sa, reason, EventAuthFailed)
		return
	}
	idr, _ := m.Get(PayloadIDr).(*IDPayload)
	auth, _ := m.Get(PayloadAUTH).(*AuthPayload)
	if idr == nil || auth == nil {
		reason := "IKE_AUTH response without IDr and AUTH"
		if n := m.ErrorNotify(); n != nil {
			reason = fmt.Sprintf("peer answered IKE_AUTH with %s", n.NotifyType)
		}
		c.establishFailed(sa, reason, EventNegotiationFailed)
		return
	}
	peer := Identity{Type: idr.IDType, Data: idr.Data}
	if !c.cfg.remoteAny && !peer.Equal(c.cfg.remoteID) {
		c.authFailedLocally(sa, fmt.Sprintf("AUTHENTICATION_FAILED: the peer identifies as %s, not the expected %s", peer, c.cfg.remoteID))
		return
	}
	want := pskAuth(sa.suite.prf, []byte(c.cfg.PSK), sa.initResp, sa.ni, sa.keys.pr, append([]byte{byte(idr.IDType), 0, 0, 0}, idr.Data...))
	if auth.Method != AuthPSK || !hmac.Equal(auth.Data, want) {
		c.authFailedLocally(sa, fmt.Sprintf("AUTHENTICATION_FAILED: the peer's AUTH payload (method %d) does not verify; the pre-shared key probably doesn't match", auth.Method))
		return
	}
	c.ikeEstablished(sa)
	ch := sa.authChild
	sa.authChild = nil
	if n := childError(m); n != nil {
		c.childRefused(sa, n.NotifyType, "the CHILD_SA of IKE_AUTH")
		return
	}
	if err := c.completeInitiatorChild(sa, ch, m, nil, true); err != nil {
		c.log.Error("CHILD_SA of IKE_AUTH unusable", "err", err)
		c.setError(err.Error())
		c.deleteIKE(sa, "unusable CHILD_SA: "+err.Error())
		c.failed(err.Error())
		return
	}
	c.installChild(sa, ch, true)
	c.childUp(sa, ch, "")
}

// childError returns a CHILD SA related error notify (RFC 7296 §1.2: they do not fail IKE_AUTH).
func childError(m *Message) *NotifyPayload {
	for _, p := range m.Payloads {
		if n, ok := p.(*NotifyPayload); ok {
			switch n.NotifyType {
			case NotifyNoProposalChosen, NotifySinglePairRequired, NotifyNoAdditionalSAs, NotifyInternalAddressFailure,
				NotifyFailedCPRequired, NotifyTSUnacceptable, NotifyInvalidSelectors, NotifyInvalidSyntax:
				return n
			}
		}
	}
	return nil
}

// childRefused handles a refused first CHILD SA: an IKE SA without CHILD SA carries nothing
// for a route-based tunnel, so it is deleted and the establishment counts as failed.
func (c *Conn) childRefused(sa *ikeSA, n NotifyType, what string) {
	reason := fmt.Sprintf("peer refused %s with %s", what, n)
	typ := EventNegotiationFailed
	if n == NotifyNoProposalChosen {
		c.counters.NoProposal++
		reason = fmt.Sprintf("no proposal match: the peer accepted none of our ESP proposals for %s (we offered: %s; the peer does not reveal its own)", what, formatProposals(c.cfg.esp))
		typ = EventNoProposal
	}
	c.log.Error(reason)
	c.setError(reason)
	c.emit(Event{Type: typ, Reason: reason, IKE: sa.info()})
	c.deleteIKE(sa, reason)
	c.failed(reason)
}

// authFailedLocally: the peer's AUTH (or identity) is wrong. Tell the peer (RFC 7296 §2.21.2)
// and give up on the SA.
func (c *Conn) authFailedLocally(sa *ikeSA, reason string) {
	c.counters.AuthFailures++
	c.log.Error(reason)
	flags := uint8(flagInitiator)
	m := &Message{SPIi: sa.spiI, SPIr: sa.spiR, Exchange: ExchangeInformational, Flags: flags, MsgID: sa.nextID,
		Payloads: []Payload{&NotifyPayload{NotifyType: NotifyAuthenticationFailed}}}
	if pkts, err := sa.encode(m); err == nil {
		sa.transmit(pkts, sa.local, sa.remote)
	}
	c.establishFailed(sa, reason, EventAuthFailed)
}

// completeInitiatorChild checks the responder's CHILD SA choice and installs it. For a rekey,
// shared is the PFS secret and the nonces are those of the CREATE_CHILD_SA exchange.
func (c *Conn) completeInitiatorChild(sa *ikeSA, ch *childSA, m *Message, shared []byte, stripDH bool) error {
	sap, _ := m.Get(PayloadSA).(*SAPayload)
	tsi, _ := m.Get(PayloadTSi).(*TSPayload)
	tsr, _ := m.Get(PayloadTSr).(*TSPayload)
	if sap == nil || tsi == nil || tsr == nil {
		return fmt.Errorf("response lacks SA, TSi or TSr")
	}
	algs, err := checkChosen(c.cfg.esp, sap, ProtoESP, stripDH)
	if err != nil {
		return fmt.Errorf("no proposal match: %w", err)
	}
	if len(sap.Proposals[0].SPI) != 4 {
		return fmt.Errorf("ESP SPI of %d bytes", len(sap.Proposals[0].SPI))
	}
	suite, err := newESPSuite(algs)
	if err != nil {
		return err
	}
	if !tsWithin(tsi.Selectors, prefixesTS(ch.offerLocal(c))) || !tsWithin(tsr.Selectors, prefixesTS(ch.offerRemote(c))) {
		return fmt.Errorf("traffic selectors %v === %v are not within what we proposed", tsi.Selectors, tsr.Selectors)
	}
	ch.spiOut = binary.BigEndian.Uint32(sap.Proposals[0].SPI)
	ch.suite = suite
	ch.localTS, ch.remoteTS = tsi.Selectors, tsr.Selectors
	if err := ch.deriveKeys(sa, shared); err != nil {
		return err
	}
	return nil
}

// ---- responder: IKE_SA_INIT ----

func (c *Conn) handleInitRequest(b []byte, h header, local, remote netip.AddrPort) {
	if remote.Addr().Unmap() != c.cfg.RemoteAddr.Unmap() {
		c.counters.UnknownSPIDropped++
		return
	}
	if h.msgID != 0 {
		c.counters.MalformedDropped++
		return
	}
	key := initKey{remote.Addr(), h.spiI}
	if sa := c.initReqs[key]; sa != nil {
		if sa.state == saHalfOpen && bytes.Equal(b, sa.initReq) {
			c.counters.ResponsesResent++
			sa.transmit([][]byte{sa.initResp}, local, remote)
		} else {
			c.counters.ReplayedDropped++
		}
		return
	}
	stateless := func(ps ...Payload) {
		m := &Message{SPIi: h.spiI, Exchange: ExchangeIKESAInit, Flags: flagResponse, Payloads: ps}
		pkt := encodePlain(m)
		if local.Port() == c.cfg.LocalNATTPort {
			pkt = append(append([]byte(nil), nonESPMarker...), pkt...)
		}
		_ = c.opts.Sender.Send(pkt, local, remote)
	}
	ps, _, err := parseChain(h.next, b[headerLen:], headerLen, false)
	if uc, ok := err.(*errUnsupportedCritical); ok {
		stateless(&NotifyPayload{NotifyType: NotifyUnsupportedCriticalPayload, Data: []byte{byte(uc.typ)}})
		return
	}
	if err != nil {
		c.counters.MalformedDropped++
		c.log.Debug("dropping malformed IKE_SA_INIT request", "from", remote, "err", err)
		return
	}
	m := &Message{SPIi: h.spiI, Exchange: h.exchange, Flags: h.flags, Payloads: ps}
	c.log.Debug("received "+m.Summary(), "from", remote)
	sap, _ := m.Get(PayloadSA).(*SAPayload)
	ke, _ := m.Get(PayloadKE).(*KEPayload)
	ni, _ := m.Get(PayloadNonce).(*NoncePayload)
	if sap == nil || ke == nil || ni == nil {
		c.counters.MalformedDropped++
		return
	}
	if c.cfg.RequireCookies || c.halfOpen() >= c.cfg.CookieThreshold {
		want := c.cookie(ni.Data, remote.Addr(), h.spiI)
		n, _ := ps[0].(*NotifyPayload)
		if n == nil || n.NotifyType != NotifyCookie || !hmac.Equal(n.Data, want) {
			c.counters.CookiesSent++
			c.log.Info("demanding a cookie before creating state", "from", remote, "half_open", c.halfOpen())
			stateless(&NotifyPayload{NotifyType: NotifyCookie, Data: want})
			return
		}
	}
	sel, ok := selectProposal(c.cfg.ike, sap.Proposals, ProtoIKE, false, nil)
	if !ok {
		c.counters.NoProposal++
		reason := fmt.Sprintf("no proposal match for IKE_SA: peer offered %s; we allow %s", formatSAProposals(sap.Proposals), formatProposals(c.cfg.ike))
		c.log.Error(reason)
		c.setError(reason)
		c.emit(Event{Type: EventNoProposal, Reason: reason})
		stateless(&NotifyPayload{NotifyType: NotifyNoProposalChosen})
		return
	}
	suite, err := newIKESuite(sel.key)
	if err != nil {
		stateless(&NotifyPayload{NotifyType: NotifyNoProposalChosen})
		return
	}
	if ke.Group != suite.dh {
		c.log.Info("peer's KE is for another group, requesting ours", "peer_group", Algorithm{Type: TransformDH, ID: ke.Group}.String(), "group", Algorithm{Type: TransformDH, ID: suite.dh}.String())
		stateless(&NotifyPayload{NotifyType: NotifyInvalidKEPayload, Data: binary.BigEndian.AppendUint16(nil, suite.dh)})
		return
	}
	sa := c.newSA(false)
	sa.spiI = h.spiI
	sa.spiR = c.newSPI64()
	sa.ni = ni.Data
	sa.nr = c.nonce()
	sa.suite = suite
	sa.local, sa.remote = local, remote
	sa.natT = local.Port() == c.cfg.LocalNATTPort
	if err := sa.newDH(suite.dh); err != nil {
		c.log.Error("cannot create DH key", "err", err)
		return
	}
	shared, err := sa.dh.shared(ke.Data)
	if err != nil {
		c.counters.MalformedDropped++
		c.log.Debug("bad KE in IKE_SA_INIT request", "err", err)
		return
	}
	sa.natRemote, sa.natLocal = natDetect(m, sa.spiI, 0, remote, local)
	sa.peerFrag = m.Notify(NotifyIKEv2FragmentationSupport) != nil
	resp := []Payload{&SAPayload{Proposals: []SAProposal{sel.prop}},
		&KEPayload{Group: suite.dh, Data: sa.dh.public()},
		&NoncePayload{Data: sa.nr}}
	if m.Notify(NotifyNATDetectionSourceIP) != nil {
		src := natdHash(sa.spiI, sa.spiR, local)
		if c.cfg.ForceEncap {
			src = c.random(20)
		}
		resp = append(resp, &NotifyPayload{NotifyType: NotifyNATDetectionSourceIP, Data: src},
			&NotifyPayload{NotifyType: NotifyNATDetectionDestinationIP, Data: natdHash(sa.spiI, sa.spiR, remote)})
	}
	if sa.peerFrag && c.cfg.Fragmentation {
		resp = append(resp, &NotifyPayload{NotifyType: NotifyIKEv2FragmentationSupport})
	}
	skeyseed := suite.prf.mac(append(append([]byte(nil), sa.ni...), sa.nr...), shared)
	keys, err := deriveIKEKeys(suite.prf, suite, skeyseed, sa.ni, sa.nr, sa.spiI, sa.spiR)
	if err == nil {
		err = sa.setKeys(keys)
	}
	if err != nil {
		c.log.Error("key derivation failed", "err", err)
		return
	}
	sa.dh = nil
	sa.initReq = append([]byte(nil), b...)
	rm := &Message{SPIi: sa.spiI, SPIr: sa.spiR, Exchange: ExchangeIKESAInit, Flags: flagResponse, Payloads: resp}
	sa.initResp = encodePlain(rm)
	sa.state = saHalfOpen
	sa.expectID = 1
	sa.haveResp = true
	sa.lastResp = [][]byte{sa.initResp}
	c.sas[sa.spiR] = sa
	c.initReqs[key] = sa
	sa.openTimer = c.after(max(c.cfg.Retransmit.Total(), 30*time.Second), func() {
		if sa.state == saHalfOpen {
			sa.logger().Info("half-open IKE_SA timed out waiting for IKE_AUTH")
			sa.destroy()
		}
	})
	sa.logger().Debug("sending "+rm.Summary(), "to", remote)
	sa.logger().Info("IKE_SA_INIT answered", "from", remote, "suite", suite.String(), "nat_local", sa.natLocal, "nat_remote", sa.natRemote)
	sa.transmit([][]byte{sa.initResp}, local, remote)
}

func (c *Conn) halfOpen() int {
	n := 0
	for _, sa := range c.sas {
		if sa.state == saHalfOpen {
			n++
		}
	}
	return n
}

// ---- responder: IKE_AUTH ----

func (sa *ikeSA) handleAuthRequest(m *Message, h *header, local, remote netip.AddrPort) {
	c := sa.c
	idi, _ := m.Get(PayloadIDi).(*IDPayload)
	auth, _ := m.Get(PayloadAUTH).(*AuthPayload)
	fail := func(reason string) {
		c.counters.AuthFailures++
		c.log.Error(reason, "from", remote)
		c.setError(reason)
		sa.respond(h, []Payload{&NotifyPayload{NotifyType: NotifyAuthenticationFailed}}, local, remote)
		c.emit(Event{Type: EventAuthFailed, Reason: reason, IKE: sa.info()})
		sa.destroy()
	}
	if idi == nil || auth == nil {
		fail("AUTHENTICATION_FAILED: IKE_AUTH request without IDi or AUTH")
		return
	}
	peer := Identity{Type: idi.IDType, Data: idi.Data}
	if !c.cfg.remoteAny && !peer.Equal(c.cfg.remoteID) {
		fail(fmt.Sprintf("AUTHENTICATION_FAILED: the peer identifies as %s, not the expected %s", peer, c.cfg.remoteID))
		return
	}
	if auth.Method != AuthPSK {
		fail(fmt.Sprintf("AUTHENTICATION_FAILED: the peer authenticates with method %d, we only accept a pre-shared key", auth.Method))
		return
	}
	want := pskAuth(sa.suite.prf, []byte(c.cfg.PSK), sa.initReq, sa.nr, sa.keys.pi, append([]byte{byte(idi.IDType), 0, 0, 0}, idi.Data...))
	if !hmac.Equal(auth.Data, want) {
		fail("AUTHENTICATION_FAILED: the peer's AUTH payload does not verify; the pre-shared key probably doesn't match")
		return
	}
	if m.Notify(NotifyInitialContact) != nil {
		c.dropOthers(sa, "peer sent INITIAL_CONTACT")
	}
	resp := []Payload{
		&IDPayload{Responder: true, IDType: c.cfg.localID.Type, Data: c.cfg.localID.Data},
		&AuthPayload{Method: AuthPSK, Data: pskAuth(sa.suite.prf, []byte(c.cfg.PSK), sa.initResp, sa.ni, sa.keys.pr, c.cfg.localID.body())},
	}
	c.ikeEstablished(sa)
	var ch *childSA
	if m.Get(PayloadSA) != nil {
		var cps []Payload
		ch, cps = c.acceptChild(sa, m, true, sa.ni, sa.nr, nil, "the CHILD_SA of IKE_AUTH")
		resp = append(resp, cps...)
	}
	if ch != nil {
		c.installChild(sa, ch, true)
	}
	sa.respond(h, resp, local, remote)
	if ch != nil {
		c.childUp(sa, ch, "")
	}
}

// ikeEstablished marks sa up and makes it the current SA.
func (c *Conn) ikeEstablished(sa *ikeSA) {
	now := c.now()
	sa.state = saEstablished
	sa.estab = now
	sa.lastRecv = now
	stop(sa.openTimer)
	c.attempts = 0
	c.stopRetry()
	c.setError("")
	if old := c.cur; old != sa {
		c.cur = sa
		if old != nil {
			if old.state >= saEstablished && old.state < saDead {
				c.deleteIKE(old, "replaced by a newer IKE_SA")
			} else {
				old.destroy()
			}
		}
	}
	c.scheduleIKERekey(sa)
	c.scheduleDPD()
	sa.logger().Info("IKE_SA established", "local", sa.local, "remote", sa.remote, "suite", sa.suite.String(), "natt", sa.natT, "initiator", sa.initiator)
	c.emit(Event{Type: EventIKEUp, Reason: "IKE_SA established", IKE: sa.info()})
}

// establishFailed ends an IKE SA that did not come up.
func (c *Conn) establishFailed(sa *ikeSA, reason string, typ EventType) {
	sa.logger().Warn("IKE_SA establishment failed", "reason", reason)
	sa.authChild = nil
	for _, ch := range append([]*childSA(nil), c.children...) {
		if ch.ike == sa {
			c.removeChild(ch, true, reason, true)
		}
	}
	sa.destroy()
	c.emit(Event{Type: typ, Reason: reason, IKE: sa.info()})
	c.failed(reason)
}

// dropOthers silently removes every IKE SA but keep, with their CHILD SAs (the peer lost its
// state: INITIAL_CONTACT).
func (c *Conn) dropOthers(keep *ikeSA, reason string) {
	for _, o := range c.sas {
		if o == keep {
			continue
		}
		o.logger().Info("removing IKE_SA", "reason", reason)
		for _, ch := range append([]*childSA(nil), c.children...) {
			if ch.ike == o {
				c.removeChild(ch, true, reason, true)
			}
		}
		o.destroy()
	}
}
