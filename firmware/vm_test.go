package firmware_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"meshroot/board"
	"meshroot/firmware"
	"meshroot/image/imagetest"
	"meshroot/image/qemu"
	"meshroot/internal/testenv"
)

// These tests boot the real arm64 image (built and cached by image/imagetest) to check what
// only a real kernel and a real serial console show: modules from modules.dep, the ext4 data
// partition, the watchdog, the console shell's life cycle, and clean stops.

// noBadLines fails on console lines that mean a broken boot or an unclean stop.
func noBadLines(t *testing.T, vm *qemu.VM) {
	t.Helper()
	for _, l := range vm.Lines() {
		for _, bad := range []string{"Kernel panic", "watchdog did not stop", "modules: some failed", "service panicked"} {
			if strings.Contains(l.Text, bad) {
				t.Errorf("console: %s", l.Text)
			}
		}
	}
}

func waitLine(ctx context.Context, t *testing.T, vm *qemu.VM, substr string) qemu.Line {
	t.Helper()
	l, err := vm.WaitFor(ctx, substr)
	if err != nil {
		t.Fatalf("waiting for %q: %v", substr, err)
	}
	return l
}

// TestVMConsoleShellAndPersistence: on the arm64 virtual router, the console shell survives
// being exited (meshd respawns it and keeps running: exiting the shell used to hang the serial
// console up under meshd and kill it), a file written to /data survives a clean power-off and
// the next boot, and every clean stop disarms the watchdog and unmounts the data partition.
func TestVMConsoleShellAndPersistence(t *testing.T) {
	testenv.Integration(t)
	const name = "qemu-virt-arm64"
	b, err := board.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	dir, m := imagetest.Image(t, name)
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := qemu.CreateDisk(context.Background(), disk, b.Flash, qemu.DiskOptions{}); err != nil {
		t.Fatalf("CreateDisk: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	vm := imagetest.Boot(t, dir, m, imagetest.BootOptions{Disk: disk})
	if _, _, err := imagetest.WaitReady(ctx, vm); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	for _, l := range vm.Lines() {
		if strings.Contains(l.Text, `"msg":"modules loaded"`) {
			t.Logf("%s", l.Text)
		}
	}
	for _, want := range []string{`"msg":"data partition mounted","device":"/dev/vda3"`, `"msg":"watchdog armed"`, `"msg":"board detected","board":"qemu-virt-arm64"`} {
		if !hasLine(vm, want) {
			t.Errorf("boot: no %s on the console", want)
		}
	}

	// Exit the console shell: meshd respawns it after its backoff and is still in charge.
	if err := imagetest.ShellReady(ctx, vm); err != nil {
		t.Fatal(err)
	}
	shellRun(ctx, t, vm, "exit", `"msg":"service stopped; restarting after backoff","service":"console"`)
	waitLine(ctx, t, vm, `"msg":"console shell started"`)
	if err := imagetest.ShellReady(ctx, vm); err != nil {
		t.Fatalf("after exit: %v", err)
	}
	shellRun(ctx, t, vm, "echo PERSIST-OK > /data/marker; sync; echo WROTE-$((40+2))", "WROTE-42")
	imagetest.Poweroff(ctx, t, vm)
	for _, want := range []string{`"msg":"watchdog disarmed (magic close)"`, `"msg":"data partition unmounted"`} {
		if !hasLine(vm, want) {
			t.Errorf("first boot: no %s on the console", want)
		}
	}
	noBadLines(t, vm)

	// Second boot on the same disk: the file is there.
	vm2 := imagetest.Boot(t, dir, m, imagetest.BootOptions{Disk: disk})
	if _, _, err := imagetest.WaitReady(ctx, vm2); err != nil {
		t.Fatalf("second boot: WaitReady: %v", err)
	}
	if err := imagetest.ShellReady(ctx, vm2); err != nil {
		t.Fatal(err)
	}
	shellRun(ctx, t, vm2, "cat /data/marker", "PERSIST-OK")
	imagetest.Poweroff(ctx, t, vm2)
	noBadLines(t, vm2)
}

// TestVMHaltHandsOverToInit: `meshd -halt` stops meshd cleanly and u-root's init then starts
// its own shell on a console that still works (meshd gives the console up as its controlling
// terminal at boot, so its exit does not hang the console up under init).
func TestVMHaltHandsOverToInit(t *testing.T) {
	testenv.Integration(t)
	dir, m := imagetest.Image(t, "qemu-virt-arm64")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	vm := imagetest.Boot(t, dir, m, imagetest.BootOptions{})
	if _, _, err := imagetest.WaitReady(ctx, vm); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	if err := imagetest.ShellReady(ctx, vm); err != nil {
		t.Fatal(err)
	}
	shellRun(ctx, t, vm, "meshd -halt", `"msg":"meshd stopped"`)
	// init's shell answers on the console; then power off from it (no meshd any more).
	if err := imagetest.ShellReady(ctx, vm); err != nil {
		t.Fatalf("init's shell after meshd halted: %v", err)
	}
	if err := vm.Send("poweroff\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-vm.Done():
	case <-ctx.Done():
		t.Fatalf("VM still running after poweroff from init's shell\n%s", vm.Tail(20))
	}
	noBadLines(t, vm)
	if !hasLine(vm, firmware.ReadyMarker) {
		t.Errorf("no ready line")
	}
}

// shellRun types an idempotent command line into the console shell until its output shows
// want: a line typed while the shell is still busy with the previous one can be lost.
func shellRun(ctx context.Context, t *testing.T, vm *qemu.VM, cmd, want string) {
	t.Helper()
	for {
		if err := vm.Send("\x15" + cmd + "\n"); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := vm.WaitFor(wctx, want)
		cancel()
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("typed %q; %q never showed: %v", cmd, want, err)
		}
	}
}

func hasLine(vm *qemu.VM, substr string) bool {
	for _, l := range vm.Lines() {
		if strings.Contains(l.Text, substr) {
			return true
		}
	}
	return false
}
