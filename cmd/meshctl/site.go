package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"meshroot/firmware/radiohook"
	"meshroot/firmware/sitelab"
	"meshroot/firmware/status"
	"meshroot/image"
	"meshroot/image/qemu"
	"meshroot/internal/lab"
)

func init() {
	register(command{
		name:    "site",
		summary: "the virtual site `meshctl run` keeps up: site console (attach to the router's serial console), site status, site sweep",
		run:     runSiteCmd,
	})
}

// The virtual site's fixed names: its own namespace prefix (never the tests' "mr") and, under
// the output directory, its own run directory. A machine-wide lock per prefix keeps two runs
// apart; what a crashed run left behind (namespaces and the processes in them) is swept at the
// next start.
const (
	sitePrefix     = "mrrun"
	siteRunDirName = "run"
	siteConsole    = "console.log"
	siteSocket     = "console.sock"
	siteStatusFile = "status.json"
)

// siteOptions configure one virtual site run.
type siteOptions struct {
	ImageDir string
	Manifest image.Manifest
	// RunDir holds the run's files (removed and recreated at start): lab/ (configs, daemon
	// logs), cloud/, disk.img, console.log, console.sock, site.log, status.json.
	RunDir string
	// Prefix is the namespace prefix (default sitePrefix); the lock is /run/meshctl-<prefix>.lock.
	Prefix     string
	MemoryMB   int
	Append     []string
	Stdout     io.Writer
	Terminal   bool          // redraw a screen (else: one line per change)
	Every      time.Duration // status poll interval (default 1 s); pings every 2 intervals
	OnDisplay  func(v *siteView)
	ReadyCheck func(v *siteView) bool // tests: called after each poll; true ends the run
}

// lockDir holds the runs' locks (machine-wide, as the namespaces are).
var lockDir = "/run"

func lockPath(prefix string) string { return filepath.Join(lockDir, "meshctl-"+prefix+".lock") }

// takeLock takes the machine-wide lock of prefix (held until the process exits or release).
func takeLock(prefix string) (release func(), err error) {
	f, err := os.OpenFile(lockPath(prefix), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		b, _ := os.ReadFile(lockPath(prefix))
		f.Close()
		return nil, fmt.Errorf("another virtual site is running (pid %s, lock %s): stop it first", strings.TrimSpace(string(b)), lockPath(prefix))
	}
	f.Truncate(0)
	f.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	return func() { f.Close() }, nil
}

// sweepSite removes what a crashed run of prefix left: its namespaces (killing the processes
// in them: QEMU, charon, FRR) and its run directory.
func sweepSite(prefix, runDir string) ([]string, error) {
	gone, err := lab.SweepNamespaces(prefix)
	if err != nil {
		return gone, fmt.Errorf("sweep: %w", err)
	}
	if err := os.RemoveAll(runDir); err != nil {
		return gone, fmt.Errorf("sweep: %w", err)
	}
	return gone, nil
}

