package slot

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkSlotWrite writes 64 MiB into a file-backed slot (a Region over an *os.File at an
// offset, as on a disk image) in 1 MiB writes with an fsync after each (the download's
// checkpoint pattern), against the same writes straight to the *os.File in the same run.
func BenchmarkSlotWrite(b *testing.B) {
	const total = 64 << 20
	const chunk = 1 << 20
	buf := make([]byte, chunk)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	dir := b.TempDir()
	raw := filepath.Join(dir, "raw.img")
	disk := filepath.Join(dir, "disk.img")
	for _, p := range []string{raw, disk} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			b.Fatal(err)
		}
		if err := os.Truncate(p, total+4096); err != nil {
			b.Fatal(err)
		}
	}
	var tRaw, tSlot time.Duration
	b.SetBytes(total)
	writeAll := func(w interface {
		WriteAt([]byte, int64) (int, error)
		Sync() error
	}) time.Duration {
		start := time.Now()
		for off := int64(0); off < total; off += chunk {
			if _, err := w.WriteAt(buf, off); err != nil {
				b.Fatal(err)
			}
			if err := w.Sync(); err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(start)
	}
	for i := 0; i < b.N; i++ {
		f, err := os.OpenFile(raw, os.O_RDWR, 0)
		if err != nil {
			b.Fatal(err)
		}
		r, c, err := Open("b", disk, 4096, total)
		if err != nil {
			b.Fatal(err)
		}
		// Alternate the order so neither side always runs on a warmer page cache.
		if i%2 == 0 {
			tRaw += writeAll(f)
			tSlot += writeAll(r)
		} else {
			tSlot += writeAll(r)
			tRaw += writeAll(f)
		}
		f.Close()
		c.Close()
	}
	n := float64(b.N)
	b.ReportMetric(total/(tSlot.Seconds()/n)/1e6, "MB/s-slot")
	b.ReportMetric(total/(tRaw.Seconds()/n)/1e6, "MB/s-raw-file")
	b.ReportMetric(float64(tSlot)/float64(tRaw), "slot/raw")
}
