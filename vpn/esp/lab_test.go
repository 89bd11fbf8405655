package esp

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"meshroot/internal/lab"
	"meshroot/internal/testenv"
)

// labTUN is the name of our TUN device inside each lab namespace (namespaces are unique per
// test, so the name can be fixed).
const labTUN = "esp0"

// labSide is our data plane running in one namespace of a lab.PeerPair.
type labSide struct {
	ns  *lab.NS
	mux *Mux
	t   *Tunnel
	out Params // the outbound SA, so a test can forge packets the peer would accept
}

// startLabSide opens the NAT-T socket and the TUN device inside ns (they stay bound to it), starts
// a Mux and a Tunnel with static SAs, and puts the inside addresses on the TUN.
func startLabSide(tb testing.TB, ns *lab.NS, local, remote netip.AddrPort, inside []string, in, out Params, tune func(*TunnelConfig)) *labSide {
	tb.Helper()
	var conn PacketConn
	var dev TUN
	err := ns.Do(func() error {
		c, err := ListenUDP(local, UDPOptions{})
		if err != nil {
			return err
		}
		d, err := CreateTUN(labTUN, 1500)
		if err != nil {
			c.Close()
			return err
		}
		conn, dev = c, d
		return nil
	})
	if err != nil {
		tb.Fatalf("%s: socket and tun: %v", ns, err)
	}
	m := NewMux(conn, MuxConfig{Logger: slog.New(slog.NewTextHandler(testLogWriter{tb}, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	tb.Cleanup(func() { m.Close() })
	cfg := TunnelConfig{Name: ns.Name, TUN: dev, Remote: remote}
	for _, cidr := range inside {
		if pf, err := netip.ParsePrefix(cidr); err == nil {
			if pf.Addr().Is4() {
				cfg.ICMPSource4 = pf.Addr()
			} else {
				cfg.ICMPSource6 = pf.Addr()
			}
		}
	}
	if tune != nil {
		tune(&cfg)
	}
	t, err := m.NewTunnel(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := t.AddInbound(in); err != nil {
		tb.Fatal(err)
	}
	if _, err := t.SetOutbound(out); err != nil {
		tb.Fatal(err)
	}
	if err := ns.AddAddr(labTUN, inside...); err != nil {
		tb.Fatal(err)
	}
	if err := ns.LinkUp(labTUN); err != nil {
		tb.Fatal(err)
	}
	return &labSide{ns: ns, mux: m, t: t, out: out}
}

// ourPair starts our data plane on both sides of a PeerPair with matching static SAs and routes
// each side's LAN through the tunnel.
func ourPair(tb testing.TB, p *lab.PeerPair, s Suite, outside6 bool, tune func(*TunnelConfig)) (a, b *labSide) {
	tb.Helper()
	ad := p.Addrs
	aOut, bOut := ad.AOutside4, ad.BOutside4
	if outside6 {
		aOut, bOut = ad.AOutside6, ad.BOutside6
	}
	aAddr := netip.AddrPortFrom(netip.MustParseAddr(aOut), 4500)
	bAddr := netip.AddrPortFrom(netip.MustParseAddr(bOut), 4500)
	ab := testParams(tb, 0xc0000001, s, 11) // A -> B
	ba := testParams(tb, 0xa0000001, s, 77) // B -> A
	b = startLabSide(tb, p.B, bAddr, aAddr, []string{ad.BInside4, ad.BInside6}, ab, ba, tune)
	a = startLabSide(tb, p.A, aAddr, bAddr, []string{ad.AInside4, ad.AInside6}, ba, ab, tune)
	if err := p.RouteLANVia(p.A, labTUN, ""); err != nil {
		tb.Fatal(err)
	}
	if err := p.RouteLANVia(p.B, labTUN, ""); err != nil {
		tb.Fatal(err)
	}
	return a, b
}

func addrOnly(cidr string) string {
	if pf, err := netip.ParsePrefix(cidr); err == nil {
		return pf.Addr().String()
	}
	return cidr
}

// TestLabDataPlane runs two of our data planes in two namespaces joined by a veth, with static
// SAs (no IKE): pings and a TCP transfer across the tunnel and between the LANs behind it,
// fragmentation before encryption of full-size DF packets, ICMPv6 packet-too-big, MSS clamping,
// and packets injected on the wire (replays, forgeries, junk) dropped and counted.
func TestLabDataPlane(t *testing.T) {
	testenv.Integration(t)
	testenv.Command(t, "ping")
	for _, tc := range []struct {
		name     string
		suite    Suite
		outside6 bool
		mtu      int
	}{
		{"aes256gcm16", SuiteAES256GCM16, false, 0},
		{"aes128-sha1", SuiteAES128CBCSHA1, false, 0},
		{"aes128gcm16-outside-ipv6", SuiteAES128GCM16, true, 0},
		// An inner MTU too big for the IPv6 outside path: GSO refuses the segments
		// (EMSGSIZE), the socket falls back to single datagrams, the kernel fragments them.
		{"outside-ipv6-outer-fragments", SuiteAES256GCM16, true, 1438},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := lab.New(t)
			p, err := lab.NewPeerPair(l, lab.PeerPairConfig{})
			if err != nil {
				t.Fatal(err)
			}
			a, b := ourPair(t, p, tc.suite, tc.outside6, func(c *TunnelConfig) { c.MTU = tc.mtu })
			defer func() {
				if t.Failed() {
					t.Logf("A tunnel: %+v\nA socket: %+v", a.t.Stats(), a.mux.Stats())
					t.Logf("B tunnel: %+v\nB socket: %+v", b.t.Stats(), b.mux.Stats())
				}
			}()
			ad := p.Addrs
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()

			// Inside addresses, then LAN to LAN, IPv4 and IPv6.
			if err := p.A.WaitPing(ctx, "", addrOnly(ad.BInside4)); err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				ns       *lab.NS
				src, dst string
			}{
				{p.A, "", addrOnly(ad.BInside4)},
				{p.A, "", addrOnly(ad.BInside6)},
				{p.B, "", addrOnly(ad.AInside4)},
				{p.AHost, "", ad.BHost4},
				{p.AHost, "", ad.BHost6},
				{p.BHost, "", ad.AHost4},
			} {
				if err := c.ns.Ping(c.src, c.dst, 3); err != nil {
					t.Errorf("ping %s from %s: %v", c.dst, c.ns, err)
				}
			}

			labTCPTransfer(t, p.AHost, p.BHost, ad.BHost4)
			labTCPTransfer(t, p.BHost, p.AHost, "["+ad.AHost6+"]")

			// Full-size IPv4 with DF from the LAN: cleared and fragmented before encryption.
			before := a.t.Stats().Fragmented
			if out, err := p.AHost.Run("ping", "-n", "-q", "-M", "do", "-s", "1472", "-c", "3", "-i", "0.2", "-W", "2", ad.BHost4); err != nil || !strings.Contains(out, " 0% packet loss") {
				t.Errorf("1500-byte DF ping through the tunnel: %v\n%s", err, out)
			}
			if got := a.t.Stats().Fragmented - before; got < 3 {
				t.Errorf("A fragmented %d packets for 3 full-size pings; want >= 3", got)
			}
			// Full-size IPv6: ICMPv6 packet too big back to the host, which then fragments.
			out, _ := p.AHost.Run("ping", "-6", "-n", "-q", "-s", "1452", "-c", "4", "-i", "0.3", "-W", "2", ad.BHost6)
			if a.t.Stats().TooBig == 0 {
				t.Errorf("A sent no ICMPv6 packet too big for a 1500-byte IPv6 packet")
			}
			if !strings.Contains(out, " received") || strings.Contains(out, " 0 received") {
				t.Errorf("1500-byte IPv6 ping never answered after packet too big:\n%s", out)
			}

			labInjection(t, p, a, b, tc.outside6)

			sa, sb := a.t.Stats(), b.t.Stats()
			if sa.PacketsOut == 0 || sb.PacketsIn == 0 || sb.LastInbound.IsZero() || time.Since(sb.LastInbound) > time.Minute {
				t.Errorf("counters: A out %d, B in %d, B last inbound %v", sa.PacketsOut, sb.PacketsIn, sb.LastInbound)
			}
			if sa.MSSClamped == 0 || sb.MSSClamped == 0 {
				t.Errorf("MSS clamped A %d, B %d; want both > 0 (SYN and SYN-ACK)", sa.MSSClamped, sb.MSSClamped)
			}
			t.Logf("A: %+v", sa)
			t.Logf("B: %+v", sb)
		})
	}
}

// labTCPTransfer sends 8 MiB of random data over TCP from a host in from to dst (host, or
// [v6]), compares SHA-256 on both ends and checks the MSS was clamped.
func labTCPTransfer(t *testing.T, from, to *lab.NS, dst string) {
	t.Helper()
	if err := labTCPStream(from, to, dst, 8<<20, nil, 0); err != nil {
		t.Error(err)
	}
}

// labTCPStream sends at least minBytes of random data over TCP, and keeps sending until more
// is closed (when not nil), then checks the SHA-256 and that the MSS was clamped. With pace > 0
// it sends 64 KiB per pace instead of as fast as it can (so that it does not fill the queues
// other traffic shares). It may run on any goroutine.
func labTCPStream(from, to *lab.NS, dst string, minBytes int, more <-chan struct{}, pace time.Duration) error {
	var ln net.Listener
	if err := to.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", net.JoinHostPort(strings.Trim(dst, "[]"), "0"))
		return err
	}); err != nil {
		return err
	}
	defer ln.Close()
	sums := make(chan [32]byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(sums)
			return
		}
		defer c.Close()
		h := sha256.New()
		io.Copy(h, c)
		var s [32]byte
		copy(s[:], h.Sum(nil))
		sums <- s
	}()
	var c net.Conn
	if err := from.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
		return err
	}); err != nil {
		return err
	}
	defer c.Close()
	enough := func(sent int) bool {
		if sent < minBytes {
			return false
		}
		if more == nil {
			return true
		}
		select {
		case <-more:
			return true
		default:
			return false
		}
	}
	chunk := make([]byte, 1<<20)
	if pace > 0 {
		chunk = chunk[:64<<10]
	}
	h := sha256.New()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	for sent := 0; !enough(sent); sent += len(chunk) {
		rand.Read(chunk)
		h.Write(chunk)
		if _, err := c.Write(chunk); err != nil {
			return fmt.Errorf("tcp %s -> %s: write: %w", from, dst, err)
		}
		if pace > 0 {
			time.Sleep(pace)
		}
	}
	var mss int
	if rc, err := c.(*net.TCPConn).SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { mss, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG) })
	}
	c.Close()
	var want [32]byte
	copy(want[:], h.Sum(nil))
	select {
	case got, ok := <-sums:
		if !ok || got != want {
			return fmt.Errorf("tcp %s -> %s: SHA-256 differs", from, dst)
		}
	case <-time.After(60 * time.Second):
		return fmt.Errorf("tcp %s -> %s: not finished", from, dst)
	}
	if mss == 0 || mss > DefaultMSS {
		return fmt.Errorf("tcp %s -> %s: TCP_MAXSEG = %d; want <= %d (clamped)", from, dst, mss, DefaultMSS)
	}
	return nil
}

