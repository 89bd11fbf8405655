package ike

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"
)

type saState int

const (
	saInitSent    saState = iota // initiator: IKE_SA_INIT outstanding
	saAuthSent                   // initiator: IKE_AUTH outstanding
	saHalfOpen                   // responder: IKE_SA_INIT answered, waiting for IKE_AUTH
	saEstablished                // up
	saRekeying                   // up, our IKE rekey outstanding
	saRekeyed                    // replaced by a new IKE SA, waiting for its deletion
	saDeleting                   // our DELETE outstanding
	saDead                       // destroyed
)

var saStateNames = [...]string{"INIT_SENT", "AUTH_SENT", "HALF_OPEN", "ESTABLISHED", "REKEYING", "REKEYED", "DELETING", "DEAD"}

func (s saState) String() string { return saStateNames[s] }

// ikeSA is one IKE SA. All methods run with the Conn locked.
type ikeSA struct {
	c          *Conn
	serial     int
	initiator  bool // original initiator of this SA
	spiI, spiR uint64
	state      saState
	suite      *ikeSuite
	keys       *ikeKeys
	in, out    *skDir
	ni, nr     []byte
	dh         dhKey
	dhGroup    uint16
	initReq    []byte // IKE_SA_INIT request as sent/received (AUTH input)
	initResp   []byte // IKE_SA_INIT response
	local      netip.AddrPort
	remote     netip.AddrPort
	natT       bool // on the NAT-T ports (marker)
	natLocal   bool // we are behind a NAT
	natRemote  bool // the peer is behind a NAT (or fakes it)
	peerFrag   bool // peer announced IKEv2 fragmentation
	cookie     []byte
	retries    int // COOKIE / INVALID_KE retries of IKE_SA_INIT

	// requests we send (window size 1)
	nextID  uint32
	pending *request
	queue   []*task

	// requests we answer
	expectID   uint32
	lastResp   [][]byte
	haveResp   bool
	frags      [2]*reassembly // requests, responses
	lastSent   time.Time
	lastRecv   time.Time
	created    time.Time
	estab      time.Time
	rekeyTimer Timer
	lifeTimer  Timer
	openTimer  Timer

	authChild *childSA // initiator: the CHILD SA proposed in IKE_AUTH

	// IKE rekey bookkeeping (on the old SA)
	rekey     *ikeRekey // our outstanding rekey
	peerRekey *ikeSA    // SA created answering the peer's rekey while ours was outstanding
	peerRkNi  []byte
	peerRkNr  []byte
	redundant bool // loser of a collision, to be deleted
}

// request is our outstanding request.
type request struct {
	sa       *ikeSA
	id       uint32
	exch     ExchangeType
	name     string
	packets  [][]byte
	start    time.Time
	sends    int
	timer    Timer
	deadline time.Time     // zero: the retransmit schedule decides
	interval time.Duration // fixed retransmit interval (probes); zero: exponential schedule
	dpd      bool          // a liveness check: keep retransmitting until the deadline
	handle   func(*Message)
	dead     func(reason string)
	probes   []chan error
}

type task struct {
	name string
	run  func(sa *ikeSA) bool // sends a request; false: nothing to do
}

func (c *Conn) newSA(initiator bool) *ikeSA {
	c.serial++
	sa := &ikeSA{c: c, serial: c.serial, initiator: initiator, created: c.now()}
	sa.local = netip.AddrPortFrom(c.cfg.LocalAddr, c.cfg.LocalPort)
	sa.remote = netip.AddrPortFrom(c.cfg.RemoteAddr, c.cfg.RemotePort)
	return sa
}

func (sa *ikeSA) ourSPI() uint64 {
	if sa.initiator {
		return sa.spiI
	}
	return sa.spiR
}

func (sa *ikeSA) info() IKEInfo {
	i := IKEInfo{SPIi: sa.spiI, SPIr: sa.spiR, Initiator: sa.initiator, Local: sa.local, Remote: sa.remote, NATT: sa.natT, Established: sa.estab}
	if sa.suite != nil {
		i.Suite = sa.suite.String()
	}
	return i
}

func (sa *ikeSA) logger() *slog.Logger {
	return sa.c.log.With("ike_sa", sa.serial, "spis", fmt.Sprintf("%016x_i %016x_r", sa.spiI, sa.spiR))
}

