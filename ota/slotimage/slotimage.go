// Package slotimage is the format of what OTA writes into a slot and the bootloader boots from
// it: a 4 KiB text header, then the kernel, then the initramfs, each starting on a 4 KiB
// boundary. The header is in U-Boot's "env import -t" form (name=value lines, NUL-terminated),
// so the boot script reads it with plain U-Boot commands:
//
//	meshroot_image=1
//	ota_board=qemu-virt-arm64
//	ota_version=1.4.0
//	ota_kernel_blk=0x8         first 512-byte block of the kernel, from the slot start (hex)
//	ota_kernel_cnt=0x10100     its length in blocks (hex)
//	ota_kernel_size=0x2020000  its length in bytes (hex)
//	ota_initrd_blk=...  ota_initrd_cnt=...  ota_initrd_size=...
//	ota_kernel_sha256=<hex>    ota_initrd_sha256=<hex>
//	ota_cmdline=console=ttyAMA0
//
// The whole slot image is one TUF target: its SHA-256 and length are signed by the repository.
package slotimage

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// HeaderSize is the size of the header; parts are aligned to it.
const HeaderSize = 4096

// BlockSize is the unit of the *_blk and *_cnt fields (U-Boot's block reads).
const BlockSize = 512

// Magic is the value of meshroot_image for this format.
const Magic = "1"

// Header describes a slot image.
type Header struct {
	Board, Version string
	// Cmdline is extra kernel command line from the image (the bootloader adds the slot).
	Cmdline string
	// Offsets and sizes in bytes from the slot start.
	KernelOff, KernelSize int64
	InitrdOff, InitrdSize int64
	KernelSHA256          string
	InitrdSHA256          string
}

// Total is the image length: the end of the initramfs.
func (h *Header) Total() int64 { return h.InitrdOff + h.InitrdSize }

func align(n int64) int64 { return (n + HeaderSize - 1) / HeaderSize * HeaderSize }

// Marshal renders the header block (HeaderSize bytes).
func (h *Header) Marshal() ([]byte, error) {
	for name, v := range map[string]string{"board": h.Board, "version": h.Version, "cmdline": h.Cmdline} {
		if strings.ContainsAny(v, "\n\x00") {
			return nil, fmt.Errorf("slot image header: %s contains a newline or NUL", name)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "meshroot_image=%s\n", Magic)
	fmt.Fprintf(&b, "ota_board=%s\nota_version=%s\n", h.Board, h.Version)
	fmt.Fprintf(&b, "ota_kernel_blk=%#x\nota_kernel_cnt=%#x\nota_kernel_size=%#x\n", h.KernelOff/BlockSize, (h.KernelSize+BlockSize-1)/BlockSize, h.KernelSize)
	fmt.Fprintf(&b, "ota_initrd_blk=%#x\nota_initrd_cnt=%#x\nota_initrd_size=%#x\n", h.InitrdOff/BlockSize, (h.InitrdSize+BlockSize-1)/BlockSize, h.InitrdSize)
	fmt.Fprintf(&b, "ota_kernel_sha256=%s\nota_initrd_sha256=%s\n", h.KernelSHA256, h.InitrdSHA256)
	if h.Cmdline != "" {
		fmt.Fprintf(&b, "ota_cmdline=%s\n", h.Cmdline)
	}
	if b.Len()+1 > HeaderSize {
		return nil, fmt.Errorf("slot image header: %d bytes; at most %d", b.Len()+1, HeaderSize)
	}
	out := make([]byte, HeaderSize)
	copy(out, b.String())
	return out, nil
}

// ParseHeader reads a header block and checks that its fields are consistent.
func ParseHeader(b []byte) (*Header, error) {
	if len(b) < HeaderSize {
		return nil, fmt.Errorf("slot image header: %d bytes; want %d", len(b), HeaderSize)
	}
	text := b[:HeaderSize]
	if i := bytes.IndexByte(text, 0); i >= 0 {
		text = text[:i]
	} else {
		return nil, errors.New("slot image header: not NUL-terminated")
	}
	vars := map[string]string{}
	for _, line := range strings.Split(string(text), "\n") {
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("slot image header: line %q has no '='", line)
		}
		vars[k] = v
	}
	if vars["meshroot_image"] != Magic {
		return nil, fmt.Errorf("slot image header: meshroot_image = %q; want %q (not a meshroot slot image)", vars["meshroot_image"], Magic)
	}
	h := &Header{Board: vars["ota_board"], Version: vars["ota_version"], Cmdline: vars["ota_cmdline"],
		KernelSHA256: vars["ota_kernel_sha256"], InitrdSHA256: vars["ota_initrd_sha256"]}
	num := func(name string) (int64, error) {
		v, ok := vars[name]
		if !ok {
			return 0, fmt.Errorf("slot image header: %s is missing", name)
		}
		n, err := strconv.ParseInt(strings.TrimPrefix(v, "0x"), 16, 64)
		if err != nil || n < 0 || n > 1<<40 {
			return 0, fmt.Errorf("slot image header: %s = %q: want a hex number", name, v)
		}
		return n, nil
	}
	var kb, kc, ib, ic int64
	var err error
	for _, f := range []struct {
		name string
		dst  *int64
	}{{"ota_kernel_blk", &kb}, {"ota_kernel_cnt", &kc}, {"ota_kernel_size", &h.KernelSize}, {"ota_initrd_blk", &ib}, {"ota_initrd_cnt", &ic}, {"ota_initrd_size", &h.InitrdSize}} {
		if *f.dst, err = num(f.name); err != nil {
			return nil, err
		}
	}
	h.KernelOff, h.InitrdOff = kb*BlockSize, ib*BlockSize
	switch {
	case h.Board == "" || h.Version == "":
		return nil, errors.New("slot image header: ota_board and ota_version are required")
	case h.KernelSize == 0 || h.InitrdSize == 0:
		return nil, errors.New("slot image header: kernel and initramfs must not be empty")
	case kc != (h.KernelSize+BlockSize-1)/BlockSize || ic != (h.InitrdSize+BlockSize-1)/BlockSize:
		return nil, errors.New("slot image header: block counts do not match the sizes")
	case h.KernelOff < HeaderSize || h.InitrdOff < h.KernelOff+h.KernelSize:
		return nil, errors.New("slot image header: parts overlap the header or each other")
	case !isHexSHA(h.KernelSHA256) || !isHexSHA(h.InitrdSHA256):
		return nil, errors.New("slot image header: ota_kernel_sha256 and ota_initrd_sha256 must be 64 hex digits")
	}
	return h, nil
}

