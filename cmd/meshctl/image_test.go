package main

import (
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestImageBuildOTARootFlag: --ota-root reads the file into the build options and refuses one
// that is not a signed TUF root before anything is compiled.
func TestImageBuildOTARootFlag(t *testing.T) {
	good := filepath.Join("..", "..", "image", "testdata", "ota-root.json")
	notRoot := filepath.Join("..", "..", "image", "testdata", "ota-timestamp.json")
	want, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	parse := func(args ...string) (*buildFlags, error) {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var bf buildFlags
		bf.register(fs)
		return &bf, fs.Parse(args)
	}
	bf, err := parse("--ota-root", good)
	if err != nil {
		t.Fatal(err)
	}
	o, err := bf.options(t.TempDir(), nil)
	if err != nil || !bytes.Equal(o.OTARoot, want) {
		t.Errorf("options(--ota-root %s) = %d bytes, %v; want the file", good, len(o.OTARoot), err)
	}
	for _, tc := range []struct{ file, want string }{
		{notRoot, "not TUF root metadata"},
		{filepath.Join(t.TempDir(), "none.json"), "no such file"},
	} {
		bf, _ := parse("--ota-root", tc.file)
		if _, err := bf.options(t.TempDir(), nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("options(--ota-root %s) = %v; want an error containing %q", tc.file, err, tc.want)
		}
	}
	var out, errb bytes.Buffer
	if err := run(t.Context(), []string{"image", "build", "--board", "qemu-virt-arm64", "-o", t.TempDir(), "--ota-root", notRoot}, &out, &errb); err == nil || !strings.Contains(err.Error(), "-ota-root") {
		t.Errorf("meshctl image build --ota-root <timestamp> = %v; want the flag named", err)
	}
}

// TestImageBuildProgramFlags: --program adds sysroot programs, from --sysroot or the cache's
// sysroot-<arch>.
func TestImageBuildProgramFlags(t *testing.T) {
	parse := func(args ...string) *buildFlags {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var bf buildFlags
		bf.register(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return &bf
	}
	o, err := parse("--program", "usr/sbin/hostapd", "--program", "sbin/iw", "--sysroot", "/srv/arm64").options(t.TempDir(), nil)
	if err != nil || len(o.Programs) != 2 || o.Programs[0].Path != "usr/sbin/hostapd" || o.Programs[1].Sysroot != "/srv/arm64" {
		t.Errorf("options(--program x2 --sysroot) = %+v, %v", o.Programs, err)
	}
	t.Setenv("MESHROOT_CACHE", "/var/cache/mr")
	o, err = parse("--program", "sbin/iw").options(t.TempDir(), nil)
	if err != nil || len(o.Programs) != 1 || o.Programs[0].Sysroot != "/var/cache/mr/sysroot-arm64" {
		t.Errorf("options(--program, default sysroot) = %+v, %v; want /var/cache/mr/sysroot-arm64", o.Programs, err)
	}
}
