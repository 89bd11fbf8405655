package bootenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"meshroot/internal/testenv"
)

// fwTools runs Debian's fw_printenv/fw_setenv (libubootenv-tool) against a file described by a
// fw_env.config in a temp dir.
type fwTools struct {
	t                 *testing.T
	printenv, setenv  string
	cfg, image, defen string
}

func newFwTools(t *testing.T, size int, redundant bool, fill byte) *fwTools {
	t.Helper()
	testenv.Integration(t)
	dir := t.TempDir()
	ft := &fwTools{
		t:        t,
		printenv: testenv.Command(t, "fw_printenv"),
		setenv:   testenv.Command(t, "fw_setenv"),
		cfg:      filepath.Join(dir, "fw_env.config"),
		image:    filepath.Join(dir, "env.img"),
		defen:    filepath.Join(dir, "default.env"),
	}
	total := size
	cfg := Config{{Device: ft.image, Offset: 0, Size: int64(size)}}
	if redundant {
		total = 2 * size
		cfg = append(cfg, ConfigLine{Device: ft.image, Offset: int64(size), Size: int64(size)})
	}
	if err := os.WriteFile(ft.image, bytes.Repeat([]byte{fill}, total), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ft.cfg, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ft.defen, []byte("bootdelay=0\nbootlimit=3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return ft
}

func (ft *fwTools) run(bin string, args ...string) string {
	ft.t.Helper()
	cmd := exec.Command(bin, append([]string{"-c", ft.cfg, "-f", ft.defen}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		ft.t.Fatalf("%s %q: %v\nstderr: %s", filepath.Base(bin), args, err, stderr.String())
	}
	return stdout.String()
}

func (ft *fwTools) print() map[string]string {
	ft.t.Helper()
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSuffix(ft.run(ft.printenv), "\n"), "\n") {
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			ft.t.Fatalf("fw_printenv line %q has no '='", line)
		}
		m[k] = v
	}
	return m
}

func (ft *fwTools) store(t *testing.T) (*Store, func()) {
	t.Helper()
	f, err := os.Open(ft.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg, err := ParseConfig(f)
	if err != nil {
		t.Fatal(err)
	}
	s, closeFn, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, func() { closeFn() }
}

// TestLabFwEnvInterop checks both directions: what fw_setenv writes we read, what we write
// fw_printenv reads, and that the same edits give the same bytes.
func TestLabFwEnvInterop(t *testing.T) {
	for _, tc := range []struct {
		size      int
		redundant bool
		fill      byte
	}{
		{0x4000, false, 0xFF},
		{0x4000, true, 0xFF},
		{0x20000, true, 0x00}, // the QEMU board's layout
		{0x20000, false, 0x00},
	} {
		t.Run(fmt.Sprintf("size=%#x,redundant=%v,fill=%#x", tc.size, tc.redundant, tc.fill), func(t *testing.T) {
			// Theirs → ours.
			ft := newFwTools(t, tc.size, tc.redundant, tc.fill)
			ft.run(ft.setenv, "boot_slot", "a", "upgrade_available", "0", "altbootcmd", "setenv boot_slot b; run x", "bootcount", "0")
			s, done := ft.store(t)
			got, err := s.Load()
			done()
			if err != nil {
				t.Fatalf("Load after fw_setenv = %v", err)
			}
			want := map[string]string{"bootdelay": "0", "bootlimit": "3", "boot_slot": "a", "upgrade_available": "0", "altbootcmd": "setenv boot_slot b; run x", "bootcount": "0"}
			if diff := cmp.Diff(want, got.Map()); diff != "" {
				t.Errorf("Load after fw_setenv mismatch (-want +got):\n%s", diff)
			}

			// Ours → theirs.
			s, done = ft.store(t)
			if err := s.Update(func(e *Env) error {
				e.Set("boot_slot", "b")
				e.Set("upgrade_available", "1")
				e.Delete("altbootcmd")
				return e.Set("meshroot_note", "spaces and ; semicolons")
			}); err != nil {
				t.Fatalf("Update = %v", err)
			}
			done()
			want["boot_slot"], want["upgrade_available"], want["meshroot_note"] = "b", "1", "spaces and ; semicolons"
			delete(want, "altbootcmd")
			if diff := cmp.Diff(want, ft.print()); diff != "" {
				t.Errorf("fw_printenv after our Update mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLabFwEnvBytes applies the same edits with fw_setenv on one image and with Store on
// another, and compares them after every step byte for byte from the flags byte through the
// terminating NUL of the data (layout, sorting, which copy is written, the flags value, from a
// blank device on), and checks every copy's CRC. The padding after the terminator is not
// compared: libubootenv 0.3.2 writes it from an uninitialised malloc buffer (it holds the bytes
// of a previous read or glibc chunk headers), so its CRC differs run to run; we zero the padding
// as U-Boot's "env export" does.
func TestLabFwEnvBytes(t *testing.T) {
	steps := [][]string{
		{"boot_slot", "a", "bootlimit", "3", "bootcount", "0", "upgrade_available", "0"},
		{"boot_slot", "b", "upgrade_available", "1"},
		{"bootcount", "1"},
		{"bootcount", "2", "Zeta", "upper case sorts first", "a.b", "dots"},
		{"upgrade_available"}, // delete
		{"altbootcmd", "if test ${boot_slot} = a; then setenv boot_slot b; else setenv boot_slot a; fi"},
	}
	for _, tc := range []struct {
		size      int
		redundant bool
		fill      byte
	}{
		{0x4000, true, 0xFF},
		{0x4000, false, 0xFF},
		{0x20000, true, 0x00},
	} {
		t.Run(fmt.Sprintf("size=%#x,redundant=%v", tc.size, tc.redundant), func(t *testing.T) {
			theirs := newFwTools(t, tc.size, tc.redundant, tc.fill)
			ours := newFwTools(t, tc.size, tc.redundant, tc.fill)
			// Repeat the steps so the flags byte goes around more than once per copy.
			for round := 0; round < 3; round++ {
				for i, step := range steps {
					theirs.run(theirs.setenv, step...)
					s, done := ours.store(t)
					err := s.Update(func(e *Env) error {
						if len(e.Names()) == 0 {
							e.Set("bootdelay", "0") // fw_setenv's default environment
							e.Set("bootlimit", "3")
						}
						for j := 0; j < len(step); j += 2 {
							v := ""
							if j+1 < len(step) {
								v = step[j+1]
							}
							if err := e.Set(step[j], v); err != nil {
								return err
							}
						}
						return nil
					})
					done()
					if err != nil {
						t.Fatalf("round %d step %d: Update = %v", round, i, err)
					}
					a, _ := os.ReadFile(theirs.image)
					b, _ := os.ReadFile(ours.image)
					if err := sameMeaningfulBytes(a, b, tc.size, tc.redundant); err != nil {
						t.Fatalf("round %d step %d (%q): %v", round, i, step, err)
					}
				}
			}
		})
	}
}

// sameMeaningfulBytes compares two environment images copy by copy: CRC valid in both (or
// invalid in both), the same flags byte, the same data through the "\x00\x00" terminator.
func sameMeaningfulBytes(a, b []byte, size int, redundant bool) error {
	if len(a) != len(b) {
		return fmt.Errorf("image sizes %d and %d differ", len(a), len(b))
	}
	copies := 1
	if redundant {
		copies = 2
	}
	for c := 0; c < copies; c++ {
		ca, cb := a[c*size:(c+1)*size], b[c*size:(c+1)*size]
		_, fa, oka, erra := Decode(ca, redundant)
		_, fb, okb, errb := Decode(cb, redundant)
		if oka != okb || (erra == nil) != (errb == nil) {
			return fmt.Errorf("copy %d: fw_setenv crc ok=%v err=%v; ours crc ok=%v err=%v", c, oka, erra, okb, errb)
		}
		if !oka {
			continue
		}
		if fa != fb {
			return fmt.Errorf("copy %d: flags byte fw_setenv %#x, ours %#x", c, fa, fb)
		}
		off := 4
		if redundant {
			off = 5
		}
		end := bytes.Index(ca[off:], []byte{0, 0})
		if end < 0 {
			return fmt.Errorf("copy %d: fw_setenv data has no terminator", c)
		}
		end += off + 2
		if !bytes.Equal(ca[4:end], cb[4:end]) {
			at := 4
			for ca[at] == cb[at] {
				at++
			}
			return fmt.Errorf("copy %d: bytes differ first at %#x: fw_setenv %q, ours %q", c, at, ca[at:end], cb[at:end])
		}
	}
	return nil
}
