package ike

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
)

// retryLater is how long to wait after TEMPORARY_FAILURE (RFC 7296 §2.25: not immediately),
// as strongSwan: 15 s minus up to 10 s of jitter.
func (c *Conn) retryLater() time.Duration {
	return 5*time.Second + c.randDur(10*time.Second)
}

// ---- CHILD SA rekey, initiator ----

func (c *Conn) queueChildRekey(old *childSA) {
	sa := c.cur
	if sa == nil {
		return
	}
	name := fmt.Sprintf("child-rekey-%08x", old.spiIn)
	if sa.hasTask(name) {
		return
	}
	sa.enqueue(name, func(sa *ikeSA) bool {
		if old.state != childInstalled || old.redundant || sa.state != saEstablished {
			return false
		}
		c.startChildRekey(sa, old, 0)
		return true
	})
}

// pfsGroup is the DH group for a CHILD rekey: the one negotiated before, else the first one
// configured (strongSwan does the same); 0 without PFS.
func (c *Conn) pfsGroup(old *childSA) uint16 {
	if old != nil && old.suite != nil && old.suite.dh != 0 {
		return old.suite.dh
	}
	for _, p := range c.cfg.esp {
		if d := p.of(TransformDH); len(d) > 0 {
			return d[0].ID
		}
	}
	return 0
}

func (c *Conn) startChildRekey(sa *ikeSA, old *childSA, group uint16) {
	nc := c.newChild(sa, true)
	nc.ni = c.nonce()
	nc.predecessor = old
	nc.offLocal, nc.offRemote = tsPrefixes(old.localTS), tsPrefixes(old.remoteTS)
	if group == 0 {
		group = c.pfsGroup(old)
	}
	var dh dhKey
	ps := []Payload{&NotifyPayload{Protocol: ProtoESP, SPI: binary.BigEndian.AppendUint32(nil, old.spiIn), NotifyType: NotifyRekeySA},
		c.childSAPayload(nc.spiIn, true, nil), &NoncePayload{Data: nc.ni}}
	if group != 0 {
		g, _ := dhByID(group)
		k, err := g.generate(c.opts.Rand)
		if err != nil {
			c.log.Error("cannot create DH key", "err", err)
			c.dropChild(nc)
			return
		}
		dh = k
		ps = append(ps, &KEPayload{Group: group, Data: k.public()})
	}
	ps = append(ps, &TSPayload{Selectors: old.localTS}, &TSPayload{Responder: true, Selectors: old.remoteTS})
	old.state = childRekeying
	sa.logger().Info("rekeying CHILD_SA", "spi_in", fmt.Sprintf("%08x", old.spiIn), "spi_out", fmt.Sprintf("%08x", old.spiOut))
	sa.sendRequest(ExchangeCreateChildSA, "CHILD_SA rekey", ps, func(m *Message) {
		c.childRekeyResponse(sa, old, nc, dh, group, m)
	}, nil)
}

// dropChild forgets a child that never reached the data plane.
func (c *Conn) dropChild(ch *childSA) { c.removeChild(ch, true, "", false) }

// unrekey returns old to its state when our rekey did not produce a CHILD SA: installed, or
// rekeyed if the peer rekeyed it meanwhile.
func (c *Conn) unrekey(old *childSA) {
	if old.state != childRekeying {
		return
	}
	if p := old.peerRekey; p != nil && p.state == childInstalled {
		old.state = childRekeyed
		old.successor = p
		old.peerRekey = nil
		return
	}
	old.state = childInstalled
}

