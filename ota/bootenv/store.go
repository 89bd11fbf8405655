package bootenv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// FlagScheme is how the flags byte of a redundant environment marks the copy in use.
type FlagScheme int

const (
	// Incremental: the newer copy has the higher flags value (with 0xFF→0 wrap). libubootenv
	// uses it for files, block devices, NAND and UBI.
	Incremental FlagScheme = iota
	// Boolean: the copy in use has flags 1, the obsolete one 0 (NOR flash: a bit can be cleared
	// without an erase). A save writes the new copy with 1, then clears the old copy's flags.
	Boolean
)

func (s FlagScheme) String() string {
	if s == Boolean {
		return "boolean"
	}
	return "incremental"
}

// Device is where an environment copy lives: a file, a partition, a block device.
type Device interface {
	io.ReaderAt
	io.WriterAt
	// Sync makes the writes durable (fsync).
	Sync() error
}

// Copy locates one copy of the environment.
type Copy struct {
	Dev    Device
	Offset int64
}

// Store reads and writes one environment: one copy, or two redundant copies.
// It is not safe for concurrent use.
type Store struct {
	copies []Copy
	size   int
	scheme FlagScheme

	current int     // index of the copy in force (the one Load returned)
	flags   [2]byte // flags bytes as last read or written
	loaded  bool
}

// ErrNoValidEnv means no copy had a good CRC. Load still returns an empty Env, so a caller can
// fill defaults and Save (as fw_setenv does with its default environment).
var ErrNoValidEnv = errors.New("bootenv: no copy of the environment has a valid CRC")

// NewStore returns a store for size-byte copies (the size includes CRC and flags). One copy is
// the plain layout; two copies are the redundant layout.
func NewStore(size int, scheme FlagScheme, copies ...Copy) (*Store, error) {
	if len(copies) < 1 || len(copies) > 2 {
		return nil, fmt.Errorf("bootenv: %d copies; want 1 or 2", len(copies))
	}
	if size < 16 {
		return nil, fmt.Errorf("bootenv: environment size %d is too small", size)
	}
	for i, c := range copies {
		if c.Dev == nil {
			return nil, fmt.Errorf("bootenv: copy %d has no device", i)
		}
	}
	return &Store{copies: copies, size: size, scheme: scheme}, nil
}

// Redundant reports whether the store has two copies.
func (s *Store) Redundant() bool { return len(s.copies) == 2 }

// Size is the size of one copy in bytes.
func (s *Store) Size() int { return s.size }

func (s *Store) dataOffset() int {
	if s.Redundant() {
		return 5
	}
	return 4
}

// Current returns the index of the copy in force and its flags byte (after Load or Save).
func (s *Store) Current() (int, byte) { return s.current, s.flags[s.current] }

// Load reads the environment. With two copies it picks the one libubootenv and U-Boot would:
// the only valid one, or, when both are valid, the newer by the flags byte.
func (s *Store) Load() (*Env, error) {
	n := len(s.copies)
	valid := make([]bool, n)
	bufs := make([][]byte, n)
	for i, c := range s.copies {
		buf := make([]byte, s.size)
		if _, err := c.Dev.ReadAt(buf, c.Offset); err != nil {
			return nil, fmt.Errorf("bootenv: read copy %d at %#x: %w", i, c.Offset, err)
		}
		bufs[i] = buf
		valid[i] = binary.LittleEndian.Uint32(buf[:4]) == crc32.ChecksumIEEE(buf[s.dataOffset():])
		if s.Redundant() {
			s.flags[i] = buf[4]
		}
	}
	s.loaded = true
	s.current = 0
	if s.Redundant() {
		s.current = pick(valid[0], valid[1], s.flags[0], s.flags[1], s.scheme)
	}
	if !valid[s.current] {
		return New(), ErrNoValidEnv
	}
	env, err := parseData(bufs[s.current][s.dataOffset():])
	if err != nil {
		// A copy with a good CRC but no terminator: libubootenv refuses it too.
		return New(), fmt.Errorf("bootenv: copy %d: %w", s.current, err)
	}
	return env, nil
}

