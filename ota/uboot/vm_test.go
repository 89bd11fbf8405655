package uboot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"meshroot/board"
	"meshroot/image/imagetest"
	"meshroot/image/qemu"
	"meshroot/internal/testenv"
	"meshroot/ota"
	"meshroot/ota/bootenv"
	"meshroot/ota/repo"
	"meshroot/ota/slot"
	"meshroot/ota/slotimage"
)

const ubootBin = "/usr/lib/u-boot/qemu_arm64/u-boot.bin"

// newc writes a cpio archive in the "new ASCII" format the kernel unpacks as initramfs.
type newc struct {
	w   bytes.Buffer
	ino int
}

func (c *newc) entry(name string, mode uint32, data []byte, rdevMajor, rdevMinor int) {
	c.ino++
	fmt.Fprintf(&c.w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	c.w.WriteString(name)
	c.w.WriteByte(0)
	for c.w.Len()%4 != 0 {
		c.w.WriteByte(0)
	}
	c.w.Write(data)
	for c.w.Len()%4 != 0 {
		c.w.WriteByte(0)
	}
}

func (c *newc) dir(name string)                 { c.entry(name, 0o040755, nil, 0, 0) }
func (c *newc) file(name string, b []byte)      { c.entry(name, 0o100755, b, 0, 0) }
func (c *newc) chardev(name string, ma, mi int) { c.entry(name, 0o020600, nil, ma, mi) }
func (c *newc) bytes() []byte {
	c.entry("TRAILER!!!", 0, nil, 0, 0)
	return c.w.Bytes()
}

// vmAssets builds what every boot needs once: the guest agent for arm64 and the modules.
type vmAssets struct {
	kernel  string
	agent   []byte
	modules map[string][]byte
}

func buildAssets(t *testing.T) *vmAssets {
	t.Helper()
	vmlinuz, modDir := testenv.Kernel(t, "arm64")
	a := &vmAssets{kernel: vmlinuz, modules: map[string][]byte{}}
	for _, m := range []string{"virtio/virtio_pci_modern_dev", "virtio/virtio_pci_legacy_dev", "virtio/virtio_pci", "block/virtio_blk"} {
		matches, _ := filepath.Glob(filepath.Join(modDir, "*", "kernel", "drivers", m+".ko"))
		if len(matches) != 1 {
			t.Fatalf("kernel module %s: found %v under %s; want one (run `make kernels`)", m, matches, modDir)
		}
		b, err := os.ReadFile(matches[0])
		if err != nil {
			t.Fatal(err)
		}
		a.modules[filepath.Base(m)] = b
	}
	out := filepath.Join(t.TempDir(), "vmagent")
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = "/usr/local/go/bin/go" // where the Makefile's PATH points
	}
	cmd := exec.Command(gobin, "build", "-trimpath", "-ldflags=-s -w", "-o", out, "meshroot/ota/internal/vmagent")
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build vmagent: %v\n%s", err, b)
	}
	if a.agent, err = os.ReadFile(out); err != nil {
		t.Fatal(err)
	}
	return a
}

