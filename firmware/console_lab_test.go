package firmware

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"meshroot/board"
	"meshroot/internal/testenv"
)

// fakeSerial is a pseudo-terminal standing in for the serial console: the console service
// opens the slave as its console device; the test types into the master and reads what the
// console shows.
type fakeSerial struct {
	master *os.File
	slave  string
	mu     sync.Mutex
	out    bytes.Buffer
}

func newFakeSerial(t *testing.T) *fakeSerial {
	t.Helper()
	m, slave, err := openPTY()
	if err != nil {
		t.Fatalf("openPTY: %v", err)
	}
	s := &fakeSerial{master: m, slave: slave}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := m.Read(buf)
			s.mu.Lock()
			s.out.Write(buf[:n])
			s.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { m.Close() })
	return s
}

func (s *fakeSerial) shown() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

// waitFor waits until want shows up on the console.
func (s *fakeSerial) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(hang)
	for !strings.Contains(s.shown(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("%q never showed; console:\n%q", want, s.shown())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// expect types line (again every few seconds: input typed before the shell reads is lost)
// until want shows up on the console; with want "" it types once.
func (s *fakeSerial) expect(t *testing.T, line, want string) {
	t.Helper()
	deadline := time.Now().Add(hang)
	for time.Now().Before(deadline) {
		if _, err := s.master.Write([]byte("\x15" + line + "\r")); err != nil {
			t.Fatalf("type: %v", err)
		}
		if want == "" {
			return
		}
		for range 150 {
			if strings.Contains(s.shown(), want) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Fatalf("typed %q; %q never showed; console:\n%q", line, want, s.shown())
}

// buildGosh builds u-root's gosh the way the image should ship it: with the liner line editor
// (-tags goshliner). The default build's bubbline editor waits for terminal answers and hangs
// after some external commands on a serial console.
func buildGosh(t *testing.T) string {
	t.Helper()
	goTool := testenv.Command(t, "go")
	out := filepath.Join(t.TempDir(), "gosh")
	cmd := exec.Command(goTool, "build", "-tags", "goshliner", "-o", out, "github.com/u-root/u-root/cmds/core/gosh")
	cmd.Dir = testenv.RepoRoot(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build gosh: %v\n%s", err, b)
	}
	return out
}

// TestLabConsoleShellOnPTY runs the console service against a pseudo-terminal standing in for
// the serial console: the shell works (builtins, external commands), it is respawnable after
// exit, descriptors others hold on the console (u-root's init, meshd's stdout) keep working,
// and the line's settings come back afterwards. (A pty does not model the hang-up the kernel
// does on a real serial console when the session owning it ends, which is why the shell gets
// a pty of its own; the VM boot tests cover the real console.)
func TestLabConsoleShellOnPTY(t *testing.T) {
	testenv.Integration(t)
	shells := map[string][]string{"sh": {"/bin/sh", "-i"}, "gosh-liner": {buildGosh(t)}}
	for name, shell := range shells {
		t.Run(name, func(t *testing.T) {
			serial := newFakeSerial(t)
			// A descriptor opened before the shell, as u-root's init holds one.
			initFD, err := os.OpenFile(serial.slave, os.O_RDWR|unix.O_NOCTTY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer initFD.Close()
			dev := &Device{Root: "/", Board: board.Generic(), Log: NewLogging(nil, 100, 1<<20).Logger}
			svc := &ConsoleService{Dev: dev, Shell: shell, Device: serial.slave}

			done := make(chan error, 1)
			go func() { done <- svc.Run(context.Background(), func() {}) }()
			serial.expect(t, "echo MR-$((6*7))", "MR-42")
			sh, _ := exec.LookPath("sh")
			serial.expect(t, sh+" -c 'exit 0'; echo AFTER-$((2+3))", "AFTER-5")
			serial.expect(t, "exit", "") // one try: the shell is gone after it
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), "shell exited") {
					t.Errorf("Run() = %v; want shell exited (the supervisor respawns it)", err)
				}
			case <-time.After(hang):
				t.Fatalf("the shell did not exit; console:\n%q", serial.shown())
			}
			if _, err := initFD.Write([]byte("STILL-HERE\r\n")); err != nil {
				t.Errorf("console descriptor after the shell exited: %v; want it alive (not hung up)", err)
			}
			serial.waitFor(t, "STILL-HERE")

			// Stopping through the context, then the line's settings are back.
			ctx, cancel := context.WithCancel(context.Background())
			go func() { done <- svc.Run(ctx, func() {}) }()
			serial.expect(t, "echo SECOND-$((1+1))", "SECOND-2")
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run() after cancel = %v; want nil", err)
				}
			case <-time.After(hang):
				t.Fatalf("console service did not stop; console:\n%q", serial.shown())
			}
			var tio *unix.Termios
			err = control(initFD, func(fd int) (err error) { tio, err = unix.IoctlGetTermios(fd, unix.TCGETS); return err })
			if err != nil || tio.Lflag&unix.ICANON == 0 || tio.Lflag&unix.ECHO == 0 {
				t.Errorf("console termios after stop: %+v, %v; want canonical mode and echo back", tio, err)
			}
		})
	}
}
