package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ProcessSpec describes a process to start.
type ProcessSpec struct {
	// Name names the instance (log file name, messages). Default: base name of Path.
	Name string
	// NS is the namespace to run in (via `ip netns exec`); nil runs in the caller's namespace.
	NS *NS
	// Path and Args are the program and its arguments (Args without argv[0]).
	Path string
	Args []string
	// Env is added to the inherited environment.
	Env []string
	// Dir is the working directory (default: the instance directory).
	Dir string
	// MountRun, if set, is bind-mounted onto /run inside the process's private mount namespace
	// (the one `ip netns exec` creates) before Path is executed: daemons with hard-coded
	// /run/... pid files (charon) can then run once per namespace. Needs NS.
	MountRun string
	// LogDir is where NAME.log goes (default: a new instance directory in the lab dir).
	LogDir string
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL (default 5 s).
	StopTimeout time.Duration
}

// Process is a process started by a Lab, tracked by PID. Its stdout and stderr go to LogPath.
// Lab.Close stops it (SIGTERM, then SIGKILL after StopTimeout) unless it has exited.
type Process struct {
	name        string
	ns          *NS
	cmd         *exec.Cmd
	logPath     string
	stopTimeout time.Duration
	done        chan struct{}
	waitErr     error
	stopOnce    sync.Once
	stopErr     error
	extraLogs   []string // more logs to show on failure (e.g. charon's filelog)
	hint        string   // how to inspect it (Describe)
}

// Start starts a tracked process inside the namespace: stdout and stderr go to a log file in a
// per-instance directory of the lab; Lab.Close stops it. Do not call it from inside NS.Do.
func (ns *NS) Start(name string, args ...string) (*Process, error) {
	return ns.lab.StartProcess(ProcessSpec{NS: ns, Path: name, Args: args})
}

// StartProcess starts a process described by spec.
func (l *Lab) StartProcess(spec ProcessSpec) (*Process, error) {
	if spec.Path == "" {
		return nil, errors.New("lab: process: empty Path")
	}
	if spec.Name == "" {
		spec.Name = filepath.Base(spec.Path)
	}
	if spec.StopTimeout == 0 {
		spec.StopTimeout = 5 * time.Second
	}
	logDir := spec.LogDir
	if logDir == "" {
		d, err := l.instanceDir(spec.Name)
		if err != nil {
			return nil, err
		}
		logDir = d
	}
	if spec.Dir == "" {
		spec.Dir = logDir
	}
	logPath := filepath.Join(logDir, spec.Name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lab: %s: log: %w", spec.Name, err)
	}
	argv := append([]string{spec.Path}, spec.Args...)
	if spec.MountRun != "" {
		if spec.NS == nil {
			f.Close()
			return nil, fmt.Errorf("lab: %s: MountRun needs a namespace", spec.Name)
		}
		// sh -c 'mount --bind "$0" /run && exec "$@"' DIR PATH ARGS...
		argv = append([]string{"sh", "-c", `mount --bind "$0" /run && exec "$@"`, spec.MountRun}, argv...)
	}
	var cmd *exec.Cmd
	if spec.NS != nil {
		cmd = exec.Command("ip", append([]string{"netns", "exec", spec.NS.Name}, argv...)...)
	} else {
		cmd = exec.Command(argv[0], argv[1:]...)
	}
	cmd.Env = append(os.Environ(), spec.Env...)
	cmd.Dir = spec.Dir
	cmd.Stdout = f
	cmd.Stderr = f
	// Its own process group (a terminal's Ctrl-C goes to us, and we stop it in order), and
	// SIGKILLed if the thread that forked it dies: startOnSpawner forks from a thread that lives
	// as long as the process, so the child dies with us (a crashed test leaves no daemons).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	fmt.Fprintf(f, "# %s: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(cmd.Args, " "))
	if err := startOnSpawner(cmd); err != nil {
		f.Close()
		return nil, fmt.Errorf("lab: start %s: %w", spec.Name, err)
	}
	p := &Process{name: spec.Name, ns: spec.NS, cmd: cmd, logPath: logPath, stopTimeout: spec.StopTimeout, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	l.onClose(fmt.Sprintf("process %s (pid %d)", spec.Name, p.PID()), p.Stop)
	l.log.Debug("process started", "name", spec.Name, "pid", p.PID(), "ns", p.nsName(), "log", logPath)
	return p, nil
}

// Name is the instance name.
func (p *Process) Name() string { return p.name }

// PID is the process ID.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// LogPath is the file holding the process's stdout and stderr.
func (p *Process) LogPath() string { return p.logPath }

// Log returns the process's output so far.
func (p *Process) Log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is the process's exit status once it has exited (nil before, or on exit code 0).
func (p *Process) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.waitErr
}

// Wait waits for the process to exit or ctx to end.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.waitErr
	case <-ctx.Done():
		return fmt.Errorf("lab: waiting for %s (pid %d): %w", p.name, p.PID(), ctx.Err())
	}
}