func (c *Conn) childRekeyResponse(sa *ikeSA, old, nc *childSA, dh dhKey, group uint16, m *Message) {
	if n := m.ErrorNotify(); n != nil {
		c.dropChild(nc)
		switch n.NotifyType {
		case NotifyTemporaryFailure:
			if old.state == childDeleted {
				// the peer's own rekey of old won a collision and it deleted old already
				sa.logger().Info("peer answered our CHILD_SA rekey with TEMPORARY_FAILURE; its own rekey of the SA won", "spi_in", fmt.Sprintf("%08x", old.spiIn))
				return
			}
			c.unrekey(old)
			d := c.retryLater()
			sa.logger().Info("peer answered CHILD_SA rekey with TEMPORARY_FAILURE, retrying later", "in", d.Round(time.Second))
			c.after(d, func() {
				if old.state == childInstalled {
					c.queueChildRekey(old)
				}
			})
		case NotifyChildSANotFound:
			if old.state == childDeleted {
				return
			}
			sa.logger().Warn("peer does not know the CHILD_SA we tried to rekey; replacing it", "spi_out", fmt.Sprintf("%08x", old.spiOut))
			c.removeChild(old, true, "peer lost the CHILD_SA", true)
			if c.activeChild() == nil {
				c.queueChildCreate(sa)
			}
		case NotifyInvalidKEPayload:
			g := uint16(0)
			if len(n.Data) == 2 {
				g = binary.BigEndian.Uint16(n.Data)
			}
			c.unrekey(old)
			if old.state == childInstalled && g != group && c.offersDH(g, c.cfg.esp) {
				sa.logger().Info("peer requested another DH group for the CHILD_SA rekey", "group", Algorithm{Type: TransformDH, ID: g}.String())
				sa.enqueue("child-rekey-ke", func(sa *ikeSA) bool {
					if old.state != childInstalled {
						return false
					}
					c.startChildRekey(sa, old, g)
					return true
				})
				return
			}
			c.rekeyFailed(sa, old, fmt.Sprintf("peer requested DH group %d, which we do not offer", g))
		case NotifyNoProposalChosen:
			c.counters.NoProposal++
			c.unrekey(old)
			c.rekeyFailed(sa, old, fmt.Sprintf("no proposal match: the peer accepted none of our ESP proposals for the CHILD_SA rekey (we offered: %s)", formatProposals(c.cfg.esp)))
		default:
			c.unrekey(old)
			c.rekeyFailed(sa, old, fmt.Sprintf("peer answered CHILD_SA rekey with %s", n.NotifyType))
		}
		return
	}
	nr, _ := m.Get(PayloadNonce).(*NoncePayload)
	if nr == nil {
		c.dropChild(nc)
		c.unrekey(old)
		c.rekeyFailed(sa, old, "CHILD_SA rekey response without nonce")
		return
	}
	nc.nr = nr.Data
	var shared []byte
	if sap, _ := m.Get(PayloadSA).(*SAPayload); sap != nil && len(sap.Proposals) == 1 {
		for _, t := range sap.Proposals[0].Transforms {
			if t.Type == TransformDH && t.ID != 0 {
				ke, _ := m.Get(PayloadKE).(*KEPayload)
				var err error
				if dh == nil || ke == nil || ke.Group != t.ID || t.ID != group {
					err = fmt.Errorf("PFS group mismatch")
				} else {
					shared, err = dh.shared(ke.Data)
				}
				if err != nil {
					c.dropChild(nc)
					c.unrekey(old)
					c.rekeyFailed(sa, old, "CHILD_SA rekey response: "+err.Error())
					return
				}
			}
		}
	}
	if err := c.completeInitiatorChild(sa, nc, m, shared, false); err != nil {
		c.unrekey(old)
		nc.redundant = true
		c.queueChildDelete(sa, nc, "unusable rekey result")
		c.rekeyFailed(sa, old, "CHILD_SA rekey: "+err.Error())
		return
	}
	if old.state == childDeleted {
		// the peer deleted the SA we were rekeying (RFC 7296 §2.25.1): the new one is redundant
		sa.logger().Info("CHILD_SA was deleted while we rekeyed it, deleting the new one", "spi_in", fmt.Sprintf("%08x", nc.spiIn))
		nc.redundant = true
		c.queueChildDelete(sa, nc, "redundant: its predecessor was deleted")
		if c.activeChild() == nil && old.successor == nil {
			c.queueChildCreate(sa)
		}
		return
	}
	if p := old.peerRekey; p != nil {
		// simultaneous rekey (RFC 7296 §2.8.1): the SA created with the lowest of the four
		// nonces is redundant and is deleted by the side that created it.
		c.counters.Collisions++
		this, other := lowerNonce(nc.ni, nc.nr), lowerNonce(p.ni, p.nr)
		if nonceCmp(this, other) > 0 {
			sa.logger().Info("CHILD_SA rekey collision won, deleting the old CHILD_SA; the peer deletes its redundant one",
				"new_spi_in", fmt.Sprintf("%08x", nc.spiIn), "redundant_spi_in", fmt.Sprintf("%08x", p.spiIn))
			p.redundant = true
			c.expectPeerDelete(p)
			old.peerRekey = nil
			c.finishRekey(sa, old, nc)
			return
		}
		sa.logger().Info("CHILD_SA rekey collision lost, deleting our redundant CHILD_SA; the peer deletes the old one",
			"redundant_spi_in", fmt.Sprintf("%08x", nc.spiIn), "survivor_spi_in", fmt.Sprintf("%08x", p.spiIn))
		nc.redundant = true
		old.state = childRekeyed
		old.successor = p
		old.peerRekey = nil
		c.queueChildDelete(sa, nc, "redundant after rekey collision")
		return
	}
	c.finishRekey(sa, old, nc)
}

