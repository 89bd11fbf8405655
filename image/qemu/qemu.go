// Package qemu boots firmware images in QEMU under TCG (KVM hangs on these machines, see
// ../shared/notes/image-lab.md): qemu-system-aarch64 -M virt -cpu cortex-a53 for arm64 boards,
// qemu-system-x86_64 for amd64 ones. It captures the serial console line by line with
// timestamps (to a log file too), waits for lines, writes to the console, attaches a persistent
// virtio data disk laid out like the board's flash, an i6300esb watchdog and any network
// devices a test asks for (none by default: no QEMU user networking, which would reach outside
// our namespaces), and stops only the QEMU process it started, by PID.
package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
)

// NIC is one virtio network device backed by a QEMU netdev.
type NIC struct {
	// Netdev is the -netdev backend without its id, e.g.
	// "tap,ifname=mr1wan,script=no,downscript=no" or "socket,listen=127.0.0.1:7000".
	Netdev string
	// MAC is the device's MAC address ("" lets QEMU choose).
	MAC string
	// Model is the device model (virtio-net-pci when "").
	Model string
}

// TapNIC is a NIC on an existing TAP device (created by the caller, e.g. in a namespace lab).
func TapNIC(ifname, mac string) NIC {
	return NIC{Netdev: "tap,ifname=" + ifname + ",script=no,downscript=no", MAC: mac}
}

// Config describes one VM.
type Config struct {
	// Arch is the guest GOARCH: "arm64" or "amd64".
	Arch string
	// Kernel and Initrd are the files to boot.
	Kernel, Initrd string
	// Console is the kernel console device (the board's, e.g. "ttyAMA0" or "ttyS0").
	Console string
	// Append are extra kernel command-line arguments.
	Append []string
	// MemoryMB and SMP size the VM (512 MiB and 1 vCPU when 0: the CI machine has 2 cores).
	MemoryMB, SMP int
	// Disk is a raw disk image attached as virtio-blk-pci (/dev/vda), "" for none.
	Disk string
	// Watchdog adds an i6300esb watchdog; WatchdogAction is QEMU's action when it fires
	// ("reset" when ""; "poweroff", "pause", "none"...).
	Watchdog       bool
	WatchdogAction string
	// NICs are network devices; none means `-nic none` (no network at all).
	NICs []NIC
	// AllowReboot keeps QEMU running when the guest reboots; by default a guest reboot (and a
	// kernel panic, via panic=-1) ends QEMU, so a crash never hangs a test.
	AllowReboot bool
	// Extra are more QEMU arguments, appended last.
	Extra []string
	// Binary overrides the QEMU executable.
	Binary string
	// LogPath receives the console as timestamped lines ("[  2.345] text"); "" for none.
	LogPath string
	// Echo receives the console output as it arrives (e.g. os.Stdout, or a test log writer).
	Echo io.Writer
	// Interactive connects the serial console to this process's terminal (stdin) with QEMU's
	// mux, so Ctrl-A X quits and Ctrl-A C opens the monitor. Console output is still captured.
	Interactive bool
	// NoTerminalReplies turns off the one terminal reply the runner gives when not interactive:
	// a cursor position report for each "ESC [ 6 n" query. gosh (bubbletea/termenv) asks for
	// the terminal's colours and fences the questions with that query; unanswered, the shell
	// takes 10 s to show its prompt and swallows what is typed meanwhile.
	NoTerminalReplies bool
}

// Binary returns the QEMU system emulator for arch.
func Binary(arch string) (string, error) {
	switch arch {
	case "arm64":
		return "qemu-system-aarch64", nil
	case "amd64":
		return "qemu-system-x86_64", nil
	}
	return "", fmt.Errorf("qemu: arch %q: want arm64 or amd64", arch)
}

