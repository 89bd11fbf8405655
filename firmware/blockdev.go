package firmware

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"meshroot/board"
)

// Uevent is the part of a block device's /sys/class/block/<dev>/uevent meshd reads.
type Uevent struct {
	DevName  string // DEVNAME, e.g. "vda3"
	PartName string // PARTNAME, the GPT partition name, e.g. "data"
	DevType  string // DEVTYPE: "disk" or "partition"
}

// ParseUevent parses KEY=value lines of a sysfs uevent file.
func ParseUevent(b []byte) (Uevent, error) {
	var u Uevent
	if len(b) > 8<<10 {
		return u, fmt.Errorf("uevent: %d bytes; want at most 8 KiB", len(b))
	}
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), "=")
		if !ok {
			continue
		}
		switch k {
		case "DEVNAME":
			u.DevName = v
		case "PARTNAME":
			u.PartName = v
		case "DEVTYPE":
			u.DevType = v
		}
	}
	if err := s.Err(); err != nil {
		return Uevent{}, fmt.Errorf("uevent: %w", err)
	}
	if u.DevName != "" && (strings.Contains(u.DevName, "..") || strings.HasPrefix(u.DevName, "/")) {
		return Uevent{}, fmt.Errorf("uevent: DEVNAME %q is not a device name", u.DevName)
	}
	return u, nil
}

// errNoBlockDevice says a region's device node is not there (yet).
var errNoBlockDevice = errors.New("no such block device")

// ResolveBlock finds the device node of a flash region on the running system: the region's
// Device when that node exists, else the block device whose GPT partition name is the region's
// Name (from /sys/class/block/*/uevent), so a disk that enumerates under another name is still
// found. The path returned is absolute on the running system (not joined with root).
func ResolveBlock(root string, r board.Region) (string, error) {
	if r.Device != "" {
		if _, err := os.Stat(filepath.Join(root, r.Device)); err == nil {
			return r.Device, nil
		}
	}
	if r.Name != "" {
		ents, err := os.ReadDir(filepath.Join(root, "sys/class/block"))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(root, "sys/class/block", e.Name(), "uevent"))
			if err != nil {
				continue
			}
			u, err := ParseUevent(b)
			if err != nil || u.PartName != r.Name || u.DevName == "" {
				continue
			}
			dev := "/dev/" + u.DevName
			if _, err := os.Stat(filepath.Join(root, dev)); err == nil {
				return dev, nil
			}
		}
	}
	return "", fmt.Errorf("region %q (%s): %w", r.Name, r.Device, errNoBlockDevice)
}
