package board

import (
	"slices"
	"testing"
)

// TestNANDBoardsLoadUBI: every board whose data area is UBIFS on raw NAND loads UBI and UBIFS
// at boot (meshd attaches UBI itself; a missing module means the RAM fallback on every boot),
// and the modules exist in the arm64 Debian kernel the images are built with.
func TestNANDBoardsLoadUBI(t *testing.T) {
	n := 0
	for _, b := range All() {
		if b.Flash.DataFS != "ubifs" {
			continue
		}
		n++
		if b.Flash.Kind != "nand" || b.Flash.Data.Name == "" {
			t.Errorf("%s: ubifs data area on flash kind %q, partition %q; want nand and an MTD partition name", b.Name, b.Flash.Kind, b.Flash.Data.Name)
		}
		for _, m := range ubiModules {
			if !slices.Contains(b.Modules, m) {
				t.Errorf("%s: Modules = %q; want it to include %q", b.Name, b.Modules, m)
			}
		}
		if testing.Short() {
			continue
		}
		loadable, builtin := kernelModuleNames(t, b.Arch)
		for _, m := range ubiModules {
			if !loadable[m] && !builtin[m] {
				t.Errorf("%s: module %q is not in the %s kernel", b.Name, m, b.Arch)
			}
		}
	}
	if n == 0 {
		t.Fatal("no board in the catalog has a ubifs data area")
	}
}
