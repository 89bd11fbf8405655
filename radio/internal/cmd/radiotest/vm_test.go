package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"meshroot/image"
	"meshroot/image/imagetest"
	"meshroot/image/qemu"
	"meshroot/internal/testenv"
	"meshroot/radio/internal/vmkit"
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
	bundle := vmkit.Bundle(t, nil, hostapdBin)
	dir, m := imagetest.ImageWith(t, vmBoard, imagetest.Options{
		Modules: []string{"mac80211_hwsim"},
		Files:   []image.File{{Path: "usr/bin/radiotest", Host: vmkit.BuildCommand(t, "radiotest")}},
	})
	vm := imagetest.Boot(t, dir, m, imagetest.BootOptions{Timeout: 12 * time.Minute, Config: func(c *qemu.Config) {
		c.MemoryMB = 768
		c.Extra = append(c.Extra, vmkit.BundleDrive(bundle)...)
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
