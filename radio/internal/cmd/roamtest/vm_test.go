package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"meshroot/image"
	"meshroot/image/imagetest"
	"meshroot/image/qemu"
	"meshroot/internal/testenv"
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
	// hostapd, wpa_supplicant, their libraries and regulatory.db travel on a second virtio disk
	// as a tar archive that roamtest unpacks (inside the initramfs they would break the image
	// size budget).
	bundle := buildBundle(t, args, hostapdBin, wpasBin)
	dir, m := imagetest.ImageWith(t, vmBoard, imagetest.Options{
		Modules: vmModules,
		Files:   []image.File{{Path: "usr/bin/roamtest", Host: buildRoamtest(t)}},
	})
	vm := imagetest.Boot(t, dir, m, imagetest.BootOptions{Timeout: timeout + 2*time.Minute, Config: func(c *qemu.Config) {
		c.MemoryMB = 1024
		c.SMP = 2
		c.Extra = append(c.Extra, "-drive", "if=none,id=bundle,format=raw,readonly=on,file="+bundle,
			"-device", "virtio-blk-pci,drive=bundle")
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

// TestVMRoamProbe is a development probe of the environment (roamtest -scenarios probe).
func TestVMRoamProbe(t *testing.T) {
	if os.Getenv("MESHROOT_ROAM_PROBE") == "" {
		t.Skip("development probe: set MESHROOT_ROAM_PROBE=1")
	}
	res := runVM(t, "-scenarios probe "+os.Getenv("MESHROOT_ROAM_ARGS"), 10*time.Minute)
	if !res.done.OK {
		t.Errorf("roamtest failed: %+v", res.done)
	}
}

// buildRoamtest compiles this command for the VM as a static binary, at a stable path that is
// only replaced when its bytes change (the image cache keys files by size and mtime).
func buildRoamtest(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(testenv.CacheDir(t), "roamtest")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(t.TempDir(), "roamtest")
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", tmp, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build roamtest: %v\n%s", err, out)
	}
	dst := filepath.Join(dir, "roamtest-amd64")
	fresh, err := os.ReadFile(tmp)
	if err != nil {
		t.Fatal(err)
	}
	if old, err := os.ReadFile(dst); err == nil && bytes.Equal(old, fresh) {
		return dst
	}
	if err := os.WriteFile(dst+".new", fresh, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dst+".new", dst); err != nil {
		t.Fatal(err)
	}
	return dst
}

// buildBundle writes a tar archive of roamtest's arguments, the binaries, the shared libraries ldd lists for them (at
// the paths ldd resolves, the interpreter included) and Debian's regulatory.db.
func buildBundle(t testing.TB, args string, bins ...string) string {
	t.Helper()
	argsPath := filepath.Join(t.TempDir(), "roamtest.args")
	if err := os.WriteFile(argsPath, []byte(args+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{ // path in the guest → host file
		"lib/firmware/regulatory.db":      "/lib/firmware/regulatory.db-debian",
		"lib/firmware/regulatory.db.p7s":  "/lib/firmware/regulatory.db.p7s-debian",
		strings.TrimPrefix(argsFile, "/"): argsPath,
	}
	for _, bin := range bins {
		files["usr/sbin/"+filepath.Base(bin)] = bin
		out, err := exec.Command("ldd", bin).Output()
		if err != nil {
			t.Fatalf("ldd %s: %v", bin, err)
		}
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			var p string
			switch {
			case len(f) >= 3 && f[1] == "=>":
				p = f[2]
			case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
				p = f[0]
			}
			if p == "" || !strings.HasPrefix(p, "/") {
				continue
			}
			files[strings.TrimPrefix(p, "/")] = p
		}
	}
	path := filepath.Join(t.TempDir(), "bundle.tar")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		b, err := os.ReadFile(files[n])
		if err != nil {
			t.Fatal(err)
		}
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o755, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}
