package firmware

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"
)

// State is where a service is in its life cycle.
type State string

// The service states.
const (
	// StateWaiting: not started yet, or waiting to restart, because a dependency is not up.
	StateWaiting State = "waiting"
	// StateStarting: Run was called and has not called up yet.
	StateStarting State = "starting"
	// StateUp: the service called up and is running.
	StateUp State = "up"
	// StateBackoff: the service stopped on its own and will be restarted after a delay.
	StateBackoff State = "backoff"
	// StateStopping: shutdown cancelled the service and it has not returned yet.
	StateStopping State = "stopping"
	// StateStopped: shutdown is done with the service.
	StateStopped State = "stopped"
	// StateFailed: the service returned a Permanent error, or a dependency failed; it will not
	// be started again.
	StateFailed State = "failed"
)

// ServiceStatus is one service's state for logs and the status API.
type ServiceStatus struct {
	Name  string   `json:"name"`
	State State    `json:"state"`
	Deps  []string `json:"deps,omitempty"`
	// Restarts counts the starts after the first one.
	Restarts int `json:"restarts"`
	// LastError is the last error (or "exited") the service stopped with; it is kept after a
	// successful restart.
	LastError string `json:"last_error,omitempty"`
	// Since is when the service entered State.
	Since time.Time `json:"since"`
	// NextStart is when a service in backoff will be started again.
	NextStart time.Time `json:"next_start,omitzero"`
}

// Backoff is the restart policy: the first restart waits Initial, each further one Multiplier
// times longer up to Max; a service that stayed up for StableAfter starts over at Initial.
type Backoff struct {
	Initial     time.Duration
	Max         time.Duration
	Multiplier  float64
	StableAfter time.Duration
}

// DefaultBackoff is the production restart policy.
var DefaultBackoff = Backoff{Initial: time.Second, Max: time.Minute, Multiplier: 2, StableAfter: 30 * time.Second}

func (b Backoff) next(d time.Duration) time.Duration {
	n := time.Duration(float64(d) * b.Multiplier)
	if n > b.Max || n <= 0 {
		n = b.Max
	}
	return n
}

// SupervisorOptions configure a Supervisor. Zero values take the defaults.
type SupervisorOptions struct {
	Logger *slog.Logger
	Clock  Clock
	// Backoff is the restart policy (DefaultBackoff when zero).
	Backoff Backoff
	// ShutdownTimeout bounds the whole shutdown (default 10 s); services still running then
	// are abandoned and reported.
	ShutdownTimeout time.Duration
	// OnChange, when set, is called from the supervisor's loop after every state change. It
	// must not block and must not call back into the supervisor.
	OnChange func(ServiceStatus)
}

// Supervisor starts services in dependency order, restarts them with backoff, isolates their
// panics, reports their states and stops them in reverse dependency order.
type Supervisor struct {
	opts  SupervisorOptions
	log   *slog.Logger
	clock Clock

	order  []*svc // topological: dependencies first
	byName map[string]*svc

	events chan event
	done   chan struct{} // closed when Run returns

	mu       sync.Mutex // guards the status copies and ready state below
	statuses map[string]ServiceStatus
	ready    chan struct{}
	isReady  bool
	started  bool

	shutdown bool
	runCtx   context.Context
}

type svc struct {
	svc        Service
	name       string
	deps       []*svc
	dependents []*svc
	st         ServiceStatus

	gen     int
	cancel  context.CancelFunc
	running bool
	upAt    time.Time
	delay   time.Duration
	timer   Timer

	everUp, everExited bool
}

type eventKind int

const (
	evUp eventKind = iota
	evExit
	evTimer
	evPing
	evDeadline
)

type event struct {
	kind  eventKind
	name  string
	gen   int
	err   error
	reply chan struct{}
}

