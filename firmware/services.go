package firmware

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"meshroot/board"
)

// Device is the state the built-in services share, and what later domains' services get when
// they register (Options.Services): the board, the release, the logger and, once the "data"
// service is up, the config store.
type Device struct {
	Root    string
	Board   board.Board
	Release Release
	Log     *slog.Logger
	Logging *Logging
	Sys     System
	Clock   Clock

	mu         sync.Mutex
	store      *Store
	persistent bool
	sup        *Supervisor
}

// Store returns the config store, or nil before the "data" service is up. Services that need
// it list "data" in their Deps.
func (d *Device) Store() *Store {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.store
}

// Persistent reports whether the data area is the flash partition (true) or a RAM fallback.
func (d *Device) Persistent() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.persistent
}

// Status returns the services' states (nil before the supervisor exists).
func (d *Device) Status() []ServiceStatus {
	d.mu.Lock()
	sup := d.sup
	d.mu.Unlock()
	if sup == nil {
		return nil
	}
	return sup.Status()
}

func (d *Device) setStore(s *Store, persistent bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.store, d.persistent = s, persistent
}

// sleep waits d on clock, or until ctx ends (false).
func sleep(ctx context.Context, clock Clock, d time.Duration) bool {
	ch := make(chan struct{})
	t := clock.AfterFunc(d, func() { close(ch) })
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	}
}

// waitFor polls cond every 100 ms (real time) until it is true, the wait passes, or ctx ends.
func waitFor(ctx context.Context, wait time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(wait)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// DataService mounts the data partition at <root>/data (a RAM tmpfs if that fails, so the
// rest of the device still works), opens the config store under data/config, and on
// shutdown syncs and unmounts. Without Boot it only uses the directory <root>/data.
type DataService struct {
	Dev  *Device
	Boot bool
	// WaitDevice is how long to wait for the partition's device node to appear (the block
	// driver probes asynchronously after its module loads).
	WaitDevice time.Duration
}

// Name is "data".
func (*DataService) Name() string { return "data" }

// Deps is none.
func (*DataService) Deps() []string { return nil }

// Run mounts, opens the store, reports up, waits, and unmounts.
func (s *DataService) Run(ctx context.Context, up func()) error {
	d := s.Dev
	target := filepath.Join(d.Root, "data")
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("data: %w", err)
	}
	persistent, mountedHere := true, false
	if s.Boot {
		ms, err := d.Sys.Mounter.Mounts()
		if err != nil {
			d.Log.Warn("data: cannot read the mount table", "err", err)
		}
		for _, m := range ms {
			if filepath.Clean(m.Target) == filepath.Clean(target) {
				// A restart of this service: the earlier run mounted it.
				d.Log.Info("data: already mounted", "target", target, "fs", m.FSType, "source", m.Source)
				persistent, mountedHere = m.FSType != "tmpfs", true
			}
		}
		if !mountedHere {
			src, fstype, err := s.mountData(ctx, target)
			if err != nil {
				d.Log.Error("data partition not mounted; using RAM (settings will not survive a reboot)",
					"err", err, "board", d.Board.Name)
				if err := d.Sys.Mounter.Mount("tmpfs", target, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=16m"); err != nil {
					return fmt.Errorf("data: tmpfs fallback: %w", err)
				}
				persistent = false
			} else {
				d.Log.Info("data partition mounted", "device", src, "target", target, "fs", fstype)
			}
			mountedHere = true
		}
	}
	store, err := OpenStore(filepath.Join(target, "config"))
	if err != nil {
		return err
	}
	d.setStore(store, persistent)
	up()
	<-ctx.Done()
	if mountedHere {
		d.Sys.Power.Sync()
		if err := d.Sys.Mounter.Unmount(target, 0); err != nil {
			d.Log.Warn("data: unmount failed; detaching", "err", err)
			if err := d.Sys.Mounter.Unmount(target, unix.MNT_DETACH); err != nil {
				return fmt.Errorf("data: %w", err)
			}
		}
		d.Log.Info("data partition unmounted", "target", target)
	}
	return nil
}

