package ota

import (
	"bytes"
	"context"
	"crypto/sha256"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"meshroot/ota/bootenv"
	"meshroot/ota/internal/flashsim"
	"meshroot/ota/repo"
	"meshroot/ota/rollout"
	"meshroot/ota/slot"
	"meshroot/ota/slotimage"
)

const (
	testBoard   = "qemu-virt-arm64"
	testChannel = "stable"
)

// fixture is a repository served on loopback with slot images of several versions.
type fixture struct {
	t        testing.TB
	pub      *repo.Publisher
	dir      string
	srv      *httptest.Server
	images   map[string][]byte // version → slot image bytes
	releases map[string]repo.Release
	now      time.Time

	mu       sync.Mutex
	override map[string][]byte
	served   int64
}

func newFixture(t testing.TB, imgSize int, versions ...string) *fixture {
	t.Helper()
	base := t.TempDir()
	f := &fixture{t: t, dir: filepath.Join(base, "repo"), images: map[string][]byte{}, releases: map[string]repo.Release{},
		override: map[string][]byte{}, now: time.Date(2026, 6, 1, 10, 0, 0, 0, time.UTC)}
	pub, err := repo.Init(f.dir, filepath.Join(base, "keys"))
	if err != nil {
		t.Fatalf("repo.Init = %v", err)
	}
	pub.Now = func() time.Time { return f.now }
	f.pub = pub
	if err := pub.Refresh(); err != nil {
		t.Fatal(err)
	}
	files := http.FileServer(http.Dir(f.dir))
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		body, ok := f.override[r.URL.Path]
		f.mu.Unlock()
		cw := &countWriter{ResponseWriter: w, f: f}
		if ok {
			http.ServeContent(cw, r, "x", time.Time{}, bytes.NewReader(body))
			return
		}
		files.ServeHTTP(cw, r)
	}))
	t.Cleanup(f.srv.Close)
	for _, v := range versions {
		f.image(v, imgSize)
	}
	return f
}

type countWriter struct {
	http.ResponseWriter
	f *fixture
}

func (c *countWriter) Write(p []byte) (int, error) {
	c.f.mu.Lock()
	c.f.served += int64(len(p))
	c.f.mu.Unlock()
	return c.ResponseWriter.Write(p)
}

func (f *fixture) bytesServed() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.served
}

// image builds (once) the slot image of a version for testBoard.
func (f *fixture) image(version string, size int) []byte {
	if b, ok := f.images[version]; ok {
		return b
	}
	return f.imageFor(testBoard, version, size)
}

func (f *fixture) imageFor(board, version string, size int) []byte {
	dir := f.t.TempDir()
	rnd := rand.New(rand.NewSource(int64(len(version)*7919 + size)))
	k := make([]byte, size*2/3)
	i := make([]byte, size/3)
	rnd.Read(k)
	rnd.Read(i)
	copy(k, version) // distinct per version
	os.WriteFile(filepath.Join(dir, "k"), k, 0o644)
	os.WriteFile(filepath.Join(dir, "i"), i, 0o644)
	var buf bytes.Buffer
	if _, err := slotimage.Pack(&buf, board, version, "console=ttyAMA0", filepath.Join(dir, "k"), filepath.Join(dir, "i")); err != nil {
		f.t.Fatalf("Pack = %v", err)
	}
	if board == testBoard {
		f.images[version] = buf.Bytes()
	}
	return buf.Bytes()
}

func (f *fixture) publish(version string, spec repo.PublishSpec) repo.Release {
	f.t.Helper()
	p := filepath.Join(f.t.TempDir(), "img")
	os.WriteFile(p, f.images[version], 0o644)
	if spec.Board == "" {
		spec.Board = testBoard
	}
	spec.Channel, spec.Version = testChannel, version
	r, err := f.pub.Publish(p, spec)
	if err != nil {
		f.t.Fatalf("Publish(%s) = %v", version, err)
	}
	f.releases[version] = r
	return r
}

func (f *fixture) serve(path string, body []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.override[path] = body
}

// Device layout on the simulated disk.
const (
	envSize = 0x4000
)

// device is a simulated router: one disk with slot a, slot b, data, and a redundant env.
type device struct {
	t        testing.TB
	f        *fixture
	id       string
	disk     *flashsim.Disk
	slotSize int64
	slots    map[string]slot.Slot
	env      *bootenv.Store
	dataOff  int64
	dataLen  int64
	dataSum  [32]byte
	cache    string
	reporter rollout.Reporter
	health   func(ctx context.Context) error
	running  string // slot booted by the last boot
}

