package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"meshroot/radio/hostapd"
	"meshroot/radio/meshproto"
	"meshroot/radio/steer"
)

// BSSConfig is one of the node's BSSes (one hostapd interface).
type BSSConfig struct {
	// Iface is hostapd's interface; Ctrl its control socket (default /var/run/hostapd/<Iface>).
	Iface, Ctrl string
	// Radio names the radio for reports (e.g. "<node>/phy1").
	Radio string
	// MobilityDomain is the BSS's 802.11r mobility domain ("" without FT).
	MobilityDomain string
}

// Backhaul is the node's backhaul agent as the mesh sees it (*backhaul.Agent implements it).
type Backhaul interface {
	State() meshproto.BackhaulState
	Pin(peer, iface string)
}

// Config configures a Node.
type Config struct {
	// Node is the node's site-unique name; Controller is set on the gateway.
	Node       string
	Controller bool
	BSSes      []BSSConfig
	// Discovery are the addresses hellos go to (the LAN broadcast address and port).
	Discovery []string
	// HelloEvery (1 s), ReportEvery (1 s), TopologyEvery (10 s); the controller is lost after
	// ControllerTimeout without its hellos (3.5 s).
	HelloEvery, ReportEvery, TopologyEvery, ControllerTimeout time.Duration
	// Tick is the controller's decision period (1 s); Steering its policy's configuration,
	// or Decider a policy of the caller's choice (the usteer baseline, for comparisons).
	Tick     time.Duration
	Steering steer.Config
	Decider  steer.Decider
	// BeaconWait is how long a node collects a station's beacon report (1.5 s).
	BeaconWait time.Duration
	Log        *slog.Logger
}

// Deps are the node's handles.
type Deps struct {
	// Conn is the control-plane socket.
	Conn *meshproto.Conn
	// DialAP connects to a BSS's hostapd (default hostapd.Dial on its control socket).
	DialAP func(ctx context.Context, b BSSConfig) (AP, error)
	// Backhaul is optional.
	Backhaul Backhaul
}

// Node is a mesh node's roaming agent (and, on the gateway, the controller's host).
type Node struct {
	cfg  Config
	deps Deps
	log  *slog.Logger
	ctrl *Controller

	mu        sync.Mutex
	bsses     map[string]*bss // by BSSID
	peers     map[string]*peer
	ctrlName  string
	ctrlAddr  net.Addr
	ctrlSeen  time.Time
	ctrlLost  bool
	queries   map[string]*beaconQuery // by BSSID+token
	steers    map[string]uint64       // station → steer ID
	blocks    map[string]*time.Timer  // BSSID+station → unblock
	neighbors uint64                  // version applied
	applied   map[string]map[meshproto.MAC]meshproto.BSSInfo
	topoSent  time.Time
	topoSig   string
	// Stats for tests and status.
	sent, received int
}

type bss struct {
	cfg  BSSConfig
	ap   AP
	info meshproto.BSSInfo
}

type peer struct {
	addr       net.Addr
	seen       time.Time
	controller bool
}

type beaconQuery struct {
	id      uint64
	mac     meshproto.MAC
	until   time.Time
	reports []meshproto.BeaconMeasurement
}

// NewNode checks the configuration.
func NewNode(cfg Config, deps Deps) (*Node, error) {
	if cfg.Node == "" {
		return nil, errors.New("mesh: node: empty")
	}
	if deps.Conn == nil {
		return nil, errors.New("mesh: control plane: nil")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.HelloEvery, time.Second)
	def(&cfg.ReportEvery, time.Second)
	def(&cfg.TopologyEvery, 10*time.Second)
	def(&cfg.ControllerTimeout, 3500*time.Millisecond)
	def(&cfg.Tick, time.Second)
	def(&cfg.BeaconWait, 1500*time.Millisecond)
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	for i, b := range cfg.BSSes {
		if b.Iface == "" {
			return nil, fmt.Errorf("mesh: bsses[%d].iface: empty", i)
		}
		if b.Ctrl == "" {
			cfg.BSSes[i].Ctrl = filepath.Join(hostapd.DefaultCtrlDir, b.Iface)
		}
	}
	if deps.DialAP == nil {
		deps.DialAP = func(ctx context.Context, b BSSConfig) (AP, error) {
			return hostapd.Dial(ctx, b.Ctrl, hostapd.Options{Logger: cfg.Log})
		}
	}
	n := &Node{cfg: cfg, deps: deps, log: cfg.Log.With("svc", "mesh", "node", cfg.Node),
		bsses: map[string]*bss{}, peers: map[string]*peer{}, queries: map[string]*beaconQuery{},
		steers: map[string]uint64{}, blocks: map[string]*time.Timer{}, applied: map[string]map[meshproto.MAC]meshproto.BSSInfo{}}
	if cfg.Controller {
		n.ctrl = newController(n)
		n.ctrlName = cfg.Node
	}
	return n, nil
}

