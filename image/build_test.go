package image_test

import (
	"bytes"
	"debug/elf"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/u-root/mkuimage/cpio"

	"meshroot/board"
	"meshroot/firmware"
	"meshroot/image"
	"meshroot/image/imagetest"
)

var boards = []string{"qemu-virt-arm64", "qemu-x86_64"}

// TestImageSizeBudget enforces the image-size budget (image.BudgetFor, justified at
// image.Budget) on the real product images of both QEMU boards, which carry the radio userland
// (hostapd and its libraries, regulatory.db, the Wi-Fi modules), and that kernel + initramfs fit
// the board's A/B slot.
func TestImageSizeBudget(t *testing.T) {
	for _, name := range boards {
		t.Run(name, func(t *testing.T) {
			_, m := imagetest.Image(t, name)
			b, err := board.Lookup(name)
			if err != nil {
				t.Fatal(err)
			}
			want := image.BudgetFor(b)
			t.Logf("%s: initramfs %d bytes %s (budget %d), %d raw (budget %d); kernel %d; slot free %d of %d",
				name, m.Initramfs.Size, m.Compression, m.Budget.Compressed, m.RawSize, m.Budget.Raw, m.Kernel.Size, m.SlotFree, m.SlotSize)
			if m.Budget != want {
				t.Errorf("manifest budget = %+v; want the board's %+v", m.Budget, want)
			}
			if !slices.Contains(m.Programs, "usr/sbin/hostapd") || !slices.Contains(m.Files, image.RegulatoryDBPath) {
				t.Errorf("manifest programs %v, files %v; want the product's hostapd and regulatory.db (the budget must hold them)", m.Programs, m.Files)
			}
			if err := want.Check(m); err != nil {
				t.Errorf("%s image: %v", name, err)
			}
			if m.SlotSize > 0 && m.SlotFree < 0 {
				t.Errorf("kernel %d + initramfs %d bytes do not fit the %d-byte slot", m.Kernel.Size, m.Initramfs.Size, m.SlotSize)
			}
		})
	}
}

// TestImageContents opens the built images and checks what the device will find: u-root's init
// and shell, meshd as uinit, the release file meshd parses, and kernel modules with a
// modules.dep that meshd's loader reads and can order for every board module.
func TestImageContents(t *testing.T) {
	for _, name := range boards {
		t.Run(name, func(t *testing.T) {
			dir, m := imagetest.Image(t, name)
			b, err := board.Lookup(name)
			if err != nil {
				t.Fatal(err)
			}
			if err := image.Verify(dir, m); err != nil {
				t.Fatalf("Verify = %v", err)
			}
			if m.Board != name || m.Arch != b.Arch || m.Console != b.Console {
				t.Errorf("manifest board/arch/console = %s/%s/%s; want %s/%s/%s", m.Board, m.Arch, m.Console, name, b.Arch, b.Console)
			}
			kver, err := os.ReadFile(filepath.Join(image.DefaultKernelDir(repoRoot(t), b.Arch), "version"))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := m.KernelVersion, strings.TrimSpace(string(kver)); got != want {
				t.Errorf("manifest kernel version = %q; want %q", got, want)
			}
			for _, c := range append([]string{"meshd"}, image.CoreCommands...) {
				if !slices.Contains(m.Commands, c) {
					t.Errorf("manifest commands lack %q", c)
				}
			}
			if got := m.QEMUKernel.Name != ""; got != (b.Arch == "amd64") {
				t.Errorf("manifest qemu_kernel %q; want one exactly for amd64 boards", m.QEMUKernel.Name)
			}
			recs := readArchive(t, filepath.Join(dir, m.Initramfs.Name), m.Compression)

			for _, l := range []struct{ name, target string }{
				{"init", "bbin/init"},
				{"bin/uinit", "meshd"},
				{"bin/sh", "../bbin/gosh"},
				{"bbin/ls", "bb"},
				{"bbin/insmod", "bb"},
			} {
				r, ok := recs[l.name]
				if !ok || r.Mode&cpio.S_IFMT != cpio.S_IFLNK {
					t.Errorf("archive %s: want a symlink", l.name)
					continue
				}
				if got := readAll(t, r); got != l.target {
					t.Errorf("archive %s -> %q; want -> %q", l.name, got, l.target)
				}
			}
			wantMachine := map[string]elf.Machine{"arm64": elf.EM_AARCH64, "amd64": elf.EM_X86_64}[b.Arch]
			for _, bin := range []string{"bbin/bb", "bin/meshd"} {
				r, ok := recs[bin]
				if !ok {
					t.Errorf("archive lacks %s", bin)
					continue
				}
				f, err := elf.NewFile(r.ReaderAt)
				if err != nil {
					t.Errorf("%s: not ELF: %v", bin, err)
					continue
				}
				if f.Machine != wantMachine {
					t.Errorf("%s: machine %v; want %v", bin, f.Machine, wantMachine)
				}
				for _, p := range f.Progs {
					if p.Type == elf.PT_INTERP {
						t.Errorf("%s: dynamically linked; want static (CGO off)", bin)
					}
				}
			}

			rel, err := firmware.ParseRelease([]byte(readAll(t, recs[image.ReleasePath])))
			if err != nil {
				t.Fatalf("release file: %v", err)
			}
			if rel.Version != m.Version || rel.Board != name || rel.Built.IsZero() {
				t.Errorf("release = %+v; want version %q, board %q and a build time", rel, m.Version, name)
			}

			mdir := "lib/modules/" + m.KernelVersion + "/"
			deps, err := firmware.ParseModulesDep(strings.NewReader(readAll(t, recs[mdir+"modules.dep"])))
			if err != nil {
				t.Fatalf("modules.dep: %v", err)
			}
			order, err := deps.Order(b.Modules...)
			if err != nil {
				t.Fatalf("modules.dep cannot order the board's modules: %v", err)
			}
			for _, mod := range order {
				if !slices.Contains(m.Modules, mod) {
					t.Errorf("load order needs %s; the manifest does not ship it (%q)", mod, m.Modules)
				}
			}
			for _, mod := range m.Modules {
				file, ok := deps.File(mod)
				if !ok {
					t.Errorf("modules.dep lacks %s", mod)
					continue
				}
				r, ok := recs[mdir+file]
				if !ok || r.Mode&cpio.S_IFMT != cpio.S_IFREG || r.FileSize == 0 {
					t.Errorf("archive lacks module file %s", mdir+file)
				}
			}
			if _, ok := recs[mdir+"modules.builtin"]; !ok {
				t.Errorf("archive lacks %smodules.builtin", mdir)
			}
		})
	}
}

func repoRoot(t *testing.T) string {
	src, err := image.FindSourceDir()
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// readArchive decompresses an initramfs and indexes its records by name.
func readArchive(t *testing.T, path string, c image.Compression) map[string]cpio.Record {
	t.Helper()
	raw, err := image.Decompress(path, c)
	if err != nil {
		t.Fatalf("decompress %s: %v", path, err)
	}
	recs := map[string]cpio.Record{}
	rr := cpio.Newc.Reader(bytes.NewReader(raw))
	for {
		r, err := rr.ReadRecord()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("cpio: %v", err)
		}
		if r.Name == "TRAILER!!!" {
			break
		}
		recs[r.Name] = r
	}
	return recs
}

func readAll(t *testing.T, r cpio.Record) string {
	t.Helper()
	if r.ReaderAt == nil {
		t.Fatalf("record %q has no content", r.Name)
	}
	b, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
