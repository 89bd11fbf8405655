package fetch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// TrailerSize is the room a TrailerStore takes at the end of a slot: two alternating 4 KiB
// records, so a power cut while one is written leaves the other.
const TrailerSize = 2 * trailerRecord

const trailerRecord = 4096

var trailerMagic = [8]byte{'M', 'R', 'C', 'K', 'P', 'T', '0', '1'}

// Device is what a TrailerStore writes to (a slot).
type Device interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

// TrailerStore keeps download checkpoints in the last TrailerSize bytes of the slot being
// written (after the image, which must end before Offset), like mcuboot's trailers: no other
// partition is touched, and the slot is scratch until the switch.
type TrailerStore struct {
	Dev    Device
	Offset int64 // start of the two records

	seq uint64
}

// record layout: magic[8] seq[8] length[8] offset[8] sha256[32] statelen[2] state crc32[4]
func (s *TrailerStore) read(i int) (*Checkpoint, uint64, bool) {
	buf := make([]byte, trailerRecord)
	if _, err := s.Dev.ReadAt(buf, s.Offset+int64(i)*trailerRecord); err != nil && !errors.Is(err, io.EOF) {
		return nil, 0, false
	}
	if !bytes.Equal(buf[:8], trailerMagic[:]) {
		return nil, 0, false
	}
	n := int(binary.BigEndian.Uint16(buf[64:66]))
	end := 66 + n
	if end+4 > trailerRecord || crc32.ChecksumIEEE(buf[:end]) != binary.BigEndian.Uint32(buf[end:end+4]) {
		return nil, 0, false
	}
	c := &Checkpoint{
		Length:    int64(binary.BigEndian.Uint64(buf[16:24])),
		Offset:    int64(binary.BigEndian.Uint64(buf[24:32])),
		SHA256:    append([]byte(nil), buf[32:64]...),
		HashState: append([]byte(nil), buf[66:end]...),
	}
	return c, binary.BigEndian.Uint64(buf[8:16]), true
}

// Load implements CheckpointStore: the valid record with the higher sequence number.
func (s *TrailerStore) Load() (*Checkpoint, error) {
	var best *Checkpoint
	var bestSeq uint64
	for i := 0; i < 2; i++ {
		if c, seq, ok := s.read(i); ok && (best == nil || seq > bestSeq) {
			best, bestSeq = c, seq
		}
	}
	s.seq = bestSeq
	return best, nil
}

// Save implements CheckpointStore: it writes the older record slot and syncs.
func (s *TrailerStore) Save(c *Checkpoint) error {
	if len(c.SHA256) != 32 || 66+len(c.HashState)+4 > trailerRecord {
		return fmt.Errorf("checkpoint: bad sizes (sha %d, state %d)", len(c.SHA256), len(c.HashState))
	}
	if s.seq == 0 {
		s.Load()
	}
	s.seq++
	buf := make([]byte, 66+len(c.HashState)+4)
	copy(buf, trailerMagic[:])
	binary.BigEndian.PutUint64(buf[8:], s.seq)
	binary.BigEndian.PutUint64(buf[16:], uint64(c.Length))
	binary.BigEndian.PutUint64(buf[24:], uint64(c.Offset))
	copy(buf[32:64], c.SHA256)
	binary.BigEndian.PutUint16(buf[64:], uint16(len(c.HashState)))
	copy(buf[66:], c.HashState)
	end := 66 + len(c.HashState)
	binary.BigEndian.PutUint32(buf[end:], crc32.ChecksumIEEE(buf[:end]))
	if _, err := s.Dev.WriteAt(buf, s.Offset+int64(s.seq%2)*trailerRecord); err != nil {
		return err
	}
	return s.Dev.Sync()
}

// Clear implements CheckpointStore: it invalidates both records.
func (s *TrailerStore) Clear() error {
	zero := make([]byte, 8)
	for i := 0; i < 2; i++ {
		if _, err := s.Dev.WriteAt(zero, s.Offset+int64(i)*trailerRecord); err != nil {
			return err
		}
	}
	s.seq = 0
	return s.Dev.Sync()
}
