package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"meshroot/internal/lab"
	"meshroot/internal/testenv"
)

// childArgsEnv makes this test binary run `meshctl` with the JSON-encoded arguments instead of
// the tests: the lab test starts meshctl that way inside a network namespace.
const childArgsEnv = "MESHCTL_TEST_CHILD_ARGS"

func TestMain(m *testing.M) {
	if a := os.Getenv(childArgsEnv); a != "" {
		var args []string
		if err := json.Unmarshal([]byte(a), &args); err != nil {
			fmt.Fprintln(os.Stderr, "meshctl test child:", err)
			os.Exit(2)
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := run(ctx, args, os.Stdout, os.Stderr)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "meshctl:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const vpnTestPSK = "meshctl-vpn-psk-Rt5pQ8s"

func writeVPNConfig(t *testing.T, dir, cfg string) string {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "t1.psk"), []byte(vpnTestPSK+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "vpn.json")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const vpnTestConfig = `{
  "connection_id": "vpn-0a1b2c3d4e5f60718",
  "local_address": "198.51.100.2",
  "static_routes_only": true,
  "remote_prefixes": ["10.0.0.0/16", "fd00:a00::/64"],
  "tunnels": [{"outside_address": "198.51.100.1", "inside_cidr": "169.254.10.0/30",
               "inside_ipv6_cidr": "fd00:a9fe:a::/126", "psk_file": "t1.psk", "device": "mrvpn0"}]
}`

func TestVPNCheck(t *testing.T) {
	path := writeVPNConfig(t, t.TempDir(), vpnTestConfig)
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"vpn", "check", "--config", path}, &out, &errb); err != nil || !strings.Contains(out.String(), ": OK") {
		t.Errorf("vpn check = %v, %q; want OK", err, out.String())
	}
	bad := writeVPNConfig(t, t.TempDir(), strings.Replace(vpnTestConfig, `"169.254.10.0/30"`, `"169.254.10.1/30"`, 1))
	err := run(context.Background(), []string{"vpn", "check", "--config", bad}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "tunnels[0].inside_cidr") {
		t.Errorf("vpn check (bad inside) = %v; want an error naming tunnels[0].inside_cidr", err)
	}
	for _, args := range [][]string{{"vpn"}, {"vpn", "frobnicate"}, {"vpn", "up"}} {
		if err := run(context.Background(), args, &out, &errb); err != errUsage {
			t.Errorf("run(%q) = %v; want the usage", args, err)
		}
	}
	if err := run(context.Background(), []string{"vpn", "status", "--control", filepath.Join(t.TempDir(), "none.sock")}, &out, &errb); err == nil || !strings.Contains(err.Error(), "no connection running") {
		t.Errorf("vpn status without a connection = %v; want it to say so", err)
	}
}

// TestLabVPNUp runs `meshctl vpn up` in a lab namespace against strongSwan (static mode, one
// tunnel): the tunnel comes up, `meshctl vpn status` shows it in service with its routes, the
// LAN hosts reach each other through it, and SIGINT (Ctrl-C) tears it down: strongSwan sees
// the DELETE, the device and routes are gone, meshctl exits 0, and no output holds the PSK.
func TestLabVPNUp(t *testing.T) {
	testenv.Integration(t)
	testenv.Command(t, "charon")
	l := lab.New(t)
	p, err := lab.NewPeerPair(l, lab.PeerPairConfig{Charon: &lab.CharonConfig{
		Name:  "aws",
		Conns: []lab.Conn{{Name: "tun1", PSK: vpnTestPSK, Children: []lab.Child{{Name: "tun1", DPDAction: "clear", StartAction: "none", CloseAction: "none"}}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	// Unix socket paths are short: a directory of our own under /tmp.
	dir, err := os.MkdirTemp("", "mrvpn-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfgPath := writeVPNConfig(t, dir, vpnTestConfig)
	sock := filepath.Join(dir, "vpn.sock")
	logDir := filepath.Join(dir, "logs")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args, _ := json.Marshal([]string{"vpn", "up", "--config", cfgPath, "--control", sock, "--log-dir", logDir, "--log-level", "debug"})
	proc, err := l.StartProcess(lab.ProcessSpec{Name: "meshctl-vpn-up", NS: p.A, Path: exe, Args: []string{"-test.run=^$"},
		Env: []string{childArgsEnv + "=" + string(args)}, StopTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("meshctl output:\n%s", proc.Log())
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	for {
		out.Reset()
		err := run(ctx, []string{"vpn", "status", "--control", sock}, &out, &out)
		if err == nil && strings.Contains(out.String(), "in service") && strings.Contains(out.String(), "10.0.0.0/16 via 198.51.100.1") {
			break
		}
		if proc.Exited() || ctx.Err() != nil {
			t.Fatalf("the tunnel did not come into service (exited %v): %v\n%s", proc.Exited(), err, out.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("meshctl vpn status:\n%s", out.String())
	a := p.Addrs
	for _, dst := range []string{a.BHost4, a.BHost6} {
		if err := p.AHost.WaitPing(ctx, "", dst); err != nil {
			t.Fatal(err)
		}
	}
	out.Reset()
	if err := run(ctx, []string{"vpn", "status", "--control", sock, "--json"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	var st struct {
		Tunnels []struct {
			InService bool   `json:"in_service"`
			PacketsIn uint64 `json:"packets_in"`
		} `json:"tunnels"`
	}
	if err := json.Unmarshal(out.Bytes(), &st); err != nil || len(st.Tunnels) != 1 || !st.Tunnels[0].InService || st.Tunnels[0].PacketsIn == 0 {
		t.Errorf("vpn status --json = %s (%v); want one tunnel in service with packets in", out.String(), err)
	}

	// Ctrl-C.
	if err := proc.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := proc.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if err := proc.Err(); err != nil {
		t.Errorf("meshctl vpn up exited with %v; want 0", err)
	}
	if !strings.Contains(proc.Log(), "stopped") {
		t.Errorf("meshctl output does not end with stopped:\n%s", proc.Log())
	}
	if err := p.Charon.WaitNoIKE(ctx, "tun1"); err != nil {
		t.Errorf("strongSwan still has the IKE SA after Ctrl-C: %v", err)
	}
	if p.A.HasLink("mrvpn0") {
		t.Errorf("the TUN device survived Ctrl-C")
	}
	if _, err := os.Stat(sock); err == nil {
		t.Errorf("the control socket survived Ctrl-C")
	}
	logs := proc.Log()
	b, err := os.ReadFile(filepath.Join(logDir, "tunnel", "vpn-0a1b2c3d4e5f60718_198.51.100.1.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	logs += string(b)
	if !strings.Contains(logs, "IKE_SA established") {
		t.Errorf("the tunnel activity log has no IKE_SA established line")
	}
	if strings.Contains(logs, vpnTestPSK) {
		t.Errorf("the PSK appears in meshctl's output or logs")
	}
}
