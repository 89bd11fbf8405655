package firmware

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The data area on raw NAND is a UBIFS volume inside UBI, the way OpenWrt keeps rootfs_data on
// Qualcomm NAND boards: meshd finds the MTD partition by name in /proc/mtd, attaches UBI to it
// (UBI_IOCATT on /dev/ubi_ctrl) unless it is attached already, creates the volume (UBI_IOCMKVOL
// on /dev/ubiN, all free LEBs) unless it exists, and mounts "ubiN:<volume>" as ubifs. The
// kernel formats an empty volume at its first mount ("default file-system created"), so no
// mkfs.ubifs is needed.

// UBIDataVolume is the name of the UBI volume holding the data area (OpenWrt's name).
const UBIDataVolume = "rootfs_data"

// DataParam is the kernel command-line option that names the data area instead of the board's
// catalog entry: meshroot.data=mtd:NAME makes the data area the UBIFS volume "rootfs_data" on
// the MTD partition NAME (its name in /proc/mtd, or "mtdN"); quote a name with spaces
// (meshroot.data="mtd:NAND simulator partition 1"). For bring-up of a board whose partition
// table differs from the catalog, and for the VM test on nandsim.
const DataParam = "meshroot.data"

// UBI is the kernel's UBI control interface. Paths are on the running system (joined with the
// implementation's root).
type UBI interface {
	// Attach attaches UBI to MTD device mtdNum and returns the new UBI device's number.
	Attach(mtdNum int) (ubiNum int, err error)
	// MakeVolume creates a dynamic volume of size bytes on UBI device ubiNum and returns its
	// volume ID.
	MakeVolume(ubiNum int, name string, bytes int64) (volID int, err error)
}

// ubi_attach_req and ubi_mkvol_req from linux/include/uapi/mtd/ubi-user.h.
type ubiAttachReq struct {
	UBINum        int32
	MTDNum        int32
	VIDHdrOffset  int32
	MaxBEBPer1024 int16
	DisableFM     int8
	NeedResvPool  int8
	Padding       [8]int8
}

type ubiMkvolReq struct {
	VolID     int32
	Alignment int32
	Bytes     int64
	VolType   int8
	Flags     uint8
	NameLen   int16
	Padding2  [4]int8
	Name      [ubiMaxVolumeName + 1]byte
}

const (
	ubiMaxVolumeName = 127
	ubiDynamicVolume = 3
	ubiNumAuto       = -1
	// _IOW('o', 64, struct ubi_attach_req) and _IOW('o', 0, struct ubi_mkvol_req).
	ubiIOCATT   = 1<<30 | uintptr(unsafe.Sizeof(ubiAttachReq{}))<<16 | 'o'<<8 | 64
	ubiIOCMKVOL = 1<<30 | uintptr(unsafe.Sizeof(ubiMkvolReq{}))<<16 | 'o'<<8 // nr 0
)

// RealUBI issues the UBI ioctls on <Root>/dev/ubi_ctrl and <Root>/dev/ubiN.
type RealUBI struct{ Root string }

func (u RealUBI) ioctl(dev string, req uintptr, arg unsafe.Pointer) error {
	f, err := os.OpenFile(filepath.Join(u.Root, dev), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), req, uintptr(arg)); e != 0 {
		return e
	}
	return nil
}

// Attach issues UBI_IOCATT; the kernel picks the UBI number and returns it in the request.
func (u RealUBI) Attach(mtdNum int) (int, error) {
	req := ubiAttachReq{UBINum: ubiNumAuto, MTDNum: int32(mtdNum)}
	if err := u.ioctl("dev/ubi_ctrl", ubiIOCATT, unsafe.Pointer(&req)); err != nil {
		return 0, fmt.Errorf("ubi attach mtd%d: %w", mtdNum, err)
	}
	return int(req.UBINum), nil
}

