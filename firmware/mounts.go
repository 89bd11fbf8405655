package firmware

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Mounter mounts and unmounts file systems. Targets are absolute paths on the running system.
type Mounter interface {
	Mount(source, target, fstype string, flags uintptr, data string) error
	Unmount(target string, flags int) error
	// Mounts lists what is mounted now (from /proc/self/mountinfo).
	Mounts() ([]MountInfo, error)
}

// MountInfo is one line of /proc/self/mountinfo, the fields meshd uses.
type MountInfo struct {
	Target string // mount point
	FSType string
	Source string
}

// RealMounter uses mount(2) and umount2(2), and reads <Root>/proc/self/mountinfo.
type RealMounter struct{ Root string }

// Mount calls mount(2).
func (RealMounter) Mount(source, target, fstype string, flags uintptr, data string) error {
	if err := unix.Mount(source, target, fstype, flags, data); err != nil {
		return fmt.Errorf("mount -t %s %s %s: %w", fstype, source, target, err)
	}
	return nil
}

// Unmount calls umount2(2).
func (RealMounter) Unmount(target string, flags int) error {
	if err := unix.Unmount(target, flags); err != nil {
		return fmt.Errorf("umount %s: %w", target, err)
	}
	return nil
}

// Mounts reads /proc/self/mountinfo; without /proc mounted it returns nothing.
func (m RealMounter) Mounts() ([]MountInfo, error) {
	f, err := os.Open(filepath.Join(m.Root, "proc/self/mountinfo"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseMountInfo(f)
}

// ParseMountInfo parses /proc/self/mountinfo (proc(5)): "id parent major:minor root target
// options [optional fields...] - fstype source superoptions". Octal escapes (\040 for a
// space) in paths are decoded.
func ParseMountInfo(r io.Reader) ([]MountInfo, error) {
	var out []MountInfo
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 4096), 64<<10)
	line := 0
	for s.Scan() {
		line++
		fields := strings.Fields(s.Text())
		if len(fields) == 0 {
			continue
		}
		sep := -1
		for i := 6; i < len(fields); i++ {
			if fields[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(fields) {
			return nil, fmt.Errorf("mountinfo line %d: malformed (%d fields)", line, len(fields))
		}
		mi := MountInfo{Target: unescapeMount(fields[4]), FSType: fields[sep+1]}
		if sep+2 < len(fields) {
			mi.Source = unescapeMount(fields[sep+2])
		}
		out = append(out, mi)
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("mountinfo line %d: %w", line+1, err)
	}
	return out, nil
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// IsMounted reports whether something is mounted at target.
func IsMounted(m Mounter, target string) (bool, error) {
	ms, err := m.Mounts()
	if err != nil {
		return false, err
	}
	target = filepath.Clean(target)
	for _, mi := range ms {
		if filepath.Clean(mi.Target) == target {
			return true, nil
		}
	}
	return false, nil
}

// FakeMounter records mounts in memory, for tests. Fail makes Mount fail for a source or
// target.
type FakeMounter struct {
	mu      sync.Mutex
	mounted []MountInfo
	Fail    map[string]error // by source or target
	Log     []string         // "mount fstype source target" / "umount target", in order
}

// Mount records the mount.
func (f *FakeMounter) Mount(source, target, fstype string, flags uintptr, data string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.Fail[source]; err != nil {
		return fmt.Errorf("mount %s: %w", source, err)
	}
	if err := f.Fail[target]; err != nil {
		return fmt.Errorf("mount %s: %w", target, err)
	}
	f.mounted = append(f.mounted, MountInfo{Target: target, FSType: fstype, Source: source})
	f.Log = append(f.Log, fmt.Sprintf("mount %s %s %s", fstype, source, target))
	return nil
}

// Unmount removes the newest mount at target.
func (f *FakeMounter) Unmount(target string, flags int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.mounted) - 1; i >= 0; i-- {
		if f.mounted[i].Target == target {
			f.mounted = append(f.mounted[:i], f.mounted[i+1:]...)
			f.Log = append(f.Log, "umount "+target)
			return nil
		}
	}
	return fmt.Errorf("umount %s: %w", target, unix.EINVAL)
}

// Mounts lists the recorded mounts.
func (f *FakeMounter) Mounts() ([]MountInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]MountInfo(nil), f.mounted...), nil
}

// Events returns a copy of Log.
func (f *FakeMounter) Events() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.Log...)
}
