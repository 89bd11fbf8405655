package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/u-root/gobusybox/src/pkg/golang"
	"github.com/u-root/mkuimage/cpio"
	"github.com/u-root/mkuimage/uimage"
	"github.com/u-root/uio/llog"

	"meshroot/board"
)

// CorePackage is the import path prefix of u-root's core commands.
const CorePackage = "github.com/u-root/u-root/cmds/core/"

// CoreCommands are the u-root core commands every image carries: what a field engineer needs on
// the serial console to look at a router (files, processes, modules, network, watchdog, power).
// Each one must be a `tool` directive in go.mod, or `go mod tidy` drops u-root from the module
// and the build fails (TestCoreCommandsAreTools checks this).
var CoreCommands = []string{
	"init", "gosh",
	"ls", "cat", "cp", "mv", "rm", "mkdir", "ln", "echo", "find", "grep", "more", "head", "tail",
	"hexdump", "dd", "sync", "df", "mount", "umount", "blkid",
	"ps", "kill", "pidof", "free", "uptime", "uname", "hostname", "date", "sleep", "dmesg", "strace",
	"insmod", "rmmod", "lsmod",
	"ip", "ping", "netstat", "wget", "dhclient",
	"watchdog", "poweroff", "shutdown",
}

// DeviceCommands are our own commands bundled into the busybox binary when their package
// exists in the source tree. meshd is the supervisor started as uinit.
var DeviceCommands = []string{"meshroot/cmd/meshd", "meshroot/cmd/modprobe"}

// ReleasePath is where the image records what it is (read by meshd for its version).
const ReleasePath = "etc/meshroot/release"

// Release is the content of /etc/meshroot/release.
type Release struct {
	Version string `json:"version"`
	Board   string `json:"board"`
	Built   string `json:"built"` // RFC 3339, UTC
}

// Budget is the image-size budget the build enforces (0 means no limit).
//
// Why these numbers. Compressed: the initramfs is what each OTA update downloads and what an A/B
// slot holds beside the kernel. The smallest slot in the board catalog is 44 MiB (IPQ60xx and
// IPQ50xx, 128 MiB NAND); UBI takes ~4 MiB of it (EC/VID headers, bad-block reserve), a FIT with
// the gzip'd arm64 kernel (10.7 MiB measured for Debian's) and its device trees ~11 MiB, which
// leaves ~29 MiB for the initramfs.
//
// The product image carries the router's own access-point daemon since the radios were wired in
// (firmware/radiohook): Debian's hostapd with libssl, libcrypto, libnl and glibc, the
// regulatory database, and on the QEMU boards cfg80211, mac80211, mac80211_hwsim and the crypto
// modules. Measured with zstd (the default), same source state, budget off:
//
//	                                 arm64 (qemu-virt-arm64)   amd64 (qemu-x86_64)
//	before the radios                11.87 MiB (36.5 MiB raw)  13.35 MiB (40.3 MiB raw)
//	+ hostapd, libraries, regdb      15.85 MiB                 -
//	+ Wi-Fi modules                  16.72 MiB                 18.72 MiB (with hostapd)
//	+ the radio service in meshd     17.12 MiB (51.5 MiB raw)  19.17 MiB (57.4 MiB raw)
//
// Nothing worth having is left to trim: the Go binaries are built -s -w, Debian's programs and
// libraries are stripped, hostapd needs every library it links (libcrypto alone is 1.5 MiB
// compressed: SAE, PMF and the 4-way handshake), and xz would save ~3 % for ~1.6x the unpacking
// time under TCG. So the budget grows, once, with the reason written here:
//
//   - arm64, the product's architecture (every hardware board in the catalog is arm64): 20 MiB
//     compressed. It keeps 9 MiB (31 %) of the smallest slot's ~29 MiB free for blocks going
//     bad over the device's life, and leaves 2.9 MiB (15 %) of headroom over today's image, so
//     the next megabyte someone adds is a decision, not an accident.
//   - amd64, only the QEMU x86 virtual router (128 MiB slots): 24 MiB. x86 code and Debian's x86
//     modules are ~12 % bigger than arm64's for the same content (19.17 vs 17.12 MiB); the same
//     relative headroom on top.
//
// Raw: the unpacked initramfs stays in RAM for the device's life; 64 MiB is a quarter of a
// 256 MiB IPQ50xx-class router, leaving the rest to the kernel, conntrack, hostapd and the Go
// heap (arm64 uses 51.5 MiB). The x86 virtual router's RAM is QEMU's to choose: 80 MiB.
// Measured sizes are in the manifest and BenchmarkImageBuild; TestImageSizeBudget checks both
// QEMU boards' product images against BudgetFor.
type Budget struct {
	Compressed int64 `json:"compressed_bytes"`
	Raw        int64 `json:"raw_bytes"`
}

// DefaultBudget is the budget of arm64 images, the product's architecture (see Budget).
var DefaultBudget = Budget{Compressed: 20 << 20, Raw: 64 << 20}

// Amd64Budget is the budget of amd64 images (the QEMU x86 virtual router; see Budget).
var Amd64Budget = Budget{Compressed: 24 << 20, Raw: 80 << 20}

