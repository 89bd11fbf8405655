package firmware

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// hang guards waits on events; tests never assert on durations.
const hang = 20 * time.Second

// watcher collects the supervisor's state changes. Each service's changes are a stream that
// wait consumes in order, independently of the other services'.
type watcher struct {
	mu      sync.Mutex
	log     []ServiceStatus
	cursor  map[string]int // per service: where its next wait starts reading log
	changed chan struct{}  // closed and replaced on each change
}

func newWatcher() *watcher {
	return &watcher{cursor: map[string]int{}, changed: make(chan struct{})}
}

func (w *watcher) onChange(st ServiceStatus) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.log = append(w.log, st)
	close(w.changed)
	w.changed = make(chan struct{})
}

// wait consumes name's changes until it reaches state, and returns that status.
func (w *watcher) wait(t *testing.T, name string, state State) ServiceStatus {
	t.Helper()
	timeout := time.After(hang)
	for {
		w.mu.Lock()
		for i := w.cursor[name]; i < len(w.log); i++ {
			if w.log[i].Name != name {
				continue
			}
			w.cursor[name] = i + 1
			if w.log[i].State == state {
				st := w.log[i]
				w.mu.Unlock()
				return st
			}
		}
		w.cursor[name] = len(w.log)
		ch := w.changed
		w.mu.Unlock()
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("service %s never reached %s; changes: %v", name, state, w.changes())
			return ServiceStatus{}
		}
	}
}

func (w *watcher) changes() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, st := range w.log {
		out = append(out, st.Name+":"+string(st.State))
	}
	return out
}

// blocker is a service that comes up and runs until cancelled, recording when it returned.
func blocker(name string, deps []string, stopped *[]string, mu *sync.Mutex) Service {
	return Func(name, deps, func(ctx context.Context, up func()) error {
		up()
		<-ctx.Done()
		mu.Lock()
		*stopped = append(*stopped, name)
		mu.Unlock()
		return ctx.Err()
	})
}

type harness struct {
	sup   *Supervisor
	clock *FakeClock
	w     *watcher
	done  chan struct{} // closed when Run returned; err holds its result
	err   error
	stop  context.CancelFunc
}

func startSupervisor(t *testing.T, opts SupervisorOptions, services ...Service) *harness {
	t.Helper()
	h := &harness{clock: NewFakeClock(time.Unix(1e9, 0)), w: newWatcher(), done: make(chan struct{})}
	opts.Clock = h.clock
	opts.OnChange = h.w.onChange
	if opts.Backoff == (Backoff{}) {
		opts.Backoff = Backoff{Initial: time.Second, Max: 8 * time.Second, Multiplier: 2, StableAfter: time.Minute}
	}
	sup, err := NewSupervisor(opts, services...)
	if err != nil {
		t.Fatalf("NewSupervisor() = %v", err)
	}
	h.sup = sup
	ctx, cancel := context.WithCancel(context.Background())
	h.stop = cancel
	go func() {
		h.err = sup.Run(ctx)
		close(h.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(hang):
			// A stuck service: advance past the shutdown deadline.
			h.clock.Advance(time.Hour)
			<-h.done
		}
	})
	return h
}

// shutdown cancels Run and returns its result.
func (h *harness) shutdown(t *testing.T) error {
	t.Helper()
	h.stop()
	select {
	case <-h.done:
		return h.err
	case <-time.After(hang):
		t.Fatalf("supervisor did not stop")
		return nil
	}
}

func (h *harness) status(name string) ServiceStatus {
	for _, st := range h.sup.Status() {
		if st.Name == name {
			return st
		}
	}
	return ServiceStatus{}
}

func TestSupervisorDependencyOrder(t *testing.T) {
	var mu sync.Mutex
	var stopped []string
	release := make(chan struct{})
	// Registered in reverse: the supervisor must order them. "a" holds its up until released,
	// so nothing depending on it may start before.
	a := Func("a", nil, func(ctx context.Context, up func()) error {
		select {
		case <-release:
		case <-ctx.Done():
			return nil
		}
		up()
		<-ctx.Done()
		return nil
	})
	h := startSupervisor(t, SupervisorOptions{},
		blocker("d", []string{"b", "c"}, &stopped, &mu),
		blocker("c", []string{"a"}, &stopped, &mu),
		blocker("b", []string{"a"}, &stopped, &mu),
		a,
		blocker("solo", nil, &stopped, &mu),
	)
	if got, want := h.sup.Names(), []string{"a", "b", "c", "d", "solo"}; !cmp.Equal(got, want) {
		t.Errorf("Names() = %v; want %v", got, want)
	}
	h.w.wait(t, "solo", StateUp)
	h.w.wait(t, "a", StateStarting)
	for _, n := range []string{"b", "c", "d"} {
		if st := h.status(n); st.State != StateWaiting {
			t.Errorf("before a is up: %s is %s; want waiting", n, st.State)
		}
	}
	close(release)
	h.w.wait(t, "d", StateUp)
	ups := h.w.changes()
	idx := func(c string) int {
		for i, x := range ups {
			if x == c {
				return i
			}
		}
		return -1
	}
	for _, dep := range [][2]string{{"a", "b"}, {"a", "c"}, {"b", "d"}, {"c", "d"}} {
		if idx(dep[0]+":up") > idx(dep[1]+":starting") {
			t.Errorf("%s started before its dependency %s was up; changes %v", dep[1], dep[0], ups)
		}
	}
	<-h.sup.Ready()
	if got, want := h.sup.Up(), []string{"a", "b", "c", "d", "solo"}; !cmp.Equal(got, want) {
		t.Errorf("Up() = %v; want %v", got, want)
	}
}