// Args returns QEMU's command line (without the binary) for c; qmpSocket is the QMP control
// socket path ("" for none).
func (c Config) Args(qmpSocket string) ([]string, error) {
	if c.Kernel == "" {
		return nil, errors.New("qemu: kernel is required")
	}
	if c.Console == "" {
		return nil, errors.New("qemu: console is required (the board's Console)")
	}
	mem, smp := c.MemoryMB, c.SMP
	if mem == 0 {
		mem = 512
	}
	if smp == 0 {
		smp = 1
	}
	if mem < 64 || smp < 1 || smp > 8 {
		return nil, fmt.Errorf("qemu: memory %d MiB, %d vCPUs: want >= 64 MiB and 1-8 vCPUs", mem, smp)
	}
	var a []string
	switch c.Arch {
	case "arm64":
		a = append(a, "-M", "virt", "-cpu", "cortex-a53", "-accel", "tcg")
	case "amd64":
		a = append(a, "-M", "pc", "-cpu", "max", "-accel", "tcg")
	default:
		return nil, fmt.Errorf("qemu: arch %q: want arm64 or amd64", c.Arch)
	}
	a = append(a, "-nodefaults", "-no-user-config", "-display", "none",
		"-m", strconv.Itoa(mem), "-smp", strconv.Itoa(smp))
	cmdline := append([]string{"console=" + c.Console, "panic=-1"}, c.Append...)
	a = append(a, "-kernel", c.Kernel)
	if c.Initrd != "" {
		a = append(a, "-initrd", c.Initrd)
	}
	a = append(a, "-append", strings.Join(cmdline, " "))
	if c.Interactive {
		a = append(a, "-serial", "mon:stdio")
	} else {
		a = append(a, "-serial", "stdio")
	}
	if qmpSocket != "" {
		a = append(a, "-qmp", "unix:"+qmpSocket+",server=on,wait=off")
	}
	if !c.AllowReboot {
		a = append(a, "-no-reboot")
	}
	if c.Disk != "" {
		if strings.Contains(c.Disk, ",") {
			return nil, fmt.Errorf("qemu: disk path %q: commas are not allowed", c.Disk)
		}
		a = append(a, "-drive", "if=none,id=disk0,format=raw,file="+c.Disk,
			"-device", "virtio-blk-pci,drive=disk0")
	}
	if c.Watchdog {
		action := c.WatchdogAction
		if action == "" {
			action = "reset"
		}
		a = append(a, "-device", "i6300esb", "-action", "watchdog="+action)
	}
	if len(c.NICs) == 0 {
		a = append(a, "-nic", "none")
	}
	for i, n := range c.NICs {
		if n.Netdev == "" {
			return nil, fmt.Errorf("qemu: nic %d: netdev is empty", i)
		}
		if strings.HasPrefix(n.Netdev, "user") {
			return nil, fmt.Errorf("qemu: nic %d: user-mode networking reaches outside the lab; use a TAP or socket netdev", i)
		}
		id := fmt.Sprintf("net%d", i)
		model := n.Model
		if model == "" {
			model = "virtio-net-pci"
		}
		dev := model + ",netdev=" + id
		if n.MAC != "" {
			dev += ",mac=" + n.MAC
		}
		a = append(a, "-netdev", n.Netdev+",id="+id, "-device", dev)
	}
	return append(a, c.Extra...), nil
}

// Line is one console line and when it arrived (since QEMU started).
type Line struct {
	At   time.Duration
	Text string
}

func (l Line) String() string { return fmt.Sprintf("[%8.3f] %s", l.At.Seconds(), l.Text) }

// VM is a running QEMU.
type VM struct {
	cfg     Config
	cmd     *exec.Cmd
	start   time.Time
	stdin   io.WriteCloser
	stdinMu sync.Mutex
	esc     []byte // the last bytes of output, to spot queries split across reads
	tmpDir  string
	qmpPath string
	stderr  *tailBuffer

	mu      sync.Mutex
	lines   []Line
	partial []byte
	next    int           // WaitFor's cursor into lines
	changed chan struct{} // closed and replaced on every new line and at exit
	exited  bool
	waitErr error
	done    chan struct{}
	log     *os.File

	stopOnce sync.Once
}

