package lab

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"meshroot/internal/testenv"
)

func TestLabNamespaceVethDo(t *testing.T) {
	testenv.Integration(t)
	testenv.Command(t, "ip")
	testenv.Command(t, "ping")
	l := New(t)
	a, err := l.NewNS("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.NewNS("b")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(a.Name, "mr-a-") || a.Name == b.Name {
		t.Fatalf("NewNS names = %q, %q; want unique mr-a-XXXXXX, mr-b-XXXXXX", a.Name, b.Name)
	}
	if err := l.Veth(a, "out0", b, "out0"); err != nil {
		t.Fatal(err)
	}
	if err := a.AddAddr("out0", "198.51.100.1/24", "2001:db8:1::1/64"); err != nil {
		t.Fatal(err)
	}
	if err := b.AddAddr("out0", "198.51.100.2/24", "2001:db8:1::2/64"); err != nil {
		t.Fatal(err)
	}
	// An in-namespace LAN stub behind b, routed from a.
	if err := l.Veth(b, "lan0", b, "lan0-peer"); err != nil {
		t.Fatal(err)
	}
	if err := b.AddAddr("lan0", "10.9.0.1/24", "fd00:9::1/64"); err != nil {
		t.Fatal(err)
	}
	if err := a.AddRoute(Route{Dst: "10.9.0.0/24", Via: "198.51.100.2"}); err != nil {
		t.Fatal(err)
	}
	if err := a.AddRoute(Route{Dst: "fd00:9::/64", Via: "2001:db8:1::2"}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct{ key, want string }{
		{"net.ipv4.ip_forward", "1"},
		{"net.ipv4.conf.all.rp_filter", "0"},
		{"net.ipv6.conf.all.accept_dad", "0"},
	} {
		if got, err := a.ReadSysctl(s.key); err != nil || got != s.want {
			t.Errorf("ReadSysctl(%s) = %q, %v; want %q", s.key, got, err, s.want)
		}
	}
	for _, dst := range []string{"198.51.100.2", "10.9.0.1", "2001:db8:1::2", "fd00:9::1"} {
		if err := a.Ping("", dst, 2); err != nil {
			t.Errorf("Ping(%s) = %v; want no loss", dst, err)
		}
	}

	// A UDP socket created inside Do stays in b, and a goroutine outside can use it.
	var pc net.PacketConn
	if err := b.Do(func() error {
		var err error
		pc, err = net.ListenPacket("udp", "198.51.100.2:7777")
		return err
	}); err != nil {
		t.Fatalf("Do(listen in b) = %v", err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 100)
		n, from, err := pc.ReadFrom(buf)
		if err == nil {
			_, _ = pc.WriteTo(append([]byte("echo:"), buf[:n]...), from)
		}
	}()
	var reply string
	if err := a.Do(func() error {
		c, err := net.Dial("udp", "198.51.100.2:7777")
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("hi")); err != nil {
			return err
		}
		buf := make([]byte, 100)
		n, err := c.Read(buf)
		reply = string(buf[:n])
		return err
	}); err != nil {
		t.Fatalf("Do(dial from a) = %v", err)
	}
	if reply != "echo:hi" {
		t.Errorf("UDP reply = %q; want %q", reply, "echo:hi")
	}
	// The test process itself is not in a or b: the address is not local here.
	if c, err := net.ListenPacket("udp", "198.51.100.2:0"); err == nil {
		c.Close()
		t.Errorf("ListenPacket(198.51.100.2) in the test's namespace succeeded; want it only inside b")
	}

	// Cut and restore the path.
	if err := b.LinkDown("out0"); err != nil {
		t.Fatal(err)
	}
	if err := a.Ping("", "198.51.100.2", 1); err == nil {
		t.Errorf("Ping after LinkDown = nil; want loss")
	}
	if err := b.LinkUp("out0"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.WaitPing(ctx, "", "198.51.100.2"); err != nil {
		t.Errorf("WaitPing after LinkUp = %v", err)
	}
	if err := a.WaitPing(ctx, "", "2001:db8:1::2"); err != nil {
		t.Errorf("WaitPing IPv6 after LinkUp = %v (IPv6 address kept on down?)", err)
	}
}

func TestLabCloseRemovesEverything(t *testing.T) {
	testenv.Integration(t)
	l, err := Open(Options{})
	if err != nil {
		t.Fatal(err)
	}
	ns, err := l.NewNS("close")
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	p, err := ns.Start("sleep", "300")
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	// A process that ignores SIGTERM is killed after the stop timeout.
	stubborn, err := l.StartProcess(ProcessSpec{Name: "stubborn", NS: ns, Path: "sh", Args: []string{"-c", "trap '' TERM; while :; do sleep 1; done"}, StopTimeout: 500 * time.Millisecond})
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // let sh install its trap
	dir := l.Dir()
	if err := l.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	for _, pr := range []*Process{p, stubborn} {
		if !pr.Exited() {
			t.Errorf("%s (pid %d) still running after Close", pr.Name(), pr.PID())
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pr.PID())); err == nil {
			t.Errorf("/proc/%d exists after Close", pr.PID())
		}
	}
	if _, err := os.Stat(filepath.Join("/run/netns", ns.Name)); !os.IsNotExist(err) {
		t.Errorf("netns %s still exists after Close (stat err %v)", ns.Name, err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("lab dir %s still exists after Close", dir)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close() = %v; want nil", err)
	}
}

// linkedPair is two namespaces <prefix>-a and <prefix>-b joined by a veth "out0" with
// 192.0.2.1/24 and 192.0.2.2/24.
func linkedPair(t *testing.T, prefix string) (a, b *NS) {
	t.Helper()
	l := New(t)
	a, err := l.NewNS(prefix + "-a")
	if err != nil {
		t.Fatal(err)
	}
	b, err = l.NewNS(prefix + "-b")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Veth(a, "out0", b, "out0"); err != nil {
		t.Fatal(err)
	}
	if err := a.AddAddr("out0", "192.0.2.1/24"); err != nil {
		t.Fatal(err)
	}
	if err := b.AddAddr("out0", "192.0.2.2/24"); err != nil {
		t.Fatal(err)
	}
	return a, b
}

func TestLabImpairLoss(t *testing.T) {
	testenv.Integration(t)
	a, b := linkedPair(t, "imp")
	const n = 2000
	// send n UDP datagrams a -> b and count what arrives
	count := func() int {
		var rx net.PacketConn
		if err := b.Do(func() error {
			var err error
			rx, err = net.ListenPacket("udp", "192.0.2.2:0")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer rx.Close()
		got := make(chan int)
		go func() {
			k := 0
			buf := make([]byte, 64)
			for {
				_ = rx.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				if _, _, err := rx.ReadFrom(buf); err != nil {
					got <- k
					return
				}
				k++
			}
		}()
		if err := a.Do(func() error {
			c, err := net.Dial("udp", rx.LocalAddr().String())
			if err != nil {
				return err
			}
			defer c.Close()
			for i := 0; i < n; i++ {
				if _, err := c.Write([]byte("x")); err != nil {
					return err
				}
				if i%100 == 99 {
					time.Sleep(time.Millisecond) // stay below socket buffer limits
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return <-got
	}
	if got := count(); got != n {
		t.Fatalf("received %d/%d before impairment; want all", got, n)
	}
	if err := b.Impair("out0", Impairment{LossPercent: 20}); err != nil {
		t.Fatalf("Impair(20%%) = %v", err)
	}
	got := count()
	// 20% loss of 2000: mean 1600, sd ~18; accept a wide band.
	if got < 1450 || got > 1750 {
		t.Errorf("received %d/%d with 20%% loss; want about 1600", got, n)
	}
	st, err := b.ImpairStats("out0")
	if err != nil {
		t.Fatal(err)
	}
	if st.InSeen < n || st.InDropped == 0 || int(st.InSeen-st.InDropped) < got {
		t.Errorf("ImpairStats = %+v; want >= %d seen and %d passed", st, n, got)
	}
	t.Logf("20%% loss: received %d/%d, stats %+v", got, n, st)
	if err := b.Impair("out0", Impairment{}); err != nil {
		t.Fatalf("Impair(none) = %v", err)
	}
	if got := count(); got != n {
		t.Errorf("received %d/%d after removing impairment; want all", got, n)
	}
	if err := b.Impair("out0", Impairment{LossPercent: 101}); err == nil {
		t.Errorf("Impair(101%%) = nil; want an error")
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func itoa(i int) string { return fmt.Sprint(i) }

// TestLabProcessSurvivesDo: NS.Do destroys its thread; a process started before (with
// Pdeathsig) must not be killed by that.
func TestLabProcessSurvivesDo(t *testing.T) {
	testenv.Integration(t)
	l := New(t)
	ns, err := l.NewNS("pdeath")
	if err != nil {
		t.Fatal(err)
	}
	var procs []*Process
	for i := 0; i < 5; i++ {
		p, err := ns.Start("sleep", "300")
		if err != nil {
			t.Fatal(err)
		}
		procs = append(procs, p)
		for j := 0; j < 20; j++ {
			if err := ns.Do(func() error { return nil }); err != nil {
				t.Fatal(err)
			}
		}
	}
	time.Sleep(100 * time.Millisecond)
	for _, p := range procs {
		if p.Exited() {
			t.Errorf("process %d exited (%v) after NS.Do calls; want it running", p.PID(), p.Err())
		}
	}
}

// TestLabDoTUN: a TUN device created inside Do lives in the namespace.
func TestLabDoTUN(t *testing.T) {
	testenv.Integration(t)
	l := New(t)
	ns, err := l.NewNS("tun")
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	if err := ns.Do(func() error {
		var err error
		fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq("mrtun0")
		if err != nil {
			return err
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		return unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}); err != nil {
		t.Fatalf("Do(create TUN) = %v", err)
	}
	defer unix.Close(fd)
	if !ns.HasLink("mrtun0") {
		t.Errorf("HasLink(mrtun0) = false in %s; want the TUN inside the namespace", ns)
	}
	if _, err := net.InterfaceByName("mrtun0"); err == nil {
		t.Errorf("mrtun0 exists in the test's own namespace; want it only in %s", ns)
	}
	// A persistent TAP (for QEMU) that a later open attaches to.
	if err := ns.AddTap("tap0"); err != nil {
		t.Fatal(err)
	}
	if err := ns.Do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ifr, err := unix.NewIfreq("tap0")
		if err != nil {
			return err
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		return unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}); err != nil {
		t.Errorf("attach to persistent tap0 = %v", err)
	}
	if !ns.HasLink("tap0") {
		t.Errorf("tap0 gone after the attaching fd closed; want it persistent")
	}
	if err := ns.AddAddr("mrtun0", "169.254.20.2/30"); err != nil {
		t.Fatal(err)
	}
	if err := ns.LinkUp("mrtun0"); err != nil {
		t.Fatal(err)
	}
}

// TestLabImpairIKEOnly: with IKEOnly, UDP to 500 and marker-prefixed UDP to 4500 are dropped;
// ESP-in-UDP (a non-zero SPI first), NAT keepalives and other ports pass.
func TestLabImpairIKEOnly(t *testing.T) {
	testenv.Integration(t)
	a, b := linkedPair(t, "ike")
	if err := a.Impair("out0", Impairment{LossPercent: 100, IKEOnly: true}); err != nil {
		t.Fatalf("Impair(IKEOnly) = %v", err)
	}
	// arrives sends payload from a to b's port and reports whether it got there.
	arrives := func(port int, payload []byte) bool {
		var rx net.PacketConn
		if err := b.Do(func() error {
			var err error
			rx, err = net.ListenPacket("udp", fmt.Sprintf("192.0.2.2:%d", port))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer rx.Close()
		if err := a.Do(func() error {
			c, err := net.Dial("udp", rx.LocalAddr().String())
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write(payload)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		_ = rx.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, _, err := rx.ReadFrom(make([]byte, 64))
		return err == nil
	}
	for _, c := range []struct {
		name    string
		port    int
		payload []byte
		want    bool
	}{
		{"IKE on 500", 500, []byte{1, 2, 3, 4, 5, 6, 7, 8}, false},
		{"IKE on 4500 (non-ESP marker)", 4500, []byte{0, 0, 0, 0, 1, 2, 3, 4}, false},
		{"ESP on 4500", 4500, []byte{0xc0, 0xff, 0xee, 0x01, 0, 0, 0, 1}, true},
		{"NAT keepalive", 4500, []byte{0xff}, true},
		{"other port", 4501, []byte{0, 0, 0, 0, 1}, true},
	} {
		if got := arrives(c.port, c.payload); got != c.want {
			t.Errorf("%s: arrived = %v; want %v", c.name, got, c.want)
		}
	}
	st, err := a.ImpairStats("out0")
	if err != nil {
		t.Fatal(err)
	}
	if st.OutDropped != 2 {
		t.Errorf("ImpairStats().OutDropped = %d; want 2", st.OutDropped)
	}
}
