// Package sitelab builds a virtual site around a router VM, for the VM tests, benchmarks and
// (later) `make run`: the firmware image booted in QEMU with its WAN and LAN ports on TAP
// devices, an "internet" namespace on the WAN side (the ISP's DHCP server and DNS, a WAN host,
// the reference cloud), and a LAN client namespace on the LAN side.
//
//	[lan]  eth0 ───────── clan ┐                      ┌ cwan ───────── rtr0 100.64.0.1/24  [isp]
//	(a laptop; DHCP from       brlan ─ taplan ═ QEMU ═ tapwan ─ brwan     DHCP (server4), DNS
//	 the router)               └──────────── [hw] ─────────────┘          lo: 198.18.0.1 WAN host
//	                                                                       lo: 198.18.0.2 cloud
//
// QEMU runs inside the hw namespace (through `ip netns exec`, so image/qemu's runner still
// owns the process and its console), where each TAP is bridged to a veth "cable" leading to
// the other namespaces: the router's ports are plugged into the lab like real cables, and the
// WAN can be cut from the ISP's side (CutWAN) while the router's NIC keeps its carrier, as when
// the ISP's network fails. For the full virtual site with tunnels (`make run`, once
// vpn.Connection exists), the WAN cable's far end is meant to move to the concentrator lab's
// "internet" namespace (internal/lab.Concentrator), which routes to the endpoints: the hw
// namespace and its cables do not change, only the namespace that serves DHCP, DNS and the
// cloud. That option is not written yet (its WAN-host address would clash with the
// concentrator's 198.18.0.1).
package sitelab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
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

// The lab's fixed addressing.
var (
	ISPGateway  = netip.MustParsePrefix("100.64.0.1/24") // the ISP's router (DHCP server, DNS)
	WANHost     = netip.MustParseAddr("198.18.0.1")      // "somewhere on the internet"
	CloudAddr   = netip.MustParseAddr("198.18.0.2")      // the reference cloud
	WANHostName = "wanhost.example."                     // the ISP's DNS answers it with WANHost
	RouterLAN   = netip.MustParseAddr("192.168.1.1")     // the router's default LAN address
	WANMAC      = net.HardwareAddr{0x52, 0x54, 0x00, 0x6d, 0x72, 0x01}
	LANMAC      = net.HardwareAddr{0x52, 0x54, 0x00, 0x6d, 0x72, 0x02}
)

// WANHostPort is where the WAN host's TCP service (EchoSource) listens.
const WANHostPort = 8000

// CloudPort is the cloud's HTTPS port.
const CloudPort = 8443

// Config describes a site.
type Config struct {
	// Dir keeps the site's files (disk, factory blob, cloud data, console log).
	Dir string
	// LeaseTime is the ISP's DHCP lease (default 1 h; short ones exercise renewal and expiry).
	LeaseTime time.Duration
	// NoCloud leaves the reference cloud out.
	NoCloud bool
	// Cloud adjusts the cloud's configuration.
	Cloud func(*devcloud.Config)
}

// Site is a running virtual site.
type Site struct {
	Lab           *lab.Lab
	HW, ISP, LAN  *lab.NS
	ISPDHCP       *dhcpd.Server
	Cloud         *devcloud.Server
	CloudURL      string
	Op            *api.Client
	dir           string
	stop          context.CancelFunc
	wrapper       string
	cableWAN      string // the ISP side of the WAN cable
	isp4          netip.Prefix
	closeServices []func()
}