// runSite brings the virtual site up, boots the router, onboards it with the app simulator,
// and shows the live status until ctx ends (or a part of the site dies); it then tears
// everything down.
func runSite(ctx context.Context, o siteOptions) (err error) {
	if o.Prefix == "" {
		o.Prefix = sitePrefix
	}
	if o.Every <= 0 {
		o.Every = time.Second
	}
	out := o.Stdout
	ctx, stopSig := signal.NotifyContext(ctx, syscall.SIGHUP)
	defer stopSig()
	release, err := takeLock(o.Prefix)
	if err != nil {
		return err
	}
	defer release()
	runDir, err := filepath.Abs(o.RunDir)
	if err != nil {
		return err
	}
	gone, err := sweepSite(o.Prefix, runDir)
	if err != nil {
		return err
	}
	if len(gone) > 0 {
		fmt.Fprintf(out, "swept %d namespaces left by a previous run: %s\n", len(gone), strings.Join(gone, " "))
	}
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(runDir, "site.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	logger := slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	l, err := lab.Open(lab.Options{Dir: filepath.Join(runDir, "lab"), Logger: logger, Prefix: o.Prefix})
	if err != nil {
		return err
	}
	v := newSiteView(o, runDir)
	defer func() {
		fmt.Fprintln(out, "tearing down the virtual site...")
		v.teardown()
		cerr := l.Close()
		left, _ := lab.SweepNamespaces(o.Prefix) // nothing, unless Close failed
		switch {
		case cerr != nil || len(left) > 0:
			fmt.Fprintf(out, "teardown: %v; swept leftovers %v\n", cerr, left)
			if err == nil {
				err = cerr
			}
		default:
			fmt.Fprintln(out, "torn down: QEMU, strongSwan and FRR stopped, namespaces removed")
		}
	}()
	fmt.Fprintf(out, "starting the concentrator (two strongSwan + FRR endpoints), the ISP and the reference cloud (log %s)\n", logf.Name())
	site, err := sitelab.New(l, sitelab.Config{Dir: runDir})
	if err != nil {
		return err
	}
	v.site = site
	dctx, dcancel := context.WithTimeout(ctx, time.Minute)
	dev, err := site.AddDevice(dctx, sitelab.DeviceConfig{Board: o.Manifest.Board})
	dcancel()
	if err != nil {
		return err
	}
	v.dev = dev
	// The console: a log file, and a socket `meshctl site console` attaches to.
	hub := &consoleHub{clients: map[net.Conn]bool{}}
	sock := filepath.Join(runDir, siteSocket)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("console socket: %w", err)
	}
	go hub.serve(ln)
	v.hub = hub
	vmc := sitelab.VMConfig{ImageDir: o.ImageDir, Manifest: o.Manifest, Factory: dev.Factory, Echo: hub,
		LogPath: filepath.Join(runDir, siteConsole), Timeout: -1, MemoryMB: o.MemoryMB, Append: o.Append}
	vm, err := site.Boot(vmc)
	if err != nil {
		return err
	}
	v.setVM(vm, vmc.LogPath)
	fmt.Fprintf(out, "router %s %s booting in QEMU (TCG); console in %s\n", o.Manifest.Board, o.Manifest.Version, vmc.LogPath)
	// Onboarding, as the customer does it: the app on the LAN client pairs with the router
	// (meshctl app pair's library call), the router does the rest by itself.
	pair := func(ctx context.Context, r sitelab.PairRequest) error {
		_, err := PairDevice(ctx, PairOptions{QR: r.Device.QR, Device: r.URL, Setup: r.Device.Setup, Wait: r.Wait, HTTP: r.HTTP, OnProgress: r.OnProgress})
		return err
	}
	go func() {
		zctx, zcancel := context.WithTimeout(ctx, 5*time.Minute)
		defer zcancel()
		_, err := site.ZeroTouch(zctx, vm, dev, sitelab.ZeroTouchOptions{Pair: pair, OnStep: v.step})
		if err != nil && ctx.Err() == nil {
			v.note("zero-touch stopped: %v", err)
		}
	}()
	go v.pinger(ctx)
	tick := time.NewTicker(o.Every)
	defer tick.Stop()
	for {
		v.poll(ctx)
		if err := v.checkParts(); err != nil {
			v.display()
			return err
		}
		if vm := v.getVM(); vmExited(vm) {
			if !rebooted(vm) {
				v.display()
				return fmt.Errorf("the router's QEMU exited (%v); console: %s\n%s", vm.Wait(), vmc.LogPath, vm.Tail(15))
			}
			v.note("the router rebooted (meshd -reboot): booting it again; it comes back on its own, no app")
			vmc.LogPath = filepath.Join(runDir, fmt.Sprintf("console-boot%d.log", v.boots+1))
			nvm, err := site.Boot(vmc)
			if err != nil {
				return err
			}
			v.setVM(nvm, vmc.LogPath)
			go func() {
				_, total, err := site.WaitConnected(ctx, nvm, func(st sitelab.Step) { v.rebootStep(st) })
				if err == nil {
					v.note("after the reboot: both tunnels, BGP and the LAN -> VPC ping in %.1fs", total.Seconds())
				}
			}()
		}
		v.display()
		if o.ReadyCheck != nil && o.ReadyCheck(v) {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func vmExited(vm *qemu.VM) bool {
	select {
	case <-vm.Done():
		return true
	default:
		return false
	}
}

// rebooted reports whether the guest asked for its reboot (QEMU runs with -no-reboot).
func rebooted(vm *qemu.VM) bool {
	for _, l := range vm.Lines() {
		if strings.Contains(l.Text, `"msg":"shutting down","action":"reboot"`) {
			return true
		}
	}
	return false
}

// siteView is the run's state as shown on the terminal.
type siteView struct {
	o      siteOptions
	runDir string
	start  time.Time
	site   *sitelab.Site
	dev    *sitelab.Device
	hub    *consoleHub

	mu        sync.Mutex
	vm        *qemu.VM
	console   string // the console log of the VM now
	boots     int
	steps     []sitelab.Step
	reboot    []sitelab.Step
	notes     []string
	st        *status.Status
	stAt      time.Time
	stErr     error
	pings     int
	answered  int
	lastRTT   time.Duration
	lastPing  error
	printed   map[string]string // non-terminal mode: what was last printed per topic
	lastTable time.Time
}

func newSiteView(o siteOptions, runDir string) *siteView {
	return &siteView{o: o, runDir: runDir, start: time.Now(), printed: map[string]string{}}
}

func (v *siteView) setVM(vm *qemu.VM, console string) {
	v.mu.Lock()
	v.vm, v.console = vm, console
	v.boots++
	v.mu.Unlock()
	if v.hub != nil {
		v.hub.setVM(vm)
	}
}

func (v *siteView) getVM() *qemu.VM {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.vm
}

func (v *siteView) step(s sitelab.Step) {
	v.mu.Lock()
	v.steps = append(v.steps, s)
	v.mu.Unlock()
}

func (v *siteView) rebootStep(s sitelab.Step) {
	v.mu.Lock()
	v.reboot = append(v.reboot, s)
	v.mu.Unlock()
}

func (v *siteView) note(format string, a ...any) {
	v.mu.Lock()
	v.notes = append(v.notes, fmt.Sprintf("%s  %s", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...)))
	v.mu.Unlock()
}

// Reached reports whether a milestone was reached (tests).
// WiFiServing reports whether the last status shows the radio service running with every
// radio's hostapd ENABLED.
func (v *siteView) WiFiServing() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.st == nil || v.st.Radio.State != radiohook.StateRunning || len(v.st.Radio.Radios) == 0 {
		return false
	}
	for _, r := range v.st.Radio.Radios {
		if r.State != "ENABLED" {
			return false
		}
	}
	return true
}

func (v *siteView) Reached(name string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, s := range v.steps {
		if s.Name == name {
			return true
		}
	}
	return false
}

// Pings returns how many pings to the VPC host were sent and answered.
func (v *siteView) Pings() (sent, answered int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.pings, v.answered
}

// poll fetches the router's status from the LAN client (once it has a lease).
func (v *siteView) poll(ctx context.Context) {
	if !v.site.LANClient().Addr.IsValid() {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	st, raw, err := v.site.Status(pctx)
	v.mu.Lock()
	defer v.mu.Unlock()
	v.stErr = err
	if err == nil {
		v.st, v.stAt = &st, time.Now()
		os.WriteFile(filepath.Join(v.runDir, siteStatusFile), raw, 0o644)
	}
}

// pinger pings the VPC host from the LAN client every two poll intervals.
func (v *siteView) pinger(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * v.o.Every):
		}
		if !v.site.LANClient().Addr.IsValid() {
			continue
		}
		rtt, err := v.site.Ping(sitelab.VPCHost, time.Second)
		v.mu.Lock()
		v.pings++
		v.lastPing = err
		if err == nil {
			v.answered++
			v.lastRTT = rtt
		}
		v.mu.Unlock()
	}
}

