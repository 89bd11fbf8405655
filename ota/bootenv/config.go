package bootenv

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"meshroot/board"
)

// ConfigLine is one line of fw_env.config: device, offset, size, sector size.
type ConfigLine struct {
	Device     string
	Offset     int64
	Size       int64
	SectorSize int64
}

// Config is the location of an environment as fw_env.config describes it: one line for the
// plain layout, two for the redundant one.
type Config []ConfigLine

// ParseConfig reads fw_env.config as libubootenv does: '#' lines are comments; each line is
// "device offset size [sector-size [sectors]]", offset in C notation (0x.., 0.., decimal),
// size and sector size in hex; lines with fewer than three fields are skipped; the first two
// device lines count.
func ParseConfig(r io.Reader) (Config, error) {
	var cfg Config
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		off, err := strconv.ParseInt(f[1], 0, 64)
		if err != nil {
			return nil, fmt.Errorf("fw_env.config line %d: offset %q: %w", n, f[1], err)
		}
		size, err := parseHex(f[2])
		if err != nil {
			return nil, fmt.Errorf("fw_env.config line %d: size %q: %w", n, f[2], err)
		}
		if size == 0 {
			return nil, fmt.Errorf("fw_env.config line %d: size is zero", n)
		}
		var sect int64
		if len(f) > 3 {
			if sect, err = parseHex(f[3]); err != nil {
				return nil, fmt.Errorf("fw_env.config line %d: sector size %q: %w", n, f[3], err)
			}
		}
		cfg = append(cfg, ConfigLine{Device: f[0], Offset: off, Size: size, SectorSize: sect})
		if len(cfg) == 2 {
			break
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("fw_env.config: %w", err)
	}
	if len(cfg) == 0 {
		return nil, fmt.Errorf("fw_env.config: no environment device line")
	}
	if len(cfg) == 2 && cfg[0].Size != cfg[1].Size {
		return nil, fmt.Errorf("fw_env.config: copies have different sizes (%#x, %#x)", cfg[0].Size, cfg[1].Size)
	}
	return cfg, nil
}

func parseHex(s string) (int64, error) {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	return strconv.ParseInt(s, 16, 64)
}

// String renders the config in fw_env.config syntax.
func (c Config) String() string {
	var b strings.Builder
	b.WriteString("# device\toffset\tsize\tsector size (written by meshroot ota/bootenv)\n")
	for _, l := range c {
		sect := l.SectorSize
		if sect == 0 {
			sect = l.Size
		}
		fmt.Fprintf(&b, "%s\t%#x\t%#x\t%#x\n", l.Device, l.Offset, l.Size, sect)
	}
	return b.String()
}

// FromBoard returns the fw_env.config lines for a board's environment location.
func FromBoard(env board.BootEnv) (Config, error) {
	if env.Device == "" || env.Size <= 0 {
		return nil, fmt.Errorf("bootenv: board has no environment location (device %q, size %d)", env.Device, env.Size)
	}
	cfg := Config{{Device: env.Device, Offset: env.Offset, Size: env.Size, SectorSize: env.SectorSize}}
	if env.Redundant {
		dev := env.RedundDevice
		if dev == "" {
			dev = env.Device
		}
		cfg = append(cfg, ConfigLine{Device: dev, Offset: env.RedundOffset, Size: env.Size, SectorSize: env.SectorSize})
	}
	return cfg, nil
}

// Scheme is the flags scheme libubootenv uses for these devices: Boolean for NOR MTD devices
// (which this package cannot write, see Open), Incremental otherwise.
func (c Config) Scheme() FlagScheme { return Incremental }

// Open opens the devices of the config read-write and returns the store and a function that
// closes them. MTD and UBI devices need erase/volume-update ioctls this package does not
// implement; they are refused rather than written wrongly.
func Open(c Config) (*Store, func() error, error) {
	var files []*os.File
	closeAll := func() error {
		var first error
		for _, f := range files {
			if err := f.Close(); err != nil && first == nil {
				first = err
			}
		}
		return first
	}
	opened := map[string]*os.File{}
	var copies []Copy
	for _, l := range c {
		if strings.HasPrefix(l.Device, "/dev/mtd") || strings.HasPrefix(l.Device, "/dev/ubi") {
			closeAll()
			return nil, nil, fmt.Errorf("bootenv: %s: MTD/UBI environments are not supported (need erase/volume-update)", l.Device)
		}
		f, ok := opened[l.Device]
		if !ok {
			var err error
			f, err = os.OpenFile(l.Device, os.O_RDWR, 0)
			if err != nil {
				closeAll()
				return nil, nil, fmt.Errorf("bootenv: %w", err)
			}
			opened[l.Device] = f
			files = append(files, f)
		}
		copies = append(copies, Copy{Dev: f, Offset: l.Offset})
	}
	s, err := NewStore(int(c[0].Size), c.Scheme(), copies...)
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	return s, closeAll, nil
}
