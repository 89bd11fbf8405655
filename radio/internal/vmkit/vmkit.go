// Package vmkit is the host side of the radio VM tests (TestVMRadio, TestVMRoam,
// BenchmarkVMRoam): it builds a harness command for the amd64 guest and bundles the build
// machine's Debian daemons (hostapd, wpa_supplicant) with their shared libraries and
// regulatory.db into a tar archive, which travels on a second virtio disk (inside the
// initramfs they would break the image's size budget) and which the harness unpacks in the
// guest with package guest.
package vmkit

import (
	"archive/tar"
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"meshroot/internal/testenv"
)

// BuildCommand compiles the command in the current directory (the test's package) for the
// amd64 guest as a static binary. It goes into the image as a file: image.Options.ExtraCommands
// cannot build meshroot packages into u-root's busybox (the GOPATH-mode busybox build finds
// neither the module's other packages nor allows internal/). The binary is kept at a stable
// path in the cache, <cache>/<name>/<name>-amd64, and only replaced when its bytes change, so
// that the image cache (keyed by the files' size and mtime) is reused while the source stays
// the same.
func BuildCommand(tb testing.TB, name string) string {
	tb.Helper()
	dir := filepath.Join(testenv.CacheDir(tb), name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	tmp := filepath.Join(tb.TempDir(), name)
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", tmp, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build %s: %v\n%s", name, err, out)
	}
	dst := filepath.Join(dir, name+"-amd64")
	fresh, err := os.ReadFile(tmp)
	if err != nil {
		tb.Fatal(err)
	}
	if old, err := os.ReadFile(dst); err == nil && bytes.Equal(old, fresh) {
		return dst
	}
	if err := os.WriteFile(dst+".new", fresh, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(dst+".new", dst); err != nil {
		tb.Fatal(err)
	}
	return dst
}

// Bundle writes a tar archive of the binaries (as usr/sbin/<base name>), the shared libraries
// ldd lists for them (at the paths ldd resolves, the interpreter included), Debian's
// regulatory.db with its signature, and extra files (path in the guest → file on the host),
// and returns its path.
func Bundle(tb testing.TB, extra map[string]string, bins ...string) string {
	tb.Helper()
	files := map[string]string{ // path in the guest → host file
		"lib/firmware/regulatory.db":     "/lib/firmware/regulatory.db-debian",
		"lib/firmware/regulatory.db.p7s": "/lib/firmware/regulatory.db.p7s-debian",
	}
	for k, v := range extra {
		files[k] = v
	}
	for _, bin := range bins {
		files["usr/sbin/"+filepath.Base(bin)] = bin
		out, err := exec.Command("ldd", bin).Output()
		if err != nil {
			tb.Fatalf("ldd %s: %v", bin, err)
		}
		for _, p := range lddPaths(out) {
			files[strings.TrimPrefix(p, "/")] = p
		}
	}
	path := filepath.Join(tb.TempDir(), "bundle.tar")
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	tw := tar.NewWriter(f)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		b, err := os.ReadFile(files[n]) // follows symlinks to the real library
		if err != nil {
			tb.Fatal(err)
		}
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o755, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			tb.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			tb.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	return path
}

// lddPaths returns the absolute paths in ldd's output: "libssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3
// (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"; "linux-vdso.so.1 (0x...)" has none.
func lddPaths(out []byte) []string {
	var paths []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		var p string
		switch {
		case len(f) >= 3 && f[1] == "=>":
			p = f[2]
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			p = f[0]
		}
		if strings.HasPrefix(p, "/") {
			paths = append(paths, p)
		}
	}
	return paths
}

// BundleDrive returns the QEMU arguments that attach the bundle read-only as the guest's
// second virtio disk (/dev/vdb).
func BundleDrive(bundle string) []string {
	return []string{"-drive", "if=none,id=bundle,format=raw,readonly=on,file=" + bundle, "-device", "virtio-blk-pci,drive=bundle"}
}
