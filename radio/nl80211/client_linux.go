//go:build linux

package nl80211

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/wifi"
	"golang.org/x/sys/unix"
)

// linuxClient is the real Client: mdlayher/wifi plus three requests of its own.
type linuxClient struct {
	w      *wifi.Client
	mu     sync.Mutex // guards g (genetlink conns are not safe for concurrent requests)
	g      *genetlink.Conn
	family genetlink.Family
}

// Open connects to nl80211.
func Open() (Client, error) {
	w, err := wifi.New()
	if err != nil {
		return nil, fmt.Errorf("nl80211: %w", err)
	}
	g, err := genetlink.Dial(nil)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("nl80211: genetlink: %w", err)
	}
	fam, err := g.GetFamily(unix.NL80211_GENL_NAME)
	if err != nil {
		w.Close()
		g.Close()
		return nil, fmt.Errorf("nl80211: family: %w", err)
	}
	return &linuxClient{w: w, g: g, family: fam}, nil
}

func (c *linuxClient) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return errors.Join(c.w.Close(), c.g.Close())
}

func ifType(t wifi.InterfaceType) IfType {
	switch t {
	case wifi.InterfaceTypeStation:
		return IfStation
	case wifi.InterfaceTypeAP:
		return IfAP
	case wifi.InterfaceTypeMeshPoint:
		return IfMesh
	case wifi.InterfaceTypeMonitor:
		return IfMonitor
	}
	return IfOther
}

func widthMHz(w wifi.ChannelWidth) int {
	switch w {
	case wifi.ChannelWidth20NoHT, wifi.ChannelWidth20:
		return 20
	case wifi.ChannelWidth40:
		return 40
	case wifi.ChannelWidth80:
		return 80
	case wifi.ChannelWidth80P80, wifi.ChannelWidth160:
		return 160
	case wifi.ChannelWidth320:
		return 320
	}
	return 0
}

func (c *linuxClient) Interfaces() ([]Interface, error) {
	ifis, err := c.w.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("nl80211: interfaces: %w", err)
	}
	out := make([]Interface, 0, len(ifis))
	for _, i := range ifis {
		if i.Name == "" {
			continue // P2P device and the like
		}
		out = append(out, Interface{Index: i.Index, Name: i.Name, MAC: i.HardwareAddr, PHY: i.PHY,
			Type: ifType(i.Type), Freq: i.Frequency, Width: widthMHz(i.ChannelWidth)})
	}
	return out, nil
}

func (c *linuxClient) iface(name string) (*wifi.Interface, error) {
	ifis, err := c.w.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("nl80211: interfaces: %w", err)
	}
	for _, i := range ifis {
		if i.Name == name {
			return i, nil
		}
	}
	return nil, fmt.Errorf("nl80211: %s: %w", name, ErrNoInterface)
}

func (c *linuxClient) PHYs() ([]PHY, error) {
	phys, err := c.w.PHYs()
	if err != nil {
		return nil, fmt.Errorf("nl80211: phys: %w", err)
	}
	bands, err := c.wiphyBands()
	if err != nil {
		return nil, err
	}
	out := make([]PHY, 0, len(phys))
	for _, p := range phys {
		ph := PHY{Index: p.Index, Name: p.Name, Bands: bands[p.Index]}
		for _, t := range p.SupportedIftypes {
			ph.Modes = append(ph.Modes, ifType(t))
		}
		out = append(out, ph)
	}
	return out, nil
}

func (c *linuxClient) dump(cmd uint8, attrs func(ae *netlink.AttributeEncoder)) ([][]byte, error) {
	ae := netlink.NewAttributeEncoder()
	if attrs != nil {
		attrs(ae)
	}
	b, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	msgs, err := c.g.Execute(genetlink.Message{
		Header: genetlink.Header{Command: cmd, Version: c.family.Version},
		Data:   b,
	}, c.family.ID, netlink.Request|netlink.Dump)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(msgs))
	for i, m := range msgs {
		out[i] = m.Data
	}
	return out, nil
}

