package image

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"

	"github.com/klauspost/compress/zstd"
)

// PVHKernelName is the file name of the directly bootable x86 kernel in the output directory.
const PVHKernelName = "vmlinux.pvh"

// xenElfnotePhys32Entry is XEN_ELFNOTE_PHYS32_ENTRY: the note QEMU looks for to boot an ELF
// kernel through the PVH entry point.
const xenElfnotePhys32Entry = 18

// ExtractPVH extracts the uncompressed ELF kernel from an x86 bzImage and checks it has a PVH
// entry note, so QEMU can boot it directly (-kernel vmlinux): under TCG that skips the real-mode
// setup and the kernel decompressing itself, which take about 2.2 s of a 6.6 s boot-to-ready
// (measured: first kernel line at 0.37 s instead of 2.54 s). The bzImage stays the kernel of the
// image (what OTA ships); the PVH file is for QEMU only.
func ExtractPVH(bzImage string) ([]byte, error) {
	b, err := os.ReadFile(bzImage)
	if err != nil {
		return nil, err
	}
	if len(b) < 0x250 || string(b[0x202:0x206]) != "HdrS" {
		return nil, errors.New("pvh: not a bzImage (no HdrS setup header)")
	}
	setupSects := int(b[0x1f1])
	if setupSects == 0 {
		setupSects = 4
	}
	start := (setupSects + 1) * 512
	off := start + int(binary.LittleEndian.Uint32(b[0x248:]))
	n := int(binary.LittleEndian.Uint32(b[0x24c:]))
	if off < start || n <= 0 || off+n > len(b) {
		return nil, fmt.Errorf("pvh: payload at %d+%d outside the %d-byte bzImage", off, n, len(b))
	}
	payload := b[off : off+n]
	var r io.Reader
	switch {
	case bytes.HasPrefix(payload, []byte("\xfd7zXZ\x00")):
		// The kernel's xz stream uses the x86 BCJ filter, which the Go xz package does not
		// implement: use xz(1) (xz-utils, installed by `make deps`).
		xzBin, err := exec.LookPath("xz")
		if err != nil {
			return nil, fmt.Errorf("pvh: the kernel is xz-compressed with the x86 BCJ filter and xz(1) is not installed: %w", err)
		}
		cmd := exec.Command(xzBin, "-dc", "--single-stream")
		cmd.Stdin = bytes.NewReader(payload)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("pvh: xz -d: %w: %s", err, bytes.TrimSpace(errb.Bytes()))
		}
		r = &out
	case bytes.HasPrefix(payload, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		d, err := zstd.NewReader(bytes.NewReader(payload), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("pvh: zstd payload: %w", err)
		}
		defer d.Close()
		r = d
	case bytes.HasPrefix(payload, []byte{0x1f, 0x8b}):
		if r, err = gzip.NewReader(bytes.NewReader(payload)); err != nil {
			return nil, fmt.Errorf("pvh: gzip payload: %w", err)
		}
	default:
		return nil, fmt.Errorf("pvh: payload compression % x not supported", payload[:min(6, len(payload))])
	}
	vmlinux, err := io.ReadAll(io.LimitReader(r, 512<<20))
	if err != nil {
		return nil, fmt.Errorf("pvh: decompress: %w", err)
	}
	f, err := elf.NewFile(bytes.NewReader(vmlinux))
	if err != nil {
		return nil, fmt.Errorf("pvh: payload is not ELF: %w", err)
	}
	defer f.Close()
	if !hasPVHNote(f) {
		return nil, errors.New("pvh: kernel has no PVH entry note (CONFIG_PVH)")
	}
	return vmlinux, nil
}

// hasPVHNote reports whether an ELF file has a Xen PHYS32_ENTRY note.
func hasPVHNote(f *elf.File) bool {
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		data, err := io.ReadAll(p.Open())
		if err != nil {
			return false
		}
		for len(data) >= 12 {
			nameSz := binary.LittleEndian.Uint32(data[0:])
			descSz := binary.LittleEndian.Uint32(data[4:])
			typ := binary.LittleEndian.Uint32(data[8:])
			next := 12 + align4(uint64(nameSz)) + align4(uint64(descSz))
			if next > uint64(len(data)) {
				break
			}
			name := data[12 : 12+nameSz]
			if typ == xenElfnotePhys32Entry && bytes.Equal(bytes.TrimRight(name, "\x00"), []byte("Xen")) {
				return true
			}
			data = data[next:]
		}
	}
	return false
}

func align4(n uint64) uint64 { return (n + 3) &^ 3 }