// mountData mounts the data area at target and returns the mount source and file system: the
// board's block partition (by node or GPT name), or on NAND the UBIFS volume "rootfs_data" in
// UBI on the board's MTD partition. meshroot.data=mtd:NAME on the kernel command line names
// the MTD partition instead of the board (see DataParam).
func (s *DataService) mountData(ctx context.Context, target string) (string, string, error) {
	f := s.Dev.Board.Flash
	mtd, err := DataOverride(s.Dev.Root)
	if err != nil {
		s.Dev.Log.Warn("data: kernel command line option ignored; using the board's data partition", "err", err)
	}
	if mtd == "" && f.DataFS == "ubifs" {
		mtd = f.Data.Name
	}
	switch {
	case mtd != "":
		return s.mountUBIFS(ctx, mtd, target)
	case f.Data.Name == "" && f.Data.Device == "":
		return "", "", errors.New("board has no data partition")
	case f.DataFS == "":
		return "", "", errors.New("board does not say the data file system")
	}
	var dev string
	var rerr error
	waitFor(ctx, s.WaitDevice, func() bool {
		dev, rerr = ResolveBlock(s.Dev.Root, f.Data)
		return rerr == nil
	})
	if rerr != nil {
		return "", "", rerr
	}
	src := filepath.Join(s.Dev.Root, dev)
	if err := s.Dev.Sys.Mounter.Mount(src, target, f.DataFS, unix.MS_NOATIME|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return "", "", err
	}
	return src, f.DataFS, nil
}

// mountUBIFS attaches UBI to the MTD partition called mtd (waiting for the NAND driver to
// register it), finds or creates the data volume, and mounts it as ubifs; the kernel formats
// an empty volume at its first mount.
func (s *DataService) mountUBIFS(ctx context.Context, mtd, target string) (string, string, error) {
	if s.Dev.Sys.UBI == nil {
		return "", "", fmt.Errorf("mtd partition %q: no UBI control", mtd)
	}
	var src string
	var rerr error
	waitFor(ctx, s.WaitDevice, func() bool {
		src, rerr = AttachUBIVolume(s.Dev.Root, s.Dev.Sys.UBI, mtd, UBIDataVolume)
		return !errors.Is(rerr, errNoMTD)
	})
	if rerr != nil {
		return "", "", rerr
	}
	if err := s.Dev.Sys.Mounter.Mount(src, target, "ubifs", unix.MS_NOATIME|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return "", "", fmt.Errorf("mtd partition %q: %w", mtd, err)
	}
	return src, "ubifs", nil
}

// LANConfig is the "lan" config document.
type LANConfig struct {
	// Bridge is the LAN bridge's name.
	Bridge string `json:"bridge"`
	// Address is the router's LAN address with its prefix length.
	Address string `json:"address"`
}

// DefaultLAN is the LAN of a new device.
var DefaultLAN = LANConfig{Bridge: "br-lan", Address: "192.168.1.1/24"}

// Validate checks the fields.
func (c LANConfig) Validate() (netip.Prefix, error) {
	if c.Bridge == "" || len(c.Bridge) > 15 {
		return netip.Prefix{}, fmt.Errorf("lan: bridge name %q: want 1..15 bytes", c.Bridge)
	}
	p, err := netip.ParsePrefix(c.Address)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("lan: address: %w", err)
	}
	if !p.Addr().Is4() || p.Bits() < 8 || p.Bits() > 30 || p.Addr() == p.Masked().Addr() {
		return netip.Prefix{}, fmt.Errorf("lan: address %s: want a host address in an IPv4 /8../30", p)
	}
	return p, nil
}

// LANService brings up the LAN bridge with the board's LAN ports and the LAN address, then
// keeps adding ports that appear later (NIC drivers probe asynchronously). On a generic board
// every Ethernet port but the first (the WAN) joins.
type LANService struct {
	Dev *Device
	// Rescan is how often to look for ports that appeared (default 2 s).
	Rescan time.Duration

	missing map[string]bool // ports reported missing, to log once
}

// Name is "lan".
func (*LANService) Name() string { return "lan" }

// Deps is "data" (the LAN settings live in the config store).
func (*LANService) Deps() []string { return []string{"data"} }

