package qemu

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
	"unicode/utf16"

	"meshroot/board"
)

// GPT constants (UEFI 2.x, chapter 5).
const (
	sectorSize     = 512
	gptEntries     = 128
	gptEntrySize   = 128
	gptEntrySector = gptEntries * gptEntrySize / sectorSize // 32 sectors of entries
	// firstUsableLBA is after the protective MBR, the header and the entry array.
	firstUsableLBA = 2 + gptEntrySector
)

// LinuxDataGUID is the GPT partition type "Linux filesystem data".
var LinuxDataGUID = mustGUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4")

// GUID is a GPT GUID in its on-disk (mixed-endian) byte order.
type GUID [16]byte

// String formats g the usual way (first three fields little-endian on disk).
func (g GUID) String() string {
	return fmt.Sprintf("%08X-%04X-%04X-%X-%X",
		binary.LittleEndian.Uint32(g[0:4]), binary.LittleEndian.Uint16(g[4:6]),
		binary.LittleEndian.Uint16(g[6:8]), g[8:10], g[10:16])
}

// ParseGUID parses "XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX".
func ParseGUID(s string) (GUID, error) {
	var g GUID
	parts := strings.Split(s, "-")
	if len(parts) != 5 || len(parts[0]) != 8 || len(parts[1]) != 4 || len(parts[2]) != 4 || len(parts[3]) != 4 || len(parts[4]) != 12 {
		return g, fmt.Errorf("guid %q: want 8-4-4-4-12 hex digits", s)
	}
	raw, err := hex.DecodeString(strings.Join(parts, ""))
	if err != nil {
		return g, fmt.Errorf("guid %q: %w", s, err)
	}
	binary.LittleEndian.PutUint32(g[0:4], binary.BigEndian.Uint32(raw[0:4]))
	binary.LittleEndian.PutUint16(g[4:6], binary.BigEndian.Uint16(raw[4:6]))
	binary.LittleEndian.PutUint16(g[6:8], binary.BigEndian.Uint16(raw[6:8]))
	copy(g[8:], raw[8:])
	return g, nil
}

func mustGUID(s string) GUID {
	g, err := ParseGUID(s)
	if err != nil {
		panic(err)
	}
	return g
}

func randomGUID() GUID {
	var g GUID
	_, _ = rand.Read(g[:])
	g[7] = g[7]&0x0f | 0x40 // version 4 (the version nibble is in the little-endian third field)
	g[8] = g[8]&0x3f | 0x80 // RFC 4122 variant
	return g
}

// Partition is one GPT entry.
type Partition struct {
	Name              string
	Type, ID          GUID
	FirstLBA, LastLBA uint64 // inclusive
	Attributes        uint64
	Offset, Size      int64 // bytes, derived from the LBAs
}

// Layout is a GPT disk layout computed from a board's flash description.
type Layout struct {
	Size       int64
	DiskID     GUID
	Partitions []Partition
}

