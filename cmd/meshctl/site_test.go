package main

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"meshroot/firmware/sitelab"
	"meshroot/firmware/status"
	"meshroot/firmware/vpnhook"
	"meshroot/image"
)

func TestTakeLock(t *testing.T) {
	old := lockDir
	lockDir = t.TempDir()
	defer func() { lockDir = old }()
	release, err := takeLock("mrtest")
	if err != nil {
		t.Fatalf("takeLock() = %v; want the lock", err)
	}
	if b, _ := os.ReadFile(lockPath("mrtest")); strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Errorf("lock file = %q; want our pid %d", b, os.Getpid())
	}
	if _, err := takeLock("mrtest"); err == nil || !strings.Contains(err.Error(), "another virtual site is running") {
		t.Errorf("second takeLock() = %v; want refused while held", err)
	}
	if r, err := takeLock("mrother"); err != nil {
		t.Errorf("takeLock(another prefix) = %v; want it", err)
	} else {
		r()
	}
	release()
	if r, err := takeLock("mrtest"); err != nil {
		t.Errorf("takeLock() after release = %v; want it", err)
	} else {
		r()
	}
}

func TestBytesStr(t *testing.T) {
	for _, tc := range []struct {
		n    uint64
		want string
	}{{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"}, {3 << 20, "3.0 MiB"}} {
		if got := bytesStr(tc.n); got != tc.want {
			t.Errorf("bytesStr(%d) = %q; want %q", tc.n, got, tc.want)
		}
	}
}

func TestRoutesStr(t *testing.T) {
	tunnels := []vpnhook.TunnelStatus{{Name: "tunnel1", Outside: "198.51.100.2"}, {Name: "tunnel2", Outside: "203.0.113.2"}}
	for _, tc := range []struct {
		routes map[string][]string
		want   string
	}{
		{nil, "none"},
		{map[string][]string{"10.0.0.0/16": {"198.51.100.2"}}, "10.0.0.0/16 via tunnel1 198.51.100.2"},
		{map[string][]string{"10.1.0.0/16": {"198.51.100.2", "203.0.113.2"}, "10.0.0.0/16": {"192.0.2.9"}},
			"10.0.0.0/16 via 192.0.2.9; 10.1.0.0/16 via tunnel1 198.51.100.2, tunnel2 203.0.113.2"},
	} {
		st := &status.Status{VPN: vpnhook.Status{Tunnels: tunnels, Routes: tc.routes}}
		if got := routesStr(st); got != tc.want {
			t.Errorf("routesStr(%v) = %q; want %q", tc.routes, got, tc.want)
		}
	}
}

// TestSiteViewRender draws the screen from a status as the router serves it.
func TestSiteViewRender(t *testing.T) {
	v := newSiteView(siteOptions{Manifest: image.Manifest{Board: "qemu-virt-arm64", Version: "v1"}, Every: time.Second}, "/x/run")
	v.site = &sitelab.Site{}
	v.step(sitelab.Step{Name: sitelab.StepReady, At: 2300 * time.Millisecond, Detail: "wan dhcp"})
	v.step(sitelab.Step{Name: sitelab.StepVPCPing, At: 5700 * time.Millisecond})
	st := &status.Status{UptimeSeconds: 61, LAN: status.LAN{Address: "192.168.1.1/24", Leases: 1},
		Profile: &status.Profile{Version: 2, SiteID: "site-1"},
		VPN: vpnhook.Status{State: "running", Tunnels: []vpnhook.TunnelStatus{
			{Name: "tunnel1", Outside: "198.51.100.2", IKE: "Established", ESP: "Established", BGP: "Established", PrefixesIn: 1, PrefixesOut: 1, BytesIn: 2048},
			{Name: "tunnel2", Outside: "203.0.113.2", IKE: "Negotiating", ESP: "Down"},
		}, Routes: map[string][]string{"10.0.0.0/16": {"198.51.100.2"}}}}
	v.st, v.stAt = st, time.Now()
	v.pings, v.answered, v.lastRTT = 3, 2, 3400*time.Microsecond
	var b strings.Builder
	v.render(&b)
	got := b.String()
	for _, want := range []string{
		"router qemu-virt-arm64 v1",
		"meshctl site console --run-dir /x/run",
		"     2.3s  meshd ready",
		"LAN 192.168.1.1/24 (1 lease), profile v2 of site-1",
		"tunnel1    198.51.100.2  Established  Established  Established  1/1            2.0 KiB / 0 B",
		"tunnel2    203.0.113.2   Negotiating  Down         -",
		"learned routes: 10.0.0.0/16 via tunnel1 198.51.100.2",
		"ping LAN client -> VPC host: no lease yet",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("render() lacks %q; got:\n%s", want, got)
		}
	}
}

func TestWithRadios(t *testing.T) {
	for _, tt := range []struct {
		board string
		n     int
		args  []string
		want  []string
	}{
		{"qemu-virt-arm64", 2, nil, []string{"meshroot.hwsim=2"}},
		{"qemu-virt-arm64", 3, []string{"quiet"}, []string{"quiet", "meshroot.hwsim=3"}},
		{"qemu-virt-arm64", 0, []string{"quiet"}, []string{"quiet"}},
		{"qemu-virt-arm64", 2, []string{"meshroot.hwsim=1"}, []string{"meshroot.hwsim=1"}},
		{"qemu-x86_64", 2, nil, []string{"meshroot.hwsim=2"}},
		{"ipq807x", 2, nil, nil}, // real radios of its own
	} {
		got, err := withRadios(tt.board, tt.n, tt.args)
		if err != nil {
			t.Fatalf("withRadios(%s, %d, %q): %v", tt.board, tt.n, tt.args, err)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("withRadios(%s, %d, %q) = %q; want %q", tt.board, tt.n, tt.args, got, tt.want)
		}
	}
	if _, err := withRadios("qemu-virt-arm64", 9, nil); err == nil || !strings.Contains(err.Error(), "--radios") {
		t.Errorf("withRadios(9) = %v; want an error naming --radios", err)
	}
}
