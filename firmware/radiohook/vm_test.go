package radiohook_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"meshroot/firmware/radiohook"
	"meshroot/firmware/sitelab"
	"meshroot/firmware/status"
	"meshroot/image"
	"meshroot/image/imagetest"
	"meshroot/image/qemu"
	"meshroot/internal/lab"
	"meshroot/internal/testenv"
)

// wifista's result line.
type staResult struct {
	Step    string `json:"step"`
	OK      bool   `json:"ok"`
	Detail  string `json:"detail"`
	Ms      int64  `json:"ms"`
	Iface   string `json:"iface"`
	BSSID   string `json:"bssid"`
	SSID    string `json:"ssid"`
	Freq    string `json:"freq"`
	KeyMgmt string `json:"key_mgmt"`
	Cipher  string `json:"pairwise_cipher"`
	State   string `json:"wpa_state"`
	Lease   string `json:"lease"`
	Router  string `json:"router"`
}

// TestVMWiFi is the product serving Wi-Fi: the arm64 image booted with two simulated radios
// (meshroot.hwsim=2) in the virtual site, onboarded zero-touch from the reference cloud; meshd
// starts Debian's hostapd on both radios with the profile's SSID, passphrase and country, and
// runs the radio manager and the mesh control plane; a phone (wifista on a third hwsim radio
// with wpa_supplicant, which only this test image carries) joins with WPA3-SAE, takes a DHCP
// lease over the air, and shows in /status; a hostapd killed from the console comes back; no
// secret shows in /status or on the console.
func TestVMWiFi(t *testing.T) {
	testenv.Integration(t)
	for _, c := range []string{"ip", "ping", "charon", "swanctl", "zebra", "bgpd", "vtysh"} {
		testenv.Command(t, c)
	}
	start := time.Now()
	sysroot := imagetest.Sysroot(t)
	dir, m := imagetest.ImageWith(t, "qemu-virt-arm64", imagetest.Options{
		Programs:      []image.Program{{Path: "sbin/wpa_supplicant", Sysroot: sysroot}},
		ExtraCommands: []string{"meshroot/firmware/radiohook/internal/cmd/wifista"},
		// A test image: the product plus wpa_supplicant (libdbus, libsystemd and more) and
		// wifista.
		Budget: &image.Budget{Compressed: 32 << 20, Raw: 112 << 20},
	})
	if m.Budget == image.DefaultBudget || !strings.Contains(strings.Join(m.Programs, " "), "usr/sbin/hostapd") {
		t.Fatalf("test image: budget %+v, programs %v; want the override and the product's hostapd", m.Budget, m.Programs)
	}
	imageReady := time.Since(start)

	work := t.TempDir()
	site, err := sitelab.New(lab.New(t), sitelab.Config{Dir: work})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(site.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	const ssid = "Meshroot VM"
	dev, err := site.AddDevice(ctx, sitelab.DeviceConfig{SiteID: "wifi-site", SiteName: "Wi-Fi site", WiFiSSID: ssid})
	if err != nil {
		t.Fatal(err)
	}
	pass := dev.Setup.WiFiPassphrase
	credsFile := filepath.Join(work, "wifista.json")
	b, _ := json.Marshal(map[string]string{"ssid": ssid, "passphrase": pass})
	if err := os.WriteFile(credsFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(work, "console.log")
	vm, err := site.Boot(sitelab.VMConfig{ImageDir: dir, Manifest: m, Factory: dev.Factory, LogPath: logPath, Timeout: 10 * time.Minute,
		MemoryMB: 768, Append: []string{"meshroot.hwsim=2"}, Extra: []string{"-fw_cfg", "name=opt/meshroot/wifista,file=" + credsFile}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		vm.Stop()
		if t.Failed() {
			t.Logf("console (last 120 lines):\n%s", vm.Tail(120))
		}
	})
	siteReady := time.Since(start)

	// Zero touch: the profile from the cloud (and the whole product: tunnels, BGP, VPC ping).
	res, err := site.ZeroTouch(ctx, vm, dev, sitelab.ZeroTouchOptions{})
	if err != nil {
		t.Fatalf("ZeroTouch: %v", err)
	}
	prof, _ := res.Step(sitelab.StepProfile)

	// hostapd ENABLED on both radios with the profile's SSID, read by meshd over its control
	// client.
	var st status.Status
	st, err = site.WaitStatus(ctx, 500*time.Millisecond, func(s status.Status) bool {
		if s.Radio.State != radiohook.StateRunning || len(s.Radio.Radios) != 2 {
			return false
		}
		for _, r := range s.Radio.Radios {
			if r.State != "ENABLED" || r.SSID != ssid {
				return false
			}
		}
		return s.Radio.Mesh != nil && s.Radio.Mesh.Planner == "running"
	})
	if err != nil {
		b, _ := json.Marshal(st.Radio)
		t.Fatalf("waiting for both radios ENABLED: %v; radio status %s", err, b)
	}
	enabledAt := time.Since(vm.Started())
	rs := st.Radio
	if rs.Hwsim != 2 || rs.Country != "DE" || rs.Role != "gateway" || rs.Node != dev.Serial || rs.SSID != ssid {
		t.Errorf("radio status: hwsim %d country %q role %q node %q ssid %q; want 2, DE, gateway, %s, %s", rs.Hwsim, rs.Country, rs.Role, rs.Node, rs.SSID, dev.Serial, ssid)
	}
	bands := map[string]radiohook.RadioStatus{}
	for _, r := range rs.Radios {
		bands[r.Band] = r
		if r.HostapdPID == 0 || r.MobilityDomain == "" || r.BSSID == "" {
			t.Errorf("radio %s: pid %d, mobility domain %q, bssid %q; want all set", r.ID, r.HostapdPID, r.MobilityDomain, r.BSSID)
		}
	}
	if len(bands) != 2 || bands["2.4GHz"].Freq < 2412 || bands["2.4GHz"].Freq > 2472 || bands["5GHz"].Freq < 5180 {
		t.Errorf("radios %+v; want one serving 2.4 GHz and one 5 GHz", rs.Radios)
	}
	if rs.Mesh.Controller != dev.Serial || rs.Mesh.ControlPlane != "lan" {
		t.Errorf("mesh: controller %q control plane %q; want %s on the LAN (the cloud's profile has a mesh key)", rs.Mesh.Controller, rs.Mesh.ControlPlane, dev.Serial)
	}
	t.Logf("QEMU start → profile %v, → both radios ENABLED and the planner running %v", prof.At.Round(time.Millisecond), enabledAt.Round(time.Millisecond))

	// A phone joins.
	if err := imagetest.ShellReady(ctx, vm); err != nil {
		t.Fatal(err)
	}
	staStart := time.Now()
	if err := vm.Send("/bin/wifista -hold 25s\n"); err != nil {
		t.Fatal(err)
	}
	assoc := waitSta(t, ctx, vm, "associated")
	if assoc.SSID != ssid || assoc.KeyMgmt != "SAE" || assoc.Cipher != "CCMP" || assoc.State != "COMPLETED" {
		t.Errorf("association %+v; want %s with SAE/CCMP, COMPLETED", assoc, ssid)
	}
	lease := waitSta(t, ctx, vm, "dhcp lease")
	if !strings.HasPrefix(lease.Lease, "192.168.1.") || lease.Router != sitelab.RouterLAN.String() {
		t.Errorf("lease over the air %q via %q; want one of the router's LAN (%s)", lease.Lease, lease.Router, sitelab.RouterLAN)
	}
	var served radiohook.RadioStatus
	st, err = site.WaitStatus(ctx, 500*time.Millisecond, func(s status.Status) bool {
		for _, r := range s.Radio.Radios {
			if strings.EqualFold(r.BSSID, assoc.BSSID) && r.Stations == 1 {
				served = r
				return true
			}
		}
		return false
	})
	if err != nil {
		b, _ := json.Marshal(st.Radio)
		t.Fatalf("status with the station on %s: %v; radio status %s", assoc.BSSID, err, b)
	}
	if fmt.Sprint(served.Freq) != assoc.Freq {
		t.Errorf("the station's BSS %s is on %s MHz by wpa_supplicant, %d MHz by /status", assoc.BSSID, assoc.Freq, served.Freq)
	}
	if _, err := vm.WaitFor(ctx, "WIFISTA-DONE {\"ok\":true}"); err != nil {
		t.Fatalf("wifista did not finish: %v\n%s", err, vm.Tail(30))
	}
	staTime := time.Since(staStart)
	t.Logf("station on %s (%s MHz, %s): associated in %d ms, lease %s in %d ms", assoc.BSSID, assoc.Freq, assoc.KeyMgmt, assoc.Ms, lease.Lease, lease.Ms)

	// hostapd killed: meshd restarts it, the radio serves again.
	victim := bands["5GHz"]
	if err := vm.Send("kill -9 " + strconv.Itoa(victim.HostapdPID) + "\n"); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	st, err = site.WaitStatus(ctx, 500*time.Millisecond, func(s status.Status) bool {
		for _, r := range s.Radio.Radios {
			if r.ID == victim.ID {
				return r.State == "ENABLED" && r.Restarts == 1 && r.HostapdPID != victim.HostapdPID
			}
		}
		return false
	})
	if err != nil {
		b, _ := json.Marshal(st.Radio)
		t.Fatalf("hostapd on %s after kill -9: %v; radio status %s", victim.Iface, err, b)
	}
	t.Logf("hostapd %d on %s killed: ENABLED again in %v", victim.HostapdPID, victim.Iface, time.Since(killed).Round(time.Millisecond))

	// No secret in /status, /metrics or on the console.
	_, raw, err := site.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := site.Metrics(ctx)
	if !strings.Contains(string(metrics), `meshroot_radio_up{band="5GHz"`) {
		t.Errorf("/metrics has no radio gauges")
	}
	console, _ := os.ReadFile(logPath)
	if !strings.Contains(string(console), `wlan1: AP-ENABLED`) {
		t.Errorf("the console has no hostapd output (meshd logs it): the secret scan below would prove little")
	}
	secrets := dev.Secrets()
	for name, secret := range secrets {
		for where, text := range map[string]string{"/status": string(raw), "/metrics": string(metrics), "console": string(console)} {
			if secret != "" && strings.Contains(text, secret) {
				t.Errorf("the %s is in %s", name, where)
			}
		}
	}
	t.Logf("wall time: image %v, site %v, boot → radios %v, station %v, total %v", imageReady.Round(time.Second), (siteReady - imageReady).Round(time.Second),
		enabledAt.Round(time.Second), staTime.Round(time.Second), time.Since(start).Round(time.Second))
	imagetest.Poweroff(ctx, t, vm)
}

// waitSta waits for wifista's line of a step and fails the test unless it is ok.
func waitSta(t *testing.T, ctx context.Context, vm *qemu.VM, step string) staResult {
	t.Helper()
	l, err := vm.WaitFor(ctx, `WIFISTA {"step":"`+step+`"`)
	if err != nil {
		t.Fatalf("wifista %s: %v\n%s", step, err, vm.Tail(30))
	}
	var r staResult
	text := l.Text[strings.Index(l.Text, "WIFISTA ")+len("WIFISTA "):]
	if err := json.Unmarshal([]byte(text), &r); err != nil {
		t.Fatalf("wifista line %q: %v", l.Text, err)
	}
	if !r.OK {
		t.Fatalf("wifista %s failed: %s\n%s", step, r.Detail, vm.Tail(30))
	}
	return r
}
