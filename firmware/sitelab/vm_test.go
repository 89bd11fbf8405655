package sitelab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"net/http"

	"meshroot/firmware/status"
	"meshroot/firmware/vpnhook"
	"meshroot/image"
	"meshroot/image/imagetest"
	"meshroot/image/qemu"
	"meshroot/internal/lab"
	"meshroot/internal/testenv"
	"meshroot/provision/api"
	"meshroot/provision/identity"
	"meshroot/provision/onboard"
	"meshroot/provision/profile"
)

const (
	psk1       = "vm-tunnel1-psk-Pq7x2LmN0vB8cR4t"
	psk2       = "vm-tunnel2-psk-xlk6lMNzd4CNRP8Y"
	passphrase = "vm wifi passphrase 4 words"
)

// world is one site with its cloud configured (a site with a VPN, PSKs, a claim) and a device's
// factory data and label.
type world struct {
	site    *Site
	dir     string
	imgDir  string
	img     image.Manifest
	factory []byte
	label   identity.Payload
	code    identity.SetupCode
	claim   *api.Claim
}

func newWorld(t testing.TB, lease time.Duration) *world {
	t.Helper()
	testenv.Integration(t)
	testenv.Command(t, "ip")
	dir, m := imagetest.Image(t, "qemu-virt-arm64")
	l := lab.New(t)
	w := &world{dir: t.TempDir(), imgDir: dir, img: m}
	var err error
	w.site, err = New(l, Config{Dir: w.dir, LeaseTime: lease})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.site.Close)
	ctx := context.Background()
	op := w.site.Op
	if _, err := op.CreateSite(ctx, api.CreateSiteRequest{ID: "vm-site", Name: "VM site", WiFiSSID: "Meshroot", Country: "DE"}); err != nil {
		t.Fatal(err)
	}
	vpn := &profile.VPN{ConnectionID: "vpn-0a1b2c3d4e5f60718", Type: "ipsec.1",
		BGP:          &profile.BGP{CustomerASN: 65000, AmazonASN: 64512, HoldTimeSeconds: 30},
		SitePrefixes: []string{"192.168.1.0/24"},
		Tunnels: []profile.Tunnel{
			{OutsideAddress: "198.51.100.2", InsideCIDR: "169.254.10.0/30", PSKRef: "vpn/vm/t1", Options: profile.DefaultTunnelOptions()},
			{OutsideAddress: "203.0.113.2", InsideCIDR: "169.254.11.0/30", PSKRef: "vpn/vm/t2", Options: profile.DefaultTunnelOptions()},
		}}
	for i, p := range []string{psk1, psk2} {
		if err := op.PutSecret(ctx, vpn.Tunnels[i].PSKRef, p); err != nil {
			t.Fatal(err)
		}
	}
	raw, _ := json.Marshal(vpn)
	if _, err := op.PutVPN(ctx, "vm-site", raw); err != nil {
		t.Fatal(err)
	}
	if w.claim, err = op.Claim(ctx, "vm-site", time.Hour); err != nil {
		t.Fatal(err)
	}
	w.code, err = identity.NewSetupCode(nil)
	if err != nil {
		t.Fatal(err)
	}
	fac, label, err := identity.NewFactory("MR-VM-0001", "qemu-virt-arm64", w.code, 0x2a, identity.DefaultIterations, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.label = label
	w.factory, _ = fac.Marshal()
	return w
}

func (w *world) boot(t testing.TB, name string) *qemu.VM {
	t.Helper()
	logPath := filepath.Join(w.dir, name+"-console.log")
	vm, err := w.site.Boot(VMConfig{ImageDir: w.imgDir, Manifest: w.img, Disk: filepath.Join(w.dir, "disk.img"),
		Factory: w.factory, LogPath: logPath})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		vm.Stop()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			lines := strings.Split(string(b), "\n")
			t.Logf("console %s (last 150 lines):\n%s", name, strings.Join(lines[max(0, len(lines)-150):], "\n"))
		}
	})
	return vm
}

