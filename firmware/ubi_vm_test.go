package firmware_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"meshroot/image/imagetest"
	"meshroot/image/qemu"
	"meshroot/internal/testenv"
)

// nandArgs make a simulated NAND chip the data area: u-root's init loads, from modules-load=
// and with the parameters given as module.param=, nandsim (a 256 MiB chip with 2 KiB pages and
// 128 KiB erase blocks, like the IPQ boards' NAND, cut into partitions of 16 and 256 erase
// blocks and the rest), UBI and UBIFS (after zstd, the compressor UBIFS asks the crypto API
// for at load); meshroot.data= names the second partition, which nandsim calls "NAND simulator
// partition 1".
var nandArgs = []string{
	"modules-load=zstd,nandsim,ubi,ubifs",
	"nandsim.id_bytes=0x20,0xaa,0x00,0x15",
	"nandsim.parts=16,256",
	`meshroot.data="mtd:NAND simulator partition 1"`,
}

// TestVMDataUBIFS: on the amd64 virtual router with a simulated NAND chip (Debian's amd64
// kernel has nandsim; nandsim keeps its contents in RAM, so the data cannot outlive QEMU),
// meshd finds the MTD partition by name, attaches UBI, creates the rootfs_data volume, mounts
// it as ubifs (the kernel formats the empty volume) and opens the config store there; stopped
// and started again it finds the same UBI device and volume, and the data written is intact.
func TestVMDataUBIFS(t *testing.T) {
	testenv.Integration(t)
	dir, m := imagetest.ImageWith(t, "qemu-x86_64", imagetest.Options{Modules: []string{"nandsim", "ubi", "ubifs", "zstd"}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	vm := imagetest.Boot(t, dir, m, imagetest.BootOptions{NoDisk: true, Config: func(c *qemu.Config) {
		c.Append = append(c.Append, nandArgs...)
	}})
	if _, _, err := imagetest.WaitReady(ctx, vm); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	mounted := func(vm *qemu.VM) int {
		n := 0
		for _, l := range vm.Lines() {
			if strings.Contains(l.Text, `"msg":"data partition mounted","device":"ubi0:rootfs_data"`) && strings.Contains(l.Text, `"fs":"ubifs"`) {
				n++
			}
		}
		return n
	}
	if mounted(vm) != 1 {
		t.Fatalf("boot: no ubifs data partition mounted from ubi0:rootfs_data on the console\n%s", vm.Tail(40))
	}
	if hasLine(vm, "using RAM") {
		t.Errorf("boot: the data service fell back to RAM")
	}
	if err := imagetest.ShellReady(ctx, vm); err != nil {
		t.Fatal(err)
	}
	// The mount table, the kernel's word that it formatted the empty volume, the config store's
	// directory on it, and a file for the restart to find.
	shellRun(ctx, t, vm, "grep ' /data ' /proc/mounts", "ubi0:rootfs_data /data ubifs rw")
	shellRun(ctx, t, vm, "dmesg | grep 'default file-system created'", "UBIFS (ubi0:0): default file-system created")
	shellRun(ctx, t, vm, "test -d /data/config && echo UBI-DATA-$((40+1)) > /data/marker && sync && echo STORE-$((2+2))", "STORE-4")

	// Stop meshd (its data service syncs and unmounts; UBI stays attached) and start it again
	// from init's shell: it must find ubi0 and the volume, not attach or format again.
	shellRun(ctx, t, vm, "meshd -halt", `"msg":"meshd stopped"`)
	if !hasLine(vm, `"msg":"data partition unmounted"`) {
		t.Errorf("halt: no data partition unmounted line")
	}
	if err := imagetest.ShellReady(ctx, vm); err != nil {
		t.Fatalf("init's shell after meshd halted: %v", err)
	}
	if err := vm.Send("meshd -boot=true -no-console &\n"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := imagetest.WaitReady(ctx, vm); err != nil {
		t.Fatalf("second start: WaitReady: %v", err)
	}
	if mounted(vm) != 2 {
		t.Errorf("second start: %d ubifs mount lines; want 2\n%s", mounted(vm), vm.Tail(40))
	}
	if err := imagetest.ShellReady(ctx, vm); err != nil {
		t.Fatal(err)
	}
	shellRun(ctx, t, vm, "cat /data/marker", "UBI-DATA-41")
	shellRun(ctx, t, vm, "echo VOLS $(ls /sys/class/ubi)", "VOLS ubi0 ubi0_0 version")
	imagetest.Poweroff(ctx, t, vm)
	noBadLines(t, vm)
	for _, l := range vm.Lines() {
		if strings.Contains(l.Text, "UBI") || strings.Contains(l.Text, "data partition") {
			t.Logf("%s", l.Text)
		}
	}
}
