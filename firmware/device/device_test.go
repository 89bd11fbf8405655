package device

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	mdns "github.com/miekg/dns"

	"meshroot/board"
	"meshroot/firmware"
	"meshroot/firmware/internal/pipeconn"
	"meshroot/firmware/router/dhcpd"
	"meshroot/firmware/router/nft"
	"meshroot/firmware/router/wan"
	"meshroot/firmware/status"
	"meshroot/firmware/vpnhook"
	"meshroot/internal/testenv"
	"meshroot/provision/agent"
	"meshroot/provision/api"
	"meshroot/provision/devcloud"
	"meshroot/provision/devcloud/devcloudtest"
	"meshroot/provision/enroll"
	"meshroot/provision/identity"
	"meshroot/provision/onboard"
	"meshroot/provision/pake"
	"meshroot/provision/profile"
	"meshroot/vpn"
	"meshroot/vpn/esp"
	"meshroot/vpn/route"
	"meshroot/vpn/tunnel"
	"meshroot/vpn/vpnlog"
)

const (
	psk1       = "Pq7_x2.LmN0vB8cR4tY6uI9oP1aS3dF5"
	psk2       = "xlk6lMNzd4CNRP8YUX4PlRLVL4pV1FWS"
	passphrase = "correct horse battery staple"
	setupCode  = identity.SetupCode(20202021)
	kver       = "6.1.0-56-arm64"
)

type syncBuffer = testenv.Buffer