// setKeys derives the SK payload keys from k for this SA's role.
func (sa *ikeSA) setKeys(k *ikeKeys) error {
	sa.keys = k
	s := sa.suite
	ei, err := newSKDir(s.encr, s.integ, k.ei, k.ai)
	if err != nil {
		return err
	}
	er, err := newSKDir(s.encr, s.integ, k.er, k.ar)
	if err != nil {
		return err
	}
	if sa.initiator {
		sa.out, sa.in = ei, er
	} else {
		sa.out, sa.in = er, ei
	}
	return nil
}

// floatToNATT moves the SA to the NAT-T ports (RFC 7296 §2.23).
func (sa *ikeSA) floatToNATT() {
	if sa.natT {
		return
	}
	sa.natT = true
	sa.local = netip.AddrPortFrom(sa.local.Addr(), sa.c.cfg.LocalNATTPort)
	sa.remote = netip.AddrPortFrom(sa.remote.Addr(), sa.c.cfg.RemoteNATTPort)
}

// ---- sending ----

// transmit sends packets on the SA's current path, adding the non-ESP marker on the NAT-T port.
func (sa *ikeSA) transmit(pkts [][]byte, local, remote netip.AddrPort) {
	for _, p := range pkts {
		b := p
		if local.Port() == sa.c.cfg.LocalNATTPort {
			b = append(append(make([]byte, 0, len(p)+4), nonESPMarker...), p...)
		}
		if err := sa.c.opts.Sender.Send(b, local, remote); err != nil {
			sa.c.log.Debug("send failed", "to", remote, "err", err)
		}
	}
	sa.lastSent = sa.c.now()
}

// encode protects m (IKE_SA_INIT goes in the clear) and returns the datagrams.
func (sa *ikeSA) encode(m *Message) ([][]byte, error) {
	if m.Exchange == ExchangeIKESAInit {
		return [][]byte{encodePlain(m)}, nil
	}
	if sa.out == nil {
		return nil, errors.New("no keys")
	}
	inner := appendChain(nil, m.Payloads)
	first := firstType(m.Payloads)
	if sa.peerFrag && sa.c.cfg.Fragmentation && headerLen+4+sa.out.sealedLen(len(inner)) > sa.c.cfg.FragmentSize {
		return sa.encodeFragments(m, inner, first)
	}
	b := appendHeader(make([]byte, 0, headerLen+4+sa.out.sealedLen(len(inner))), m, PayloadSK)
	b = append(b, byte(first), 0, 0, 0)
	total := len(b) + sa.out.sealedLen(len(inner))
	binary.BigEndian.PutUint16(b[headerLen+2:], uint16(total-headerLen))
	binary.BigEndian.PutUint32(b[24:], uint32(total))
	out, err := sa.out.seal(b, inner, sa.c.opts.Rand)
	if err != nil {
		return nil, err
	}
	return [][]byte{out}, nil
}

// encodeFragments splits the inner payloads into SKF fragments (RFC 7383 §2.5).
func (sa *ikeSA) encodeFragments(m *Message, inner []byte, first PayloadType) ([][]byte, error) {
	over := headerLen + 8 + sa.out.sealedLen(0)
	room := sa.c.cfg.FragmentSize - over
	if !sa.out.encr.aead {
		room = room / 16 * 16 // keep whole blocks; padding stays in the last block
	}
	if room < 64 {
		room = 64
	}
	n := (len(inner) + room - 1) / room
	if n > 0xffff {
		return nil, errors.New("message too large to fragment")
	}
	var pkts [][]byte
	for i := range n {
		chunk := inner[i*room : min(len(inner), (i+1)*room)]
		next := PayloadNone
		if i == 0 {
			next = first
		}
		b := appendHeader(nil, m, PayloadSKF)
		b = append(b, byte(next), 0, 0, 0)
		b = binary.BigEndian.AppendUint16(b, uint16(i+1))
		b = binary.BigEndian.AppendUint16(b, uint16(n))
		total := len(b) + sa.out.sealedLen(len(chunk))
		binary.BigEndian.PutUint16(b[headerLen+2:], uint16(total-headerLen))
		binary.BigEndian.PutUint32(b[24:], uint32(total))
		out, err := sa.out.seal(b, chunk, sa.c.opts.Rand)
		if err != nil {
			return nil, err
		}
		pkts = append(pkts, out)
	}
	return pkts, nil
}

