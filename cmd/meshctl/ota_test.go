package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"meshroot/internal/testenv"
	"meshroot/ota/rollout"
)

func meshctl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, &out, &errb)
	return out.String() + errb.String(), err
}

func TestOTACommands(t *testing.T) {
	dir := t.TempDir()
	repoDir, keys := filepath.Join(dir, "repo"), filepath.Join(dir, "keys")
	common := []string{"--repo", repoDir, "--keys", keys}
	var all strings.Builder // everything meshctl printed, scanned for key material at the end
	must := func(args ...string) string {
		t.Helper()
		out, err := meshctl(t, append(args[:2:2], append(common, args[2:]...)...)...)
		if err != nil {
			t.Fatalf("meshctl %s = %v\n%s", strings.Join(args, " "), err, out)
		}
		all.WriteString(out)
		return out
	}
	must("ota", "keygen")
	for _, name := range []string{"root", "targets", "snapshot", "timestamp", "release"} {
		st, err := os.Stat(filepath.Join(keys, name+".key"))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("key %s: %v, mode %v; want a 0600 file", name, err, st.Mode().Perm())
		}
	}
	// An image directory as `meshctl image build` writes it.
	img := filepath.Join(dir, "image")
	os.MkdirAll(img, 0o755)
	os.WriteFile(filepath.Join(img, "vmlinuz"), bytes.Repeat([]byte("k"), 10000), 0o644)
	os.WriteFile(filepath.Join(img, "initramfs.cpio.xz"), bytes.Repeat([]byte("i"), 5000), 0o644)
	os.WriteFile(filepath.Join(img, "manifest.json"), []byte(`{"board":"qemu-virt-arm64","arch":"arm64","console":"ttyAMA0","version":"1.2.0",
		"kernel":{"name":"vmlinuz","size":10000},"initramfs":{"name":"initramfs.cpio.xz","size":5000}}`), 0o644)
	out := must("ota", "publish", "--image", img, "--waves", "now:1%,+1h:100%", "--window", "mon,tue@02:00+3h", "--min-version", "1.1.0")
	if !strings.Contains(out, "qemu-virt-arm64/stable/meshroot-1.2.0.img version=1.2.0") {
		t.Errorf("publish output = %q; want the release line", out)
	}
	slot := filepath.Join(dir, "slot.img")
	os.WriteFile(slot, []byte("a prebuilt slot image"), 0o644)
	must("ota", "publish", "--slot-image", slot, "--board", "ipq807x", "--version", "v2.0.0", "--channel", "beta")
	rel := "qemu-virt-arm64/stable/meshroot-1.2.0.img"
	must("ota", "rollout", "--release", rel, "--waves", "now:5%,+2h:50%,+2h:100%")
	must("ota", "halt", "--release", rel, "--reason", "smoke test")
	out = must("ota", "list")
	if !strings.Contains(out, `"halted":true`) || !strings.Contains(out, "ipq807x/beta/meshroot-2.0.0.img") || !strings.Contains(out, `"upto":103`) {
		t.Errorf("list = %q; want both releases, the new waves and the halt", out)
	}
	must("ota", "halt", "--release", rel, "--resume")
	must("ota", "rotate-root", "--also", "timestamp")
	must("ota", "refresh")
	if _, err := os.Stat(filepath.Join(repoDir, "metadata", "2.root.json")); err != nil {
		t.Errorf("after rotate-root: %v; want metadata/2.root.json", err)
	}
	for _, bad := range [][]string{
		{"ota", "publish", "--slot-image", slot},
		{"ota", "publish", "--image", img, "--slot-image", slot},
		{"ota", "rollout"},
		{"ota", "bogus"},
		{"ota", "publish", "--slot-image", slot, "--board", "b", "--version", "1.0.0", "--window", "someday"},
	} {
		if _, err := meshctl(t, append(bad[:2:2], append(common, bad[2:]...)...)...); err == nil {
			t.Errorf("meshctl %s = nil error; want an error", strings.Join(bad, " "))
		}
	}
	if out, err := meshctl(t, "ota", "publish", "-h"); err != nil || !strings.Contains(out, "-slot-image") {
		t.Errorf("meshctl ota publish -h = %v, %q; want the flags", err, out)
	}
	// No private key material in anything printed, and none in the served repository.
	keyFiles, _ := filepath.Glob(filepath.Join(keys, "*"))
	var served strings.Builder
	filepath.Walk(repoDir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			b, _ := os.ReadFile(p)
			served.Write(b)
		}
		return nil
	})
	for _, kf := range keyFiles {
		b, _ := os.ReadFile(kf)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) < 3 {
			t.Fatalf("key file %s: not PEM", kf)
		}
		body := strings.Join(lines[1:len(lines)-1], "")
		if strings.Contains(all.String(), body) || strings.Contains(served.String(), body) {
			t.Errorf("private key %s appears in meshctl's output or in the repository", filepath.Base(kf))
		}
	}
}

// syncBuffer is a bytes.Buffer safe to read while meshctl writes to it.
type syncBuffer = testenv.Buffer

func TestOTAServe(t *testing.T) {
	dir := t.TempDir()
	common := []string{"--repo", filepath.Join(dir, "repo"), "--keys", filepath.Join(dir, "keys")}
	if out, err := meshctl(t, append([]string{"ota", "keygen"}, common...)...); err != nil {
		t.Fatalf("keygen = %v\n%s", err, out)
	}
	slot := filepath.Join(dir, "slot.img")
	os.WriteFile(slot, []byte("image"), 0o644)
	if out, err := meshctl(t, append([]string{"ota", "publish", "--slot-image", slot, "--board", "b", "--version", "1.0.0"}, common...)...); err != nil {
		t.Fatalf("publish = %v\n%s", err, out)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"ota", "serve", "--addr", "127.0.0.1:0", "--halt-window", "4", "--halt-min", "2", "--halt-rate", "0.4"}, common...), &out, &errb)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve = %v", err)
		}
	}()
	re := regexp.MustCompile(`on (http://127\.0\.0\.1:\d+)`)
	var base string
	for i := 0; i < 200 && base == ""; i++ {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			base = m[1]
		}
		time.Sleep(10 * time.Millisecond)
	}
	if base == "" {
		t.Fatalf("serve printed %q; want its URL", out.String())
	}
	resp, err := http.Get(base + "/metadata/root.json")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET root.json = %v, %v", resp, err)
	}
	resp.Body.Close()
	rep := &rollout.HTTPReporter{BaseURL: base}
	for i, res := range []rollout.Result{rollout.RolledBack, rollout.RolledBack} {
		if err := rep.Report(ctx, rollout.Report{Device: fmt.Sprintf("d%d", i), Release: "b/stable/meshroot-1.0.0.img", Result: res}); err != nil {
			t.Fatalf("Report = %v", err)
		}
	}
	// Two rollbacks of two: the release is halted in the served metadata.
	lst, err := meshctl(t, append([]string{"ota", "list"}, common...)...)
	if err != nil || !strings.Contains(lst, `"halted":true`) {
		t.Errorf("list after two rollbacks = %q, %v; want the release halted", lst, err)
	}
}
