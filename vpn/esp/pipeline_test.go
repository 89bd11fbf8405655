package esp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var quietLog = slog.New(slog.DiscardHandler)

var (
	addrA = netip.MustParseAddrPort("198.51.100.2:4500")
	addrB = netip.MustParseAddrPort("198.51.100.1:4500")
)

// end is one side of a fake tunnel.
type end struct {
	mux  *Mux
	conn *FakeConn
	tun  *FakeTUN
	t    *Tunnel
}

type pairOpts struct {
	suite   Suite
	cfgA    func(*TunnelConfig)
	gro     bool
	batch   int
	onIKE   func(b []byte, local, remote netip.AddrPort)
	spiAB   uint32 // SPI of the A->B SA (B's inbound)
	spiBA   uint32
	noSAs   bool
	tunMTUA int
}

// newPair builds A and B on a fake network with matching static SAs.
func newPair(t *testing.T, o pairOpts) (a, b *end, fn *FakeNetwork) {
	t.Helper()
	if o.suite == (Suite{}) {
		o.suite = SuiteAES256GCM16
	}
	if o.batch == 0 {
		o.batch = 8
	}
	if o.spiAB == 0 {
		o.spiAB, o.spiBA = 0xb0000001, 0xa0000001
	}
	if o.tunMTUA == 0 {
		o.tunMTUA = 1500
	}
	fn = NewFakeNetwork()
	mk := func(local, remote netip.AddrPort, cfgf func(*TunnelConfig), tunMTU int) *end {
		c, err := fn.Listen(local)
		if err != nil {
			t.Fatal(err)
		}
		c.SetGRO(o.gro)
		e := &end{conn: c, tun: NewFakeTUN(tunMTU, o.batch)}
		e.mux = NewMux(c, MuxConfig{OnIKE: o.onIKE, Logger: quietLog})
		t.Cleanup(func() { e.mux.Close() })
		cfg := TunnelConfig{Name: local.String(), TUN: e.tun, Remote: remote}
		if cfgf != nil {
			cfgf(&cfg)
		}
		e.t, err = e.mux.NewTunnel(cfg)
		if err != nil {
			t.Fatalf("NewTunnel() = %v", err)
		}
		return e
	}
	a = mk(addrA, addrB, o.cfgA, o.tunMTUA)
	b = mk(addrB, addrA, nil, 1500)
	if o.noSAs {
		return a, b, fn
	}
	install(t, a, b, o.suite, o.spiAB, o.spiBA, 1)
	return a, b, fn
}

// install sets up SAs a->b (spiAB) and b->a (spiBA), make-before-break style.
func install(t *testing.T, a, b *end, s Suite, spiAB, spiBA uint32, seed byte) {
	t.Helper()
	pAB := testParams(t, spiAB, s, seed)
	pBA := testParams(t, spiBA, s, seed+100)
	if _, err := b.t.AddInbound(pAB); err != nil {
		t.Fatal(err)
	}
	if _, err := a.t.AddInbound(pBA); err != nil {
		t.Fatal(err)
	}
	if _, err := a.t.SetOutbound(pAB); err != nil {
		t.Fatal(err)
	}
	if _, err := b.t.SetOutbound(pBA); err != nil {
		t.Fatal(err)
	}
}

func expectPacket(t *testing.T, tun *FakeTUN, what string) []byte {
	t.Helper()
	select {
	case p := <-tun.Written():
		return p
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no packet written to the TUN within 10 s", what)
	}
	return nil
}

func expectNoPacket(t *testing.T, tun *FakeTUN, what string) {
	t.Helper()
	select {
	case p := <-tun.Written():
		t.Fatalf("%s: unexpected packet written to the TUN: %x", what, p)
	case <-time.After(50 * time.Millisecond):
	}
}

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: condition not met within 10 s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func udp4(id uint16, n int) []byte {
	payload := make([]byte, n-28)
	for i := range payload {
		payload[i] = byte(i + int(id))
	}
	udp := append([]byte{0x30, 0x39, 0x00, 0x35, byte((n - 20) >> 8), byte(n - 20), 0, 0}, payload...)
	return buildIPv4(v4src, v4dst, 17, id, 0, nil, udp)
}

