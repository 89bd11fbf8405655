package ota

import (
	"context"
	"errors"
	"math/rand"
	"testing"

	"meshroot/ota/repo"
)

// step runs one power-on of the device up to the next reboot: the bootloader (which itself
// writes the environment), then the updater: judge a trial (commit), or install the newer
// release. It returns done when the device runs the new version committed.
func (d *device) step(ctx context.Context, target string) (done bool, err error) {
	res, err := SimulateBoot(d.freshEnv(), d.slots)
	if err != nil {
		return false, err
	}
	d.running = res.Slot
	ver := d.envVar(VarVersionPrefix + res.Slot)
	u := d.updater(func(c *Config) { c.RunningVersion = ver })
	st, err := u.Startup(ctx)
	if err != nil {
		return false, err
	}
	if st == Trial {
		return false, u.JudgeTrial(ctx)
	}
	if ver == target {
		return d.envVar(VarUpgradeAvailable) != "1", nil
	}
	offer, err := u.Check(ctx)
	if err != nil {
		return false, err
	}
	return false, u.Apply(ctx, offer.Release)
}

// TestPowerCut cuts the power at 1,000 random points of the whole update (download into the
// inactive slot, checkpoints, verification, the environment switch, the bootloader's bootcount
// writes, the commit). Unsynced writes survive only in part (random 512-byte sectors). After
// every cut the simulated bootloader must boot a slot holding a complete image of the old or
// the new version, the data partition must be unchanged, and the update must then finish.
func TestPowerCut(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 96<<10, "1.0.0", "1.1.0")
	f.publish("1.1.0", repo.PublishSpec{})

	// Measure how many bytes a full, uninterrupted update writes.
	ref := newDevice(t, f, "dev-ref", slotSize, "1.0.0")
	start := ref.disk.Written()
	for i := 0; ; i++ {
		done, err := ref.step(ctx, "1.1.0")
		if err != nil {
			t.Fatalf("reference update step %d = %v", i, err)
		}
		if done {
			break
		}
		if i > 5 {
			t.Fatal("reference update did not finish in 5 boots")
		}
	}
	total := ref.disk.Written() - start
	t.Logf("an uninterrupted update writes %d bytes", total)

	cuts := 1000
	if testing.Short() {
		cuts = 100
	}
	rnd := rand.New(rand.NewSource(7))
	stats := map[string]int{}
	for i := 0; i < cuts; i++ {
		d := newDevice(t, f, "dev-cut", slotSize, "1.0.0")
		d.cache = ref.cache // a warm TUF cache keeps the run short; it is not on the simulated disk
		cut := rnd.Int63n(total)
		d.disk.CutAfter(cut, rand.New(rand.NewSource(int64(i))))
		for j := 0; j < 6 && !d.disk.Dead(); j++ {
			if done, err := d.step(ctx, "1.1.0"); done || (err != nil && !d.disk.Dead()) {
				t.Fatalf("cut %d at byte %d: step %d before the cut = done %v, %v", i, cut, j, done, err)
			}
		}
		if !d.disk.Dead() {
			t.Fatalf("cut %d at byte %d: the power cut never happened", i, cut)
		}
		// Power back on: the bootloader must find a good slot.
		d.disk.Reboot()
		res, err := SimulateBoot(d.freshEnv(), d.slots)
		if err != nil {
			t.Fatalf("cut %d at byte %d: boot after the cut = %v (brick)", i, cut, err)
		}
		ver := d.slotVersion(res.Slot)
		if ver == "" || (res.Slot == "a" && ver != "1.0.0") {
			t.Fatalf("cut %d at byte %d: booted slot %s holds no complete image (%q)", i, cut, res.Slot, ver)
		}
		if !d.dataIntact() {
			t.Fatalf("cut %d at byte %d: data partition changed", i, cut)
		}
		stats[res.Slot+map[bool]string{true: " trial", false: ""}[res.Trial]]++
		// The device boots the slot just chosen; let it finish the update.
		d.disk.Load(d.disk.Snapshot())
		finished := false
		for j := 0; j < 8; j++ {
			done, err := d.step(ctx, "1.1.0")
			if err != nil && !errors.Is(err, errReboot) {
				t.Fatalf("cut %d at byte %d: recovery step %d = %v", i, cut, j, err)
			}
			if done {
				finished = true
				break
			}
		}
		if !finished || d.slotVersion(d.running) != "1.1.0" {
			t.Fatalf("cut %d at byte %d: update did not finish after the cut (running %s: %q)", i, cut, d.running, d.slotVersion(d.running))
		}
	}
	t.Logf("%d cuts; first boot after the cut: %v", cuts, stats)
}
