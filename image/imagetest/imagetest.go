// Package imagetest gives tests a built firmware image and a booted VM without building the
// same image twice.
//
// Image(t, "qemu-virt-arm64") returns a complete image directory. Images are cached on disk
// under $MESHROOT_CACHE/images (default .cache/images in the repository), keyed by a digest of
// everything that goes into them: the module's non-test source files, go.mod/go.sum, the
// kernel, the board name and the options. The first test process to need an image builds it
// while holding a file lock; every other test (in this package or any other, in parallel `go
// test` processes) waits and reuses it, and later `make test` runs reuse it until the source
// changes. Setting MESHROOT_IMAGE_DIR to a directory of prebuilt images (<dir>/<board>/, as
// `meshctl image build` writes them) makes Image use those instead.
//
// Boot(t, dir, m) boots an image with a fresh data disk laid out like the board's flash, logs
// the console to a file, and stops QEMU in t.Cleanup. WaitReady waits for meshd's ready line.
package imagetest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"meshroot/board"
	"meshroot/firmware"
	"meshroot/image"
	"meshroot/image/internal/buildreq"
	"meshroot/image/qemu"
	"meshroot/internal/testenv"
)

// Options customise an image beyond its board (each distinct Options is its own cached image).
type Options struct {
	// Version is the release version ("" gives "test-<digest>").
	Version string
	// Modules, Files and ExtraCommands are passed to image.Build. ExtraCommands may name this
	// module's own main packages (internal/ ones too, e.g. "meshroot/radio/internal/cmd/radiotest"):
	// each is built with `go build`, static, into /bin/<name> for the board's arch.
	Modules       []string
	Files         []image.File
	ExtraCommands []string
	// Compression of the initramfs ("" for the default).
	Compression image.Compression
	// OTARoot is a TUF root.json to ship as the image's OTA trust root (image.Options.OTARoot).
	OTARoot []byte `json:",omitempty"`
	// Budget replaces the image's size budget (image.BudgetFor the board), for test images
	// only: a test image that carries wpa_supplicant and its libraries, or test binaries, may
	// be bigger than the product's budget allows (every image of a board with radios already
	// carries the product's hostapd, regulatory.db and Wi-Fi modules). The manifest records
	// the budget used, so a product image is never judged by it. Zero fields mean no limit.
	Budget *image.Budget `json:",omitempty"`
	// Programs are sysroot programs with their libraries (image.Options.Programs), e.g. the
	// arm64 wpa_supplicant from Sysroot.
	Programs []image.Program `json:",omitempty"`
}

// Sysroot returns the arm64 userland `make deps` unpacks (scripts/fetch-arm64-userland.sh:
// Debian's arm64 hostapd, wpa_supplicant, iw and their libraries) for image.Program, and skips
// the test, saying how to get it, when it is absent.
func Sysroot(tb testing.TB) string {
	tb.Helper()
	dir := filepath.Join(testenv.CacheDir(tb), "sysroot-arm64")
	if _, err := os.Stat(filepath.Join(dir, "packages.txt")); err != nil {
		tb.Skipf("no arm64 sysroot at %s: run `make deps` (scripts/fetch-arm64-userland.sh %s)", dir, dir)
	}
	return dir
}

type entry struct {
	once sync.Once
	dir  string
	m    image.Manifest
	err  error
}

var (
	mu    sync.Mutex
	cache = map[string]*entry{}
)

// Image returns the directory and manifest of the default image for a catalog board.
func Image(tb testing.TB, boardName string) (string, image.Manifest) {
	tb.Helper()
	return ImageWith(tb, boardName, Options{})
}

// ImageWith returns an image for a board built with extra options.
func ImageWith(tb testing.TB, boardName string, o Options) (string, image.Manifest) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("builds a firmware image (about 20-50 s): skipped in -short mode")
	}
	b, err := board.Lookup(boardName)
	if err != nil {
		tb.Fatalf("board.Lookup(%q) = %v", boardName, err)
	}
	if o.Version == "" && len(o.Modules) == 0 && len(o.Files) == 0 && len(o.ExtraCommands) == 0 && o.Compression == "" && o.OTARoot == nil && len(o.Programs) == 0 {
		if pre := os.Getenv("MESHROOT_IMAGE_DIR"); pre != "" {
			dir := filepath.Join(pre, boardName)
			m, err := image.ReadManifest(dir)
			if err != nil {
				tb.Fatalf("MESHROOT_IMAGE_DIR=%s: %v", pre, err)
			}
			return dir, m
		}
	}
	src := testenv.RepoRoot(tb)
	kdir := image.DefaultKernelDir(src, b.Arch)
	key, err := Key(src, kdir, boardName, o)
	if err != nil {
		tb.Fatalf("image key: %v", err)
	}
	mu.Lock()
	e := cache[key]
	if e == nil {
		e = &entry{}
		cache[key] = e
	}
	mu.Unlock()
	e.once.Do(func() {
		e.dir, e.m, e.err = buildShared(tb, src, kdir, b, key, o)
	})
	if e.err != nil {
		tb.Fatalf("image for %s: %v", boardName, e.err)
	}
	return e.dir, e.m
}