func TestPipelineRoundTripAllSuites(t *testing.T) {
	for _, s := range allSuites() {
		t.Run(s.String(), func(t *testing.T) {
			a, b, _ := newPair(t, pairOpts{suite: s})
			mtu, _ := AWSMTU(s, true)
			sizes := []int{28, 100, 1000, mtu}
			for _, n := range sizes {
				pkt := udp4(uint16(n), n)
				a.tun.Inject(pkt)
				if got := expectPacket(t, b.tun, "a->b"); !bytes.Equal(got, pkt) {
					t.Fatalf("b got %d bytes %x...; want %d bytes %x...", len(got), got[:20], len(pkt), pkt[:20])
				}
				v6 := buildIPv6(v6src, v6dst, 17, make([]byte, max(n-40, 8)))
				b.tun.Inject(v6)
				if got := expectPacket(t, a.tun, "b->a"); !bytes.Equal(got, v6) {
					t.Fatalf("a got %d bytes; want %d", len(got), len(v6))
				}
			}
			sa, sb := a.t.Stats(), b.t.Stats()
			if sa.PacketsOut != 4 || sb.PacketsIn != 4 || sb.PacketsOut != 4 || sa.PacketsIn != 4 {
				t.Errorf("packets out/in = %d/%d and %d/%d; want 4 each", sa.PacketsOut, sb.PacketsIn, sb.PacketsOut, sa.PacketsIn)
			}
			if want := uint64(28 + 100 + 1000 + mtu); sb.BytesIn != want || sa.BytesOut != want {
				t.Errorf("b BytesIn = %d, a BytesOut = %d; want %d", sb.BytesIn, sa.BytesOut, want)
			}
			if sa.LastOutbound.IsZero() || sb.LastInbound.IsZero() || time.Since(sb.LastInbound) > time.Minute {
				t.Errorf("liveness: a LastOutbound %v, b LastInbound %v; want recent times", sa.LastOutbound, sb.LastInbound)
			}
			if on := b.t.LastInboundOn(0xb0000001); on.IsZero() || on.After(time.Now()) || time.Since(on) > time.Minute {
				t.Errorf("b LastInboundOn(SA in use) = %v; want a recent time", on)
			}
			if on := b.t.LastInboundOn(0x1234); !on.IsZero() {
				t.Errorf("b LastInboundOn(unknown SPI) = %v; want zero", on)
			}
		})
	}
}

func TestPipelineGRO(t *testing.T) {
	a, b, _ := newPair(t, pairOpts{gro: true, batch: 64})
	var want [][]byte
	for i := 0; i < 200; i++ {
		n := 1400
		if i%50 == 49 {
			n = 300 // short datagrams end GRO runs
		}
		pkt := udp4(uint16(i), n)
		want = append(want, pkt)
		a.tun.Inject(pkt)
	}
	for i := range want {
		got := expectPacket(t, b.tun, "gro")
		if !bytes.Equal(got, want[i]) {
			t.Fatalf("packet %d differs after GRO", i)
		}
	}
}

