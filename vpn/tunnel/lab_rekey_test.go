package tunnel

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"meshroot/internal/lab"
	"meshroot/vpn/ike"
)

// settled reports whether strongSwan and our tunnel agree on exactly one CHILD SA pair (no
// rekey in progress on either side).
func (r *labRig) settled() bool {
	st := r.tun.Status()
	if st.Phase1 != ike.StateEstablished || st.Phase2 != ike.StateEstablished || len(st.Children) != 1 {
		return false
	}
	sa, ok, err := r.sw.IKE(r.ctx(5*time.Second), "tun1")
	if err != nil || !ok || sa.State != "ESTABLISHED" {
		return false
	}
	n := 0
	for _, ch := range sa.Children {
		if ch.State != "INSTALLED" {
			return false
		}
		n++
		if !strings.EqualFold(strings.TrimLeft(ch.SPIIn, "0"), strings.TrimLeft(fmt.Sprintf("%x", st.Children[0].SPIOut), "0")) {
			return false
		}
	}
	return n == 1
}

// TestLabRekeySoak is issue 3's soak: CHILD SA lifetime 20 s and IKE SA lifetime 60 s on both
// sides (so both rekey, and now and then at the same time), a ping every 100 ms between the LAN
// hosts for 3 minutes: not one may be lost. MESHROOT_SOAK sets another duration.
func TestLabRekeySoak(t *testing.T) {
	dur := 3 * time.Minute
	if d, err := time.ParseDuration(os.Getenv("MESHROOT_SOAK")); err == nil {
		dur = d
	}
	r := newLabRig(t, labOpts{
		sw: func(c *lab.Conn) {
			c.RekeyTime, c.OverTime, c.RandTime = 50*time.Second, 10*time.Second, 5*time.Second
			ch := &c.Children[0]
			ch.LifeTime, ch.RekeyTime, ch.RandTime = 20*time.Second, 15*time.Second, 5*time.Second
		},
		ours: func(c *Config) {
			c.IKE.IKELifetime, c.IKE.ChildLifetime = 60*time.Second, 20*time.Second
			c.IKE.RekeyMargin, c.IKE.RekeyFuzz = 5*time.Second, 100
		},
	})
	r.waitUp()
	a := r.p.Addrs
	if err := r.p.AHost.WaitPing(r.ctx(10*time.Second), "", a.BHost4); err != nil {
		t.Fatal(err)
	}
	interval := 100 * time.Millisecond
	count := int(dur / interval)
	p := startPing(t, r.p.AHost, a.BHost4, count, interval)
	sent, received := p.wait(t, dur+time.Minute)
	st := r.tun.Status()
	child, ikeRekeys := len(r.ikeEvents(ike.EventChildRekeyed)), len(r.ikeEvents(ike.EventIKERekeyed))
	t.Logf("%d pings, %d answered; %d CHILD and %d IKE rekeys, %d collisions, ESP replayed %d auth-failed %d",
		sent, received, child, ikeRekeys, st.IKECounters.Collisions, st.ESP.Replayed, st.ESP.AuthFailed)
	if sent != count || received != sent {
		t.Errorf("%d of %d pings answered over %v of rekeys; want all", received, sent, dur)
	}
	// 20 s lifetimes rekeyed 5-10 s early: at least one CHILD rekey every 15 s.
	if want := int(dur / (15 * time.Second)); child < want {
		t.Errorf("%d CHILD rekeys in %v; want at least %d", child, dur, want)
	}
	if want := int(dur / time.Minute); ikeRekeys < want {
		t.Errorf("%d IKE rekeys in %v; want at least %d", ikeRekeys, dur, want)
	}
	if !st.Usable || st.Failovers != 0 {
		t.Errorf("after the soak: usable %v, failovers %d; want usable and no failover (rekeys must not look like a dead path)", st.Usable, st.Failovers)
	}
}

// TestLabRekeyCollision forces simultaneous rekeys deterministically: with IKE messages held on
// the outside link (ESP keeps flowing), strongSwan and we both start a CHILD (or IKE) rekey, so
// each request leaves before the other side's arrives; releasing the hold lets the
// retransmissions cross (RFC 7296 §2.8.1). Racing the two starts by timing alone missed under
// load (CI saw no CHILD collision in 24 tries). A ping every 50 ms between the LAN hosts
// meanwhile loses nothing.
func TestLabRekeyCollision(t *testing.T) {
	r := newLabRig(t, labOpts{})
	r.waitUp()
	a := r.p.Addrs
	if err := r.p.AHost.WaitPing(r.ctx(10*time.Second), "", a.BHost4); err != nil {
		t.Fatal(err)
	}
	p := startPing(t, r.p.AHost, a.BHost4, 100000, 50*time.Millisecond)
	hold := func(on bool) {
		t.Helper()
		imp := lab.Impairment{}
		if on {
			imp = lab.Impairment{LossPercent: 100, IKEOnly: true}
		}
		if err := r.p.A.Impair("out0", imp); err != nil {
			t.Fatal(err)
		}
	}
	// Which side notices a collision depends on which retransmission arrives first: the side
	// whose request is answered before the other's request arrives finishes normally (and may
	// answer TEMPORARY_FAILURE), only the other side sees the collision. So a crossing counts
	// when either side detected it: our counter or a "collision" line in charon's log.
	swCollisions := func() int { return strings.Count(r.sw.Log(), "collision") }
	collisions := map[string]int{}
	for _, kind := range []string{"CHILD", "IKE", "CHILD", "IKE"} {
		r.waitFor(20*time.Second, "both sides settled on one CHILD SA", r.settled)
		before, swBefore := r.tun.Status().IKECounters.Collisions, swCollisions()
		hold(true)
		var swErr, ourErr error
		if kind == "IKE" {
			swErr = r.sw.RekeyIKE(r.ctx(5*time.Second), "tun1", false)
			ourErr = r.tun.RekeyIKE()
		} else {
			swErr = r.sw.RekeyChild(r.ctx(5*time.Second), "tun1")
			ourErr = r.tun.RekeyChild()
		}
		if swErr != nil || ourErr != nil {
			hold(false)
			t.Fatalf("%s rekey with IKE held: strongSwan %v, ours %v; want both started", kind, swErr, ourErr)
		}
		time.Sleep(300 * time.Millisecond) // both requests are on the wire and dropped
		hold(false)
		r.waitFor(30*time.Second, "both sides settled after the crossing rekeys", r.settled)
		ours, theirs := r.tun.Status().IKECounters.Collisions-before, swCollisions()-swBefore
		if ours > 0 || theirs > 0 {
			collisions[kind]++
		}
		t.Logf("%s rekeys crossed: collisions detected by us %d, strongSwan log lines %d", kind, ours, theirs)
	}
	p.cmd.Process.Signal(os.Interrupt)
	sent, received := p.wait(t, 10*time.Second)
	t.Logf("%d pings, %d answered; collisions resolved: CHILD %d of 2, IKE %d of 2", sent, received, collisions["CHILD"], collisions["IKE"])
	if collisions["CHILD"] != 2 || collisions["IKE"] != 2 {
		t.Errorf("collisions resolved: CHILD %d, IKE %d; want 2 each (every held pair of requests crosses)", collisions["CHILD"], collisions["IKE"])
	}
	// The last ping may be cut short by the interrupt.
	if received < sent-1 {
		t.Errorf("%d of %d pings answered across colliding rekeys; want all", received, sent)
	}
}
