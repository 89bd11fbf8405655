// Package sitelab builds the virtual site around a router VM — the product working as a whole,
// for `meshctl run` (`make run`), the VM tests and the benchmarks: the firmware image booted in
// QEMU with its WAN and LAN ports on TAP devices; on the WAN side the AWS-like VPN concentrator
// of internal/lab (two strongSwan + FRR endpoints, a VPC host behind them) whose internet
// namespace is also the ISP (DHCP server, DNS, a WAN host) and hosts the reference cloud; on the
// LAN side a client namespace that gets its address from the router by DHCP.
//
//	[lan] eth0 ── clan ┐                       ┌ cwan ══ site0 [inet] ep1 ══ out0 [ep1] vpc0 ─┐
//	(laptop/phone:      brlan ─ taplan ═ QEMU ═ tapwan ─ brwan     │  DHCP, DNS     charon+FRR   br0 [vpc]
//	 DHCP from the      │      eth1      eth0     │               │  lo: WAN host   ep2 ══ ...  ─┘ VPC host
//	 router)            └──────────── [hw] ───────┘               │  lo: cloud
//
// QEMU runs inside the hw namespace (through `ip netns exec`, so image/qemu's runner still owns
// the process and its console), where each TAP is bridged to a veth "cable" leading to the
// other namespaces: the router's ports are plugged into the lab like real cables, and the WAN
// can be cut at the ISP's end (CutWAN) while the router's NIC keeps its carrier, as when the
// ISP's network fails. The addresses are in addrs.go (one table).
//
// The flow (ZeroTouch) is what a customer sees: the router boots, takes its WAN address by
// DHCP, serves the LAN; the app on the LAN client pairs with it (SPAKE2+ from the label) and
// hands over the cloud claim; the router enrolls, fetches its signed profile, resolves the
// tunnels' PSKs from the cloud's secret store over mTLS, dials both tunnels, brings BGP up on
// each, and installs the VPC routes it learns; the LAN client then reaches the VPC host through
// the tunnels and the WAN host through NAT.
//
// Everything is owned by a lab.Lab: in tests lab.New(t), in `meshctl run` lab.Open with a
// dedicated namespace prefix, swept at the next start if a run crashed.
package sitelab

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	mdns "github.com/miekg/dns"

	"meshroot/board"
	"meshroot/firmware/router/dhcpd"
	"meshroot/image"
	"meshroot/image/qemu"
	"meshroot/internal/lab"
	"meshroot/provision/api"
	"meshroot/provision/devcloud"
)

// Config describes a site.
type Config struct {
	// Dir keeps the site's files (disk, factory blob, cloud data, console logs).
	Dir string
	// LeaseTime is the ISP's DHCP lease (default 1 h; short ones exercise renewal and expiry).
	LeaseTime time.Duration
	// NoCloud leaves the reference cloud out.
	NoCloud bool
	// Cloud adjusts the cloud's configuration.
	Cloud func(*devcloud.Config)
	// Concentrator adjusts the concentrator's configuration (ExternalSite stays set; the PSKs
	// are random unless set here).
	Concentrator func(*lab.ConcentratorConfig)
	// ReadyTimeout bounds the wait for the concentrator's endpoints (default 90 s).
	ReadyTimeout time.Duration
}

// Site is a running virtual site.
type Site struct {
	Lab *lab.Lab
	// Conc is the concentrator; ISP is its internet namespace (the ISP's services and the
	// cloud run there); HW holds QEMU and the bridges; LAN is the LAN client.
	Conc          *lab.Concentrator
	HW, ISP, LAN  *lab.NS
	ISPDHCP       *dhcpd.Server
	Cloud         *devcloud.Server
	CloudURL      string
	Op            *api.Client
	dir           string
	stop          context.CancelFunc
	wrapper       string
	closeServices []func()

	mu       sync.Mutex
	lanLease Lease // the LAN client's address now (Addr invalid: none)
}

