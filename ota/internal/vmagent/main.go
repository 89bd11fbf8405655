// Command vmagent is the guest side of ota/uboot's QEMU test (TestVM...): the /init of a tiny
// initramfs booted by the real U-Boot from a slot. It loads the virtio block driver, opens the
// slots and the U-Boot environment on /dev/vda where the board catalog puts them, and runs the
// updater's boot-time logic exactly as the firmware's OTA service does: a trial boot runs the
// health check (this image's /etc/vmagent.conf says whether it ever passes) and commits, or
// reboots so the bootloader counts; a boot after a rollback records it. It prints one
// "VMAGENT ..." line per event and powers off when there is nothing more to do.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"meshroot/board"
	"meshroot/ota"
	"meshroot/ota/bootenv"
)

func main() {
	err := run()
	if err != nil {
		fmt.Printf("VMAGENT error: %v\n", err)
	}
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}

func run() error {
	for _, m := range []struct{ src, dst, fs string }{{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"}} {
		os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.fs, 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	conf := map[string]string{}
	b, err := os.ReadFile("/etc/vmagent.conf")
	if err != nil {
		return err
	}
	for _, line := range strings.Fields(string(b)) {
		if k, v, ok := strings.Cut(line, "="); ok {
			conf[k] = v
		}
	}
	cmdline, _ := os.ReadFile("/proc/cmdline")
	running := ""
	for _, f := range strings.Fields(string(cmdline)) {
		if v, ok := strings.CutPrefix(f, "meshroot.slot="); ok {
			running = v
		}
	}
	fmt.Printf("VMAGENT boot slot=%s version=%s health=%s\n", running, conf["version"], conf["health"])
	mods, _ := filepath.Glob("/lib/modules/*.ko")
	for _, name := range []string{"virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_blk"} {
		p := "/lib/modules/" + name + ".ko"
		f, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("module %s: %w (have %v)", name, err, mods)
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("load %s: %w", name, err)
		}
	}
	brd, err := board.Lookup(conf["board"])
	if err != nil {
		return err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(brd.Flash.SlotB.Device); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear", brd.Flash.SlotB.Device)
		}
		time.Sleep(50 * time.Millisecond)
	}
	healthy := conf["health"] == "ok"
	u, closeDev, err := ota.OpenDevice(ota.DeviceConfig{
		Board: brd, Root: "/", RepoURL: "http://127.0.0.1:1", DeviceID: "vm-1",
		TrustedRoot: []byte("{}"), CacheDir: "/tmp/tuf", // the repository is not used at boot
		RunningVersion: conf["version"],
		Health: func(ctx context.Context) error {
			if healthy {
				return nil
			}
			return errors.New("supervisor never reported healthy")
		},
		HealthDeadline: 2 * time.Second,
	})
	if err != nil {
		return err
	}
	defer closeDev()
	cfg, err := bootenv.FromBoard(brd.Flash.Env)
	if err != nil {
		return err
	}
	env, closeEnv, err := bootenv.Open(cfg)
	if err != nil {
		return err
	}
	defer closeEnv()
	ctx := context.Background()
	st, err := u.Startup(ctx)
	if err != nil {
		return err
	}
	e, _ := env.Load()
	get := func(k string) string { v, _ := e.Get(k); return v }
	fmt.Printf("VMAGENT state=%s slot=%s version=%s bootcount=%s upgrade_available=%s\n", st, running, conf["version"], get(ota.VarBootCount), get(ota.VarUpgradeAvailable))
	if st == ota.Trial {
		if err := u.JudgeTrial(ctx); err != nil {
			fmt.Printf("VMAGENT health failed: %v; rebooting\n", err)
			unix.Sync()
			return unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
		}
		fmt.Printf("VMAGENT committed slot=%s version=%s\n", running, conf["version"])
	}
	e, _ = env.Load()
	fmt.Printf("VMAGENT done slot=%s boot_slot=%s upgrade_available=%s bootcount=%s failed=%s\n", running, get(ota.VarBootSlot), get(ota.VarUpgradeAvailable), get(ota.VarBootCount), get(ota.VarFailed))
	return nil
}
