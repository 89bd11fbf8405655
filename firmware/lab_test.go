package firmware

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"meshroot/board"
	"meshroot/internal/testenv"
)

// inNewNetns runs f on a locked OS thread inside a fresh, unnamed network namespace, and
// returns the thread to the original namespace afterwards (the namespace disappears with its
// last reference).
func inNewNetns(t *testing.T, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			t.Errorf("netns.Get: %v", err)
			return
		}
		defer orig.Close()
		ns, err := netns.New()
		if err != nil {
			t.Errorf("netns.New: %v", err)
			return
		}
		defer ns.Close()
		defer func() {
			if err := netns.Set(orig); err != nil {
				t.Errorf("restore netns: %v", err)
				return // leave the thread locked: it dies with the goroutine
			}
			runtime.UnlockOSThread()
		}()
		f()
	}()
	<-done
}

// TestLabLANRealNetlink runs the LAN service with the real netlink implementation in a private
// network namespace holding the QEMU board's two ports (veth pairs named eth0 and eth1).
func TestLabLANRealNetlink(t *testing.T) {
	testenv.Integration(t)
	b, err := board.Lookup("qemu-virt-arm64")
	if err != nil {
		t.Fatal(err)
	}
	inNewNetns(t, func() {
		for _, p := range [][2]string{{"eth0", "wan-peer"}, {"eth1", "lan-peer"}} {
			v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: p[0]}, PeerName: p[1]}
			if err := netlink.LinkAdd(v); err != nil {
				t.Errorf("add veth %s: %v", p[0], err)
				return
			}
		}
		dev := &Device{Root: "/", Board: b, Log: NewLogging(nil, 100, 1<<20).Logger, Clock: RealClock{},
			Sys: System{Net: RealNet{Root: "/"}}}
		svc := &LANService{Dev: dev}
		ctx, cancel := context.WithCancel(context.Background())
		// Stop right after the first configuration pass; this goroutine must stay on the
		// namespace's thread, so Run runs here.
		if err := svc.Run(ctx, cancel); err != nil {
			t.Errorf("LANService.Run() = %v", err)
			return
		}
		// Twice: idempotent on an already configured system.
		ctx, cancel = context.WithCancel(context.Background())
		if err := svc.Run(ctx, cancel); err != nil {
			t.Errorf("second LANService.Run() = %v", err)
		}

		br, err := netlink.LinkByName("br-lan")
		if err != nil || br.Type() != "bridge" || br.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("br-lan = %v, %v; want an up bridge", br, err)
			return
		}
		addrs, err := netlink.AddrList(br, unix.AF_INET)
		if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != "192.168.1.1/24" {
			t.Errorf("br-lan addresses = %v, %v; want exactly 192.168.1.1/24", addrs, err)
		}
		eth1, _ := netlink.LinkByName("eth1")
		if eth1 == nil || eth1.Attrs().MasterIndex != br.Attrs().Index || eth1.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("eth1 = %+v; want up in br-lan", eth1)
		}
		eth0, _ := netlink.LinkByName("eth0")
		if eth0 == nil || eth0.Attrs().MasterIndex != 0 || eth0.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("eth0 = %+v; want up and not bridged (WAN)", eth0)
		}
		links, err := (RealNet{Root: "/"}).Links()
		if err != nil {
			t.Errorf("Links() = %v", err)
		}
		for _, l := range links {
			if l.Name == "eth1" && l.Master != "br-lan" {
				t.Errorf("Links() reports eth1 master %q; want br-lan", l.Master)
			}
		}
	})
}

// TestLabRealMounter mounts a tmpfs with the real implementation and finds it in
// /proc/self/mountinfo.
func TestLabRealMounter(t *testing.T) {
	testenv.Integration(t)
	target := filepath.Join(t.TempDir(), "mnt point") // a space: mountinfo escapes it
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	m := RealMounter{Root: "/"}
	if err := m.Mount("tmpfs", target, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=1m"); err != nil {
		t.Fatalf("Mount() = %v", err)
	}
	unmounted := false
	t.Cleanup(func() {
		if !unmounted {
			_ = m.Unmount(target, unix.MNT_DETACH)
		}
	})
	if ok, err := IsMounted(m, target); err != nil || !ok {
		t.Errorf("IsMounted(%q) = %v, %v; want true", target, ok, err)
	}
	if err := m.Unmount(target, 0); err != nil {
		t.Fatalf("Unmount() = %v", err)
	}
	unmounted = true
	if ok, err := IsMounted(m, target); err != nil || ok {
		t.Errorf("IsMounted(%q) after unmount = %v, %v; want false", target, ok, err)
	}
}