// LayoutFor checks a board's Flash for a GPT disk (Kind "virtio" or "emmc") and returns the
// partition table: each Region of Flash.Partitions becomes a "Linux filesystem data" partition
// at its Offset and Size. The U-Boot environment (Flash.Env) must lie outside every partition
// and the GPT structures; it stays raw, as on the eMMC boards it models.
func LayoutFor(f board.Flash) (Layout, error) {
	if f.Kind != "virtio" && f.Kind != "emmc" {
		return Layout{}, fmt.Errorf("disk: flash kind %q is not a GPT disk (want virtio or emmc)", f.Kind)
	}
	if f.Size <= 0 || f.Size%sectorSize != 0 {
		return Layout{}, fmt.Errorf("disk: flash size %d: want a positive multiple of %d", f.Size, sectorSize)
	}
	lastLBA := uint64(f.Size/sectorSize) - 1
	lastUsable := lastLBA - 1 - gptEntrySector
	if len(f.Partitions) == 0 || len(f.Partitions) > gptEntries {
		return Layout{}, fmt.Errorf("disk: %d partitions: want 1 to %d", len(f.Partitions), gptEntries)
	}
	l := Layout{Size: f.Size, DiskID: randomGUID()}
	for i, r := range f.Partitions {
		if r.Name == "" {
			return Layout{}, fmt.Errorf("disk: partition %d: empty name", i+1)
		}
		if len(utf16.Encode([]rune(r.Name))) > 36 {
			return Layout{}, fmt.Errorf("disk: partition %q: name longer than 36 UTF-16 units", r.Name)
		}
		if r.Offset%sectorSize != 0 || r.Size%sectorSize != 0 || r.Size <= 0 {
			return Layout{}, fmt.Errorf("disk: partition %q: offset %d size %d: want positive multiples of %d", r.Name, r.Offset, r.Size, sectorSize)
		}
		first := uint64(r.Offset / sectorSize)
		last := first + uint64(r.Size/sectorSize) - 1
		if first < firstUsableLBA || last > lastUsable {
			return Layout{}, fmt.Errorf("disk: partition %q: sectors %d-%d outside the usable range %d-%d", r.Name, first, last, firstUsableLBA, lastUsable)
		}
		for _, p := range l.Partitions {
			if first <= p.LastLBA && p.FirstLBA <= last {
				return Layout{}, fmt.Errorf("disk: partition %q overlaps %q", r.Name, p.Name)
			}
		}
		l.Partitions = append(l.Partitions, Partition{
			Name: r.Name, Type: LinuxDataGUID, ID: randomGUID(),
			FirstLBA: first, LastLBA: last, Offset: r.Offset, Size: r.Size,
		})
	}
	for _, env := range envRanges(f.Env) {
		if env[1] <= env[0] {
			continue
		}
		if env[0] < firstUsableLBA*sectorSize || env[1] > int64(lastUsable+1)*sectorSize {
			return Layout{}, fmt.Errorf("disk: boot environment at %#x-%#x overlaps the GPT", env[0], env[1])
		}
		for _, p := range l.Partitions {
			if env[0] < p.Offset+p.Size && p.Offset < env[1] {
				return Layout{}, fmt.Errorf("disk: boot environment at %#x-%#x overlaps partition %q", env[0], env[1], p.Name)
			}
		}
	}
	return l, nil
}

// envRanges returns the byte ranges of the raw environment copies (none when the environment
// is inside a named partition).
func envRanges(e board.BootEnv) [][2]int64 {
	if e.Name != "" || e.Size == 0 {
		return nil
	}
	r := [][2]int64{{e.Offset, e.Offset + e.Size}}
	if e.Redundant && (e.RedundDevice == "" || e.RedundDevice == e.Device) {
		r = append(r, [2]int64{e.RedundOffset, e.RedundOffset + e.Size})
	}
	return r
}

