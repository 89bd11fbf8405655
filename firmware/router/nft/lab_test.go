package nft

import (
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"meshroot/internal/lab"
	"meshroot/internal/testenv"
)

// The firewall lab: the router's real ruleset in a namespace, real traffic through it.
//
//	lanhost lh0 192.168.50.10 ── lan0 192.168.50.1  router  wan0 100.64.0.2 ── up0 100.64.0.1  wan
//	                                                 mrtun1 (TUN, 10.0.0.0/16)            lo: 198.18.0.1 (WAN host)
//	                                                                                          198.51.100.2 (IKE peer)
//	                                                                                          198.51.100.3 (stranger)
type fwLab struct {
	lanHost, router, wan *lab.NS
	nsFd                 int
}

func newFWLab(t *testing.T) *fwLab {
	t.Helper()
	l := lab.New(t)
	f := &fwLab{}
	var err error
	must := func(e error) {
		t.Helper()
		if e != nil {
			t.Fatal(e)
		}
	}
	f.lanHost, err = l.NewNS("fwlan")
	must(err)
	f.router, err = l.NewNS("fwrtr")
	must(err)
	f.wan, err = l.NewNS("fwwan")
	must(err)
	must(l.Veth(f.lanHost, "lh0", f.router, "lan0"))
	must(l.Veth(f.router, "wan0", f.wan, "up0"))
	must(f.lanHost.AddAddr("lh0", "192.168.50.10/24"))
	must(f.lanHost.AddRoute(lab.Route{Dst: "default", Via: "192.168.50.1"}))
	must(f.router.AddAddr("lan0", "192.168.50.1/24"))
	must(f.router.AddAddr("wan0", "100.64.0.2/24"))
	must(f.router.AddRoute(lab.Route{Dst: "default", Via: "100.64.0.1"}))
	must(f.wan.AddAddr("up0", "100.64.0.1/24"))
	must(f.wan.AddAddr("lo", "198.18.0.1/32", "198.51.100.2/32", "198.51.100.3/32"))
	// The WAN side tries to reach the LAN directly, as a neighbour on the ISP's segment could.
	must(f.wan.AddRoute(lab.Route{Dst: "192.168.50.0/24", Via: "100.64.0.2"}))
	fd, err := unix.Open("/run/netns/"+f.router.Name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	must(err)
	t.Cleanup(func() { unix.Close(fd) })
	f.nsFd = fd
	return f
}

// listenTCP listens in ns and reports each accepted connection's remote address.
func listenTCP(t *testing.T, ns *lab.NS, addr string) <-chan string {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp4", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan string, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ch <- c.RemoteAddr().(*net.TCPAddr).IP.String()
			c.Close()
		}
	}()
	return ch
}