func TestSupervisorShutdownReverseOrder(t *testing.T) {
	var mu sync.Mutex
	var stopped []string
	h := startSupervisor(t, SupervisorOptions{},
		blocker("data", nil, &stopped, &mu),
		blocker("lan", []string{"data"}, &stopped, &mu),
		blocker("vpn", []string{"lan", "data"}, &stopped, &mu),
		blocker("radio", []string{"lan"}, &stopped, &mu),
	)
	<-h.sup.Ready()
	if err := h.shutdown(t); err != nil {
		t.Fatalf("shutdown = %v; want nil", err)
	}
	// vpn and radio (no dependents) may stop in either order, but before lan, and lan before data.
	pos := map[string]int{}
	for i, n := range stopped {
		pos[n] = i
	}
	for _, p := range [][2]string{{"vpn", "lan"}, {"radio", "lan"}, {"lan", "data"}, {"vpn", "data"}} {
		if pos[p[0]] > pos[p[1]] {
			t.Errorf("stop order %v: %s stopped after its dependency %s", stopped, p[0], p[1])
		}
	}
	if len(stopped) != 4 {
		t.Errorf("stopped %v; want all 4", stopped)
	}
	for _, st := range h.sup.Status() {
		if st.State != StateStopped {
			t.Errorf("after shutdown %s is %s; want stopped", st.Name, st.State)
		}
	}
}

func TestSupervisorBackoff(t *testing.T) {
	fail := make(chan error)
	runs := make(chan struct{}, 100)
	flaky := Func("flaky", nil, func(ctx context.Context, up func()) error {
		runs <- struct{}{}
		select {
		case err := <-fail:
			return err
		case <-ctx.Done():
			return nil
		}
	})
	h := startSupervisor(t, SupervisorOptions{
		Backoff: Backoff{Initial: time.Second, Max: 4 * time.Second, Multiplier: 2, StableAfter: time.Minute},
	}, flaky)
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()

	// Each failure waits twice as long as the previous one, capped at Max.
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		<-runs
		fail <- fmt.Errorf("failure %d", i)
		st := h.w.wait(t, "flaky", StateBackoff)
		if st.LastError != fmt.Sprintf("failure %d", i) {
			t.Errorf("LastError = %q; want failure %d", st.LastError, i)
		}
		if !h.clock.WaitTimers(ctx, 1) {
			t.Fatal("no backoff timer armed")
		}
		if got := h.clock.Pending(); !cmp.Equal(got, []time.Duration{want}) {
			t.Fatalf("backoff after failure %d = %v; want [%v]", i, got, want)
		}
		// Not restarted before the delay has passed.
		h.clock.Advance(want - time.Millisecond)
		if st := h.status("flaky"); st.State != StateBackoff {
			t.Fatalf("before the delay: state %s; want backoff", st.State)
		}
		h.clock.Advance(time.Millisecond)
		st = h.w.wait(t, "flaky", StateStarting)
		if st.Restarts != i+1 {
			t.Errorf("Restarts = %d; want %d", st.Restarts, i+1)
		}
	}
	// Time passing does not reset the backoff of a service that never came up.
	<-runs
	h.clock.Advance(time.Minute)
	fail <- errors.New("late failure")
	h.w.wait(t, "flaky", StateBackoff)
	if !h.clock.WaitTimers(ctx, 1) {
		t.Fatal("no backoff timer armed")
	}
	if got := h.clock.Pending(); !cmp.Equal(got, []time.Duration{4 * time.Second}) {
		t.Fatalf("backoff of a service that never came up = %v; want the capped 4s", got)
	}
}