// Name is the service name for the supervisor.
func (n *Node) Name() string { return "mesh" }

// Controller returns the node's controller (nil on satellites).
func (n *Node) Controller() *Controller { return n.ctrl }

// ControllerName returns the controller the node follows ("" when lost or unknown).
func (n *Node) ControllerName() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ctrlLost {
		return ""
	}
	return n.ctrlName
}

// Peers lists the nodes heard recently.
func (n *Node) Peers() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for name, p := range n.peers {
		if time.Since(p.seen) < n.cfg.ControllerTimeout {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// NeighborsApplied returns, per local BSSID, the neighbour entries set in its hostapd.
func (n *Node) NeighborsApplied() map[string][]string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := map[string][]string{}
	for b, m := range n.applied {
		for mac := range m {
			out[b] = append(out[b], mac.String())
		}
		sort.Strings(out[b])
	}
	return out
}

// Run connects to the BSSes' hostapd and runs the agent (and the controller on the gateway)
// until ctx ends. up is called once every BSS is attached.
func (n *Node) Run(ctx context.Context, up func()) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, bc := range n.cfg.BSSes {
		ap, err := n.deps.DialAP(ctx, bc)
		if err == nil {
			err = ap.Attach(ctx)
		}
		if err != nil {
			n.closeAPs()
			return fmt.Errorf("mesh: bss %s: %w", bc.Iface, err)
		}
		b := &bss{cfg: bc, ap: ap}
		// The deny list is the mesh's alone: blocks a previous run left behind go.
		if err := ap.DenyACLClear(ctx); err != nil {
			n.log.Warn("DENY_ACL CLEAR", "iface", bc.Iface, "err", err)
		}
		if err := n.refresh(ctx, b); err != nil {
			ap.Close()
			n.closeAPs()
			return fmt.Errorf("mesh: bss %s: %w", bc.Iface, err)
		}
		n.mu.Lock()
		n.bsses[b.info.BSSID.String()] = b
		n.mu.Unlock()
	}
	defer n.closeAPs()
	var wg sync.WaitGroup
	for _, b := range n.sortedBSSes() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.watch(ctx, b)
		}()
	}
	errc := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := n.receive(ctx); err != nil && ctx.Err() == nil {
			errc <- err
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		n.loop(ctx)
	}()
	if up != nil {
		up()
	}
	n.log.Info("mesh node up", "bsses", len(n.bsses), "controller", n.cfg.Controller)
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel()
	wg.Wait()
	n.liftBlocks()
	return err
}

// liftBlocks ends every block now (the node stops: nobody would lift them later).
func (n *Node) liftBlocks() {
	n.mu.Lock()
	type blk struct {
		ap  AP
		mac net.HardwareAddr
	}
	var list []blk
	for key, t := range n.blocks {
		if t.Stop() {
			bssid, mac, _ := strings.Cut(key, "/")
			if b := n.bsses[bssid]; b != nil {
				if hw, err := net.ParseMAC(mac); err == nil {
					list = append(list, blk{b.ap, hw})
				}
			}
		}
		delete(n.blocks, key)
	}
	n.mu.Unlock()
	for _, b := range list {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		_ = b.ap.DenyACL(ctx, false, b.mac)
		cancel()
	}
}

func (n *Node) closeAPs() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, b := range n.bsses {
		b.ap.Close()
	}
}

func (n *Node) sortedBSSes() []*bss {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*bss, 0, len(n.bsses))
	for _, b := range n.bsses {
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].info.BSSID.String() < out[j].info.BSSID.String() })
	return out
}