func TestPipelineMSSClampBothWays(t *testing.T) {
	a, b, _ := newPair(t, pairOpts{})
	syn := buildIPv4(v4src, v4dst, protoTCP, 1, ipv4DF, nil, buildTCP(v4src, v4dst, 0x02, linuxSynOpts, nil))
	a.tun.Inject(syn)
	got := expectPacket(t, b.tun, "syn a->b")
	if mss := binary.BigEndian.Uint16(got[20+22:]); mss != DefaultMSS || !tcpChecksumOK(v4src, v4dst, got[20:]) {
		t.Errorf("SYN a->b: MSS %d, checksum ok %v; want %d, true", mss, tcpChecksumOK(v4src, v4dst, got[20:]), DefaultMSS)
	}
	synAck := buildIPv4(v4dst, v4src, protoTCP, 2, ipv4DF, nil, buildTCP(v4dst, v4src, 0x12, mssOption(8960), nil))
	b.tun.Inject(synAck)
	got = expectPacket(t, a.tun, "syn-ack b->a")
	if mss := binary.BigEndian.Uint16(got[20+22:]); mss != DefaultMSS || !tcpChecksumOK(v4dst, v4src, got[20:]) {
		t.Errorf("SYN-ACK b->a: MSS %d; want %d", mss, DefaultMSS)
	}
	// Clamping on the way in: b's inbound clamps a SYN that a did not (a has clamping off).
	a2, b2, _ := newPair(t, pairOpts{cfgA: func(c *TunnelConfig) { c.NoMSSClamp = true }})
	a2.tun.Inject(syn)
	got = expectPacket(t, b2.tun, "syn a2->b2")
	if mss := binary.BigEndian.Uint16(got[20+22:]); mss != DefaultMSS {
		t.Errorf("SYN clamped on the inbound side: MSS %d; want %d", mss, DefaultMSS)
	}
	if c := b2.t.Stats().MSSClamped; c != 1 {
		t.Errorf("b2 MSSClamped = %d; want 1", c)
	}
	if c := a.t.Stats().MSSClamped; c != 1 {
		t.Errorf("a MSSClamped = %d; want 1 (outbound SYN)", c)
	}
}

func TestPipelineFragmentation(t *testing.T) {
	for _, df := range []uint16{0, ipv4DF} {
		a, b, _ := newPair(t, pairOpts{}) // GCM with NAT-T: MTU 1438
		big := udp4(7, 1500)
		binary.BigEndian.PutUint16(big[6:], df)
		big[10], big[11] = 0, 0
		binary.BigEndian.PutUint16(big[10:], ^sum16(big[:20]))
		a.tun.Inject(big)
		f1 := expectPacket(t, b.tun, "fragment 1")
		f2 := expectPacket(t, b.tun, "fragment 2")
		hdr, payload, lastMF := reassemble(t, [][]byte{f1, f2}, 1438)
		if !bytes.Equal(payload, big[20:]) || lastMF {
			t.Errorf("DF=%#x: reassembled payload differs (or MF left on)", df)
		}
		if binary.BigEndian.Uint16(hdr[6:])&ipv4DF != 0 {
			t.Errorf("DF=%#x: fragment has DF set; want it cleared", df)
		}
		st := a.t.Stats()
		if st.Fragmented != 1 || st.FragmentsOut != 2 || st.PacketsOut != 2 {
			t.Errorf("stats Fragmented %d FragmentsOut %d PacketsOut %d; want 1, 2, 2", st.Fragmented, st.FragmentsOut, st.PacketsOut)
		}
	}
}

func TestPipelineKeepDFSendsICMP(t *testing.T) {
	src := netip.MustParseAddr("169.254.10.2")
	a, b, _ := newPair(t, pairOpts{cfgA: func(c *TunnelConfig) { c.KeepDF = true; c.MTU = 1400; c.ICMPSource4 = src }})
	big := buildIPv4(v4src, v4dst, 17, 1, ipv4DF, nil, make([]byte, 1480))
	a.tun.Inject(big)
	icmp := expectPacket(t, a.tun, "icmp frag needed")
	if icmp[9] != protoICMP || icmp[20] != 3 || icmp[21] != 4 || binary.BigEndian.Uint16(icmp[26:]) != 1400 {
		t.Errorf("got %x; want ICMP 3/4 with MTU 1400", icmp[:28])
	}
	if got, _ := netip.AddrFromSlice(icmp[12:16]); got != src {
		t.Errorf("ICMP source %v; want %v", got, src)
	}
	expectNoPacket(t, b.tun, "nothing sent")
	// Without DF the same packet is fragmented.
	nodf := buildIPv4(v4src, v4dst, 17, 2, 0, nil, make([]byte, 1480))
	a.tun.Inject(nodf)
	expectPacket(t, b.tun, "fragment 1")
	expectPacket(t, b.tun, "fragment 2")
	if st := a.t.Stats(); st.TooBig != 1 || st.ICMPSent != 1 || st.Fragmented != 1 {
		t.Errorf("stats TooBig %d ICMPSent %d Fragmented %d; want 1, 1, 1", st.TooBig, st.ICMPSent, st.Fragmented)
	}
}

