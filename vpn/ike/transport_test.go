package ike

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"
	"time"
)

// TestUDPTransport runs real exchanges over loopback sockets: one Conn on each side, and on
// the first side a Mux carrying two Conns (two tunnels sharing the sockets), with forced
// UDP encapsulation so that IKE moves to the NAT-T socket and its marker.
func TestUDPTransport(t *testing.T) {
	local := netip.MustParseAddr("127.0.0.1")
	peers := []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")}
	tl, err := ListenUDP(local, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	lp, ln := tl.Ports()
	mux := &Mux{}
	var conns []*Conn
	var dps []*fakeDP
	for i, pa := range peers {
		tp, err := ListenUDP(pa, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer tp.Close()
		pp, pn := tp.Ports()
		logs := &logBuf{}
		mk := func(cfg Config, tr *UDPTransport) (*Conn, *fakeDP) {
			dp := newFakeDP()
			c, err := NewConn(cfg, Options{Sender: tr, DataPlane: dp, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			if err != nil {
				t.Fatal(err)
			}
			return c, dp
		}
		ours := Config{Name: "tun" + string(rune('1'+i)), LocalAddr: local, RemoteAddr: pa, LocalPort: lp, LocalNATTPort: ln,
			RemotePort: pp, RemoteNATTPort: pn, PSK: testPSK, StartAction: StartStart, ForceEncap: i == 0}
		theirs := Config{Name: "peer", LocalAddr: pa, RemoteAddr: local, LocalPort: pp, LocalNATTPort: pn,
			RemotePort: lp, RemoteNATTPort: ln, PSK: testPSK}
		pc, pdp := mk(theirs, tp)
		tp.Serve(pc)
		pc.Start()
		defer pc.Close(context.Background())
		oc, odp := mk(ours, tl)
		mux.Add(oc)
		conns = append(conns, oc)
		dps = append(dps, odp, pdp)
		defer func() {
			if t.Failed() {
				t.Logf("logs of tunnel %d:\n%s", i, logs.String())
			}
		}()
	}
	tl.Serve(mux)
	for _, c := range conns {
		c.Start()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if agree(dps[0], dps[1]) == nil && agree(dps[1], dps[0]) == nil && agree(dps[2], dps[3]) == nil && agree(dps[3], dps[2]) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tunnels not up over UDP: %+v / %+v", conns[0].Status(), conns[1].Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := conns[0].Status(); !st.NATDetected || st.IKE.Local.Port() != ln {
		t.Errorf("tunnel 1 did not float to the NAT-T socket: %+v", st.IKE)
	}
	if st := conns[1].Status(); st.NATDetected {
		t.Errorf("tunnel 2 floated without NAT: %+v", st.IKE)
	}
	// rekey over the real path, then close cleanly
	for _, c := range conns {
		if err := c.RekeyChild(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if agree(dps[0], dps[1]) != nil || agree(dps[3], dps[2]) != nil {
		t.Errorf("after rekey: %v, %v", agree(dps[0], dps[1]), agree(dps[3], dps[2]))
	}
	for _, c := range conns {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := c.Close(ctx); err != nil {
			t.Errorf("Close() = %v", err)
		}
		cancel()
	}
}

func TestSplitSender(t *testing.T) {
	var ike, kas int
	var natt [][]byte
	s := SplitSender{
		IKE:           senderFunc(func(b []byte, l, r netip.AddrPort) error { ike++; return nil }),
		NATTPort:      4500,
		SendIKE:       func(m []byte, r netip.AddrPort) error { natt = append(natt, m); return nil },
		SendKeepalive: func(r netip.AddrPort) error { kas++; return nil },
	}
	l500, l4500 := netip.MustParseAddrPort("192.0.2.1:500"), netip.MustParseAddrPort("192.0.2.1:4500")
	r := netip.MustParseAddrPort("192.0.2.2:4500")
	_ = s.Send([]byte("ike-on-500"), l500, r)
	_ = s.Send(append([]byte{0, 0, 0, 0}, "msg"...), l4500, r)
	_ = s.Send([]byte{0xff}, l4500, r)
	if err := s.Send([]byte("no marker"), l4500, r); err == nil {
		t.Errorf("Send(unmarked on 4500) = nil; want an error")
	}
	if ike != 1 || kas != 1 || len(natt) != 1 || string(natt[0]) != "msg" {
		t.Errorf("ike %d, keepalives %d, natt %q; want 1, 1, [msg]", ike, kas, natt)
	}
}

type senderFunc func(b []byte, local, remote netip.AddrPort) error

func (f senderFunc) Send(b []byte, local, remote netip.AddrPort) error { return f(b, local, remote) }
