package board

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCatalogValid(t *testing.T) {
	if err := ValidateCatalog(All()); err != nil {
		t.Fatalf("ValidateCatalog(All()) = %v; want nil", err)
	}
	if err := Generic().Validate(); err != nil {
		t.Fatalf("Generic().Validate() = %v; want nil", err)
	}
	want := []string{"ipq807x", "ipq60xx", "ipq50xx", "ipq95xx", "qemu-virt-arm64", "qemu-x86_64"}
	if diff := cmp.Diff(want, Names()); diff != "" {
		t.Errorf("Names() mismatch (-want +got):\n%s", diff)
	}
}

// TestValidateCatches shows that the checks the catalog passes actually fire on broken data.
func TestValidateCatches(t *testing.T) {
	base, err := Lookup("qemu-virt-arm64")
	if err != nil {
		t.Fatal(err)
	}
	nand, err := Lookup("ipq807x")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		board  Board
		mutate func(*Board)
		want   string
	}{
		{"overlapping partitions", base, func(b *Board) { b.Flash.Partitions[1].Offset -= MiB }, "overlaps the previous"},
		{"partition beyond the disk", base, func(b *Board) { b.Flash.Size = 300 * MiB }, "not inside"},
		{"env overlapping a partition", base, func(b *Board) { b.Flash.Env.RedundOffset = qemuFirst }, "overlaps partition"},
		{"env in the GPT", base, func(b *Board) { b.Flash.Env.Offset = 0 }, "between the GPT"},
		{"env copies overlapping", base, func(b *Board) { b.Flash.Env.RedundOffset = b.Flash.Env.Offset }, "overlap"},
		{"env misaligned", base, func(b *Board) { b.Flash.Env.RedundOffset += 0x1000 }, "not aligned"},
		{"env beyond its partition", nand, func(b *Board) { b.Flash.Env.RedundOffset = 0x60000 }, "does not fit"},
		{"env partition missing", nand, func(b *Board) { b.Flash.Env.Name = "0:nothere" }, "not in the partition table"},
		{"slot not in table", base, func(b *Board) { b.Flash.SlotB.Name = "slot_c" }, "not in the partition table"},
		{"slots differ", base, func(b *Board) { b.Flash.SlotB.Size = MiB; b.Flash.Partitions[1].Size = MiB }, "slot sizes differ"},
		{"two WAN ports", base, func(b *Board) { b.Ports[1].Role = RoleWAN }, "2 WAN ports"},
		{"duplicate port", base, func(b *Board) { b.Ports[1].Name = "eth0" }, "listed twice"},
		{"6 GHz DFS", nand, func(b *Board) { b.Radios[0].Band = Band6G }, "DFS on 6GHz"},
		{"2.4 GHz at 160", nand, func(b *Board) { b.Radios[1].MaxWidthMHz = 160 }, "invalid for 2.4GHz"},
		{"duplicate phy", nand, func(b *Board) { b.Radios[1].Phy = 0 }, "phy0 listed twice"},
		{"undetectable", base, func(b *Board) { b.Compatible = nil }, "detection can never pick it"},
		{"duplicate module", base, func(b *Board) { b.Modules = append(b.Modules, "tun") }, "listed twice"},
		{"hwsim without module", base, func(b *Board) { b.Hwsim.Module = "" }, "hwsim: module is empty"},
		{"hwsim radio at 160 on 2.4 GHz", base, func(b *Board) { b.Hwsim.Radios[0].MaxWidthMHz = 160 }, "hwsim radio 0: max width 160 MHz invalid"},
		{"hwsim beside real radios", nand, func(b *Board) { b.Hwsim = qemuHwsim() }, "no simulated ones"},
		{"hwsim max", base, func(b *Board) { b.Hwsim.Max = 0 }, "want 1..64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.board.clone()
			tc.mutate(&b)
			err := b.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v; want an error containing %q", err, tc.want)
			}
		})
	}

	dup := All()
	dup = append(dup, dup[0])
	if err := ValidateCatalog(dup); err == nil || !strings.Contains(err.Error(), "listed twice") {
		t.Errorf("ValidateCatalog(with a duplicate) = %v; want a duplicate error", err)
	}
}

