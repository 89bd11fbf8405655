package ota

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"meshroot/ota/bootenv"
	"meshroot/ota/repo"
	"meshroot/ota/rollout"
)

type memReporter struct {
	mu      sync.Mutex
	reports []rollout.Report
}

func (m *memReporter) Report(_ context.Context, r rollout.Report) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reports = append(m.reports, r)
	return nil
}

func (m *memReporter) results() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, r := range m.reports {
		out = append(out, string(r.Result))
	}
	return out
}

const slotSize = 256 << 10

func TestUpdateCommit(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 120<<10, "1.0.0", "1.1.0")
	f.publish("1.1.0", repo.PublishSpec{MinVersion: "1.1.0"})
	d := newDevice(t, f, "dev-1", slotSize, "1.0.0")
	rep := &memReporter{}
	d.reporter = rep
	if res, err := d.boot(); err != nil || res.Slot != "a" || res.Trial {
		t.Fatalf("first boot = %+v, %v; want slot a, no trial", res, err)
	}
	u := d.updater(nil)
	offer, err := u.Check(ctx)
	if err != nil {
		t.Fatalf("Check = %v", err)
	}
	if offer.Release.Meta.Version != "1.1.0" {
		t.Fatalf("Check offered %s; want 1.1.0", offer.Release.Meta.Version)
	}
	if err := u.Apply(ctx, offer.Release); err != nil {
		t.Fatalf("Apply = %v", err)
	}
	if v := d.slotVersion("a"); v != "1.0.0" {
		t.Errorf("running slot a holds %q after Apply; want 1.0.0 untouched", v)
	}
	if v := d.slotVersion("b"); v != "1.1.0" {
		t.Errorf("slot b holds %q after Apply; want 1.1.0", v)
	}
	res, err := d.boot()
	if err != nil || res.Slot != "b" || !res.Trial || res.BootCount != 1 {
		t.Fatalf("boot after switch = %+v, %v; want slot b on trial, bootcount 1", res, err)
	}
	u = d.updater(func(c *Config) { c.RunningVersion = "1.1.0" })
	if st, err := u.Startup(ctx); err != nil || st != Trial {
		t.Fatalf("Startup = %v, %v; want trial", st, err)
	}
	if err := u.JudgeTrial(ctx); err != nil {
		t.Fatalf("JudgeTrial (healthy) = %v", err)
	}
	if err := u.DeliverReport(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(rep.results(), ","), "installed,committed"; got != want {
		t.Errorf("reports = %s; want %s", got, want)
	}
	for name, want := range map[string]string{VarUpgradeAvailable: "0", VarBootCount: "0", VarBootSlot: "b", VarFloor: "1.1.0", VarTrial: "", VarReport: ""} {
		if got := d.envVar(name); got != want {
			t.Errorf("after commit %s = %q; want %q", name, got, want)
		}
	}
	// Reboots stay on b without counting.
	for i := 0; i < 5; i++ {
		if res, err := d.boot(); err != nil || res.Slot != "b" || res.Trial {
			t.Fatalf("boot %d after commit = %+v, %v; want slot b, no trial", i, res, err)
		}
	}
	if !d.dataIntact() {
		t.Errorf("data partition changed")
	}
}

