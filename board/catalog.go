package board

import (
	"fmt"
	"runtime"
	"slices"
)

// Sizes used in the flash layouts.
const (
	KiB int64 = 1 << 10
	MiB int64 = 1 << 20
	GiB int64 = 1 << 30
)

// KEY_RESTART and KEY_WPS_BUTTON from linux/input-event-codes.h: the reset and WPS buttons of
// the Qualcomm reference designs (gpio-keys, linux,code in the device tree).
const (
	KeyRestart   = 0x198
	KeyWPSButton = 0x211
)

// routerModules are the kernel modules every board needs once it routes: TUN for the userspace
// ESP data plane, the LAN bridge, and nftables NAT/masquerade with conntrack (their own
// dependencies, nf_conntrack, nf_nat, nfnetlink, libcrc32c, come from modules.dep).
var routerModules = []string{
	"tun", "bridge",
	"nf_tables", "nft_chain_nat", "nft_nat", "nft_masq", "nft_ct", "nft_fib_inet", "nft_reject_inet",
}

// ubiModules are what the UBIFS data area on raw NAND needs (qsdkNAND boards): UBI, UBIFS, and
// the zstd compressor UBIFS asks the crypto API for by name when it loads (lzo and deflate are
// built into the kernels we ship; modules.dep does not record such by-name requests). A kernel
// that has them built in loses nothing: built-in modules are skipped.
var ubiModules = []string{"ubi", "ubifs", "zstd"}

// crc32cModule is loaded first on the QEMU boards: ext4, jbd2 and libcrc32c ask for the crc32c
// crypto driver at load or mount time (a softdep, which modules.dep does not record), and a
// u-root image has no modprobe helper for the kernel to call.
const crc32cModule = "crc32c_generic"

// qemuFwCfgModule exposes QEMU's fw_cfg blobs in /sys/firmware/qemu_fw_cfg: the QEMU boards'
// stand-in for a factory partition (-fw_cfg name=opt/meshroot/factory,file=...).
const qemuFwCfgModule = "qemu_fw_cfg"

