package bootenv

import (
	"fmt"
	"sync"
)

// Mem is an in-memory Device for tests: a byte slice of fixed size.
type Mem struct {
	mu  sync.Mutex
	buf []byte
}

// NewMem returns a Mem of size bytes, filled with fill (0xFF is erased flash).
func NewMem(size int, fill byte) *Mem {
	b := make([]byte, size)
	for i := range b {
		b[i] = fill
	}
	return &Mem{buf: b}
}

// ReadAt implements io.ReaderAt.
func (m *Mem) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || off+int64(len(p)) > int64(len(m.buf)) {
		return 0, fmt.Errorf("mem: read %d bytes at %#x: out of range (size %#x)", len(p), off, len(m.buf))
	}
	return copy(p, m.buf[off:]), nil
}

// WriteAt implements io.WriterAt.
func (m *Mem) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || off+int64(len(p)) > int64(len(m.buf)) {
		return 0, fmt.Errorf("mem: write %d bytes at %#x: out of range (size %#x)", len(p), off, len(m.buf))
	}
	return copy(m.buf[off:], p), nil
}

// Sync implements Device.
func (m *Mem) Sync() error { return nil }

// Bytes returns a copy of the contents.
func (m *Mem) Bytes() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]byte(nil), m.buf...)
}