// BudgetFor is the budget Build applies to a board's image unless Options.Budget says
// otherwise.
func BudgetFor(b board.Board) Budget {
	if b.Arch == "amd64" {
		return Amd64Budget
	}
	return DefaultBudget
}

// ErrOverBudget is returned (wrapped) when the image exceeds its budget; the outputs are still
// written so they can be inspected.
var ErrOverBudget = errors.New("image over its size budget")

// File is an extra file to put in the image: copied from Host, or Data when Host is empty.
type File struct {
	// Path is the path in the image, e.g. "usr/sbin/hostapd" (a leading "/" is dropped).
	Path string
	// Host is the file on the build machine to copy.
	Host string
	// Data is the content when Host is "".
	Data []byte
	// Mode is the permission of a Data file (0644 when 0).
	Mode os.FileMode
}

// Options are the inputs of Build.
type Options struct {
	// Board is the board the image is for (Name, Arch, Console, Modules are used).
	Board board.Board
	// OutDir receives vmlinuz, the compressed initramfs and manifest.json. It is created.
	OutDir string
	// Version is written to /etc/meshroot/release; "" means `git describe --always --dirty`
	// in SourceDir, or "dev" when that fails.
	Version string
	// Built is the build time recorded in the release file; zero means now.
	Built time.Time
	// SourceDir is the root of the meshroot module; "" means found from the working directory.
	SourceDir string
	// KernelDir holds the kernel for Board.Arch: vmlinuz, version and modules/<kver>/kernel/...
	// (as `make kernels` lays it out); "" means $MESHROOT_CACHE/kernel/<arch>, or
	// <SourceDir>/.cache/kernel/<arch>.
	KernelDir string
	// Commands replaces the u-root core command names (CoreCommands when nil).
	Commands []string
	// ExtraCommands are more commands (Go import paths of main packages). Packages of other
	// modules (u-root's, say) go into the busybox binary; packages of this module ("meshroot/...",
	// internal/ ones too) are built the way meshd is, each with the ordinary `go build` as its
	// own static binary in bin/ (gobusybox cannot build them: see buildDeviceCommand).
	ExtraCommands []string
	// NoUinit builds an image without meshd as uinit (u-root init then starts the shell).
	NoUinit bool
	// Modules are kernel modules to ship in addition to Board.Modules.
	Modules []string
	// Files are extra files (hostapd, regulatory.db, configuration...). Host ELF files get
	// their shared libraries added with ldd when the board's arch is the build machine's;
	// otherwise use Programs, or list the libraries as Files too.
	Files []File
	// Programs are dynamically linked programs from a sysroot of the board's architecture
	// (the arm64 hostapd, wpa_supplicant and iw of scripts/fetch-arm64-userland.sh), added
	// with their interpreter and shared-library closure resolved in the sysroot (ELFClosure).
	Programs []Program
	// OTARoot is the fleet's OTA trust root (the TUF root.json of the update repository, e.g.
	// `meshctl ota keygen`'s metadata/root.json) to ship at OTARootPath; nil ships none and the
	// device runs with updates disabled. It must be root metadata signed by its own root keys
	// (ParseOTARoot); the manifest records its digest.
	OTARoot []byte
	// Compression of the initramfs (DefaultCompression, zstd, when "").
	Compression Compression
	// Budget overrides BudgetFor(Board) when non-nil.
	Budget *Budget
	// Progress receives human-readable progress lines (nil: silent).
	Progress func(format string, args ...any)
	// Verbose also forwards u-root's own build log to Progress.
	Verbose bool
	// CacheDir holds reusable build products (the busybox binary, keyed by everything it is
	// built from); "" means <cache>/busybox under DefaultCacheDir. NoCache builds afresh.
	CacheDir string
	NoCache  bool
}

