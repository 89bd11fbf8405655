package ike

import (
	"fmt"
	"net/netip"
)

// handleInformationalRequest answers DELETEs, notifies and empty liveness checks.
func (sa *ikeSA) handleInformationalRequest(m *Message, h *header, local, remote netip.AddrPort) {
	c := sa.c
	deleteIKE := false
	var answered []uint32
	for _, p := range m.Payloads {
		switch p := p.(type) {
		case *DeletePayload:
			switch p.Protocol {
			case ProtoIKE:
				deleteIKE = true
			case ProtoESP, ProtoAH:
				for _, spi := range p.SPIs {
					if in, ok := c.peerDeletesChild(sa, spi); ok {
						answered = append(answered, in)
					}
				}
			}
		case *NotifyPayload:
			if p.NotifyType == NotifyAuthenticationFailed {
				c.counters.AuthFailures++
				reason := "AUTHENTICATION_FAILED: the peer rejected our AUTH payload; the pre-shared key probably doesn't match"
				c.log.Error(reason)
				c.setError(reason)
				sa.respond(h, nil, local, remote)
				c.emit(Event{Type: EventAuthFailed, Reason: reason, IKE: sa.info()})
				wasCur := sa == c.cur
				c.dropSA(sa, reason, wasCur)
				if wasCur {
					c.failed(reason)
				}
				return
			}
			if p.NotifyType.IsError() {
				sa.logger().Warn("peer sent an error notify", "notify", p.NotifyType.String())
			}
		}
	}
	if deleteIKE {
		sa.respond(h, nil, local, remote)
		c.ikeDeletedByPeer(sa)
		return
	}
	var resp []Payload
	if len(answered) > 0 {
		resp = append(resp, &DeletePayload{Protocol: ProtoESP, SPIs: answered})
	}
	sa.respond(h, resp, local, remote)
	if sa == c.cur && sa.state == saEstablished && c.activeChild() == nil && c.cfg.CloseAction == DPDRestart && !c.childPending() {
		c.queueChildCreate(sa)
	}
}

// childPending reports a CHILD SA that is being set up (it will become active).
func (c *Conn) childPending() bool {
	for _, ch := range c.children {
		if ch.state == childInstalled && !ch.redundant && ch.predecessor != nil && ch.predecessor.state != childDeleted {
			return true
		}
	}
	return false
}

// peerDeletesChild handles one SPI of a peer's DELETE (the SPI is the peer's inbound, our
// outbound). It returns our inbound SPI to put in the response, unless we were deleting the
// same SA ourselves (RFC 7296 §1.4.1).
func (c *Conn) peerDeletesChild(sa *ikeSA, spi uint32) (uint32, bool) {
	ch := c.childByOut(spi)
	if ch == nil {
		sa.logger().Debug("peer deletes an unknown CHILD_SA", "spi", fmt.Sprintf("%08x", spi))
		return 0, false
	}
	sa.logger().Info("peer deletes CHILD_SA", "spi_in", fmt.Sprintf("%08x", ch.spiIn), "spi_out", fmt.Sprintf("%08x", ch.spiOut), "state", ch.state.String())
	switch ch.state {
	case childDeleting:
		if ch.successor != nil {
			c.promote(ch, ch.successor)
		}
		c.removeChild(ch, false, "deleted by both peers", true)
		return 0, false
	case childRekeyed:
		c.promote(ch, ch.successor)
		c.removeChild(ch, false, "rekeyed", true)
	case childRekeying:
		if p := ch.peerRekey; p != nil {
			// the peer won the collision and deletes the old SA: its SA survives. The old SA
			// counts as rekeyed from here, so the event promote emits (and AWS's
			// ike_phase2_state in it) says Established, not Rekeying.
			c.counters.Collisions++
			ch.state = childRekeyed
			ch.successor = p
			ch.peerRekey = nil
			c.promote(ch, p)
			c.removeChild(ch, false, "rekeyed (collision)", true)
		} else {
			c.removeChild(ch, false, "deleted by peer", true)
		}
	default:
		if ch.redundant {
			c.removeChild(ch, false, "redundant", false)
		} else {
			c.removeChild(ch, false, "deleted by peer", true)
		}
	}
	return ch.spiIn, true
}

// ikeDeletedByPeer: the peer deleted sa (we already answered).
func (c *Conn) ikeDeletedByPeer(sa *ikeSA) {
	if sa != c.cur {
		sa.logger().Info("peer deleted a non-current IKE_SA", "state", sa.state.String())
		c.dropSA(sa, "deleted by peer", false)
		return
	}
	if p := sa.peerRekey; p != nil && p.state == saEstablished {
		// the peer won an IKE rekey collision and deletes the old SA before our response came
		sa.logger().Info("peer deleted the IKE_SA it rekeyed in a collision; adopting its new IKE_SA")
		c.counters.Collisions++
		sa.peerRekey = nil
		c.adoptIKE(sa, p)
		sa.destroy()
		return
	}
	reason := "IKE_SA deleted by peer"
	sa.logger().Info(reason)
	c.dropSA(sa, reason, true)
	if c.cfg.CloseAction == DPDRestart || c.wantUp {
		c.wantUp = true
		c.attempts = 0
		c.failed(reason)
	}
}

// dropSA destroys sa and its CHILD SAs without sending anything.
func (c *Conn) dropSA(sa *ikeSA, reason string, event bool) {
	info := sa.info()
	wasCur := sa == c.cur
	for _, ch := range append([]*childSA(nil), c.children...) {
		if ch.ike == sa {
			c.removeChild(ch, true, reason, event)
		}
	}
	sa.destroy()
	if wasCur && event {
		c.emit(Event{Type: EventIKEDown, Reason: reason, IKE: info})
	}
}

// deleteIKE deletes sa with a DELETE (best effort) and removes its CHILD SAs now.
func (c *Conn) deleteIKE(sa *ikeSA, reason string) {
	info := sa.info()
	wasCur := sa == c.cur
	for _, ch := range append([]*childSA(nil), c.children...) {
		if ch.ike == sa {
			c.removeChild(ch, true, reason, wasCur)
		}
	}
	if wasCur {
		c.cur = nil
		sa.logger().Info("deleting IKE_SA", "reason", reason)
		c.emit(Event{Type: EventIKEDown, Reason: reason, IKE: info})
	}
	if sa.state < saEstablished || sa.state >= saDeleting {
		sa.destroy()
		return
	}
	if sa.pending != nil {
		stop(sa.pending.timer)
		sa.pending = nil
	}
	sa.queue = nil
	sa.state = saDeleting
	sa.sendRequest(ExchangeInformational, "IKE_SA delete", []Payload{&DeletePayload{Protocol: ProtoIKE}},
		func(*Message) { sa.destroy() }, func(string) { sa.destroy() })
}

// peerDead handles an exchange that got no answer.
func (c *Conn) peerDead(sa *ikeSA, reason string) {
	if sa != c.cur {
		sa.logger().Info("non-current IKE_SA gave up", "reason", reason)
		c.dropSA(sa, reason, false)
		return
	}
	if sa.state < saEstablished {
		c.establishFailed(sa, reason, EventNegotiationFailed)
		return
	}
	full := "peer dead: " + reason
	sa.logger().Warn("peer is dead", "reason", reason, "action", string(c.cfg.DPDAction))
	c.setError(full)
	c.emit(Event{Type: EventPeerDead, Reason: full, IKE: sa.info()})
	c.destroyAll(full, true)
	if c.cfg.DPDAction == DPDRestart {
		c.wantUp = true
		c.attempts = 0
		c.initiate()
	}
}