// Write writes the protective MBR, the primary and the backup GPT to w (a file of l.Size
// bytes; nothing else is touched).
func (l Layout) Write(w io.WriterAt) error {
	lastLBA := uint64(l.Size/sectorSize) - 1
	entries := make([]byte, gptEntries*gptEntrySize)
	for i, p := range l.Partitions {
		e := entries[i*gptEntrySize : (i+1)*gptEntrySize]
		copy(e[0:16], p.Type[:])
		copy(e[16:32], p.ID[:])
		binary.LittleEndian.PutUint64(e[32:], p.FirstLBA)
		binary.LittleEndian.PutUint64(e[40:], p.LastLBA)
		binary.LittleEndian.PutUint64(e[48:], p.Attributes)
		for j, u := range utf16.Encode([]rune(p.Name)) {
			binary.LittleEndian.PutUint16(e[56+2*j:], u)
		}
	}
	entriesCRC := crc32.ChecksumIEEE(entries)
	header := func(current, backup, entriesLBA uint64) []byte {
		h := make([]byte, sectorSize)
		copy(h[0:8], "EFI PART")
		binary.LittleEndian.PutUint32(h[8:], 0x00010000) // revision 1.0
		binary.LittleEndian.PutUint32(h[12:], 92)        // header size
		binary.LittleEndian.PutUint64(h[24:], current)
		binary.LittleEndian.PutUint64(h[32:], backup)
		binary.LittleEndian.PutUint64(h[40:], firstUsableLBA)
		binary.LittleEndian.PutUint64(h[48:], lastLBA-1-gptEntrySector)
		copy(h[56:72], l.DiskID[:])
		binary.LittleEndian.PutUint64(h[72:], entriesLBA)
		binary.LittleEndian.PutUint32(h[80:], gptEntries)
		binary.LittleEndian.PutUint32(h[84:], gptEntrySize)
		binary.LittleEndian.PutUint32(h[88:], entriesCRC)
		binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:92]))
		return h
	}
	// Protective MBR: one 0xEE partition covering the disk (capped at 2^32-1 sectors).
	mbr := make([]byte, sectorSize)
	pe := mbr[446:462]
	pe[1], pe[2], pe[3] = 0x00, 0x02, 0x00 // CHS of LBA 1
	pe[4] = 0xEE
	pe[5], pe[6], pe[7] = 0xFF, 0xFF, 0xFF
	binary.LittleEndian.PutUint32(pe[8:], 1)
	n := lastLBA
	if n > 0xFFFFFFFF {
		n = 0xFFFFFFFF
	}
	binary.LittleEndian.PutUint32(pe[12:], uint32(n))
	mbr[510], mbr[511] = 0x55, 0xAA
	writes := []struct {
		lba  uint64
		data []byte
	}{
		{0, mbr},
		{1, header(1, lastLBA, 2)},
		{2, entries},
		{lastLBA - gptEntrySector, entries},
		{lastLBA, header(lastLBA, 1, lastLBA-gptEntrySector)},
	}
	for _, x := range writes {
		if _, err := w.WriteAt(x.data, int64(x.lba)*sectorSize); err != nil {
			return fmt.Errorf("disk: write GPT at sector %d: %w", x.lba, err)
		}
	}
	return nil
}

// ReadGPT reads and checks the primary GPT of a disk image (signature, header and entry CRCs)
// and returns its partitions. It is the inverse of Layout.Write.
func ReadGPT(r io.ReaderAt) (Layout, error) {
	h := make([]byte, sectorSize)
	if _, err := r.ReadAt(h, sectorSize); err != nil {
		return Layout{}, fmt.Errorf("gpt: read header: %w", err)
	}
	if string(h[0:8]) != "EFI PART" {
		return Layout{}, errors.New("gpt: no EFI PART signature at sector 1")
	}
	hsize := binary.LittleEndian.Uint32(h[12:])
	if hsize < 92 || hsize > sectorSize {
		return Layout{}, fmt.Errorf("gpt: header size %d", hsize)
	}
	want := binary.LittleEndian.Uint32(h[16:])
	hc := append([]byte(nil), h[:hsize]...)
	binary.LittleEndian.PutUint32(hc[16:], 0)
	if got := crc32.ChecksumIEEE(hc); got != want {
		return Layout{}, fmt.Errorf("gpt: header crc %#x; header says %#x", got, want)
	}
	num := binary.LittleEndian.Uint32(h[80:])
	esize := binary.LittleEndian.Uint32(h[84:])
	if esize < 128 || esize > 4096 || num == 0 || num > 1024 {
		return Layout{}, fmt.Errorf("gpt: %d entries of %d bytes", num, esize)
	}
	entries := make([]byte, int(num)*int(esize))
	if _, err := r.ReadAt(entries, int64(binary.LittleEndian.Uint64(h[72:]))*sectorSize); err != nil {
		return Layout{}, fmt.Errorf("gpt: read entries: %w", err)
	}
	if got, want := crc32.ChecksumIEEE(entries), binary.LittleEndian.Uint32(h[88:]); got != want {
		return Layout{}, fmt.Errorf("gpt: entries crc %#x; header says %#x", got, want)
	}
	var l Layout
	copy(l.DiskID[:], h[56:72])
	l.Size = int64(binary.LittleEndian.Uint64(h[32:])+1) * sectorSize
	for i := 0; i < int(num); i++ {
		e := entries[i*int(esize) : (i+1)*int(esize)]
		var p Partition
		copy(p.Type[:], e[0:16])
		if p.Type == (GUID{}) {
			continue
		}
		copy(p.ID[:], e[16:32])
		p.FirstLBA = binary.LittleEndian.Uint64(e[32:])
		p.LastLBA = binary.LittleEndian.Uint64(e[40:])
		if p.LastLBA < p.FirstLBA || p.LastLBA >= 1<<54 {
			return Layout{}, fmt.Errorf("gpt: entry %d: sectors %d-%d", i+1, p.FirstLBA, p.LastLBA)
		}
		p.Attributes = binary.LittleEndian.Uint64(e[48:])
		var u []uint16
		for j := 56; j+1 < 128; j += 2 {
			c := binary.LittleEndian.Uint16(e[j:])
			if c == 0 {
				break
			}
			u = append(u, c)
		}
		p.Name = string(utf16.Decode(u))
		p.Offset = int64(p.FirstLBA) * sectorSize
		p.Size = int64(p.LastLBA-p.FirstLBA+1) * sectorSize
		l.Partitions = append(l.Partitions, p)
	}
	return l, nil
}

