package ota

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"meshroot/ota/bootenv"
	"meshroot/ota/repo"
	"meshroot/ota/rollout"
	"meshroot/ota/slot"
)

// pageStore interns 4 KiB pages by content, so 10,000 simulated devices holding the same
// images share the bytes.
type pageStore struct {
	mu    sync.Mutex
	pages map[[32]byte][]byte
	zero  []byte
}

const pageSize = 4096

func newPageStore() *pageStore {
	z := make([]byte, pageSize)
	return &pageStore{pages: map[[32]byte][]byte{sha256.Sum256(z): z}, zero: z}
}

func (ps *pageStore) intern(p []byte) []byte {
	k := sha256.Sum256(p)
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if q, ok := ps.pages[k]; ok {
		return q
	}
	q := append([]byte(nil), p...)
	ps.pages[k] = q
	return q
}

// dedupDisk is a Device over shared pages (copy on write).
type dedupDisk struct {
	ps    *pageStore
	mu    sync.Mutex
	pages [][]byte
}

func newDedupDisk(ps *pageStore, size int64) *dedupDisk {
	d := &dedupDisk{ps: ps, pages: make([][]byte, (size+pageSize-1)/pageSize)}
	for i := range d.pages {
		d.pages[i] = ps.zero
	}
	return d
}

func (d *dedupDisk) ReadAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for n < len(p) {
		pg, in := (off+int64(n))/pageSize, (off+int64(n))%pageSize
		if pg >= int64(len(d.pages)) {
			return n, fmt.Errorf("dedup: read past the end")
		}
		n += copy(p[n:], d.pages[pg][in:])
	}
	return n, nil
}

func (d *dedupDisk) WriteAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	buf := make([]byte, pageSize)
	for n < len(p) {
		pg, in := (off+int64(n))/pageSize, (off+int64(n))%pageSize
		if pg >= int64(len(d.pages)) {
			return n, fmt.Errorf("dedup: write past the end")
		}
		copy(buf, d.pages[pg])
		c := copy(buf[in:], p[n:])
		d.pages[pg] = d.ps.intern(buf)
		n += c
	}
	return n, nil
}

func (d *dedupDisk) Sync() error { return nil }

// fleetDevice is one simulated router of the fleet.
type fleetDevice struct {
	id      string
	disk    *dedupDisk
	slots   map[string]slot.Slot
	env     *bootenv.Store
	cache   string
	running string
	healthy bool // on the bad release: does its health check pass?
}

type fleetSim struct {
	b        *testing.B
	f        *fixture
	handler  *rollout.Handler
	devices  []*fleetDevice
	rep      rollout.Reporter
	client   *http.Client
	installs atomic.Int64 // devices that switched to the new release
	commits  atomic.Int64
	rolled   atomic.Int64
	haltedAt atomic.Int64 // installs counted when the halt was seen first (-1: never)
}

const fleetSlot = 96 << 10

func newFleet(b *testing.B, n int, release string, failEvery int) *fleetSim {
	f := newFixture(b, 48<<10, "1.0.0", release)
	f.publish(release, repo.PublishSpec{})
	sim := &fleetSim{b: b, f: f}
	sim.haltedAt.Store(-1)
	sim.handler = rollout.NewHandler(rollout.DefaultMonitor, f.pub, nil)
	mux := http.NewServeMux()
	mux.Handle(rollout.ReportsPath, sim.handler)
	repSrv := newLoopbackServer(b, mux)
	sim.rep = &rollout.HTTPReporter{BaseURL: repSrv}
	sim.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	ps := newPageStore()
	base := b.TempDir()
	factory := f.images["1.0.0"]
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("mr-%05d", i)
		disk := newDedupDisk(ps, 2*fleetSlot+2*0x1000)
		d := &fleetDevice{id: id, disk: disk, cache: filepath.Join(base, id), running: "a",
			slots: map[string]slot.Slot{"a": slot.NewRegion("a", disk, 0, fleetSlot), "b": slot.NewRegion("b", disk, fleetSlot, fleetSlot)}}
		d.env, _ = bootenv.NewStore(0x1000, bootenv.Incremental, bootenv.Copy{Dev: disk, Offset: 2 * fleetSlot}, bootenv.Copy{Dev: disk, Offset: 2*fleetSlot + 0x1000})
		disk.WriteAt(factory, 0)
		e, _ := bootenv.FromMap(map[string]string{VarBootSlot: "a", VarVersionPrefix + "a": "1.0.0", VarBootLimit: "3"})
		d.env.Save(e)
		h := fnv.New32a()
		h.Write([]byte(id))
		d.healthy = failEvery == 0 || h.Sum32()%uint32(failEvery) != 0
		sim.devices = append(sim.devices, d)
	}
	return sim
}

