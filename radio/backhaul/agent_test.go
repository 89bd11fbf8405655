package backhaul

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"meshroot/radio/meshproto"
)

func testKey(t testing.TB) meshproto.Key {
	k, err := meshproto.DeriveKey(1, []byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func waitFor(t *testing.T, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestAgentsFailover: a gateway and a satellite joined by a cable (through a switch) and the
// mesh: wired first, the mesh within a few hellos when the cable stops carrying, wired again
// after the hold time; the satellite's route follows.
func TestAgentsFailover(t *testing.T) {
	lan := NewFakeLAN()
	key := testKey(t)
	iv := 20 * time.Millisecond
	sel := Config{WiredHold: 300 * time.Millisecond}
	gwNet := lan.Net("gw", map[string]string{"eth1": "cable", "mesh0": "air"})
	satNet := lan.Net("sat", map[string]string{"eth1": "cable", "mesh0": "air"})
	satNet.SetMbps("mesh0", 300)
	ports := []Port{{Iface: "eth1", Medium: Wired, HelloAddr: "10.99.1.255:7448", Mbps: 940}, {Iface: "mesh0", Medium: Wireless, HelloAddr: "10.99.2.255:7448"}}
	gw, err := NewAgent(AgentConfig{Node: "gw", Gateway: true, Ports: ports, Interval: iv, Key: key}, gwNet)
	if err != nil {
		t.Fatal(err)
	}
	sat, err := NewAgent(AgentConfig{Node: "sat", Ports: ports, Interval: iv, Key: key, Selector: sel}, satNet)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- gw.Run(ctx, nil) }()
	go func() { done <- sat.Run(ctx, nil) }()
	defer func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("Run() = %v", err)
			}
		}
	}()
	waitFor(t, 5*time.Second, "wired first", func() bool { return sat.Current().Medium == Wired })
	if st := sat.State(); st.Parent != "gw" || st.Medium != meshproto.MediumWired || st.Hops != 1 {
		t.Errorf("State() = %+v", st)
	}
	// Before the cable's first hello the satellite may have taken the mesh (whichever hello
	// came first on a loaded machine): count the routes from the wired one on.
	first := len(satNet.Uses()) - 1
	if first < 0 || satNet.Uses()[first].Iface != "eth1" {
		t.Fatalf("routes after wired first = %v; want the last via eth1", satNet.Uses())
	}
	cut := time.Now()
	lan.Cut("cable", true)
	waitFor(t, 5*time.Second, "mesh after the cut", func() bool { return sat.Current().Medium == Wireless })
	if d := time.Since(cut); d > 50*iv {
		t.Errorf("failover took %v; want a few hello intervals (%v each)", d, iv)
	}
	lan.Cut("cable", false)
	back := time.Now()
	waitFor(t, 5*time.Second, "wired again", func() bool { return sat.Current().Medium == Wired })
	if d := time.Since(back); d < sel.WiredHold {
		t.Errorf("back on wired after %v; want at least the hold time %v", d, sel.WiredHold)
	}
	// Carrier loss: immediate.
	lan.SetCarrier("sat", "eth1", false)
	waitFor(t, 5*time.Second, "mesh after carrier loss", func() bool { return sat.Current().Medium == Wireless })
	uses := satNet.Uses()
	var media []string
	for _, u := range uses[first:] {
		media = append(media, u.Iface)
	}
	if fmt.Sprint(media) != "[eth1 mesh0 eth1 mesh0]" {
		t.Errorf("routes from the first wired one = %v; want eth1 mesh0 eth1 mesh0", media)
	}
	for _, u := range uses {
		if u.NextHop == nil {
			t.Errorf("route via %s without a next hop", u.Iface)
		}
	}
	if len(gwNet.Uses()) != 0 {
		t.Errorf("the gateway changed routes: %v", gwNet.Uses())
	}
	// A hello from another site (other key) is ignored.
	other, _ := meshproto.DeriveKey(1, []byte("another site's key, 32 bytes ok!"))
	s, _ := meshproto.NewSealer(other, "rogue", nil)
	b, _ := s.Seal(meshproto.TypeHello, meshproto.Hello{Node: "rogue", Controller: true, IntervalMs: 20, Backhaul: meshproto.BackhaulState{PathMbps: 10000}})
	c, _ := gwNet.Listen("mesh0", 7448)
	c.WriteTo(b, nil)
	time.Sleep(5 * iv)
	for _, l := range sat.Links() {
		if l.Peer == "rogue" {
			t.Errorf("rogue hello accepted: %+v", l)
		}
	}
}

