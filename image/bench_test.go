package image_test

import (
	"context"
	"os"
	"testing"

	"meshroot/board"
	"meshroot/image"
)

// BenchmarkImageBuild builds each QEMU board's image in one run and reports sizes and times:
// cold (NoCache: gobusybox compiles all u-root commands with `go build -a`), warm (the busybox
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
			cache := b.TempDir() // a private busybox cache: the cold build must not hit a shared one
			build := func(c image.Compression, noCache bool) image.Manifest {
				out, err := os.MkdirTemp(b.TempDir(), "img")
				if err != nil {
					b.Fatal(err)
				}
				m, err := image.Build(context.Background(), image.Options{
					Board: bd, OutDir: out, Version: "bench", Compression: c, CacheDir: cache, NoCache: noCache,
				})
				if err != nil {
					b.Fatalf("Build(%s, %s) = %v", name, c, err)
				}
				return m
			}
			for b.Loop() {
				cold := build(image.Zstd, true)
				// Fill the busybox cache (the cold build ran with NoCache), then time a warm build.
				build(image.Zstd, false)
				warm := build(image.Zstd, false)
				xz := build(image.XZ, false)
				if !warm.BusyboxCached || !xz.BusyboxCached {
					b.Fatalf("warm builds did not reuse the busybox binary")
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
