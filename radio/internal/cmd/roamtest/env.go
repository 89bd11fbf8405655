package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mdlayher/genetlink"
	mdnetlink "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"meshroot/radio/hostapd"
	"meshroot/radio/internal/vmkit/guest"
	"meshroot/radio/medium"
	"meshroot/radio/nl80211"
)

// The guest's radios (mac80211_hwsim radios=8, created in this order).
const (
	numRadios = 8
	radioA    = 0 // node A's AP (the gateway)
	radioB    = 1 // node B's AP
	radioC    = 2 // node C's AP
	radioSTA1 = 3 // a station with 802.11k/v/r (wpa_supplicant)
	radioSTA2 = 4 // a station with BSS transition management disabled
	radioMesh = 5 // node A's 802.11s backhaul radio
	radioMshB = 6 // node B's 802.11s backhaul radio
	radioSpr  = 7 // spare
)

func wlan(i int) string { return "wlan" + strconv.Itoa(i) }
func phy(i int) string  { return "phy" + strconv.Itoa(i) }

// env is the guest: radios, medium, daemons and namespaces, torn down in reverse order.
type env struct {
	rep      *reporter
	verbose  bool
	roamDiag int // diagnostic roams per benchmark series

	nl    nl80211.Client
	space *medium.Space
	med   *medium.Medium
	start time.Time

	rs *roamSite // the roaming scenarios' site, set up on first use

	mu      sync.Mutex
	taps    []medium.FrameEvent
	tapOn   bool
	cleanup []func()
}

func (e *env) defer_(f func()) { e.cleanup = append(e.cleanup, f) }

func (e *env) teardown() {
	for i := len(e.cleanup) - 1; i >= 0; i-- {
		e.cleanup[i]()
	}
	e.cleanup = nil
}

