package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestBucketSpread(t *testing.T) {
	var counts [Buckets]int
	const n = 100000
	for i := 0; i < n; i++ {
		counts[Bucket(fmt.Sprintf("dev-%06d", i), "board/stable/meshroot-1.0.0.img")]++
	}
	// Expected ~48.8 per bucket; the first 1% of buckets should hold ~1% of devices.
	first := 0
	for b := 0; b < Buckets/100; b++ {
		first += counts[b]
	}
	if first < n/100*7/10 || first > n/100*13/10 {
		t.Errorf("devices in the first 1%% of buckets = %d; want about %d", first, n/100)
	}
	if a, b := Bucket("dev-1", "r1"), Bucket("dev-1", "r1"); a != b {
		t.Errorf("Bucket(dev-1, r1) = %d then %d; want stable", a, b)
	}
	same := 0
	for i := 0; i < 1000; i++ {
		id := fmt.Sprintf("dev-%d", i)
		if Bucket(id, "r1") == Bucket(id, "r2") {
			same++
		}
	}
	if same > 10 {
		t.Errorf("%d of 1000 devices share their bucket across two releases; want the buckets independent", same)
	}
}

func TestDecide(t *testing.T) {
	t0 := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC) // a Monday
	waves := []Wave{{Start: t0, Upto: 20}, {Start: t0.Add(time.Hour), Upto: 205}, {Start: t0.Add(24 * time.Hour), Upto: Buckets}}
	for _, tc := range []struct {
		name     string
		plan     Plan
		bucket   int
		now      time.Time
		wantWave int
		wantErr  error
	}{
		{"first wave open", Plan{Waves: waves}, 5, t0, 0, nil},
		{"before first wave", Plan{Waves: waves}, 5, t0.Add(-time.Minute), 0, ErrNotYourWave},
		{"second wave not yet", Plan{Waves: waves}, 100, t0.Add(30 * time.Minute), 1, ErrNotYourWave},
		{"second wave open", Plan{Waves: waves}, 100, t0.Add(2 * time.Hour), 1, nil},
		{"last wave", Plan{Waves: waves}, 2047, t0.Add(25 * time.Hour), 2, nil},
		{"beyond waves", Plan{Waves: waves[:2]}, 2047, t0.Add(25 * time.Hour), -1, ErrNotYourWave},
		{"no waves", Plan{}, 2047, t0, 0, nil},
		{"halted", Plan{Waves: waves, Halted: true, HaltReason: "bad"}, 5, t0, -1, ErrHalted},
		{"in window", Plan{Windows: []Window{{Start: "09:30", Duration: Duration(time.Hour)}}}, 1, t0, 0, nil},
		{"out of window", Plan{Windows: []Window{{Start: "02:00", Duration: Duration(3 * time.Hour)}}}, 1, t0, 0, ErrOutOfWindow},
		{"window across midnight", Plan{Windows: []Window{{Start: "23:00", Duration: Duration(12 * time.Hour)}}}, 1, t0, 0, nil},
		{"wrong day", Plan{Windows: []Window{{Days: []string{"sat", "sun"}, Start: "00:00", Duration: Duration(24 * time.Hour)}}}, 1, t0, 0, ErrOutOfWindow},
		{"right day", Plan{Windows: []Window{{Days: []string{"Mon"}, Start: "00:00", Duration: Duration(24 * time.Hour)}}}, 1, t0, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.plan.Validate(); err != nil {
				t.Fatalf("Validate = %v", err)
			}
			d := tc.plan.Decide(tc.bucket, tc.now)
			if !errors.Is(d.Err, tc.wantErr) || (tc.wantErr == nil && d.Err != nil) {
				t.Errorf("Decide(%d, %s).Err = %v; want %v", tc.bucket, tc.now, d.Err, tc.wantErr)
			}
			if d.Wave != tc.wantWave {
				t.Errorf("Decide(%d, %s).Wave = %d; want %d", tc.bucket, tc.now, d.Wave, tc.wantWave)
			}
		})
	}
}

func TestNextWindow(t *testing.T) {
	now := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC) // Monday
	p := Plan{Windows: []Window{{Days: []string{"wed"}, Start: "02:00", Duration: Duration(time.Hour)}, {Start: "22:00", Duration: Duration(time.Hour)}}}
	ok, next := p.InWindow(now)
	if want := time.Date(2026, 3, 2, 22, 0, 0, 0, time.UTC); ok || !next.Equal(want) {
		t.Errorf("InWindow(%s) = %v, %s; want false, %s", now, ok, next, want)
	}
}

func TestValidate(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		plan Plan
		want string
	}{
		{Plan{Waves: []Wave{{Start: t0, Upto: 0}}}, "waves[0].upto"},
		{Plan{Waves: []Wave{{Start: t0, Upto: 5000}}}, "waves[0].upto"},
		{Plan{Waves: []Wave{{Upto: 5}}}, "waves[0].start"},
		{Plan{Waves: []Wave{{Start: t0, Upto: 50}, {Start: t0.Add(-time.Hour), Upto: 60}}}, "waves[1].start"},
		{Plan{Waves: []Wave{{Start: t0, Upto: 50}, {Start: t0.Add(time.Hour), Upto: 40}}}, "waves[1].upto"},
		{Plan{Windows: []Window{{Start: "25:00", Duration: Duration(time.Hour)}}}, "windows[0].start"},
		{Plan{Windows: []Window{{Start: "02:00"}}}, "windows[0].duration"},
		{Plan{Windows: []Window{{Start: "02:00", Duration: Duration(time.Hour), Days: []string{"funday"}}}}, "windows[0].days"},
	} {
		err := tc.plan.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v; want an error naming %s", tc.plan, err, tc.want)
		}
	}
}

