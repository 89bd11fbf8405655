package image

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// Program is a dynamically linked program taken from a sysroot: a target userland unpacked
// from packages (for the arm64 product, .cache/sysroot-arm64 from
// scripts/fetch-arm64-userland.sh: Debian's arm64 hostapd, wpa_supplicant, iw and their
// libraries). Build adds it with its interpreter and shared libraries resolved in the sysroot
// (ELFClosure), which works for any architecture: the build machine's ldd only reads its own.
type Program struct {
	// Path is the program's path in the sysroot, and in the image: "usr/sbin/hostapd".
	Path string `json:"path"`
	// Sysroot is the directory holding the target's userland.
	Sysroot string `json:"sysroot"`
}

// Closure is what the dynamic loader needs to start a program.
type Closure struct {
	// Machine is the program's ELF machine (elf.EM_AARCH64 for arm64).
	Machine elf.Machine
	// Interp is the program's interpreter (PT_INTERP) as an image path, "" for a static program.
	Interp string
	// Files are the program, its interpreter and its shared libraries (the transitive closure
	// of DT_NEEDED): Path where the loader looks for each (the soname in the directory it was
	// found in), Host the real file in the sysroot (symlinks resolved inside the sysroot).
	Files []File
}

// maxClosure bounds the libraries one program may pull in (a loop guard; hostapd needs 6).
const maxClosure = 256

// multiarch are the Debian multiarch triplets of the ELF machines images are built for.
var multiarch = map[elf.Machine]string{elf.EM_AARCH64: "aarch64-linux-gnu", elf.EM_X86_64: "x86_64-linux-gnu"}

// machineOf is the ELF machine of a board's GOARCH.
var machineOf = map[string]elf.Machine{"arm64": elf.EM_AARCH64, "amd64": elf.EM_X86_64}

// ELFClosure resolves what program (a path inside sysroot) needs at run time, as the target's
// dynamic loader would find it in the image: the interpreter named by PT_INTERP, and for every
// DT_NEEDED soname, transitively, the first file of that name and of the program's ELF class
// and machine in the needing object's DT_RUNPATH (or DT_RPATH; $ORIGIN expanded), then the
// default directories: lib/<multiarch>, usr/lib/<multiarch>, lib64, usr/lib64, lib, usr/lib.
// A soname the interpreter itself provides (libc's DT_NEEDED of ld.so) needs no second copy.
// Symbolic links are followed inside the sysroot, absolute ones relative to it. An unresolved
// soname is an error naming it and the object that needs it.
func ELFClosure(sysroot, program string) (Closure, error) {
	root, err := filepath.Abs(sysroot)
	if err != nil {
		return Closure{}, err
	}
	if st, err := os.Stat(root); err != nil || !st.IsDir() {
		return Closure{}, fmt.Errorf("sysroot %s: not a directory", sysroot)
	}
	progPath := cleanRel(program)
	if progPath == "" {
		return Closure{}, errors.New("program path is empty")
	}
	_, progHost, err := resolveIn(root, progPath)
	if err != nil {
		return Closure{}, fmt.Errorf("program %s: %w", progPath, err)
	}
	prog, err := readELF(progHost)
	if err != nil {
		return Closure{}, fmt.Errorf("program %s: %w", progPath, err)
	}
	c := Closure{Machine: prog.machine, Files: []File{{Path: progPath, Host: progHost}}}
	provided := map[string]bool{} // sonames the loader has
	if prog.interp != "" {
		c.Interp = cleanRel(prog.interp)
		_, ih, err := resolveIn(root, c.Interp)
		if err != nil {
			return Closure{}, fmt.Errorf("program %s: interpreter %s: %w", progPath, prog.interp, err)
		}
		in, err := readELF(ih)
		if err != nil {
			return Closure{}, fmt.Errorf("program %s: interpreter %s: %w", progPath, prog.interp, err)
		}
		if in.machine != prog.machine || in.class != prog.class {
			return Closure{}, fmt.Errorf("program %s: interpreter %s is %v %v; the program is %v %v", progPath, prog.interp, in.class, in.machine, prog.class, prog.machine)
		}
		c.Files = append(c.Files, File{Path: c.Interp, Host: ih})
		provided[path.Base(c.Interp)] = true
		if in.soname != "" {
			provided[in.soname] = true
		}
	}
	type pending struct {
		soname string
		by     *elfInfo
		byPath string
	}
	var queue []pending
	for _, n := range prog.needed {
		queue = append(queue, pending{n, prog, progPath})
	}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if provided[p.soname] {
			continue
		}
		if len(c.Files) >= maxClosure {
			return Closure{}, fmt.Errorf("program %s: more than %d shared objects", progPath, maxClosure)
		}
		dirs := searchDirs(p.by, p.byPath, prog.machine)
		lib, libPath, libHost, err := findLibrary(root, p.soname, dirs, prog)
		if err != nil {
			return Closure{}, fmt.Errorf("program %s: %s (needed by %s): %w", progPath, p.soname, p.byPath, err)
		}
		provided[p.soname] = true
		c.Files = append(c.Files, File{Path: libPath, Host: libHost})
		for _, n := range lib.needed {
			queue = append(queue, pending{n, lib, libPath})
		}
	}
	return c, nil
}

// elfInfo is what the closure needs from one ELF file.
type elfInfo struct {
	class   elf.Class
	machine elf.Machine
	interp  string
	soname  string
	needed  []string
	runpath []string // DT_RUNPATH, or DT_RPATH when there is no DT_RUNPATH
}

func readELF(host string) (*elfInfo, error) {
	fh, err := os.Open(host)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	return parseELF(fh)
}