// pick mirrors libubootenv 0.3.2's choice of the copy in force.
func pick(valid0, valid1 bool, f0, f1 byte, scheme FlagScheme) int {
	switch {
	case valid0 && !valid1:
		return 0
	case !valid0 && valid1:
		return 1
	case !valid0 && !valid1:
		return 0
	}
	cur := 0
	if f1 > f0 {
		cur = 1
	}
	switch scheme {
	case Boolean:
		if f1 == 0xFF {
			cur = 1
		} else if f0 == 0xFF {
			cur = 0
		}
	case Incremental:
		if f0 == 0xFF && f1 == 0 {
			cur = 1
		} else if f1 == 0xFF && f0 == 0 {
			cur = 0
		}
	}
	return cur
}

// Encode returns one copy's bytes for env with the given flags byte (ignored without
// redundancy): CRC32 (little-endian) over the data area, then the data.
func Encode(env *Env, size int, redundant bool, flags byte) ([]byte, error) {
	off := 4
	if redundant {
		off = 5
	}
	data, err := env.marshalData(size - off)
	if err != nil {
		return nil, err
	}
	img := make([]byte, size)
	copy(img[off:], data)
	binary.LittleEndian.PutUint32(img[:4], crc32.ChecksumIEEE(img[off:]))
	if redundant {
		img[4] = flags
	}
	return img, nil
}

// Decode parses one copy's bytes. ok is false when the CRC does not match.
func Decode(img []byte, redundant bool) (env *Env, flags byte, ok bool, err error) {
	off := 4
	if redundant {
		off = 5
	}
	if len(img) <= off {
		return nil, 0, false, fmt.Errorf("bootenv: %d bytes is shorter than the header", len(img))
	}
	if redundant {
		flags = img[4]
	}
	if binary.LittleEndian.Uint32(img[:4]) != crc32.ChecksumIEEE(img[off:]) {
		return New(), flags, false, nil
	}
	env, err = parseData(img[off:])
	if err != nil {
		return nil, flags, true, err
	}
	return env, flags, true, nil
}

// Save writes env. With two copies it writes the copy not in force with the next flags value
// and syncs it; only then (Boolean scheme) it clears the old copy's flags byte. A power cut at
// any point leaves one valid copy: the old one until the new one is completely written.
// Save loads first when Load was never called, to learn which copy is in force.
func (s *Store) Save(env *Env) error {
	if !s.loaded {
		if _, err := s.Load(); err != nil && !errors.Is(err, ErrNoValidEnv) {
			return err
		}
	}
	target := 0
	var flags byte
	if s.Redundant() {
		target = 1 - s.current
		switch s.scheme {
		case Incremental:
			flags = s.flags[s.current] + 1
		case Boolean:
			flags = 1
		}
	}
	img, err := Encode(env, s.size, s.Redundant(), flags)
	if err != nil {
		return err
	}
	c := s.copies[target]
	if _, err := c.Dev.WriteAt(img, c.Offset); err != nil {
		return fmt.Errorf("bootenv: write copy %d at %#x: %w", target, c.Offset, err)
	}
	if err := c.Dev.Sync(); err != nil {
		return fmt.Errorf("bootenv: sync copy %d: %w", target, err)
	}
	if s.Redundant() {
		s.flags[target] = flags
		if s.scheme == Boolean {
			old := s.copies[s.current]
			if _, err := old.Dev.WriteAt([]byte{0}, old.Offset+4); err != nil {
				return fmt.Errorf("bootenv: mark copy %d obsolete: %w", s.current, err)
			}
			if err := old.Dev.Sync(); err != nil {
				return fmt.Errorf("bootenv: sync copy %d: %w", s.current, err)
			}
			s.flags[s.current] = 0
		}
	}
	s.current = target
	return nil
}

// Update loads the environment, applies fn, and saves the result when fn returns nil and
// changed something (as fw_setenv skips a write that changes nothing). When no copy is valid,
// fn starts from an empty environment (so the caller can write defaults) and the result is
// always written.
func (s *Store) Update(fn func(*Env) error) error {
	env, err := s.Load()
	if err != nil && !errors.Is(err, ErrNoValidEnv) {
		return err
	}
	before := env.Clone()
	if err := fn(env); err != nil {
		return err
	}
	if err == nil && env.equal(before) {
		return nil
	}
	return s.Save(env)
}
