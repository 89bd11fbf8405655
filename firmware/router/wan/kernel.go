package wan

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrNoLink is returned by Kernel.Link for an interface that does not exist.
var ErrNoLink = errors.New("no such interface")

// LinkInfo is what the uplink needs to know about its interface.
type LinkInfo struct {
	Up      bool // administratively up
	Carrier bool // lower layer up (cable in, peer there)
	MAC     net.HardwareAddr
}

// Kernel is the uplink's netlink work. Operations are idempotent.
type Kernel interface {
	Link(name string) (LinkInfo, error)
	SetUp(name string) error
	AddAddr(name string, p netip.Prefix) error
	DelAddr(name string, p netip.Prefix) error
	ReplaceDefaultRoute(name string, gw netip.Addr) error
	DelDefaultRoute(name string) error
}

// Netlink is the real Kernel.
type Netlink struct{}

func link(name string) (netlink.Link, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("link %s: %w", name, ErrNoLink)
		}
		return nil, fmt.Errorf("netlink: link %s: %w", name, err)
	}
	return l, nil
}

// Link reads the link's flags.
func (Netlink) Link(name string) (LinkInfo, error) {
	l, err := link(name)
	if err != nil {
		return LinkInfo{}, err
	}
	a := l.Attrs()
	return LinkInfo{Up: a.Flags&net.FlagUp != 0, Carrier: a.RawFlags&unix.IFF_LOWER_UP != 0, MAC: a.HardwareAddr}, nil
}

// SetUp sets the link up.
func (Netlink) SetUp(name string) error {
	l, err := link(name)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("netlink: set %s up: %w", name, err)
	}
	return nil
}

func nlAddr(p netip.Prefix) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
}

// AddAddr adds (or refreshes) an address.
func (Netlink) AddAddr(name string, p netip.Prefix) error {
	l, err := link(name)
	if err != nil {
		return err
	}
	if err := netlink.AddrReplace(l, nlAddr(p)); err != nil {
		return fmt.Errorf("netlink: add %s to %s: %w", p, name, err)
	}
	return nil
}

// DelAddr removes an address (no error when it is gone).
func (Netlink) DelAddr(name string, p netip.Prefix) error {
	l, err := link(name)
	if err != nil {
		return err
	}
	if err := netlink.AddrDel(l, nlAddr(p)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("netlink: remove %s from %s: %w", p, name, err)
	}
	return nil
}

var defaultDst = &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}

// ReplaceDefaultRoute points the IPv4 default route at gw through the interface.
func (Netlink) ReplaceDefaultRoute(name string, gw netip.Addr) error {
	l, err := link(name)
	if err != nil {
		return err
	}
	r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: defaultDst, Gw: gw.AsSlice(), Family: unix.AF_INET, Protocol: unix.RTPROT_DHCP}
	if err := netlink.RouteReplace(r); err != nil {
		return fmt.Errorf("netlink: default via %s dev %s: %w", gw, name, err)
	}
	return nil
}

// DelDefaultRoute removes the IPv4 default route through the interface.
func (Netlink) DelDefaultRoute(name string) error {
	l, err := link(name)
	if err != nil {
		return err
	}
	r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: defaultDst, Family: unix.AF_INET}
	if err := netlink.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("netlink: remove default route dev %s: %w", name, err)
	}
	return nil
}

// FakeKernel is an in-memory Kernel for unit tests.
type FakeKernel struct {
	mu      sync.Mutex
	links   map[string]*fakeLink
	Actions []string
}

type fakeLink struct {
	info  LinkInfo
	addrs []netip.Prefix
	gw    netip.Addr
}

// SetLink adds or changes a link (carrier false: cable unplugged).
func (f *FakeKernel) SetLink(name string, mac net.HardwareAddr, carrier bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.links == nil {
		f.links = map[string]*fakeLink{}
	}
	l := f.links[name]
	if l == nil {
		l = &fakeLink{}
		f.links[name] = l
	}
	l.info.MAC, l.info.Carrier = mac, carrier
}

// Addrs and Gateway return what is configured on a link.
func (f *FakeKernel) Addrs(name string) ([]netip.Prefix, netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.links[name]
	if l == nil {
		return nil, netip.Addr{}
	}
	return slices.Clone(l.addrs), l.gw
}

func (f *FakeKernel) get(name string) (*fakeLink, error) {
	l := f.links[name]
	if l == nil {
		return nil, fmt.Errorf("link %s: %w", name, ErrNoLink)
	}
	return l, nil
}

