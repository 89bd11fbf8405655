package dhcpd

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"

	"meshroot/firmware/internal/pipeconn"
)

var lanAddr = netip.MustParsePrefix("192.168.1.1/24")

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newServer(t *testing.T, mod func(*Config)) (*Server, *clock) {
	t.Helper()
	clk := &clock{t: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
	cfg := Config{Interface: "br-lan", Address: lanAddr, LeaseFile: filepath.Join(t.TempDir(), "dhcp", "leases.json"), Now: clk.Now}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	return s, clk
}

func mac(n byte) net.HardwareAddr { return net.HardwareAddr{0x02, 0, 0, 0, 0, n} }

func discover(t *testing.T, s *Server, hw net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	d, err := dhcpv4.NewDiscovery(hw, mods...)
	if err != nil {
		t.Fatal(err)
	}
	return s.Handle(d)
}

func request(t *testing.T, s *Server, hw net.HardwareAddr, ip string, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	m := []dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithHwAddr(hw),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP(ip)))}
	r, err := dhcpv4.New(append(m, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return s.Handle(r)
}

func yiaddr(m *dhcpv4.DHCPv4) string {
	if m == nil {
		return "<none>"
	}
	return m.MessageType().String() + " " + m.YourIPAddr.String()
}

// TestDORA runs a real DHCP client (nclient4) against the server over an in-memory link.
func TestDORA(t *testing.T) {
	s, _ := newServer(t, nil)
	link := pipeconn.New(&net.UDPAddr{IP: net.IPv4zero, Port: 68}, &net.UDPAddr{IP: net.IPv4(192, 168, 1, 1), Port: 67})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, link.B) }()
	defer func() { cancel(); <-done }()

	c, err := nclient4.NewWithConn(link.A, mac(7), nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(2))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	lease, err := c.Request(context.Background(), dhcpv4.WithOption(dhcpv4.OptHostName("Laptop_7.home")))
	if err != nil {
		t.Fatalf("Request() = %v", err)
	}
	ack := lease.ACK
	got := map[string]string{
		"address": ack.YourIPAddr.String(),
		"mask":    net.IP(ack.SubnetMask()).String(),
		"router":  ack.Router()[0].String(),
		"dns":     ack.DNS()[0].String(),
		"domain":  ack.DomainName(),
		"lease":   ack.IPAddressLeaseTime(0).String(),
		"renew":   ack.IPAddressRenewalTime(0).String(),
		"server":  ack.ServerIdentifier().String(),
	}
	want := map[string]string{"address": "192.168.1.100", "mask": "255.255.255.0", "router": "192.168.1.1", "dns": "192.168.1.1",
		"domain": "lan", "lease": "12h0m0s", "renew": "6h0m0s", "server": "192.168.1.1"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ACK (-want +got):\n%s", diff)
	}
	if ip, ok := s.Lookup("laptop-7"); !ok || ip.String() != "192.168.1.100" {
		t.Errorf("Lookup(laptop-7) = %v, %v; want 192.168.1.100 from the client's host name", ip, ok)
	}
	// Renewal keeps the address.
	renewed, err := c.Renew(context.Background(), lease)
	if err != nil || !renewed.ACK.YourIPAddr.Equal(ack.YourIPAddr) {
		t.Errorf("Renew() = %v, %v; want the same address", renewed, err)
	}
	if st := s.Stats(); st.Discover != 1 || st.Ack != 2 {
		t.Errorf("Stats() = %+v; want 1 discover, 2 acks", st)
	}
}