func TestSupervisorBackoffResetsAfterStableRun(t *testing.T) {
	fail := make(chan error)
	svc := Func("s", nil, func(ctx context.Context, up func()) error {
		up()
		select {
		case err := <-fail:
			return err
		case <-ctx.Done():
			return nil
		}
	})
	h := startSupervisor(t, SupervisorOptions{
		Backoff: Backoff{Initial: time.Second, Max: time.Hour, Multiplier: 2, StableAfter: time.Minute},
	}, svc)
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	// Two quick failures: 1s then 2s.
	for _, want := range []time.Duration{time.Second, 2 * time.Second} {
		h.w.wait(t, "s", StateUp)
		fail <- errors.New("quick")
		h.w.wait(t, "s", StateBackoff)
		h.clock.WaitTimers(ctx, 1)
		if got := h.clock.Pending(); !cmp.Equal(got, []time.Duration{want}) {
			t.Fatalf("backoff = %v; want [%v]", got, want)
		}
		h.clock.Advance(want)
	}
	// Up for a minute, then a failure: back to 1s.
	h.w.wait(t, "s", StateUp)
	h.clock.Advance(time.Minute)
	fail <- errors.New("after a stable run")
	h.w.wait(t, "s", StateBackoff)
	h.clock.WaitTimers(ctx, 1)
	if got := h.clock.Pending(); !cmp.Equal(got, []time.Duration{time.Second}) {
		t.Fatalf("backoff after a stable run = %v; want [1s]", got)
	}
}

func TestSupervisorPanicIsolation(t *testing.T) {
	var mu sync.Mutex
	var stopped []string
	panics := 0
	crasher := Func("crasher", nil, func(ctx context.Context, up func()) error {
		mu.Lock()
		panics++
		mu.Unlock()
		up()
		panic("boom")
	})
	nilDeref := Func("nilderef", nil, func(ctx context.Context, up func()) error {
		var m map[string]*int
		return fmt.Errorf("%d", *m["x"]) // a runtime error panic
	})
	h := startSupervisor(t, SupervisorOptions{},
		blocker("steady", nil, &stopped, &mu),
		crasher,
		nilDeref,
		blocker("dependent", []string{"steady"}, &stopped, &mu),
	)
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	st := h.w.wait(t, "crasher", StateBackoff)
	if !strings.Contains(st.LastError, "panic: boom") {
		t.Errorf("crasher LastError = %q; want the panic", st.LastError)
	}
	st = h.w.wait(t, "nilderef", StateBackoff)
	if !strings.Contains(st.LastError, "nil pointer dereference") {
		t.Errorf("nilderef LastError = %q; want the runtime error", st.LastError)
	}
	// It keeps being restarted; the others stay up, never restarted.
	for range 3 {
		h.clock.WaitTimers(ctx, 2)
		h.clock.Advance(time.Hour)
		h.w.wait(t, "crasher", StateBackoff)
	}
	for _, n := range []string{"steady", "dependent"} {
		if st := h.status(n); st.State != StateUp || st.Restarts != 0 {
			t.Errorf("%s = %s with %d restarts; want up, never restarted", n, st.State, st.Restarts)
		}
	}
	if st := h.status("crasher"); st.Restarts < 3 {
		t.Errorf("crasher restarts = %d; want at least 3", st.Restarts)
	}
	if err := h.sup.Ping(ctx); err != nil {
		t.Errorf("Ping() = %v; want the loop alive", err)
	}
}

func TestSupervisorPermanentFailure(t *testing.T) {
	var mu sync.Mutex
	var stopped []string
	h := startSupervisor(t, SupervisorOptions{},
		Func("broken", nil, func(ctx context.Context, up func()) error {
			return Permanent(errors.New("no such hardware"))
		}),
		blocker("needs-broken", []string{"broken"}, &stopped, &mu),
		blocker("fine", nil, &stopped, &mu),
	)
	<-h.sup.Ready()
	if st := h.status("broken"); st.State != StateFailed || st.LastError != "no such hardware" {
		t.Errorf("broken = %+v; want failed with its error", st)
	}
	if st := h.status("needs-broken"); st.State != StateFailed || !strings.Contains(st.LastError, `dependency "broken" failed`) {
		t.Errorf("needs-broken = %+v; want failed because of its dependency", st)
	}
	if got := h.sup.Up(); !cmp.Equal(got, []string{"fine"}) {
		t.Errorf("Up() = %v; want [fine]", got)
	}
}

// TestSupervisorReadyWithFailingService: a service stuck in backoff, and its dependents, do
// not hold the ready line back.
func TestSupervisorReadyWithFailingService(t *testing.T) {
	var mu sync.Mutex
	var stopped []string
	h := startSupervisor(t, SupervisorOptions{},
		blocker("data", nil, &stopped, &mu),
		Func("vpn", []string{"data"}, func(ctx context.Context, up func()) error {
			return errors.New("no route to concentrator")
		}),
		blocker("bgp", []string{"vpn"}, &stopped, &mu),
	)
	select {
	case <-h.sup.Ready():
	case <-time.After(hang):
		t.Fatalf("never ready; changes %v", h.w.changes())
	}
	if got := h.sup.Up(); !cmp.Equal(got, []string{"data"}) {
		t.Errorf("Up() = %v; want [data]", got)
	}
	if st := h.status("bgp"); st.State != StateWaiting {
		t.Errorf("bgp = %s; want waiting for vpn", st.State)
	}
}

