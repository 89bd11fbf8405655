package status

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"meshroot/firmware"
	"meshroot/firmware/logship"
	"meshroot/firmware/router/dhcpd"
	"meshroot/firmware/router/dns"
	"meshroot/firmware/router/wan"
	"meshroot/firmware/vpnhook"
)

func sample() Status {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	return Status{Board: "qemu-virt-arm64", Version: `1.0 "rc"`, Hostname: "meshroot", Time: now, UptimeSeconds: 12.5, Persistent: true,
		Services: []firmware.ServiceStatus{{Name: "wan", State: firmware.StateUp}, {Name: "ota", State: firmware.StateFailed, Restarts: 2, LastError: "no root"}},
		WAN: &wan.State{Interface: "eth0", Mode: "dhcp", Phase: wan.PhaseBound, Address: netip.MustParsePrefix("100.64.0.100/24"),
			LeaseExpires: now.Add(time.Hour), Leases: 3},
		LAN:        LAN{Bridge: "br-lan", Address: "192.168.1.1/24", Leases: 2, DHCP: &dhcpd.Stats{Discover: 2, Ack: 3}},
		DNS:        &dns.Stats{Queries: 10, Local: 4, Forwarded: 6},
		Firewall:   Firewall{Applied: true, DroppedInput: 7},
		Onboarding: Onboarding{Phase: "profile", SiteID: "lab-site", ProfileVersion: 2, Enrolled: true},
		Profile:    &Profile{Version: 2, SiteID: "lab-site", ExpiresAt: now.Add(24 * time.Hour), HasVPN: true},
		VPN:        vpnhook.Status{State: vpnhook.StateRunning, Tunnels: []vpnhook.TunnelStatus{{Name: "tunnel1", Outside: "198.51.100.2", IKE: "Established", ESP: "Established", BGP: "Established"}}},
		OTA:        OTA{State: "waiting"},
		Logs:       &logship.Stats{Pending: 3, Dropped: 1},
	}
}

func TestStatusEndpoint(t *testing.T) {
	h := Handler(sample, func(s string) string { return strings.ReplaceAll(s, "lab-site", "[redacted]") })
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/status", nil))
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("GET /status = %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	var got Status
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("GET /status body: %v", err)
	}
	if got.Board != "qemu-virt-arm64" || got.WAN.Address.String() != "100.64.0.100/24" || got.Onboarding.SiteID != "[redacted]" {
		t.Errorf("GET /status = %+v; want the sample, scrubbed", got)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/status", strings.NewReader("{}")))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /status = %d; want 405 (read-only)", rec.Code)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/secrets", nil))
	if rec.Code != 404 {
		t.Errorf("GET /secrets = %d; want 404", rec.Code)
	}
}

var (
	metricLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? (\S+)$`)
	helpLine   = regexp.MustCompile(`^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$`)
)

// checkExposition checks the text format: every sample's family has a TYPE before it, names
// and labels are well formed, values are numbers, families are not split.
func checkExposition(t *testing.T, text string) map[string]float64 {
	t.Helper()
	typed := map[string]string{}
	samples := map[string]float64{}
	last := ""
	closed := map[string]bool{}
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if m := helpLine.FindStringSubmatch(line); m != nil {
			if m[1] == "TYPE" {
				if _, dup := typed[m[2]]; dup {
					t.Errorf("line %d: second TYPE for %s", i+1, m[2])
				}
				typed[m[2]] = m[3]
			}
			continue
		}
		m := metricLine.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("line %d: %q is not a sample", i+1, line)
			continue
		}
		name := m[1]
		if typed[name] == "" {
			t.Errorf("line %d: %s has no TYPE before it", i+1, name)
		}
		if name != last {
			if closed[name] {
				t.Errorf("line %d: family %s split", i+1, name)
			}
			closed[last] = true
			last = name
		}
		if _, err := strconv.ParseFloat(m[len(m)-1], 64); err != nil {
			t.Errorf("line %d: value %q", i+1, m[len(m)-1])
		}
		samples[strings.TrimSuffix(line, " "+m[len(m)-1])] = must(strconv.ParseFloat(m[len(m)-1], 64))
	}
	return samples
}

func must(v float64, _ error) float64 { return v }

func TestMetrics(t *testing.T) {
	rec := httptest.NewRecorder()
	Handler(sample, nil).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type = %q", ct)
	}
	s := checkExposition(t, string(body))
	for k, want := range map[string]float64{
		`meshroot_info{board="qemu-virt-arm64",version="1.0 \"rc\""}`:     1,
		`meshroot_service_up{service="wan"}`:                              1,
		`meshroot_service_up{service="ota"}`:                              0,
		`meshroot_service_restarts_total{service="ota"}`:                  2,
		`meshroot_wan_up{mode="dhcp"}`:                                    1,
		`meshroot_wan_lease_remaining_seconds`:                            3600,
		`meshroot_dhcp_leases`:                                            2,
		`meshroot_dns_answers_total{result="forwarded"}`:                  6,
		`meshroot_firewall_dropped_packets_total{chain="input"}`:          7,
		`meshroot_vpn_tunnel_up{outside="198.51.100.2",tunnel="tunnel1"}`: 1,
		`meshroot_logs_dropped_lines_total`:                               1,
		`meshroot_onboarding_phase{phase="profile"}`:                      1,
	} {
		if got, ok := s[k]; !ok || got != want {
			t.Errorf("metric %s = %v (present %v); want %v", k, got, ok, want)
		}
	}
}

func TestReadMemory(t *testing.T) {
	m := ReadMemory("/")
	if m.RSSBytes == 0 || m.GoHeapBytes == 0 || m.Goroutines == 0 {
		t.Errorf("ReadMemory(/) = %+v; want this process's numbers", m)
	}
	if m := ReadMemory(t.TempDir()); m.RSSBytes != 0 {
		t.Errorf("ReadMemory(empty root) RSS = %d; want 0", m.RSSBytes)
	}
}