// infoOf returns a BSS's description (refresh replaces it).
func (n *Node) infoOf(b *bss) meshproto.BSSInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	return b.info
}

// refresh re-reads a BSS's STATUS.
func (n *Node) refresh(ctx context.Context, b *bss) error {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	st, err := b.ap.Status(rctx)
	if err != nil {
		return err
	}
	info, err := bssInfo(n.cfg.Node, b.cfg.Radio, st, b.cfg.MobilityDomain)
	if err != nil {
		return err
	}
	n.mu.Lock()
	b.info = info
	n.mu.Unlock()
	return nil
}

// loop runs the periodic work.
func (n *Node) loop(ctx context.Context) {
	hello := time.NewTicker(n.cfg.HelloEvery)
	defer hello.Stop()
	report := time.NewTicker(n.cfg.ReportEvery)
	defer report.Stop()
	tick := time.NewTicker(n.cfg.Tick)
	defer tick.Stop()
	beacons := time.NewTicker(100 * time.Millisecond)
	defer beacons.Stop()
	n.sendHello()
	n.sendTopology(ctx, true)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hello.C:
			n.sendHello()
			n.checkController()
		case <-report.C:
			n.sendTopology(ctx, false)
			n.sendMetrics(ctx)
		case <-tick.C:
			if n.ctrl != nil {
				n.ctrl.tick(ctx, time.Now())
			}
		case <-beacons.C:
			n.flushBeaconQueries(time.Now())
		}
	}
}

func (n *Node) sendHello() {
	h := meshproto.Hello{Node: n.cfg.Node, Controller: n.cfg.Controller, IntervalMs: int(n.cfg.HelloEvery / time.Millisecond)}
	if n.deps.Backhaul != nil {
		h.Backhaul = n.deps.Backhaul.State()
	}
	for _, a := range n.cfg.Discovery {
		addr, err := net.ResolveUDPAddr("udp", a)
		if err != nil {
			continue
		}
		if err := n.deps.Conn.Send(addr, meshproto.TypeHello, h); err != nil {
			n.log.Debug("hello", "to", a, "err", err)
		}
	}
}

// checkController notices the controller's loss and return.
func (n *Node) checkController() {
	if n.cfg.Controller {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	lost := n.ctrlName == "" || time.Since(n.ctrlSeen) > n.cfg.ControllerTimeout
	if lost && !n.ctrlLost {
		n.log.Warn("controller lost: serving clients with the last decisions", "controller", n.ctrlName)
	}
	n.ctrlLost = lost
}

// toController sends a report to the controller (a direct call on the gateway).
func (n *Node) toController(t meshproto.Type, v any) {
	if n.ctrl != nil {
		n.ctrl.deliver(context.Background(), n.cfg.Node, v)
		return
	}
	n.mu.Lock()
	addr, lost := n.ctrlAddr, n.ctrlLost
	n.mu.Unlock()
	if addr == nil || lost {
		return
	}
	if err := n.deps.Conn.Send(addr, t, v); err != nil {
		n.log.Debug("report", "type", t.String(), "err", err)
	}
	n.mu.Lock()
	n.sent++
	n.mu.Unlock()
}

// sendTopology sends the node's BSSes when they changed, and every TopologyEvery.
func (n *Node) sendTopology(ctx context.Context, force bool) {
	t := meshproto.Topology{Node: n.cfg.Node}
	for _, b := range n.sortedBSSes() {
		if err := n.refresh(ctx, b); err != nil {
			n.log.Debug("status", "iface", b.cfg.Iface, "err", err)
		}
		n.mu.Lock()
		t.BSSes = append(t.BSSes, b.info)
		n.mu.Unlock()
	}
	if n.deps.Backhaul != nil {
		t.Backhaul = n.deps.Backhaul.State()
	}
	sig := fmt.Sprint(t.BSSes)
	n.mu.Lock()
	due := force || sig != n.topoSig || time.Since(n.topoSent) >= n.cfg.TopologyEvery
	if due {
		n.topoSig, n.topoSent = sig, time.Now()
	}
	n.mu.Unlock()
	if due {
		n.toController(meshproto.TypeTopology, &t)
	}
}

// stationMetrics reads one BSS's stations.
func (n *Node) stationMetrics(ctx context.Context, b *bss) (meshproto.BSSMetrics, error) {
	info := n.infoOf(b)
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stas, err := b.ap.Stations(rctx)
	m := meshproto.BSSMetrics{BSSID: info.BSSID}
	for _, s := range stas {
		mac, ok := meshproto.MACFrom(s.Addr)
		if !ok || !s.HasFlag("ASSOC") {
			continue
		}
		sm := meshproto.StationMetrics{MAC: mac, BSSID: info.BSSID, Signal: clampSignal(s.Signal),
			IdleMs: int(min(s.Inactive, time.Hour) / time.Millisecond), ConnectedSec: int(min(s.ConnectedTime, 1000*time.Hour) / time.Second),
			Caps: caps(s, info.Band)}
		if len(m.Stations) < meshproto.MaxStations {
			m.Stations = append(m.Stations, sm)
		}
	}
	return m, err
}

func (n *Node) sendMetrics(ctx context.Context) {
	am := meshproto.APMetrics{Node: n.cfg.Node, At: time.Now().UTC()}
	for _, b := range n.sortedBSSes() {
		m, err := n.stationMetrics(ctx, b)
		if err != nil {
			n.log.Debug("stations", "iface", b.cfg.Iface, "err", err)
		}
		am.BSSes = append(am.BSSes, m)
	}
	n.toController(meshproto.TypeAPMetrics, &am)
}

// watch handles one BSS's hostapd events.
func (n *Node) watch(ctx context.Context, b *bss) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-b.ap.Events():
			if !ok {
				return
			}
			n.event(ctx, b, ev)
		}
	}
}