// MakeVolume issues UBI_IOCMKVOL for a dynamic volume; the kernel picks the volume ID.
func (u RealUBI) MakeVolume(ubiNum int, name string, bytes int64) (int, error) {
	if name == "" || len(name) > ubiMaxVolumeName {
		return 0, fmt.Errorf("ubi%d: volume name %q: want 1..%d bytes", ubiNum, name, ubiMaxVolumeName)
	}
	req := ubiMkvolReq{VolID: ubiNumAuto, Alignment: 1, Bytes: bytes, VolType: ubiDynamicVolume, NameLen: int16(len(name))}
	copy(req.Name[:], name)
	if err := u.ioctl(fmt.Sprintf("dev/ubi%d", ubiNum), ubiIOCMKVOL, unsafe.Pointer(&req)); err != nil {
		return 0, fmt.Errorf("ubi%d: make volume %q (%d bytes): %w", ubiNum, name, bytes, err)
	}
	return int(req.VolID), nil
}

// MTDPart is one line of /proc/mtd.
type MTDPart struct {
	Num       int    // N of mtdN
	Size      int64  // bytes
	EraseSize int64  // bytes
	Name      string // the partition name, unquoted
}

// ParseProcMTD parses /proc/mtd: a header line, then `mtdN: size erasesize "name"` with the
// sizes in hex.
func ParseProcMTD(r io.Reader) ([]MTDPart, error) {
	var out []MTDPart
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 4096), 64<<10)
	line := 0
	for s.Scan() {
		line++
		t := s.Text()
		if strings.TrimSpace(t) == "" || strings.HasPrefix(t, "dev:") {
			continue
		}
		dev, rest, ok := strings.Cut(t, ":")
		num, ok2 := strings.CutPrefix(dev, "mtd")
		n, err := strconv.Atoi(num)
		if !ok || !ok2 || err != nil || n < 0 {
			return nil, fmt.Errorf("/proc/mtd line %d: %q: want mtdN: size erasesize \"name\"", line, truncate(t, 80))
		}
		f := strings.SplitN(strings.TrimSpace(rest), " ", 3)
		if len(f) != 3 {
			return nil, fmt.Errorf("/proc/mtd line %d: %d fields; want size, erasesize and name", line, len(f))
		}
		size, err1 := strconv.ParseInt(f[0], 16, 64)
		erase, err2 := strconv.ParseInt(f[1], 16, 64)
		name := strings.TrimSpace(f[2])
		if err1 != nil || err2 != nil || size < 0 || erase < 0 {
			return nil, fmt.Errorf("/proc/mtd line %d: sizes %q %q: want hex", line, f[0], f[1])
		}
		if len(name) < 2 || name[0] != '"' || name[len(name)-1] != '"' {
			return nil, fmt.Errorf("/proc/mtd line %d: name %q: want it in double quotes", line, truncate(name, 80))
		}
		out = append(out, MTDPart{Num: n, Size: size, EraseSize: erase, Name: name[1 : len(name)-1]})
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("/proc/mtd line %d: %w", line+1, err)
	}
	return out, nil
}

// errNoMTD says the MTD partition is not there (yet).
var errNoMTD = errors.New("no such MTD partition")

// FindMTD finds the MTD partition called name (or "mtdN") in <root>/proc/mtd.
func FindMTD(root, name string) (MTDPart, error) {
	f, err := os.Open(filepath.Join(root, "proc/mtd"))
	if err != nil {
		return MTDPart{}, fmt.Errorf("mtd partition %q: %w (%w)", name, errNoMTD, err)
	}
	defer f.Close()
	parts, err := ParseProcMTD(f)
	if err != nil {
		return MTDPart{}, fmt.Errorf("mtd partition %q: %w", name, err)
	}
	for _, p := range parts {
		if p.Name == name {
			return p, nil
		}
	}
	for _, p := range parts {
		if name == fmt.Sprintf("mtd%d", p.Num) {
			return p, nil
		}
	}
	return MTDPart{}, fmt.Errorf("mtd partition %q: %w in /proc/mtd (%d partitions)", name, errNoMTD, len(parts))
}

// readSysInt reads a decimal integer from a sysfs attribute.
func readSysInt(p string) (int64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", p, err)
	}
	return v, nil
}

// ubiDevices lists the UBI device numbers in <root>/sys/class/ubi (ubiN, not ubiN_M volumes
// nor ubi_ctrl).
func ubiDevices(root string) ([]int, error) {
	ents, err := os.ReadDir(filepath.Join(root, "sys/class/ubi"))
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	var out []int
	for _, e := range ents {
		num, ok := strings.CutPrefix(e.Name(), "ubi")
		if n, err := strconv.Atoi(num); ok && err == nil && n >= 0 {
			out = append(out, n)
		}
	}
	return out, nil
}