func mkfile(t *testing.T, root, rel string, content []byte) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, content, 0o644); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rig is a whole device (meshd's firmware.Run with the router's services) on fakes: the kernel
// is FakeNet/FakeMounter/nft.Fake/wan.FakeKernel, the WAN and LAN are in-memory links with an
// ISP DHCP server and a LAN client at their far ends, the DNS, status and pairing listeners are
// on loopback, and the reference cloud runs in-process on loopback.
type rig struct {
	root    string
	console *syncBuffer
	nft     *nft.Fake
	wanK    *wan.FakeKernel
	lanLink *pipeconn.Link
	cloud   *devcloudtest.Cloud
	claim   *api.Claim
	label   identity.Payload
	sysctl  sync.Map

	mu          sync.Mutex
	listeners   map[int]string // LAN port -> loopback address
	waitFactory time.Duration
	dnsAddr     string
	ready       chan firmware.ReadyInfo
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{root: t.TempDir(), console: &syncBuffer{}, nft: &nft.Fake{}, wanK: &wan.FakeKernel{},
		listeners: map[int]string{}, ready: make(chan firmware.ReadyInfo, 1)}
	mkfile(t, r.root, "proc/device-tree/compatible", []byte("linux,dummy-virt\x00"))
	mkfile(t, r.root, firmware.ReleasePath, []byte(`{"version":"0.2.0-test","board":"qemu-virt-arm64","built":"2026-11-22T10:00:00Z"}`))
	b, _ := board.Lookup("qemu-virt-arm64")
	var dep strings.Builder
	for _, m := range b.Modules {
		fmt.Fprintf(&dep, "kernel/%s.ko:\n", m)
	}
	mkfile(t, r.root, "lib/modules/"+kver+"/modules.dep", []byte(dep.String()))
	mkfile(t, r.root, "dev/vda3", nil)
	mkfile(t, r.root, "proc/sys/net/ipv4/ip_forward", []byte("0\n"))

	// The cloud: a site with a VPN whose PSKs are in its secret store.
	r.cloud = devcloudtest.Start(t, "", devcloud.Config{})
	r.reseed(t)
	fac, label, err := identity.NewFactory("MR-DEV-0001", "qemu", setupCode, 0x123, pake.MinIterations, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.label = label
	fb, _ := fac.Marshal()
	mkfile(t, r.root, FwCfgFactory, fb) // as QEMU's fw_cfg driver shows it
	return r
}

// reseed creates the lab site with its VPN and a claim in r.cloud.
func (r *rig) reseed(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	if _, err := r.cloud.Op.CreateSite(ctx, api.CreateSiteRequest{ID: "lab-site", Name: "Lab", WiFiSSID: "Meshroot", Country: "DE"}); err != nil {
		t.Fatal(err)
	}
	vpn := testVPN()
	for i, psk := range []string{psk1, psk2} {
		if err := r.cloud.Op.PutSecret(ctx, vpn.Tunnels[i].PSKRef, psk); err != nil {
			t.Fatal(err)
		}
	}
	raw, _ := json.Marshal(vpn)
	if _, err := r.cloud.Op.PutVPN(ctx, "lab-site", raw); err != nil {
		t.Fatal(err)
	}
	var err error
	if r.claim, err = r.cloud.Op.Claim(ctx, "lab-site", time.Hour); err != nil {
		t.Fatal(err)
	}
}

func testVPN() *profile.VPN {
	return &profile.VPN{ConnectionID: "vpn-0e3c1f2a9b8d7c6e5", Type: "ipsec.1",
		BGP:          &profile.BGP{CustomerASN: 65010, AmazonASN: 64512, HoldTimeSeconds: 30},
		SitePrefixes: []string{"192.168.1.0/24"},
		Tunnels: []profile.Tunnel{
			{OutsideAddress: "198.51.100.2", InsideCIDR: "169.254.10.0/30", PSKRef: "vpn/lab/t1", Options: profile.DefaultTunnelOptions()},
			{OutsideAddress: "203.0.113.2", InsideCIDR: "169.254.11.0/30", PSKRef: "vpn/lab/t2", Options: profile.DefaultTunnelOptions()},
		}}
}

func (r *rig) listen(network, addr string) (net.Listener, error) {
	ap := netip.MustParseAddrPort(addr)
	ln, err := net.Listen(network, "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.listeners[int(ap.Port())] = ln.Addr().String()
	r.mu.Unlock()
	return ln, nil
}

func (r *rig) addr(t *testing.T, port int) string {
	t.Helper()
	var a string
	waitFor(t, fmt.Sprintf("a listener for LAN port %d", port), func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		a = r.listeners[port]
		return a != ""
	})
	return a
}

func (r *rig) start(t *testing.T) {
	t.Helper()
	fnet := &firmware.FakeNet{}
	fnet.AddLink(firmware.Link{Name: "lo", Kind: "device"})
	fnet.AddLink(firmware.Link{Name: "eth0", Kind: "device", Ethernet: true})
	fnet.AddLink(firmware.Link{Name: "eth1", Kind: "device", Ethernet: true})
	r.wanK.SetLink("eth0", net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}, true)

	// The ISP: a DHCP server at the far end of the WAN link.
	wanLink := pipeconn.New(&net.UDPAddr{IP: net.IPv4zero, Port: 68}, &net.UDPAddr{IP: net.IPv4(100, 64, 0, 1), Port: 67})
	isp, err := dhcpd.New(dhcpd.Config{Address: netip.MustParsePrefix("100.64.0.1/24"), DNS: []netip.Addr{netip.MustParseAddr("100.64.0.53")}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ispDone := make(chan error, 1)
	go func() { ispDone <- isp.Serve(ctx, wanLink.B) }()
	r.lanLink = pipeconn.New(&net.UDPAddr{IP: net.IPv4zero, Port: 68}, &net.UDPAddr{IP: net.IPv4(192, 168, 1, 1), Port: 67})

	opts := Options{
		NFT: r.nft, WANKernel: r.wanK,
		NewDHCP: func(string, net.HardwareAddr) (wan.DHCP, error) {
			c, err := nclient4.NewWithConn(wanLink.A.View(), net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}, nclient4.WithTimeout(time.Second))
			if err != nil {
				return nil, err
			}
			return wan.Client{C: c}, nil
		},
		ListenDHCP: func(*dhcpd.Server) (net.PacketConn, error) { return r.lanLink.B.View(), nil },
		ListenDNS: func(netip.Addr) (net.PacketConn, net.Listener, error) {
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				return nil, nil, err
			}
			r.mu.Lock()
			r.dnsAddr = pc.LocalAddr().String()
			r.mu.Unlock()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			return pc, ln, err
		},
		Listen: r.listen,
		Sysctl: func(k, v string) error { r.sysctl.Store(k, v); return nil },
		Reboot: func() error { return nil },
		AgentConfig: func(c *agent.Config) {
			c.Backoff = enroll.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond, Multiplier: 2, AttemptTimeout: 10 * time.Second}
			c.PollWait, c.ErrorDelay, c.OnboardGrace = 2*time.Second, 50*time.Millisecond, time.Second
		},
		LogInterval: 100 * time.Millisecond,
		WaitFactory: r.waitFactory,
		// The real VPN connection, on vpn's fake host and route kernel (no concentrator answers).
		VPNEngine: func(log *slog.Logger, logs vpnlog.Sink) vpnhook.Engine {
			return &vpn.Connection{Host: tunnel.NewFakeHost(esp.NewFakeNetwork(), netip.MustParseAddr("100.64.0.100")),
				Kernel: route.NewFakeKernel(map[string]int{"mrtun1": 10, "mrtun2": 11}), Log: logs, Logger: log}
		},
	}
	fopts := firmware.Options{Root: r.root, Boot: true, Console: r.console, NoConsole: true, WaitDevice: time.Millisecond,
		ReadyTimeout: 30 * time.Second, ShutdownTimeout: 10 * time.Second,
		Sys: firmware.System{Mounter: &firmware.FakeMounter{}, Modules: &firmware.FakeModuleKernel{}, Net: fnet,
			Watchdog: firmware.NewFakeWatchdog().Opener(), Power: &firmware.FakePower{},
			SetHostname: func(string) error { return nil }, KernelRelease: func() (string, error) { return kver, nil },
			Uptime: func() time.Duration { return time.Minute }},
		Services: Services(opts), OnReady: func(i firmware.ReadyInfo) { r.ready <- i }}
	done := make(chan error, 1)
	go func() {
		_, err := firmware.Run(ctx, fopts)
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("firmware.Run() = %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("firmware.Run did not return")
		}
		<-ispDone
		if t.Failed() {
			t.Logf("console:\n%s", r.console.String())
		}
	})
}