func (n *Node) event(ctx context.Context, b *bss, ev hostapd.Event) {
	info := n.infoOf(b)
	switch ev.Name {
	case hostapd.EventSTAConnected, hostapd.EventSTADisconnected:
		mac, ok := meshproto.MACFrom(ev.Addr)
		if !ok {
			return
		}
		ce := meshproto.ClientEvent{Node: n.cfg.Node, BSSID: info.BSSID, MAC: mac, Joined: ev.Name == hostapd.EventSTAConnected, At: time.Now().UTC()}
		if ce.Joined {
			rctx, cancel := context.WithTimeout(ctx, timeout)
			stas, err := b.ap.Stations(rctx)
			cancel()
			if err == nil {
				for _, s := range stas {
					if s.Addr.String() == mac.String() {
						sm := meshproto.StationMetrics{MAC: mac, BSSID: info.BSSID, Signal: clampSignal(s.Signal), Caps: caps(s, info.Band)}
						ce.Station = &sm
					}
				}
			}
		} else {
			n.mu.Lock()
			delete(n.steers, mac.String())
			n.mu.Unlock()
		}
		n.toController(meshproto.TypeClientEvent, &ce)
	case hostapd.EventBeaconResp:
		br, ok := ev.BeaconReport()
		if !ok {
			return
		}
		e, err := hostapd.ParseBeaconReportEntry(br.Report)
		if err != nil {
			return
		}
		bssid, ok := meshproto.MACFrom(e.BSSID)
		if !ok || e.RCPI > 220 {
			return
		}
		n.mu.Lock()
		if q := n.queries[fmt.Sprintf("%s/%d", info.BSSID, br.Token)]; q != nil && len(q.reports) < meshproto.MaxMeasurements {
			q.reports = append(q.reports, meshproto.BeaconMeasurement{BSSID: bssid, OpClass: e.OpClass, Channel: e.Channel, RCPI: e.RCPI, RSNI: min(e.RSNI, 255)})
		}
		n.mu.Unlock()
	case hostapd.EventBSSTMResp:
		r, ok := ev.BSSTMResponse()
		if !ok {
			return
		}
		mac, _ := meshproto.MACFrom(r.Addr)
		rep := meshproto.BTMReport{Node: n.cfg.Node, MAC: mac, BSSID: info.BSSID, Status: min(max(r.Status, 0), 255)}
		if t, ok := meshproto.MACFrom(r.Target); ok {
			rep.Target = t
		}
		n.mu.Lock()
		rep.Steer = n.steers[mac.String()]
		n.mu.Unlock()
		n.toController(meshproto.TypeBTMReport, &rep)
	case hostapd.EventAPEnabled, hostapd.EventChannelSwitch, hostapd.EventCSAFinished, hostapd.EventReattached:
		if err := n.refresh(ctx, b); err != nil {
			n.log.Debug("status after event", "event", ev.Name, "err", err)
		}
	}
}

