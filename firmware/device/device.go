// Package device assembles the router inside meshd: it is where the firmware wires the domains
// together. Services returns the services meshd's supervisor runs after its built-in ones (data,
// lan, watchdog, console):
//
//	firewall   nftables table (firmware/router/nft) and IP forwarding        after lan
//	wan        uplink: DHCP client or static (firmware/router/wan)          after data, firewall
//	dhcp       LAN DHCPv4 server, leases in /data/dhcp (firmware/router/dhcpd) after data, lan
//	dns        LAN DNS forwarder on the LAN address (firmware/router/dns)   after lan
//	status     GET /status and /metrics on the LAN address, port 80         after lan
//	provision  provision/agent: pairing on the LAN address (port 8080), enrollment, profile
//	                                                                          after data, lan
//	vpn        firmware/vpnhook: profile → vpn.Config → vpn.Connection       after provision, firewall
//	radio      firmware/radiohook: the site's Wi-Fi from the profile (hostapd on every radio,
//	           supervised), the radio manager (surveys, channel plans, DFS), the mesh node and,
//	           on the gateway, the controller, the backhaul agent on the LAN  after provision, lan
//	ota        ota.OpenDevice + Updater.Run, root of trust from the image    after data, wan
//	logship    device and VPN logs to the cloud (firmware/logship)          after data
//
// The WAN depends on the firewall: a router whose rules cannot be applied stays off the WAN
// rather than exposed. Nothing on the LAN depends on the WAN or the cloud: DHCP, DNS for local
// names and LAN-to-LAN keep working without them, and the provisioning agent keeps the last
// good profile.
//
// Factory data (serial, SPAKE2+ verifier) is read-only data written at manufacturing, apart
// from the data partition (a factory reset wipes /data, never the factory data). Real boards
// keep it in a factory partition (not read yet: see LoadFactory). The QEMU boards get it from
// QEMU's firmware configuration device: `-fw_cfg name=opt/meshroot/factory,file=factory.json`,
// read at /sys/firmware/qemu_fw_cfg/by_name/opt/meshroot/factory/raw (module qemu_fw_cfg) —
// per-VM like a per-unit factory partition, read-only to the guest, and untouched by a reset
// or a fresh data disk. meshd -factory FILE overrides both.
package device

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"meshroot/board"
	"meshroot/firmware"
	"meshroot/firmware/logship"
	"meshroot/firmware/radiohook"
	"meshroot/firmware/router/dhcpd"
	"meshroot/firmware/router/dns"
	"meshroot/firmware/router/nft"
	"meshroot/firmware/router/wan"
	"meshroot/firmware/status"
	"meshroot/firmware/vpnhook"
	"meshroot/ota"
	"meshroot/provision/agent"
	"meshroot/provision/enroll"
	"meshroot/provision/identity"
	"meshroot/provision/profile"
	"meshroot/vpn/vpnlog"
)

// FwCfgFactory is where QEMU's fw_cfg blob with the factory data appears (relative to the root).
const FwCfgFactory = "sys/firmware/qemu_fw_cfg/by_name/opt/meshroot/factory/raw"

// OTARoot is the image's TUF root of trust (relative to the root).
const OTARoot = "etc/meshroot/ota/root.json"

// Ports on the LAN address.
const (
	StatusPort  = 80
	OnboardPort = 8080
)