// modprobe loads a module with meshroot's modprobe (beside meshd).
func modprobe(ctx context.Context, args ...string) error {
	bin := "/bin/modprobe"
	if _, err := os.Stat(bin); err != nil {
		if p, err := exec.LookPath("modprobe"); err == nil {
			bin = p
		}
	}
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("modprobe %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// poll runs f every 100 ms until it returns nil or the timeout passes.
func poll(ctx context.Context, timeout time.Duration, f func() error) error {
	return guest.Poll(ctx, timeout, 100*time.Millisecond, f)
}

func (e *env) setup(ctx context.Context) error {
	t := time.Now()
	for _, d := range []string{"/var/run/hostapd", "/var/run/wpa_supplicant", "/tmp"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	err := modprobe(ctx, "mac80211_hwsim", "radios="+strconv.Itoa(numRadios))
	// The crypto mac80211 requests when keys are installed (no modprobe helper here).
	for _, mod := range []string{"veth", "ctr", "ccm", "cmac", "gcm", "ghash_generic"} {
		if err == nil {
			err = modprobe(ctx, mod)
		}
	}
	e.rep.Report("modprobe", t, err, "")
	if err != nil {
		return err
	}
	e.nl, err = nl80211.Open()
	if err != nil {
		return err
	}
	e.defer_(func() { e.nl.Close() })
	t = time.Now()
	err = poll(ctx, 20*time.Second, func() error {
		ifs, err := e.nl.Interfaces()
		if err != nil {
			return err
		}
		have := map[string]int{}
		for _, i := range ifs {
			have[i.Name] = i.PHY
		}
		for r := 0; r < numRadios; r++ {
			p, ok := have[wlan(r)]
			if !ok || p != r {
				return fmt.Errorf("%s on phy%d (present %v)", wlan(r), p, ok)
			}
		}
		return nil
	})
	if err == nil {
		// US: 36-48 and 149-165 usable without radar detection.
		err = e.nl.SetCountry("US")
	}
	if err == nil {
		err = poll(ctx, 20*time.Second, func() error {
			c, err := e.nl.Country()
			if err != nil || c != "US" {
				return fmt.Errorf("country %q, %v", c, err)
			}
			return nil
		})
	}
	e.rep.Report("radios", t, err, fmt.Sprintf("%d hwsim radios wlan0..wlan%d on phy0..phy%d", numRadios, numRadios-1, numRadios-1))
	if err != nil {
		return err
	}

	// The medium: every radio placed; stations are moved by the scenarios.
	t = time.Now()
	e.space = medium.NewSpace()
	e.space.Place(phy(radioA), medium.Pos{X: 0})
	e.space.Place(phy(radioB), medium.Pos{X: 15})
	e.space.Place(phy(radioC), medium.Pos{X: 30})
	e.space.Place(phy(radioSTA1), medium.Pos{X: 2, Y: 2})
	e.space.Place(phy(radioSTA2), medium.Pos{X: 2, Y: -2})
	e.space.Place(phy(radioMesh), medium.Pos{X: 0, Y: 1})
	e.space.Place(phy(radioMshB), medium.Pos{X: 15, Y: 1})
	e.space.Place(phy(radioSpr), medium.Pos{X: 100, Y: 100})
	k, err := medium.OpenKernel()
	if err != nil {
		e.rep.Report("medium", t, err, "")
		return err
	}
	e.start = time.Now()
	e.med, err = medium.New(k, medium.Config{Model: e.space, Seed: 1, Tap: e.tap,
		TapRadios: []string{phy(radioSTA1), phy(radioSTA2), phy(radioA), phy(radioB), phy(radioC)},
		Log:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return err
	}
	mctx, mcancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- e.med.Run(mctx, func() { close(ready) }) }()
	select {
	case <-ready:
	case err = <-done:
	case <-time.After(10 * time.Second):
		err = errors.New("medium not registered after 10 s")
	}
	e.defer_(func() {
		mcancel()
		if err := <-done; err != nil {
			e.rep.Note("medium ended: %v", err)
		}
		n := max(e.med.Frames.Load(), 1)
		e.rep.Note("medium: %d frames, %d deliveries, %d acked, %d lost, %d from unknown radios; %v per frame on average, %v at most, over %v",
			e.med.Frames.Load(), e.med.Delivered.Load(), e.med.Acked.Load(), e.med.Lost.Load(), e.med.Unknown.Load(),
			time.Duration(e.med.HandleNanos.Load()/n).Round(time.Microsecond), time.Duration(e.med.MaxHandleNanos.Load()).Round(time.Microsecond),
			time.Since(e.start).Round(time.Second))
	})
	e.rep.Report("medium", t, err, fmt.Sprintf("registered with mac80211_hwsim; radios %v", e.med.Radios()))
	return err
}

// tap records the medium's frame events while a scenario wants them.
func (e *env) tap(ev medium.FrameEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.tapOn {
		e.taps = append(e.taps, ev)
	}
}

// recordFrames starts a fresh frame record; takeFrames returns it.
func (e *env) recordFrames() {
	e.mu.Lock()
	e.taps, e.tapOn = nil, true
	e.mu.Unlock()
}

func (e *env) takeFrames() []medium.FrameEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := e.taps
	e.taps = nil
	return out
}

// daemon is a process this program started.
type daemon struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func (d *daemon) stop() {
	if d.cmd.Process == nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

func (d *daemon) tail(n int) string {
	b, _ := os.ReadFile(d.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// grep returns up to n log lines matching the regular expression.
func (d *daemon) grep(expr string, n int) string {
	re := regexp.MustCompile(expr)
	b, _ := os.ReadFile(d.log)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if re.MatchString(l) {
			out = append(out, l)
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return strings.Join(out, " | ")
}

// startDaemon starts bin with args (in network namespace ns when ns >= 0), logging to a file.
func (e *env) startDaemon(name string, ns int, bin string, args ...string) (*daemon, error) {
	logPath := "/tmp/" + name + ".log"
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	d := &daemon{name: name, cmd: exec.Command(bin, args...), log: logPath, done: make(chan struct{})}
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	start := func() error { return d.cmd.Start() }
	if ns >= 0 {
		err = inNS(ns, start)
	} else {
		err = start()
	}
	if err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		_ = d.cmd.Wait()
		logf.Close()
		close(d.done)
	}()
	return d, nil
}

// startHostapd writes cfg and starts hostapd on it, returning an attached control client once
// the AP is enabled.
func (e *env) startHostapd(ctx context.Context, cfg hostapd.Config) (*hostapd.Client, *daemon, error) {
	conf, err := cfg.Render()
	if err != nil {
		return nil, nil, err
	}
	path := "/tmp/hostapd-" + cfg.Interface + ".conf"
	if err := os.WriteFile(path, conf, 0o600); err != nil {
		return nil, nil, err
	}
	args := []string{"-t", path}
	if e.verbose {
		args = []string{"-t", "-d", path}
	}
	d, err := e.startDaemon("hostapd-"+cfg.Interface, -1, "/usr/sbin/hostapd", args...)
	if err != nil {
		return nil, nil, err
	}
	var c *hostapd.Client
	err = poll(ctx, 30*time.Second, func() error {
		var derr error
		c, derr = hostapd.Dial(ctx, filepath.Join(hostapd.DefaultCtrlDir, cfg.Interface), hostapd.Options{})
		return derr
	})
	if err == nil {
		err = c.Attach(ctx)
	}
	if err == nil {
		err = poll(ctx, 30*time.Second, func() error {
			st, err := c.Status(ctx)
			if err != nil {
				return err
			}
			if st.State != "ENABLED" {
				return fmt.Errorf("state %s", st.State)
			}
			return nil
		})
	}
	if err != nil {
		if c != nil {
			c.Close()
		}
		d.stop()
		e.rep.Note("hostapd %s log: %s", cfg.Interface, d.grep("set_key|key addition|failed|Failed|Could not|bridge|rror|alg=", 60))
		return nil, nil, fmt.Errorf("hostapd %s: %w (%s)", cfg.Interface, err, d.tail(8))
	}
	return c, d, nil
}

// supplicant is a wpa_supplicant station.
type supplicant struct {
	iface string
	ns    int
	d     *daemon
	ctrl  *hostapd.Client // the control protocol is hostapd's
}

// startSupplicant starts wpa_supplicant on iface (in namespace ns) with conf.
func (e *env) startSupplicant(ctx context.Context, iface string, ns int, conf string) (*supplicant, error) {
	path := "/tmp/wpas-" + iface + ".conf"
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	args := []string{"-i", iface, "-D", "nl80211", "-c", path, "-t"}
	if e.verbose {
		args = append(args, "-d")
	}
	d, err := e.startDaemon("wpas-"+iface, ns, "/usr/sbin/wpa_supplicant", args...)
	if err != nil {
		return nil, err
	}
	s := &supplicant{iface: iface, ns: ns, d: d}
	err = poll(ctx, 30*time.Second, func() error {
		var derr error
		s.ctrl, derr = hostapd.Dial(ctx, filepath.Join("/var/run/wpa_supplicant", iface), hostapd.Options{})
		return derr
	})
	if err == nil {
		err = s.ctrl.Attach(ctx)
	}
	if err != nil {
		d.stop()
		return nil, fmt.Errorf("wpa_supplicant %s: %w (%s)", iface, err, d.tail(8))
	}
	return s, nil
}

func (s *supplicant) stop() {
	if s.ctrl != nil {
		s.ctrl.Close()
	}
	s.d.stop()
}

// status is wpa_supplicant's STATUS as key=value.
func (s *supplicant) status(ctx context.Context) (map[string]string, error) {
	reply, err := s.ctrl.Request(ctx, "STATUS")
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(reply))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			out[k] = v
		}
	}
	return out, nil
}

// waitConnected waits until the station is COMPLETED (with bssid, when given).
func (s *supplicant) waitConnected(ctx context.Context, timeout time.Duration, bssid string) (map[string]string, error) {
	var st map[string]string
	err := poll(ctx, timeout, func() error {
		var err error
		st, err = s.status(ctx)
		if err != nil {
			return err
		}
		if st["wpa_state"] != "COMPLETED" {
			return fmt.Errorf("wpa_state %s", st["wpa_state"])
		}
		if bssid != "" && st["bssid"] != bssid {
			return fmt.Errorf("on %s; want %s", st["bssid"], bssid)
		}
		return nil
	})
	return st, err
}

// newNS creates a network namespace and returns a file descriptor for it.
func newNS() (int, error) {
	var fd int
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		// The thread stays in the new namespace and ends with this goroutine (never unlocked).
		if err = unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return
		}
		fd, err = unix.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}()
	<-done
	return fd, err
}