// flushBeaconQueries sends the beacon reports collected for queries whose time is up.
func (n *Node) flushBeaconQueries(now time.Time) {
	n.mu.Lock()
	var due []*beaconQuery
	for k, q := range n.queries {
		if now.After(q.until) {
			due = append(due, q)
			delete(n.queries, k)
		}
	}
	n.mu.Unlock()
	for _, q := range due {
		n.toController(meshproto.TypeBeaconMetrics, &meshproto.BeaconMetrics{Query: q.id, Node: n.cfg.Node, MAC: q.mac, Report: q.reports})
	}
}

// receive handles the control plane's datagrams.
func (n *Node) receive(ctx context.Context) error {
	for {
		m, from, err := n.deps.Conn.Receive(ctx)
		if err != nil {
			return err
		}
		if m.Sender == n.cfg.Node {
			continue
		}
		n.mu.Lock()
		n.received++
		n.mu.Unlock()
		n.handle(ctx, m, from)
	}
}

// handle dispatches one authenticated message.
func (n *Node) handle(ctx context.Context, m meshproto.Message, from net.Addr) {
	switch m.Type {
	case meshproto.TypeHello:
		h, err := meshproto.DecodeValid[meshproto.Hello](m, m.Type)
		if err != nil || h.Node != m.Sender {
			return
		}
		n.mu.Lock()
		p := n.peers[h.Node]
		if p == nil {
			p = &peer{}
			n.peers[h.Node] = p
			n.log.Info("mesh peer found", "peer", h.Node, "controller", h.Controller)
		}
		p.addr, p.seen, p.controller = from, time.Now(), h.Controller
		if h.Controller && !n.cfg.Controller {
			if n.ctrlName != h.Node || n.ctrlLost {
				n.log.Info("controller", "controller", h.Node)
				n.topoSig = "" // report everything to it again
			}
			n.ctrlName, n.ctrlAddr, n.ctrlSeen, n.ctrlLost = h.Node, from, time.Now(), false
		}
		n.mu.Unlock()
		if n.ctrl != nil {
			n.ctrl.peer(h.Node, from)
		}
		return
	}
	// Reports go to the controller.
	if n.ctrl != nil {
		var v any
		var err error
		switch m.Type {
		case meshproto.TypeTopology:
			v, err = decode[meshproto.Topology](m)
		case meshproto.TypeAPMetrics:
			v, err = decode[meshproto.APMetrics](m)
		case meshproto.TypeClientEvent:
			v, err = decode[meshproto.ClientEvent](m)
		case meshproto.TypeBeaconMetrics:
			v, err = decode[meshproto.BeaconMetrics](m)
		case meshproto.TypeBTMReport:
			v, err = decode[meshproto.BTMReport](m)
		case meshproto.TypeSteerDone:
			v, err = decode[meshproto.SteerDone](m)
		case meshproto.TypeBackhaulResult:
			v, err = decode[meshproto.BackhaulResult](m)
		}
		if v != nil && err == nil {
			n.ctrl.deliver(ctx, m.Sender, v)
		}
		return
	}
	// Commands only from the controller this node follows.
	n.mu.Lock()
	fromCtrl := m.Sender == n.ctrlName && !n.ctrlLost
	n.mu.Unlock()
	if !fromCtrl {
		return
	}
	var v any
	var err error
	switch m.Type {
	case meshproto.TypeBeaconQuery:
		v, err = decode[meshproto.BeaconQuery](m)
	case meshproto.TypeSteer:
		v, err = decode[meshproto.Steer](m)
	case meshproto.TypeAssocControl:
		v, err = decode[meshproto.AssocControl](m)
	case meshproto.TypeNeighbors:
		v, err = decode[meshproto.Neighbors](m)
	case meshproto.TypeBackhaulSteer:
		v, err = decode[meshproto.BackhaulSteer](m)
	}
	if v != nil && err == nil {
		n.command(ctx, v)
	} else if err != nil {
		n.log.Debug("bad command", "type", m.Type.String(), "err", err)
	}
}

