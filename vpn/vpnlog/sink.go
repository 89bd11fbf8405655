package vpnlog

import (
	"io"
	"strings"
	"sync"
)

// Sink takes log records. Write must not block its caller for long and never fails it: a sink
// that can fail keeps the error to itself (JSONLines.Err) or counts what it dropped.
type Sink interface {
	Write(Record)
}

// Discard drops every record.
var Discard Sink = discard{}

type discard struct{}

func (discard) Write(Record) {}

// JSONLines writes each record as one JSON line (AWS's shape) to w, one Write call per line.
type JSONLines struct {
	mu  sync.Mutex
	w   io.Writer
	err error
	buf []byte
}

// NewJSONLines returns a sink writing JSON lines to w.
func NewJSONLines(w io.Writer) *JSONLines { return &JSONLines{w: w} }

// Write implements Sink. After the first error it writes nothing more (see Err).
func (j *JSONLines) Write(r Record) {
	b, err := r.MarshalJSON()
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.err != nil {
		return
	}
	if err != nil {
		j.err = err
		return
	}
	j.buf = append(append(j.buf[:0], b...), '\n')
	if _, err := j.w.Write(j.buf); err != nil {
		j.err = err
	}
}

// Err returns the first error met, if any.
func (j *JSONLines) Err() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.err
}

// Memory keeps every record, for tests.
type Memory struct {
	mu   sync.Mutex
	recs []Record
}

// Write implements Sink.
func (m *Memory) Write(r Record) {
	m.mu.Lock()
	m.recs = append(m.recs, r)
	m.mu.Unlock()
}

// Records returns the records written so far, in order.
func (m *Memory) Records() []Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Record(nil), m.recs...)
}

// BGP returns the BGP records written so far.
func (m *Memory) BGP() []*BGPRecord {
	var out []*BGPRecord
	for _, r := range m.Records() {
		if b, ok := r.(*BGPRecord); ok {
			out = append(out, b)
		}
	}
	return out
}

// Tunnel returns the tunnel activity records written so far.
func (m *Memory) Tunnel() []*TunnelRecord {
	var out []*TunnelRecord
	for _, r := range m.Records() {
		if t, ok := r.(*TunnelRecord); ok {
			out = append(out, t)
		}
	}
	return out
}

// Lines returns the records as JSON lines (without newlines).
func (m *Memory) Lines() []string {
	var out []string
	for _, r := range m.Records() {
		b, err := r.MarshalJSON()
		if err != nil {
			b = []byte(`{"error":"` + err.Error() + `"}`)
		}
		out = append(out, string(b))
	}
	return out
}

// Reset forgets the records.
func (m *Memory) Reset() {
	m.mu.Lock()
	m.recs = nil
	m.mu.Unlock()
}

// Multi writes every record to each sink in order.
func Multi(sinks ...Sink) Sink { return multi(sinks) }

type multi []Sink

func (m multi) Write(r Record) {
	for _, s := range m {
		s.Write(r)
	}
}

// Redacted replaces a secret in a log record.
const Redacted = "[REDACTED]"

// Redactor passes records on with every registered secret replaced by Redacted in all their
// text fields. Register the PSKs (and anything else secret) of the connection.
type Redactor struct {
	next    Sink
	mu      sync.RWMutex
	secrets []string
}

// NewRedactor returns a Redactor in front of next. Empty secrets are ignored.
func NewRedactor(next Sink, secrets ...string) *Redactor {
	r := &Redactor{next: next}
	r.Add(secrets...)
	return r
}

// Add registers more secrets.
func (r *Redactor) Add(secrets ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range secrets {
		if s != "" {
			r.secrets = append(r.secrets, s)
		}
	}
}

// Write implements Sink.
func (r *Redactor) Write(rec Record) {
	r.mu.RLock()
	secrets := r.secrets
	r.mu.RUnlock()
	if len(secrets) > 0 {
		rec = rec.scrub(func(s string) string {
			for _, sec := range secrets {
				if strings.Contains(s, sec) {
					s = strings.ReplaceAll(s, sec, Redacted)
				}
			}
			return s
		})
	}
	r.next.Write(rec)
}

// Buffered queues records for another sink and delivers them from its own goroutine, so a slow
// sink (a file on flash, the network) never stalls the writer. The queue holds at most its
// capacity; when full, the oldest record is dropped and counted.
type Buffered struct {
	next Sink

	mu        sync.Mutex
	cond      *sync.Cond
	q         []Record
	capacity  int
	busy      bool // the goroutine is delivering records taken off q
	dropped   uint64
	delivered uint64
	closed    bool
	done      chan struct{}
}

// NewBuffered starts a buffered sink of the given capacity (default 4096) in front of next.
// Close it to stop its goroutine.
func NewBuffered(next Sink, capacity int) *Buffered {
	if capacity <= 0 {
		capacity = 4096
	}
	b := &Buffered{next: next, capacity: capacity, done: make(chan struct{})}
	b.cond = sync.NewCond(&b.mu)
	go b.loop()
	return b
}

// Write implements Sink; it never blocks on the next sink.
func (b *Buffered) Write(r Record) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		b.dropped++
		return
	}
	if len(b.q) >= b.capacity {
		b.q[0] = nil
		b.q = b.q[1:]
		b.dropped++
	}
	b.q = append(b.q, r)
	b.cond.Broadcast()
}

func (b *Buffered) loop() {
	defer close(b.done)
	b.mu.Lock()
	for {
		for len(b.q) == 0 && !b.closed {
			b.cond.Wait()
		}
		if len(b.q) == 0 && b.closed {
			b.mu.Unlock()
			return
		}
		batch := b.q
		b.q = nil
		b.busy = true
		b.mu.Unlock()
		for _, r := range batch {
			b.next.Write(r)
		}
		b.mu.Lock()
		b.busy = false
		b.delivered += uint64(len(batch))
		b.cond.Broadcast()
	}
}

// Flush waits until every record written before the call has been delivered or dropped.
func (b *Buffered) Flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(b.q) > 0 || b.busy {
		b.cond.Wait()
	}
}

// Close delivers what is queued and stops the goroutine. Records written afterwards are dropped.
func (b *Buffered) Close() {
	b.mu.Lock()
	b.closed = true
	b.cond.Broadcast()
	b.mu.Unlock()
	<-b.done
}

// Dropped is the number of records dropped (queue full, or written after Close).
func (b *Buffered) Dropped() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dropped
}

// Delivered is the number of records handed to the next sink.
func (b *Buffered) Delivered() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.delivered
}