// sendRequest sends a new request (the window must be open). dead is called when the
// exchange gives up; nil means the peer is declared dead.
func (sa *ikeSA) sendRequest(exch ExchangeType, name string, payloads []Payload, handle func(*Message), dead func(string)) {
	c := sa.c
	flags := uint8(0)
	if sa.initiator {
		flags |= flagInitiator
	}
	m := &Message{SPIi: sa.spiI, SPIr: sa.spiR, Exchange: exch, Flags: flags, MsgID: sa.nextID, Payloads: payloads}
	pkts, err := sa.encode(m)
	if err != nil {
		c.log.Error("cannot encode request", "exchange", exch, "err", err)
		return
	}
	r := &request{sa: sa, id: m.MsgID, exch: exch, name: name, packets: pkts, start: c.now(), handle: handle, dead: dead}
	sa.nextID++
	sa.pending = r
	sa.logger().Debug("sending "+m.Summary(), "what", name, "to", sa.remote)
	sa.transmit(pkts, sa.local, sa.remote)
	r.sends = 1
	r.schedule()
}

// schedule arms the retransmission timer.
func (r *request) schedule() {
	c := r.sa.c
	cfg := c.cfg.Retransmit
	wait := r.interval
	if wait == 0 {
		wait = time.Duration(float64(cfg.Timeout) * pow(cfg.Base, r.sends-1))
	}
	if !r.deadline.IsZero() {
		if left := r.deadline.Sub(c.now()); left < wait {
			wait = max(left, 0)
		}
	}
	stop(r.timer)
	r.timer = c.after(wait, r.fire)
}

// tighten sets a deadline (if earlier than the current one) and retransmits now.
func (r *request) tighten(deadline time.Time, interval time.Duration) {
	if r.deadline.IsZero() || deadline.Before(r.deadline) {
		r.deadline = deadline
	}
	r.dpd = true // a deadline, not the retransmit count, decides
	if interval > 0 {
		r.interval = interval
		r.resend()
	}
	r.schedule()
}

func (r *request) resend() {
	sa := r.sa
	sa.c.counters.Retransmits++
	sa.transmit(r.packets, sa.local, sa.remote)
	r.sends++
}

func (r *request) fire() {
	sa := r.sa
	if sa.pending != r {
		return
	}
	c := sa.c
	now := c.now()
	expired := !r.deadline.IsZero() && !now.Before(r.deadline)
	tries := c.cfg.Retransmit.Tries
	if !expired && (r.dpd && !r.deadline.IsZero() || r.sends <= tries) {
		sa.logger().Debug("retransmitting request", "what", r.name, "id", r.id, "send", r.sends+1)
		r.resend()
		r.schedule()
		return
	}
	reason := fmt.Sprintf("no response to %s (%s %d) after %d retransmits in %v", r.name, r.exch, r.id, r.sends-1, now.Sub(r.start).Round(time.Millisecond))
	if c.cfg.DPDAction == DPDNone && r.dead == nil && sa == c.cur && sa.state >= saEstablished {
		// keep the exchange (and the SA) alive: retransmit at the last interval until answered
		for _, p := range r.probes {
			p <- ErrPeerDead
		}
		r.probes = nil
		sa.logger().Warn("peer is not answering; DPD action none keeps the SAs", "reason", reason)
		c.emit(Event{Type: EventPeerDead, Reason: "peer dead (" + reason + "); DPD action none: keeping the SAs", IKE: sa.info()})
		r.deadline = time.Time{}
		r.dpd = true
		r.interval = time.Duration(float64(c.cfg.Retransmit.Timeout) * pow(c.cfg.Retransmit.Base, tries))
		r.resend()
		r.schedule()
		return
	}
	sa.pending = nil
	for _, p := range r.probes {
		p <- ErrPeerDead
	}
	if r.dead != nil {
		r.dead(reason)
		sa.next()
		return
	}
	c.peerDead(sa, reason)
}

// enqueue adds a task; it runs when the window is open.
func (sa *ikeSA) enqueue(name string, run func(*ikeSA) bool) {
	sa.queue = append(sa.queue, &task{name: name, run: run})
	sa.next()
}

func (sa *ikeSA) hasTask(name string) bool {
	for _, t := range sa.queue {
		if t.name == name {
			return true
		}
	}
	return false
}

// next starts queued tasks while the window is open.
func (sa *ikeSA) next() {
	for sa.pending == nil && len(sa.queue) > 0 && sa.state != saDead {
		if sa.state < saEstablished {
			return
		}
		t := sa.queue[0]
		sa.queue = sa.queue[1:]
		t.run(sa)
	}
}