func TestQEMULayoutContract(t *testing.T) {
	// The numbers image/ (disk creation) and ota/ (env, slots) code against.
	for _, name := range []string{"qemu-virt-arm64", "qemu-x86_64"} {
		b, err := Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		want := Flash{
			Kind:   "virtio",
			Device: "/dev/vda",
			SlotA:  Region{Name: "slot_a", Device: "/dev/vda1", Offset: 1 * MiB, Size: 128 * MiB},
			SlotB:  Region{Name: "slot_b", Device: "/dev/vda2", Offset: 129 * MiB, Size: 128 * MiB},
			Data:   Region{Name: "data", Device: "/dev/vda3", Offset: 257 * MiB, Size: 256 * MiB},
			DataFS: "ext4",
			Env: BootEnv{Device: "/dev/vda", Offset: 0x80000, Size: 0x20000, Redundant: true,
				RedundOffset: 0xA0000, SectorSize: 0x20000},
			Size: 514 * MiB,
		}
		want.Partitions = []Region{want.SlotA, want.SlotB, want.Data}
		if diff := cmp.Diff(want, b.Flash); diff != "" {
			t.Errorf("Lookup(%q).Flash mismatch (-want +got):\n%s", name, diff)
		}
		if got := b.PortsByRole(RoleWAN); !cmp.Equal(got, []string{"eth0"}) {
			t.Errorf("%s WAN ports = %q; want [eth0]", name, got)
		}
		if got := b.PortsByRole(RoleLAN); !cmp.Equal(got, []string{"eth1"}) {
			t.Errorf("%s LAN ports = %q; want [eth1]", name, got)
		}
	}
}

// writeFile creates root/rel with content, making the directories.
func writeFile(t *testing.T, root, rel, content string) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestDetect(t *testing.T) {
	type fixture struct {
		compatible     string // raw property bytes, NUL-separated
		sysfsDT        bool   // write under sys/firmware/devicetree/base instead of proc/device-tree
		vendor, produc string
	}
	for _, tc := range []struct {
		name string
		fx   fixture
		want string
	}{
		{"dl-wrx36", fixture{compatible: "dynalink,dl-wrx36\x00qcom,ipq8074\x00"}, "ipq807x"},
		{"ax3600 via sysfs", fixture{compatible: "xiaomi,ax3600\x00qcom,ipq8074\x00", sysfsDT: true}, "ipq807x"},
		{"unlisted ipq8074 board", fixture{compatible: "acme,router9\x00qcom,ipq8074\x00"}, "ipq807x"},
		{"mr7350", fixture{compatible: "linksys,mr7350\x00qcom,ipq6018\x00"}, "ipq60xx"},
		{"gl-b3000", fixture{compatible: "glinet,gl-b3000\x00qcom,ipq5018\x00"}, "ipq50xx"},
		{"rdp433", fixture{compatible: "qcom,ipq9574-ap-al02-c7\x00qcom,ipq9574\x00"}, "ipq95xx"},
		{"kiwi", fixture{compatible: "8devices,kiwi-dvk\x00qcom,ipq9574\x00"}, "ipq95xx"},
		{"qemu virt", fixture{compatible: "linux,dummy-virt\x00"}, "qemu-virt-arm64"},
		{"qemu virt without trailing NUL", fixture{compatible: "linux,dummy-virt", sysfsDT: true}, "qemu-virt-arm64"},
		{"qemu pc", fixture{vendor: "QEMU\n", produc: "Standard PC (i440FX + PIIX, 1996)\n"}, "qemu-x86_64"},
		{"qemu q35", fixture{vendor: "QEMU\n", produc: "Standard PC (Q35 + ICH9, 2009)\n"}, "qemu-x86_64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if tc.fx.compatible != "" {
				p := "proc/device-tree/compatible"
				if tc.fx.sysfsDT {
					p = "sys/firmware/devicetree/base/compatible"
				}
				writeFile(t, root, p, tc.fx.compatible)
			}
			if tc.fx.vendor != "" {
				writeFile(t, root, "sys/class/dmi/id/sys_vendor", tc.fx.vendor)
				writeFile(t, root, "sys/class/dmi/id/product_name", tc.fx.produc)
			}
			b, err := Detect(root)
			if err != nil {
				t.Fatalf("Detect(%s) = %v; want %s", tc.name, err, tc.want)
			}
			if b.Name != tc.want {
				t.Errorf("Detect(%s) = %s; want %s", tc.name, b.Name, tc.want)
			}
		})
	}
}

