package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"meshroot/image"
	"meshroot/image/imagetest"
	"meshroot/image/qemu"
	"meshroot/internal/testenv"
	"meshroot/radio/internal/vmkit"
)

// vmBoard is amd64, as for radiotest: the image builder and the bundle add the build machine's
// own hostapd, wpa_supplicant and their shared libraries, and this machine is amd64.
const vmBoard = "qemu-x86_64"

// vmModules are the kernel modules the guest needs beyond the board's: the simulated radios,
// veth pairs (the backhaul's cables) and the crypto mac80211 asks the kernel for when a key is
// installed (CCMP is "ccm(aes)" over "ctr(aes)", PMF's BIP is "cmac(aes)", GCMP "gcm(aes)"):
// a u-root image has no modprobe helper to load them on demand.
var vmModules = []string{"mac80211_hwsim", "veth", "ctr", "ccm", "cmac", "gcm", "ghash_generic"}

// vmRun boots the image once with roamtest, runs it with args and returns its checks, metrics
// and the console lines.
type vmResult struct {
	checks  map[string]Check
	order   []string
	metrics map[string]Metric
	done    Done
	notes   []string
}

func runVM(t testing.TB, args string, timeout time.Duration) vmResult {
	testenv.Integration(t)
	hostapdBin := testenv.Command(t, "hostapd")
	wpasBin := testenv.Command(t, "wpa_supplicant")
	testenv.Command(t, "ldd")
	// hostapd, wpa_supplicant, their libraries, regulatory.db and roamtest's arguments travel on
	// a second virtio disk as a tar archive that roamtest unpacks (inside the initramfs they
	// would break the image size budget).
	argsPath := filepath.Join(t.TempDir(), "roamtest.args")
	if err := os.WriteFile(argsPath, []byte(args+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bundle := vmkit.Bundle(t, map[string]string{strings.TrimPrefix(argsFile, "/"): argsPath}, hostapdBin, wpasBin)
	dir, m := imagetest.ImageWith(t, vmBoard, imagetest.Options{
		Modules: vmModules,
		Files:   []image.File{{Path: "usr/bin/roamtest", Host: vmkit.BuildCommand(t, "roamtest")}},
		// A test image: the product's budget (image.DefaultBudget) plus room for this test
		// binary (5 MB) and the extra modules.
		Budget: &image.Budget{Compressed: 24 << 20, Raw: 96 << 20},
	})
	vm := imagetest.Boot(t, dir, m, imagetest.BootOptions{Timeout: timeout + 2*time.Minute, Config: func(c *qemu.Config) {
		c.MemoryMB = 1024
		c.SMP = 2
		c.Extra = append(c.Extra, vmkit.BundleDrive(bundle)...)
	}})
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if _, _, err := imagetest.WaitReady(ctx, vm); err != nil {
		t.Fatalf("WaitReady: %v\n%s", err, vm.Tail(30))
	}
	if err := imagetest.ShellReady(ctx, vm); err != nil {
		t.Fatalf("ShellReady: %v", err)
	}
	start := time.Now()
	if err := vm.Send("/usr/bin/roamtest -bundle /dev/vdb\n"); err != nil {
		t.Fatal(err)
	}
	doneLine, err := vm.WaitFor(ctx, "ROAMTEST-DONE ")
	if err != nil {
		t.Fatalf("roamtest did not finish: %v\n%s", err, vm.Tail(60))
	}
	t.Logf("roamtest ran %v", time.Since(start).Round(time.Second))
	res := vmResult{checks: map[string]Check{}, metrics: map[string]Metric{}}
	for _, l := range vm.Lines() {
		switch {
		case strings.Contains(l.Text, "ROAMTEST {"):
			var c Check
			if err := json.Unmarshal([]byte(l.Text[strings.Index(l.Text, "ROAMTEST {")+len("ROAMTEST "):]), &c); err != nil {
				t.Errorf("bad result line %q: %v", l.Text, err)
				continue
			}
			res.checks[c.Name] = c
			res.order = append(res.order, c.Name)
			t.Logf("%-40s ok=%-5v %7d ms  %s", c.Name, c.OK, c.Ms, c.Detail)
		case strings.Contains(l.Text, "ROAMTEST-METRIC {"):
			var mt Metric
			if err := json.Unmarshal([]byte(l.Text[strings.Index(l.Text, "ROAMTEST-METRIC {")+len("ROAMTEST-METRIC "):]), &mt); err == nil {
				res.metrics[mt.Name] = mt
			}
		case strings.Contains(l.Text, "ROAMTEST-NOTE "):
			n := l.Text[strings.Index(l.Text, "ROAMTEST-NOTE ")+len("ROAMTEST-NOTE "):]
			res.notes = append(res.notes, n)
			t.Logf("note: %s", n)
		}
	}
	text := doneLine.Text[strings.Index(doneLine.Text, "ROAMTEST-DONE ")+len("ROAMTEST-DONE "):]
	if err := json.Unmarshal([]byte(text), &res.done); err != nil {
		t.Errorf("ROAMTEST-DONE %s: %v", text, err)
	}
	return res
}

// requiredChecks must all be reported, and pass, by roamtest in TestVMRoam.
var requiredChecks = []string{
	"bundle", "modprobe", "radios", "medium", "roaming site",
	"walk A to C: steered with 802.11v, roams with FT",
	"station without 802.11v joins node A", "kicks off: left alone", "kicks on: deauthenticated, blocked, reassociated elsewhere",
	"equal nodes: no ping-pong",
	"controller lost: nodes keep serving", "controller back: nodes follow it again",
	"backhaul: 802.11s mesh with SAE up", "backhaul: satellite prefers the cable",
	"backhaul: cable pulled (no carrier change) → mesh", "backhaul: cable back → wired after the hold",
	"backhaul: carrier lost → mesh",
}

// TestVMRoam boots the amd64 image once with mac80211_hwsim radios, the Go medium, Debian's
// hostapd (three nodes' APs with 802.11k/v/r from radio/ft) and wpa_supplicant stations, and
// runs the roaming scenarios (see roamtest's scenarios.go): a station walking from node A to C
// is steered there with 802.11v and roams with FT; a station without 802.11v is left alone or
// kicked as configured; no ping-pong between equal nodes; nodes keep serving without the
// controller; and the backhaul (see backhaul.go): a satellite prefers its cable, moves to the
// 802.11s mesh when the cable is pulled and back when it returns.
func TestVMRoam(t *testing.T) {
	res := runVM(t, "-scenarios roam,ignore,pingpong,controller-loss,backhaul "+os.Getenv("MESHROOT_ROAM_ARGS"), 15*time.Minute)
	for _, name := range requiredChecks {
		c, ok := res.checks[name]
		switch {
		case !ok:
			t.Errorf("check %q not reported", name)
		case !c.OK:
			t.Errorf("check %q failed: %s", name, c.Detail)
		}
	}
	if !res.done.OK {
		t.Errorf("roamtest: %+v; want ok", res.done)
	}
}

// BenchmarkVMRoam boots the image once and measures 20 roams with FT and 20 without (BSS
// transition request → reassociated, authentication → reassociation response on the medium,
// data gap) and the backhaul failover (see roamtest's bench.go and backhaul.go).
func BenchmarkVMRoam(b *testing.B) {
	for range b.N {
		res := runVM(b, "-scenarios roambench,backhaul -roams 20", 20*time.Minute)
		for _, c := range res.order {
			if !res.checks[c].OK {
				b.Errorf("check %q failed: %s", c, res.checks[c].Detail)
			}
		}
		names := make([]string, 0, len(res.metrics))
		for n := range res.metrics {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			m := res.metrics[n]
			b.ReportMetric(m.Value, n+"-"+m.Unit)
		}
	}
}