// finishRekey installs the new CHILD SA (inbound, then outbound) and deletes the old one.
func (c *Conn) finishRekey(sa *ikeSA, old, nc *childSA) {
	c.installChild(sa, nc, false)
	old.state = childRekeyed
	old.successor = nc
	if old.outbound || c.activeChild() == nil {
		c.setOutbound(nc)
		c.emitRekeyed(old, nc)
	}
	c.queueChildDelete(sa, old, "rekeyed")
}

// rekeyFailed schedules another rekey attempt of old (before its hard lifetime).
func (c *Conn) rekeyFailed(sa *ikeSA, old *childSA, reason string) {
	c.log.Warn("CHILD_SA rekey failed", "reason", reason)
	c.setError(reason)
	old.rekeyRetries++
	d := c.retryLater()
	c.after(d, func() {
		if old.state == childInstalled {
			c.queueChildRekey(old)
		}
	})
}

// expectPeerDelete deletes a redundant CHILD SA ourselves if the peer does not (strongSwan's
// HALF_OPEN-like safety net).
func (c *Conn) expectPeerDelete(ch *childSA) {
	stop(ch.rekeyTimer)
	stop(ch.lifeTimer)
	ch.lifeTimer = c.after(c.cfg.Retransmit.Total()+10*time.Second, func() {
		if ch.state == childInstalled && ch.redundant && ch.ike != nil && ch.ike.state >= saEstablished {
			ch.ike.logger().Info("peer did not delete its redundant CHILD_SA, deleting it", "spi_in", fmt.Sprintf("%08x", ch.spiIn))
			c.queueChildDelete(ch.ike, ch, "redundant")
		}
	})
}

// ---- CHILD SA create and delete, initiator ----

func (c *Conn) queueChildCreate(sa *ikeSA) {
	if c.cur != nil {
		sa = c.cur
	}
	if sa.hasTask("child-create") {
		return
	}
	sa.enqueue("child-create", func(sa *ikeSA) bool {
		if sa.state != saEstablished || c.activeChild() != nil {
			return false
		}
		nc := c.newChild(sa, true)
		nc.ni = c.nonce()
		group := c.pfsGroup(nil)
		ps := []Payload{c.childSAPayload(nc.spiIn, true, nil), &NoncePayload{Data: nc.ni}}
		var dh dhKey
		if group != 0 {
			g, _ := dhByID(group)
			k, err := g.generate(c.opts.Rand)
			if err != nil {
				c.dropChild(nc)
				return false
			}
			dh = k
			ps = append(ps, &KEPayload{Group: group, Data: k.public()})
		}
		ps = append(ps, &TSPayload{Selectors: prefixesTS(c.cfg.LocalTS)}, &TSPayload{Responder: true, Selectors: prefixesTS(c.cfg.RemoteTS)})
		sa.logger().Info("creating CHILD_SA")
		sa.sendRequest(ExchangeCreateChildSA, "CHILD_SA create", ps, func(m *Message) {
			if n := m.ErrorNotify(); n != nil {
				c.dropChild(nc)
				reason := fmt.Sprintf("peer refused CHILD_SA creation with %s", n.NotifyType)
				c.log.Warn(reason)
				c.setError(reason)
				c.after(c.retryLater(), func() {
					if c.cur != nil && c.activeChild() == nil {
						c.queueChildCreate(c.cur)
					}
				})
				return
			}
			var shared []byte
			if ke, _ := m.Get(PayloadKE).(*KEPayload); ke != nil && dh != nil && ke.Group == group {
				shared, _ = dh.shared(ke.Data)
			}
			if nr, _ := m.Get(PayloadNonce).(*NoncePayload); nr != nil {
				nc.nr = nr.Data
			}
			if nc.nr == nil {
				c.dropChild(nc)
				return
			}
			if err := c.completeInitiatorChild(sa, nc, m, shared, false); err != nil {
				c.log.Error("CHILD_SA creation failed", "err", err)
				nc.redundant = true
				c.queueChildDelete(sa, nc, "unusable")
				return
			}
			c.installChild(sa, nc, true)
			c.childUp(sa, nc, " (created)")
		}, nil)
		return true
	})
}

