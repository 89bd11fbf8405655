package firmware

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Watchdog is an open hardware watchdog (/dev/watchdog). Opening it arms it: from then on the
// board resets unless Keepalive is called within the timeout, or the device is closed with
// the magic character (a clean shutdown).
type Watchdog interface {
	// SetTimeout asks for a timeout and returns the one the driver applied.
	SetTimeout(d time.Duration) (time.Duration, error)
	Keepalive() error
	// Close closes the device; with magic it first writes 'V', which disarms the watchdog
	// (unless the kernel has CONFIG_WATCHDOG_NOWAYOUT).
	Close(magic bool) error
}

// WatchdogOpener opens the watchdog device at path.
type WatchdogOpener func(path string) (Watchdog, error)

// OpenRealWatchdog opens a Linux watchdog device.
func OpenRealWatchdog(path string) (Watchdog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	return &realWatchdog{f: f}, nil
}

type realWatchdog struct{ f *os.File }

func (w *realWatchdog) SetTimeout(d time.Duration) (time.Duration, error) {
	fd := int(w.f.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.WDIOC_SETTIMEOUT, int(d/time.Second)); err != nil {
		return 0, fmt.Errorf("watchdog: set timeout %v: %w", d, err)
	}
	got, err := unix.IoctlGetInt(fd, unix.WDIOC_GETTIMEOUT)
	if err != nil {
		return d, nil // applied, but the driver does not report it
	}
	return time.Duration(got) * time.Second, nil
}

func (w *realWatchdog) Keepalive() error {
	if err := unix.IoctlWatchdogKeepalive(int(w.f.Fd())); err != nil {
		// Some drivers lack the ioctl; any write is a keepalive too.
		if _, werr := w.f.Write([]byte{0}); werr != nil {
			return fmt.Errorf("watchdog: keepalive: %w", errors.Join(err, werr))
		}
	}
	return nil
}

func (w *realWatchdog) Close(magic bool) error {
	var err error
	if magic {
		_, err = w.f.Write([]byte("V"))
	}
	return errors.Join(err, w.f.Close())
}

// FakeWatchdog is a Watchdog for tests: it records keepalives and how it was closed.
type FakeWatchdog struct {
	mu         sync.Mutex
	Timeout    time.Duration
	Keepalives int
	Closed     bool
	MagicClose bool
	// MaxTimeout, when set, caps SetTimeout like a driver's limit.
	MaxTimeout time.Duration
	kicked     chan struct{}
}

// NewFakeWatchdog returns a fake with the driver's default 30 s timeout.
func NewFakeWatchdog() *FakeWatchdog {
	return &FakeWatchdog{Timeout: 30 * time.Second, kicked: make(chan struct{}, 1024)}
}

// Opener returns a WatchdogOpener that hands out this fake.
func (w *FakeWatchdog) Opener() WatchdogOpener {
	return func(string) (Watchdog, error) { return w, nil }
}

func (w *FakeWatchdog) SetTimeout(d time.Duration) (time.Duration, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.MaxTimeout > 0 && d > w.MaxTimeout {
		d = w.MaxTimeout
	}
	w.Timeout = d
	return d, nil
}

func (w *FakeWatchdog) Keepalive() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.Closed {
		return errors.New("watchdog: closed")
	}
	w.Keepalives++
	select {
	case w.kicked <- struct{}{}:
	default:
	}
	return nil
}

// Kicked delivers one value per keepalive.
func (w *FakeWatchdog) Kicked() <-chan struct{} { return w.kicked }

func (w *FakeWatchdog) Close(magic bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.Closed = true
	w.MagicClose = magic
	return nil
}

// State returns keepalives, closed and magic-closed.
func (w *FakeWatchdog) State() (keepalives int, closed, magic bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.Keepalives, w.Closed, w.MagicClose
}
