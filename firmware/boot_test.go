package firmware

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"meshroot/board"
	"meshroot/internal/testenv"
)

// The helper shell: the console service runs this test binary as its shell.
const helperEnv = "MESHROOT_HELPER_SHELL"

func TestHelperShell(t *testing.T) {
	switch os.Getenv(helperEnv) {
	case "":
		t.Skip("helper process for the console tests")
	case "exit":
		fmt.Println("helper shell ran")
		os.Exit(0)
	case "block":
		fmt.Println("helper shell waiting")
		select {} // until the console service hangs it up
	}
}

func helperShell(t *testing.T, mode string) []string {
	t.Helper()
	t.Setenv(helperEnv, mode)
	return []string{os.Args[0], "-test.run=^TestHelperShell$"}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader in different goroutines.
type syncBuffer = testenv.Buffer

func mkfile(t *testing.T, root, rel, content string) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond (the code under test runs in other goroutines); hang is the guard.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hang)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never happened: %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

type bootRig struct {
	root     string
	console  *syncBuffer
	mounter  *FakeMounter
	net      *FakeNet
	wd       *FakeWatchdog
	power    *FakePower
	modules  *FakeModuleKernel
	clock    *FakeClock
	hostname string
	actions  chan Action
	ready    chan ReadyInfo
	opts     Options
	mu       sync.Mutex
}

const kver = "6.1.0-56-arm64"

// newBootRig builds a fake qemu-virt-arm64 (or, with compatible "", an unknown machine):
// device tree, release file, modules.dep for the board's modules, the data partition's node,
// the watchdog node, NICs eth0 and eth1.
func newBootRig(t *testing.T, compatible string) *bootRig {
	t.Helper()
	r := &bootRig{
		root:    t.TempDir(),
		console: &syncBuffer{},
		mounter: &FakeMounter{},
		net:     &FakeNet{},
		wd:      NewFakeWatchdog(),
		power:   &FakePower{},
		clock:   NewFakeClock(time.Unix(1e9, 0)),
		actions: make(chan Action, 1),
		ready:   make(chan ReadyInfo, 1),
	}
	if compatible != "" {
		mkfile(t, r.root, "proc/device-tree/compatible", compatible+"\x00")
	}
	mkfile(t, r.root, ReleasePath, `{"version":"0.1.0-test","board":"qemu-virt-arm64","built":"2026-11-22T10:00:00Z"}`)
	b, _ := board.Lookup("qemu-virt-arm64")
	var dep strings.Builder
	for _, m := range b.Modules {
		fmt.Fprintf(&dep, "kernel/%s.ko:\n", m)
	}
	mkfile(t, r.root, "lib/modules/"+kver+"/modules.dep", dep.String())
	mkfile(t, r.root, "dev/vda3", "")
	mkfile(t, r.root, "dev/watchdog", "")
	mkfile(t, r.root, "console", "")
	r.modules = &FakeModuleKernel{}
	r.net.AddLink(Link{Name: "lo", Kind: "device"})
	r.net.AddLink(Link{Name: "eth0", Kind: "device", Ethernet: true})
	r.net.AddLink(Link{Name: "eth1", Kind: "device", Ethernet: true})
	r.opts = Options{
		Root:    r.root,
		Boot:    true,
		Console: r.console,
		Clock:   r.clock,
		Sys: System{
			Mounter:  r.mounter,
			Modules:  r.modules,
			Net:      r.net,
			Watchdog: r.wd.Opener(),
			Power:    r.power,
			SetHostname: func(h string) error {
				r.mu.Lock()
				r.hostname = h
				r.mu.Unlock()
				return nil
			},
			KernelRelease: func() (string, error) { return kver, nil },
			Uptime:        func() time.Duration { return 2345 * time.Millisecond },
		},
		Shell:       helperShell(t, "block"),
		ShellDevice: filepath.Join(r.root, "console"),
		WaitDevice:  time.Millisecond,
		Actions:     r.actions,
		OnReady:     func(info ReadyInfo) { r.ready <- info },
	}
	return r
}

type runResult struct {
	action Action
	err    error
}

