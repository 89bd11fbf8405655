package firmware

import (
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Power ends the system: sync, reboot, power off.
type Power interface {
	Sync()
	Reboot() error
	PowerOff() error
}

// RealPower uses sync(2) and reboot(2).
type RealPower struct{}

// Sync flushes file system buffers.
func (RealPower) Sync() { unix.Sync() }

// Reboot restarts the machine now.
func (RealPower) Reboot() error {
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART); err != nil {
		return fmt.Errorf("reboot: %w", err)
	}
	return nil
}

// PowerOff powers the machine off now (QEMU exits).
func (RealPower) PowerOff() error {
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		return fmt.Errorf("power off: %w", err)
	}
	return nil
}

// FakePower records calls.
type FakePower struct {
	mu    sync.Mutex
	Calls []string
}

func (p *FakePower) record(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.Calls = append(p.Calls, s)
}

// Sync records "sync".
func (p *FakePower) Sync() { p.record("sync") }

// Reboot records "reboot".
func (p *FakePower) Reboot() error { p.record("reboot"); return nil }

// PowerOff records "poweroff".
func (p *FakePower) PowerOff() error { p.record("poweroff"); return nil }

// Events returns a copy of Calls.
func (p *FakePower) Events() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.Calls...)
}

// System is everything meshd does to the kernel, so that the boot can run against fakes in
// tests. Zero fields are filled with the real implementations by Run.
type System struct {
	Mounter  Mounter
	Modules  ModuleKernel
	Net      Net
	Watchdog WatchdogOpener
	Power    Power
	// UBI attaches UBI to NAND partitions and makes volumes (the data area on NAND boards).
	UBI UBI
	// SetHostname sets the kernel host name.
	SetHostname func(string) error
	// KernelRelease is `uname -r`, which selects /lib/modules/<release>.
	KernelRelease func() (string, error)
	// Uptime is the time since boot (CLOCK_BOOTTIME).
	Uptime func() time.Duration
}

func (s *System) fill(root string) {
	if s.Mounter == nil {
		s.Mounter = RealMounter{Root: root}
	}
	if s.Modules == nil {
		s.Modules = RealModuleKernel{}
	}
	if s.Net == nil {
		s.Net = RealNet{Root: root}
	}
	if s.Watchdog == nil {
		s.Watchdog = OpenRealWatchdog
	}
	if s.Power == nil {
		s.Power = RealPower{}
	}
	if s.UBI == nil {
		s.UBI = RealUBI{Root: root}
	}
	if s.SetHostname == nil {
		s.SetHostname = func(h string) error { return unix.Sethostname([]byte(h)) }
	}
	if s.KernelRelease == nil {
		s.KernelRelease = kernelRelease
	}
	if s.Uptime == nil {
		s.Uptime = bootTime
	}
}

func kernelRelease() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", fmt.Errorf("uname: %w", err)
	}
	return unix.ByteSliceToString(u.Release[:]), nil
}

func bootTime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
