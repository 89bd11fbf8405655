package firmware

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"meshroot/board"
	"meshroot/internal/testenv"
)

// A modules.dep excerpt in depmod's format (paths relative, full transitive lists), taken from
// the shape of Debian 6.1 amd64's.
const depFixture = `kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko kernel/lib/crc16.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/net/netfilter/nft_masq.ko: kernel/net/netfilter/nf_tables.ko kernel/net/netfilter/nfnetlink.ko kernel/net/netfilter/nf_nat.ko kernel/net/netfilter/nf_conntrack.ko kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko kernel/lib/libcrc32c.ko
kernel/net/netfilter/nf_tables.ko: kernel/net/netfilter/nfnetlink.ko kernel/lib/libcrc32c.ko
kernel/net/netfilter/nfnetlink.ko:
kernel/net/netfilter/nf_nat.ko: kernel/net/netfilter/nf_conntrack.ko kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko kernel/lib/libcrc32c.ko
kernel/net/netfilter/nf_conntrack.ko: kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko kernel/lib/libcrc32c.ko
kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko:
kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko:
kernel/lib/libcrc32c.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/drivers/net/wireless/mac80211_hwsim.ko.xz: kernel/net/mac80211/mac80211.ko kernel/lib/crypto/libarc4.ko kernel/net/wireless/cfg80211.ko kernel/net/rfkill/rfkill.ko
kernel/net/mac80211/mac80211.ko: kernel/lib/crypto/libarc4.ko kernel/net/wireless/cfg80211.ko kernel/net/rfkill/rfkill.ko
kernel/lib/crypto/libarc4.ko:
kernel/net/wireless/cfg80211.ko: kernel/net/rfkill/rfkill.ko
kernel/net/rfkill/rfkill.ko:
`

// needsFrom derives direct-enough dependencies for the fake kernel from a modules.dep.
func needsFrom(t *testing.T, dep string) map[string][]string {
	t.Helper()
	d, err := ParseModulesDep(strings.NewReader(dep))
	if err != nil {
		t.Fatal(err)
	}
	return d.deps
}

