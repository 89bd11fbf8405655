package image_test

import (
	"context"
	"debug/elf"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"meshroot/image"
	"meshroot/image/imagetest"
	"meshroot/internal/testenv"
)

// arm64Programs are the radio userland programs scripts/fetch-arm64-userland.sh unpacks.
var arm64Programs = []string{"usr/sbin/hostapd", "sbin/wpa_supplicant", "sbin/iw"}

// TestELFClosureArm64Userland resolves Debian's arm64 hostapd, wpa_supplicant and iw in the
// sysroot `make deps` fetches: every file is an aarch64 ELF of the same class, the interpreter
// is ld-linux-aarch64, the libraries hostapd is known to need are there, and the closure is
// closed (each DT_NEEDED of each file, read here again with debug/elf, is in it).
func TestELFClosureArm64Userland(t *testing.T) {
	sysroot := imagetest.Sysroot(t)
	for _, prog := range arm64Programs {
		t.Run(filepath.Base(prog), func(t *testing.T) {
			c, err := image.ELFClosure(sysroot, prog)
			if err != nil {
				t.Fatalf("ELFClosure(%s) = %v", prog, err)
			}
			if c.Machine != elf.EM_AARCH64 || c.Interp != "lib/ld-linux-aarch64.so.1" {
				t.Errorf("ELFClosure(%s) = machine %v, interp %q; want EM_AARCH64, lib/ld-linux-aarch64.so.1", prog, c.Machine, c.Interp)
			}
			have := map[string]bool{}
			for _, f := range c.Files {
				have[filepath.Base(f.Path)] = true
			}
			var names []string
			for _, f := range c.Files {
				names = append(names, f.Path)
				ef, err := elf.Open(f.Host)
				if err != nil {
					t.Errorf("%s (%s): %v", f.Path, f.Host, err)
					continue
				}
				if ef.Machine != elf.EM_AARCH64 || ef.Class != elf.ELFCLASS64 {
					t.Errorf("%s: %v %v; want ELFCLASS64 EM_AARCH64", f.Path, ef.Class, ef.Machine)
				}
				needed, _ := ef.DynString(elf.DT_NEEDED)
				for _, n := range needed {
					if !have[n] && n != "ld-linux-aarch64.so.1" {
						t.Errorf("%s needs %s, which the closure lacks", f.Path, n)
					}
				}
				ef.Close()
			}
			if prog == "usr/sbin/hostapd" {
				for _, lib := range []string{"libnl-3.so.200", "libnl-genl-3.so.200", "libnl-route-3.so.200", "libssl.so.3", "libcrypto.so.3", "libc.so.6"} {
					if !have[lib] {
						t.Errorf("hostapd's closure %q lacks %s", names, lib)
					}
				}
			}
			t.Logf("%s: %d files: %s", prog, len(c.Files), strings.Join(names, " "))
		})
	}
}

// programsImage is an arm64 image with the sysroot's radio programs. They take it past the
// product budget (measured: see the test log), so it uses the test-only override.
func programsImage(t *testing.T) (string, image.Manifest) {
	t.Helper()
	sysroot := imagetest.Sysroot(t)
	var progs []image.Program
	for _, p := range arm64Programs {
		progs = append(progs, image.Program{Path: p, Sysroot: sysroot})
	}
	dir, m := imagetest.ImageWith(t, "qemu-virt-arm64", imagetest.Options{Programs: progs, Budget: &testBudget})
	t.Logf("arm64 image with %s: initramfs %d bytes %s, %d raw (product budget %d / %d)",
		strings.Join(arm64Programs, ", "), m.Initramfs.Size, m.Compression, m.RawSize, image.DefaultBudget.Compressed, image.DefaultBudget.Raw)
	return dir, m
}

// TestImageArm64Programs: the programs and their closures are in the archive, byte for byte
// from the sysroot, executable where they must be, and listed in the manifest.
func TestImageArm64Programs(t *testing.T) {
	dir, m := programsImage(t)
	if !slices.Equal(m.Programs, arm64Programs) {
		t.Errorf("manifest programs = %q; want %q", m.Programs, arm64Programs)
	}
	recs := readArchive(t, filepath.Join(dir, m.Initramfs.Name), m.Compression)
	for _, prog := range arm64Programs {
		c, err := image.ELFClosure(imagetest.Sysroot(t), prog)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range c.Files {
			r, ok := recs[f.Path]
			if !ok {
				t.Errorf("archive lacks %s (for %s)", f.Path, prog)
				continue
			}
			want, err := os.ReadFile(f.Host)
			if err != nil {
				t.Fatal(err)
			}
			if readAll(t, r) != string(want) {
				t.Errorf("archive %s differs from %s", f.Path, f.Host)
			}
			if (f.Path == prog || f.Path == c.Interp) && r.Mode&0o111 == 0 {
				t.Errorf("archive %s: mode %o; want executable", f.Path, r.Mode)
			}
			if f.Path != prog && !slices.Contains(m.Files, f.Path) {
				t.Errorf("manifest files lack %s", f.Path)
			}
		}
	}
}

// TestVMArm64Programs boots the arm64 image and runs each program under QEMU (cortex-a53):
// the dynamic loader finds every library where the closure put it.
func TestVMArm64Programs(t *testing.T) {
	testenv.Integration(t)
	dir, m := programsImage(t)
	vm := imagetest.Boot(t, dir, m, imagetest.BootOptions{Timeout: 4 * time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, _, err := imagetest.WaitReady(ctx, vm); err != nil {
		t.Fatalf("WaitReady: %v\n%s", err, vm.Tail(30))
	}
	if err := imagetest.ShellReady(ctx, vm); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ cmd, want string }{
		{"/usr/sbin/hostapd -v", "hostapd v2.10"},
		{"/sbin/wpa_supplicant -v", "wpa_supplicant v2.10"},
		{"/sbin/iw --version", "iw version 5.19"},
	} {
		if err := vm.Send(tc.cmd + "\n"); err != nil {
			t.Fatal(err)
		}
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		l, err := vm.WaitFor(wctx, tc.want)
		if err != nil {
			t.Errorf("%s: no %q on the console: %v\n%s", tc.cmd, tc.want, err, vm.Tail(15))
		} else {
			t.Logf("%s: %q at %v", tc.cmd, l.Text, l.At)
		}
		wcancel()
	}
	imagetest.Poweroff(ctx, t, vm)
}