// Start starts QEMU. The VM is stopped when ctx is done (that is the VM's deadline).
func Start(ctx context.Context, c Config) (*VM, error) {
	bin := c.Binary
	if bin == "" {
		var err error
		if bin, err = Binary(c.Arch); err != nil {
			return nil, err
		}
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("qemu: %w (run `make deps`)", err)
	}
	tmp, err := os.MkdirTemp("", "meshroot-qemu-")
	if err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	vm := &VM{cfg: c, tmpDir: tmp, qmpPath: filepath.Join(tmp, "qmp.sock"),
		changed: make(chan struct{}), done: make(chan struct{}), stderr: &tailBuffer{max: 8 << 10}}
	args, err := c.Args(vm.qmpPath)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	if c.LogPath != "" {
		if vm.log, err = os.Create(c.LogPath); err != nil {
			os.RemoveAll(tmp)
			return nil, fmt.Errorf("qemu: console log: %w", err)
		}
	}
	cmd := exec.Command(path, args...)
	cmd.Stderr = vm.stderr
	if c.Interactive {
		// QEMU must stay in our foreground process group to read the terminal.
		cmd.Stdin = os.Stdin
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	} else {
		if vm.stdin, err = cmd.StdinPipe(); err != nil {
			vm.cleanup()
			return nil, fmt.Errorf("qemu: %w", err)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		vm.cleanup()
		return nil, fmt.Errorf("qemu: %w", err)
	}
	vm.cmd = cmd
	vm.start = time.Now()
	if err := startOnLockedThread(cmd); err != nil {
		vm.cleanup()
		return nil, fmt.Errorf("qemu: start %s: %w", path, err)
	}
	readDone := make(chan struct{})
	go func() {
		vm.readConsole(out)
		close(readDone)
	}()
	go func() {
		<-readDone
		err := cmd.Wait()
		vm.mu.Lock()
		vm.exited = true
		vm.waitErr = err
		vm.flushPartialLocked()
		vm.notifyLocked()
		if vm.log != nil {
			vm.log.Close()
		}
		vm.mu.Unlock()
		close(vm.done)
		os.RemoveAll(vm.tmpDir)
	}()
	go func() {
		select {
		case <-ctx.Done():
			_ = vm.Stop()
		case <-vm.done:
		}
	}()
	return vm, nil
}

// starter is a goroutine locked to an OS thread that never exits. QEMU is forked from it because
// Pdeathsig is delivered when the forking *thread* exits, not the process: forked from a thread
// that a LockOSThread user (a namespace helper) lets die, QEMU would be killed mid-test.
var starter struct {
	once sync.Once
	reqs chan func()
}

func startOnLockedThread(cmd *exec.Cmd) error {
	starter.once.Do(func() {
		starter.reqs = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked: this thread lives as long as the process
			for f := range starter.reqs {
				f()
			}
		}()
	})
	errc := make(chan error, 1)
	starter.reqs <- func() { errc <- cmd.Start() }
	return <-errc
}

func (vm *VM) cleanup() {
	if vm.log != nil {
		vm.log.Close()
	}
	os.RemoveAll(vm.tmpDir)
}

// CommandLine returns the QEMU command (binary and arguments) as started.
func (vm *VM) CommandLine() []string { return vm.cmd.Args }

// PID is QEMU's process ID.
func (vm *VM) PID() int { return vm.cmd.Process.Pid }

// Started is when QEMU was started.
func (vm *VM) Started() time.Time { return vm.start }

func (vm *VM) readConsole(r io.Reader) {
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if vm.cfg.Echo != nil {
				_, _ = vm.cfg.Echo.Write(buf[:n])
			}
			vm.addOutput(buf[:n])
			if vm.stdin != nil && !vm.cfg.NoTerminalReplies {
				vm.answerQueries(buf[:n])
			}
		}
		if err != nil {
			return
		}
	}
}

func (vm *VM) addOutput(b []byte) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	at := time.Since(vm.start)
	for len(b) > 0 {
		i := indexByte(b, '\n')
		if i < 0 {
			vm.partial = append(vm.partial, b...)
			break
		}
		vm.partial = append(vm.partial, b[:i]...)
		b = b[i+1:]
		vm.addLineLocked(at)
	}
	vm.notifyLocked()
}

