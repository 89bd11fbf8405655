package bgp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/server"

	"meshroot/vpn/vpnlog"
)

// These tests run real sessions without root: the "concentrator" is a second gobgp server on
// loopback (127.0.0.2, an unprivileged port), our speaker connects to it from 127.0.0.1.

// peerLog keeps the peer server's log lines ("msg key=value ...").
type peerLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *peerLog) add(level, msg string, f log.Fields) {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", level, msg)
	for _, k := range []string{"Key", "Code", "Subcode", "State"} {
		if v, ok := f[k]; ok {
			fmt.Fprintf(&b, " %s=%v", k, v)
		}
	}
	l.mu.Lock()
	l.lines = append(l.lines, b.String())
	l.mu.Unlock()
}

func (l *peerLog) has(sub string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func (l *peerLog) Panic(msg string, f log.Fields) { l.add("PANIC", msg, f) }
func (l *peerLog) Fatal(msg string, f log.Fields) { l.add("FATAL", msg, f) }
func (l *peerLog) Error(msg string, f log.Fields) { l.add("ERROR", msg, f) }
func (l *peerLog) Warn(msg string, f log.Fields)  { l.add("WARN", msg, f) }
func (l *peerLog) Info(msg string, f log.Fields)  { l.add("INFO", msg, f) }
func (l *peerLog) Debug(string, log.Fields)       {}
func (l *peerLog) SetLevel(log.LogLevel)          {}
func (l *peerLog) GetLevel() log.LogLevel         { return log.InfoLevel }

// loopPeer is the concentrator's side on loopback: AS 64512, passive (only we connect), hold
// time 30 s, advertising nothing.
type loopPeer struct {
	srv  *server.BgpServer
	port uint16
	log  *peerLog
}

func startLoopPeer(t *testing.T) *loopPeer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2 on loopback: %v", err)
	}
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	return startLoopPeerOn(t, port)
}

// startLoopPeerOn starts the concentrator's side listening on port (a peer that comes back).
func startLoopPeerOn(t *testing.T, port uint16) *loopPeer {
	t.Helper()
	lp := &loopPeer{port: port, log: &peerLog{}}
	lp.srv = server.NewBgpServer(server.LoggerOption(lp.log))
	go lp.srv.Serve()
	ctx := context.Background()
	if err := lp.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: 64512, RouterId: "10.255.0.2", ListenPort: int32(port), ListenAddresses: []string{"127.0.0.2"},
	}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lp.srv.StopBgp(context.Background(), &api.StopBgpRequest{}) })
	if err := lp.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: "127.0.0.1", PeerAsn: 65001},
		Transport: &api.Transport{PassiveMode: true, LocalAddress: "127.0.0.2"},
		Timers:    &api.Timers{Config: &api.TimersConfig{HoldTime: 30, KeepaliveInterval: 10}},
	}}); err != nil {
		t.Fatal(err)
	}
	return lp
}

// loopSession starts our speaker with one session to lp and waits until it is Established.
func loopSession(t *testing.T, lp *loopPeer, mem *vpnlog.Memory) *Speaker {
	t.Helper()
	p := PeerConfig{Tunnel: "t1", Address: netip.MustParseAddr("127.0.0.2"), Local: netip.MustParsePrefix("127.0.0.1/8"),
		ASN: 64512, ConnectRetry: time.Second, ResourceID: "vpn-1_1.2.3.4", port: lp.port}
	s, err := Start(context.Background(), Config{ASN: 65001, RouterID: netip.MustParseAddr("10.255.0.1"), Peers: []PeerConfig{p}},
		Options{Log: mem, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	waitState(t, s, p.Address, StateEstablished, 20*time.Second)
	return s
}

func waitState(t *testing.T, s *Speaker, addr netip.Addr, want State, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		settle(s)
		s.mu.Lock()
		var st State
		if p := s.peers[addr]; p != nil {
			st = p.state
		}
		s.mu.Unlock()
		if st == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("session with %s: state %q after %v; want %s", addr, st, d, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func bgpDetails(mem *vpnlog.Memory) []string {
	var out []string
	for _, r := range mem.BGP() {
		out = append(out, string(r.Status)+" "+r.Details)
	}
	return out
}

// TestCloseSendsLoggedCease: Close ends an Established session with Cease 6/2 (Administrative
// Shutdown), the peer receives it, and the BGP log ends with the notification line and the
// change to Idle.
func TestCloseSendsLoggedCease(t *testing.T) {
	lp := startLoopPeer(t)
	var mem vpnlog.Memory
	s := loopSession(t, lp, &mem)
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	got := bgpDetails(&mem)
	want := []string{
		"DOWN CGW-side peer sent a notification 6/2 (Cease/Administrative Shutdown) to neighbor 127.0.0.2",
		"DOWN CGW-side peer BGP session state has changed from Established to Idle with neighbor 127.0.0.2",
	}
	if len(got) < 2 || got[len(got)-2] != want[0] || got[len(got)-1] != want[1] {
		t.Errorf("BGP log ends with %q; want %q", got[max(0, len(got)-2):], want)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !lp.log.has("received notification Key=127.0.0.1 Code=6 Subcode=2") {
		if time.Now().After(deadline) {
			t.Fatalf("the peer did not log a Cease 6/2 from us; its log:\n%s", strings.Join(lp.log.lines, "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close() = %v; want nil", err)
	}
}

// TestCloseWithoutSessions: Close of a speaker whose session never came up logs no Cease.
func TestCloseWithoutSessions(t *testing.T) {
	var mem vpnlog.Memory
	s := loopbackSpeaker(t, &mem, nil, nil)
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	for _, l := range bgpDetails(&mem) {
		if strings.Contains(l, "notification") {
			t.Errorf("BGP log line %q; want no notification for a session that was not Established", l)
		}
	}
}

// TestUpdateRemovingPeerLogsCease: a session removed by Update ends with Cease 6/3 (Peer
// De-configured), which gobgp sends without reporting it: the log says so.
func TestUpdateRemovingPeerLogsCease(t *testing.T) {
	lp := startLoopPeer(t)
	var mem vpnlog.Memory
	s := loopSession(t, lp, &mem)
	if err := s.Update(context.Background(), Config{ASN: 65001, RouterID: netip.MustParseAddr("10.255.0.1")}); err != nil {
		t.Fatal(err)
	}
	got := bgpDetails(&mem)
	want := []string{
		"DOWN CGW-side peer sent a notification 6/3 (Cease/Peer Unconfigured) to neighbor 127.0.0.2",
		"DOWN CGW-side peer BGP session state has changed from Established to Idle with neighbor 127.0.0.2",
	}
	if len(got) < 2 || got[len(got)-2] != want[0] || got[len(got)-1] != want[1] {
		t.Errorf("BGP log ends with %q; want %q", got[max(0, len(got)-2):], want)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !lp.log.has("received notification Key=127.0.0.1 Code=6 Subcode=3") {
		if time.Now().After(deadline) {
			t.Fatalf("the peer did not log a Cease 6/3 from us; its log:\n%s", strings.Join(lp.log.lines, "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
