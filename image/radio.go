package image

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"meshroot/board"
)

// RadioPrograms are the programs a router image carries for its radios: Debian's hostapd, the
// access-point daemon meshd's radio service renders a configuration for and supervises
// (firmware/radiohook). Nothing else: the radio code talks nl80211 and hostapd's control socket
// itself (no iw, no hostapd_cli), and a router is no Wi-Fi client (no wpa_supplicant).
var RadioPrograms = []string{"usr/sbin/hostapd"}

// RegulatoryDBPath is where cfg80211 reads the wireless regulatory database (with its
// signature beside it: Debian's kernels accept only a regulatory.db signed by a key they embed,
// so the -debian variants of wireless-regdb are shipped).
const RegulatoryDBPath = "lib/firmware/regulatory.db"

// RadioUserland is what Build adds to the image of a board with radios (board.Radios, or
// simulated ones: board.Hwsim): the radio programs with their shared libraries, the regulatory
// database, and the simulated radios' kernel modules.
type RadioUserland struct {
	Programs []Program
	Files    []File
	Modules  []string
}

// HasRadios reports whether a board's image needs the radio userland.
func HasRadios(b board.Board) bool { return len(b.Radios) > 0 || b.Hwsim != nil }

// RadioSysroot is where the board's radio programs come from: <cache>/sysroot-<arch> (`make
// deps` unpacks Debian's arm64 hostapd and its libraries there), or, for a board of the build
// machine's own architecture without such a sysroot, the build machine itself ("/": the
// hostapd of the Debian packages scripts/install-deps.sh installs).
func RadioSysroot(b board.Board, src string) (string, error) {
	dir := filepath.Join(DefaultCacheDir(src), "sysroot-"+b.Arch)
	if fileExists(filepath.Join(dir, RadioPrograms[0])) {
		return dir, nil
	}
	if b.Arch == runtime.GOARCH && fileExists(filepath.Join("/", RadioPrograms[0])) {
		return "/", nil
	}
	return "", fmt.Errorf("board %s has radios: no %s hostapd in %s (run `make deps`: scripts/fetch-arm64-userland.sh)", b.Name, b.Arch, dir)
}

// RadioUserlandFor returns what the image of b carries for its radios (empty for a board
// without radios). src is the meshroot source directory (for the cache).
func RadioUserlandFor(b board.Board, src string) (RadioUserland, error) {
	var u RadioUserland
	if !HasRadios(b) {
		return u, nil
	}
	sysroot, err := RadioSysroot(b, src)
	if err != nil {
		return u, err
	}
	for _, p := range RadioPrograms {
		u.Programs = append(u.Programs, Program{Path: p, Sysroot: sysroot})
	}
	db, sig, err := regulatoryDB(sysroot)
	if err != nil {
		return u, fmt.Errorf("board %s: %w", b.Name, err)
	}
	u.Files = append(u.Files, File{Path: RegulatoryDBPath, Host: db}, File{Path: RegulatoryDBPath + ".p7s", Host: sig})
	if h := b.Hwsim; h != nil {
		u.Modules = append(append(u.Modules, h.Module), h.Modules...)
	}
	return u, nil
}

// regulatoryDB finds the signed regulatory database in the sysroot or, as it is the same for
// every architecture, on the build machine (wireless-regdb): Debian's variant first.
func regulatoryDB(sysroot string) (db, sig string, err error) {
	roots := []string{sysroot}
	if sysroot != "/" {
		roots = append(roots, "/")
	}
	for _, root := range roots {
		for _, dir := range []string{"lib/firmware", "usr/lib/firmware"} {
			for _, name := range []string{"regulatory.db-debian", "regulatory.db"} {
				d := filepath.Join(root, dir, name)
				s := filepath.Join(root, dir, "regulatory.db.p7s"+name[len("regulatory.db"):])
				if root == "/" {
					// The build machine's alternatives symlinks are fine to follow here.
					var e1, e2 error
					d, e1 = filepath.EvalSymlinks(d)
					s, e2 = filepath.EvalSymlinks(s)
					if e1 != nil || e2 != nil {
						continue
					}
				}
				if regularFile(d) && regularFile(s) {
					return d, s, nil
				}
			}
		}
	}
	return "", "", errors.New("no regulatory.db with its .p7s signature (install wireless-regdb: `make deps`)")
}

func regularFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}
