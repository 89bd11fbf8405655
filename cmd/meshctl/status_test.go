package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"meshroot/firmware"
	"meshroot/firmware/router/wan"
	"meshroot/firmware/status"
	"meshroot/firmware/vpnhook"
)

func TestStatusCommand(t *testing.T) {
	st := status.Status{Board: "qemu-virt-arm64", Version: "0.2.0", Hostname: "meshroot", UptimeSeconds: 75,
		Services: []firmware.ServiceStatus{{Name: "wan", State: firmware.StateUp}, {Name: "ota", State: firmware.StateUp, Restarts: 1}},
		WAN: &wan.State{Interface: "eth0", Mode: "dhcp", Phase: wan.PhaseBound, Address: netip.MustParsePrefix("100.64.0.100/24"),
			Gateway: netip.MustParseAddr("100.64.0.1"), DNS: []netip.Addr{netip.MustParseAddr("100.64.0.53")}, LeaseExpires: time.Date(2026, 5, 1, 13, 0, 0, 0, time.UTC)},
		LAN:        status.LAN{Bridge: "br-lan", Address: "192.168.1.1/24", Leases: 2},
		Firewall:   status.Firewall{Applied: true, IKEFrom: []string{"198.51.100.2"}},
		Onboarding: status.Onboarding{Phase: "profile", SiteID: "lab-site"},
		Profile:    &status.Profile{Version: 2, SiteID: "lab-site", SiteName: "Lab"},
		VPN:        vpnhook.Status{State: vpnhook.StateUnavailable, Detail: "vpn: not available in this build"},
		OTA:        status.OTA{State: "disabled", Detail: "no TUF root"},
	}
	srv := httptest.NewServer(status.Handler(func() status.Status { return st }, nil))
	defer srv.Close()
	out, _, err := provRun(t, "status", "--device", srv.URL)
	if err != nil {
		t.Fatalf("meshctl status = %v", err)
	}
	for _, want := range []string{
		"qemu-virt-arm64 0.2.0 (meshroot), up 1m15s",
		"eth0 dhcp bound 100.64.0.100/24 via 100.64.0.1, dns 100.64.0.53, lease until 2026-05-01T13:00:00Z",
		"br-lan 192.168.1.1/24, 2 leases",
		"applied, dropped 0 in / 0 forwarded, IKE from 198.51.100.2",
		"profile, site lab-site",
		"v2 of lab-site (Lab)",
		"unavailable: vpn: not available in this build",
		"ota         disabled: no TUF root",
		"wan up, ota up (1 restarts)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("meshctl status output lacks %q:\n%s", want, out)
		}
	}
	out, _, err = provRun(t, "status", "--device", srv.URL, "--json")
	var back status.Status
	if err != nil || json.Unmarshal([]byte(out), &back) != nil || back.Board != st.Board {
		t.Errorf("meshctl status --json = %v, %q", err, out)
	}
	out, _, err = provRun(t, "status", "--device", srv.URL, "--metrics")
	if err != nil || !strings.Contains(out, `meshroot_vpn_state{state="unavailable"} 1`) {
		t.Errorf("meshctl status --metrics = %v:\n%s", err, out)
	}
	if _, _, err := provRun(t, "status", "--device", "192.168.1.1"); err == nil {
		t.Errorf("meshctl status --device without a scheme = nil error")
	}
	down := httptest.NewServer(http.NotFoundHandler())
	defer down.Close()
	if _, _, err := provRun(t, "status", "--device", down.URL); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("meshctl status against a 404 = %v", err)
	}
}