func (c *linuxClient) wiphyBands() (map[int][]Band, error) {
	msgs, err := c.dump(unix.NL80211_CMD_GET_WIPHY, func(ae *netlink.AttributeEncoder) {
		ae.Flag(unix.NL80211_ATTR_SPLIT_WIPHY_DUMP, true)
	})
	if err != nil {
		return nil, fmt.Errorf("nl80211: get wiphy: %w", err)
	}
	return parseWiphyBands(msgs)
}

func (c *linuxClient) Stations(ifname string) ([]Station, error) {
	ifi, err := c.iface(ifname)
	if err != nil {
		return nil, err
	}
	infos, err := c.w.StationInfo(ifi)
	if err != nil {
		return nil, fmt.Errorf("nl80211: %s: stations: %w", ifname, err)
	}
	out := make([]Station, 0, len(infos))
	for _, s := range infos {
		out = append(out, Station{MAC: s.HardwareAddr, Signal: s.Signal, SignalAvg: s.SignalAverage,
			RxBytes: uint64(s.ReceivedBytes), TxBytes: uint64(s.TransmittedBytes),
			RxBitrate: s.ReceiveBitrate, TxBitrate: s.TransmitBitrate, TxRetries: s.TransmitRetries,
			TxFailed: s.TransmitFailed, BeaconLoss: s.BeaconLoss, Inactive: s.Inactive, ConnectedAt: s.Connected})
	}
	return out, nil
}

func (c *linuxClient) Survey(ifname string) ([]Survey, error) {
	ifi, err := c.iface(ifname)
	if err != nil {
		return nil, err
	}
	// Ask without the MAC attribute: the library adds NL80211_ATTR_MAC when the interface has
	// one, which some kernels reject for survey dumps.
	q := *ifi
	q.HardwareAddr = nil
	infos, err := c.w.SurveyInfo(&q)
	if err != nil {
		return nil, fmt.Errorf("nl80211: %s: survey: %w", ifname, err)
	}
	out := make([]Survey, 0, len(infos))
	for _, s := range infos {
		out = append(out, Survey{Freq: s.Frequency, Noise: s.Noise, HasNoise: s.Noise != 0, InUse: s.InUse,
			Time: s.ChannelTime, TimeBusy: s.ChannelTimeBusy, TimeExt: s.ChannelTimeExtBusy, TimeRx: s.ChannelTimeRx,
			TimeTx: s.ChannelTimeTx, TimeScan: s.ChannelTimeScan, TimeBSSRx: s.ChannelTimeBssRx})
	}
	return out, nil
}