// cursorQuery is the ANSI "device status report: cursor position" request.
var cursorQuery = []byte("\x1b[6n")

// answerQueries replies to cursor position requests in the console output (as a terminal
// would), counting queries split across reads once.
func (vm *VM) answerQueries(b []byte) {
	data := append(vm.esc, b...)
	n := strings.Count(string(data), string(cursorQuery))
	if keep := len(cursorQuery) - 1; len(data) > keep {
		vm.esc = append(vm.esc[:0], data[len(data)-keep:]...)
	} else {
		vm.esc = append(vm.esc[:0], data...)
	}
	for range n {
		// Not inline: a blocked stdin write must never stall reading the console.
		go func() { _ = vm.send("\x1b[24;1R") }()
	}
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

func (vm *VM) addLineLocked(at time.Duration) {
	text := strings.TrimRight(string(vm.partial), "\r")
	vm.partial = vm.partial[:0]
	l := Line{At: at, Text: text}
	vm.lines = append(vm.lines, l)
	if vm.log != nil {
		fmt.Fprintln(vm.log, l.String())
	}
}

func (vm *VM) flushPartialLocked() {
	if len(vm.partial) > 0 {
		vm.addLineLocked(time.Since(vm.start))
	}
}

func (vm *VM) notifyLocked() {
	close(vm.changed)
	vm.changed = make(chan struct{})
}

// Lines returns a copy of every complete console line so far.
func (vm *VM) Lines() []Line {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return append([]Line(nil), vm.lines...)
}

// Partial returns the console output after the last newline (e.g. a shell prompt).
func (vm *VM) Partial() string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return string(vm.partial)
}

// WaitFor waits for a console line containing substr and returns it. Like expect, it searches
// from just after the line the previous WaitFor matched, so waiting twice for the same text
// waits for its second occurrence (e.g. after a reboot).
func (vm *VM) WaitFor(ctx context.Context, substr string) (Line, error) {
	l, _, err := vm.wait(ctx, fmt.Sprintf("%q", substr), func(s string) []string {
		if strings.Contains(s, substr) {
			return []string{s}
		}
		return nil
	})
	return l, err
}

// WaitForRegexp is WaitFor with a regular expression; it also returns the submatches.
func (vm *VM) WaitForRegexp(ctx context.Context, re *regexp.Regexp) (Line, []string, error) {
	return vm.wait(ctx, "/"+re.String()+"/", re.FindStringSubmatch)
}

func (vm *VM) wait(ctx context.Context, what string, match func(string) []string) (Line, []string, error) {
	vm.mu.Lock()
	from := vm.next
	vm.mu.Unlock()
	for {
		vm.mu.Lock()
		for i := from; i < len(vm.lines); i++ {
			if m := match(vm.lines[i].Text); m != nil {
				vm.next = max(vm.next, i+1)
				l := vm.lines[i]
				vm.mu.Unlock()
				return l, m, nil
			}
		}
		from = len(vm.lines)
		if vm.exited {
			err := fmt.Errorf("qemu exited (%v) before console line %s\n%s", vm.waitErr, what, vm.tailLocked(30))
			vm.mu.Unlock()
			return Line{}, nil, err
		}
		ch := vm.changed
		vm.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			vm.mu.Lock()
			err := fmt.Errorf("waiting %.1fs for console line %s: %w\n%s", time.Since(vm.start).Seconds(), what, ctx.Err(), vm.tailLocked(30))
			vm.mu.Unlock()
			return Line{}, nil, err
		}
	}
}

// Tail returns the last n console lines (and the pending partial line) as text, for errors.
func (vm *VM) Tail(n int) string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.tailLocked(n)
}

func (vm *VM) tailLocked(n int) string {
	var b strings.Builder
	from := max(len(vm.lines)-n, 0)
	fmt.Fprintf(&b, "--- console (last %d of %d lines) ---\n", len(vm.lines)-from, len(vm.lines))
	for _, l := range vm.lines[from:] {
		b.WriteString(l.String())
		b.WriteByte('\n')
	}
	if len(vm.partial) > 0 {
		fmt.Fprintf(&b, "[ partial ] %s\n", vm.partial)
	}
	if s := vm.stderr.String(); s != "" {
		fmt.Fprintf(&b, "--- qemu stderr ---\n%s", s)
	}
	return b.String()
}

