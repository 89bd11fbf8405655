package firmware

import (
	"context"
	"errors"
	"fmt"
)

// Service is one long-running part of the device: the data store, the LAN, the console shell,
// and later provisioning, the VPN, the radios and OTA. Domains implement it without firmware
// importing their internals; firmware only wires them together.
//
// Run does the service's work until ctx is cancelled. It calls up once the service is doing
// its job (for example: the bridge has its address, the tunnel manager is running; not "the
// cloud answered"), which lets the services that depend on it start. up may be called from any
// goroutine and more than once; only the first call counts.
//
// Run returning, with or without an error, while ctx is still live means the service stopped
// on its own: the supervisor restarts it with exponential backoff, unless the error wraps
// Permanent. A panic in Run is recovered and treated like an error. When ctx is cancelled
// (shutdown), Run must clean up and return promptly; what it returns then is only logged.
type Service interface {
	// Name is a short unique identifier ("data", "lan", "vpn"); it appears in the ready line,
	// the logs and the status API.
	Name() string
	// Deps names the services that must be up before this one starts.
	Deps() []string
	// Run is the service's body (see the type's documentation).
	Run(ctx context.Context, up func()) error
}

// StopLaster is implemented by services that must outlive every other service at shutdown
// (the watchdog). Such a service is stopped once all services without StopLast have returned.
type StopLaster interface {
	StopLast() bool
}

func stopsLast(s Service) bool {
	l, ok := s.(StopLaster)
	return ok && l.StopLast()
}

// Func adapts a function to a Service.
func Func(name string, deps []string, run func(ctx context.Context, up func()) error) Service {
	return funcService{name: name, deps: deps, run: run}
}

type funcService struct {
	name string
	deps []string
	run  func(ctx context.Context, up func()) error
}

func (f funcService) Name() string                             { return f.name }
func (f funcService) Deps() []string                           { return f.deps }
func (f funcService) Run(ctx context.Context, up func()) error { return f.run(ctx, up) }

// Permanent marks an error after which restarting the service cannot help (bad configuration,
// missing hardware): the supervisor puts the service in StateFailed instead of backing off.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// PanicError is the error a service's panic turns into.
type PanicError struct {
	Value any
	Stack []byte
}

func (p *PanicError) Error() string { return fmt.Sprintf("panic: %v", p.Value) }