// Scan triggers NL80211_CMD_TRIGGER_SCAN itself (the library cannot set NL80211_SCAN_FLAG_AP or
// a frequency list) and waits for NEW_SCAN_RESULTS on the "scan" multicast group.
func (c *linuxClient) Scan(ctx context.Context, ifname string, opts ScanOptions) error {
	ifi, err := c.iface(ifname)
	if err != nil {
		return err
	}
	var group uint32
	for _, g := range c.family.Groups {
		if g.Name == unix.NL80211_MULTICAST_GROUP_SCAN {
			group = g.ID
		}
	}
	if group == 0 {
		return fmt.Errorf("nl80211: %s: scan: no %q multicast group", ifname, unix.NL80211_MULTICAST_GROUP_SCAN)
	}
	mc, err := genetlink.Dial(nil)
	if err != nil {
		return fmt.Errorf("nl80211: %s: scan: %w", ifname, err)
	}
	defer mc.Close()
	if err := mc.JoinGroup(group); err != nil {
		return fmt.Errorf("nl80211: %s: scan: join: %w", ifname, err)
	}
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(unix.NL80211_ATTR_IFINDEX, uint32(ifi.Index))
	if len(opts.Freqs) > 0 {
		ae.Nested(unix.NL80211_ATTR_SCAN_FREQUENCIES, func(n *netlink.AttributeEncoder) error {
			for i, f := range opts.Freqs {
				n.Uint32(uint16(i+1), uint32(f))
			}
			return nil
		})
	}
	if opts.AP {
		ae.Uint32(unix.NL80211_ATTR_SCAN_FLAGS, unix.NL80211_SCAN_FLAG_AP)
	}
	b, err := ae.Encode()
	if err != nil {
		return err
	}
	c.mu.Lock()
	_, err = c.g.Execute(genetlink.Message{
		Header: genetlink.Header{Command: unix.NL80211_CMD_TRIGGER_SCAN, Version: c.family.Version},
		Data:   b,
	}, c.family.ID, netlink.Request|netlink.Acknowledge)
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("nl80211: %s: trigger scan: %w", ifname, err)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(30 * time.Second)
	}
	stop := context.AfterFunc(ctx, func() { _ = mc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := mc.SetReadDeadline(deadline); err != nil {
		return err
	}
	for {
		msgs, _, err := mc.Receive()
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("nl80211: %s: scan: %w", ifname, ctx.Err())
			}
			return fmt.Errorf("nl80211: %s: scan: %w", ifname, err)
		}
		for _, m := range msgs {
			if m.Header.Command != unix.NL80211_CMD_NEW_SCAN_RESULTS && m.Header.Command != unix.NL80211_CMD_SCAN_ABORTED {
				continue
			}
			idx := -1
			if attrs, err := netlink.UnmarshalAttributes(m.Data); err == nil {
				for _, a := range attrs {
					if a.Type == unix.NL80211_ATTR_IFINDEX && len(a.Data) >= 4 {
						idx = int(nlUint32(a.Data))
					}
				}
			}
			if idx != ifi.Index {
				continue
			}
			if m.Header.Command == unix.NL80211_CMD_SCAN_ABORTED {
				return fmt.Errorf("nl80211: %s: %w", ifname, ErrScanAborted)
			}
			return nil
		}
	}
}

func (c *linuxClient) ScanResults(ifname string) ([]BSS, error) {
	ifi, err := c.iface(ifname)
	if err != nil {
		return nil, err
	}
	aps, err := c.w.AccessPoints(ifi)
	if err != nil {
		return nil, fmt.Errorf("nl80211: %s: scan results: %w", ifname, err)
	}
	raw, err := c.dump(unix.NL80211_CMD_GET_SCAN, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(unix.NL80211_ATTR_IFINDEX, uint32(ifi.Index))
	})
	if err != nil {
		return nil, fmt.Errorf("nl80211: %s: scan dump: %w", ifname, err)
	}
	ies, err := parseScanIEs(raw)
	if err != nil {
		return nil, fmt.Errorf("nl80211: %s: %w", ifname, err)
	}
	out := make([]BSS, 0, len(aps))
	for _, ap := range aps {
		b := BSS{BSSID: ap.BSSID, SSID: ap.SSID, Freq: ap.Frequency, Signal: float64(ap.Signal) / 100,
			LastSeen: ap.LastSeen, Associated: ap.Status == wifi.BSSStatusAssociated}
		b.Width, b.Center1 = OperatingChannel(ap.Frequency, ies[string(ap.BSSID)])
		if ap.Load.Version != 0 {
			b.HasLoad, b.Load, b.Stations = true, int(ap.Load.ChannelUtilization), int(ap.Load.StationCount)
		} else if st, util, ok := BSSLoad(ies[string(ap.BSSID)]); ok {
			b.HasLoad, b.Load, b.Stations = true, util, st
		}
		out = append(out, b)
	}
	return out, nil
}

func (c *linuxClient) Country() (string, error) {
	d, err := c.w.GetRegulatoryDomain()
	if err != nil {
		return "", fmt.Errorf("nl80211: regulatory domain: %w", err)
	}
	return d.Region, nil
}

func (c *linuxClient) SetCountry(country string) error {
	if len(country) != 2 {
		return fmt.Errorf("nl80211: country %q: need two letters", country)
	}
	if err := c.w.SetRegulatoryRegion(country, wifi.RegulatoryHintUser); err != nil {
		return fmt.Errorf("nl80211: set country %s: %w", country, err)
	}
	return nil
}