// FileInfo describes one output file.
type FileInfo struct {
	Name   string `json:"name"` // relative to the output directory
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Manifest describes a built image; it is written as manifest.json beside the outputs.
type Manifest struct {
	Board         string   `json:"board"`
	Arch          string   `json:"arch"`
	Console       string   `json:"console"`
	Version       string   `json:"version"`
	Built         string   `json:"built"`
	KernelVersion string   `json:"kernel_version"`
	GoVersion     string   `json:"go_version"`
	Kernel        FileInfo `json:"kernel"`
	// QEMUKernel is the same kernel uncompressed with its PVH entry (amd64 only), which QEMU
	// boots directly; zero when not made. Real boards and OTA use Kernel.
	QEMUKernel  FileInfo    `json:"qemu_kernel,omitzero"`
	Initramfs   FileInfo    `json:"initramfs"`
	Compression Compression `json:"compression"`
	// RawSize is the size of the uncompressed cpio archive; RawSHA256 its digest.
	RawSize   int64  `json:"raw_size"`
	RawSHA256 string `json:"raw_sha256"`
	Budget    Budget `json:"budget"`
	// SlotSize is the board's A/B slot size (0 when the catalog has none) and SlotFree what is
	// left of it after the kernel and the compressed initramfs.
	SlotSize int64 `json:"slot_size,omitempty"`
	SlotFree int64 `json:"slot_free,omitempty"`
	// Commands are the command names in the busybox binary; Uinit the one started by init.
	Commands []string `json:"commands"`
	Uinit    string   `json:"uinit,omitempty"`
	// BusyboxCached is true when the busybox binary came from the build cache.
	BusyboxCached bool `json:"busybox_cached"`
	// Modules are the shipped kernel modules in load order; ModulesBuiltin the requested ones
	// that are built into the kernel.
	Modules        []string `json:"modules"`
	ModulesBuiltin []string `json:"modules_builtin,omitempty"`
	// Files are the extra files' paths in the image.
	Files []string `json:"files,omitempty"`
	// Programs are the sysroot programs' paths in the image (their interpreters and libraries
	// are listed in Files).
	Programs []string `json:"programs,omitempty"`
	// OTARoot is the OTA trust root the image carries; nil when it has none.
	OTARoot      *OTARootInfo `json:"ota_root,omitempty"`
	BuildSeconds float64      `json:"build_seconds"`
}

// ManifestName is the manifest's file name in the output directory.
const ManifestName = "manifest.json"

// KernelName is the kernel's file name in the output directory.
const KernelName = "vmlinuz"

// ReadManifest reads dir/manifest.json.
func ReadManifest(dir string) (Manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if err != nil {
		return Manifest{}, fmt.Errorf("image manifest: %w", err)
	}
	m, err := ParseManifest(b)
	if err != nil {
		return Manifest{}, fmt.Errorf("image manifest %s: %w", dir, err)
	}
	return m, nil
}

// ParseManifest decodes a manifest and checks the fields a booter relies on: the arch, and
// kernel and initramfs names that stay inside the image directory.
func ParseManifest(b []byte) (Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return Manifest{}, err
	}
	if m.Arch != "arm64" && m.Arch != "amd64" {
		return Manifest{}, fmt.Errorf("arch %q: want arm64 or amd64", m.Arch)
	}
	for field, name := range map[string]string{"kernel": m.Kernel.Name, "initramfs": m.Initramfs.Name, "qemu_kernel": m.QEMUKernel.Name} {
		if field == "qemu_kernel" && name == "" {
			continue
		}
		if name == "" || name != filepath.Base(name) || name == "." || name == ".." {
			return Manifest{}, fmt.Errorf("%s name %q: want a file name in the image directory", field, name)
		}
	}
	if _, err := ParseCompression(string(m.Compression)); err != nil || m.Compression == "" {
		return Manifest{}, fmt.Errorf("compression %q: want %q or %q", m.Compression, Zstd, XZ)
	}
	return m, nil
}

