package firmware

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"meshroot/board"
)

// Action is what happens after the services stopped.
type Action int

// The actions.
const (
	// Halt: meshd exits (u-root's init then starts its own shell).
	Halt Action = iota
	// Reboot restarts the machine.
	Reboot
	// PowerOff turns it off (QEMU exits).
	PowerOff
)

func (a Action) String() string {
	switch a {
	case Reboot:
		return "reboot"
	case PowerOff:
		return "poweroff"
	}
	return "halt"
}

// The signals that ask a running meshd to stop: SIGTERM and SIGINT halt, SIGUSR1 reboots,
// SIGUSR2 powers off; each after a clean shutdown.
var (
	SignalReboot   = syscall.SIGUSR1
	SignalPowerOff = syscall.SIGUSR2
)

// PIDFile is where a running meshd writes its PID, relative to the root.
const PIDFile = "run/meshd.pid"

// Options configure Run.
type Options struct {
	// Root is the root of the file system ("/" on the device, a temporary directory in tests).
	Root string
	// Boot does the device's boot work: mounts, kernel modules, loopback, host name, the data
	// partition, the LAN bridge, the watchdog and the console shell. Without it meshd only
	// runs the data directory and the registered services (a development run).
	Boot bool
	// Board forces a catalog entry instead of detecting it.
	Board string
	// Console receives the JSON logs and the ready line (stdout).
	Console io.Writer
	// Sys is the kernel access; zero fields take the real implementations.
	Sys System
	// Clock drives backoff, the watchdog feed and the shutdown deadline (RealClock if nil).
	Clock Clock
	// Backoff is the restart policy (DefaultBackoff if zero).
	Backoff Backoff
	// ShutdownTimeout bounds stopping the services (default 10 s).
	ShutdownTimeout time.Duration
	// ReadyTimeout: the ready line is printed when every service settled, or after this long
	// with whatever is up (default 2 min).
	ReadyTimeout time.Duration
	// Hostname is set at boot (default "meshroot").
	Hostname string
	// Shell and ShellDevice configure the console shell (see ConsoleService).
	Shell       []string
	ShellDevice string
	// NoConsole leaves the console shell out (tests, or when u-root's own shell is wanted).
	NoConsole bool
	// WaitDevice is how long to wait for the data partition and the watchdog device to show
	// up (default 5 s).
	WaitDevice time.Duration
	// LANRescan is how often the LAN service looks for new ports (default 2 s).
	LANRescan time.Duration
	// Services adds the services of later domains (provision, vpn, radio, ota); it is called
	// once the board is known.
	Services func(d *Device) []Service
	// Actions delivers reboot/power-off requests (from signals); a closed or nil channel is
	// ignored. Cancelling ctx halts.
	Actions <-chan Action
	// AfterReady, when not Halt, is done right after the ready line (boot benchmarks, VM tests).
	AfterReady Action
	// OnReady is called with the ready line's contents (tests).
	OnReady func(ReadyInfo)
}

