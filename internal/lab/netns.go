package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NS is a network namespace created by a Lab (`ip netns add`, so `ip netns exec NAME ...` works
// for debugging). Its methods are safe for concurrent use.
type NS struct {
	// Name is the full, unique namespace name (Prefix-name-suffix), as `ip netns list` shows it.
	Name string

	short  string // the name passed to NewNS
	lab    *Lab
	mu     sync.Mutex // guards h
	h      *netlink.Handle
	handle netns.NsHandle
}

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_-]*$`)

// NewNS creates a namespace named Prefix-name-XXXXXX with loopback up and lab-friendly sysctls:
// IPv4 and IPv6 forwarding on, rp_filter off, IPv6 DAD off (addresses are usable at once).
// Close deletes it (after stopping the lab's processes).
func (l *Lab) NewNS(name string) (*NS, error) {
	if !nameRE.MatchString(name) || len(name) > 20 {
		return nil, fmt.Errorf("lab: namespace name %q: want 1-20 of [a-zA-Z0-9_-]", name)
	}
	full := l.prefix + "-" + name + "-" + randSuffix(6)
	if out, err := exec.Command("ip", "netns", "add", full).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("lab: ip netns add %s: %v: %s", full, err, strings.TrimSpace(string(out)))
	}
	ns := &NS{Name: full, short: name, lab: l}
	l.onClose("netns "+full, ns.delete)
	var err error
	ns.handle, err = netns.GetFromName(full)
	if err != nil {
		return nil, fmt.Errorf("lab: netns %s: %w", full, err)
	}
	ns.h, err = netlink.NewHandleAt(ns.handle)
	if err != nil {
		return nil, fmt.Errorf("lab: netns %s: netlink handle: %w", full, err)
	}
	l.mu.Lock()
	l.nss = append(l.nss, ns)
	l.mu.Unlock()
	if err := ns.Sysctls(defaultSysctls); err != nil {
		return nil, err
	}
	if err := ns.LinkUp("lo"); err != nil {
		return nil, err
	}
	l.log.Debug("netns created", "ns", full)
	return ns, nil
}

var defaultSysctls = map[string]string{
	"net.ipv4.ip_forward":                     "1",
	"net.ipv4.conf.all.rp_filter":             "0",
	"net.ipv4.conf.default.rp_filter":         "0",
	"net.ipv6.conf.all.forwarding":            "1",
	"net.ipv6.conf.default.forwarding":        "1",
	"net.ipv6.conf.all.accept_dad":            "0",
	"net.ipv6.conf.default.accept_dad":        "0",
	"net.ipv6.conf.default.accept_ra":         "0",
	"net.ipv6.conf.all.keep_addr_on_down":     "1", // LinkDown must not flush IPv6 addresses
	"net.ipv6.conf.default.keep_addr_on_down": "1",
	"net.ipv4.ping_group_range":               "0 2147483647",
}

func (ns *NS) delete() error {
	ns.mu.Lock()
	if ns.h != nil {
		ns.h.Close()
		ns.h = nil
	}
	if ns.handle.IsOpen() {
		ns.handle.Close()
	}
	ns.mu.Unlock()
	var lastErr error
	for i := 0; i < 20; i++ {
		out, err := exec.Command("ip", "netns", "del", ns.Name).CombinedOutput()
		if err == nil {
			return nil
		}
		if _, serr := os.Stat(filepath.Join("/run/netns", ns.Name)); os.IsNotExist(serr) {
			return nil
		}
		lastErr = fmt.Errorf("ip netns del %s: %v: %s", ns.Name, err, strings.TrimSpace(string(out)))
		time.Sleep(100 * time.Millisecond) // EBUSY while a process is still leaving
	}
	return lastErr
}

func (ns *NS) shortName() string { return ns.short }

// String returns the namespace name.
func (ns *NS) String() string { return ns.Name }

// Handle returns the namespace's netlink handle, for netlink calls this package does not wrap.
// Do not Close it.
func (ns *NS) Handle() *netlink.Handle { return ns.h }

// Do runs fn on an OS thread that has entered the namespace, and waits for it. Sockets, TUN
// devices and netlink handles that fn creates belong to the namespace and stay there after Do
// returns. Caveat: only fn's own goroutine runs in the namespace; goroutines fn starts run on
// other threads in the test process's namespace, so create the sockets inside fn and hand them
// to the goroutines. The thread is discarded afterwards (never returned to Go's pool).
func (ns *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread dies with this goroutine, so it can never run other
		// goroutines in the wrong namespace.
		if err := unix.Setns(int(ns.handle), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("lab: setns %s: %w", ns.Name, err)
			return
		}
		defer func() {
			if r := recover(); r != nil {
				errc <- fmt.Errorf("lab: panic in %s: %v", ns.Name, r)
			}
		}()
		errc <- fn()
	}()
	return <-errc
}

// Command returns a command that runs name inside the namespace (`ip netns exec`). Start it
// yourself, or use NS.Start for a tracked, logged process.
func (ns *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// CommandContext is Command with a context.
func (ns *NS) CommandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Run runs a short command inside the namespace and returns its combined output; the error
// includes the output.
func (ns *NS) Run(name string, args ...string) (string, error) {
	out, err := ns.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %s %s: %w: %s", ns.Name, name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Sysctl sets one sysctl (dotted name, e.g. "net.ipv4.ip_forward") inside the namespace.
func (ns *NS) Sysctl(key, value string) error {
	return ns.Sysctls(map[string]string{key: value})
}

// Sysctls sets several sysctls inside the namespace.
func (ns *NS) Sysctls(kv map[string]string) error {
	return ns.Do(func() error {
		for k, v := range kv {
			if strings.Contains(k, "..") || strings.ContainsAny(k, "/ ") {
				return fmt.Errorf("lab: sysctl %q: bad name", k)
			}
			p := "/proc/sys/" + strings.ReplaceAll(k, ".", "/")
			if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
				return fmt.Errorf("lab: %s: sysctl %s=%s: %w", ns.Name, k, v, err)
			}
		}
		return nil
	})
}

// ReadSysctl reads one sysctl inside the namespace.
func (ns *NS) ReadSysctl(key string) (string, error) {
	var v string
	err := ns.Do(func() error {
		b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(key, ".", "/"))
		v = strings.TrimSpace(string(b))
		return err
	})
	return v, err
}

func (ns *NS) link(name string) (netlink.Link, error) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.h == nil {
		return nil, fmt.Errorf("lab: netns %s is closed", ns.Name)
	}
	l, err := ns.h.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("lab: %s: link %s: %w", ns.Name, name, err)
	}
	return l, nil
}

// HasLink reports whether an interface exists in the namespace.
func (ns *NS) HasLink(name string) bool {
	_, err := ns.link(name)
	return err == nil
}

// WaitLink waits until an interface exists in the namespace (e.g. charon's ipsec0).
func (ns *NS) WaitLink(ctx context.Context, name string) error {
	for {
		if ns.HasLink(name) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lab: %s: waiting for link %s: %w", ns.Name, name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// LinkUp sets an interface up.
func (ns *NS) LinkUp(name string) error {
	l, err := ns.link(name)
	if err != nil {
		return err
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if err := ns.h.LinkSetUp(l); err != nil {
		return fmt.Errorf("lab: %s: link %s up: %w", ns.Name, name, err)
	}
	return nil
}

// LinkDown sets an interface down (cuts the path through it; addresses stay).
func (ns *NS) LinkDown(name string) error {
	l, err := ns.link(name)
	if err != nil {
		return err
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if err := ns.h.LinkSetDown(l); err != nil {
		return fmt.Errorf("lab: %s: link %s down: %w", ns.Name, name, err)
	}
	return nil
}

// SetMTU sets an interface's MTU.
func (ns *NS) SetMTU(name string, mtu int) error {
	l, err := ns.link(name)
	if err != nil {
		return err
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if err := ns.h.LinkSetMTU(l, mtu); err != nil {
		return fmt.Errorf("lab: %s: link %s mtu %d: %w", ns.Name, name, mtu, err)
	}
	return nil
}

// AddAddr adds addresses in CIDR form ("10.0.0.1/24", "fd00::1/64") to an interface. IPv6
// addresses are added with NODAD, so they are usable immediately.
func (ns *NS) AddAddr(ifname string, cidrs ...string) error {
	l, err := ns.link(ifname)
	if err != nil {
		return err
	}
	for _, c := range cidrs {
		a, err := netlink.ParseAddr(c)
		if err != nil {
			return fmt.Errorf("lab: %s: address %q: %w", ns.Name, c, err)
		}
		if a.IP.To4() == nil {
			a.Flags |= unix.IFA_F_NODAD
		}
		ns.mu.Lock()
		err = ns.h.AddrAdd(l, a)
		ns.mu.Unlock()
		if err != nil {
			return fmt.Errorf("lab: %s: add %s to %s: %w", ns.Name, c, ifname, err)
		}
	}
	return nil
}

// DelAddr removes addresses (CIDR form) from an interface.
func (ns *NS) DelAddr(ifname string, cidrs ...string) error {
	l, err := ns.link(ifname)
	if err != nil {
		return err
	}
	for _, c := range cidrs {
		a, err := netlink.ParseAddr(c)
		if err != nil {
			return fmt.Errorf("lab: %s: address %q: %w", ns.Name, c, err)
		}
		ns.mu.Lock()
		err = ns.h.AddrDel(l, a)
		ns.mu.Unlock()
		if err != nil {
			return fmt.Errorf("lab: %s: del %s from %s: %w", ns.Name, c, ifname, err)
		}
	}
	return nil
}

// Addrs lists an interface's addresses in CIDR form.
func (ns *NS) Addrs(ifname string) ([]string, error) {
	l, err := ns.link(ifname)
	if err != nil {
		return nil, err
	}
	ns.mu.Lock()
	as, err := ns.h.AddrList(l, netlink.FAMILY_ALL)
	ns.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("lab: %s: addrs of %s: %w", ns.Name, ifname, err)
	}
	var out []string
	for _, a := range as {
		out = append(out, a.IPNet.String())
	}
	return out, nil
}

// Route is a route to add in a namespace. Dst is a prefix ("10.0.0.0/16", "default" or
// "default6"); Via is a gateway address (optional when Dev is set); Dev an interface name.
type Route struct {
	Dst    string
	Via    string
	Dev    string
	Src    string // preferred source address (optional)
	Metric int
	Table  int // 0: main
}

// AddRoute adds (or replaces) a route.
func (ns *NS) AddRoute(r Route) error {
	nr, err := ns.toNetlinkRoute(r)
	if err != nil {
		return err
	}
	ns.mu.Lock()
	err = ns.h.RouteReplace(nr)
	ns.mu.Unlock()
	if err != nil {
		return fmt.Errorf("lab: %s: route %+v: %w", ns.Name, r, err)
	}
	return nil
}

// DelRoute deletes a route.
func (ns *NS) DelRoute(r Route) error {
	nr, err := ns.toNetlinkRoute(r)
	if err != nil {
		return err
	}
	ns.mu.Lock()
	err = ns.h.RouteDel(nr)
	ns.mu.Unlock()
	if err != nil {
		return fmt.Errorf("lab: %s: del route %+v: %w", ns.Name, r, err)
	}
	return nil
}

func (ns *NS) toNetlinkRoute(r Route) (*netlink.Route, error) {
	nr := &netlink.Route{Priority: r.Metric, Table: r.Table}
	switch r.Dst {
	case "default", "0.0.0.0/0", "":
		_, nr.Dst, _ = net.ParseCIDR("0.0.0.0/0")
	case "default6", "::/0":
		_, nr.Dst, _ = net.ParseCIDR("::/0")
	default:
		p, err := netip.ParsePrefix(r.Dst)
		if err != nil {
			return nil, fmt.Errorf("lab: %s: route dst %q: %w", ns.Name, r.Dst, err)
		}
		p = p.Masked()
		nr.Dst = &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
	}
	if r.Via != "" {
		a, err := netip.ParseAddr(r.Via)
		if err != nil {
			return nil, fmt.Errorf("lab: %s: route via %q: %w", ns.Name, r.Via, err)
		}
		nr.Gw = a.AsSlice()
	}
	if r.Src != "" {
		a, err := netip.ParseAddr(r.Src)
		if err != nil {
			return nil, fmt.Errorf("lab: %s: route src %q: %w", ns.Name, r.Src, err)
		}
		nr.Src = a.AsSlice()
	}
	if r.Dev != "" {
		l, err := ns.link(r.Dev)
		if err != nil {
			return nil, err
		}
		nr.LinkIndex = l.Attrs().Index
	}
	if r.Via == "" && r.Dev == "" {
		return nil, fmt.Errorf("lab: %s: route %s: want Via or Dev", ns.Name, r.Dst)
	}
	return nr, nil
}

// Veth creates a veth pair: interface aName in a and bName in b (a and b may be the same
// namespace, e.g. for a LAN stub), both up. Interface names are at most 15 characters; they only
// need to be unique inside their namespace.
func (l *Lab) Veth(a *NS, aName string, b *NS, bName string) error {
	if err := checkIfName(aName); err != nil {
		return err
	}
	if err := checkIfName(bName); err != nil {
		return err
	}
	if a == b && aName == bName {
		return fmt.Errorf("lab: veth %s: both ends have the same name in %s", aName, a.Name)
	}
	v := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: aName},
		PeerName:      bName,
		PeerNamespace: netlink.NsFd(int(b.handle)),
	}
	a.mu.Lock()
	err := a.h.LinkAdd(v)
	a.mu.Unlock()
	if err != nil {
		return fmt.Errorf("lab: veth %s/%s <-> %s/%s: %w", a.Name, aName, b.Name, bName, err)
	}
	if err := a.LinkUp(aName); err != nil {
		return err
	}
	return b.LinkUp(bName)
}

func checkIfName(n string) error {
	if n == "" || len(n) > 15 || strings.ContainsAny(n, "/ \t\n:") {
		return fmt.Errorf("lab: interface name %q: want 1-15 characters without '/', ':' or spaces", n)
	}
	return nil
}

// Ping sends count pings (0.2 s apart, 1 s deadline each) from the namespace; src may be empty
// or a source address. It returns an error unless every ping is answered.
func (ns *NS) Ping(src, dst string, count int) error {
	args := []string{"-n", "-q", "-c", fmt.Sprint(count), "-i", "0.2", "-W", "1"}
	if src != "" {
		args = append(args, "-I", src)
	}
	args = append(args, dst)
	out, err := ns.Run("ping", args...)
	if err != nil {
		return err
	}
	if !strings.Contains(out, " 0% packet loss") {
		return fmt.Errorf("%s: ping %s -> %s: %s", ns.Name, src, dst, strings.TrimSpace(out))
	}
	return nil
}

// WaitPing pings once per attempt until a ping is answered or ctx ends.
func (ns *NS) WaitPing(ctx context.Context, src, dst string) error {
	var last error
	for {
		if last = ns.Ping(src, dst, 1); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(fmt.Errorf("lab: %s: waiting for ping %s -> %s: %w", ns.Name, src, dst, ctx.Err()), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// AddBridge creates a Linux bridge in the namespace and sets it up.
func (ns *NS) AddBridge(name string) error {
	if err := checkIfName(name); err != nil {
		return err
	}
	ns.mu.Lock()
	err := ns.h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}})
	ns.mu.Unlock()
	if err != nil {
		return fmt.Errorf("lab: %s: bridge %s: %w", ns.Name, name, err)
	}
	return ns.LinkUp(name)
}

// SetMaster enslaves interface dev to bridge br (both in the namespace).
func (ns *NS) SetMaster(dev, br string) error {
	d, err := ns.link(dev)
	if err != nil {
		return err
	}
	b, err := ns.link(br)
	if err != nil {
		return err
	}
	ns.mu.Lock()
	err = ns.h.LinkSetMaster(d, b)
	ns.mu.Unlock()
	if err != nil {
		return fmt.Errorf("lab: %s: %s master %s: %w", ns.Name, dev, br, err)
	}
	return nil
}

// SweepNamespaces removes namespaces left behind by a crashed lab that used Options.Prefix
// prefix: it SIGKILLs the processes inside each (`ip netns pids`) and deletes the namespace. It
// refuses the default prefix "mr", which concurrently running tests share; give long-lived labs
// (`make run`, cmd/mrlab) their own prefix and sweep it before Open. It returns the names
// removed.
func SweepNamespaces(prefix string) ([]string, error) {
	if prefix == "" || prefix == "mr" || !nameRE.MatchString(prefix) {
		return nil, fmt.Errorf("lab: sweep: prefix %q: want a dedicated prefix (not \"mr\")", prefix)
	}
	ents, err := os.ReadDir("/run/netns")
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lab: sweep: %w", err)
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, prefix+"-") {
			continue
		}
		out, err := exec.Command("ip", "netns", "pids", name).Output()
		if err == nil {
			for _, f := range strings.Fields(string(out)) {
				var pid int
				if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 {
					_ = unix.Kill(pid, unix.SIGKILL)
				}
			}
		}
		ns := &NS{Name: name}
		if err := ns.delete(); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, name)
	}
	return removed, errors.Join(errs...)
}

// AddTap creates a persistent TAP interface in the namespace (for QEMU's
// `-netdev tap,id=...,ifname=NAME,script=no,downscript=no`, run inside the namespace with
// NS.Start). It goes away with the namespace.
func (ns *NS) AddTap(name string) error {
	if err := checkIfName(name); err != nil {
		return err
	}
	return ns.Do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("lab: %s: tap %s: %w", ns.Name, name, err)
		}
		defer unix.Close(fd)
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return fmt.Errorf("lab: %s: tap %s: %w", ns.Name, name, err)
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			return fmt.Errorf("lab: %s: tap %s: TUNSETIFF: %w", ns.Name, name, err)
		}
		if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
			return fmt.Errorf("lab: %s: tap %s: TUNSETPERSIST: %w", ns.Name, name, err)
		}
		return nil
	})
}