// checkParts reports a part of the site that died: a concentrator endpoint's charon or FRR.
func (v *siteView) checkParts() error {
	for i, ep := range v.site.Conc.Endpoints {
		procs := map[string]*lab.Process{}
		if ep.Charon != nil {
			procs["charon"] = ep.Charon.Process()
		}
		if ep.FRR != nil {
			procs["bgpd"], procs["zebra"] = ep.FRR.BGPd, ep.FRR.Zebra
		}
		for name, p := range procs {
			if p.Exited() {
				return fmt.Errorf("endpoint %d's %s (pid %d) exited (%v); its log: %s", i+1, name, p.PID(), p.Err(), p.LogPath())
			}
		}
	}
	return nil
}

func (v *siteView) teardown() {
	if vm := v.getVM(); vm != nil {
		vm.Stop()
	}
	if v.hub != nil {
		v.hub.close()
	}
	if v.site != nil {
		v.site.Close()
	}
}

// display draws the screen (terminal) or prints what changed.
func (v *siteView) display() {
	if v.o.OnDisplay != nil {
		v.o.OnDisplay(v)
	}
	if v.o.Terminal {
		var b strings.Builder
		b.WriteString("\x1b[H\x1b[2J")
		v.render(&b)
		io.WriteString(v.o.Stdout, b.String())
		return
	}
	v.printChanges(v.o.Stdout)
}