func TestPipelineNoFragment(t *testing.T) {
	a, b, _ := newPair(t, pairOpts{cfgA: func(c *TunnelConfig) { c.NoFragment = true }})
	big := udp4(9, 1500)
	a.tun.Inject(big)
	if got := expectPacket(t, b.tun, "whole"); !bytes.Equal(got, big) {
		t.Errorf("NoFragment: got %d bytes; want the whole %d-byte packet", len(got), len(big))
	}
}

func TestPipelineIPv6TooBig(t *testing.T) {
	src6 := netip.MustParseAddr("fd00:a9fe::2")
	a, b, _ := newPair(t, pairOpts{cfgA: func(c *TunnelConfig) { c.ICMPSource6 = src6 }})
	big := buildIPv6(v6src, v6dst, 17, make([]byte, 1460))
	a.tun.Inject(big)
	ptb := expectPacket(t, a.tun, "packet too big")
	if ptb[6] != protoICMPv6 || ptb[40] != 2 || binary.BigEndian.Uint32(ptb[44:]) != 1438 {
		t.Errorf("got %x; want ICMPv6 type 2 with MTU 1438", ptb[:48])
	}
	if got, _ := netip.AddrFromSlice(ptb[8:24]); got != src6 {
		t.Errorf("PTB source %v; want %v", got, src6)
	}
	expectNoPacket(t, b.tun, "nothing sent")
	ok := buildIPv6(v6src, v6dst, 17, make([]byte, 1398))
	a.tun.Inject(ok)
	if got := expectPacket(t, b.tun, "1438-byte IPv6"); len(got) != 1438 {
		t.Errorf("1438-byte IPv6 packet arrived as %d bytes", len(got))
	}
}

