package ike

import (
	"fmt"
	"math/rand"
	"os"
	"testing"
	"time"
)

// TestChaos runs both sides with short lifetimes (CHILD 20 s, IKE 60 s: rekeys and rekey
// collisions all the time) over a network that loses, duplicates and reorders datagrams, for
// ten minutes of fake time per seed; then the network heals and both sides must converge to
// exactly one agreeing CHILD SA pair and one IKE SA. Odd seeds turn the rekey fuzz off, so
// both sides rekey at the same instant and nearly every rekey is a collision.
func TestChaos(t *testing.T) {
	seeds := 12
	if testing.Short() {
		seeds = 3
	}
	for seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewSource(int64(seed)))
			short := func(c *Config) {
				withSuite("aes128gcm16-prfsha256-curve25519", "aes128gcm16-curve25519")(c)
				c.ChildLifetime, c.IKELifetime, c.RekeyMargin = 20*time.Second, 60*time.Second, 5*time.Second
				c.DPDAction = DPDRestart
				c.CloseAction = DPDRestart
				if seed%2 == 1 {
					c.RekeyFuzz = -1 // no fuzz: both sides' timers fire together, nearly every rekey collides
				}
			}
			p := newPairRand(t, short, short, rand.New(rand.NewSource(int64(seed)*2+1)), rand.New(rand.NewSource(int64(seed)*2+2)))
			p.start()
			p.mustUp(10 * time.Second)
			chaotic := true
			p.net.drop = func(q packet) bool {
				if !chaotic {
					return false
				}
				switch x := rng.Float64(); {
				case x < 0.08:
					return true // lost
				case x < 0.13:
					p.net.queue = append(p.net.queue, q) // duplicated (called with the lock held)
				case x < 0.20 && len(p.net.queue) > 0:
					i := rng.Intn(len(p.net.queue))
					p.net.queue = append(p.net.queue, q)
					p.net.queue[i], p.net.queue[len(p.net.queue)-1] = p.net.queue[len(p.net.queue)-1], p.net.queue[i]
					return true // reordered: delivered later in place of another
				}
				return false
			}
			for range 60 {
				p.net.run(10*time.Second, nil)
				// invariants at every step: bounded state
				for _, e := range []*end{p.a, p.b} {
					checkBounded(t, e, p.clock.Now())
				}
			}
			chaotic = false
			p.net.drop = nil
			// heal: lifetimes keep rekeying, so look for a quiet moment where all agrees
			ok := p.net.run(3*time.Minute, func() bool {
				sa, sb := p.a.c.Status(), p.b.c.Status()
				return p.up() && len(sa.Children) == 1 && len(sb.Children) == 1 && sa.IKE != nil && sb.IKE != nil &&
					sa.IKE.SPIi == sb.IKE.SPIi && sa.IKE.SPIr == sb.IKE.SPIr
			})
			if !ok {
				if dir := os.Getenv("CHAOS_DUMP"); dir != "" {
					_ = os.WriteFile(dir+"/a.log", []byte(p.a.logs.String()), 0o644)
					_ = os.WriteFile(dir+"/b.log", []byte(p.b.logs.String()), 0o644)
				}
				t.Fatalf("did not converge after the network healed: A %+v / B %+v", p.a.c.Status(), p.b.c.Status())
			}
			ca, cb := p.a.c.Counters(), p.b.c.Counters()
			t.Logf("seed %d: collisions %d/%d, retransmits %d/%d, cached responses %d/%d, replays dropped %d/%d, CHILD rekeys %d, IKE rekeys %d",
				seed, ca.Collisions, cb.Collisions, ca.Retransmits, cb.Retransmits, ca.ResponsesResent, cb.ResponsesResent,
				ca.ReplayedDropped, cb.ReplayedDropped, countType(p.a, EventChildRekeyed), countType(p.a, EventIKERekeyed))
		})
	}
}

func countType(e *end, typ EventType) int {
	n := 0
	for _, ev := range e.events() {
		if ev.Type == typ {
			n++
		}
	}
	return n
}

// checkBounded: state stays bounded under chaos (a few SAs in flight at most) and the data
// plane holds exactly the inbound SAs the Conn knows about (no leak either way).
func checkBounded(t *testing.T, e *end, now time.Time) {
	t.Helper()
	e.c.mu.Lock()
	nsa, nch := len(e.c.sas), len(e.c.children)
	known := map[uint32]bool{}
	for _, ch := range e.c.children {
		if ch.inInstalled {
			known[ch.spiIn] = true
		}
	}
	e.c.mu.Unlock()
	e.dp.mu.Lock()
	installed := map[uint32]bool{}
	for spi := range e.dp.in {
		installed[spi] = true
	}
	e.dp.mu.Unlock()
	if nsa > 4 || nch > 8 || len(installed) > 6 {
		t.Fatalf("%s at %v: %d IKE SAs, %d CHILD records, %d inbound SAs", e.c.Name(), now, nsa, nch, len(installed))
	}
	for spi := range installed {
		if !known[spi] {
			t.Fatalf("%s at %v: inbound SA %08x in the data plane but not in the Conn", e.c.Name(), now, spi)
		}
	}
	for spi := range known {
		if !installed[spi] {
			t.Fatalf("%s at %v: CHILD SA %08x thought installed but not in the data plane", e.c.Name(), now, spi)
		}
	}
}
