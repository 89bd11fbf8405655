package tunnel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"meshroot/vpn/esp"
)

// LinuxHost is the Host of a Linux network namespace. With Enter nil every call runs in the
// calling thread's namespace (the device's). Tests set Enter to lab's NS.Do, which runs each
// call on a thread inside a lab namespace: sockets, TUN devices and addresses made there
// stay there.
type LinuxHost struct {
	Enter func(fn func() error) error
}

func (h LinuxHost) do(fn func() error) error {
	if h.Enter == nil {
		return fn()
	}
	return h.Enter(fn)
}

// ListenUDP implements Host. The IKE port gets plain batched I/O (no GSO/GRO: IKE messages
// are few and of all sizes); the NAT-T port everything vpn/esp wants.
func (h LinuxHost) ListenUDP(addr netip.AddrPort, natt bool) (esp.PacketConn, error) {
	var c esp.PacketConn
	err := h.do(func() error {
		opts := esp.UDPOptions{}
		if !natt {
			opts = esp.UDPOptions{DisableGSO: true, DisableGRO: true, SocketBuffer: 1 << 20, RecvBatch: 8}
		}
		var err error
		c, err = esp.ListenUDP(addr, opts)
		return err
	})
	return c, err
}

// CreateTUN implements Host.
func (h LinuxHost) CreateTUN(name string, mtu int) (esp.TUN, error) {
	var t esp.TUN
	err := h.do(func() error {
		var err error
		t, err = esp.CreateTUN(name, mtu)
		return err
	})
	return t, err
}

// SetupLink implements Host: the addresses (IPv6 without duplicate address detection, which
// a point-to-point TUN does not need and which would hold the address back for a second),
// no IPv6 link-local address, router solicitations or autoconfiguration, and no multicast
// (MLD reports would be the only traffic of an idle tunnel, and look like data to its
// liveness check), then link up.
func (h LinuxHost) SetupLink(name string, addrs []netip.Prefix) error {
	return h.do(func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return fmt.Errorf("link %s: %w", name, err)
		}
		for key, v := range map[string]string{"accept_ra": "0", "autoconf": "0", "router_solicitations": "0", "addr_gen_mode": "1"} {
			// Best effort: IPv6 may be disabled on the host.
			_ = os.WriteFile(filepath.Join("/proc/sys/net/ipv6/conf", name, key), []byte(v), 0o644)
		}
		if err := netlink.LinkSetMulticastOff(l); err != nil {
			return fmt.Errorf("link %s: multicast off: %w", name, err)
		}
		for _, p := range addrs {
			a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
			if p.Addr().Is6() {
				a.Flags |= unix.IFA_F_NODAD
			}
			if err := netlink.AddrReplace(l, a); err != nil {
				return fmt.Errorf("link %s: address %s: %w", name, p, err)
			}
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("link %s: up: %w", name, err)
		}
		return nil
	})
}

// SourceFor implements Host with a connected UDP socket: the kernel picks the source address
// by its routing table, and nothing is sent.
func (h LinuxHost) SourceFor(remote netip.Addr) (netip.Addr, error) {
	var src netip.Addr
	err := h.do(func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(remote, 500)))
		if err != nil {
			return err
		}
		defer c.Close()
		a, ok := c.LocalAddr().(*net.UDPAddr)
		if !ok {
			return errors.New("no local address")
		}
		src = a.AddrPort().Addr().Unmap()
		return nil
	})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("source address for %s: %w", remote, err)
	}
	return src, nil
}
