package ike

import (
	"testing"
	"time"
)

var suites = []struct{ ike, esp string }{
	{"aes256gcm16-prfsha256-modp2048", "aes256gcm16-modp2048"},
	{"aes128-sha1-modp1024", "aes128-sha1-modp1024"},
	{"aes256-sha384-ecp384", "aes256-sha384-ecp384"},
	{"aes128gcm16-prfsha512-curve25519", "aes128gcm16-curve25519"},
}

func withSuite(ike, esp string) func(*Config) {
	return func(c *Config) {
		c.IKEProposals = MustParseProposals(ike)
		c.ESPProposals = MustParseProposals(esp)
	}
}

func TestEstablish(t *testing.T) {
	for _, s := range suites {
		t.Run(s.ike, func(t *testing.T) {
			p := newPair(t, withSuite(s.ike, s.esp), withSuite(s.ike, s.esp))
			p.start()
			p.mustUp(10 * time.Second)
			st := p.a.c.Status()
			if st.IKE == nil || st.IKE.Suite != mustNorm(t, s.ike) {
				t.Errorf("IKE suite = %+v; want %s", st.IKE, mustNorm(t, s.ike))
			}
			out := p.a.dp.outbound()
			if out.Encap {
				t.Errorf("Encap = true without NAT; want false")
			}
			p.checkConverged(time.Minute)
		})
	}
}

func mustNorm(t *testing.T, s string) string {
	p, err := ParseProposal(s)
	if err != nil {
		t.Fatal(err)
	}
	q, err := p.normalize(ProtoIKE)
	if err != nil {
		t.Fatal(err)
	}
	return q.String()
}

func TestChildRekey(t *testing.T) {
	for _, who := range []string{"initiator", "responder"} {
		for _, s := range suites {
			t.Run(who+"/"+s.esp, func(t *testing.T) {
				p := newPair(t, withSuite(s.ike, s.esp), withSuite(s.ike, s.esp))
				p.start()
				p.mustUp(10 * time.Second)
				old := p.a.dp.outbound().SPIOut
				e := p.a
				if who == "responder" {
					e = p.b
				}
				if err := e.c.RekeyChild(); err != nil {
					t.Fatal(err)
				}
				p.net.run(time.Second, nil)
				if got := p.a.dp.outbound(); got == nil || got.SPIOut == old {
					t.Fatalf("outbound SPI after rekey = %v; want a new one", got)
				}
				p.checkConverged(time.Minute)
				if !p.a.waitEvent(EventChildRekeyed) || !p.b.waitEvent(EventChildRekeyed) {
					t.Errorf("EventChildRekeyed missing: A %v, B %v", p.a.hasEvent(EventChildRekeyed), p.b.hasEvent(EventChildRekeyed))
				}
			})
		}
	}
}

func TestIKERekey(t *testing.T) {
	for _, who := range []string{"initiator", "responder"} {
		t.Run(who, func(t *testing.T) {
			p := newPair(t, nil, nil)
			p.start()
			p.mustUp(10 * time.Second)
			before := p.a.c.Status().IKE.SPIi
			e := p.a
			if who == "responder" {
				e = p.b
			}
			if err := e.c.RekeyIKE(); err != nil {
				t.Fatal(err)
			}
			p.net.run(time.Second, nil)
			sa, sb := p.a.c.Status(), p.b.c.Status()
			if sa.IKE == nil || sb.IKE == nil || sa.IKE.SPIi == before || sa.IKE.SPIi != sb.IKE.SPIi || sa.IKE.SPIr != sb.IKE.SPIr {
				t.Fatalf("IKE SAs after rekey: A %+v B %+v (before %016x)", sa.IKE, sb.IKE, before)
			}
			// the new IKE SA works: rekey the CHILD SA over it
			if err := p.b.c.RekeyChild(); err != nil {
				t.Fatal(err)
			}
			p.checkConverged(time.Minute)
			for _, x := range []*end{p.a, p.b} {
				x.c.mu.Lock()
				n := len(x.c.sas)
				x.c.mu.Unlock()
				if n != 1 {
					t.Errorf("%s has %d IKE SAs after the rekey settled; want 1", x.c.Name(), n)
				}
			}
		})
	}
}
