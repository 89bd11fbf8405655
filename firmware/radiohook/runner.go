package radiohook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Runner starts hostapd processes. ExecRunner runs Debian's hostapd; FakeRunner (for unit tests
// only) plays one with radio/hostapd's protocol fake.
type Runner interface {
	// Start starts hostapd on conf (a rendered hostapd.conf) with its PID in pidFile, sending
	// its output, line by line, to out.
	Start(ctx context.Context, conf, pidFile string, out io.Writer) (Process, error)
}

// Process is one running hostapd.
type Process interface {
	// PID is the process ID.
	PID() int
	// Done is closed when the process has ended; Err then says how.
	Done() <-chan struct{}
	Err() error
	// Stop ends the process (SIGTERM, SIGKILL after a grace period) and waits for it.
	Stop() error
}

// HostapdBinary is Debian's hostapd, where the image puts it (image.RadioPrograms).
const HostapdBinary = "/usr/sbin/hostapd"

// ExecRunner runs hostapd as a child of meshd: `hostapd -P PIDFILE CONF` in the foreground
// (meshd supervises it; no -B), in its own process group, so signals meant for meshd's group
// (the console's ^C) do not reach it.
type ExecRunner struct {
	// Binary is hostapd (default HostapdBinary).
	Binary string
	// Grace is how long Stop waits after SIGTERM before SIGKILL (default 5 s).
	Grace time.Duration
}

// Start implements Runner.
func (r ExecRunner) Start(ctx context.Context, conf, pidFile string, out io.Writer) (Process, error) {
	bin := r.Binary
	if bin == "" {
		bin = HostapdBinary
	}
	cmd := exec.Command(bin, "-P", pidFile, conf)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &execProcess{cmd: cmd, done: make(chan struct{}), grace: r.Grace}
	if p.grace <= 0 {
		p.grace = 5 * time.Second
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

type execProcess struct {
	cmd   *exec.Cmd
	done  chan struct{}
	err   error
	grace time.Duration
}

func (p *execProcess) PID() int              { return p.cmd.Process.Pid }
func (p *execProcess) Done() <-chan struct{} { return p.done }

func (p *execProcess) Err() error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

// Stop signals only this process (by its PID, never by name).
func (p *execProcess) Stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(p.grace):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return errors.New("hostapd did not stop on SIGTERM; killed")
}

// killStale ends a hostapd a previous meshd left running on the same configuration (meshd
// restarted without a reboot): the PID in pidFile, if that process is hostapd running conf.
// It never signals anything else.
func killStale(root, pidFile, conf string, log *slog.Logger) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return
	}
	defer os.Remove(pidFile)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 || pid == os.Getpid() {
		return
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("%s/proc/%d/cmdline", strings.TrimSuffix(root, "/"), pid))
	if err != nil {
		return
	}
	args := bytes.Split(bytes.TrimRight(cmdline, "\x00"), []byte{0})
	if len(args) == 0 || !bytes.HasSuffix(args[0], []byte("hostapd")) || string(args[len(args)-1]) != conf {
		return
	}
	log.Warn("radio: stopping a hostapd left over from an earlier run", "pid", pid, "conf", conf)
	_ = syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 50; i++ {
		if err := syscall.Kill(pid, 0); err != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
}

// lineLogger is an io.Writer that logs each line hostapd prints (its default verbosity: state
// changes, AP-ENABLED, stations' association and authentication, never keys). Partial lines wait
// for their end; very long ones are cut.
type lineLogger struct {
	log *slog.Logger
	mu  sync.Mutex
	buf []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			if len(l.buf) > 4096 {
				l.emit(l.buf)
				l.buf = l.buf[:0]
			}
			return len(p), nil
		}
		l.emit(l.buf[:i])
		l.buf = l.buf[i+1:]
	}
}

func (l *lineLogger) emit(line []byte) {
	s := strings.TrimSpace(string(line))
	if s == "" {
		return
	}
	if len(s) > 512 {
		s = s[:512]
	}
	l.log.Info("hostapd", "out", s)
}