// Options tune the services; the zero value is the device's. The hooks let tests run the
// services against fakes.
type Options struct {
	// FactoryFile is the factory data file ("": QEMU's fw_cfg blob).
	FactoryFile string
	// Hostname is the router's name on the LAN (default "meshroot").
	Hostname string
	// StatusPort and OnboardPort on the LAN address (defaults 80 and 8080).
	StatusPort, OnboardPort int
	// WaitFactory is how long to wait for the factory data to appear (default 5 s).
	WaitFactory time.Duration

	// NFT, WANKernel and NewDHCP are the kernel and the DHCP client (real when nil).
	NFT       nft.Kernel
	WANKernel wan.Kernel
	NewDHCP   func(ifname string, hw net.HardwareAddr) (wan.DHCP, error)
	// ListenDHCP opens the LAN DHCP server's socket (default: dhcpd's, on the bridge).
	ListenDHCP func(s *dhcpd.Server) (net.PacketConn, error)
	// ListenDNS opens the forwarder's sockets (default: UDP and TCP port 53 on the LAN address).
	ListenDNS func(addr netip.Addr) (net.PacketConn, net.Listener, error)
	// Listen opens TCP listeners for the status API and the pairing server (default: net.Listen;
	// the agent then listens by itself, again after a restart; a hook's listener serves the
	// agent's first run only).
	Listen func(network, addr string) (net.Listener, error)
	// Dial makes the agent's connections to the cloud.
	Dial enroll.DialFunc
	// Sysctl writes a sysctl (default: under <root>/proc/sys).
	Sysctl func(key, value string) error
	// Reboot restarts the device for OTA (default: meshd's clean reboot, firmware.Request).
	Reboot func() error
	// LogInterval is the log shipper's upload interval (default 10 s).
	LogInterval time.Duration
	// AgentConfig adjusts the provisioning agent's configuration (tests: shorter waits).
	AgentConfig func(*agent.Config)
	// VPNEngine makes the VPN connection (default: vpnhook.NewEngine, a vpn.Connection on this
	// machine's kernel); NoVPN runs the hook without an engine.
	VPNEngine func(log *slog.Logger, logs vpnlog.Sink) vpnhook.Engine
	NoVPN     bool
	// Radio adjusts the radio service before it runs (tests: fakes for hostapd and nl80211).
	Radio func(*radiohook.Service)
}

// Services returns the router's services for firmware.Options.Services.
func Services(opts Options) func(d *firmware.Device) []firmware.Service {
	return func(d *firmware.Device) []firmware.Service { return New(d, opts).Services() }
}

// Router is the device's services and the state they share.
type Router struct {
	d     *firmware.Device
	opts  Options
	log   *slog.Logger
	ship  *logship.Shipper
	vpn   *vpnhook.Service
	radio *radiohook.Service

	fwKick chan struct{}

	mu      sync.Mutex
	wan     *wan.Service
	dhcp    *dhcpd.Server
	dns     *dns.Forwarder
	agent   *agent.Agent
	provErr string
	serial  string
	peers   []netip.Addr
	fw      status.Firewall
	ota     status.OTA
}

