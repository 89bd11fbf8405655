package imagetest

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"meshroot/image"
)

func TestKey(t *testing.T) {
	src := t.TempDir()
	kdir := t.TempDir()
	write := func(dir, rel, content string) {
		t.Helper()
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(src, "go.mod", "module meshroot\n")
	write(src, "firmware/a.go", "package firmware\n")
	write(kdir, "version", "6.1.0-test\n")
	write(kdir, "vmlinuz", "kernel")
	key := func(board string, o Options) string {
		t.Helper()
		k, err := Key(src, kdir, board, o)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	base := key("qemu-virt-arm64", Options{})
	same := []struct {
		name string
		edit func()
	}{
		{"a test file", func() { write(src, "firmware/a_test.go", "package firmware\n") }},
		{"a Markdown file", func() { write(src, "docs/X.md", "# x\n") }},
		{"the build output", func() { write(src, "out/qemu-virt-arm64/manifest.json", "{}") }},
		{"the cache", func() { write(src, ".cache/images/x", "y") }},
		{"testdata", func() { write(src, "image/testdata/fuzz/F/x", "y") }},
	}
	for _, tc := range same {
		tc.edit()
		if got := key("qemu-virt-arm64", Options{}); got != base {
			t.Errorf("Key changed after adding %s; want it unchanged", tc.name)
		}
	}
	seen := map[string]string{base: "base"}
	differ := []struct {
		name string
		key  func() string
	}{
		{"another board", func() string { return key("qemu-x86_64", Options{}) }},
		{"a version", func() string { return key("qemu-virt-arm64", Options{Version: "2.0.0"}) }},
		{"an extra module", func() string { return key("qemu-virt-arm64", Options{Modules: []string{"mac80211_hwsim"}}) }},
		{"zstd", func() string { return key("qemu-virt-arm64", Options{Compression: image.Zstd}) }},
		{"a source edit", func() string {
			write(src, "firmware/a.go", "package firmware // changed\n")
			return key("qemu-virt-arm64", Options{})
		}},
		{"a new kernel", func() string {
			write(kdir, "vmlinuz", "another kernel")
			return key("qemu-virt-arm64", Options{})
		}},
	}
	for _, tc := range differ {
		k := tc.key()
		if prev, dup := seen[k]; dup {
			t.Errorf("Key with %s = Key with %s; want different", tc.name, prev)
		}
		seen[k] = tc.name
	}
}

func TestPrune(t *testing.T) {
	root := t.TempDir()
	names := []string{"b-0000000000000001", "b-0000000000000002", "b-0000000000000003", "b-0000000000000004", "b-0000000000000005", "b-0000000000000006"}
	for i, n := range names {
		if err := os.MkdirAll(filepath.Join(root, n), 0o755); err != nil {
			t.Fatal(err)
		}
		when := time.Now().Add(time.Duration(i-10) * time.Hour)
		if err := os.Chtimes(filepath.Join(root, n), when, when); err != nil {
			t.Fatal(err)
		}
	}
	other := filepath.Join(root, "c-0000000000000001")
	if err := os.MkdirAll(other, 0o755); err != nil {
		t.Fatal(err)
	}
	markInUse(filepath.Join(root, names[0])) // the oldest, but in use
	prune(root, "b", names[5])
	var left []string
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		if e.IsDir() {
			left = append(left, e.Name())
		}
	}
	// Kept: the new one, the 3 newest others, the one in use, and the other board's.
	want := []string{names[0], names[2], names[3], names[4], names[5], "c-0000000000000001"}
	if diff := cmp.Diff(want, left); diff != "" {
		t.Errorf("prune left (-want +got):\n%s", diff)
	}
}