// parseELF reads the interpreter and the dynamic section of an ELF file. Files come from
// packages downloaded from a mirror: a malformed one is an error, never a panic (debug/elf's
// own panics on crafted files are turned into errors too).
func parseELF(r io.ReaderAt) (info *elfInfo, err error) {
	defer func() {
		if p := recover(); p != nil {
			info, err = nil, fmt.Errorf("malformed ELF file: %v", p)
		}
	}()
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("not an ELF file: %w", err)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return nil, fmt.Errorf("ELF type %v: want an executable or a shared object", f.Type)
	}
	info = &elfInfo{class: f.Class, machine: f.Machine}
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		if p.Filesz == 0 || p.Filesz > 4096 {
			return nil, fmt.Errorf("PT_INTERP of %d bytes", p.Filesz)
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			return nil, fmt.Errorf("PT_INTERP: %w", err)
		}
		info.interp = strings.TrimRight(string(b), "\x00")
	}
	if f.Section(".dynamic") == nil && dynamicProg(f) == nil {
		return info, nil // static
	}
	if info.needed, err = f.DynString(elf.DT_NEEDED); err != nil {
		return nil, fmt.Errorf("DT_NEEDED: %w", err)
	}
	if s, err := f.DynString(elf.DT_SONAME); err == nil && len(s) > 0 {
		info.soname = s[0]
	}
	rp, _ := f.DynString(elf.DT_RUNPATH)
	if len(rp) == 0 {
		rp, _ = f.DynString(elf.DT_RPATH)
	}
	for _, s := range rp {
		for _, d := range strings.Split(s, ":") {
			if d != "" {
				info.runpath = append(info.runpath, d)
			}
		}
	}
	return info, nil
}

func dynamicProg(f *elf.File) *elf.Prog {
	for _, p := range f.Progs {
		if p.Type == elf.PT_DYNAMIC {
			return p
		}
	}
	return nil
}

// searchDirs are the directories (sysroot-relative) the loader searches for the needs of by,
// which lives at byPath.
func searchDirs(by *elfInfo, byPath string, m elf.Machine) []string {
	var dirs []string
	for _, d := range by.runpath {
		d = strings.ReplaceAll(strings.ReplaceAll(d, "${ORIGIN}", "$ORIGIN"), "$ORIGIN", "/"+path.Dir(byPath))
		if strings.Contains(d, "$") || !strings.HasPrefix(d, "/") {
			continue // $LIB, $PLATFORM and relative entries: not used by Debian's programs
		}
		dirs = append(dirs, cleanRel(d))
	}
	if t := multiarch[m]; t != "" {
		dirs = append(dirs, "lib/"+t, "usr/lib/"+t)
	}
	return append(dirs, "lib64", "usr/lib64", "lib", "usr/lib")
}

// findLibrary finds soname in dirs: the first regular file of that name with the program's
// class and machine (the loader skips others).
func findLibrary(root, soname string, dirs []string, prog *elfInfo) (*elfInfo, string, string, error) {
	if strings.Contains(soname, "/") {
		dirs, soname = []string{path.Dir(cleanRel(soname))}, path.Base(soname)
	}
	if soname == "" || soname == "." || soname == ".." {
		return nil, "", "", fmt.Errorf("bad soname")
	}
	var skipped []string
	for _, d := range dirs {
		p := path.Join(d, soname)
		_, host, err := resolveIn(root, p)
		if err != nil {
			continue
		}
		lib, err := readELF(host)
		if err != nil {
			skipped = append(skipped, p+": "+err.Error())
			continue
		}
		if lib.class != prog.class || lib.machine != prog.machine {
			skipped = append(skipped, fmt.Sprintf("%s: %v %v", p, lib.class, lib.machine))
			continue
		}
		return lib, p, host, nil
	}
	msg := "not found in " + strings.Join(slices.Compact(dirs), ", ")
	if len(skipped) > 0 {
		msg += " (skipped " + strings.Join(skipped, "; ") + ")"
	}
	return nil, "", "", errors.New(msg)
}

// cleanRel turns a path ("/lib/x", "lib/x", "../x") into a clean path relative to the root
// ("lib/x", "x"), or "" for the root itself.
func cleanRel(p string) string {
	return strings.TrimPrefix(path.Clean("/"+p), "/")
}

// resolveIn resolves p (relative to root) following symbolic links as if root were "/": an
// absolute target is taken relative to root, and ".." never leaves it. It returns the
// resolved relative path and the host path of a regular file.
func resolveIn(root, p string) (string, string, error) {
	rest := strings.Split(cleanRel(p), "/")
	cur := ""
	for links := 0; len(rest) > 0; {
		c := rest[0]
		rest = rest[1:]
		if c == "" || c == "." {
			continue
		}
		next := path.Join(cur, c)
		if c == ".." {
			cur = cleanRel(next)
			continue
		}
		host := filepath.Join(root, filepath.FromSlash(next))
		st, err := os.Lstat(host)
		if err != nil {
			return "", "", err
		}
		if st.Mode()&os.ModeSymlink == 0 {
			cur = next
			continue
		}
		if links++; links > 40 {
			return "", "", fmt.Errorf("%s: too many levels of symbolic links", p)
		}
		target, err := os.Readlink(host)
		if err != nil {
			return "", "", err
		}
		if strings.HasPrefix(target, "/") {
			cur = ""
		}
		rest = append(strings.Split(strings.Trim(target, "/"), "/"), rest...)
	}
	host := filepath.Join(root, filepath.FromSlash(cur))
	st, err := os.Stat(host)
	if err != nil {
		return "", "", err
	}
	if !st.Mode().IsRegular() {
		return "", "", fmt.Errorf("%s: not a regular file", p)
	}
	return cur, host, nil
}