func newDevice(t testing.TB, f *fixture, id string, slotSize int64, version string) *device {
	t.Helper()
	const dataLen = 64 << 10
	total := 2*slotSize + dataLen + 2*envSize
	d := &device{t: t, f: f, id: id, disk: flashsim.New(int(total)), slotSize: slotSize, dataOff: 2 * slotSize, dataLen: dataLen, cache: t.TempDir()}
	d.slots = map[string]slot.Slot{
		"a": slot.NewRegion("a", d.disk, 0, slotSize),
		"b": slot.NewRegion("b", d.disk, slotSize, slotSize),
	}
	envOff := 2*slotSize + dataLen
	var err error
	d.env, err = bootenv.NewStore(envSize, bootenv.Incremental, bootenv.Copy{Dev: d.disk, Offset: envOff}, bootenv.Copy{Dev: d.disk, Offset: envOff + envSize})
	if err != nil {
		t.Fatal(err)
	}
	// Factory state: version in slot a, data partition with content, environment.
	data := make([]byte, dataLen)
	rand.New(rand.NewSource(42)).Read(data)
	d.disk.WriteAt(data, d.dataOff)
	d.dataSum = sha256.Sum256(data)
	d.disk.WriteAt(f.image(version, 0), 0)
	e, _ := bootenv.FromMap(map[string]string{VarBootSlot: "a", VarVersionPrefix + "a": version, VarBootLimit: "3", "bootdelay": "0"})
	if err := d.env.Save(e); err != nil {
		t.Fatal(err)
	}
	d.disk.Sync()
	return d
}

// boot runs the simulated bootloader over fresh handles (as after a power cycle).
func (d *device) boot() (BootResult, error) {
	d.disk.Reboot()
	res, err := SimulateBoot(d.freshEnv(), d.slots)
	d.running = res.Slot
	return res, err
}

func (d *device) freshEnv() *bootenv.Store {
	envOff := 2*d.slotSize + d.dataLen
	s, _ := bootenv.NewStore(envSize, bootenv.Incremental, bootenv.Copy{Dev: d.disk, Offset: envOff}, bootenv.Copy{Dev: d.disk, Offset: envOff + envSize})
	return s
}

func (d *device) updater(mod func(*Config)) *Updater {
	d.t.Helper()
	root, err := d.f.pub.RootJSON()
	if err != nil {
		d.t.Fatal(err)
	}
	rc, err := repo.NewClient(repo.ClientConfig{BaseURL: d.f.srv.URL, Board: testBoard, Channel: testChannel, CacheDir: d.cache, TrustedRoot: root,
		Now: func() time.Time { return d.f.now }})
	if err != nil {
		d.t.Fatal(err)
	}
	cfg := Config{Board: testBoard, Channel: testChannel, DeviceID: d.id, Repo: rc, Slots: d.slots, Env: d.freshEnv(),
		RunningSlot: d.running, Reporter: d.reporter, Health: d.health, HealthInterval: time.Millisecond, HealthDeadline: 20 * time.Millisecond,
		Now: func() time.Time { return d.f.now }, Location: time.UTC, ChunkSize: 16 << 10, Reboot: func() error { return errReboot }}
	if mod != nil {
		mod(&cfg)
	}
	u, err := New(cfg)
	if err != nil {
		d.t.Fatal(err)
	}
	return u
}

var errReboot = &rebootError{}

type rebootError struct{}

func (*rebootError) Error() string { return "reboot requested" }

// dataIntact reports whether the data partition is byte for byte what the factory wrote.
func (d *device) dataIntact() bool {
	return sha256.Sum256(d.disk.Bytes(d.dataOff, d.dataLen)) == d.dataSum
}

// slotVersion is the version of the complete, verified image in a slot ("" when it is not one
// of the fixture's images).
func (d *device) slotVersion(s string) string {
	for v, img := range d.f.images {
		if int64(len(img)) <= d.slotSize && bytes.Equal(d.disk.Bytes(d.slotOff(s), int64(len(img))), img) {
			return v
		}
	}
	return ""
}

func (d *device) slotOff(s string) int64 {
	if s == "b" {
		return d.slotSize
	}
	return 0
}

func (d *device) envVar(name string) string {
	e, err := d.freshEnv().Load()
	if err != nil {
		return ""
	}
	v, _ := e.Get(name)
	return v
}