// buildShared builds the image into the cache directory for key unless it is there already,
// holding an exclusive lock so parallel test processes build it once.
func buildShared(tb testing.TB, src, kdir string, b board.Board, key string, o Options) (string, image.Manifest, error) {
	root := filepath.Join(testenv.CacheDir(tb), "images")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", image.Manifest{}, err
	}
	name := b.Name + "-" + key[:16]
	dir := filepath.Join(root, name)
	lock, err := os.OpenFile(dir+".lock", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return "", image.Manifest{}, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", image.Manifest{}, fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if m, err := image.ReadManifest(dir); err == nil {
		if err := image.Verify(dir, m); err == nil {
			tb.Logf("image %s: reusing %s (built in %.1fs)", b.Name, dir, m.BuildSeconds)
			markInUse(dir)
			return dir, m, nil
		}
	}
	os.RemoveAll(dir)
	version := o.Version
	if version == "" {
		version = "test-" + key[:12]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	tb.Logf("image %s: building into %s", b.Name, dir)
	req := buildreq.Request{
		Board:         b.Name,
		OutDir:        dir,
		Version:       version,
		SourceDir:     src,
		KernelDir:     kdir,
		Modules:       o.Modules,
		Files:         o.Files,
		ExtraCommands: o.ExtraCommands,
		Compression:   o.Compression,
		OTARoot:       o.OTARoot,
		Budget:        o.Budget,
		Programs:      o.Programs,
	}
	m, err := buildInHelper(ctx, tb, src, req)
	if err != nil {
		os.RemoveAll(dir)
		return "", image.Manifest{}, err
	}
	markInUse(dir)
	prune(root, b.Name, name)
	return dir, m, nil
}

// inUse holds a shared lock on <image>.use for every image this process handed out, until
// the process ends, so another test process pruning old images leaves them alone.
var inUse []*os.File

func markInUse(dir string) {
	f, err := os.OpenFile(dir+".use", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return
	}
	if syscall.Flock(int(f.Fd()), syscall.LOCK_SH) != nil {
		f.Close()
		return
	}
	mu.Lock()
	inUse = append(inUse, f)
	mu.Unlock()
}

// buildInHelper builds the image in a separate process (image/internal/buildimage, compiled
// without -race into a temporary directory, which Go's build cache makes quick): under the
// race detector the compression alone takes about 7x longer. If the helper cannot be
// compiled, it builds in this process.
func buildInHelper(ctx context.Context, tb testing.TB, src string, req buildreq.Request) (image.Manifest, error) {
	tmp, err := os.MkdirTemp("", "meshroot-buildimage-")
	if err != nil {
		return image.Manifest{}, err
	}
	defer os.RemoveAll(tmp)
	helper := filepath.Join(tmp, "buildimage")
	gobuild := exec.CommandContext(ctx, goBinary(), "build", "-o", helper, "./image/internal/buildimage")
	gobuild.Dir = src
	if out, err := gobuild.CombinedOutput(); err != nil {
		tb.Logf("image: building in the test process (go build buildimage: %v: %s)", err, out)
		return req.Build(ctx, tb.Logf)
	}
	in, err := json.Marshal(req)
	if err != nil {
		return image.Manifest{}, err
	}
	cmd := exec.CommandContext(ctx, helper)
	cmd.Stdin = bytes.NewReader(in)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return image.Manifest{}, err
	}
	if err := cmd.Start(); err != nil {
		return image.Manifest{}, err
	}
	var lastLines []string
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		tb.Logf("%s", sc.Text())
		lastLines = append(lastLines, sc.Text())
		if len(lastLines) > 20 {
			lastLines = lastLines[1:]
		}
	}
	if err := cmd.Wait(); err != nil {
		return image.Manifest{}, fmt.Errorf("buildimage: %w: %s", err, strings.Join(lastLines, "\n"))
	}
	var m image.Manifest
	if err := json.Unmarshal(stdout.Bytes(), &m); err != nil {
		return image.Manifest{}, fmt.Errorf("buildimage manifest: %w", err)
	}
	return m, nil
}

