package dhcpd

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"

	"meshroot/internal/lab"
	"meshroot/internal/testenv"
)

// TestLabDHCPServer runs the server on a real interface (its socket bound to the device) in one
// namespace and two real DHCP clients (nclient4 on raw sockets) in others, through a bridge.
func TestLabDHCPServer(t *testing.T) {
	testenv.Integration(t)
	l := lab.New(t)
	srvNS, err := l.NewNS("dhsrv")
	if err != nil {
		t.Fatal(err)
	}
	var clients []*lab.NS
	for _, n := range []string{"dhc1", "dhc2"} {
		c, err := l.NewNS(n)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	if err := srvNS.AddBridge("br-lan"); err != nil {
		t.Fatal(err)
	}
	for i, c := range clients {
		port := "p" + string(rune('1'+i))
		if err := l.Veth(srvNS, port, c, "eth0"); err != nil {
			t.Fatal(err)
		}
		if err := srvNS.SetMaster(port, "br-lan"); err != nil {
			t.Fatal(err)
		}
	}
	if err := srvNS.AddAddr("br-lan", "192.168.1.1/24"); err != nil {
		t.Fatal(err)
	}
	if err := srvNS.LinkUp("br-lan"); err != nil {
		t.Fatal(err)
	}
	leaseFile := filepath.Join(t.TempDir(), "leases.json")
	s, err := New(Config{Interface: "br-lan", Address: netip.MustParsePrefix("192.168.1.1/24"), LeaseFile: leaseFile,
		Static: []StaticLease{{MAC: "02:aa:00:00:00:02", IP: netip.MustParseAddr("192.168.1.42"), Hostname: "printer"}}})
	if err != nil {
		t.Fatal(err)
	}
	var conn net.PacketConn
	if err := srvNS.Do(func() (err error) { conn, err = s.Listen(); return err }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, conn) }()
	defer func() { cancel(); <-done }()

	for i, c := range clients {
		hw := net.HardwareAddr{0x02, 0xaa, 0, 0, 0, byte(i + 1)}
		if out, err := c.Run("ip", "link", "set", "eth0", "address", hw.String()); err != nil {
			t.Log(out)
			t.Fatal(err)
		}
		var lease *nclient4.Lease
		err := c.Do(func() error {
			cl, err := nclient4.New("eth0", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
			if err != nil {
				return err
			}
			defer cl.Close()
			rctx, rcancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer rcancel()
			lease, err = cl.Request(rctx, dhcpv4.WithOption(dhcpv4.OptHostName("client"+string(rune('1'+i)))))
			return err
		})
		if err != nil {
			t.Fatalf("client %d: Request() = %v", i+1, err)
		}
		want := []string{"192.168.1.100", "192.168.1.42"}[i]
		if got := lease.ACK.YourIPAddr.String(); got != want {
			t.Errorf("client %d got %s; want %s", i+1, got, want)
		}
		if r := lease.ACK.Router(); len(r) != 1 || r[0].String() != "192.168.1.1" {
			t.Errorf("client %d router = %v; want 192.168.1.1", i+1, r)
		}
	}
	if ip, ok := s.Lookup("client1"); !ok || ip.String() != "192.168.1.100" {
		t.Errorf("Lookup(client1) = %v, %v", ip, ok)
	}
	if ip, ok := s.Lookup("printer"); !ok || ip.String() != "192.168.1.42" {
		t.Errorf("Lookup(printer) = %v, %v (static name wins over the client's)", ip, ok)
	}
	cancel()
	<-done
	done <- nil // for the deferred cancel
	// The leases survive a restart of the server (the file was written as they were given).
	s2, err := New(Config{Interface: "br-lan", Address: netip.MustParsePrefix("192.168.1.1/24"), LeaseFile: leaseFile,
		Static: []StaticLease{{MAC: "02:aa:00:00:00:02", IP: netip.MustParseAddr("192.168.1.42"), Hostname: "printer"}}})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(s2.Leases()); n != 2 {
		t.Errorf("restarted server has %d leases; want 2", n)
	}
}
