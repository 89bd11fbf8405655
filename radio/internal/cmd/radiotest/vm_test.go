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

// vmBoard is the board of the radio VM test. It is the amd64 QEMU board, not the arm64 product
// architecture: the image builder adds a host binary's shared libraries (hostapd needs libnl,
// libssl, libcrypto) only for the build machine's architecture, and this machine has no arm64
// hostapd and libraries installed to list by hand.
const vmBoard = "qemu-x86_64"

// requiredChecks must all be reported, and pass, by radiotest.
var requiredChecks = []string{
	"bundle", "modprobe", "interfaces", "regulatory", "hostapd start", "status", "station associated",
	"station list", "11k/11v commands", "scan width", "ap scan", "survey", "csa keeps station",
	"dfs cac", "station on dfs channel", "manager up", "radar detected", "radar move without outage",
	"station follows radar move", "manager radar memory",
}

// TestVMRadio boots the firmware image with mac80211_hwsim, Debian's hostapd and radiotest, and
// checks what radiotest reports: hostapd driven through radio/hostapd (STATUS, events,
// CHAN_SWITCH with a station staying associated), nl80211 (channels, survey, scans and widths)
// and the radio manager moving a radio off a DFS channel at radar without an outage.
func TestVMRadio(t *testing.T) {
	testenv.Integration(t)
	hostapdBin := testenv.Command(t, "hostapd")
	testenv.Command(t, "ldd")
	// hostapd, its libraries and regulatory.db travel on a second virtio disk as a tar archive
	// that radiotest unpacks: inside the initramfs they would push this test image over the
	// image's 12 MiB budget (hostapd + libcrypto/libssl/libnl/libc ≈ 11 MB raw).
	bundle := buildBundle(t, hostapdBin)
	dir, m := imagetest.ImageWith(t, vmBoard, imagetest.Options{
		Modules: []string{"mac80211_hwsim"},
		Files:   []image.File{{Path: "usr/bin/radiotest", Host: buildRadiotest(t)}},
	})
	vm := imagetest.Boot(t, dir, m, imagetest.BootOptions{Timeout: 12 * time.Minute, Config: func(c *qemu.Config) {
		c.MemoryMB = 768
		c.Extra = append(c.Extra, "-drive", "if=none,id=bundle,format=raw,readonly=on,file="+bundle,
			"-device", "virtio-blk-pci,drive=bundle")
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 11*time.Minute)
	defer cancel()
	if _, _, err := imagetest.WaitReady(ctx, vm); err != nil {
		t.Fatalf("WaitReady: %v\n%s", err, vm.Tail(30))
	}
	if err := imagetest.ShellReady(ctx, vm); err != nil {
		t.Fatalf("ShellReady: %v", err)
	}
	start := time.Now()
	if err := vm.Send("/usr/bin/radiotest -bundle /dev/vdb\n"); err != nil {
		t.Fatal(err)
	}
	doneLine, err := vm.WaitFor(ctx, "RADIOTEST-DONE ")
	if err != nil {
		t.Fatalf("radiotest did not finish: %v\n%s", err, vm.Tail(40))
	}
	t.Logf("radiotest ran %v", time.Since(start).Round(time.Second))
	got := map[string]Check{}
	for _, l := range vm.Lines() {
		i := strings.Index(l.Text, "RADIOTEST {")
		if i < 0 {
			continue
		}
		var c Check
		if err := json.Unmarshal([]byte(l.Text[i+len("RADIOTEST "):]), &c); err != nil {
			t.Errorf("bad result line %q: %v", l.Text, err)
			continue
		}
		got[c.Name] = c
		t.Logf("%-28s ok=%-5v %6d ms  %s", c.Name, c.OK, c.Ms, c.Detail)
	}
	// MESHROOT_RADIO_FIXTURES=<dir> saves hostapd's raw replies and events for the parsers'
	// fixtures (radio/hostapd/testdata/hostapd-2.10 came from here).
	if fx := os.Getenv("MESHROOT_RADIO_FIXTURES"); fx != "" {
		for name, file := range map[string]string{"raw STATUS": "status.txt", "raw STA-FIRST": "sta.txt", "raw events": "events.json"} {
			if c, ok := got[name]; ok && c.OK {
				if err := os.WriteFile(filepath.Join(fx, file), []byte(c.Detail), 0o644); err != nil {
					t.Errorf("fixture %s: %v", file, err)
				}
			}
		}
	}
	for _, name := range requiredChecks {
		c, ok := got[name]
		switch {
		case !ok:
			t.Errorf("check %q not reported", name)
		case !c.OK:
			t.Errorf("check %q failed: %s", name, c.Detail)
		}
	}
	var d Done
	text := doneLine.Text[strings.Index(doneLine.Text, "RADIOTEST-DONE ")+len("RADIOTEST-DONE "):]
	if err := json.Unmarshal([]byte(text), &d); err != nil || !d.OK {
		t.Errorf("RADIOTEST-DONE %s (%v); want ok", text, err)
	}
}

// buildRadiotest compiles this command for the VM as a static binary. It goes into the image as
// a file: image.Options.ExtraCommands cannot build meshroot packages into u-root's busybox (the
// GOPATH-mode busybox build finds neither the module's other packages nor allows internal/).
// The binary is kept at a stable path and only replaced when its bytes change, so that the
// image cache (keyed by the files' size and mtime) is reused while the source stays the same.
func buildRadiotest(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(testenv.CacheDir(t), "radiotest")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(t.TempDir(), "radiotest")
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", tmp, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build radiotest: %v\n%s", err, out)
	}
	dst := filepath.Join(dir, "radiotest-amd64")
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

// buildBundle writes a tar archive of hostapd, the shared libraries ldd lists for it (at the
// paths ldd resolves, the interpreter included) and Debian's regulatory.db with its signature.
func buildBundle(t *testing.T, hostapdBin string) string {
	t.Helper()
	out, err := exec.Command("ldd", hostapdBin).Output()
	if err != nil {
		t.Fatalf("ldd %s: %v", hostapdBin, err)
	}
	files := map[string]string{ // path in the guest → host file
		"usr/sbin/hostapd":               hostapdBin,
		"lib/firmware/regulatory.db":     "/lib/firmware/regulatory.db-debian",
		"lib/firmware/regulatory.db.p7s": "/lib/firmware/regulatory.db.p7s-debian",
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		// "libssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
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
		b, err := os.ReadFile(files[n]) // follows symlinks to the real library
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