// Build builds the firmware image for o.Board into o.OutDir and returns its manifest.
//
// Steps: resolve the kernel modules' closure from .modinfo; compile meshd (bin/meshd, the
// uinit) and the u-root core commands (one gobusybox binary in bbin/, reused from the cache
// when nothing it is built from changed) for the board's GOARCH with CGO off; assemble the cpio
// with uimage (u-root base tree, init -> bbin/init, sh -> gosh, the modules with a generated
// modules.dep, /etc/meshroot/release, extra files); compress it; copy the kernel; write
// manifest.json last, so a directory with a manifest is a complete image. The busybox compile
// cannot be interrupted once started; ctx is checked between steps.
func Build(ctx context.Context, o Options) (Manifest, error) {
	start := time.Now()
	progress := o.Progress
	if progress == nil {
		progress = func(string, ...any) {}
	}
	step := func(format string, args ...any) {
		progress("[%5.1fs] %s", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	b := o.Board
	if b.Name == "" {
		return Manifest{}, errors.New("image: board name is empty")
	}
	if b.Arch != "arm64" && b.Arch != "amd64" {
		return Manifest{}, fmt.Errorf("image: board %s: arch %q: want arm64 or amd64", b.Name, b.Arch)
	}
	if o.OutDir == "" {
		return Manifest{}, errors.New("image: output directory is empty")
	}
	comp, err := ParseCompression(string(o.Compression))
	if err != nil {
		return Manifest{}, fmt.Errorf("image: %w", err)
	}
	budget := BudgetFor(b)
	if o.Budget != nil {
		budget = *o.Budget
	}
	var otaRoot *OTARootInfo
	files := o.Files
	if o.OTARoot != nil {
		info, err := ParseOTARoot(o.OTARoot)
		if err != nil {
			return Manifest{}, fmt.Errorf("image: %w", err)
		}
		for _, f := range o.Files {
			if strings.TrimPrefix(path.Clean("/"+f.Path), "/") == OTARootPath {
				return Manifest{}, fmt.Errorf("image: extra file %s: the OTA root goes there (Options.OTARoot)", f.Path)
			}
		}
		otaRoot = &info
		files = append(slices.Clone(o.Files), File{Path: OTARootPath, Data: o.OTARoot, Mode: 0o644})
	}
	src := o.SourceDir
	if src == "" {
		if src, err = FindSourceDir(); err != nil {
			return Manifest{}, fmt.Errorf("image: %w", err)
		}
	}
	kdir := o.KernelDir
	if kdir == "" {
		kdir = DefaultKernelDir(src, b.Arch)
	}
	version := o.Version
	if version == "" {
		version = GitVersion(ctx, src)
	}
	built := o.Built
	if built.IsZero() {
		built = time.Now()
	}
	kver, vmlinuz, err := readKernel(kdir)
	if err != nil {
		return Manifest{}, fmt.Errorf("image: board %s: %w", b.Name, err)
	}
	step("board %s (%s), version %s, kernel %s", b.Name, b.Arch, version, kver)
	// The radios' userland (hostapd, regulatory.db, simulated radios' modules) on every board
	// with radios; the caller's own files and programs win over it.
	radio, err := RadioUserlandFor(b, src)
	if err != nil {
		return Manifest{}, fmt.Errorf("image: %w", err)
	}
	extraFiles := slices.Clone(o.Files)
	for _, f := range radio.Files {
		taken := false
		for _, g := range files {
			taken = taken || cleanRel(g.Path) == cleanRel(f.Path)
		}
		if !taken {
			files = append(files, f)
			extraFiles = append(extraFiles, f)
		}
	}
	programs := slices.Clone(o.Programs)
	for _, p := range radio.Programs {
		if !slices.ContainsFunc(programs, func(q Program) bool { return cleanRel(q.Path) == cleanRel(p.Path) }) {
			programs = append(programs, p)
		}
	}
	if HasRadios(b) {
		step("radios: %s from %s, %s, modules %s", strings.Join(RadioPrograms, " "), radio.Programs[0].Sysroot, RegulatoryDBPath, strings.Join(radio.Modules, " "))
	}
	progFiles, progNames, err := programFiles(programs, b, files)
	if err != nil {
		return Manifest{}, fmt.Errorf("image: board %s: %w", b.Name, err)
	}
	if len(programs) > 0 {
		step("programs %s: %d files with their interpreter and libraries", strings.Join(progNames, " "), len(progFiles))
	}
	if otaRoot != nil {
		step("OTA trust root: version %d, %d of %d root keys, expires %s, sha256 %.16s…", otaRoot.Version, otaRoot.Threshold, len(otaRoot.KeyIDs), otaRoot.Expires.Format(time.RFC3339), otaRoot.SHA256)
		if built.After(otaRoot.Expires) {
			step("warning: the OTA trust root expired %s: devices refresh only if the repository's root chain continues from it", otaRoot.Expires.Format(time.RFC3339))
		}
	}

	// Kernel modules: closure from .modinfo, modules.dep generated here.
	tree, err := OpenModuleTree(filepath.Join(kdir, "modules"), kver)
	if err != nil {
		return Manifest{}, fmt.Errorf("image: %w", err)
	}
	mods, err := tree.Resolve(append(append(append([]string(nil), b.Modules...), o.Modules...), radio.Modules...))
	if err != nil {
		return Manifest{}, fmt.Errorf("image: board %s: %w", b.Name, err)
	}
	step("kernel modules: %d to ship (%s), %d built in", len(mods.Load), strings.Join(mods.Load, " "), len(mods.Builtin))

	rel, err := json.Marshal(Release{Version: version, Board: b.Name, Built: built.UTC().Format(time.RFC3339)})
	if err != nil {
		return Manifest{}, err
	}

	// Commands: u-root's in the busybox binary (bbin/), ours as separate binaries (bin/).
	names := o.Commands
	if names == nil {
		names = CoreCommands
	}
	var pkgs, cmdNames []string
	for _, n := range names {
		pkgs = append(pkgs, CorePackage+n)
		cmdNames = append(cmdNames, n)
	}
	var devPkgs []string
	for _, p := range DeviceCommands {
		if hasGoFiles(filepath.Join(src, strings.TrimPrefix(p, "meshroot/"))) {
			devPkgs = append(devPkgs, p)
			continue
		}
		if p == DeviceCommands[0] && !o.NoUinit {
			return Manifest{}, fmt.Errorf("image: %s: the supervisor package is missing from %s; build with NoUinit for a shell-only image", p, src)
		}
	}
	byName := map[string]string{} // command name → package, for collisions
	for _, p := range append(slices.Clone(pkgs), devPkgs...) {
		byName[path.Base(p)] = p
	}
	for _, p := range o.ExtraCommands {
		p = strings.TrimSuffix(p, "/")
		name := path.Base(p)
		if other, dup := byName[name]; dup {
			if other == p {
				continue
			}
			return Manifest{}, fmt.Errorf("image: extra command %s: the image already has a command %s (%s)", p, name, other)
		}
		byName[name] = p
		if p == "meshroot" || strings.HasPrefix(p, "meshroot/") {
			if dir := filepath.Join(src, filepath.FromSlash(strings.TrimPrefix(p, "meshroot"))); !hasGoFiles(dir) {
				return Manifest{}, fmt.Errorf("image: extra command %s: no Go package in %s", p, dir)
			}
			devPkgs = append(devPkgs, p)
			continue
		}
		pkgs = append(pkgs, p)
		cmdNames = append(cmdNames, name)
	}
	uinit := ""
	if !o.NoUinit {
		uinit = path.Base(DeviceCommands[0])
	}
	if err := ctx.Err(); err != nil {
		return Manifest{}, err
	}

	tmp, err := os.MkdirTemp("", "meshroot-image-")
	if err != nil {
		return Manifest{}, fmt.Errorf("image: %w", err)
	}
	defer os.RemoveAll(tmp)
	rawPath := filepath.Join(tmp, "initramfs.cpio")

	// gosh is built with its liner editor (-tags goshliner): the default bubbline editor waits for
	// terminal answers over the serial line and drops or hangs on typed input (seen in the VM
	// tests and by field engineers on slow consoles).
	env := golang.Default(golang.DisableCGO(), golang.WithGOOS("linux"), golang.WithGOARCH(b.Arch), golang.WithWorkingDir(src), golang.WithBuildTag("goshliner"))
	if env.GOROOT == "" || !fileExists(filepath.Join(env.GOROOT, "bin", "go")) {
		if env.GOROOT = goRoot(); env.GOROOT == "" {
			return Manifest{}, errors.New("image: Go toolchain not found (put go on PATH)")
		}
	}
	var devFiles []File
	for _, p := range devPkgs {
		name := path.Base(p)
		step("compiling %s for linux/%s", p, b.Arch)
		out := filepath.Join(tmp, "dev", name)
		if err := buildDeviceCommand(ctx, env, src, p, out); err != nil {
			return Manifest{}, fmt.Errorf("image: %w", err)
		}
		devFiles = append(devFiles, File{Path: "bin/" + name, Host: out})
		cmdNames = append(cmdNames, name)
	}
	base, err := baseArchive(tree, mods, append(rel, '\n'), files, append(devFiles, progFiles...))
	if err != nil {
		return Manifest{}, fmt.Errorf("image: %w", err)
	}

	var extra []string
	for _, f := range extraFiles {
		if f.Host != "" {
			extra = append(extra, f.Host+":"+strings.TrimPrefix(path.Clean("/"+f.Path), "/"))
		}
	}
	level := slog.LevelWarn
	if o.Verbose {
		level = slog.LevelInfo
	}
	logger := llog.New(level, func(format string, args ...any) { step("u-root: "+format, args...) })
	bb := &cachedBusybox{srcDir: src, note: step}
	if !o.NoCache {
		bb.dir = o.CacheDir
		if bb.dir == "" {
			bb.dir = filepath.Join(DefaultCacheDir(src), "busybox")
		}
	}
	mods2 := []uimage.Modifier{
		uimage.WithReplaceEnv(env),
		uimage.WithBaseArchive(base),
		uimage.WithCommands(nil, bb, pkgs...),
		uimage.WithInit("init"),
		uimage.WithShell("gosh"),
		uimage.WithTempDir(tmp),
		uimage.WithCPIOOutput(rawPath),
	}
	if uinit != "" {
		mods2 = append(mods2, uimage.WithUinitCommand("/bin/"+uinit))
	}
	if len(extra) > 0 {
		mods2 = append(mods2, uimage.WithFiles(extra...))
	}
	if b.Arch != runtime.GOARCH {
		// The host's ldd cannot read foreign ELF files: callers list libraries explicitly.
		mods2 = append(mods2, uimage.WithSkipLDD())
	}
	step("building the u-root busybox (%d commands) for linux/%s and the archive", len(pkgs), b.Arch)
	if err := uimage.Create(logger, mods2...); err != nil {
		return Manifest{}, fmt.Errorf("image: board %s: u-root build: %w", b.Name, err)
	}
	if bb.hit {
		step("busybox binary reused from %s", bb.dir)
	}
	if err := ctx.Err(); err != nil {
		return Manifest{}, err
	}

	// Outputs go to a staging directory inside OutDir and are renamed into place.
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return Manifest{}, fmt.Errorf("image: %w", err)
	}
	stage, err := os.MkdirTemp(o.OutDir, ".staging-")
	if err != nil {
		return Manifest{}, fmt.Errorf("image: %w", err)
	}
	defer os.RemoveAll(stage)
	initrdName := "initramfs.cpio." + comp.Ext()
	step("compressing the initramfs (%s)", comp)
	rawSize, rawSum, initrd, err := compressFile(rawPath, filepath.Join(stage, initrdName), comp)
	if err != nil {
		return Manifest{}, fmt.Errorf("image: %w", err)
	}
	initrd.Name = initrdName
	kern, err := linkOrCopy(vmlinuz, filepath.Join(stage, KernelName))
	if err != nil {
		return Manifest{}, fmt.Errorf("image: kernel: %w", err)
	}
	kern.Name = KernelName
	var pvh FileInfo
	if b.Arch == "amd64" {
		pvh, err = pvhKernel(vmlinuz, filepath.Join(stage, PVHKernelName), o.NoCache, o.CacheDir, src)
		if err != nil {
			step("no directly bootable kernel for QEMU (%v); QEMU boots the bzImage", err)
		}
	}

	sort.Strings(cmdNames)
	var fileNames []string
	for _, f := range extraFiles {
		fileNames = append(fileNames, strings.TrimPrefix(path.Clean("/"+f.Path), "/"))
	}
	for _, f := range progFiles {
		if !slices.Contains(progNames, f.Path) {
			fileNames = append(fileNames, f.Path)
		}
	}
	m := Manifest{
		Board:          b.Name,
		Arch:           b.Arch,
		Console:        b.Console,
		Version:        version,
		Built:          built.UTC().Format(time.RFC3339),
		KernelVersion:  kver,
		GoVersion:      runtime.Version(),
		Kernel:         kern,
		QEMUKernel:     pvh,
		Initramfs:      initrd,
		Compression:    comp,
		RawSize:        rawSize,
		RawSHA256:      rawSum,
		Budget:         budget,
		SlotSize:       b.Flash.SlotA.Size,
		Commands:       cmdNames,
		Uinit:          uinit,
		BusyboxCached:  bb.hit,
		Modules:        mods.Load,
		ModulesBuiltin: mods.Builtin,
		Files:          fileNames,
		Programs:       progNames,
		OTARoot:        otaRoot,
	}
	if m.SlotSize > 0 {
		m.SlotFree = m.SlotSize - kern.Size - initrd.Size
	}
	// No manifest while the files change: a directory with a manifest is a complete image.
	if err := os.Remove(filepath.Join(o.OutDir, ManifestName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return Manifest{}, fmt.Errorf("image: %w", err)
	}
	if stale, _ := filepath.Glob(filepath.Join(o.OutDir, "initramfs.cpio.*")); len(stale) > 0 {
		for _, p := range stale {
			os.Remove(p)
		}
	}
	outputs := []string{initrdName, KernelName}
	if pvh.Name != "" {
		outputs = append(outputs, pvh.Name)
	} else {
		os.Remove(filepath.Join(o.OutDir, PVHKernelName))
	}
	for _, n := range outputs {
		if err := os.Rename(filepath.Join(stage, n), filepath.Join(o.OutDir, n)); err != nil {
			return Manifest{}, fmt.Errorf("image: %w", err)
		}
	}
	m.BuildSeconds = time.Since(start).Seconds()
	if err := writeManifest(o.OutDir, m); err != nil {
		return Manifest{}, fmt.Errorf("image: %w", err)
	}
	step("wrote %s: initramfs %s raw, %s %s; kernel %s", o.OutDir, mib(rawSize), mib(initrd.Size), comp, mib(kern.Size))
	if err := budget.Check(m); err != nil {
		return m, fmt.Errorf("image: board %s: %w", b.Name, err)
	}
	return m, nil
}

// programFiles resolves the programs' closures into the files to add (each image path once;
// two programs share their common libraries), checking each program is of the board's
// architecture and that no extra file takes one of their paths.
func programFiles(progs []Program, b board.Board, files []File) ([]File, []string, error) {
	var out []File
	var names []string
	at := map[string]string{} // image path → host file
	for _, f := range files {
		at[cleanRel(f.Path)] = "extra file"
	}
	for _, p := range progs {
		if p.Sysroot == "" {
			return nil, nil, fmt.Errorf("program %s: no sysroot", p.Path)
		}
		c, err := ELFClosure(p.Sysroot, p.Path)
		if err != nil {
			return nil, nil, err
		}
		if want := machineOf[b.Arch]; c.Machine != want {
			return nil, nil, fmt.Errorf("program %s in %s is %v; the board's arch %s needs %v", p.Path, p.Sysroot, c.Machine, b.Arch, want)
		}
		names = append(names, c.Files[0].Path)
		for _, f := range c.Files {
			switch prev, ok := at[f.Path]; {
			case !ok:
				at[f.Path] = f.Host
				out = append(out, f)
			case prev != f.Host:
				return nil, nil, fmt.Errorf("program %s: %s from %s is also %s", p.Path, f.Path, f.Host, prev)
			}
		}
	}
	return out, names, nil
}

// Check returns an error wrapping ErrOverBudget when m exceeds the budget.
func (bu Budget) Check(m Manifest) error {
	var over []string
	if bu.Compressed > 0 && m.Initramfs.Size > bu.Compressed {
		over = append(over, fmt.Sprintf("compressed initramfs %d bytes > %d", m.Initramfs.Size, bu.Compressed))
	}
	if bu.Raw > 0 && m.RawSize > bu.Raw {
		over = append(over, fmt.Sprintf("raw initramfs %d bytes > %d", m.RawSize, bu.Raw))
	}
	if len(over) > 0 {
		return fmt.Errorf("%w: %s", ErrOverBudget, strings.Join(over, "; "))
	}
	return nil
}

func mib(n int64) string { return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20)) }