// Send writes s to the serial console (add "\n" to submit a command line). Not available in
// interactive mode, where the terminal owns the console.
func (vm *VM) Send(s string) error {
	if vm.stdin == nil {
		return errors.New("qemu: console input belongs to the terminal in interactive mode")
	}
	return vm.send(s)
}

func (vm *VM) send(s string) error {
	vm.stdinMu.Lock()
	defer vm.stdinMu.Unlock()
	_, err := io.WriteString(vm.stdin, s)
	return err
}

// Done is closed when QEMU has exited.
func (vm *VM) Done() <-chan struct{} { return vm.done }

// Wait waits for QEMU to exit and returns its exit error (nil on status 0).
func (vm *VM) Wait() error {
	<-vm.done
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.waitErr
}

// Stop ends QEMU: SIGTERM (QEMU flushes the disk and restores the terminal), then SIGKILL after
// 5 s. Only our QEMU process is signalled, by PID. It returns once QEMU has been reaped.
func (vm *VM) Stop() error {
	vm.stopOnce.Do(func() {
		select {
		case <-vm.done:
			return
		default:
		}
		_ = vm.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-vm.done:
		case <-time.After(5 * time.Second):
			_ = vm.cmd.Process.Kill()
		}
	})
	<-vm.done
	return nil
}

// Powerdown presses the virtual power button (QMP system_powerdown: ACPI on x86, the GPIO power
// key on arm64 virt) and waits for the guest to power off and QEMU to exit. If ctx ends first,
// QEMU is stopped and an error says the guest did not shut down.
func (vm *VM) Powerdown(ctx context.Context) error {
	if _, err := vm.QMP(ctx, "system_powerdown", nil); err != nil {
		_ = vm.Stop()
		return err
	}
	select {
	case <-vm.done:
		return nil
	case <-ctx.Done():
		_ = vm.Stop()
		return fmt.Errorf("qemu: guest did not power off after system_powerdown: %w", ctx.Err())
	}
}

// QMP runs one QMP command on the VM's control socket and returns its "return" value.
func (vm *VM) QMP(ctx context.Context, command string, args any) (json.RawMessage, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", vm.qmpPath)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	} else {
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	}
	r := bufio.NewReader(conn)
	dec := json.NewDecoder(r)
	var greeting map[string]json.RawMessage
	if err := dec.Decode(&greeting); err != nil {
		return nil, fmt.Errorf("qmp %s: greeting: %w", command, err)
	}
	if _, ok := greeting["QMP"]; !ok {
		return nil, fmt.Errorf("qmp %s: unexpected greeting", command)
	}
	enc := json.NewEncoder(conn)
	exec := func(cmd string, args any) (json.RawMessage, error) {
		req := map[string]any{"execute": cmd}
		if args != nil {
			req["arguments"] = args
		}
		if err := enc.Encode(req); err != nil {
			return nil, err
		}
		for {
			var resp struct {
				Return json.RawMessage `json:"return"`
				Error  *struct {
					Class, Desc string
				} `json:"error"`
				Event string `json:"event"`
			}
			if err := dec.Decode(&resp); err != nil {
				return nil, err
			}
			switch {
			case resp.Event != "":
				continue // asynchronous events interleave with replies
			case resp.Error != nil:
				return nil, fmt.Errorf("%s: %s", resp.Error.Class, resp.Error.Desc)
			default:
				return resp.Return, nil
			}
		}
	}
	if _, err := exec("qmp_capabilities", nil); err != nil {
		return nil, fmt.Errorf("qmp %s: capabilities: %w", command, err)
	}
	ret, err := exec(command, args)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	return ret, nil
}

// tailBuffer keeps the last max bytes written (QEMU's stderr, for error messages).
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append([]byte(nil), t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