func TestNewAgentErrors(t *testing.T) {
	key := testKey(t)
	n := NewFakeLAN().Net("x", map[string]string{"eth1": "a"})
	for _, cfg := range []AgentConfig{
		{Ports: []Port{{Iface: "eth1", Medium: Wired, HelloAddr: "10.0.0.255:1"}}, Key: key},
		{Node: "x", Key: key},
		{Node: "x", Ports: []Port{{Iface: "eth1", Medium: "laser", HelloAddr: "10.0.0.255:1"}}, Key: key},
		{Node: "x", Ports: []Port{{Iface: "eth1", Medium: Wired, HelloAddr: "nowhere"}}, Key: key},
	} {
		if _, err := NewAgent(cfg, n); err == nil {
			t.Errorf("NewAgent(%+v) = nil error", cfg)
		}
	}
}

// failover simulates cuts of a satellite's wired backhaul (through a switch: no carrier change)
// in virtual time, with hellos every interval lost with probability loss and jitter of up to a
// tenth of the interval, and returns the time from each cut to the switch to the mesh.
func failover(cfg Config, interval time.Duration, loss float64, trials int, seed uint64) []time.Duration {
	rng := rand.New(rand.NewPCG(seed, 1))
	var out []time.Duration
	for i := 0; i < trials; i++ {
		s := NewSelector("sat", cfg)
		now := t0
		w, m := wired("gw", now), mesh("gw", 300, now)
		s.Decide(now, []Link{w, m})
		cut := now.Add(time.Duration(rng.Int64N(int64(10 * time.Second))))
		nextW, nextM := now, now
		for now = t0; now.Before(cut.Add(30 * time.Second)); now = now.Add(10 * time.Millisecond) {
			for !nextW.After(now) {
				if nextW.Before(cut) && rng.Float64() >= loss {
					w.LastHello = nextW
				}
				nextW = nextW.Add(interval + time.Duration(rng.Int64N(int64(interval/10))))
			}
			for !nextM.After(now) {
				if rng.Float64() >= loss {
					m.LastHello = nextM
				}
				nextM = nextM.Add(interval + time.Duration(rng.Int64N(int64(interval/10))))
			}
			if c, _ := s.Decide(now, []Link{w, m}); c.Medium == Wireless && !now.Before(cut) {
				out = append(out, now.Sub(cut))
				break
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func TestFailoverSimulation(t *testing.T) {
	got := failover(Config{}, 200*time.Millisecond, 0.1, 200, 1)
	if len(got) != 200 {
		t.Fatalf("%d of 200 cuts failed over", len(got))
	}
	if p95 := got[190]; p95 > 2*time.Second {
		t.Errorf("failover p95 %v; want under 2 s", p95)
	}
	// 10% hello loss must not cause false failovers while the cable is fine: at 200 ms hellos
	// and 3 missed, a false alarm needs 3 losses in a row (1 in 1000 hellos).
	s := NewSelector("sat", Config{})
	rng := rand.New(rand.NewPCG(2, 2))
	w, m := wired("gw", t0), mesh("gw", 300, t0)
	s.Decide(t0, []Link{w, m})
	changes := 0
	for now := t0; now.Before(t0.Add(time.Hour)); now = now.Add(200 * time.Millisecond) {
		if rng.Float64() >= 0.01 { // 1% loss on a cable
			w.LastHello = now
		}
		m.LastHello = now
		if _, r := s.Decide(now, []Link{w, m}); r != ReasonNone {
			changes++
		}
	}
	if changes > 2 {
		t.Errorf("%d changes in an hour on a healthy cable with 1%% hello loss; want at most 2", changes)
	}
}

// BenchmarkFailover reports the simulated failover time (p50/p95 over 500 cuts without a
// carrier change, 10% hello loss) of our hellos (200 ms, 3 missed) and of a baseline with
// batman-adv's 1 s originator interval and the same 3-miss rule.
func BenchmarkFailover(b *testing.B) {
	for range b.N {
		ours := failover(Config{}, 200*time.Millisecond, 0.1, 500, 1)
		base := failover(Config{DeadAfter: 3 * time.Second}, time.Second, 0.1, 500, 1)
		q := func(d []time.Duration, p float64) float64 { return d[int(p*float64(len(d)-1))].Seconds() * 1000 }
		b.ReportMetric(q(ours, 0.5), "ours-p50-ms")
		b.ReportMetric(q(ours, 0.95), "ours-p95-ms")
		b.ReportMetric(q(base, 0.5), "batman1s-p50-ms")
		b.ReportMetric(q(base, 0.95), "batman1s-p95-ms")
		b.ReportMetric(q(ours, 0.95)/q(base, 0.95), "p95-ours/batman1s")
	}
}