func (c *Conn) queueChildDelete(sa *ikeSA, ch *childSA, why string) {
	if c.cur != nil && c.cur.state >= saEstablished {
		sa = c.cur // never a rekeyed IKE SA
	}
	sa.enqueue(fmt.Sprintf("child-delete-%08x", ch.spiIn), func(sa *ikeSA) bool {
		if ch.state == childDeleted || ch.state == childDeleting {
			return false
		}
		ch.state = childDeleting
		sa.logger().Info("deleting CHILD_SA", "spi_in", fmt.Sprintf("%08x", ch.spiIn), "spi_out", fmt.Sprintf("%08x", ch.spiOut), "why", why)
		sa.sendRequest(ExchangeInformational, "CHILD_SA delete", []Payload{&DeletePayload{Protocol: ProtoESP, SPIs: []uint32{ch.spiIn}}},
			func(*Message) { c.removeChild(ch, false, why, true) }, nil)
		return true
	})
}

// promote makes nw carry outbound traffic in place of old (a peer-driven rekey completing).
func (c *Conn) promote(old, nw *childSA) {
	if nw == nil || nw.redundant || nw.state != childInstalled {
		return
	}
	if old.outbound || c.activeChild() == nil {
		c.setOutbound(nw)
		c.emitRekeyed(old, nw)
	}
}

// ---- CREATE_CHILD_SA, responder ----

