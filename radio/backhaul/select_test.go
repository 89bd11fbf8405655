package backhaul

import (
	"math"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)

func wired(peer string, at time.Time) Link {
	return Link{Peer: peer, Iface: "eth1", Medium: Wired, Mbps: 940, PeerGateway: peer == "gw", PeerPathMbps: 1000,
		LastHello: at, UpSince: at.Add(-time.Minute), Carrier: true}
}

func mesh(peer string, mbps float64, at time.Time) Link {
	return Link{Peer: peer, Iface: "mesh0", Medium: Wireless, Mbps: mbps, PeerGateway: peer == "gw", PeerPathMbps: 1000,
		LastHello: at, UpSince: at.Add(-time.Minute), Carrier: true}
}

func TestPathMetric(t *testing.T) {
	s := NewSelector("sat", Config{})
	pen := 225.0 / 255
	for _, tt := range []struct {
		name string
		l    Link
		want float64
	}{
		{"wired to gateway", wired("gw", t0), 940 * pen},
		{"mesh to gateway", mesh("gw", 300, t0), 300 * pen},
		{"mesh to a wireless satellite", Link{Medium: Wireless, Mbps: 300, PeerPathMbps: 200, PeerMedium: Wireless}, 100 * pen},
		{"mesh to a wired satellite", Link{Medium: Wireless, Mbps: 300, PeerPathMbps: 500, PeerMedium: Wired}, 300 * pen},
	} {
		if got := s.PathMbps(tt.l); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("%s: PathMbps() = %v; want %v", tt.name, got, tt.want)
		}
	}
}

// TestWiredFailoverAndBack: wired first; when the cable goes (no hellos, carrier up: a switch
// in between) the mesh takes over after DeadAfter; back on wired once it has been up for
// WiredHold.
func TestWiredFailoverAndBack(t *testing.T) {
	s := NewSelector("sat", Config{})
	now := t0
	links := func(wiredHello, meshHello time.Time, up time.Time) []Link {
		w := wired("gw", wiredHello)
		w.UpSince = up
		return []Link{w, mesh("gw", 300, meshHello)}
	}
	c, r := s.Decide(now, links(now, now, now.Add(-time.Hour)))
	if c.Medium != Wired || r != ReasonFirst {
		t.Fatalf("first Decide = %v, %s; want wired", c, r)
	}
	cut := now.Add(time.Second)
	var switched time.Time
	for now = cut; now.Before(cut.Add(3 * time.Second)); now = now.Add(100 * time.Millisecond) {
		c, r = s.Decide(now, links(cut, now, time.Time{}))
		if r == ReasonLost && switched.IsZero() {
			switched = now
		}
	}
	if c.Medium != Wireless || switched.IsZero() || switched.Sub(cut) > 700*time.Millisecond {
		t.Fatalf("after the cut: %v (switched after %v); want the mesh within 700 ms", c, switched.Sub(cut))
	}
	// The cable is back: hellos resume; not before WiredHold.
	back := now
	var returned time.Time
	for ; now.Before(back.Add(5 * time.Second)); now = now.Add(100 * time.Millisecond) {
		c, r = s.Decide(now, links(now, now, back))
		if r == ReasonWired && returned.IsZero() {
			returned = now
		}
	}
	if c.Medium != Wired || returned.Sub(back) < 3*time.Second || returned.Sub(back) > 3200*time.Millisecond {
		t.Errorf("cable back: %v, returned after %v; want wired after 3 s", c, returned.Sub(back))
	}
}

func TestCarrierLossIsImmediate(t *testing.T) {
	s := NewSelector("sat", Config{})
	w := wired("gw", t0)
	s.Decide(t0, []Link{w, mesh("gw", 300, t0)})
	w.Carrier = false
	c, r := s.Decide(t0.Add(10*time.Millisecond), []Link{w, mesh("gw", 300, t0)})
	if c.Medium != Wireless || r != ReasonLost {
		t.Errorf("Decide(carrier down) = %v, %s; want the mesh at once", c, r)
	}
}

