package steersim

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"meshroot/radio/steer"
)

// traces returns the standard traces cut to d (the full hour is for the benchmark).
func traces(t testing.TB, seed uint64, d time.Duration) []Trace {
	t.Helper()
	trs, err := Traces(seed)
	if err != nil {
		t.Fatalf("Traces(%d) = %v", seed, err)
	}
	for i := range trs {
		trs[i].Duration = d
	}
	return trs
}

func TestDeterministic(t *testing.T) {
	a := Run(traces(t, 7, 10*time.Minute)[1], steer.NewPolicy(steer.Config{Kick: true}), Options{})
	b := Run(traces(t, 7, 10*time.Minute)[1], steer.NewPolicy(steer.Config{Kick: true}), Options{})
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("two runs of the same trace differ:\n%s", diff)
	}
	if a.Roams == 0 || a.ClientHours < 3 {
		t.Errorf("run = %v; want clients that roam", a)
	}
}

// TestPolicyOnTraces: on every trace, Meshroot's policy keeps 802.11v clients on their best
// BSS (within 10 s) at least 90% of the time, clearly more than usteer (tuned, and as
// shipped) and than clients alone, without causing more than a few ping-pongs.
func TestPolicyOnTraces(t *testing.T) {
	var oursPP, oursRoams, tunedPP, tunedRoams int
	for _, tr := range traces(t, 1, 30*time.Minute) {
		ours := Run(tr, steer.NewPolicy(steer.Config{}), Options{})
		tuned := Run(tr, steer.NewUsteer("usteer-tuned", steer.UsteerTuned()), Options{})
		shipped := Run(tr, steer.NewUsteer("usteer", steer.UsteerDefaults()), Options{})
		alone := Run(tr, nil, Options{})
		t.Logf("%v", ours)
		t.Logf("%v", tuned)
		t.Logf("%v", shipped)
		t.Logf("%v", alone)
		if got := ours.OnBestByKind[Smart]; got < 0.9 {
			t.Errorf("%s: smart clients on best within 10 s %.1f%%; want at least 90%%", tr.Name, 100*got)
		}
		for _, base := range []Result{tuned, shipped, alone} {
			if ours.OnBestByKind[Smart] < base.OnBestByKind[Smart]+0.08 {
				t.Errorf("%s: ours %.1f%% vs %s %.1f%%; want at least 8 points better", tr.Name, 100*ours.OnBestByKind[Smart], base.Policy, 100*base.OnBestByKind[Smart])
			}
		}
		if ours.RoamsPerClientHour() > 0 && float64(ours.SteeredPingPongs)/ours.ClientHours > 2 {
			t.Errorf("%s: %d steered ping-pongs in %.1f client-hours; want at most 2 per client-hour", tr.Name, ours.SteeredPingPongs, ours.ClientHours)
		}
		oursPP, oursRoams = oursPP+ours.PingPongs, oursRoams+ours.Roams
		tunedPP, tunedRoams = tunedPP+tuned.PingPongs, tunedRoams+tuned.Roams
	}
	// Over all traces (a trace alone has a handful of ping-pongs): about usteer's rate, though
	// we move clients more often.
	ours, tuned := float64(oursPP)/float64(oursRoams), float64(tunedPP)/float64(tunedRoams)
	if ours > tuned+0.015 {
		t.Errorf("ping-pong rate %.1f%% (%d of %d roams) vs usteer tuned %.1f%% (%d of %d); want at most 1.5 points more", 100*ours, oursPP, oursRoams, 100*tuned, tunedPP, tunedRoams)
	}
}

