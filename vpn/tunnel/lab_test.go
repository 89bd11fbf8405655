package tunnel

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"meshroot/internal/lab"
	"meshroot/internal/testenv"
	"meshroot/vpn/ike"
	"meshroot/vpn/vpnlog"
)

// Interop tests of the tunnel layer against strongSwan 5.9 (charon with kernel-libipsec) in a
// lab.PeerPair: our tunnel runs in namespace A inside this test process (LinuxHost{Enter:
// A.Do}: sockets, TUN device and addresses are made in A), strongSwan in B. Traffic is real:
// pings between the inside addresses and between the LAN hosts behind both sides, through our
// TUN device and strongSwan's ipsec0.

const (
	labPSK    = "tunnel-lab-psk-7Hq2mW9x"
	labDevice = "mrvpn0"
)

// labSuites are issue 3's four suites (IKE, ESP), in strongSwan's notation.
var labSuites = []struct{ ike, esp string }{
	{"aes256gcm16-prfsha256-modp2048", "aes256gcm16-modp2048"},
	{"aes128-sha1-modp1024", "aes128-sha1-modp1024"},
	{"aes256-sha384-ecp384", "aes256-sha384-ecp384"},
	{"aes128gcm16-prfsha512-curve25519", "aes128gcm16-curve25519"},
}

type labOpts struct {
	ike, esp  string
	responder bool // strongSwan initiates (AWS startup action "start"); we answer
	v6        bool // IKE and ESP-in-UDP over the IPv6 outside addresses
	sw        func(*lab.Conn)
	swCfg     func(*lab.CharonConfig)
	ours      func(*Config)
}

type labRig struct {
	t    testing.TB
	l    *lab.Lab
	p    *lab.PeerPair
	sw   *lab.Charon
	host LinuxHost
	tr   *Transport
	tun  *Tunnel
	logs *vpnlog.Memory
	diag *syncBuffer

	mu  sync.Mutex
	evs []Event
}

func newLabRig(t testing.TB, o labOpts) *labRig {
	t.Helper()
	testenv.Integration(t)
	testenv.Command(t, "charon")
	testenv.Command(t, "ping")
	if o.ike == "" {
		o.ike, o.esp = labSuites[0].ike, labSuites[0].esp
	}
	r := &labRig{t: t, l: lab.New(t), logs: &vpnlog.Memory{}, diag: &syncBuffer{}}
	child := lab.Child{Name: "tun1", ESPProposals: []string{o.esp}, DPDAction: "clear", StartAction: "none", CloseAction: "none"}
	if o.responder {
		child.StartAction, child.DPDAction = "start", "restart"
	}
	conn := lab.Conn{Name: "tun1", PSK: labPSK, Proposals: []string{o.ike}, KeyingTries: -1, Children: []lab.Child{child}}
	if o.sw != nil {
		o.sw(&conn)
	}
	cc := lab.CharonConfig{Name: "aws", Conns: []lab.Conn{conn}}
	if o.swCfg != nil {
		o.swCfg(&cc)
	}
	var err error
	r.p, err = lab.NewPeerPair(r.l, lab.PeerPairConfig{Charon: &cc, OutsideIPv6: o.v6})
	if err != nil {
		t.Fatal(err)
	}
	r.sw = r.p.Charon
	a := r.p.Addrs
	local, remote := netip.MustParseAddr(a.AOutside4), netip.MustParseAddr(a.BOutside4)
	if o.v6 {
		local, remote = netip.MustParseAddr(a.AOutside6), netip.MustParseAddr(a.BOutside6)
	}
	r.host = LinuxHost{Enter: r.p.A.Do}
	logger := slog.New(slog.NewJSONHandler(r.diag, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if r.tr, err = NewTransport(r.host, TransportConfig{Local: local, Logger: logger}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.tr.Close() })
	cfg := Config{
		Remote: remote, Device: labDevice,
		Inside4: netip.MustParsePrefix(a.AInside4), Inside6: netip.MustParsePrefix(a.AInside6),
		IKE: ike.Config{PSK: labPSK, IKEProposals: ike.MustParseProposals(o.ike), ESPProposals: ike.MustParseProposals(o.esp)},
	}
	if o.responder {
		cfg.IKE.StartAction = ike.StartAdd
	}
	if o.ours != nil {
		o.ours(&cfg)
	}
	r.tun, err = New(cfg, Options{
		Transport: r.tr, Host: r.host, Log: r.logs, Logger: logger,
		OnEvent: func(e Event) {
			r.mu.Lock()
			r.evs = append(r.evs, e)
			r.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		r.tun.Close(ctx)
		// Every lab test doubles as a log scan: neither our diagnostics nor the activity log
		// ever hold the PSK.
		all := r.diag.String() + strings.Join(r.logs.Lines(), "\n")
		for _, s := range []string{labPSK, hex.EncodeToString([]byte(labPSK))} {
			if strings.Contains(all, s) {
				t.Errorf("our logs contain the PSK")
			}
		}
		if t.Failed() {
			for _, l := range r.logs.Lines() {
				t.Logf("activity log: %s", l)
			}
			t.Logf("our diagnostics (tail):\n%s", tailLines(r.diag.String(), 60))
			t.Logf("charon log (tail):\n%s", tailLines(r.sw.Log(), 60))
		}
	})
	if err := r.p.RouteLANVia(r.p.A, labDevice, ""); err != nil {
		t.Fatal(err)
	}
	return r
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (r *labRig) events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.evs...)
}

func (r *labRig) ikeEvents(typ ike.EventType) []Event {
	var out []Event
	for _, e := range r.events() {
		if e.Type == EventIKE && e.IKEType == typ {
			out = append(out, e)
		}
	}
	return out
}

func (r *labRig) ctx(d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	r.t.Cleanup(cancel)
	return ctx
}

func (r *labRig) waitFor(d time.Duration, what string, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out after %v waiting for %s; our status %+v", d, what, r.tun.Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitUp waits for our tunnel to be usable and strongSwan's CHILD_SA installed.
func (r *labRig) waitUp() {
	r.t.Helper()
	r.waitFor(30*time.Second, "our tunnel in service", r.tun.Usable)
	if _, err := r.sw.WaitUp(r.ctx(30*time.Second), "tun1"); err != nil {
		r.t.Fatal(err)
	}
}

func addrOf(cidr string) string { return netip.MustParsePrefix(cidr).Addr().String() }

// pinger is a ping running in the background.
type pinger struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan error
}

// startPing pings dst from ns every interval, count times.
func startPing(t *testing.T, ns *lab.NS, dst string, count int, interval time.Duration) *pinger {
	t.Helper()
	p := &pinger{out: &syncBuffer{}, done: make(chan error, 1)}
	p.cmd = ns.Command("ping", "-n", "-q", "-c", strconv.Itoa(count), "-i", fmt.Sprintf("%.3f", interval.Seconds()), "-W", "2", dst)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	// Kill after the process was reaped is a no-op (os.ErrProcessDone); reading ProcessState
	// here would race with Wait in the goroutine above.
	t.Cleanup(func() { p.cmd.Process.Kill() })
	return p
}

var pingStats = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// wait returns how many pings were sent and answered.
func (p *pinger) wait(t *testing.T, timeout time.Duration) (sent, received int) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("ping did not finish in %v: %s", timeout, p.out.String())
	}
	m := pingStats.FindStringSubmatch(p.out.String())
	if m == nil {
		t.Fatalf("ping output without statistics: %s", p.out.String())
	}
	sent, _ = strconv.Atoi(m[1])
	received, _ = strconv.Atoi(m[2])
	return sent, received
}