// start runs Run; the returned channel is closed when it returned, with the result in *res.
func (r *bootRig) start(t *testing.T) (done <-chan struct{}, res *runResult) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan struct{})
	res = &runResult{}
	go func() {
		res.action, res.err = Run(ctx, r.opts)
		close(ch)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-ch:
		case <-time.After(hang):
			t.Errorf("Run did not return after cancel")
		}
	})
	return ch, res
}

func (r *bootRig) waitReady(t *testing.T) ReadyInfo {
	t.Helper()
	select {
	case info := <-r.ready:
		return info
	case <-time.After(hang):
		t.Fatalf("no ready line; console:\n%s", r.console.String())
		return ReadyInfo{}
	}
}

// readyLine returns the console's ready line, checking there is exactly one.
func (r *bootRig) readyLine(t *testing.T) string {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(r.console.String(), "\n") {
		if strings.Contains(l, ReadyMarker) && !strings.HasPrefix(l, "{") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("console has %d ready lines; want 1:\n%s", len(lines), r.console.String())
	}
	return lines[0]
}

func TestRunBootQEMU(t *testing.T) {
	r := newBootRig(t, "linux,dummy-virt")
	done, res := r.start(t)
	info := r.waitReady(t)
	want := ReadyInfo{Board: "qemu-virt-arm64", Version: "0.1.0-test", Services: []string{"data", "lan", "watchdog", "console"}, UptimeMS: 2345}
	if diff := cmp.Diff(want, info); diff != "" {
		t.Errorf("ready info mismatch (-want +got):\n%s", diff)
	}
	line := r.readyLine(t)
	if !strings.HasPrefix(line, ReadyMarker) {
		t.Errorf("ready line %q does not start at the beginning of a console line", line)
	}
	if got, err := ParseReadyLine(line); err != nil || !cmp.Equal(got, want) {
		t.Errorf("ParseReadyLine(console) = %+v, %v; want %+v", got, err, want)
	}

	// Boot mounts (none was mounted: the fake mount table starts empty), then the data partition.
	events := r.mounter.Events()
	for _, m := range []string{"proc", "sysfs", "devtmpfs", "devpts", "/tmp", "/run"} {
		if !slices.ContainsFunc(events, func(e string) bool { return strings.Contains(e, m) }) {
			t.Errorf("mounts %v: nothing for %s", events, m)
		}
	}
	wantData := fmt.Sprintf("mount ext4 %s %s", filepath.Join(r.root, "dev/vda3"), filepath.Join(r.root, "data"))
	if !slices.Contains(events, wantData) {
		t.Errorf("mounts %v: want %q", events, wantData)
	}
	// Modules, in the board's order (no dependencies in this fixture).
	b, _ := board.Lookup("qemu-virt-arm64")
	if diff := cmp.Diff(b.Modules, r.modules.Loaded); diff != "" {
		t.Errorf("modules loaded mismatch (-want +got):\n%s", diff)
	}
	// LAN: bridge with the address, eth1 in it, eth0 (WAN) not; lo up.
	br, addrs, ok := r.net.Link("br-lan")
	if !ok || !br.Up || !slices.Equal(addrs, []netip.Prefix{netip.MustParsePrefix("192.168.1.1/24")}) {
		t.Errorf("br-lan = %+v %v (exists %v); want up with 192.168.1.1/24", br, addrs, ok)
	}
	if l, _, _ := r.net.Link("eth1"); l.Master != "br-lan" || !l.Up {
		t.Errorf("eth1 = %+v; want up in br-lan", l)
	}
	if l, _, _ := r.net.Link("eth0"); l.Master != "" || !l.Up {
		t.Errorf("eth0 = %+v; want up, not bridged (WAN)", l)
	}
	if l, _, _ := r.net.Link("lo"); !l.Up {
		t.Errorf("lo is down")
	}
	r.mu.Lock()
	if r.hostname != "meshroot" {
		t.Errorf("hostname = %q; want meshroot", r.hostname)
	}
	r.mu.Unlock()
	if n, closed, _ := r.wd.State(); n < 1 || closed {
		t.Errorf("watchdog: %d keepalives, closed %v; want armed and fed", n, closed)
	}
	// The watchdog is fed on the clock while the supervisor answers.
	for len(r.wd.Kicked()) > 0 {
		<-r.wd.Kicked()
	}
	before, _, _ := r.wd.State()
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	for range 3 {
		r.clock.WaitTimers(ctx, 2) // the watchdog's feed timer and the LAN rescan
		r.clock.Advance(10 * time.Second)
		<-r.wd.Kicked()
	}
	if after, _, _ := r.wd.State(); after < before+3 {
		t.Errorf("keepalives %d -> %d after 30 s; want 3 more", before, after)
	}
	if pid, err := os.ReadFile(filepath.Join(r.root, PIDFile)); err != nil || strings.TrimSpace(string(pid)) != fmt.Sprint(os.Getpid()) {
		t.Errorf("PID file = %q, %v; want %d", pid, err, os.Getpid())
	}
	// The console shell ran on the console device.
	eventually(t, "the shell prints on the console", func() bool {
		b, _ := os.ReadFile(filepath.Join(r.root, "console"))
		return strings.Contains(string(b), "helper shell waiting") && strings.Contains(string(b), "meshd -poweroff")
	})

	// Power off: clean stop, watchdog disarmed, data synced and unmounted, then power off.
	r.actions <- PowerOff
	select {
	case <-done:
	case <-time.After(hang):
		t.Fatal("Run did not return after the power-off request")
	}
	if res.err != nil || res.action != PowerOff {
		t.Errorf("Run() = %v, %v; want PowerOff, nil", res.action, res.err)
	}
	if _, closed, magic := r.wd.State(); !closed || !magic {
		t.Errorf("watchdog closed %v magic %v; want a magic close", closed, magic)
	}
	if !slices.Contains(r.mounter.Events(), "umount "+filepath.Join(r.root, "data")) {
		t.Errorf("data not unmounted: %v", r.mounter.Events())
	}
	calls := r.power.Events()
	if len(calls) < 2 || calls[len(calls)-1] != "poweroff" || calls[len(calls)-2] != "sync" {
		t.Errorf("power calls %v; want ... sync, poweroff", calls)
	}
	if _, err := os.Stat(filepath.Join(r.root, PIDFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("PID file left behind: %v", err)
	}
	out := r.console.String()
	for _, s := range []string{`"msg":"service stopped","service":"console"`, `"msg":"data partition unmounted"`, `"msg":"powering off"`} {
		if !strings.Contains(out, s) {
			t.Errorf("console lacks %s", s)
		}
	}
	// Reverse order: lan before data (it depends on it); the watchdog outlives everything, so
	// a shutdown that hangs still resets the board.
	stopped := func(name string) int {
		return strings.Index(out, `"msg":"service stopped","service":"`+name+`"`)
	}
	if stopped("lan") < 0 || stopped("lan") > stopped("data") {
		t.Errorf("lan did not stop before data")
	}
	for _, s := range []string{"lan", "console", "data"} {
		if stopped(s) > stopped("watchdog") {
			t.Errorf("watchdog stopped before %s", s)
		}
	}
}

func TestRunGenericFallback(t *testing.T) {
	r := newBootRig(t, "acme,unknown-router")
	r.net.AddLink(Link{Name: "eth2", Kind: "device", Ethernet: true})
	r.net.AddLink(Link{Name: "wlan0", Kind: "device"}) // wireless: not a port
	r.opts.NoConsole = true
	_, _ = r.start(t)
	info := r.waitReady(t)
	if info.Board != "generic" || !cmp.Equal(info.Services, []string{"data", "lan", "watchdog"}) {
		t.Errorf("ready = %+v; want board generic with data, lan, watchdog", info)
	}
	out := r.console.String()
	if !strings.Contains(out, "board detection failed; using the generic profile") || !strings.Contains(out, "acme,unknown-router") {
		t.Errorf("console does not explain the fallback:\n%s", out)
	}
	// No data partition on an unknown board: RAM.
	if !slices.Contains(r.mounter.Events(), "mount tmpfs tmpfs "+filepath.Join(r.root, "data")) {
		t.Errorf("mounts %v: want tmpfs on data", r.mounter.Events())
	}
	for name, master := range map[string]string{"eth0": "", "eth1": "br-lan", "eth2": "br-lan", "wlan0": ""} {
		if l, _, _ := r.net.Link(name); l.Master != master {
			t.Errorf("%s master = %q; want %q", name, l.Master, master)
		}
	}
	if len(r.modules.Loaded) != 0 {
		t.Errorf("generic board loaded modules %v; want none", r.modules.Loaded)
	}
}

func TestRunDataMountFailsFallsBackToRAM(t *testing.T) {
	r := newBootRig(t, "linux,dummy-virt")
	r.mounter.Fail = map[string]error{filepath.Join(r.root, "dev/vda3"): unix.EINVAL}
	r.opts.NoConsole = true
	r.opts.Services = func(d *Device) []Service {
		return []Service{Func("probe", []string{"data"}, func(ctx context.Context, up func()) error {
			if d.Persistent() {
				return Permanent(errors.New("data claims to be persistent"))
			}
			if err := d.Store().Put("probe", map[string]int{"x": 1}); err != nil {
				return Permanent(err)
			}
			up()
			<-ctx.Done()
			return nil
		})}
	}
	_, _ = r.start(t)
	info := r.waitReady(t)
	if !cmp.Equal(info.Services, []string{"data", "lan", "watchdog", "probe"}) {
		t.Errorf("services up = %v; want data, lan, watchdog, probe (the LAN works without the flash)", info.Services)
	}
	out := r.console.String()
	if !strings.Contains(out, "data partition not mounted; using RAM") || !strings.Contains(out, "invalid argument") {
		t.Errorf("console does not report the data mount failure:\n%s", out)
	}
}

func TestRunLANPortAppearsLater(t *testing.T) {
	r := newBootRig(t, "linux,dummy-virt")
	r.net = &FakeNet{}
	r.net.AddLink(Link{Name: "eth0", Kind: "device", Ethernet: true})
	r.opts.Sys.Net = r.net
	r.opts.NoConsole = true
	r.opts.LANRescan = 5 * time.Second
	_, _ = r.start(t)
	r.waitReady(t)
	if !strings.Contains(r.console.String(), `"msg":"lan: port not present (yet)","port":"eth1"`) {
		t.Errorf("missing port not reported:\n%s", r.console.String())
	}
	r.net.AddLink(Link{Name: "eth1", Kind: "device", Ethernet: true})
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	// Move the clock until the LAN service's rescan picks eth1 up.
	eventually(t, "eth1 joins br-lan", func() bool {
		if l, _, _ := r.net.Link("eth1"); l.Master == "br-lan" {
			return true
		}
		r.clock.WaitTimers(ctx, 1)
		r.clock.Advance(5 * time.Second)
		return false
	})
}

func TestRunStoredLANConfig(t *testing.T) {
	r := newBootRig(t, "linux,dummy-virt")
	r.opts.NoConsole = true
	// A previous boot stored settings; one bad document must not take the LAN down.
	mkfile(t, r.root, "data/config/lan.json", `{"bridge":"br-home","address":"10.10.0.1/16"}`)
	_, _ = r.start(t)
	r.waitReady(t)
	if _, addrs, ok := r.net.Link("br-home"); !ok || !slices.Equal(addrs, []netip.Prefix{netip.MustParsePrefix("10.10.0.1/16")}) {
		t.Errorf("br-home = %v (exists %v); want 10.10.0.1/16", addrs, ok)
	}

	r2 := newBootRig(t, "linux,dummy-virt")
	r2.opts.NoConsole = true
	mkfile(t, r2.root, "data/config/lan.json", `{"bridge":"br-lan","address":"10.10.0.0/16"}`)
	_, _ = r2.start(t)
	r2.waitReady(t)
	if _, addrs, _ := r2.net.Link("br-lan"); !slices.Equal(addrs, []netip.Prefix{netip.MustParsePrefix("192.168.1.1/24")}) {
		t.Errorf("br-lan = %v; want the default after an invalid stored address", addrs)
	}
	if !strings.Contains(r2.console.String(), "lan: stored settings invalid") {
		t.Errorf("invalid settings not reported")
	}
}

func TestRunHaltOnCancel(t *testing.T) {
	r := newBootRig(t, "linux,dummy-virt")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan runResult, 1)
	go func() {
		a, err := Run(ctx, r.opts)
		done <- runResult{a, err}
	}()
	r.waitReady(t)
	cancel()
	select {
	case res := <-done:
		if res.err != nil || res.action != Halt {
			t.Errorf("Run() = %v, %v; want Halt, nil", res.action, res.err)
		}
	case <-time.After(hang):
		t.Fatal("Run did not return")
	}
	if calls := r.power.Events(); slices.Contains(calls, "poweroff") || slices.Contains(calls, "reboot") {
		t.Errorf("power calls %v on halt; want neither reboot nor poweroff", calls)
	}
	if _, closed, magic := r.wd.State(); !closed || !magic {
		t.Errorf("watchdog not magic-closed on halt")
	}
}