// New builds the concentrator (its endpoints started and ready), the namespaces and cables,
// and the ISP's services (DHCP, DNS, WAN host, cloud). The lab tears everything down; Close
// stops the in-process services first.
func New(l *lab.Lab, cfg Config) (*Site, error) {
	if cfg.Dir == "" {
		return nil, errors.New("sitelab: Dir is required")
	}
	if cfg.LeaseTime <= 0 {
		cfg.LeaseTime = time.Hour
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 90 * time.Second
	}
	cc := lab.ConcentratorConfig{ASN: ConcentratorASN, SiteASN: SiteASN}
	for i := range cc.Tunnels {
		psk, err := NewPSK()
		if err != nil {
			return nil, err
		}
		cc.Tunnels[i].PSK = psk
	}
	if cfg.Concentrator != nil {
		cfg.Concentrator(&cc)
	}
	cc.ExternalSite = true
	conc, err := lab.NewConcentrator(l, cc)
	if err != nil {
		return nil, fmt.Errorf("sitelab: concentrator: %w", err)
	}
	s := &Site{Lab: l, Conc: conc, ISP: conc.Internet, dir: cfg.Dir}
	if s.HW, err = l.NewNS("hw"); err != nil {
		return nil, err
	}
	if s.LAN, err = l.NewNS("lan"); err != nil {
		return nil, err
	}
	steps := []func() error{
		func() error { return s.HW.AddTap("tapwan") },
		func() error { return s.HW.AddTap("taplan") },
		func() error { return s.HW.AddBridge("brwan") },
		func() error { return s.HW.AddBridge("brlan") },
		func() error { return conc.AttachSite(s.HW, "cwan") },
		func() error { return l.Veth(s.HW, "clan", s.LAN, "eth0") },
		func() error { return s.HW.SetMaster("tapwan", "brwan") },
		func() error { return s.HW.SetMaster("cwan", "brwan") },
		func() error { return s.HW.SetMaster("taplan", "brlan") },
		func() error { return s.HW.SetMaster("clan", "brlan") },
		func() error { return s.HW.LinkUp("tapwan") },
		func() error { return s.HW.LinkUp("taplan") },
		func() error { return s.HW.LinkUp("brwan") },
		func() error { return s.HW.LinkUp("brlan") },
		func() error { return s.ISP.AddAddr("lo", CloudAddr.String()+"/32") },
		func() error { return s.LAN.LinkUp("eth0") },
	}
	for _, st := range steps {
		if err := st(); err != nil {
			return nil, fmt.Errorf("sitelab: %w", err)
		}
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	// `ip netns exec` keeps the PID (it execs), so image/qemu stops the QEMU it started.
	s.wrapper = filepath.Join(cfg.Dir, "qemu-in-hw")
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	l.Logger().Debug("sitelab: namespaces ready", "hw", s.HW.Name, "internet", s.ISP.Name, "lan", s.LAN.Name)
	if err := s.startISP(ctx, cfg); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.startVPCService(); err != nil {
		s.Close()
		return nil, err
	}
	rctx, rcancel := context.WithTimeout(ctx, cfg.ReadyTimeout)
	defer rcancel()
	if err := conc.WaitReady(rctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("sitelab: concentrator: %w", err)
	}
	return s, nil
}

// Close stops the ISP's services and the cloud (the lab removes the namespaces and processes).
func (s *Site) Close() {
	s.stop()
	for i := len(s.closeServices) - 1; i >= 0; i-- {
		s.closeServices[i]()
	}
	s.closeServices = nil
}

// Dir is the site's directory.
func (s *Site) Dir() string { return s.dir }

// NewPSK makes a pre-shared key as AWS does by default: 32 characters from [A-Za-z0-9._],
// not starting with 0.
func NewPSK() (string, error) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._"
	b := make([]byte, 32)
	for i := range b {
		for {
			n, err := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
			if err != nil {
				return "", err
			}
			c := alphabet[n.Int64()]
			if i == 0 && (c == '0' || c == '.' || c == '_') {
				continue
			}
			b[i] = c
			break
		}
	}
	return string(b), nil
}

// echoService accepts TCP connections on ln and writes each caller's address back: the WAN host
// sees the router's WAN address when NAT works; the VPC host sees the LAN client's own address
// when the traffic came through a tunnel untranslated.
func echoService(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		from := c.RemoteAddr().(*net.TCPAddr).IP.String()
		io.WriteString(c, from+"\n")
		c.Close()
	}
}