// Config returns the LAN settings: the stored "lan" document when valid, else the default.
func (s *LANService) Config() (LANConfig, netip.Prefix) {
	cfg := DefaultLAN
	if st := s.Dev.Store(); st != nil {
		var c LANConfig
		err := st.Get("lan", &c)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			s.Dev.Log.Warn("lan: stored settings unreadable; using the defaults", "err", err)
		default:
			if _, verr := c.Validate(); verr != nil {
				s.Dev.Log.Warn("lan: stored settings invalid; using the defaults", "err", verr)
			} else {
				cfg = c
			}
		}
	}
	p, _ := cfg.Validate()
	return cfg, p
}

// Run configures the bridge, reports up, then rescans for ports until stopped.
func (s *LANService) Run(ctx context.Context, up func()) error {
	d := s.Dev
	cfg, addr := s.Config()
	n := d.Sys.Net
	if err := n.EnsureBridge(cfg.Bridge); err != nil {
		return fmt.Errorf("lan: %w", err)
	}
	if err := n.AddAddr(cfg.Bridge, addr); err != nil {
		return fmt.Errorf("lan: %w", err)
	}
	if err := n.SetUp(cfg.Bridge); err != nil {
		return fmt.Errorf("lan: %w", err)
	}
	s.missing = map[string]bool{}
	if err := s.attach(cfg.Bridge); err != nil {
		return err
	}
	d.Log.Info("lan up", "bridge", cfg.Bridge, "address", addr.String())
	up()
	rescan := s.Rescan
	if rescan <= 0 {
		rescan = 2 * time.Second
	}
	for sleep(ctx, d.Clock, rescan) {
		if err := s.attach(cfg.Bridge); err != nil {
			return err
		}
	}
	return nil
}

// attach enslaves the LAN ports present and sets them and the WAN port up.
func (s *LANService) attach(bridge string) error {
	d := s.Dev
	links, err := d.Sys.Net.Links()
	if err != nil {
		return fmt.Errorf("lan: %w", err)
	}
	byName := map[string]Link{}
	var ether []string
	for _, l := range links {
		byName[l.Name] = l
		if l.Ethernet && l.Name != bridge {
			ether = append(ether, l.Name)
		}
	}
	ports := d.Board.Ports
	if d.Board.Generic {
		ports = board.GenericPorts(ether)
	}
	for _, p := range ports {
		l, ok := byName[p.Name]
		if !ok {
			if !s.missing[p.Name] {
				d.Log.Warn("lan: port not present (yet)", "port", p.Name, "role", string(p.Role))
				s.missing[p.Name] = true
			}
			continue
		}
		if s.missing[p.Name] {
			delete(s.missing, p.Name)
		}
		if p.Role == board.RoleLAN && l.Master != bridge {
			if err := d.Sys.Net.SetMaster(p.Name, bridge); err != nil {
				d.Log.Warn("lan: cannot add port to the bridge", "port", p.Name, "err", err)
				continue
			}
			d.Log.Info("lan: port joined the bridge", "port", p.Name, "bridge", bridge)
		}
		if !l.Up {
			if err := d.Sys.Net.SetUp(p.Name); err != nil {
				d.Log.Warn("lan: cannot set port up", "port", p.Name, "err", err)
			}
		}
	}
	return nil
}

// WatchdogService opens the board's watchdog, feeds it while the supervisor's loop answers
// Health, and closes it with the magic character on a clean stop. A board without a watchdog
// device (or a device that never appears) leaves the service up and idle, with a warning.
type WatchdogService struct {
	Dev *Device
	// Timeout asked of the driver (default 30 s); the feed interval is a third of what the
	// driver applied.
	Timeout time.Duration
	// WaitDevice is how long to wait for the device node (its module loads at boot).
	WaitDevice time.Duration
	// Health is checked before each feed (the supervisor's Ping); no answer, no feed, and the
	// hardware resets the board.
	Health func(ctx context.Context) error
}

// Name is "watchdog".
func (*WatchdogService) Name() string { return "watchdog" }

// StopLast keeps the watchdog fed until every other service has stopped: a shutdown that hangs
// still ends in a reset.
func (*WatchdogService) StopLast() bool { return true }

// Deps is none.
func (*WatchdogService) Deps() []string { return nil }

