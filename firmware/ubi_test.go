package firmware

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"meshroot/board"
)

// The ioctl numbers and request layouts must match linux/include/uapi/mtd/ubi-user.h.
func TestUBIIoctlABI(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof(struct ubi_attach_req)", unsafe.Sizeof(ubiAttachReq{}), 24},
		{"sizeof(struct ubi_mkvol_req)", unsafe.Sizeof(ubiMkvolReq{}), 152},
		{"offsetof(ubi_mkvol_req, name)", unsafe.Offsetof(ubiMkvolReq{}.Name), 24},
		{"UBI_IOCATT", ubiIOCATT, 0x40186f40},
		{"UBI_IOCMKVOL", ubiIOCMKVOL, 0x40986f00},
	} {
		if c.got != c.want {
			t.Errorf("%s = %#x; want %#x", c.name, c.got, c.want)
		}
	}
}

const testProcMTD = `dev:    size   erasesize  name
mtd0: 00100000 00020000 "0:SBL1"
mtd1: 00040000 00020000 "0:appsblenv"
mtd2: 04000000 00020000 "rootfs"
mtd3: 04000000 00020000 "rootfs_1"
mtd4: 07d80000 00020000 "rootfs_data"
mtd5: 00200000 00004000 "NAND simulator partition 1"
`

func TestParseProcMTD(t *testing.T) {
	got, err := ParseProcMTD(strings.NewReader(testProcMTD))
	if err != nil {
		t.Fatalf("ParseProcMTD() = %v", err)
	}
	if len(got) != 6 {
		t.Fatalf("ParseProcMTD() = %d partitions; want 6", len(got))
	}
	want := MTDPart{Num: 5, Size: 0x200000, EraseSize: 0x4000, Name: "NAND simulator partition 1"}
	if diff := cmp.Diff(want, got[5]); diff != "" {
		t.Errorf("ParseProcMTD()[5] mismatch (-want +got):\n%s", diff)
	}
	for _, bad := range []string{
		"mtdX: 00100000 00020000 \"a\"\n",
		"mtd0: 00100000 \"a\"\n",
		"mtd0: zz 00020000 \"a\"\n",
		"mtd0: 00100000 00020000 a\n",
		"nonsense\n",
	} {
		if _, err := ParseProcMTD(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseProcMTD(%q) = nil error; want one", bad)
		}
	}
}

func FuzzParseProcMTD(f *testing.F) {
	f.Add(testProcMTD)
	f.Add("dev:    size   erasesize  name\n")
	f.Add("mtd0: 0 0 \"\"\n")
	f.Fuzz(func(t *testing.T, s string) {
		parts, err := ParseProcMTD(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, p := range parts {
			if p.Num < 0 || p.Size < 0 || p.EraseSize < 0 {
				t.Errorf("ParseProcMTD(%q) gave %+v", s, p)
			}
		}
	})
}

func TestKernelArgs(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"console=ttyS0 panic=-1\n", []string{"console=ttyS0", "panic=-1"}},
		{`a meshroot.data="mtd:NAND simulator partition 1" b`, []string{"a", "meshroot.data=mtd:NAND simulator partition 1", "b"}},
		{`"x=a b"  y`, []string{"x=a b", "y"}},
		{`q=""`, []string{"q="}},
		{"", nil},
	} {
		if diff := cmp.Diff(c.want, KernelArgs(c.in)); diff != "" {
			t.Errorf("KernelArgs(%q) mismatch (-want +got):\n%s", c.in, diff)
		}
	}
}

func FuzzKernelArgs(f *testing.F) {
	f.Add(`console=ttyS0 meshroot.data="mtd:NAND simulator partition 1" modules-load=zstd,nandsim nandsim.parts=16,64`)
	f.Add(`"unterminated`)
	f.Fuzz(func(t *testing.T, s string) {
		for _, a := range KernelArgs(s) {
			if a == "" && !strings.Contains(s, `"`) {
				t.Errorf("KernelArgs(%q) has an empty argument", s)
			}
			if strings.Contains(a, `"`) {
				t.Errorf("KernelArgs(%q) kept a quote in %q", s, a)
			}
		}
		root := t.TempDir()
		os.MkdirAll(filepath.Join(root, "proc"), 0o755)
		os.WriteFile(filepath.Join(root, "proc/cmdline"), []byte(s), 0o644)
		DataOverride(root)
	})
}

