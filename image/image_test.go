package image

import (
	"bytes"
	"context"
	"crypto/rand"
	"debug/elf"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"meshroot/board"
)

func TestCompressionRoundTrip(t *testing.T) {
	random := make([]byte, 300<<10)
	if _, err := rand.Read(random); err != nil {
		t.Fatal(err)
	}
	text := bytes.Repeat([]byte("MESHROOT-READY {\"board\":\"qemu-virt-arm64\"}\n"), 20000)
	input := append(append([]byte(nil), text...), random...)
	for _, c := range []Compression{XZ, Zstd} {
		t.Run(string(c), func(t *testing.T) {
			dir := t.TempDir()
			raw := filepath.Join(dir, "raw")
			if err := os.WriteFile(raw, input, 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, "out."+c.Ext())
			n, rawSum, fi, err := compressFile(raw, out, c)
			if err != nil {
				t.Fatalf("compressFile = %v", err)
			}
			if n != int64(len(input)) {
				t.Errorf("raw size = %d; want %d", n, len(input))
			}
			if fi.Size >= n {
				t.Errorf("compressed size %d >= raw %d", fi.Size, n)
			}
			if size, sum, _ := HashFile(out); size != fi.Size || sum != fi.SHA256 {
				t.Errorf("HashFile(out) = %d %s; want %d %s", size, sum, fi.Size, fi.SHA256)
			}
			f, err := os.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			r, err := c.decompressor(f)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatalf("decompress: %v", err)
			}
			if !bytes.Equal(got, input) {
				t.Fatalf("round trip differs (%d bytes back, %d in)", len(got), len(input))
			}
			m := Manifest{Compression: c, Kernel: FileInfo{Name: "raw", Size: n, SHA256: rawSum},
				Initramfs: FileInfo{Name: filepath.Base(out), Size: fi.Size, SHA256: fi.SHA256}, RawSize: n, RawSHA256: rawSum}
			if err := Verify(dir, m); err != nil {
				t.Errorf("Verify = %v", err)
			}
			m.RawSize++
			if err := Verify(dir, m); err == nil {
				t.Errorf("Verify(wrong raw size) = nil; want an error")
			}
			if c == XZ {
				// Stream flags (bytes 6-7 of the header): check type 0x01 is CRC32, the only
				// check besides none that the kernel's XZ decoder accepts.
				b, _ := os.ReadFile(out)
				if len(b) < 8 || !bytes.Equal(b[:6], []byte("\xfd7zXZ\x00")) || b[6] != 0 || b[7] != 0x01 {
					t.Errorf("xz stream header = % x; want magic and check type CRC32 (00 01)", b[:min(8, len(b))])
				}
			}
			// The reference tools must accept what the Go libraries wrote.
			tool := map[Compression]string{XZ: "xz", Zstd: "zstd"}[c]
			if p, err := exec.LookPath(tool); err == nil {
				if out, err := exec.Command(p, "-t", out).CombinedOutput(); err != nil {
					t.Errorf("%s -t: %v\n%s", tool, err, out)
				}
			} else if !testing.Short() {
				t.Errorf("%s not found: want it installed (run `make deps`) to check the stream", tool)
			}
		})
	}
}

