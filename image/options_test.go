package image_test

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"testing"

	"github.com/u-root/mkuimage/cpio"

	"meshroot/image"
	"meshroot/image/imagetest"
)

// TestImageOptions builds one arm64 image with the build options beyond the defaults and
// checks that each lands where the device looks for it: the fleet's OTA trust root at
// /etc/meshroot/ota/root.json, recorded in the manifest.
func TestImageOptions(t *testing.T) {
	root := readTestdata(t, "ota-root.json")
	dir, m := imagetest.ImageWith(t, "qemu-virt-arm64", imagetest.Options{OTARoot: root})
	recs := readArchive(t, filepath.Join(dir, m.Initramfs.Name), m.Compression)

	sum := sha256.Sum256(root)
	if m.OTARoot == nil || m.OTARoot.SHA256 != hex.EncodeToString(sum[:]) || m.OTARoot.Path != image.OTARootPath || m.OTARoot.Version != 1 {
		t.Errorf("manifest ota_root = %+v; want %s with sha256 %x, version 1", m.OTARoot, image.OTARootPath, sum)
	}
	r, ok := recs[image.OTARootPath]
	switch {
	case !ok:
		t.Errorf("archive lacks %s", image.OTARootPath)
	case r.Mode&cpio.S_IFMT != cpio.S_IFREG || r.Mode&0o777 != 0o644:
		t.Errorf("archive %s: mode %o; want a regular file, 0644", image.OTARootPath, r.Mode)
	case readAll(t, r) != string(root):
		t.Errorf("archive %s differs from the root given", image.OTARootPath)
	}
	if back, err := image.ReadManifest(dir); err != nil || back.OTARoot == nil || back.OTARoot.SHA256 != m.OTARoot.SHA256 {
		t.Errorf("ReadManifest(%s).OTARoot = %+v, %v; want the recorded root", dir, back.OTARoot, err)
	}
	// The default image carries none (the device runs with updates disabled).
	if _, def := imagetest.Image(t, "qemu-virt-arm64"); def.OTARoot != nil {
		t.Errorf("default image manifest ota_root = %+v; want none", def.OTARoot)
	}
}