// labInjection sends packets into A's socket from B's namespace, as an attacker (or a broken
// network) on the path would: a replay of a sequence number B already used, a forgery, an
// unknown SPI, a truncated ESP packet, junk, a NAT keepalive. Each is dropped and counted, and
// the tunnel keeps working.
func labInjection(t *testing.T, p *lab.PeerPair, a, b *labSide, outside6 bool) {
	t.Helper()
	ad := p.Addrs
	dst := net.JoinHostPort(ad.AOutside4, "4500")
	if outside6 {
		dst = net.JoinHostPort(ad.AOutside6, "4500")
	}
	var c net.Conn
	if err := p.B.Do(func() error {
		var err error
		c, err = net.Dial("udp", dst)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A copy of B's outbound SA: its first packets reuse sequence numbers B already sent.
	forger := mustSA(t, b.out)
	inner := buildIPv4(netip.MustParseAddr(addrOnly(ad.BInside4)), netip.MustParseAddr(addrOnly(ad.AInside4)), 17, 1, 0, nil, make([]byte, 40))
	replay, _ := forger.Seal(nil, inner, NextHeaderIPv4)
	forger.seq.Store(1 << 30)
	forged, _ := forger.Seal(nil, inner, NextHeaderIPv4)
	forged[len(forged)-1] ^= 1
	noSA := append([]byte{}, replay...)
	noSA[0] ^= 0x5a
	short := replay[:12]

	ts0, ms0 := a.t.Stats(), a.mux.Stats()
	for _, pkt := range [][]byte{replay, replay, forged, noSA, short, {1, 2, 3}, {KeepaliveByte}} {
		if _, err := c.Write(pkt); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "injected packets counted", func() bool {
		ts, ms := a.t.Stats(), a.mux.Stats()
		return ts.Replayed-ts0.Replayed >= 2 && ts.AuthFailed-ts0.AuthFailed >= 1 && ts.MalformedIn-ts0.MalformedIn >= 1 &&
			ms.NoSA-ms0.NoSA >= 1 && ms.Malformed-ms0.Malformed >= 1 && ms.KeepalivesIn-ms0.KeepalivesIn >= 1
	})
	ts, ms := a.t.Stats(), a.mux.Stats()
	got := fmt.Sprintf("replayed %d auth %d malformed %d nosa %d junk %d keepalive %d",
		ts.Replayed-ts0.Replayed, ts.AuthFailed-ts0.AuthFailed, ts.MalformedIn-ts0.MalformedIn, ms.NoSA-ms0.NoSA, ms.Malformed-ms0.Malformed, ms.KeepalivesIn-ms0.KeepalivesIn)
	if want := "replayed 2 auth 1 malformed 1 nosa 1 junk 1 keepalive 1"; got != want {
		t.Errorf("A counters after injection: %s; want %s", got, want)
	}
	if ts.PacketsIn != ts0.PacketsIn {
		t.Errorf("A accepted %d injected packets", ts.PacketsIn-ts0.PacketsIn)
	}
	if err := p.B.Ping("", addrOnly(ad.AInside4), 2); err != nil {
		t.Errorf("tunnel broken after injection: %v", err)
	}
}

// testLogWriter sends log lines to t.Log.
type testLogWriter struct{ tb testing.TB }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestLabWireFormatTcpdump has tcpdump, an independent ESP implementation, decode and decrypt
// what our data plane puts on the wire: UDP-encapsulated ESP (RFC 3948) with AES-CBC and
// HMAC-SHA1-96, the layout, IV, padding and next header must be right for it to print the
// inner ICMP echo request. (tcpdump does not verify the ICV and cannot decrypt GCM; the golden
// packets in sa_test.go cover those.)
func TestLabWireFormatTcpdump(t *testing.T) {
	testenv.Integration(t)
	tcpdump := testenv.Command(t, "tcpdump")
	for _, s := range []Suite{SuiteAES128CBCSHA1, {Encr: EncrAESCBC, KeyBits: 256, Integ: AuthHMACSHA1_96}} {
		t.Run(s.String(), func(t *testing.T) {
			l := lab.New(t)
			p, err := lab.NewPeerPair(l, lab.PeerPairConfig{NoLANHosts: true})
			if err != nil {
				t.Fatal(err)
			}
			a, _ := ourPair(t, p, s, false, nil)
			ad := p.Addrs
			secret := fmt.Sprintf("0x%08x@%s aes%d-cbc-hmac96:0x%x", a.out.SPI, ad.BOutside4, s.KeyBits, a.out.EncrKey)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := p.B.CommandContext(ctx, tcpdump, "-l", "-n", "-vv", "-i", "out0", "-E", secret, "udp and dst port 4500 and src host "+ad.AOutside4)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { cancel(); cmd.Wait() }()
			lines := make(chan string)
			go func() {
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					lines <- sc.Text()
				}
				close(lines)
			}()
			want := fmt.Sprintf("%s > %s: ICMP echo request", addrOnly(ad.AInside4), addrOnly(ad.BInside4))
			var seen []string
			tick := time.NewTicker(300 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case line, ok := <-lines:
					if !ok {
						t.Fatalf("tcpdump ended without decoding an echo request; it printed:\n%s", strings.Join(seen, "\n"))
					}
					seen = append(seen, line)
					if strings.Contains(line, want) {
						if !strings.Contains(strings.Join(seen, " "), fmt.Sprintf("UDP-encap: ESP(spi=0x%08x", a.out.SPI)) {
							t.Errorf("tcpdump did not see UDP-encapsulated ESP with SPI 0x%08x:\n%s", a.out.SPI, strings.Join(seen, "\n"))
						}
						return
					}
				case <-tick.C:
					go p.A.Ping("", addrOnly(ad.BInside4), 1)
				case <-ctx.Done():
					t.Fatalf("no decrypted echo request within 30 s; tcpdump printed:\n%s", strings.Join(seen, "\n"))
				}
			}
		})
	}
}

