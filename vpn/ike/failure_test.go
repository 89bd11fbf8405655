package ike

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestCookie(t *testing.T) {
	p := newPair(t, nil, func(c *Config) { c.RequireCookies = true })
	p.start()
	p.mustUp(10 * time.Second)
	if n := p.b.c.Counters().CookiesSent; n != 1 {
		t.Errorf("CookiesSent = %d; want 1", n)
	}
}

func TestCookieThreshold(t *testing.T) {
	// One half-open SA reaches a threshold of 1: the next initiation must bring a cookie.
	p := newPair(t, nil, func(c *Config) { c.CookieThreshold = 1 })
	// drop A's IKE_AUTH so the first SA stays half-open at B
	p.net.drop = func(q packet) bool { ex, _ := exchangeOf(q); return ex == ExchangeIKEAuth }
	p.start()
	p.net.run(time.Second, nil)
	p.net.drop = nil
	p.a.c.mu.Lock()
	p.a.c.destroyAll("test", false)
	p.a.c.initiate()
	p.a.c.mu.Unlock()
	p.mustUp(10 * time.Second)
	if n := p.b.c.Counters().CookiesSent; n != 1 {
		t.Errorf("CookiesSent = %d; want 1", n)
	}
}

func TestInvalidKE(t *testing.T) {
	// A proposes modp2048 first (its KE) but also allows modp1024; B, choosing the lowest
	// allowed value as AWS does, asks for group 2.
	p := newPair(t, withSuite("aes128-sha1-modp2048-modp1024", "aes128-sha1"), withSuite("aes128-sha1-modp1024-modp2048", "aes128-sha1"))
	p.start()
	p.mustUp(10 * time.Second)
	if got := p.a.c.Status().IKE.Suite; got != "aes128-sha1-prfsha1-modp1024" {
		t.Errorf("suite = %s; want aes128-sha1-prfsha1-modp1024 (lowest group wins)", got)
	}
	if !strings.Contains(p.b.logs.String(), "requesting ours") {
		t.Errorf("B did not log the INVALID_KE_PAYLOAD request")
	}
}

func TestWrongPSK(t *testing.T) {
	p := newPair(t, func(c *Config) { c.PSK = "not-the-key-000000" }, nil)
	p.start()
	p.net.run(3*time.Minute, nil)
	if p.a.c.Status().Phase1 == StateEstablished || p.b.c.Status().Phase1 == StateEstablished {
		t.Fatalf("established with a wrong PSK")
	}
	for _, e := range []*end{p.a, p.b} {
		if !strings.Contains(e.logs.String(), "AUTHENTICATION_FAILED") || !strings.Contains(e.logs.String(), "pre-shared key probably doesn't match") {
			t.Errorf("%s logs lack the AUTHENTICATION_FAILED line in words", e.c.Name())
		}
		if !e.waitEvent(EventAuthFailed) {
			t.Errorf("%s: no EventAuthFailed", e.c.Name())
		}
	}
	// backoff: 2 s, 4 s, 8 s, ... capped at 60 s: about 7 attempts in 3 minutes, not 90
	n := strings.Count(p.a.logs.String(), `"initiating IKE_SA"`)
	if n < 4 || n > 10 {
		t.Errorf("initiations in 3 minutes = %d; want 4..10 (exponential backoff)", n)
	}
	if got := p.b.c.Counters().AuthFailures; got < 3 {
		t.Errorf("B AuthFailures = %d; want >= 3", got)
	}
}

func TestNoProposal(t *testing.T) {
	p := newPair(t, withSuite("aes256gcm16-prfsha256-modp2048", "aes256gcm16"), withSuite("aes128-sha1-modp1024", "aes128-sha1"))
	p.start()
	p.net.run(10*time.Second, nil)
	logs := p.b.logs.String()
	if !strings.Contains(logs, "no proposal match for IKE_SA: peer offered aes256gcm16-prfsha256-modp2048; we allow aes128-sha1-prfsha1-modp1024") {
		t.Errorf("responder log lacks the no-proposal line naming both offers:\n%s", tailLines(logs, 5))
	}
	if !strings.Contains(p.a.logs.String(), "no proposal match") {
		t.Errorf("initiator log lacks a no-proposal line")
	}
	if !p.a.waitEvent(EventNoProposal) || !p.b.waitEvent(EventNoProposal) {
		t.Errorf("EventNoProposal missing")
	}
}

