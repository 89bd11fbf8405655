// Package slot is the A/B firmware slots OTA writes: a Slot is a fixed-size byte range on a
// block device, a partition or a file. Region implements it over any Device (an *os.File in
// production, an in-memory or power-cut-simulating device in tests); Open and FromBoard find
// the device the board catalog names.
package slot

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"meshroot/board"
)

// Device is storage a slot lives on.
type Device interface {
	io.ReaderAt
	io.WriterAt
	// Sync makes written data durable (fsync on a file or block device).
	Sync() error
}

// Slot is one firmware slot.
type Slot interface {
	// Name is the slot's letter, "a" or "b".
	Name() string
	// Size is the slot's capacity in bytes.
	Size() int64
	io.ReaderAt
	io.WriterAt
	Sync() error
}

// ErrOutOfRange is returned for an access beyond the slot's end.
var ErrOutOfRange = errors.New("slot: access beyond the end of the slot")

// Region is a Slot over [Offset, Offset+Size) of a Device.
type Region struct {
	name string
	dev  Device
	off  int64
	size int64
}

// NewRegion returns the slot name over size bytes of dev starting at off.
func NewRegion(name string, dev Device, off, size int64) *Region {
	return &Region{name: name, dev: dev, off: off, size: size}
}

// Name implements Slot.
func (r *Region) Name() string { return r.name }

// Size implements Slot.
func (r *Region) Size() int64 { return r.size }

// ReadAt implements io.ReaderAt within the region.
func (r *Region) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > r.size {
		return 0, fmt.Errorf("slot %s: read at %d: %w", r.name, off, ErrOutOfRange)
	}
	short := false
	if int64(len(p)) > r.size-off {
		p = p[:r.size-off]
		short = true
	}
	n, err := r.dev.ReadAt(p, r.off+off)
	if err == nil && short {
		err = io.EOF
	}
	return n, err
}

// WriteAt implements io.WriterAt within the region; a write past the end is refused whole.
func (r *Region) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > r.size {
		return 0, fmt.Errorf("slot %s: write %d bytes at %d (size %d): %w", r.name, len(p), off, r.size, ErrOutOfRange)
	}
	return r.dev.WriteAt(p, r.off+off)
}

// Sync implements Slot.
func (r *Region) Sync() error { return r.dev.Sync() }

// DropCache asks the kernel to forget its cached pages of the region (after Sync), so that a
// re-read comes from the flash and not from memory. It does nothing for devices that are not
// files.
func (r *Region) DropCache() error {
	f, ok := r.dev.(*os.File)
	if !ok {
		return nil
	}
	if err := unix.Fadvise(int(f.Fd()), r.off, r.size, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("slot %s: drop cache: %w", r.name, err)
	}
	return nil
}

// Open opens path (a block device, a partition or a regular file) read-write and returns the
// slot over [off, off+size). size 0 means "to the end of the device".
func Open(name, path string, off, size int64) (*Region, io.Closer, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("slot %s: %w", name, err)
	}
	total, err := deviceSize(f)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("slot %s: %s: %w", name, path, err)
	}
	if size == 0 {
		size = total - off
	}
	if off < 0 || size <= 0 || off+size > total {
		f.Close()
		return nil, nil, fmt.Errorf("slot %s: %s: range [%d, %d) outside the device (%d bytes)", name, path, off, off+size, total)
	}
	return NewRegion(name, f, off, size), f, nil
}

// deviceSize is the size of a regular file, or of a block device (seeking to its end, which
// Linux answers from the device size like BLKGETSIZE64).
func deviceSize(f *os.File) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if st.Mode()&os.ModeDevice == 0 {
		return st.Size(), nil
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("size of block device: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	return size, nil
}

// Names are the two slot letters.
var Names = [2]string{"a", "b"}

// Other returns the other slot's letter.
func Other(name string) string {
	if name == "a" {
		return "b"
	}
	return "a"
}

// FromBoard opens slot name ("a" or "b") of a board's flash layout. Region offsets are
// absolute on Flash.Device (board.Region). The slot is opened, in order of preference: as its
// own partition node (Region.Device), as the partition with its GPT name found under sysRoot
// ("/" on the device) in /sys/class/block, or as [Offset, Offset+Size) of Flash.Device.
func FromBoard(fl board.Flash, name, sysRoot string) (*Region, io.Closer, error) {
	var r board.Region
	switch name {
	case "a":
		r = fl.SlotA
	case "b":
		r = fl.SlotB
	default:
		return nil, nil, fmt.Errorf("slot %q: want a or b", name)
	}
	if fl.Kind == "nand" || fl.Kind == "nor" {
		return nil, nil, fmt.Errorf("slot %s: %s flash (%s) needs MTD/UBI volume writes, not implemented", name, fl.Kind, fl.Device)
	}
	var errs []string
	if r.Device != "" {
		reg, c, err := Open(name, filepath.Join(sysRoot, r.Device), 0, r.Size)
		if err == nil {
			return reg, c, nil
		}
		errs = append(errs, err.Error())
	}
	if r.Name != "" {
		dev, err := FindPartition(sysRoot, r.Name)
		if err == nil {
			return Open(name, dev, 0, r.Size)
		}
		errs = append(errs, err.Error())
	}
	if fl.Device != "" && r.Size > 0 {
		return Open(name, filepath.Join(sysRoot, fl.Device), r.Offset, r.Size)
	}
	return nil, nil, fmt.Errorf("slot %s: cannot locate it (%s)", name, strings.Join(errs, "; "))
}

// FindPartition returns the /dev node of the block partition whose GPT name is partName, by
// reading PARTNAME from /sys/class/block/*/uevent under sysRoot.
func FindPartition(sysRoot, partName string) (string, error) {
	dir := filepath.Join(sysRoot, "sys/class/block")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("find partition %q: %w", partName, err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "uevent"))
		if err != nil {
			continue
		}
		var devname, pname string
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "DEVNAME="); ok {
				devname = v
			}
			if v, ok := strings.CutPrefix(line, "PARTNAME="); ok {
				pname = v
			}
		}
		if pname == partName && devname != "" {
			return filepath.Join(sysRoot, "dev", devname), nil
		}
	}
	return "", fmt.Errorf("find partition %q: no block device with that PARTNAME under %s", partName, dir)
}
