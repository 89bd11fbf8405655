package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/u-root/gobusybox/src/pkg/golang"
	"github.com/u-root/mkuimage/cpio"
	"github.com/u-root/mkuimage/uimage/builder"
	"github.com/u-root/mkuimage/uimage/initramfs"
	"github.com/u-root/uio/llog"
)

// cachedBusybox is a uimage builder that wraps gobusybox's GBBBuilder and memoizes the busybox
// binary on disk. gobusybox rebuilds everything with `go build -a` (about 17-45 s here); the
// binary depends only on the command packages (module cache directories, which embed their
// versions), the module's go.mod/go.sum (the versions of their dependencies), the Go toolchain
// and the target, so those form the key. The archive gets exactly what GBBBuilder adds:
// bbin/bb and one bbin/<cmd> -> bb symlink per command.
type cachedBusybox struct {
	dir    string // cache directory; "" disables caching
	srcDir string // module root (go.mod, go.sum)
	hit    bool   // set by Build
	inner  builder.GBBBuilder
	note   func(format string, args ...any)
}

func (c *cachedBusybox) DefaultBinaryDir() string { return c.inner.DefaultBinaryDir() }

func (c *cachedBusybox) Build(l *llog.Logger, af *initramfs.Files, opts builder.Opts) error {
	if c.dir == "" {
		return c.inner.Build(l, af, opts)
	}
	key, err := c.key(opts)
	if err != nil {
		c.note("busybox cache off: %v", err)
		return c.inner.Build(l, af, opts)
	}
	cached := filepath.Join(c.dir, key[:24], "bb")
	if st, err := os.Stat(cached); err == nil && st.Mode().IsRegular() {
		c.hit = true
		// Touch it so pruning keeps recently used binaries.
		now := time.Now()
		_ = os.Chtimes(filepath.Dir(cached), now, now)
		return addBusybox(af, cached, opts)
	}
	if err := c.inner.Build(l, af, opts); err != nil {
		return err
	}
	built := filepath.Join(opts.TempDir, "bb")
	if err := os.MkdirAll(filepath.Dir(cached), 0o755); err == nil {
		tmp := cached + ".tmp" + fmt.Sprint(os.Getpid())
		if err := copyPlain(built, tmp); err == nil {
			_ = os.Rename(tmp, cached)
		}
		os.Remove(tmp)
		pruneDirs(c.dir, 6)
	}
	return nil
}

// addBusybox adds the binary and its command symlinks the way builder.GBBBuilder does.
func addBusybox(af *initramfs.Files, bb string, opts builder.Opts) error {
	binDir := opts.BinaryDir
	if binDir == "" {
		binDir = "bbin"
	}
	if err := af.AddFile(bb, "bbin/bb"); err != nil {
		return err
	}
	for _, pkg := range opts.Packages {
		name := path.Base(pkg)
		if name == "bb" {
			continue
		}
		if err := af.AddRecord(cpio.Symlink(path.Join(binDir, name), "bb")); err != nil {
			return err
		}
	}
	return nil
}

func (c *cachedBusybox) key(opts builder.Opts) (string, error) {
	h := sha256.New()
	pkgs := append([]string(nil), opts.Packages...)
	sort.Strings(pkgs)
	env := opts.Env
	bo, _ := json.Marshal(opts.BuildOpts)
	fmt.Fprintf(h, "gbb v1\n%s/%s cgo=%v tags=%q buildopts=%s\n", env.GOOS, env.GOARCH, env.CgoEnabled, env.BuildTags, bo)
	for _, p := range pkgs {
		// Import paths of other modules are pinned by go.mod/go.sum (hashed below), as are
		// module cache directories (they carry @version). A local directory or a package of
		// this module can change without its path changing: do not cache those.
		if strings.HasPrefix(p, ".") || (strings.HasPrefix(p, "/") && !strings.Contains(p, "@")) ||
			p == "meshroot" || strings.HasPrefix(p, "meshroot/") {
			return "", fmt.Errorf("package %s is not pinned by go.sum", p)
		}
		fmt.Fprintf(h, "pkg %s\n", p)
	}
	goVersion, err := os.ReadFile(filepath.Join(env.GOROOT, "VERSION"))
	if err != nil {
		return "", err
	}
	fmt.Fprintf(h, "go %s\n", strings.SplitN(string(goVersion), "\n", 2)[0])
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(c.srcDir, f))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", f, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// pruneDirs keeps the keep most recently modified subdirectories of dir.
func pruneDirs(dir string, keep int) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	type d struct {
		name string
		mod  time.Time
	}
	var ds []d
	for _, e := range ents {
		if info, err := e.Info(); err == nil && e.IsDir() {
			ds = append(ds, d{e.Name(), info.ModTime()})
		}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i].mod.After(ds[j].mod) })
	for i := keep; i < len(ds); i++ {
		os.RemoveAll(filepath.Join(dir, ds[i].name))
	}
}

func copyPlain(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// buildDeviceCommand compiles one of our own commands (e.g. meshroot/cmd/meshd) as its own
// static binary with the ordinary go command, in module mode, from the module root.
//
// Why not in the busybox: gobusybox copies a command's non-standard dependencies into a GOPATH
// tree, and it tells them apart from the standard library by a dot in the first path element
// ("poor man's standard library test"), so our module "meshroot" is taken for std and its
// packages are never copied. A separate binary also keeps inlining on (gobusybox turns it off
// to save space; the ESP data plane wants it) and uses Go's build cache (gobusybox passes -a).
func buildDeviceCommand(ctx context.Context, env *golang.Environ, srcDir, pkg, out string) error {
	args := []string{"build", "-trimpath", "-ldflags", "-s -w -buildid=", "-o", out}
	if len(env.BuildTags) > 0 {
		args = append(args, "-tags", strings.Join(env.BuildTags, ","))
	}
	args = append(args, pkg)
	cmd := exec.CommandContext(ctx, filepath.Join(env.GOROOT, "bin", "go"), args...)
	cmd.Dir = srcDir
	cmd.Env = append(os.Environ(), "GOOS="+env.GOOS, "GOARCH="+env.GOARCH, "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s for linux/%s: %w\n%s", pkg, env.GOARCH, err, strings.TrimSpace(string(out)))
	}
	return nil
}
