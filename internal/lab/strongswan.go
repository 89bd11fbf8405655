package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/strongswan/govici/vici"
)

// Charon is a running strongSwan charon instance inside a namespace (kernel-libipsec: userspace
// ESP over the TUN device ipsec0). Control goes over its own vici socket.
type Charon struct {
	// NS is the namespace charon runs in.
	NS *NS
	// Dir holds strongswan.conf, swanctl.conf, charon.log and the run dir bound onto /run.
	Dir string

	lab  *Lab
	mu   sync.Mutex
	cfg  CharonConfig
	proc *Process
}

// maxSocketPath is sun_path's size on Linux minus the terminating NUL.
const maxSocketPath = 107

// TunDevice is the TUN interface kernel-libipsec creates in charon's namespace.
const TunDevice = "ipsec0"

// charonPath finds the charon binary (Debian puts it in /usr/lib/ipsec).
func charonPath() (string, error) {
	if p, err := exec.LookPath("charon"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/lib/ipsec/charon", "/usr/libexec/ipsec/charon", "/usr/lib/strongswan/charon"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("charon not found (install strongswan-charon: run `make deps`)")
}

// StartCharon writes the instance's strongswan.conf and swanctl.conf, starts charon in ns with a
// private /run (so several instances can run on one host), waits until its vici socket and
// ipsec0 exist, puts cfg.TunAddrs on ipsec0, and loads the connections (swanctl --load-all).
// Connections with StartAction "start" begin initiating at once.
func (l *Lab) StartCharon(ns *NS, cfg CharonConfig) (*Charon, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	dir, err := l.instanceDir(ns.shortName() + "-charon-" + cfg.name())
	if err != nil {
		return nil, err
	}
	c := &Charon{NS: ns, Dir: dir, lab: l, cfg: cfg}
	if n := len(c.ViciSocket()); n > maxSocketPath {
		return nil, fmt.Errorf("lab: charon %s: vici socket path %s is %d bytes; unix sockets allow %d: use a shorter lab Dir", cfg.name(), c.ViciSocket(), n, maxSocketPath)
	}
	if err := os.MkdirAll(c.runDir(), 0o755); err != nil {
		return nil, fmt.Errorf("lab: charon %s: %w", cfg.name(), err)
	}
	if err := os.WriteFile(c.ConfPath(), []byte(cfg.strongswanConf(dir)), 0o644); err != nil {
		return nil, fmt.Errorf("lab: charon %s: %w", cfg.name(), err)
	}
	if err := os.WriteFile(c.SwanctlConfPath(), []byte(cfg.swanctlConf()), 0o600); err != nil {
		return nil, fmt.Errorf("lab: charon %s: %w", cfg.name(), err)
	}
	if err := c.start(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Charon) start() error {
	path, err := charonPath()
	if err != nil {
		return fmt.Errorf("lab: charon %s: %w", c.cfg.name(), err)
	}
	_ = os.Remove(c.ViciSocket())
	_ = os.Remove(filepath.Join(c.runDir(), "charon.pid"))
	p, err := c.lab.StartProcess(ProcessSpec{
		Name:     "charon-" + c.cfg.name(),
		NS:       c.NS,
		Path:     path,
		Env:      []string{"STRONGSWAN_CONF=" + c.ConfPath()},
		MountRun: c.runDir(),
		LogDir:   c.Dir,
	})
	if err != nil {
		return err
	}
	p.extraLogs = []string{c.LogPath()}
	p.hint = fmt.Sprintf("STRONGSWAN_CONF=%s swanctl --list-sas", c.ConfPath())
	c.mu.Lock()
	c.proc = p
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.waitReady(ctx); err != nil {
		return err
	}
	if len(c.cfg.TunAddrs) > 0 {
		if err := c.NS.AddAddr(TunDevice, c.cfg.TunAddrs...); err != nil {
			return fmt.Errorf("lab: charon %s: %w", c.cfg.name(), err)
		}
	}
	if err := c.NS.LinkUp(TunDevice); err != nil {
		return fmt.Errorf("lab: charon %s: %w", c.cfg.name(), err)
	}
	if len(c.cfg.Conns) > 0 {
		if err := c.Load(); err != nil {
			return err
		}
	}
	c.lab.log.Debug("charon started", "name", c.cfg.name(), "ns", c.NS.Name, "pid", p.PID(), "dir", c.Dir)
	return nil
}

// waitReady waits for the vici socket to accept connections and for ipsec0 to exist.
func (c *Charon) waitReady(ctx context.Context) error {
	p := c.Process()
	for {
		if p.Exited() {
			return fmt.Errorf("lab: charon %s exited during startup (%v); log %s:\n%s", c.cfg.name(), p.Err(), p.LogPath(), tail(p.LogPath(), 20)+"\n"+tail(c.LogPath(), 20))
		}
		if conn, err := net.Dial("unix", c.ViciSocket()); err == nil {
			conn.Close()
			if c.NS.HasLink(TunDevice) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lab: charon %s: waiting for vici socket and %s: %w; log %s:\n%s", c.cfg.name(), TunDevice, ctx.Err(), c.LogPath(), tail(c.LogPath(), 20))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *Charon) runDir() string { return filepath.Join(c.Dir, "run") }

// ConfPath is the instance's strongswan.conf (point STRONGSWAN_CONF at it to use swanctl).
func (c *Charon) ConfPath() string { return filepath.Join(c.Dir, "strongswan.conf") }

// SwanctlConfPath is the instance's swanctl.conf (mode 0600: it holds the PSKs).
func (c *Charon) SwanctlConfPath() string { return filepath.Join(c.Dir, "swanctl.conf") }

// ViciSocket is the path of the instance's vici socket.
func (c *Charon) ViciSocket() string { return filepath.Join(c.runDir(), "charon.vici") }

// LogPath is charon's own log (filelog), the place for assertions on IKE events.
func (c *Charon) LogPath() string { return filepath.Join(c.Dir, "charon.log") }

// Log returns charon's log so far.
func (c *Charon) Log() string {
	b, _ := os.ReadFile(c.LogPath())
	return string(b)
}

// WaitLog waits until charon's log contains substr.
func (c *Charon) WaitLog(ctx context.Context, substr string) error {
	for {
		if strings.Contains(c.Log(), substr) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lab: charon %s: waiting for log line %q: %w", c.cfg.name(), substr, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Process is the charon process (current one, after Restart).
func (c *Charon) Process() *Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.proc
}

// PID is charon's process ID.
func (c *Charon) PID() int { return c.Process().PID() }

// Config returns the instance's current configuration.
func (c *Charon) Config() CharonConfig {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg
}

// Swanctl runs swanctl against this instance and returns its output (without the harmless
// "opening directory ... failed" credential-directory warnings).
func (c *Charon) Swanctl(args ...string) (string, error) {
	cmd := exec.Command("swanctl", args...)
	cmd.Env = append(os.Environ(), "STRONGSWAN_CONF="+c.ConfPath())
	out, err := cmd.CombinedOutput()
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "opening directory '") && strings.HasSuffix(l, "' failed: No such file or directory") {
			continue
		}
		keep = append(keep, l)
	}
	s := strings.Join(keep, "\n")
	if err != nil {
		return s, fmt.Errorf("lab: charon %s: swanctl %s: %w: %s", c.cfg.name(), strings.Join(args, " "), err, strings.TrimSpace(s))
	}
	return s, nil
}

// Load (re)loads swanctl.conf into charon (swanctl --load-all).
func (c *Charon) Load() error {
	_, err := c.Swanctl("--load-all", "--noprompt", "--file", c.SwanctlConfPath())
	return err
}

// Reconfigure replaces the connections (and PSKs) with cfg.Conns, rewrites swanctl.conf and
// reloads it. Other CharonConfig fields need a Restart to take effect.
func (c *Charon) Reconfigure(conns []Conn) error {
	c.mu.Lock()
	cfg := c.cfg
	c.mu.Unlock()
	cfg.Conns = conns
	if err := cfg.validate(); err != nil {
		return err
	}
	if err := os.WriteFile(c.SwanctlConfPath(), []byte(cfg.swanctlConf()), 0o600); err != nil {
		return fmt.Errorf("lab: charon %s: %w", cfg.name(), err)
	}
	c.mu.Lock()
	c.cfg = cfg
	c.mu.Unlock()
	return c.Load()
}

// Stop stops charon (SIGTERM, then SIGKILL). Its TUN device and SAs disappear; the peer sees
// a dead peer. Restart brings it back.
func (c *Charon) Stop() error { return c.Process().Stop() }

// Restart stops charon if it runs and starts it again with the same configuration, re-adding
// the inside addresses to the new ipsec0 (notes pitfall 15) and reloading the connections.
func (c *Charon) Restart() error {
	if err := c.Stop(); err != nil {
		return err
	}
	// the TUN device goes away with the process
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for c.NS.HasLink(TunDevice) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("lab: charon %s: %s still exists after stop", c.cfg.name(), TunDevice)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return c.start()
}

// viciDo runs fn with a fresh vici session; ctx's deadline bounds the whole exchange.
func (c *Charon) viciDo(ctx context.Context, fn func(*vici.Session) error) error {
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	dial := func(dctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(dctx, network, addr)
		if err == nil {
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
		}
		return conn, err
	}
	s, err := vici.NewSession(vici.WithSocketPath(c.ViciSocket()), vici.WithDialContext(dial))
	if err != nil {
		return fmt.Errorf("lab: charon %s: vici: %w", c.cfg.name(), err)
	}
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		for _, conn := range conns {
			_ = conn.SetDeadline(time.Unix(1, 0))
		}
	})
	defer func() {
		stop()
		mu.Lock()
		for _, conn := range conns {
			conn.Close()
		}
		mu.Unlock()
	}()
	if err := fn(s); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("lab: charon %s: %w (%w)", c.cfg.name(), err, ctx.Err())
		}
		return fmt.Errorf("lab: charon %s: %w", c.cfg.name(), err)
	}
	return nil
}