// goBinary is the go command: on PATH, else in /usr/local/go (the README's install).
func goBinary() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// prune removes older cached images of a board, keeping the newest few (other option sets of
// the same board are images too).
func prune(root, boardName, keep string) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return
	}
	type old struct {
		name string
		mod  time.Time
	}
	var olds []old
	for _, e := range ents {
		n := e.Name()
		if !e.IsDir() || n == keep || !strings.HasPrefix(n, boardName+"-") || len(n) != len(keep) {
			continue
		}
		if info, err := e.Info(); err == nil {
			olds = append(olds, old{n, info.ModTime()})
		}
	}
	sort.Slice(olds, func(i, j int) bool { return olds[i].mod.After(olds[j].mod) })
	const keepOthers = 3
	for i, o := range olds {
		if i < keepOthers {
			continue
		}
		// Only remove what nobody is building (.lock) or using (.use): take both without waiting.
		var locks []*os.File
		free := true
		for _, ext := range []string{".lock", ".use"} {
			f, err := os.OpenFile(filepath.Join(root, o.name+ext), os.O_RDWR|os.O_CREATE, 0o644)
			if err != nil {
				free = false
				break
			}
			locks = append(locks, f)
			if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
				free = false
				break
			}
		}
		if free {
			os.RemoveAll(filepath.Join(root, o.name))
			for _, f := range locks {
				os.Remove(f.Name())
			}
		}
		for _, f := range locks {
			f.Close()
		}
	}
}

// Key digests what an image is made of: every file of the source tree but tests and Markdown
// (skipping .git, .cache, out, testdata and other hidden directories), the kernel's version file and the
// kernel and module tree identity (path, size, mtime), the board name and the options.
func Key(src, kdir, boardName string, o Options) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "imagetest v1\nboard %s\n", boardName)
	ob, err := json.Marshal(o)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(h, "options %s\n", ob)
	// The caller's files and programs, and the radio userland Build adds on its own (hostapd
	// and its libraries, regulatory.db).
	files, programs := slices.Clone(o.Files), slices.Clone(o.Programs)
	if b, err := board.Lookup(boardName); err == nil {
		if u, err := image.RadioUserlandFor(b, src); err == nil {
			files, programs = append(files, u.Files...), append(programs, u.Programs...)
		}
	}
	for _, p := range programs {
		c, err := image.ELFClosure(p.Sysroot, p.Path)
		if err != nil {
			return "", err
		}
		files = append(files, c.Files...)
	}
	for _, f := range files {
		if f.Host != "" {
			if err := hashFileID(h, f.Host); err != nil {
				return "", err
			}
		}
	}
	for _, p := range []string{filepath.Join(kdir, "version"), filepath.Join(kdir, "vmlinuz")} {
		if err := hashFileID(h, p); err != nil {
			return "", err
		}
	}
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if p != src && (strings.HasPrefix(name, ".") || name == "out" || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasPrefix(name, ".") || strings.HasSuffix(name, "_test.go") || strings.HasSuffix(name, ".md") || !d.Type().IsRegular() {
			return nil
		}
		rel, _ := filepath.Rel(src, p)
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		fmt.Fprintf(h, "file %s\n", rel)
		_, err = io.Copy(h, f)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("hash source tree: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func hashFileID(w io.Writer, p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "input %s %d %d\n", p, st.Size(), st.ModTime().UnixNano())
	return nil
}

// BootOptions tune Boot.
type BootOptions struct {
	// Config edits the QEMU configuration before the start (NICs, memory, kernel args...).
	Config func(*qemu.Config)
	// Disk is an existing disk image to use instead of a fresh one ("" for fresh).
	Disk string
	// NoDisk boots without a data disk.
	NoDisk bool
	// Timeout bounds the VM's life (default 5 minutes).
	Timeout time.Duration
}

// Boot starts the image in QEMU (TCG) with a fresh data disk laid out like the board's flash
// and its watchdog, logging the console to a file in a temporary directory (kept and named in
// the test log when the test fails). QEMU is stopped in t.Cleanup. Call testenv.Integration
// first.
func Boot(tb testing.TB, dir string, m image.Manifest, o BootOptions) *qemu.VM {
	tb.Helper()
	b, err := board.Lookup(m.Board)
	if err != nil {
		tb.Fatalf("board.Lookup(%q) = %v", m.Board, err)
	}
	bin, err := qemu.Binary(m.Arch)
	if err != nil {
		tb.Fatal(err)
	}
	testenv.Command(tb, bin)
	work, err := os.MkdirTemp("", "meshroot-vm-")
	if err != nil {
		tb.Fatal(err)
	}
	cfg := qemu.ImageConfig(dir, m)
	cfg.Watchdog = b.Watchdog != ""
	cfg.LogPath = filepath.Join(work, "console.log")
	switch {
	case o.NoDisk:
	case o.Disk != "":
		cfg.Disk = o.Disk
	default:
		cfg.Disk = filepath.Join(work, "disk.img")
		if err := qemu.CreateDisk(context.Background(), cfg.Disk, b.Flash, qemu.DiskOptions{}); err != nil {
			os.RemoveAll(work)
			tb.Fatalf("CreateDisk: %v", err)
		}
	}
	if o.Config != nil {
		o.Config(&cfg)
	}
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	vm, err := qemu.Start(ctx, cfg)
	if err != nil {
		cancel()
		os.RemoveAll(work)
		tb.Fatalf("qemu.Start: %v", err)
	}
	tb.Cleanup(func() {
		_ = vm.Stop()
		cancel()
		if tb.Failed() {
			tb.Logf("console log kept in %s", cfg.LogPath)
			return
		}
		os.RemoveAll(work)
	})
	return vm
}

// WaitReady waits for meshd's ready line and parses it.
func WaitReady(ctx context.Context, vm *qemu.VM) (firmware.ReadyInfo, qemu.Line, error) {
	l, err := vm.WaitFor(ctx, firmware.ReadyMarker)
	if err != nil {
		return firmware.ReadyInfo{}, l, err
	}
	info, err := firmware.ParseReadyLine(l.Text)
	if err != nil {
		return info, l, fmt.Errorf("%w in %q", err, l.Text)
	}
	return info, l, nil
}

// ShellReady waits until the console shell meshd runs on the serial console executes what is
// typed: it types an arithmetic echo (every 5 s, clearing the line first with Ctrl-U) until
// the computed answer comes back. Typing before the shell reads would be lost.
func ShellReady(ctx context.Context, vm *qemu.VM) error {
	for {
		if err := vm.Send("\x15echo MR-$((6*7))\n"); err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := vm.WaitFor(wctx, "MR-42")
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-vm.Done():
			return fmt.Errorf("console shell: %w", err)
		default:
		}
		if ctx.Err() != nil {
			return fmt.Errorf("console shell: %w", err)
		}
	}
}

