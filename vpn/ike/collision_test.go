package ike

import (
	"fmt"
	"testing"
	"time"
)

// exchangeOf decodes the exchange type and response flag of a captured datagram.
func exchangeOf(p packet) (ExchangeType, bool) {
	b := p.b
	if p.to.Port() == 4500 && len(b) >= 4 {
		b = b[4:]
	}
	if len(b) < headerLen {
		return 0, false
	}
	return ExchangeType(b[18]), b[19]&flagResponse != 0
}

// TestChildRekeyCollision starts a CHILD rekey on both sides at once, many times (random nonces
// decide who wins), and checks that exactly one CHILD SA pair survives with agreeing keys.
func TestChildRekeyCollision(t *testing.T) {
	for i := range 20 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			p := newPair(t, withSuite(suites[0].ike, suites[0].esp), withSuite(suites[0].ike, suites[0].esp))
			p.start()
			p.mustUp(10 * time.Second)
			if err := p.a.c.RekeyChild(); err != nil {
				t.Fatal(err)
			}
			if err := p.b.c.RekeyChild(); err != nil {
				t.Fatal(err)
			}
			p.checkConverged(time.Minute)
			if a, b := p.a.c.Counters().Collisions, p.b.c.Counters().Collisions; a != 1 || b != 1 {
				t.Errorf("Collisions = %d, %d; want 1, 1", a, b)
			}
			// and the survivor can be rekeyed again
			if err := p.b.c.RekeyChild(); err != nil {
				t.Fatal(err)
			}
			p.checkConverged(time.Minute)
		})
	}
}

// TestChildRekeyLateCollision: the peer's rekey request is delayed until our own rekey has
// completed, so only the peer sees the collision; both must still end with one SA pair.
func TestChildRekeyLateCollision(t *testing.T) {
	for i := range 20 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			p := newPair(t, nil, nil)
			p.start()
			p.mustUp(10 * time.Second)
			// hold B's CREATE_CHILD_SA request until A's rekey (and A's DELETE) went through
			p.net.hold = func(q packet) bool {
				ex, resp := exchangeOf(q)
				return q.from.Addr() == addrB && ex == ExchangeCreateChildSA && !resp
			}
			_ = p.a.c.RekeyChild()
			_ = p.b.c.RekeyChild()
			p.net.run(50*time.Millisecond, nil)
			p.net.release()
			p.checkConverged(2 * time.Minute)
			// B saw A's request while its own was held and then A's DELETE of the old SA: B
			// counts the collision, and the event of the rekey (what the tunnel's activity log
			// reports) says Established, not Rekeying (it once stuck at Rekeying).
			if got := p.b.c.Counters().Collisions; got != 1 {
				t.Errorf("B: Collisions = %d; want 1", got)
			}
			if !p.b.waitEvent(EventChildRekeyed) {
				t.Fatalf("B: no %s event", EventChildRekeyed)
			}
			var last Event
			for _, ev := range p.b.events() {
				if ev.Type == EventChildRekeyed {
					last = ev
				}
			}
			if last.Phase2 != StateEstablished {
				t.Errorf("B: %s event Phase2 = %s; want %s", EventChildRekeyed, last.Phase2, StateEstablished)
			}
		})
	}
}

// TestIKERekeyCollision starts an IKE rekey on both sides at once.
func TestIKERekeyCollision(t *testing.T) {
	for i := range 20 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			p := newPair(t, nil, nil)
			p.start()
			p.mustUp(10 * time.Second)
			_ = p.a.c.RekeyIKE()
			_ = p.b.c.RekeyIKE()
			p.net.run(time.Minute, nil)
			sa, sb := p.a.c.Status(), p.b.c.Status()
			if sa.IKE == nil || sb.IKE == nil || sa.IKE.SPIi != sb.IKE.SPIi || sa.IKE.SPIr != sb.IKE.SPIr {
				t.Fatalf("IKE SAs after collision: A %+v B %+v", sa.IKE, sb.IKE)
			}
			for _, x := range []*end{p.a, p.b} {
				x.c.mu.Lock()
				n := len(x.c.sas)
				x.c.mu.Unlock()
				if n != 1 {
					t.Errorf("%s has %d IKE SAs; want 1", x.c.Name(), n)
				}
			}
			// the surviving IKE SA carries further exchanges
			_ = p.a.c.RekeyChild()
			p.checkConverged(time.Minute)
		})
	}
}

// TestRekeyIKEAndChildTogether: an IKE rekey from one side meets a CHILD rekey from the other
// (TEMPORARY_FAILURE paths).
func TestRekeyIKEAndChildTogether(t *testing.T) {
	for i := range 10 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			p := newPair(t, nil, nil)
			p.start()
			p.mustUp(10 * time.Second)
			if i%2 == 0 {
				_ = p.a.c.RekeyIKE()
				_ = p.b.c.RekeyChild()
			} else {
				_ = p.a.c.RekeyChild()
				_ = p.b.c.RekeyIKE()
			}
			p.checkConverged(2 * time.Minute)
		})
	}
}
