package firmware

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
)

// ErrNotFound is returned by Store.Get for a document that was never written.
var ErrNotFound = errors.New("config: not found")

// Store keeps small JSON documents ("lan", "identity", "profile") as files under one
// directory (/data/config on the device). Writes are atomic: a temporary file in the same
// directory is written and fsynced, renamed over the document, and the directory is fsynced;
// after a crash at any point a reader sees the old document or the new one, never a mix.
// Leftover temporary files from an interrupted write are removed when the store opens and
// ignored by reads.
type Store struct {
	dir string
	mu  sync.Mutex
	// beforeRename, when set (tests), runs after the temporary file is complete and synced
	// and before the rename; an error aborts the write there, as a crash would.
	beforeRename func(tmp string) error
}

const (
	tmpMarker   = ".tmp-"
	maxDocBytes = 1 << 20
)

var docName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// OpenStore creates dir if needed and removes temporary files left by interrupted writes.
func OpenStore(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), tmpMarker) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return nil, fmt.Errorf("config: remove leftover %s: %w", e.Name(), err)
			}
		}
	}
	return &Store{dir: dir}, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) path(name string) (string, error) {
	if !docName.MatchString(name) {
		return "", fmt.Errorf("config: document name %q: want lower-case letters, digits, '-' and '_' (at most 64)", name)
	}
	return filepath.Join(s.dir, name+".json"), nil
}

// Get decodes document name into v. A document that was never written gives ErrNotFound.
func (s *Store) Get(name string, v any) error {
	p, err := s.path(name)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("config %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("config %s: %w", name, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("config %s: %w", name, err)
	}
	return nil
}

// Put replaces document name with v, atomically and durably.
func (s *Store) Put(name string, v any) error {
	p, err := s.path(name)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("config %s: encode: %w", name, err)
	}
	if len(b) > maxDocBytes {
		return fmt.Errorf("config %s: %d bytes; documents are at most %d", name, len(b), maxDocBytes)
	}
	b = append(b, '\n')
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := writeAtomic(p, b, 0o600, s.beforeRename); err != nil {
		return fmt.Errorf("config %s: %w", name, err)
	}
	return nil
}

// Delete removes document name (durably); deleting a missing document is not an error.
func (s *Store) Delete(name string) error {
	p, err := s.path(name)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("config %s: %w", name, err)
	}
	return syncDir(filepath.Dir(p))
}

// List returns the names of the stored documents.
func (s *Store) List() ([]string, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var out []string
	for _, e := range ents {
		n, ok := strings.CutSuffix(e.Name(), ".json")
		if ok && docName.MatchString(n) && e.Type().IsRegular() {
			out = append(out, n)
		}
	}
	return out, nil
}

// WriteFileAtomic writes data to path so that after a crash path holds either its old content
// or data: temporary file in the same directory, fsync, rename, fsync of the directory.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	return writeAtomic(path, data, perm, nil)
}

func writeAtomic(path string, data []byte, perm os.FileMode, beforeRename func(string) error) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+tmpMarker+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	committed := false
	defer func() {
		if !committed {
			f.Close()
			if beforeRename == nil {
				os.Remove(tmp) // a real error: clean up; a simulated crash leaves it behind
			}
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if beforeRename != nil {
		if err := beforeRename(tmp); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	committed = true
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}