func (s *Site) startISP(ctx context.Context, cfg Config) error {
	// DHCP for the router's WAN: the endpoints expect the customer gateway at WANAddr, so the
	// ISP reserves it for the router's MAC (a business line's fixed address, handed out by DHCP).
	var err error
	s.ISPDHCP, err = dhcpd.New(dhcpd.Config{Interface: "site0", Address: ISPGateway, LeaseTime: cfg.LeaseTime,
		PoolStart: WANAddr, PoolEnd: WANAddr,
		Static: []dhcpd.StaticLease{{MAC: WANMAC.String(), IP: WANAddr}},
		DNS:    []netip.Addr{ISPGateway.Addr()}, Domain: "isp.example", Logger: s.Lab.Logger()})
	if err != nil {
		return err
	}
	var conn net.PacketConn
	if err := s.ISP.Do(func() (err error) { conn, err = s.ISPDHCP.Listen(); return err }); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { s.ISPDHCP.Serve(ctx, conn); close(done) }()
	s.closeServices = append(s.closeServices, func() { <-done })

	// The ISP's DNS: answers the WAN host's name, refuses the rest.
	var pc net.PacketConn
	if err := s.ISP.Do(func() (err error) {
		pc, err = net.ListenPacket("udp", netip.AddrPortFrom(ISPGateway.Addr(), 53).String())
		return err
	}); err != nil {
		return err
	}
	dnsSrv := &mdns.Server{PacketConn: pc, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(r)
		if len(r.Question) == 1 && mdns.CanonicalName(r.Question[0].Name) == WANHostName && r.Question[0].Qtype == mdns.TypeA {
			m.Answer = append(m.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: r.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60}, A: WANHost.AsSlice()})
		} else {
			m.Rcode = mdns.RcodeNameError
		}
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	dnsSrv.NotifyStartedFunc = func() { close(started) }
	go dnsSrv.ActivateAndServe()
	<-started
	s.closeServices = append(s.closeServices, func() { dnsSrv.Shutdown() })

	// The WAN host's service.
	var ln net.Listener
	if err := s.ISP.Do(func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(WANHost, WANHostPort).String())
		return err
	}); err != nil {
		return err
	}
	go echoService(ln)
	s.closeServices = append(s.closeServices, func() { ln.Close() })

	if cfg.NoCloud {
		return nil
	}
	ccfg := devcloud.Config{DataDir: filepath.Join(s.dir, "cloud"), PublicURL: fmt.Sprintf("https://%s:%d", CloudAddr, CloudPort),
		Logger: s.Lab.Logger()}
	if cfg.Cloud != nil {
		cfg.Cloud(&ccfg)
	}
	s.Cloud, err = devcloud.New(ccfg)
	if err != nil {
		return err
	}
	var cln net.Listener
	if err := s.ISP.Do(func() (err error) {
		cln, err = net.Listen("tcp", netip.AddrPortFrom(CloudAddr, CloudPort).String())
		return err
	}); err != nil {
		s.Cloud.Close()
		return err
	}
	cdone := make(chan struct{})
	go func() { s.Cloud.Serve(ctx, cln); close(cdone) }()
	s.closeServices = append(s.closeServices, func() { <-cdone; s.Cloud.Close() })
	s.CloudURL = ccfg.PublicURL
	hc, err := api.TrustCA(s.Cloud.CACertPEM(), 30*time.Second)
	if err != nil {
		return err
	}
	hc.Transport.(*http.Transport).DialContext = Dialer(s.ISP) // the operator sits beside the cloud
	s.Op = &api.Client{BaseURL: s.CloudURL, Token: s.Cloud.AdminToken(), HTTP: hc}
	return nil
}

// startVPCService runs the echo service on the VPC host.
func (s *Site) startVPCService() error {
	var ln net.Listener
	if err := s.Conc.VPC.Do(func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(VPCHost, VPCHostPort).String())
		return err
	}); err != nil {
		return err
	}
	go echoService(ln)
	s.closeServices = append(s.closeServices, func() { ln.Close() })
	return nil
}