func newLoopbackServer(b *testing.B, h http.Handler) string {
	srv := httptest.NewServer(h)
	b.Cleanup(srv.Close)
	return srv.URL
}

func (s *fleetSim) updater(d *fleetDevice) (*Updater, error) {
	root, err := s.f.pub.RootJSON()
	if err != nil {
		return nil, err
	}
	rc, err := repo.NewClient(repo.ClientConfig{BaseURL: s.f.srv.URL, Board: testBoard, Channel: testChannel, CacheDir: d.cache,
		TrustedRoot: root, HTTPClient: s.client, Now: func() time.Time { return s.f.now }})
	if err != nil {
		return nil, err
	}
	e, _ := d.env.Load()
	ver, _ := e.Get(VarVersionPrefix + d.running)
	healthy := d.healthy
	return New(Config{Board: testBoard, Channel: testChannel, DeviceID: d.id, Repo: rc, Slots: d.slots, Env: d.env,
		RunningSlot: d.running, RunningVersion: ver, HTTPClient: s.client, Reporter: s.rep,
		Health: func(context.Context) error {
			if healthy {
				return nil
			}
			return errors.New("supervisor never healthy")
		},
		HealthInterval: time.Millisecond, HealthDeadline: time.Millisecond, Now: func() time.Time { return s.f.now }, Location: time.UTC, ChunkSize: 16 << 10})
}

// cycle is one device's check in a round: install if allowed, then boot until the trial
// commits or the bootloader rolls back (a trial boot and health check take minutes, well
// within a round).
func (s *fleetSim) cycle(ctx context.Context, d *fleetDevice) error {
	u, err := s.updater(d)
	if err != nil {
		return err
	}
	offer, err := u.Check(ctx)
	if err != nil {
		if errors.Is(err, rollout.ErrHalted) {
			s.haltedAt.CompareAndSwap(-1, s.installs.Load())
		}
		return nil
	}
	if err := u.Apply(ctx, offer.Release); err != nil {
		return err
	}
	s.installs.Add(1)
	for boot := 0; boot < 10; boot++ {
		res, err := SimulateBoot(d.env, d.slots)
		if err != nil {
			return err
		}
		d.running = res.Slot
		u, err := s.updater(d)
		if err != nil {
			return err
		}
		st, err := u.Startup(ctx)
		if err != nil {
			return err
		}
		switch st {
		case Trial:
			if err := u.JudgeTrial(ctx); err != nil {
				continue // reboot: the bootloader counts
			}
			s.commits.Add(1)
			return u.DeliverReport(ctx)
		case RolledBack:
			s.rolled.Add(1)
			return u.DeliverReport(ctx)
		}
	}
	return fmt.Errorf("device %s: no outcome after 10 boots", d.id)
}