func TestAllocation(t *testing.T) {
	s, clk := newServer(t, func(c *Config) {
		c.PoolStart, c.PoolEnd = netip.MustParseAddr("192.168.1.100"), netip.MustParseAddr("192.168.1.102")
		c.Static = []StaticLease{{MAC: "02:00:00:00:00:09", IP: netip.MustParseAddr("192.168.1.50"), Hostname: "printer"}}
		c.LeaseTime = time.Hour
	})
	// The first client gets the pool's first address, and keeps it.
	if got := yiaddr(discover(t, s, mac(1))); got != "OFFER 192.168.1.100" {
		t.Errorf("discover(1) = %s; want OFFER 192.168.1.100", got)
	}
	if got := yiaddr(request(t, s, mac(1), "192.168.1.100")); got != "ACK 192.168.1.100" {
		t.Errorf("request(1) = %s", got)
	}
	// A client asking for a free address gets it.
	if got := yiaddr(discover(t, s, mac(2), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("192.168.1.102"))))); got != "OFFER 192.168.1.102" {
		t.Errorf("discover(2, wants .102) = %s", got)
	}
	request(t, s, mac(2), "192.168.1.102")
	// Someone else's address: NAK; outside the LAN: NAK.
	if got := yiaddr(request(t, s, mac(3), "192.168.1.100")); !strings.HasPrefix(got, "NAK") {
		t.Errorf("request(3, taken .100) = %s; want NAK", got)
	}
	if got := yiaddr(request(t, s, mac(3), "10.1.2.3")); !strings.HasPrefix(got, "NAK") {
		t.Errorf("request(3, 10.1.2.3) = %s; want NAK", got)
	}
	// Static lease, whatever the client asks for.
	if got := yiaddr(discover(t, s, mac(9))); got != "OFFER 192.168.1.50" {
		t.Errorf("discover(static) = %s", got)
	}
	if got := yiaddr(request(t, s, mac(9), "192.168.1.101")); !strings.HasPrefix(got, "NAK") {
		t.Errorf("request(static, other address) = %s; want NAK", got)
	}
	if got := yiaddr(request(t, s, mac(9), "192.168.1.50")); got != "ACK 192.168.1.50" {
		t.Errorf("request(static) = %s", got)
	}
	if ip, ok := s.Lookup("printer"); !ok || ip.String() != "192.168.1.50" {
		t.Errorf("Lookup(printer) = %v, %v", ip, ok)
	}
	// Last free address, then the pool is exhausted.
	if got := yiaddr(discover(t, s, mac(3))); got != "OFFER 192.168.1.101" {
		t.Errorf("discover(3) = %s; want the last free address", got)
	}
	request(t, s, mac(3), "192.168.1.101")
	if got := discover(t, s, mac(4)); got != nil {
		t.Errorf("discover(4) on a full pool = %s; want no offer", yiaddr(got))
	}
	// After client 1's lease expires (the others renew), client 4 gets client 1's address.
	clk.Advance(50 * time.Minute)
	request(t, s, mac(2), "192.168.1.102")
	request(t, s, mac(3), "192.168.1.101")
	request(t, s, mac(9), "192.168.1.50")
	clk.Advance(20 * time.Minute)
	if got := yiaddr(discover(t, s, mac(4))); got != "OFFER 192.168.1.100" {
		t.Errorf("discover(4) after 1 expired = %s; want the expired address", got)
	}
	// Client 1 comes back: its address is offered to 4 now, so it gets NAKed on init-reboot
	// once 4 has it.
	request(t, s, mac(4), "192.168.1.100")
	if got := yiaddr(request(t, s, mac(1), "192.168.1.100")); !strings.HasPrefix(got, "NAK") {
		t.Errorf("request(1, its old address now 4's) = %s; want NAK", got)
	}
	if n := len(s.Leases()); n != 4 {
		t.Errorf("len(Leases()) = %d; want 4 (.50, .100, .101, .102)", n)
	}
}

func TestReleaseDeclineInformOtherServer(t *testing.T) {
	s, _ := newServer(t, nil)
	discover(t, s, mac(1))
	request(t, s, mac(1), "192.168.1.100")
	rel, _ := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease), dhcpv4.WithHwAddr(mac(1)), dhcpv4.WithClientIP(net.ParseIP("192.168.1.100")))
	if r := s.Handle(rel); r != nil {
		t.Errorf("release answered %s; want silence", yiaddr(r))
	}
	if n := len(s.Leases()); n != 0 {
		t.Errorf("Leases() after release = %d; want 0", n)
	}
	// The released client gets its address back.
	if got := yiaddr(discover(t, s, mac(1))); got != "OFFER 192.168.1.100" {
		t.Errorf("discover after release = %s; want the same address again", got)
	}
	request(t, s, mac(1), "192.168.1.100")
	dec, _ := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline), dhcpv4.WithHwAddr(mac(1)),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("192.168.1.100"))))
	s.Handle(dec)
	if got := yiaddr(discover(t, s, mac(1))); got != "OFFER 192.168.1.101" {
		t.Errorf("discover after decline = %s; want another address", got)
	}
	// The client chose another server: our offer is withdrawn, no answer.
	if r := request(t, s, mac(1), "192.168.1.101", dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("192.168.1.254")))); r != nil {
		t.Errorf("request to another server answered %s", yiaddr(r))
	}
	inf, _ := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeInform), dhcpv4.WithHwAddr(mac(5)), dhcpv4.WithClientIP(net.ParseIP("192.168.1.20")))
	r := s.Handle(inf)
	if r == nil || r.MessageType() != dhcpv4.MessageTypeAck || !r.YourIPAddr.IsUnspecified() || r.IPAddressLeaseTime(0) != 0 {
		t.Errorf("inform = %v; want an ACK with options and no address or lease", r)
	}
	if d := Destination(inf, r); d.IP.String() != "192.168.1.20" || d.Port != 68 {
		t.Errorf("Destination(inform) = %v; want unicast to the client", d)
	}
}