// New makes the router's state for a device; logs start buffering for the cloud at once.
func New(d *firmware.Device, opts Options) *Router {
	if opts.Hostname == "" {
		opts.Hostname = "meshroot"
	}
	if opts.StatusPort == 0 {
		opts.StatusPort = StatusPort
	}
	if opts.OnboardPort == 0 {
		opts.OnboardPort = OnboardPort
	}
	if opts.WaitFactory <= 0 {
		opts.WaitFactory = 5 * time.Second
	}
	if opts.NFT == nil {
		opts.NFT = nft.Netlink{}
	}
	if opts.WANKernel == nil {
		opts.WANKernel = wan.Netlink{}
	}
	if opts.ListenDHCP == nil {
		opts.ListenDHCP = (*dhcpd.Server).Listen
	}
	if opts.ListenDNS == nil {
		opts.ListenDNS = func(a netip.Addr) (net.PacketConn, net.Listener, error) { return dns.Listen(a, 53) }
	}
	if opts.Sysctl == nil {
		opts.Sysctl = func(k, v string) error {
			return os.WriteFile(filepath.Join(d.Root, "proc/sys", filepath.FromSlash(k)), []byte(v), 0o644)
		}
	}
	if opts.Reboot == nil {
		opts.Reboot = func() error { return firmware.Request(d.Root, firmware.Reboot) }
	}
	r := &Router{d: d, opts: opts, log: d.Log, fwKick: make(chan struct{}, 1)}
	r.ship = logship.New(logship.Config{Interval: opts.LogInterval})
	d.Logging.AddSink(r.ship)
	r.ota = status.OTA{State: "starting"}
	r.vpn = &vpnhook.Service{
		Subscribe: func(fn func(*profile.Verified)) func() { return r.getAgent().Subscribe(fn) },
		Secret:    func(ref string) (string, bool) { return r.getAgent().Secret(ref) },
		LocalAddress: func() netip.Addr {
			if w := r.getWAN(); w != nil {
				if st := w.State(); st.Up() {
					return st.Address.Addr()
				}
			}
			return netip.Addr{}
		},
		Secrets:   d.Logging.Secrets,
		Logs:      vpnlog.NewRedactor(r.ship.VPNSink()),
		OnPlan:    r.setPeers,
		NewEngine: opts.VPNEngine,
		NoEngine:  opts.NoVPN,
		Log:       d.Log,
	}
	r.radio = &radiohook.Service{
		Board:          d.Board,
		Root:           d.Root,
		Subscribe:      func(fn func(*profile.Verified)) func() { return r.getAgent().Subscribe(fn) },
		Secret:         func(ref string) (string, bool) { return r.getAgent().Secret(ref) },
		WiFiPassphrase: func() (string, bool) { return r.getAgent().WiFiPassphrase() },
		Secrets:        d.Logging.Secrets,
		Node: func() string {
			r.mu.Lock()
			defer r.mu.Unlock()
			return r.serial
		},
		// The gateway is the node with the WAN (the service keeps the role once it had it).
		Gateway: func() bool {
			w := r.getWAN()
			return w != nil && w.State().Up()
		},
		LAN: func() (string, netip.Prefix) {
			c, p := r.lan()
			return c.Bridge, p
		},
		Store:      d.Store,
		LoadModule: r.loadModule,
		Log:        d.Log,
	}
	if opts.Radio != nil {
		opts.Radio(r.radio)
	}
	return r
}

// loadModule loads a kernel module and its dependencies from the image's modules.dep.
func (r *Router) loadModule(name, params string) error {
	rel, err := r.d.Sys.KernelRelease()
	if err != nil {
		return err
	}
	l, err := firmware.NewModuleLoader(filepath.Join(r.d.Root, "lib/modules", rel), r.d.Sys.Modules)
	if err != nil {
		return err
	}
	loaded, err := l.Load(name, params)
	if len(loaded) > 0 {
		r.log.Info("modules loaded", "modules", loaded, "for", name)
	}
	return err
}

// Services lists the services (see the package documentation for the graph).
func (r *Router) Services() []firmware.Service {
	return []firmware.Service{
		firmware.Func("firewall", []string{"lan"}, r.runFirewall),
		firmware.Func("wan", []string{"data", "firewall"}, r.runWAN),
		firmware.Func("dhcp", []string{"data", "lan"}, r.runDHCP),
		firmware.Func("dns", []string{"lan"}, r.runDNS),
		firmware.Func("status", []string{"lan"}, r.runStatus),
		firmware.Func("provision", []string{"data", "lan"}, r.runProvision),
		firmware.Func("vpn", []string{"provision", "firewall"}, r.vpn.Run),
		firmware.Func("radio", []string{"provision", "lan"}, r.radio.Run),
		firmware.Func("ota", []string{"data", "wan"}, r.runOTA),
		firmware.Func("logship", []string{"data"}, r.runLogship),
	}
}

// lan returns the LAN bridge and address in force (the lan service's settings).
func (r *Router) lan() (firmware.LANConfig, netip.Prefix) {
	return (&firmware.LANService{Dev: r.d}).Config()
}

// wanPort returns the WAN interface: the board's WAN port, or on the generic profile the first
// Ethernet port by name.
func (r *Router) wanPort() (string, error) {
	ports := r.d.Board.Ports
	if r.d.Board.Generic {
		links, err := r.d.Sys.Net.Links()
		if err != nil {
			return "", err
		}
		var eth []string
		for _, l := range links {
			if l.Ethernet {
				eth = append(eth, l.Name)
			}
		}
		ports = board.GenericPorts(eth)
	}
	for _, p := range ports {
		if p.Role == board.RoleWAN {
			return p.Name, nil
		}
	}
	return "", errors.New("the board has no WAN port")
}

