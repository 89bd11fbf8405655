package qemu_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"meshroot/image"
	"meshroot/image/imagetest"
	"meshroot/internal/testenv"
)

// BenchmarkVMBootToReady boots each QEMU board's image 5 times under TCG and reports the
// median (and min/max) time from QEMU's start to meshd's ready line, plus the guest's own
// uptime at that line. Each board is measured with the zstd image (the default) and an xz one
// in the same run: xz_vs_zstd is the ratio of their medians (what the smaller, slower-to-unpack
// format costs at boot). With -benchtime 1x
// (`make bench`) each sub-benchmark does its 5 boots once.
func BenchmarkVMBootToReady(b *testing.B) {
	testenv.Integration(b)
	const boots = 5
	for _, name := range []string{"qemu-virt-arm64", "qemu-x86_64"} {
		medians := map[image.Compression]float64{}
		for _, c := range []image.Compression{image.Zstd, image.XZ} {
			b.Run(fmt.Sprintf("%s/%s", name, c), func(b *testing.B) {
				o := imagetest.Options{}
				if c != image.DefaultCompression {
					o.Compression = c
				}
				dir, m := imagetest.ImageWith(b, name, o)
				for b.Loop() {
					var host, guest []float64
					for range boots {
						ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
						vm := imagetest.Boot(b, dir, m, imagetest.BootOptions{})
						info, l, err := imagetest.WaitReady(ctx, vm)
						cancel()
						if err != nil {
							b.Fatalf("boot: %v", err)
						}
						host = append(host, l.At.Seconds())
						guest = append(guest, float64(info.UptimeMS)/1000)
						vm.Stop()
					}
					slices.Sort(host)
					slices.Sort(guest)
					medians[c] = host[boots/2]
					b.ReportMetric(host[boots/2], "ready_s_median")
					b.ReportMetric(host[0], "ready_s_min")
					b.ReportMetric(host[boots-1], "ready_s_max")
					b.ReportMetric(guest[boots/2], "guest_uptime_s_median")
					b.ReportMetric(float64(m.Initramfs.Size)/(1<<20), "initramfs_MiB")
					if c == image.XZ && medians[image.Zstd] > 0 {
						b.ReportMetric(host[boots/2]/medians[image.Zstd], "xz_vs_zstd")
					}
				}
			})
		}
	}
}