func viciMsg(kv ...string) *vici.Message {
	m := vici.NewMessage()
	for i := 0; i+1 < len(kv); i += 2 {
		_ = m.Set(kv[i], kv[i+1])
	}
	return m
}

func timeoutMS(ctx context.Context) string {
	if dl, ok := ctx.Deadline(); ok {
		ms := time.Until(dl).Milliseconds()
		if ms < 1 {
			ms = 1
		}
		return fmt.Sprint(ms)
	}
	return "0"
}

// Initiate starts a CHILD_SA (and its IKE_SA if needed) of connection conn and waits until it
// is up or fails (vici initiate). child may be "" for the connection's first child.
func (c *Charon) Initiate(ctx context.Context, conn, child string) error {
	if child == "" {
		child = c.firstChild(conn)
	}
	return c.viciDo(ctx, func(s *vici.Session) error {
		_, err := s.CommandRequest("initiate", viciMsg("ike", conn, "child", child, "timeout", timeoutMS(ctx)))
		if err != nil {
			return fmt.Errorf("initiate %s/%s: %w", conn, child, err)
		}
		return nil
	})
}

func (c *Charon) firstChild(conn string) string {
	cfg := c.Config()
	for i := range cfg.Conns {
		if cfg.Conns[i].Name == conn {
			return cfg.Conns[i].children()[0].Name
		}
	}
	return conn
}