func (sa *ikeSA) handleCreateChildRequest(m *Message, h *header, local, remote netip.AddrPort) {
	c := sa.c
	reply := func(ps ...Payload) { sa.respond(h, ps, local, remote) }
	sap, _ := m.Get(PayloadSA).(*SAPayload)
	ni, _ := m.Get(PayloadNonce).(*NoncePayload)
	if sap == nil || ni == nil || len(sap.Proposals) == 0 {
		reply(&NotifyPayload{NotifyType: NotifyInvalidSyntax})
		return
	}
	if sa.state == saDeleting || sa.state == saRekeyed || sa != c.cur {
		reply(&NotifyPayload{NotifyType: NotifyTemporaryFailure})
		return
	}
	if sap.Proposals[0].Protocol == ProtoIKE {
		sa.handleIKERekeyRequest(m, sap, ni, reply)
		return
	}
	if sa.state == saRekeying {
		sa.logger().Info("peer wants a CHILD_SA while we rekey the IKE_SA: TEMPORARY_FAILURE")
		reply(&NotifyPayload{NotifyType: NotifyTemporaryFailure})
		return
	}
	var old *childSA
	if n := m.Notify(NotifyRekeySA); n != nil && (n.Protocol == ProtoESP || n.Protocol == ProtoAH) {
		if len(n.SPI) != 4 {
			reply(&NotifyPayload{NotifyType: NotifyInvalidSyntax})
			return
		}
		spi := binary.BigEndian.Uint32(n.SPI)
		old = c.childByOut(spi)
		if old == nil || old.state == childDeleted {
			sa.logger().Info("peer wants to rekey a CHILD_SA we do not have: CHILD_SA_NOT_FOUND", "spi", fmt.Sprintf("%08x", spi))
			reply(&NotifyPayload{Protocol: n.Protocol, SPI: n.SPI, NotifyType: NotifyChildSANotFound})
			return
		}
		if old.state == childDeleting {
			sa.logger().Info("peer wants to rekey a CHILD_SA we are deleting: TEMPORARY_FAILURE", "spi", fmt.Sprintf("%08x", spi))
			reply(&NotifyPayload{NotifyType: NotifyTemporaryFailure})
			return
		}
	}
	nr := c.nonce()
	var prefer []Algorithm
	what := "CHILD_SA"
	if old != nil {
		prefer = old.suite.algs
		what = "CHILD_SA rekey"
	}
	nc, ps := c.acceptChild(sa, m, false, ni.Data, nr, prefer, what)
	if nc == nil {
		reply(ps...)
		return
	}
	ps = append([]Payload{ps[0], &NoncePayload{Data: nr}}, ps[1:]...)
	if old == nil {
		c.installChild(sa, nc, true)
		reply(ps...)
		c.childUp(sa, nc, " (created by peer)")
		return
	}
	// rekey: inbound now, outbound when the peer deletes the old SA (make-before-break)
	nc.predecessor = old
	c.installChild(sa, nc, false)
	switch old.state {
	case childRekeying:
		// collision: decided when the response to our own rekey arrives
		sa.logger().Info("CHILD_SA rekey collision detected, answering as usual", "spi_in", fmt.Sprintf("%08x", old.spiIn))
		old.peerRekey = nc
	case childInstalled:
		old.state = childRekeyed
		old.successor = nc
	case childRekeyed:
		// we completed our own rekey of it before seeing this request (a collision only the
		// peer noticed): apply the nonce rule now, as the peer will
		c.counters.Collisions++
		ours := old.successor
		if ours != nil && ours.initiator && !ours.redundant && nonceCmp(lowerNonce(ours.ni, ours.nr), lowerNonce(nc.ni, nc.nr)) > 0 {
			sa.logger().Info("late CHILD_SA rekey collision won; the peer deletes its redundant CHILD_SA", "redundant_spi_in", fmt.Sprintf("%08x", nc.spiIn))
			nc.redundant = true
			c.expectPeerDelete(nc)
		} else if ours != nil {
			sa.logger().Info("late CHILD_SA rekey collision lost, deleting our redundant CHILD_SA", "redundant_spi_in", fmt.Sprintf("%08x", ours.spiIn))
			ours.redundant = true
			old.successor = nc
			c.queueChildDeleteThen(sa, ours, "redundant after rekey collision", func() { c.promote(ours, nc) })
		}
	}
	reply(ps...)
}

// queueChildDeleteThen is queueChildDelete with a completion action.
func (c *Conn) queueChildDeleteThen(sa *ikeSA, ch *childSA, why string, then func()) {
	if c.cur != nil && c.cur.state >= saEstablished {
		sa = c.cur
	}
	sa.enqueue(fmt.Sprintf("child-delete-%08x", ch.spiIn), func(sa *ikeSA) bool {
		if ch.state == childDeleted || ch.state == childDeleting {
			then()
			return false
		}
		ch.state = childDeleting
		sa.sendRequest(ExchangeInformational, "CHILD_SA delete", []Payload{&DeletePayload{Protocol: ProtoESP, SPIs: []uint32{ch.spiIn}}},
			func(*Message) {
				wasOut := ch.outbound
				c.removeChild(ch, false, why, false)
				if wasOut || c.activeChild() == nil {
					then()
				}
			}, nil)
		return true
	})
}

func (c *Conn) childByOut(spi uint32) *childSA {
	for _, ch := range c.children {
		if ch.spiOut == spi && ch.state != childDeleted {
			return ch
		}
	}
	return nil
}

// ---- IKE SA rekey ----

// ikeRekey is our outstanding IKE rekey.
type ikeRekey struct {
	spi   uint64
	ni    []byte
	group uint16
	dh    dhKey
}