// DiskOptions tune CreateDisk.
type DiskOptions struct {
	// NoFormat leaves the data partition unformatted (zeros), to test the firmware's fallback.
	NoFormat bool
	// Mkfs is the mkfs.ext4 binary ("" finds it on PATH, /sbin or /usr/sbin).
	Mkfs string
}

// EnsureDisk creates the disk image at path for the flash layout unless a disk with the same
// partition names, offsets and sizes is already there (so the data partition persists across
// boots). It reports whether it created the disk.
func EnsureDisk(ctx context.Context, path string, f board.Flash, o DiskOptions) (created bool, err error) {
	want, err := LayoutFor(f)
	if err != nil {
		return false, err
	}
	if fh, err := os.Open(path); err == nil {
		got, rerr := ReadGPT(fh)
		st, serr := fh.Stat()
		fh.Close()
		if rerr == nil && serr == nil && st.Size() == f.Size && sameLayout(got, want) {
			return false, nil
		}
	}
	return true, CreateDisk(ctx, path, f, o)
}

func sameLayout(a, b Layout) bool {
	if len(a.Partitions) != len(b.Partitions) {
		return false
	}
	for i := range a.Partitions {
		p, q := a.Partitions[i], b.Partitions[i]
		if p.Name != q.Name || p.FirstLBA != q.FirstLBA || p.LastLBA != q.LastLBA {
			return false
		}
	}
	return true
}

// CreateDisk writes a new sparse disk image at path (replacing any file there) with the GPT of
// LayoutFor(f), and formats the data partition (f.Data) with the host's mkfs.ext4 when
// f.DataFS is "ext4", as a factory would, so the firmware can mount /data on first boot. The
// slots and the boot environment area are left zero for ota/ to fill.
func CreateDisk(ctx context.Context, path string, f board.Flash, o DiskOptions) error {
	l, err := LayoutFor(f)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	fh, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	defer os.Remove(tmp)
	if err := fh.Truncate(l.Size); err != nil {
		fh.Close()
		return fmt.Errorf("disk: %w", err)
	}
	if err := l.Write(fh); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Close(); err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	if !o.NoFormat && f.DataFS == "ext4" && f.Data.Size > 0 {
		if err := mkfsExt4(ctx, o.Mkfs, tmp, f.Data); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	return nil
}

func mkfsExt4(ctx context.Context, mkfs, file string, r board.Region) error {
	if mkfs == "" {
		var err error
		if mkfs, err = findTool("mkfs.ext4"); err != nil {
			return fmt.Errorf("disk: format %s: %w (install e2fsprogs)", r.Name, err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	// -E offset formats the range inside the image file; the size argument bounds it.
	// nodiscard keeps mkfs from punching holes outside what it writes; -L names the volume.
	cmd := exec.CommandContext(ctx, mkfs, "-q", "-F", "-L", r.Name,
		"-E", fmt.Sprintf("offset=%d,nodiscard", r.Offset), file, fmt.Sprintf("%dk", r.Size/1024))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("disk: %s: %w: %s", strings.Join(cmd.Args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// findTool looks a tool up on PATH, then in the sbin directories root has but tests may not.
func findTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin"} {
		p := dir + "/" + name
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}
