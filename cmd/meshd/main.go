// Command meshd is the device supervisor. u-root's init starts it as uinit (/bin/uinit); it
// detects the board, mounts the data partition, loads the board's kernel modules, brings up
// the LAN, feeds the watchdog, starts a console shell and the router's services (firewall, WAN,
// DHCP, DNS, status API, provisioning, VPN, OTA, log shipping: firmware/device), and prints one
// machine-readable line when they are up:
//
//	MESHROOT-READY {"board":"qemu-virt-arm64","version":"0.1.0","services":["data","lan","watchdog","console"],"uptime_ms":2345}
//
// Stopping: SIGTERM stops the services cleanly and meshd exits (u-root's init then starts its
// own shell); SIGUSR1 reboots and SIGUSR2 powers off, each after the clean stop. On the device
// the terminal's ^C, ^\ and ^Z signals are ignored (a development run stops on ^C).
// `meshd -poweroff`, `meshd -reboot` and `meshd -halt` send those signals to the running meshd
// (found through /run/meshd.pid); u-root's own poweroff/shutdown commands skip the clean stop.
// `-poweroff-when-ready` (e.g. uroot.uinitargs=-poweroff-when-ready on the kernel command
// line) powers off right after the ready line, for boot benchmarks.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"meshroot/firmware"
	"meshroot/firmware/device"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "meshd:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("meshd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("root", "/", "root of the file system (tests and development runs use a directory)")
	boot := fs.String("boot", "auto", "do the device boot work (mounts, modules, LAN, watchdog, console): true, false, or auto (true when started by u-root's init)")
	boardName := fs.String("board", "", "use this catalog board instead of detecting it")
	hostname := fs.String("hostname", "meshroot", "host name to set at boot")
	noConsole := fs.Bool("no-console", false, "do not run a console shell")
	factory := fs.String("factory", "", "factory data file (default on the device: QEMU's fw_cfg opt/meshroot/factory)")
	afterReady := fs.Bool("poweroff-when-ready", false, "power off right after the ready line (boot benchmarks)")
	poweroff := fs.Bool("poweroff", false, "ask the running meshd to stop cleanly and power off")
	reboot := fs.Bool("reboot", false, "ask the running meshd to stop cleanly and reboot")
	halt := fs.Bool("halt", false, "ask the running meshd to stop cleanly and exit")
	version := fs.Bool("version", false, "print the firmware version and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "meshd: unexpected arguments %q\n", fs.Args())
		fs.Usage()
		return flag.ErrHelp
	}

	switch {
	case *version:
		rel, err := firmware.ReadRelease(*root)
		fmt.Fprintln(stdout, rel.Version)
		return err
	case *poweroff:
		return firmware.Request(*root, firmware.PowerOff)
	case *reboot:
		return firmware.Request(*root, firmware.Reboot)
	case *halt:
		return firmware.Request(*root, firmware.Halt)
	}

	bootMode, err := bootMode(*boot, *root)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	actions := make(chan firmware.Action, 1)
	sigs := make(chan os.Signal, 8)
	// Caught rather than ignored (an ignored signal would stay ignored in the console shell
	// meshd starts): SIGHUP always; on the device also the terminal's job-control signals,
	// because until the console shell takes the console over, meshd's session owns it and a
	// stray ^C, ^\ or ^Z typed on the serial line would stop the router.
	signal.Notify(sigs, firmware.SignalReboot, firmware.SignalPowerOff, syscall.SIGHUP, syscall.SIGINT,
		syscall.SIGQUIT, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU)
	defer signal.Stop(sigs)
	if bootMode {
		// u-root's init made meshd's session own the console. Give it up (now that SIGHUP is
		// caught: the kernel sends it to meshd's process group), so that meshd exiting does not
		// hang up the console under init and the shell init starts next.
		_ = unix.IoctlSetInt(0, unix.TIOCNOTTY, 0)
	}
	go func() {
		for s := range sigs {
			switch s {
			case firmware.SignalReboot:
				actions <- firmware.Reboot
			case firmware.SignalPowerOff:
				actions <- firmware.PowerOff
			case syscall.SIGINT:
				if !bootMode {
					cancel() // a development run stops on ^C
				}
			case syscall.SIGQUIT:
				if !bootMode {
					cancel()
				}
			}
		}
	}()

	opts := firmware.Options{
		Root:      *root,
		Boot:      bootMode,
		Board:     *boardName,
		Console:   stdout,
		Hostname:  *hostname,
		NoConsole: *noConsole,
		Actions:   actions,
	}
	if *afterReady {
		opts.AfterReady = firmware.PowerOff
	}
	if bootMode {
		// The router's services touch the kernel's network configuration: only on the device,
		// never in a development run on a workstation.
		opts.Services = device.Services(device.Options{FactoryFile: *factory, Hostname: *hostname})
	}
	a, err := firmware.Run(ctx, opts)
	if bootMode && os.Getpid() == 1 && a == firmware.Halt {
		// PID 1 must not exit (the kernel would panic): power off instead.
		_ = firmware.RealPower{}.PowerOff()
	}
	return err
}

// bootMode decides whether this is the device boot: explicitly, or (auto) when meshd runs as
// u-root's uinit: parent is PID 1, the root is "/", and the root has u-root's /init.
func bootMode(flagValue, root string) (bool, error) {
	switch flagValue {
	case "true":
		return true, nil
	case "false":
		return false, nil
	case "auto":
		if root != "/" || os.Getppid() != 1 {
			return false, nil
		}
		_, err := os.Lstat(filepath.Join(root, "init"))
		return err == nil, nil
	}
	return false, fmt.Errorf("-boot %q: want true, false or auto", flagValue)
}
