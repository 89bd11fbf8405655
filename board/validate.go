package board

import (
	"errors"
	"fmt"
	"slices"
)

// Validate checks that a board description is consistent: the things the firmware, the image
// builder and OTA rely on (one WAN port, known bands and widths, partitions that do not overlap
// and lie inside the storage, slots of equal size, an environment inside its partition or in a
// gap of the disk, copies aligned to erase blocks and apart from each other).
func (b Board) Validate() error {
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}
	if b.Name == "" {
		add("name is empty")
	}
	if b.Arch != "arm64" && b.Arch != "amd64" {
		add("arch %q; want arm64 or amd64", b.Arch)
	}
	if !b.Generic && len(b.Compatible) == 0 && len(b.DMI) == 0 {
		add("no compatible strings and no DMI match: detection can never pick it")
	}
	for i, m := range b.DMI {
		if m.SysVendor == "" && m.ProductName == "" {
			add("dmi[%d] matches everything", i)
		}
	}
	if !b.Generic && b.Console == "" {
		add("console is empty")
	}

	// Radios.
	phys := map[int]bool{}
	checkRadio := func(name string, r Radio) {
		maxW := map[Band]int{Band2G4: 40, Band5G: 240, Band6G: 320}[r.Band]
		if maxW == 0 {
			add("%s: band %q unknown", name, r.Band)
			return
		}
		if !slices.Contains([]int{20, 40, 80, 160, 320}, r.MaxWidthMHz) || r.MaxWidthMHz > maxW {
			add("%s: max width %d MHz invalid for %s", name, r.MaxWidthMHz, r.Band)
		}
		if r.DFS && r.Band != Band5G {
			add("%s: DFS on %s (DFS applies to 5 GHz only)", name, r.Band)
		}
		if r.Streams < 1 || r.Streams > 8 {
			add("%s: %d spatial streams; want 1..8", name, r.Streams)
		}
		if r.Chip == "" {
			add("%s: chip is empty", name)
		}
	}
	for _, r := range b.Radios {
		if phys[r.Phy] {
			add("radio phy%d listed twice", r.Phy)
		}
		phys[r.Phy] = true
		checkRadio(fmt.Sprintf("radio phy%d", r.Phy), r)
	}
	if h := b.Hwsim; h != nil {
		if len(b.Radios) > 0 {
			add("hwsim: a board with radios of its own has no simulated ones")
		}
		if h.Module == "" {
			add("hwsim: module is empty")
		}
		if len(h.Radios) == 0 {
			add("hwsim: no radio descriptions")
		}
		if h.Max < 1 || h.Max > 64 {
			add("hwsim: max %d radios; want 1..64", h.Max)
		}
		for i, r := range h.Radios {
			checkRadio(fmt.Sprintf("hwsim radio %d", i), r)
		}
	}

	// Ports.
	if !b.Generic {
		if n := len(b.PortsByRole(RoleWAN)); n != 1 {
			add("%d WAN ports; want exactly 1", n)
		}
		if len(b.PortsByRole(RoleLAN)) == 0 {
			add("no LAN port")
		}
	}
	names := map[string]bool{}
	for _, p := range b.Ports {
		if p.Name == "" || len(p.Name) > 15 {
			add("port %q: interface names are 1..15 bytes", p.Name)
		}
		if names[p.Name] {
			add("port %q listed twice", p.Name)
		}
		names[p.Name] = true
		if p.Role != RoleWAN && p.Role != RoleLAN {
			add("port %q: role %q unknown", p.Name, p.Role)
		}
		if p.SpeedMbps <= 0 {
			add("port %q: speed %d Mb/s", p.Name, p.SpeedMbps)
		}
	}
	for _, l := range b.LEDs {
		if l.Name == "" || l.Function == "" {
			add("led %+v: name and function are required", l)
		}
	}
	for _, btn := range b.Buttons {
		if btn.Name == "" || btn.Code <= 0 || btn.Code > 0x2ff {
			add("button %+v: name and an input event code (1..KEY_MAX) are required", btn)
		}
	}
	if !b.Generic && len(b.Modules) == 0 {
		add("no kernel modules listed")
	}
	if len(slices.Compact(sortedCopy(b.Modules))) != len(b.Modules) {
		add("a kernel module is listed twice")
	}
	if !b.Generic {
		if err := b.Flash.validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("board %q: %w", b.Name, err)
	}
	return nil
}