func decode[T any, PT interface {
	*T
	meshproto.Validator
}](m meshproto.Message) (any, error) {
	v, err := meshproto.DecodeValid[T, PT](m, m.Type)
	if err != nil {
		return nil, err
	}
	return PT(&v), nil
}

// bssFor returns the local BSS with bssid.
func (n *Node) bssFor(bssid meshproto.MAC) *bss {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.bsses[bssid.String()]
}

// command carries out a controller command (a direct call on the gateway).
func (n *Node) command(ctx context.Context, v any) {
	switch c := v.(type) {
	case *meshproto.BeaconQuery:
		n.beaconQuery(ctx, *c)
	case *meshproto.Steer:
		n.steer(ctx, *c)
	case *meshproto.AssocControl:
		n.assocControl(ctx, *c)
	case *meshproto.Neighbors:
		n.setNeighbors(ctx, *c)
	case *meshproto.BackhaulSteer:
		res := meshproto.BackhaulResult{ID: c.ID, Node: n.cfg.Node}
		if n.deps.Backhaul == nil || c.Node != n.cfg.Node {
			res.Error = "no backhaul agent on this node"
		} else {
			n.deps.Backhaul.Pin(c.Parent, c.Link)
			res.OK, res.Backhaul = true, n.deps.Backhaul.State()
		}
		n.toController(meshproto.TypeBackhaulResult, &res)
	}
}

func (n *Node) beaconQuery(ctx context.Context, q meshproto.BeaconQuery) {
	b := n.bssFor(q.BSSID)
	if b == nil {
		return
	}
	info := n.infoOf(b)
	mode := byte(hostapd.BeaconModeActive)
	switch q.Mode {
	case meshproto.BeaconPassive:
		mode = hostapd.BeaconModePassive
	case meshproto.BeaconTable:
		mode = hostapd.BeaconModeTable
	}
	chans := q.Channels
	if len(chans) == 0 {
		chans = []meshproto.ChannelRef{{OpClass: info.OpClass, Channel: 255}}
	}
	dur := q.DurationTU
	if dur == 0 {
		dur = 50
	}
	var errs []error
	for _, ch := range chans {
		rctx, cancel := context.WithTimeout(ctx, timeout)
		tok, err := b.ap.ReqBeacon(rctx, q.MAC.HW(), 0, hostapd.BeaconRequest(uint8(ch.OpClass), uint8(ch.Channel), uint16(dur), mode, nil))
		cancel()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n.mu.Lock()
		n.queries[fmt.Sprintf("%s/%d", info.BSSID, tok)] = &beaconQuery{id: q.ID, mac: q.MAC, until: time.Now().Add(n.cfg.BeaconWait)}
		n.mu.Unlock()
	}
	if len(errs) == len(chans) {
		n.toController(meshproto.TypeBeaconMetrics, &meshproto.BeaconMetrics{Query: q.ID, Node: n.cfg.Node, MAC: q.MAC, Error: "REQ_BEACON refused"})
	}
}

func (n *Node) steer(ctx context.Context, s meshproto.Steer) {
	b := n.bssFor(s.BSSID)
	if b == nil {
		return
	}
	req := hostapd.BSSTMRequest{Addr: s.MAC.HW(), DisassocImminent: s.DisassocImminent, DisassocTimer: s.DisassocTimer,
		ValidityInterval: s.ValidityTBTT, Abridged: s.Abridged, DialogToken: int(s.ID%255) + 1}
	for _, t := range s.Targets {
		req.Candidates = append(req.Candidates, neighborReport(t.BSS))
	}
	n.mu.Lock()
	n.steers[s.MAC.String()] = s.ID
	n.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, timeout)
	err := b.ap.BSSTMReq(rctx, req)
	cancel()
	if err != nil {
		n.log.Info("BSS transition request failed", "station", s.MAC.String(), "err", err)
		n.toController(meshproto.TypeSteerDone, &meshproto.SteerDone{Steer: s.ID, Node: n.cfg.Node, MAC: s.MAC, Detail: "BSS_TM_REQ refused"})
		return
	}
	n.log.Info("BSS transition request", "station", s.MAC.String(), "from", s.BSSID.String(), "to", s.Targets[0].BSS.BSSID.String(), "reason", s.Reason)
}

