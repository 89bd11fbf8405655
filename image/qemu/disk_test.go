package qemu

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"meshroot/board"
)

func qemuFlash(t *testing.T) board.Flash {
	t.Helper()
	b, err := board.Lookup("qemu-virt-arm64")
	if err != nil {
		t.Fatal(err)
	}
	return b.Flash
}

func TestGUID(t *testing.T) {
	const s = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
	g, err := ParseGUID(s)
	if err != nil {
		t.Fatal(err)
	}
	// On disk the first three fields are little-endian.
	want := GUID{0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4}
	if g != want {
		t.Errorf("ParseGUID(%s) = % x; want % x", s, g[:], want[:])
	}
	if got := g.String(); got != s {
		t.Errorf("String() = %s; want %s", got, s)
	}
	for _, bad := range []string{"", "0FC63DAF-8483-4772-8E79", "0FC63DAF-8483-4772-8E79-3D69D8477DEZ"} {
		if _, err := ParseGUID(bad); err == nil {
			t.Errorf("ParseGUID(%q) = nil error; want one", bad)
		}
	}
	r := randomGUID()
	if v := r[7] >> 4; v != 4 {
		t.Errorf("randomGUID version = %d; want 4", v)
	}
}

func TestLayoutFor(t *testing.T) {
	f := qemuFlash(t)
	l, err := LayoutFor(f)
	if err != nil {
		t.Fatalf("LayoutFor(qemu) = %v", err)
	}
	type part struct {
		Name        string
		First, Last uint64
	}
	var got []part
	for _, p := range l.Partitions {
		got = append(got, part{p.Name, p.FirstLBA, p.LastLBA})
		if p.Type != LinuxDataGUID {
			t.Errorf("partition %s type %v; want Linux filesystem data", p.Name, p.Type)
		}
	}
	want := []part{{"slot_a", 2048, 264191}, {"slot_b", 264192, 526335}, {"data", 526336, 1050623}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("LayoutFor partitions (-want +got):\n%s", diff)
	}

	for _, tc := range []struct {
		name string
		edit func(*board.Flash)
		want string
	}{
		{"nand", func(f *board.Flash) { f.Kind = "nand" }, "not a GPT disk"},
		{"odd size", func(f *board.Flash) { f.Size++ }, "multiple of 512"},
		{"no partitions", func(f *board.Flash) { f.Partitions = nil }, "0 partitions"},
		{"overlap", func(f *board.Flash) { f.Partitions[1].Offset = f.Partitions[0].Offset + 4096 }, "overlaps"},
		{"in the GPT", func(f *board.Flash) { f.Partitions[0].Offset = 4096 }, "outside the usable range"},
		{"past the backup GPT", func(f *board.Flash) { f.Partitions[2].Size += 1 << 20 }, "outside the usable range"},
		{"misaligned", func(f *board.Flash) { f.Partitions[0].Offset += 100 }, "multiples of 512"},
		{"unnamed", func(f *board.Flash) { f.Partitions[0].Name = "" }, "empty name"},
		{"long name", func(f *board.Flash) { f.Partitions[0].Name = strings.Repeat("x", 37) }, "36"},
		{"env in a partition", func(f *board.Flash) { f.Env.Offset = f.Partitions[0].Offset }, "overlaps partition"},
		{"redundant env in a partition", func(f *board.Flash) { f.Env.RedundOffset = f.Partitions[2].Offset + 4096 }, "overlaps partition"},
		{"env on the GPT", func(f *board.Flash) { f.Env.Offset = 512 }, "overlaps the GPT"},
	} {
		f := qemuFlash(t)
		f.Partitions = append([]board.Region(nil), f.Partitions...)
		tc.edit(&f)
		if _, err := LayoutFor(f); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: LayoutFor = %v; want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestGPTRoundTrip(t *testing.T) {
	f := qemuFlash(t)
	l, err := LayoutFor(f)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "disk.img")
	fh, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := fh.Truncate(l.Size); err != nil {
		t.Fatal(err)
	}
	if err := l.Write(fh); err != nil {
		t.Fatal(err)
	}
	got, err := ReadGPT(fh)
	if err != nil {
		t.Fatalf("ReadGPT = %v", err)
	}
	if diff := cmp.Diff(l, got); diff != "" {
		t.Errorf("ReadGPT(Write(l)) mismatch (-want +got):\n%s", diff)
	}
	checkBackupGPT(t, fh, l.Size)
	fh.Close()

	// util-linux reads the same table (and checks the protective MBR, both headers and CRCs).
	partx, err := findTool("partx")
	if err != nil {
		if testing.Short() {
			t.Skip("partx not installed")
		}
		t.Fatalf("partx: %v; want util-linux installed", err)
	}
	out, err := exec.Command(partx, "--show", "--noheadings", "--bytes", "--output", "NR,START,END,NAME", path).CombinedOutput()
	if err != nil {
		t.Fatalf("partx: %v\n%s", err, out)
	}
	wantOut := "1    2048  264191 slot_a\n2  264192  526335 slot_b\n3  526336 1050623 data\n"
	if norm(string(out)) != norm(wantOut) {
		t.Errorf("partx --show =\n%s\nwant\n%s", out, wantOut)
	}
}

func norm(s string) string { return strings.Join(strings.Fields(s), " ") }

// checkBackupGPT checks the backup header in the last sector: signature, CRC, and that it
// points back at the primary and at a valid copy of the entries.
func checkBackupGPT(t *testing.T, fh *os.File, size int64) {
	t.Helper()
	h := make([]byte, 512)
	last := size/512 - 1
	if _, err := fh.ReadAt(h, last*512); err != nil {
		t.Fatal(err)
	}
	if string(h[:8]) != "EFI PART" {
		t.Fatalf("backup header signature %q", h[:8])
	}
	crc := binary.LittleEndian.Uint32(h[16:])
	c := append([]byte(nil), h[:92]...)
	binary.LittleEndian.PutUint32(c[16:], 0)
	if crc32.ChecksumIEEE(c) != crc {
		t.Errorf("backup header CRC mismatch")
	}
	if cur, alt := binary.LittleEndian.Uint64(h[24:]), binary.LittleEndian.Uint64(h[32:]); cur != uint64(last) || alt != 1 {
		t.Errorf("backup header current/alternate LBA = %d/%d; want %d/1", cur, alt, last)
	}
	entries := make([]byte, 128*128)
	if _, err := fh.ReadAt(entries, int64(binary.LittleEndian.Uint64(h[72:]))*512); err != nil {
		t.Fatal(err)
	}
	if crc32.ChecksumIEEE(entries) != binary.LittleEndian.Uint32(h[88:]) {
		t.Errorf("backup entries CRC mismatch")
	}
}

func TestCreateDisk(t *testing.T) {
	if _, err := findTool("mkfs.ext4"); err != nil {
		if testing.Short() {
			t.Skip("mkfs.ext4 not installed")
		}
		t.Fatalf("mkfs.ext4: %v; want e2fsprogs installed", err)
	}
	ctx := context.Background()
	f := qemuFlash(t)
	path := filepath.Join(t.TempDir(), "disk.img")
	created, err := EnsureDisk(ctx, path, f, DiskOptions{})
	if err != nil || !created {
		t.Fatalf("EnsureDisk(new) = %v, %v; want created", created, err)
	}
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := fh.Stat()
	if st.Size() != f.Size {
		t.Errorf("disk size = %d; want %d", st.Size(), f.Size)
	}
	if used := st.Sys().(*syscall.Stat_t).Blocks * 512; used > f.Size/8 {
		t.Errorf("disk uses %d bytes of %d; want a sparse file", used, f.Size)
	}
	if _, err := ReadGPT(fh); err != nil {
		t.Errorf("ReadGPT after mkfs = %v", err)
	}
	checkBackupGPT(t, fh, f.Size)
	sb := make([]byte, 1024)
	if _, err := fh.ReadAt(sb, f.Data.Offset+1024); err != nil {
		t.Fatal(err)
	}
	if magic := binary.LittleEndian.Uint16(sb[56:]); magic != 0xEF53 {
		t.Errorf("data partition superblock magic = %#x; want ext4's 0xEF53", magic)
	}
	if label := string(bytes.TrimRight(sb[120:136], "\x00")); label != "data" {
		t.Errorf("data volume label = %q; want %q", label, "data")
	}
	if blocks := uint64(binary.LittleEndian.Uint32(sb[4:])) << (10 + binary.LittleEndian.Uint32(sb[24:])); blocks > uint64(f.Data.Size) {
		t.Errorf("ext4 spans %d bytes; want at most the partition's %d", blocks, f.Data.Size)
	}
	env := make([]byte, f.Env.Size)
	if _, err := fh.ReadAt(env, f.Env.Offset); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(env, make([]byte, len(env))) {
		t.Errorf("boot environment area is not zero")
	}

	// Persistence: a second EnsureDisk keeps the disk and what is on it.
	marker := []byte("persist me")
	if _, err := fh.WriteAt(marker, f.Data.Offset+64<<20); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	created, err = EnsureDisk(ctx, path, f, DiskOptions{})
	if err != nil || created {
		t.Fatalf("EnsureDisk(existing) = %v, %v; want kept", created, err)
	}
	if got := readAt(t, path, f.Data.Offset+64<<20, len(marker)); !bytes.Equal(got, marker) {
		t.Errorf("data after EnsureDisk = %q; want %q", got, marker)
	}
	// A different layout replaces it.
	f2 := f
	f2.Partitions = append([]board.Region(nil), f.Partitions...)
	f2.Partitions[2].Size -= 1 << 20
	f2.Data = f2.Partitions[2]
	created, err = EnsureDisk(ctx, path, f2, DiskOptions{NoFormat: true})
	if err != nil || !created {
		t.Fatalf("EnsureDisk(new layout) = %v, %v; want recreated", created, err)
	}
	if got := readAt(t, path, f.Data.Offset+1024+56, 2); !bytes.Equal(got, []byte{0, 0}) {
		t.Errorf("NoFormat data partition has % x at the ext4 magic; want zeros", got)
	}
}

func readAt(t *testing.T, path string, off int64, n int) []byte {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	b := make([]byte, n)
	if _, err := fh.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func FuzzReadGPT(f *testing.F) {
	// Seed: a real table on a small disk.
	fl := board.Flash{Kind: "virtio", Size: 4 << 20, Partitions: []board.Region{{Name: "a", Offset: 1 << 20, Size: 1 << 20}, {Name: "b", Offset: 2 << 20, Size: 1 << 20}}}
	l, err := LayoutFor(fl)
	if err != nil {
		f.Fatal(err)
	}
	buf := &memDisk{b: make([]byte, fl.Size)}
	if err := l.Write(buf); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.b[:34*512])
	f.Add(make([]byte, 1024))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := ReadGPT(bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, p := range got.Partitions {
			if p.LastLBA < p.FirstLBA || p.Size <= 0 {
				t.Fatalf("ReadGPT partition %+v: want First <= Last and a positive size", p)
			}
		}
	})
}

type memDisk struct{ b []byte }

func (m *memDisk) WriteAt(p []byte, off int64) (int, error) { return copy(m.b[off:], p), nil }