// Poweroff shuts the VM down the way an engineer does on the serial console, `meshd -poweroff`
// (meshd stops its services, syncs and unmounts, then powers off), and waits for QEMU to exit
// by itself with status 0. Evidence of the clean path: meshd's "shutting down" log line, then
// the kernel's own "reboot: Power down" (printed synchronously; meshd's last lines may still sit
// in the UART's buffer when the power goes), and no kernel panic. It fails the test otherwise.
func Poweroff(ctx context.Context, tb testing.TB, vm *qemu.VM) {
	tb.Helper()
	if err := ShellReady(ctx, vm); err != nil {
		tb.Fatalf("Poweroff: %v", err)
	}
	if err := vm.Send("meshd -poweroff\n"); err != nil {
		tb.Fatalf("Poweroff: %v", err)
	}
	if _, err := vm.WaitFor(ctx, `"msg":"shutting down","action":"poweroff"`); err != nil {
		tb.Fatalf("Poweroff: meshd did not start a clean power-off: %v", err)
	}
	select {
	case <-vm.Done():
	case <-ctx.Done():
		tb.Fatalf("Poweroff: QEMU still running after the guest was asked to power off\n%s", vm.Tail(20))
	}
	if err := vm.Wait(); err != nil {
		tb.Errorf("Poweroff: QEMU exit = %v; want status 0 after a guest power-off", err)
	}
	var powerDown bool
	for _, l := range vm.Lines() {
		powerDown = powerDown || strings.Contains(l.Text, "reboot: Power down")
		if strings.Contains(l.Text, "Kernel panic") {
			tb.Errorf("Poweroff: console shows a kernel panic: %s", l.Text)
		}
	}
	if !powerDown {
		tb.Errorf("Poweroff: no \"reboot: Power down\" from the kernel\n%s", vm.Tail(20))
	}
}
