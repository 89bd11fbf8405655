package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestMain lets the test binary play QEMU: with MESHROOT_FAKE_QEMU=1 it runs fakeQEMU instead
// of the tests, so Start, the console capture, Send, Stop and QMP are tested without a VM.
func TestMain(m *testing.M) {
	if os.Getenv("MESHROOT_FAKE_QEMU") == "1" {
		os.Exit(fakeQEMU(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakeQEMU prints like a booting guest, asks for the cursor position the way termenv does,
// echoes console input ("quit" exits 0, "crash" exits 3), and serves QMP on the -qmp socket
// (system_powerdown exits 0).
func fakeQEMU(args []string) int {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	go func() {
		<-term
		fmt.Fprintln(os.Stderr, "qemu-system-fake: terminating on signal 15")
		os.Exit(0)
	}()
	for i, a := range args {
		if a == "-qmp" && i+1 < len(args) {
			path := strings.TrimPrefix(strings.Split(args[i+1], ",")[0], "unix:")
			go fakeQMP(path)
		}
	}
	fmt.Print("fake qemu\r\nargs: " + strings.Join(args, " ") + "\r\n")
	fmt.Print("partial ")
	time.Sleep(20 * time.Millisecond)
	fmt.Print("line\r\n\x1b[6n")
	in := bufio.NewReader(os.Stdin)
	reply, err := in.ReadString('R')
	if err != nil || reply != "\x1b[24;1R" {
		fmt.Printf("bad cursor reply %q %v\r\n", reply, err)
		return 4
	}
	fmt.Print("cpr ok\r\n")
	for {
		line, err := in.ReadString('\n')
		if err != nil {
			return 5
		}
		switch line = strings.TrimSpace(line); line {
		case "quit":
			fmt.Print("bye\r\n")
			return 0
		case "crash":
			return 3
		default:
			fmt.Printf("echo: %s\r\n", line)
		}
	}
}

func fakeQMP(path string) {
	l, err := net.Listen("unix", path)
	if err != nil {
		return
	}
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			enc := json.NewEncoder(c)
			dec := json.NewDecoder(c)
			enc.Encode(map[string]any{"QMP": map[string]any{"version": map[string]any{}, "capabilities": []string{}}})
			for {
				var req struct {
					Execute string `json:"execute"`
				}
				if err := dec.Decode(&req); err != nil {
					return
				}
				switch req.Execute {
				case "qmp_capabilities":
					enc.Encode(map[string]any{"return": map[string]any{}})
				case "system_powerdown":
					enc.Encode(map[string]any{"event": "POWERDOWN"})
					enc.Encode(map[string]any{"return": map[string]any{}})
					fmt.Print("powering down\r\n")
					time.Sleep(50 * time.Millisecond)
					os.Exit(0)
				default:
					enc.Encode(map[string]any{"error": map[string]any{"class": "CommandNotFound", "desc": "The command " + req.Execute + " has not been found"}})
				}
			}
		}()
	}
}

func startFake(t *testing.T, ctx context.Context, c Config) *VM {
	t.Helper()
	t.Setenv("MESHROOT_FAKE_QEMU", "1")
	c.Binary = os.Args[0]
	if c.Arch == "" {
		c.Arch = "arm64"
	}
	c.Kernel, c.Console = "vmlinuz", "ttyAMA0"
	vm, err := Start(ctx, c)
	if err != nil {
		t.Fatalf("Start = %v", err)
	}
	t.Cleanup(func() { vm.Stop() })
	return vm
}

func TestConsole(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	logPath := t.TempDir() + "/console.log"
	var echo strings.Builder
	vm := startFake(t, ctx, Config{LogPath: logPath, Echo: &echo}) // read only after Wait

	l, err := vm.WaitFor(ctx, "cpr ok")
	if err != nil {
		t.Fatalf("WaitFor(cpr ok) = %v; the cursor position query was not answered", err)
	}
	if want := "\x1b[6ncpr ok"; l.Text != want {
		t.Errorf("line = %q; want %q (CR stripped)", l.Text, want)
	}
	// The expect-style cursor: lines before the last match are not searched again.
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	if _, err := vm.WaitFor(short, "fake qemu"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitFor(line before the cursor) = %v; want a deadline error", err)
	}
	cancelShort()
	var found bool
	for _, l := range vm.Lines() {
		found = found || l.Text == "partial line"
	}
	if !found {
		t.Errorf("Lines() = %v; want a line %q joined from two writes", vm.Lines(), "partial line")
	}

	if err := vm.Send("hello world\n"); err != nil {
		t.Fatal(err)
	}
	_, m, err := vm.WaitForRegexp(ctx, regexp.MustCompile(`^echo: (\w+) (\w+)$`))
	if err != nil {
		t.Fatalf("WaitForRegexp = %v", err)
	}
	if diff := cmp.Diff([]string{"echo: hello world", "hello", "world"}, m); diff != "" {
		t.Errorf("WaitForRegexp submatches (-want +got):\n%s", diff)
	}
	if err := vm.Send("quit\n"); err != nil {
		t.Fatal(err)
	}
	if err := vm.Wait(); err != nil {
		t.Errorf("Wait = %v; want a clean exit", err)
	}
	if _, err := vm.WaitFor(ctx, "never"); err == nil || !strings.Contains(err.Error(), "qemu exited") {
		t.Errorf("WaitFor after exit = %v; want a 'qemu exited' error", err)
	}

	lines := vm.Lines()
	for i := 1; i < len(lines); i++ {
		if lines[i].At < lines[i-1].At {
			t.Errorf("line %d at %v is before line %d at %v", i, lines[i].At, i-1, lines[i-1].At)
		}
	}
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	logLines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(logLines) != len(lines) {
		t.Fatalf("log has %d lines; want %d", len(logLines), len(lines))
	}
	stamp := regexp.MustCompile(`^\[ *\d+\.\d{3}\] `)
	for i, ll := range logLines {
		if !stamp.MatchString(ll) || !strings.HasSuffix(ll, lines[i].Text) {
			t.Errorf("log line %d = %q; want a [seconds] stamp and %q", i, ll, lines[i].Text)
		}
	}
	if !strings.Contains(echo.String(), "fake qemu\r\n") {
		t.Errorf("Echo got %q; want the raw console output", echo.String())
	}
	if !strings.Contains(lines[1].Text, "-serial stdio") || !strings.Contains(lines[1].Text, "-nic none") {
		t.Errorf("QEMU args %q; want -serial stdio and -nic none", lines[1].Text)
	}
}

func TestStopAndDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	vm := startFake(t, ctx, Config{})
	if _, err := vm.WaitFor(ctx, "cpr ok"); err != nil {
		t.Fatal(err)
	}
	pid := vm.PID()
	if err := vm.Stop(); err != nil {
		t.Fatalf("Stop = %v", err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("kill(%d, 0) after Stop = %v; want ESRCH (reaped)", pid, err)
	}
	if !strings.Contains(vm.Tail(5), "terminating on signal 15") {
		t.Errorf("Tail = %q; want QEMU's stderr (SIGTERM first, for a clean exit)", vm.Tail(5))
	}
	if err := vm.Stop(); err != nil {
		t.Errorf("second Stop = %v; want nil", err)
	}

	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	vm2 := startFake(t, short, Config{})
	select {
	case <-vm2.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("VM still running 10 s after its context deadline")
	}
}

func TestCrash(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	vm := startFake(t, ctx, Config{})
	if _, err := vm.WaitFor(ctx, "cpr ok"); err != nil {
		t.Fatal(err)
	}
	vm.Send("crash\n")
	var exit *exec.ExitError
	if err := vm.Wait(); !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Errorf("Wait = %v; want exit status 3", err)
	}
	if _, err := vm.WaitFor(ctx, "anything"); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("WaitFor after a crash = %v; want the exit status in the error", err)
	}
}