func (r *rig) status(t *testing.T) (status.Status, string) {
	t.Helper()
	resp, err := http.Get("http://" + r.addr(t, StatusPort) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var st status.Status
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("GET /status: %v\n%s", err, b)
	}
	return st, string(b)
}

// TestDeviceEndToEnd boots the device on fakes and goes through what a router does on its
// first day: WAN by DHCP, the firewall, a LAN client's lease and local DNS, pairing with the
// app, enrollment, the profile with its VPN started as a vpn.Connection (on vpn's fakes),
// device and tunnel logs in the cloud, and a status API and console with no secret in them.
func TestDeviceEndToEnd(t *testing.T) {
	r := newRig(t)
	r.start(t)
	var info firmware.ReadyInfo
	select {
	case info = <-r.ready:
	case <-time.After(60 * time.Second):
		t.Fatalf("no ready line; console:\n%s", r.console.String())
	}
	for _, s := range []string{"firewall", "wan", "dhcp", "dns", "status", "provision", "vpn", "ota", "logship"} {
		if !strings.Contains(strings.Join(info.Services, " "), s) {
			t.Errorf("ready services = %v; want %s up", info.Services, s)
		}
	}
	if v, _ := r.sysctl.Load("net/ipv4/ip_forward"); v != "1" {
		t.Errorf("ip_forward = %v; want 1", v)
	}
	rs, _, ok := r.nft.Table(nft.Table)
	if !ok || !strings.Contains(rs.String(), `oifname "eth0" meta nfproto ipv4 masquerade`) || !strings.Contains(rs.String(), `iifname "br-lan" accept`) {
		t.Errorf("firewall table = %v\n%s; want NAT out of eth0 and the LAN bridge accepted", ok, rs)
	}
	waitFor(t, "the WAN lease", func() bool {
		a, gw := r.wanK.Addrs("eth0")
		return len(a) == 1 && gw.IsValid()
	})

	// A LAN client gets a lease and resolves local names.
	cl, err := nclient4.NewWithConn(r.lanLink.A.View(), net.HardwareAddr{2, 0, 0, 0, 0, 0x42}, nclient4.WithTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	lease, err := cl.Request(context.Background(), dhcpv4.WithOption(dhcpv4.OptHostName("phone")))
	cl.Close()
	if err != nil || lease.ACK.YourIPAddr.String() != "192.168.1.100" || lease.ACK.DNS()[0].String() != "192.168.1.1" {
		t.Fatalf("LAN lease = %v, %v; want 192.168.1.100 with the router as DNS", lease, err)
	}
	r.mu.Lock()
	dnsAddr := r.dnsAddr
	r.mu.Unlock()
	for name, want := range map[string]string{"meshroot.lan.": "192.168.1.1", "phone.lan.": "192.168.1.100"} {
		m := new(mdns.Msg)
		m.SetQuestion(name, mdns.TypeA)
		resp, _, err := (&mdns.Client{Timeout: 2 * time.Second}).Exchange(m, dnsAddr)
		if err != nil || len(resp.Answer) != 1 || resp.Answer[0].(*mdns.A).A.String() != want {
			t.Errorf("DNS %s = %v, %v; want %s", name, resp, err, want)
		}
	}

	st, _ := r.status(t)
	if st.WAN == nil || st.WAN.Phase != wan.PhaseBound || st.WAN.Address.String() != "100.64.0.100/24" || st.LAN.Leases != 1 ||
		!st.Firewall.Applied || st.Onboarding.Enrolled || st.VPN.State != vpnhook.StateNone || st.OTA.State != "disabled" {
		t.Errorf("status before pairing = %+v", st)
	}

	// The app pairs from the LAN, hands over the site, and follows the device to its profile.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sess, err := onboard.Pair(ctx, &onboard.HTTPTransport{URL: "http://" + r.addr(t, OnboardPort)}, r.label)
	if err != nil {
		t.Fatalf("pair: %v", err)
	}
	if _, err := sess.Setup(ctx, onboard.Setup{ClaimToken: r.claim.Token, CloudURL: r.claim.CloudURL, CAPin: r.claim.CAPin,
		SiteName: "Lab", WiFiSSID: "Meshroot", WiFiPassphrase: passphrase, Country: "DE"}); err != nil {
		t.Fatalf("setup: %v", err)
	}
	if _, err := sess.WaitProfile(ctx, 50*time.Millisecond, nil); err != nil {
		t.Fatalf("wait for the profile: %v\n%s", err, r.console.String())
	}
	waitFor(t, "the VPN connection", func() bool {
		st, _ := r.status(t)
		return st.VPN.State == vpnhook.StateRunning && len(st.VPN.Tunnels) == 2
	})
	st, body := r.status(t)
	if st.Onboarding.Phase != onboard.PhaseProfile || !st.Onboarding.Enrolled || st.Profile == nil || !st.Profile.HasVPN || st.Profile.SiteID != "lab-site" {
		t.Errorf("status after pairing: onboarding %+v profile %+v", st.Onboarding, st.Profile)
	}
	if st.VPN.LocalAddress != "100.64.0.100" || len(st.VPN.Peers) != 2 || st.VPN.Tunnels[0].Device != "mrtun1" || st.VPN.Tunnels[0].IKE == "Established" {
		t.Errorf("status VPN = %+v; want the connection running from the WAN address, tunnels negotiating", st.VPN)
	}
	if !strings.Contains(r.console.String(), `"msg":"vpn: connection running"`) {
		t.Errorf("console has no 'vpn: connection running' line")
	}
	// The firewall now admits IKE from the profile's endpoints.
	waitFor(t, "IKE rules", func() bool {
		rs, _, _ := r.nft.Table(nft.Table)
		return strings.Contains(rs.String(), "ip saddr 198.51.100.2 udp dport 4500 accept") && strings.Contains(rs.String(), "ip saddr 203.0.113.2 udp dport 500 accept")
	})
	if _, applies, _ := r.nft.Table(nft.Table); applies != 1 || r.nft.Updates() < 1 {
		t.Errorf("firewall: %d table applies, %d chain updates; want the table once, then wan_in updates", applies, r.nft.Updates())
	}

	// The device's logs reach the cloud's ingest.
	waitFor(t, "device logs in the cloud", func() bool {
		recs, err := r.cloud.Op.Logs(context.Background(), api.LogQuery{Site: "lab-site"})
		if err != nil {
			return false
		}
		device, tunnel := false, false
		for _, rec := range recs {
			device = device || rec.Msg == "vpn: connection running" && rec.Device == "MR-DEV-0001"
			tunnel = tunnel || rec.Msg == "tunnel activity log" && rec.Tunnel == "198.51.100.2"
		}
		return device && tunnel
	})

	// No secret anywhere the device shows: status, metrics, console.
	mresp, err := http.Get("http://" + r.addr(t, StatusPort) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	key, err := os.ReadFile(filepath.Join(r.root, "data", identity.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{"psk1": psk1, "psk2": psk2, "wifi passphrase": passphrase, "claim token": r.claim.Token,
		"setup code": setupCode.Digits(), "device key": strings.Split(string(key), "\n")[1]}
	for what, s := range secrets {
		for where, text := range map[string]string{"/status": body, "/metrics": string(metrics), "console": r.console.String()} {
			if strings.Contains(text, s) {
				t.Errorf("%s shows the %s", where, what)
			}
		}
	}
	// Nor in clear on the data partition.
	filepath.Walk(filepath.Join(r.root, "data"), func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(p)
		for what, s := range secrets {
			if what != "device key" && bytes.Contains(b, []byte(s)) {
				t.Errorf("%s holds the %s in clear", p, what)
			}
		}
		return nil
	})
}

// TestNoFactoryData: without factory data provisioning cannot run; the router still routes and
// the status says why.
func TestNoFactoryData(t *testing.T) {
	r := newRig(t)
	os.Remove(filepath.Join(r.root, FwCfgFactory))
	r.waitFactory = 50 * time.Millisecond
	r.start(t)
	select {
	case <-r.ready:
	case <-time.After(60 * time.Second):
		t.Fatalf("no ready line; console:\n%s", r.console.String())
	}
	st, _ := r.status(t)
	if st.Onboarding.Phase != "unavailable" || !strings.Contains(st.Onboarding.Detail, "no factory data") {
		t.Errorf("onboarding = %+v; want unavailable, saying why", st.Onboarding)
	}
	states := map[string]firmware.State{}
	for _, s := range st.Services {
		states[s.Name] = s.State
	}
	if states["provision"] != firmware.StateFailed || states["vpn"] != firmware.StateFailed || states["dhcp"] != firmware.StateUp || states["dns"] != firmware.StateUp {
		t.Errorf("service states = %v; want provision and vpn failed, the LAN up", states)
	}
}

func TestLoadFactory(t *testing.T) {
	root := t.TempDir()
	if _, _, err := LoadFactory(root, "", 10*time.Millisecond); err == nil || !strings.Contains(err.Error(), "fw_cfg") {
		t.Errorf("LoadFactory(nothing) = %v; want an error saying how to give it", err)
	}
	fac, _, _ := identity.NewFactory("MR-X-1", "qemu", setupCode, 1, pake.MinIterations, nil)
	b, _ := fac.Marshal()
	mkfile(t, root, FwCfgFactory, b)
	got, src, err := LoadFactory(root, "", time.Second)
	if err != nil || got.Serial != "MR-X-1" || !strings.Contains(src, "fw_cfg") {
		t.Errorf("LoadFactory(fw_cfg) = %v, %q, %v", got, src, err)
	}
	mkfile(t, root, "factory.json", []byte("{"))
	if _, _, err := LoadFactory(root, filepath.Join(root, "factory.json"), 0); err == nil {
		t.Errorf("LoadFactory(bad file) = nil error")
	}
}
