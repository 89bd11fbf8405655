package dns

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	mdns "github.com/miekg/dns"

	"meshroot/firmware/router/dhcpd"
	"meshroot/internal/lab"
	"meshroot/internal/testenv"
)

// TestLabDNSForwarder: the forwarder on the router's LAN address in a namespace, the DHCP
// server beside it, an upstream DNS server on the WAN side, a LAN client that gets its lease
// (with a host name) by DHCP and then resolves its own name, the router's name and an internet
// name over UDP and TCP; with the WAN cut, local names still resolve.
//
//	client eth0 ── lan0 192.168.1.1  router  wan0 100.64.0.2 ── up0 100.64.0.1 (DNS)  wan
func TestLabDNSForwarder(t *testing.T) {
	testenv.Integration(t)
	l := lab.New(t)
	mk := func(n string) *lab.NS {
		ns, err := l.NewNS(n)
		if err != nil {
			t.Fatal(err)
		}
		return ns
	}
	client, router, wan := mk("dnscl"), mk("dnsrt"), mk("dnswan")
	for _, err := range []error{
		l.Veth(client, "eth0", router, "lan0"),
		l.Veth(router, "wan0", wan, "up0"),
		router.AddAddr("lan0", "192.168.1.1/24"),
		router.AddAddr("wan0", "100.64.0.2/24"),
		wan.AddAddr("up0", "100.64.0.1/24"),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The upstream: answers example.com and www.example.com.
	var upPC net.PacketConn
	if err := wan.Do(func() (err error) { upPC, err = net.ListenPacket("udp", "100.64.0.1:53"); return err }); err != nil {
		t.Fatal(err)
	}
	upSrv := &mdns.Server{PacketConn: upPC, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(r)
		if r.Question[0].Qtype == mdns.TypeA {
			rr, _ := mdns.NewRR(r.Question[0].Name + " 300 IN A 198.18.0.1")
			m.Answer = append(m.Answer, rr)
		}
		w.WriteMsg(m)
	})}
	go upSrv.ActivateAndServe()
	defer upSrv.Shutdown()

	// DHCP on the router's LAN.
	dh, err := dhcpd.New(dhcpd.Config{Interface: "lan0", Address: netip.MustParsePrefix("192.168.1.1/24")})
	if err != nil {
		t.Fatal(err)
	}
	var dhConn net.PacketConn
	if err := router.Do(func() (err error) { dhConn, err = dh.Listen(); return err }); err != nil {
		t.Fatal(err)
	}
	go dh.Serve(ctx, dhConn)

	// The forwarder; its upstream sockets are made in the router's namespace.
	fw, err := New(Config{Hostname: "meshroot", RouterAddr: netip.MustParseAddr("192.168.1.1"), LANPrefix: netip.MustParsePrefix("192.168.1.0/24"),
		Hosts: dh, Upstreams: func() []netip.Addr { return []netip.Addr{netip.MustParseAddr("100.64.0.1")} }, Timeout: 500 * time.Millisecond,
		Exchange: func(ctx context.Context, m *mdns.Msg, server string) (*mdns.Msg, error) {
			var c net.Conn
			if err := router.Do(func() (err error) { c, err = net.Dial("udp", server); return err }); err != nil {
				return nil, err
			}
			defer c.Close()
			r, _, err := (&mdns.Client{Timeout: 500 * time.Millisecond}).ExchangeWithConnContext(ctx, m, &mdns.Conn{Conn: c})
			return r, err
		}})
	if err != nil {
		t.Fatal(err)
	}
	var pc net.PacketConn
	var ln net.Listener
	if err := router.Do(func() (err error) { pc, ln, err = Listen(netip.MustParseAddr("192.168.1.1"), 53); return err }); err != nil {
		t.Fatal(err)
	}
	fwDone := make(chan error, 1)
	go func() { fwDone <- fw.Serve(ctx, pc, ln) }()
	defer func() { cancel(); <-fwDone }()

	// The client gets its address (and tells its name) by DHCP.
	var leased netip.Addr
	if err := client.Do(func() error {
		c, err := nclient4.New("eth0", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
		if err != nil {
			return err
		}
		defer c.Close()
		lease, err := c.Request(ctx, dhcpv4.WithOption(dhcpv4.OptHostName("Laptop")))
		if err != nil {
			return err
		}
		leased, _ = netip.AddrFromSlice(lease.ACK.YourIPAddr.To4())
		return nil
	}); err != nil {
		t.Fatalf("DHCP: %v", err)
	}
	if err := client.AddAddr("eth0", netip.PrefixFrom(leased, 24).String()); err != nil {
		t.Fatal(err)
	}

	query := func(proto, name string) string {
		var out string
		err := client.Do(func() error {
			m := new(mdns.Msg)
			m.SetQuestion(name, mdns.TypeA)
			r, _, err := (&mdns.Client{Net: proto, Timeout: 3 * time.Second}).Exchange(m, "192.168.1.1:53")
			if err != nil {
				return err
			}
			out = summary(r)
			return nil
		})
		if err != nil {
			return "error: " + err.Error()
		}
		return out
	}
	for _, c := range []struct{ proto, name, want string }{
		{"udp", "meshroot.lan.", "NOERROR 192.168.1.1 aa"},
		{"tcp", "meshroot.lan.", "NOERROR 192.168.1.1 aa"},
		{"udp", "laptop.lan.", "NOERROR 192.168.1.100 aa"},
		{"udp", "example.com.", "NOERROR 198.18.0.1"},
		{"tcp", "www.example.com.", "NOERROR 198.18.0.1"},
	} {
		if got := query(c.proto, c.name); got != c.want {
			t.Errorf("%s %s = %s; want %s", c.proto, c.name, got, c.want)
		}
	}
	// WAN cut: local names and cached answers stay; new internet names fail (SERVFAIL, quickly).
	if err := router.LinkDown("wan0"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ proto, name, want string }{
		{"udp", "meshroot.lan.", "NOERROR 192.168.1.1 aa"},
		{"udp", "laptop.lan.", "NOERROR 192.168.1.100 aa"},
		{"udp", "example.com.", "NOERROR 198.18.0.1"},
		{"udp", "new.example.com.", "SERVFAIL"},
	} {
		if got := query(c.proto, c.name); got != c.want {
			t.Errorf("WAN down: %s %s = %s; want %s", c.proto, c.name, got, c.want)
		}
	}
}