// TestLabInterop: our tunnel against strongSwan for issue 3's four suites, with us as the
// initiator (AWS startup action "add") and as the responder (strongSwan initiates, AWS "start"):
// pings across the inside addresses (IPv4 and IPv6) and between the LAN hosts behind both
// sides.
func TestLabInterop(t *testing.T) {
	testenv.Integration(t)
	for _, s := range labSuites {
		for _, responder := range []bool{false, true} {
			name := s.ike + "/initiator"
			if responder {
				name = s.ike + "/responder"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				r := newLabRig(t, labOpts{ike: s.ike, esp: s.esp, responder: responder})
				r.waitUp()
				st := r.tun.Status()
				if st.IKE == nil || st.IKE.Initiator == responder || !sameSuite(st.IKE.Suite, s.ike) {
					t.Errorf("IKE SA %+v; want initiator=%v with %s", st.IKE, !responder, s.ike)
				}
				a := r.p.Addrs
				for _, c := range []struct {
					ns  *lab.NS
					dst string
				}{
					{r.p.A, addrOf(a.BInside4)},
					{r.p.A, addrOf(a.BInside6)},
					{r.p.AHost, a.BHost4},
					{r.p.AHost, a.BHost6},
					{r.p.BHost, a.AHost4},
					{r.p.BHost, a.AHost6},
				} {
					if err := c.ns.WaitPing(r.ctx(10*time.Second), "", c.dst); err != nil {
						t.Errorf("ping %s from %s: %v", c.dst, c.ns, err)
						continue
					}
					if err := c.ns.Ping("", c.dst, 3); err != nil {
						t.Errorf("ping %s from %s: %v", c.dst, c.ns, err)
					}
				}
				st = r.tun.Status()
				if st.ESP.PacketsIn == 0 || st.ESP.PacketsOut == 0 || !st.Usable {
					t.Errorf("status after pings: usable %v, ESP %+v", st.Usable, st.ESP)
				}
				sa, _, err := r.sw.IKE(r.ctx(5*time.Second), "tun1")
				if err != nil {
					t.Fatal(err)
				}
				if ch, ok := sa.Child("tun1"); !ok || ch.PacketsIn == 0 || !ch.Encap {
					t.Errorf("strongSwan's CHILD_SA %+v; want UDP-encapsulated packets from us", ch)
				}
			})
		}
	}
}

// sameSuite reports whether a negotiated suite ("aes128-sha1-prfsha1-modp1024") has every
// algorithm of a proposal written with strongSwan's implied PRF ("aes128-sha1-modp1024").
func sameSuite(got, want string) bool {
	have := map[string]bool{}
	for _, k := range strings.Split(got, "-") {
		have[k] = true
	}
	for _, k := range strings.Split(want, "-") {
		if !have[k] {
			return false
		}
	}
	return true
}

// TestLabOutsideIPv6: the tunnel over IPv6 outside addresses (IKE and ESP-in-UDP over IPv6),
// carrying IPv4 and IPv6 inside.
func TestLabOutsideIPv6(t *testing.T) {
	r := newLabRig(t, labOpts{v6: true})
	r.waitUp()
	a := r.p.Addrs
	for _, dst := range []string{a.BHost4, a.BHost6} {
		if err := r.p.AHost.WaitPing(r.ctx(10*time.Second), "", dst); err != nil {
			t.Fatal(err)
		}
	}
	if st := r.tun.Status(); st.IKE == nil || !st.IKE.Remote.Addr().Is6() {
		t.Errorf("IKE SA %+v; want it over IPv6", st.IKE)
	}
}