// statusFromLAN fetches the router's /status from the LAN client.
func (w *world) statusFromLAN(ctx context.Context) (status.Status, string, error) {
	hc := HTTPClient(w.site.LAN, 10*time.Second)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/status", RouterLAN), nil)
	resp, err := hc.Do(req)
	if err != nil {
		return status.Status{}, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var st status.Status
	if err := json.Unmarshal(b, &st); err != nil {
		return st, string(b), fmt.Errorf("%w: %s", err, b)
	}
	return st, string(b), nil
}

func (w *world) waitStatus(t testing.TB, what string, d time.Duration, cond func(status.Status) bool) status.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var last status.Status
	var lastErr error
	for {
		st, _, err := w.statusFromLAN(ctx)
		if err == nil && cond(st) {
			return st
		}
		last, lastErr = st, err
		select {
		case <-ctx.Done():
			b, _ := json.MarshalIndent(last, "", " ")
			t.Fatalf("waiting for %s: last status (err %v):\n%s", what, lastErr, b)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// secrets are what must never show in the status API or in clear on the data disk.
func (w *world) secrets() map[string]string {
	return map[string]string{"psk1": psk1, "psk2": psk2, "wifi passphrase": passphrase, "claim token": w.claim.Token, "setup code": w.code.Digits()}
}

// refusedFromWAN checks that a TCP connection from the ISP's side to addr is dropped (a timeout,
// not a reset: the firewall drops, it does not answer).
func refusedFromWAN(t *testing.T, ns *lab.NS, addr string) {
	t.Helper()
	err := ns.Do(func() error {
		c, err := net.DialTimeout("tcp", addr, 1500*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err
	})
	var ne net.Error
	switch {
	case err == nil:
		t.Errorf("from the WAN, %s accepted a connection; want it dropped", addr)
	case !errors.As(err, &ne) || !ne.Timeout():
		t.Errorf("from the WAN, %s: %v; want a timeout (dropped), not an answer", addr, err)
	}
}

// TestVMRouter boots the router image on the lab's TAPs, then as one story: WAN by DHCP from the
// ISP, a LAN client's lease and DNS (local names, forwarded names), NAT to a WAN host, nothing
// in from the WAN, pairing with the app through the LAN until the router holds its verified
// profile, a WAN outage longer than the ISP's lease (the LAN keeps working; the router recovers
// without a reboot), the VPN connection started from the profile (its tunnels negotiating: no
// concentrator in this lab), device and tunnel logs in the cloud, a status API without secrets,
// and a clean reboot that comes back enrolled with its profile and no app, with no secret in
// clear on the disk.
func TestVMRouter(t *testing.T) {
	w := newWorld(t, 20*time.Second)
	t0 := time.Now()
	vm := w.boot(t, "boot1")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	info, line, err := imagetest.WaitReady(ctx, vm)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ready at %.1fs: services %v", line.At.Seconds(), info.Services)
	for _, s := range []string{"firewall", "wan", "dhcp", "dns", "status", "provision", "vpn", "ota", "logship"} {
		if !strings.Contains(" "+strings.Join(info.Services, " ")+" ", " "+s+" ") {
			t.Errorf("ready line services %v; want %s up", info.Services, s)
		}
	}

	var wanAddr netip.Addr
	t.Run("WAN by DHCP", func(t *testing.T) {
		deadline := time.Now().Add(60 * time.Second)
		for !wanAddr.IsValid() && time.Now().Before(deadline) {
			wanAddr = w.site.RouterWAN()
			time.Sleep(200 * time.Millisecond)
		}
		if !wanAddr.IsValid() {
			t.Fatalf("the ISP gave the router no lease")
		}
		t.Logf("router WAN address %s", wanAddr)
	})
	var lease Lease
	t.Run("LAN lease", func(t *testing.T) {
		lease, err = w.site.LANLease(ctx, "laptop")
		if err != nil {
			t.Fatal(err)
		}
		if lease.Addr.String() != "192.168.1.100/24" || lease.Router != RouterLAN || len(lease.DNS) != 1 || lease.DNS[0] != RouterLAN || lease.Domain != "lan" {
			t.Errorf("LAN lease = %+v; want 192.168.1.100/24 with the router as gateway and DNS, domain lan", lease)
		}
	})
	t.Run("DNS", func(t *testing.T) {
		for name, want := range map[string]string{"meshroot.lan": "192.168.1.1", "laptop.lan": "192.168.1.100", "nobody.lan": "NXDOMAIN", WANHostName: WANHost.String()} {
			if got, err := w.site.Resolve(RouterLAN, name); err != nil || got != want {
				t.Errorf("resolve %s via the router = %q, %v; want %s", name, got, err, want)
			}
		}
	})
	t.Run("NAT to a WAN host", func(t *testing.T) {
		seen, err := w.site.WANHostSeen(5 * time.Second)
		if err != nil || seen != wanAddr.String() {
			t.Errorf("the WAN host saw %q, %v; want the router's WAN address %s", seen, err, wanAddr)
		}
	})
	t.Run("inbound from the WAN refused", func(t *testing.T) {
		// A listener on the LAN client, reachable only if the router forwarded WAN traffic in.
		var ln net.Listener
		if err := w.site.LAN.Do(func() (err error) { ln, err = net.Listen("tcp", "0.0.0.0:9000"); return err }); err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		if err := w.site.ISP.AddRoute(lab.Route{Dst: "192.168.1.0/24", Via: wanAddr.String()}); err != nil {
			t.Fatal(err)
		}
		for _, a := range []string{wanAddr.String() + ":80", wanAddr.String() + ":8080", wanAddr.String() + ":22", "192.168.1.100:9000", "192.168.1.1:80"} {
			refusedFromWAN(t, w.site.ISP, a)
		}
		if out, err := w.site.ISP.Run("ping", "-c", "2", "-W", "1", wanAddr.String()); err == nil {
			t.Errorf("the router answers pings from the WAN:\n%s", out)
		}
	})
	var st0 status.Status
	t.Run("status before pairing", func(t *testing.T) {
		var body string
		st0, body, err = w.statusFromLAN(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st0.WAN == nil || !st0.WAN.Up() || st0.LAN.Leases != 1 || !st0.Firewall.Applied || st0.Onboarding.Enrolled {
			t.Errorf("status = %s", body)
		}
	})

	var paired time.Duration
	t.Run("onboarding from the LAN", func(t *testing.T) {
		start := time.Now()
		actx, acancel := context.WithTimeout(ctx, 3*time.Minute)
		defer acancel()
		tr := &onboard.HTTPTransport{URL: fmt.Sprintf("http://%s:8080", RouterLAN), Client: HTTPClient(w.site.LAN, 30*time.Second)}
		sess, err := onboard.Pair(actx, tr, w.label)
		if err != nil {
			t.Fatalf("pair: %v", err)
		}
		if _, err := sess.Setup(actx, onboard.Setup{ClaimToken: w.claim.Token, CloudURL: w.claim.CloudURL, CAPin: w.claim.CAPin,
			SiteName: "VM site", WiFiSSID: "Meshroot", WiFiPassphrase: passphrase, Country: "DE"}); err != nil {
			t.Fatalf("setup: %v", err)
		}
		p, err := sess.WaitProfile(actx, 250*time.Millisecond, nil)
		if err != nil {
			t.Fatalf("waiting for the profile: %v", err)
		}
		paired = time.Since(start)
		t.Logf("paired and holding profile v%d %.1fs after the app started (%.1fs after QEMU started)", p.ProfileVersion, paired.Seconds(), time.Since(t0).Seconds())
	})
	var st1 status.Status
	t.Run("status after pairing", func(t *testing.T) {
		st1 = w.waitStatus(t, "the profile and the VPN connection", time.Minute, func(st status.Status) bool {
			return st.Onboarding.Phase == onboard.PhaseProfile && st.VPN.State == vpnhook.StateRunning && len(st.VPN.Tunnels) == 2
		})
		if st1.Profile == nil || st1.Profile.SiteID != "vm-site" || !st1.Profile.HasVPN || len(st1.Firewall.IKEFrom) != 2 {
			t.Errorf("status: profile %+v firewall %+v", st1.Profile, st1.Firewall)
		}
		// No concentrator in this lab: the tunnels run on their TUN devices and keep trying.
		for i, tu := range st1.VPN.Tunnels {
			if tu.Device != fmt.Sprintf("mrtun%d", i+1) || tu.IKE == "Established" || st1.VPN.LocalAddress != wanAddr.String() {
				t.Errorf("VPN tunnel %d = %+v from %s; want negotiating on mrtun%d from the WAN address", i+1, tu, st1.VPN.LocalAddress, i+1)
			}
		}
		_, body, _ := w.statusFromLAN(ctx)
		for what, s := range w.secrets() {
			if strings.Contains(body, s) {
				t.Errorf("/status shows the %s", what)
			}
		}
		t.Logf("meshd RSS with every service up: %.1f MiB (Go heap %.1f MiB, %d goroutines)",
			float64(st1.Memory.RSSBytes)/(1<<20), float64(st1.Memory.GoHeapBytes)/(1<<20), st1.Memory.Goroutines)
	})

	t.Run("WAN outage", func(t *testing.T) {
		if err := w.site.CutWAN(); err != nil {
			t.Fatal(err)
		}
		cut := time.Now()
		// Longer than the ISP's 20 s lease: the router's lease expires.
		w.waitStatus(t, "the WAN lease to expire", 90*time.Second, func(st status.Status) bool { return st.WAN != nil && !st.WAN.Up() })
		t.Logf("WAN down (lease gone) %.1fs after the cut", time.Since(cut).Seconds())
		// The LAN keeps working: a lease (a new client asking) and local names.
		if err := w.site.LAN.DelAddr("eth0", lease.Addr.String()); err != nil {
			t.Fatal(err)
		}
		l2, err := w.site.LANLease(ctx, "laptop")
		if err != nil || l2.Addr != lease.Addr {
			t.Errorf("LAN lease during the outage = %+v, %v; want the same address", l2, err)
		}
		for name, want := range map[string]string{"meshroot.lan": "192.168.1.1", "laptop.lan": "192.168.1.100"} {
			if got, err := w.site.Resolve(RouterLAN, name); err != nil || got != want {
				t.Errorf("resolve %s during the outage = %q, %v; want %s", name, got, err, want)
			}
		}
		if _, err := w.site.WANHostSeen(2 * time.Second); err == nil {
			t.Errorf("the WAN host is reachable during the outage: the cut is not on the path")
		}
		for time.Since(cut) < 30*time.Second {
			time.Sleep(time.Second)
		}
		if err := w.site.RestoreWAN(); err != nil {
			t.Fatal(err)
		}
		restored := time.Now()
		st := w.waitStatus(t, "the WAN to come back", 2*time.Minute, func(st status.Status) bool { return st.WAN != nil && st.WAN.Up() })
		t.Logf("WAN back %.1fs after the ISP returned (outage %.0fs)", time.Since(restored).Seconds(), restored.Sub(cut).Seconds())
		if st.UptimeSeconds < st1.UptimeSeconds {
			t.Errorf("uptime went from %.0f to %.0f s: the router rebooted", st1.UptimeSeconds, st.UptimeSeconds)
		}
		var seen string
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if seen, err = w.site.WANHostSeen(3 * time.Second); err == nil {
				break
			}
		}
		if seen != w.site.RouterWAN().String() {
			t.Errorf("after the outage the WAN host saw %q, %v; want the router's WAN address", seen, err)
		}
	})
	t.Run("logs in the cloud", func(t *testing.T) {
		deadline := time.Now().Add(time.Minute)
		var msgs []string
		for time.Now().Before(deadline) {
			recs, err := w.site.Op.Logs(ctx, api.LogQuery{Site: "vm-site", Device: "MR-VM-0001", Limit: 10000})
			if err == nil {
				msgs = msgs[:0]
				for _, r := range recs {
					msgs = append(msgs, r.Msg)
				}
				joined := strings.Join(msgs, "\n")
				// The outage's lines were logged while the cloud was unreachable.
				tunnelLog := false
				for _, r := range recs {
					tunnelLog = tunnelLog || r.Msg == "tunnel activity log" && r.Tunnel == "198.51.100.2"
				}
				if strings.Contains(joined, "vpn: connection running") && tunnelLog && strings.Count(joined, "wan up (dhcp)") >= 2 &&
					strings.Contains(joined, "lease expired") {
					// Delivery is at least once (an upload in flight when the uplink failed
					// may arrive twice); each line's log_id tells copies apart.
					ids := map[string]int{}
					for _, r := range recs {
						id, _ := r.Attrs["log_id"].(string)
						if id == "" {
							t.Errorf("cloud record %q without a log_id", r.Msg)
						}
						ids[id]++
					}
					readyIDs := map[string]bool{}
					for _, r := range recs {
						if r.Msg == "ready" {
							id, _ := r.Attrs["log_id"].(string)
							readyIDs[id] = true
						}
					}
					if len(readyIDs) != 1 {
						t.Errorf("the cloud has %d distinct ready lines for one boot; want 1", len(readyIDs))
					}
					dups := len(recs) - len(ids)
					t.Logf("cloud holds %d device lines, %d distinct (%d delivered twice)", len(recs), len(ids), dups)
					return
				}
			}
			time.Sleep(time.Second)
		}
		t.Errorf("the cloud's logs for the device lack the expected lines; got %d: %q", len(msgs), msgs)
	})

	t.Run("reboot keeps identity and profile", func(t *testing.T) {
		if err := imagetest.ShellReady(ctx, vm); err != nil {
			t.Fatal(err)
		}
		if err := vm.Send("meshd -reboot\n"); err != nil {
			t.Fatal(err)
		}
		select {
		case <-vm.Done(): // -no-reboot: the guest's reboot ends QEMU
		case <-time.After(2 * time.Minute):
			t.Fatalf("QEMU still running after meshd -reboot\n%s", vm.Tail(30))
		}
		if _, err := vm.WaitFor(context.Background(), `"msg":"shutting down","action":"reboot"`); err != nil {
			t.Errorf("no clean shutdown before the reboot: %v", err)
		}
		vm2 := w.boot(t, "boot2")
		b0 := time.Now()
		if _, _, err := imagetest.WaitReady(ctx, vm2); err != nil {
			t.Fatal(err)
		}
		st := w.waitStatus(t, "the profile after the reboot", 3*time.Minute, func(st status.Status) bool {
			return st.Onboarding.Phase == onboard.PhaseProfile && st.Onboarding.Enrolled && st.VPN.State == vpnhook.StateRunning
		})
		t.Logf("after the reboot: enrolled with profile v%d %.1fs after QEMU started, no app involved", st.Profile.Version, time.Since(b0).Seconds())
		if st.Profile == nil || st.Profile.Version != st1.Profile.Version || st.Onboarding.Serial != "MR-VM-0001" {
			t.Errorf("after the reboot: %+v / %+v; want the same profile", st.Onboarding, st.Profile)
		}
		loaded := false
		for _, l := range vm2.Lines() {
			loaded = loaded || strings.Contains(l.Text, `"msg":"last good profile in force"`)
		}
		if !loaded {
			t.Errorf("the agent did not say it loaded the last good profile")
		}
		imagetest.Poweroff(ctx, t, vm2)
		disk, err := os.ReadFile(filepath.Join(w.dir, "disk.img"))
		if err != nil {
			t.Fatal(err)
		}
		for what, s := range w.secrets() {
			if bytes.Contains(disk, []byte(s)) {
				t.Errorf("the data disk holds the %s in clear", what)
			}
		}
		// The scan can see files in clear: the DHCP lease file is there.
		if !bytes.Contains(disk, []byte(`"hostname": "laptop"`)) {
			t.Errorf("the disk image has no plain DHCP lease file: the secret scan above proves nothing")
		}
	})
}