// Signal sends sig to the process (only while it is running).
func (p *Process) Signal(sig os.Signal) error {
	if p.Exited() {
		return fmt.Errorf("lab: %s (pid %d) has exited", p.name, p.PID())
	}
	return p.cmd.Process.Signal(sig)
}

// Stop sends SIGTERM, waits up to the stop timeout, then SIGKILL, and waits for the exit. It
// returns nil when the process ends (whatever its exit status). Safe to call more than once.
func (p *Process) Stop() error {
	p.stopOnce.Do(func() {
		if p.Exited() {
			return
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
			return
		case <-time.After(p.stopTimeout):
		}
		_ = p.cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			p.stopErr = fmt.Errorf("lab: %s (pid %d) did not exit after SIGKILL", p.name, p.PID())
		}
	})
	return p.stopErr
}

func (p *Process) nsName() string {
	if p.ns == nil {
		return "-"
	}
	return p.ns.Name
}

// CPUTime returns the process's user+system CPU time so far, from /proc/PID/stat.
func (p *Process) CPUTime() (time.Duration, error) {
	return CPUTime(p.PID())
}

// CPUTime returns a process's user+system CPU time (utime+stime from /proc/PID/stat).
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("lab: cpu time of pid %d: %w", pid, err)
	}
	return parseStatCPU(string(b))
}

// clockTicks is sysconf(_SC_CLK_TCK); 100 on every Linux architecture Go supports.
const clockTicks = 100

// parseStatCPU extracts utime+stime from a /proc/PID/stat line.
func parseStatCPU(stat string) (time.Duration, error) {
	// The command name (field 2) is in parentheses and may contain spaces or ')'.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("lab: /proc stat: no ')' in %q", truncate(stat, 64))
	}
	f := strings.Fields(stat[i+1:])
	// After ')': state(3) ppid(4) ... utime(14) stime(15) → indexes 11 and 12 here.
	if len(f) < 13 {
		return 0, fmt.Errorf("lab: /proc stat: %d fields after comm; want >= 13", len(f))
	}
	var ut, st uint64
	if _, err := fmt.Sscan(f[11], &ut); err != nil {
		return 0, fmt.Errorf("lab: /proc stat: utime %q: %w", f[11], err)
	}
	if _, err := fmt.Sscan(f[12], &st); err != nil {
		return 0, fmt.Errorf("lab: /proc stat: stime %q: %w", f[12], err)
	}
	const maxTicks = uint64(1<<63-1) / uint64(time.Second/clockTicks)
	if ut > maxTicks || st > maxTicks || ut+st > maxTicks {
		return 0, fmt.Errorf("lab: /proc stat: cpu ticks out of range")
	}
	return time.Duration(ut+st) * (time.Second / clockTicks), nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// CPUMeter measures the CPU used by a set of processes over an interval.
type CPUMeter struct {
	pids  []int
	start []time.Duration
	t0    time.Time
}

// StartCPUMeter records the current CPU times of pids.
func StartCPUMeter(pids ...int) (*CPUMeter, error) {
	m := &CPUMeter{pids: pids, t0: time.Now()}
	for _, pid := range pids {
		c, err := CPUTime(pid)
		if err != nil {
			return nil, err
		}
		m.start = append(m.start, c)
	}
	return m, nil
}

// Percent returns, for each pid, the CPU time used since StartCPUMeter as a percentage of one
// core over the elapsed wall time.
func (m *CPUMeter) Percent() ([]float64, error) {
	el := time.Since(m.t0)
	out := make([]float64, len(m.pids))
	for i, pid := range m.pids {
		c, err := CPUTime(pid)
		if err != nil {
			return nil, err
		}
		out[i] = 100 * float64(c-m.start[i]) / float64(el)
	}
	return out, nil
}

// LoadAvg returns the 1-minute load average (/proc/loadavg), to report beside benchmark numbers
// on a shared machine.
func LoadAvg() (float64, error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, fmt.Errorf("lab: loadavg: %w", err)
	}
	var l float64
	if _, err := fmt.Sscan(string(b), &l); err != nil {
		return 0, fmt.Errorf("lab: loadavg %q: %w", truncate(string(b), 40), err)
	}
	return l, nil
}

// Pdeathsig fires when the *thread* that forked the child exits. Go destroys a thread when a
// goroutine locked to it exits (NS.Do does exactly that), so children are forked from one
// dedicated goroutine that locks its thread and never exits.
var (
	spawnOnce sync.Once
	spawnReq  chan spawnRequest
)

type spawnRequest struct {
	cmd  *exec.Cmd
	errc chan error
}

func startOnSpawner(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnReq = make(chan spawnRequest)
		go func() {
			runtime.LockOSThread() // never unlocked: this thread lives as long as the process
			for r := range spawnReq {
				r.errc <- r.cmd.Start()
			}
		}()
	})
	errc := make(chan error, 1)
	spawnReq <- spawnRequest{cmd, errc}
	return <-errc
}