func TestParseCompression(t *testing.T) {
	for in, want := range map[string]Compression{"": Zstd, "xz": XZ, "zstd": Zstd} {
		if got, err := ParseCompression(in); err != nil || got != want {
			t.Errorf("ParseCompression(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseCompression("gzip"); err == nil {
		t.Errorf("ParseCompression(gzip) = nil error; want one")
	}
}

func TestBudgetCheck(t *testing.T) {
	bu := Budget{Compressed: 100, Raw: 1000}
	for _, tc := range []struct {
		comp, raw int64
		over      bool
	}{
		{100, 1000, false},
		{101, 10, true},
		{1, 1001, true},
	} {
		m := Manifest{Initramfs: FileInfo{Size: tc.comp}, RawSize: tc.raw}
		err := bu.Check(m)
		if got := errors.Is(err, ErrOverBudget); got != tc.over {
			t.Errorf("Budget%+v.Check(compressed %d, raw %d) = %v; want over budget %v", bu, tc.comp, tc.raw, err, tc.over)
		}
	}
	if err := (Budget{}).Check(Manifest{RawSize: 1 << 40}); err != nil {
		t.Errorf("zero Budget.Check = %v; want no limit", err)
	}
}

func TestReadManifest(t *testing.T) {
	dir := t.TempDir()
	want := Manifest{Board: "qemu-virt-arm64", Arch: "arm64", Console: "ttyAMA0", Version: "v1",
		Kernel: FileInfo{Name: "vmlinuz", Size: 1, SHA256: "ab"}, Initramfs: FileInfo{Name: "initramfs.cpio.xz", Size: 2},
		Compression: XZ, Commands: []string{"init"}, Modules: []string{"tun"}, Budget: DefaultBudget}
	if err := writeManifest(dir, want); err != nil {
		t.Fatal(err)
	}
	got, err := ReadManifest(dir)
	if err != nil {
		t.Fatalf("ReadManifest = %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ReadManifest mismatch (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"{", `{"arch":"arm64"}`,
		`{"arch":"arm64","kernel":{"name":"../../etc/passwd"},"initramfs":{"name":"i"},"compression":"zstd"}`,
		`{"arch":"arm64","kernel":{"name":"k"},"initramfs":{"name":"i"},"compression":"lz4"}`,
		`{"arch":"mips","kernel":{"name":"k"},"initramfs":{"name":"i"},"compression":"zstd"}`} {
		if err := os.WriteFile(filepath.Join(dir, ManifestName), []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadManifest(dir); err == nil {
			t.Errorf("ReadManifest(%s) = nil error; want one", bad)
		}
	}
}

// TestCoreCommandsAreTools checks every u-root command the image carries is a `tool` directive
// in go.mod: that is what keeps u-root in the module (and its go.sum entries) through
// `go mod tidy`; without it the image build fails with "missing go.sum entry".
func TestCoreCommandsAreTools(t *testing.T) {
	src, err := FindSourceDir()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(src, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	tools := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s*(?:tool\s+)?(github\.com/u-root/u-root/cmds/core/\S+)\s*$`).FindAllStringSubmatch(string(b), -1) {
		tools[m[1]] = true
	}
	for _, c := range CoreCommands {
		if !tools[CorePackage+c] {
			t.Errorf("go.mod has no tool directive for %s%s; add it with `go get -tool %s%s@v0.16.0`", CorePackage, c, CorePackage, c)
		}
	}
	for _, must := range []string{"init", "gosh", "insmod", "ip", "poweroff", "dmesg"} {
		found := false
		for _, c := range CoreCommands {
			found = found || c == must
		}
		if !found {
			t.Errorf("CoreCommands lacks %q", must)
		}
	}
}

func TestBuildOptionErrors(t *testing.T) {
	ctx := context.Background()
	good := board.Board{Name: "x", Arch: "arm64", Console: "ttyAMA0"}
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"no board", Options{OutDir: "o"}, "board name is empty"},
		{"bad arch", Options{Board: board.Board{Name: "x", Arch: "mips"}, OutDir: "o"}, `arch "mips"`},
		{"no out", Options{Board: good}, "output directory"},
		{"bad compression", Options{Board: good, OutDir: "o", Compression: "lz4"}, "lz4"},
		{"no kernel", Options{Board: good, OutDir: "o", SourceDir: t.TempDir(), KernelDir: t.TempDir()}, "make kernels"},
		{"ota root not a root", Options{Board: good, OutDir: "o", OTARoot: []byte(`{"signed":{"_type":"timestamp"}}`)}, "ota root: not TUF root metadata"},
		{"ota root unsigned", Options{Board: good, OutDir: "o", OTARoot: []byte(`{"signatures":[],"signed":{"_type":"root","spec_version":"1.0.31","version":1,"expires":"2030-01-01T00:00:00Z","keys":{"k":{"keytype":"ed25519","scheme":"ed25519","keyval":{"public":"00"}}},"roles":{"root":{"keyids":["k"],"threshold":1},"targets":{"keyids":["k"],"threshold":1},"snapshot":{"keyids":["k"],"threshold":1},"timestamp":{"keyids":["k"],"threshold":1}},"consistent_snapshot":true}}`)}, "signatures: none"},
		{"ota root and a file at its path", Options{Board: good, OutDir: "o", OTARoot: otaRootFixture(t), Files: []File{{Path: "/etc/meshroot/ota/root.json", Data: []byte("{}")}}}, "the OTA root goes there"},
	} {
		if _, err := Build(ctx, tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Build = %v; want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestGitVersion(t *testing.T) {
	if got := GitVersion(context.Background(), t.TempDir()); got != "dev" {
		t.Errorf("GitVersion(not a repository) = %q; want dev", got)
	}
	src, err := FindSourceDir()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(src, ".git")); err == nil {
		if got := GitVersion(context.Background(), src); got == "dev" || strings.ContainsAny(got, " \n") {
			t.Errorf("GitVersion(repository) = %q; want git describe output", got)
		}
	}
}

func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(`{"board":"qemu-virt-arm64","arch":"arm64","kernel":{"name":"vmlinuz","size":1,"sha256":"ab"},"initramfs":{"name":"initramfs.cpio.zst"},"compression":"zstd"}`))
	f.Add([]byte(`{"arch":"amd64","kernel":{"name":".."}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b)
		if err != nil {
			return
		}
		for _, n := range []string{m.Kernel.Name, m.Initramfs.Name} {
			if n == "" || strings.ContainsRune(n, '/') || n == ".." {
				t.Fatalf("ParseManifest(%q) accepted file name %q", b, n)
			}
		}
	})
}

func TestExtractPVH(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk")
	if err := os.WriteFile(junk, bytes.Repeat([]byte{0}, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ExtractPVH(junk); err == nil || !strings.Contains(err.Error(), "not a bzImage") {
		t.Errorf("ExtractPVH(zeros) = %v; want a not-a-bzImage error", err)
	}
	if testing.Short() {
		t.Skip("reads the cached amd64 kernel")
	}
	src, err := FindSourceDir()
	if err != nil {
		t.Fatal(err)
	}
	_, bz, err := readKernel(DefaultKernelDir(src, "amd64"))
	if err != nil {
		t.Fatalf("kernel cache: %v (run `make kernels`)", err)
	}
	vmlinux, err := ExtractPVH(bz)
	if err != nil {
		t.Fatalf("ExtractPVH(Debian amd64 bzImage) = %v", err)
	}
	f, err := elf.NewFile(bytes.NewReader(vmlinux))
	if err != nil {
		t.Fatal(err)
	}
	if f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
		t.Errorf("vmlinux machine/type = %v/%v; want x86-64 executable", f.Machine, f.Type)
	}
	// The same bytes with the PVH note's type changed must be refused.
	for _, p := range f.Progs {
		if p.Type == elf.PT_NOTE {
			b := vmlinux[p.Off : p.Off+p.Filesz]
			for i := 0; i+12 <= len(b); {
				nameSz, descSz := int(binary.LittleEndian.Uint32(b[i:])), int(binary.LittleEndian.Uint32(b[i+4:]))
				if binary.LittleEndian.Uint32(b[i+8:]) == xenElfnotePhys32Entry {
					binary.LittleEndian.PutUint32(b[i+8:], 0xdead)
				}
				i += 12 + (nameSz+3)&^3 + (descSz+3)&^3
			}
		}
	}
	f2, _ := elf.NewFile(bytes.NewReader(vmlinux))
	if hasPVHNote(f2) {
		t.Errorf("hasPVHNote after removing the note = true; want false")
	}
}

func otaRootFixture(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "ota-root.json"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
