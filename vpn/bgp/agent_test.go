package bgp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"meshroot/internal/lab"
	"meshroot/vpn/route"
	"meshroot/vpn/vpnlog"
)

// The lab tests run our side (Speaker + route.Manager) in a child process inside the site
// namespace: gobgp opens its sockets from goroutines of its own, so the whole process must be in
// the namespace (NS.Do moves one thread only). The child is this test binary started with
// agentEnv set; TestMain turns it into the agent. It writes the BGP log as JSON lines (the
// production format) and events to files the test reads, and takes commands on a unix socket.

const agentEnv = "MESHROOT_BGP_AGENT"

func TestMain(m *testing.M) {
	if path := os.Getenv(agentEnv); path != "" {
		if err := runAgent(path); err != nil {
			fmt.Fprintln(os.Stderr, "bgp agent:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type agentConfig struct {
	BGP     Config
	Tunnels []route.Tunnel
	Dir     string // socket, log and event files
	// Restamp gives the log records made-up times, one second apart from a fixed start, so a
	// golden file can compare them.
	Restamp bool
}

type agentRequest struct {
	Op     string
	Tunnel string
	Reason string
	Config *Config
}

type agentResponse struct {
	Err    string
	Peers  []PeerStatus
	Routes []route.KernelRoute
}

// restamp rewrites record times: start + n seconds for the n-th record.
type restamp struct {
	mu   sync.Mutex
	n    int
	next vpnlog.Sink
}

var goldenStart = time.Date(2025, 11, 8, 5, 40, 0, 0, time.UTC)

func (r *restamp) Write(rec vpnlog.Record) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if b, ok := rec.(*vpnlog.BGPRecord); ok {
		c := *b
		c.Time = goldenStart.Add(time.Duration(r.n) * time.Second)
		rec = &c
	}
	r.n++
	r.next.Write(rec)
}

func runAgent(cfgPath string) error {
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		return err
	}
	var cfg agentConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	mgr, err := route.New(route.NewNetlink(nil), route.Config{Logger: logger})
	if err != nil {
		return err
	}
	for _, t := range cfg.Tunnels {
		if err := mgr.SetTunnel(t); err != nil {
			return err
		}
	}
	logFile, err := os.OpenFile(filepath.Join(cfg.Dir, "bgp.jsonl"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	evFile, err := os.OpenFile(filepath.Join(cfg.Dir, "events.jsonl"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer evFile.Close()
	var sink vpnlog.Sink = vpnlog.NewJSONLines(logFile)
	if cfg.Restamp {
		sink = &restamp{next: sink}
	}
	var evMu sync.Mutex
	enc := json.NewEncoder(evFile)
	sp, err := Start(context.Background(), cfg.BGP, Options{
		Log: sink, Routes: mgr, Logger: logger,
		OnEvent: func(e Event) {
			evMu.Lock()
			defer evMu.Unlock()
			enc.Encode(e)
		},
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("unix", filepath.Join(cfg.Dir, "ctl.sock"))
	if err != nil {
		return err
	}
	defer ln.Close()
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		var req agentRequest
		if err := json.NewDecoder(c).Decode(&req); err != nil {
			c.Close()
			continue
		}
		var resp agentResponse
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		switch req.Op {
		case "down":
			err = sp.PeerDown(req.Tunnel, req.Reason)
		case "up":
			err = sp.PeerUp(req.Tunnel)
		case "tunnel-down", "tunnel-up":
			err = mgr.SetTunnelUp(req.Tunnel, req.Op == "tunnel-up")
		case "update":
			err = sp.Update(ctx, *req.Config)
		case "peers":
			resp.Peers, err = sp.Peers(ctx)
		case "routes":
			resp.Routes = mgr.Installed()
		case "close":
			err = errors.Join(sp.Close(), mgr.Close())
		default:
			err = fmt.Errorf("unknown op %q", req.Op)
		}
		cancel()
		if err != nil {
			resp.Err = err.Error()
		}
		json.NewEncoder(c).Encode(resp)
		c.Close()
		if req.Op == "close" {
			return nil
		}
	}
}

// agent is the test's handle on a running agent.
type agent struct {
	tb   testing.TB
	dir  string
	proc *lab.Process
}

func startAgent(tb testing.TB, l *lab.Lab, ns *lab.NS, cfg agentConfig) *agent {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	// A short directory: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "mrbgp-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	cfg.Dir = dir
	b, err := json.Marshal(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "agent.json")
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		tb.Fatal(err)
	}
	proc, err := l.StartProcess(lab.ProcessSpec{Name: "bgp-agent", NS: ns, Path: exe, Args: []string{"-test.run=^$"},
		Env: []string{agentEnv + "=" + cfgPath}, StopTimeout: 2 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	a := &agent{tb: tb, dir: dir, proc: proc}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("unix", filepath.Join(dir, "ctl.sock")); err == nil {
			c.Close()
			break
		}
		if proc.Exited() || time.Now().After(deadline) {
			tb.Fatalf("bgp agent did not start (exited %v): see %s", proc.Exited(), proc.LogPath())
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Cleanup(func() {
		if !proc.Exited() {
			a.call(agentRequest{Op: "close"})
		}
		if tb.Failed() {
			if b, err := os.ReadFile(proc.LogPath()); err == nil {
				tb.Logf("bgp agent log:\n%s", tail(string(b), 60))
			}
			for _, r := range a.lines() {
				tb.Logf("bgp log: %s", r)
			}
		}
	})
	return a
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (a *agent) call(req agentRequest) (agentResponse, error) {
	c, err := net.Dial("unix", filepath.Join(a.dir, "ctl.sock"))
	if err != nil {
		return agentResponse{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(40 * time.Second))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return agentResponse{}, err
	}
	var resp agentResponse
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return agentResponse{}, fmt.Errorf("agent %s: %w", req.Op, err)
	}
	if resp.Err != "" {
		return resp, fmt.Errorf("agent %s: %s", req.Op, resp.Err)
	}
	return resp, nil
}

func (a *agent) must(req agentRequest) agentResponse {
	a.tb.Helper()
	resp, err := a.call(req)
	if err != nil {
		a.tb.Fatal(err)
	}
	return resp
}

// lines returns the BGP log written so far.
func (a *agent) lines() []string {
	f, err := os.Open(filepath.Join(a.dir, "bgp.jsonl"))
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

// records parses the BGP log written so far (strictly: every line must parse).
func (a *agent) records() []*vpnlog.BGPRecord {
	a.tb.Helper()
	var out []*vpnlog.BGPRecord
	for _, l := range a.lines() {
		r, err := vpnlog.ParseBGPRecord([]byte(l))
		if err != nil {
			a.tb.Fatalf("BGP log line %q: %v", l, err)
		}
		out = append(out, r)
	}
	return out
}

// waitRecord waits for a BGP log record matching pred.
func (a *agent) waitRecord(ctx context.Context, what string, pred func(*vpnlog.BGPRecord) bool) *vpnlog.BGPRecord {
	a.tb.Helper()
	for {
		for _, r := range a.records() {
			if pred(r) {
				return r
			}
		}
		if a.proc.Exited() {
			a.tb.Fatalf("waiting for %s: the agent exited", what)
		}
		select {
		case <-ctx.Done():
			a.tb.Fatalf("waiting for BGP log line: %s: %v", what, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func detailsContain(sub ...string) func(*vpnlog.BGPRecord) bool {
	return func(r *vpnlog.BGPRecord) bool {
		for _, s := range sub {
			if !strings.Contains(r.Details, s) {
				return false
			}
		}
		return true
	}
}

// events returns the events written so far.
func (a *agent) events() []Event {
	b, err := os.ReadFile(filepath.Join(a.dir, "events.jsonl"))
	if err != nil {
		return nil
	}
	var out []Event
	dec := json.NewDecoder(strings.NewReader(string(b)))
	for {
		var e Event
		if err := dec.Decode(&e); err != nil {
			return out
		}
		out = append(out, e)
	}
}
