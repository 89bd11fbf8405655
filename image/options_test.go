package image_test

import (
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/u-root/mkuimage/cpio"

	"meshroot/board"
	"meshroot/image"
	"meshroot/image/imagetest"
)

// testBudget is the test-only budget override TestImageOptions uses.
var testBudget = image.Budget{Compressed: 40 << 20, Raw: 160 << 20}

// TestImageOptions builds one arm64 image with the build options beyond the defaults and
// checks that each lands where the device looks for it: the fleet's OTA trust root at
// /etc/meshroot/ota/root.json, recorded in the manifest; a module-local command from an
// internal/ package (which gobusybox cannot build) as a static arm64 binary in bin/; the
// test-only budget override, recorded in the manifest.
func TestImageOptions(t *testing.T) {
	root := readTestdata(t, "ota-root.json")
	dir, m := imagetest.ImageWith(t, "qemu-virt-arm64", imagetest.Options{
		OTARoot:       root,
		ExtraCommands: []string{"meshroot/image/internal/buildimage"},
		Budget:        &testBudget,
	})
	recs := readArchive(t, filepath.Join(dir, m.Initramfs.Name), m.Compression)

	if m.Budget != testBudget {
		t.Errorf("manifest budget = %+v; want the override %+v", m.Budget, testBudget)
	}
	if !slices.Contains(m.Commands, "buildimage") {
		t.Errorf("manifest commands %q lack buildimage", m.Commands)
	}
	if _, ok := recs["bbin/buildimage"]; ok {
		t.Errorf("archive has bbin/buildimage; want the module's command outside the busybox")
	}
	if r, ok := recs["bin/buildimage"]; !ok {
		t.Errorf("archive lacks bin/buildimage")
	} else {
		f, err := elf.NewFile(r.ReaderAt)
		if err != nil {
			t.Fatalf("bin/buildimage: not ELF: %v", err)
		}
		if f.Machine != elf.EM_AARCH64 {
			t.Errorf("bin/buildimage: machine %v; want %v", f.Machine, elf.EM_AARCH64)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("bin/buildimage: dynamically linked; want static")
			}
		}
		if r.Mode&0o111 == 0 {
			t.Errorf("bin/buildimage: mode %o; want executable", r.Mode)
		}
	}

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

// TestExtraCommandErrors: extra commands that cannot be built are refused before anything is
// compiled, naming the command.
func TestExtraCommandErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("reads the cached kernel's module tree: skipped in -short mode")
	}
	b, err := board.Lookup("qemu-virt-arm64")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		extra []string
		want  string
	}{
		{"no such package", []string{"meshroot/cmd/nosuchcommand"}, "extra command meshroot/cmd/nosuchcommand: no Go package in"},
		{"name of a core command", []string{"meshroot/image/internal/ls"}, "extra command meshroot/image/internal/ls: the image already has a command ls (github.com/u-root/u-root/cmds/core/ls)"},
		{"name of meshd", []string{"example.com/x/meshd"}, "already has a command meshd (meshroot/cmd/meshd)"},
		{"two of one name", []string{"meshroot/image/internal/buildimage", "example.com/buildimage"}, "already has a command buildimage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := image.Build(context.Background(), image.Options{Board: b, OutDir: t.TempDir(), Version: "x", ExtraCommands: tc.extra})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Build(ExtraCommands %q) = %v; want an error containing %q", tc.extra, err, tc.want)
			}
		})
	}
}