// inNS runs f on an OS thread inside namespace ns (sockets it creates stay in ns; processes it
// starts run there). The thread is discarded afterwards.
func inNS(ns int, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(ns, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// handleIn is a route netlink handle in namespace ns.
func handleIn(ns int) (*netlink.Handle, error) {
	return netlink.NewHandleAt(netns.NsHandle(ns), unix.NETLINK_ROUTE)
}

// moveWiphy moves radio phy (with its interfaces) into namespace ns
// (NL80211_CMD_SET_WIPHY_NETNS with NL80211_ATTR_NETNS_FD).
func moveWiphy(phyIdx, ns int) error {
	c, err := genetlink.Dial(nil)
	if err != nil {
		return err
	}
	defer c.Close()
	fam, err := c.GetFamily("nl80211")
	if err != nil {
		return err
	}
	ae := mdnetlink.NewAttributeEncoder()
	ae.Uint32(unix.NL80211_ATTR_WIPHY, uint32(phyIdx))
	ae.Uint32(unix.NL80211_ATTR_NETNS_FD, uint32(ns))
	b, err := ae.Encode()
	if err != nil {
		return err
	}
	_, err = c.Execute(genetlink.Message{Header: genetlink.Header{Command: unix.NL80211_CMD_SET_WIPHY_NETNS}, Data: b}, fam.ID,
		mdnetlink.Request|mdnetlink.Acknowledge)
	if err != nil {
		return fmt.Errorf("phy%d to netns: %w", phyIdx, err)
	}
	return nil
}

// setupLink brings a link up in ns (or the initial namespace when h is nil) with addr.
func setupLink(h *netlink.Handle, name, cidr string) error {
	if h == nil {
		h = &netlink.Handle{}
	}
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if cidr != "" {
		a, err := netlink.ParseAddr(cidr)
		if err != nil {
			return err
		}
		if err := h.AddrAdd(l, a); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("%s: address %s: %w", name, cidr, err)
		}
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("%s up: %w", name, err)
	}
	return nil
}

// udpProbe sends a datagram every interval from a socket in ns to dst, until ctx ends.
func udpProbe(ctx context.Context, ns int, dst string, interval time.Duration) error {
	var conn net.Conn
	err := inNS(ns, func() error {
		var err error
		conn, err = net.Dial("udp4", dst)
		return err
	})
	if err != nil {
		return err
	}
	go func() {
		defer conn.Close()
		t := time.NewTicker(interval)
		defer t.Stop()
		var seq uint64
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				seq++
				_, _ = conn.Write([]byte(strconv.FormatUint(seq, 10)))
			}
		}
	}()
	return nil
}

