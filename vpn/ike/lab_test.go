package ike

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"meshroot/internal/lab"
	"meshroot/internal/testenv"
)

// Interop tests against strongSwan 5.9 (charon with kernel-libipsec) in network namespaces.
// "ours" is this package on a real UDP transport inside one namespace; "sw" is charon in the
// other, configured as in shared/notes/vpn-lab.md (encap = yes: strongSwan fakes a NAT, so IKE
// floats to 4500 and ESP would be UDP-encapsulated).

const labPSK = "lab-psk-0123456789abcdef"

type labRig struct {
	t     *testing.T
	l     *lab.Lab
	ours  *lab.NS
	peer  *lab.NS
	sw    *lab.Charon
	tr    *UDPTransport
	conn  *Conn
	dp    *fakeDP
	logs  *logBuf
	evMu  sync.Mutex
	evs   []Event
	ourIP netip.Addr
	swIP  netip.Addr
	// hold, when set, delays our outgoing datagrams it matches (see delaySender).
	hold    atomic.Pointer[func(b []byte) time.Duration]
	delayMu sync.Mutex
	delayQ  []delayed
	skf     atomic.Int64 // SKF fragments received from strongSwan
	recvMu  sync.Mutex
	recv    []packet // every datagram received, as it arrived
}

// received returns the first request of exchange ex that strongSwan sent us.
func (r *labRig) received(ex ExchangeType) *packet {
	r.recvMu.Lock()
	defer r.recvMu.Unlock()
	for i := range r.recv {
		if e, resp := exchangeOf(r.recv[i]); e == ex && !resp {
			return &r.recv[i]
		}
	}
	return nil
}

type rigOpts struct {
	v6      bool
	sw      lab.Conn         // strongSwan connection (addresses, PSK and name are filled in)
	swCfg   lab.CharonConfig // charon instance settings (name and conns are filled in)
	ours    func(*Config)
	noStart bool // do not Start our Conn
}

// delaySender delays our outgoing datagrams while the rig's hold function asks for it, in
// FIFO order (to make exchanges cross on the wire and force collisions).
type delaySender struct{ r *labRig }

type delayed struct {
	b             []byte
	local, remote netip.AddrPort
	at            time.Time
}

func (d delaySender) Send(b []byte, local, remote netip.AddrPort) error {
	r := d.r
	r.delayMu.Lock()
	defer r.delayMu.Unlock()
	var wait time.Duration
	if f := r.hold.Load(); f != nil {
		wait = (*f)(b)
	}
	if wait <= 0 && len(r.delayQ) == 0 {
		return r.tr.Send(b, local, remote)
	}
	r.delayQ = append(r.delayQ, delayed{append([]byte(nil), b...), local, remote, time.Now().Add(wait)})
	if len(r.delayQ) == 1 {
		go r.drain()
	}
	return nil
}

// drain sends delayed datagrams in order.
func (r *labRig) drain() {
	for {
		r.delayMu.Lock()
		if len(r.delayQ) == 0 {
			r.delayMu.Unlock()
			return
		}
		p := r.delayQ[0]
		r.delayMu.Unlock()
		time.Sleep(time.Until(p.at))
		_ = r.tr.Send(p.b, p.local, p.remote)
		r.delayMu.Lock()
		r.delayQ = r.delayQ[1:]
		r.delayMu.Unlock()
	}
}

// holdAll delays every outgoing datagram by d until the returned function is called.
func (r *labRig) holdAll(d time.Duration) func() {
	f := func([]byte) time.Duration { return d }
	r.hold.Store(&f)
	return func() { r.hold.Store(nil) }
}

// holdRequests delays our outgoing requests of exchange ex by d.
func (r *labRig) holdRequests(ex ExchangeType, d time.Duration) func() {
	f := func(b []byte) time.Duration {
		if len(b) >= 4+headerLen && b[0]|b[1]|b[2]|b[3] == 0 {
			b = b[4:]
		}
		if len(b) >= headerLen && ExchangeType(b[18]) == ex && b[19]&flagResponse == 0 {
			return d
		}
		return 0
	}
	r.hold.Store(&f)
	return func() { r.hold.Store(nil) }
}

