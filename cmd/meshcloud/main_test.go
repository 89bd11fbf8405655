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

	"meshroot/internal/testenv"
	"meshroot/provision/api"
	"meshroot/provision/devcloud"
)

type syncBuf = testenv.Buffer

func TestRunServesAndStops(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cloud")
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuf
	ready := make(chan *devcloud.Server, 1)
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, []string{"--listen", "127.0.0.1:0", "--data", dir, "--log-level", "debug"}, &out, &errb, func(s *devcloud.Server) { ready <- s })
	}()
	var s *devcloud.Server
	select {
	case s = <-ready:
	case err := <-done:
		t.Fatalf("serve() = %v before ready\n%s", err, errb.String())
	case <-time.After(20 * time.Second):
		t.Fatal("meshcloud did not start")
	}
	if !strings.Contains(out.String(), "fleet CA pin (sha256): "+s.CAPin()) {
		t.Errorf("stdout = %q; want the CA pin", out.String())
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := os.ReadFile(filepath.Join(dir, "admin.token"))
	hc, _ := api.TrustCA(caPEM, 10*time.Second)
	c := &api.Client{BaseURL: s.URL(), Token: strings.TrimSpace(string(tok)), HTTP: hc}
	if _, err := c.CreateSite(ctx, api.CreateSiteRequest{ID: "s1"}); err != nil {
		t.Errorf("CreateSite through meshcloud = %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve() after cancel = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("meshcloud did not stop")
	}
	if strings.Contains(errb.String(), strings.TrimSpace(string(tok))) {
		t.Errorf("meshcloud logged the admin token")
	}
}

func TestRunFlags(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"--log-level", "loud", "--data", t.TempDir()}, &out, &errb); err == nil {
		t.Errorf("run(--log-level loud) = nil error")
	}
	if err := run(context.Background(), []string{"extra"}, &out, &errb); err == nil {
		t.Errorf("run(extra) = nil error")
	}
	if err := run(context.Background(), []string{"-h"}, &out, &errb); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("run(-h) = %v; want flag.ErrHelp", err)
	}
}
