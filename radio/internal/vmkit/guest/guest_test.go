package guest

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

type entry struct {
	name string
	typ  byte
	body string
}

func archive(t testing.TB, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o755, Typeflag: e.typ}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		} else {
			h.Linkname = "target"
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestUnpack(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []entry
		padding int
		want    map[string]string // files under root
		wantN   int
		wantErr string
	}{
		{
			name: "binaries and libraries, padded like a block device",
			entries: []entry{
				{"usr/sbin/hostapd", tar.TypeReg, "elf"},
				{"lib/x86_64-linux-gnu/libnl-3.so.200", tar.TypeReg, "lib"},
				{"lib64/ld-linux-x86-64.so.2", tar.TypeReg, "ld"},
				{"etc/roamtest.args", tar.TypeReg, "-roams 2\n"},
				{"usr/lib/link", tar.TypeSymlink, ""},
			},
			padding: 4096,
			want: map[string]string{
				"usr/sbin/hostapd": "elf", "lib/x86_64-linux-gnu/libnl-3.so.200": "lib",
				"lib64/ld-linux-x86-64.so.2": "ld", "etc/roamtest.args": "-roams 2\n",
			},
			wantN: 4,
		},
		{
			name:    "outside the allowed directories",
			entries: []entry{{"usr/bin/x", tar.TypeReg, "x"}, {"bin/sh", tar.TypeReg, "sh"}},
			want:    map[string]string{"usr/bin/x": "x"},
			wantN:   1,
			wantErr: `"bin/sh" outside the allowed directories`,
		},
		{
			name:    "climbing out with dot-dot",
			entries: []entry{{"usr/../../tmp/x", tar.TypeReg, "x"}},
			want:    map[string]string{},
			wantErr: "outside the allowed directories",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			path := filepath.Join(t.TempDir(), "bundle.tar")
			b := append(archive(t, tc.entries), make([]byte, tc.padding)...)
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			n, err := Unpack(path, root)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("Unpack() error = %v; want %q", err, tc.wantErr)
			}
			if n != tc.wantN {
				t.Errorf("Unpack() = %d files; want %d", n, tc.wantN)
			}
			got := map[string]string{}
			_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
				if err == nil && d.Type().IsRegular() {
					b, _ := os.ReadFile(p)
					rel, _ := filepath.Rel(root, p)
					got[rel] = string(b)
				}
				return err
			})
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("files under root (-want +got):\n%s", diff)
			}
		})
	}
}

func TestUnpackMissing(t *testing.T) {
	if _, err := Unpack(filepath.Join(t.TempDir(), "none.tar"), t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Unpack(missing) error = %v; want os.ErrNotExist", err)
	}
}

// FuzzUnpack feeds arbitrary archives: Unpack returns an error or writes only below root.
func FuzzUnpack(f *testing.F) {
	f.Add(archive(f, []entry{{"usr/sbin/hostapd", tar.TypeReg, "elf"}}))
	f.Add(archive(f, []entry{{"../etc/x", tar.TypeReg, "x"}}))
	f.Add(archive(f, []entry{{"lib/a", tar.TypeSymlink, ""}, {"etc/b", tar.TypeReg, "b"}}))
	f.Add([]byte("not a tar archive"))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		root := filepath.Join(dir, "root")
		n, err := unpack(bytes.NewReader(b), "fuzz.tar", root)
		if n < 0 {
			t.Fatalf("unpack() = %d files", n)
		}
		_ = err
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if e.Name() != "root" {
				t.Fatalf("unpack() wrote %s outside root", e.Name())
			}
		}
	})
}

func TestPoll(t *testing.T) {
	calls := 0
	err := Poll(context.Background(), time.Second, time.Millisecond, func() error {
		calls++
		if calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Errorf("Poll() = %v after %d calls; want nil after 3", err, calls)
	}
	want := errors.New("never")
	err = Poll(context.Background(), 20*time.Millisecond, time.Millisecond, func() error { return want })
	if !errors.Is(err, want) || !strings.HasPrefix(err.Error(), "after 20ms: ") {
		t.Errorf("Poll(never) = %v; want after 20ms: never", err)
	}
}

func TestReporter(t *testing.T) {
	var buf bytes.Buffer
	r := NewReporter(&buf, "XTEST")
	start := time.Now()
	r.Report("up", start, nil, "fine")
	r.Report("down", start, errors.New("broken"), "context")
	r.Metric("roam-p95", 12.5, "ms")
	r.Note("seen %d", 3)
	d := r.Done(nil)
	if want := (Done{OK: false, Checks: 2, Failed: 1}); d != want {
		t.Errorf("Done() = %+v; want %+v", d, want)
	}
	want := `XTEST {"check":"up","ok":true,"detail":"fine","ms":0}
XTEST {"check":"down","ok":false,"detail":"broken (context)","ms":0}
XTEST-METRIC {"metric":"roam-p95","value":12.5,"unit":"ms"}
XTEST-NOTE seen 3
XTEST-DONE {"ok":false,"checks":2,"failed":1}
`
	got := regexp.MustCompile(`"ms":[0-9]+`).ReplaceAllString(buf.String(), `"ms":0`)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("output (-want +got):\n%s", diff)
	}
}
