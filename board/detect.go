package board

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// ErrUnknownBoard is wrapped by the errors of Detect and Lookup when no catalog entry matches.
var ErrUnknownBoard = errors.New("unknown board")

// Limits on what detection reads: a device tree's compatible property and the DMI strings are
// short; anything longer is not what we expect and is cut off.
const (
	maxCompatibleBytes = 4096
	maxCompatibles     = 32
	maxDMIBytes        = 256
)

// The places detection reads, relative to the root.
var (
	compatiblePaths = []string{
		"proc/device-tree/compatible",
		"sys/firmware/devicetree/base/compatible",
	}
	dmiVendorPath  = "sys/class/dmi/id/sys_vendor"
	dmiProductPath = "sys/class/dmi/id/product_name"
)

// Identity is what detection read from the running system.
type Identity struct {
	// Compatible is the device tree's compatible list, most specific first.
	Compatible []string
	// SysVendor and ProductName are the DMI strings (x86).
	SysVendor, ProductName string
}

func (id Identity) String() string {
	var parts []string
	if len(id.Compatible) > 0 {
		parts = append(parts, fmt.Sprintf("device-tree compatible %q", id.Compatible))
	}
	if id.SysVendor != "" || id.ProductName != "" {
		parts = append(parts, fmt.Sprintf("DMI sys_vendor %q product_name %q", id.SysVendor, id.ProductName))
	}
	if len(parts) == 0 {
		return "no device-tree compatible and no DMI identity"
	}
	return strings.Join(parts, ", ")
}

// ReadIdentity reads the device-tree compatible list and the DMI strings under root ("/" on the
// device, a fixture directory in tests). Missing files are not errors: the Identity is empty.
func ReadIdentity(root string) (Identity, error) {
	var id Identity
	for _, p := range compatiblePaths {
		b, err := readLimited(filepath.Join(root, p), maxCompatibleBytes)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return id, fmt.Errorf("board: read %s: %w", p, err)
		}
		list, err := ParseCompatible(b)
		if err != nil {
			return id, fmt.Errorf("board: %s: %w", p, err)
		}
		id.Compatible = list
		break
	}
	for _, f := range []struct {
		path string
		dst  *string
	}{{dmiVendorPath, &id.SysVendor}, {dmiProductPath, &id.ProductName}} {
		b, err := readLimited(filepath.Join(root, f.path), maxDMIBytes)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return id, fmt.Errorf("board: read %s: %w", f.path, err)
		}
		*f.dst = cleanDMI(b)
	}
	return id, nil
}

// Detect identifies the board running under root by its device tree or DMI strings. Unknown
// hardware returns an error wrapping ErrUnknownBoard that says what was read; the caller
// then falls back to Generic.
func Detect(root string) (Board, error) {
	id, err := ReadIdentity(root)
	if err != nil {
		return Board{}, err
	}
	return Match(id)
}

// Match returns the catalog entry for an identity: the first compatible string (most specific
// first) that a board lists wins; otherwise the first board whose DMI match fits.
func Match(id Identity) (Board, error) {
	for _, c := range id.Compatible {
		for _, b := range catalog {
			for _, bc := range b.Compatible {
				if c == bc {
					return b.clone(), nil
				}
			}
		}
	}
	if id.SysVendor != "" || id.ProductName != "" {
		for _, b := range catalog {
			for _, m := range b.DMI {
				if m.matches(id.SysVendor, id.ProductName) {
					return b.clone(), nil
				}
			}
		}
	}
	return Board{}, fmt.Errorf("board: %w: %s", ErrUnknownBoard, id)
}

func (m DMIMatch) matches(vendor, product string) bool {
	if m.SysVendor == "" && m.ProductName == "" {
		return false
	}
	if m.SysVendor != "" && m.SysVendor != vendor {
		return false
	}
	return strings.HasPrefix(product, m.ProductName)
}

// ParseCompatible parses a device tree "compatible" property: NUL-terminated strings, most
// specific first. Empty entries are skipped; a string with non-printable bytes is an error.
func ParseCompatible(b []byte) ([]string, error) {
	if len(b) > maxCompatibleBytes {
		return nil, fmt.Errorf("compatible: %d bytes; want at most %d", len(b), maxCompatibleBytes)
	}
	var out []string
	for len(b) > 0 {
		var s []byte
		if i := bytes.IndexByte(b, 0); i >= 0 {
			s, b = b[:i], b[i+1:]
		} else {
			s, b = b, nil
		}
		if len(s) == 0 {
			continue
		}
		if !utf8.Valid(s) {
			return nil, fmt.Errorf("compatible: entry %d is not UTF-8", len(out))
		}
		for _, r := range string(s) {
			if r < 0x20 || r == 0x7f {
				return nil, fmt.Errorf("compatible: entry %d has control character %U", len(out), r)
			}
		}
		if len(out) == maxCompatibles {
			return nil, fmt.Errorf("compatible: more than %d entries", maxCompatibles)
		}
		out = append(out, string(s))
	}
	return out, nil
}

// cleanDMI trims a DMI sysfs string (newline-terminated, sometimes space-padded) and drops
// control characters.
func cleanDMI(b []byte) string {
	s := strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return -1
		}
		return r
	}, string(b))
	return strings.TrimSpace(s)
}

func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}