// AttachedUBI returns the UBI device attached to MTD device mtdNum, or -1.
func AttachedUBI(root string, mtdNum int) (int, error) {
	devs, err := ubiDevices(root)
	if err != nil {
		return -1, err
	}
	for _, n := range devs {
		m, err := readSysInt(filepath.Join(root, "sys/class/ubi", fmt.Sprintf("ubi%d", n), "mtd_num"))
		if err == nil && m == int64(mtdNum) {
			return n, nil
		}
	}
	return -1, nil
}

// UBIVolume returns the ID of the volume called name on UBI device ubiNum, or -1.
func UBIVolume(root string, ubiNum int, name string) (int, error) {
	prefix := fmt.Sprintf("ubi%d_", ubiNum)
	ents, err := os.ReadDir(filepath.Join(root, "sys/class/ubi"))
	if err != nil && !os.IsNotExist(err) {
		return -1, err
	}
	for _, e := range ents {
		id, ok := strings.CutPrefix(e.Name(), prefix)
		v, err := strconv.Atoi(id)
		if !ok || err != nil || v < 0 {
			continue
		}
		b, err := os.ReadFile(filepath.Join(root, "sys/class/ubi", e.Name(), "name"))
		if err == nil && strings.TrimRight(string(b), "\n") == name {
			return v, nil
		}
	}
	return -1, nil
}

// AttachUBIVolume makes the UBI volume vol on the MTD partition mtdName ready to mount and
// returns its mount source, "ubiN:vol": it attaches UBI unless the partition is attached
// already, and creates the volume over all free LEBs unless it exists.
func AttachUBIVolume(root string, u UBI, mtdName, vol string) (string, error) {
	part, err := FindMTD(root, mtdName)
	if err != nil {
		return "", err
	}
	ubiNum, err := AttachedUBI(root, part.Num)
	if err != nil {
		return "", fmt.Errorf("mtd partition %q: %w", mtdName, err)
	}
	if ubiNum < 0 {
		if ubiNum, err = u.Attach(part.Num); err != nil {
			return "", fmt.Errorf("mtd partition %q (mtd%d): %w", mtdName, part.Num, err)
		}
	}
	volID, err := UBIVolume(root, ubiNum, vol)
	if err != nil {
		return "", fmt.Errorf("ubi%d (mtd partition %q): %w", ubiNum, mtdName, err)
	}
	if volID < 0 {
		dir := filepath.Join(root, "sys/class/ubi", fmt.Sprintf("ubi%d", ubiNum))
		lebs, err1 := readSysInt(filepath.Join(dir, "avail_eraseblocks"))
		leb, err2 := readSysInt(filepath.Join(dir, "eraseblock_size"))
		if err := errors.Join(err1, err2); err != nil {
			return "", fmt.Errorf("ubi%d (mtd partition %q): volume %q: free space: %w", ubiNum, mtdName, vol, err)
		}
		if lebs <= 0 || leb <= 0 {
			return "", fmt.Errorf("ubi%d (mtd partition %q): volume %q: no free LEBs (avail_eraseblocks %d, eraseblock_size %d)", ubiNum, mtdName, vol, lebs, leb)
		}
		if _, err := u.MakeVolume(ubiNum, vol, lebs*leb); err != nil {
			return "", fmt.Errorf("mtd partition %q: volume %q: %w", mtdName, vol, err)
		}
	}
	return fmt.Sprintf("ubi%d:%s", ubiNum, vol), nil
}

// FakeUBI is the kernel's UBI for tests: Attach and MakeVolume write the sysfs attributes the
// kernel would (under Root/sys/class/ubi) and refuse what the kernel refuses (attaching an
// attached MTD device, a volume bigger than the free space, a duplicate name).
type FakeUBI struct {
	Root string
	// LEBs and LEBSize are what an attach finds free on each MTD device, by number.
	LEBs    map[int]int64
	LEBSize int64

	mu    sync.Mutex
	Calls []string // "attach mtdN" / "mkvol ubiN name bytes", in order
}

