package image

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// writeKO writes a minimal ELF64 relocatable file whose only content is a .modinfo section
// holding fields (key=value strings), which is all ReadModInfo looks at.
func writeKO(t *testing.T, path string, fields ...string) {
	t.Helper()
	var modinfo []byte
	for _, f := range fields {
		modinfo = append(modinfo, f...)
		modinfo = append(modinfo, 0)
	}
	shstrtab := []byte("\x00.modinfo\x00.shstrtab\x00")
	const ehsize, shentsize = 64, 64
	modOff := uint64(ehsize)
	strOff := modOff + uint64(len(modinfo))
	shOff := (strOff + uint64(len(shstrtab)) + 7) &^ 7
	var b bytes.Buffer
	le := binary.LittleEndian
	b.Write([]byte{0x7f, 'E', 'L', 'F', 2, 1, 1, 0})
	b.Write(make([]byte, 8))
	binary.Write(&b, le, uint16(1))   // ET_REL
	binary.Write(&b, le, uint16(183)) // EM_AARCH64
	binary.Write(&b, le, uint32(1))
	binary.Write(&b, le, uint64(0)) // entry
	binary.Write(&b, le, uint64(0)) // phoff
	binary.Write(&b, le, shOff)
	binary.Write(&b, le, uint32(0))
	binary.Write(&b, le, uint16(ehsize))
	binary.Write(&b, le, uint16(0)) // phentsize
	binary.Write(&b, le, uint16(0)) // phnum
	binary.Write(&b, le, uint16(shentsize))
	binary.Write(&b, le, uint16(3)) // shnum
	binary.Write(&b, le, uint16(2)) // shstrndx
	b.Write(modinfo)
	b.Write(shstrtab)
	b.Write(make([]byte, int(shOff)-b.Len()))
	sh := func(name, typ uint32, off, size uint64) {
		binary.Write(&b, le, name)
		binary.Write(&b, le, typ)
		binary.Write(&b, le, uint64(0)) // flags
		binary.Write(&b, le, uint64(0)) // addr
		binary.Write(&b, le, off)
		binary.Write(&b, le, size)
		binary.Write(&b, le, uint32(0)) // link
		binary.Write(&b, le, uint32(0)) // info
		binary.Write(&b, le, uint64(1)) // addralign
		binary.Write(&b, le, uint64(0)) // entsize
	}
	sh(0, 0, 0, 0)
	sh(1, 1, modOff, uint64(len(modinfo)))   // .modinfo, SHT_PROGBITS
	sh(10, 3, strOff, uint64(len(shstrtab))) // .shstrtab, SHT_STRTAB
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fixtureTree is a small kernel module tree modelled on the hwsim and ext4 stacks:
//
//	hwsim -> mac80211 -> cfg80211 -> rfkill; mac80211 -> libarc4; hwsim -> virtio (built in)
//	ext4 -> jbd2, crc16; ext4 softdep pre: crypto-crc32c (an alias of crc32c_generic)
func fixtureTree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	k := filepath.Join(root, "1.0-test", "kernel")
	writeKO(t, filepath.Join(k, "net/rfkill/rfkill.ko"), "license=GPL", "name=rfkill", "depends=")
	writeKO(t, filepath.Join(k, "net/wireless/cfg80211.ko"), "name=cfg80211", "depends=rfkill")
	writeKO(t, filepath.Join(k, "lib/crypto/libarc4.ko"), "name=libarc4", "depends=")
	writeKO(t, filepath.Join(k, "net/mac80211/mac80211.ko"), "name=mac80211", "depends=libarc4,cfg80211")
	writeKO(t, filepath.Join(k, "drivers/net/wireless/mac80211_hwsim.ko"), "name=mac80211_hwsim", "depends=virtio,mac80211,cfg80211", "parm=radios:int")
	writeKO(t, filepath.Join(k, "fs/jbd2/jbd2.ko"), "name=jbd2", "depends=", "softdep=pre: crypto-crc32c")
	writeKO(t, filepath.Join(k, "lib/crc16.ko"), "name=crc16", "depends=")
	writeKO(t, filepath.Join(k, "fs/ext4/ext4.ko"), "name=ext4", "depends=jbd2,crc16", "softdep=pre: crypto-crc32c")
	writeKO(t, filepath.Join(k, "crypto/crc32c_generic.ko"), "name=crc32c_generic", "alias=crypto-crc32c", "alias=crc32c", "depends=")
	writeKO(t, filepath.Join(k, "arch/x86/crypto/crc32c-intel.ko"), "name=crc32c_intel", "alias=crypto-crc32c-intel", "depends=")
	writeKO(t, filepath.Join(k, "fs/cifs/cifs.ko"), "name=cifs", "softdep=gcm", "softdep=pre: nosuchthing", "depends=")
	if err := os.WriteFile(filepath.Join(root, "1.0-test", "modules.builtin"), []byte("kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_ring.ko\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestParseModInfo(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want ModInfo
	}{
		{"empty", "", ModInfo{}},
		{"deps", "name=mac80211\x00depends=libarc4,cfg80211\x00", ModInfo{Name: "mac80211", Depends: []string{"libarc4", "cfg80211"}}},
		{"empty depends", "depends=\x00name=x\x00", ModInfo{Name: "x"}},
		{"dashes normalized", "depends=crc32c-intel\x00", ModInfo{Depends: []string{"crc32c_intel"}}},
		{"padding", "\x00\x00name=a\x00\x00\x00alias=b\x00\x00", ModInfo{Name: "a", Aliases: []string{"b"}}},
		{"softdep", "softdep=pre: a b post: c\x00softdep=post: d\x00", ModInfo{SoftPre: []string{"a", "b"}, SoftPost: []string{"c", "d"}}},
		{"old softdep ignored", "softdep=gcm\x00", ModInfo{}},
		{"value with equals", "parm=x:a=b\x00name=y\x00", ModInfo{Name: "y"}},
	} {
		got, err := ParseModInfo([]byte(tc.in))
		if err != nil {
			t.Errorf("%s: ParseModInfo(%q) = %v", tc.name, tc.in, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s: ParseModInfo(%q) mismatch (-want +got):\n%s", tc.name, tc.in, diff)
		}
	}
	if _, err := ParseModInfo([]byte("name=a\x00garbage\x00")); err == nil || !strings.Contains(err.Error(), "garbage") {
		t.Errorf("ParseModInfo(field without =) = %v; want an error naming the field", err)
	}
}

func FuzzParseModInfo(f *testing.F) {
	f.Add([]byte("name=mac80211\x00depends=libarc4,cfg80211\x00softdep=pre: crc32c post: x\x00"))
	f.Add([]byte("\x00\x00alias=pci:v*d*\x00"))
	f.Add([]byte("softdep=pre:\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		mi, err := ParseModInfo(b)
		if err != nil {
			return
		}
		for _, d := range mi.Depends {
			if d == "" || strings.Contains(d, "-") || strings.Contains(d, ",") {
				t.Fatalf("ParseModInfo(%q) dependency %q: want non-empty, no dashes or commas", b, d)
			}
		}
	})
}

func TestResolveFixture(t *testing.T) {
	tree, err := OpenModuleTree(fixtureTree(t), "1.0-test")
	if err != nil {
		t.Fatal(err)
	}
	set, err := tree.Resolve([]string{"mac80211_hwsim", "ext4", "virtio", "cifs"})
	if err != nil {
		t.Fatalf("Resolve = %v", err)
	}
	checkLoadOrder(t, set)
	want := []string{"cifs", "crc16", "crc32c_generic", "jbd2", "ext4", "rfkill", "cfg80211", "libarc4", "mac80211", "mac80211_hwsim"}
	if diff := cmp.Diff(want, set.Load); diff != "" {
		t.Errorf("Load mismatch (-want +got):\n%s", diff)
	}
	if got := set.Builtin; !cmp.Equal(got, []string{"virtio"}) {
		t.Errorf("Builtin = %q; want [virtio]", got)
	}
	if got := set.Unresolved; !cmp.Equal(got, []string{"nosuchthing"}) {
		t.Errorf("Unresolved = %q; want [nosuchthing]", got)
	}
	wantDep := strings.Join([]string{
		"kernel/crypto/crc32c_generic.ko:",
		"kernel/drivers/net/wireless/mac80211_hwsim.ko: kernel/net/mac80211/mac80211.ko kernel/lib/crypto/libarc4.ko kernel/net/wireless/cfg80211.ko kernel/net/rfkill/rfkill.ko",
		"kernel/fs/cifs/cifs.ko:",
		"kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/lib/crc16.ko",
		"kernel/fs/jbd2/jbd2.ko:",
		"kernel/lib/crc16.ko:",
		"kernel/lib/crypto/libarc4.ko:",
		"kernel/net/mac80211/mac80211.ko: kernel/lib/crypto/libarc4.ko kernel/net/wireless/cfg80211.ko kernel/net/rfkill/rfkill.ko",
		"kernel/net/rfkill/rfkill.ko:",
		"kernel/net/wireless/cfg80211.ko: kernel/net/rfkill/rfkill.ko",
	}, "\n") + "\n"
	if diff := cmp.Diff(wantDep, string(set.ModulesDep())); diff != "" {
		t.Errorf("ModulesDep mismatch (-want +got):\n%s", diff)
	}
	wantSoft := "# Soft dependencies extracted from modules' .modinfo sections.\nsoftdep ext4 pre: crypto-crc32c\nsoftdep jbd2 pre: crypto-crc32c\n"
	if got := string(set.ModulesSoftdep()); got != wantSoft {
		t.Errorf("ModulesSoftdep = %q; want %q", got, wantSoft)
	}
}

func TestResolveErrors(t *testing.T) {
	root := fixtureTree(t)
	k := filepath.Join(root, "1.0-test", "kernel")
	writeKO(t, filepath.Join(k, "a.ko"), "name=a", "depends=b")
	writeKO(t, filepath.Join(k, "b.ko"), "name=b", "depends=a")
	writeKO(t, filepath.Join(k, "c.ko"), "name=c", "depends=missing")
	writeKO(t, filepath.Join(k, "d.ko"), "name=notd")
	tree, err := OpenModuleTree(root, "1.0-test")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		req  string
		want string
	}{
		{"nosuch", "module nosuch: not found"},
		{"a", "cycle"},
		{"c", "dependency missing not found"},
		{"d", "says name=notd"},
		{" ", "empty name"},
	} {
		if _, err := tree.Resolve([]string{tc.req}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Resolve(%q) = %v; want an error containing %q", tc.req, err, tc.want)
		}
	}
	if _, err := OpenModuleTree(t.TempDir(), "nope"); err == nil {
		t.Errorf("OpenModuleTree(missing) = nil error; want one")
	}
}

// checkLoadOrder checks that set.Load loads every module after its dependencies and that each
// modules.dep line lists the module's complete closure so that loading it from last to first
// never loads a module before its dependencies (what modprobe and meshd's loader do).
func checkLoadOrder(t *testing.T, set *ModuleSet) {
	t.Helper()
	pos := map[string]int{}
	for i, m := range set.Load {
		pos[m] = i
	}
	for _, m := range set.Load {
		for _, d := range set.deps[m] {
			if p, ok := pos[d]; ok && p > pos[m] {
				t.Errorf("Load order: %s at %d before its dependency %s at %d", m, pos[m], d, p)
			}
		}
	}
	dep, err := ParseModulesDep(set.ModulesDep())
	if err != nil {
		t.Fatalf("ParseModulesDep(ModulesDep()) = %v", err)
	}
	byPath := map[string]string{}
	for _, m := range set.Load {
		byPath[set.Path(m)] = m
	}
	if len(dep) != len(set.Load) {
		t.Errorf("modules.dep has %d lines; want one per shipped module (%d)", len(dep), len(set.Load))
	}
	for mod, deps := range dep {
		loaded := map[string]bool{}
		for i := len(deps) - 1; i >= 0; i-- {
			m := byPath[deps[i]]
			for _, d := range set.deps[m] {
				if _, shipped := pos[d]; shipped && !loaded[d] {
					t.Errorf("modules.dep %s: loading %s before its dependency %s", mod, m, d)
				}
			}
			loaded[m] = true
		}
		for _, d := range set.closure(byPath[mod]) {
			if !loaded[d] {
				t.Errorf("modules.dep %s: dependency %s missing", mod, d)
			}
		}
	}
}

// TestResolveRealKernels resolves the QEMU boards' and the Wi-Fi lab's modules against the
// cached Debian kernels and compares modules.dep with what the host's depmod computes for the
// same files.
func TestResolveRealKernels(t *testing.T) {
	if testing.Short() {
		t.Skip("reads the cached kernels' modules; skipped in -short mode")
	}
	src, err := FindSourceDir()
	if err != nil {
		t.Fatal(err)
	}
	depmod, _ := exec.LookPath("depmod")
	if depmod == "" {
		for _, p := range []string{"/usr/sbin/depmod", "/sbin/depmod"} {
			if _, err := os.Stat(p); err == nil {
				depmod = p
			}
		}
	}
	for _, arch := range []string{"arm64", "amd64"} {
		t.Run(arch, func(t *testing.T) {
			kdir := DefaultKernelDir(src, arch)
			kver, _, err := readKernel(kdir)
			if err != nil {
				t.Fatalf("kernel cache: %v (run `make kernels`)", err)
			}
			tree, err := OpenModuleTree(filepath.Join(kdir, "modules"), kver)
			if err != nil {
				t.Fatal(err)
			}
			req := []string{"mac80211_hwsim", "ext4", "virtio_blk", "virtio_pci", "virtio_net", "i6300esb", "tun", "nft_masq", "bridge", "virtio"}
			set, err := tree.Resolve(req)
			if err != nil {
				t.Fatalf("Resolve(%q) = %v", req, err)
			}
			checkLoadOrder(t, set)
			for _, m := range []string{"mac80211", "cfg80211", "rfkill", "libarc4", "jbd2", "mbcache", "crc16", "crc32c_generic", "nf_nat", "nf_conntrack"} {
				if !slices.Contains(set.Load, m) {
					t.Errorf("Load = %q; want it to include %s", set.Load, m)
				}
			}
			// virtio is built into the arm64 kernel and a module on amd64.
			if got, want := slices.Contains(set.Builtin, "virtio"), arch == "arm64"; got != want {
				t.Errorf("virtio built in = %v; want %v (Builtin %q)", got, want, set.Builtin)
			}
			if depmod == "" {
				t.Fatalf("depmod not found; want kmod installed (run `make deps`)")
			}
			compareDepmod(t, depmod, tree, set)
		})
	}
}

// compareDepmod links the shipped modules into a scratch tree, runs the host's depmod on it,
// and checks each module's dependency set matches ours.
func compareDepmod(t *testing.T, depmod string, tree *ModuleTree, set *ModuleSet) {
	t.Helper()
	base := t.TempDir()
	dir := filepath.Join(base, "lib/modules", tree.KernelVersion)
	for _, m := range set.Load {
		p := filepath.Join(dir, set.Path(m))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(tree.Dir, set.Path(m)), p); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"modules.builtin", "modules.order", "modules.builtin.modinfo"} {
		if b, err := os.ReadFile(filepath.Join(tree.Dir, f)); err == nil {
			if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if out, err := exec.Command(depmod, "-b", base, tree.KernelVersion).CombinedOutput(); err != nil {
		t.Fatalf("depmod: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "modules.dep"))
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := ParseModulesDep(b)
	if err != nil {
		t.Fatal(err)
	}
	ours, err := ParseModulesDep(set.ModulesDep())
	if err != nil {
		t.Fatal(err)
	}
	sorted := func(s []string) []string { s = slices.Clone(s); sort.Strings(s); return s }
	if len(theirs) != len(ours) {
		t.Errorf("depmod lists %d modules; we list %d", len(theirs), len(ours))
	}
	for mod, deps := range theirs {
		if diff := cmp.Diff(sorted(deps), sorted(ours[mod]), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("modules.dep %s: dependencies differ from depmod's (-depmod +ours):\n%s", mod, diff)
		}
	}
}

func TestParseModulesDep(t *testing.T) {
	got, err := ParseModulesDep([]byte("# comment\n\nkernel/a.ko: kernel/b.ko kernel/c.ko\nkernel/b.ko:\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"kernel/a.ko": {"kernel/b.ko", "kernel/c.ko"}, "kernel/b.ko": nil}
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("ParseModulesDep mismatch (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"no colon\n", ": x.ko\n", "a.ko:\na.ko:\n"} {
		if _, err := ParseModulesDep([]byte(bad)); err == nil {
			t.Errorf("ParseModulesDep(%q) = nil error; want one", bad)
		}
	}
}

func FuzzParseModulesDep(f *testing.F) {
	f.Add([]byte("kernel/a.ko: kernel/b.ko\nkernel/b.ko:\n"))
	f.Add([]byte("# c\n\n:\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseModulesDep(b)
		if err != nil {
			return
		}
		for k, deps := range m {
			if k == "" || strings.ContainsAny(k, " \t\n") {
				t.Fatalf("ParseModulesDep(%q): module %q", b, k)
			}
			for _, d := range deps {
				if d == "" {
					t.Fatalf("ParseModulesDep(%q): empty dependency of %q", b, k)
				}
			}
		}
	})
}