func TestRunPowerOffWhenReady(t *testing.T) {
	r := newBootRig(t, "linux,dummy-virt")
	r.opts.AfterReady = PowerOff
	r.opts.NoConsole = true
	done, res := r.start(t)
	select {
	case <-done:
		if res.err != nil || res.action != PowerOff {
			t.Errorf("Run() = %v, %v; want PowerOff", res.action, res.err)
		}
	case <-time.After(hang):
		t.Fatal("Run did not power off after ready")
	}
	r.readyLine(t)
	if calls := r.power.Events(); len(calls) == 0 || calls[len(calls)-1] != "poweroff" {
		t.Errorf("power calls %v; want poweroff last", calls)
	}
}

func TestRunDevelopmentMode(t *testing.T) {
	root := t.TempDir()
	console := &syncBuffer{}
	ready := make(chan ReadyInfo, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mounter := &FakeMounter{}
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, Options{Root: root, Board: "qemu-x86_64", Console: console,
			Sys:     System{Mounter: mounter, Net: &FakeNet{}, Power: &FakePower{}},
			OnReady: func(i ReadyInfo) { ready <- i }})
		done <- err
	}()
	var info ReadyInfo
	select {
	case info = <-ready:
	case <-time.After(hang):
		t.Fatal("no ready line")
	}
	if info.Board != "qemu-x86_64" || info.Version != DevVersion || !cmp.Equal(info.Services, []string{"data"}) {
		t.Errorf("ready = %+v; want qemu-x86_64, dev, [data]", info)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run() = %v", err)
	}
	if ev := mounter.Events(); len(ev) != 0 {
		t.Errorf("development run mounted %v; want nothing", ev)
	}
	if _, err := os.Stat(filepath.Join(root, "data/config")); err != nil {
		t.Errorf("config store not created: %v", err)
	}
}

