package vpn

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"meshroot/internal/lab"
)

// shortHold makes tunnel 1's BGP sessions use a 9 s hold time (keepalive 3 s) on both sides, so
// that an outage longer than the hold time stays shorter than the tunnel's DPD timeout (30 s):
// both sides' sessions expire while the tunnel keeps its SAs.
func shortHold() (lab.ConcentratorConfig, func(fileDoc)) {
	cc := lab.ConcentratorConfig{}
	cc.Tunnels[0].ModifyFRR = func(f *lab.FRRConfig) {
		for j := range f.Neighbors[:2] {
			f.Neighbors[j].Keepalive, f.Neighbors[j].Hold = 3, 9
		}
	}
	return cc, func(d fileDoc) { d["bgp"].(map[string]any)["hold_time_s"] = 9 }
}

// reconvergence reads, from the agent's events after the first skip lines, when tunnel tu came
// into service and when each of its sessions (IPv4 and IPv6 inside addresses) became
// Established; ok is false until all of it happened. A session may beat the tunnel's own
// recovery (a SYN sent into the dead tunnel just as the path returns: its answer is the first
// inbound ESP): that counts as 0.
func reconvergence(out string, skip int, tu lab.Tunnel) (inService time.Time, est []time.Duration, ok bool) {
	evs := agentEvents(out)
	if skip > len(evs) {
		return time.Time{}, nil, false
	}
	who := "tunnel " + tu.Outside
	for _, e := range evs[skip:] {
		if e.who == who && e.source == "routes" && strings.HasPrefix(e.text, "in service") {
			inService = e.at
			break
		}
	}
	if inService.IsZero() {
		return inService, nil, false
	}
	for _, peer := range []string{tu.AWSInside4, tu.AWSInside6} {
		var at time.Time
		for _, e := range evs[skip:] {
			if e.who == who && e.source == "bgp" && strings.Contains(e.text, "session with "+peer+": OpenConfirm -> Established") {
				at = e.at
				break
			}
		}
		if at.IsZero() {
			return inService, nil, false
		}
		est = append(est, max(0, at.Sub(inService)))
	}
	return inService, est, true
}

