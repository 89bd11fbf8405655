package image

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// ModInfo is the part of a kernel module's .modinfo section the image builder uses.
type ModInfo struct {
	// Name is the module name (name= key), with underscores as the kernel reports it.
	Name string
	// Depends are the modules it needs loaded first (depends= key).
	Depends []string
	// SoftPre and SoftPost are soft dependencies (softdep= key): module names or aliases that
	// modprobe loads before or after it. They may be aliases such as "crypto-crc32c".
	SoftPre, SoftPost []string
	// Aliases are the alias= values (used to resolve soft dependencies).
	Aliases []string
}

// ParseModInfo parses the contents of a .modinfo section: NUL-separated key=value strings,
// possibly padded with extra NULs. Unknown keys are ignored; a string without '=' is an error.
func ParseModInfo(b []byte) (ModInfo, error) {
	var mi ModInfo
	for _, field := range bytes.Split(b, []byte{0}) {
		if len(field) == 0 {
			continue
		}
		k, v, ok := strings.Cut(string(field), "=")
		if !ok {
			return ModInfo{}, fmt.Errorf("modinfo: field %q has no '='", truncate(string(field), 40))
		}
		switch k {
		case "name":
			mi.Name = v
		case "depends":
			for d := range strings.SplitSeq(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					mi.Depends = append(mi.Depends, normalizeModName(d))
				}
			}
		case "softdep":
			pre, post := parseSoftdep(v)
			mi.SoftPre = append(mi.SoftPre, pre...)
			mi.SoftPost = append(mi.SoftPost, post...)
		case "alias":
			mi.Aliases = append(mi.Aliases, v)
		}
	}
	return mi, nil
}

