// Package image builds the firmware image of a board: u-root's init, gosh and core commands in one
// gobusybox binary (built with github.com/u-root/mkuimage/uimage), meshd as uinit, the board's
// kernel modules with their dependency closure and a generated modules.dep, the release file
// meshd reads, the radios' userland on every board with radios (RadioUserlandFor: hostapd with
// its libraries, the signed regulatory.db, the simulated radios' modules on the QEMU boards),
// the fleet's OTA trust root (a signed TUF root.json at OTARootPath), programs of the board's
// architecture from a sysroot with their shared libraries (ELFClosure: the build machine's ldd
// reads only its own architecture), and extra files; compressed with a pure-Go xz (CRC32) or
// zstd the Debian kernels unpack; with a manifest (sizes, sha256, commands, modules, build
// time) and a size budget per architecture (BudgetFor; the numbers and why at Budget).
//
// Subpackages: qemu boots images in QEMU (TCG) for tests, benchmarks and `make run`; imagetest
// hands tests a built image (once per board and source state) and a booted VM.
package image
