package tunnel

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"meshroot/internal/lab"
	"meshroot/vpn/ike"
)

// TestLabWrongPSK: strongSwan has another PSK. Our tunnel reports the authentication failure in
// words (activity log and status), keeps retrying with a growing backoff, and stays healthy.
func TestLabWrongPSK(t *testing.T) {
	r := newLabRig(t, labOpts{
		sw: func(c *lab.Conn) { c.PSK = "another-psk-entirely-0000" },
		ours: func(c *Config) {
			c.IKE.RetryInterval, c.IKE.RetryMax = 300*time.Millisecond, 5*time.Second
		},
	})
	r.waitFor(30*time.Second, "four authentication failures", func() bool { return len(r.ikeEvents(ike.EventAuthFailed)) >= 4 })
	fails := r.ikeEvents(ike.EventAuthFailed)
	var gaps []time.Duration
	for i := 1; i < len(fails); i++ {
		gaps = append(gaps, fails[i].Time.Sub(fails[i-1].Time))
	}
	t.Logf("authentication failures %v apart", gaps)
	if gaps[len(gaps)-1] <= gaps[0] {
		t.Errorf("gaps between attempts %v; want a growing backoff", gaps)
	}
	found := false
	for _, rec := range r.logs.Tunnel() {
		if strings.Contains(rec.Details, "Authentication failed (AUTHENTICATION_FAILED)") {
			found = true
			t.Logf("activity log: %s", rec.Details)
			break
		}
	}
	if !found {
		t.Errorf("no activity log record says the authentication failed")
	}
	st := r.tun.Status()
	if st.Usable || st.Phase1 == ike.StateEstablished || !strings.Contains(strings.ToLower(st.LastError), "auth") {
		t.Errorf("status %+v; want not established, last error about authentication", st)
	}
}

// TestLabNoProposal: no common proposal, with us as initiator (the log names our offer) and as
// responder (it names both sides' offers).
func TestLabNoProposal(t *testing.T) {
	for _, responder := range []bool{false, true} {
		name := map[bool]string{false: "initiator", true: "responder"}[responder]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newLabRig(t, labOpts{
				responder: responder,
				sw: func(c *lab.Conn) {
					c.Proposals = []string{"aes128-sha1-modp1024"}
					c.Children[0].ESPProposals = []string{"aes128-sha1-modp1024"}
				},
				ours: func(c *Config) {
					c.IKE.IKEProposals = ike.MustParseProposals("aes256gcm16-prfsha256-modp2048")
					c.IKE.RetryInterval, c.IKE.RetryMax = 300*time.Millisecond, 2*time.Second
				},
			})
			r.waitFor(30*time.Second, "a no-proposal event", func() bool { return len(r.ikeEvents(ike.EventNoProposal)) > 0 })
			var details string
			for _, rec := range r.logs.Tunnel() {
				if strings.HasPrefix(rec.Details, "No proposal match") {
					details = rec.Details
					break
				}
			}
			t.Logf("activity log: %s", details)
			want := []string{"aes256gcm16-prfsha256-modp2048"}
			if responder {
				want = append(want, "aes128-sha1") // strongSwan's offer, named as the peer's
			}
			for _, w := range want {
				if !strings.Contains(details, w) {
					t.Errorf("no-proposal record %q; want it to name %q", details, w)
				}
			}
			if st := r.tun.Status(); st.Usable || st.IKECounters.NoProposal == 0 {
				t.Errorf("status %+v; want not usable and NoProposal counted", st)
			}
		})
	}
}

// capture reads the UDP datagrams arriving at interface dev of ns (an AF_PACKET socket made
// inside the namespace).
type capture struct {
	fd   int
	pkts chan captured
	stop chan struct{}
}

type captured struct {
	src, dst netip.AddrPort
	payload  []byte
}

func startCapture(t *testing.T, ns *lab.NS, dev string) *capture {
	t.Helper()
	c := &capture{pkts: make(chan captured, 1024), stop: make(chan struct{})}
	proto := int(htons(unix.ETH_P_IP))
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, proto)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			unix.Close(fd)
			return err
		}
		c.fd = fd
		return nil
	})
	if err != nil {
		t.Fatalf("capture on %s in %s: %v", dev, ns, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			select {
			case <-c.stop:
				return
			default:
			}
			n, from, err := unix.Recvfrom(c.fd, buf, 0)
			if err != nil {
				continue
			}
			ll, ok := from.(*unix.SockaddrLinklayer)
			if !ok || ll.Pkttype != unix.PACKET_HOST || n < 28 || buf[0]>>4 != 4 || buf[9] != unix.IPPROTO_UDP {
				continue
			}
			ihl := int(buf[0]&0xf) * 4
			if n < ihl+8 {
				continue
			}
			src := netip.AddrFrom4([4]byte(buf[12:16]))
			dst := netip.AddrFrom4([4]byte(buf[16:20]))
			u := buf[ihl:n]
			select {
			case c.pkts <- captured{
				src:     netip.AddrPortFrom(src, binary.BigEndian.Uint16(u[0:2])),
				dst:     netip.AddrPortFrom(dst, binary.BigEndian.Uint16(u[2:4])),
				payload: append([]byte(nil), u[8:]...),
			}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		close(c.stop)
		<-done
		unix.Close(c.fd)
	})
	return c
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// next returns the first captured datagram matching f.
func (c *capture) next(t *testing.T, what string, f func(captured) bool) captured {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case p := <-c.pkts:
			if f(p) {
				return p
			}
		case <-deadline:
			t.Fatalf("captured no %s", what)
		}
	}
}