// TestHysteresis: 5% better does not move the node, 15% better does; at most 4 unforced
// changes an hour.
func TestHysteresis(t *testing.T) {
	s := NewSelector("sat", Config{})
	a := mesh("gw", 300, t0)
	b := mesh("sat2", 300, t0)
	b.Iface, b.PeerMedium, b.PeerPathMbps = "mesh0", Wired, 900
	b.Mbps = 315 // 5% better
	now := t0
	c, _ := s.Decide(now, []Link{a, b})
	first := c.Peer
	other := func(l Link, mbps float64) Link { l.Mbps = mbps; l.LastHello = now; return l }
	now = now.Add(time.Second)
	a.LastHello, b.LastHello = now, now
	if first == "gw" {
		c, _ = s.Decide(now, []Link{a, other(b, 315)})
	} else {
		c, _ = s.Decide(now, []Link{other(a, 315), b})
	}
	if c.Peer != first {
		t.Errorf("moved for 5%%: %v", c)
	}
	switches := 0
	for i := 0; i < 10; i++ {
		now = now.Add(time.Minute)
		// Alternate which one is 15% better.
		la, lb := other(a, 300), other(b, 300)
		if s.Current().Peer == "gw" {
			lb = other(b, 345)
		} else {
			la = other(a, 345)
		}
		if _, r := s.Decide(now, []Link{la, lb}); r == ReasonBetter {
			switches++
		}
	}
	if switches != 4 {
		t.Errorf("%d unforced changes in 10 minutes of flapping; want 4 (the hourly limit)", switches)
	}
}

func TestLoopsAndNoPath(t *testing.T) {
	s := NewSelector("sat1", Config{})
	// sat2's path goes through us: not a candidate.
	l := mesh("sat2", 300, t0)
	l.PeerParent, l.PeerPathMbps, l.PeerHops = "sat1", 500, 2
	if c, _ := s.Decide(t0, []Link{l}); !c.IsZero() {
		t.Errorf("Decide(only a loop) = %v; want none", c)
	}
	// A neighbour without a path itself is no help either.
	l.PeerParent, l.PeerPathMbps = "", 0
	if c, _ := s.Decide(t0, []Link{l}); !c.IsZero() {
		t.Errorf("Decide(neighbour without a path) = %v; want none", c)
	}
	// Through a wired satellite: two hops.
	l.PeerParent, l.PeerPathMbps, l.PeerHops, l.PeerMedium = "gw", 900, 1, Wired
	c, r := s.Decide(t0, []Link{l})
	if c.Peer != "sat2" || c.Hops != 2 || r != ReasonFirst {
		t.Errorf("Decide(via sat2) = %v, %s", c, r)
	}
	// Everything gone.
	if c, r := s.Decide(t0.Add(time.Hour), []Link{l}); !c.IsZero() || r != ReasonNoRoute {
		t.Errorf("Decide(stale) = %v, %s; want no route", c, r)
	}
}

func TestPin(t *testing.T) {
	s := NewSelector("sat", Config{})
	now := t0
	s.Decide(now, []Link{wired("gw", now), mesh("gw", 300, now)})
	s.Pin("gw", "mesh0")
	now = now.Add(time.Second)
	if c, r := s.Decide(now, []Link{wired("gw", now), mesh("gw", 300, now)}); c.Medium != Wireless || r != ReasonPinned {
		t.Errorf("pinned: %v, %s; want the mesh", c, r)
	}
	// The pinned link dies: back to the best.
	now = now.Add(5 * time.Second)
	if c, _ := s.Decide(now, []Link{wired("gw", now), mesh("gw", 300, t0)}); c.Medium != Wired {
		t.Errorf("pinned link dead: %v; want wired", c)
	}
}

func TestWirelessMbps(t *testing.T) {
	// A link that only carried broadcasts (6 Mbit/s) is judged by its signal.
	if got := WirelessMbps(-60, 80, 6_000_000); got < 300 {
		t.Errorf("WirelessMbps(-60 dBm, 80 MHz, 6 Mbit/s) = %v; want the signal's estimate (> 300)", got)
	}
	// A fast measured rate wins over a weak signal estimate.
	if got := WirelessMbps(-85, 80, 400_000_000); got != 260 {
		t.Errorf("WirelessMbps(-85 dBm, 400 Mbit/s) = %v; want 260", got)
	}
}