func newLabRig(t *testing.T, o rigOpts) *labRig {
	t.Helper()
	testenv.Integration(t)
	testenv.Command(t, "charon")
	testenv.Command(t, "swanctl")
	r := &labRig{t: t, l: lab.New(t), logs: &logBuf{}, dp: newFakeDP()}
	var err error
	if r.ours, err = r.l.NewNS("ike"); err != nil {
		t.Fatal(err)
	}
	if r.peer, err = r.l.NewNS("sw"); err != nil {
		t.Fatal(err)
	}
	if err := r.l.Veth(r.ours, "out0", r.peer, "out0"); err != nil {
		t.Fatal(err)
	}
	ourCIDR, swCIDR := "198.51.100.2/24", "198.51.100.1/24"
	if o.v6 {
		ourCIDR, swCIDR = "2001:db8:100::2/64", "2001:db8:100::1/64"
	}
	if err := r.ours.AddAddr("out0", ourCIDR); err != nil {
		t.Fatal(err)
	}
	if err := r.peer.AddAddr("out0", swCIDR); err != nil {
		t.Fatal(err)
	}
	r.ourIP = netip.MustParsePrefix(ourCIDR).Addr()
	r.swIP = netip.MustParsePrefix(swCIDR).Addr()

	sc := o.sw
	sc.Name = "tun1"
	sc.LocalAddrs = []string{r.swIP.String()}
	sc.RemoteAddrs = []string{r.ourIP.String()}
	if sc.PSK == "" {
		sc.PSK = labPSK
	}
	cc := o.swCfg
	cc.Name = "aws"
	cc.Conns = []lab.Conn{sc}
	if cc.Log == (lab.LogLevels{}) {
		cc.Log = lab.LogLevels{IKE: 2, CHD: 4, CFG: 2} // CHD 4: CHILD keys, to prove agreement
	}
	if r.sw, err = r.l.StartCharon(r.peer, cc); err != nil {
		t.Fatal(err)
	}

	err = r.ours.Do(func() error {
		var err error
		r.tr, err = ListenUDP(r.ourIP, 500, 4500)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.tr.Close() })
	cfg := Config{Name: "tun1", LocalAddr: r.ourIP, RemoteAddr: r.swIP, PSK: labPSK, StartAction: StartStart}
	if o.ours != nil {
		o.ours(&cfg)
	}
	r.conn, err = NewConn(cfg, Options{
		Sender: delaySender{r}, DataPlane: r.dp,
		Logger:  slog.New(slog.NewJSONHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnEvent: func(ev Event) { r.evMu.Lock(); r.evs = append(r.evs, ev); r.evMu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	var h PacketHandler = counting{r}
	if dir := os.Getenv("MESHROOT_IKE_CAPTURE"); dir != "" {
		h = capture{dir: dir, next: h}
	}
	r.tr.Serve(h)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = r.conn.Close(ctx)
		// every lab test doubles as a log scan: our debug log never holds the PSK
		for _, secret := range []string{labPSK, hex.EncodeToString([]byte(labPSK)), string(cfg.PSK)} {
			if strings.Contains(r.logs.String(), secret) {
				t.Errorf("our log contains the PSK")
			}
		}
		if t.Failed() {
			t.Logf("our log (tail):\n%s", tailLines(r.logs.String(), 80))
			var keep []string
			for _, l := range strings.Split(r.sw.Log(), "\n") {
				if !strings.Contains(l, "vici") && !strings.Contains(l, "[CHD]") {
					keep = append(keep, l)
				}
			}
			t.Logf("charon log (tail, without vici and CHD lines):\n%s", tailLines(strings.Join(keep, "\n"), 100))
		}
	})
	if !o.noStart {
		r.conn.Start()
	}
	return r
}

// counting counts SKF fragments on their way to the Conn.
type counting struct{ r *labRig }

func (c counting) HandlePacket(b []byte, local, remote netip.AddrPort) {
	m := b
	if local.Port() == 4500 && len(m) > 4 {
		m = m[4:]
	}
	if len(m) >= headerLen && PayloadType(m[16]) == PayloadSKF {
		c.r.skf.Add(1)
	}
	c.r.recvMu.Lock()
	c.r.recv = append(c.r.recv, packet{append([]byte(nil), b...), remote, local})
	c.r.recvMu.Unlock()
	c.r.conn.HandlePacket(b, local, remote)
}

// capture saves every datagram strongSwan sends us (fuzz seed material).
type capture struct {
	dir  string
	next PacketHandler
}

var captureSeq atomic.Int64

func (c capture) HandlePacket(b []byte, local, remote netip.AddrPort) {
	m := b
	if local.Port() == 4500 && len(m) > 4 {
		m = m[4:]
	}
	name := filepath.Join(c.dir, fmt.Sprintf("sw-%d-%06d", os.Getpid(), captureSeq.Add(1)))
	_ = os.WriteFile(name, fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", m), 0o644)
	c.next.HandlePacket(b, local, remote)
}

func (r *labRig) ctx(d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	r.t.Cleanup(cancel)
	return ctx
}

func (r *labRig) events() []Event {
	r.evMu.Lock()
	defer r.evMu.Unlock()
	return append([]Event(nil), r.evs...)
}

func (r *labRig) countEvents(t EventType) int {
	n := 0
	for _, ev := range r.events() {
		if ev.Type == t {
			n++
		}
	}
	return n
}

// waitFor polls cond (real time).
func (r *labRig) waitFor(d time.Duration, what string, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out after %v waiting for %s; our status %+v", d, what, r.conn.Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// converged checks, at one point in time, that strongSwan and we agree on one IKE SA and one
// CHILD SA pair: strongSwan's INSTALLED child has our outbound SPI as its inbound and vice
// versa, algorithms match, and every key we hold appears in strongSwan's CHILD key log.
func (r *labRig) converged() error {
	sa, ok, err := r.sw.IKE(r.ctx(5*time.Second), "tun1")
	if err != nil || !ok {
		return fmt.Errorf("strongSwan IKE_SA: ok=%v err=%v", ok, err)
	}
	if sa.State != "ESTABLISHED" {
		return fmt.Errorf("strongSwan IKE_SA %s", sa.State)
	}
	st := r.conn.Status()
	if st.IKE == nil || st.Phase1 != StateEstablished || st.Phase2 != StateEstablished {
		return fmt.Errorf("our phases %s/%s", st.Phase1, st.Phase2)
	}
	if fmt.Sprintf("%016x", st.IKE.SPIi) != sa.InitiatorSPI || fmt.Sprintf("%016x", st.IKE.SPIr) != sa.ResponderSPI {
		return fmt.Errorf("IKE SPIs differ: ours %016x_i %016x_r, strongSwan %s_i %s_r", st.IKE.SPIi, st.IKE.SPIr, sa.InitiatorSPI, sa.ResponderSPI)
	}
	var installed []lab.ChildSA
	for _, ch := range sa.Children {
		if ch.State == "INSTALLED" {
			installed = append(installed, ch)
		}
	}
	if len(installed) != 1 {
		return fmt.Errorf("strongSwan has %d INSTALLED CHILD_SAs: %+v", len(installed), sa.Children)
	}
	ch := installed[0]
	out := r.dp.outbound()
	if out == nil {
		return fmt.Errorf("no outbound SA on our side")
	}
	if fmt.Sprintf("%08x", out.SPIOut) != ch.SPIIn || fmt.Sprintf("%08x", out.SPIIn) != ch.SPIOut {
		return fmt.Errorf("CHILD SPIs differ: ours %08x_i %08x_o, strongSwan %s_i %s_o", out.SPIIn, out.SPIOut, ch.SPIIn, ch.SPIOut)
	}
	if !ch.Encap || !out.Encap {
		return fmt.Errorf("encapsulation: strongSwan %v, ours %v", ch.Encap, out.Encap)
	}
	return r.keysAgree()
}

var keyLine = regexp.MustCompile(`(\d+)\[CHD\] (?:<[^>]*> )?(encryption|integrity) (initiator|responder) key => (\d+) bytes`)
var hexLine = regexp.MustCompile(`(\d+)\[CHD\] (?:<[^>]*> )?\s*\d+: ((?:[0-9A-F]{2} ?)+)`)

// swKeys parses the CHILD keys strongSwan logged at chd 4 ("encryption initiator key => 36
// bytes @ 0x..." followed by hex dump lines, per charon thread).
func (r *labRig) swKeys() map[string]bool {
	keys := map[string]bool{}
	type pending struct {
		want int
		hex  strings.Builder
	}
	cur := map[string]*pending{}
	sc := bufio.NewScanner(strings.NewReader(r.sw.Log()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := keyLine.FindStringSubmatch(line); m != nil {
			p := &pending{}
			fmt.Sscan(m[4], &p.want)
			cur[m[1]] = p
			continue
		}
		if m := hexLine.FindStringSubmatch(line); m != nil {
			p := cur[m[1]]
			if p == nil {
				continue
			}
			p.hex.WriteString(strings.ReplaceAll(strings.TrimSpace(m[2]), " ", ""))
			if p.hex.Len() >= 2*p.want {
				keys[strings.ToLower(p.hex.String()[:2*p.want])] = true
				delete(cur, m[1])
			}
		}
	}
	return keys
}

// keysAgree checks every key of every CHILD SA we installed against strongSwan's log.
func (r *labRig) keysAgree() error {
	sw := r.swKeys()
	r.dp.mu.Lock()
	var all []*ChildSA
	for _, sa := range r.dp.in {
		all = append(all, sa)
	}
	r.dp.mu.Unlock()
	if len(all) == 0 {
		return fmt.Errorf("no CHILD SA installed")
	}
	for _, sa := range all {
		for _, k := range [][]byte{sa.EncKeyIn, sa.EncKeyOut, sa.IntegKeyIn, sa.IntegKeyOut} {
			if len(k) > 0 && !sw[hex.EncodeToString(k)] {
				return fmt.Errorf("CHILD SA %08x_i: a %d-byte key of ours is not among strongSwan's %d logged keys", sa.SPIIn, len(k), len(sw))
			}
		}
	}
	return nil
}

func (r *labRig) waitConverged(d time.Duration) {
	r.t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for {
		if err = r.converged(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("not converged after %v: %v", d, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestLabInterop establishes with strongSwan in both roles for the four required suites, then
// rekeys the CHILD SA and the IKE SA from each side, checking SPIs, algorithms and keys.
func TestLabInterop(t *testing.T) {
	for _, s := range suites {
		for _, role := range []string{"we-initiate", "sw-initiates"} {
			t.Run(s.ike+"/"+role, func(t *testing.T) {
				t.Parallel()
				swConn := lab.Conn{Proposals: []string{s.ike}, Children: []lab.Child{{Name: "tun1", ESPProposals: []string{s.esp}}}}
				mod := withSuite(s.ike, s.esp)
				if role == "sw-initiates" {
					mod = func(c *Config) { withSuite(s.ike, s.esp)(c); c.StartAction = StartAdd }
				}
				r := newLabRig(t, rigOpts{sw: swConn, ours: mod})
				if role == "sw-initiates" {
					if err := r.sw.Initiate(r.ctx(20*time.Second), "tun1", ""); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := r.sw.WaitUp(r.ctx(20*time.Second), "tun1"); err != nil {
					t.Fatal(err)
				}
				r.waitConverged(10 * time.Second)
				st := r.conn.Status()
				if !st.NATDetected || st.IKE.Local.Port() != 4500 {
					t.Errorf("did not float to 4500 with strongSwan's encap=yes: %+v", st.IKE)
				}
				ike, _, _ := r.sw.IKE(r.ctx(5*time.Second), "tun1")
				if want := strongswanSuite(s.ike); ike.EncrAlg+"/"+ike.PRFAlg+"/"+ike.DHGroup != want {
					t.Errorf("strongSwan IKE algorithms %s/%s/%s; want %s", ike.EncrAlg, ike.PRFAlg, ike.DHGroup, want)
				}
				// CHILD rekey from us, then from strongSwan; IKE rekey from us, then from strongSwan
				for i, step := range []func() error{
					r.conn.RekeyChild,
					func() error { return r.sw.RekeyChild(r.ctx(5*time.Second), "tun1") },
					r.conn.RekeyIKE,
					func() error { return r.sw.RekeyIKE(r.ctx(5*time.Second), "tun1", false) },
				} {
					before := r.conn.Status()
					if err := step(); err != nil {
						t.Fatalf("rekey step %d: %v", i, err)
					}
					r.waitFor(10*time.Second, fmt.Sprintf("rekey step %d", i), func() bool {
						now := r.conn.Status()
						if i < 2 {
							return len(now.Children) == 1 && now.Children[0].SPIIn != before.Children[0].SPIIn
						}
						return now.IKE != nil && now.IKE.SPIi != before.IKE.SPIi
					})
					r.waitConverged(10 * time.Second)
				}
				if c := r.conn.Counters(); c.MalformedDropped != 0 {
					t.Errorf("MalformedDropped = %d with strongSwan; want 0", c.MalformedDropped)
				}
			})
		}
	}
}

// strongswanSuite is how vici names the IKE algorithms of our notation.
func strongswanSuite(p string) string {
	m := map[string]string{
		"aes256gcm16-prfsha256-modp2048":   "AES_GCM_16/PRF_HMAC_SHA2_256/MODP_2048",
		"aes128-sha1-modp1024":             "AES_CBC/PRF_HMAC_SHA1/MODP_1024",
		"aes256-sha384-ecp384":             "AES_CBC/PRF_HMAC_SHA2_384/ECP_384",
		"aes128gcm16-prfsha512-curve25519": "AES_GCM_16/PRF_HMAC_SHA2_512/CURVE_25519",
	}
	return m[p]
}

// TestLabInteropGroups covers the remaining DH groups and ciphers with strongSwan: each IKE
// group in IKE_SA_INIT and each ESP group as PFS in CHILD rekeys from both sides.
func TestLabInteropGroups(t *testing.T) {
	for _, s := range []struct{ ike, esp string }{
		{"aes192-sha512-modp1536", "aes192-sha512-modp3072"},
		{"aes256gcm12-prfsha384-modp4096", "aes256gcm12-modp6144"},
		{"aes128-sha256-modp8192", "aes128-sha256-ecp256"},
		{"aes256gcm16-prfsha256-ecp521", "aes128gcm16-modp1024s160"},
		{"aes128-sha1-modp2048s224", "aes256-sha384-modp2048s256"},
	} {
		t.Run(s.ike+"/"+s.esp, func(t *testing.T) {
			t.Parallel()
			r := newLabRig(t, rigOpts{
				sw:   lab.Conn{Proposals: []string{s.ike}, Children: []lab.Child{{Name: "tun1", ESPProposals: []string{s.esp}}}},
				ours: withSuite(s.ike, s.esp),
			})
			if _, err := r.sw.WaitUp(r.ctx(30*time.Second), "tun1"); err != nil {
				t.Fatal(err)
			}
			r.waitConverged(10 * time.Second)
			for i, step := range []func() error{
				func() error { return r.sw.RekeyChild(r.ctx(5*time.Second), "tun1") },
				r.conn.RekeyChild,
			} {
				before := r.conn.Status()
				if err := step(); err != nil {
					t.Fatal(err)
				}
				r.waitFor(20*time.Second, fmt.Sprintf("PFS rekey %d", i), func() bool {
					now := r.conn.Status()
					return len(now.Children) == 1 && now.Children[0].SPIIn != before.Children[0].SPIIn
				})
				r.waitConverged(10 * time.Second)
			}
			_, ch, err := r.sw.WaitChild(r.ctx(5*time.Second), "tun1", "", "INSTALLED")
			if err != nil {
				t.Fatal(err)
			}
			if ch.DHGroup == "" {
				t.Errorf("strongSwan reports no PFS group on the rekeyed CHILD_SA")
			}
		})
	}
}

// TestLabLowestSelection: as responder we choose like AWS, the lowest allowed value per
// transform type whatever strongSwan's order (including a DH group other than its KE, which
// costs an INVALID_KE_PAYLOAD round trip).
func TestLabLowestSelection(t *testing.T) {
	t.Parallel()
	offer := "aes256-aes128-sha256-sha1-modp2048-modp1024"
	r := newLabRig(t, rigOpts{
		sw: lab.Conn{Proposals: []string{offer}, Children: []lab.Child{{Name: "tun1", ESPProposals: []string{"aes256-aes128-sha256-sha1"}}}},
		ours: func(c *Config) {
			c.IKEProposals = MustParseProposals("aes128-aes256-sha1-sha256-modp1024-modp2048")
			c.ESPProposals = MustParseProposals("aes128-aes256-sha1-sha256")
			c.StartAction = StartAdd
		},
	})
	if err := r.sw.Initiate(r.ctx(20*time.Second), "tun1", ""); err != nil {
		t.Fatal(err)
	}
	r.waitConverged(10 * time.Second)
	sa, ch, err := r.sw.WaitChild(r.ctx(5*time.Second), "tun1", "", "INSTALLED")
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintf("%s-%d/%s/%s/%s ESP %s-%d/%s", sa.EncrAlg, sa.EncrKeySize, sa.IntegAlg, sa.PRFAlg, sa.DHGroup, ch.EncrAlg, ch.EncrKeySize, ch.IntegAlg)
	want := "AES_CBC-128/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_1024 ESP AES_CBC-128/HMAC_SHA1_96"
	if got != want {
		t.Errorf("negotiated %s; want %s (lowest values)", got, want)
	}
	if !strings.Contains(r.sw.Log(), "it requested MODP_1024") {
		t.Errorf("strongSwan did not get INVALID_KE_PAYLOAD for its modp2048 KE")
	}
}
