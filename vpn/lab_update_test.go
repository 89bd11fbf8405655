package vpn

import (
	"strings"
	"testing"
	"time"

	"meshroot/internal/lab"
)

// TestLabUpdate applies configuration changes to a running connection (SIGHUP to the agent, as
// to `meshctl vpn up`; the agent calls Connection.Update): a new site prefix reaches the
// concentrator over the running BGP sessions (no tunnel or session restarted); a changed
// option of tunnel 2 restarts tunnel 2 alone; a bad file changes nothing.
func TestLabUpdate(t *testing.T) {
	t.Parallel()
	r := newConcRig(t, lab.ConcentratorConfig{}, nil)
	before := r.waitStatus(60*time.Second, "converged", bgpConverged)
	tu := r.c.Tunnels()
	spi := func(st Status, i int) string { s, _ := st.Tunnel(tu[i].Outside); return s.SPIIn }

	r.reload(func(d fileDoc) {
		d["site_prefixes"] = append(d["site_prefixes"].([]any), "192.168.2.0/24")
	})
	for i, ep := range r.c.Endpoints {
		if _, err := ep.FRR.WaitRoute(r.ctx(30*time.Second), "192.168.2.0/24"); err != nil {
			t.Fatalf("endpoint %d never learned the new site prefix: %v", i+1, err)
		}
	}
	st, err := r.status()
	if err != nil {
		t.Fatal(err)
	}
	for i := range tu {
		if spi(st, i) != spi(before, i) {
			t.Errorf("tunnel %d's SA changed on a prefix update (%s -> %s); want it kept", i+1, spi(before, i), spi(st, i))
		}
		n, err := r.c.Endpoints[i].FRR.Neighbor(tu[i].SiteInside4)
		if err != nil {
			t.Fatal(err)
		}
		if n.State != "Established" || n.ConnectionsEstab != 1 {
			t.Errorf("endpoint %d's session after the prefix update: %s, %d connections; want the first one still Established", i+1, n.State, n.ConnectionsEstab)
		}
	}

	// A changed DPD interval on tunnel 2: tunnel 2 restarts, tunnel 1 keeps its SA.
	r.reload(func(d fileDoc) {
		d.tunnel(1)["options"] = map[string]any{"dpd_interval_s": 5}
	})
	st = r.waitStatus(60*time.Second, "tunnel 2 restarted and everything converged again", func(st Status) bool {
		// A new SA, not none: the status read while tunnel 2 is down may still show its
		// sessions Established for a moment.
		return bgpConverged(st) && spi(st, 1) != "" && spi(st, 1) != spi(before, 1)
	})
	if spi(st, 0) != spi(before, 0) {
		t.Errorf("tunnel 1's SA changed when only tunnel 2's options did (%s -> %s)", spi(before, 0), spi(st, 0))
	}

	// A bad file: reported, nothing changes.
	r.reload(func(d fileDoc) { d.tunnel(1)["inside_cidr"] = "10.9.9.0/30" })
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(r.proc.Log(), "configuration not applied") {
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not report the bad configuration:\n%s", tail(r.proc.Log(), 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
	after := r.waitStatus(5*time.Second, "still converged", bgpConverged)
	if spi(after, 0) != spi(st, 0) || spi(after, 1) != spi(st, 1) {
		t.Errorf("SAs changed after a bad configuration: %s/%s -> %s/%s", spi(st, 0), spi(st, 1), spi(after, 0), spi(after, 1))
	}
	if !strings.Contains(r.proc.Log(), "tunnels[1].inside_cidr") {
		t.Errorf("the report does not name the bad field")
	}
}
