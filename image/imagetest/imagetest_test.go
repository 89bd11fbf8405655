package imagetest

import (
	"os"
	"path/filepath"
	"testing"

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