func TestNoESPProposal(t *testing.T) {
	p := newPair(t, withSuite("aes128-sha1-modp2048", "aes256gcm16"), withSuite("aes128-sha1-modp2048", "aes128-sha256"))
	p.start()
	p.net.run(10*time.Second, nil)
	if !strings.Contains(p.b.logs.String(), "no proposal match for the CHILD_SA of IKE_AUTH: peer offered aes256gcm16; we allow aes128-sha256") {
		t.Errorf("responder log lacks the ESP no-proposal line:\n%s", tailLines(p.b.logs.String(), 8))
	}
	if p.a.dp.outbound() != nil {
		t.Errorf("a CHILD SA was installed without a common ESP proposal")
	}
}

func TestDPDClear(t *testing.T) {
	p := newPair(t, nil, nil)
	p.start()
	p.mustUp(10 * time.Second)
	t0 := p.clock.Now()
	p.net.drop = func(packet) bool { return true } // cut the link
	ok := p.net.run(2*time.Minute, func() bool { return p.a.c.Status().Phase1 == StateDown })
	if !ok {
		t.Fatalf("peer never declared dead")
	}
	// DPD interval 10 s + timeout 30 s
	if d := p.clock.Now().Sub(t0); d < 30*time.Second || d > 45*time.Second {
		t.Errorf("dead after %v; want 40s (10s idle + 30s DPD timeout)", d)
	}
	if !p.a.waitEvent(EventPeerDead) {
		t.Errorf("no EventPeerDead")
	}
	if p.a.dp.outbound() != nil || p.a.dp.numIn() != 0 {
		t.Errorf("CHILD SAs left in the data plane after clear")
	}
}

func TestDPDRestart(t *testing.T) {
	p := newPair(t, func(c *Config) { c.DPDAction = DPDRestart }, nil)
	p.start()
	p.mustUp(10 * time.Second)
	p.net.drop = func(packet) bool { return true }
	if !p.net.run(2*time.Minute, func() bool { return p.a.c.Status().Phase1 != StateEstablished }) {
		t.Fatalf("peer never declared dead")
	}
	p.net.run(30*time.Second, nil)
	p.net.drop = nil // link back
	// B still holds its old SA until its own DPD gives up; A's new IKE_AUTH (INITIAL_CONTACT)
	// replaces it.
	p.mustUp(3 * time.Minute)
	p.checkConverged(time.Minute)
}

func TestDPDNone(t *testing.T) {
	none := func(c *Config) { c.DPDAction = DPDNone }
	p := newPair(t, none, none)
	p.start()
	p.mustUp(10 * time.Second)
	p.net.drop = func(packet) bool { return true }
	p.net.run(2*time.Minute, nil)
	if !p.a.waitEvent(EventPeerDead) {
		t.Fatalf("no EventPeerDead")
	}
	if p.a.dp.outbound() == nil || p.a.c.Status().Phase1 != StateEstablished {
		t.Errorf("DPD action none removed the SAs")
	}
	p.net.drop = nil
	p.checkConverged(2 * time.Minute)
}

func TestProbe(t *testing.T) {
	p := newPair(t, nil, nil)
	p.start()
	p.mustUp(10 * time.Second)
	ch := p.a.c.Probe(500 * time.Millisecond)
	p.net.run(time.Second, nil)
	if err := <-ch; err != nil {
		t.Errorf("Probe on a live path = %v; want nil", err)
	}
	p.net.drop = func(packet) bool { return true }
	t0 := p.clock.Now()
	ch = p.a.c.Probe(500 * time.Millisecond)
	p.net.run(2*time.Second, func() bool { return len(ch) > 0 })
	if err := <-ch; err != ErrPeerDead {
		t.Errorf("Probe on a cut path = %v; want ErrPeerDead", err)
	}
	if d := p.clock.Now().Sub(t0); d > 600*time.Millisecond {
		t.Errorf("Probe gave up after %v; want about 500ms", d)
	}
	if p.a.c.Status().Phase1 != StateDown {
		t.Errorf("after a failed probe phase1 = %s; want Down (DPD action clear)", p.a.c.Status().Phase1)
	}
}

