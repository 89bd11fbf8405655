package slot

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"meshroot/board"
	"meshroot/internal/testenv"
)

func tempDisk(t *testing.T, size int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRegionBounds(t *testing.T) {
	p := tempDisk(t, 4096)
	r, c, err := Open("a", p, 1024, 1024)
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	defer c.Close()
	if _, err := r.WriteAt(make([]byte, 10), 1020); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("WriteAt(past end) = %v; want ErrOutOfRange", err)
	}
	if _, err := r.WriteAt([]byte("hello"), 1019); err != nil {
		t.Errorf("WriteAt(last 5 bytes) = %v", err)
	}
	buf := make([]byte, 10)
	n, err := r.ReadAt(buf, 1019)
	if n != 5 || err != io.EOF || string(buf[:5]) != "hello" {
		t.Errorf("ReadAt(at end) = %d, %v, %q; want 5, EOF, hello", n, err, buf[:5])
	}
	raw, _ := os.ReadFile(p)
	if got := string(raw[1024+1019 : 1024+1024]); got != "hello" {
		t.Errorf("file bytes at region end = %q; want hello", got)
	}
	if !bytes.Equal(raw[:1024], make([]byte, 1024)) || !bytes.Equal(raw[2048:], make([]byte, 2048)) {
		t.Errorf("bytes outside the region changed")
	}
}

func TestOpenRejectsBadRange(t *testing.T) {
	p := tempDisk(t, 4096)
	for _, tc := range []struct{ off, size int64 }{{4000, 200}, {-1, 10}, {4096, 0}} {
		if _, _, err := Open("a", p, tc.off, tc.size); err == nil {
			t.Errorf("Open(off=%d, size=%d) = nil error; want an error", tc.off, tc.size)
		}
	}
	r, c, err := Open("b", p, 1000, 0)
	if err != nil {
		t.Fatalf("Open(size 0) = %v", err)
	}
	c.Close()
	if r.Size() != 3096 {
		t.Errorf("Open(off 1000, size 0).Size() = %d; want 3096", r.Size())
	}
}

func fakeSys(t *testing.T, parts map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for dev, name := range parts {
		d := filepath.Join(root, "sys/class/block", dev)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		ue := "MAJOR=254\nMINOR=1\nDEVNAME=" + dev + "\nDEVTYPE=partition\n"
		if name != "" {
			ue += "PARTNAME=" + name + "\n"
		}
		if err := os.WriteFile(filepath.Join(d, "uevent"), []byte(ue), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestFindPartition(t *testing.T) {
	root := fakeSys(t, map[string]string{"vda": "", "vda1": "slot_a", "vda2": "slot_b", "vda3": "data"})
	got, err := FindPartition(root, "slot_b")
	if want := filepath.Join(root, "dev/vda2"); err != nil || got != want {
		t.Errorf("FindPartition(slot_b) = %q, %v; want %q", got, err, want)
	}
	if _, err := FindPartition(root, "nope"); err == nil {
		t.Errorf("FindPartition(nope) = nil error; want an error")
	}
}

func TestFromBoard(t *testing.T) {
	root := fakeSys(t, map[string]string{"vda1": "slot_a", "vda2": "slot_b"})
	for _, n := range []string{"vda1", "vda2"} {
		if err := os.WriteFile(filepath.Join(root, "dev", n), make([]byte, 8192), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "dev", "vda"), make([]byte, 1<<16), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		fl       board.Flash
		slot     string
		wantSize int64
		wantErr  string
	}{
		{"partition node", board.Flash{Kind: "virtio", Device: "/dev/vda", SlotB: board.Region{Name: "slot_b", Device: "/dev/vda2", Offset: 1 << 20, Size: 8192}}, "b", 8192, ""},
		{"gpt by name", board.Flash{Kind: "virtio", Device: "/dev/vda", SlotA: board.Region{Name: "slot_a", Device: "/dev/nonexistent", Offset: 1 << 20, Size: 4096}}, "a", 4096, ""},
		{"offset on device", board.Flash{Kind: "emmc", Device: "/dev/vda", SlotA: board.Region{Offset: 4096, Size: 8192}}, "a", 8192, ""},
		{"nand refused", board.Flash{Kind: "nand", Device: "/dev/mtd4", SlotA: board.Region{Name: "rootfs"}}, "a", 0, "not implemented"},
		{"bad name", board.Flash{Kind: "emmc", Device: "/dev/vda"}, "c", 0, "want a or b"},
		{"nowhere", board.Flash{Kind: "emmc", SlotA: board.Region{Name: "missing"}}, "a", 0, "cannot locate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, c, err := FromBoard(tc.fl, tc.slot, root)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("FromBoard = %v; want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("FromBoard = %v", err)
			}
			defer c.Close()
			if r.Size() != tc.wantSize || r.Name() != tc.slot {
				t.Errorf("FromBoard = slot %s size %d; want slot %s size %d", r.Name(), r.Size(), tc.slot, tc.wantSize)
			}
		})
	}
}

// TestLabBlockDevice opens a loop device: the size comes from BLKGETSIZE64 and writes land on
// the backing file after Sync.
func TestLabBlockDevice(t *testing.T) {
	testenv.Integration(t)
	losetup := testenv.Command(t, "losetup")
	p := tempDisk(t, 1<<20)
	out, err := exec.Command(losetup, "--find", "--show", p).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup --find --show: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command(losetup, "-d", dev).Run() })
	r, c, err := Open("a", dev, 4096, 0)
	if err != nil {
		t.Fatalf("Open(%s) = %v", dev, err)
	}
	defer c.Close()
	if r.Size() != 1<<20-4096 {
		t.Errorf("Open(%s, 4096, 0).Size() = %d; want %d", dev, r.Size(), 1<<20-4096)
	}
	if _, err := r.WriteAt([]byte("meshroot"), 0); err != nil {
		t.Fatalf("WriteAt = %v", err)
	}
	if err := r.Sync(); err != nil {
		t.Fatalf("Sync = %v", err)
	}
	if err := r.DropCache(); err != nil {
		t.Errorf("DropCache = %v", err)
	}
	raw, _ := os.ReadFile(p)
	if got := string(raw[4096 : 4096+8]); got != "meshroot" {
		t.Errorf("backing file at 4096 = %q; want meshroot", got)
	}
}