// TestPipelineDropsAndCounts injects bad datagrams on the wire: each is dropped and counted
// where it belongs, and good traffic keeps flowing.
func TestPipelineDropsAndCounts(t *testing.T) {
	var ikeGot [][]byte
	var ikeMu sync.Mutex
	var ikeLocal, ikeRemote netip.AddrPort
	var captured [][]byte
	var capMu sync.Mutex
	a, b, fn := newPair(t, pairOpts{onIKE: func(m []byte, local, remote netip.AddrPort) {
		ikeMu.Lock()
		defer ikeMu.Unlock()
		ikeGot = append(ikeGot, append([]byte(nil), m...))
		ikeLocal, ikeRemote = local, remote
	}})
	fn.Filter = func(from, to netip.AddrPort, b []byte) bool {
		capMu.Lock()
		defer capMu.Unlock()
		captured = append(captured, append([]byte(nil), b...))
		return true
	}
	pkt := udp4(1, 200)
	a.tun.Inject(pkt)
	expectPacket(t, b.tun, "original")
	capMu.Lock()
	esp := captured[0]
	capMu.Unlock()

	inject := func(p []byte) {
		if err := fn.Inject(addrA, addrB, p); err != nil {
			t.Fatal(err)
		}
	}
	inject(esp) // replay
	inject(esp) // replay again
	forged := append([]byte{}, esp...)
	forged[len(forged)-3] ^= 0x40
	binary.BigEndian.PutUint32(forged[4:], 1000) // new sequence number, bad ICV
	inject(forged)
	noSA := append([]byte{}, esp...)
	binary.BigEndian.PutUint32(noSA, 0x12345678)
	inject(noSA)
	inject([]byte{1, 2, 3})                    // too short
	inject(esp[:20])                           // right SPI, too short for the SA
	inject([]byte{KeepaliveByte})              // NAT keepalive
	inject(AppendIKE(nil, []byte("ike-init"))) // IKE
	inject(nil)                                // empty datagram
	// Good traffic still flows.
	a.tun.Inject(pkt)
	if got := expectPacket(t, b.tun, "after junk"); !bytes.Equal(got, pkt) {
		t.Fatalf("good packet after junk differs")
	}
	expectNoPacket(t, b.tun, "no junk delivered")

	st := b.t.Stats()
	got := map[string]uint64{"replayed": st.Replayed, "auth": st.AuthFailed, "malformed": st.MalformedIn, "in": st.PacketsIn}
	want := map[string]uint64{"replayed": 2, "auth": 1, "malformed": 1, "in": 2}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tunnel counters (-want +got):\n%s", diff)
	}
	ms := b.mux.Stats()
	gotM := MuxStats{NoSA: ms.NoSA, Malformed: ms.Malformed, KeepalivesIn: ms.KeepalivesIn, IKEIn: ms.IKEIn}
	wantM := MuxStats{NoSA: 1, Malformed: 2, KeepalivesIn: 1, IKEIn: 1}
	if diff := cmp.Diff(wantM, gotM); diff != "" {
		t.Errorf("socket counters (-want +got):\n%s", diff)
	}
	ikeMu.Lock()
	defer ikeMu.Unlock()
	if len(ikeGot) != 1 || string(ikeGot[0]) != "ike-init" || ikeRemote != addrA || ikeLocal != addrB {
		t.Errorf("OnIKE got %q from %v to %v; want \"ike-init\" from %v to %v", ikeGot, ikeRemote, ikeLocal, addrA, addrB)
	}
}