func isHexSHA(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == sha256.Size
}

// Pack writes a slot image for the kernel and initramfs files and returns its header.
func Pack(w io.Writer, board, version, cmdline, kernelPath, initrdPath string) (*Header, error) {
	ksum, ksize, err := fileSHA(kernelPath)
	if err != nil {
		return nil, err
	}
	isum, isize, err := fileSHA(initrdPath)
	if err != nil {
		return nil, err
	}
	h := &Header{Board: board, Version: version, Cmdline: cmdline,
		KernelOff: HeaderSize, KernelSize: ksize, KernelSHA256: ksum,
		InitrdOff: HeaderSize + align(ksize), InitrdSize: isize, InitrdSHA256: isum}
	hdr, err := h.Marshal()
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(hdr); err != nil {
		return nil, err
	}
	for _, part := range []struct {
		path string
		size int64
	}{{kernelPath, ksize}, {initrdPath, isize}} {
		f, err := os.Open(part.path)
		if err != nil {
			return nil, err
		}
		n, err := io.Copy(w, f)
		f.Close()
		if err != nil {
			return nil, err
		}
		if n != part.size {
			return nil, fmt.Errorf("slot image: %s changed while packing", part.path)
		}
		if part.path == kernelPath {
			if _, err := w.Write(make([]byte, align(ksize)-ksize)); err != nil {
				return nil, err
			}
		}
	}
	return h, nil
}

func fileSHA(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, fmt.Errorf("slot image: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("slot image: %w", err)
	}
	if n == 0 {
		return "", 0, fmt.Errorf("slot image: %s is empty", p)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// Verify reads the image's parts from r (a slot) and checks their SHA-256 against the header.
// The bootloader does not (U-Boot here has no hash command); the OS checks before switching.
func Verify(r io.ReaderAt) (*Header, error) {
	hdr := make([]byte, HeaderSize)
	if _, err := r.ReadAt(hdr, 0); err != nil {
		return nil, fmt.Errorf("slot image: read header: %w", err)
	}
	h, err := ParseHeader(hdr)
	if err != nil {
		return nil, err
	}
	for _, part := range []struct {
		name      string
		off, size int64
		want      string
	}{{"kernel", h.KernelOff, h.KernelSize, h.KernelSHA256}, {"initramfs", h.InitrdOff, h.InitrdSize, h.InitrdSHA256}} {
		s := sha256.New()
		if _, err := io.Copy(s, io.NewSectionReader(r, part.off, part.size)); err != nil {
			return nil, fmt.Errorf("slot image: read %s: %w", part.name, err)
		}
		if got := hex.EncodeToString(s.Sum(nil)); got != part.want {
			return nil, fmt.Errorf("slot image: %s SHA-256 %s; header says %s", part.name, got, part.want)
		}
	}
	return h, nil
}
