// Package guest holds what the radio VM harnesses (radiotest, roamtest) do inside the QEMU guest
// before their scenarios: unpack the bundle of Debian binaries and libraries the host put on a
// second disk (see package vmkit, the host side) and wait for conditions.
package guest

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// allowedDirs are the only places a bundle may write to.
var allowedDirs = []string{"/usr/", "/lib/", "/lib64/", "/etc/"}

// Unpack extracts the regular files of a tar archive under root and returns how many it wrote.
// Only paths below usr/, lib/, lib64/ and etc/ are accepted; other entry types are skipped; the
// archive may be followed by padding (a block device).
func Unpack(archive, root string) (int, error) {
	f, err := os.Open(archive)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return unpack(f, archive, root)
}

func unpack(r io.Reader, archive, root string) (int, error) {
	tr := tar.NewReader(r)
	n := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("%s: %w", archive, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		name := filepath.Clean("/" + h.Name)
		ok := false
		for _, p := range allowedDirs {
			ok = ok || strings.HasPrefix(name, p)
		}
		if !ok {
			return n, fmt.Errorf("%s: %q outside the allowed directories", archive, h.Name)
		}
		dst := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return n, err
		}
		out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)&0o755)
		if err != nil {
			return n, err
		}
		_, err = io.Copy(out, tr)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return n, fmt.Errorf("%s: %w", dst, err)
		}
		n++
	}
}

// Poll runs f every interval until it returns nil or the timeout passes; the error then wraps
// f's last error.
func Poll(ctx context.Context, timeout, interval time.Duration, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %v: %w", timeout, err)
		case <-time.After(interval):
		}
	}
}
