package fetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"meshroot/ota/internal/flashsim"
)

func image(n int) ([]byte, []byte) {
	b := make([]byte, n)
	rand.New(rand.NewSource(int64(n))).Read(b)
	sum := sha256.Sum256(b)
	return b, sum[:]
}

// server serves img at /img with Range support. cutEvery > 0 aborts each response after that
// many body bytes; noRange makes it ignore Range headers.
type server struct {
	img      []byte
	cutEvery int64
	noRange  bool
	requests atomic.Int64
	sent     atomic.Int64
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	if r.URL.Path != "/img" {
		http.NotFound(w, r)
		return
	}
	if s.noRange {
		r.Header.Del("Range")
	}
	cw := &countingWriter{ResponseWriter: w, s: s, limit: s.cutEvery}
	http.ServeContent(cw, r, "img", time.Time{}, bytes.NewReader(s.img))
}

type countingWriter struct {
	http.ResponseWriter
	s     *server
	limit int64
	n     int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.limit > 0 && c.n+int64(len(p)) > c.limit {
		p = p[:c.limit-c.n]
		c.ResponseWriter.Write(p)
		c.s.sent.Add(int64(len(p)))
		if f, ok := c.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		panic(http.ErrAbortHandler) // cut the connection mid-body
	}
	c.n += int64(len(p))
	c.s.sent.Add(int64(len(p)))
	return c.ResponseWriter.Write(p)
}

func sink(size int) (*flashsim.Disk, *TrailerStore) {
	d := flashsim.New(size + TrailerSize)
	return d, &TrailerStore{Dev: d, Offset: int64(size)}
}

func TestDownloadWhole(t *testing.T) {
	img, sum := image(3<<20 + 123)
	srv := httptest.NewServer(&server{img: img})
	defer srv.Close()
	d, cp := sink(len(img))
	var calls int
	st, err := Download(context.Background(), Target{URL: srv.URL + "/img", Length: int64(len(img)), SHA256: sum}, d, cp,
		Options{ChunkSize: 1 << 20, Progress: func(done, total int64) { calls++ }})
	if err != nil {
		t.Fatalf("Download = %v", err)
	}
	if !bytes.Equal(d.Bytes(0, int64(len(img))), img) {
		t.Errorf("slot content differs from the image")
	}
	if calls != 4 || st.Fetched != int64(len(img)) || st.Requests != 1 {
		t.Errorf("Download: progress calls %d, fetched %d, requests %d; want 4, %d, 1", calls, st.Fetched, st.Requests, len(img))
	}
	c, _ := cp.Load()
	if c == nil || c.Offset != int64(len(img)) {
		t.Errorf("final checkpoint = %+v; want offset %d", c, len(img))
	}
	// A second Download finds the complete checkpoint and fetches nothing.
	st, err = Download(context.Background(), Target{URL: srv.URL + "/img", Length: int64(len(img)), SHA256: sum}, d, cp, Options{})
	if err != nil || st.Fetched != 0 || st.ResumedAt != int64(len(img)) {
		t.Errorf("Download again = %+v, %v; want nothing fetched", st, err)
	}
}

func TestDownloadResumesAfterCuts(t *testing.T) {
	img, sum := image(2<<20 + 7)
	s := &server{img: img, cutEvery: 300 << 10}
	srv := httptest.NewServer(s)
	defer srv.Close()
	d, cp := sink(len(img))
	st, err := Download(context.Background(), Target{URL: srv.URL + "/img", Length: int64(len(img)), SHA256: sum}, d, cp,
		Options{ChunkSize: 256 << 10, RetryDelay: time.Millisecond, Retries: 3})
	if err != nil {
		t.Fatalf("Download over a cutting server = %v", err)
	}
	if !bytes.Equal(d.Bytes(0, int64(len(img))), img) {
		t.Errorf("slot content differs from the image")
	}
	// In-process resumes lose nothing: each request continues exactly where the cut was.
	if st.Fetched != int64(len(img)) || st.Requests != 7 {
		t.Errorf("fetched %d bytes in %d requests for a %d-byte image cut every 300 KiB; want exactly the image in 7", st.Fetched, st.Requests, len(img))
	}
}

// TestDownloadServerIgnoresRange resumes from a checkpoint against a server that answers 200
// to a Range request: the known prefix is skipped, not rewritten or rehashed.
func TestDownloadServerIgnoresRange(t *testing.T) {
	img, sum := image(1<<20 + 5)
	srv := httptest.NewServer(&server{img: img, noRange: true})
	defer srv.Close()
	tgt := Target{URL: srv.URL + "/img", Length: int64(len(img)), SHA256: sum}
	d, cp := sink(len(img))
	d.CutAfter(700<<10, nil)
	if _, err := Download(context.Background(), tgt, d, cp, Options{ChunkSize: 128 << 10, Retries: -1}); err == nil {
		t.Fatal("Download with a power cut at 700 KiB = nil error")
	}
	d.Reboot()
	st, err := Download(context.Background(), tgt, d, &TrailerStore{Dev: d, Offset: int64(len(img))}, Options{ChunkSize: 128 << 10})
	if err != nil {
		t.Fatalf("resumed Download = %v", err)
	}
	if st.ResumedAt != 640<<10 || !bytes.Equal(d.Bytes(0, int64(len(img))), img) {
		t.Errorf("resumed at %d; want 640 KiB (the last checkpoint before the cut) and the full image", st.ResumedAt)
	}
}