func (v *siteView) header(w io.Writer) {
	m := v.o.Manifest
	fmt.Fprintf(w, "Meshroot virtual site: router %s %s, %s running; Ctrl-C stops it and tears everything down\n",
		m.Board, m.Version, time.Since(v.start).Round(time.Second))
	v.mu.Lock()
	console := v.console
	v.mu.Unlock()
	if console == "" {
		console = filepath.Join(v.runDir, siteConsole)
	}
	fmt.Fprintf(w, "  console   %s   attach: meshctl site console --run-dir %s\n", console, v.runDir)
	if v.site != nil && v.site.LAN != nil {
		fmt.Fprintf(w, "  LAN shell ip netns exec %s bash   (curl http://%s/status, ping %s)\n", v.site.LAN.Name, sitelab.RouterLAN, sitelab.VPCHost)
	}
}

func (v *siteView) render(w io.Writer) {
	v.header(w)
	v.mu.Lock()
	defer v.mu.Unlock()
	fmt.Fprintln(w, "\nonboarding (seconds since QEMU started)")
	for _, s := range v.steps {
		fmt.Fprintf(w, "  %6.1fs  %-28s %s\n", s.At.Seconds(), s.Name, s.Detail)
	}
	if len(v.reboot) > 0 {
		fmt.Fprintln(w, "after the reboot (no app)")
		for _, s := range v.reboot {
			fmt.Fprintf(w, "  %6.1fs  %-28s %s\n", s.At.Seconds(), s.Name, s.Detail)
		}
	}
	fmt.Fprintln(w)
	if st := v.st; st != nil {
		wan := "none"
		if st.WAN != nil {
			wan = fmt.Sprintf("%s %s", st.WAN.Mode, st.WAN.Phase)
			if st.WAN.Address.IsValid() {
				wan = st.WAN.Address.Addr().String() + " (" + wan + ")"
			}
		}
		prof := "onboarding " + st.Onboarding.Phase
		if st.Profile != nil {
			prof = fmt.Sprintf("profile v%d of %s", st.Profile.Version, st.Profile.SiteID)
		}
		fmt.Fprintf(w, "router  WAN %s, LAN %s (%s), %s, meshd %.1f MiB, up %s\n", wan, st.LAN.Address, plural(st.LAN.Leases, "lease"), prof,
			float64(st.Memory.RSSBytes)/(1<<20), (time.Duration(st.UptimeSeconds) * time.Second).String())
		if age := time.Since(v.stAt); age > 3*v.o.Every {
			fmt.Fprintf(w, "        (status %s old: %v)\n", age.Round(time.Second), v.stErr)
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "vpn %s\tendpoint\tIKE\tESP\tBGP\troutes in/out\tbytes in/out\n", st.VPN.State)
		for _, t := range st.VPN.Tunnels {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%d/%d\t%s / %s\n", t.Name, t.Outside, t.IKE, t.ESP, orDash(t.BGP), t.PrefixesIn, t.PrefixesOut, bytesStr(t.BytesIn), bytesStr(t.BytesOut))
		}
		tw.Flush()
		fmt.Fprintf(w, "learned routes: %s\n", routesStr(st))
		fmt.Fprintf(w, "wifi %s\n", radioStr(st.Radio))
	} else {
		fmt.Fprintf(w, "router status: not yet (the LAN client asks once it has a lease; %v)\n", v.stErr)
	}
	fmt.Fprintf(w, "ping %s\n", v.pingStr())
	if len(v.notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range v.notes[max(0, len(v.notes)-5):] {
			fmt.Fprintln(w, n)
		}
	}
}

