package board

import (
	"bufio"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"meshroot/internal/testenv"
)

// kernelModuleNames lists the module names (as modinfo spells them: dashes become underscores)
// of a cached Debian kernel: loadable ones from the tree, built-in ones from modules.builtin.
func kernelModuleNames(t *testing.T, goarch string) (loadable, builtin map[string]bool) {
	t.Helper()
	_, modDir := testenv.Kernel(t, goarch)
	vers, err := os.ReadDir(modDir)
	if err != nil || len(vers) != 1 {
		t.Fatalf("ReadDir(%s) = %v, %v; want one kernel version", modDir, vers, err)
	}
	base := filepath.Join(modDir, vers[0].Name())
	name := func(p string) string {
		b := filepath.Base(p)
		b = b[:strings.Index(b, ".ko")]
		return strings.ReplaceAll(b, "-", "_")
	}
	loadable = map[string]bool{}
	err = filepath.WalkDir(filepath.Join(base, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.Contains(filepath.Base(p), ".ko") {
			loadable[name(p)] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	builtin = map[string]bool{}
	f, err := os.Open(filepath.Join(base, "modules.builtin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if l := strings.TrimSpace(s.Text()); l != "" {
			builtin[name(l)] = true
		}
	}
	return loadable, builtin
}

// TestQEMUModulesExist checks the QEMU boards' module lists against the real Debian kernels
// the images boot (downloaded by `make kernels`).
func TestQEMUModulesExist(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the kernel cache (make kernels); skipped in -short mode")
	}
	for _, name := range []string{"qemu-virt-arm64", "qemu-x86_64"} {
		b, err := Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		loadable, builtin := kernelModuleNames(t, b.Arch)
		for _, m := range b.Modules {
			if !loadable[m] && !builtin[m] {
				t.Errorf("%s: module %q is not in the %s kernel (neither a .ko nor built in)", name, m, b.Arch)
			}
			if builtin[m] {
				t.Logf("%s: module %q is built into the %s kernel (loading it is a no-op)", name, m, b.Arch)
			}
		}
	}
}