func TestRequest(t *testing.T) {
	root := t.TempDir()
	if err := Request(root, PowerOff); err == nil {
		t.Errorf("Request() without a PID file = nil; want an error")
	}
	mkfile(t, root, PIDFile, "not-a-pid\n")
	if err := Request(root, PowerOff); err == nil || !strings.Contains(err.Error(), "bad PID") {
		t.Errorf("Request() with a bad PID file = %v; want bad PID", err)
	}
}

func TestConsoleRespawn(t *testing.T) {
	root := t.TempDir()
	mkfile(t, root, "console", "")
	dev := &Device{Root: root, Board: board.Generic(), Log: NewLogging(nil, 100, 1<<20).Logger}
	svc := &ConsoleService{Dev: dev, Shell: helperShell(t, "exit"), Device: filepath.Join(root, "console")}
	h := startSupervisor(t, SupervisorOptions{}, svc)
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	for i := range 3 {
		st := h.w.wait(t, "console", StateBackoff)
		if !strings.Contains(st.LastError, "shell exited") {
			t.Errorf("LastError = %q; want shell exited", st.LastError)
		}
		if st.Restarts != i {
			t.Errorf("restarts = %d; want %d", st.Restarts, i)
		}
		h.clock.WaitTimers(ctx, 1)
		h.clock.Advance(time.Hour)
	}
	b, _ := os.ReadFile(filepath.Join(root, "console"))
	if n := strings.Count(string(b), "helper shell ran"); n < 3 {
		t.Errorf("the shell ran %d times; want at least 3 (respawned)", n)
	}
}

