// Package status is the device's read-only status API on the LAN: GET /status (JSON: board,
// version, uptime, services, WAN, LAN and DHCP, DNS, firewall, onboarding, profile, VPN, radios
// and mesh, OTA, log shipping, memory) and GET /metrics (Prometheus text exposition format
// 0.0.4). Nothing in it is secret: the document is built from states that hold no keys, PSKs, tokens or
// passphrases, and every string goes through the log redactor's scrubber before it is served.
// `meshctl status --device http://ADDR` prints it.
package status

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"meshroot/firmware"
	"meshroot/firmware/logship"
	"meshroot/firmware/radiohook"
	"meshroot/firmware/router/dhcpd"
	"meshroot/firmware/router/dns"
	"meshroot/firmware/router/wan"
	"meshroot/firmware/vpnhook"
)

// Status is the document GET /status serves.
type Status struct {
	Board         string    `json:"board"`
	Version       string    `json:"version"`
	Hostname      string    `json:"hostname"`
	Time          time.Time `json:"time"`
	UptimeSeconds float64   `json:"uptime_s"`
	// Persistent is false when the data area is a RAM fallback.
	Persistent bool                     `json:"persistent_data"`
	Services   []firmware.ServiceStatus `json:"services"`
	WAN        *wan.State               `json:"wan,omitempty"`
	LAN        LAN                      `json:"lan"`
	DNS        *dns.Stats               `json:"dns,omitempty"`
	Firewall   Firewall                 `json:"firewall"`
	Onboarding Onboarding               `json:"onboarding"`
	Profile    *Profile                 `json:"profile,omitempty"`
	VPN        vpnhook.Status           `json:"vpn"`
	Radio      radiohook.Status         `json:"radio"`
	OTA        OTA                      `json:"ota"`
	Logs       *logship.Stats           `json:"logs,omitempty"`
	Memory     Memory                   `json:"memory"`
}

// LAN is the bridge and its DHCP server.
type LAN struct {
	Bridge  string       `json:"bridge"`
	Address string       `json:"address"`
	Leases  int          `json:"leases"`
	DHCP    *dhcpd.Stats `json:"dhcp,omitempty"`
}

// Firewall is the nftables table's state.
type Firewall struct {
	Applied bool     `json:"applied"`
	IKEFrom []string `json:"ike_from,omitempty"`
	// DroppedInput and DroppedForward count packets dropped by the default-deny rules.
	DroppedInput   uint64 `json:"dropped_input"`
	DroppedForward uint64 `json:"dropped_forward"`
	LastError      string `json:"last_error,omitempty"`
}

// Onboarding is the provisioning agent's progress.
type Onboarding struct {
	// Phase is the agent's phase ("unpaired", "pairing", "paired", "configured", "enrolling", "enrolled", "profile",
	// "failed") or "unavailable" when provisioning cannot run (no factory data).
	Phase          string `json:"phase"`
	Serial         string `json:"serial,omitempty"`
	SiteID         string `json:"site_id,omitempty"`
	ProfileVersion uint64 `json:"profile_version,omitempty"`
	Detail         string `json:"detail,omitempty"`
	// Enrolled is true once the device holds its certificate.
	Enrolled bool `json:"enrolled"`
}

// Profile is the site profile in force (identity fields only).
type Profile struct {
	Version   uint64    `json:"version"`
	SiteID    string    `json:"site_id"`
	SiteName  string    `json:"site_name"`
	ExpiresAt time.Time `json:"expires_at"`
	// Expired: the profile's expiry passed and nothing newer verified; it stays in force.
	Expired    bool   `json:"expired"`
	OTAChannel string `json:"ota_channel,omitempty"`
	WiFiSSID   string `json:"wifi_ssid,omitempty"`
	HasVPN     bool   `json:"has_vpn"`
}

// OTA is the updater's state.
type OTA struct {
	// State is "disabled" (why in Detail), "waiting" (for the repository location), "running".
	State       string `json:"state"`
	Detail      string `json:"detail,omitempty"`
	Slot        string `json:"running_slot,omitempty"`
	Repository  string `json:"repository,omitempty"`
	Channel     string `json:"channel,omitempty"`
	TrialJudged string `json:"trial,omitempty"`
}

// Memory is the process's memory use.
type Memory struct {
	RSSBytes        uint64 `json:"rss_bytes"`
	GoHeapBytes     uint64 `json:"go_heap_bytes"`
	GoSysBytes      uint64 `json:"go_sys_bytes"`
	Goroutines      int    `json:"goroutines"`
	SystemTotal     uint64 `json:"system_total_bytes,omitempty"`
	SystemAvailable uint64 `json:"system_available_bytes,omitempty"`
}