func TestUpdateRollsBackWhenUnhealthy(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 100<<10, "1.0.0", "2.0.0")
	f.publish("2.0.0", repo.PublishSpec{})
	d := newDevice(t, f, "dev-2", slotSize, "1.0.0")
	rep := &memReporter{}
	d.reporter = rep
	d.boot()
	u := d.updater(nil)
	offer, err := u.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Apply(ctx, offer.Release); err != nil {
		t.Fatal(err)
	}
	// The new image never becomes healthy: each boot's Run reboots after the deadline.
	d.health = func(context.Context) error { return errors.New("vpn down") }
	var slots []string
	for boot := 0; boot < 10; boot++ {
		res, err := d.boot()
		if err != nil {
			t.Fatalf("boot %d = %v", boot, err)
		}
		slots = append(slots, res.Slot)
		ver := "1.0.0"
		if res.Slot == "b" {
			ver = "2.0.0"
		}
		u := d.updater(func(c *Config) { c.RunningVersion = ver })
		rctx, cancel := context.WithCancel(ctx)
		err = u.Run(rctx, cancel) // up() ends the run: we only look at the boot decisions
		cancel()
		if res.Slot == "a" {
			if err != nil {
				t.Fatalf("Run on the old slot = %v", err)
			}
			break
		}
		if !errors.Is(err, errReboot) {
			t.Fatalf("Run on the bad slot = %v; want a reboot", err)
		}
	}
	if got, want := strings.Join(slots, ""), "bbba"; got != want {
		t.Errorf("booted slots = %s; want %s (bootlimit 3 trial boots, then back to a)", got, want)
	}
	if got := rep.results(); len(got) < 2 || got[0] != "installed" || got[1] != "rolled_back" {
		t.Errorf("reports = %v; want installed then rolled_back", got)
	}
	if v := d.envVar(VarTrial); v != "" {
		t.Errorf("%s = %q after the rollback; want it cleared", VarTrial, v)
	}
	// The device does not try the release that failed on it again.
	d.running = "a"
	if _, err := d.updater(func(c *Config) { c.RunningVersion = "1.0.0" }).Check(ctx); !errors.Is(err, ErrFailedBefore) || !errors.Is(err, ErrNoUpdate) {
		t.Errorf("Check after the rollback = %v; want ErrFailedBefore (an ErrNoUpdate)", err)
	}
	if !d.dataIntact() || d.slotVersion("a") != "1.0.0" {
		t.Errorf("after rollback: data intact %v, slot a %q; want true, 1.0.0", d.dataIntact(), d.slotVersion("a"))
	}
}

// TestRefusals: each bad release is refused with a clear error and the running slot and the
// environment stay as they were.
func TestRefusals(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		setup   func(f *fixture) repo.Release
		running string
		want    error
		wantMsg string
	}{
		{"tampered image", func(f *fixture) repo.Release {
			r := f.publish("1.1.0", repo.PublishSpec{})
			img := append([]byte(nil), f.images["1.1.0"]...)
			img[len(img)/2] ^= 0x40
			f.serve("/targets/"+testBoard+"/"+testChannel+"/"+r.Hex()+".meshroot-1.1.0.img", img)
			return r
		}, "1.0.0", ErrBadImage, "does not match its signed SHA-256"},
		{"older version", func(f *fixture) repo.Release {
			return f.publish("0.9.0", repo.PublishSpec{})
		}, "1.0.0", ErrNotNewer, "not newer than the running version (0.9.0; running 1.0.0)"},
		{"wrong board", func(f *fixture) repo.Release {
			r := f.publish("1.1.0", repo.PublishSpec{})
			r.Meta.Board = "ipq807x"
			return r
		}, "1.0.0", ErrWrongBoard, "release is for another board (ipq807x; this device is qemu-virt-arm64)"},
		{"below floor", func(f *fixture) repo.Release {
			return f.publish("1.0.5", repo.PublishSpec{})
		}, "1.0.1", ErrBelowFloor, "below the anti-rollback floor"},
		{"image for another board inside a signed release", func(f *fixture) repo.Release {
			f.images["1.1.0"] = f.imageFor("ipq807x", "1.1.0", 80<<10)
			return f.publish("1.1.0", repo.PublishSpec{})
		}, "1.0.0", ErrBadImage, "the image says board ipq807x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 80<<10, "1.0.0", "1.0.1", "0.9.0", "1.0.5", "1.1.0")
			r := tc.setup(f)
			d := newDevice(t, f, "dev-r", slotSize, tc.running)
			if tc.running == "1.0.1" {
				d.freshEnv().Update(func(e *bootenv.Env) error { return e.Set(VarFloor, "1.2.0") }) // e.g. an old image flashed by hand
			}
			d.boot()
			before := d.disk.Snapshot()
			envBefore := d.freshEnv()
			e0, _ := envBefore.Load()
			err := d.updater(func(c *Config) { c.RunningVersion = tc.running }).Apply(ctx, r)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("Apply = %v; want %v mentioning %q", err, tc.want, tc.wantMsg)
			}
			t.Logf("refused: %v", err)
			after := d.disk.Snapshot()
			if string(before[:slotSize]) != string(after[:slotSize]) {
				t.Errorf("running slot a changed")
			}
			e1, _ := d.freshEnv().Load()
			if fmt.Sprint(e0.Map()) != fmt.Sprint(e1.Map()) {
				t.Errorf("environment changed: %v -> %v", e0.Map(), e1.Map())
			}
			if res, _ := d.boot(); res.Slot != "a" || res.Trial {
				t.Errorf("boot after refusal = %+v; want slot a, no trial", res)
			}
			if !d.dataIntact() {
				t.Errorf("data partition changed")
			}
		})
	}
}

