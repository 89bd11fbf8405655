package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"meshroot/board"
	"meshroot/image"
)

func init() {
	register(command{
		name:    "image",
		summary: "build a firmware image (image build --board B -o DIR), or check one (image verify DIR)",
		run:     runImage,
	})
}

func runImage(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: meshctl image build --board B -o DIR [flags] | meshctl image verify DIR")
		return errUsage
	}
	switch args[0] {
	case "build":
		_, err := imageBuild(ctx, args[1:], stdout, stderr)
		return err
	case "verify":
		return imageVerify(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "meshctl image: unknown subcommand %q (want build or verify)\n", args[0])
	return errUsage
}

// listFlag collects a repeated flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// buildFlags are the image build flags shared by `image build` and `run`.
type buildFlags struct {
	board, version, compression, otaRoot, sysroot string
	modules, files, programs                      listFlag
	verbose, noCache                              bool
}

func (f *buildFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.board, "board", "qemu-virt-arm64", "catalog board to build for ("+strings.Join(board.Names(), ", ")+")")
	fs.StringVar(&f.version, "version", "", "firmware version (default: git describe --always --dirty, or dev)")
	fs.StringVar(&f.compression, "compression", "zstd", "initramfs compression: zstd or xz (smaller, slower to unpack)")
	fs.Var(&f.modules, "module", "extra kernel module to ship (repeatable; dependencies are added)")
	fs.Var(&f.files, "file", "extra file HOST:PATH to put in the image (repeatable)")
	fs.Var(&f.programs, "program", "a dynamically linked program in --sysroot (e.g. usr/sbin/hostapd) to ship with its interpreter and shared libraries (repeatable)")
	fs.StringVar(&f.sysroot, "sysroot", "", "the board's userland for --program (default $MESHROOT_CACHE/sysroot-<arch>, as `make deps` unpacks it for arm64)")
	fs.StringVar(&f.otaRoot, "ota-root", "", "the fleet's OTA trust root (the update repository's TUF metadata/root.json) to ship at /"+image.OTARootPath+"; without it the device does not update")
	fs.BoolVar(&f.verbose, "v", false, "also print u-root's build log")
	fs.BoolVar(&f.noCache, "no-cache", false, "rebuild the u-root busybox binary even if a cached one matches")
}

func (f *buildFlags) options(outDir string, progress func(string, ...any)) (image.Options, error) {
	b, err := board.Lookup(f.board)
	if err != nil {
		return image.Options{}, err
	}
	comp, err := image.ParseCompression(f.compression)
	if err != nil {
		return image.Options{}, err
	}
	o := image.Options{
		Board: b, OutDir: outDir, Version: f.version, Modules: f.modules,
		Compression: comp, Progress: progress, Verbose: f.verbose, NoCache: f.noCache,
	}
	if f.otaRoot != "" {
		b, err := os.ReadFile(f.otaRoot)
		if err != nil {
			return image.Options{}, fmt.Errorf("-ota-root: %w", err)
		}
		if _, err := image.ParseOTARoot(b); err != nil {
			return image.Options{}, fmt.Errorf("-ota-root %s: %w", f.otaRoot, err)
		}
		o.OTARoot = b
	}
	if len(f.programs) > 0 {
		sysroot := f.sysroot
		if sysroot == "" {
			src, err := image.FindSourceDir()
			if err != nil {
				return image.Options{}, fmt.Errorf("-program: give --sysroot (%w)", err)
			}
			sysroot = filepath.Join(image.DefaultCacheDir(src), "sysroot-"+b.Arch)
		}
		for _, p := range f.programs {
			o.Programs = append(o.Programs, image.Program{Path: p, Sysroot: sysroot})
		}
	}
	for _, spec := range f.files {
		host, path, ok := strings.Cut(spec, ":")
		if !ok || host == "" || path == "" {
			return image.Options{}, fmt.Errorf("-file %q: want HOST:PATH", spec)
		}
		o.Files = append(o.Files, image.File{Host: host, Path: path})
	}
	return o, nil
}

func progressTo(w io.Writer) func(string, ...any) {
	return func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
}

func imageBuild(ctx context.Context, args []string, stdout, stderr io.Writer) (image.Manifest, error) {
	fs := flag.NewFlagSet("meshctl image build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var bf buildFlags
	bf.register(fs)
	out := fs.String("o", "", "output directory (created): vmlinuz, initramfs.cpio.zst, manifest.json")
	if err := fs.Parse(args); err != nil {
		return image.Manifest{}, errUsage
	}
	if *out == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: meshctl image build --board B -o DIR [flags]")
		fs.PrintDefaults()
		return image.Manifest{}, errUsage
	}
	o, err := bf.options(*out, progressTo(stderr))
	if err != nil {
		return image.Manifest{}, err
	}
	m, err := image.Build(ctx, o)
	if err != nil {
		return m, err
	}
	printSummary(stdout, *out, m)
	return m, nil
}

func printSummary(w io.Writer, dir string, m image.Manifest) {
	fmt.Fprintf(w, "image %s for %s (%s), kernel %s\n", m.Version, m.Board, m.Arch, m.KernelVersion)
	fmt.Fprintf(w, "  %s/%s  %d bytes\n", dir, m.Kernel.Name, m.Kernel.Size)
	fmt.Fprintf(w, "  %s/%s  %d bytes (%d raw; budget %d compressed, %d raw)\n",
		dir, m.Initramfs.Name, m.Initramfs.Size, m.RawSize, m.Budget.Compressed, m.Budget.Raw)
	fmt.Fprintf(w, "  %d commands, %d kernel modules, built in %s\n",
		len(m.Commands), len(m.Modules), (time.Duration(m.BuildSeconds * float64(time.Second))).Round(100*time.Millisecond))
	if r := m.OTARoot; r != nil {
		fmt.Fprintf(w, "  OTA trust root /%s: version %d, %d of %d keys, expires %s, sha256 %s\n",
			r.Path, r.Version, r.Threshold, len(r.KeyIDs), r.Expires.Format(time.RFC3339), r.SHA256)
	} else {
		fmt.Fprintf(w, "  no OTA trust root (--ota-root): the device will not update\n")
	}
}

func imageVerify(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("meshctl image verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the manifest as JSON")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: meshctl image verify [-json] DIR")
		return errUsage
	}
	dir := fs.Arg(0)
	m, err := image.ReadManifest(dir)
	if err != nil {
		return err
	}
	if err := image.Verify(dir, m); err != nil {
		return err
	}
	if err := m.Budget.Check(m); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(m)
	}
	printSummary(stdout, dir, m)
	fmt.Fprintln(stdout, "  sizes and sha256 match the manifest; within budget")
	return nil
}