// Dialer makes connections from inside ns (for HTTP clients: the transport dials on its own
// goroutines, which are not in the namespace).
func Dialer(ns *lab.NS) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := ns.Do(func() (err error) {
			c, err = (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// HTTPClient is an HTTP client whose connections start in ns.
func HTTPClient(ns *lab.NS, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: Dialer(ns), DisableKeepAlives: true}}
}

// VMConfig describes the router VM.
type VMConfig struct {
	// Image is a built image directory and its manifest.
	ImageDir string
	Manifest image.Manifest
	// Disk is the data disk (created to the board's layout when missing; default
	// <Dir>/disk.img).
	Disk string
	// Factory is the factory data handed to the VM as fw_cfg opt/meshroot/factory (nil: none).
	Factory []byte
	// Echo receives the console; LogPath keeps it.
	Echo    io.Writer
	LogPath string
	// Timeout bounds the VM's life (default 10 min; negative: none).
	Timeout time.Duration
	// MemoryMB sizes the VM (default image/qemu's).
	MemoryMB int
	// Append are extra kernel arguments (e.g. meshroot.hwsim=2 for simulated radios).
	Append []string
	// Extra are extra QEMU arguments (e.g. another -fw_cfg blob for a test's helper).
	Extra []string
}

// Boot starts the router VM in the hw namespace with its WAN (first NIC, eth0) and LAN (eth1)
// on the lab's TAPs.
func (s *Site) Boot(cfg VMConfig) (*qemu.VM, error) {
	b, err := board.Lookup(cfg.Manifest.Board)
	if err != nil {
		return nil, err
	}
	bin, err := qemu.Binary(cfg.Manifest.Arch)
	if err != nil {
		return nil, err
	}
	qbin, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("sitelab: %w (run `make deps`)", err)
	}
	script := fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n", s.HW.Name, qbin)
	if err := os.WriteFile(s.wrapper, []byte(script), 0o755); err != nil {
		return nil, err
	}
	if cfg.Disk == "" {
		cfg.Disk = filepath.Join(s.dir, "disk.img")
	}
	if _, err := os.Stat(cfg.Disk); errors.Is(err, os.ErrNotExist) {
		if err := qemu.CreateDisk(context.Background(), cfg.Disk, b.Flash, qemu.DiskOptions{}); err != nil {
			return nil, err
		}
	}
	qc := qemu.ImageConfig(cfg.ImageDir, cfg.Manifest)
	qc.Binary = s.wrapper
	qc.Disk = cfg.Disk
	qc.Watchdog = b.Watchdog != ""
	qc.NICs = []qemu.NIC{qemu.TapNIC("tapwan", WANMAC.String()), qemu.TapNIC("taplan", LANMAC.String())}
	qc.Echo, qc.LogPath = cfg.Echo, cfg.LogPath
	qc.MemoryMB = cfg.MemoryMB
	qc.Append = append(qc.Append, cfg.Append...)
	qc.Extra = append(qc.Extra, cfg.Extra...)
	if cfg.Factory != nil {
		p := filepath.Join(s.dir, "factory.json")
		if err := os.WriteFile(p, cfg.Factory, 0o644); err != nil {
			return nil, err
		}
		qc.Extra = append(qc.Extra, "-fw_cfg", "name=opt/meshroot/factory,file="+p)
	}
	ctx, cancel := context.Background(), context.CancelFunc(func() {})
	switch {
	case cfg.Timeout == 0:
		ctx, cancel = context.WithTimeout(ctx, 10*time.Minute)
	case cfg.Timeout > 0:
		ctx, cancel = context.WithTimeout(ctx, cfg.Timeout)
	}
	vm, err := qemu.Start(ctx, qc)
	if err != nil {
		cancel()
		return nil, err
	}
	go func() { <-vm.Done(); cancel() }()
	return vm, nil
}

// CutWAN takes the ISP's end of the WAN cable down (the router's port keeps its carrier: the
// upstream network is gone, not the cable): the router loses the cloud, both endpoints and the
// WAN host. RestoreWAN brings it back.
func (s *Site) CutWAN() error { return s.Conc.CutSiteUplink() }

// RestoreWAN ends CutWAN.
func (s *Site) RestoreWAN() error { return s.Conc.RestoreSiteUplink() }

// CutCloud takes the reference cloud off the internet (its address leaves the internet
// namespace, so the router's connections to it are refused) while the concentrator stays
// reachable; RestoreCloud brings it back.
func (s *Site) CutCloud() error { return s.ISP.DelAddr("lo", CloudAddr.String()+"/32") }

// RestoreCloud ends CutCloud.
func (s *Site) RestoreCloud() error { return s.ISP.AddAddr("lo", CloudAddr.String()+"/32") }

// RouterWAN returns the address the ISP's DHCP server gave the router (invalid when none).
func (s *Site) RouterWAN() netip.Addr {
	for _, l := range s.ISPDHCP.Leases() {
		if l.MAC == WANMAC.String() {
			return l.IP
		}
	}
	return netip.Addr{}
}