// radioStr is the radio service in one line: its state, the SSID and every radio's hostapd
// state, channel and stations.
func radioStr(r radiohook.Status) string {
	if r.State == "" {
		return "-"
	}
	s := r.State
	if r.SSID != "" {
		s += fmt.Sprintf(" %q (%s, %s)", r.SSID, r.Security, r.Country)
	}
	for _, x := range r.Radios {
		s += fmt.Sprintf("; %s %s %s ch %s, %s", x.Iface, x.Band, x.State, orDash(x.Channel), plural(x.Stations, "station"))
	}
	if r.Mesh != nil && r.Role != "" {
		s += "; mesh " + r.Role
	}
	if r.LastError != "" {
		s += "; " + r.LastError
	}
	return s
}

func (v *siteView) pingStr() string {
	lease := v.site.LANClient()
	if !lease.Addr.IsValid() {
		return "LAN client -> VPC host: no lease yet"
	}
	s := fmt.Sprintf("LAN client %s -> VPC host %s: ", lease.Addr.Addr(), sitelab.VPCHost)
	switch {
	case v.pings == 0:
		s += "not yet"
	case v.lastPing == nil:
		s += fmt.Sprintf("%.1f ms", float64(v.lastRTT.Microseconds())/1000)
	default:
		s += "no answer"
	}
	return s + fmt.Sprintf(" (%d of %d answered, every %s)", v.answered, v.pings, 2*v.o.Every)
}

// printChanges writes one line per change (for a log or a pipe rather than a terminal).
func (v *siteView) printChanges(w io.Writer) {
	v.mu.Lock()
	defer v.mu.Unlock()
	say := func(topic, line string) {
		if v.printed[topic] != line {
			v.printed[topic] = line
			fmt.Fprintln(w, line)
		}
	}
	for _, s := range v.steps {
		say("step "+s.Name, fmt.Sprintf("%6.1fs  %-28s %s", s.At.Seconds(), s.Name, s.Detail))
	}
	for _, s := range v.reboot {
		say("reboot "+s.Name, fmt.Sprintf("reboot %6.1fs  %-28s %s", s.At.Seconds(), s.Name, s.Detail))
	}
	for _, n := range v.notes {
		say("note "+n, n)
	}
	if st := v.st; st != nil {
		for _, t := range st.VPN.Tunnels {
			say("tunnel "+t.Name, fmt.Sprintf("%s %s: IKE %s, ESP %s, BGP %s", t.Name, t.Outside, t.IKE, t.ESP, orDash(t.BGP)))
		}
		say("routes", "learned routes: "+routesStr(st))
		say("wifi", "wifi "+radioStr(st.Radio))
	}
	ping := "ping: no answer"
	if v.pings > 0 && v.lastPing == nil {
		ping = "ping: the VPC host answers"
	}
	if v.pings > 0 {
		say("ping", ping)
	}
	if time.Since(v.lastTable) > 30*time.Second && v.pings > 0 {
		v.lastTable = time.Now()
		fmt.Fprintln(w, "ping "+v.pingStr())
	}
}

func routesStr(st *status.Status) string {
	if len(st.VPN.Routes) == 0 {
		return "none"
	}
	names := map[string]string{}
	for _, t := range st.VPN.Tunnels {
		names[t.Outside] = t.Name
	}
	var keys []string
	for p := range st.VPN.Routes {
		keys = append(keys, p)
	}
	sort.Strings(keys)
	var parts []string
	for _, p := range keys {
		var via []string
		for _, t := range st.VPN.Routes[p] {
			if n := names[t]; n != "" {
				t = n + " " + t
			}
			via = append(via, t)
		}
		parts = append(parts, p+" via "+strings.Join(via, ", "))
	}
	return strings.Join(parts, "; ")
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func bytesStr(n uint64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// consoleHub copies the router's console to attached clients (meshctl site console) and sends
// what they type to the console.
type consoleHub struct {
	mu      sync.Mutex
	vm      *qemu.VM
	clients map[net.Conn]bool
	ln      net.Listener
	closed  bool
}

func (h *consoleHub) setVM(vm *qemu.VM) {
	h.mu.Lock()
	h.vm = vm
	h.mu.Unlock()
}

// Write is the VM's Echo: the console output, to every attached client (a slow client is
// dropped, never waited for).
func (h *consoleHub) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		c.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := c.Write(p); err != nil {
			c.Close()
			delete(h.clients, c)
		}
	}
	return len(p), nil
}

