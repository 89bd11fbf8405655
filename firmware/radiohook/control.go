package radiohook

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"meshroot/radio/backhaul"
	"meshroot/radio/chanplan"
	"meshroot/radio/manager"
	"meshroot/radio/mesh"
	"meshroot/radio/meshproto"
)

// Control-plane constants.
const (
	// BackhaulPort is the backhaul agents' hello port (radio/backhaul's default); the mesh and
	// the radio manager share meshproto.DefaultPort.
	BackhaulPort = 7448
	// MaxAge bounds how old an authenticated control message may be (meshproto.Opener.MaxAge):
	// it closes the replay window a receiver's restart opens (it accepts a sender's current
	// epoch once more) to this long, and allows for clocks that differ by as much.
	MaxAge = 2 * time.Minute
	// LANMbps is what a wired LAN port is assumed to carry when nothing better is known.
	LANMbps = 1000
)

// ctlRadio is one serving radio as the control plane sees it.
type ctlRadio struct {
	ID, Iface, Ctrl string
	Band            chanplan.Band
	MaxWidth        int
	DFS             bool
	MDID            string
}

// ctlSpec is everything the control plane is started from; a change restarts it.
type ctlSpec struct {
	Node    string
	Gateway bool
	// KeySum identifies the mesh key (SHA-256; zero without one).
	KeySum  [32]byte
	HasKey  bool
	Bridge  string
	Bcast   string
	Radios  []ctlRadio
	Planned bool
}

func (a ctlSpec) equal(b ctlSpec) bool {
	return a.Node == b.Node && a.Gateway == b.Gateway && a.KeySum == b.KeySum && a.HasKey == b.HasKey &&
		a.Bridge == b.Bridge && a.Bcast == b.Bcast && slices.Equal(a.Radios, b.Radios)
}

// controlRun is one run of the control plane: the mesh node (and controller on the gateway),
// the radio manager and the backhaul agent on one authenticated socket.
type controlRun struct {
	spec   ctlSpec
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	node    *mesh.Node
	agent   *backhaul.Agent
	planner string
}

func (c *controlRun) stop() {
	c.cancel()
	<-c.done
}

func (c *controlRun) status() *MeshStatus {
	c.mu.Lock()
	node, agent, planner := c.node, c.agent, c.planner
	c.mu.Unlock()
	ms := &MeshStatus{ControlPlane: "local", Planner: planner}
	if c.spec.HasKey {
		ms.ControlPlane = "lan"
	}
	if node != nil {
		ms.Controller, ms.Peers = node.ControllerName(), node.Peers()
		if ctl := node.Controller(); ctl != nil {
			ms.SiteBSSes = len(ctl.BSSes())
		}
	}
	if agent != nil {
		st := agent.State()
		ms.BackhaulParent, ms.BackhaulMedium, ms.BackhaulLinks = st.Parent, st.Medium, len(agent.Links())
	}
	return ms
}