func TestDataOverride(t *testing.T) {
	for _, c := range []struct {
		cmdline, want string
		wantErr       bool
	}{
		{"console=ttyS0", "", false},
		{`meshroot.data="mtd:NAND simulator partition 1"`, "NAND simulator partition 1", false},
		{"meshroot.data=mtd:rootfs_data", "rootfs_data", false},
		{"meshroot.data=/dev/sda1", "", true},
		{"meshroot.data=mtd:", "", true},
	} {
		root := t.TempDir()
		writeFile(t, filepath.Join(root, "proc/cmdline"), c.cmdline+"\n")
		got, err := DataOverride(root)
		if got != c.want || (err != nil) != c.wantErr {
			t.Errorf("DataOverride(%q) = %q, %v; want %q, error %v", c.cmdline, got, err, c.want, c.wantErr)
		}
	}
}

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// runData runs a DataService until up, then stops it; it returns the Device as it was while up.
func runData(t *testing.T, dev *Device) (persistent bool, store *Store) {
	t.Helper()
	svc := &DataService{Dev: dev, Boot: true, WaitDevice: 50 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	upc := make(chan struct{})
	go func() { done <- svc.Run(ctx, func() { close(upc) }) }()
	select {
	case <-upc:
	case err := <-done:
		cancel()
		t.Fatalf("DataService.Run() = %v before up", err)
	}
	persistent, store = dev.Persistent(), dev.Store()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("DataService.Run() = %v", err)
	}
	return persistent, store
}

// TestDataServiceUBIFS: on a NAND board the data service finds the board's MTD partition by
// name, attaches UBI, creates the volume over every free LEB, and mounts it as ubifs; the next
// start (a service restart) finds the attachment and the volume and mounts the same volume
// again without attaching or creating anything.
func TestDataServiceUBIFS(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "proc/mtd"), testProcMTD)
	b, err := board.Lookup("ipq807x")
	if err != nil {
		t.Fatal(err)
	}
	m := &FakeMounter{}
	u := &FakeUBI{Root: root, LEBs: map[int]int64{4: 980}, LEBSize: 126976}
	var logs strings.Builder
	dev := &Device{Root: root, Board: b, Log: NewLogging(&logs, 100, 1<<20).Logger, Clock: RealClock{},
		Sys: System{Mounter: m, Power: &FakePower{}, UBI: u}}
	target := filepath.Join(root, "data")

	for i := range 2 {
		persistent, store := runData(t, dev)
		if !persistent || store == nil {
			t.Errorf("run %d: Persistent() = %v, Store() = %v; want a persistent store", i, persistent, store)
		}
	}
	wantMounts := []string{
		"mount ubifs ubi0:rootfs_data " + target, "umount " + target,
		"mount ubifs ubi0:rootfs_data " + target, "umount " + target,
	}
	if diff := cmp.Diff(wantMounts, m.Events()); diff != "" {
		t.Errorf("mount events mismatch (-want +got):\n%s", diff)
	}
	wantUBI := []string{"attach mtd4", "mkvol ubi0 rootfs_data 124436480"}
	if diff := cmp.Diff(wantUBI, u.Events()); diff != "" {
		t.Errorf("UBI calls mismatch (-want +got):\n%s", diff)
	}
	if !strings.Contains(logs.String(), `"msg":"data partition mounted","device":"ubi0:rootfs_data"`) ||
		!strings.Contains(logs.String(), `"fs":"ubifs"`) {
		t.Errorf("logs have no ubifs mount line:\n%s", logs.String())
	}
}