// TestDetectEveryEntry builds a fixture from each catalog entry's own identification, so a new
// entry is covered without editing the test.
func TestDetectEveryEntry(t *testing.T) {
	for _, want := range All() {
		ids := []Identity{}
		for _, c := range want.Compatible {
			ids = append(ids, Identity{Compatible: []string{c}})
		}
		for _, m := range want.DMI {
			ids = append(ids, Identity{SysVendor: m.SysVendor, ProductName: m.ProductName + " (some variant)"})
		}
		for _, id := range ids {
			root := t.TempDir()
			if len(id.Compatible) > 0 {
				writeFile(t, root, "proc/device-tree/compatible", strings.Join(id.Compatible, "\x00")+"\x00")
			} else {
				writeFile(t, root, "sys/class/dmi/id/sys_vendor", id.SysVendor+"\n")
				writeFile(t, root, "sys/class/dmi/id/product_name", id.ProductName+"\n")
			}
			got, err := Detect(root)
			if err != nil || got.Name != want.Name {
				t.Errorf("Detect(%s) = %q, %v; want %q", id, got.Name, err, want.Name)
			}
		}
	}
}

func TestDetectUnknown(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  []string // substrings of the error
	}{
		{"unknown SoC", map[string]string{"proc/device-tree/compatible": "raspberrypi,4-model-b\x00brcm,bcm2711\x00"},
			[]string{"raspberrypi,4-model-b", "brcm,bcm2711"}},
		{"unknown PC", map[string]string{"sys/class/dmi/id/sys_vendor": "Dell Inc.\n", "sys/class/dmi/id/product_name": "OptiPlex 7010\n"},
			[]string{"Dell Inc.", "OptiPlex 7010"}},
		{"QEMU vendor but another product", map[string]string{"sys/class/dmi/id/sys_vendor": "QEMU\n", "sys/class/dmi/id/product_name": "KVM Virtual Machine\n"},
			[]string{"KVM Virtual Machine"}},
		{"nothing at all", nil, []string{"no device-tree compatible and no DMI identity"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for p, c := range tc.files {
				writeFile(t, root, p, c)
			}
			b, err := Detect(root)
			if !errors.Is(err, ErrUnknownBoard) {
				t.Fatalf("Detect() = %q, %v; want an error wrapping ErrUnknownBoard", b.Name, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Detect() error %q does not say what was read (%q)", err, w)
				}
			}
		})
	}
}

func TestDetectBadCompatible(t *testing.T) {
	root := t.TempDir()
	writeFile(t, root, "proc/device-tree/compatible", "qcom,ipq8074\x01\x00")
	if b, err := Detect(root); err == nil || errors.Is(err, ErrUnknownBoard) {
		t.Errorf("Detect(control character) = %q, %v; want a parse error", b.Name, err)
	}
}

func TestLookup(t *testing.T) {
	b, err := Lookup("ipq95xx")
	if err != nil {
		t.Fatalf("Lookup(ipq95xx) = %v", err)
	}
	var six bool
	for _, r := range b.Radios {
		if r.Band == Band6G && r.MaxWidthMHz == 320 && r.Chip == "QCN9274" {
			six = true
		}
	}
	if !six {
		t.Errorf("Lookup(ipq95xx).Radios = %+v; want a 320 MHz 6 GHz QCN9274 radio", b.Radios)
	}
	// Lookup returns copies: changing one does not change the catalog.
	b.Ports[0].Name = "changed"
	if again, _ := Lookup("ipq95xx"); again.Ports[0].Name == "changed" {
		t.Errorf("Lookup returned the catalog's own slice")
	}
	if _, err := Lookup("nope"); !errors.Is(err, ErrUnknownBoard) {
		t.Errorf("Lookup(nope) = %v; want ErrUnknownBoard", err)
	}
	if g, err := Lookup("generic"); err != nil || !g.Generic {
		t.Errorf("Lookup(generic) = %+v, %v; want the generic profile", g, err)
	}
}