func TestLeaseFilePersistence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "leases.json")
	s, clk := newServer(t, func(c *Config) { c.LeaseFile = file })
	discover(t, s, mac(1), dhcpv4.WithOption(dhcpv4.OptHostName("phone")))
	request(t, s, mac(1), "192.168.1.100", dhcpv4.WithOption(dhcpv4.OptHostName("phone")))
	// A renewal soon after is not written at once (flash wear); Flush writes it.
	clk.Advance(time.Minute)
	request(t, s, mac(1), "192.168.1.100", dhcpv4.WithOption(dhcpv4.OptHostName("phone")))
	b, _ := os.ReadFile(file)
	ls, err := ParseLeaseFile(b)
	if err != nil || len(ls) != 1 || !ls[0].Expires.Equal(clk.Now().Add(-time.Minute).Add(12*time.Hour)) {
		t.Fatalf("lease file after renewal = %v, %v; want the first expiry still", ls, err)
	}
	s.Flush()
	b, _ = os.ReadFile(file)
	if ls, _ = ParseLeaseFile(b); len(ls) != 1 || !ls[0].Expires.Equal(clk.Now().Add(12*time.Hour)) {
		t.Errorf("lease file after Flush = %v; want the renewed expiry", ls)
	}
	// A restarted server knows the lease: same address for the client, same name in DNS.
	s2, err := New(Config{Address: lanAddr, LeaseFile: file, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if ip, ok := s2.Lookup("phone"); !ok || ip.String() != "192.168.1.100" {
		t.Errorf("restarted Lookup(phone) = %v, %v", ip, ok)
	}
	if got := yiaddr(discover(t, s2, mac(2))); got != "OFFER 192.168.1.101" {
		t.Errorf("restarted server offered %s to a new client; want .101 (.100 is leased)", got)
	}
	// A damaged lease file is not fatal.
	if err := os.WriteFile(file, []byte("{garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Address: lanAddr, LeaseFile: file}); err != nil {
		t.Errorf("New() with a damaged lease file = %v; want a warning and an empty table", err)
	}
}

func TestNewErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"v6", Config{Address: netip.MustParsePrefix("fd00::1/64")}, "IPv4"},
		{"pool outside", Config{Address: lanAddr, PoolStart: netip.MustParseAddr("10.0.0.1"), PoolEnd: netip.MustParseAddr("10.0.0.9")}, "pool"},
		{"static mac", Config{Address: lanAddr, Static: []StaticLease{{MAC: "zz", IP: netip.MustParseAddr("192.168.1.5")}}}, "static[0].mac"},
		{"static router", Config{Address: lanAddr, Static: []StaticLease{{MAC: "02:00:00:00:00:01", IP: netip.MustParseAddr("192.168.1.1")}}}, "static[0].ip"},
		{"static name", Config{Address: lanAddr, Static: []StaticLease{{MAC: "02:00:00:00:00:01", IP: netip.MustParseAddr("192.168.1.5"), Hostname: "bad name!"}}}, "static[0].hostname"},
		{"static twice", Config{Address: lanAddr, Static: []StaticLease{
			{MAC: "02:00:00:00:00:01", IP: netip.MustParseAddr("192.168.1.5")}, {MAC: "02:00:00:00:00:02", IP: netip.MustParseAddr("192.168.1.5")}}}, "twice"},
	} {
		if _, err := New(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: New() = %v; want an error naming %q", c.name, err, c.want)
		}
	}
}

func TestSanitizeHostname(t *testing.T) {
	for in, want := range map[string]string{
		"Laptop":                 "laptop",
		"my_phone.home.arpa":     "my-phone",
		"--x--":                  "x",
		"émile's pc":             "miles-pc",
		"":                       "",
		"!!!":                    "",
		strings.Repeat("a", 100): strings.Repeat("a", 63),
	} {
		if got := SanitizeHostname(in); got != want {
			t.Errorf("SanitizeHostname(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestDefaultPool(t *testing.T) {
	s, _ := newServer(t, func(c *Config) { c.Address = netip.MustParsePrefix("10.10.0.1/20") })
	if got := yiaddr(discover(t, s, mac(1))); got != "OFFER 10.10.8.0" {
		t.Errorf("first offer in a /20 = %s; want the upper half's first address", got)
	}
}
