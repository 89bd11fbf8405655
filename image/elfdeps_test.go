package image

import (
	"bufio"
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// lddFiles returns what the build machine's ldd resolves for a host binary: soname (or the
// interpreter's path) → the real file.
func lddFiles(t *testing.T, bin string) map[string]string {
	t.Helper()
	ldd, err := exec.LookPath("ldd")
	if err != nil {
		t.Skip("no ldd on this machine to compare with")
	}
	out, err := exec.Command(ldd, bin).Output()
	if err != nil {
		t.Fatalf("ldd %s: %v", bin, err)
	}
	got := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		var name, p string
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			name, p = f[0], f[2]
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			name, p = filepath.Base(f[0]), f[0]
		default:
			continue // linux-vdso.so.1
		}
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			t.Fatal(err)
		}
		got[name] = real
	}
	return got
}

// TestELFClosureMatchesLDD resolves host programs with "/" as the sysroot and compares with the
// build machine's own loader (ldd): same libraries, same files. The host's merged /usr (lib ->
// usr/lib) exercises directory symlinks.
func TestELFClosureMatchesLDD(t *testing.T) {
	for _, bin := range []string{"/usr/bin/ls", "/usr/sbin/hostapd", "/usr/bin/ssh", "/usr/bin/curl"} {
		if _, err := os.Stat(bin); err != nil {
			continue
		}
		t.Run(filepath.Base(bin), func(t *testing.T) {
			want := lddFiles(t, bin)
			c, err := ELFClosure("/", bin)
			if err != nil {
				t.Fatalf("ELFClosure(/, %s) = %v", bin, err)
			}
			if c.Machine != machineOf[runtime.GOARCH] {
				t.Errorf("ELFClosure(/, %s).Machine = %v; want %v", bin, c.Machine, machineOf[runtime.GOARCH])
			}
			got := map[string]string{}
			for _, f := range c.Files[1:] {
				got[filepath.Base(f.Path)] = f.Host
				if f.Path == c.Interp {
					continue
				}
				// The image path is where the loader looks: a directory it searches, the soname.
				if _, err := os.Stat("/" + f.Path); err != nil {
					t.Errorf("closure path /%s does not exist on the host: %v", f.Path, err)
				}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("ELFClosure(/, %s) differs from ldd (-ldd +ours):\n%s", bin, diff)
			}
		})
	}
}