// Link implements Kernel.
func (f *FakeKernel) Link(name string) (LinkInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := f.get(name)
	if err != nil {
		return LinkInfo{}, err
	}
	return l.info, nil
}

// SetUp implements Kernel.
func (f *FakeKernel) SetUp(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := f.get(name)
	if err != nil {
		return err
	}
	l.info.Up = true
	f.Actions = append(f.Actions, "up "+name)
	return nil
}

// AddAddr implements Kernel.
func (f *FakeKernel) AddAddr(name string, p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := f.get(name)
	if err != nil {
		return err
	}
	if !slices.Contains(l.addrs, p) {
		l.addrs = append(l.addrs, p)
		f.Actions = append(f.Actions, "addr add "+p.String())
	}
	return nil
}

// DelAddr implements Kernel.
func (f *FakeKernel) DelAddr(name string, p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := f.get(name)
	if err != nil {
		return err
	}
	if i := slices.Index(l.addrs, p); i >= 0 {
		l.addrs = slices.Delete(l.addrs, i, i+1)
		f.Actions = append(f.Actions, "addr del "+p.String())
	}
	return nil
}

// ReplaceDefaultRoute implements Kernel.
func (f *FakeKernel) ReplaceDefaultRoute(name string, gw netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := f.get(name)
	if err != nil {
		return err
	}
	if l.gw != gw {
		f.Actions = append(f.Actions, "route default via "+gw.String())
	}
	l.gw = gw
	return nil
}

// DelDefaultRoute implements Kernel.
func (f *FakeKernel) DelDefaultRoute(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := f.get(name)
	if err != nil {
		return err
	}
	if l.gw.IsValid() {
		f.Actions = append(f.Actions, "route del default")
	}
	l.gw = netip.Addr{}
	return nil
}

// DHCP is the DHCPv4 client the uplink uses.
type DHCP interface {
	// Request runs discover/offer/request/ack.
	Request(ctx context.Context, mods ...dhcpv4.Modifier) (*nclient4.Lease, error)
	// Renew asks the lease's server to extend it (RENEWING); Rebind asks any server (REBINDING).
	// A refusal is an *nclient4.ErrNak.
	Renew(ctx context.Context, l *nclient4.Lease, mods ...dhcpv4.Modifier) (*nclient4.Lease, error)
	Rebind(ctx context.Context, l *nclient4.Lease, mods ...dhcpv4.Modifier) (*nclient4.Lease, error)
	Close() error
}

// NewDHCP is the real client: nclient4 on a raw socket of the interface (it works before the
// interface has an address). Renewals are broadcast like every nclient4 message; the lease's
// server identifier selects the answer when renewing, any server's answer counts when rebinding.
func NewDHCP(ifname string, hw net.HardwareAddr) (DHCP, error) {
	c, err := nclient4.New(ifname, nclient4.WithHWAddr(hw), nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
	if err != nil {
		return nil, err
	}
	return Client{c}, nil
}

// Client adapts an nclient4.Client to DHCP (tests build one over an in-memory link with
// nclient4.NewWithConn).
type Client struct{ C *nclient4.Client }

// Request implements DHCP.
func (c Client) Request(ctx context.Context, mods ...dhcpv4.Modifier) (*nclient4.Lease, error) {
	return c.C.Request(ctx, mods...)
}

// Renew implements DHCP.
func (c Client) Renew(ctx context.Context, l *nclient4.Lease, mods ...dhcpv4.Modifier) (*nclient4.Lease, error) {
	return c.C.Renew(ctx, l, mods...)
}

// Rebind implements DHCP.
func (c Client) Rebind(ctx context.Context, l *nclient4.Lease, mods ...dhcpv4.Modifier) (*nclient4.Lease, error) {
	req, err := dhcpv4.NewRenewFromAck(l.ACK, dhcpv4.PrependModifiers(mods,
		dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(nclient4.MaxMessageSize)))...)
	if err != nil {
		return nil, err
	}
	resp, err := c.C.SendAndRead(ctx, c.C.RemoteAddr(), req, nclient4.IsMessageType(dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak))
	if err != nil {
		return nil, err
	}
	if resp.MessageType() == dhcpv4.MessageTypeNak {
		return nil, &nclient4.ErrNak{Offer: l.Offer, Nak: resp}
	}
	return &nclient4.Lease{Offer: l.Offer, ACK: resp, CreationTime: time.Now()}, nil
}

// Close implements DHCP.
func (c Client) Close() error { return c.C.Close() }