func TestRetransmitAndCachedResponse(t *testing.T) {
	p := newPair(t, nil, nil)
	// drop the first IKE_AUTH response: A retransmits, B answers from its cache
	dropped := false
	p.net.drop = func(q packet) bool {
		ex, resp := exchangeOf(q)
		if ex == ExchangeIKEAuth && resp && !dropped {
			dropped = true
			return true
		}
		return false
	}
	p.start()
	p.mustUp(10 * time.Second)
	if n := p.a.c.Counters().Retransmits; n != 1 {
		t.Errorf("A Retransmits = %d; want 1", n)
	}
	if n := p.b.c.Counters().ResponsesResent; n != 1 {
		t.Errorf("B ResponsesResent = %d; want 1", n)
	}
	if n := p.b.dp.numIn(); n != 1 {
		t.Errorf("B has %d inbound SAs; a retransmitted request must not create another", n)
	}
}

func TestMalformedAndReplayDropped(t *testing.T) {
	p := newPair(t, nil, nil)
	p.start()
	p.mustUp(10 * time.Second)
	// capture an old request from A to B (the IKE_AUTH) and replay it, and send garbage
	var auth packet
	p.net.mu.Lock()
	for _, q := range p.net.sent {
		if ex, resp := exchangeOf(q); ex == ExchangeIKEAuth && !resp {
			auth = q
		}
	}
	p.net.mu.Unlock()
	_ = p.a.c.RekeyChild()
	p.net.run(time.Second, nil)
	before := p.b.c.Counters()
	p.b.c.HandlePacket(auth.b, auth.to, auth.from) // replay of message ID 1
	bad := append([]byte(nil), auth.b...)
	bad[len(bad)-3] ^= 0x40 // break the ICV of a request inside the window
	p.b.c.mu.Lock()
	binary.BigEndian.PutUint32(bad[20:24], p.b.c.cur.expectID)
	p.b.c.mu.Unlock()
	p.b.c.HandlePacket(bad, auth.to, auth.from)
	p.b.c.HandlePacket([]byte("garbage"), auth.to, auth.from)
	after := p.b.c.Counters()
	if after.ReplayedDropped-before.ReplayedDropped != 1 {
		t.Errorf("ReplayedDropped grew by %d; want 1", after.ReplayedDropped-before.ReplayedDropped)
	}
	if after.MalformedDropped-before.MalformedDropped != 2 {
		t.Errorf("MalformedDropped grew by %d; want 2", after.MalformedDropped-before.MalformedDropped)
	}
	p.checkConverged(time.Minute)
}

func TestForcedEncap(t *testing.T) {
	p := newPair(t, func(c *Config) { c.ForceEncap = true }, nil)
	p.start()
	p.mustUp(10 * time.Second)
	for _, e := range []*end{p.a, p.b} {
		out := e.dp.outbound()
		if !out.Encap || out.Local.Port() != 4500 || out.Remote.Port() != 4500 {
			t.Errorf("%s: outbound SA encap=%v %v -> %v; want UDP encapsulation on 4500", e.c.Name(), out.Encap, out.Local, out.Remote)
		}
		if st := e.c.Status(); !st.NATDetected || st.IKE.Local.Port() != 4500 {
			t.Errorf("%s: IKE not floated to 4500: %+v", e.c.Name(), st.IKE)
		}
	}
	// IKE_AUTH and later travel on 4500 with the non-ESP marker
	p.net.mu.Lock()
	defer p.net.mu.Unlock()
	for _, q := range p.net.sent {
		ex, _ := exchangeOf(q)
		if ex == ExchangeIKEAuth && (q.to.Port() != 4500 || string(q.b[:4]) != "\x00\x00\x00\x00") {
			t.Errorf("IKE_AUTH sent to %v without the marker", q.to)
		}
	}
}

// TestHandleIKE: with NAT-T datagrams arriving through HandleIKE (marker already stripped, as
// vpn/esp's Mux delivers them) the whole life cycle still works.
func TestHandleIKE(t *testing.T) {
	p := newPair(t, func(c *Config) { c.ForceEncap = true }, nil)
	p.net.espMux = true
	p.start()
	p.mustUp(10 * time.Second)
	_ = p.a.c.RekeyChild()
	_ = p.b.c.RekeyIKE()
	p.checkConverged(time.Minute)
	if st := p.a.c.Status(); !st.NATDetected {
		t.Errorf("not on NAT-T")
	}
}

func TestNATKeepalive(t *testing.T) {
	p := newPair(t, func(c *Config) { c.ForceEncap = true; c.KeepaliveInterval = 5 * time.Second }, nil)
	p.start()
	p.mustUp(10 * time.Second)
	p.net.run(time.Minute, nil)
	n := 0
	p.net.mu.Lock()
	for _, q := range p.net.sent {
		if len(q.b) == 1 && q.b[0] == 0xff && q.from.Addr() == addrA && q.to.Port() == 4500 {
			n++
		}
	}
	p.net.mu.Unlock()
	if n < 5 {
		t.Errorf("NAT keepalives from A in a minute = %d; want about 10", n)
	}
	p.checkConverged(time.Second)
}