// TestRefusesBadMetadata: expired or tampered repository metadata stops the update at Check,
// before anything is written.
func TestRefusesBadMetadata(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(f *fixture)
		want string
	}{
		{"expired", func(f *fixture) { f.now = f.now.Add(repo.DefaultExpiry.Timestamp + time.Hour) }, "expired"},
		{"tampered role", func(f *fixture) {
			name := "/metadata/1." + repo.RoleName(testBoard, testChannel) + ".json"
			b, err := os.ReadFile(filepath.Join(f.dir, name))
			if err != nil {
				f.t.Fatal(err)
			}
			f.serve(name, bytes.Replace(b, []byte(`"version": "1.1.0"`), []byte(`"version": "9.1.0"`), 1))
		}, "hash verification failed"},
		{"tampered timestamp signature", func(f *fixture) {
			b, _ := os.ReadFile(filepath.Join(f.dir, "metadata/timestamp.json"))
			f.serve("/metadata/timestamp.json", bytes.Replace(b, []byte(`"version": `), []byte(`"version": 1`), 1))
		}, "timestamp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 80<<10, "1.0.0", "1.1.0")
			f.publish("1.1.0", repo.PublishSpec{})
			d := newDevice(t, f, "dev-e", slotSize, "1.0.0")
			d.boot()
			before := d.disk.Snapshot()
			tc.mod(f)
			_, err := d.updater(nil).Check(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check = %v; want an error mentioning %q", err, tc.want)
			}
			t.Logf("refused: %v", err)
			if !bytes.Equal(before, d.disk.Snapshot()) {
				t.Errorf("the disk changed after a refused Check")
			}
		})
	}
}

func TestCheckFollowsRollout(t *testing.T) {
	f := newFixture(t, 60<<10, "1.0.0", "1.1.0")
	r := f.publish("1.1.0", repo.PublishSpec{})
	// Find one device in the first 1% wave and one outside it.
	var in, out string
	for i := 0; in == "" || out == ""; i++ {
		id := fmt.Sprintf("dev-%d", i)
		if rollout.Bucket(id, r.Path) < 21 {
			in = id
		} else if out == "" {
			out = id
		}
	}
	waves, _ := rollout.ParseWaves("now:1%,+2h:100%", f.now)
	if err := f.pub.SetRollout(r.Path, waves, nil); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		id   string
		want error
	}{{in, nil}, {out, rollout.ErrNotYourWave}} {
		d := newDevice(t, f, tc.id, slotSize, "1.0.0")
		d.boot()
		_, err := d.updater(nil).Check(ctx)
		if !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
			t.Errorf("Check(%s, bucket %d) = %v; want %v", tc.id, rollout.Bucket(tc.id, r.Path), err, tc.want)
		}
	}
	if err := f.pub.Halt(r.Path, "operator"); err != nil {
		t.Fatal(err)
	}
	d := newDevice(t, f, in, slotSize, "1.0.0")
	d.boot()
	if _, err := d.updater(nil).Check(ctx); !errors.Is(err, rollout.ErrHalted) {
		t.Errorf("Check after halt = %v; want ErrHalted", err)
	}
	// A newer release that is halted does not hide an older open one.
	f.image("1.0.5", 60<<10)
	f.publish("1.0.5", repo.PublishSpec{})
	offer, err := d.updater(nil).Check(ctx)
	if err != nil || offer.Release.Meta.Version != "1.0.5" {
		t.Errorf("Check with 1.1.0 halted and 1.0.5 open = %v, %v; want 1.0.5", offer, err)
	}
}
