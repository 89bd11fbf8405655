package qemu

import (
	"path/filepath"

	"meshroot/image"
)

// ImageConfig returns the Config that boots a built image directory (as image.Build writes it):
// its kernel (the uncompressed PVH one when the image has it: about 2 s less per x86 boot under
// TCG) and initramfs, its architecture and its board's console. Callers add the disk, watchdog,
// NICs and log.
func ImageConfig(dir string, m image.Manifest) Config {
	kernel := m.Kernel.Name
	if m.QEMUKernel.Name != "" {
		kernel = m.QEMUKernel.Name
	}
	return Config{
		Arch:    m.Arch,
		Kernel:  filepath.Join(dir, kernel),
		Initrd:  filepath.Join(dir, m.Initramfs.Name),
		Console: m.Console,
	}
}
