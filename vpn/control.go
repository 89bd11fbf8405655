package vpn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// DefaultControlSocket is where a running connection answers status queries (`meshctl vpn
// status`).
const DefaultControlSocket = "/run/meshroot/vpn.sock"

// ServeControl answers status queries for c on a unix socket at path (mode 0600: root only)
// until ctx ends: HTTP GET /status returns the Status as JSON (curl --unix-socket works too).
// A stale socket file from a crashed run is replaced; a live one is an error.
func ServeControl(ctx context.Context, path string, c *Connection) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("vpn control: %w", err)
	}
	if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
		conn.Close()
		return fmt.Errorf("vpn control: %s: another connection is running there", path)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("vpn control: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("vpn control: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(c.Status())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		os.Remove(path)
		return nil
	case err := <-done:
		os.Remove(path)
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("vpn control: %w", err)
	}
}

// QueryStatus asks the connection running behind the control socket at path for its status.
func QueryStatus(ctx context.Context, path string) (Status, error) {
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://vpn/status", nil)
	if err != nil {
		return Status{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return Status{}, fmt.Errorf("vpn status: no connection running at %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return Status{}, fmt.Errorf("vpn status: %s: %s", resp.Status, b)
	}
	var st Status
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&st); err != nil {
		return Status{}, fmt.Errorf("vpn status: %w", err)
	}
	return st, nil
}