// Lease is what the LAN client got from the router.
type Lease struct {
	Addr    netip.Prefix
	Router  netip.Addr
	DNS     []netip.Addr
	Domain  string
	Expires time.Duration
}

// LANLease runs a DHCP exchange from the LAN client (nclient4 on a raw socket in the lan
// namespace) and configures what it got (address and default route, replacing an earlier
// lease's), as a laptop would.
func (s *Site) LANLease(ctx context.Context, hostname string) (Lease, error) {
	var l *nclient4.Lease
	err := s.LAN.Do(func() error {
		c, err := nclient4.New("eth0", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
		if err != nil {
			return err
		}
		defer c.Close()
		l, err = c.Request(ctx, dhcpv4.WithOption(dhcpv4.OptHostName(hostname)))
		return err
	})
	if err != nil {
		return Lease{}, fmt.Errorf("lan client: dhcp: %w", err)
	}
	ip, _ := netip.AddrFromSlice(l.ACK.YourIPAddr.To4())
	ones, _ := l.ACK.SubnetMask().Size()
	out := Lease{Addr: netip.PrefixFrom(ip, ones), Domain: l.ACK.DomainName(), Expires: l.ACK.IPAddressLeaseTime(0)}
	if r := l.ACK.Router(); len(r) > 0 {
		out.Router, _ = netip.AddrFromSlice(r[0].To4())
	}
	for _, d := range l.ACK.DNS() {
		a, _ := netip.AddrFromSlice(d.To4())
		out.DNS = append(out.DNS, a)
	}
	s.mu.Lock()
	prev := s.lanLease.Addr
	s.mu.Unlock()
	if prev.IsValid() && prev != out.Addr {
		_ = s.LAN.DelAddr("eth0", prev.String())
	}
	if prev != out.Addr {
		if err := s.LAN.AddAddr("eth0", out.Addr.String()); err != nil {
			return out, err
		}
	}
	if out.Router.IsValid() {
		if err := s.LAN.AddRoute(lab.Route{Dst: "default", Via: out.Router.String()}); err != nil {
			return out, err
		}
	}
	s.mu.Lock()
	s.lanLease = out
	s.mu.Unlock()
	return out, nil
}

// LANClient returns the LAN client's lease in force (Addr invalid before LANLease).
func (s *Site) LANClient() Lease {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lanLease
}

// Resolve asks server (from the LAN client) for name's A record: the address, or the rcode.
func (s *Site) Resolve(server netip.Addr, name string) (string, error) {
	var out string
	err := s.LAN.Do(func() error {
		m := new(mdns.Msg)
		m.SetQuestion(mdns.Fqdn(name), mdns.TypeA)
		r, _, err := (&mdns.Client{Timeout: 3 * time.Second}).Exchange(m, netip.AddrPortFrom(server, 53).String())
		if err != nil {
			return err
		}
		out = mdns.RcodeToString[r.Rcode]
		for _, rr := range r.Answer {
			if a, ok := rr.(*mdns.A); ok {
				out = a.A.String()
			}
		}
		return nil
	})
	return out, err
}

// SeenBy connects from the LAN client to the echo service at dst and returns the source
// address the far end saw: for the WAN host the router's WAN address (NAT), for the VPC host
// the LAN client's own address (the tunnel carries it untranslated).
func (s *Site) SeenBy(dst netip.AddrPort, timeout time.Duration) (string, error) {
	var seen string
	err := s.LAN.Do(func() error {
		c, err := net.DialTimeout("tcp", dst.String(), timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(timeout))
		b := make([]byte, 64)
		n, _ := c.Read(b)
		seen = strings.TrimSuffix(string(b[:n]), "\n")
		return nil
	})
	return seen, err
}

// WANHostSeen is SeenBy for the WAN host.
func (s *Site) WANHostSeen(timeout time.Duration) (string, error) {
	return s.SeenBy(netip.AddrPortFrom(WANHost, WANHostPort), timeout)
}

// VPCHostSeen is SeenBy for the VPC host.
func (s *Site) VPCHostSeen(timeout time.Duration) (string, error) {
	return s.SeenBy(netip.AddrPortFrom(VPCHost, VPCHostPort), timeout)
}
