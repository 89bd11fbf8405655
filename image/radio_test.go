package image

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"meshroot/board"
)

func TestRadioUserland(t *testing.T) {
	if _, _, err := regulatoryDB("/"); err != nil {
		t.Skipf("no regulatory.db on this machine (%v): run `make deps`", err)
	}
	// The cache is src/.cache here, whatever the caller's MESHROOT_CACHE (the Makefile sets it).
	t.Setenv("MESHROOT_CACHE", "")
	src := t.TempDir()
	arm, err := board.Lookup("qemu-virt-arm64")
	if err != nil {
		t.Fatal(err)
	}
	// No arm64 sysroot: a clear error naming `make deps`.
	if _, err := RadioUserlandFor(arm, src); err == nil || !strings.Contains(err.Error(), "make deps") {
		t.Errorf("RadioUserlandFor(arm64, no sysroot) = %v; want an error saying to run make deps", err)
	}
	sysroot := filepath.Join(src, ".cache", "sysroot-arm64")
	if err := os.MkdirAll(filepath.Join(sysroot, "usr/sbin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sysroot, "usr/sbin/hostapd"), []byte("elf"), 0o755); err != nil {
		t.Fatal(err)
	}
	u, err := RadioUserlandFor(arm, src)
	if err != nil {
		t.Fatalf("RadioUserlandFor(arm64) = %v", err)
	}
	if len(u.Programs) != 1 || u.Programs[0] != (Program{Path: "usr/sbin/hostapd", Sysroot: sysroot}) {
		t.Errorf("RadioUserlandFor(arm64).Programs = %+v; want hostapd from %s", u.Programs, sysroot)
	}
	var paths []string
	for _, f := range u.Files {
		paths = append(paths, f.Path)
		if !strings.Contains(filepath.Base(f.Host), "regulatory.db") {
			t.Errorf("file %s from %s; want a regulatory.db", f.Path, f.Host)
		}
	}
	if want := []string{RegulatoryDBPath, RegulatoryDBPath + ".p7s"}; !slices.Equal(paths, want) {
		t.Errorf("RadioUserlandFor(arm64).Files = %v; want %v", paths, want)
	}
	if want := append([]string{"mac80211_hwsim"}, arm.Hwsim.Modules...); !slices.Equal(u.Modules, want) {
		t.Errorf("RadioUserlandFor(arm64).Modules = %v; want %v", u.Modules, want)
	}
	for _, p := range RadioPrograms {
		if strings.Contains(p, "wpa_supplicant") || strings.HasSuffix(p, "/iw") {
			t.Errorf("RadioPrograms has %s: the product ships no station tools", p)
		}
	}

	// A board without radios gets nothing.
	if u, err := RadioUserlandFor(board.Generic(), src); err != nil || len(u.Programs)+len(u.Files)+len(u.Modules) != 0 {
		t.Errorf("RadioUserlandFor(generic) = %+v, %v; want nothing", u, err)
	}
	// The build machine's own architecture without a sysroot: its own hostapd.
	if runtime.GOARCH == "amd64" && fileExists("/usr/sbin/hostapd") {
		x86, _ := board.Lookup("qemu-x86_64")
		u, err := RadioUserlandFor(x86, src)
		if err != nil || len(u.Programs) != 1 || u.Programs[0].Sysroot != "/" {
			t.Errorf("RadioUserlandFor(amd64) = %+v, %v; want the build machine's hostapd", u.Programs, err)
		}
	}
}

func TestBudgetFor(t *testing.T) {
	for _, b := range board.All() {
		want := DefaultBudget
		if b.Arch == "amd64" {
			want = Amd64Budget
		}
		if got := BudgetFor(b); got != want {
			t.Errorf("BudgetFor(%s) = %+v; want %+v", b.Name, got, want)
		}
	}
	if DefaultBudget.Compressed > Amd64Budget.Compressed || DefaultBudget.Compressed > 29<<20 {
		t.Errorf("DefaultBudget %+v: the arm64 product must fit the smallest slot's ~29 MiB for the initramfs", DefaultBudget)
	}
}
