//go:build linux

package backhaul

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// LinuxNet is the real Net: UDP sockets bound to each port (SO_BINDTODEVICE, broadcast on),
// carrier from the interface's lower-up flag, and the backhaul route (Dst via the chosen next
// hop) in the main table, through a route netlink handle.
type LinuxNet struct {
	// H is the netlink handle (nil: the current network namespace).
	H *netlink.Handle
	// Dst is the gateway-side prefix the backhaul carries (the gateway's LAN).
	Dst *net.IPNet
	// Mbps estimates a link's throughput (nil or 0: the port's configured value).
	Mbps func(iface string) float64
}

func (n *LinuxNet) handle() *netlink.Handle {
	if n.H == nil {
		return &netlink.Handle{}
	}
	return n.H
}

// Listen implements Net. The socket belongs to the calling thread's network namespace.
func (n *LinuxNet) Listen(iface string, port int) (net.PacketConn, error) {
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			for _, o := range []int{unix.SO_REUSEADDR, unix.SO_BROADCAST} {
				if serr == nil {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o, 1)
				}
			}
			if serr == nil {
				serr = unix.BindToDevice(int(fd), iface)
			}
		})
		return errors.Join(err, serr)
	}}
	return lc.ListenPacket(context.Background(), "udp4", net.JoinHostPort("", strconv.Itoa(port)))
}

// Carrier implements Net.
func (n *LinuxNet) Carrier(iface string) (bool, error) {
	l, err := n.handle().LinkByName(iface)
	if err != nil {
		return false, err
	}
	return l.Attrs().RawFlags&unix.IFF_LOWER_UP != 0 && l.Attrs().Flags&net.FlagUp != 0, nil
}

// LinkMbps implements Net.
func (n *LinuxNet) LinkMbps(iface string) float64 {
	if n.Mbps == nil {
		return 0
	}
	return n.Mbps(iface)
}

// Use implements Net: replace (or delete) the route to Dst.
func (n *LinuxNet) Use(iface string, nextHop net.IP) error {
	h := n.handle()
	if nextHop == nil {
		err := h.RouteDel(&netlink.Route{Dst: n.Dst})
		if err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("backhaul: delete route %s: %w", n.Dst, err)
		}
		return nil
	}
	l, err := h.LinkByName(iface)
	if err != nil {
		return fmt.Errorf("backhaul: %s: %w", iface, err)
	}
	if err := h.RouteReplace(&netlink.Route{Dst: n.Dst, Gw: nextHop, LinkIndex: l.Attrs().Index}); err != nil {
		return fmt.Errorf("backhaul: route %s via %s dev %s: %w", n.Dst, nextHop, iface, err)
	}
	return nil
}