func (r *Router) getAgent() *agent.Agent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.agent
}

func (r *Router) getWAN() *wan.Service {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.wan
}

func (r *Router) getDHCP() *dhcpd.Server {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dhcp
}

// --- firewall ---

func (r *Router) setPeers(p *vpnhook.Plan) {
	peers := p.Peers()
	r.mu.Lock()
	same := slices.Equal(peers, r.peers)
	r.peers = peers
	r.mu.Unlock()
	if !same {
		select {
		case r.fwKick <- struct{}{}:
		default:
		}
	}
}

func (r *Router) runFirewall(ctx context.Context, up func()) error {
	port, err := r.wanPort()
	if err != nil {
		return firmware.Permanent(fmt.Errorf("firewall: %w", err))
	}
	lanCfg, _ := r.lan()
	// The whole table once; later only the wan_in chain (the peers), so the hooks and NAT are
	// never re-registered under established connections.
	applied := false
	apply := func() error {
		r.mu.Lock()
		peers := slices.Clone(r.peers)
		r.mu.Unlock()
		var err error
		if applied {
			err = r.opts.NFT.UpdateChain(nft.Table, nft.WANIn(peers))
		} else {
			var rs nft.Ruleset
			rs, err = nft.Build(nft.Config{WAN: port, LAN: lanCfg.Bridge, TunnelPrefix: vpnhook.TunnelPrefix, IKEPeers: peers})
			if err == nil {
				err = r.opts.NFT.Apply(rs)
			}
			applied = err == nil
		}
		r.mu.Lock()
		if err != nil {
			r.fw.LastError = err.Error()
		} else {
			r.fw.Applied, r.fw.LastError, r.fw.IKEFrom = true, "", nil
			for _, p := range peers {
				r.fw.IKEFrom = append(r.fw.IKEFrom, p.String())
			}
		}
		r.mu.Unlock()
		if err != nil {
			return fmt.Errorf("firewall: %w", err)
		}
		r.log.Info("firewall applied", "wan", port, "lan", lanCfg.Bridge, "ike_from", peers)
		return nil
	}
	if err := apply(); err != nil {
		return err
	}
	if err := r.opts.Sysctl("net/ipv4/ip_forward", "1"); err != nil {
		return fmt.Errorf("firewall: enable forwarding: %w", err)
	}
	up()
	for {
		select {
		case <-ctx.Done():
			return nil // the rules stay: the device is going down, not opening up
		case <-r.fwKick:
			if err := apply(); err != nil {
				return err
			}
		}
	}
}

// --- WAN ---

func (r *Router) runWAN(ctx context.Context, up func()) error {
	port, err := r.wanPort()
	if err != nil {
		return firmware.Permanent(fmt.Errorf("wan: %w", err))
	}
	var settings wan.Settings
	if st := r.d.Store(); st != nil {
		if err := st.Get("wan", &settings); err != nil && !errors.Is(err, firmware.ErrNotFound) {
			r.log.Warn("wan: stored settings unreadable; using DHCP", "err", err)
			settings = wan.Settings{}
		} else if verr := settings.Validate(); verr != nil {
			r.log.Warn("wan: stored settings invalid; using DHCP", "err", verr)
			settings = wan.Settings{}
		}
	}
	w, err := wan.New(wan.Config{Interface: port, Settings: settings, Hostname: r.opts.Hostname,
		ResolvConf: filepath.Join(r.d.Root, "etc/resolv.conf"), Kernel: r.opts.WANKernel, NewDHCP: r.opts.NewDHCP, Logger: r.log})
	if err != nil {
		return firmware.Permanent(err)
	}
	r.mu.Lock()
	r.wan = w
	r.mu.Unlock()
	w.Subscribe(shipOnWANUp(r.ship))
	return w.Run(ctx, up)
}