func TestWatchdogServiceHealth(t *testing.T) {
	root := t.TempDir()
	mkfile(t, root, "dev/watchdog", "")
	b, _ := board.Lookup("qemu-virt-arm64")
	clock := NewFakeClock(time.Unix(1e9, 0))
	fake := NewFakeWatchdog()
	fake.MaxTimeout = 15 * time.Second // the driver caps the asked 30 s
	healthy := make(chan error)
	asked := make(chan struct{})
	svc := &WatchdogService{
		Dev: &Device{Root: root, Board: b, Log: NewLogging(nil, 100, 1<<20).Logger, Clock: clock,
			Sys: System{Watchdog: fake.Opener()}},
		Health: func(ctx context.Context) error {
			asked <- struct{}{}
			return <-healthy
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	upc := make(chan struct{})
	go func() { done <- svc.Run(ctx, func() { close(upc) }) }()
	<-upc
	if fake.Timeout != 15*time.Second {
		t.Errorf("timeout = %v; want the driver's 15s", fake.Timeout)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), hang)
	defer wcancel()
	step := func(h error) int {
		clock.WaitTimers(wctx, 1)
		clock.Advance(5 * time.Second) // a third of 15 s
		<-asked
		healthy <- h
		clock.WaitTimers(wctx, 1) // the loop went round
		n, _, _ := fake.State()
		return n
	}
	n0, _, _ := fake.State()
	if n := step(nil); n != n0+1 {
		t.Errorf("healthy: keepalives %d; want %d", n, n0+1)
	}
	if n := step(errors.New("supervisor wedged")); n != n0+1 {
		t.Errorf("unhealthy: keepalives %d; want still %d (no feed)", n, n0+1)
	}
	if n := step(nil); n != n0+2 {
		t.Errorf("healthy again: keepalives %d; want %d", n, n0+2)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run() = %v", err)
	}
	if _, closed, magic := fake.State(); !closed || !magic {
		t.Errorf("closed %v magic %v; want magic close", closed, magic)
	}
}

func TestWatchdogServiceNoDevice(t *testing.T) {
	b, _ := board.Lookup("qemu-virt-arm64")
	svc := &WatchdogService{
		Dev: &Device{Root: t.TempDir(), Board: b, Log: NewLogging(nil, 100, 1<<20).Logger, Clock: RealClock{},
			Sys: System{Watchdog: OpenRealWatchdog}},
		WaitDevice: time.Millisecond,
	}
	ctx, cancel := context.WithCancel(context.Background())
	upc := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx, func() { close(upc) }) }()
	select {
	case <-upc:
	case err := <-done:
		t.Fatalf("Run() = %v; want up without a device", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run() = %v", err)
	}
}

