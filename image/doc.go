// Package image builds the firmware initramfs with u-root's mkuimage (busybox mode) for arm64 and
// amd64, compresses it, writes its manifest, and enforces the image-size budget. Its subpackage
// qemu boots images in QEMU (TCG) for tests, benchmarks and `make run`.
package image