func (c *Conn) scheduleIKERekey(sa *ikeSA) {
	stop(sa.rekeyTimer)
	stop(sa.lifeTimer)
	sa.rekeyTimer = c.after(c.rekeyDelay(c.cfg.IKELifetime), func() {
		if sa == c.cur && sa.state == saEstablished {
			c.queueIKERekey(sa)
		}
	})
	sa.lifeTimer = c.after(c.cfg.IKELifetime, func() {
		if sa.state == saDead || sa.state == saRekeyed {
			return
		}
		sa.logger().Warn("IKE_SA hard lifetime expired without a rekey")
		wasCur := sa == c.cur
		c.deleteIKE(sa, "IKE_SA lifetime expired")
		if wasCur && c.wantUp {
			c.initiate()
		}
	})
}

func (c *Conn) queueIKERekey(sa *ikeSA) {
	if sa.hasTask("ike-rekey") {
		return
	}
	sa.enqueue("ike-rekey", func(sa *ikeSA) bool {
		if sa != c.cur || sa.state != saEstablished {
			return false
		}
		c.startIKERekey(sa, sa.suite.dh)
		return true
	})
}

func (c *Conn) startIKERekey(sa *ikeSA, group uint16) {
	r := &ikeRekey{spi: c.newSPI64(), ni: c.nonce(), group: group}
	g, _ := dhByID(group)
	k, err := g.generate(c.opts.Rand)
	if err != nil {
		c.log.Error("cannot create DH key", "err", err)
		return
	}
	r.dh = k
	spi := binary.BigEndian.AppendUint64(nil, r.spi)
	sp := &SAPayload{}
	// current algorithms first (a rekey keeps them), then the configuration
	sp.Proposals = append(sp.Proposals, Proposal{Algs: sa.suite.algs}.toSA(1, ProtoIKE, spi, true))
	for i, p := range c.cfg.ike {
		sp.Proposals = append(sp.Proposals, p.toSA(uint8(i+2), ProtoIKE, spi, true))
	}
	ps := []Payload{sp, &NoncePayload{Data: r.ni}, &KEPayload{Group: group, Data: k.public()}}
	sa.state = saRekeying
	sa.rekey = r
	sa.logger().Info("rekeying IKE_SA")
	sa.sendRequest(ExchangeCreateChildSA, "IKE_SA rekey", ps, func(m *Message) { c.ikeRekeyResponse(sa, r, m) }, nil)
}

