// Package devcloudtest starts the reference cloud in-process for tests of other packages.
package devcloudtest

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"meshroot/provision/api"
	"meshroot/provision/devcloud"
)

// Cloud is a running in-process cloud.
type Cloud struct {
	*devcloud.Server
	// URL is the cloud's https URL on 127.0.0.1.
	URL string
	// Op is an operator client trusting the fleet CA.
	Op *api.Client
	// HTTP trusts the fleet CA (no client certificate).
	HTTP *http.Client

	stop func()
}

// Stop shuts the cloud down (the test's cleanup does it too); its data directory stays.
func (c *Cloud) Stop() {
	if c.stop != nil {
		c.stop()
	}
}

// Start runs a cloud with its data in dir (t.TempDir() when empty) until the test ends.
func Start(t testing.TB, dir string, cfg devcloud.Config) *Cloud {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	cfg.DataDir = dir
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := devcloud.New(cfg)
	if err != nil {
		t.Fatalf("devcloud.New() = %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			<-done
			s.Close()
		})
	}
	t.Cleanup(stop)
	hc, err := api.TrustCA(s.CACertPEM(), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	u := "https://" + ln.Addr().String()
	for i := 0; s.URL() == "" && i < 100; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	return &Cloud{Server: s, URL: u, HTTP: hc, Op: &api.Client{BaseURL: u, Token: s.AdminToken(), HTTP: hc}, stop: stop}
}