// respond sends (and caches) the response to request id.
func (sa *ikeSA) respond(req *header, payloads []Payload, local, remote netip.AddrPort) {
	flags := uint8(flagResponse)
	if sa.initiator {
		flags |= flagInitiator
	}
	m := &Message{SPIi: sa.spiI, SPIr: sa.spiR, Exchange: req.exchange, Flags: flags, MsgID: req.msgID, Payloads: payloads}
	pkts, err := sa.encode(m)
	if err != nil {
		sa.c.log.Error("cannot encode response", "exchange", req.exchange, "err", err)
		return
	}
	sa.lastResp = pkts
	sa.haveResp = true
	sa.logger().Debug("sending "+m.Summary(), "to", remote)
	sa.transmit(pkts, local, remote)
}

// ---- receiving ----

// handle processes a message for this SA (header already matched).
func (sa *ikeSA) handle(b []byte, h header, local, remote netip.AddrPort) {
	c := sa.c
	if sa.state == saDead {
		return
	}
	if h.exchange == ExchangeIKESAInit {
		if h.isResponse() && sa.initiator && sa.state == saInitSent && sa.pending != nil && h.msgID == 0 {
			sa.handleInitResponse(b, h, local, remote)
			return
		}
		if !h.isResponse() && !sa.initiator && h.msgID == 0 && sa.haveResp && sa.expectID == 1 {
			c.counters.ResponsesResent++
			sa.transmit(sa.lastResp, local, remote)
			return
		}
		c.counters.ReplayedDropped++
		return
	}
	if sa.in == nil {
		c.counters.MalformedDropped++
		return
	}
	if h.isResponse() {
		if sa.pending == nil || sa.pending.id != h.msgID {
			c.counters.ReplayedDropped++
			sa.logger().Debug("dropping unexpected response", "id", h.msgID)
			return
		}
	} else {
		switch {
		case h.msgID+1 == sa.expectID && sa.haveResp:
			// retransmitted request: answer from the cache once it authenticates
			if _, err := sa.decrypt(b, h, true); err == nil {
				c.counters.ResponsesResent++
				sa.logger().Debug("retransmitting response to retransmitted request", "id", h.msgID)
				sa.transmit(sa.lastResp, local, remote)
			} else if !errors.Is(err, errIncomplete) {
				c.counters.MalformedDropped++
			}
			return
		case h.msgID != sa.expectID:
			c.counters.ReplayedDropped++
			sa.logger().Debug("dropping request outside the window", "id", h.msgID, "expected", sa.expectID)
			return
		}
	}
	m, err := sa.decrypt(b, h, false)
	if errors.Is(err, errIncomplete) {
		return
	}
	var uc *errUnsupportedCritical
	if errors.As(err, &uc) && !h.isResponse() {
		sa.expectID++
		sa.respond(&h, []Payload{&NotifyPayload{NotifyType: NotifyUnsupportedCriticalPayload, Data: []byte{byte(uc.typ)}}}, local, remote)
		return
	}
	if err != nil {
		c.counters.MalformedDropped++
		sa.logger().Debug("dropping message", "from", remote, "err", err)
		return
	}
	sa.lastRecv = c.now()
	// authenticated: follow the peer's address/port (NAT mapping changes, RFC 7296 §2.23)
	if sa.natT || remote.Port() == c.cfg.RemoteNATTPort {
		if sa.remote != remote || sa.local != local {
			moved := sa.state >= saEstablished && sa.remote != remote
			sa.remote, sa.local = remote, local
			sa.natT = local.Port() == c.cfg.LocalNATTPort
			if moved && sa == c.cur {
				sa.logger().Info("peer address changed (NAT mapping)", "remote", remote)
				if ch := c.activeChild(); ch != nil && ch.ike == sa {
					c.setOutbound(ch) // the data plane learns the new outer address
				}
			}
		}
	}
	sa.logger().Debug("received "+m.Summary(), "from", remote)
	if h.isResponse() {
		r := sa.pending
		sa.pending = nil
		stop(r.timer)
		for _, p := range r.probes {
			p <- nil
		}
		r.handle(m)
		sa.next()
		return
	}
	sa.expectID++
	sa.haveResp = false
	sa.handleRequest(m, &h, local, remote)
	sa.next()
}

var errIncomplete = errors.New("fragment stored, message incomplete")

