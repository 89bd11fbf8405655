package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/vishvananda/netlink"

	"meshroot/radio/backhaul"
	"meshroot/radio/medium"
	"meshroot/radio/meshproto"
	"meshroot/radio/nl80211"
)

func init() { scenarioFuncs["backhaul"] = scenarioBackhaul }

const meshSSID = "meshroot-bh"

// nsNet is backhaul.LinuxNet for a node living in a network namespace: sockets are created on
// a thread inside it, netlink goes through a handle into it.
type nsNet struct {
	backhaul.LinuxNet
	ns int
}

func (n *nsNet) Listen(iface string, port int) (net.PacketConn, error) {
	var pc net.PacketConn
	err := inNS(n.ns, func() error {
		var err error
		pc, err = n.LinuxNet.Listen(iface, port)
		return err
	})
	return pc, err
}

// bhNode is one node of the backhaul scenario: a namespace with a cable to the switch, an
// 802.11s mesh interface, a service address and the backhaul agent.
type bhNode struct {
	name  string
	ns    int
	h     *netlink.Handle
	radio int
	agent *backhaul.Agent
	wpas  *supplicant
	nl    nl80211.Client
}

// meshMbps estimates the mesh link's throughput from the peers' transmit rates.
func (b *bhNode) meshMbps(iface string) float64 {
	if b.nl == nil {
		return 0
	}
	stas, err := b.nl.Stations(iface)
	if err != nil || len(stas) == 0 {
		return 0
	}
	best := 0.0
	for _, s := range stas {
		best = max(best, backhaul.WirelessMbps(float64(s.Signal), 20, s.TxBitrate))
	}
	return best
}

// newBHNode builds a node: namespace, cable "<name>-eth" (its other end "sw-<name>" in the
// switch bridge), the mesh radio moved in and joined to the SAE mesh, addresses.
func newBHNode(ctx context.Context, e *env, name string, radio int, idx int) (*bhNode, error) {
	ns, err := newNS()
	if err != nil {
		return nil, err
	}
	h, err := handleIn(ns)
	if err != nil {
		return nil, err
	}
	n := &bhNode{name: name, ns: ns, h: h, radio: radio}
	va := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "sw-" + name}, PeerName: name + "-eth"}
	if err := netlink.LinkAdd(va); err != nil {
		return nil, fmt.Errorf("veth: %w", err)
	}
	e.defer_(func() { _ = netlink.LinkDel(va) })
	peer, err := netlink.LinkByName(name + "-eth")
	if err != nil {
		return nil, err
	}
	if err := netlink.LinkSetNsFd(peer, ns); err != nil {
		return nil, err
	}
	sw, err := netlink.LinkByName("br-sw")
	if err != nil {
		return nil, err
	}
	port, err := netlink.LinkByName("sw-" + name)
	if err != nil {
		return nil, err
	}
	if err := netlink.LinkSetMaster(port, sw); err != nil {
		return nil, err
	}
	if err := netlink.LinkSetUp(port); err != nil {
		return nil, err
	}
	for _, l := range []struct{ name, cidr string }{{"lo", fmt.Sprintf("10.88.0.%d/32", idx)}, {name + "-eth", fmt.Sprintf("10.88.1.%d/24", idx)}} {
		if err := setupLink(h, l.name, l.cidr); err != nil {
			return nil, err
		}
	}
	if err := moveWiphy(radio, ns); err != nil {
		return nil, err
	}
	if err := inNS(ns, func() error {
		var err error
		n.nl, err = nl80211.Open()
		return err
	}); err != nil {
		return nil, err
	}
	e.defer_(func() { n.nl.Close() })
	// The 802.11s mesh: SAE with the site's mesh key, on channel 149.
	conf := fmt.Sprintf("ctrl_interface=/var/run/wpa_supplicant\nuser_mpm=1\nnetwork={\n\tssid=\"%s\"\n\tmode=5\n\tfrequency=5745\n\tkey_mgmt=SAE\n\tpsk=\"%s\"\n}\n",
		meshSSID, "the site's mesh key, not typed by anyone")
	if n.wpas, err = e.startSupplicant(ctx, wlan(radio), ns, conf); err != nil {
		return nil, err
	}
	w := n.wpas
	e.defer_(w.stop)
	if err := setupLink(h, wlan(radio), fmt.Sprintf("10.88.2.%d/24", idx)); err != nil {
		return nil, err
	}
	return n, nil
}

