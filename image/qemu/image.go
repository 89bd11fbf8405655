package qemu

import (
	"path/filepath"

	"meshroot/image"
)

// ImageConfig returns the Config that boots a built image directory (as image.Build writes it):
// its kernel and initramfs, its architecture and its board's console. Callers add the disk,
// watchdog, NICs and log.
func ImageConfig(dir string, m image.Manifest) Config {
	return Config{
		Arch:    m.Arch,
		Kernel:  filepath.Join(dir, m.Kernel.Name),
		Initrd:  filepath.Join(dir, m.Initramfs.Name),
		Console: m.Console,
	}
}