// decrypt verifies and decrypts an SK or SKF message; for fragments it returns errIncomplete
// until all are in. peek only checks the first fragment / the SK payload (retransmissions).
func (sa *ikeSA) decrypt(b []byte, h header, peek bool) (*Message, error) {
	_, ep, err := parseChain(h.next, b[headerLen:], headerLen, true)
	if err != nil {
		return nil, err
	}
	if ep == nil {
		return nil, perr("message", "%s without an encrypted payload", h.exchange)
	}
	plain, err := sa.in.open(b, ep.body)
	if err != nil {
		return nil, err
	}
	first := ep.innerFirst
	if ep.typ == PayloadSKF {
		if peek {
			if ep.fragNum == 1 {
				return nil, nil
			}
			return nil, errIncomplete
		}
		full, firstType, done := sa.reassemble(h, ep, plain)
		if !done {
			return nil, errIncomplete
		}
		plain, first = full, firstType
	}
	if peek {
		return nil, nil
	}
	ps, _, err := parseChain(first, plain, 0, false)
	if err != nil {
		return nil, err
	}
	return &Message{SPIi: h.spiI, SPIr: h.spiR, Exchange: h.exchange, Flags: h.flags, MsgID: h.msgID, Payloads: ps}, nil
}

// reassembly collects SKF fragments of one message (RFC 7383 §2.6).
type reassembly struct {
	msgID    uint32
	response bool
	total    uint16
	first    PayloadType
	parts    map[uint16][]byte
	size     int
}

func (sa *ikeSA) reassemble(h header, ep *encPayload, plain []byte) ([]byte, PayloadType, bool) {
	slot := 0
	if h.isResponse() {
		slot = 1
	}
	r := sa.frags[slot]
	if r == nil || r.msgID != h.msgID || ep.fragTotal > r.total {
		r = &reassembly{msgID: h.msgID, response: h.isResponse(), total: ep.fragTotal, parts: map[uint16][]byte{}}
		sa.frags[slot] = r
	}
	if ep.fragTotal < r.total {
		return nil, 0, false // stale fragment of an older split
	}
	if _, dup := r.parts[ep.fragNum]; dup {
		return nil, 0, false
	}
	if r.size+len(plain) > 1<<16 {
		sa.frags[slot] = nil
		return nil, 0, false
	}
	r.parts[ep.fragNum] = plain
	r.size += len(plain)
	if ep.fragNum == 1 {
		r.first = ep.innerFirst
	}
	if len(r.parts) < int(r.total) {
		return nil, 0, false
	}
	full := make([]byte, 0, r.size)
	for i := uint16(1); i <= r.total; i++ {
		full = append(full, r.parts[i]...)
	}
	sa.frags[slot] = nil
	return full, r.first, true
}

// handleRequest dispatches a decrypted request; it must send exactly one response.
func (sa *ikeSA) handleRequest(m *Message, h *header, local, remote netip.AddrPort) {
	switch m.Exchange {
	case ExchangeIKEAuth:
		if sa.state == saHalfOpen && !sa.initiator {
			sa.handleAuthRequest(m, h, local, remote)
			return
		}
		sa.respond(h, []Payload{&NotifyPayload{NotifyType: NotifyInvalidSyntax}}, local, remote)
	case ExchangeCreateChildSA:
		sa.handleCreateChildRequest(m, h, local, remote)
	case ExchangeInformational:
		sa.handleInformationalRequest(m, h, local, remote)
	default:
		sa.respond(h, []Payload{&NotifyPayload{NotifyType: NotifyInvalidSyntax}}, local, remote)
	}
}

// destroy forgets the SA (no messages are sent). Its CHILD SAs are removed by the caller.
func (sa *ikeSA) destroy() {
	c := sa.c
	if sa.state == saDead {
		return
	}
	sa.state = saDead
	if sa.pending != nil {
		stop(sa.pending.timer)
		for _, p := range sa.pending.probes {
			p <- ErrPeerDead
		}
		sa.pending = nil
	}
	sa.queue = nil
	stop(sa.rekeyTimer)
	stop(sa.lifeTimer)
	stop(sa.openTimer)
	delete(c.sas, sa.ourSPI())
	for k, v := range c.initReqs {
		if v == sa {
			delete(c.initReqs, k)
		}
	}
	if c.cur == sa {
		c.cur = nil
	}
	if sa.peerRekey != nil && sa.peerRekey.state != saDead && c.cur != sa.peerRekey {
		sa.peerRekey.destroy()
	}
}