// arrivals records when datagrams arrive on a UDP port.
type arrivals struct {
	mu    sync.Mutex
	times []time.Time
	conn  net.PacketConn
}

func listenArrivals(ns int, addr string) (*arrivals, error) {
	var pc net.PacketConn
	err := inNS(ns, func() error {
		var err error
		pc, err = net.ListenPacket("udp4", addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	a := &arrivals{conn: pc}
	go func() {
		buf := make([]byte, 64)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			a.mu.Lock()
			a.times = append(a.times, time.Now())
			a.mu.Unlock()
		}
	}()
	return a, nil
}

func (a *arrivals) close() { a.conn.Close() }

// gap is the longest time without a datagram within [from, to].
func (a *arrivals) gap(from, to time.Time) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	prev := from
	var g time.Duration
	for _, t := range a.times {
		if t.Before(from) {
			continue
		}
		if t.After(to) {
			break
		}
		g = max(g, t.Sub(prev))
		prev = t
	}
	return max(g, to.Sub(prev))
}

// around returns the last arrival before t and the first after it.
func (a *arrivals) around(t time.Time) (before, after time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, x := range a.times {
		if x.Before(t) {
			before = x
		} else if after.IsZero() {
			after = x
		}
	}
	return before, after
}

func (a *arrivals) count(from, to time.Time) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, t := range a.times {
		if !t.Before(from) && !t.After(to) {
			n++
		}
	}
	return n
}

// lanHost creates a namespace with a host on bridge br (a veth pair, one end a bridge port), the
// wired LAN machine that stations talk to; the guest's own firewall (meshd's input policy)
// does not see bridged traffic. It returns the namespace.
func lanHost(e *env, br, cidr string) (int, error) {
	ns, err := newNS()
	if err != nil {
		return -1, err
	}
	port := "lp-" + br
	if len(port) > 15 {
		port = port[:15]
	}
	va := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: port}, PeerName: "lanhost"}
	if err := netlink.LinkAdd(va); err != nil {
		return -1, fmt.Errorf("veth: %w", err)
	}
	e.defer_(func() { _ = netlink.LinkDel(va) })
	peer, err := netlink.LinkByName("lanhost")
	if err != nil {
		return -1, err
	}
	if err := netlink.LinkSetNsFd(peer, ns); err != nil {
		return -1, err
	}
	bl, err := netlink.LinkByName(br)
	if err != nil {
		return -1, err
	}
	l, err := netlink.LinkByName(port)
	if err != nil {
		return -1, err
	}
	if err := netlink.LinkSetMaster(l, bl); err != nil {
		return -1, err
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return -1, err
	}
	h, err := handleIn(ns)
	if err != nil {
		return -1, err
	}
	defer h.Close()
	if err := setupLink(h, "lo", ""); err != nil {
		return -1, err
	}
	return ns, setupLink(h, "lanhost", cidr)
}
