package fetch

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"
)

// BenchmarkDownloadResume downloads a 16 MiB image over loopback three ways in the same
// iteration: whole; from a server that cuts the connection every 2 MiB (in-process Range
// resumes); and with a power cut in the middle of a chunk followed by a resumed Download from
// the slot-trailer checkpoint. It reports each time against the whole download and the bytes
// fetched beyond the image.
func BenchmarkDownloadResume(b *testing.B) {
	const size = 16 << 20
	const chunk = 1 << 20
	img, sum := image(size)
	whole := httptest.NewServer(&server{img: img})
	defer whole.Close()
	cutting := httptest.NewServer(&server{img: img, cutEvery: 2 << 20})
	defer cutting.Close()
	ctx := context.Background()
	var tWhole, tCut, tPower time.Duration
	var extraCut, extraPower int64
	b.SetBytes(size)
	for i := 0; i < b.N; i++ {
		tgt := Target{URL: whole.URL + "/img", Length: size, SHA256: sum}
		d, cp := sink(size)
		start := time.Now()
		if _, err := Download(ctx, tgt, d, cp, Options{ChunkSize: chunk}); err != nil {
			b.Fatal(err)
		}
		tWhole += time.Since(start)

		d, cp = sink(size)
		start = time.Now()
		st, err := Download(ctx, Target{URL: cutting.URL + "/img", Length: size, SHA256: sum}, d, cp, Options{ChunkSize: chunk, RetryDelay: time.Millisecond})
		if err != nil {
			b.Fatal(err)
		}
		tCut += time.Since(start)
		extraCut += st.Fetched - size

		d, cp = sink(size)
		d.CutAfter(size/2+123<<10, nil) // mid-chunk
		start = time.Now()
		st1, _ := Download(ctx, tgt, d, cp, Options{ChunkSize: chunk, Retries: -1})
		d.Reboot()
		st2, err := Download(ctx, tgt, d, &TrailerStore{Dev: d, Offset: size}, Options{ChunkSize: chunk})
		if err != nil {
			b.Fatal(err)
		}
		tPower += time.Since(start)
		extraPower += st1.Fetched + st2.Fetched - size
	}
	n := float64(b.N)
	b.ReportMetric(float64(tCut)/float64(tWhole), "cut-every-2MiB/whole")
	b.ReportMetric(float64(tPower)/float64(tWhole), "powercut+resume/whole")
	b.ReportMetric(float64(extraCut)/n, "extra-bytes-cut")
	b.ReportMetric(float64(extraPower)/n, "extra-bytes-powercut")
	b.ReportMetric(float64(size)/(tWhole.Seconds()/n)/1e6, "MB/s-whole")
}