// waitReconverged waits until tunnel 1 is in service again with both sessions Established (by
// the agent's events after skip) and returns how long after the tunnel's return each session
// took.
func (r *concRig) waitReconverged(skip int, d time.Duration) []time.Duration {
	r.t.Helper()
	tu := r.c.Tunnels()[0]
	deadline := time.Now().Add(d)
	for {
		in, est, ok := reconvergence(r.proc.Log(), skip, tu)
		if ok {
			return est
		}
		if r.proc.Exited() {
			r.t.Fatalf("waiting for tunnel 1's sessions: the agent exited: %v", r.proc.Err())
		}
		if time.Now().After(deadline) {
			st, _ := r.status()
			r.t.Fatalf("after %v: tunnel 1 in service again at %v, its sessions Established after that: %v; want both (status:\n%s)",
				d, in.Format("15:04:05.000"), est, st.Format())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func msList(ds []time.Duration) string {
	var s []string
	for _, d := range ds {
		s = append(s, fmt.Sprint(d.Round(time.Millisecond)))
	}
	return strings.Join(s, ", ")
}

// TestLabBGPAfterLongOutage: the path to endpoint 1 is cut for longer than the BGP hold time,
// so both sides end the sessions (hold timer expired), while the tunnel keeps its SAs; when the
// path returns, the tunnel comes back into service and its sessions are re-established at once
// (PeerUp restarts them instead of leaving gobgp's idle hold and connect-retry timers, whose
// attempts went into the dead tunnel, to run out; gobgp's first attempt comes 1-2 s after the
// restart: BenchmarkLabReconvergence measures it, vpn/bgp's TestPeerUpRestartsWaitingSession
// shows the restart). Then our side restarts (a router
// reboot: the agent is killed and started again) while the concentrator still holds both
// sessions: the new OPENs collide with them, and the sessions must come back without waiting
// for the concentrator's hold timer. Logged: how long after the tunnel's return each session
// was Established.
func TestLabBGPAfterLongOutage(t *testing.T) {
	cc, edit := shortHold()
	r := newConcRig(t, cc, edit)
	r.waitStatus(60*time.Second, "converged", bgpConverged)
	tu := r.c.Tunnels()[0]
	ep := r.c.Endpoints[0].FRR

	t.Run("cut longer than the hold time", func(t *testing.T) {
		before, err := ep.Neighbor(tu.SiteInside4)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.c.CutPath(1); err != nil {
			t.Fatal(err)
		}
		r.waitStatus(10*time.Second, "tunnel 1 out of service", func(st Status) bool { return !usable(st, tu.Outside) })
		r.waitStatus(30*time.Second, "tunnel 1's sessions ended by the hold timer", func(st Status) bool {
			s, _ := st.Tunnel(tu.Outside)
			return len(s.BGP) == 2 && s.BGP[0].State != "Established" && s.BGP[1].State != "Established"
		})
		time.Sleep(3 * time.Second)
		skip := len(agentEvents(r.proc.Log()))
		if err := r.c.RestorePath(1); err != nil {
			t.Fatal(err)
		}
		est := r.waitReconverged(skip, 90*time.Second)
		t.Logf("tunnel 1 in service → BGP Established after a cut longer than the hold time: %s", msList(est))
		st := r.waitStatus(30*time.Second, "the VPC route back on tunnel 1", func(st Status) bool {
			return slices.Equal(routeOf(st, "10.0.0.0/16").Tunnels, []string{tu.Outside})
		})
		if s, _ := st.Tunnel(tu.Outside); s.Recoveries < 1 {
			t.Errorf("tunnel 1: %d recoveries; want the same SAs back in service", s.Recoveries)
		}
		after, err := ep.Neighbor(tu.SiteInside4)
		if err != nil {
			t.Fatal(err)
		}
		if after.State != "Established" || after.ConnectionsEstab != before.ConnectionsEstab+1 {
			t.Errorf("endpoint 1's session: %s after %d connections (was %d); want a new one Established", after.State, after.ConnectionsEstab, before.ConnectionsEstab)
		}
	})

	t.Run("restart while the concentrator holds the sessions", func(t *testing.T) {
		r.waitStatus(60*time.Second, "converged", bgpConverged)
		before, err := ep.Neighbor(tu.SiteInside4)
		if err != nil {
			t.Fatal(err)
		}
		// A crash: no DELETE, no Cease; the concentrator keeps its SAs and sessions.
		if err := r.proc.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if err := r.proc.Wait(r.ctx(10 * time.Second)); err == nil {
			t.Fatal("the agent exited cleanly after SIGKILL")
		}
		if n, err := ep.Neighbor(tu.SiteInside4); err != nil || n.State != "Established" {
			t.Fatalf("endpoint 1's session after our crash: %+v, %v; want still Established (its hold timer runs)", n, err)
		}
		r.restartAgent()
		est := r.waitReconverged(0, 90*time.Second)
		t.Logf("tunnel 1 in service → BGP Established after a restart, the old sessions held by the concentrator: %s", msList(est))
		after, err := ep.Neighbor(tu.SiteInside4)
		if err != nil {
			t.Fatal(err)
		}
		if after.State != "Established" || after.ConnectionsEstab <= before.ConnectionsEstab {
			t.Errorf("endpoint 1's session: %s after %d connections (was %d); want a new one Established", after.State, after.ConnectionsEstab, before.ConnectionsEstab)
		}
		r.waitStatus(60*time.Second, "converged after the restart", bgpConverged)
	})
}

// restartAgent starts the agent again on the same configuration (after it exited).
func (r *concRig) restartAgent() {
	r.t.Helper()
	exe, err := os.Executable()
	if err != nil {
		r.t.Fatal(err)
	}
	r.proc, err = r.l.StartProcess(lab.ProcessSpec{Name: "vpn-agent", NS: r.c.Site, Path: exe, Args: []string{"-test.run=^$"},
		Env: []string{agentEnv + "=" + r.dir}, StopTimeout: 10 * time.Second})
	if err != nil {
		r.t.Fatal(err)
	}
}

// BenchmarkLabReconvergence: tunnel 1's path is cut until both sides' BGP sessions have ended
// (hold time 9 s here; the tunnel keeps its SAs), left cut for a further 0-8 s (a different
// point in the retry schedule each round), and restored; measured from the tunnel's return to
// service until its last session (IPv4 and IPv6) is Established, from the agent's event times.
// Reported: median and worst over the rounds.
//
//	go test -run '^$' -bench LabReconvergence -benchtime 1x ./vpn/
func BenchmarkLabReconvergence(b *testing.B) {
	const rounds = 6
	var all []time.Duration
	for range b.N {
		cc, edit := shortHold()
		r := newConcRig(b, cc, edit)
		r.waitStatus(60*time.Second, "converged", bgpConverged)
		tu := r.c.Tunnels()[0]
		for i := range rounds {
			r.waitStatus(60*time.Second, "converged", bgpConverged)
			if err := r.c.CutPath(1); err != nil {
				b.Fatal(err)
			}
			r.waitStatus(30*time.Second, "tunnel 1's sessions ended by the hold timer", func(st Status) bool {
				s, _ := st.Tunnel(tu.Outside)
				return !s.Usable && len(s.BGP) == 2 && s.BGP[0].State != "Established" && s.BGP[1].State != "Established"
			})
			extra := time.Duration(i) * 8 * time.Second / (rounds - 1)
			time.Sleep(extra)
			skip := len(agentEvents(r.proc.Log()))
			if err := r.c.RestorePath(1); err != nil {
				b.Fatal(err)
			}
			est := r.waitReconverged(skip, 90*time.Second)
			worst := slices.Max(est)
			all = append(all, worst)
			b.Logf("round %d (restored %v after the sessions ended): tunnel in service → Established %s", i+1, extra, msList(est))
		}
		r.l.Close()
	}
	slices.Sort(all)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(all[len(all)/2]), "tunnel_to_bgp_established_median_ms")
	b.ReportMetric(ms(all[len(all)-1]), "tunnel_to_bgp_established_worst_ms")
	b.ReportMetric(float64(len(all)), "rounds")
	b.ReportMetric(0, "ns/op")
	if load, err := lab.LoadAvg(); err == nil {
		b.ReportMetric(load, "loadavg1_after")
	}
}