func (n *Node) assocControl(ctx context.Context, a meshproto.AssocControl) {
	for _, bssid := range a.BSSIDs {
		b := n.bssFor(bssid)
		if b == nil {
			continue
		}
		key := bssid.String() + "/" + a.MAC.String()
		rctx, cancel := context.WithTimeout(ctx, timeout)
		err := b.ap.DenyACL(rctx, a.Block, a.MAC.HW())
		cancel()
		if err != nil {
			n.log.Warn("association control", "bssid", bssid.String(), "err", err)
			continue
		}
		n.mu.Lock()
		if t := n.blocks[key]; t != nil {
			t.Stop()
			delete(n.blocks, key)
		}
		if a.Block {
			ap, mac := b.ap, a.MAC.HW()
			// The block ends here, controller or not.
			n.blocks[key] = time.AfterFunc(time.Duration(a.ValiditySec)*time.Second, func() {
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				defer cancel()
				_ = ap.DenyACL(ctx, false, mac)
				n.mu.Lock()
				delete(n.blocks, key)
				n.mu.Unlock()
			})
		}
		n.mu.Unlock()
		if a.Deauth {
			rctx, cancel := context.WithTimeout(ctx, timeout)
			_ = b.ap.Deauthenticate(rctx, a.MAC.HW(), max(a.Reason, 1))
			cancel()
		}
		n.log.Info("association control", "station", a.MAC.String(), "bssid", bssid.String(), "block", a.Block, "for_s", a.ValiditySec, "deauth", a.Deauth)
	}
}

// setNeighbors makes every local BSS's neighbour database equal to the site's other BSSes of
// the same SSID.
func (n *Node) setNeighbors(ctx context.Context, nb meshproto.Neighbors) {
	n.mu.Lock()
	if nb.Version <= n.neighbors {
		n.mu.Unlock()
		return
	}
	n.neighbors = nb.Version
	n.mu.Unlock()
	for _, b := range n.sortedBSSes() {
		info := n.infoOf(b)
		want := map[meshproto.MAC]meshproto.BSSInfo{}
		for _, o := range nb.BSSes {
			if o.BSSID != info.BSSID && o.SSID == info.SSID {
				want[o.BSSID] = o
			}
		}
		n.mu.Lock()
		have := n.applied[info.BSSID.String()]
		n.mu.Unlock()
		next := map[meshproto.MAC]meshproto.BSSInfo{}
		for mac, o := range want {
			if old, ok := have[mac]; ok && old == o {
				next[mac] = o
				continue
			}
			rctx, cancel := context.WithTimeout(ctx, timeout)
			err := b.ap.SetNeighbor(rctx, o.SSID, neighborReport(o))
			cancel()
			if err != nil {
				n.log.Warn("SET_NEIGHBOR", "iface", b.cfg.Iface, "neighbor", mac.String(), "err", err)
				continue
			}
			next[mac] = o
		}
		for mac, o := range have {
			if _, ok := want[mac]; ok {
				continue
			}
			rctx, cancel := context.WithTimeout(ctx, timeout)
			if err := b.ap.RemoveNeighbor(rctx, o.SSID, mac.HW()); err != nil {
				n.log.Debug("REMOVE_NEIGHBOR", "iface", b.cfg.Iface, "neighbor", mac.String(), "err", err)
			}
			cancel()
		}
		n.mu.Lock()
		n.applied[info.BSSID.String()] = next
		n.mu.Unlock()
	}
}

// sendTo sends a command to a node (used by the controller).
func (n *Node) sendTo(node string, t meshproto.Type, v any) error {
	if node == n.cfg.Node {
		n.command(context.Background(), v)
		return nil
	}
	n.mu.Lock()
	p := n.peers[node]
	n.mu.Unlock()
	if p == nil || p.addr == nil {
		return fmt.Errorf("mesh: node %s not heard", node)
	}
	return n.deps.Conn.Send(p.addr, t, v)
}