// Handler serves /status and /metrics from source; scrub (the log redactor's Scrub) is applied
// to the whole JSON document.
func Handler(source func() Status, scrub func(string) string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "read-only", http.StatusMethodNotAllowed)
			return
		}
		b, err := json.MarshalIndent(source(), "", "  ")
		if err != nil {
			http.Error(w, "status: "+err.Error(), http.StatusInternalServerError)
			return
		}
		if scrub != nil {
			b = []byte(scrub(string(b)))
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(append(b, '\n'))
	})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "read-only", http.StatusMethodNotAllowed)
			return
		}
		var sb strings.Builder
		WriteMetrics(&sb, source())
		out := sb.String()
		if scrub != nil {
			out = scrub(out)
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		io.WriteString(w, out)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, "meshroot device: GET /status (JSON), GET /metrics (Prometheus)\n")
	})
	return mux
}

// metrics writes Prometheus text: families in order, HELP and TYPE once each.
type metrics struct {
	w    io.Writer
	seen map[string]bool
}

func (m *metrics) family(name, typ, help string) {
	if m.seen[name] {
		return
	}
	m.seen[name] = true
	fmt.Fprintf(m.w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

func (m *metrics) sample(name string, labels map[string]string, v float64) {
	fmt.Fprint(m.w, name)
	if len(labels) > 0 {
		keys := make([]string, 0, len(labels))
		for k := range labels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + `="` + escapeLabel(labels[k]) + `"`
		}
		fmt.Fprint(m.w, "{"+strings.Join(parts, ",")+"}")
	}
	fmt.Fprintf(m.w, " %s\n", strconv.FormatFloat(v, 'g', -1, 64))
}

func (m *metrics) gauge(name, help string, labels map[string]string, v float64) {
	m.family(name, "gauge", help)
	m.sample(name, labels, v)
}

func (m *metrics) counter(name, help string, labels map[string]string, v float64) {
	m.family(name, "counter", help)
	m.sample(name, labels, v)
}

// escapeLabel escapes a label value (backslash, double quote, newline).
func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// WriteMetrics writes st in the Prometheus text format.
func WriteMetrics(w io.Writer, st Status) {
	m := &metrics{w: w, seen: map[string]bool{}}
	m.gauge("meshroot_info", "Firmware identity (always 1).", map[string]string{"board": st.Board, "version": st.Version}, 1)
	m.gauge("meshroot_uptime_seconds", "Time since boot.", nil, st.UptimeSeconds)
	m.gauge("meshroot_data_persistent", "1 when the data area is the flash partition, 0 for the RAM fallback.", nil, b2f(st.Persistent))
	for _, s := range st.Services {
		m.gauge("meshroot_service_up", "1 when the service is up.", map[string]string{"service": s.Name}, b2f(s.State == firmware.StateUp))
	}
	for _, s := range st.Services {
		m.counter("meshroot_service_restarts_total", "Restarts of the service since boot.", map[string]string{"service": s.Name}, float64(s.Restarts))
	}
	if st.WAN != nil {
		m.gauge("meshroot_wan_up", "1 when the WAN has an address and a default route.", map[string]string{"mode": st.WAN.Mode}, b2f(st.WAN.Up()))
		left := 0.0
		if !st.WAN.LeaseExpires.IsZero() {
			left = max(st.WAN.LeaseExpires.Sub(st.Time).Seconds(), 0)
		}
		m.gauge("meshroot_wan_lease_remaining_seconds", "Time left on the WAN's DHCP lease (0 without one).", nil, left)
		m.counter("meshroot_wan_leases_total", "DHCP leases obtained or renewed on the WAN.", nil, float64(st.WAN.Leases))
		m.counter("meshroot_wan_link_losses_total", "Carrier losses on the WAN port.", nil, float64(st.WAN.LinkLosses))
	}
	m.gauge("meshroot_dhcp_leases", "Active DHCP leases on the LAN.", nil, float64(st.LAN.Leases))
	if d := st.LAN.DHCP; d != nil {
		for _, c := range []struct {
			t string
			v uint64
		}{{"discover", d.Discover}, {"offer", d.Offer}, {"request", d.Request}, {"ack", d.Ack}, {"nak", d.Nak},
			{"release", d.Release}, {"decline", d.Decline}, {"inform", d.Inform}, {"dropped", d.Dropped}} {
			m.counter("meshroot_dhcp_messages_total", "DHCP messages handled on the LAN, by type.", map[string]string{"type": c.t}, float64(c.v))
		}
	}
	if d := st.DNS; d != nil {
		for _, c := range []struct {
			r string
			v uint64
		}{{"local", d.Local}, {"cached", d.Cached}, {"forwarded", d.Forwarded}, {"failed", d.Failed}} {
			m.counter("meshroot_dns_answers_total", "DNS queries answered, by how.", map[string]string{"result": c.r}, float64(c.v))
		}
	}
	m.gauge("meshroot_firewall_applied", "1 when the firewall table is in force.", nil, b2f(st.Firewall.Applied))
	m.counter("meshroot_firewall_dropped_packets_total", "Packets dropped by the default-deny rules.", map[string]string{"chain": "input"}, float64(st.Firewall.DroppedInput))
	m.counter("meshroot_firewall_dropped_packets_total", "", map[string]string{"chain": "forward"}, float64(st.Firewall.DroppedForward))
	m.gauge("meshroot_onboarding_phase", "The provisioning phase (1 for the current one).", map[string]string{"phase": st.Onboarding.Phase}, 1)
	if p := st.Profile; p != nil {
		m.gauge("meshroot_profile_version", "Version of the site profile in force.", nil, float64(p.Version))
		m.gauge("meshroot_profile_expired", "1 when the profile in force has expired (kept as the last good one).", nil, b2f(p.Expired))
	}
	m.gauge("meshroot_vpn_state", "The VPN service's state (1 for the current one).", map[string]string{"state": st.VPN.State}, 1)
	for _, t := range st.VPN.Tunnels {
		l := map[string]string{"tunnel": t.Name, "outside": t.Outside}
		m.gauge("meshroot_vpn_tunnel_up", "1 when the tunnel's IKE and ESP are established.", l, b2f(t.IKE == "Established" && t.ESP == "Established"))
		m.gauge("meshroot_vpn_bgp_up", "1 when the tunnel's BGP session is established.", l, b2f(t.BGP == "Established"))
		m.counter("meshroot_vpn_bytes_in_total", "Bytes received through the tunnel.", l, float64(t.BytesIn))
		m.counter("meshroot_vpn_bytes_out_total", "Bytes sent through the tunnel.", l, float64(t.BytesOut))
	}
	if st.Radio.State != "" {
		m.gauge("meshroot_radio_state", "The radio service's state (1 for the current one).", map[string]string{"state": st.Radio.State}, 1)
	}
	for _, r := range st.Radio.Radios {
		l := map[string]string{"radio": r.ID, "band": r.Band}
		m.gauge("meshroot_radio_up", "1 when the radio's hostapd serves (ENABLED).", l, b2f(r.State == "ENABLED"))
		m.gauge("meshroot_radio_stations", "Stations associated with the radio's BSS.", l, float64(r.Stations))
		m.counter("meshroot_radio_hostapd_restarts_total", "Restarts of the radio's hostapd after it ended.", l, float64(r.Restarts))
	}
	m.gauge("meshroot_ota_state", "The updater's state (1 for the current one).", map[string]string{"state": st.OTA.State}, 1)
	if l := st.Logs; l != nil {
		m.gauge("meshroot_logs_pending_lines", "Log lines waiting for upload.", nil, float64(l.Pending))
		m.counter("meshroot_logs_shipped_lines_total", "Log lines accepted by the cloud.", nil, float64(l.Shipped))
		m.counter("meshroot_logs_dropped_lines_total", "Log lines dropped on the device (buffer full).", nil, float64(l.Dropped))
		m.counter("meshroot_logs_upload_failures_total", "Failed log uploads.", nil, float64(l.Failures))
	}
	m.gauge("meshroot_memory_rss_bytes", "Resident set size of meshd.", nil, float64(st.Memory.RSSBytes))
	m.gauge("meshroot_memory_go_heap_bytes", "Go heap in use.", nil, float64(st.Memory.GoHeapBytes))
	m.gauge("meshroot_goroutines", "Goroutines in meshd.", nil, float64(st.Memory.Goroutines))
}

// ReadMemory reads meshd's RSS (/proc/self/status) and the system's memory (/proc/meminfo)
// under root, and the Go runtime's numbers.
func ReadMemory(root string) Memory {
	var m Memory
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.GoHeapBytes, m.GoSysBytes, m.Goroutines = ms.HeapAlloc, ms.Sys, runtime.NumGoroutine()
	kb := func(file, key string) uint64 {
		b, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			return 0
		}
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, key+":"); ok {
				f := strings.Fields(rest)
				if len(f) > 0 {
					v, _ := strconv.ParseUint(f[0], 10, 64)
					return v * 1024
				}
			}
		}
		return 0
	}
	m.RSSBytes = kb("proc/self/status", "VmRSS")
	m.SystemTotal = kb("proc/meminfo", "MemTotal")
	m.SystemAvailable = kb("proc/meminfo", "MemAvailable")
	return m
}