func TestFragmentation(t *testing.T) {
	frag := func(c *Config) { c.Fragmentation = true; c.FragmentSize = 576 }
	// a long identity makes IKE_AUTH exceed 576 bytes
	long := strings.Repeat("x", 300) + ".example"
	p := newPair(t, func(c *Config) { frag(c); c.LocalID = long }, func(c *Config) { frag(c); c.RemoteID = long })
	p.start()
	p.mustUp(10 * time.Second)
	n := 0
	p.net.mu.Lock()
	for _, q := range p.net.sent {
		b := q.b
		if len(b) > headerLen && PayloadType(b[16]) == PayloadSKF {
			n++
		}
	}
	p.net.mu.Unlock()
	if n < 2 {
		t.Errorf("SKF fragments sent = %d; want >= 2", n)
	}
}

func TestLifetimeRekeys(t *testing.T) {
	short := func(c *Config) {
		c.ChildLifetime = 20 * time.Second
		c.IKELifetime = 60 * time.Second
		c.RekeyMargin = 5 * time.Second
	}
	p := newPair(t, short, short)
	p.start()
	p.mustUp(10 * time.Second)
	rekeys := 0
	ikeRekeys := 0
	for range 30 { // 5 minutes in 10 s steps: each step the pair must be up
		p.net.run(10*time.Second, nil)
		if !p.up() {
			t.Fatalf("not up at %v: A %+v B %+v", p.clock.Now(), p.a.c.Status(), p.b.c.Status())
		}
	}
	for _, ev := range p.a.events() {
		switch ev.Type {
		case EventChildRekeyed:
			rekeys++
		case EventIKERekeyed:
			ikeRekeys++
		}
	}
	if rekeys < 15 || ikeRekeys < 4 {
		t.Errorf("in 5 minutes: %d CHILD rekeys, %d IKE rekeys; want >= 15 and >= 4", rekeys, ikeRekeys)
	}
	// rekeyed inbound SAs linger DeleteDelay (5 s) for packets in flight, never longer
	for _, e := range []*end{p.a, p.b} {
		if n := e.dp.numIn(); n > 2 {
			t.Errorf("%s: %d inbound SAs installed; want 1 (2 right after a rekey)", e.c.Name(), n)
		}
	}
}

// TestPSKNeverLogged runs establishment, rekeys, a wrong-PSK attempt and a DPD failure with
// debug logging, and scans every log line for the PSK (text and hex).
func TestPSKNeverLogged(t *testing.T) {
	p := newPair(t, nil, nil)
	p.start()
	p.mustUp(10 * time.Second)
	_ = p.a.c.RekeyChild()
	_ = p.b.c.RekeyIKE()
	p.net.run(time.Minute, nil)
	p.net.drop = func(packet) bool { return true }
	p.net.run(2*time.Minute, nil)
	q := newPair(t, func(c *Config) { c.PSK = "wrong-" + testPSK }, nil)
	q.start()
	q.net.run(time.Minute, nil)
	for _, l := range []string{p.a.logs.String(), p.b.logs.String(), q.a.logs.String(), q.b.logs.String()} {
		for _, secret := range []string{testPSK, hex.EncodeToString([]byte(testPSK)), "wrong-" + testPSK} {
			if strings.Contains(l, secret) {
				t.Fatalf("a log contains the PSK %q", secret)
			}
		}
	}
	if len(p.a.logs.String()) < 1000 {
		t.Fatalf("logs too short to mean anything")
	}
}