// TestDataServiceAlreadyMounted: a restarted data service adopts the mount its earlier run made
// (here the RAM fallback) instead of mounting again, and still unmounts it at shutdown.
func TestDataServiceAlreadyMounted(t *testing.T) {
	root := t.TempDir()
	b, _ := board.Lookup("qemu-virt-arm64")
	m := &FakeMounter{}
	target := filepath.Join(root, "data")
	if err := m.Mount("tmpfs", target, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	dev := &Device{Root: root, Board: b, Log: NewLogging(nil, 100, 1<<20).Logger, Clock: RealClock{},
		Sys: System{Mounter: m, Power: &FakePower{}}}
	svc := &DataService{Dev: dev, Boot: true, WaitDevice: time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	upc := make(chan struct{})
	go func() { done <- svc.Run(ctx, func() { close(upc) }) }()
	<-upc
	if dev.Persistent() || dev.Store() == nil {
		t.Errorf("Persistent() = %v, Store() = %v; want a RAM store", dev.Persistent(), dev.Store())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run() = %v", err)
	}
	want := []string{"mount tmpfs tmpfs " + target, "umount " + target}
	if diff := cmp.Diff(want, m.Events()); diff != "" {
		t.Errorf("mount events mismatch (-want +got):\n%s", diff)
	}
}