func TestQMPPowerdown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	vm := startFake(t, ctx, Config{})
	if _, err := vm.WaitFor(ctx, "cpr ok"); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.QMP(ctx, "no-such-command", nil); err == nil || !strings.Contains(err.Error(), "CommandNotFound") {
		t.Errorf("QMP(no-such-command) = %v; want CommandNotFound", err)
	}
	if err := vm.Powerdown(ctx); err != nil {
		t.Fatalf("Powerdown = %v", err)
	}
	if _, err := vm.WaitFor(ctx, "powering down"); err != nil {
		t.Errorf("console: %v", err)
	}
}

func TestInteractiveSendFails(t *testing.T) {
	vm := &VM{}
	if err := vm.Send("x"); err == nil {
		t.Errorf("Send in interactive mode = nil; want an error")
	}
}

func TestArgs(t *testing.T) {
	base := Config{Kernel: "k", Initrd: "i", Console: "ttyAMA0", Arch: "arm64"}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		qmp  string
		want []string
	}{
		{"arm64 defaults", nil, "", []string{
			"-M", "virt", "-cpu", "cortex-a53", "-accel", "tcg", "-nodefaults", "-no-user-config", "-display", "none",
			"-m", "512", "-smp", "1", "-kernel", "k", "-initrd", "i", "-append", "console=ttyAMA0 panic=-1",
			"-serial", "stdio", "-no-reboot", "-nic", "none"}},
		{"amd64 everything", func(c *Config) {
			c.Arch, c.Console = "amd64", "ttyS0"
			c.MemoryMB, c.SMP = 1024, 2
			c.Append = []string{"quiet", "uroot.uinitargs=-x"}
			c.Disk = "/d/disk.img"
			c.Watchdog, c.WatchdogAction = true, "poweroff"
			c.NICs = []NIC{TapNIC("mr0wan", "52:54:00:00:00:01"), {Netdev: "socket,listen=127.0.0.1:7000", Model: "e1000"}}
			c.AllowReboot = true
			c.Interactive = true
			c.Extra = []string{"-S"}
		}, "/tmp/q.sock", []string{
			"-M", "pc", "-cpu", "max", "-accel", "tcg", "-nodefaults", "-no-user-config", "-display", "none",
			"-m", "1024", "-smp", "2", "-kernel", "k", "-initrd", "i", "-append", "console=ttyS0 panic=-1 quiet uroot.uinitargs=-x",
			"-serial", "mon:stdio", "-qmp", "unix:/tmp/q.sock,server=on,wait=off",
			"-drive", "if=none,id=disk0,format=raw,file=/d/disk.img", "-device", "virtio-blk-pci,drive=disk0",
			"-device", "i6300esb", "-action", "watchdog=poweroff",
			"-netdev", "tap,ifname=mr0wan,script=no,downscript=no,id=net0", "-device", "virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01",
			"-netdev", "socket,listen=127.0.0.1:7000,id=net1", "-device", "e1000,netdev=net1",
			"-S"}},
	} {
		c := base
		if tc.edit != nil {
			tc.edit(&c)
		}
		got, err := c.Args(tc.qmp)
		if err != nil {
			t.Errorf("%s: Args = %v", tc.name, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%s: Args mismatch (-want +got):\n%s", tc.name, diff)
		}
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no kernel", func(c *Config) { c.Kernel = "" }, "kernel"},
		{"no console", func(c *Config) { c.Console = "" }, "console"},
		{"bad arch", func(c *Config) { c.Arch = "riscv64" }, "riscv64"},
		{"user net", func(c *Config) { c.NICs = []NIC{{Netdev: "user"}} }, "user-mode"},
		{"empty netdev", func(c *Config) { c.NICs = []NIC{{}} }, "netdev is empty"},
		{"comma in disk", func(c *Config) { c.Disk = "a,b" }, "commas"},
		{"too little memory", func(c *Config) { c.MemoryMB = 16 }, "memory"},
	} {
		c := base
		tc.edit(&c)
		if _, err := c.Args(""); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Args = %v; want an error containing %q", tc.name, err, tc.want)
		}
	}
	if _, err := Binary("mips"); err == nil {
		t.Errorf("Binary(mips) = nil error; want one")
	}
}