func sortedCopy(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func (f Flash) validate() error {
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("flash: "+format, args...))
	}
	if !slices.Contains([]string{"nand", "nor", "emmc", "virtio"}, f.Kind) {
		add("kind %q unknown", f.Kind)
	}
	if f.Size <= 0 {
		add("size %d", f.Size)
	}
	if f.DataFS != "ext4" && f.DataFS != "ubifs" {
		add("data file system %q; want ext4 or ubifs", f.DataFS)
	}
	byName := map[string]Region{}
	var prevEnd int64
	for i, p := range f.Partitions {
		if p.Name == "" {
			add("partition %d has no name", i)
		}
		if _, dup := byName[p.Name]; dup {
			add("partition %q listed twice", p.Name)
		}
		byName[p.Name] = p
		if p.Size <= 0 || p.Offset < 0 || p.Offset+p.Size > f.Size {
			add("partition %q [%#x, +%#x) is not inside the %#x-byte storage", p.Name, p.Offset, p.Size, f.Size)
		}
		if p.Offset < prevEnd {
			add("partition %q at %#x overlaps the previous one (ends at %#x)", p.Name, p.Offset, prevEnd)
		}
		prevEnd = p.Offset + p.Size
	}
	for _, r := range []struct {
		what string
		reg  Region
	}{{"slot A", f.SlotA}, {"slot B", f.SlotB}, {"data", f.Data}} {
		p, ok := byName[r.reg.Name]
		if !ok {
			add("%s %q is not in the partition table", r.what, r.reg.Name)
		} else if p != r.reg {
			add("%s %+v differs from its partition table entry %+v", r.what, r.reg, p)
		}
	}
	if f.SlotA.Name == f.SlotB.Name {
		add("slot A and slot B are the same partition %q", f.SlotA.Name)
	}
	if f.SlotA.Size != f.SlotB.Size {
		add("slot sizes differ: %#x and %#x", f.SlotA.Size, f.SlotB.Size)
	}
	if (f.Kind == "virtio" || f.Kind == "emmc") && f.Device == "" {
		add("%s storage needs a device node", f.Kind)
	}
	if err := f.Env.validate(f, byName); err != nil {
		errs = append(errs, fmt.Errorf("flash: %w", err))
	}
	return errors.Join(errs...)
}

// gptReserved is what a GPT occupies at the start of a disk: the protective MBR, the header and
// 128 entries of 128 bytes (34 sectors of 512 bytes).
const gptReserved = 34 * 512

func (e BootEnv) validate(f Flash, parts map[string]Region) error {
	if e.Size <= 0 || e.SectorSize <= 0 {
		return fmt.Errorf("env: size %#x, sector size %#x", e.Size, e.SectorSize)
	}
	copies := [][2]int64{{e.Offset, e.Offset + span(e.Size, e.SectorSize)}}
	if e.Redundant {
		if e.RedundDevice != "" && e.RedundDevice != e.Device {
			return fmt.Errorf("env: redundant copy on another device %q is not supported by the layout checks", e.RedundDevice)
		}
		copies = append(copies, [2]int64{e.RedundOffset, e.RedundOffset + span(e.Size, e.SectorSize)})
		if copies[0][0] < copies[1][1] && copies[1][0] < copies[0][1] {
			return fmt.Errorf("env: copies at %#x and %#x overlap (size %#x, sector %#x)", e.Offset, e.RedundOffset, e.Size, e.SectorSize)
		}
	}
	for _, c := range copies {
		if c[0] < 0 || c[0]%e.SectorSize != 0 {
			return fmt.Errorf("env: copy at %#x is not aligned to the %#x-byte erase block", c[0], e.SectorSize)
		}
	}
	if e.Name != "" {
		p, ok := parts[e.Name]
		if !ok {
			return fmt.Errorf("env: partition %q is not in the partition table", e.Name)
		}
		for _, c := range copies {
			if c[1] > p.Size {
				return fmt.Errorf("env: copy [%#x, %#x) does not fit in partition %q (%#x bytes)", c[0], c[1], e.Name, p.Size)
			}
		}
		return nil
	}
	// Raw on the device: inside the storage, after the GPT, in no partition.
	if e.Device == "" || e.Device != f.Device {
		return fmt.Errorf("env: raw environment on %q; want the storage device %q", e.Device, f.Device)
	}
	for _, c := range copies {
		if c[0] < gptReserved || c[1] > f.Size {
			return fmt.Errorf("env: copy [%#x, %#x) is not between the GPT and the end of the %#x-byte device", c[0], c[1], f.Size)
		}
		for _, p := range f.Partitions {
			if c[0] < p.Offset+p.Size && p.Offset < c[1] {
				return fmt.Errorf("env: copy [%#x, %#x) overlaps partition %q", c[0], c[1], p.Name)
			}
		}
	}
	return nil
}

// span is the bytes a copy of size occupies when erase blocks are sector bytes.
func span(size, sector int64) int64 {
	return (size + sector - 1) / sector * sector
}

// ValidateCatalog checks every entry and the catalog as a whole: unique names, and no
// compatible string or DMI identity claimed by two boards.
func ValidateCatalog(boards []Board) error {
	var errs []error
	names := map[string]bool{}
	compat := map[string]string{}
	dmi := map[DMIMatch]string{}
	for _, b := range boards {
		if err := b.Validate(); err != nil {
			errs = append(errs, err)
		}
		if names[b.Name] {
			errs = append(errs, fmt.Errorf("board %q listed twice", b.Name))
		}
		names[b.Name] = true
		for _, c := range b.Compatible {
			if other, ok := compat[c]; ok {
				errs = append(errs, fmt.Errorf("compatible %q claimed by %q and %q", c, other, b.Name))
			}
			compat[c] = b.Name
		}
		for _, m := range b.DMI {
			if other, ok := dmi[m]; ok {
				errs = append(errs, fmt.Errorf("DMI %+v claimed by %q and %q", m, other, b.Name))
			}
			dmi[m] = b.Name
		}
	}
	return errors.Join(errs...)
}