// round lets every device check once, in parallel.
func (s *fleetSim) round(ctx context.Context, workers int) error {
	var wg sync.WaitGroup
	ch := make(chan *fleetDevice)
	var firstErr atomic.Value
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range ch {
				if err := s.cycle(ctx, d); err != nil {
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	for _, d := range s.devices {
		ch <- d
	}
	close(ch)
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return err
	}
	return nil
}

// BenchmarkFleetRollout rolls a release out to 10,000 simulated devices (real updater, TUF
// client, downloads, boot simulation and reports) against a repository on loopback, in waves of
// 1 %, 10 %, 50 %, 100 % an hour apart. "good": every device is healthy. "bad": 20 % of the
// devices never pass the health check; the report handler halts the release automatically.
func BenchmarkFleetRollout(b *testing.B) {
	n := 10000
	if testing.Short() {
		n = 1000
	}
	for _, tc := range []struct {
		name      string
		release   string
		failEvery int
	}{{"good", "1.1.0", 0}, {"bad", "1.2.0", 5}} {
		b.Run(tc.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				sim := newFleet(b, n, tc.release, tc.failEvery)
				r := sim.f.releases[tc.release]
				waves, _ := rollout.ParseWaves("now:1%,+1h:10%,+1h:50%,+1h:100%", sim.f.now)
				if err := sim.f.pub.SetRollout(r.Path, waves, nil); err != nil {
					b.Fatal(err)
				}
				firstWave := 0
				for _, d := range sim.devices {
					if rollout.Bucket(d.id, r.Path) < waves[0].Upto {
						firstWave++
					}
				}
				servedBefore := sim.f.bytesServed()
				ctx := context.Background()
				b.ResetTimer()
				start := time.Now()
				cpu0 := cpuTime()
				checks := int64(0)
				// One round per simulated hour: every device checks once. Stop when every device
				// runs the release, or when a round installs nothing after the halt or the last wave.
				rounds := 0
				for ; rounds < 8; rounds++ {
					before := sim.installs.Load()
					if err := sim.round(ctx, 4*runtime.GOMAXPROCS(0)); err != nil {
						b.Fatalf("round %d: %v", rounds, err)
					}
					checks += int64(n)
					sim.f.now = sim.f.now.Add(time.Hour)
					st, _ := sim.handler.Status(r.Path)
					idle := sim.installs.Load() == before
					if sim.commits.Load() == int64(n) || (idle && (st.Halted || rounds >= len(waves))) {
						rounds++
						break
					}
				}
				el := time.Since(start)
				cpu := cpuTime() - cpu0
				b.StopTimer()
				served := sim.f.bytesServed() - servedBefore
				st, _ := sim.handler.Status(r.Path)
				b.ReportMetric(el.Seconds(), "s/rollout")
				// CPU time (repository server and devices, this process) is steadier than wall time on
				// a shared machine.
				b.ReportMetric(cpu.Seconds(), "cpu-s/rollout")
				b.ReportMetric(float64(cpu.Microseconds())/1000/float64(checks), "cpu-ms/device-check")
				b.ReportMetric(float64(served)/(1<<20), "MiB-served")
				b.ReportMetric(float64(served)/float64(int64(n)*r.Length), "served/(devices×image)")
				b.ReportMetric(float64(sim.installs.Load()), "installs")
				b.ReportMetric(float64(sim.commits.Load()), "commits")
				b.ReportMetric(float64(sim.rolled.Load()), "rollbacks")
				b.ReportMetric(float64(firstWave), "first-wave-devices")
				b.Logf("%s: %d devices, %d rounds, %s (cpu %s), %.1f MiB served (image %d bytes), installs %d, commits %d, rollbacks %d, first wave %d devices, halted %v (%s), installs when a device first saw the halt %d",
					tc.name, n, rounds, el.Round(time.Millisecond), cpu.Round(time.Millisecond), float64(served)/(1<<20), r.Length, sim.installs.Load(), sim.commits.Load(), sim.rolled.Load(), firstWave, st.Halted, st.HaltReason, sim.haltedAt.Load())
				if tc.failEvery > 0 {
					if testing.Short() {
						continue // the first wave (1 %) of a short fleet is smaller than the monitor's MinReports
					}
					if !st.Halted {
						b.Errorf("bad release was not halted")
					}
					if got := sim.installs.Load(); got > int64(firstWave) {
						b.Errorf("bad release reached %d devices; want at most the first wave (%d)", got, firstWave)
					}
				} else if got := sim.commits.Load(); got != int64(n) {
					b.Errorf("good release committed on %d of %d devices", got, n)
				}
			}
		})
	}
}

// cpuTime is the CPU time (user + system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