// Run boots the device and supervises its services until ctx is cancelled or an action
// arrives, then stops everything cleanly (services in reverse order, watchdog disarmed, data
// synced and unmounted) and, for Reboot or PowerOff, ends the machine through Sys.Power. It
// returns the action taken.
func Run(ctx context.Context, opts Options) (Action, error) {
	start := time.Now()
	if opts.Root == "" {
		opts.Root = "/"
	}
	if opts.Console == nil {
		opts.Console = io.Discard
	}
	if opts.Clock == nil {
		opts.Clock = RealClock{}
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = 2 * time.Minute
	}
	if opts.Hostname == "" {
		opts.Hostname = "meshroot"
	}
	if opts.WaitDevice <= 0 {
		opts.WaitDevice = 5 * time.Second
	}
	opts.Sys.fill(opts.Root)
	console := NewLockedWriter(opts.Console)
	logging := NewLogging(console, 2000, 1<<20)
	log := logging.Logger

	rel, err := ReadRelease(opts.Root)
	if err != nil {
		log.Error("release file unreadable; version unknown", "err", err)
	}
	log.Info("meshd starting", "version", rel.Version, "image_board", rel.Board, "pid", os.Getpid(), "boot", opts.Boot, "root", opts.Root)
	if opts.Boot && os.Getpid() == 1 {
		log.Warn("meshd is PID 1; it expects u-root's init as PID 1 and meshd as its uinit (orphans are not reaped)")
	}

	if opts.Boot {
		mountBasics(opts.Root, opts.Sys.Mounter, log)
	}

	b, err := pickBoard(opts.Root, opts.Board)
	if err != nil {
		log.Error("board detection failed; using the generic profile (LAN on every Ethernet port but the first)", "err", err)
		b = board.Generic()
	} else {
		log.Info("board detected", "board", b.Name, "cpu", b.CPU)
	}
	if rel.Board != "" && rel.Board != b.Name {
		log.Warn("image was built for another board", "image_board", rel.Board, "board", b.Name)
	}

	dev := &Device{Root: opts.Root, Board: b, Release: rel, Log: log, Logging: logging, Sys: opts.Sys, Clock: opts.Clock}

	if opts.Boot {
		loadBoardModules(opts.Root, b, opts.Sys, log)
		if err := opts.Sys.SetHostname(opts.Hostname); err != nil {
			log.Warn("cannot set the host name", "err", err)
		}
		if err := opts.Sys.Net.SetUp("lo"); err != nil {
			log.Warn("cannot bring up lo", "err", err)
		}
	}
	if err := writePIDFile(opts.Root); err != nil {
		log.Warn("cannot write the PID file; `meshd -poweroff` will not find this meshd", "err", err)
	}
	defer os.Remove(filepath.Join(opts.Root, PIDFile))

	services := []Service{&DataService{Dev: dev, Boot: opts.Boot, WaitDevice: opts.WaitDevice}}
	var wd *WatchdogService
	if opts.Boot {
		wd = &WatchdogService{Dev: dev, WaitDevice: opts.WaitDevice}
		services = append(services, &LANService{Dev: dev, Rescan: opts.LANRescan}, wd)
		if !opts.NoConsole {
			services = append(services, &ConsoleService{Dev: dev, Shell: opts.Shell, Device: opts.ShellDevice})
		}
	}
	if opts.Services != nil {
		services = append(services, opts.Services(dev)...)
	}
	sup, err := NewSupervisor(SupervisorOptions{
		Logger: log, Clock: opts.Clock, Backoff: opts.Backoff, ShutdownTimeout: opts.ShutdownTimeout,
	}, services...)
	if err != nil {
		log.Error("service graph invalid", "err", err)
		return Halt, err
	}
	if wd != nil {
		wd.Health = sup.Ping
	}
	dev.mu.Lock()
	dev.sup = sup
	dev.mu.Unlock()

	supCtx, stopSup := context.WithCancel(context.Background())
	defer stopSup()
	supDone := make(chan error, 1)
	go func() { supDone <- sup.Run(supCtx) }()

	readyTimer := time.NewTimer(opts.ReadyTimeout)
	defer readyTimer.Stop()
	select {
	case <-sup.Ready():
	case <-readyTimer.C:
		log.Warn("services still starting at the ready deadline; reporting what is up", "timeout", opts.ReadyTimeout.String())
	case <-ctx.Done():
	case a := <-opts.Actions:
		return finish(dev, stopSup, supDone, a)
	}
	if ctx.Err() == nil {
		// On the device the uptime is the kernel's (boot to ready); a development run reports
		// its own run time.
		uptime := time.Since(start)
		if opts.Boot {
			uptime = opts.Sys.Uptime()
		}
		info := ReadyInfo{Board: b.Name, Version: rel.Version, Services: sup.Up(), UptimeMS: uptime.Milliseconds()}
		for _, st := range sup.Status() {
			if st.State != StateUp {
				log.Error("service not up at ready", "service", st.Name, "state", string(st.State), "err", st.LastError)
			}
		}
		io.WriteString(console, ReadyLine(info))
		log.Info("ready", "services", info.Services, "uptime_ms", info.UptimeMS)
		if opts.OnReady != nil {
			opts.OnReady(info)
		}
		if opts.AfterReady != Halt {
			return finish(dev, stopSup, supDone, opts.AfterReady)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return finish(dev, stopSup, supDone, Halt)
		case a, ok := <-opts.Actions:
			if !ok {
				opts.Actions = nil
				continue
			}
			return finish(dev, stopSup, supDone, a)
		}
	}
}

