package ota

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"meshroot/board"
	"meshroot/ota/bootenv"
	"meshroot/ota/repo"
)

func TestOpenDevice(t *testing.T) {
	b, err := board.Lookup("qemu-virt-arm64")
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, 40<<10, "1.0.0", "1.1.0")
	f.now = time.Now().UTC() // OpenDevice checks expiry against the real clock
	f.publish("1.1.0", repo.PublishSpec{})
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "dev"), 0o755)
	os.MkdirAll(filepath.Join(root, "proc"), 0o755)
	disk := filepath.Join(root, "dev/vda")
	fh, err := os.Create(disk)
	if err != nil {
		t.Fatal(err)
	}
	fh.Truncate(b.Flash.Size) // sparse
	fh.WriteAt(f.images["1.0.0"], b.Flash.SlotA.Offset)
	st, _ := bootenv.NewStore(int(b.Flash.Env.Size), bootenv.Incremental, bootenv.Copy{Dev: fh, Offset: b.Flash.Env.Offset}, bootenv.Copy{Dev: fh, Offset: b.Flash.Env.RedundOffset})
	e, _ := bootenv.FromMap(map[string]string{VarBootSlot: "a", VarVersionPrefix + "a": "1.0.0"})
	if err := st.Save(e); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	os.WriteFile(filepath.Join(root, "proc/cmdline"), []byte("console=ttyAMA0 meshroot.slot=a panic=-1\n"), 0o644)
	if got := RunningSlot(root); got != "a" {
		t.Fatalf("RunningSlot = %q; want a", got)
	}
	rootJSON, _ := f.pub.RootJSON()
	u, closeFn, err := OpenDevice(DeviceConfig{Board: b, Root: root, RepoURL: f.srv.URL, DeviceID: "dev-od", TrustedRoot: rootJSON,
		CacheDir: filepath.Join(root, "data/ota/tuf"), RunningVersion: "1.0.0"})
	if err != nil {
		t.Fatalf("OpenDevice = %v", err)
	}
	defer closeFn()
	ctx := context.Background()
	if st, err := u.Startup(ctx); err != nil || st != Normal {
		t.Fatalf("Startup = %v, %v; want normal", st, err)
	}
	offer, err := u.Check(ctx)
	if err != nil {
		t.Fatalf("Check = %v", err)
	}
	if err := u.Apply(ctx, offer.Release); err != nil {
		t.Fatalf("Apply = %v", err)
	}
	raw, _ := os.ReadFile(disk)
	img := f.images["1.1.0"]
	if string(raw[b.Flash.SlotB.Offset:b.Flash.SlotB.Offset+int64(len(img))]) != string(img) {
		t.Errorf("slot b on the disk does not hold the new image")
	}
	if _, _, err := OpenDevice(DeviceConfig{Board: b, Root: t.TempDir(), RepoURL: f.srv.URL, DeviceID: "x", TrustedRoot: rootJSON, CacheDir: t.TempDir()}); err == nil {
		t.Errorf("OpenDevice on a root without the disk = nil error")
	}
}