// TestDownloadPowerCut cuts the power (the slot stops taking writes) at many points; after
// each "reboot" a new Download resumes from the durable checkpoint and re-fetches at most one
// chunk.
func TestDownloadPowerCut(t *testing.T) {
	const chunk = 64 << 10
	img, sum := image(600<<10 + 11)
	s := &server{img: img}
	srv := httptest.NewServer(s)
	defer srv.Close()
	tgt := Target{URL: srv.URL + "/img", Length: int64(len(img)), SHA256: sum}
	rnd := rand.New(rand.NewSource(1))
	for i := 0; i < 40; i++ {
		d, cp := sink(len(img))
		cut := rnd.Int63n(int64(len(img)) + 4*TrailerSize)
		d.CutAfter(cut, rand.New(rand.NewSource(int64(i))))
		_, err := Download(context.Background(), tgt, d, cp, Options{ChunkSize: chunk, Retries: -1})
		if err == nil {
			if !d.Dead() {
				continue // the cut point was after the end
			}
		}
		d.Reboot()
		cp = &TrailerStore{Dev: d, Offset: int64(len(img))}
		before, _ := cp.Load()
		st, err := Download(context.Background(), tgt, d, cp, Options{ChunkSize: chunk})
		if err != nil {
			t.Fatalf("cut %d at %d: resumed Download = %v", i, cut, err)
		}
		if !bytes.Equal(d.Bytes(0, int64(len(img))), img) {
			t.Fatalf("cut %d at %d: slot differs from the image after resume", i, cut)
		}
		// What was written before the cut, minus what the resume re-fetched, is at most a chunk
		// plus the checkpoint records.
		lost := min(cut, int64(len(img))) - st.ResumedAt
		if lost > chunk+TrailerSize {
			t.Errorf("cut %d at %d (checkpoint %+v): resumed at %d, lost %d bytes; want at most one chunk (%d)", i, cut, before != nil, st.ResumedAt, lost, chunk)
		}
	}
}

func TestDownloadRefusesBadImages(t *testing.T) {
	img, sum := image(100 << 10)
	tampered := append([]byte(nil), img...)
	tampered[5000] ^= 1
	for _, tc := range []struct {
		name   string
		served []byte
		want   error
	}{
		{"tampered", tampered, ErrHashMismatch},
		{"too long", append(append([]byte(nil), img...), 'x'), ErrTooLong},
	} {
		srv := httptest.NewServer(&server{img: tc.served})
		d, cp := sink(len(img) + 10)
		_, err := Download(context.Background(), Target{URL: srv.URL + "/img", Length: int64(len(img)), SHA256: sum}, d, cp, Options{Retries: -1})
		srv.Close()
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: Download = %v; want %v", tc.name, err, tc.want)
		}
		if c, _ := cp.Load(); tc.want == ErrHashMismatch && c != nil {
			t.Errorf("%s: checkpoint kept after a hash mismatch: %+v", tc.name, c)
		}
	}
	// Short: the server has fewer bytes; a 416 or EOF ends in an error, not success.
	srv := httptest.NewServer(&server{img: img[:1000]})
	defer srv.Close()
	d, cp := sink(len(img))
	if _, err := Download(context.Background(), Target{URL: srv.URL + "/img", Length: int64(len(img)), SHA256: sum}, d, cp, Options{Retries: 1, RetryDelay: time.Millisecond}); err == nil {
		t.Errorf("Download of a truncated image = nil; want an error")
	}
	if _, err := Download(context.Background(), Target{URL: srv.URL + "/missing", Length: 10, SHA256: sum}, d, cp, Options{RetryDelay: time.Hour}); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("Download of a missing file = %v; want a 404 error without retrying", err)
	}
}

func TestDownloadRateLimit(t *testing.T) {
	img, sum := image(256 << 10)
	srv := httptest.NewServer(&server{img: img})
	defer srv.Close()
	d, cp := sink(len(img))
	start := time.Now()
	if _, err := Download(context.Background(), Target{URL: srv.URL + "/img", Length: int64(len(img)), SHA256: sum}, d, cp, Options{RateLimit: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	// A lower bound only (a sleep cannot be shorter): 256 KiB at 1 MiB/s takes ~250 ms.
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Errorf("Download of 256 KiB at 1 MiB/s took %s; want at least ~250ms", el)
	}
}

func TestTrailerStoreTornWrite(t *testing.T) {
	d := flashsim.New(TrailerSize)
	s := &TrailerStore{Dev: d}
	c1 := &Checkpoint{SHA256: make([]byte, 32), Length: 10, Offset: 4, HashState: []byte("state-1")}
	if err := s.Save(c1); err != nil {
		t.Fatal(err)
	}
	for cut := int64(0); cut < 120; cut++ {
		snap := d.Snapshot()
		d.CutAfter(cut, nil)
		s.Save(&Checkpoint{SHA256: make([]byte, 32), Length: 10, Offset: 8, HashState: []byte("state-2")})
		d.Reboot()
		got, _ := (&TrailerStore{Dev: d}).Load()
		if got == nil || (got.Offset != 4 && got.Offset != 8) || (got.Offset == 8 && string(got.HashState) != "state-2") {
			t.Fatalf("cut at %d: Load = %+v; want the old or the new checkpoint", cut, got)
		}
		d.Load(snap)
		s = &TrailerStore{Dev: d}
	}
}