// finish stops the services, syncs, and carries out the action.
func finish(dev *Device, stopSup context.CancelFunc, supDone <-chan error, a Action) (Action, error) {
	log := dev.Log
	log.Info("shutting down", "action", a.String())
	stopSup()
	err := <-supDone
	if err != nil {
		log.Error("shutdown incomplete", "err", err)
	}
	dev.Sys.Power.Sync()
	switch a {
	case Reboot:
		log.Info("rebooting")
		if perr := dev.Sys.Power.Reboot(); perr != nil {
			return a, errors.Join(err, perr)
		}
	case PowerOff:
		log.Info("powering off")
		if perr := dev.Sys.Power.PowerOff(); perr != nil {
			return a, errors.Join(err, perr)
		}
	default:
		log.Info("meshd stopped")
	}
	return a, err
}

func pickBoard(root, name string) (board.Board, error) {
	if name != "" {
		return board.Lookup(name)
	}
	return board.Detect(root)
}

// basicMounts are the file systems meshd makes sure of at boot; u-root's init mounts most of
// them already, and what is mounted is skipped.
var basicMounts = []struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,gid=5,mode=0620"},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
}

func mountBasics(root string, m Mounter, log interface {
	Info(string, ...any)
	Warn(string, ...any)
}) {
	for _, bm := range basicMounts {
		target := filepath.Join(root, bm.target)
		if mounted, err := IsMounted(m, target); err == nil && mounted {
			continue
		}
		if err := os.MkdirAll(target, 0o755); err != nil {
			log.Warn("boot: cannot create mount point", "target", target, "err", err)
			continue
		}
		if err := m.Mount(bm.source, target, bm.fstype, bm.flags, bm.data); err != nil {
			if errors.Is(err, unix.EBUSY) {
				continue // mounted already (before /proc was there to tell)
			}
			log.Warn("boot: mount failed", "target", target, "err", err)
			continue
		}
		log.Info("boot: mounted", "target", target, "fstype", bm.fstype)
	}
}

func loadBoardModules(root string, b board.Board, sys System, log interface {
	Info(string, ...any)
	Warn(string, ...any)
	Error(string, ...any)
}) {
	if len(b.Modules) == 0 {
		return
	}
	rel, err := sys.KernelRelease()
	if err != nil {
		log.Error("modules: cannot tell the kernel release", "err", err)
		return
	}
	dir := filepath.Join(root, "lib/modules", rel)
	l, err := NewModuleLoader(dir, sys.Modules)
	if errors.Is(err, fs.ErrNotExist) {
		log.Warn("modules: no modules.dep for this kernel; relying on built-in drivers", "dir", dir)
		return
	}
	if err != nil {
		log.Error("modules: cannot read modules.dep", "err", err)
		return
	}
	t0 := time.Now()
	loaded, err := l.LoadAll(b.Modules)
	if err != nil {
		log.Error("modules: some failed to load", "err", err)
	}
	log.Info("modules loaded", "count", len(loaded), "modules", loaded, "ms", time.Since(t0).Milliseconds())
}

func writePIDFile(root string) error {
	p := filepath.Join(root, PIDFile)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return WriteFileAtomic(p, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
}

// Request asks the meshd running under root to reboot or power off (after a clean shutdown),
// or to halt, by signalling the PID in its PID file. It is what `meshd -poweroff` does.
func Request(root string, a Action) error {
	b, err := os.ReadFile(filepath.Join(root, PIDFile))
	if err != nil {
		return fmt.Errorf("meshd not running? %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return fmt.Errorf("%s: bad PID %q", PIDFile, strings.TrimSpace(string(b)))
	}
	sig := syscall.SIGTERM
	switch a {
	case Reboot:
		sig = SignalReboot
	case PowerOff:
		sig = SignalPowerOff
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("signal meshd (pid %d): %w", pid, err)
	}
	return nil
}
