// Package testenv holds what integration tests share: where the repository and its caches are,
// and the rules for when a test that needs root, namespaces, QEMU or real peers runs.
//
// The house rule (docs/ARCHITECTURE.md): tests named TestLab... or TestVM... need root; they skip
// with a clear reason only when not root (or under -short), and never install anything themselves.
// When running as root, a missing tool is a failure that says to run `make deps`, not a skip.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

var (
	rootOnce sync.Once
	rootDir  string
)

// RepoRoot returns the directory holding the meshroot go.mod, found by walking up from the
// working directory (go test runs each package in its own directory).
func RepoRoot(tb testing.TB) string {
	tb.Helper()
	rootOnce.Do(func() {
		dir, err := os.Getwd()
		if err != nil {
			return
		}
		for {
			if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && len(b) > 15 && string(b[:15]) == "module meshroot" {
				rootDir = dir
				return
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				return
			}
			dir = parent
		}
	})
	if rootDir == "" {
		tb.Fatalf("RepoRoot() = not found; want a parent directory with the meshroot go.mod")
	}
	return rootDir
}

// CacheDir returns $MESHROOT_CACHE, or .cache in the repository (where the Makefile downloads
// kernels and other large inputs).
func CacheDir(tb testing.TB) string {
	tb.Helper()
	if d := os.Getenv("MESHROOT_CACHE"); d != "" {
		return d
	}
	return filepath.Join(RepoRoot(tb), ".cache")
}

// Integration marks a test that needs root (namespaces, TUN, QEMU, real peers). It skips under
// -short and when not root, saying why.
func Integration(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("integration test: skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		tb.Skip("integration test: needs root (network namespaces, TUN, QEMU); run `make test` as root")
	}
}

// Command returns the path of a tool an integration test needs. Missing tools fail the test
// (as root the Makefile should have installed them); call Integration first.
func Command(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/lib/frr", "/usr/lib/ipsec"} {
			if _, serr := os.Stat(filepath.Join(dir, name)); serr == nil {
				return filepath.Join(dir, name)
			}
		}
		tb.Fatalf("LookPath(%q) = %v; want it installed (run `make deps`)", name, err)
	}
	return p
}

// KernelArch maps a GOARCH to the Debian architecture name used in the kernel cache.
func KernelArch(goarch string) string {
	switch goarch {
	case "arm64":
		return "arm64"
	case "amd64":
		return "amd64"
	}
	return goarch
}

// Kernel returns the cached Debian kernel for goarch (arm64 or amd64) and its module tree
// (<dir>/<kernel version>/kernel/...), as downloaded by `make kernels`.
func Kernel(tb testing.TB, goarch string) (vmlinuz, modulesDir string) {
	tb.Helper()
	dir := filepath.Join(CacheDir(tb), "kernel", KernelArch(goarch))
	vmlinuz = filepath.Join(dir, "vmlinuz")
	if _, err := os.Stat(vmlinuz); err != nil {
		tb.Fatalf("kernel for %s: %v; want it downloaded (run `make kernels`)", goarch, err)
	}
	return vmlinuz, filepath.Join(dir, "modules")
}

// HostArch is the GOARCH of the machine running the tests.
func HostArch() string { return runtime.GOARCH }
