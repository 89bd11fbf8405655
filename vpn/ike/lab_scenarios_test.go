package ike

import (
	"strings"
	"testing"
	"time"

	"meshroot/internal/lab"
)

// settled waits for strongSwan to drop rekeyed leftovers (it keeps them ~5 s) and then checks
// that exactly one IKE SA with exactly one CHILD SA exists on its side, one inbound SA on ours,
// and that everything agrees.
func (r *labRig) settled() {
	r.t.Helper()
	r.waitConverged(20 * time.Second)
	deadline := time.Now().Add(20 * time.Second)
	for {
		sas, err := r.sw.ListSAs(r.ctx(5 * time.Second))
		children := 0
		for _, sa := range sas {
			children += len(sa.Children)
		}
		err2 := r.converged()
		if err == nil && err2 == nil && len(sas) == 1 && children == 1 && r.dp.numIn() == 1 {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("not settled: strongSwan %d IKE SAs / %d CHILD SAs (%+v), ours %d inbound SAs, converged: %v", len(sas), children, sas, r.dp.numIn(), err2)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestLabRekeyCollision forces simultaneous rekeys with strongSwan: our datagrams are held
// back so that both requests cross on the wire (both sides see the collision), or only our
// request is held (only we see it). The RFC 7296 §2.8.1 nonce rule must leave exactly one SA
// pair on both sides, whoever wins.
func TestLabRekeyCollision(t *testing.T) {
	t.Parallel()
	r := newLabRig(t, rigOpts{sw: lab.Conn{}})
	if _, err := r.sw.WaitUp(r.ctx(20*time.Second), "tun1"); err != nil {
		t.Fatal(err)
	}
	r.waitConverged(10 * time.Second)
	type step struct {
		name string
		hold func() func()
		ours func() error
		sw   func() error
	}
	childSW := func() error { return r.sw.RekeyChild(r.ctx(5*time.Second), "tun1") }
	ikeSW := func() error { return r.sw.RekeyIKE(r.ctx(5*time.Second), "tun1", false) }
	crossing := func() func() { return r.holdAll(400 * time.Millisecond) }
	oursOnly := func() func() { return r.holdRequests(ExchangeCreateChildSA, 400*time.Millisecond) }
	steps := []step{
		{"child/crossing", crossing, r.conn.RekeyChild, childSW},
		{"child/crossing", crossing, r.conn.RekeyChild, childSW},
		{"child/crossing", crossing, r.conn.RekeyChild, childSW},
		{"child/only-we-see-it", oursOnly, r.conn.RekeyChild, childSW},
		{"child/only-we-see-it", oursOnly, r.conn.RekeyChild, childSW},
		{"ike/crossing", crossing, r.conn.RekeyIKE, ikeSW},
		{"ike/crossing", crossing, r.conn.RekeyIKE, ikeSW},
		{"ike-vs-child", crossing, r.conn.RekeyIKE, childSW},
		{"child-vs-ike", crossing, r.conn.RekeyChild, ikeSW},
	}
	for i, s := range steps {
		before := r.conn.Counters().Collisions
		release := s.hold()
		if err := s.ours(); err != nil {
			t.Fatalf("step %d %s: ours: %v", i, s.name, err)
		}
		time.Sleep(20 * time.Millisecond) // our request is "sent" (held) before strongSwan's
		if err := s.sw(); err != nil {
			t.Fatalf("step %d %s: strongSwan: %v", i, s.name, err)
		}
		time.Sleep(600 * time.Millisecond)
		release()
		r.settled()
		t.Logf("step %d %s: collisions resolved by us: %d; events so far: %d CHILD rekeyed, %d IKE rekeyed",
			i, s.name, r.conn.Counters().Collisions-before, r.countEvents(EventChildRekeyed), r.countEvents(EventIKERekeyed))
		if strings.HasPrefix(s.name, "child/crossing") && r.conn.Counters().Collisions == before {
			t.Errorf("step %d %s: no collision was detected on our side", i, s.name)
		}
	}
	log := r.sw.Log()
	if !strings.Contains(log, "collision") {
		t.Errorf("strongSwan never logged a rekey collision")
	}
	for _, bad := range []string{"received TEMPORARY_FAILURE", "CHILD_SA not found", "unable to"} {
		if n := strings.Count(log, bad); n > 0 {
			t.Logf("strongSwan logged %q %d times", bad, n)
		}
	}
	if r.countEvents(EventChildDown) > 0 || r.countEvents(EventIKEDown) > 0 {
		t.Errorf("collisions took the tunnel down: %d CHILD down, %d IKE down events", r.countEvents(EventChildDown), r.countEvents(EventIKEDown))
	}
}

// TestLabLifetimeRekeys runs with short lifetimes (CHILD 20 s, IKE 60 s) for two IKE lifetimes.
// Who rekeys first is a race when both sides have the same lifetimes (strongSwan started all 18
// rekeys in one CI run), so the lifetimes are staggered to make both directions certain: our
// CHILD lifetime is the shorter one (we drive every CHILD rekey, strongSwan answers), and
// strongSwan's IKE lifetime is the shorter one (it drives every IKE rekey while our CHILD SAs
// live on under the new IKE SA). Simultaneous rekeys are TestLabRekeyCollision's job.
func TestLabLifetimeRekeys(t *testing.T) {
	t.Parallel()
	sw := lab.Conn{
		RekeyTime: 52 * time.Second, OverTime: 8 * time.Second, RandTime: 5 * time.Second,
		Children: []lab.Child{{Name: "tun1", LifeTime: 45 * time.Second, RekeyTime: 35 * time.Second, RandTime: 3 * time.Second}},
	}
	r := newLabRig(t, rigOpts{sw: sw, ours: func(c *Config) {
		c.ChildLifetime = 20 * time.Second
		c.IKELifetime = 120 * time.Second
		c.RekeyMargin = 5 * time.Second
	}})
	if _, err := r.sw.WaitUp(r.ctx(20*time.Second), "tun1"); err != nil {
		t.Fatal(err)
	}
	r.waitConverged(10 * time.Second)
	end := time.Now().Add(125 * time.Second)
	samples := 0
	for time.Now().Before(end) {
		time.Sleep(2 * time.Second)
		samples++
		if st := r.conn.Status(); st.Phase1 == StateDown || st.Phase2 == StateDown {
			t.Errorf("tunnel down at a sample: %+v", st)
		}
	}
	r.settled()
	ourChild := strings.Count(r.logs.String(), `"rekeying CHILD_SA"`)
	ourIKE := strings.Count(r.logs.String(), `"rekeying IKE_SA"`)
	swLog := r.sw.Log()
	swChild := strings.Count(swLog, "activating CHILD_REKEY task")
	swIKE := strings.Count(swLog, "activating IKE_REKEY task")
	t.Logf("in 125 s: CHILD rekeys started by us %d, by strongSwan %d; IKE rekeys by us %d, by strongSwan %d; collisions resolved by us %d; %d samples",
		ourChild, swChild, ourIKE, swIKE, r.conn.Counters().Collisions, samples)
	// 125 s / (20 s - 5 s margin) gives about 8 CHILD rekeys; 125 s / ~50 s gives 2 IKE rekeys.
	if ourChild < 6 {
		t.Errorf("CHILD rekeys started by us = %d; want >= 6 (our lifetime is the shorter one)", ourChild)
	}
	if swIKE < 2 {
		t.Errorf("IKE rekeys started by strongSwan = %d; want >= 2 (its lifetime is the shorter one)", swIKE)
	}
	if n := r.countEvents(EventChildDown) + r.countEvents(EventIKEDown) + r.countEvents(EventPeerDead); n > 0 {
		t.Errorf("%d down/dead events during rekeys", n)
	}
}

// TestLabDPD cuts the outside link: DPD must notice within interval + timeout, then clear,
// restart (and come back when the link returns) or keep the SAs (none).
func TestLabDPD(t *testing.T) {
	for _, action := range []DPDAction{DPDClear, DPDRestart, DPDNone} {
		t.Run(string(action), func(t *testing.T) {
			t.Parallel()
			const interval, timeout = 2 * time.Second, 6 * time.Second
			r := newLabRig(t, rigOpts{sw: lab.Conn{}, ours: func(c *Config) {
				c.DPDInterval, c.DPDTimeout, c.DPDAction = interval, timeout, action
				c.RetryInterval, c.RetryMax = time.Second, 2*time.Second
				c.Retransmit = Retransmit{Tries: 3, Timeout: time.Second, Base: 1.5}
			}})
			if _, err := r.sw.WaitUp(r.ctx(20*time.Second), "tun1"); err != nil {
				t.Fatal(err)
			}
			r.waitConverged(10 * time.Second)
			cut := time.Now()
			if err := r.ours.LinkDown("out0"); err != nil {
				t.Fatal(err)
			}
			r.waitFor(interval+timeout+5*time.Second, "EventPeerDead", func() bool { return r.countEvents(EventPeerDead) > 0 })
			took := time.Since(cut)
			t.Logf("dead %v after the cut (DPD interval %v, timeout %v)", took.Round(10*time.Millisecond), interval, timeout)
			if took < timeout {
				t.Errorf("declared dead after %v, before the %v timeout", took, timeout)
			}
			st := r.conn.Status()
			switch action {
			case DPDClear:
				if st.Phase1 != StateDown || r.dp.outbound() != nil || r.dp.numIn() != 0 {
					t.Errorf("after clear: phases %s/%s, outbound %v, %d inbound", st.Phase1, st.Phase2, r.dp.outbound(), r.dp.numIn())
				}
				time.Sleep(3 * time.Second)
				if n := strings.Count(r.logs.String(), `"initiating IKE_SA"`); n != 1 {
					t.Errorf("clear re-initiated (%d initiations)", n)
				}
			case DPDNone:
				if st.Phase1 != StateEstablished || r.dp.outbound() == nil {
					t.Errorf("after none: phases %s/%s, outbound %v; want the SAs kept", st.Phase1, st.Phase2, r.dp.outbound())
				}
			case DPDRestart:
				r.waitFor(5*time.Second, "re-initiation", func() bool {
					return strings.Count(r.logs.String(), `"initiating IKE_SA"`) >= 2
				})
			}
			if err := r.ours.LinkUp("out0"); err != nil {
				t.Fatal(err)
			}
			switch action {
			case DPDRestart, DPDNone:
				r.settled()
			case DPDClear:
				// strongSwan (no DPD of its own here) still holds its SA; nothing comes back
				time.Sleep(2 * time.Second)
				if st := r.conn.Status(); st.Phase1 != StateDown {
					t.Errorf("clear came back up by itself: %s", st.Phase1)
				}
			}
		})
	}
}

// TestLabWrongPSK: wrong key in each direction gives an AUTHENTICATION_FAILED line in words;
// our initiator keeps retrying with backoff and succeeds once strongSwan has the same key.
func TestLabWrongPSK(t *testing.T) {
	t.Run("we-initiate", func(t *testing.T) {
		t.Parallel()
		const wrong = "wrong-psk-98765432"
		r := newLabRig(t, rigOpts{sw: lab.Conn{}, ours: func(c *Config) {
			c.PSK = wrong
			c.RetryInterval, c.RetryMax = 500*time.Millisecond, 4*time.Second
		}})
		r.waitFor(10*time.Second, "AUTHENTICATION_FAILED", func() bool { return r.countEvents(EventAuthFailed) >= 2 })
		time.Sleep(4 * time.Second)
		logs := r.logs.String()
		if !strings.Contains(logs, "AUTHENTICATION_FAILED: the peer rejected our authentication; the pre-shared key probably doesn't match") {
			t.Errorf("no AUTHENTICATION_FAILED line in words in our log")
		}
		n := strings.Count(logs, `"initiating IKE_SA"`)
		t.Logf("initiations in ~6 s with backoff 0.5 s doubling to 4 s: %d", n)
		if n < 3 || n > 8 {
			t.Errorf("initiations = %d; want 3..8 (exponential backoff)", n)
		}
		if !strings.Contains(r.sw.Log(), "MAC mismatched") {
			t.Errorf("strongSwan did not report the MAC mismatch")
		}
		// strongSwan learns our key: the next retry succeeds
		conns := r.sw.Config().Conns
		conns[0].PSK = wrong
		if err := r.sw.Reconfigure(conns); err != nil {
			t.Fatal(err)
		}
		r.waitConverged(15 * time.Second)
		for _, l := range []string{r.logs.String(), r.sw.Log()} {
			if strings.Contains(l, wrong) {
				t.Errorf("a log contains the PSK")
			}
		}
	})
	t.Run("sw-initiates", func(t *testing.T) {
		t.Parallel()
		r := newLabRig(t, rigOpts{sw: lab.Conn{PSK: "sw-has-another-key-1"}, ours: func(c *Config) { c.StartAction = StartAdd }})
		_ = r.sw.Initiate(r.ctx(10*time.Second), "tun1", "")
		r.waitFor(10*time.Second, "AUTHENTICATION_FAILED", func() bool { return r.countEvents(EventAuthFailed) >= 1 })
		if !strings.Contains(r.logs.String(), "AUTHENTICATION_FAILED: the peer's AUTH payload does not verify; the pre-shared key probably doesn't match") {
			t.Errorf("no AUTHENTICATION_FAILED line in words in our log")
		}
		if !strings.Contains(r.sw.Log(), "AUTHENTICATION_FAILED") {
			t.Errorf("strongSwan did not receive AUTHENTICATION_FAILED")
		}
		if c := r.conn.Counters(); c.AuthFailures == 0 {
			t.Errorf("AuthFailures = 0")
		}
	})
}

// TestLabNoProposal: a mismatch gives a "no proposal match" line naming both offers (we can
// only name the peer's offer when we are the responder; strongSwan does not send its own).
func TestLabNoProposal(t *testing.T) {
	for _, tc := range []struct {
		name       string
		swIKE      string
		swESP      string
		oursIKE    string
		oursESP    string
		swStarts   bool
		wantInLogs []string
	}{
		{"ike/sw-initiates", "aes128-sha1-modp1024", "aes128-sha1", "aes256gcm16-prfsha256-modp2048", "aes256gcm16", true,
			[]string{"no proposal match for IKE_SA: peer offered aes128-sha1-prfsha1-modp1024", "we allow aes256gcm16-prfsha256-modp2048"}},
		{"esp/sw-initiates", "aes256gcm16-prfsha256-modp2048", "aes128-sha1-modp2048", "aes256gcm16-prfsha256-modp2048", "aes256gcm16-modp2048", true,
			[]string{"no proposal match for the CHILD_SA of IKE_AUTH: peer offered aes128-sha1", "we allow aes256gcm16"}},
		{"ike/we-initiate", "aes128-sha1-modp1024", "aes128-sha1", "aes256gcm16-prfsha256-modp2048", "aes256gcm16", false,
			[]string{"no proposal match: the peer accepted none of our IKE proposals (we offered: aes256gcm16-prfsha256-modp2048"}},
		{"esp/we-initiate", "aes256gcm16-prfsha256-modp2048", "aes128-sha1", "aes256gcm16-prfsha256-modp2048", "aes256gcm16", false,
			[]string{"no proposal match: the peer accepted none of our ESP proposals for the CHILD_SA of IKE_AUTH (we offered: aes256gcm16"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newLabRig(t, rigOpts{
				sw: lab.Conn{Proposals: []string{tc.swIKE}, Children: []lab.Child{{Name: "tun1", ESPProposals: []string{tc.swESP}}}},
				ours: func(c *Config) {
					withSuite(tc.oursIKE, tc.oursESP)(c)
					if tc.swStarts {
						c.StartAction = StartAdd
					}
				}})
			if tc.swStarts {
				_ = r.sw.Initiate(r.ctx(10*time.Second), "tun1", "")
			}
			r.waitFor(10*time.Second, "EventNoProposal", func() bool { return r.countEvents(EventNoProposal) > 0 })
			logs := r.logs.String()
			for _, w := range tc.wantInLogs {
				if !strings.Contains(logs, w) {
					t.Errorf("our log lacks %q", w)
				}
			}
			if r.dp.outbound() != nil {
				t.Errorf("a CHILD SA got installed")
			}
		})
	}
}

// TestLabFragmentation makes IKE_AUTH exceed the fragment size (300 bytes: long FQDN
// identities) with fragmentation on at both ends: strongSwan sends SKF fragments and
// reassembles ours.
func TestLabFragmentation(t *testing.T) {
	t.Parallel()
	ourID := strings.Repeat(strings.Repeat("a", 40)+".", 2) + "site.example"
	swID := strings.Repeat(strings.Repeat("b", 40)+".", 2) + "aws.example"
	r := newLabRig(t, rigOpts{
		sw:    lab.Conn{LocalID: "@" + swID, RemoteID: "@" + ourID},
		swCfg: lab.CharonConfig{Extra: "fragment_size = 300"},
		ours: func(c *Config) {
			c.LocalID, c.RemoteID = ourID, swID
			c.Fragmentation, c.FragmentSize = true, 300
		}})
	if _, err := r.sw.WaitUp(r.ctx(20*time.Second), "tun1"); err != nil {
		t.Fatal(err)
	}
	r.waitConverged(10 * time.Second)
	if n := r.skf.Load(); n < 2 {
		t.Errorf("SKF fragments received from strongSwan = %d; want >= 2", n)
	}
	if !strings.Contains(r.sw.Log(), "received fragment #") {
		t.Errorf("strongSwan did not receive our fragments")
	}
}

// TestLabIPv6Outside runs IKE over IPv6 outer addresses, both roles.
func TestLabIPv6Outside(t *testing.T) {
	for _, role := range []string{"we-initiate", "sw-initiates"} {
		t.Run(role, func(t *testing.T) {
			t.Parallel()
			r := newLabRig(t, rigOpts{v6: true, sw: lab.Conn{}, ours: func(c *Config) {
				if role == "sw-initiates" {
					c.StartAction = StartAdd
				}
			}})
			if role == "sw-initiates" {
				if err := r.sw.Initiate(r.ctx(20*time.Second), "tun1", ""); err != nil {
					t.Fatal(err)
				}
			}
			r.waitConverged(20 * time.Second)
			if _, err := r.sw.WaitUp(r.ctx(5*time.Second), "tun1"); err != nil {
				t.Fatal(err)
			}
			if err := r.conn.RekeyChild(); err != nil {
				t.Fatal(err)
			}
			r.settled()
			if out := r.dp.outbound(); !out.Remote.Addr().Is6() {
				t.Errorf("outbound SA remote %v; want IPv6", out.Remote)
			}
		})
	}
}

// TestLabReplayAndMalformed replays strongSwan's IKE_AUTH request after later exchanges and
// feeds garbage to the NAT-T port: both are dropped and counted, the tunnel stays up.
func TestLabReplayAndMalformed(t *testing.T) {
	t.Parallel()
	r := newLabRig(t, rigOpts{sw: lab.Conn{}, ours: func(c *Config) { c.StartAction = StartAdd }})
	if err := r.sw.Initiate(r.ctx(20*time.Second), "tun1", ""); err != nil {
		t.Fatal(err)
	}
	r.waitConverged(10 * time.Second)
	if err := r.sw.RekeyChild(r.ctx(5*time.Second), "tun1"); err != nil {
		t.Fatal(err)
	}
	r.settled()
	auth := r.received(ExchangeIKEAuth)
	if auth == nil {
		t.Fatal("no IKE_AUTH request from strongSwan recorded")
	}
	before := r.conn.Counters()
	r.conn.HandlePacket(auth.b, auth.to, auth.from)
	garbage := append([]byte{0, 0, 0, 0}, []byte("this is not an IKE message at all, just some bytes")...)
	r.conn.HandlePacket(garbage, auth.to, auth.from)
	after := r.conn.Counters()
	if after.ReplayedDropped != before.ReplayedDropped+1 {
		t.Errorf("ReplayedDropped %d -> %d; want +1 for the replayed IKE_AUTH", before.ReplayedDropped, after.ReplayedDropped)
	}
	if after.MalformedDropped != before.MalformedDropped+1 {
		t.Errorf("MalformedDropped %d -> %d; want +1 for the garbage", before.MalformedDropped, after.MalformedDropped)
	}
	r.settled()
}

// TestLabWeForceEncap: strongSwan without encap=yes, we force UDP encapsulation by faking
// NAT-D (as strongSwan's encap=yes does): strongSwan must see a NAT, both move to 4500 and the
// CHILD SA is UDP-encapsulated on both sides.
func TestLabWeForceEncap(t *testing.T) {
	for _, role := range []string{"we-initiate", "sw-initiates"} {
		t.Run(role, func(t *testing.T) {
			t.Parallel()
			r := newLabRig(t, rigOpts{sw: lab.Conn{NoEncap: true}, ours: func(c *Config) {
				c.ForceEncap = true
				if role == "sw-initiates" {
					c.StartAction = StartAdd
				}
			}})
			if role == "sw-initiates" {
				if err := r.sw.Initiate(r.ctx(20*time.Second), "tun1", ""); err != nil {
					t.Fatal(err)
				}
			}
			r.waitConverged(20 * time.Second)
			sa, _, _ := r.sw.IKE(r.ctx(5*time.Second), "tun1")
			if !sa.NATRemote || sa.LocalPort != 4500 {
				t.Errorf("strongSwan sees nat_remote=%v on port %d; want a NAT on 4500", sa.NATRemote, sa.LocalPort)
			}
		})
	}
}