func TestSendIKEAndKeepalive(t *testing.T) {
	var captured [][]byte
	var mu sync.Mutex
	a, b, fn := newPair(t, pairOpts{noSAs: true})
	_ = b
	fn.Filter = func(from, to netip.AddrPort, p []byte) bool {
		mu.Lock()
		defer mu.Unlock()
		captured = append(captured, append([]byte(nil), p...))
		return true
	}
	if err := a.mux.SendIKE([]byte{0x11, 0x22}, addrB); err != nil {
		t.Fatal(err)
	}
	if err := a.t.SendKeepalive(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := [][]byte{{0, 0, 0, 0, 0x11, 0x22}, {0xff}}
	if diff := cmp.Diff(want, captured); diff != "" {
		t.Errorf("wire (-want +got):\n%s", diff)
	}
	eventually(t, "keepalive counted", func() bool { return b.mux.Stats().KeepalivesIn == 1 })
}

func TestAutomaticKeepalives(t *testing.T) {
	a, b, _ := newPair(t, pairOpts{noSAs: true, cfgA: func(c *TunnelConfig) { c.KeepaliveInterval = 20 * time.Millisecond }})
	eventually(t, "keepalives", func() bool { return b.mux.Stats().KeepalivesIn >= 3 })
	if a.t.Stats().KeepalivesOut < 3 {
		t.Errorf("KeepalivesOut = %d; want >= 3", a.t.Stats().KeepalivesOut)
	}
}

func TestPipelineNoOutboundSA(t *testing.T) {
	a, b, _ := newPair(t, pairOpts{noSAs: true})
	a.tun.Inject(udp4(1, 100))
	eventually(t, "NoSAOut", func() bool { return a.t.Stats().NoSAOut == 1 })
	expectNoPacket(t, b.tun, "nothing without SAs")
	a.tun.Inject([]byte{0x10, 1, 2}) // not IP
	eventually(t, "MalformedOut", func() bool { return a.t.Stats().MalformedOut == 1 })
}

// TestRekeyMakeBeforeBreak sends a continuous numbered stream a->b while both directions are
// rekeyed the way the tunnel layer does it; every packet must arrive exactly once.
func TestRekeyMakeBeforeBreak(t *testing.T) {
	a, b, _ := newPair(t, pairOpts{batch: 16})
	var stop atomic.Bool
	var sent atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; !stop.Load() && i < 60000; i++ {
			a.tun.Inject(udp4(uint16(i), 200))
			sent.Add(1)
			if i%50 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	// Rekey three times while traffic flows: new inbound first, then outbound; the old inbound
	// SA goes once the new one carries traffic (the peer moved, and in-order delivery means
	// nothing sealed with the old SA is still on its way).
	oldAB, oldBA := uint32(0xb0000001), uint32(0xa0000001)
	for r := 0; r < 3; r++ {
		time.Sleep(5 * time.Millisecond)
		newAB, newBA := oldAB+1, oldBA+1
		pAB := testParams(t, newAB, SuiteAES256GCM16, byte(10+r))
		pBA := testParams(t, newBA, SuiteAES256GCM16, byte(50+r))
		inB, err := b.t.AddInbound(pAB)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.t.AddInbound(pBA); err != nil {
			t.Fatal(err)
		}
		if _, err := a.t.SetOutbound(pAB); err != nil {
			t.Fatal(err)
		}
		if _, err := b.t.SetOutbound(pBA); err != nil {
			t.Fatal(err)
		}
		eventually(t, "new SA carries traffic", func() bool { return inB.PacketsOpened() > 0 })
		if err := b.t.RemoveInbound(oldAB); err != nil {
			t.Fatal(err)
		}
		if err := a.t.RemoveInbound(oldBA); err != nil {
			t.Fatal(err)
		}
		oldAB, oldBA = newAB, newBA
	}
	stop.Store(true)
	<-done
	total := int(sent.Load())
	seen := make(map[uint16]int, total)
	for i := 0; i < total; i++ {
		p := expectPacket(t, b.tun, fmt.Sprintf("stream packet %d of %d", i, total))
		seen[binary.BigEndian.Uint16(p[4:])]++
	}
	for id, n := range seen {
		if n != 1 { // fewer than 65536 packets: ids are unique
			t.Errorf("packet id %d delivered %d times", id, n)
		}
	}
	if got := b.mux.Stats().NoSA; got != 0 {
		t.Errorf("NoSA = %d during make-before-break; want 0", got)
	}
	spis := b.t.InboundSPIs()
	if !slices.Equal(spis, []uint32{oldAB}) {
		t.Errorf("b inbound SPIs = %x; want only %x", spis, oldAB)
	}
	if a.t.Outbound().SPI() != oldAB {
		t.Errorf("a outbound SPI = %x; want %x", a.t.Outbound().SPI(), oldAB)
	}
}

func TestTwoTunnelsOneSocket(t *testing.T) {
	fn := NewFakeNetwork()
	local := netip.MustParseAddrPort("192.0.2.10:4500")
	aws1 := netip.MustParseAddrPort("203.0.113.1:4500")
	aws2 := netip.MustParseAddrPort("203.0.113.2:4500")
	mkMux := func(addr netip.AddrPort) *Mux {
		c, err := fn.Listen(addr)
		if err != nil {
			t.Fatal(err)
		}
		m := NewMux(c, MuxConfig{Logger: quietLog})
		t.Cleanup(func() { m.Close() })
		return m
	}
	cgw, m1, m2 := mkMux(local), mkMux(aws1), mkMux(aws2)
	mkT := func(m *Mux, remote netip.AddrPort) *end {
		ft := NewFakeTUN(1500, 8)
		tt, err := m.NewTunnel(TunnelConfig{Name: remote.String(), TUN: ft, Remote: remote})
		if err != nil {
			t.Fatal(err)
		}
		return &end{mux: m, tun: ft, t: tt}
	}
	c1, c2 := mkT(cgw, aws1), mkT(cgw, aws2)
	p1, p2 := mkT(m1, local), mkT(m2, local)
	spi1, err := cgw.ReserveSPI()
	if err != nil {
		t.Fatal(err)
	}
	spi2, err := cgw.ReserveSPI()
	if err != nil {
		t.Fatal(err)
	}
	install(t, p1, c1, SuiteAES128GCM16, spi1, 0x1111, 1)
	install(t, p2, c2, SuiteAES128CBCSHA1, spi2, 0x2222, 2)
	one, two := udp4(1, 100), udp4(2, 200)
	p1.tun.Inject(one)
	p2.tun.Inject(two)
	if got := expectPacket(t, c1.tun, "tunnel 1 in"); !bytes.Equal(got, one) {
		t.Errorf("tunnel 1 TUN got the wrong packet")
	}
	if got := expectPacket(t, c2.tun, "tunnel 2 in"); !bytes.Equal(got, two) {
		t.Errorf("tunnel 2 TUN got the wrong packet")
	}
	c1.tun.Inject(two)
	c2.tun.Inject(one)
	if got := expectPacket(t, p1.tun, "aws 1"); !bytes.Equal(got, two) {
		t.Errorf("aws 1 got the wrong packet")
	}
	if got := expectPacket(t, p2.tun, "aws 2"); !bytes.Equal(got, one) {
		t.Errorf("aws 2 got the wrong packet")
	}
	if _, err := c2.t.AddInbound(testParams(t, spi1, SuiteAES128GCM16, 9)); err == nil {
		t.Errorf("AddInbound(spi of tunnel 1) on tunnel 2 = nil; want an error")
	}
	if err := c1.t.Close(); err != nil {
		t.Fatal(err)
	}
	p1.tun.Inject(one)
	eventually(t, "NoSA after close", func() bool { return cgw.Stats().NoSA == 1 })
}

func TestRekeyNeededSignal(t *testing.T) {
	got := make(chan uint32, 1)
	a, b, _ := newPair(t, pairOpts{cfgA: func(c *TunnelConfig) { c.OnRekeyNeeded = func(spi uint32) { got <- spi } }})
	a.t.Outbound().seq.Store(SeqSoftLimit - 1)
	a.tun.Inject(udp4(1, 100))
	expectPacket(t, b.tun, "packet at the soft limit")
	select {
	case spi := <-got:
		if spi != 0xb0000001 {
			t.Errorf("OnRekeyNeeded(%#x); want 0xb0000001", spi)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("OnRekeyNeeded not called")
	}
	a.tun.Inject(udp4(2, 100))
	expectPacket(t, b.tun, "next packet")
	select {
	case spi := <-got:
		t.Errorf("OnRekeyNeeded(%#x) called twice for one SA", spi)
	case <-time.After(50 * time.Millisecond):
	}
	a.t.Outbound().seq.Store(0xFFFF_FFFF)
	a.tun.Inject(udp4(3, 100))
	eventually(t, "SeqExhausted", func() bool { return a.t.Stats().SeqExhausted == 1 })
	expectNoPacket(t, b.tun, "nothing after exhaustion")
}

func TestNewTunnelErrors(t *testing.T) {
	fn := NewFakeNetwork()
	c, _ := fn.Listen(addrA)
	m := NewMux(c, MuxConfig{Logger: quietLog})
	defer m.Close()
	tun := NewFakeTUN(1500, 1)
	for _, tc := range []struct {
		name string
		cfg  TunnelConfig
	}{
		{"no tun", TunnelConfig{Remote: addrB}},
		{"no remote", TunnelConfig{TUN: tun}},
		{"v6 remote on v4 socket", TunnelConfig{TUN: tun, Remote: netip.MustParseAddrPort("[2001:db8::1]:4500")}},
		{"mtu too small", TunnelConfig{TUN: tun, Remote: addrB, MTU: 500}},
		{"mss too small", TunnelConfig{TUN: tun, Remote: addrB, MSS: 50}},
	} {
		if _, err := m.NewTunnel(tc.cfg); err == nil {
			t.Errorf("NewTunnel(%s) = nil error; want one", tc.name)
		}
	}
}