// desiredControl is the control plane the site and the radios call for now: the radios whose
// hostapd is ENABLED (after EnableWait, whatever is serving then).
func (s *Service) desiredControl(site Site, since time.Time) (ctlSpec, bool) {
	sp := ctlSpec{Node: s.nodeName(), Gateway: s.isGateway()}
	if len(site.MeshKey) > 0 {
		sp.KeySum, sp.HasKey = sha256.Sum256(site.MeshKey), true
	}
	if s.LAN != nil {
		bridge, addr := s.LAN()
		if bridge != "" && addr.IsValid() {
			sp.Bridge, sp.Bcast = bridge, broadcast(addr).String()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	all := true
	for _, r := range s.radios {
		rp, ok := s.plans[r.ID]
		p := s.procs[r.ID]
		if !ok || rp.Skip != "" || p == nil {
			continue
		}
		if !p.ready() {
			all = false
			continue
		}
		// The planner may use the radio's widest channel, up to 160 MHz; on 2.4 GHz only 20 MHz
		// (40 MHz there takes two of the band's three non-overlapping channels, and hostapd's
		// coexistence rules drop it next to any neighbour anyway).
		mw := min(max(r.MaxWidth, 20), 160)
		if r.Band == "2.4GHz" {
			mw = 20
		}
		sp.Radios = append(sp.Radios, ctlRadio{ID: r.ID, Iface: r.Iface, Ctrl: rp.CtrlPath(), Band: chanplan.Band(r.Band),
			MaxWidth: mw, DFS: r.DFS, MDID: rp.MobilityDomain})
	}
	// Start once every radio serves, or after EnableWait with those that do.
	ready := len(sp.Radios) > 0 && (all || time.Since(since) >= s.tune.EnableWait)
	return sp, ready
}

// broadcast is a prefix's IPv4 broadcast address.
func broadcast(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// reconcileControl (re)starts the control plane when what it runs from changed.
func (s *Service) reconcileControl(ctx context.Context, site Site) {
	s.mu.Lock()
	if s.ctlSince.IsZero() {
		s.ctlSince = time.Now()
	}
	since := s.ctlSince
	cur := s.ctl
	s.mu.Unlock()
	want, ready := s.desiredControl(site, since)
	if !ready {
		return
	}
	if cur != nil && cur.spec.equal(want) {
		return
	}
	if cur != nil {
		s.log.Info("radio: restarting the mesh control plane", "gateway", want.Gateway, "radios", len(want.Radios))
		cur.stop()
	}
	run := &controlRun{spec: want, done: make(chan struct{})}
	cctx, cancel := context.WithCancel(ctx)
	run.cancel = cancel
	s.mu.Lock()
	s.ctl = run
	s.mu.Unlock()
	go func() {
		defer close(run.done)
		s.runControl(cctx, run, site.MeshKey)
	}()
}

// runControl runs the control plane until ctx ends.
func (s *Service) runControl(ctx context.Context, run *controlRun, meshKey []byte) {
	sp := run.spec
	log := s.log.With("node", sp.Node)
	secret := meshKey
	if !sp.HasKey {
		// No mesh key: the node runs alone on a loopback socket with a key of its own.
		secret = make([]byte, 32)
		_, _ = rand.Read(secret)
	}
	key, err := meshproto.DeriveKey(1, secret)
	if err != nil {
		log.Error("radio: control plane key", "err", err)
		return
	}
	var pc net.PacketConn
	lan := sp.HasKey && sp.Bridge != ""
	if lan {
		pc, err = s.controlNet().Listen(sp.Bridge, meshproto.DefaultPort)
	} else {
		pc, err = net.ListenPacket("udp4", "127.0.0.1:0")
	}
	if err != nil {
		log.Error("radio: control plane socket", "err", err)
		return
	}
	mux := newPacketMux(pc)
	defer mux.Close()
	sealer, err := meshproto.NewSealer(key, sp.Node, nil)
	if err != nil {
		log.Error("radio: control plane", "err", err)
		return
	}
	newConn := func() *meshproto.Conn {
		o := meshproto.NewOpener(nil, key)
		o.MaxAge = MaxAge
		return meshproto.NewConn(mux.conn(), sealer, o, log)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	loop := func(name string, run func(ctx context.Context, up func()) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.loop(ctx, log, name, run)
		}()
	}

	var agent *backhaul.Agent
	if lan {
		agent, err = backhaul.NewAgent(backhaul.AgentConfig{Node: sp.Node, Gateway: sp.Gateway, Key: key, MaxAge: MaxAge, Log: log,
			Ports:     []backhaul.Port{{Iface: sp.Bridge, Medium: backhaul.Wired, HelloAddr: backhaul.HelloAddr(sp.Bcast, BackhaulPort), Mbps: LANMbps}},
			HelloPort: BackhaulPort}, s.backhaulNet())
		if err != nil {
			log.Error("radio: backhaul agent", "err", err)
			agent = nil
		} else {
			loop("backhaul", agent.Run)
		}
	}

	mcfg := mesh.Config{Node: sp.Node, Controller: sp.Gateway, Log: log}
	if lan {
		mcfg.Discovery = []string{net.JoinHostPort(sp.Bcast, strconv.Itoa(meshproto.DefaultPort))}
	}
	for _, r := range sp.Radios {
		mcfg.BSSes = append(mcfg.BSSes, mesh.BSSConfig{Iface: r.Iface, Ctrl: r.Ctrl, Radio: r.ID, MobilityDomain: r.MDID})
	}
	if s.tune.Mesh != nil {
		s.tune.Mesh(&mcfg)
	}
	deps := mesh.Deps{Conn: newConn(), DialAP: func(ctx context.Context, b mesh.BSSConfig) (mesh.AP, error) {
		c, err := s.dialTracked(ctx, b.Iface, b.Ctrl)
		if err != nil {
			return nil, err
		}
		return c, nil
	}}
	if agent != nil {
		deps.Backhaul = agent
	}
	node, err := mesh.NewNode(mcfg, deps)
	if err != nil {
		log.Error("radio: mesh node", "err", err)
		return
	}
	run.mu.Lock()
	run.node, run.agent = node, agent
	run.mu.Unlock()
	loop("mesh", node.Run)

	mgrConn := newConn()
	wg.Add(1)
	go func() {
		defer wg.Done()
		var gw net.Addr
		if !sp.Gateway {
			// A satellite reports to the gateway's planner: wait for the controller's hello.
			run.setPlanner("waiting for the gateway")
			if gw = findController(ctx, newConn()); gw == nil {
				return
			}
		}
		cfg := manager.Config{Node: sp.Node, Gateway: sp.Gateway, GatewayAddr: gw, Log: log}
		for _, r := range sp.Radios {
			cfg.Radios = append(cfg.Radios, manager.RadioConfig{ID: r.ID, Iface: r.Iface, Ctrl: r.Ctrl, Band: r.Band, MaxWidth: r.MaxWidth, DFS: r.DFS})
		}
		if s.tune.Manager != nil {
			s.tune.Manager(&cfg)
		}
		s.loop(ctx, log, "radio manager", func(ctx context.Context, up func()) error {
			nl, err := s.NL()
			if err != nil {
				return fmt.Errorf("nl80211: %w", err)
			}
			defer nl.Close()
			m, err := manager.New(cfg, manager.Deps{NL: nl, Conn: mgrConn, DialAP: func(ctx context.Context, r manager.RadioConfig) (manager.AP, error) {
				c, err := s.dialTracked(ctx, r.Iface, r.Ctrl)
				if err != nil {
					return nil, err
				}
				return c, nil
			}})
			if err != nil {
				return err
			}
			return m.Run(ctx, func() { run.setPlanner("running"); up() })
		})
	}()
	log.Info("radio: mesh control plane up", "gateway", sp.Gateway, "lan", lan, "radios", len(sp.Radios))
	<-ctx.Done()
}

func (c *controlRun) setPlanner(s string) {
	c.mu.Lock()
	c.planner = s
	c.mu.Unlock()
}

// loop runs one control-plane part until ctx ends, restarting it with backoff when it returns.
func (s *Service) loop(ctx context.Context, log *slog.Logger, name string, run func(ctx context.Context, up func()) error) {
	backoff := s.tune.RestartMin
	for {
		start := time.Now()
		err := run(ctx, func() {})
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) >= s.tune.StableAfter {
			backoff = s.tune.RestartMin
		}
		log.Warn("radio: "+name+" stopped; restarting", "err", err, "retry_in", backoff.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, s.tune.RestartMax)
	}
}

// findController waits for the controller's hello on conn and returns where it came from (nil
// when ctx ends first).
func findController(ctx context.Context, conn *meshproto.Conn) net.Addr {
	for {
		m, from, err := conn.Receive(ctx)
		if err != nil {
			return nil
		}
		if m.Type != meshproto.TypeHello {
			continue
		}
		h, err := meshproto.DecodeValid[meshproto.Hello](m, meshproto.TypeHello)
		if err == nil && h.Controller && h.Node == m.Sender {
			return from
		}
	}
}

func (s *Service) controlNet() backhaul.Net {
	if s.ControlNet != nil {
		return s.ControlNet
	}
	return &backhaul.LinuxNet{}
}

// backhaulNet is the backhaul agent's view of the LAN: hellos on sockets bound to the LAN bridge,
// and no route changes (see lanNet).
func (s *Service) backhaulNet() backhaul.Net {
	if s.BackhaulNet != nil {
		return s.BackhaulNet
	}
	return lanNet{LinuxNet: &backhaul.LinuxNet{}}
}

// lanNet is backhaul.LinuxNet without routing: the site's wired backhaul is the LAN itself (a
// satellite bridges its ports with the gateway's LAN, so the gateway is on-link and no route is
// needed); the agent's choice shows in the hellos, the topology and the status.
type lanNet struct{ *backhaul.LinuxNet }

func (lanNet) Use(string, net.IP) error { return nil }
