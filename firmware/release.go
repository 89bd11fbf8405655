package firmware

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
	"unicode"
)

// ReleasePath is where the image builder writes the release file, relative to the root.
const ReleasePath = "etc/meshroot/release"

// DevVersion is the version reported when there is no release file (a development run).
const DevVersion = "dev"

// Release is /etc/meshroot/release, a JSON document the image builder writes into the image:
//
//	{"version": "0.1.0", "board": "qemu-virt-arm64", "built": "2026-11-22T10:00:00Z"}
//
// version is required (printable, at most 64 bytes); board is the catalog name the image was
// built for (may be empty for a multi-board image); built is RFC 3339. Unknown fields are
// ignored so the builder can add some.
type Release struct {
	Version string    `json:"version"`
	Board   string    `json:"board,omitempty"`
	Built   time.Time `json:"built,omitzero"`
}

const maxReleaseBytes = 16 << 10

// ParseRelease decodes and checks a release file.
func ParseRelease(b []byte) (Release, error) {
	if len(b) > maxReleaseBytes {
		return Release{}, fmt.Errorf("release: %d bytes; want at most %d", len(b), maxReleaseBytes)
	}
	var raw struct {
		Version string `json:"version"`
		Board   string `json:"board"`
		Built   string `json:"built"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&raw); err != nil {
		return Release{}, fmt.Errorf("release: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Release{}, errors.New("release: trailing data after the JSON object")
	}
	r := Release{Version: raw.Version, Board: raw.Board}
	if raw.Built != "" {
		t, err := time.Parse(time.RFC3339, raw.Built)
		if err != nil {
			return Release{}, fmt.Errorf("release: built %q: want an RFC 3339 time", truncate(raw.Built, 40))
		}
		r.Built = t
	}
	if err := checkLabel("version", r.Version, true); err != nil {
		return Release{}, err
	}
	if err := checkLabel("board", r.Board, false); err != nil {
		return Release{}, err
	}
	return r, nil
}

func checkLabel(field, s string, required bool) error {
	if s == "" {
		if required {
			return fmt.Errorf("release: %s is required", field)
		}
		return nil
	}
	if len(s) > 64 {
		return fmt.Errorf("release: %s is %d bytes; want at most 64", field, len(s))
	}
	for _, r := range s {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return fmt.Errorf("release: %s %q has a space or non-printable character", field, s)
		}
	}
	return nil
}

// ReadRelease reads the release file under root. A missing file gives Release{Version: "dev"}
// and no error; a broken one gives the same Release and the error, so the caller can log it
// and carry on.
func ReadRelease(root string) (Release, error) {
	dev := Release{Version: DevVersion}
	b, err := os.ReadFile(filepath.Join(root, ReleasePath))
	if errors.Is(err, fs.ErrNotExist) {
		return dev, nil
	}
	if err != nil {
		return dev, fmt.Errorf("release: %w", err)
	}
	r, err := ParseRelease(b)
	if err != nil {
		return dev, fmt.Errorf("%s: %w", ReleasePath, err)
	}
	return r, nil
}
