package firmware

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Link is a network interface as the LAN service sees it.
type Link struct {
	Name string
	// Kind is the rtnetlink kind: "device" for a NIC, "bridge", "veth", "tun"...
	Kind string
	// Ethernet is true for a wired Ethernet NIC (ARPHRD_ETHER, not wireless, not virtual).
	Ethernet bool
	Up       bool
	// Master is the name of the bridge the link is enslaved to, or "".
	Master string
}

// Net is the netlink work meshd does. Operations are idempotent: creating what exists, or
// adding an address that is there, is not an error.
type Net interface {
	Links() ([]Link, error)
	SetUp(name string) error
	EnsureBridge(name string) error
	SetMaster(port, bridge string) error
	AddAddr(name string, p netip.Prefix) error
}

// RealNet is Net over rtnetlink (vishvananda/netlink). Root locates /sys for the wireless
// check.
type RealNet struct{ Root string }

// Links lists the interfaces.
func (n RealNet) Links() ([]Link, error) {
	ls, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("netlink: list links: %w", err)
	}
	byIndex := map[int]string{}
	for _, l := range ls {
		byIndex[l.Attrs().Index] = l.Attrs().Name
	}
	var out []Link
	for _, l := range ls {
		a := l.Attrs()
		link := Link{Name: a.Name, Kind: l.Type(), Up: a.Flags&net.FlagUp != 0, Master: byIndex[a.MasterIndex]}
		if link.Kind == "device" && a.EncapType == "ether" {
			_, werr := os.Stat(filepath.Join(n.Root, "sys/class/net", a.Name, "wireless"))
			_, perr := os.Stat(filepath.Join(n.Root, "sys/class/net", a.Name, "phy80211"))
			link.Ethernet = werr != nil && perr != nil
		}
		out = append(out, link)
	}
	return out, nil
}

// SetUp sets the link administratively up.
func (RealNet) SetUp(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("netlink: link %s: %w", name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("netlink: set %s up: %w", name, err)
	}
	return nil
}

// EnsureBridge creates the bridge unless it exists.
func (RealNet) EnsureBridge(name string) error {
	if l, err := netlink.LinkByName(name); err == nil {
		if l.Type() != "bridge" {
			return fmt.Errorf("netlink: %s exists and is a %s, not a bridge", name, l.Type())
		}
		return nil
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := netlink.LinkAdd(br); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("netlink: add bridge %s: %w", name, err)
	}
	return nil
}

// SetMaster enslaves port to bridge.
func (RealNet) SetMaster(port, bridge string) error {
	p, err := netlink.LinkByName(port)
	if err != nil {
		return fmt.Errorf("netlink: link %s: %w", port, err)
	}
	b, err := netlink.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("netlink: link %s: %w", bridge, err)
	}
	if p.Attrs().MasterIndex == b.Attrs().Index {
		return nil
	}
	if err := netlink.LinkSetMasterByIndex(p, b.Attrs().Index); err != nil {
		return fmt.Errorf("netlink: set %s master %s: %w", port, bridge, err)
	}
	return nil
}

// AddAddr adds the address unless it is there.
func (RealNet) AddAddr(name string, p netip.Prefix) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("netlink: link %s: %w", name, err)
	}
	ipn := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
	if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: ipn}); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("netlink: add %s to %s: %w", p, name, err)
	}
	return nil
}

// FakeNet is an in-memory Net for tests. Add links with AddLink; Fail makes an operation on a
// link name fail.
type FakeNet struct {
	mu    sync.Mutex
	links map[string]*fakeLink
	order []string
	Fail  map[string]error
}

type fakeLink struct {
	Link
	addrs []netip.Prefix
}

// AddLink adds (or replaces) a link, as a NIC appearing.
func (f *FakeNet) AddLink(l Link) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.links == nil {
		f.links = map[string]*fakeLink{}
	}
	if _, ok := f.links[l.Name]; !ok {
		f.order = append(f.order, l.Name)
	}
	f.links[l.Name] = &fakeLink{Link: l}
}

// Link returns a link and its addresses.
func (f *FakeNet) Link(name string) (Link, []netip.Prefix, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.links[name]
	if !ok {
		return Link{}, nil, false
	}
	return l.Link, slices.Clone(l.addrs), true
}

func (f *FakeNet) get(name string) (*fakeLink, error) {
	if err := f.Fail[name]; err != nil {
		return nil, err
	}
	l, ok := f.links[name]
	if !ok {
		return nil, fmt.Errorf("link %s: %w", name, unix.ENODEV)
	}
	return l, nil
}

// Links lists the links in the order they were added.
func (f *FakeNet) Links() ([]Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Link
	for _, n := range f.order {
		out = append(out, f.links[n].Link)
	}
	return out, nil
}

// SetUp marks the link up.
func (f *FakeNet) SetUp(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := f.get(name)
	if err != nil {
		return err
	}
	l.Up = true
	return nil
}

// EnsureBridge creates a bridge link.
func (f *FakeNet) EnsureBridge(name string) error {
	f.mu.Lock()
	if err := f.Fail[name]; err != nil {
		f.mu.Unlock()
		return err
	}
	if l, ok := f.links[name]; ok {
		f.mu.Unlock()
		if l.Kind != "bridge" {
			return fmt.Errorf("%s is not a bridge", name)
		}
		return nil
	}
	f.mu.Unlock()
	f.AddLink(Link{Name: name, Kind: "bridge"})
	return nil
}

// SetMaster enslaves port to bridge.
func (f *FakeNet) SetMaster(port, bridge string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, err := f.get(port)
	if err != nil {
		return err
	}
	b, err := f.get(bridge)
	if err != nil {
		return err
	}
	if b.Kind != "bridge" {
		return fmt.Errorf("%s is not a bridge", bridge)
	}
	p.Master = bridge
	return nil
}

// AddAddr adds an address once.
func (f *FakeNet) AddAddr(name string, p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := f.get(name)
	if err != nil {
		return err
	}
	if !slices.Contains(l.addrs, p) {
		l.addrs = append(l.addrs, p)
	}
	return nil
}
