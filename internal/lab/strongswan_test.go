package lab

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"meshroot/internal/testenv"
)

// syncBuffer is a goroutine-safe bytes.Buffer for captured logs.
type syncBuffer = testenv.Buffer

// TestLabCharonControl drives two charons directly: establish, rekey CHILD and IKE, terminate
// and initiate over vici, then DPD across a cut link (responder clears, initiator restarts).
func TestLabCharonControl(t *testing.T) {
	testenv.Integration(t)
	testenv.Command(t, "charon")
	testenv.Command(t, "swanctl")
	var logs syncBuffer
	l, err := Open(Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	l.tb = t
	t.Cleanup(func() {
		if t.Failed() {
			l.dumpLogs()
		}
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	aws, err := l.NewNS("aws")
	if err != nil {
		t.Fatal(err)
	}
	cgw, err := l.NewNS("cgw")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Veth(aws, "out0", cgw, "out0"); err != nil {
		t.Fatal(err)
	}
	if err := aws.AddAddr("out0", "198.51.100.1/24"); err != nil {
		t.Fatal(err)
	}
	if err := cgw.AddAddr("out0", "198.51.100.2/24"); err != nil {
		t.Fatal(err)
	}
	const psk = "control-psk-Zq81xv0"
	// Fast DPD: 2 s delay; dead after 1 + 1.4 + 1.96 ≈ 4.4 s of silence.
	fast := CharonConfig{RetransmitTries: 2, RetransmitTimeout: 1, RetransmitBase: 1.4, Log: LogLevels{IKE: 2}}
	respCfg := fast
	respCfg.Name = "aws"
	respCfg.TunAddrs = []string{"169.254.10.1/30"}
	respCfg.Conns = []Conn{{
		Name: "tun1", LocalAddrs: []string{"198.51.100.1"}, RemoteAddrs: []string{"198.51.100.2"},
		PSK: psk, DPDDelay: 2 * time.Second, Proposals: []string{"aes128-sha1-modp2048"},
		Children: []Child{{DPDAction: "clear", StartAction: "none", ESPProposals: []string{"aes128-sha1-modp2048"}}},
	}}
	resp, err := l.StartCharon(aws, respCfg)
	if err != nil {
		t.Fatal(err)
	}
	initCfg := fast
	initCfg.Name = "cgw"
	initCfg.TunAddrs = []string{"169.254.10.2/30"}
	initCfg.Conns = []Conn{{
		Name: "tun1", LocalAddrs: []string{"198.51.100.2"}, RemoteAddrs: []string{"198.51.100.1"},
		PSK: psk, DPDDelay: 2 * time.Second, KeyingTries: -1, Proposals: []string{"aes128-sha1-modp2048"},
		Children: []Child{{DPDAction: "restart", StartAction: "start", ESPProposals: []string{"aes128-sha1-modp2048"}}},
	}}
	init, err := l.StartCharon(cgw, initCfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	sa, err := init.WaitUp(ctx, "tun1")
	if err != nil {
		t.Fatal(err)
	}
	ch, _ := sa.Child("tun1")
	if sa.EncrAlg != "AES_CBC" || sa.EncrKeySize != 128 || sa.IntegAlg != "HMAC_SHA1_96" || ch.EncrAlg != "AES_CBC" || ch.IntegAlg != "HMAC_SHA1_96" {
		t.Errorf("SAs = IKE %s-%d/%s CHILD %s/%s; want AES_CBC-128/HMAC_SHA1_96", sa.EncrAlg, sa.EncrKeySize, sa.IntegAlg, ch.EncrAlg, ch.IntegAlg)
	}
	if _, err := resp.WaitUp(ctx, "tun1"); err != nil {
		t.Fatal(err)
	}
	if err := cgw.Ping("", "169.254.10.1", 2); err != nil {
		t.Fatalf("ping over tunnel: %v", err)
	}

	// CHILD rekey: new SPIs (with PFS group), traffic keeps flowing.
	if err := init.RekeyChild(ctx, "tun1"); err != nil {
		t.Fatal(err)
	}
	waitCond(ctx, t, "new CHILD_SA SPIs after rekey", func() bool {
		s, ok, err := init.IKE(ctx, "tun1")
		if err != nil || !ok {
			return false
		}
		for _, c := range s.Children {
			if c.State == "INSTALLED" && c.SPIIn != ch.SPIIn && c.DHGroup == "MODP_2048" {
				return true
			}
		}
		return false
	})
	// IKE rekey: new IKE SPIs.
	if err := init.RekeyIKE(ctx, "tun1", false); err != nil {
		t.Fatal(err)
	}
	waitCond(ctx, t, "new IKE_SA SPIs after rekey", func() bool {
		s, ok, err := init.IKE(ctx, "tun1")
		return err == nil && ok && s.State == "ESTABLISHED" && s.InitiatorSPI != sa.InitiatorSPI
	})
	if err := cgw.Ping("", "169.254.10.1", 2); err != nil {
		t.Errorf("ping after rekeys: %v", err)
	}

	// Terminate from the responder, then initiate again from the initiator.
	if err := resp.TerminateIKE(ctx, "tun1"); err != nil {
		t.Fatal(err)
	}
	if err := resp.WaitNoIKE(ctx, "tun1"); err != nil {
		t.Fatal(err)
	}
	if err := init.Initiate(ctx, "tun1", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := resp.WaitUp(ctx, "tun1"); err != nil {
		t.Fatal(err)
	}

	// DPD: cut the link; the responder clears, the initiator restarts and re-establishes once
	// the link is back.
	if err := aws.LinkDown("out0"); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	if err := resp.WaitNoIKE(ctx, "tun1"); err != nil {
		t.Fatal(err)
	}
	t.Logf("responder cleared the dead peer %v after the cut", time.Since(cut).Round(100*time.Millisecond))
	if err := resp.WaitLog(ctx, "giving up after 2 retransmits"); err != nil {
		t.Error(err)
	}
	if err := aws.LinkUp("out0"); err != nil {
		t.Fatal(err)
	}
	if _, err := resp.WaitUp(ctx, "tun1"); err != nil {
		t.Fatal(err)
	}
	if err := cgw.WaitPing(ctx, "", "169.254.10.1"); err != nil {
		t.Error(err)
	}

	// Restart keeps the inside address on the new ipsec0.
	if err := resp.Restart(); err != nil {
		t.Fatal(err)
	}
	if addrs, err := aws.Addrs(TunDevice); err != nil || !contains(addrs, "169.254.10.1/30") {
		t.Errorf("ipsec0 addresses after Restart = %v, %v; want 169.254.10.1/30", addrs, err)
	}

	// No secret anywhere in logs or in what the lab prints.
	for name, text := range map[string]string{
		"lab log": logs.String(), "describe": l.Describe(), "charon aws": resp.Log(), "charon cgw": init.Log(),
		"process aws": resp.Process().Log(), "process cgw": init.Process().Log(),
	} {
		if strings.Contains(text, psk) {
			t.Errorf("%s contains the PSK", name)
		}
	}
	if st, err := os.Stat(resp.SwanctlConfPath()); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("swanctl.conf mode = %v, %v; want 0600", st.Mode().Perm(), err)
	}
}

func waitCond(ctx context.Context, t *testing.T, what string, f func() bool) {
	t.Helper()
	for !f() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
