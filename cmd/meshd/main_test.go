package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"meshroot/firmware"
	"meshroot/internal/testenv"
)

type syncBuffer = testenv.Buffer

func TestRunDevelopment(t *testing.T) {
	root := t.TempDir()
	var stdout, stderr syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-root", root, "-board", "qemu-x86_64"}, &stdout, &stderr)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(stdout.String(), firmware.ReadyMarker) {
		if time.Now().After(deadline) {
			t.Fatalf("no ready line; stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	var line string
	for _, l := range strings.Split(stdout.String(), "\n") {
		if strings.HasPrefix(l, firmware.ReadyMarker) {
			line = l
		}
	}
	info, err := firmware.ParseReadyLine(line)
	if err != nil || info.Board != "qemu-x86_64" || info.Version != "dev" {
		t.Errorf("ready line %q = %+v, %v; want board qemu-x86_64, version dev", line, info, err)
	}
	// The PID file lets `meshd -halt` find this meshd; here it is this test process, so only
	// check the file, then stop through the context.
	if _, err := os.Stat(filepath.Join(root, firmware.PIDFile)); err != nil {
		t.Errorf("PID file: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run() = %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after cancel")
	}
}

func TestRunFlags(t *testing.T) {
	root := t.TempDir()
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"-root", root, "-version"}, &out, &errb); err != nil || out.String() != "dev\n" {
		t.Errorf("meshd -version = %q, %v; want dev", out.String(), err)
	}
	if err := run(context.Background(), []string{"-root", root, "-poweroff"}, &out, &errb); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Errorf("meshd -poweroff without a running meshd = %v; want not running", err)
	}
	if err := run(context.Background(), []string{"-boot", "maybe"}, &out, &errb); err == nil {
		t.Errorf("meshd -boot maybe = nil; want an error")
	}
	if err := run(context.Background(), []string{"stray"}, &out, &errb); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("meshd stray = %v; want usage", err)
	}
}

func TestBootMode(t *testing.T) {
	for _, tc := range []struct {
		flag, root string
		want       bool
	}{
		{"true", "/x", true},
		{"false", "/", false},
		{"auto", t.TempDir(), false}, // not "/": never the device
	} {
		got, err := bootMode(tc.flag, tc.root)
		if err != nil || got != tc.want {
			t.Errorf("bootMode(%q, %q) = %v, %v; want %v", tc.flag, tc.root, got, err, tc.want)
		}
	}
	// A test process is not started by init: auto is false on "/" too.
	if got, _ := bootMode("auto", "/"); got && os.Getppid() != 1 {
		t.Errorf("bootMode(auto, /) = true for a process whose parent is not PID 1")
	}
}
