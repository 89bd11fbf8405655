package rfsim

import (
	"math/rand/v2"
	"testing"
	"time"

	"meshroot/radio/chanplan"
)

// The benchmarks below are the numbers. Run them with
//
//	go test -run '^$' -bench . -benchtime 1x ./radio/rfsim/
//
// Costs are the planner's weighted interference (chanplan.Evaluate on the noiseless truth): the
// same yardstick for our plan, hostapd's ACS and the exact optimum.

var benchAt = time.Date(2026, 3, 2, 20, 0, 0, 0, time.UTC) // evening peak

// BenchmarkPlanVsACS: 4 floors × 6 units, one foreign dual-band AP per unit, three of our 3-node
// meshes (18 radios), 10 buildings. Our plan (from noisy measurements) against hostapd's ACS run
// radio by radio on noisy surveys. Goal: ≤ 0.7×.
func BenchmarkPlanVsACS(b *testing.B) {
	for i := 0; i < b.N; i++ {
		var sumACS, sumPlan float64
		worst := 0.0
		for seed := uint64(1); seed <= 10; seed++ {
			e, err := New(Config{Meshes: 3, Seed: seed})
			if err != nil {
				b.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(seed, 42))
			acs, err := e.ACSBaseline(benchAt, rng)
			if err != nil {
				b.Fatal(err)
			}
			plan, err := chanplan.Solve(e.Startup(benchAt, rng), chanplan.Constraints{}, chanplan.Options{})
			if err != nil {
				b.Fatal(err)
			}
			ca, _ := e.Score(benchAt, acs)
			cp, _ := e.Score(benchAt, plan.Assign)
			sumACS += ca.Total
			sumPlan += cp.Total
			worst = max(worst, cp.Total/ca.Total)
		}
		b.ReportMetric(sumPlan/sumACS, "plan/acs")
		b.ReportMetric(worst, "worst-plan/acs")
		b.ReportMetric(sumACS/10, "acs-cost")
		b.ReportMetric(sumPlan/10, "plan-cost")
	}
}

// BenchmarkPlanVsOptimum: 2 floors × 4 units, two 2-node meshes (4 radios per band: solved
// exactly), 10 buildings. Goal: ≤ 1.05× the optimum. "heuristic" is the greedy + local search
// alone on the truth (algorithm quality), "plan" the production planner on noisy measurements.
func BenchmarkPlanVsOptimum(b *testing.B) {
	for i := 0; i < b.N; i++ {
		var sumOpt, sumPlan, sumHeur, sumACS float64
		worstPlan, worstHeur := 0.0, 0.0
		for seed := uint64(1); seed <= 10; seed++ {
			e, err := New(Config{Floors: 2, Units: 4, Meshes: 2, NodesPerMesh: 2, Seed: seed})
			if err != nil {
				b.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(seed, 42))
			acs, err := e.ACSBaseline(benchAt, rng)
			if err != nil {
				b.Fatal(err)
			}
			plan, err := chanplan.Solve(e.Startup(benchAt, rng), chanplan.Constraints{}, chanplan.Options{})
			if err != nil {
				b.Fatal(err)
			}
			heur, err := chanplan.Solve(e.Truth(benchAt), chanplan.Constraints{}, chanplan.Options{ExactUnits: -1})
			if err != nil {
				b.Fatal(err)
			}
			opt, ok, err := chanplan.Optimum(e.Truth(benchAt), chanplan.Constraints{}, 20_000_000)
			if err != nil || !ok {
				b.Fatalf("seed %d: Optimum() = %v, %v", seed, ok, err)
			}
			co, _ := e.Score(benchAt, opt.Assign)
			cp, _ := e.Score(benchAt, plan.Assign)
			ch, _ := e.Score(benchAt, heur.Assign)
			ca, _ := e.Score(benchAt, acs)
			sumOpt += co.Total
			sumPlan += cp.Total
			sumHeur += ch.Total
			sumACS += ca.Total
			worstPlan = max(worstPlan, cp.Total/co.Total)
			worstHeur = max(worstHeur, ch.Total/co.Total)
		}
		b.ReportMetric(sumPlan/sumOpt, "plan/opt")
		b.ReportMetric(worstPlan, "worst-plan/opt")
		b.ReportMetric(sumHeur/sumOpt, "heur/opt")
		b.ReportMetric(worstHeur, "worst-heur/opt")
		b.ReportMetric(sumACS/sumOpt, "acs/opt")
	}
}

// BenchmarkPlan60Radios: 6 floors × 8 units, ten 3-node meshes with 2.4 and 5 GHz radios (60
// radios, one foreign AP in each of the other 38 units). Reports the planning time per run
// (goal < 1 s).
func BenchmarkPlan60Radios(b *testing.B) {
	e, err := New(Config{Floors: 6, Units: 8, Meshes: 10, Seed: 3})
	if err != nil {
		b.Fatal(err)
	}
	if len(e.Own) != 60 {
		b.Fatalf("%d radios; want 60", len(e.Own))
	}
	in := e.Startup(benchAt, rand.New(rand.NewPCG(3, 42)))
	b.ResetTimer()
	var total time.Duration
	for i := 0; i < b.N; i++ {
		t := time.Now()
		p, err := chanplan.Solve(in, chanplan.Constraints{}, chanplan.Options{})
		if err != nil {
			b.Fatal(err)
		}
		total += time.Since(t)
		if len(p.Assign) != 60 {
			b.Fatalf("plan has %d radios", len(p.Assign))
		}
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/plan")
}

// BenchmarkWeekChanges: a simulated week (measurements every 15 min, a planning round every
// hour, busy hour learned) in 4 floors × 6 units with three 3-node meshes; radar once a day on
// one 5 GHz radio. Channel changes per radio per week with the policy, and without hysteresis.
func BenchmarkWeekChanges(b *testing.B) {
	start := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	for i := 0; i < b.N; i++ {
		run := func(p chanplan.Policy) SimResult {
			e, err := New(Config{Meshes: 3, Seed: 21})
			if err != nil {
				b.Fatal(err)
			}
			var radar []RadarEvent
			for d := 0; d < 7; d++ {
				radar = append(radar, RadarEvent{At: start.Add(time.Duration(d*24+10) * time.Hour), Radio: e.Own[(2*d+1)%len(e.Own)].ID})
			}
			res, err := e.Simulate(SimConfig{Start: start, LearnBusyHour: true, Policy: p, Radar: radar, Seed: 7})
			if err != nil {
				b.Fatal(err)
			}
			if len(res.Violations) > 0 {
				b.Fatalf("violations: %v", res.Violations)
			}
			return res
		}
		per := func(res SimResult, m map[string]int) float64 {
			n := 0
			for _, c := range m {
				n += c
			}
			return float64(n) / 18
		}
		res := run(chanplan.Policy{})
		loose := run(chanplan.Policy{MinGain: 1e-9, MinAbsGain: 1e-12, MinRadioGainDB: 1e9, MinInterval: time.Nanosecond})
		b.ReportMetric(per(res, res.Unforced), "unforced/radio/week")
		b.ReportMetric(per(res, res.Forced), "forced/radio/week")
		b.ReportMetric(float64(res.Flaps), "flaps")
		b.ReportMetric(float64(res.RadarReturns), "radar-returns")
		b.ReportMetric(res.MeanCost, "mean-cost")
		b.ReportMetric(per(loose, loose.Unforced), "nohyst-unforced/radio/week")
		b.ReportMetric(float64(loose.Flaps), "nohyst-flaps")
		b.ReportMetric(loose.MeanCost, "nohyst-mean-cost")
	}
}