func modules(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// qsdkNAND builds a Qualcomm SDK style NAND partition table: the boot chain partitions given,
// then the two firmware slots "rootfs" and "rootfs_1" (UBI, each holding a FIT image with the
// kernel, the u-root initramfs and the device trees) and "rootfs_data" (UBIFS) up to the end.
func qsdkNAND(size int64, boot []Region, slot int64) Flash {
	parts := slices.Clone(boot)
	end := int64(0)
	if n := len(parts); n > 0 {
		end = parts[n-1].Offset + parts[n-1].Size
	}
	a := Region{Name: "rootfs", Offset: end, Size: slot}
	b := Region{Name: "rootfs_1", Offset: a.Offset + slot, Size: slot}
	d := Region{Name: "rootfs_data", Offset: b.Offset + slot, Size: size - (b.Offset + slot)}
	parts = append(parts, a, b, d)
	return Flash{
		Kind:       "nand",
		SlotA:      a,
		SlotB:      b,
		Data:       d,
		DataFS:     "ubifs",
		Size:       size,
		Partitions: parts,
		// The environment partition is 512 KiB; the QSDK U-Boot uses a 256 KiB environment on
		// NAND. Meshroot's U-Boot build enables CONFIG_SYS_REDUNDAND_ENVIRONMENT and keeps the
		// second copy in the second half of the same partition, so an interrupted write during
		// an OTA slot switch leaves the other copy valid.
		Env: BootEnv{
			Name: "0:appsblenv", Offset: 0, Size: 0x40000,
			Redundant: true, RedundOffset: 0x40000, SectorSize: 0x20000,
		},
	}
}

// seq lays out regions back to back from start.
func seq(start int64, rs ...Region) []Region {
	out := make([]Region, len(rs))
	off := start
	for i, r := range rs {
		r.Offset = off
		off += r.Size
		out[i] = r
	}
	return out
}

func part(name string, size int64) Region { return Region{Name: name, Size: size} }

var catalog = []Board{
	{
		Name:        "ipq807x",
		Description: "Qualcomm IPQ807x Wi-Fi 6 router (Dynalink DL-WRX36 / Xiaomi AX3600 class)",
		Arch:        "arm64",
		CPU:         "IPQ8074/IPQ8072A (4x Cortex-A53 @ 2.2 GHz)",
		Compatible: []string{
			"qcom,ipq8074",
			"dynalink,dl-wrx36", "xiaomi,ax3600", "xiaomi,ax9000", "qnap,301w", "netgear,rax120v2",
			"edgecore,eap102",
		},
		Console: "ttyMSM0",
		Radios: []Radio{
			{Phy: 0, Band: Band5G, MaxWidthMHz: 160, DFS: true, Streams: 4, Chip: "IPQ8074 + QCN5054"},
			{Phy: 1, Band: Band2G4, MaxWidthMHz: 40, Streams: 4, Chip: "IPQ8074 + QCN5024"},
		},
		Ports: []Port{
			{Name: "wan", Role: RoleWAN, SpeedMbps: 2500},
			{Name: "lan1", Role: RoleLAN, SpeedMbps: 1000},
			{Name: "lan2", Role: RoleLAN, SpeedMbps: 1000},
			{Name: "lan3", Role: RoleLAN, SpeedMbps: 1000},
			{Name: "lan4", Role: RoleLAN, SpeedMbps: 1000},
		},
		LEDs: []LED{
			{Name: "blue:status", Function: "status"},
			{Name: "red:status", Function: "alert"},
			{Name: "green:wan", Function: "wan"},
		},
		Buttons: []Button{{Name: "reset", Code: KeyRestart}, {Name: "wps", Code: KeyWPSButton}},
		Flash: qsdkNAND(256*MiB, seq(0,
			part("0:sbl1", 0x100000),
			part("0:mibib", 0x100000),
			part("0:qsee", 0x300000),
			part("0:devcfg", 0x80000),
			part("0:rpm", 0x80000),
			part("0:cdt", 0x80000),
			part("0:appsblenv", 0x80000),
			part("0:appsbl", 0x100000),
			part("0:art", 0x80000),
		), 56*MiB),
		Modules:  modules([]string{"ath11k_ahb"}, ubiModules, routerModules),
		Watchdog: "/dev/watchdog",
	},
	{
		Name:        "ipq60xx",
		Description: "Qualcomm IPQ60xx Wi-Fi 6 router (Linksys MR7350 / GL.iNet GL-AX1800 class)",
		Arch:        "arm64",
		CPU:         "IPQ6018 (4x Cortex-A53 @ 1.8 GHz)",
		Compatible: []string{
			"qcom,ipq6018",
			"linksys,mr7350", "glinet,gl-ax1800", "netgear,wax214", "8devices,mango-dvk", "yuncore,fap650",
		},
		Console: "ttyMSM0",
		Radios: []Radio{
			{Phy: 0, Band: Band5G, MaxWidthMHz: 80, DFS: true, Streams: 2, Chip: "IPQ6018 + QCN5052"},
			{Phy: 1, Band: Band2G4, MaxWidthMHz: 40, Streams: 2, Chip: "IPQ6018 + QCN5022"},
		},
		Ports: []Port{
			{Name: "wan", Role: RoleWAN, SpeedMbps: 1000},
			{Name: "lan1", Role: RoleLAN, SpeedMbps: 1000},
			{Name: "lan2", Role: RoleLAN, SpeedMbps: 1000},
			{Name: "lan3", Role: RoleLAN, SpeedMbps: 1000},
			{Name: "lan4", Role: RoleLAN, SpeedMbps: 1000},
		},
		LEDs: []LED{
			{Name: "white:status", Function: "status"},
			{Name: "blue:wifi", Function: "wifi"},
		},
		Buttons: []Button{{Name: "reset", Code: KeyRestart}, {Name: "wps", Code: KeyWPSButton}},
		Flash: qsdkNAND(128*MiB, seq(0,
			part("0:sbl1", 0x100000),
			part("0:mibib", 0x100000),
			part("0:qsee", 0x180000),
			part("0:devcfg", 0x40000),
			part("0:apdp", 0x40000),
			part("0:rpm", 0x40000),
			part("0:cdt", 0x40000),
			part("0:appsblenv", 0x80000),
			part("0:appsbl", 0x140000),
			part("0:art", 0x40000),
		), 44*MiB),
		Modules:  modules([]string{"ath11k_ahb"}, ubiModules, routerModules),
		Watchdog: "/dev/watchdog",
	},
	{
		Name:        "ipq50xx",
		Description: "Qualcomm IPQ50xx Wi-Fi 6 router (GL.iNet GL-B3000 / Linksys MX5500 class)",
		Arch:        "arm64",
		CPU:         "IPQ5018 (2x Cortex-A53 @ 1.0 GHz)",
		Compatible: []string{
			"qcom,ipq5018",
			"glinet,gl-b3000", "linksys,mx5500", "linksys,mx2000", "linksys,spnmx56",
		},
		Console: "ttyMSM0",
		Radios: []Radio{
			{Phy: 0, Band: Band2G4, MaxWidthMHz: 40, Streams: 2, Chip: "IPQ5018 (integrated)"},
			{Phy: 1, Band: Band5G, MaxWidthMHz: 160, DFS: true, Streams: 2, Chip: "QCN6122"},
		},
		Ports: []Port{
			{Name: "wan", Role: RoleWAN, SpeedMbps: 1000},
			{Name: "lan1", Role: RoleLAN, SpeedMbps: 1000},
			{Name: "lan2", Role: RoleLAN, SpeedMbps: 1000},
		},
		LEDs: []LED{
			{Name: "white:status", Function: "status"},
			{Name: "blue:wan", Function: "wan"},
		},
		Buttons: []Button{{Name: "reset", Code: KeyRestart}},
		Flash: qsdkNAND(128*MiB, seq(0,
			part("0:sbl1", 0x80000),
			part("0:mibib", 0x80000),
			part("0:bootconfig", 0x40000),
			part("0:bootconfig1", 0x40000),
			part("0:qsee", 0x100000),
			part("0:devcfg", 0x40000),
			part("0:cdt", 0x40000),
			part("0:appsblenv", 0x80000),
			part("0:appsbl", 0x140000),
			part("0:art", 0x40000),
			part("0:training", 0x80000),
		), 44*MiB),
		Modules:  modules([]string{"ath11k_ahb"}, ubiModules, routerModules),
		Watchdog: "/dev/watchdog",
	},
	{
		Name:        "ipq95xx",
		Description: "Qualcomm IPQ95xx Wi-Fi 7 tri-band router (RDP433 / 8devices Kiwi class)",
		Arch:        "arm64",
		CPU:         "IPQ9574 (4x Cortex-A73 @ 2.2 GHz)",
		Compatible: []string{
			"qcom,ipq9574",
			"qcom,ipq9574-ap-al02-c7", "8devices,kiwi-dvk", "tplink,be800v1",
		},
		Console: "ttyMSM0",
		Radios: []Radio{
			{Phy: 0, Band: Band2G4, MaxWidthMHz: 40, Streams: 4, Chip: "QCN9274"},
			{Phy: 1, Band: Band5G, MaxWidthMHz: 160, DFS: true, Streams: 4, Chip: "QCN9274"},
			{Phy: 2, Band: Band6G, MaxWidthMHz: 320, Streams: 4, Chip: "QCN9274"},
		},
		Ports: []Port{
			{Name: "wan", Role: RoleWAN, SpeedMbps: 10000},
			{Name: "lan1", Role: RoleLAN, SpeedMbps: 2500},
			{Name: "lan2", Role: RoleLAN, SpeedMbps: 2500},
			{Name: "lan3", Role: RoleLAN, SpeedMbps: 2500},
			{Name: "lan4", Role: RoleLAN, SpeedMbps: 2500},
			{Name: "lan5", Role: RoleLAN, SpeedMbps: 10000},
		},
		LEDs: []LED{
			{Name: "white:status", Function: "status"},
			{Name: "red:status", Function: "alert"},
		},
		Buttons: []Button{{Name: "reset", Code: KeyRestart}, {Name: "wps", Code: KeyWPSButton}},
		Flash: func() Flash {
			// eMMC with a GPT: the table starts after the primary GPT (34 sectors); the slots
			// and the data partition are 1 MiB aligned.
			boot := seq(0x4400,
				part("0:SBL1", 0xc0000),
				part("0:BOOTCONFIG", 0x40000),
				part("0:QSEE", 0x1c0000),
				part("0:DEVCFG", 0x40000),
				part("0:APDP", 0x40000),
				part("0:CDT", 0x40000),
				part("0:APPSBLENV", 0x80000),
				part("0:APPSBL", 0x140000),
				part("0:ART", 0x100000),
			)
			a := Region{Name: "rootfs", Offset: 16 * MiB, Size: 256 * MiB}
			b := Region{Name: "rootfs_1", Offset: a.Offset + a.Size, Size: 256 * MiB}
			d := Region{Name: "rootfs_data", Offset: b.Offset + b.Size, Size: 1 * GiB}
			return Flash{
				Kind:       "emmc",
				Device:     "/dev/mmcblk0",
				SlotA:      a,
				SlotB:      b,
				Data:       d,
				DataFS:     "ext4",
				Size:       0x1D2000000, // an "8 GB" eMMC's user area (7,818,182,656 bytes)
				Partitions: append(boot, a, b, d),
				Env: BootEnv{
					Name: "0:APPSBLENV", Offset: 0, Size: 0x40000,
					Redundant: true, RedundOffset: 0x40000, SectorSize: 0x40000,
				},
			}
		}(),
		Modules:  modules([]string{"ath12k"}, routerModules),
		Watchdog: "/dev/watchdog",
	},
	qemuBoard("qemu-virt-arm64"),
	qemuBoard("qemu-x86_64"),
}

// QEMU disk layout, shared with image/ (which creates the disk) and ota/ (which writes slots
// and the environment): one virtio disk with a GPT, partitions 1 MiB aligned, and the U-Boot
// environment raw in the gap between the primary GPT and the first partition.
const (
	qemuSlotSize = 128 * MiB
	qemuDataSize = 256 * MiB
	qemuFirst    = 1 * MiB
	// qemuDiskSize leaves 1 MiB at the end for the backup GPT.
	qemuDiskSize = qemuFirst + 2*qemuSlotSize + qemuDataSize + 1*MiB
)

func qemuFlash() Flash {
	a := Region{Name: "slot_a", Device: "/dev/vda1", Offset: qemuFirst, Size: qemuSlotSize}
	b := Region{Name: "slot_b", Device: "/dev/vda2", Offset: a.Offset + a.Size, Size: qemuSlotSize}
	d := Region{Name: "data", Device: "/dev/vda3", Offset: b.Offset + b.Size, Size: qemuDataSize}
	return Flash{
		Kind:       "virtio",
		Device:     "/dev/vda",
		SlotA:      a,
		SlotB:      b,
		Data:       d,
		DataFS:     "ext4",
		Size:       qemuDiskSize,
		Partitions: []Region{a, b, d},
		Env: BootEnv{
			Device: "/dev/vda", Offset: 0x80000, Size: 0x20000,
			Redundant: true, RedundOffset: 0xA0000, SectorSize: 0x20000,
		},
	}
}

// qemuHwsim is the QEMU boards' simulated radios: a dual-band router's 2.4 GHz and 5 GHz
// radios, repeated when more are asked for (mac80211_hwsim radios can serve every band; the
// firmware gives each one band as a real radio has).
func qemuHwsim() *Hwsim {
	return &Hwsim{
		Module:  "mac80211_hwsim",
		Modules: []string{"ctr", "ccm", "cmac", "gcm", "ghash_generic"},
		Radios: []Radio{
			{Band: Band2G4, MaxWidthMHz: 40, Streams: 2, Chip: "mac80211_hwsim"},
			{Band: Band5G, MaxWidthMHz: 80, DFS: true, Streams: 2, Chip: "mac80211_hwsim"},
		},
		Max: 8,
	}
}

func qemuBoard(name string) Board {
	b := Board{
		Name: name,
		// The QEMU boards have no fixed radios: the firmware creates mac80211_hwsim radios at
		// boot when the kernel command line asks (meshroot.hwsim=N; see Hwsim).
		Hwsim: qemuHwsim(),
		Ports: []Port{
			{Name: "eth0", Role: RoleWAN, SpeedMbps: 1000},
			{Name: "eth1", Role: RoleLAN, SpeedMbps: 1000},
		},
		Flash:    qemuFlash(),
		Watchdog: "/dev/watchdog", // i6300esb (-device i6300esb)
	}
	switch name {
	case "qemu-virt-arm64":
		b.Description = "QEMU virt arm64 virtual router (virtio disk and NICs, i6300esb watchdog, hwsim radios)"
		b.Arch = "arm64"
		b.CPU = "QEMU virt (Cortex-A53, TCG)"
		b.Compatible = []string{"linux,dummy-virt"}
		b.Console = "ttyAMA0"
		// virtio and virtio_ring are built into Debian's arm64 kernel; virtio devices on the
		// virt machine are PCI (virtio-*-pci) or MMIO (virtio-*-device).
		b.Modules = modules([]string{crc32cModule, "virtio_pci", "virtio_mmio", "virtio_blk", "virtio_net",
			"ext4", "i6300esb", qemuFwCfgModule}, routerModules)
	case "qemu-x86_64":
		b.Description = "QEMU x86_64 (pc/q35) virtual router (virtio disk and NICs, i6300esb watchdog, hwsim radios)"
		b.Arch = "amd64"
		b.CPU = "QEMU x86_64 (TCG)"
		b.DMI = []DMIMatch{{SysVendor: "QEMU", ProductName: "Standard PC"}}
		b.Console = "ttyS0"
		b.Modules = modules([]string{crc32cModule, "virtio_ring", "virtio", "virtio_pci", "virtio_blk", "virtio_net",
			"ext4", "i6300esb", qemuFwCfgModule}, routerModules)
	default:
		panic("board: unknown QEMU board " + name)
	}
	return b
}

// All returns the catalog (copies: callers may modify them).
func All() []Board {
	out := make([]Board, len(catalog))
	for i, b := range catalog {
		out[i] = b.clone()
	}
	return out
}

// Lookup returns the catalog entry named name.
func Lookup(name string) (Board, error) {
	for _, b := range catalog {
		if b.Name == name {
			return b.clone(), nil
		}
	}
	if name == genericName {
		return Generic(), nil
	}
	return Board{}, fmt.Errorf("board %q: %w (known: %v)", name, ErrUnknownBoard, Names())
}

// Names returns the catalog's board names in catalog order.
func Names() []string {
	out := make([]string, len(catalog))
	for i, b := range catalog {
		out[i] = b.Name
	}
	return out
}

const genericName = "generic"

// Generic returns the safe fallback profile the firmware uses when detection fails. It assumes
// nothing about the hardware: no radios, no LEDs, no flash layout (settings live in RAM), and
// no fixed ports; the firmware discovers the Ethernet ports at run time, makes the first one
// (in name order) the WAN and bridges every other one into the LAN (see GenericPorts).
func Generic() Board {
	return Board{
		Name:        genericName,
		Description: "unknown hardware: safe fallback (LAN on every Ethernet port but the first)",
		Arch:        runtime.GOARCH,
		CPU:         "unknown",
		Watchdog:    "/dev/watchdog",
		Generic:     true,
	}
}

// GenericPorts assigns roles to Ethernet interfaces found at run time, for a board without a
// port table: the first name in sorted order is the WAN, the rest are LAN.
func GenericPorts(ifnames []string) []Port {
	names := slices.Clone(ifnames)
	slices.Sort(names)
	names = slices.Compact(names)
	out := make([]Port, 0, len(names))
	for i, n := range names {
		role := RoleLAN
		if i == 0 {
			role = RoleWAN
		}
		out = append(out, Port{Name: n, Role: role})
	}
	return out
}

// PortsByRole returns the names of the ports with the given role, in table order.
func (b Board) PortsByRole(role PortRole) []string {
	var out []string
	for _, p := range b.Ports {
		if p.Role == role {
			out = append(out, p.Name)
		}
	}
	return out
}

func (b Board) clone() Board {
	b.Compatible = slices.Clone(b.Compatible)
	b.DMI = slices.Clone(b.DMI)
	b.Radios = slices.Clone(b.Radios)
	b.Ports = slices.Clone(b.Ports)
	b.LEDs = slices.Clone(b.LEDs)
	b.Buttons = slices.Clone(b.Buttons)
	b.Modules = slices.Clone(b.Modules)
	b.Flash.Partitions = slices.Clone(b.Flash.Partitions)
	if b.Hwsim != nil {
		h := *b.Hwsim
		h.Modules = slices.Clone(h.Modules)
		h.Radios = slices.Clone(h.Radios)
		b.Hwsim = &h
	}
	return b
}