// --- DHCP ---

// DHCPSettings is the stored "dhcp" document.
type DHCPSettings struct {
	Static       []dhcpd.StaticLease `json:"static,omitempty"`
	LeaseSeconds int                 `json:"lease_s,omitempty"`
	PoolStart    netip.Addr          `json:"pool_start,omitzero"`
	PoolEnd      netip.Addr          `json:"pool_end,omitzero"`
}

func (r *Router) runDHCP(ctx context.Context, up func()) error {
	lanCfg, addr := r.lan()
	var set DHCPSettings
	if st := r.d.Store(); st != nil {
		if err := st.Get("dhcp", &set); err != nil && !errors.Is(err, firmware.ErrNotFound) {
			r.log.Warn("dhcp: stored settings unreadable; using the defaults", "err", err)
			set = DHCPSettings{}
		}
	}
	cfg := dhcpd.Config{Interface: lanCfg.Bridge, Address: addr, Static: set.Static, PoolStart: set.PoolStart, PoolEnd: set.PoolEnd,
		LeaseTime: time.Duration(set.LeaseSeconds) * time.Second, LeaseFile: filepath.Join(r.d.Root, "data/dhcp/leases.json"), Logger: r.log}
	s, err := dhcpd.New(cfg)
	if err != nil {
		r.log.Error("dhcp: stored settings invalid; using the defaults", "err", err)
		cfg.Static, cfg.PoolStart, cfg.PoolEnd, cfg.LeaseTime = nil, netip.Addr{}, netip.Addr{}, 0
		if s, err = dhcpd.New(cfg); err != nil {
			return firmware.Permanent(err)
		}
	}
	conn, err := r.opts.ListenDHCP(s)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.dhcp = s
	r.mu.Unlock()
	r.log.Info("dhcp server up", "interface", lanCfg.Bridge, "address", addr.String())
	up()
	return s.Serve(ctx, conn)
}

// --- DNS ---

// hostsOf resolves DHCP clients through whichever DHCP server is up.
type hostsOf struct{ r *Router }

func (h hostsOf) Lookup(name string) (netip.Addr, bool) {
	if s := h.r.getDHCP(); s != nil {
		return s.Lookup(name)
	}
	return netip.Addr{}, false
}

func (h hostsOf) ReverseLookup(ip netip.Addr) (string, bool) {
	if s := h.r.getDHCP(); s != nil {
		return s.ReverseLookup(ip)
	}
	return "", false
}

func (r *Router) runDNS(ctx context.Context, up func()) error {
	_, addr := r.lan()
	f, err := dns.New(dns.Config{Hostname: r.opts.Hostname, RouterAddr: addr.Addr(), LANPrefix: addr.Masked(), Hosts: hostsOf{r},
		Upstreams: func() []netip.Addr {
			if w := r.getWAN(); w != nil {
				return w.Upstreams()
			}
			return nil
		}, Logger: r.log})
	if err != nil {
		return firmware.Permanent(err)
	}
	pc, ln, err := r.opts.ListenDNS(addr.Addr())
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.dns = f
	r.mu.Unlock()
	up()
	return f.Serve(ctx, pc, ln)
}

// --- status ---

func (r *Router) runStatus(ctx context.Context, up func()) error {
	_, addr := r.lan()
	listen := r.opts.Listen
	if listen == nil {
		listen = net.Listen
	}
	ln, err := listen("tcp", netip.AddrPortFrom(addr.Addr(), uint16(r.opts.StatusPort)).String())
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	srv := &http.Server{Handler: status.Handler(r.Status, r.d.Logging.Secrets.Scrub), ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: slog.NewLogLogger(r.log.Handler(), slog.LevelDebug)}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	up()
	select {
	case <-ctx.Done():
		srv.Close()
		<-done
		return nil
	case err := <-done:
		return fmt.Errorf("status: %w", err)
	}
}

// --- provisioning ---