func writeManifest(dir string, m Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, ManifestName+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, ManifestName))
}

// baseArchive is u-root's default root tree plus what Build generates: the release file, our
// own binaries, the kernel modules with modules.dep/modules.softdep/modules.builtin, and the
// in-memory extra files.
func baseArchive(tree *ModuleTree, mods *ModuleSet, release []byte, files, binaries []File) (*cpio.Archive, error) {
	recs := []cpio.Record{cpio.StaticFile(ReleasePath, string(release), 0o644)}
	mdir := path.Join("lib/modules", tree.KernelVersion)
	recorder := cpio.NewRecorder()
	for _, f := range binaries {
		r, err := recorder.GetRecord(f.Host)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.Path, err)
		}
		r.Name = f.Path
		recs = append(recs, r)
	}
	for _, m := range mods.Load {
		rel := mods.Path(m)
		r, err := recorder.GetRecord(filepath.Join(tree.Dir, filepath.FromSlash(rel)))
		if err != nil {
			return nil, fmt.Errorf("module %s: %w", m, err)
		}
		r.Name = path.Join(mdir, rel)
		recs = append(recs, r)
	}
	recs = append(recs,
		cpio.StaticFile(path.Join(mdir, "modules.dep"), string(mods.ModulesDep()), 0o644),
		cpio.StaticFile(path.Join(mdir, "modules.softdep"), string(mods.ModulesSoftdep()), 0o644))
	if b, err := os.ReadFile(filepath.Join(tree.Dir, "modules.builtin")); err == nil {
		recs = append(recs, cpio.StaticFile(path.Join(mdir, "modules.builtin"), string(b), 0o644))
	}
	for _, f := range files {
		if f.Host != "" {
			continue
		}
		p := strings.TrimPrefix(path.Clean("/"+f.Path), "/")
		if p == "" || p == "." {
			return nil, fmt.Errorf("extra file: empty path")
		}
		mode := f.Mode.Perm()
		if mode == 0 {
			mode = 0o644
		}
		recs = append(recs, cpio.StaticFile(p, string(f.Data), uint64(mode)))
	}
	def := uimage.DefaultRamfs()
	all := make([]cpio.Record, 0, len(recs)+16)
	r := def.Reader()
	for {
		rec, err := r.ReadRecord()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		all = append(all, rec)
	}
	for _, rec := range recs {
		all = append(all, cpio.MakeReproducible(rec))
	}
	a, err := cpio.ArchiveFromRecords(all)
	if err != nil {
		return nil, fmt.Errorf("base archive: %w", err)
	}
	return a, nil
}