// TestLabMalformedAndReplayed injects, from strongSwan's side of the link, a replay of a real
// ESP packet strongSwan sent us, the same packet with a forged sequence number (ICV fails), ESP
// for an unknown SPI, datagrams too short to be anything, a replayed IKE response, a tampered
// IKE message and junk on the IKE port: each is dropped and counted where the tunnel's status
// shows it, and the tunnel keeps carrying traffic.
func TestLabMalformedAndReplayed(t *testing.T) {
	r := newLabRig(t, labOpts{})
	r.waitUp()
	a := r.p.Addrs
	us4500 := netip.MustParseAddrPort(a.AOutside4 + ":4500")
	us500 := netip.MustParseAddrPort(a.AOutside4 + ":500")
	capt := startCapture(t, r.p.A, "out0")
	if err := r.p.AHost.WaitPing(r.ctx(10*time.Second), "", a.BHost4); err != nil {
		t.Fatal(err)
	}
	spiIn := r.tun.Status().Children[0].SPIIn
	espPkt := capt.next(t, "ESP from strongSwan", func(p captured) bool {
		return p.dst == us4500 && len(p.payload) > 8 && binary.BigEndian.Uint32(p.payload) == spiIn
	}).payload
	// An IKE response: our liveness probe's answer.
	<-r.tun.Probe(2 * time.Second)
	ikeResp := capt.next(t, "an IKE response from strongSwan", func(p captured) bool {
		return p.dst == us4500 && len(p.payload) > 4+28 && binary.BigEndian.Uint32(p.payload) == 0 && p.payload[4+19]&0x20 != 0
	}).payload

	// The injector: a UDP socket on strongSwan's outside address (another port: the Mux and
	// IKE demultiplex by SPI, not by source port).
	var inj *net.UDPConn
	if err := r.p.B.Do(func() error {
		var err error
		inj, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(a.BOutside4+":4501")))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer inj.Close()
	send := func(to netip.AddrPort, b []byte) {
		t.Helper()
		if _, err := inj.WriteToUDPAddrPort(b, to); err != nil {
			t.Fatal(err)
		}
	}
	before := r.tun.Status()
	muxBefore, ikeDropsBefore := r.tr.Stats()

	send(us4500, espPkt) // replayed ESP
	forged := append([]byte(nil), espPkt...)
	binary.BigEndian.PutUint32(forged[4:], binary.BigEndian.Uint32(forged[4:])+100) // new sequence number: the ICV fails
	send(us4500, forged)
	unknown := append([]byte(nil), espPkt...)
	binary.BigEndian.PutUint32(unknown, spiIn^0x5a5a5a5a) // nobody's SPI
	send(us4500, unknown)
	send(us4500, []byte{1, 2, 3}) // too short to be ESP or IKE
	send(us4500, ikeResp)         // a replayed IKE response
	tampered := append([]byte(nil), ikeResp...)
	binary.BigEndian.PutUint32(tampered[4+20:], binary.BigEndian.Uint32(tampered[4+20:])+1) // next message ID
	tampered[len(tampered)-1] ^= 0xff                                                       // and a broken ICV
	send(us4500, tampered)
	send(us500, []byte("definitely not an IKE message, but long enough to look at"))

	r.waitFor(5*time.Second, "the injected datagrams counted", func() bool {
		st := r.tun.Status()
		mux, ikeDrops := r.tr.Stats()
		return ikeDrops > ikeDropsBefore && st.ESP.Replayed > before.ESP.Replayed && st.ESP.AuthFailed > before.ESP.AuthFailed &&
			mux.NoSA > muxBefore.NoSA && mux.Malformed > muxBefore.Malformed &&
			st.IKECounters.ReplayedDropped+st.IKECounters.MalformedDropped >= before.IKECounters.ReplayedDropped+before.IKECounters.MalformedDropped+2
	})
	st := r.tun.Status()
	mux, ikeDrops := r.tr.Stats()
	t.Logf("ESP replayed %d->%d, auth failed %d->%d; socket no-SA %d->%d, malformed %d->%d; IKE replayed %d->%d, malformed %d->%d, unroutable %d->%d",
		before.ESP.Replayed, st.ESP.Replayed, before.ESP.AuthFailed, st.ESP.AuthFailed, muxBefore.NoSA, mux.NoSA,
		muxBefore.Malformed, mux.Malformed, before.IKECounters.ReplayedDropped, st.IKECounters.ReplayedDropped,
		before.IKECounters.MalformedDropped, st.IKECounters.MalformedDropped, ikeDropsBefore, ikeDrops)
	if ikeDrops <= ikeDropsBefore {
		t.Errorf("junk on the IKE port: dropped %d -> %d; want it counted", ikeDropsBefore, ikeDrops)
	}
	if !st.Usable || st.Failovers != 0 || st.Phase1 != ike.StateEstablished {
		t.Errorf("after the injections: %+v; want the tunnel untouched", st)
	}
	if err := r.p.AHost.Ping("", a.BHost4, 3); err != nil {
		t.Error(err)
	}
}