// TerminateIKE deletes the IKE_SA(s) of connection conn (with their CHILD_SAs), sending DELETE.
func (c *Charon) TerminateIKE(ctx context.Context, conn string) error {
	return c.viciDo(ctx, func(s *vici.Session) error {
		if _, err := s.CommandRequest("terminate", viciMsg("ike", conn, "timeout", timeoutMS(ctx))); err != nil {
			return fmt.Errorf("terminate ike %s: %w", conn, err)
		}
		return nil
	})
}

// TerminateChild deletes the CHILD_SA(s) named child.
func (c *Charon) TerminateChild(ctx context.Context, child string) error {
	return c.viciDo(ctx, func(s *vici.Session) error {
		if _, err := s.CommandRequest("terminate", viciMsg("child", child, "timeout", timeoutMS(ctx))); err != nil {
			return fmt.Errorf("terminate child %s: %w", child, err)
		}
		return nil
	})
}

// RekeyChild starts a rekey of the CHILD_SA(s) named child (swanctl --rekey --child). It returns
// when the request is queued; use WaitChild / ListSAs to see the new SPIs.
func (c *Charon) RekeyChild(ctx context.Context, child string) error {
	return c.viciDo(ctx, func(s *vici.Session) error {
		if _, err := s.CommandRequest("rekey", viciMsg("child", child)); err != nil {
			return fmt.Errorf("rekey child %s: %w", child, err)
		}
		return nil
	})
}