func dialTCP(ns *lab.NS, src, dst string) error {
	return ns.Do(func() error {
		d := net.Dialer{Timeout: 700 * time.Millisecond}
		if src != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		}
		c, err := d.Dial("tcp4", dst)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// listenUDP listens in ns and reports each datagram's source address.
func listenUDP(t *testing.T, ns *lab.NS, addr string) <-chan string {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Do(func() (err error) { pc, err = net.ListenPacket("udp4", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	ch := make(chan string, 16)
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			ch <- from.(*net.UDPAddr).IP.String()
		}
	}()
	return ch
}

func sendUDP(ns *lab.NS, src, dst string) error {
	return ns.Do(func() error {
		var la *net.UDPAddr
		if src != "" {
			la = &net.UDPAddr{IP: net.ParseIP(src)}
		}
		c, err := net.DialUDP("udp4", la, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(dst)))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("hello"))
		return err
	})
}

func received(ch <-chan string, wait time.Duration) (string, bool) {
	select {
	case s := <-ch:
		return s, true
	case <-time.After(wait):
		return "", false
	}
}

// TestLabFirewall applies the router's ruleset to a namespace and sends real traffic: NAT out of
// the WAN, nothing in from the WAN (to the router or through it to the LAN) except IKE from the
// profile's concentrator endpoints, the LAN reaches the router and the tunnels.
func TestLabFirewall(t *testing.T) {
	testenv.Integration(t)
	f := newFWLab(t)
	routerSvc := listenTCP(t, f.router, "0.0.0.0:7000")
	lanSvc := listenTCP(t, f.lanHost, "192.168.50.10:7001")
	wanSvc := listenTCP(t, f.wan, "198.18.0.1:7002")
	ike500 := listenUDP(t, f.router, "0.0.0.0:500")
	ike4500 := listenUDP(t, f.router, "0.0.0.0:4500")

	// Without the firewall everything gets through: the checks below can fail.
	if err := dialTCP(f.wan, "", "100.64.0.2:7000"); err != nil {
		t.Fatalf("baseline: WAN -> router = %v; want a connection without the firewall", err)
	}
	if err := dialTCP(f.wan, "", "192.168.50.10:7001"); err != nil {
		t.Fatalf("baseline: WAN -> LAN host = %v; want a connection without the firewall", err)
	}
	if err := dialTCP(f.lanHost, "", "198.18.0.1:7002"); err != nil {
		t.Fatalf("baseline: LAN -> WAN host = %v", err)
	}
	if src, _ := received(wanSvc, time.Second); src != "192.168.50.10" {
		t.Fatalf("baseline: WAN host saw %q; want the LAN host's own address without NAT", src)
	}
	drain(routerSvc, lanSvc)

	// A TUN standing in for a VPN tunnel: the VPC prefix is routed into it.
	var tun *os.File
	if err := f.router.Do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		ifr, _ := unix.NewIfreq("mrtun1")
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return err
		}
		tun = os.NewFile(uintptr(fd), "mrtun1")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tun.Close() })
	if err := f.router.LinkUp("mrtun1"); err != nil {
		t.Fatal(err)
	}
	if err := f.router.AddRoute(lab.Route{Dst: "10.0.0.0/16", Dev: "mrtun1"}); err != nil {
		t.Fatal(err)
	}

	k := Netlink{NetNSFd: f.nsFd}
	rs, err := Build(Config{WAN: "wan0", LAN: "lan0", TunnelPrefix: "mrtun"})
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Apply(rs); err != nil {
		t.Fatalf("Apply() = %v", err)
	}
	// Applying again replaces the table in one batch (no "exists" error, no window without rules).
	if err := k.Apply(rs); err != nil {
		t.Fatalf("second Apply() = %v", err)
	}
	// A LAN connection through NAT, open while the profile's peers arrive: replacing wan_in
	// leaves it alone.
	var echoLn net.Listener
	if err := f.wan.Do(func() (err error) { echoLn, err = net.Listen("tcp4", "198.18.0.1:7003"); return err }); err != nil {
		t.Fatal(err)
	}
	defer echoLn.Close()
	go func() {
		c, err := echoLn.Accept()
		if err == nil {
			io.Copy(c, c)
			c.Close()
		}
	}()
	var long net.Conn
	if err := f.lanHost.Do(func() (err error) { long, err = net.DialTimeout("tcp4", "198.18.0.1:7003", time.Second); return err }); err != nil {
		t.Fatalf("LAN -> WAN before the update: %v", err)
	}
	defer long.Close()
	echo := func(msg string) error {
		long.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.WriteString(long, msg); err != nil {
			return err
		}
		b := make([]byte, len(msg))
		_, err := io.ReadFull(long, b)
		return err
	}
	if err := echo("before\n"); err != nil {
		t.Fatalf("echo through NAT: %v", err)
	}
	if err := sendUDP(f.wan, "198.51.100.2", "100.64.0.2:500"); err != nil {
		t.Fatal(err)
	}
	if src, ok := received(ike500, 500*time.Millisecond); ok {
		t.Errorf("IKE from %s accepted before the peers were known", src)
	}
	if err := k.UpdateChain(Table, WANIn([]netip.Addr{netip.MustParseAddr("198.51.100.2")})); err != nil {
		t.Fatalf("UpdateChain(wan_in) = %v", err)
	}
	if err := echo("after the update\n"); err != nil {
		t.Errorf("the NATed connection after UpdateChain: %v", err)
	}

	t.Run("LAN to WAN is masqueraded", func(t *testing.T) {
		if err := dialTCP(f.lanHost, "", "198.18.0.1:7002"); err != nil {
			t.Fatalf("LAN -> WAN host = %v; want a connection", err)
		}
		if src, _ := received(wanSvc, time.Second); src != "100.64.0.2" {
			t.Errorf("WAN host saw source %q; want the router's WAN address 100.64.0.2 (masquerade)", src)
		}
	})
	t.Run("LAN to router", func(t *testing.T) {
		if err := dialTCP(f.lanHost, "", "192.168.50.1:7000"); err != nil {
			t.Errorf("LAN -> router = %v; want a connection (DHCP, DNS, status live here)", err)
		}
	})
	t.Run("WAN to router refused", func(t *testing.T) {
		if err := dialTCP(f.wan, "", "100.64.0.2:7000"); err == nil {
			t.Errorf("WAN -> router:7000 connected; want it dropped")
		}
		if err := dialTCP(f.wan, "", "192.168.50.1:7000"); err == nil {
			t.Errorf("WAN -> router's LAN address connected; want it dropped")
		}
	})
	t.Run("WAN to LAN refused", func(t *testing.T) {
		if err := dialTCP(f.wan, "", "192.168.50.10:7001"); err == nil {
			t.Errorf("WAN -> LAN host connected; want it dropped")
		}
		if _, ok := received(lanSvc, 200*time.Millisecond); ok {
			t.Errorf("LAN host accepted a connection from the WAN")
		}
	})
	t.Run("IKE only from the concentrator", func(t *testing.T) {
		for _, port := range []string{"500", "4500"} {
			ch := ike500
			if port == "4500" {
				ch = ike4500
			}
			if err := sendUDP(f.wan, "198.51.100.3", "100.64.0.2:"+port); err != nil {
				t.Fatal(err)
			}
			if src, ok := received(ch, 500*time.Millisecond); ok {
				t.Errorf("UDP %s from a stranger (%s) reached the router; want it dropped", port, src)
			}
			if err := sendUDP(f.wan, "198.51.100.2", "100.64.0.2:"+port); err != nil {
				t.Fatal(err)
			}
			if src, ok := received(ch, 2*time.Second); !ok || src != "198.51.100.2" {
				t.Errorf("UDP %s from the concentrator: got %q, %v; want it accepted", port, src, ok)
			}
		}
	})
	t.Run("LAN to tunnel forwarded", func(t *testing.T) {
		if err := sendUDP(f.lanHost, "", "10.0.0.10:9"); err != nil {
			t.Fatal(err)
		}
		tun.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 1500)
		for {
			n, err := tun.Read(buf)
			if err != nil {
				t.Fatalf("nothing from the LAN in the tunnel: %v", err)
			}
			if n >= 20 && buf[0]>>4 == 4 && netip.AddrFrom4([4]byte(buf[16:20])) == netip.MustParseAddr("10.0.0.10") {
				if src := netip.AddrFrom4([4]byte(buf[12:16])); src.String() != "192.168.50.10" {
					t.Errorf("tunnel packet source = %s; want the LAN host (no NAT into tunnels)", src)
				}
				break
			}
		}
	})
	t.Run("drops are counted", func(t *testing.T) {
		c, err := k.Counters(Table)
		if err != nil {
			t.Fatal(err)
		}
		if c[CommentInputDrop] == 0 || c[CommentForwardDrop] == 0 {
			t.Errorf("Counters() = %v; want input and forward drops counted", c)
		}
	})
	if err := k.Delete(Table); err != nil {
		t.Fatalf("Delete() = %v", err)
	}
	if err := dialTCP(f.wan, "", "100.64.0.2:7000"); err != nil {
		t.Errorf("WAN -> router after Delete = %v; want the table gone", err)
	}
	if err := k.Delete(Table); err != nil {
		t.Errorf("Delete() of a missing table = %v; want nil", err)
	}
}

func drain(chs ...<-chan string) {
	for _, ch := range chs {
		for {
			if _, ok := received(ch, 10*time.Millisecond); !ok {
				break
			}
		}
	}
}
