package firmware

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// ModuleKernel loads one kernel module file. The real one is finit_module(2); tests use
// FakeModuleKernel.
type ModuleKernel interface {
	// LoadModule loads the module at path (absolute) with params ("radios=3"). A module that is
	// already loaded returns an error wrapping unix.EEXIST.
	LoadModule(path, params string) error
}

// RealModuleKernel loads modules with finit_module(2).
type RealModuleKernel struct{}

// LoadModule opens path and calls finit_module, telling the kernel to decompress .xz/.zst/.gz
// files itself (CONFIG_MODULE_DECOMPRESS).
func (RealModuleKernel) LoadModule(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	flags := 0
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		if strings.HasSuffix(path, ext) {
			flags |= unix.MODULE_INIT_COMPRESSED_FILE
		}
	}
	if err := unix.FinitModule(int(f.Fd()), params, flags); err != nil {
		return fmt.Errorf("finit_module %s: %w", filepath.Base(path), err)
	}
	return nil
}

// FakeModuleKernel records loads; it refuses a module whose dependencies (from its own copy of
// modules.dep) are not loaded yet, as the kernel does with "Unknown symbol".
type FakeModuleKernel struct {
	mu     sync.Mutex
	Loaded []string          // module names in load order
	Params map[string]string // by module name
	Needs  map[string][]string
	Fail   map[string]error
}

// LoadModule records the load, or fails like the kernel would.
func (k *FakeModuleKernel) LoadModule(path, params string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	name := ModuleName(path)
	if err := k.Fail[name]; err != nil {
		return err
	}
	if slices.Contains(k.Loaded, name) {
		return fmt.Errorf("finit_module %s: %w", name, unix.EEXIST)
	}
	for _, d := range k.Needs[name] {
		if !slices.Contains(k.Loaded, d) {
			return fmt.Errorf("finit_module %s: unknown symbol from %s: %w", name, d, unix.ENOENT)
		}
	}
	k.Loaded = append(k.Loaded, name)
	if k.Params == nil {
		k.Params = map[string]string{}
	}
	k.Params[name] = params
	return nil
}

// ModuleDeps is a parsed modules.dep: for each module name (dashes normalized to underscores),
// its file (relative to the modules directory, or absolute) and the files it depends on.
type ModuleDeps struct {
	files map[string]string   // name -> file
	deps  map[string][]string // name -> dependency names
}

// ModuleName returns the module name for a module file path: base name without .ko[.xz|.zst|.gz],
// dashes turned into underscores, as the kernel and modinfo name it.
func ModuleName(path string) string {
	b := filepath.Base(path)
	if i := strings.Index(b, ".ko"); i >= 0 {
		b = b[:i]
	}
	return strings.ReplaceAll(b, "-", "_")
}

// NormalizeModuleName turns "crc32c-intel" into "crc32c_intel".
func NormalizeModuleName(name string) string { return strings.ReplaceAll(name, "-", "_") }

const maxModulesDepLine = 64 << 10

// ParseModulesDep parses depmod's modules.dep: one line per module, "file: dep dep ...", where
// the dependency list is complete (transitive). Blank lines and # comments are skipped.
func ParseModulesDep(r io.Reader) (*ModuleDeps, error) {
	d := &ModuleDeps{files: map[string]string{}, deps: map[string][]string{}}
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 4096), maxModulesDepLine)
	line := 0
	for s.Scan() {
		line++
		text := strings.TrimSpace(s.Text())
		if text == "" || text[0] == '#' {
			continue
		}
		file, rest, ok := strings.Cut(text, ":")
		file = strings.TrimSpace(file)
		if !ok || file == "" || !strings.Contains(filepath.Base(file), ".ko") {
			return nil, fmt.Errorf("modules.dep line %d: want \"file.ko: deps...\", got %q", line, truncate(text, 80))
		}
		name := ModuleName(file)
		if name == "" {
			return nil, fmt.Errorf("modules.dep line %d: empty module name in %q", line, truncate(file, 80))
		}
		if _, dup := d.files[name]; dup {
			return nil, fmt.Errorf("modules.dep line %d: module %q listed twice", line, name)
		}
		d.files[name] = file
		var deps []string
		for _, f := range strings.Fields(rest) {
			if !strings.Contains(filepath.Base(f), ".ko") {
				return nil, fmt.Errorf("modules.dep line %d: dependency %q of %q is not a module file", line, truncate(f, 80), name)
			}
			deps = append(deps, ModuleName(f))
		}
		d.deps[name] = deps
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("modules.dep line %d: %w", line+1, err)
	}
	return d, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// Has reports whether name is a known module.
func (d *ModuleDeps) Has(name string) bool {
	_, ok := d.files[NormalizeModuleName(name)]
	return ok
}