// readKernel reads <kdir>/version and resolves <kdir>/vmlinuz.
func readKernel(kdir string) (kver, vmlinuz string, err error) {
	b, err := os.ReadFile(filepath.Join(kdir, "version"))
	if err != nil {
		return "", "", fmt.Errorf("kernel version: %w (run `make kernels`)", err)
	}
	kver = strings.TrimSpace(string(b))
	if kver == "" || strings.ContainsAny(kver, "/ \n") {
		return "", "", fmt.Errorf("kernel version file %s: bad version %q", filepath.Join(kdir, "version"), kver)
	}
	vmlinuz, err = filepath.EvalSymlinks(filepath.Join(kdir, "vmlinuz"))
	if err != nil {
		return "", "", fmt.Errorf("kernel: %w (run `make kernels`)", err)
	}
	return kver, vmlinuz, nil
}

// compressFile compresses src into dst, returning the raw size and digest and dst's FileInfo.
func compressFile(src, dst string, c Compression) (rawSize int64, rawSum string, out FileInfo, err error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, "", FileInfo{}, err
	}
	defer in.Close()
	f, err := os.Create(dst)
	if err != nil {
		return 0, "", FileInfo{}, err
	}
	defer f.Close()
	outSum := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, outSum)}
	zw, err := c.compressor(cw)
	if err != nil {
		return 0, "", FileInfo{}, err
	}
	rawH := sha256.New()
	rawSize, err = io.Copy(io.MultiWriter(zw, rawH), in)
	if err != nil {
		return 0, "", FileInfo{}, fmt.Errorf("compress %s: %w", src, err)
	}
	if err := zw.Close(); err != nil {
		return 0, "", FileInfo{}, fmt.Errorf("compress %s: %w", src, err)
	}
	if err := f.Close(); err != nil {
		return 0, "", FileInfo{}, err
	}
	return rawSize, hex.EncodeToString(rawH.Sum(nil)), FileInfo{Size: cw.n, SHA256: hex.EncodeToString(outSum.Sum(nil))}, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func copyFile(src, dst string) (FileInfo, error) {
	in, err := os.Open(src)
	if err != nil {
		return FileInfo{}, err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return FileInfo{}, err
	}
	defer out.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), in)
	if err != nil {
		return FileInfo{}, err
	}
	if err := out.Close(); err != nil {
		return FileInfo{}, err
	}
	return FileInfo{Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// pvhKernel writes the PVH kernel extracted from bzImage to dst, reusing an extraction cached
// under <cache>/pvh (keyed by the bzImage's path, size and mtime) unless noCache.
func pvhKernel(bzImage, dst string, noCache bool, cacheDir, src string) (FileInfo, error) {
	var cached string
	if !noCache {
		st, err := os.Stat(bzImage)
		if err != nil {
			return FileInfo{}, err
		}
		dir := filepath.Join(DefaultCacheDir(src), "pvh")
		if cacheDir != "" {
			dir = filepath.Join(filepath.Dir(cacheDir), "pvh")
		}
		sum := sha256.Sum256(fmt.Appendf(nil, "%s %d %d", bzImage, st.Size(), st.ModTime().UnixNano()))
		cached = filepath.Join(dir, hex.EncodeToString(sum[:12])+".vmlinux")
		if _, err := os.Stat(cached); err == nil {
			fi, err := linkOrCopy(cached, dst)
			fi.Name = PVHKernelName
			return fi, err
		}
	}
	vmlinux, err := ExtractPVH(bzImage)
	if err != nil {
		return FileInfo{}, err
	}
	if err := os.WriteFile(dst, vmlinux, 0o644); err != nil {
		return FileInfo{}, err
	}
	if cached != "" {
		if err := os.MkdirAll(filepath.Dir(cached), 0o755); err == nil {
			tmp := fmt.Sprintf("%s.tmp%d", cached, os.Getpid())
			if os.WriteFile(tmp, vmlinux, 0o644) == nil {
				_ = os.Rename(tmp, cached)
			}
			os.Remove(tmp)
		}
	}
	sum := sha256.Sum256(vmlinux)
	return FileInfo{Name: PVHKernelName, Size: int64(len(vmlinux)), SHA256: hex.EncodeToString(sum[:])}, nil
}

// linkOrCopy hard-links src to dst (the kernels are tens of MiB and never modified in place:
// test image caches and out/ hold many images of the same kernel), or copies it across file
// systems, and returns dst's size and digest.
func linkOrCopy(src, dst string) (FileInfo, error) {
	if err := os.Link(src, dst); err != nil {
		return copyFile(src, dst)
	}
	n, sum, err := HashFile(dst)
	return FileInfo{Size: n, SHA256: sum}, err
}

// HashFile returns the size and hex sha256 of a file.
func HashFile(name string) (int64, string, error) {
	f, err := os.Open(name)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// Verify checks that the files a manifest names exist in dir with the recorded sizes and
// digests, and that the initramfs decompresses to RawSize bytes with RawSHA256.
func Verify(dir string, m Manifest) error {
	files := []FileInfo{m.Kernel, m.Initramfs}
	if m.QEMUKernel.Name != "" {
		files = append(files, m.QEMUKernel)
	}
	for _, fi := range files {
		n, sum, err := HashFile(filepath.Join(dir, fi.Name))
		if err != nil {
			return fmt.Errorf("verify %s: %w", fi.Name, err)
		}
		if n != fi.Size || sum != fi.SHA256 {
			return fmt.Errorf("verify %s: size %d sha256 %s; manifest says %d %s", fi.Name, n, sum, fi.Size, fi.SHA256)
		}
	}
	f, err := os.Open(filepath.Join(dir, m.Initramfs.Name))
	if err != nil {
		return err
	}
	defer f.Close()
	r, err := m.Compression.decompressor(f)
	if err != nil {
		return fmt.Errorf("verify %s: %w", m.Initramfs.Name, err)
	}
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return fmt.Errorf("verify %s: decompress: %w", m.Initramfs.Name, err)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); n != m.RawSize || sum != m.RawSHA256 {
		return fmt.Errorf("verify %s: decompresses to %d bytes sha256 %s; manifest says %d %s", m.Initramfs.Name, n, sum, m.RawSize, m.RawSHA256)
	}
	return nil
}

// FindSourceDir walks up from the working directory to the directory holding the meshroot
// go.mod.
func FindSourceDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.HasPrefix(b, []byte("module meshroot\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("meshroot source tree not found above the working directory (run from the repository, or set the source directory)")
		}
		dir = parent
	}
}