func (h *consoleHub) serve(ln net.Listener) {
	h.mu.Lock()
	h.ln = ln
	h.mu.Unlock()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			c.Close()
			return
		}
		vm := h.vm
		if vm != nil {
			io.WriteString(c, vm.Tail(20)+"\n")
		}
		h.clients[c] = true
		h.mu.Unlock()
		go func() {
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadString('\n')
				if line != "" {
					h.mu.Lock()
					vm := h.vm
					h.mu.Unlock()
					if vm != nil {
						vm.Send(line)
					}
				}
				if err != nil {
					h.mu.Lock()
					delete(h.clients, c)
					h.mu.Unlock()
					c.Close()
					return
				}
			}
		}()
	}
}

func (h *consoleHub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	if h.ln != nil {
		h.ln.Close()
	}
	for c := range h.clients {
		c.Close()
	}
	h.clients = map[net.Conn]bool{}
}

const siteUsage = `usage: meshctl site <subcommand> [--run-dir DIR]

The virtual site that ` + "`meshctl run`" + ` (make run) keeps up until Ctrl-C. DIR is its run directory
(default out/run: the run prints it).

subcommands:
  console  attach to the router's serial console: its output here, typed lines to it (the
           router's shell); Ctrl-C or Ctrl-D detaches (the site keeps running)
  status   the router's last status as the run polled it from the LAN client
  sweep    remove what a crashed run left behind (its namespaces and the processes in them,
           its run directory); refused while a run is active
`

func runSiteCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, siteUsage)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	sub := args[0]
	fs := flag.NewFlagSet("meshctl site "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	runDir := fs.String("run-dir", filepath.Join("out", siteRunDirName), "the run directory of `meshctl run`")
	if err := fs.Parse(args[1:]); err != nil {
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "meshctl site %s: unexpected arguments %q\n", sub, fs.Args())
		return errUsage
	}
	switch sub {
	case "console":
		return siteConsoleAttach(ctx, filepath.Join(*runDir, siteSocket), os.Stdin, stdout, stderr)
	case "status":
		b, err := os.ReadFile(filepath.Join(*runDir, siteStatusFile))
		if err != nil {
			return fmt.Errorf("no status yet (is `meshctl run` running with --run-dir %s?): %w", *runDir, err)
		}
		var st status.Status
		if err := json.Unmarshal(b, &st); err != nil {
			return err
		}
		printStatus(stdout, st)
		return nil
	case "sweep":
		if os.Geteuid() != 0 {
			return errors.New("meshctl site sweep needs root (network namespaces)")
		}
		release, err := takeLock(sitePrefix)
		if err != nil {
			return err
		}
		defer release()
		gone, err := sweepSite(sitePrefix, *runDir)
		fmt.Fprintf(stdout, "swept %d namespaces %v and %s\n", len(gone), gone, *runDir)
		return err
	}
	fmt.Fprintf(stderr, "meshctl site: unknown subcommand %q\n", sub)
	fmt.Fprint(stderr, siteUsage)
	return errUsage
}

// siteConsoleAttach connects to a run's console socket: output to stdout, stdin's lines to
// the router, until stdin ends, the run stops or ctx ends (Ctrl-C).
func siteConsoleAttach(ctx context.Context, sock string, stdin io.Reader, stdout, stderr io.Writer) error {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return fmt.Errorf("attach to the router's console (is `meshctl run` running?): %w", err)
	}
	defer c.Close()
	fmt.Fprintln(stderr, "attached to the router's console; Ctrl-C or Ctrl-D detaches (the site keeps running)")
	done := make(chan error, 2)
	go func() { _, err := io.Copy(stdout, c); done <- err }()
	go func() { _, err := io.Copy(c, stdin); done <- err }()
	select {
	case <-ctx.Done():
	case <-done:
	}
	fmt.Fprintln(stderr, "\ndetached")
	return nil
}