func writeModulesDir(t *testing.T, dep, builtin string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "lib/modules/6.1.0-56-amd64")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644); err != nil {
		t.Fatal(err)
	}
	if builtin != "" {
		if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte(builtin), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestModuleOrder(t *testing.T) {
	d, err := ParseModulesDep(strings.NewReader(depFixture))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		names []string
		want  []string
	}{
		{[]string{"ext4"}, []string{"crc16", "mbcache", "jbd2", "ext4"}},
		{[]string{"virtio_net"}, []string{"virtio_ring", "virtio", "failover", "net_failover", "virtio_net"}},
		{[]string{"nft_masq", "nf_tables"}, []string{"libcrc32c", "nf_defrag_ipv4", "nf_defrag_ipv6", "nf_conntrack", "nf_nat", "nfnetlink", "nf_tables", "nft_masq"}},
		{[]string{"crc32c-intel"}, []string{"crc32c_intel"}},
		{[]string{"mac80211_hwsim"}, []string{"rfkill", "cfg80211", "libarc4", "mac80211", "mac80211_hwsim"}},
	} {
		got, err := d.Order(tc.names...)
		if err != nil {
			t.Errorf("Order(%v) = %v", tc.names, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("Order(%v) mismatch (-want +got):\n%s", tc.names, diff)
		}
	}
	if _, err := d.Order("nosuch"); err == nil || !strings.Contains(err.Error(), `"nosuch"`) {
		t.Errorf("Order(nosuch) = %v; want a not-found error", err)
	}
}

func TestModuleOrderErrors(t *testing.T) {
	cyc := "a.ko: b.ko\nb.ko: c.ko\nc.ko: a.ko\n"
	d, err := ParseModulesDep(strings.NewReader(cyc))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Order("a"); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Errorf("Order(cycle) = %v; want a cycle error", err)
	}
	d, err = ParseModulesDep(strings.NewReader("a.ko: missing.ko\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Order("a"); err == nil || !strings.Contains(err.Error(), `"missing" (needed by "a")`) {
		t.Errorf("Order(missing dep) = %v; want it named", err)
	}
	for _, bad := range []string{"no colon here\n", "a.ko: b.ko\na.ko:\n", ": x.ko\n", "a.ko: notamodule\n"} {
		if _, err := ParseModulesDep(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseModulesDep(%q) = nil error; want one", bad)
		}
	}
}

func TestModuleLoader(t *testing.T) {
	dir := writeModulesDir(t, depFixture, "kernel/drivers/watchdog/watchdog.ko\n")
	k := &FakeModuleKernel{Needs: needsFrom(t, depFixture)}
	l, err := NewModuleLoader(dir, k)
	if err != nil {
		t.Fatal(err)
	}
	// ext4 (with deps), then virtio_net, a built-in module (no-op), ext4 again (EEXIST is fine).
	loaded, err := l.LoadAll([]string{"ext4", "virtio_net", "watchdog", "ext4"})
	if err != nil {
		t.Fatalf("LoadAll() = %v", err)
	}
	want := []string{"crc16", "mbcache", "jbd2", "ext4", "virtio_ring", "virtio", "failover", "net_failover", "virtio_net"}
	if diff := cmp.Diff(want, k.Loaded); diff != "" {
		t.Errorf("kernel load order mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, loaded); diff != "" {
		t.Errorf("LoadAll() reported mismatch (-want +got):\n%s", diff)
	}
	// A module loaded outside the loader (EEXIST from the kernel) is fine too.
	k.Loaded = append(k.Loaded, "nfnetlink")
	if _, err := l.Load("nf_tables", ""); err != nil {
		t.Errorf("Load(nf_tables) with nfnetlink already in the kernel = %v", err)
	}
	// Parameters go to the named module only; compressed files are passed through.
	if _, err := l.Load("mac80211_hwsim", "radios=3"); err != nil {
		t.Fatalf("Load(hwsim) = %v", err)
	}
	if k.Params["mac80211_hwsim"] != "radios=3" || k.Params["mac80211"] != "" {
		t.Errorf("params = %v; want radios=3 on mac80211_hwsim only", k.Params)
	}
}

func TestModuleLoaderFailures(t *testing.T) {
	dir := writeModulesDir(t, depFixture, "")
	k := &FakeModuleKernel{Needs: needsFrom(t, depFixture), Fail: map[string]error{"jbd2": unix.ENOEXEC}}
	l, err := NewModuleLoader(dir, k)
	if err != nil {
		t.Fatal(err)
	}
	// ext4's dependency fails: ext4 is not attempted, and the others still load.
	_, err = l.LoadAll([]string{"ext4", "nosuch", "virtio"})
	if err == nil || !strings.Contains(err.Error(), "module ext4: dependency jbd2") || !strings.Contains(err.Error(), `"nosuch"`) {
		t.Errorf("LoadAll() = %v; want errors for ext4 (via jbd2) and nosuch", err)
	}
	if slices.Contains(k.Loaded, "ext4") {
		t.Errorf("ext4 was loaded although jbd2 failed: %v", k.Loaded)
	}
	if !slices.Contains(k.Loaded, "virtio") {
		t.Errorf("virtio not loaded after the other failures: %v", k.Loaded)
	}
	if _, err := NewModuleLoader(t.TempDir(), k); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("NewModuleLoader(no modules.dep) = %v; want ErrNotExist", err)
	}
}

// TestModulesRealKernel resolves each QEMU board's module list against a modules.dep that the
// real depmod writes for the cached Debian kernel, and checks the order against modinfo's
// dependencies: what the image will do at boot, minus finit_module.
func TestModulesRealKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the kernel cache and depmod; skipped in -short mode")
	}
	depmod := testenv.Command(t, "depmod")
	for _, name := range []string{"qemu-virt-arm64", "qemu-x86_64"} {
		t.Run(name, func(t *testing.T) {
			b, err := board.Lookup(name)
			if err != nil {
				t.Fatal(err)
			}
			_, modDir := testenv.Kernel(t, b.Arch)
			vers, err := os.ReadDir(modDir)
			if err != nil || len(vers) != 1 {
				t.Fatalf("ReadDir(%s) = %v, %v", modDir, vers, err)
			}
			kver := vers[0].Name()
			// depmod writes next to the modules: give it a tree of symlinks in a temp dir.
			base := t.TempDir()
			dst := filepath.Join(base, "lib/modules", kver)
			if err := os.MkdirAll(dst, 0o755); err != nil {
				t.Fatal(err)
			}
			src := filepath.Join(modDir, kver)
			for _, f := range []string{"kernel", "modules.order", "modules.builtin", "modules.builtin.modinfo"} {
				if err := os.Symlink(filepath.Join(src, f), filepath.Join(dst, f)); err != nil {
					t.Fatal(err)
				}
			}
			if out, err := exec.Command(depmod, "-b", base, kver).CombinedOutput(); err != nil {
				t.Fatalf("depmod: %v\n%s", err, out)
			}
			k := &FakeModuleKernel{}
			l, err := NewModuleLoader(dst, k)
			if err != nil {
				t.Fatal(err)
			}
			k.Needs = l.Deps().deps
			if _, err := l.LoadAll(b.Modules); err != nil {
				t.Fatalf("LoadAll(%s modules) = %v", name, err)
			}
			for _, m := range b.Modules {
				if !slices.Contains(k.Loaded, m) && !l.Builtin(m) {
					t.Errorf("module %s neither loaded nor built in", m)
				}
			}
			t.Logf("%s: %d modules in load order: %v", name, len(k.Loaded), k.Loaded)
		})
	}
}

func FuzzParseModulesDep(f *testing.F) {
	f.Add(depFixture)
	f.Add("a.ko: b.ko\nb.ko: a.ko\n")
	f.Add("# comment\n\nx-y.ko.zst:\n")
	f.Add("a.ko:b.ko c.ko\n")
	f.Fuzz(func(t *testing.T, in string) {
		d, err := ParseModulesDep(strings.NewReader(in))
		if err != nil {
			return
		}
		for name := range d.files {
			order, err := d.Order(name)
			if err != nil {
				continue // a cycle or a missing dependency is reported, not a panic
			}
			// Every module comes after everything it lists, and appears once.
			pos := map[string]int{}
			for i, m := range order {
				if _, dup := pos[m]; dup {
					t.Fatalf("Order(%q) = %v lists %q twice", name, order, m)
				}
				pos[m] = i
			}
			for _, m := range order {
				for _, dep := range d.deps[m] {
					if pos[dep] > pos[m] {
						t.Fatalf("Order(%q) = %v: %q before its dependency %q", name, order, m, dep)
					}
				}
			}
			if order[len(order)-1] != name {
				t.Fatalf("Order(%q) = %v does not end with the module", name, order)
			}
		}
	})
}
