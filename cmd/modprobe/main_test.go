package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"meshroot/firmware"
)

func TestModprobe(t *testing.T) {
	dir := t.TempDir()
	dep := "kernel/net/wireless/cfg80211.ko: kernel/net/rfkill/rfkill.ko\nkernel/net/rfkill/rfkill.ko:\n" +
		"kernel/drivers/net/wireless/mac80211_hwsim.ko: kernel/net/mac80211/mac80211.ko kernel/net/wireless/cfg80211.ko kernel/net/rfkill/rfkill.ko\n" +
		"kernel/net/mac80211/mac80211.ko: kernel/net/wireless/cfg80211.ko kernel/net/rfkill/rfkill.ko\n"
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte("kernel/drivers/virtio/virtio.ko\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fake := &firmware.FakeModuleKernel{}
	kernel = fake

	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"-d", dir, "-n", "mac80211_hwsim"}, &out, &errb); err != nil {
		t.Fatalf("modprobe -n = %v (%s)", err, errb.String())
	}
	want := "insmod " + filepath.Join(dir, "kernel/net/rfkill/rfkill.ko") + "\n" +
		"insmod " + filepath.Join(dir, "kernel/net/wireless/cfg80211.ko") + "\n" +
		"insmod " + filepath.Join(dir, "kernel/net/mac80211/mac80211.ko") + "\n" +
		"insmod " + filepath.Join(dir, "kernel/drivers/net/wireless/mac80211_hwsim.ko") + "\n"
	if out.String() != want {
		t.Errorf("modprobe -n output = %q; want %q", out.String(), want)
	}
	if len(fake.Loaded) != 0 {
		t.Errorf("dry run loaded %v", fake.Loaded)
	}

	out.Reset()
	if err := run(context.Background(), []string{"-d", dir, "-v", "mac80211_hwsim", "radios=3", "channels=2"}, &out, &errb); err != nil {
		t.Fatalf("modprobe = %v", err)
	}
	if got := strings.Join(fake.Loaded, " "); got != "rfkill cfg80211 mac80211 mac80211_hwsim" {
		t.Errorf("loaded %q; want rfkill cfg80211 mac80211 mac80211_hwsim", got)
	}
	if fake.Params["mac80211_hwsim"] != "radios=3 channels=2" {
		t.Errorf("params = %q; want radios=3 channels=2", fake.Params["mac80211_hwsim"])
	}
	// Loaded again, a built-in one, and (quietly) an unknown one: fine.
	if err := run(context.Background(), []string{"-d", dir, "-a", "-q", "cfg80211", "virtio", "nosuch"}, &out, &errb); err != nil {
		t.Errorf("modprobe -a -q = %v; want nil", err)
	}
	if err := run(context.Background(), []string{"-d", dir, "nosuch"}, &out, &errb); err == nil {
		t.Errorf("modprobe nosuch = nil; want an error")
	}
}