// DefaultKernelDir is where `make kernels` puts the kernel for arch: $MESHROOT_CACHE/kernel/<arch>,
// or <src>/.cache/kernel/<arch>.
func DefaultKernelDir(src, arch string) string {
	return filepath.Join(DefaultCacheDir(src), "kernel", arch)
}

// DefaultCacheDir is $MESHROOT_CACHE, or <src>/.cache (the Makefile's CACHE).
func DefaultCacheDir(src string) string {
	if cache := os.Getenv("MESHROOT_CACHE"); cache != "" {
		return cache
	}
	return filepath.Join(src, ".cache")
}

// GitVersion returns `git describe --always --dirty` for dir, or "dev" when git or the
// repository is unavailable.
func GitVersion(ctx context.Context, dir string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", "-C", dir, "describe", "--always", "--dirty")
	out, err := cmd.Output()
	v := strings.TrimSpace(string(out))
	if err != nil || v == "" {
		return "dev"
	}
	return v
}

// hasGoFiles reports whether dir holds a non-test Go file.
func hasGoFiles(dir string) bool {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if n := e.Name(); !e.IsDir() && strings.HasSuffix(n, ".go") && !strings.HasSuffix(n, "_test.go") {
			return true
		}
	}
	return false
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// goRoot finds the Go toolchain to compile with: `go env GOROOT` of the go on PATH, else
// /usr/local/go (where the README installs it), else "".
func goRoot() string {
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		if r := strings.TrimSpace(string(out)); r != "" {
			return r
		}
	}
	if fileExists("/usr/local/go/bin/go") {
		return "/usr/local/go"
	}
	return ""
}
