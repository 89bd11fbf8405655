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

// TestLabRekeyCollision forces simultaneous rekeys: strongSwan and we start a CHILD (or IKE)
// rekey at the same moment, a few milliseconds apart, until both sides have seen collisions;
// a ping every 50 ms between the LAN hosts meanwhile loses nothing.
func TestLabRekeyCollision(t *testing.T) {
	r := newLabRig(t, labOpts{})
	r.waitUp()
	a := r.p.Addrs
	if err := r.p.AHost.WaitPing(r.ctx(10*time.Second), "", a.BHost4); err != nil {
		t.Fatal(err)
	}
	p := startPing(t, r.p.AHost, a.BHost4, 100000, 50*time.Millisecond)
	offsets := []time.Duration{0, 2 * time.Millisecond, time.Millisecond, 4 * time.Millisecond, 3 * time.Millisecond, 6 * time.Millisecond}
	var childColl, ikeColl int
	for attempt := 0; attempt < 24 && (childColl == 0 || ikeColl == 0); attempt++ {
		r.waitFor(20*time.Second, "both sides settled on one CHILD SA", r.settled)
		isIKE := attempt%2 == 1
		before := r.tun.Status().IKECounters.Collisions
		off := offsets[(attempt/2)%len(offsets)]
		swErr := make(chan error, 1)
		go func() {
			if isIKE {
				swErr <- r.sw.RekeyIKE(r.ctx(5*time.Second), "tun1", false)
			} else {
				swErr <- r.sw.RekeyChild(r.ctx(5*time.Second), "tun1")
			}
		}()
		time.Sleep(off)
		var err error
		if isIKE {
			err = r.tun.RekeyIKE()
		} else {
			err = r.tun.RekeyChild()
		}
		if err != nil {
			t.Logf("attempt %d: our rekey: %v", attempt, err)
		}
		if err := <-swErr; err != nil {
			// E.g. "no matching SAs to rekey found": our rekey replaced the SA first.
			t.Logf("attempt %d: strongSwan rekey: %v", attempt, err)
		}
		time.Sleep(time.Second)
		r.waitFor(20*time.Second, "both sides settled after the rekey", r.settled)
		if got := r.tun.Status().IKECounters.Collisions; got > before {
			if isIKE {
				ikeColl++
			} else {
				childColl++
			}
			t.Logf("attempt %d (%s rekey, offset %v): collision resolved", attempt, map[bool]string{true: "IKE", false: "CHILD"}[isIKE], off)
		}
	}
	p.cmd.Process.Signal(os.Interrupt)
	sent, received := p.wait(t, 10*time.Second)
	t.Logf("%d pings, %d answered; CHILD collisions %d, IKE collisions %d", sent, received, childColl, ikeColl)
	if childColl == 0 || ikeColl == 0 {
		t.Errorf("collisions seen: CHILD %d, IKE %d; want both kinds (the test did not manage to make rekeys cross)", childColl, ikeColl)
	}
	// The last ping may be cut short by the interrupt.
	if received < sent-1 {
		t.Errorf("%d of %d pings answered across colliding rekeys; want all", received, sent)
	}
}