// TestLabTwoTunnelsOneSocket is AWS's shape: our side has one NAT-T socket and two tunnels to
// two peer addresses, each with its own TUN and inside /30; inbound ESP is demultiplexed by SPI.
func TestLabTwoTunnelsOneSocket(t *testing.T) {
	testenv.Integration(t)
	testenv.Command(t, "ping")
	l := lab.New(t)
	p, err := lab.NewPeerPair(l, lab.PeerPairConfig{NoLANHosts: true})
	if err != nil {
		t.Fatal(err)
	}
	const peer2 = "198.51.100.3"
	if err := p.B.AddAddr("out0", peer2+"/24"); err != nil {
		t.Fatal(err)
	}
	local := netip.MustParseAddrPort(p.Addrs.AOutside4 + ":4500")
	remotes := []netip.AddrPort{netip.MustParseAddrPort(p.Addrs.BOutside4 + ":4500"), netip.MustParseAddrPort(peer2 + ":4500")}
	var conn PacketConn
	var tuns [2]TUN
	if err := p.A.Do(func() error {
		var err error
		if conn, err = ListenUDP(local, UDPOptions{}); err != nil {
			return err
		}
		for i := range tuns {
			if tuns[i], err = CreateTUN(fmt.Sprintf("esp%d", i), 1500); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	m := NewMux(conn, MuxConfig{Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { m.Close() })
	var ours [2]*Tunnel
	for i := range ours {
		ours[i], err = m.NewTunnel(TunnelConfig{Name: fmt.Sprintf("tunnel%d", i+1), TUN: tuns[i], Remote: remotes[i]})
		if err != nil {
			t.Fatal(err)
		}
		spiIn, err := m.ReserveSPI()
		if err != nil {
			t.Fatal(err)
		}
		in := testParams(t, spiIn, SuiteAES256GCM16, byte(20*i+1))
		out := testParams(t, 0xd0000000+uint32(i), SuiteAES256GCM16, byte(20*i+2))
		if _, err := ours[i].AddInbound(in); err != nil {
			t.Fatal(err)
		}
		if _, err := ours[i].SetOutbound(out); err != nil {
			t.Fatal(err)
		}
		dev := fmt.Sprintf("esp%d", i)
		if err := p.A.AddAddr(dev, fmt.Sprintf("169.254.%d.2/30", 10+i)); err != nil {
			t.Fatal(err)
		}
		if err := p.A.LinkUp(dev); err != nil {
			t.Fatal(err)
		}
		// The peer end: its own socket on its own address, in B.
		startLabSide(t, p.B, remotes[i], local, []string{fmt.Sprintf("169.254.%d.1/30", 10+i)}, out, in, func(c *TunnelConfig) {})
		// startLabSide names every TUN esp0; rename the second peer's before the next one.
		if i == 0 {
			if _, err := p.B.Run("ip", "link", "set", "esp0", "down"); err != nil {
				t.Fatal(err)
			}
			if _, err := p.B.Run("ip", "link", "set", "esp0", "name", "peer1"); err != nil {
				t.Fatal(err)
			}
			if err := p.B.LinkUp("peer1"); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range ours {
		dst := fmt.Sprintf("169.254.%d.1", 10+i)
		if err := p.A.Ping("", dst, 3); err != nil {
			t.Errorf("ping %s through tunnel %d: %v", dst, i+1, err)
		}
		if st := ours[i].Stats(); st.PacketsIn < 3 || st.PacketsOut < 3 {
			t.Errorf("tunnel %d counters: in %d out %d; want >= 3 each", i+1, st.PacketsIn, st.PacketsOut)
		}
	}
	if ms := m.Stats(); ms.NoSA != 0 {
		t.Errorf("NoSA = %d; want 0", ms.NoSA)
	}
}

// TestLabRekeyUnderLoad rekeys both directions five times, make-before-break, while a TCP
// transfer and a fast ping run through the tunnel: no ping is lost, the data arrives intact,
// and no packet ever misses its SA.
func TestLabRekeyUnderLoad(t *testing.T) {
	testenv.Integration(t)
	testenv.Command(t, "ping")
	l := lab.New(t)
	p, err := lab.NewPeerPair(l, lab.PeerPairConfig{})
	if err != nil {
		t.Fatal(err)
	}
	a, b := ourPair(t, p, SuiteAES128GCM16, false, nil)
	ad := p.Addrs
	if err := p.AHost.WaitPing(context.Background(), "", ad.BHost4); err != nil {
		t.Fatal(err)
	}
	// Packets that reached a socket before its tunnel's first inbound SA was added (B's TUN
	// comes up and sends before A's side is complete) are not the rekeys' business.
	noSA0 := a.mux.Stats().NoSA + b.mux.Stats().NoSA
	pingOut := make(chan string, 1)
	go func() {
		out, _ := p.AHost.Run("ping", "-n", "-q", "-c", "150", "-i", "0.02", "-W", "2", ad.BHost4)
		pingOut <- out
	}()
	transfer, rekeyed := make(chan error, 1), make(chan struct{})
	// About 200 Mbit/s: traffic on both SAs at every switch, without the stream filling the
	// TUN queue and making the pings' loss a congestion question.
	go func() { transfer <- labTCPStream(p.AHost, p.BHost, ad.BHost4, 1<<20, rekeyed, 2*time.Millisecond) }()
	spiAB, spiBA := a.out.SPI, b.out.SPI
	for r := 1; r <= 5; r++ {
		time.Sleep(300 * time.Millisecond)
		nAB := testParams(t, spiAB+1, SuiteAES128GCM16, byte(100+r))
		nBA := testParams(t, spiBA+1, SuiteAES128GCM16, byte(150+r))
		inB, err := b.t.AddInbound(nAB)
		if err != nil {
			t.Fatal(err)
		}
		inA, err := a.t.AddInbound(nBA)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.t.SetOutbound(nAB); err != nil {
			t.Fatal(err)
		}
		if _, err := b.t.SetOutbound(nBA); err != nil {
			t.Fatal(err)
		}
		eventually(t, "both new SAs carry traffic", func() bool { return inA.PacketsOpened() > 0 && inB.PacketsOpened() > 0 })
		if err := b.t.RemoveInbound(spiAB); err != nil {
			t.Fatal(err)
		}
		if err := a.t.RemoveInbound(spiBA); err != nil {
			t.Fatal(err)
		}
		spiAB, spiBA = spiAB+1, spiBA+1
	}
	close(rekeyed)
	if err := <-transfer; err != nil {
		t.Errorf("TCP stream during rekeys: %v", err)
	}
	if out := <-pingOut; !strings.Contains(out, "150 received") {
		t.Errorf("pings during rekeys:\n%s", out)
	}
	if n := a.mux.Stats().NoSA + b.mux.Stats().NoSA - noSA0; n != 0 {
		t.Errorf("NoSA = %d during make-before-break rekeys (%d before them); want 0", n, noSA0)
	}
	if got := a.t.InboundSPIs(); len(got) != 1 || got[0] != spiBA {
		t.Errorf("A inbound SPIs after 5 rekeys = %x; want [%x]", got, spiBA)
	}
}