// TestDataServiceUBIFSOverride: meshroot.data=mtd:NAME on the kernel command line puts the data
// area on that MTD partition, on a board whose own data area is ext4 on a block device.
func TestDataServiceUBIFSOverride(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "proc/mtd"), testProcMTD)
	writeFile(t, filepath.Join(root, "proc/cmdline"), `console=ttyS0 meshroot.data="mtd:NAND simulator partition 1"`+"\n")
	b, _ := board.Lookup("qemu-x86_64")
	m := &FakeMounter{}
	u := &FakeUBI{Root: root, LEBs: map[int]int64{5: 120}, LEBSize: 15360}
	dev := &Device{Root: root, Board: b, Log: NewLogging(nil, 100, 1<<20).Logger, Clock: RealClock{},
		Sys: System{Mounter: m, Power: &FakePower{}, UBI: u}}
	if persistent, _ := runData(t, dev); !persistent {
		t.Errorf("Persistent() = false; want true")
	}
	target := filepath.Join(root, "data")
	if diff := cmp.Diff([]string{"mount ubifs ubi0:rootfs_data " + target, "umount " + target}, m.Events()); diff != "" {
		t.Errorf("mount events mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"attach mtd5", "mkvol ubi0 rootfs_data 1843200"}, u.Events()); diff != "" {
		t.Errorf("UBI calls mismatch (-want +got):\n%s", diff)
	}
}

// TestDataServiceUBIFSFailures: what goes wrong on the NAND path falls back to RAM with an
// error naming the partition or the volume.
func TestDataServiceUBIFSFailures(t *testing.T) {
	for _, c := range []struct {
		name    string
		procMTD string
		ubi     func(root string) *FakeUBI
		fail    map[string]error
		want    []string
	}{
		{
			name:    "no partition",
			procMTD: "dev:    size   erasesize  name\nmtd0: 00100000 00020000 \"0:SBL1\"\n",
			ubi:     func(root string) *FakeUBI { return &FakeUBI{Root: root} },
			want:    []string{`mtd partition \"rootfs_data\"`, "no such MTD partition"},
		},
		{
			name:    "attach fails",
			procMTD: testProcMTD,
			ubi:     func(root string) *FakeUBI { return &FakeUBI{Root: root, LEBs: map[int]int64{}} },
			want:    []string{`mtd partition \"rootfs_data\" (mtd4)`, "ubi attach mtd4", "no such device"},
		},
		{
			name:    "no free LEBs",
			procMTD: testProcMTD,
			ubi:     func(root string) *FakeUBI { return &FakeUBI{Root: root, LEBs: map[int]int64{4: 0}, LEBSize: 126976} },
			want:    []string{`volume \"rootfs_data\": no free LEBs`},
		},
		{
			name:    "mount fails",
			procMTD: testProcMTD,
			ubi:     func(root string) *FakeUBI { return &FakeUBI{Root: root, LEBs: map[int]int64{4: 10}, LEBSize: 126976} },
			fail:    map[string]error{"ubi0:rootfs_data": unix.EINVAL},
			want:    []string{`mtd partition \"rootfs_data\": mount ubi0:rootfs_data`},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			writeFile(t, filepath.Join(root, "proc/mtd"), c.procMTD)
			b, _ := board.Lookup("ipq807x")
			m := &FakeMounter{Fail: c.fail}
			var logs strings.Builder
			dev := &Device{Root: root, Board: b, Log: NewLogging(&logs, 100, 1<<20).Logger, Clock: RealClock{},
				Sys: System{Mounter: m, Power: &FakePower{}, UBI: c.ubi(root)}}
			persistent, store := runData(t, dev)
			if persistent || store == nil {
				t.Errorf("Persistent() = %v, Store() = %v; want a RAM store", persistent, store)
			}
			target := filepath.Join(root, "data")
			if diff := cmp.Diff([]string{"mount tmpfs tmpfs " + target, "umount " + target}, m.Events()); diff != "" {
				t.Errorf("mount events mismatch (-want +got):\n%s", diff)
			}
			for _, w := range c.want {
				if !strings.Contains(logs.String(), w) {
					t.Errorf("logs have no %s:\n%s", w, logs.String())
				}
			}
		})
	}
}