// NewSupervisor checks the service graph (unique non-empty names, known dependencies, no
// cycles) and returns a supervisor ready to Run.
func NewSupervisor(opts SupervisorOptions, services ...Service) (*Supervisor, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = RealClock{}
	}
	if opts.Backoff == (Backoff{}) {
		opts.Backoff = DefaultBackoff
	}
	if opts.Backoff.Multiplier < 1 {
		opts.Backoff.Multiplier = 1
	}
	if opts.Backoff.Max < opts.Backoff.Initial {
		opts.Backoff.Max = opts.Backoff.Initial
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 10 * time.Second
	}
	s := &Supervisor{
		opts:     opts,
		log:      opts.Logger,
		clock:    opts.Clock,
		byName:   map[string]*svc{},
		events:   make(chan event, 64),
		done:     make(chan struct{}),
		statuses: map[string]ServiceStatus{},
		ready:    make(chan struct{}),
	}
	var list []*svc
	for _, srv := range services {
		name := srv.Name()
		if name == "" {
			return nil, errors.New("supervisor: a service has an empty name")
		}
		if _, dup := s.byName[name]; dup {
			return nil, fmt.Errorf("supervisor: service %q registered twice", name)
		}
		v := &svc{svc: srv, name: name, delay: opts.Backoff.Initial}
		s.byName[name] = v
		list = append(list, v)
	}
	for _, v := range list {
		for _, d := range v.svc.Deps() {
			dep, ok := s.byName[d]
			if !ok {
				return nil, fmt.Errorf("supervisor: service %q depends on unknown service %q", v.name, d)
			}
			if dep == v {
				return nil, fmt.Errorf("supervisor: service %q depends on itself", v.name)
			}
			if !slices.Contains(v.deps, dep) {
				v.deps = append(v.deps, dep)
				dep.dependents = append(dep.dependents, v)
			}
		}
	}
	order, err := topoSort(list)
	if err != nil {
		return nil, err
	}
	s.order = order
	now := s.clock.Now()
	for _, v := range order {
		v.st = ServiceStatus{Name: v.name, State: StateWaiting, Since: now}
		for _, d := range v.deps {
			v.st.Deps = append(v.st.Deps, d.name)
		}
		s.statuses[v.name] = v.st
	}
	return s, nil
}

// topoSort orders services dependencies first, keeping registration order among equals, and
// reports a cycle by its path.
func topoSort(list []*svc) ([]*svc, error) {
	const (
		unvisited = iota
		visiting
		done
	)
	mark := map[*svc]int{}
	var out []*svc
	var stack []string
	var visit func(v *svc) error
	visit = func(v *svc) error {
		switch mark[v] {
		case done:
			return nil
		case visiting:
			i := slices.Index(stack, v.name)
			cycle := append(slices.Clone(stack[i:]), v.name)
			return fmt.Errorf("supervisor: dependency cycle: %s", strings.Join(cycle, " -> "))
		}
		mark[v] = visiting
		stack = append(stack, v.name)
		for _, d := range v.deps {
			if err := visit(d); err != nil {
				return err
			}
		}
		stack = stack[:len(stack)-1]
		mark[v] = done
		out = append(out, v)
		return nil
	}
	for _, v := range list {
		if err := visit(v); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Names returns the service names in start order.
func (s *Supervisor) Names() []string {
	out := make([]string, len(s.order))
	for i, v := range s.order {
		out[i] = v.name
	}
	return out
}

// Status returns a snapshot of every service, in start order. It is safe to call at any time.
func (s *Supervisor) Status() []ServiceStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ServiceStatus, 0, len(s.order))
	for _, v := range s.order {
		st := s.statuses[v.name]
		st.Deps = slices.Clone(st.Deps)
		out = append(out, st)
	}
	return out
}

// Up returns the names of the services that are up, in start order.
func (s *Supervisor) Up() []string {
	var out []string
	for _, st := range s.Status() {
		if st.State == StateUp {
			out = append(out, st.Name)
		}
	}
	return out
}

// Ready is closed once every service has settled: it came up, or it stopped or failed at least
// once, or it waits on a dependency that settled without being up. A failing service therefore
// does not hold the ready line back forever; Up says who made it.
func (s *Supervisor) Ready() <-chan struct{} { return s.ready }

// Ping round-trips through the supervisor's loop: a nil error means the loop is alive. The
// watchdog feeder uses it, so a wedged supervisor stops feeding and the board reboots.
func (s *Supervisor) Ping(ctx context.Context) error {
	reply := make(chan struct{})
	select {
	case s.events <- event{kind: evPing, reply: reply}:
	case <-s.done:
		return errors.New("supervisor: not running")
	case <-ctx.Done():
		return fmt.Errorf("supervisor: ping: %w", ctx.Err())
	}
	select {
	case <-reply:
		return nil
	case <-s.done:
		return errors.New("supervisor: not running")
	case <-ctx.Done():
		return fmt.Errorf("supervisor: ping: %w", ctx.Err())
	}
}