func (b *bhNode) start(ctx context.Context, e *env, key meshproto.Key, gateway bool) error {
	ports := []backhaul.Port{
		{Iface: b.name + "-eth", Medium: backhaul.Wired, HelloAddr: "10.88.1.255:7448", Mbps: 940},
		{Iface: wlan(b.radio), Medium: backhaul.Wireless, HelloAddr: "10.88.2.255:7448", Mbps: 100},
	}
	_, dst, _ := net.ParseCIDR("10.88.0.1/32")
	nn := &nsNet{LinuxNet: backhaul.LinuxNet{H: b.h, Dst: dst, Mbps: func(iface string) float64 {
		if iface == wlan(b.radio) {
			return b.meshMbps(iface)
		}
		return 0
	}}, ns: b.ns}
	a, err := backhaul.NewAgent(backhaul.AgentConfig{Node: b.name, Gateway: gateway, Ports: ports, Key: key,
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}, nn)
	if err != nil {
		return err
	}
	b.agent = a
	actx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	up := make(chan struct{})
	go func() { done <- a.Run(actx, func() { close(up) }) }()
	select {
	case <-up:
	case err := <-done:
		cancel()
		return err
	}
	e.defer_(func() {
		cancel()
		<-done
	})
	return nil
}

// scenarioBackhaul: a gateway and a satellite in their own namespaces, joined by a cable through
// a switch (veth pairs on a bridge) and by an 802.11s mesh with SAE on two hwsim radios. The
// satellite's backhaul agent prefers the cable, moves to the mesh when the gateway's cable is
// pulled (its own link stays up: only missing hellos tell), and back once the cable has been
// back for its hold time; then the satellite's own cable loses carrier. A datagram every 10 ms
// from the satellite to the gateway's address measures the gaps.
func scenarioBackhaul(ctx context.Context, e *env, _ int) error {
	t := time.Now()
	sw := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br-sw"}}
	if err := netlink.LinkAdd(sw); err != nil {
		return fmt.Errorf("switch: %w", err)
	}
	e.defer_(func() { _ = netlink.LinkDel(sw) })
	if err := setupLink(nil, "br-sw", ""); err != nil {
		return err
	}
	e.space.Place(phy(radioMesh), medium.Pos{X: 0, Y: 3})
	e.space.Place(phy(radioMshB), medium.Pos{X: 15, Y: 3})
	gw, err := newBHNode(ctx, e, "gw", radioMesh, 1)
	if err != nil {
		return err
	}
	sat, err := newBHNode(ctx, e, "sat", radioMshB, 2)
	if err != nil {
		return err
	}
	// The mesh peering (SAE) up: the peers see each other.
	var peers int
	err = poll(ctx, 60*time.Second, func() error {
		stas, err := sat.nl.Stations(wlan(radioMshB))
		if err != nil {
			return err
		}
		peers = len(stas)
		if peers == 0 {
			return fmt.Errorf("no mesh peer (%s)", sat.wpas.d.tail(3))
		}
		return nil
	})
	e.rep.Report("backhaul: 802.11s mesh with SAE up", t, err, fmt.Sprintf("%d peer(s), link estimate %.0f Mbit/s", peers, sat.meshMbps(wlan(radioMshB))))
	if err != nil {
		return err
	}
	key, err := meshproto.DeriveKey(1, []byte("the vm site's mesh key, 32 bytes"))
	if err != nil {
		return err
	}
	if err := gw.start(ctx, e, key, true); err != nil {
		return err
	}
	if err := sat.start(ctx, e, key, false); err != nil {
		return err
	}
	arr, err := listenArrivals(gw.ns, "10.88.0.1:9998")
	if err != nil {
		return err
	}
	e.defer_(arr.close)

	t = time.Now()
	err = poll(ctx, 20*time.Second, func() error {
		if c := sat.agent.Current(); c.Medium != backhaul.Wired {
			return fmt.Errorf("satellite on %v", c)
		}
		return nil
	})
	if err == nil {
		pctx, cancel := context.WithCancel(context.Background())
		e.defer_(cancel)
		// The agent's choice shows before it has installed the route that goes with it: the
		// probe's dial ("network is unreachable") is retried until the route is there.
		err = poll(ctx, 5*time.Second, func() error { return udpProbe(pctx, sat.ns, "10.88.0.1:9998", 10*time.Millisecond) })
	}
	if err == nil {
		err = poll(ctx, 10*time.Second, func() error {
			if n := arr.count(time.Now().Add(-time.Second), time.Now()); n < 20 {
				return fmt.Errorf("%d datagrams in the last second", n)
			}
			return nil
		})
	}
	e.rep.Report("backhaul: satellite prefers the cable", t, err, sat.agent.Current().String())
	if err != nil {
		return err
	}

	measure := func(name string, cut func() error, want string) (time.Duration, time.Duration, error) {
		t := time.Now()
		nEvents := len(sat.agent.Events())
		if err := cut(); err != nil {
			return 0, 0, err
		}
		var switchAt time.Time
		err := poll(ctx, 10*time.Second, func() error {
			ev := sat.agent.Events()
			for _, x := range ev[nEvents:] {
				if x.Choice.Medium == want {
					switchAt = x.At
					return nil
				}
			}
			return fmt.Errorf("satellite on %v", sat.agent.Current())
		})
		time.Sleep(2 * time.Second)
		gap := arr.gap(t.Add(-100*time.Millisecond), time.Now())
		sw := switchAt.Sub(t)
		e.rep.Report(name, t, err, fmt.Sprintf("switched after %v; longest data gap %v; now %v", sw.Round(time.Millisecond), gap.Round(time.Millisecond), sat.agent.Current()))
		return sw, gap, err
	}
	setLink := func(name string, up bool) func() error {
		return func() error {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if up {
				return netlink.LinkSetUp(l)
			}
			return netlink.LinkSetDown(l)
		}
	}
	// 1. The gateway's cable is pulled at the switch: the satellite's port keeps its carrier.
	sw1, gap1, err := measure("backhaul: cable pulled (no carrier change) → mesh", setLink("sw-gw", false), backhaul.Wireless)
	if err == nil && sw1 > 2*time.Second {
		err = fmt.Errorf("failover took %v; want under 2 s", sw1)
	}
	if err != nil {
		return err
	}
	// 2. Plugged back: wired again after the hold time.
	back := time.Now()
	_, gapBack, err := measure("backhaul: cable back → wired after the hold", setLink("sw-gw", true), backhaul.Wired)
	if err != nil {
		return err
	}
	var backAt time.Time
	for _, ev := range sat.agent.Events() {
		if ev.Choice.Medium == backhaul.Wired && ev.At.After(back) {
			backAt = ev.At
		}
	}
	if d := backAt.Sub(back); d < 3*time.Second {
		return fmt.Errorf("back on the cable after %v; want the 3 s hold", d)
	}
	// 3. The satellite's own cable loses carrier: immediate.
	sw3, gap3, err := measure("backhaul: carrier lost → mesh", setLink("sw-sat", false), backhaul.Wireless)
	if err == nil && sw3 > 2*time.Second {
		err = fmt.Errorf("failover took %v; want under 2 s", sw3)
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	e.rep.Metric("backhaul-failover-no-carrier", ms(sw1), "ms")
	e.rep.Metric("backhaul-failover-no-carrier-data-gap", ms(gap1), "ms")
	e.rep.Metric("backhaul-return-data-gap", ms(gapBack), "ms")
	e.rep.Metric("backhaul-failover-carrier", ms(sw3), "ms")
	e.rep.Metric("backhaul-failover-carrier-data-gap", ms(gap3), "ms")
	return err
}