func (c *Conn) ikeRekeyResponse(old *ikeSA, r *ikeRekey, m *Message) {
	old.rekey = nil
	if old.state == saRekeying {
		old.state = saEstablished
	}
	fail := func(reason string) {
		if p := old.peerRekey; p != nil && p.state == saEstablished {
			old.logger().Info("our IKE_SA rekey failed but the peer's went through; adopting it", "reason", reason)
			old.peerRekey = nil
			c.adoptIKE(old, p)
			return
		}
		old.logger().Warn("IKE_SA rekey failed, retrying later", "reason", reason)
		c.after(c.retryLater(), func() {
			if old == c.cur && old.state == saEstablished {
				c.queueIKERekey(old)
			}
		})
	}
	if n := m.ErrorNotify(); n != nil {
		if n.NotifyType == NotifyInvalidKEPayload && len(n.Data) == 2 {
			g := binary.BigEndian.Uint16(n.Data)
			if g != r.group && c.offersDH(g, c.cfg.ike) && old.peerRekey == nil {
				old.enqueue("ike-rekey", func(sa *ikeSA) bool {
					if sa != c.cur || sa.state != saEstablished {
						return false
					}
					c.startIKERekey(sa, g)
					return true
				})
				return
			}
		}
		fail(fmt.Sprintf("peer answered with %s", n.NotifyType))
		return
	}
	sap, _ := m.Get(PayloadSA).(*SAPayload)
	ke, _ := m.Get(PayloadKE).(*KEPayload)
	nr, _ := m.Get(PayloadNonce).(*NoncePayload)
	if sap == nil || ke == nil || nr == nil {
		fail("response lacks SA, KE or Nonce")
		return
	}
	algs, err := checkChosen(c.cfg.ike, sap, ProtoIKE, false)
	if err == nil && len(sap.Proposals[0].SPI) != 8 {
		err = fmt.Errorf("IKE SPI of %d bytes", len(sap.Proposals[0].SPI))
	}
	var suite *ikeSuite
	if err == nil {
		suite, err = newIKESuite(algs)
	}
	if err == nil && (ke.Group != suite.dh || ke.Group != r.group) {
		err = fmt.Errorf("KE group %d, expected %d", ke.Group, r.group)
	}
	var shared []byte
	if err == nil {
		shared, err = r.dh.shared(ke.Data)
	}
	if err != nil {
		fail(err.Error())
		return
	}
	nsa := c.newSA(true)
	nsa.spiI = r.spi
	nsa.spiR = binary.BigEndian.Uint64(sap.Proposals[0].SPI)
	if err := c.rekeyedKeys(old, nsa, suite, shared, r.ni, nr.Data); err != nil {
		fail(err.Error())
		return
	}
	c.sas[nsa.spiI] = nsa
	if p := old.peerRekey; p != nil {
		c.counters.Collisions++
		old.peerRekey = nil
		this, other := lowerNonce(r.ni, nr.Data), lowerNonce(old.peerRkNi, old.peerRkNr)
		if nonceCmp(this, other) < 0 {
			old.logger().Info("IKE_SA rekey collision lost, deleting our redundant IKE_SA; the peer deletes the old one")
			nsa.redundant = true
			nsa.state = saDeleting
			nsa.estab = c.now()
			nsa.sendRequest(ExchangeInformational, "delete redundant IKE_SA", []Payload{&DeletePayload{Protocol: ProtoIKE}},
				func(*Message) { nsa.destroy() }, func(string) { nsa.destroy() })
			c.adoptIKE(old, p)
			return
		}
		old.logger().Info("IKE_SA rekey collision won; the peer deletes its redundant IKE_SA")
		p.redundant = true
		p.openTimer = c.after(c.cfg.Retransmit.Total()+10*time.Second, func() {
			if p.state != saDead && p != c.cur {
				p.destroy()
			}
		})
	}
	c.adoptIKE(old, nsa)
	old.enqueue("ike-delete", func(sa *ikeSA) bool {
		sa.state = saDeleting
		sa.sendRequest(ExchangeInformational, "delete rekeyed IKE_SA", []Payload{&DeletePayload{Protocol: ProtoIKE}},
			func(*Message) { sa.destroy() }, func(string) { sa.destroy() })
		return true
	})
}

// rekeyedKeys derives the new SA's keys: SKEYSEED = prf(SK_d(old), g^ir(new) | Ni | Nr), and
// prf+ with the OLD SA's PRF (strongSwan 5.9 does so; RFC 7296 §2.18 says the new PRF — they
// differ only if a rekey changes the PRF, which our selection avoids by keeping the algorithms).
func (c *Conn) rekeyedKeys(old, nsa *ikeSA, suite *ikeSuite, shared, ni, nr []byte) error {
	nsa.suite = suite
	nsa.ni, nsa.nr = ni, nr
	kdf := old.suite.prf
	skeyseed := kdf.mac(old.keys.d, shared, ni, nr)
	keys, err := deriveIKEKeys(kdf, suite, skeyseed, ni, nr, nsa.spiI, nsa.spiR)
	if err != nil {
		return err
	}
	if err := nsa.setKeys(keys); err != nil {
		return err
	}
	nsa.local, nsa.remote = old.local, old.remote
	nsa.natT, nsa.natLocal, nsa.natRemote, nsa.peerFrag = old.natT, old.natLocal, old.natRemote, old.peerFrag
	nsa.state = saEstablished
	nsa.estab = c.now()
	nsa.lastRecv = c.now()
	return nil
}

