package tunnel

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"meshroot/vpn/esp"
)

// FakeHost is a Host in memory, for unit tests: its sockets live on an esp.FakeNetwork shared
// with other FakeHosts (the "internet"), its TUN devices are esp.FakeTUNs that a test feeds and
// drains, and addresses are only recorded.
type FakeHost struct {
	net   *esp.FakeNetwork
	local netip.Addr

	mu    sync.Mutex
	tuns  map[string]*esp.FakeTUN
	addrs map[string][]netip.Prefix
	up    map[string]bool
}

// NewFakeHost returns a host whose outside address is local on network n.
func NewFakeHost(n *esp.FakeNetwork, local netip.Addr) *FakeHost {
	return &FakeHost{net: n, local: local, tuns: map[string]*esp.FakeTUN{}, addrs: map[string][]netip.Prefix{}, up: map[string]bool{}}
}

// ListenUDP implements Host.
func (h *FakeHost) ListenUDP(addr netip.AddrPort, natt bool) (esp.PacketConn, error) {
	c, err := h.net.Listen(addr)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// CreateTUN implements Host.
func (h *FakeHost) CreateTUN(name string, mtu int) (esp.TUN, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.tuns[name]; ok {
		return nil, fmt.Errorf("fake tun %s: exists", name)
	}
	t := esp.NewFakeTUN(mtu, 32)
	h.tuns[name] = t
	return &fakeTUN{FakeTUN: t, h: h, name: name}, nil
}

// SetupLink implements Host.
func (h *FakeHost) SetupLink(name string, addrs []netip.Prefix) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.tuns[name]; !ok {
		return fmt.Errorf("fake link %s: no such device", name)
	}
	h.addrs[name] = slices.Clone(addrs)
	h.up[name] = true
	return nil
}

// SourceFor implements Host.
func (h *FakeHost) SourceFor(remote netip.Addr) (netip.Addr, error) {
	if h.local.Is4() != remote.Is4() {
		return netip.Addr{}, fmt.Errorf("fake host: no route to %s", remote)
	}
	return h.local, nil
}

// TUN returns the device name (nil when it does not exist, e.g. after its tunnel closed).
func (h *FakeHost) TUN(name string) *esp.FakeTUN {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.tuns[name]
}

// Addrs returns the addresses SetupLink put on a device, and whether it is up.
func (h *FakeHost) Addrs(name string) ([]netip.Prefix, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.addrs[name]), h.up[name]
}

// fakeTUN removes the device from its host when closed, as closing a TUN file does.
type fakeTUN struct {
	*esp.FakeTUN
	h    *FakeHost
	name string
}

func (t *fakeTUN) Close() error {
	t.h.mu.Lock()
	delete(t.h.tuns, t.name)
	delete(t.h.addrs, t.name)
	delete(t.h.up, t.name)
	t.h.mu.Unlock()
	return t.FakeTUN.Close()
}
