package bgp

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"

	"meshroot/internal/testenv"
	"meshroot/vpn/vpnlog"
)

// lockedBuffer is a slog destination the test reads while gobgp writes.
type lockedBuffer struct{ testenv.Buffer }

func (l *lockedBuffer) count(sub string) int { return strings.Count(l.String(), sub) }

// TestPeerUpRestartsWaitingSession: PeerUp (the tunnel back in service) leaves an Established
// session alone, and starts a session that is not Established again at once instead of leaving
// it to gobgp's connect retry. The session's ConnectRetry is 10 min here, so after one refused
// attempt (the peer gone) gobgp alone would not try again for 10-20 min; the test waits at most
// 2 min for the session to come back once the peer is back and PeerUp was called.
func TestPeerUpRestartsWaitingSession(t *testing.T) {
	lp := startLoopPeer(t)
	var mem vpnlog.Memory
	var logs lockedBuffer
	var events eventLog
	p := PeerConfig{Tunnel: "t1", Address: netip.MustParseAddr("127.0.0.2"), Local: netip.MustParsePrefix("127.0.0.1/8"),
		ASN: 64512, ConnectRetry: 10 * time.Minute, ResourceID: "vpn-1_1.2.3.4", port: lp.port}
	s, err := Start(context.Background(), Config{ASN: 65001, RouterID: netip.MustParseAddr("10.255.0.1"), Peers: []PeerConfig{p}},
		Options{Log: &mem, OnEvent: events.add, Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	waitState(t, s, p.Address, StateEstablished, 20*time.Second)

	// A short outage: the Established session is not touched.
	if err := s.PeerDown("t1", "DPD timeout"); err != nil {
		t.Fatal(err)
	}
	before := len(events.get())
	if err := s.PeerUp("t1"); err != nil {
		t.Fatalf("PeerUp(t1) with the session Established = %v; want nil", err)
	}
	settle(s)
	for _, e := range events.get()[before:] {
		if e.Type == EventState {
			t.Errorf("after PeerUp with the session Established: state change %s -> %s; want none", e.OldState, e.State)
		}
	}
	if lp.log.has("received notification") {
		t.Errorf("the peer received a notification after PeerUp with the session Established; its log:\n%s", strings.Join(lp.log.lines, "\n"))
	}

	// A long outage: the session ends, gobgp's next attempt is refused, then the peer is back.
	if err := s.PeerDown("t1", "DPD timeout"); err != nil {
		t.Fatal(err)
	}
	if err := lp.srv.StopBgp(context.Background(), &api.StopBgpRequest{}); err != nil {
		t.Fatal(err)
	}
	failed := logs.count("failed to connect")
	deadline := time.Now().Add(60 * time.Second)
	for logs.count("failed to connect") == failed {
		if time.Now().After(deadline) {
			t.Fatalf("no refused connection attempt within 60 s after the peer stopped; the speaker's log:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitState(t, s, p.Address, StateActive, 10*time.Second)
	lp2 := startLoopPeerOn(t, lp.port)
	if err := s.PeerUp("t1"); err != nil {
		t.Fatalf("PeerUp(t1) with the session Active = %v; want nil", err)
	}
	start := time.Now()
	waitState(t, s, p.Address, StateEstablished, 2*time.Minute)
	t.Logf("PeerUp -> Established in %v", time.Since(start).Round(time.Millisecond))
	var states []string
	_ = lp2.srv.ListPeer(context.Background(), &api.ListPeerRequest{}, func(ap *api.Peer) {
		states = append(states, ap.GetState().GetSessionState().String())
	})
	if len(states) != 1 || states[0] != api.PeerState_ESTABLISHED.String() {
		t.Errorf("the peer's sessions after PeerUp: %v; want one ESTABLISHED", states)
	}
}