// Attach creates sysfs ubiN for the MTD device.
func (f *FakeUBI) Attach(mtdNum int) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Calls = append(f.Calls, fmt.Sprintf("attach mtd%d", mtdNum))
	if n, _ := AttachedUBI(f.Root, mtdNum); n >= 0 {
		return 0, fmt.Errorf("ubi attach mtd%d: %w", mtdNum, unix.EEXIST)
	}
	lebs, ok := f.LEBs[mtdNum]
	if !ok {
		return 0, fmt.Errorf("ubi attach mtd%d: %w", mtdNum, unix.ENODEV)
	}
	devs, _ := ubiDevices(f.Root)
	n := len(devs)
	dir := filepath.Join(f.Root, "sys/class/ubi", fmt.Sprintf("ubi%d", n))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	for k, v := range map[string]int64{"mtd_num": int64(mtdNum), "avail_eraseblocks": lebs, "eraseblock_size": f.LEBSize} {
		if err := os.WriteFile(filepath.Join(dir, k), []byte(strconv.FormatInt(v, 10)+"\n"), 0o644); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// MakeVolume creates sysfs ubiN_M with the name and takes the LEBs.
func (f *FakeUBI) MakeVolume(ubiNum int, name string, bytes int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Calls = append(f.Calls, fmt.Sprintf("mkvol ubi%d %s %d", ubiNum, name, bytes))
	dir := filepath.Join(f.Root, "sys/class/ubi", fmt.Sprintf("ubi%d", ubiNum))
	avail, err := readSysInt(filepath.Join(dir, "avail_eraseblocks"))
	if err != nil {
		return 0, fmt.Errorf("ubi%d: %w", ubiNum, unix.ENODEV)
	}
	if v, _ := UBIVolume(f.Root, ubiNum, name); v >= 0 {
		return 0, fmt.Errorf("ubi%d: make volume %q: %w", ubiNum, name, unix.EEXIST)
	}
	need := (bytes + f.LEBSize - 1) / f.LEBSize
	if need > avail || bytes <= 0 {
		return 0, fmt.Errorf("ubi%d: make volume %q (%d bytes): %w", ubiNum, name, bytes, unix.ENOSPC)
	}
	id := 0
	for {
		if _, err := os.Stat(filepath.Join(f.Root, "sys/class/ubi", fmt.Sprintf("ubi%d_%d", ubiNum, id))); err != nil {
			break
		}
		id++
	}
	vdir := filepath.Join(f.Root, "sys/class/ubi", fmt.Sprintf("ubi%d_%d", ubiNum, id))
	if err := os.MkdirAll(vdir, 0o755); err != nil {
		return 0, err
	}
	if err := os.WriteFile(filepath.Join(vdir, "name"), []byte(name+"\n"), 0o644); err != nil {
		return 0, err
	}
	if err := os.WriteFile(filepath.Join(dir, "avail_eraseblocks"), []byte(strconv.FormatInt(avail-need, 10)+"\n"), 0o644); err != nil {
		return 0, err
	}
	return id, nil
}

// Events returns a copy of Calls.
func (f *FakeUBI) Events() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.Calls...)
}

// KernelArgs splits a kernel command line (/proc/cmdline) into its parameters the way the
// kernel does: on spaces outside double quotes, with the quotes removed.
func KernelArgs(cmdline string) []string {
	var out []string
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range cmdline {
		switch {
		case r == '"':
			inQuote, have = !inQuote, true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

// DataOverride reads meshroot.data= from <root>/proc/cmdline: the MTD partition name after
// "mtd:", or "" when the option is absent. Another form is an error naming the option.
func DataOverride(root string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, "proc/cmdline"))
	if err != nil {
		return "", nil
	}
	val, found := "", false
	for _, a := range KernelArgs(string(b)) {
		if v, ok := strings.CutPrefix(a, DataParam+"="); ok {
			val, found = v, true
		}
	}
	if !found {
		return "", nil
	}
	name, ok := strings.CutPrefix(val, "mtd:")
	if !ok || name == "" {
		return "", fmt.Errorf("%s=%q: want mtd:NAME", DataParam, truncate(val, 80))
	}
	return name, nil
}
