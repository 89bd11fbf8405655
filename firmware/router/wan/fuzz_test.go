package wan

import (
	"net"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
)

// FuzzBind applies arbitrary DHCP acknowledgements from the ISP (outside input): no panic; an
// applied lease has an IPv4 address, lease times in order, and the kernel holds what the state
// says.
func FuzzBind(f *testing.F) {
	ack, _ := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeAck), dhcpv4.WithYourIP(net.IPv4(100, 64, 0, 100)),
		dhcpv4.WithNetmask(net.CIDRMask(24, 32)), dhcpv4.WithOption(dhcpv4.OptRouter(net.IPv4(100, 64, 0, 1))),
		dhcpv4.WithOption(dhcpv4.OptDNS(net.IPv4(100, 64, 0, 53))), dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(time.Hour)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(100, 64, 0, 1))))
	f.Add(ack.ToBytes())
	odd, _ := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeAck), dhcpv4.WithYourIP(net.IPv4(10, 0, 0, 5)),
		dhcpv4.WithNetmask(net.IPMask{255, 0, 255, 0}), dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(2*time.Hour)),
		dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(time.Second)))
	f.Add(odd.ToBytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		k := &FakeKernel{}
		k.SetLink("eth0", wanMAC, true)
		s, _ := New(Config{Interface: "eth0", Kernel: k})
		if err := s.bind(&nclient4.Lease{ACK: m, Offer: m, CreationTime: time.Now()}); err != nil {
			return
		}
		st := s.State()
		if !st.Address.Addr().Is4() || !st.Address.IsValid() {
			t.Fatalf("bound to %v", st.Address)
		}
		if !st.Renew.Before(st.Rebind) || !st.Rebind.Before(st.LeaseExpires) {
			t.Fatalf("times: renew %v rebind %v expires %v", st.Renew, st.Rebind, st.LeaseExpires)
		}
		addrs, _ := k.Addrs("eth0")
		if len(addrs) != 1 || addrs[0] != st.Address {
			t.Fatalf("kernel %v; state %v", addrs, st.Address)
		}
	})
}