// parseSoftdep parses "pre: a b post: c" (either part optional). Names before any "pre:" or
// "post:" (old-style MODULE_SOFTDEP("gcm"), as in cifs) are ignored, as kmod does.
func parseSoftdep(v string) (pre, post []string) {
	var cur *[]string
	for _, tok := range strings.Fields(v) {
		switch tok {
		case "pre:":
			cur = &pre
		case "post:":
			cur = &post
		default:
			if cur != nil {
				*cur = append(*cur, tok)
			}
		}
	}
	return pre, post
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// normalizeModName maps a module file or dependency name to the kernel's form (dashes become
// underscores), e.g. "crc32c-intel" -> "crc32c_intel".
func normalizeModName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// ReadModInfo reads the .modinfo section of a .ko file.
func ReadModInfo(file string) (ModInfo, error) {
	f, err := elf.Open(file)
	if err != nil {
		return ModInfo{}, fmt.Errorf("module %s: %w", file, err)
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return ModInfo{}, fmt.Errorf("module %s: no .modinfo section", file)
	}
	b, err := s.Data()
	if err != nil {
		return ModInfo{}, fmt.Errorf("module %s: read .modinfo: %w", file, err)
	}
	mi, err := ParseModInfo(b)
	if err != nil {
		return ModInfo{}, fmt.Errorf("module %s: %w", file, err)
	}
	return mi, nil
}

// ModuleTree is the module directory of one kernel version: <root>/<kver>/kernel/...
type ModuleTree struct {
	// Dir is <root>/<kver>, the directory holding kernel/ and modules.builtin.
	Dir string
	// KernelVersion is <kver>.
	KernelVersion string

	files   map[string]string // module name -> path relative to Dir ("kernel/...ko")
	builtin map[string]bool
	info    map[string]ModInfo
	aliases map[string][]string // alias -> module names, built on first need
}

// OpenModuleTree indexes the loadable modules under root/kver/kernel by file name (no .ko is
// read yet) and reads modules.builtin when present.
func OpenModuleTree(root, kver string) (*ModuleTree, error) {
	dir := filepath.Join(root, kver)
	t := &ModuleTree{
		Dir:           dir,
		KernelVersion: kver,
		files:         map[string]string{},
		builtin:       map[string]bool{},
		info:          map[string]ModInfo{},
	}
	kdir := filepath.Join(dir, "kernel")
	err := filepath.WalkDir(kdir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(p, ".ko") {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		name := normalizeModName(strings.TrimSuffix(d.Name(), ".ko"))
		if prev, dup := t.files[name]; dup {
			return fmt.Errorf("module %s: two files, %s and %s", name, prev, rel)
		}
		t.files[name] = filepath.ToSlash(rel)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("module tree %s: %w", dir, err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "modules.builtin"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("module tree %s: %w", dir, err)
	}
	for _, n := range parseBuiltin(b) {
		t.builtin[n] = true
	}
	return t, nil
}

// parseBuiltin returns the module names in a modules.builtin file (one kernel/...ko path a line).
func parseBuiltin(b []byte) []string {
	var names []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		names = append(names, normalizeModName(strings.TrimSuffix(path.Base(line), ".ko")))
	}
	return names
}

// Path returns the path of a module relative to t.Dir ("kernel/.../x.ko").
func (t *ModuleTree) Path(name string) (string, bool) {
	p, ok := t.files[normalizeModName(name)]
	return p, ok
}

// Builtin reports whether a module is built into the kernel.
func (t *ModuleTree) Builtin(name string) bool { return t.builtin[normalizeModName(name)] }

// Info reads (once) and returns the modinfo of a loadable module.
func (t *ModuleTree) Info(name string) (ModInfo, error) {
	name = normalizeModName(name)
	if mi, ok := t.info[name]; ok {
		return mi, nil
	}
	rel, ok := t.files[name]
	if !ok {
		return ModInfo{}, fmt.Errorf("module %s: not found", name)
	}
	mi, err := ReadModInfo(filepath.Join(t.Dir, filepath.FromSlash(rel)))
	if err != nil {
		return ModInfo{}, err
	}
	if mi.Name == "" {
		mi.Name = name
	}
	if normalizeModName(mi.Name) != name {
		return ModInfo{}, fmt.Errorf("module %s: file %s says name=%s", name, rel, mi.Name)
	}
	t.info[name] = mi
	return mi, nil
}

// resolveAlias returns the loadable modules providing an alias (e.g. "crypto-crc32c"), reading
// every module's modinfo the first time it is needed. Aliases with wildcards (device-ID
// patterns) are matched with path.Match.
func (t *ModuleTree) resolveAlias(alias string) ([]string, error) {
	if t.aliases == nil {
		t.aliases = map[string][]string{}
		names := make([]string, 0, len(t.files))
		for n := range t.files {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			mi, err := t.Info(n)
			if err != nil {
				return nil, err
			}
			for _, a := range mi.Aliases {
				t.aliases[a] = append(t.aliases[a], n)
			}
		}
	}
	if ms, ok := t.aliases[alias]; ok {
		return ms, nil
	}
	var out []string
	for a, ms := range t.aliases {
		if strings.ContainsAny(a, "*?[") {
			if ok, _ := path.Match(a, alias); ok {
				out = append(out, ms...)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// ModuleSet is the result of resolving requested modules against a ModuleTree.
type ModuleSet struct {
	// Load is every loadable module to ship, in an order that loads each after its dependencies.
	Load []string
	// Builtin are requested modules that are built into the kernel (nothing to ship).
	Builtin []string
	// Unresolved are soft dependencies that match no module (modprobe ignores these too).
	Unresolved []string

	tree *ModuleTree
	deps map[string][]string // hard deps, sorted
	soft map[string][2][]string
}

// Resolve computes the dependency closure of the requested modules from each module's .modinfo
// (depends= and softdep=), without depmod. A requested name that is neither a .ko nor built in
// is an error naming it.
func (t *ModuleTree) Resolve(requested []string) (*ModuleSet, error) {
	s := &ModuleSet{tree: t, deps: map[string][]string{}, soft: map[string][2][]string{}}
	state := map[string]int{} // 0 new, 1 visiting, 2 done
	builtin := map[string]bool{}
	unresolved := map[string]bool{}
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle: %s -> %s", strings.Join(chain, " -> "), name)
		case 2:
			return nil
		}
		state[name] = 1
		chain = append(chain, name)
		mi, err := t.Info(name)
		if err != nil {
			return err
		}
		deps := append([]string(nil), mi.Depends...)
		sort.Strings(deps)
		s.deps[name] = deps
		for _, d := range deps {
			if _, ok := t.files[d]; !ok {
				if t.builtin[d] {
					continue
				}
				return fmt.Errorf("module %s: dependency %s not found", name, d)
			}
			if err := visit(d, chain); err != nil {
				return err
			}
		}
		var soft [2][]string
		for i, list := range [][]string{mi.SoftPre, mi.SoftPost} {
			for _, sd := range list {
				ms, err := t.softTargets(sd)
				if err != nil {
					return fmt.Errorf("module %s: softdep %s: %w", name, sd, err)
				}
				if len(ms) == 0 {
					unresolved[sd] = true
					continue
				}
				soft[i] = append(soft[i], sd)
				for _, m := range ms {
					if state[m] == 1 {
						continue // a soft dependency back up the chain orders nothing
					}
					if err := visit(m, chain); err != nil {
						return err
					}
				}
			}
		}
		if len(soft[0])+len(soft[1]) > 0 {
			s.soft[name] = soft
		}
		state[name] = 2
		s.Load = append(s.Load, name)
		return nil
	}
	req := make([]string, 0, len(requested))
	for _, r := range requested {
		req = append(req, normalizeModName(strings.TrimSpace(r)))
	}
	sort.Strings(req)
	for _, r := range req {
		if r == "" {
			return nil, errors.New("module: empty name requested")
		}
		if _, ok := t.files[r]; !ok {
			if t.builtin[r] {
				builtin[r] = true
				continue
			}
			return nil, fmt.Errorf("module %s: not found in %s (neither a .ko under kernel/ nor in modules.builtin)", r, t.Dir)
		}
		if err := visit(r, nil); err != nil {
			return nil, err
		}
	}
	s.Builtin = sortedKeys(builtin)
	s.Unresolved = sortedKeys(unresolved)
	return s, nil
}

// softTargets returns the loadable modules a softdep name means: the module itself, nothing
// when it is built in, else the modules whose alias matches.
func (t *ModuleTree) softTargets(name string) ([]string, error) {
	n := normalizeModName(name)
	if _, ok := t.files[n]; ok {
		return []string{n}, nil
	}
	if t.builtin[n] {
		return nil, nil
	}
	return t.resolveAlias(name)
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// closure returns name's hard dependencies, transitively, in load order (deepest first).
func (s *ModuleSet) closure(name string) []string {
	var order []string
	seen := map[string]bool{name: true}
	var visit func(string)
	visit = func(n string) {
		for _, d := range s.deps[n] {
			if seen[d] {
				continue
			}
			seen[d] = true
			if _, ok := s.deps[d]; !ok {
				continue // built in
			}
			visit(d)
			order = append(order, d)
		}
	}
	visit(name)
	return order
}

// Path returns the relative path of a module in the set ("kernel/.../x.ko").
func (s *ModuleSet) Path(name string) string { return s.tree.files[name] }

// ModulesDep renders modules.dep in depmod's format: one line per shipped module,
// "kernel/a.ko: kernel/b.ko kernel/c.ko", where the dependencies are the transitive closure
// listed so that loading them from last to first, then the module, works (as modprobe does).
// Lines are sorted by path so the output is reproducible.
func (s *ModuleSet) ModulesDep() []byte {
	lines := make([]string, 0, len(s.Load))
	for _, m := range s.Load {
		deps := s.closure(m)
		var b strings.Builder
		b.WriteString(s.Path(m))
		b.WriteString(":")
		for i := len(deps) - 1; i >= 0; i-- {
			b.WriteString(" ")
			b.WriteString(s.Path(deps[i]))
		}
		lines = append(lines, b.String())
	}
	sort.Strings(lines)
	if len(lines) == 0 {
		return nil
	}
	return []byte(strings.Join(lines, "\n") + "\n")
}

// ModulesSoftdep renders modules.softdep in modprobe.d syntax ("softdep ext4 pre: crc32c").
func (s *ModuleSet) ModulesSoftdep() []byte {
	names := make([]string, 0, len(s.soft))
	for n := range s.soft {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("# Soft dependencies extracted from modules' .modinfo sections.\n")
	for _, n := range names {
		sd := s.soft[n]
		b.WriteString("softdep " + n)
		if len(sd[0]) > 0 {
			b.WriteString(" pre: " + strings.Join(sd[0], " "))
		}
		if len(sd[1]) > 0 {
			b.WriteString(" post: " + strings.Join(sd[1], " "))
		}
		b.WriteString("\n")
	}
	return []byte(b.String())
}

// ParseModulesDep parses depmod's modules.dep format into module path -> dependency paths.
// It is the inverse of ModulesDep and is used by tests and by tools reading built images.
func ParseModulesDep(b []byte) (map[string][]string, error) {
	out := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		mod, deps, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(mod) == "" {
			return nil, fmt.Errorf("modules.dep line %d: want \"module.ko: deps...\", got %q", n, truncate(line, 60))
		}
		mod = strings.TrimSpace(mod)
		if strings.ContainsAny(mod, " \t") {
			return nil, fmt.Errorf("modules.dep line %d: module path %q has a space", n, truncate(mod, 60))
		}
		if _, dup := out[mod]; dup {
			return nil, fmt.Errorf("modules.dep line %d: module %s listed twice", n, mod)
		}
		out[mod] = strings.Fields(deps)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("modules.dep: %w", err)
	}
	return out, nil
}