// Run arms, feeds and disarms the watchdog.
func (s *WatchdogService) Run(ctx context.Context, up func()) error {
	d := s.Dev
	path := d.Board.Watchdog
	if path == "" {
		d.Log.Warn("watchdog: the board has none")
		up()
		<-ctx.Done()
		return nil
	}
	full := filepath.Join(d.Root, path)
	waitFor(ctx, s.WaitDevice, func() bool { _, err := os.Stat(full); return err == nil })
	wd, err := d.Sys.Watchdog(full)
	if errors.Is(err, fs.ErrNotExist) {
		d.Log.Warn("watchdog: no device; running without one", "device", path)
		up()
		<-ctx.Done()
		return nil
	}
	if err != nil {
		return fmt.Errorf("watchdog: open %s: %w", path, err)
	}
	want := s.Timeout
	if want <= 0 {
		want = 30 * time.Second
	}
	got, err := wd.SetTimeout(want)
	if err != nil {
		d.Log.Warn("watchdog: cannot set the timeout; keeping the driver's", "err", err)
		got = want
	}
	interval := got / 3
	if interval <= 0 {
		interval = time.Second
	}
	if err := wd.Keepalive(); err != nil {
		wd.Close(false)
		return fmt.Errorf("watchdog: %w", err)
	}
	d.Log.Info("watchdog armed", "device", path, "timeout", got.String(), "interval", interval.String())
	up()
	for sleep(ctx, d.Clock, interval) {
		if s.Health != nil {
			hctx, cancel := context.WithTimeout(ctx, interval)
			herr := s.Health(hctx)
			cancel()
			if herr != nil {
				if ctx.Err() != nil {
					break
				}
				d.Log.Error("watchdog: supervisor not answering; not feeding", "err", herr)
				continue
			}
		}
		if err := wd.Keepalive(); err != nil {
			d.Log.Error("watchdog: keepalive failed", "err", err)
		}
	}
	if err := wd.Close(true); err != nil {
		return fmt.Errorf("watchdog: magic close: %w", err)
	}
	d.Log.Info("watchdog disarmed (magic close)")
	return nil
}

// ConsoleService runs an interactive shell (u-root's gosh) for the console, respawned when it
// exits, so a field engineer has a shell while meshd runs: u-root's init starts its own shell
// only after uinit (meshd) exits.
//
// The shell does not get the serial console itself but a pseudo-terminal that meshd relays to
// and from the console. The shell's session owns the pty (job control works: ^C interrupts a
// ping), and when the shell exits only the pty is hung up. Were the shell's session to own the
// real console, its exit would hang the console up, which kills the console descriptors
// u-root's init holds (meshd's stdout among them) and leaves init's fallback shell without a
// terminal. Without a pty (no devpts) the shell runs on the console with no controlling
// terminal.
type ConsoleService struct {
	Dev *Device
	// Shell is the command line (default: the first of /bin/defaultsh, /bin/sh, /bbin/gosh).
	Shell []string
	// Device is the console device (default /dev/<board console>, else /dev/console).
	Device string
}

// Name is "console".
func (*ConsoleService) Name() string { return "console" }

// Deps is none.
func (*ConsoleService) Deps() []string { return nil }

func (s *ConsoleService) shell() ([]string, error) {
	if len(s.Shell) > 0 {
		return s.Shell, nil
	}
	for _, p := range []string{"/bin/defaultsh", "/bin/sh", "/bbin/gosh"} {
		if _, err := os.Stat(filepath.Join(s.Dev.Root, p)); err == nil {
			return []string{filepath.Join(s.Dev.Root, p)}, nil
		}
	}
	return nil, Permanent(errors.New("console: no shell (/bin/defaultsh, /bin/sh, /bbin/gosh)"))
}

