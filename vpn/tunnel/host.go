package tunnel

import (
	"net/netip"

	"meshroot/vpn/esp"
)

// Host is the kernel as the tunnel layer needs it: UDP sockets, TUN devices, interface
// addresses and source-address selection. LinuxHost is the real one (optionally entering a
// network namespace for every call); FakeHost runs tunnels in memory for unit tests.
type Host interface {
	// ListenUDP opens a batched UDP socket on addr: the NAT-T port (natt, carrying ESP) or the
	// IKE port of a local address.
	ListenUDP(addr netip.AddrPort, natt bool) (esp.PacketConn, error)
	// CreateTUN creates the TUN device name with the given MTU.
	CreateTUN(name string, mtu int) (esp.TUN, error)
	// SetupLink puts addrs (our inside addresses with their prefix lengths) on the link and
	// brings it up.
	SetupLink(name string, addrs []netip.Prefix) error
	// SourceFor returns the local address the host would send from to reach remote (no packet
	// is sent).
	SourceFor(remote netip.Addr) (netip.Addr, error)
}