// TestUnsupportedCritical: an IKE_SA_INIT with an unknown payload marked critical is answered
// with UNSUPPORTED_CRITICAL_PAYLOAD naming the type, and creates no state.
func TestUnsupportedCritical(t *testing.T) {
	p := newPair(t, nil, nil)
	p.b.c.Start()
	m := sampleMessage()
	m.Payloads = append(m.Payloads[:3], &RawPayload{PType: 200, Critical: true, Body: []byte{1, 2}})
	b := encodePlain(m)
	p.b.c.HandlePacket(b, netip.AddrPortFrom(addrB, 500), netip.AddrPortFrom(addrA, 500))
	p.net.mu.Lock()
	defer p.net.mu.Unlock()
	if len(p.net.queue) != 1 {
		t.Fatalf("responses = %d; want 1", len(p.net.queue))
	}
	h, err := parseHeader(p.net.queue[0].b)
	if err != nil {
		t.Fatal(err)
	}
	ps, _, err := parseChain(h.next, p.net.queue[0].b[headerLen:], headerLen, false)
	if err != nil || len(ps) != 1 {
		t.Fatalf("response payloads = %v, %v", ps, err)
	}
	n, ok := ps[0].(*NotifyPayload)
	if !ok || n.NotifyType != NotifyUnsupportedCriticalPayload || len(n.Data) != 1 || n.Data[0] != 200 {
		t.Errorf("response = %+v; want N(UNSUPPORTED_CRITICAL_PAYLOAD) with data 200", ps[0])
	}
	p.b.c.mu.Lock()
	defer p.b.c.mu.Unlock()
	if len(p.b.c.sas) != 0 {
		t.Errorf("state created for a message with an unsupported critical payload")
	}
}

func TestConfigValidate(t *testing.T) {
	good := baseConfig(addrA, addrB)
	if err := good.Validate(); err != nil {
		t.Fatalf("Validate(good) = %v", err)
	}
	for _, tc := range []struct {
		field string
		mod   func(*Config)
	}{
		{"LocalAddr", func(c *Config) { c.LocalAddr = netip.Addr{} }},
		{"RemoteAddr", func(c *Config) { c.RemoteAddr = netip.MustParseAddr("2001:db8::1") }},
		{"PSK", func(c *Config) { c.PSK = "" }},
		{"IKEProposals[0]", func(c *Config) { c.IKEProposals = MustParseProposals("aes256gcm16-modp2048") }},
		{"ESPProposals[1]", func(c *Config) { c.ESPProposals = MustParseProposals("aes128-sha1,aes128") }},
		{"RekeyMargin", func(c *Config) { c.ChildLifetime = 20 * time.Second; c.RekeyMargin = 15 * time.Second }},
		{"IKELifetime", func(c *Config) { c.IKELifetime = time.Hour; c.ChildLifetime = 2 * time.Hour }},
		{"DPDAction", func(c *Config) { c.DPDAction = "hold" }},
		{"StartAction", func(c *Config) { c.StartAction = "trap" }},
		{"LocalID", func(c *Config) { c.LocalID = "bad\x01id" }},
		{"Retransmit.Base", func(c *Config) { c.Retransmit.Base = 9 }},
		{"RekeyFuzz", func(c *Config) { c.RekeyFuzz = 150 }},
	} {
		c := good
		tc.mod(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.field+":") {
			t.Errorf("Validate(bad %s) = %v; want an error naming %s", tc.field, err, tc.field)
		}
		if err != nil && strings.Contains(err.Error(), testPSK) {
			t.Errorf("Validate error contains the PSK")
		}
	}
}

func TestSecretRedacted(t *testing.T) {
	s := Secret("hunter2-secret")
	for _, got := range []string{fmt.Sprint(s), fmt.Sprintf("%v %s %q %x %#v", s, s, s, s, s)} {
		if strings.Contains(got, "hunter2") || strings.Contains(got, hex.EncodeToString([]byte("hunter2"))) {
			t.Errorf("formatted Secret = %q; want it redacted", got)
		}
	}
	b, _ := json.Marshal(Config{PSK: s})
	if strings.Contains(string(b), "hunter2") {
		t.Errorf("json.Marshal(Config) leaks the PSK: %s", b)
	}
	var c Config
	if err := json.Unmarshal([]byte(`{"PSK":"from-json-1"}`), &c); err != nil || string(c.PSK) != "from-json-1" {
		t.Errorf("json.Unmarshal PSK = %q, %v", string(c.PSK), err)
	}
}

// TestNoLeaksAfterFailures: failed attempts leave no CHILD SA records or IKE SAs behind.
func TestNoLeaksAfterFailures(t *testing.T) {
	p := newPair(t, func(c *Config) { c.PSK = "wrong-key-wrong-key" }, nil)
	p.start()
	p.net.run(5*time.Minute, nil)
	for _, e := range []*end{p.a, p.b} {
		e.c.mu.Lock()
		nch, nsa := len(e.c.children), len(e.c.sas)
		e.c.mu.Unlock()
		if nch != 0 || nsa > 1 {
			t.Errorf("%s after 5 minutes of failures: %d CHILD records, %d IKE SAs; want 0 and <= 1", e.c.Name(), nch, nsa)
		}
	}
}