// LoadFactory reads the factory data: file when given, else QEMU's fw_cfg blob (waiting up to
// wait for the qemu_fw_cfg driver). Real boards' factory partitions are not read yet.
func LoadFactory(root, file string, wait time.Duration) (*identity.Factory, string, error) {
	if file != "" {
		f, err := identity.LoadFactory(file)
		return f, file, err
	}
	p := filepath.Join(root, FwCfgFactory)
	fwcfg := filepath.Join(root, "sys/firmware/qemu_fw_cfg")
	deadline := time.Now().Add(wait)
	for {
		b, err := os.ReadFile(p)
		if err == nil {
			f, err := identity.ParseFactory(b)
			return f, "fw_cfg opt/meshroot/factory", err
		}
		// Wait only while the fw_cfg driver is not there yet; once it is, the blob is either
		// listed or was not given to this VM.
		_, derr := os.Stat(fwcfg)
		if !errors.Is(err, os.ErrNotExist) || derr == nil || time.Now().After(deadline) {
			return nil, "", fmt.Errorf("no factory data: %w (QEMU: -fw_cfg name=opt/meshroot/factory,file=FILE; meshd -factory FILE)", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (r *Router) runProvision(ctx context.Context, up func()) error {
	a := r.getAgent()
	if a == nil {
		fac, src, err := LoadFactory(r.d.Root, r.opts.FactoryFile, r.opts.WaitFactory)
		if err != nil {
			r.mu.Lock()
			r.provErr = err.Error()
			r.mu.Unlock()
			return firmware.Permanent(fmt.Errorf("provision: %w", err))
		}
		_, lanAddr := r.lan()
		cfg := agent.Config{DataDir: filepath.Join(r.d.Root, "data"), Factory: fac, Dial: r.opts.Dial, Logger: r.log,
			OnboardAddr: netip.AddrPortFrom(lanAddr.Addr(), uint16(r.opts.OnboardPort)).String()}
		if r.opts.Listen != nil {
			ln, err := r.opts.Listen("tcp", cfg.OnboardAddr)
			if err != nil {
				return fmt.Errorf("provision: pairing listener: %w", err)
			}
			cfg.OnboardListener = ln
		}
		if r.opts.AgentConfig != nil {
			r.opts.AgentConfig(&cfg)
		}
		a, err = agent.New(cfg)
		if err != nil {
			if cfg.OnboardListener != nil {
				cfg.OnboardListener.Close()
			}
			return fmt.Errorf("provision: %w", err)
		}
		r.log.Info("provisioning: factory data loaded", "serial", fac.Serial, "from", src)
		a.Subscribe(func(v *profile.Verified) { r.learnSecrets(a, v) })
		r.learnSecrets(a, nil)
		r.mu.Lock()
		r.agent, r.serial = a, fac.Serial
		r.mu.Unlock()
		r.ship.Kick()
		return a.Run(ctx, up)
	}
	// A restart: the agent listens again by itself (a test's Listen hook serves one Run only).
	return a.Run(ctx, up)
}

// learnSecrets registers the profile's resolved secrets and the Wi-Fi passphrase with the log
// redactor (the status API and the log shipper are scrubbed by it too).
func (r *Router) learnSecrets(a *agent.Agent, v *profile.Verified) {
	if v != nil {
		for _, ref := range v.SecretRefs() {
			if s, ok := a.Secret(ref); ok {
				r.d.Logging.Secrets.Add(s)
			}
		}
	}
	if p, ok := a.WiFiPassphrase(); ok {
		r.d.Logging.Secrets.Add(p)
	}
}

// --- OTA ---

// OTALocation is the stored "ota" document: where the device's updates come from.
type OTALocation struct {
	RepositoryURL string `json:"repository_url"`
	Channel       string `json:"channel"`
}

func (r *Router) setOTA(f func(*status.OTA)) {
	r.mu.Lock()
	f(&r.ota)
	r.mu.Unlock()
}

func (r *Router) runOTA(ctx context.Context, up func()) error {
	root, err := os.ReadFile(filepath.Join(r.d.Root, OTARoot))
	if err != nil {
		r.setOTA(func(o *status.OTA) {
			o.State, o.Detail = "disabled", "no TUF root of trust in the image ("+OTARoot+")"
		})
		r.log.Warn("ota: updates disabled: the image has no TUF root of trust", "path", OTARoot)
		up()
		<-ctx.Done()
		return nil
	}
	if r.d.Board.Flash.SlotA.Size == 0 || r.d.Board.Flash.Env.Size == 0 {
		r.setOTA(func(o *status.OTA) { o.State, o.Detail = "disabled", "the board has no A/B slots" })
		up()
		<-ctx.Done()
		return nil
	}
	up()
	r.setOTA(func(o *status.OTA) { o.State, o.Detail = "waiting", "for the repository location from the cloud" })
	var loc OTALocation
	if st := r.d.Store(); st != nil {
		st.Get("ota", &loc)
	}
	var cl *enroll.Client
	for {
		if a := r.getAgent(); a != nil {
			cl = a.Client()
		}
		if cl != nil && loc.RepositoryURL != "" {
			break // the location from an earlier boot: a trial must be judged without waiting on the cloud
		}
		if cl != nil {
			octx, ocancel := context.WithTimeout(ctx, 30*time.Second)
			info, err := cl.OTA(octx)
			ocancel()
			if err == nil && info.RepositoryURL != "" {
				n := OTALocation{RepositoryURL: info.RepositoryURL, Channel: info.Channel}
				if a := r.getAgent(); a != nil {
					if v := a.Profile(); v != nil && v.OTA.RepositoryURL != "" {
						n.RepositoryURL = v.OTA.RepositoryURL
					}
					if v := a.Profile(); v != nil && v.OTA.Channel != "" {
						n.Channel = v.OTA.Channel
					}
				}
				if n != loc {
					if st := r.d.Store(); st != nil {
						if err := st.Put("ota", n); err != nil {
							r.log.Warn("ota: cannot keep the repository location", "err", err)
						}
					}
				}
				loc = n
			}
		}
		if loc.RepositoryURL != "" && cl != nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(5 * time.Second):
		}
	}
	report := ""
	if u, err := url.Parse(loc.RepositoryURL); err == nil && u.Scheme == "https" {
		report = u.Scheme + "://" + u.Host // the cloud takes install reports at /ota/v1/reports
	}
	u, closeDev, err := ota.OpenDevice(ota.DeviceConfig{Board: r.d.Board, Root: r.d.Root, RepoURL: loc.RepositoryURL, Channel: loc.Channel,
		DeviceID: r.serial, TrustedRoot: root, CacheDir: filepath.Join(r.d.Root, "data/ota"), RunningVersion: r.d.Release.Version,
		ReportURL: report, HTTPClient: cl.HTTPClient(), Health: r.Health, Reboot: r.opts.Reboot, Log: r.log})
	if err != nil {
		r.setOTA(func(o *status.OTA) { o.State, o.Detail = "error", err.Error() })
		return fmt.Errorf("ota: %w", err)
	}
	defer closeDev()
	r.setOTA(func(o *status.OTA) {
		o.State, o.Detail, o.Repository, o.Channel, o.Slot = "running", "", loc.RepositoryURL, loc.Channel, ota.RunningSlot(r.d.Root)
	})
	return u.Run(ctx, func() {})
}

// Health is the trial-boot health check: every service up, and the cloud reachable or the VPN
// running with a tunnel up.
func (r *Router) Health(ctx context.Context) error {
	for _, s := range r.d.Status() {
		if s.State != firmware.StateUp {
			return fmt.Errorf("service %s is %s", s.Name, s.State)
		}
	}
	for _, t := range r.vpn.Status().Tunnels {
		if t.IKE == "Established" {
			return nil
		}
	}
	a := r.getAgent()
	if a == nil || a.Client() == nil {
		return errors.New("not enrolled: the cloud is not reachable")
	}
	if _, err := a.Client().Self(ctx); err != nil {
		return fmt.Errorf("cloud not reachable: %w", err)
	}
	return nil
}

// --- logs ---

func (r *Router) runLogship(ctx context.Context, up func()) error {
	up()
	r.ship.Run(ctx, func() logship.Poster {
		a := r.getAgent()
		if a == nil {
			return nil
		}
		cl := a.Client()
		if cl == nil {
			return nil
		}
		return func(ctx context.Context, body []byte) error {
			err := cl.PostLogs(ctx, body)
			if err != nil {
				// The upload's connection may be the one that died with the uplink: drop the
				// idle ones so the retry dials afresh (one busy with the profile long poll is
				// left to TCP_USER_TIMEOUT, see provision/agent's dialer).
				cl.Close()
			}
			return err
		}
	})
	return nil
}

// shipOnWANUp returns a WAN subscriber that asks the shipper for an upload when the uplink
// comes up or changes its address: the backlog of an outage leaves then, not on the shipper's
// next retry.
func shipOnWANUp(ship *logship.Shipper) func(wan.State) {
	var last netip.Prefix // the address of the last Up state (the service calls from one goroutine)
	return func(st wan.State) {
		if !st.Up() {
			last = netip.Prefix{}
			return
		}
		if st.Address != last {
			last = st.Address
			ship.Kick()
		}
	}
}

// --- status document ---

// Status assembles the status document (no secrets: see package status).
func (r *Router) Status() status.Status {
	d := r.d
	lanCfg, lanAddr := r.lan()
	st := status.Status{Board: d.Board.Name, Version: d.Release.Version, Hostname: r.opts.Hostname, Time: time.Now().UTC(),
		UptimeSeconds: d.Sys.Uptime().Seconds(), Persistent: d.Persistent(), Services: d.Status(),
		LAN: status.LAN{Bridge: lanCfg.Bridge, Address: lanAddr.String()}, VPN: r.vpn.Status(), Radio: r.radio.Status(),
		Memory: status.ReadMemory(d.Root)}
	if st.Services == nil {
		st.Services = []firmware.ServiceStatus{}
	}
	r.mu.Lock()
	w, dh, f, a := r.wan, r.dhcp, r.dns, r.agent
	st.Firewall, st.OTA = r.fw, r.ota
	st.Firewall.IKEFrom = slices.Clone(r.fw.IKEFrom)
	provErr, serial := r.provErr, r.serial
	r.mu.Unlock()
	if w != nil {
		ws := w.State()
		st.WAN = &ws
	}
	if dh != nil {
		st.LAN.Leases = len(dh.Leases())
		ds := dh.Stats()
		st.LAN.DHCP = &ds
	}
	if f != nil {
		fs := f.Stats()
		st.DNS = &fs
	}
	if c, err := r.opts.NFT.Counters(nft.Table); err == nil {
		st.Firewall.DroppedInput, st.Firewall.DroppedForward = c[nft.CommentInputDrop], c[nft.CommentForwardDrop]
	}
	if a == nil {
		st.Onboarding = status.Onboarding{Phase: "unavailable", Detail: provErr}
		if provErr == "" {
			st.Onboarding.Phase = "starting"
		}
	} else {
		p := a.Progress()
		st.Onboarding = status.Onboarding{Phase: p.Phase, Serial: serial, SiteID: p.SiteID, ProfileVersion: p.ProfileVersion, Detail: p.Detail, Enrolled: a.Client() != nil}
		if v := a.Profile(); v != nil {
			st.Profile = &status.Profile{Version: v.Version, SiteID: v.Site.ID, SiteName: v.Site.Name, ExpiresAt: v.ExpiresAt,
				Expired: time.Now().After(v.ExpiresAt), OTAChannel: v.OTA.Channel, WiFiSSID: v.WiFi.SSID, HasVPN: v.VPN != nil}
		}
	}
	ls := r.ship.Stats()
	st.Logs = &ls
	return st
}