// slotImage packs the kernel and an initramfs whose agent reports version and health.
func (a *vmAssets) slotImage(t *testing.T, boardName, version, health string) string {
	t.Helper()
	var c newc
	for _, d := range []string{"dev", "proc", "sys", "tmp", "etc", "lib", "lib/modules"} {
		c.dir(d)
	}
	c.chardev("dev/console", 5, 1)
	c.file("init", a.agent)
	c.file("etc/vmagent.conf", []byte(fmt.Sprintf("board=%s version=%s health=%s\n", boardName, version, health)))
	for name, b := range a.modules {
		c.file("lib/modules/"+name+".ko", b)
	}
	dir := t.TempDir()
	initrd := filepath.Join(dir, "initrd.cpio")
	if err := os.WriteFile(initrd, c.bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "slot.img")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := slotimage.Pack(f, boardName, version, "console=ttyAMA0", a.kernel, initrd); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

// vmDisk is the QEMU board's virtio disk, as the image runner creates it, with slot a and the
// environment filled like a factory would.
type vmDisk struct {
	t     *testing.T
	b     board.Board
	path  string
	flash string
}

func newVMDisk(t *testing.T, b board.Board, slotA string) *vmDisk {
	t.Helper()
	dir := t.TempDir()
	d := &vmDisk{t: t, b: b, path: filepath.Join(dir, "disk.img"), flash: filepath.Join(dir, "flash1.img")}
	if err := qemu.CreateDisk(context.Background(), d.path, b.Flash, qemu.DiskOptions{}); err != nil {
		t.Fatalf("CreateDisk = %v", err)
	}
	img, err := os.ReadFile(slotA)
	if err != nil {
		t.Fatal(err)
	}
	f := d.open()
	if _, err := f.WriteAt(img, b.Flash.SlotA.Offset); err != nil {
		t.Fatal(err)
	}
	f.Close()
	st, done := d.env()
	e, _ := bootenv.FromMap(map[string]string{ota.VarBootSlot: "a", ota.VarVersionPrefix + "a": "1.0.0", ota.VarBootLimit: "3", ota.VarAltBootCmd: ota.DefaultAltBootCmd})
	if err := st.Save(e); err != nil {
		t.Fatal(err)
	}
	done()
	l, err := LayoutFor(b, ota.DefaultBootLimit)
	if err != nil {
		t.Fatal(err)
	}
	fl, err := FlashImage(l)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.flash, fl, 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

func (d *vmDisk) open() *os.File {
	f, err := os.OpenFile(d.path, os.O_RDWR, 0)
	if err != nil {
		d.t.Fatal(err)
	}
	return f
}

// env opens the environment on the disk image where the catalog says it is.
func (d *vmDisk) env() (*bootenv.Store, func()) {
	f := d.open()
	e := d.b.Flash.Env
	st, err := bootenv.NewStore(int(e.Size), bootenv.Incremental, bootenv.Copy{Dev: f, Offset: e.Offset}, bootenv.Copy{Dev: f, Offset: e.RedundOffset})
	if err != nil {
		d.t.Fatal(err)
	}
	return st, func() { f.Close() }
}

func (d *vmDisk) envMap() map[string]string {
	st, done := d.env()
	defer done()
	e, err := st.Load()
	if err != nil {
		d.t.Fatalf("env on disk: %v", err)
	}
	return e.Map()
}

func (d *vmDisk) dataSum() [32]byte {
	f := d.open()
	defer f.Close()
	h := sha256.New()
	io.Copy(h, io.NewSectionReader(f, d.b.Flash.Data.Offset, d.b.Flash.Data.Size))
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// install publishes the slot image as version 2.0.0 and lets the real updater, running on the
// host against the disk image, download it into slot b and switch the environment.
func (d *vmDisk) install(img string) {
	d.t.Helper()
	base := d.t.TempDir()
	pub, err := repo.Init(filepath.Join(base, "repo"), filepath.Join(base, "keys"))
	if err != nil {
		d.t.Fatal(err)
	}
	if _, err := pub.Publish(img, repo.PublishSpec{Board: d.b.Name, Channel: "stable", Version: "2.0.0"}); err != nil {
		d.t.Fatal(err)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(pub.Dir())))
	defer srv.Close()
	root, _ := pub.RootJSON()
	rc, err := repo.NewClient(repo.ClientConfig{BaseURL: srv.URL, Board: d.b.Name, Channel: "stable", CacheDir: filepath.Join(base, "tuf"), TrustedRoot: root})
	if err != nil {
		d.t.Fatal(err)
	}
	slots := map[string]slot.Slot{}
	for _, n := range slot.Names {
		r := d.b.Flash.SlotA
		if n == "b" {
			r = d.b.Flash.SlotB
		}
		s, c, err := slot.Open(n, d.path, r.Offset, r.Size)
		if err != nil {
			d.t.Fatal(err)
		}
		defer c.Close()
		slots[n] = s
	}
	st, done := d.env()
	defer done()
	u, err := ota.New(ota.Config{Board: d.b.Name, Channel: "stable", DeviceID: "vm-1", Repo: rc, Slots: slots, Env: st,
		RunningSlot: "a", RunningVersion: "1.0.0", ChunkSize: 4 << 20})
	if err != nil {
		d.t.Fatal(err)
	}
	ctx := context.Background()
	offer, err := u.Check(ctx)
	if err != nil {
		d.t.Fatalf("Check = %v", err)
	}
	if err := u.Apply(ctx, offer.Release); err != nil {
		d.t.Fatalf("Apply = %v", err)
	}
}

// boot runs the VM from U-Boot until it powers off and returns the console.
func (d *vmDisk) boot(ctx context.Context, name string) []string {
	d.t.Helper()
	logPath := filepath.Join(d.t.TempDir(), name+".log")
	vmlinuz, _ := testenv.Kernel(d.t, "arm64") // QEMU hands it to the firmware via fw_cfg; the script ignores it
	vm, err := qemu.Start(ctx, qemu.Config{
		Arch: "arm64", Kernel: vmlinuz, Console: "ttyAMA0", MemoryMB: 1024, Disk: d.path, AllowReboot: true,
		LogPath: logPath, Extra: []string{"-bios", ubootBin, "-drive", "if=pflash,unit=1,format=raw,file=" + d.flash},
	})
	if err != nil {
		d.t.Fatalf("qemu.Start = %v", err)
	}
	select {
	case <-vm.Done():
	case <-ctx.Done():
		vm.Stop()
		d.t.Fatalf("%s: VM did not power off in time; console log %s:\n%s", name, logPath, vm.Tail(40))
	}
	var lines []string
	for _, l := range vm.Lines() {
		lines = append(lines, l.Text)
	}
	d.t.Logf("%s: %d console lines; boot events:", name, len(lines))
	for _, l := range vm.Lines() {
		if strings.Contains(l.Text, "meshroot-boot:") || strings.Contains(l.Text, "VMAGENT") || strings.Contains(l.Text, "Starting kernel") {
			d.t.Logf("  %s", l)
		}
	}
	return lines
}

// grep returns the console lines matching re.
func grep(lines []string, re string) []string {
	r := regexp.MustCompile(re)
	var out []string
	for _, l := range lines {
		if r.MatchString(l) {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return out
}

// checkEnvBytes checks that every valid copy on the disk is byte for byte what bootenv encodes
// for its content and flags: what U-Boot's "env export -c" wrote equals our format.
func (d *vmDisk) checkEnvBytes() {
	d.t.Helper()
	f := d.open()
	defer f.Close()
	e := d.b.Flash.Env
	for _, off := range []int64{e.Offset, e.RedundOffset} {
		buf := make([]byte, e.Size)
		if _, err := f.ReadAt(buf, off); err != nil {
			d.t.Fatal(err)
		}
		env, flags, ok, err := bootenv.Decode(buf, true)
		if err != nil || !ok {
			d.t.Errorf("env copy at %#x: ok %v, %v", off, ok, err)
			continue
		}
		enc, err := bootenv.Encode(env, int(e.Size), true, flags)
		if err != nil {
			d.t.Fatal(err)
		}
		if !bytes.Equal(enc, buf) {
			d.t.Errorf("env copy at %#x (flags %d) differs from bootenv.Encode of its own content", off, flags)
		}
	}
}

// checkFwPrintenv reads the disk's environment with Debian's fw_printenv and compares.
func (d *vmDisk) checkFwPrintenv() {
	d.t.Helper()
	fw := testenv.Command(d.t, "fw_printenv")
	cfg, _ := bootenv.FromBoard(d.b.Flash.Env)
	for i := range cfg {
		cfg[i].Device = d.path
	}
	cfgPath := filepath.Join(d.t.TempDir(), "fw_env.config")
	os.WriteFile(cfgPath, []byte(cfg.String()), 0o644)
	out, err := exec.Command(fw, "-c", cfgPath).Output()
	if err != nil {
		d.t.Fatalf("fw_printenv: %v", err)
	}
	got := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, _ := strings.Cut(l, "=")
		got[k] = v
	}
	want := d.envMap()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		d.t.Errorf("fw_printenv = %v; want %v", got, want)
	}
}

func vmSetup(t *testing.T) (board.Board, *vmAssets) {
	testenv.Integration(t)
	testenv.Command(t, "qemu-system-aarch64")
	if _, err := os.Stat(ubootBin); err != nil {
		t.Fatalf("%s: %v; want Debian's u-boot-qemu (run `make deps`)", ubootBin, err)
	}
	b, err := board.Lookup("qemu-virt-arm64")
	if err != nil {
		t.Fatal(err)
	}
	return b, buildAssets(t)
}

// TestVMUpdateCommits: U-Boot boots slot b on trial (bootcount 1), the new image is healthy and
// commits, and the next boot stays on b without counting.
func TestVMUpdateCommits(t *testing.T) {
	b, a := vmSetup(t)
	d := newVMDisk(t, b, a.slotImage(t, b.Name, "1.0.0", "ok"))
	data := d.dataSum()
	d.install(a.slotImage(t, b.Name, "2.0.0", "ok"))
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	lines := d.boot(ctx, "commit-1")
	if got := grep(lines, `meshroot-boot: booting slot`); len(got) != 1 || !strings.Contains(got[0], "slot b upgrade_available=1 bootcount=1") {
		t.Errorf("first boot: %q; want slot b on trial with bootcount 1", got)
	}
	if got := grep(lines, `VMAGENT committed slot=b version=2.0.0`); len(got) != 1 {
		t.Errorf("first boot: no commit line; console:\n%s", strings.Join(lines, "\n"))
	}
	lines = d.boot(ctx, "commit-2")
	if got := grep(lines, `meshroot-boot: booting slot`); len(got) != 1 || !strings.Contains(got[0], "slot b upgrade_available=0") {
		t.Errorf("second boot: %q; want slot b, no trial", got)
	}
	if got := grep(lines, `VMAGENT state=normal slot=b version=2.0.0`); len(got) != 1 {
		t.Errorf("second boot: want a normal boot of 2.0.0 on b; console:\n%s", strings.Join(lines, "\n"))
	}
	env := d.envMap()
	for k, want := range map[string]string{ota.VarBootSlot: "b", ota.VarUpgradeAvailable: "0", ota.VarBootCount: "0"} {
		if env[k] != want {
			t.Errorf("env %s = %q; want %q", k, env[k], want)
		}
	}
	if _, ok := env["filesize"]; ok {
		t.Errorf("env has U-Boot's filesize variable: the script leaks temporaries")
	}
	d.checkEnvBytes()
	d.checkFwPrintenv()
	if d.dataSum() != data {
		t.Errorf("the data partition changed")
	}
}

// TestVMBadImageRollsBack: the new image never passes its health check; each trial boot
// reboots, U-Boot counts, and after bootlimit (3) trial boots altbootcmd takes the device back
// to slot a, where the rollback is recorded.
func TestVMBadImageRollsBack(t *testing.T) {
	b, a := vmSetup(t)
	d := newVMDisk(t, b, a.slotImage(t, b.Name, "1.0.0", "ok"))
	data := d.dataSum()
	d.install(a.slotImage(t, b.Name, "2.0.0", "fail"))
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	lines := d.boot(ctx, "rollback")
	boots := grep(lines, `meshroot-boot: booting slot`)
	want := []string{
		"meshroot-boot: booting slot b upgrade_available=1 bootcount=1",
		"meshroot-boot: booting slot b upgrade_available=1 bootcount=2",
		"meshroot-boot: booting slot b upgrade_available=1 bootcount=3",
		"meshroot-boot: booting slot a upgrade_available=0 bootcount=0",
	}
	if strings.Join(boots, "\n") != strings.Join(want, "\n") {
		t.Errorf("boots:\n%s\nwant:\n%s", strings.Join(boots, "\n"), strings.Join(want, "\n"))
	}
	if got := grep(lines, `bootcount 4 > bootlimit 3: running altbootcmd`); len(got) != 1 {
		t.Errorf("want one altbootcmd run; got %q", got)
	}
	if got := grep(lines, `VMAGENT health failed`); len(got) != 3 {
		t.Errorf("health failures = %d; want 3 (one per trial boot)", len(got))
	}
	if got := grep(lines, `VMAGENT state=rolled back slot=a version=1.0.0`); len(got) != 1 {
		t.Errorf("want the rollback recorded on slot a; console:\n%s", strings.Join(lines, "\n"))
	}
	env := d.envMap()
	for k, want := range map[string]string{ota.VarBootSlot: "a", ota.VarUpgradeAvailable: "0", ota.VarBootCount: "0",
		ota.VarFailed: "qemu-virt-arm64/stable/meshroot-2.0.0.img", ota.VarTrial: ""} {
		if env[k] != want {
			t.Errorf("env %s = %q; want %q", k, env[k], want)
		}
	}
	if !strings.HasPrefix(env[ota.VarReport], "rolled_back ") {
		t.Errorf("env %s = %q; want a pending rolled_back report", ota.VarReport, env[ota.VarReport])
	}
	d.checkEnvBytes()
	d.checkFwPrintenv()
	if d.dataSum() != data {
		t.Errorf("the data partition changed")
	}
}

// TestVMRealImageBootsFromSlot publishes the real firmware image (image.Build, as `meshctl
// image build` makes it) as a release, installs it into slot b with the updater, and boots it
// through U-Boot and the boot script to meshd's ready line.
func TestVMRealImageBootsFromSlot(t *testing.T) {
	b, a := vmSetup(t)
	dir, m := imagetest.Image(t, b.Name)
	packed := filepath.Join(t.TempDir(), "slot.img")
	f, err := os.Create(packed)
	if err != nil {
		t.Fatal(err)
	}
	h, err := slotimage.Pack(f, b.Name, "2.0.0", "console="+m.Console+" uroot.uinitargs=-poweroff-when-ready",
		filepath.Join(dir, m.Kernel.Name), filepath.Join(dir, m.Initramfs.Name))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Logf("slot image: kernel %d + initramfs %d bytes", h.KernelSize, h.InitrdSize)
	d := newVMDisk(t, b, a.slotImage(t, b.Name, "1.0.0", "ok"))
	d.install(packed)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	lines := d.boot(ctx, "real-image")
	if got := grep(lines, `meshroot-boot: booting slot b upgrade_available=1 bootcount=1`); len(got) != 1 {
		t.Errorf("want slot b booted on trial; console:\n%s", strings.Join(lines, "\n"))
	}
	if got := grep(lines, `^MESHROOT-READY `); len(got) != 1 {
		t.Errorf("want meshd's ready line from the image in slot b; console tail:\n%s", strings.Join(lines[max(0, len(lines)-40):], "\n"))
	}
}
