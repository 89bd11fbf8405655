// Package flashsim is a simulated disk for OTA tests: an in-memory byte array with a power-cut
// injector. CutAfter(n) lets n more bytes be written and then fails every write, as if power
// were lost; with a seeded random source, writes that were not synced before the cut survive
// only in part (each 512-byte sector of them independently), like a disk write cache. Reboot
// brings the power back.
package flashsim

import (
	"errors"
	"fmt"
	"math/rand"
	"sync"
)

// ErrPowerCut is returned by writes (and syncs) after the power was cut.
var ErrPowerCut = errors.New("flashsim: power cut")

// SectorSize is the granularity at which unsynced writes survive or are lost.
const SectorSize = 512

// Disk is a simulated disk. It is safe for concurrent use.
type Disk struct {
	mu      sync.Mutex
	buf     []byte
	budget  int64 // bytes that may still be written; <0 = unlimited
	dead    bool
	rnd     *rand.Rand
	journal []sectorUndo // sectors written since the last Sync, with their previous content
	written int64
}

type sectorUndo struct {
	off int64
	old []byte
}

// New returns a disk of size bytes filled with zeros.
func New(size int) *Disk { return &Disk{buf: make([]byte, size), budget: -1} }

// Size is the disk size.
func (d *Disk) Size() int64 { return int64(len(d.buf)) }

// CutAfter arms the power cut: after n more bytes are written the power fails. With rnd set,
// at the cut every sector written since the last Sync keeps its new content with probability
// 1/2 (else reverts); with rnd nil, every written byte stays (in-order, torn only at the cut).
func (d *Disk) CutAfter(n int64, rnd *rand.Rand) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.budget, d.rnd = n, rnd
}

// Dead reports whether the power was cut.
func (d *Disk) Dead() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dead
}

// Reboot restores the power (the disk keeps what survived) and disarms the injector.
func (d *Disk) Reboot() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dead, d.budget, d.journal = false, -1, nil
}

// Written is the total number of bytes written so far.
func (d *Disk) Written() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.written
}

// ReadAt implements io.ReaderAt. Reads work after a cut (the tests inspect the disk).
func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if off < 0 || off+int64(len(p)) > int64(len(d.buf)) {
		return 0, fmt.Errorf("flashsim: read %d at %d: out of range", len(p), off)
	}
	return copy(p, d.buf[off:]), nil
}

// WriteAt implements io.WriterAt.
func (d *Disk) WriteAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dead {
		return 0, ErrPowerCut
	}
	if off < 0 || off+int64(len(p)) > int64(len(d.buf)) {
		return 0, fmt.Errorf("flashsim: write %d at %d: out of range", len(p), off)
	}
	n := int64(len(p))
	cut := false
	if d.budget >= 0 && n > d.budget {
		n, cut = d.budget, true
	}
	d.record(off, n)
	copy(d.buf[off:off+n], p[:n])
	d.written += n
	if d.budget >= 0 {
		d.budget -= n
	}
	if cut {
		d.die()
		return int(n), ErrPowerCut
	}
	return int(n), nil
}

// record saves the previous content of the sectors [off, off+n) touches, once per sector since
// the last sync.
func (d *Disk) record(off, n int64) {
	if n <= 0 {
		return
	}
	for s := off / SectorSize * SectorSize; s < off+n; s += SectorSize {
		end := min(s+SectorSize, int64(len(d.buf)))
		d.journal = append(d.journal, sectorUndo{off: s, old: append([]byte(nil), d.buf[s:end]...)})
	}
}

// die cuts the power: unsynced sectors are reverted at random when a source was given.
func (d *Disk) die() {
	d.dead = true
	if d.rnd != nil {
		for i := len(d.journal) - 1; i >= 0; i-- {
			if d.rnd.Intn(2) == 0 {
				u := d.journal[i]
				copy(d.buf[u.off:], u.old)
			}
		}
	}
	d.journal = nil
}

// Sync implements the devices' Sync: the writes so far are durable.
func (d *Disk) Sync() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dead {
		return ErrPowerCut
	}
	if d.budget == 0 {
		// The power goes exactly at a sync: nothing of the cached writes is guaranteed.
		d.die()
		return ErrPowerCut
	}
	d.journal = nil
	return nil
}

// Bytes returns a copy of [off, off+n).
func (d *Disk) Bytes(off, n int64) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]byte(nil), d.buf[off:off+n]...)
}

// Snapshot returns a copy of the whole disk.
func (d *Disk) Snapshot() []byte { return d.Bytes(0, int64(len(d.buf))) }

// Load replaces the disk content (same size) and resets the power state.
func (d *Disk) Load(b []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	copy(d.buf, b)
	d.dead, d.budget, d.journal = false, -1, nil
}