// Run starts the services and supervises them until ctx is cancelled, then stops them in
// reverse dependency order within ShutdownTimeout. It returns nil after a clean shutdown, or
// an error naming the services that did not stop in time. Run may be called once.
func (s *Supervisor) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("supervisor: Run called twice")
	}
	s.started = true
	s.mu.Unlock()
	defer close(s.done)

	// Services run under a context of their own: shutdown cancels them one by one, in order.
	s.runCtx = context.WithoutCancel(ctx)
	s.schedule()
	s.checkReady()
	for {
		select {
		case <-ctx.Done():
			return s.stopAll()
		case ev := <-s.events:
			s.handle(ev)
		}
	}
}

func (s *Supervisor) send(ev event) {
	select {
	case s.events <- ev:
	case <-s.done:
	}
}

func (s *Supervisor) setState(v *svc, st State) {
	v.st.State = st
	v.st.Since = s.clock.Now()
	if st != StateBackoff {
		v.st.NextStart = time.Time{}
	}
	s.publish(v)
}

func (s *Supervisor) publish(v *svc) {
	st := v.st
	st.Deps = slices.Clone(st.Deps)
	s.mu.Lock()
	s.statuses[v.name] = st
	s.mu.Unlock()
	if s.opts.OnChange != nil {
		s.opts.OnChange(st)
	}
}

// schedule starts every waiting service whose dependencies are all up, in start order.
func (s *Supervisor) schedule() {
	if s.shutdown {
		return
	}
	for _, v := range s.order {
		if v.st.State != StateWaiting {
			continue
		}
		if failed := s.failedDep(v); failed != nil {
			v.st.LastError = fmt.Sprintf("dependency %q failed", failed.name)
			s.setState(v, StateFailed)
			s.log.Error("service failed", "service", v.name, "err", v.st.LastError)
			continue
		}
		if s.depsUp(v) {
			s.start(v)
		}
	}
}

func (s *Supervisor) depsUp(v *svc) bool {
	for _, d := range v.deps {
		if d.st.State != StateUp {
			return false
		}
	}
	return true
}

func (s *Supervisor) failedDep(v *svc) *svc {
	for _, d := range v.deps {
		if d.st.State == StateFailed {
			return d
		}
	}
	return nil
}

func (s *Supervisor) start(v *svc) {
	if v.everUp || v.everExited {
		v.st.Restarts++
	}
	v.gen++
	gen := v.gen
	ctx, cancel := context.WithCancel(s.runCtx)
	v.cancel = cancel
	v.running = true
	s.setState(v, StateStarting)
	s.log.Info("service starting", "service", v.name, "restarts", v.st.Restarts)

	var once sync.Once
	up := func() {
		once.Do(func() { s.send(event{kind: evUp, name: v.name, gen: gen}) })
	}
	go func() {
		var err error
		defer func() {
			if r := recover(); r != nil {
				err = &PanicError{Value: r, Stack: debug.Stack()}
			}
			s.send(event{kind: evExit, name: v.name, gen: gen, err: err})
		}()
		err = v.svc.Run(ctx, up)
	}()
}

func (s *Supervisor) handle(ev event) {
	switch ev.kind {
	case evPing:
		close(ev.reply)
		return
	case evDeadline:
		return // only meaningful during shutdown
	}
	v := s.byName[ev.name]
	if v == nil || ev.gen != v.gen {
		return // a stale event from an earlier run
	}
	switch ev.kind {
	case evUp:
		if v.st.State != StateStarting {
			return
		}
		v.upAt = s.clock.Now()
		v.everUp = true
		s.setState(v, StateUp)
		s.log.Info("service up", "service", v.name)
		s.schedule()
	case evExit:
		s.exited(v, ev.err)
	case evTimer:
		if v.st.State != StateBackoff {
			return
		}
		v.timer = nil
		s.setState(v, StateWaiting)
		s.schedule()
	}
	s.checkReady()
}

