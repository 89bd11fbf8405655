// Package board is the catalog of hardware Meshroot runs on and the detection of the board it is
// running on: CPU class, radios (phy, band, width, DFS), Ethernet ports and their WAN/LAN roles,
// LEDs, buttons, the flash layout with A/B slots and a persistent data area, and where the
// bootloader environment lives. Detection reads the device tree or DMI through an injectable root.
//
// The catalog (All, Lookup) has the four Qualcomm classes ipq807x, ipq60xx, ipq50xx and ipq95xx,
// described after representative boards (their compatible strings are listed so the SoC's or a
// known board's device tree selects the class), and the two virtual routers:
//
//   - qemu-virt-arm64: device tree "linux,dummy-virt", console ttyAMA0;
//   - qemu-x86_64: DMI sys_vendor "QEMU", product "Standard PC...", console ttyS0.
//
// Both have eth0 = WAN and eth1 = LAN (virtio-net), no fixed radios (radio/ creates
// mac80211_hwsim radios at run time), an i6300esb watchdog, and one virtio disk /dev/vda with a
// GPT: vda1 "slot_a" (1 MiB, 128 MiB), vda2 "slot_b" (129 MiB, 128 MiB), vda3 "data" (257 MiB,
// 256 MiB, ext4), 514 MiB in all, and the U-Boot environment raw in the gap before the first
// partition (0x80000 and redundant copy at 0xA0000, 0x20000 bytes each). Region offsets are
// absolute on the storage. Validate and ValidateCatalog check a layout's consistency.
//
// Detect returns an error wrapping ErrUnknownBoard (saying what it read) for unknown hardware;
// the firmware then uses Generic.
package board
