package backhaul

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	"meshroot/radio/meshproto"
)

// Port is one of the node's backhaul interfaces.
type Port struct {
	Iface  string
	Medium string
	// HelloAddr is where hellos go on this link: the link's broadcast address and the hello
	// port, e.g. "10.88.1.255:7448".
	HelloAddr string
	// Mbps is the link throughput estimate when Net.LinkMbps has none (a wired port's speed).
	Mbps float64
}

// Net is the agent's access to the kernel: sockets on each port, carrier, throughput
// estimates and the route that carries the backhaul. LinuxNet is the real one; FakeNet the
// in-package stand-in for tests.
type Net interface {
	// Listen opens a UDP socket bound to iface on port.
	Listen(iface string, port int) (net.PacketConn, error)
	// Carrier reports whether iface has a carrier.
	Carrier(iface string) (bool, error)
	// LinkMbps estimates a link's throughput (0 when unknown).
	LinkMbps(iface string) float64
	// Use makes the chosen path carry the node's traffic to the gateway: next hop via iface
	// (nil: no path).
	Use(iface string, nextHop net.IP) error
}

// AgentConfig configures an Agent.
type AgentConfig struct {
	// Node is this node's name; Gateway marks the gateway (it only announces itself), and
	// GatewayMbps is what it advertises (its uplink's throughput).
	Node        string
	Gateway     bool
	GatewayMbps float64
	Ports       []Port
	// HelloPort is the UDP port of hellos (default 7448); Interval their period (200 ms).
	HelloPort int
	Interval  time.Duration
	Selector  Config
	// Key authenticates the hellos (the site's control-plane key).
	Key meshproto.Key
	// MaxAge drops hellos sent longer ago than this (meshproto.Opener.MaxAge; 0: no age check).
	MaxAge time.Duration
	Log    *slog.Logger
	// OnChange is called after every change of path (from the agent's goroutine).
	OnChange func(c Choice, r Reason)
}

// Agent runs a node's backhaul: hellos on every port, the neighbour table, the Selector, and
// the route.
type Agent struct {
	cfg    AgentConfig
	net    Net
	log    *slog.Logger
	sel    *Selector
	sealer *meshproto.Sealer
	opener *meshproto.Opener

	mu     sync.Mutex
	links  map[string]*linkState // Peer@Iface
	conns  map[string]net.PacketConn
	events []Event
}

type linkState struct {
	Link
	addr net.IP
}

// Event records a change of path.
type Event struct {
	At     time.Time
	Choice Choice
	Reason Reason
}

// NewAgent checks the configuration.
func NewAgent(cfg AgentConfig, n Net) (*Agent, error) {
	if cfg.Node == "" {
		return nil, errors.New("backhaul: node: empty")
	}
	if len(cfg.Ports) == 0 {
		return nil, errors.New("backhaul: ports: none")
	}
	for i, p := range cfg.Ports {
		if p.Iface == "" || (p.Medium != Wired && p.Medium != Wireless) {
			return nil, fmt.Errorf("backhaul: ports[%d]: need an interface and a medium (wired or wireless)", i)
		}
		if _, err := net.ResolveUDPAddr("udp", p.HelloAddr); err != nil {
			return nil, fmt.Errorf("backhaul: ports[%d].hello_addr: %w", i, err)
		}
	}
	if cfg.HelloPort == 0 {
		cfg.HelloPort = 7448
	}
	if cfg.Interval == 0 {
		cfg.Interval = 200 * time.Millisecond
	}
	if cfg.GatewayMbps == 0 {
		cfg.GatewayMbps = 1000
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s, err := meshproto.NewSealer(cfg.Key, cfg.Node, nil)
	if err != nil {
		return nil, err
	}
	sc := cfg.Selector
	if sc.DeadAfter == 0 {
		sc.DeadAfter = 3 * cfg.Interval
	}
	o := meshproto.NewOpener(nil, cfg.Key)
	o.MaxAge = cfg.MaxAge
	return &Agent{cfg: cfg, net: n, log: cfg.Log.With("svc", "backhaul", "node", cfg.Node), sel: NewSelector(cfg.Node, sc),
		sealer: s, opener: o, links: map[string]*linkState{}, conns: map[string]net.PacketConn{}}, nil
}

// Current is the path in use.
func (a *Agent) Current() Choice {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sel.Current()
}

// Events returns the changes of path so far.
func (a *Agent) Events() []Event {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Event(nil), a.events...)
}