func (s *Supervisor) exited(v *svc, err error) {
	v.running = false
	v.cancel()
	v.everExited = true
	now := s.clock.Now()
	wasUp := v.st.State == StateUp
	msg := "exited"
	if err != nil {
		msg = err.Error()
	}
	v.st.LastError = msg
	var pe *PanicError
	if errors.As(err, &pe) {
		s.log.Error("service panicked", "service", v.name, "err", msg, "stack", string(pe.Stack))
	}
	if IsPermanent(err) {
		s.setState(v, StateFailed)
		s.log.Error("service failed", "service", v.name, "err", msg)
		s.schedule() // marks waiting dependents failed
		return
	}
	if wasUp && now.Sub(v.upAt) >= s.opts.Backoff.StableAfter {
		v.delay = s.opts.Backoff.Initial
	}
	d := v.delay
	v.delay = s.opts.Backoff.next(d)
	gen := v.gen
	v.st.NextStart = now.Add(d)
	s.setState(v, StateBackoff)
	s.log.Warn("service stopped; restarting after backoff", "service", v.name, "err", msg,
		"backoff", d.String(), "restarts", v.st.Restarts)
	v.timer = s.clock.AfterFunc(d, func() { s.send(event{kind: evTimer, name: v.name, gen: gen}) })
}

// checkReady closes the ready channel once every service has settled.
func (s *Supervisor) checkReady() {
	if s.isReady {
		return
	}
	settled := map[*svc]bool{}
	for _, v := range s.order { // dependencies come first
		switch {
		case v.everUp, v.everExited, v.st.State == StateFailed:
			settled[v] = true
		case v.st.State == StateWaiting:
			for _, d := range v.deps {
				if settled[d] && d.st.State != StateUp {
					settled[v] = true
				}
			}
		}
		if !settled[v] {
			return
		}
	}
	s.mu.Lock()
	s.isReady = true
	s.mu.Unlock()
	close(s.ready)
}

// stopAll is the shutdown: a running service is cancelled once every service that depends on
// it has returned, so dependents stop before their dependencies; StopLast services go after
// all the others.
func (s *Supervisor) stopAll() error {
	s.shutdown = true
	s.log.Info("supervisor shutting down")
	for _, v := range s.order {
		if v.timer != nil {
			v.timer.Stop()
			v.timer = nil
		}
		if !v.running && v.st.State != StateStopped {
			s.setState(v, StateStopped)
		}
	}
	deadline := s.clock.AfterFunc(s.opts.ShutdownTimeout, func() { s.send(event{kind: evDeadline}) })
	defer deadline.Stop()
	for {
		remaining := 0
		for i := len(s.order) - 1; i >= 0; i-- {
			v := s.order[i]
			if !v.running {
				continue
			}
			remaining++
			if v.st.State == StateStopping {
				continue
			}
			blocked := false
			for _, d := range v.dependents {
				if d.running {
					blocked = true
				}
			}
			if stopsLast(v.svc) {
				for _, o := range s.order {
					if o.running && !stopsLast(o.svc) {
						blocked = true
					}
				}
			}
			if !blocked {
				s.setState(v, StateStopping)
				s.log.Info("service stopping", "service", v.name)
				v.cancel()
			}
		}
		if remaining == 0 {
			s.log.Info("supervisor stopped all services")
			return nil
		}
		ev := <-s.events
		switch ev.kind {
		case evPing:
			close(ev.reply)
		case evExit:
			v := s.byName[ev.name]
			if v == nil || ev.gen != v.gen {
				continue
			}
			v.running = false
			v.cancel()
			if ev.err != nil && !errors.Is(ev.err, context.Canceled) {
				v.st.LastError = ev.err.Error()
				s.log.Warn("service returned an error while stopping", "service", v.name, "err", ev.err)
			}
			s.setState(v, StateStopped)
			s.log.Info("service stopped", "service", v.name)
		case evDeadline:
			var stuck []string
			for i := len(s.order) - 1; i >= 0; i-- {
				v := s.order[i]
				if v.running {
					v.cancel()
					stuck = append(stuck, v.name)
					v.st.LastError = "did not stop in time"
					s.setState(v, StateStopped)
				}
			}
			s.log.Error("services did not stop in time", "services", stuck, "timeout", s.opts.ShutdownTimeout.String())
			return fmt.Errorf("supervisor: services %s did not stop within %v", strings.Join(stuck, ", "), s.opts.ShutdownTimeout)
		}
	}
}