func TestSupervisorDependentWaitsForRestartedDependency(t *testing.T) {
	fail := make(chan struct{})
	var mu sync.Mutex
	var stopped []string
	depRuns := 0
	h := startSupervisor(t, SupervisorOptions{},
		Func("dep", nil, func(ctx context.Context, up func()) error {
			mu.Lock()
			depRuns++
			first := depRuns == 1
			mu.Unlock()
			if !first {
				up()
				<-ctx.Done()
				return nil
			}
			<-fail
			return errors.New("first run fails before up")
		}),
		blocker("user", []string{"dep"}, &stopped, &mu),
	)
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	close(fail)
	h.w.wait(t, "dep", StateBackoff)
	h.clock.WaitTimers(ctx, 1)
	h.clock.Advance(time.Second)
	h.w.wait(t, "user", StateUp)
	if st := h.status("user"); st.Restarts != 0 {
		t.Errorf("user restarts = %d; want 0 (it started once, after dep came up)", st.Restarts)
	}
}

func TestSupervisorShutdownDeadline(t *testing.T) {
	unblock := make(chan struct{})
	defer close(unblock)
	var mu sync.Mutex
	var stopped []string
	h := startSupervisor(t, SupervisorOptions{ShutdownTimeout: 5 * time.Second},
		blocker("base", nil, &stopped, &mu),
		Func("stubborn", []string{"base"}, func(ctx context.Context, up func()) error {
			up()
			<-unblock // ignores ctx
			return nil
		}),
	)
	<-h.sup.Ready()
	h.stop()
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	h.w.wait(t, "stubborn", StateStopping)
	// base must not be stopped while stubborn (which depends on it) still runs.
	if st := h.status("base"); st.State != StateUp {
		t.Errorf("base = %s while its dependent is stopping; want up", st.State)
	}
	h.clock.WaitTimers(ctx, 1)
	h.clock.Advance(5 * time.Second)
	select {
	case <-h.done:
	case <-time.After(hang):
		t.Fatal("Run did not return at the deadline")
	}
	if err := h.err; err == nil || !strings.Contains(err.Error(), "stubborn") {
		t.Errorf("Run() = %v; want an error naming stubborn", err)
	}
}

func TestSupervisorGraphErrors(t *testing.T) {
	nop := func(ctx context.Context, up func()) error { return nil }
	for _, tc := range []struct {
		name     string
		services []Service
		want     string
	}{
		{"cycle", []Service{Func("a", []string{"c"}, nop), Func("b", []string{"a"}, nop), Func("c", []string{"b"}, nop)},
			"dependency cycle: a -> c -> b -> a"},
		{"self", []Service{Func("a", []string{"a"}, nop)}, "depends on itself"},
		{"unknown", []Service{Func("a", []string{"ghost"}, nop)}, `unknown service "ghost"`},
		{"duplicate", []Service{Func("a", nil, nop), Func("a", nil, nop)}, "registered twice"},
		{"empty name", []Service{Func("", nil, nop)}, "empty name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewSupervisor(SupervisorOptions{}, tc.services...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewSupervisor() = %v; want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestSupervisorRunTwice(t *testing.T) {
	sup, err := NewSupervisor(SupervisorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := sup.Run(ctx); err != nil {
		t.Fatalf("Run() = %v", err)
	}
	if err := sup.Run(ctx); err == nil {
		t.Errorf("second Run() = nil; want an error")
	}
	if err := sup.Ping(context.Background()); err == nil {
		t.Errorf("Ping() after Run returned = nil; want not running")
	}
}

type lastService struct{ Service }

func (lastService) StopLast() bool { return true }

func TestSupervisorStopLast(t *testing.T) {
	var mu sync.Mutex
	var stopped []string
	h := startSupervisor(t, SupervisorOptions{},
		lastService{blocker("watchdog", nil, &stopped, &mu)},
		blocker("data", nil, &stopped, &mu),
		blocker("lan", []string{"data"}, &stopped, &mu),
	)
	<-h.sup.Ready()
	if err := h.shutdown(t); err != nil {
		t.Fatal(err)
	}
	if want := []string{"lan", "data", "watchdog"}; !cmp.Equal(stopped, want) {
		t.Errorf("stop order %v; want %v", stopped, want)
	}
}
