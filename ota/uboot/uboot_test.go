package uboot

import (
	"strings"
	"testing"
	"time"

	"meshroot/board"
	"meshroot/ota/bootenv"
)

func qemuLayout(t *testing.T) Layout {
	t.Helper()
	b, err := board.Lookup("qemu-virt-arm64")
	if err != nil {
		t.Fatal(err)
	}
	l, err := LayoutFor(b, 3)
	if err != nil {
		t.Fatalf("LayoutFor(qemu-virt-arm64) = %v", err)
	}
	return l
}

func TestScriptConstants(t *testing.T) {
	l := qemuLayout(t)
	s, err := Script(l)
	if err != nil {
		t.Fatal(err)
	}
	// Blocks from the catalog: env copies at 0x80000/0xA0000 (512-byte blocks 0x400/0x500, 0x100
	// blocks each), slots at 1 MiB and 129 MiB.
	for _, want := range []string{
		"virtio read 0x50000000 0x400 0x100", "virtio read 0x50100000 0x500 0x100",
		"env import -d -c 0x50200000 0x1ffff", "env export -c -s 0x1ffff 0x50300000",
		"base=0x40800; else base=0x800", "bl=3", "run altbootcmd", "setenv filesize",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("Script() lacks %q", want)
		}
	}
	if n := strings.Count(s, "virtio write"); n != 6 {
		t.Errorf("Script() has %d virtio writes; want 6 (2 per save, 3 saves)", n)
	}
}

func TestScriptImageRoundTrip(t *testing.T) {
	img := ScriptImage("echo hi\n", time.Unix(1700000000, 0))
	got, err := ParseScriptImage(img)
	if err != nil || got != "echo hi\n" {
		t.Fatalf("ParseScriptImage(ScriptImage()) = %q, %v", got, err)
	}
	bad := append([]byte(nil), img...)
	bad[70] ^= 1
	if _, err := ParseScriptImage(bad); err == nil {
		t.Errorf("ParseScriptImage(corrupt payload) = nil error")
	}
	bad = append([]byte(nil), img...)
	bad[20] ^= 1
	if _, err := ParseScriptImage(bad); err == nil {
		t.Errorf("ParseScriptImage(corrupt header) = nil error")
	}
}

func TestFlashImage(t *testing.T) {
	l := qemuLayout(t)
	fl, err := FlashImage(l)
	if err != nil {
		t.Fatal(err)
	}
	if len(fl) != FlashSize {
		t.Fatalf("FlashImage is %d bytes; want %d", len(fl), FlashSize)
	}
	env, _, ok, err := bootenv.Decode(fl[:FlashEnvSize], false)
	if err != nil || !ok {
		t.Fatalf("flash env: ok %v, %v", ok, err)
	}
	if got, _ := env.Get("bootcmd"); got != "source 0x4040000" {
		t.Errorf("bootcmd = %q; want source 0x4040000", got)
	}
	script, err := ParseScriptImage(fl[ScriptOffset:])
	if err != nil {
		t.Fatal(err)
	}
	want, _ := Script(l)
	if script != want {
		t.Errorf("script in flash differs from Script()")
	}
}

func TestLayoutForRejects(t *testing.T) {
	b, err := board.Lookup("qemu-virt-arm64")
	if err != nil {
		t.Fatal(err)
	}
	nand := b
	nand.Flash.Kind = "nand"
	plain := b
	plain.Flash.Env.Redundant = false
	other := b
	other.Flash.Env.Device = "/dev/mmcblk0"
	for name, bb := range map[string]board.Board{"nand": nand, "plain env": plain, "env elsewhere": other} {
		if _, err := LayoutFor(bb, 3); err == nil {
			t.Errorf("LayoutFor(%s) = nil error", name)
		}
	}
}