// adoptIKE makes nsa the current SA in place of old: CHILD SAs and queued work move over.
func (c *Conn) adoptIKE(old, nsa *ikeSA) {
	for _, ch := range c.children {
		if ch.ike == old {
			ch.ike = nsa
		}
	}
	var keep []*task
	for _, t := range old.queue {
		if t.name == "ike-delete" || t.name == "ike-rekey" || t.name == "dpd" {
			keep = append(keep, t)
			continue
		}
		nsa.queue = append(nsa.queue, t)
	}
	old.queue = nil
	for _, t := range keep {
		if t.name == "ike-delete" {
			old.queue = append(old.queue, t)
		}
	}
	c.cur = nsa
	if old.state != saDead && old.state != saDeleting {
		old.state = saRekeyed
	}
	stop(old.rekeyTimer)
	stop(old.lifeTimer)
	old.openTimer = c.after(2*c.cfg.Retransmit.Total()+10*time.Second, func() {
		if old.state != saDead {
			old.destroy()
		}
	})
	c.scheduleIKERekey(nsa)
	c.scheduleDPD()
	nsa.logger().Info("IKE_SA rekeyed", "old_spis", fmt.Sprintf("%016x_i %016x_r", old.spiI, old.spiR), "suite", nsa.suite.String())
	c.emit(Event{Type: EventIKERekeyed, Reason: "IKE_SA rekeyed", IKE: nsa.info()})
	nsa.next()
}

// handleIKERekeyRequest answers the peer's IKE rekey.
func (sa *ikeSA) handleIKERekeyRequest(m *Message, sap *SAPayload, ni *NoncePayload, reply func(...Payload)) {
	c := sa.c
	for _, ch := range c.children {
		if ch.ike == sa && (ch.state == childRekeying || ch.state == childDeleting || ch.state == childCreating) {
			sa.logger().Info("peer wants to rekey the IKE_SA while a CHILD_SA exchange is in progress: TEMPORARY_FAILURE")
			reply(&NotifyPayload{NotifyType: NotifyTemporaryFailure})
			return
		}
	}
	ke, _ := m.Get(PayloadKE).(*KEPayload)
	if ke == nil {
		reply(&NotifyPayload{NotifyType: NotifyInvalidSyntax})
		return
	}
	sel, ok := selectProposal(c.cfg.ike, sap.Proposals, ProtoIKE, false, sa.suite.algs)
	if !ok || len(sel.prop.SPI) != 8 {
		c.counters.NoProposal++
		reason := fmt.Sprintf("no proposal match for IKE_SA rekey: peer offered %s; we allow %s", formatSAProposals(sap.Proposals), formatProposals(c.cfg.ike))
		c.log.Error(reason)
		reply(&NotifyPayload{NotifyType: NotifyNoProposalChosen})
		return
	}
	suite, err := newIKESuite(sel.key)
	if err != nil {
		reply(&NotifyPayload{NotifyType: NotifyNoProposalChosen})
		return
	}
	if ke.Group != suite.dh {
		reply(&NotifyPayload{NotifyType: NotifyInvalidKEPayload, Data: binary.BigEndian.AppendUint16(nil, suite.dh)})
		return
	}
	g, _ := dhByID(suite.dh)
	k, err := g.generate(c.opts.Rand)
	if err != nil {
		reply(&NotifyPayload{NotifyType: NotifyNoProposalChosen})
		return
	}
	shared, err := k.shared(ke.Data)
	if err != nil {
		c.counters.MalformedDropped++
		reply(&NotifyPayload{NotifyType: NotifyInvalidSyntax})
		return
	}
	nr := c.nonce()
	nsa := c.newSA(false)
	nsa.spiI = binary.BigEndian.Uint64(sel.prop.SPI)
	nsa.spiR = c.newSPI64()
	if err := c.rekeyedKeys(sa, nsa, suite, shared, ni.Data, nr); err != nil {
		reply(&NotifyPayload{NotifyType: NotifyNoProposalChosen})
		return
	}
	c.sas[nsa.spiR] = nsa
	resp := sel.prop
	resp.SPI = binary.BigEndian.AppendUint64(nil, nsa.spiR)
	reply(&SAPayload{Proposals: []SAProposal{resp}}, &NoncePayload{Data: nr}, &KEPayload{Group: suite.dh, Data: k.public()})
	if sa.state == saRekeying {
		sa.logger().Info("IKE_SA rekey collision detected, answering as usual")
		sa.peerRekey = nsa
		sa.peerRkNi, sa.peerRkNr = ni.Data, nr
		return
	}
	if sa != c.cur {
		nsa.destroy()
		return
	}
	c.adoptIKE(sa, nsa)
}