func (s *ConsoleService) device() string {
	if s.Device != "" {
		return s.Device
	}
	if c := s.Dev.Board.Console; c != "" {
		p := filepath.Join(s.Dev.Root, "dev", c)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return filepath.Join(s.Dev.Root, "dev/console")
}

// control runs f on f's descriptor without taking it out of the poller (os.File.Fd would put
// it in blocking mode, and then Close and deadlines no longer wake a blocked Read).
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// openPTY allocates a pseudo-terminal: the master, and the slave's path.
func openPTY() (*os.File, string, error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, "", err
	}
	var n uint32
	err = control(m, func(fd int) error {
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
			return fmt.Errorf("unlockpt: %w", err)
		}
		var err error
		if n, err = unix.IoctlGetUint32(fd, unix.TIOCGPTN); err != nil {
			return fmt.Errorf("ptsname: %w", err)
		}
		return nil
	})
	if err != nil {
		m.Close()
		return nil, "", err
	}
	return m, fmt.Sprintf("/dev/pts/%d", n), nil
}

// rawInput makes the console pass every key through (no echo, no line editing, no signals:
// the pty does all that for the shell) and keeps output processing, so log lines still end in
// CR LF. It returns a function restoring the old settings.
func rawInput(fd int) (restore func(), err error) {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	t := *old
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &t); err != nil {
		return nil, err
	}
	return func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}

// Run starts the shell and relays it to the console until it exits (the supervisor then
// respawns it) or ctx ends.
func (s *ConsoleService) Run(ctx context.Context, up func()) error {
	argv, err := s.shell()
	if err != nil {
		return err
	}
	dev := s.device()
	// O_NOCTTY: the console must not become meshd's controlling terminal.
	con, err := os.OpenFile(dev, os.O_RDWR|os.O_APPEND|unix.O_NOCTTY, 0)
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	defer con.Close()
	isTTY := control(con, func(fd int) error {
		_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
		return err
	}) == nil

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), "TERM=linux")
	master, slavePath, perr := openPTY()
	var slave *os.File
	if perr == nil {
		slave, perr = os.OpenFile(slavePath, os.O_RDWR|unix.O_NOCTTY, 0)
		if perr != nil {
			master.Close()
		}
	}
	if perr == nil {
		defer master.Close()
		ws := &unix.Winsize{Row: 24, Col: 80}
		if isTTY {
			_ = control(con, func(fd int) error {
				w, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ)
				if err == nil && w.Row > 0 && w.Col > 0 {
					ws = w
				}
				return err
			})
		}
		_ = control(slave, func(fd int) error { return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, ws) })
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		// Its own session with the pty as controlling terminal: ^C reaches the shell's jobs.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	} else {
		s.Dev.Log.Warn("console: no pseudo-terminal; the shell runs without job control", "err", perr)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = con, con, con
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	}
	fmt.Fprintf(con, "\r\nmeshroot: console shell on %s; meshd keeps running (`meshd -poweroff` powers off cleanly)\r\n", dev)
	err = cmd.Start()
	if slave != nil {
		slave.Close() // the shell has its own copies
	}
	if err != nil {
		return fmt.Errorf("console: start %s: %w", argv[0], err)
	}
	s.Dev.Log.Info("console shell started", "shell", argv[0], "device", dev, "pty", slavePath, "pid", cmd.Process.Pid)

	var relays sync.WaitGroup
	outDone := make(chan struct{})
	if slave != nil {
		relays.Add(1)
		go func() { // shell -> console; ends when the pty is hung up (the shell's session ended)
			defer relays.Done()
			defer close(outDone)
			io.Copy(con, master)
		}()
		if isTTY {
			var restore func()
			if err := control(con, func(fd int) (err error) { restore, err = rawInput(fd); return err }); err == nil {
				defer control(con, func(int) error { restore(); return nil })
			}
			relays.Add(1)
			go func() { // console -> shell; ends when the deadline below wakes it
				defer relays.Done()
				io.Copy(master, con)
			}()
		}
	}
	up()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var result error
	select {
	case err := <-done:
		result = errors.New("console: shell exited")
		if err != nil {
			result = fmt.Errorf("console: shell exited: %w", err)
		}
	case <-ctx.Done():
		// Hang up the shell's session like a terminal would, then make sure.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGHUP)
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	if slave != nil {
		// Let the shell's last output through (a background job may keep the pty open: not
		// for long), wake the console reader (ttys are pollable, so deadlines work), drop the pty.
		select {
		case <-outDone:
		case <-time.After(time.Second):
		}
		_ = con.SetReadDeadline(time.Now())
		master.Close()
		relays.Wait()
	}
	return result
}
