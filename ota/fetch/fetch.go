// Package fetch downloads a release image over HTTP(S) straight into a slot: it hashes the
// stream as it writes, resumes with Range requests after a cut connection, checkpoints the
// verified prefix (offset and SHA-256 state) after every synced chunk so a power cut loses at
// most one chunk, caps the bandwidth, and reports progress.
package fetch

import (
	"context"
	"crypto/sha256"
	"encoding"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Target is what to download: the URL and what TUF says it must be.
type Target struct {
	URL    string
	Length int64
	SHA256 []byte
}

// Sink receives the image (a slot).
type Sink interface {
	io.WriterAt
	Sync() error
}

// Checkpoint records a durable, hashed prefix of a download.
type Checkpoint struct {
	// SHA256 and Length identify the target the checkpoint belongs to.
	SHA256 []byte
	Length int64
	// Offset is how many bytes are written and synced; HashState is the SHA-256 state after
	// them (crypto/sha256's MarshalBinary form).
	Offset    int64
	HashState []byte
}

// CheckpointStore keeps the latest checkpoint where a power cut cannot lose it.
type CheckpointStore interface {
	// Load returns the saved checkpoint, or nil when there is none (or it is unreadable).
	Load() (*Checkpoint, error)
	Save(*Checkpoint) error
	Clear() error
}

// Options tune a download.
type Options struct {
	// Client is the HTTP client (http.DefaultClient when nil).
	Client *http.Client
	// ChunkSize is the checkpoint granularity: the most a power cut can lose (1 MiB when 0).
	ChunkSize int64
	// RateLimit caps the download in bytes per second (0: no cap).
	RateLimit int64
	// Progress is called after every chunk with the bytes done and the total.
	Progress func(done, total int64)
	// Retries is how many times a cut or failed request is retried, resuming where it stopped
	// (5 when 0; negative: none). Backoff starts at RetryDelay (500 ms when 0) and doubles.
	Retries    int
	RetryDelay time.Duration
}

// Stats describes one Download call.
type Stats struct {
	// ResumedAt is the offset the download continued from (0 for a fresh start).
	ResumedAt int64
	// Fetched is the number of body bytes received over the network.
	Fetched int64
	// Requests is the number of HTTP requests made.
	Requests int
}

// Errors a caller can test for.
var (
	// ErrHashMismatch means the downloaded bytes are not the image TUF signed.
	ErrHashMismatch = errors.New("image does not match its signed SHA-256")
	// ErrTooLong means the server sent more bytes than the signed length.
	ErrTooLong = errors.New("image is longer than its signed length")
)

const defaultChunk = 1 << 20

// Download writes the target into dst from offset 0, resuming from cp's checkpoint when it is
// for the same target. It returns nil only when all Length bytes are written, synced and
// their SHA-256 matches; the final checkpoint (Offset == Length) is left in cp so a power cut
// after the download does not repeat it.
func Download(ctx context.Context, t Target, dst Sink, cp CheckpointStore, opt Options) (Stats, error) {
	var st Stats
	if t.Length <= 0 || len(t.SHA256) != sha256.Size {
		return st, fmt.Errorf("fetch %s: need a positive length and a SHA-256 (got %d, %d bytes)", t.URL, t.Length, len(t.SHA256))
	}
	if opt.ChunkSize <= 0 {
		opt.ChunkSize = defaultChunk
	}
	if opt.Client == nil {
		opt.Client = http.DefaultClient
	}
	if opt.Retries == 0 {
		opt.Retries = 5
	}
	if opt.RetryDelay <= 0 {
		opt.RetryDelay = 500 * time.Millisecond
	}

	h := sha256.New()
	var off int64
	if c, err := cp.Load(); err == nil && c != nil && c.Length == t.Length && string(c.SHA256) == string(t.SHA256) && c.Offset >= 0 && c.Offset <= t.Length {
		if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(c.HashState); err == nil {
			off = c.Offset
		} else {
			h.Reset()
		}
	}
	st.ResumedAt = off

	d := &downloader{ctx: ctx, t: t, dst: dst, cp: cp, opt: opt, h: h, off: off, synced: off, st: &st, start: time.Now()}
	delay := opt.RetryDelay
	attempt, lastOff := 0, d.off
	for d.off < t.Length {
		err := d.fetchFrom()
		if err == nil {
			continue
		}
		if d.off > lastOff { // progress since the last failure: a fresh budget of retries
			attempt, lastOff, delay = 0, d.off, opt.RetryDelay
		}
		attempt++
		if errors.Is(err, ErrTooLong) || ctx.Err() != nil || isPermanent(err) || opt.Retries < 0 || attempt > opt.Retries {
			// Keep what is durable: a later Download resumes from the last checkpoint.
			return st, fmt.Errorf("fetch %s at byte %d: %w", t.URL, d.off, err)
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("fetch %s: %w", t.URL, ctx.Err())
		case <-time.After(delay):
		}
		if delay < 30*time.Second {
			delay *= 2
		}
	}
	if err := d.checkpoint(); err != nil {
		return st, err
	}
	if sum := h.Sum(nil); string(sum) != string(t.SHA256) {
		cp.Clear()
		return st, fmt.Errorf("fetch %s: %w (got %x, want %x)", t.URL, ErrHashMismatch, sum, t.SHA256)
	}
	return st, nil
}

type permanentError struct{ error }

func (p permanentError) Unwrap() error { return p.error }

func isPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

type downloader struct {
	ctx    context.Context
	t      Target
	dst    Sink
	cp     CheckpointStore
	opt    Options
	h      hash.Hash
	off    int64 // bytes written and hashed
	synced int64 // bytes covered by the saved checkpoint
	st     *Stats
	start  time.Time
	paced  int64 // bytes counted against the rate limit
}

// fetchFrom makes one request for the bytes from d.off on and streams them until the end, a
// cut, or an error.
func (d *downloader) fetchFrom() error {
	req, err := http.NewRequestWithContext(d.ctx, http.MethodGet, d.t.URL, nil)
	if err != nil {
		return permanentError{err}
	}
	if d.off > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(d.off, 10)+"-")
	}
	d.st.Requests++
	resp, err := d.opt.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body := io.Reader(resp.Body)
	switch resp.StatusCode {
	case http.StatusPartialContent:
		start, err := contentRangeStart(resp.Header.Get("Content-Range"))
		if err != nil {
			return permanentError{err}
		}
		if start != d.off {
			return fmt.Errorf("server resumed at byte %d; asked for %d", start, d.off)
		}
	case http.StatusOK:
		// The server ignored the Range header: skip what we already have. The URL names the
		// content by its hash (consistent snapshot), so those bytes are the same.
		if d.off > 0 {
			n, err := io.CopyN(io.Discard, body, d.off)
			d.st.Fetched += n
			if err != nil {
				return err
			}
		}
	case http.StatusNotFound, http.StatusForbidden, http.StatusGone, http.StatusRequestedRangeNotSatisfiable:
		return permanentError{fmt.Errorf("server answered %s", resp.Status)}
	default:
		return fmt.Errorf("server answered %s", resp.Status)
	}
	buf := make([]byte, 64<<10)
	for {
		want := int64(len(buf))
		// Never read past the next chunk boundary: chunks are the unit of sync + checkpoint.
		if next := (d.off/d.opt.ChunkSize + 1) * d.opt.ChunkSize; next-d.off < want {
			want = next - d.off
		}
		n, rerr := body.Read(buf[:want])
		if n > 0 {
			d.st.Fetched += int64(n)
			if d.off+int64(n) > d.t.Length {
				return ErrTooLong
			}
			if _, err := d.dst.WriteAt(buf[:n], d.off); err != nil {
				return permanentError{fmt.Errorf("write slot at %d: %w", d.off, err)}
			}
			d.h.Write(buf[:n])
			d.off += int64(n)
			if d.off%d.opt.ChunkSize == 0 || d.off == d.t.Length {
				if err := d.checkpoint(); err != nil {
					return permanentError{err}
				}
			}
			if err := d.pace(int64(n)); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			if d.off < d.t.Length {
				return io.ErrUnexpectedEOF
			}
			// Anything more is too long.
			var one [1]byte
			if m, _ := body.Read(one[:]); m > 0 {
				return ErrTooLong
			}
			return nil
		}
		if rerr != nil {
			return rerr
		}
		if d.off == d.t.Length {
			var one [1]byte
			if m, _ := io.ReadFull(body, one[:]); m > 0 {
				return ErrTooLong
			}
			return nil
		}
	}
}