func TestParseWaves(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	got, err := ParseWaves("now:1%, +1h:10%, +24h:100%", now)
	if err != nil {
		t.Fatalf("ParseWaves = %v", err)
	}
	want := []Wave{{Start: now, Upto: 21}, {Start: now.Add(time.Hour), Upto: 205}, {Start: now.Add(25 * time.Hour), Upto: 2048}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseWaves mismatch (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"now", "now:0%", "now:101%", "yesterday:5%", "now:50%,now:10%"} {
		if _, err := ParseWaves(bad, now); err == nil {
			t.Errorf("ParseWaves(%q) = nil error; want an error", bad)
		}
	}
}

type recordingHalter struct {
	mu     sync.Mutex
	halted map[string]string
}

func (r *recordingHalter) Halt(release, reason string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.halted[release] = reason
	return nil
}

func TestHandlerAutoHalt(t *testing.T) {
	halter := &recordingHalter{halted: map[string]string{}}
	h := NewHandler(MonitorConfig{Window: 10, MaxFailureRate: 0.2, MinReports: 5}, halter, nil)
	srv := httptest.NewServer(h)
	defer srv.Close()
	rep := &HTTPReporter{BaseURL: srv.URL}
	ctx := context.Background()
	send := func(rel string, i int, res Result) {
		t.Helper()
		if err := rep.Report(ctx, Report{Device: fmt.Sprintf("d%d", i), Release: rel, Result: res, Time: time.Now()}); err != nil {
			t.Fatalf("Report = %v", err)
		}
	}
	halted := func(rel string) (string, bool) {
		halter.mu.Lock()
		defer halter.mu.Unlock()
		r, ok := halter.halted[rel]
		return r, ok
	}
	// Release 1: 4 rollbacks are not enough reports (MinReports 5); the 5th report halts.
	for i := 0; i < 4; i++ {
		send("b/stable/early.img", i, RolledBack)
	}
	if _, ok := halted("b/stable/early.img"); ok {
		t.Fatalf("halted after 4 reports; want MinReports (5) first")
	}
	send("b/stable/early.img", 4, Committed)
	if reason, ok := halted("b/stable/early.img"); !ok || !strings.Contains(reason, "4 of the last 5") {
		t.Fatalf("after 4 of 5 rolled back: halted = %q, %v; want halted with 4 of the last 5", reason, ok)
	}
	// Release 2: 16 successes, then failures: 2 of the last 10 (20 %) is not above 20 %, 3 is.
	for i := 0; i < 16; i++ {
		send("b/stable/x.img", i, Committed)
	}
	send("b/stable/x.img", 16, RolledBack)
	send("b/stable/x.img", 16, RolledBack) // a duplicate from the same device counts once
	send("b/stable/x.img", 17, RolledBack)
	if _, ok := halted("b/stable/x.img"); ok {
		t.Fatalf("halted with 2 of 10 failing (20%%); want strictly above 20%%")
	}
	send("b/stable/x.img", 18, RolledBack)
	if reason, ok := halted("b/stable/x.img"); !ok || !strings.Contains(reason, "3 of the last 10") {
		t.Fatalf("halted = %q, %v; want b/stable/x.img halted with 3 of the last 10", reason, ok)
	}
	resp, err := http.Get(srv.URL + StatusPath + "?release=b/stable/x.img")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st ReleaseStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if !st.Halted || st.Counts[RolledBack] != 3 || st.Counts[Committed] != 16 {
		t.Errorf("status = %+v; want halted, 3 rolled back, 16 committed", st)
	}
}

func TestHandlerRejectsBadReports(t *testing.T) {
	h := NewHandler(DefaultMonitor, nil, nil)
	for _, body := range []string{
		`{}`,
		`{"device":"d","release":"r","result":"exploded"}`,
		`{"device":"d","release":"r","result":"committed","bucket":9999}`,
		`{"device":"d","release":"r","result":"committed","extra":1}`,
		`{"device":"d","release":"r","result":"committed"} {}`,
		`not json`,
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, ReportsPath, strings.NewReader(body)))
		if rec.Code != http.StatusBadRequest {
			t.Errorf("POST %s = %d; want 400", body, rec.Code)
		}
	}
}

func FuzzParseReport(f *testing.F) {
	f.Add(`{"device":"d","board":"b","release":"r","version":"1.0.0","result":"committed","bucket":3,"wave":0,"time":"2026-01-01T00:00:00Z"}`)
	f.Add(`{"device":"","result":"x"}`)
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseReport(strings.NewReader(s))
		if err != nil {
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("ParseReport accepted an invalid report: %v", err)
		}
	})
}

func FuzzPlanJSON(f *testing.F) {
	f.Add(`{"waves":[{"start":"2026-01-01T00:00:00Z","upto":20}],"windows":[{"days":["mon"],"start":"02:00","duration":"3h"}]}`)
	f.Add(`{"halted":true,"halt_reason":"x"}`)
	f.Add(`{"windows":[{"start":"2:0","duration":"-1h"}]}`)
	f.Fuzz(func(t *testing.T, s string) {
		var p Plan
		if json.Unmarshal([]byte(s), &p) != nil || p.Validate() != nil {
			return
		}
		// A valid plan decides without panicking for any bucket and time.
		for _, b := range []int{0, 1, Buckets - 1} {
			p.Decide(b, time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))
		}
	})
}
