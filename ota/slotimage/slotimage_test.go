package slotimage

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPackVerify(t *testing.T) {
	kernel := bytes.Repeat([]byte("K"), 5000)
	initrd := bytes.Repeat([]byte("I"), 7777)
	var buf bytes.Buffer
	h, err := Pack(&buf, "qemu-virt-arm64", "1.2.3", "console=ttyAMA0", write(t, "k", kernel), write(t, "i", initrd))
	if err != nil {
		t.Fatalf("Pack = %v", err)
	}
	img := buf.Bytes()
	if int64(len(img)) != h.Total() || h.KernelOff != HeaderSize || h.InitrdOff != 3*HeaderSize {
		t.Errorf("Pack layout: len %d total %d kernel@%d initrd@%d; want kernel@4096 initrd@12288", len(img), h.Total(), h.KernelOff, h.InitrdOff)
	}
	got, err := Verify(bytes.NewReader(img))
	if err != nil {
		t.Fatalf("Verify = %v", err)
	}
	if *got != *h {
		t.Errorf("Verify header = %+v; want %+v", got, h)
	}
	if !bytes.Equal(img[h.InitrdOff:h.Total()], initrd) || !bytes.Equal(img[h.KernelOff:h.KernelOff+h.KernelSize], kernel) {
		t.Errorf("parts are not where the header says")
	}
	if !strings.Contains(string(img[:200]), "ota_kernel_blk=0x8\n") {
		t.Errorf("header = %q; want ota_kernel_blk=0x8 (block 8 = byte 4096)", img[:200])
	}
	bad := append([]byte(nil), img...)
	bad[h.InitrdOff+10] ^= 0xff
	if _, err := Verify(bytes.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "initramfs SHA-256") {
		t.Errorf("Verify(corrupt initramfs) = %v; want an initramfs hash error", err)
	}
}

func TestParseHeaderRejects(t *testing.T) {
	good := &Header{Board: "b", Version: "1", KernelOff: 4096, KernelSize: 10, InitrdOff: 8192, InitrdSize: 10,
		KernelSHA256: strings.Repeat("a", 64), InitrdSHA256: strings.Repeat("b", 64)}
	for _, tc := range []struct {
		name string
		mod  func(h *Header)
	}{
		{"overlap", func(h *Header) { h.InitrdOff = 4096 }},
		{"in header", func(h *Header) { h.KernelOff = 0 }},
		{"no board", func(h *Header) { h.Board = "" }},
		{"bad sha", func(h *Header) { h.KernelSHA256 = "xyz" }},
		{"empty", func(h *Header) { h.InitrdSize = 0 }},
	} {
		h := *good
		tc.mod(&h)
		b, err := h.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseHeader(b); err == nil {
			t.Errorf("%s: ParseHeader = nil error; want an error", tc.name)
		}
	}
	if _, err := ParseHeader(make([]byte, HeaderSize)); err == nil {
		t.Errorf("ParseHeader(zeros) = nil error")
	}
	b, _ := good.Marshal()
	if _, err := ParseHeader(b); err != nil {
		t.Errorf("ParseHeader(good) = %v", err)
	}
}

func FuzzParseHeader(f *testing.F) {
	good := &Header{Board: "b", Version: "1.0.0", KernelOff: 4096, KernelSize: 10, InitrdOff: 8192, InitrdSize: 10,
		KernelSHA256: strings.Repeat("a", 64), InitrdSHA256: strings.Repeat("b", 64)}
	b, _ := good.Marshal()
	f.Add(b)
	f.Add([]byte("meshroot_image=1\nota_kernel_blk=zz\n\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < HeaderSize {
			b = append(b, make([]byte, HeaderSize-len(b))...)
		}
		h, err := ParseHeader(b)
		if err != nil {
			return
		}
		if h.InitrdOff < h.KernelOff+h.KernelSize || h.KernelOff < HeaderSize || h.Total() <= 0 {
			t.Fatalf("ParseHeader accepted an inconsistent header: %+v", h)
		}
	})
}
