package image_test

import (
	"context"
	"os"
	"testing"

	"meshroot/board"
	"meshroot/image"
)

// BenchmarkImageBuild builds each QEMU board's image in one run and reports sizes and times:
// cold (an empty busybox cache: gobusybox compiles all u-root commands with `go build -a`), warm (the busybox
// binary from the build cache, meshd from Go's build cache: what a test or a second build
// costs), and warm with xz instead of zstd (size and time against the zstd build, same run). Run with -benchtime 1x (`make bench`); each iteration does all three builds.
func BenchmarkImageBuild(b *testing.B) {
	if testing.Short() {
		b.Skip("builds images")
	}
	for _, name := range boards {
		b.Run(name, func(b *testing.B) {
			bd, err := board.Lookup(name)
			if err != nil {
				b.Fatal(err)
			}
			cache := b.TempDir() // a private, empty busybox cache: the first build is cold
			build := func(c image.Compression) image.Manifest {
				out, err := os.MkdirTemp(b.TempDir(), "img")
				if err != nil {
					b.Fatal(err)
				}
				m, err := image.Build(context.Background(), image.Options{
					Board: bd, OutDir: out, Version: "bench", Compression: c, CacheDir: cache,
				})
				if err != nil {
					b.Fatalf("Build(%s, %s) = %v", name, c, err)
				}
				return m
			}
			for b.Loop() {
				cold := build(image.Zstd) // compiles the busybox and fills the private cache
				warm := build(image.Zstd)
				xz := build(image.XZ)
				if cold.BusyboxCached || !warm.BusyboxCached || !xz.BusyboxCached {
					b.Fatalf("busybox cache hits: cold %v, warm %v, xz %v; want false, true, true", cold.BusyboxCached, warm.BusyboxCached, xz.BusyboxCached)
				}
				b.ReportMetric(cold.BuildSeconds, "cold_build_s")
				b.ReportMetric(warm.BuildSeconds, "warm_build_s")
				b.ReportMetric(xz.BuildSeconds, "warm_xz_build_s")
				b.ReportMetric(float64(warm.RawSize)/(1<<20), "raw_MiB")
				b.ReportMetric(float64(warm.Initramfs.Size)/(1<<20), "zstd_MiB")
				b.ReportMetric(float64(xz.Initramfs.Size)/(1<<20), "xz_MiB")
				b.ReportMetric(float64(xz.Initramfs.Size)/float64(warm.Initramfs.Size), "xz/zstd_size")
				b.ReportMetric(float64(warm.Kernel.Size)/(1<<20), "kernel_MiB")
				b.ReportMetric(float64(warm.Budget.Compressed-warm.Initramfs.Size)/(1<<20), "budget_left_MiB")
			}
		})
	}
}
