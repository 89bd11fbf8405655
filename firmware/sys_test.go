package firmware

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"meshroot/board"
)

const mountinfoFixture = `22 1 0:21 / / rw,relatime - rootfs rootfs rw
23 22 0:5 / /dev rw,relatime - devtmpfs devtmpfs rw,size=498k,nr_inodes=124k,mode=755
24 22 0:22 / /proc rw,relatime - proc proc rw
25 22 0:23 / /sys rw,relatime - sysfs sysfs rw
26 23 0:24 / /dev/pts rw,relatime - devpts devpts rw,gid=5,mode=620,ptmxmode=666
30 22 254:3 / /data rw,noatime shared:1 master:2 - ext4 /dev/vda3 rw
31 22 0:40 / /mnt/with\040space rw - tmpfs tmpfs rw
`

func TestParseMountInfo(t *testing.T) {
	got, err := ParseMountInfo(strings.NewReader(mountinfoFixture))
	if err != nil {
		t.Fatal(err)
	}
	want := []MountInfo{
		{"/", "rootfs", "rootfs"},
		{"/dev", "devtmpfs", "devtmpfs"},
		{"/proc", "proc", "proc"},
		{"/sys", "sysfs", "sysfs"},
		{"/dev/pts", "devpts", "devpts"},
		{"/data", "ext4", "/dev/vda3"},
		{"/mnt/with space", "tmpfs", "tmpfs"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseMountInfo() mismatch (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"1 2 3\n", "1 2 0:1 / /x rw no separator\n", "1 2 0:1 / /x rw -\n"} {
		if _, err := ParseMountInfo(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseMountInfo(%q) = nil error; want one", bad)
		}
	}
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "proc/self"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "proc/self/mountinfo"), []byte(mountinfoFixture), 0o644); err != nil {
		t.Fatal(err)
	}
	for target, want := range map[string]bool{"/data": true, "/data/": true, "/tmp": false} {
		if got, err := IsMounted(RealMounter{Root: root}, target); err != nil || got != want {
			t.Errorf("IsMounted(%s) = %v, %v; want %v", target, got, err, want)
		}
	}
	if ms, err := (RealMounter{Root: t.TempDir()}).Mounts(); err != nil || ms != nil {
		t.Errorf("Mounts() without /proc = %v, %v; want nothing, no error", ms, err)
	}
}

func FuzzParseMountInfo(f *testing.F) {
	f.Add(mountinfoFixture)
	f.Add("1 2 0:1 / /a\\ rw - x y z\n")
	f.Add("1 2 0:1 / /a\\0 rw - x\n")
	f.Fuzz(func(t *testing.T, in string) {
		ms, err := ParseMountInfo(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, m := range ms {
			if m.FSType == "" {
				t.Fatalf("ParseMountInfo(%q) gave an empty fstype: %+v", in, m)
			}
		}
	})
}

func TestParseUevent(t *testing.T) {
	u, err := ParseUevent([]byte("MAJOR=254\nMINOR=3\nDEVNAME=vda3\nDEVTYPE=partition\nDISKSEQ=9\nPARTN=3\nPARTNAME=data\n"))
	want := Uevent{DevName: "vda3", PartName: "data", DevType: "partition"}
	if err != nil || u != want {
		t.Errorf("ParseUevent() = %+v, %v; want %+v", u, err, want)
	}
	for _, bad := range []string{"DEVNAME=../../etc/passwd\n", "DEVNAME=/dev/sda\n", strings.Repeat("x", 9<<10)} {
		if u, err := ParseUevent([]byte(bad)); err == nil {
			t.Errorf("ParseUevent(%.30q) = %+v; want an error", bad, u)
		}
	}
}

func FuzzParseUevent(f *testing.F) {
	f.Add([]byte("DEVNAME=vda3\nPARTNAME=data\n"))
	f.Add([]byte("DEVNAME=..\n"))
	f.Add([]byte("=\n==\nPARTNAME\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		u, err := ParseUevent(b)
		if err != nil {
			return
		}
		if strings.Contains(u.DevName, "..") || strings.HasPrefix(u.DevName, "/") {
			t.Fatalf("ParseUevent accepted DEVNAME %q", u.DevName)
		}
	})
}

func TestResolveBlock(t *testing.T) {
	root := t.TempDir()
	mk := func(rel, content string) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The disk enumerated as vdb: the Device path is wrong, the GPT name finds it.
	mk("dev/vdb3", "")
	mk("sys/class/block/vdb/uevent", "DEVNAME=vdb\nDEVTYPE=disk\n")
	mk("sys/class/block/vdb3/uevent", "DEVNAME=vdb3\nDEVTYPE=partition\nPARTNAME=data\n")
	mk("sys/class/block/vdb1/uevent", "DEVNAME=vdb1\nDEVTYPE=partition\nPARTNAME=slot_a\n")
	got, err := ResolveBlock(root, board.Region{Name: "data", Device: "/dev/vda3"})
	if err != nil || got != "/dev/vdb3" {
		t.Errorf("ResolveBlock(data) = %q, %v; want /dev/vdb3", got, err)
	}
	mk("dev/vda3", "")
	got, err = ResolveBlock(root, board.Region{Name: "data", Device: "/dev/vda3"})
	if err != nil || got != "/dev/vda3" {
		t.Errorf("ResolveBlock(data) = %q, %v; want the listed /dev/vda3", got, err)
	}
	if got, err := ResolveBlock(root, board.Region{Name: "slot_a"}); err == nil {
		t.Errorf("ResolveBlock(slot_a without a node) = %q; want an error", got)
	}
	if got, err := ResolveBlock(root, board.Region{Name: "nope"}); err == nil {
		t.Errorf("ResolveBlock(nope) = %q; want an error", got)
	}
}

func TestFakeClock(t *testing.T) {
	c := NewFakeClock(time.Unix(0, 0))
	fired := make(chan int, 3)
	c.AfterFunc(2, func() { fired <- 2 })
	t1 := c.AfterFunc(1, func() { fired <- 1 })
	c.AfterFunc(3, func() { fired <- 3 })
	if !t1.Stop() || t1.Stop() {
		t.Errorf("Stop() twice = true then false expected")
	}
	c.Advance(2)
	if got := <-fired; got != 2 {
		t.Errorf("fired %d; want 2", got)
	}
	if got := c.Pending(); !cmp.Equal(got, []time.Duration{1}) {
		t.Errorf("Pending() = %v; want [1ns]", got)
	}
}