func TestGenericPorts(t *testing.T) {
	got := GenericPorts([]string{"eth2", "eth0", "eth1", "eth0"})
	want := []Port{{Name: "eth0", Role: RoleWAN}, {Name: "eth1", Role: RoleLAN}, {Name: "eth2", Role: RoleLAN}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GenericPorts() mismatch (-want +got):\n%s", diff)
	}
	if got := GenericPorts(nil); len(got) != 0 {
		t.Errorf("GenericPorts(nil) = %v; want none", got)
	}
}

func TestParseCompatible(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{"a,b\x00c,d\x00", []string{"a,b", "c,d"}, false},
		{"a,b\x00\x00c,d", []string{"a,b", "c,d"}, false},
		{"", nil, false},
		{"\x00\x00", nil, false},
		{"a\nb\x00", nil, true},
		{"\xff\xfe\x00", nil, true},
		{strings.Repeat("x\x00", maxCompatibles+1), nil, true},
		{strings.Repeat("x", maxCompatibleBytes+1), nil, true},
	} {
		got, err := ParseCompatible([]byte(tc.in))
		if (err != nil) != tc.wantErr || !cmp.Equal(got, tc.want) {
			t.Errorf("ParseCompatible(%q) = %q, %v; want %q (error %v)", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func FuzzParseCompatible(f *testing.F) {
	f.Add([]byte("dynalink,dl-wrx36\x00qcom,ipq8074\x00"))
	f.Add([]byte("linux,dummy-virt\x00"))
	f.Add([]byte("\x00\x00\x00"))
	f.Add([]byte("a\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		list, err := ParseCompatible(b)
		if err != nil {
			return
		}
		if len(list) > maxCompatibles {
			t.Fatalf("ParseCompatible returned %d entries; limit %d", len(list), maxCompatibles)
		}
		for _, s := range list {
			if s == "" || strings.ContainsRune(s, 0) {
				t.Fatalf("ParseCompatible returned entry %q", s)
			}
		}
		// Matching never panics, whatever was read.
		_, _ = Match(Identity{Compatible: list})
	})
}

func FuzzReadIdentityDMI(f *testing.F) {
	f.Add([]byte("QEMU\n"), []byte("Standard PC (i440FX + PIIX, 1996)\n"))
	f.Add([]byte("  \x00\xff"), []byte(""))
	f.Fuzz(func(t *testing.T, vendor, product []byte) {
		root := t.TempDir()
		writeFile(t, root, dmiVendorPath, string(vendor))
		writeFile(t, root, dmiProductPath, string(product))
		id, err := ReadIdentity(root)
		if err != nil {
			t.Fatalf("ReadIdentity() = %v", err)
		}
		for _, s := range []string{id.SysVendor, id.ProductName} {
			if strings.TrimSpace(s) != s || strings.ContainsAny(s, "\x00\n") {
				t.Fatalf("ReadIdentity kept %q uncleaned", s)
			}
		}
		_, _ = Match(id)
	})
}

func TestQEMUHwsim(t *testing.T) {
	for _, name := range []string{"qemu-virt-arm64", "qemu-x86_64"} {
		b, err := Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		if b.Hwsim == nil || b.Hwsim.Module != "mac80211_hwsim" || len(b.Radios) != 0 {
			t.Fatalf("Lookup(%q).Hwsim = %+v, Radios %v; want mac80211_hwsim and no fixed radios", name, b.Hwsim, b.Radios)
		}
		// Lookup hands out copies: changing one leaves the catalog alone.
		b.Hwsim.Radios[0].Band = Band6G
		b.Hwsim.Modules[0] = "x"
		again, _ := Lookup(name)
		if again.Hwsim.Radios[0].Band != Band2G4 || again.Hwsim.Modules[0] != "ctr" {
			t.Errorf("Lookup(%q) after changing a copy: Hwsim = %+v; want the catalog's", name, again.Hwsim)
		}
	}
	for _, b := range All() {
		if b.Hwsim != nil && !strings.HasPrefix(b.Name, "qemu-") {
			t.Errorf("board %s has simulated radios; only the QEMU boards do", b.Name)
		}
	}
}