// Links returns the neighbour table.
func (a *Agent) Links() []Link {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Link, 0, len(a.links))
	for _, l := range a.links {
		out = append(out, l.Link)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

// Pin is the controller's backhaul steering (see Selector.Pin).
func (a *Agent) Pin(peer, iface string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sel.Pin(peer, iface)
}

// State is what the node advertises of its path.
func (a *Agent) State() meshproto.BackhaulState {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stateLocked()
}

func (a *Agent) stateLocked() meshproto.BackhaulState {
	if a.cfg.Gateway {
		return meshproto.BackhaulState{PathMbps: a.cfg.GatewayMbps}
	}
	c := a.sel.Current()
	if c.IsZero() {
		return meshproto.BackhaulState{}
	}
	return meshproto.BackhaulState{Parent: c.Peer, Link: c.Iface, Medium: c.Medium, PathMbps: c.PathMbps, Hops: c.Hops}
}

// Run sends and receives hellos and keeps the path until ctx ends. up is called once the ports
// listen.
func (a *Agent) Run(ctx context.Context, up func()) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for _, p := range a.cfg.Ports {
		c, err := a.net.Listen(p.Iface, a.cfg.HelloPort)
		if err != nil {
			a.closeAll()
			return fmt.Errorf("backhaul: listen on %s: %w", p.Iface, err)
		}
		a.conns[p.Iface] = c
	}
	defer a.closeAll()
	for _, p := range a.cfg.Ports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.receive(ctx, p)
		}()
	}
	if up != nil {
		up()
	}
	t := time.NewTicker(a.cfg.Interval)
	defer t.Stop()
	for {
		a.tick(time.Now())
		select {
		case <-ctx.Done():
			cancel()
			a.closeAll()
			wg.Wait()
			return nil
		case <-t.C:
		}
	}
}

func (a *Agent) closeAll() {
	for _, c := range a.conns {
		c.Close()
	}
}

// tick sends the hellos and re-decides.
func (a *Agent) tick(now time.Time) {
	a.mu.Lock()
	st := a.stateLocked()
	a.mu.Unlock()
	for _, p := range a.cfg.Ports {
		h := meshproto.Hello{Node: a.cfg.Node, Controller: a.cfg.Gateway, Link: p.Iface, Medium: p.Medium, Backhaul: st,
			IntervalMs: int(a.cfg.Interval / time.Millisecond)}
		b, err := a.sealer.Seal(meshproto.TypeHello, h)
		if err != nil {
			continue
		}
		dst, _ := net.ResolveUDPAddr("udp", p.HelloAddr)
		if c := a.conns[p.Iface]; c != nil {
			if _, err := c.WriteTo(b, dst); err != nil {
				a.log.Debug("hello", "iface", p.Iface, "err", err)
			}
		}
	}
	a.decide(now)
}

func (a *Agent) decide(now time.Time) {
	if a.cfg.Gateway {
		return
	}
	carrier := map[string]bool{}
	for _, p := range a.cfg.Ports {
		up, err := a.net.Carrier(p.Iface)
		carrier[p.Iface] = err == nil && up
	}
	a.mu.Lock()
	var links []Link
	for _, l := range a.links {
		l.Carrier = carrier[l.Iface]
		if !l.Carrier {
			l.UpSince = time.Time{}
		}
		if m := a.net.LinkMbps(l.Iface); m > 0 {
			l.Mbps = m
		}
		links = append(links, l.Link)
	}
	c, r := a.sel.Decide(now, links)
	var hop net.IP
	if !c.IsZero() {
		hop = a.links[c.Peer+"@"+c.Iface].addr
	}
	if r != ReasonNone {
		a.events = append(a.events, Event{At: now, Choice: c, Reason: r})
	}
	a.mu.Unlock()
	if r == ReasonNone {
		return
	}
	a.log.Info("backhaul path", "path", c.String(), "reason", string(r))
	if err := a.net.Use(c.Iface, hop); err != nil {
		a.log.Warn("backhaul route", "path", c.String(), "err", err)
	}
	if a.cfg.OnChange != nil {
		a.cfg.OnChange(c, r)
	}
}

// receive reads hellos on one port.
func (a *Agent) receive(ctx context.Context, p Port) {
	c := a.conns[p.Iface]
	buf := make([]byte, meshproto.MaxDatagram+1)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		m, err := a.opener.Open(buf[:n])
		if err != nil || m.Type != meshproto.TypeHello || m.Sender == a.cfg.Node {
			continue
		}
		h, err := meshproto.DecodeValid[meshproto.Hello](m, meshproto.TypeHello)
		if err != nil || h.Node != m.Sender {
			continue
		}
		ua, ok := from.(*net.UDPAddr)
		if !ok {
			continue
		}
		a.heard(time.Now(), p, h, ua.IP)
	}
}

func (a *Agent) heard(now time.Time, p Port, h meshproto.Hello, addr net.IP) {
	a.mu.Lock()
	defer a.mu.Unlock()
	key := h.Node + "@" + p.Iface
	l := a.links[key]
	if l == nil {
		l = &linkState{Link: Link{Peer: h.Node, Iface: p.Iface, Medium: p.Medium, Mbps: p.Mbps}}
		a.links[key] = l
	}
	gap := 3 * a.cfg.Interval
	if h.IntervalMs > 0 {
		gap = 3 * time.Duration(h.IntervalMs) * time.Millisecond
	}
	if l.UpSince.IsZero() || now.Sub(l.LastHello) > gap {
		l.UpSince = now
	}
	l.LastHello = now
	l.addr = addr
	l.PeerGateway = h.Controller
	l.PeerPathMbps, l.PeerHops, l.PeerParent, l.PeerMedium = h.Backhaul.PathMbps, h.Backhaul.Hops, h.Backhaul.Parent, h.Backhaul.Medium
}

// HelloAddr joins a broadcast address and the hello port.
func HelloAddr(broadcast string, port int) string {
	return net.JoinHostPort(broadcast, strconv.Itoa(port))
}