// New builds the namespaces, cables and the ISP's services (DHCP, DNS, WAN host, cloud). The
// lab tears everything down.
func New(l *lab.Lab, cfg Config) (*Site, error) {
	if cfg.Dir == "" {
		return nil, errors.New("sitelab: Dir is required")
	}
	if cfg.LeaseTime <= 0 {
		cfg.LeaseTime = time.Hour
	}
	s := &Site{Lab: l, dir: cfg.Dir, cableWAN: "rtr0", isp4: ISPGateway}
	var err error
	mk := func(dst **lab.NS, name string) {
		if err == nil {
			*dst, err = l.NewNS(name)
		}
	}
	mk(&s.HW, "hw")
	mk(&s.ISP, "isp")
	mk(&s.LAN, "lan")
	if err != nil {
		return nil, err
	}
	steps := []func() error{
		func() error { return s.HW.AddTap("tapwan") },
		func() error { return s.HW.AddTap("taplan") },
		func() error { return s.HW.AddBridge("brwan") },
		func() error { return s.HW.AddBridge("brlan") },
		func() error { return l.Veth(s.HW, "cwan", s.ISP, s.cableWAN) },
		func() error { return l.Veth(s.HW, "clan", s.LAN, "eth0") },
		func() error { return s.HW.SetMaster("tapwan", "brwan") },
		func() error { return s.HW.SetMaster("cwan", "brwan") },
		func() error { return s.HW.SetMaster("taplan", "brlan") },
		func() error { return s.HW.SetMaster("clan", "brlan") },
		func() error { return s.HW.LinkUp("tapwan") },
		func() error { return s.HW.LinkUp("taplan") },
		func() error { return s.HW.LinkUp("brwan") },
		func() error { return s.HW.LinkUp("brlan") },
		func() error { return s.ISP.AddAddr(s.cableWAN, ISPGateway.String()) },
		func() error { return s.ISP.AddAddr("lo", WANHost.String()+"/32", CloudAddr.String()+"/32") },
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
	l.Logger().Debug("sitelab: namespaces ready", "hw", s.HW.Name, "isp", s.ISP.Name, "lan", s.LAN.Name)
	if err := s.startISP(ctx, cfg); err != nil {
		cancel()
		return nil, err
	}
	return s, nil
}

// Close stops the ISP's services (the lab removes the namespaces).
func (s *Site) Close() {
	s.stop()
	for i := len(s.closeServices) - 1; i >= 0; i-- {
		s.closeServices[i]()
	}
}

func (s *Site) startISP(ctx context.Context, cfg Config) error {
	// DHCP for the router's WAN.
	var err error
	s.ISPDHCP, err = dhcpd.New(dhcpd.Config{Interface: s.cableWAN, Address: s.isp4, LeaseTime: cfg.LeaseTime,
		DNS: []netip.Addr{s.isp4.Addr()}, Domain: "isp.example", Logger: s.Lab.Logger()})
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
		pc, err = net.ListenPacket("udp", netip.AddrPortFrom(s.isp4.Addr(), 53).String())
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

	// The WAN host: a TCP service that reports who connected (NAT shows as the router's address).
	var ln net.Listener
	if err := s.ISP.Do(func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(WANHost, WANHostPort).String())
		return err
	}); err != nil {
		return err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			from := c.RemoteAddr().(*net.TCPAddr).IP.String()
			io.WriteString(c, from+"\n")
			c.Close()
		}
	}()
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
	// Disk is the data disk (created to the board's layout when missing).
	Disk string
	// Factory is the factory data handed to the VM as fw_cfg opt/meshroot/factory (nil: none).
	Factory []byte
	// Echo receives the console; LogPath keeps it.
	Echo    io.Writer
	LogPath string
	// Timeout bounds the VM's life (default 10 min).
	Timeout time.Duration
	// Append are extra kernel arguments.
	Append []string
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
	qc.Append = append(qc.Append, cfg.Append...)
	if cfg.Factory != nil {
		p := filepath.Join(s.dir, "factory.json")
		if err := os.WriteFile(p, cfg.Factory, 0o644); err != nil {
			return nil, err
		}
		qc.Extra = append(qc.Extra, "-fw_cfg", "name=opt/meshroot/factory,file="+p)
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = 10 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	vm, err := qemu.Start(ctx, qc)
	if err != nil {
		cancel()
		return nil, err
	}
	go func() { <-vm.Done(); cancel() }()
	return vm, nil
}

// CutWAN takes the ISP's end of the WAN cable down (the router's port keeps its carrier: the
// upstream network is gone, not the cable); RestoreWAN brings it back.
func (s *Site) CutWAN() error { return s.ISP.LinkDown(s.cableWAN) }

// RestoreWAN ends CutWAN.
func (s *Site) RestoreWAN() error { return s.ISP.LinkUp(s.cableWAN) }

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
// namespace) and configures what it got (address and default route), as a laptop would.
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
	if err := s.LAN.AddAddr("eth0", out.Addr.String()); err != nil {
		return out, err
	}
	if out.Router.IsValid() {
		if err := s.LAN.AddRoute(lab.Route{Dst: "default", Via: out.Router.String()}); err != nil {
			return out, err
		}
	}
	return out, nil
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

// WANHostSeen connects from the LAN client to the WAN host's service and returns the source
// address the WAN host saw (the router's WAN address when NAT works).
func (s *Site) WANHostSeen(timeout time.Duration) (string, error) {
	var seen string
	err := s.LAN.Do(func() error {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(WANHost, WANHostPort).String(), timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(timeout))
		b := make([]byte, 64)
		n, _ := c.Read(b)
		if n > 0 && b[n-1] == '\n' {
			n--
		}
		seen = string(b[:n])
		return nil
	})
	return seen, err
}