// checkpoint syncs the sink and records the hashed prefix.
func (d *downloader) checkpoint() error {
	if d.off == d.synced {
		return nil
	}
	if err := d.dst.Sync(); err != nil {
		return fmt.Errorf("sync slot: %w", err)
	}
	state, err := d.h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return err
	}
	if err := d.cp.Save(&Checkpoint{SHA256: d.t.SHA256, Length: d.t.Length, Offset: d.off, HashState: state}); err != nil {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	d.synced = d.off
	if d.opt.Progress != nil {
		d.opt.Progress(d.off, d.t.Length)
	}
	return nil
}

// pace sleeps so the average rate since the start stays under the limit.
func (d *downloader) pace(n int64) error {
	if d.opt.RateLimit <= 0 {
		return nil
	}
	d.paced += n
	due := d.start.Add(time.Duration(float64(d.paced) / float64(d.opt.RateLimit) * float64(time.Second)))
	wait := time.Until(due)
	if wait <= 0 {
		return nil
	}
	select {
	case <-d.ctx.Done():
		return d.ctx.Err()
	case <-time.After(wait):
		return nil
	}
}

// contentRangeStart parses "bytes START-END/TOTAL".
func contentRangeStart(v string) (int64, error) {
	rest, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return 0, fmt.Errorf("Content-Range %q: want bytes START-END/TOTAL", v)
	}
	s, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, fmt.Errorf("Content-Range %q: want bytes START-END/TOTAL", v)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("Content-Range %q: bad start", v)
	}
	return n, nil
}

// MemCheckpoints is an in-memory CheckpointStore (tests, or when no durable place exists).
type MemCheckpoints struct{ C *Checkpoint }

// Load implements CheckpointStore.
func (m *MemCheckpoints) Load() (*Checkpoint, error) { return m.C, nil }

// Save implements CheckpointStore.
func (m *MemCheckpoints) Save(c *Checkpoint) error { cc := *c; m.C = &cc; return nil }

// Clear implements CheckpointStore.
func (m *MemCheckpoints) Clear() error { m.C = nil; return nil }
