package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"meshroot/board"
	"meshroot/firmware"
	"meshroot/image"
	"meshroot/image/qemu"
)

func init() {
	register(command{
		name:    "run",
		summary: "build the image for a board and boot the virtual router on this terminal (Ctrl-A X quits)",
		run:     runRun,
	})
	register(command{
		name:    "boot",
		summary: "boot an image built earlier (boot --image DIR), interactively or until its ready line",
		run:     runBoot,
	})
}

// vmFlags are the VM flags shared by run and boot.
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

func runRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("meshctl run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var bf buildFlags
	bf.register(fs)
	var vf vmFlags
	vf.register(fs)
	out := fs.String("out", "out", "output directory; the image goes to <out>/<board>/")
	noBuild := fs.Bool("no-build", false, "boot the image already in <out>/<board>/ instead of building")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "meshctl run: unexpected arguments %q\n", fs.Args())
		return errUsage
	}
	dir := filepath.Join(*out, bf.board)
	var m image.Manifest
	var err error
	if *noBuild {
		m, err = image.ReadManifest(dir)
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
	return boot(ctx, dir, m, vf, true, 0, stdout, stderr)
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
