package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"meshroot/board"
	"meshroot/firmware"
	"meshroot/image"
	"meshroot/image/qemu"
)

func init() {
	register(command{
		name: "run",
		summary: "the virtual site (make run): build the arm64 image, start the concentrator, ISP and cloud, boot the router " +
			"in QEMU, onboard it with the app simulator, show live status until Ctrl-C, tear everything down",
		run: runRun,
	})
	register(command{
		name:    "boot",
		summary: "boot an image built earlier (boot --image DIR), interactively or until its ready line",
		run:     runBoot,
	})
}

// vmFlags are the VM flags of boot.
type vmFlags struct {
	mem, smp  int
	disk      string
	freshDisk bool
	append    listFlag
}

func (f *vmFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&f.mem, "mem", 512, "guest memory in MiB")
	fs.IntVar(&f.smp, "smp", 1, "guest vCPUs")
	fs.StringVar(&f.disk, "disk", "", "data disk image, created to the board's flash layout if missing (default: <image dir>/disk.img)")
	fs.BoolVar(&f.freshDisk, "fresh-disk", false, "recreate the data disk (erases /data)")
	fs.Var(&f.append, "append", "extra kernel command-line argument (repeatable)")
}

// runRun is `make run`: the product working as a whole in a virtual site (firmware/sitelab).
func runRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("meshctl run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var bf buildFlags
	bf.register(fs)
	out := fs.String("out", "out", "output directory: the image goes to <out>/<board>/, the run's files to <out>/run/")
	noBuild := fs.Bool("no-build", false, "boot the image already in <out>/<board>/ instead of building it")
	imageDir := fs.String("image", "", "boot the image in this directory (no build)")
	mem := fs.Int("mem", 512, "router memory in MiB")
	var appendArgs listFlag
	fs.Var(&appendArgs, "append", "extra kernel command-line argument (repeatable)")
	radios := fs.Int("radios", 2, "simulated radios (mac80211_hwsim) the router creates at boot on a QEMU board (meshroot.hwsim=N; 0: none): the site's Wi-Fi is served on them")
	plain := fs.Bool("plain", false, "print one line per change instead of redrawing the screen (the default when stdout is not a terminal)")
	every := fs.Duration("every", time.Second, "status poll interval (the VPC ping runs every two)")
	runDir := fs.String("run-dir", "", "the run's directory, emptied at start (default <out>/run)")
	prefix := fs.String("ns-prefix", sitePrefix, "namespace prefix of this run (a crashed run's namespaces with it are swept at start)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: meshctl run [flags]   (as root; `+"`make run`"+` runs it)

Builds the image, starts the virtual site (two strongSwan + FRR concentrator endpoints and a VPC
host, the ISP's DHCP and DNS, a WAN host, the reference cloud), boots the router in QEMU with its
WAN and LAN on TAP devices and two simulated radios, pairs it with the app simulator from a LAN
client namespace, and shows the onboarding steps, the tunnels, BGP, the learned routes, the site's
Wi-Fi and a LAN -> VPC ping until Ctrl-C;
then tears everything down. The router's console goes to <out>/run/console.log;
`+"`meshctl site console`"+` attaches to it.

`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "meshctl run: unexpected arguments %q\n", fs.Args())
		return errUsage
	}
	if os.Geteuid() != 0 {
		return errors.New("meshctl run needs root (network namespaces, TAP devices, QEMU on them): run `sudo make run`")
	}
	if *runDir == "" {
		*runDir = filepath.Join(*out, siteRunDirName)
	}
	dir := *imageDir
	if dir == "" {
		dir = filepath.Join(*out, bf.board)
	}
	var m image.Manifest
	var err error
	if *noBuild || *imageDir != "" {
		if m, err = image.ReadManifest(dir); err == nil {
			err = image.Verify(dir, m)
		}
	} else {
		var o image.Options
		if o, err = bf.options(dir, progressTo(stderr)); err != nil {
			return err
		}
		m, err = image.Build(ctx, o)
		if err == nil {
			printSummary(stderr, dir, m)
		}
	}
	if err != nil {
		return err
	}
	if err := needTools(m.Arch); err != nil {
		return err
	}
	kargs, err := withRadios(m.Board, *radios, appendArgs)
	if err != nil {
		return err
	}
	return runSite(ctx, siteOptions{ImageDir: dir, Manifest: m, RunDir: *runDir, Prefix: *prefix, MemoryMB: *mem,
		Append: kargs, Stdout: stdout, Terminal: !*plain && isTerminal(stdout), Every: *every})
}

// withRadios adds meshroot.hwsim=n to the kernel arguments of a board with simulated radios
// (unless the arguments set it already); other boards have their own radios or none.
func withRadios(boardName string, n int, args []string) ([]string, error) {
	if n < 0 || n > 8 {
		return nil, fmt.Errorf("meshctl run: --radios %d: want 0..8", n)
	}
	b, err := board.Lookup(boardName)
	if err != nil || b.Hwsim == nil || n == 0 {
		return args, nil
	}
	for _, a := range args {
		if strings.HasPrefix(a, board.HwsimParam+"=") {
			return args, nil
		}
	}
	return append(slices.Clone(args), fmt.Sprintf("%s=%d", board.HwsimParam, n)), nil
}

// needTools checks the programs the virtual site runs.
func needTools(arch string) error {
	qbin, err := qemu.Binary(arch)
	if err != nil {
		return err
	}
	var missing []string
	for _, name := range []string{"ip", "ping", "charon", "swanctl", "zebra", "bgpd", "vtysh", qbin} {
		if _, err := exec.LookPath(name); err == nil {
			continue
		}
		found := false
		for _, d := range []string{"/usr/sbin", "/sbin", "/usr/lib/frr", "/usr/lib/ipsec"} {
			if _, err := os.Stat(filepath.Join(d, name)); err == nil {
				found = true
			}
		}
		if !found {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s: run `make deps` (or `make run`, which runs it)", strings.Join(missing, ", "))
	}
	return nil
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func runBoot(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("meshctl boot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var vf vmFlags
	vf.register(fs)
	dir := fs.String("image", "", "image directory (as `meshctl image build -o` writes it)")
	untilReady := fs.Bool("until-ready", false, "boot without the terminal, print the console, and stop QEMU after meshd's ready line")
	timeout := fs.Duration("timeout", 5*time.Minute, "with -until-ready: how long to wait for the ready line")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *dir == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: meshctl boot --image DIR [-until-ready] [flags]")
		fs.PrintDefaults()
		return errUsage
	}
	m, err := image.ReadManifest(*dir)
	if err != nil {
		return err
	}
	if err := image.Verify(*dir, m); err != nil {
		return err
	}
	if *untilReady {
		return boot(ctx, *dir, m, vf, false, *timeout, stdout, stderr)
	}
	return boot(ctx, *dir, m, vf, true, 0, stdout, stderr)
}

// boot starts the image with its data disk and watchdog. Interactive: the console is this
// terminal until QEMU exits (Ctrl-A X). Otherwise the console is copied to stdout and QEMU is
// stopped after the ready line, which is summarised on stderr.
func boot(ctx context.Context, dir string, m image.Manifest, vf vmFlags, interactive bool, timeout time.Duration, stdout, stderr io.Writer) error {
	b, err := board.Lookup(m.Board)
	if err != nil {
		return err
	}
	disk := vf.disk
	if disk == "" {
		disk = filepath.Join(dir, "disk.img")
	}
	if vf.freshDisk {
		err = qemu.CreateDisk(ctx, disk, b.Flash, qemu.DiskOptions{})
		if err == nil {
			fmt.Fprintf(stderr, "created data disk %s (%s layout)\n", disk, b.Name)
		}
	} else {
		var created bool
		created, err = qemu.EnsureDisk(ctx, disk, b.Flash, qemu.DiskOptions{})
		if created {
			fmt.Fprintf(stderr, "created data disk %s (%s layout)\n", disk, b.Name)
		}
	}
	if err != nil {
		return err
	}
	cfg := qemu.ImageConfig(dir, m)
	cfg.Disk = disk
	cfg.Watchdog = b.Watchdog != ""
	cfg.MemoryMB, cfg.SMP = vf.mem, vf.smp
	cfg.Append = vf.append
	cfg.LogPath = filepath.Join(dir, "console.log")
	cfg.Echo = stdout
	cfg.Interactive = interactive
	if interactive {
		fmt.Fprintf(stderr, "booting %s %s in QEMU (TCG); console log in %s\n", m.Board, m.Version, cfg.LogPath)
		fmt.Fprintln(stderr, "quit QEMU with Ctrl-A then X; `meshd -poweroff` on the console powers off cleanly")
		vm, err := qemu.Start(ctx, cfg)
		if err != nil {
			return err
		}
		if err := vm.Wait(); err != nil && ctx.Err() == nil {
			return fmt.Errorf("qemu: %w", err)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	vm, err := qemu.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer vm.Stop()
	l, err := vm.WaitFor(ctx, firmware.ReadyMarker)
	if err != nil {
		return err
	}
	info, err := firmware.ParseReadyLine(l.Text)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "\nmeshctl: %s ready %.2fs after QEMU started (guest uptime %d ms), services %v\n",
		info.Board, l.At.Seconds(), info.UptimeMS, info.Services)
	return nil
}
