package firmware

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type lanDoc struct {
	Bridge  string `json:"bridge"`
	Address string `json:"address"`
}

func TestStorePutGet(t *testing.T) {
	s, err := OpenStore(filepath.Join(t.TempDir(), "config"))
	if err != nil {
		t.Fatal(err)
	}
	var got lanDoc
	if err := s.Get("lan", &got); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(missing) = %v; want ErrNotFound", err)
	}
	want := lanDoc{Bridge: "br-lan", Address: "10.0.0.1/24"}
	if err := s.Put("lan", want); err != nil {
		t.Fatalf("Put() = %v", err)
	}
	if err := s.Get("lan", &got); err != nil || got != want {
		t.Fatalf("Get() = %+v, %v; want %+v", got, err, want)
	}
	names, err := s.List()
	if err != nil || !cmp.Equal(names, []string{"lan"}) {
		t.Errorf("List() = %v, %v; want [lan]", names, err)
	}
	if fi, err := os.Stat(filepath.Join(s.Dir(), "lan.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("lan.json mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	if err := s.Delete("lan"); err != nil {
		t.Fatalf("Delete() = %v", err)
	}
	if err := s.Get("lan", &got); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(deleted) = %v; want ErrNotFound", err)
	}
	if err := s.Delete("lan"); err != nil {
		t.Errorf("Delete(missing) = %v; want nil", err)
	}
	for _, bad := range []string{"", "../x", "a/b", "UPPER", ".hidden", strings.Repeat("x", 65)} {
		if err := s.Put(bad, want); err == nil {
			t.Errorf("Put(%q) = nil; want a name error", bad)
		}
	}
}

// TestStoreCrashBetweenWriteAndRename simulates power loss after the new document was written
// and synced to its temporary file but before the rename: the old document must survive, a
// reader must not see the new one, and reopening the store (the next boot) removes the debris.
func TestStoreCrashBetweenWriteAndRename(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "config")
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	old := lanDoc{Bridge: "br-lan", Address: "192.168.1.1/24"}
	if err := s.Put("lan", old); err != nil {
		t.Fatal(err)
	}

	crash := errors.New("power cut")
	var tmpSeen string
	s.beforeRename = func(tmp string) error {
		tmpSeen = tmp
		b, err := os.ReadFile(tmp)
		if err != nil || !strings.Contains(string(b), "10.9.9.1/24") {
			t.Errorf("temporary file %s = %q, %v; want the complete new document", tmp, b, err)
		}
		return crash
	}
	if err := s.Put("lan", lanDoc{Bridge: "br-lan", Address: "10.9.9.1/24"}); !errors.Is(err, crash) {
		t.Fatalf("Put() during the crash = %v; want the crash", err)
	}
	if _, err := os.Stat(tmpSeen); err != nil {
		t.Fatalf("the crash should leave the temporary file behind: %v", err)
	}

	var got lanDoc
	if err := s.Get("lan", &got); err != nil || got != old {
		t.Fatalf("Get() after the crash = %+v, %v; want the old %+v", got, err, old)
	}
	if names, _ := s.List(); !cmp.Equal(names, []string{"lan"}) {
		t.Errorf("List() after the crash = %v; want only [lan] (temporary files are not documents)", names)
	}

	// Next boot.
	s2, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmpSeen); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenStore left the temporary file %s (%v)", tmpSeen, err)
	}
	if err := s2.Get("lan", &got); err != nil || got != old {
		t.Fatalf("Get() after reopening = %+v, %v; want %+v", got, err, old)
	}
	// And the next write works.
	want := lanDoc{Bridge: "br-lan", Address: "10.9.9.1/24"}
	if err := s2.Put("lan", want); err != nil {
		t.Fatal(err)
	}
	if err := s2.Get("lan", &got); err != nil || got != want {
		t.Fatalf("Get() = %+v, %v; want %+v", got, err, want)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries after a clean write; want 1", len(ents))
	}
}

func TestStoreWriteErrorCleansUp(t *testing.T) {
	dir := t.TempDir()
	// A directory in the way of the rename: the write fails and must not leave a temp file.
	if err := os.Mkdir(filepath.Join(dir, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "x", "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(filepath.Join(dir, "x"), []byte("data"), 0o644); err == nil {
		t.Fatal("WriteFileAtomic over a non-empty directory = nil; want an error")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("after a failed write the directory holds %d entries; want 1", len(ents))
	}
}

func TestStoreCorruptDocument(t *testing.T) {
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.Dir(), "lan.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	var got lanDoc
	if err := s.Get("lan", &got); err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "config lan") {
		t.Errorf("Get(corrupt) = %v; want a decode error naming the document", err)
	}
}
