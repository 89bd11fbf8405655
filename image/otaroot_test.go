package image_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"meshroot/firmware/device"
	"meshroot/image"
	"meshroot/ota/repo"
)

func readTestdata(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// editJSON decodes a metadata file, lets edit change it and encodes it again.
func editJSON(t *testing.T, b []byte, edit func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestOTARootPathIsTheDevices(t *testing.T) {
	if image.OTARootPath != device.OTARoot {
		t.Errorf("image.OTARootPath = %q; firmware/device reads %q", image.OTARootPath, device.OTARoot)
	}
}

func TestParseOTARoot(t *testing.T) {
	good := readTestdata(t, "ota-root.json")
	info, err := image.ParseOTARoot(good)
	if err != nil {
		t.Fatalf("ParseOTARoot(testdata root) = %v", err)
	}
	if info.Path != image.OTARootPath || len(info.SHA256) != 64 || info.Version != 1 || info.Threshold != 1 || len(info.KeyIDs) != 1 || info.Expires.IsZero() {
		t.Errorf("ParseOTARoot(testdata root) = %+v; want version 1, 1 of 1 key, a digest and an expiry", info)
	}
	// A repository made now, and after a root rotation (version 2, signed by old and new keys).
	dir := t.TempDir()
	p, err := repo.Init(filepath.Join(dir, "repo"), filepath.Join(dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.RotateRoot(); err != nil {
		t.Fatal(err)
	}
	rotated, err := p.RootJSON()
	if err != nil {
		t.Fatal(err)
	}
	if info, err := image.ParseOTARoot(rotated); err != nil || info.Version != 2 {
		t.Errorf("ParseOTARoot(rotated root) = %+v, %v; want version 2", info, err)
	}

	for _, tc := range []struct {
		name string
		doc  []byte
		want string
	}{
		{"empty", nil, "empty file"},
		{"not JSON", []byte("hello"), "not TUF root metadata"},
		{"timestamp, not root", readTestdata(t, "ota-timestamp.json"), "not TUF root metadata"},
		{"unsigned", editJSON(t, good, func(m map[string]any) { m["signatures"] = []any{} }), "signatures: none"},
		{"signed content changed", editJSON(t, good, func(m map[string]any) {
			m["signed"].(map[string]any)["expires"] = "2099-01-01T00:00:00Z"
		}), "not signed by a threshold of its own root keys"},
		{"signature of another key", editJSON(t, good, func(m map[string]any) {
			sig := m["signatures"].([]any)[0].(map[string]any)
			sig["sig"] = strings.Repeat("ab", 64)
		}), "not signed by a threshold"},
		{"timestamp role missing", editJSON(t, good, func(m map[string]any) {
			delete(m["signed"].(map[string]any)["roles"].(map[string]any), "timestamp")
		}), "signed.roles.timestamp: missing"},
		{"threshold above its keys", editJSON(t, good, func(m map[string]any) {
			m["signed"].(map[string]any)["roles"].(map[string]any)["snapshot"].(map[string]any)["threshold"] = 2
		}), "signed.roles.snapshot: threshold 2 with 1 keys"},
		{"too big", append(good, make([]byte, image.MaxOTARootSize)...), "at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := image.ParseOTARoot(tc.doc)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseOTARoot() = %v; want an error containing %q", err, tc.want)
			}
		})
	}
}

func FuzzParseOTARoot(f *testing.F) {
	f.Add(readTestdata(f, "ota-root.json"))
	f.Add(readTestdata(f, "ota-timestamp.json"))
	f.Add([]byte(`{"signatures":[],"signed":{"_type":"root","roles":{}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := image.ParseOTARoot(b)
		if err != nil {
			return
		}
		if info.Threshold < 1 || len(info.KeyIDs) < info.Threshold || len(info.SHA256) != 64 {
			t.Fatalf("ParseOTARoot() accepted %+v", info)
		}
	})
}
