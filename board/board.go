package board

// Board is what the firmware needs to know about one kind of hardware. Catalog entries are values
// of this type; Detect returns one of them.
type Board struct {
	// Name is the catalog key, e.g. "qemu-virt-arm64" or "ipq807x".
	Name string
	// Description is a human-readable line for listings.
	Description string
	// Arch is the GOARCH of the board's CPU ("arm64" or "amd64").
	Arch string
	// CPU is the SoC or CPU class, e.g. "IPQ8074 (4x Cortex-A53)".
	CPU string
	// Compatible lists device-tree compatible strings that identify the board (any match wins).
	Compatible []string
	// DMI lists DMI identities that identify the board (x86 boards without a device tree).
	DMI []DMIMatch
	// Console is the kernel console device, e.g. "ttyAMA0", "ttyMSM0", "ttyS0".
	Console string
	// Radios are the Wi-Fi radios, in phy order.
	Radios []Radio
	// Hwsim describes the simulated radios of a board without radios of its own (the QEMU
	// boards): mac80211_hwsim radios the firmware creates at boot when the kernel command line
	// asks for them. nil on hardware.
	Hwsim *Hwsim
	// Ports are the Ethernet ports and their roles.
	Ports []Port
	// LEDs and Buttons are the front-panel parts the firmware drives or watches.
	LEDs    []LED
	Buttons []Button
	// Flash is the storage layout: A/B slots, the data area, the bootloader environment.
	Flash Flash
	// Modules are the kernel modules (names as in modinfo, without .ko) the board needs loaded at
	// boot, in no particular order: the loader resolves dependencies.
	Modules []string
	// Watchdog is the watchdog device path, or "" when the board has none.
	Watchdog string
	// Generic is true for the fallback profile used when detection fails.
	Generic bool
}

// DMIMatch identifies an x86 board by its DMI strings (/sys/class/dmi/id/*). Empty fields match
// anything; ProductName matches as a prefix.
type DMIMatch struct {
	SysVendor   string
	ProductName string
}

// Band is a Wi-Fi band.
type Band string

// The Wi-Fi bands.
const (
	Band2G4 Band = "2.4GHz"
	Band5G  Band = "5GHz"
	Band6G  Band = "6GHz"
)

// Radio is one Wi-Fi radio (one phy).
type Radio struct {
	// Phy is the index of the phy as the kernel names it (phy0, phy1...).
	Phy int
	// Band is the band the radio serves.
	Band Band
	// MaxWidthMHz is the widest channel it supports (20, 40, 80, 160, 320).
	MaxWidthMHz int
	// DFS is true when the radio may use DFS channels (radar detection capable).
	DFS bool
	// Streams is the number of spatial streams (e.g. 4 for 4x4).
	Streams int
	// Chip names the radio silicon, e.g. "QCN5054".
	Chip string
}

// HwsimParam is the kernel command-line parameter that creates simulated radios at boot:
// meshroot.hwsim=N loads the board's Hwsim.Module with radios=N (nothing without it).
const HwsimParam = "meshroot.hwsim"

// Hwsim describes the simulated radios (mac80211_hwsim) of a board without radios of its own.
// The image ships Module and Modules (with their dependencies); the firmware's radio service
// loads them only when the kernel command line says meshroot.hwsim=N, so a plain boot has no
// radios at all.
type Hwsim struct {
	// Module is the driver, loaded with radios=N ("mac80211_hwsim").
	Module string
	// Modules are loaded with it: the crypto mac80211 asks the kernel for by name when keys
	// are installed (CCMP "ccm(aes)" over "ctr(aes)", PMF's BIP "cmac(aes)", GCMP "gcm(aes)"),
	// which a u-root image, having no modprobe helper, cannot load on demand.
	Modules []string
	// Radios describe the created radios by position: radio i (in phy order) is Radios[i mod
	// len(Radios)] with Phy set at run time.
	Radios []Radio
	// Max bounds N.
	Max int
}

// PortRole says what an Ethernet port is for.
type PortRole string

// The port roles.
const (
	RoleWAN PortRole = "wan"
	RoleLAN PortRole = "lan"
)

// Port is one Ethernet port.
type Port struct {
	// Name is the Linux interface name, e.g. "eth0" or "lan1".
	Name string
	// Role is WAN or LAN.
	Role PortRole
	// SpeedMbps is the maximum link speed.
	SpeedMbps int
}

// LED is a front-panel LED.
type LED struct {
	// Name is the sysfs name under /sys/class/leds.
	Name string
	// Function is what the firmware shows with it: "status", "wan", "wifi".
	Function string
}

// Button is a front-panel button.
type Button struct {
	// Name is the button's name, e.g. "reset".
	Name string
	// Code is the input event code (linux/input-event-codes.h), e.g. KEY_RESTART = 0x198.
	Code int
}

// Flash describes the storage layout.
type Flash struct {
	// Kind is "nand" (raw NAND with UBI), "nor", "emmc", or "virtio" (QEMU disk).
	Kind string
	// Device is the block or MTD device holding the layout, e.g. "/dev/mmcblk0", "/dev/vda".
	Device string
	// SlotA and SlotB are the two firmware slots that OTA writes alternately.
	SlotA, SlotB Region
	// Data is the persistent data area (identity, profile, config).
	Data Region
	// DataFS is the file system of the data area: "ext4", "ubifs".
	DataFS string
	// Env is where the bootloader (U-Boot) environment lives.
	Env BootEnv
	// Size is the size in bytes of the whole storage (the NAND chip, the eMMC user area, the QEMU
	// disk). Every region and the environment lie inside it.
	Size int64
	// Partitions is the full partition table in offset order, bootloader partitions included;
	// SlotA, SlotB and Data are copies of three of its entries. Offsets are absolute on the storage.
	Partitions []Region
}

// Region is a named range on the flash: a partition name, or a byte offset and size on Device.
type Region struct {
	// Name is the partition (GPT or MTD) name, e.g. "rootfs", "rootfs_1", "rootfs_data".
	Name string
	// Device is the device node of the region when it is its own partition, e.g. "/dev/mmcblk0p5".
	Device string
	// Offset and Size are in bytes from the start of the storage (Flash.Device), also when
	// Device names the partition's own node: the disk creator and the overlap checks use them.
	Offset, Size int64
}

// BootEnv is the location of the U-Boot environment and its redundant copy.
type BootEnv struct {
	// Name is the partition (MTD or GPT name) holding the environment, e.g. "0:appsblenv", or ""
	// when the environment sits raw on Device outside any partition (the QEMU disk). Offsets are
	// relative to that partition (as in fw_env.config), or to Device when Name is "".
	Name string
	// Device is the device node holding the environment (e.g. "/dev/mtd9", "/dev/mmcblk0p12").
	Device string
	// Offset and Size of the primary copy, in bytes.
	Offset, Size int64
	// Redundant is true when a second copy exists (U-Boot CONFIG_SYS_REDUNDAND_ENVIRONMENT).
	Redundant bool
	// RedundDevice and RedundOffset locate the redundant copy (RedundDevice "" means Device).
	RedundDevice string
	RedundOffset int64
	// SectorSize is the erase-block size (fw_env.config's fourth column).
	SectorSize int64
}
