package dhcpd

import (
	"net"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// FuzzHandle feeds arbitrary packets to the server: no panic, and every answer is a well-formed
// reply for the asking client with an address on the LAN (or none).
func FuzzHandle(f *testing.F) {
	hw := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	for _, m := range []dhcpv4.MessageType{dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeRelease,
		dhcpv4.MessageTypeDecline, dhcpv4.MessageTypeInform} {
		d, _ := dhcpv4.New(dhcpv4.WithMessageType(m), dhcpv4.WithHwAddr(hw),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("192.168.1.120"))),
			dhcpv4.WithOption(dhcpv4.OptHostName("Fuzzy.Host")))
		f.Add(d.ToBytes())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := New(Config{Address: lanAddr})
		if err != nil {
			t.Fatal(err)
		}
		m, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		for range 2 { // twice: the second sees the first's state
			r := s.Handle(m)
			if r == nil {
				continue
			}
			if r.OpCode != dhcpv4.OpcodeBootReply || r.TransactionID != m.TransactionID {
				t.Fatalf("reply %v to %v: want a boot reply with the same xid", r, m)
			}
			if y, ok := netip.AddrFromSlice(r.YourIPAddr.To4()); ok && !y.IsUnspecified() && !lanAddr.Masked().Contains(y) {
				t.Fatalf("offered %s outside the LAN", y)
			}
			if _, err := dhcpv4.FromBytes(r.ToBytes()); err != nil {
				t.Fatalf("reply does not parse back: %v", err)
			}
		}
		for _, l := range s.Leases() {
			if SanitizeHostname(l.Hostname) != l.Hostname {
				t.Fatalf("lease host name %q is not a DNS label", l.Hostname)
			}
		}
	})
}

// FuzzParseLeaseFile: no panic; what parses has valid MACs, IPv4 addresses and DNS-label names.
func FuzzParseLeaseFile(f *testing.F) {
	f.Add([]byte(`{"version":1,"leases":[{"mac":"02:00:00:00:00:01","ip":"192.168.1.100","hostname":"phone","expires":"2026-05-01T12:00:00Z"}]}`))
	f.Add([]byte(`{"version":1,"leases":[]}`))
	f.Add([]byte(`{"version":2}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ls, err := ParseLeaseFile(b)
		if err != nil {
			return
		}
		for _, l := range ls {
			if _, err := net.ParseMAC(l.MAC); err != nil || !l.IP.Is4() || SanitizeHostname(l.Hostname) != l.Hostname {
				t.Fatalf("accepted lease %+v", l)
			}
		}
	})
}
