package qemu_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"meshroot/image/imagetest"
	"meshroot/internal/testenv"
)

func TestVMBootArm64(t *testing.T) { testVMBoot(t, "qemu-virt-arm64") }

func TestVMBootAmd64(t *testing.T) { testVMBoot(t, "qemu-x86_64") }

// bootServices are the services meshd starts on every QEMU board (later domains add more).
var bootServices = []string{"data", "lan", "watchdog", "console"}

// testVMBoot builds (or reuses) the board's image, boots it with a fresh data disk and the
// i6300esb watchdog, waits for meshd's ready line, checks what it says, then powers the VM off
// the way an engineer would on the serial console (`meshd -poweroff`: clean service stop,
// sync, unmount, power off) and checks QEMU exits by itself.
func testVMBoot(t *testing.T, boardName string) {
	testenv.Integration(t)
	dir, m := imagetest.Image(t, boardName)
	vm := imagetest.Boot(t, dir, m, imagetest.BootOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	info, line, err := imagetest.WaitReady(ctx, vm)
	if err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	t.Logf("ready after %.2fs (guest uptime %d ms): %s", line.At.Seconds(), info.UptimeMS, line.Text)
	if info.Board != boardName {
		t.Errorf("ready line board = %q; want %q", info.Board, boardName)
	}
	if info.Version != m.Version {
		t.Errorf("ready line version = %q; want the image's %q", info.Version, m.Version)
	}
	for _, s := range bootServices {
		if !slices.Contains(info.Services, s) {
			t.Errorf("ready line services = %q; want it to include %q", info.Services, s)
		}
	}
	if info.UptimeMS <= 0 || time.Duration(info.UptimeMS)*time.Millisecond > line.At {
		t.Errorf("ready line uptime_ms = %d; want > 0 and at most the %v since QEMU started", info.UptimeMS, line.At)
	}
	// The disk's GPT, the ext4 CreateDisk made and the shipped virtio/ext4 modules together:
	// meshd must have mounted the board's data partition, not fallen back to RAM.
	mounted := false
	for _, l := range vm.Lines() {
		mounted = mounted || (strings.Contains(l.Text, `"msg":"data partition mounted"`) &&
			strings.Contains(l.Text, `"device":"/dev/vda3"`) && strings.Contains(l.Text, `"fs":"ext4"`))
	}
	if !mounted {
		t.Errorf("console has no data partition mounted from /dev/vda3 (ext4) before the ready line")
	}

	imagetest.Poweroff(ctx, t, vm)
}
