package bootenv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func mustEnv(t *testing.T, m map[string]string) *Env {
	t.Helper()
	e, err := FromMap(m)
	if err != nil {
		t.Fatalf("FromMap(%v) = %v", m, err)
	}
	return e
}

func TestEncodeLayout(t *testing.T) {
	e := mustEnv(t, map[string]string{"bootcmd": "run x", "a": "1", "B": "2"})
	for _, tc := range []struct {
		redundant bool
		off       int
	}{{false, 4}, {true, 5}} {
		img, err := Encode(e, 64, tc.redundant, 7)
		if err != nil {
			t.Fatalf("Encode(redundant=%v) = %v", tc.redundant, err)
		}
		want := []byte("B=2\x00a=1\x00bootcmd=run x\x00\x00")
		if got := img[tc.off : tc.off+len(want)]; !bytes.Equal(got, want) {
			t.Errorf("Encode(redundant=%v) data = %q; want %q", tc.redundant, got, want)
		}
		if rest := img[tc.off+len(want):]; !bytes.Equal(rest, make([]byte, len(rest))) {
			t.Errorf("Encode(redundant=%v) padding = %x; want zeros", tc.redundant, rest)
		}
		if got, want := binary.LittleEndian.Uint32(img), crc32.ChecksumIEEE(img[tc.off:]); got != want {
			t.Errorf("Encode(redundant=%v) crc = %#x; want %#x", tc.redundant, got, want)
		}
		if tc.redundant && img[4] != 7 {
			t.Errorf("Encode(redundant) flags = %d; want 7", img[4])
		}
		got, _, ok, err := Decode(img, tc.redundant)
		if err != nil || !ok {
			t.Fatalf("Decode(Encode()) = ok %v, %v", ok, err)
		}
		if diff := cmp.Diff(e.Map(), got.Map()); diff != "" {
			t.Errorf("Decode(Encode()) mismatch (-want +got):\n%s", diff)
		}
	}
}

func TestEncodeTooBig(t *testing.T) {
	e := mustEnv(t, map[string]string{"x": strings.Repeat("y", 100)})
	if _, err := Encode(e, 64, true, 0); err == nil {
		t.Errorf("Encode(104-byte env into 64) = nil error; want an error")
	}
}

func TestSetRejects(t *testing.T) {
	e := New()
	for _, name := range []string{"", "a=b", "a\x00", ".flags"} {
		if err := e.Set(name, "v"); err == nil {
			t.Errorf("Set(%q) = nil; want an error", name)
		}
	}
	if err := e.Set("a", "x\x00y"); err == nil {
		t.Errorf("Set(a, value with NUL) = nil; want an error")
	}
}

func TestParseData(t *testing.T) {
	for _, tc := range []struct {
		name string
		data string
		want map[string]string
	}{
		{"plain", "a=1\x00b=2\x00\x00junk=3\x00", map[string]string{"a": "1", "b": "2"}},
		{"no equals skipped", "a=1\x00garbage\x00b=2\x00\x00", map[string]string{"a": "1", "b": "2"}},
		{"later duplicate wins", "a=1\x00a=2\x00\x00", map[string]string{"a": "2"}},
		{"empty value kept", "a=\x00\x00", map[string]string{"a": ""}},
		{"value with equals", "a=b=c\x00\x00", map[string]string{"a": "b=c"}},
		{"empty", "\x00", map[string]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := parseData([]byte(tc.data))
			if err != nil {
				t.Fatalf("parseData(%q) = %v", tc.data, err)
			}
			if diff := cmp.Diff(tc.want, e.Map()); diff != "" {
				t.Errorf("parseData(%q) mismatch (-want +got):\n%s", tc.data, diff)
			}
		})
	}
	if _, err := parseData([]byte("a=1")); err == nil {
		t.Errorf("parseData(unterminated) = nil error; want an error")
	}
}