// TestRoamLog: the recorded roams match the counts, and Meshroot's policy never steers a
// client back to a BSS it left by itself less than a minute before (its own roaming logic
// chose; a client about to lose its link, below -80 dBm, excepted).
func TestRoamLog(t *testing.T) {
	causes := map[string]bool{"steered": true, "trigger": true, "background": true, "lost": true, "disassoc": true, "kicked": true}
	for _, tr := range traces(t, 1, 30*time.Minute) {
		r := Run(tr, steer.NewPolicy(steer.Config{Kick: true}), Options{Record: true})
		if len(r.RoamLog) != r.Roams {
			t.Errorf("%s: %d roams recorded; want %d", tr.Name, len(r.RoamLog), r.Roams)
		}
		own := map[[2]string]time.Duration{} // client, BSS → when it left by itself
		pp := 0
		for _, x := range r.RoamLog {
			if !causes[x.Cause] {
				t.Errorf("%s: roam %+v: cause %q unknown", tr.Name, x, x.Cause)
			}
			if x.Back > 0 {
				pp++
			}
			if left, ok := own[[2]string{x.Client, x.To}]; ok && x.Cause == "steered" && x.At-left < time.Minute && x.FromMean >= -80 {
				t.Errorf("%s: %s steered back to %s %v after it left by itself: %+v", tr.Name, x.Client, x.To, x.At-left, x)
			}
			if x.Cause != "steered" && x.Cause != "kicked" {
				own[[2]string{x.Client, x.From}] = x.At
			}
		}
		if pp != r.PingPongs {
			t.Errorf("%s: %d recorded returns; want the %d ping-pongs", tr.Name, pp, r.PingPongs)
		}
	}
	if r := Run(traces(t, 1, 10*time.Minute)[0], steer.NewPolicy(steer.Config{}), Options{}); r.RoamLog != nil {
		t.Errorf("roams recorded without Options.Record: %d", len(r.RoamLog))
	}
}

// TestFallback: with kicks configured, clients that reject or ignore 802.11v are moved anyway
// (the mixed trace), each kick within 30 s of the first request the client did not follow;
// without kicks they are left alone.
func TestFallback(t *testing.T) {
	tr := traces(t, 1, 30*time.Minute)[1]
	kick := Run(tr, steer.NewPolicy(steer.Config{Kick: true}), Options{})
	nokick := Run(tr, steer.NewPolicy(steer.Config{}), Options{})
	t.Logf("%v %v", kick, kick.OnBestByKind)
	t.Logf("%v %v", nokick, nokick.OnBestByKind)
	if nokick.Kicks != 0 || kick.Kicks == 0 {
		t.Errorf("kicks: %d with Kick, %d without; want some and none", kick.Kicks, nokick.Kicks)
	}
	for _, k := range []Kind{Rejecter, Ignorer} {
		if kick.OnBestByKind[k] < nokick.OnBestByKind[k]+0.1 {
			t.Errorf("%s: on best %.1f%% with kicks vs %.1f%% without; want at least 10 points better", k, 100*kick.OnBestByKind[k], 100*nokick.OnBestByKind[k])
		}
	}
	fb := kick.Fallback
	if len(fb) == 0 {
		t.Fatalf("no kick after unanswered requests")
	}
	if worst := fb[len(fb)-1]; worst > 30*time.Second {
		t.Errorf("slowest fallback: kick %v after the first request; want within 30 s (of %d: %v)", worst, len(fb), fb)
	}
}

// BenchmarkSteering plays every standard trace (an hour each) with Meshroot's policy, with and
// without the kick fallback, and the baselines (usteer as shipped, usteer tuned, clients alone),
// reporting per trace and policy the share of 802.11v clients on their best BSS within 10 s
// (all of them, and the smart ones that follow requests), the ping-pong rate and the roaming
// rate; and the ratio of ours to tuned usteer.
func BenchmarkSteering(b *testing.B) {
	for range b.N {
		trs, err := Traces(1)
		if err != nil {
			b.Fatal(err)
		}
		for _, tr := range trs {
			results := map[string]Result{}
			for _, d := range []steer.Decider{
				steer.NewPolicy(steer.Config{}),
				steer.NewPolicy(steer.Config{Kick: true}),
				steer.NewUsteer("usteer", steer.UsteerDefaults()),
				steer.NewUsteer("usteer-tuned", steer.UsteerTuned()),
				nil,
			} {
				r := Run(tr, d, Options{})
				name := r.Policy
				if dd, ok := d.(*steer.Policy); ok && dd.Config().Kick {
					name += "-kick"
				}
				results[name] = r
				b.Logf("%v", r)
			}
			names := make([]string, 0, len(results))
			for n := range results {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, n := range names {
				r := results[n]
				b.ReportMetric(100*r.OnBest, fmt.Sprintf("%s/%s-onbest%%", tr.Name, n))
				b.ReportMetric(100*r.OnBestByKind[Smart], fmt.Sprintf("%s/%s-smart-onbest%%", tr.Name, n))
				b.ReportMetric(100*r.PingPongRate(), fmt.Sprintf("%s/%s-pingpong%%", tr.Name, n))
				b.ReportMetric(r.RoamsPerClientHour(), fmt.Sprintf("%s/%s-roams/client-h", tr.Name, n))
			}
			b.ReportMetric(results["meshroot"].OnBest/results["usteer-tuned"].OnBest, tr.Name+"/onbest-ours/usteer-tuned")
		}
	}
}