// RekeyIKE starts a rekey of connection conn's IKE_SA (swanctl --rekey --ike); reauth
// re-authenticates instead.
func (c *Charon) RekeyIKE(ctx context.Context, conn string, reauth bool) error {
	return c.viciDo(ctx, func(s *vici.Session) error {
		if _, err := s.CommandRequest("rekey", viciMsg("ike", conn, "reauth", yesNo(reauth))); err != nil {
			return fmt.Errorf("rekey ike %s: %w", conn, err)
		}
		return nil
	})
}

// ListSAs returns charon's IKE_SAs with their CHILD_SAs (vici list-sas).
func (c *Charon) ListSAs(ctx context.Context) ([]IKESA, error) {
	var out []IKESA
	err := c.viciDo(ctx, func(s *vici.Session) error {
		msgs, err := s.StreamedCommandRequest("list-sas", "list-sa", vici.NewMessage())
		if err != nil {
			return fmt.Errorf("list-sas: %w", err)
		}
		for _, m := range msgs {
			sas, err := parseListSA(m)
			if err != nil {
				return err
			}
			out = append(out, sas...)
		}
		return nil
	})
	return out, err
}

// Ping checks that charon answers on its vici socket.
func (c *Charon) Ping(ctx context.Context) error {
	return c.viciDo(ctx, func(s *vici.Session) error {
		_, err := s.CommandRequest("version", nil)
		return err
	})
}

// IKE returns the first IKE_SA of connection conn (ok false if there is none).
func (c *Charon) IKE(ctx context.Context, conn string) (sa IKESA, ok bool, err error) {
	sas, err := c.ListSAs(ctx)
	if err != nil {
		return IKESA{}, false, err
	}
	for _, sa := range sas {
		if sa.Name == conn {
			return sa, true, nil
		}
	}
	return IKESA{}, false, nil
}

// WaitIKE polls until connection conn has an IKE_SA in state (e.g. "ESTABLISHED").
func (c *Charon) WaitIKE(ctx context.Context, conn, state string) (IKESA, error) {
	var last string
	for {
		sas, err := c.ListSAs(ctx)
		if err == nil {
			last = ""
			for _, sa := range sas {
				if sa.Name == conn {
					if sa.State == state {
						return sa, nil
					}
					last += sa.State + " "
				}
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return IKESA{}, fmt.Errorf("lab: charon %s: waiting for IKE_SA %s %s (have %q): %w", c.cfg.name(), conn, state, strings.TrimSpace(last), ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// WaitChild polls until connection conn has an ESTABLISHED IKE_SA with a CHILD_SA named child
// (default: the connection's first child) in state (e.g. "INSTALLED"). It returns both.
func (c *Charon) WaitChild(ctx context.Context, conn, child, state string) (IKESA, ChildSA, error) {
	if child == "" {
		child = c.firstChild(conn)
	}
	var last string
	for {
		sas, err := c.ListSAs(ctx)
		if err == nil {
			last = ""
			for _, sa := range sas {
				if sa.Name != conn {
					continue
				}
				last += "IKE " + sa.State + ";"
				for _, ch := range sa.Children {
					if ch.Name == child {
						if sa.State == "ESTABLISHED" && ch.State == state {
							return sa, ch, nil
						}
						last += " CHILD " + ch.State + ";"
					}
				}
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return IKESA{}, ChildSA{}, fmt.Errorf("lab: charon %s: waiting for CHILD_SA %s/%s %s (have %q): %w", c.cfg.name(), conn, child, state, last, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// WaitUp waits for connection conn to be IKE ESTABLISHED with its first child INSTALLED.
func (c *Charon) WaitUp(ctx context.Context, conn string) (IKESA, error) {
	sa, _, err := c.WaitChild(ctx, conn, "", "INSTALLED")
	return sa, err
}

// WaitNoIKE polls until connection conn has no IKE_SA at all (e.g. after dpd_action=clear).
func (c *Charon) WaitNoIKE(ctx context.Context, conn string) error {
	for {
		_, ok, err := c.IKE(ctx, conn)
		if err == nil && !ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lab: charon %s: waiting for IKE_SA %s to go away: %w", c.cfg.name(), conn, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