// File returns the file of module name as listed in modules.dep.
func (d *ModuleDeps) File(name string) (string, bool) {
	f, ok := d.files[NormalizeModuleName(name)]
	return f, ok
}

// Order returns the modules to load for names, dependencies before the modules needing them,
// each once, in a deterministic order: names are taken in the given order, and a module's
// dependencies are resolved depth first in the order modules.dep lists them, the last first
// (modprobe's order). A cycle or a dependency missing from modules.dep is an error.
func (d *ModuleDeps) Order(names ...string) ([]string, error) {
	state := map[string]int{} // 1 visiting, 2 done
	var out []string
	var visit func(name string, path []string) error
	visit = func(name string, path []string) error {
		switch state[name] {
		case 2:
			return nil
		case 1:
			return fmt.Errorf("module dependency cycle: %s", strings.Join(append(path, name), " -> "))
		}
		if _, ok := d.files[name]; !ok {
			if len(path) == 0 {
				return fmt.Errorf("module %q: not in modules.dep", name)
			}
			return fmt.Errorf("module %q (needed by %q): not in modules.dep", name, path[len(path)-1])
		}
		state[name] = 1
		deps := d.deps[name]
		next := append(path[:len(path):len(path)], name) // a copy: siblings must not share it
		for i := len(deps) - 1; i >= 0; i-- {
			if err := visit(deps[i], next); err != nil {
				return err
			}
		}
		state[name] = 2
		out = append(out, name)
		return nil
	}
	for _, n := range names {
		if err := visit(NormalizeModuleName(n), nil); err != nil {
			return out, err
		}
	}
	return out, nil
}

// ModuleLoader loads modules with their dependencies, the way modprobe does, from
// <root>/lib/modules/<kernel release>/modules.dep (written by the image builder).
type ModuleLoader struct {
	// Dir is the modules directory, <root>/lib/modules/<release>.
	Dir    string
	Kernel ModuleKernel
	deps   *ModuleDeps
	// builtin lists modules compiled into the kernel (modules.builtin), which need no loading.
	builtin map[string]bool
	loaded  map[string]bool
}

// NewModuleLoader reads dir/modules.dep (required) and dir/modules.builtin (optional).
func NewModuleLoader(dir string, k ModuleKernel) (*ModuleLoader, error) {
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("modules: %w", err)
	}
	defer f.Close()
	deps, err := ParseModulesDep(f)
	if err != nil {
		return nil, fmt.Errorf("modules: %s: %w", f.Name(), err)
	}
	l := &ModuleLoader{Dir: dir, Kernel: k, deps: deps, builtin: map[string]bool{}, loaded: map[string]bool{}}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, line := range bytes.Split(b, []byte("\n")) {
			if s := strings.TrimSpace(string(line)); s != "" {
				l.builtin[ModuleName(s)] = true
			}
		}
	}
	return l, nil
}

// Deps returns the parsed modules.dep.
func (l *ModuleLoader) Deps() *ModuleDeps { return l.deps }

// Builtin reports whether name is compiled into the kernel.
func (l *ModuleLoader) Builtin(name string) bool { return l.builtin[NormalizeModuleName(name)] }

// Load loads name and its dependencies (params apply to name only). Built-in modules and
// modules already loaded (EEXIST) are fine. It returns the modules it actually loaded.
func (l *ModuleLoader) Load(name, params string) ([]string, error) {
	name = NormalizeModuleName(name)
	if l.builtin[name] && !l.deps.Has(name) {
		return nil, nil
	}
	order, err := l.deps.Order(name)
	if err != nil {
		return nil, err
	}
	var loaded []string
	for _, m := range order {
		if l.loaded[m] && m != name {
			continue
		}
		file, _ := l.deps.File(m)
		if !filepath.IsAbs(file) {
			file = filepath.Join(l.Dir, file)
		}
		p := ""
		if m == name {
			p = params
		}
		err := l.Kernel.LoadModule(file, p)
		switch {
		case err == nil:
			loaded = append(loaded, m)
		case errors.Is(err, unix.EEXIST):
		default:
			if m != name {
				return loaded, fmt.Errorf("module %s: dependency %s: %w", name, m, err)
			}
			return loaded, fmt.Errorf("module %s: %w", name, err)
		}
		l.loaded[m] = true
	}
	return loaded, nil
}

// LoadAll loads every module in names, in order, with dependencies. A module that fails does
// not stop the others; the errors are joined.
func (l *ModuleLoader) LoadAll(names []string) (loaded []string, err error) {
	var errs []error
	for _, n := range names {
		got, err := l.Load(n, "")
		loaded = append(loaded, got...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return loaded, errors.Join(errs...)
}