// copyTo copies host file src to root/rel.
func copyTo(t *testing.T, root, rel, src string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// TestELFClosureSysroot builds small sysroots from the host's own files: absolute symlinks
// stay inside the sysroot, a library of the wrong class or machine is skipped, a missing one
// names itself and who needs it.
func TestELFClosureSysroot(t *testing.T) {
	bin := "/usr/bin/ls"
	deps := lddFiles(t, bin)
	if runtime.GOARCH != "amd64" {
		t.Skip("the fixture lays out an x86_64 sysroot")
	}
	c, err := ELFClosure("/", bin)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	copyTo(t, root, "usr/bin/ls", bin)
	// The interpreter through an absolute symlink (relative to the sysroot, not the host),
	// the libraries in usr/lib/<triplet> behind a merged-/usr directory symlink lib -> usr/lib.
	copyTo(t, root, "usr/lib/x86_64-linux-gnu/ld-real.so", deps[filepath.Base(c.Interp)])
	symlink(t, "usr/lib", filepath.Join(root, "lib"))
	symlink(t, "/usr/lib/x86_64-linux-gnu/ld-real.so", filepath.Join(root, c.Interp))
	for name, real := range deps {
		if name == filepath.Base(c.Interp) {
			continue
		}
		copyTo(t, root, "usr/lib/x86_64-linux-gnu/"+name+".1.2.3", real)
		symlink(t, name+".1.2.3", filepath.Join(root, "usr/lib/x86_64-linux-gnu", name))
	}
	got, err := ELFClosure(root, "usr/bin/ls")
	if err != nil {
		t.Fatalf("ELFClosure(sysroot, ls) = %v", err)
	}
	if len(got.Files) != len(c.Files) || got.Interp != c.Interp {
		t.Errorf("ELFClosure(sysroot, ls) = %d files, interp %s; want %d, %s (as on the host)", len(got.Files), got.Interp, len(c.Files), c.Interp)
	}
	for _, f := range got.Files {
		if !strings.HasPrefix(f.Host, root+"/") {
			t.Errorf("file %s comes from %s, outside the sysroot", f.Path, f.Host)
		}
		if f.Path != c.Interp && f.Path != "usr/bin/ls" && !strings.HasPrefix(f.Path, "lib/x86_64-linux-gnu/") {
			t.Errorf("library %s: want it where the loader looks first, lib/x86_64-linux-gnu/", f.Path)
		}
	}

	// A library of another machine in the first directory is skipped for the right one.
	arm := filepath.Join(root, "usr/lib/x86_64-linux-gnu", "libc.so.6")
	libc, _ := filepath.EvalSymlinks(arm)
	os.Remove(arm)
	copyTo(t, root, "usr/lib/x86_64-linux-gnu/libc.so.6", writeELF(t, elf.ELFCLASS64, elf.EM_AARCH64))
	copyTo(t, root, "usr/local/lib/libc.so.6", libc)
	os.MkdirAll(filepath.Join(root, "usr/lib64"), 0o755)
	if _, err := ELFClosure(root, "usr/bin/ls"); err == nil || !strings.Contains(err.Error(), "libc.so.6 (needed by usr/bin/ls): not found") || !strings.Contains(err.Error(), "EM_AARCH64") {
		t.Errorf("ELFClosure(libc of another machine) = %v; want libc.so.6 not found, the arm64 one named as skipped", err)
	}
	// Nothing at all.
	empty := t.TempDir()
	copyTo(t, empty, "bin/ls", bin)
	if _, err := ELFClosure(empty, "bin/ls"); err == nil || !strings.Contains(err.Error(), "interpreter") {
		t.Errorf("ELFClosure(no interpreter) = %v; want the interpreter named", err)
	}
	// A symlink loop and a path that is not ELF.
	symlink(t, "b", filepath.Join(empty, "a"))
	symlink(t, "a", filepath.Join(empty, "b"))
	if _, err := ELFClosure(empty, "a"); err == nil || !strings.Contains(err.Error(), "too many levels of symbolic links") {
		t.Errorf("ELFClosure(symlink loop) = %v", err)
	}
	os.WriteFile(filepath.Join(empty, "text"), []byte("#!/bin/sh\n"), 0o755)
	if _, err := ELFClosure(empty, "text"); err == nil || !strings.Contains(err.Error(), "not an ELF file") {
		t.Errorf("ELFClosure(script) = %v; want not an ELF file", err)
	}
}

// writeELF writes a minimal ELF shared object header of a class and machine.
func writeELF(t *testing.T, class elf.Class, m elf.Machine) string {
	t.Helper()
	h := make([]byte, 64)
	copy(h, elf.ELFMAG)
	h[elf.EI_CLASS], h[elf.EI_DATA], h[elf.EI_VERSION] = byte(class), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)
	h[16] = byte(elf.ET_DYN)
	h[18], h[19] = byte(m), byte(m>>8)
	h[20] = byte(elf.EV_CURRENT)
	h[52] = 64 // e_ehsize
	p := filepath.Join(t.TempDir(), "lib.so")
	if err := os.WriteFile(p, h, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func FuzzParseELF(f *testing.F) {
	for _, p := range []string{"/usr/bin/ls", "/usr/lib/x86_64-linux-gnu/libc.so.6"} {
		if b, err := os.ReadFile(p); err == nil && len(b) < 4<<20 {
			f.Add(b[:min(len(b), 64<<10)])
		}
	}
	f.Add([]byte("\x7fELF\x02\x01\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := parseELF(bytes.NewReader(b))
		if err == nil && info == nil {
			t.Fatal("parseELF() = nil, nil")
		}
	})
}