func TestFlagsVariable(t *testing.T) {
	e, err := parseData([]byte("a=1\x00b=2\x00.flags=a:xr,b:sa,zz:d\x00\x00"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Set("a", "3"); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Set(read-only a) = %v; want ErrReadOnly", err)
	}
	if err := e.Set("b", "3"); err != nil {
		t.Errorf("Set(b) = %v; want nil", err)
	}
	data, err := e.marshalData(64)
	if err != nil {
		t.Fatal(err)
	}
	// libubootenv re-emits hex as 'h' and drops entries without attributes.
	want := "a=1\x00b=3\x00.flags=a:hr\x00\x00"
	if got := string(data[:len(want)]); got != want {
		t.Errorf("marshalData = %q; want %q", got, want)
	}
}

func TestPick(t *testing.T) {
	for _, tc := range []struct {
		v0, v1 bool
		f0, f1 byte
		scheme FlagScheme
		want   int
	}{
		{true, false, 9, 10, Incremental, 0},
		{false, true, 9, 1, Incremental, 1},
		{false, false, 9, 10, Incremental, 0},
		{true, true, 9, 10, Incremental, 1},
		{true, true, 10, 9, Incremental, 0},
		{true, true, 0xFF, 0, Incremental, 1},
		{true, true, 0, 0xFF, Incremental, 0},
		{true, true, 5, 5, Incremental, 0},
		{true, true, 1, 0, Boolean, 0},
		{true, true, 0, 1, Boolean, 1},
		{true, true, 1, 0xFF, Boolean, 1},
		{true, true, 0xFF, 1, Boolean, 0},
	} {
		if got := pick(tc.v0, tc.v1, tc.f0, tc.f1, tc.scheme); got != tc.want {
			t.Errorf("pick(%v, %v, %#x, %#x, %v) = %d; want %d", tc.v0, tc.v1, tc.f0, tc.f1, tc.scheme, got, tc.want)
		}
	}
}

func TestStoreRedundantAlternates(t *testing.T) {
	const size = 0x400
	for _, scheme := range []FlagScheme{Incremental, Boolean} {
		t.Run(scheme.String(), func(t *testing.T) {
			dev := NewMem(2*size, 0xFF)
			s, err := NewStore(size, scheme, Copy{dev, 0}, Copy{dev, size})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Load(); !errors.Is(err, ErrNoValidEnv) {
				t.Fatalf("Load(blank) = %v; want ErrNoValidEnv", err)
			}
			for i := 0; i < 300; i++ { // more than 256 saves: the flags byte wraps
				want := map[string]string{"n": strings.Repeat("x", i%7+1), "i": string(rune('a' + i%26))}
				if err := s.Save(mustEnv(t, want)); err != nil {
					t.Fatalf("Save #%d = %v", i, err)
				}
				s2, _ := NewStore(size, scheme, Copy{dev, 0}, Copy{dev, size})
				got, err := s2.Load()
				if err != nil {
					t.Fatalf("Load after save #%d = %v", i, err)
				}
				if diff := cmp.Diff(want, got.Map()); diff != "" {
					t.Fatalf("Load after save #%d mismatch (-want +got):\n%s", i, diff)
				}
				if cur, _ := s2.Current(); cur != (i+1)%2 {
					t.Fatalf("after save #%d copy in force = %d; want %d", i, cur, (i+1)%2)
				}
			}
		})
	}
}

// cutDev lets budget bytes through and then fails every write (a power cut mid-write).
type cutDev struct {
	*Mem
	budget int
}

var errCut = errors.New("power cut")

func (c *cutDev) WriteAt(p []byte, off int64) (int, error) {
	if c.budget <= 0 {
		return 0, errCut
	}
	n := len(p)
	if n > c.budget {
		n = c.budget
	}
	c.budget -= n
	c.Mem.WriteAt(p[:n], off)
	if n < len(p) {
		return n, errCut
	}
	return n, nil
}

func TestStoreSavePowerCut(t *testing.T) {
	const size = 0x200
	for _, scheme := range []FlagScheme{Incremental, Boolean} {
		base := NewMem(2*size, 0xFF)
		s, _ := NewStore(size, scheme, Copy{base, 0}, Copy{base, size})
		old := map[string]string{"boot_slot": "a", "bootcount": "0"}
		if err := s.Save(mustEnv(t, old)); err != nil {
			t.Fatal(err)
		}
		if err := s.Save(mustEnv(t, old)); err != nil { // both copies valid
			t.Fatal(err)
		}
		newer := map[string]string{"boot_slot": "b", "upgrade_available": "1", "bootcount": "0"}
		for cut := 0; cut <= size+1; cut++ {
			dev := &cutDev{Mem: NewMem(2*size, 0), budget: cut}
			copy(dev.buf, base.Bytes())
			s, _ := NewStore(size, scheme, Copy{dev, 0}, Copy{dev, size})
			err := s.Save(mustEnv(t, newer))
			s2, _ := NewStore(size, scheme, Copy{dev.Mem, 0}, Copy{dev.Mem, size})
			got, lerr := s2.Load()
			if lerr != nil {
				t.Fatalf("%v: cut at %d: Load = %v; want a valid copy", scheme, cut, lerr)
			}
			switch {
			case err == nil:
				if diff := cmp.Diff(newer, got.Map()); diff != "" {
					t.Errorf("%v: cut at %d after a complete save: env mismatch (-want +got):\n%s", scheme, cut, diff)
				}
			case !cmp.Equal(got.Map(), old) && !cmp.Equal(got.Map(), newer):
				t.Errorf("%v: cut at %d: env = %v; want the old or the new one", scheme, cut, got.Map())
			}
		}
	}
}

func TestStorePlain(t *testing.T) {
	dev := NewMem(0x100, 0)
	s, err := NewStore(0x100, Incremental, Copy{dev, 0})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"bootdelay": "0", "bootcmd": "source 0x4040000"}
	if err := s.Update(func(e *Env) error {
		for k, v := range want {
			if err := e.Set(k, v); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("Update = %v", err)
	}
	got, err := s.Load()
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	if diff := cmp.Diff(want, got.Map()); diff != "" {
		t.Errorf("Load mismatch (-want +got):\n%s", diff)
	}
}

func TestParseConfig(t *testing.T) {
	in := "# comment\n/dev/vda 0x80000 0x20000 0x20000\n\n/dev/vda 655360 20000\n/dev/ignored 0 1\n"
	got, err := ParseConfig(strings.NewReader(in))
	if err != nil {
		t.Fatalf("ParseConfig = %v", err)
	}
	want := Config{
		{Device: "/dev/vda", Offset: 0x80000, Size: 0x20000, SectorSize: 0x20000},
		{Device: "/dev/vda", Offset: 0xA0000, Size: 0x20000},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseConfig mismatch (-want +got):\n%s", diff)
	}
	back, err := ParseConfig(strings.NewReader(got.String()))
	if err != nil {
		t.Fatalf("ParseConfig(String()) = %v", err)
	}
	want[1].SectorSize = 0x20000 // String writes the size when no sector size is known
	if diff := cmp.Diff(want, back); diff != "" {
		t.Errorf("ParseConfig(String()) mismatch (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"", "# only\n", "/dev/x zz 100\n", "/dev/x 0 0\n", "/dev/a 0 100\n/dev/b 0 200\n"} {
		if _, err := ParseConfig(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseConfig(%q) = nil error; want an error", bad)
		}
	}
}
