package vpn

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"meshroot/internal/lab"
	"meshroot/internal/testenv"
	"meshroot/vpn/vpnlog"
)

// The lab tests run our connection the way `meshctl vpn up` does (vpn.Run with a JSON config
// file, a control socket and JSON-lines logs) in a child process inside the site namespace of
// a lab.Concentrator: gobgp opens its sockets from goroutines of its own, so the whole process
// must be in the namespace. The child is this test binary started with agentEnv set. The
// concentrator is two strongSwan + FRR endpoints (AWS-like: AS 64512, `timers 10 30`, MED 100
// on tunnel 1 and 200 on tunnel 2), a VPC host behind them, and a LAN host behind the site.

const agentEnv = "MESHROOT_VPN_AGENT"

func TestMain(m *testing.M) {
	if dir := os.Getenv(agentEnv); dir != "" {
		if err := runAgent(dir); err != nil {
			fmt.Fprintln(os.Stderr, "vpn agent:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runAgent is `meshctl vpn up --config DIR/vpn.json --control DIR/ctl.sock --log-dir DIR`
// (SIGHUP reloads the file).
func runAgent(dir string) error {
	cfg, err := LoadConfig(filepath.Join(dir, "vpn.json"))
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			reload <- struct{}{}
		}
	}()
	return Run(ctx, RunOptions{
		Config: cfg, ControlSocket: filepath.Join(dir, "ctl.sock"), LogDir: dir, Stdout: os.Stdout,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Reload: reload, Load: func() (Config, error) { return LoadConfig(filepath.Join(dir, "vpn.json")) },
	})
}

const connID = "vpn-0a1b2c3d4e5f60718"

// concRig is a Concentrator lab with our connection running in its site namespace.
type concRig struct {
	t    testing.TB
	l    *lab.Lab
	c    *lab.Concentrator
	dir  string
	proc *lab.Process
	psks []string
	doc  fileDoc
}

// fileDoc is the agent's configuration file, as a JSON object tests may change.
type fileDoc map[string]any

func (d fileDoc) tunnel(i int) map[string]any { return d["tunnels"].([]any)[i].(map[string]any) }

// newConcRig builds the concentrator and starts our connection against it; edit changes the
// configuration file first.
func newConcRig(t testing.TB, cc lab.ConcentratorConfig, edit func(fileDoc)) *concRig {
	t.Helper()
	testenv.Integration(t)
	testenv.Command(t, "charon")
	testenv.Command(t, "bgpd")
	r := &concRig{t: t, l: lab.New(t)}
	var err error
	if r.c, err = lab.NewConcentrator(r.l, cc); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := r.c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	// Unix socket paths are short: a directory of our own under /tmp.
	if r.dir, err = os.MkdirTemp("", "mrvpn-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(r.dir) })
	a := r.c.Addrs
	local := a.SiteWAN4
	if cc.OutsideIPv6 {
		local = a.SiteWAN6
	}
	doc := fileDoc{"connection_id": connID, "local_address": local}
	if cc.Static {
		doc["static_routes_only"] = true
		doc["remote_prefixes"] = []any{"10.0.0.0/16", "fd00:a00::/64"}
	} else {
		doc["bgp"] = map[string]any{"customer_asn": 65000, "amazon_asn": 64512}
		doc["site_prefixes"] = []any{"192.168.1.0/24", "fd00:c0a8:1::/64"}
	}
	var tunnels []any
	for i, tu := range r.c.Tunnels() {
		psk := filepath.Join(r.dir, fmt.Sprintf("t%d.psk", i+1))
		if err := os.WriteFile(psk, []byte(tu.PSK+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		r.psks = append(r.psks, tu.PSK)
		tunnels = append(tunnels, map[string]any{
			"outside_address": tu.Outside, "inside_cidr": tu.Inside4, "inside_ipv6_cidr": tu.Inside6,
			"psk_file": psk, "device": fmt.Sprintf("mrvpn%d", i),
		})
	}
	doc["tunnels"] = tunnels
	if edit != nil {
		edit(doc)
	}
	r.doc = doc
	r.writeConfig()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r.proc, err = r.l.StartProcess(lab.ProcessSpec{Name: "vpn-agent", NS: r.c.Site, Path: exe, Args: []string{"-test.run=^$"},
		Env: []string{agentEnv + "=" + r.dir}, StopTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !r.proc.Exited() {
			r.proc.Signal(os.Interrupt)
			wctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			r.proc.Wait(wctx)
			cancel()
		}
		// Every lab test doubles as a log scan: no PSK in the agent's output or logs.
		all := r.proc.Log() + strings.Join(r.lines(vpnlog.LogTunnel), "\n") + strings.Join(r.lines(vpnlog.LogBGP), "\n")
		for _, k := range r.psks {
			if strings.Contains(all, k) {
				t.Errorf("a PSK appears in the agent's output or logs")
			}
		}
		if t.Failed() {
			t.Logf("agent output (tail):\n%s", tail(r.proc.Log(), 80))
		}
	})
	return r
}

// writeConfig writes r.doc as the agent's configuration file.
func (r *concRig) writeConfig() {
	r.t.Helper()
	b, err := json.MarshalIndent(r.doc, "", "  ")
	if err != nil {
		r.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r.dir, "vpn.json"), b, 0o644); err != nil {
		r.t.Fatal(err)
	}
}

// reload edits the configuration file and makes the agent apply it (SIGHUP).
func (r *concRig) reload(edit func(fileDoc)) {
	r.t.Helper()
	edit(r.doc)
	r.writeConfig()
	if err := r.proc.Signal(syscall.SIGHUP); err != nil {
		r.t.Fatal(err)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (r *concRig) ctx(d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	r.t.Cleanup(cancel)
	return ctx
}

// status asks the agent over its control socket.
func (r *concRig) status() (Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return QueryStatus(ctx, filepath.Join(r.dir, "ctl.sock"))
}

// waitStatus polls the status until cond holds.
func (r *concRig) waitStatus(d time.Duration, what string, cond func(Status) bool) Status {
	r.t.Helper()
	deadline := time.Now().Add(d)
	var last Status
	var err error
	for {
		if last, err = r.status(); err == nil && cond(last) {
			return last
		}
		if r.proc.Exited() {
			r.t.Fatalf("waiting for %s: the agent exited: %v", what, r.proc.Err())
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out after %v waiting for %s (%v); status:\n%s", d, what, err, last.Format())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// allUp: both tunnels in service and every BGP session Established (static: tunnels only).
func allUp(st Status) bool {
	if len(st.Tunnels) != 2 {
		return false
	}
	for _, t := range st.Tunnels {
		if !t.Usable {
			return false
		}
		for _, p := range t.BGP {
			if p.State != "Established" {
				return false
			}
		}
	}
	return true
}

// bgpConverged: allUp, two sessions per tunnel, each with prefixes from the concentrator.
func bgpConverged(st Status) bool {
	if !allUp(st) {
		return false
	}
	for _, t := range st.Tunnels {
		if len(t.BGP) != 2 {
			return false
		}
		for _, p := range t.BGP {
			if p.PrefixesIn < 1 {
				return false
			}
		}
	}
	return true
}

// lines returns the agent's log (vpnlog.LogTunnel or LogBGP), every stream's file in turn.
func (r *concRig) lines(log vpnlog.Log) []string {
	files, _ := filepath.Glob(filepath.Join(r.dir, string(log), "*.jsonl"))
	var out []string
	for _, f := range files {
		out = append(out, readLines(f)...)
	}
	return out
}

// streamLines returns one stream of a log.
func (r *concRig) streamLines(log vpnlog.Log, stream string) []string {
	return readLines(filepath.Join(r.dir, string(log), stream+".jsonl"))
}

func readLines(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// bgpRecords parses the BGP log so far (strictly).
func (r *concRig) bgpRecords() []*vpnlog.BGPRecord {
	r.t.Helper()
	var out []*vpnlog.BGPRecord
	for _, l := range r.lines(vpnlog.LogBGP) {
		rec, err := vpnlog.ParseBGPRecord([]byte(l))
		if err != nil {
			r.t.Fatalf("BGP log line %q: %v", l, err)
		}
		out = append(out, rec)
	}
	return out
}

// waitBGPRecord waits for a BGP log record matching pred.
func (r *concRig) waitBGPRecord(d time.Duration, what string, pred func(*vpnlog.BGPRecord) bool) *vpnlog.BGPRecord {
	r.t.Helper()
	deadline := time.Now().Add(d)
	for {
		for _, rec := range r.bgpRecords() {
			if pred(rec) {
				return rec
			}
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("no BGP log record for %s after %v; log:\n%s", what, d, strings.Join(r.lines(vpnlog.LogBGP), "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kernelRoute is `ip route show PREFIX` in the site namespace ("" when there is none).
func (r *concRig) kernelRoute(prefix string) string {
	r.t.Helper()
	args := []string{"route", "show", prefix, "table", "all"}
	if strings.Contains(prefix, ":") {
		args = append([]string{"-6"}, args...)
	}
	out, err := r.c.Site.Run("ip", args...)
	if err != nil {
		r.t.Fatal(err)
	}
	return strings.TrimSpace(out)
}
