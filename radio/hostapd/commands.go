package hostapd

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"meshroot/radio/chanplan"
)

// Station is one associated station as STA-FIRST / STA-NEXT / STA <addr> describe it.
type Station struct {
	Addr  net.HardwareAddr
	Flags []string // e.g. AUTH, ASSOC, AUTHORIZED, WMM, HT, VHT, HE
	AID   int
	// Signal is the last signal in dBm (0 when hostapd does not say).
	Signal          int
	RxBytes         uint64
	TxBytes         uint64
	RxPackets       uint64
	TxPackets       uint64
	Inactive        time.Duration
	ConnectedTime   time.Duration
	ExtCapabilities []byte
	// Raw holds every key=value line.
	Raw map[string]string
}

// HasFlag reports whether the station has flag (without brackets), e.g. "AUTHORIZED".
func (s Station) HasFlag(flag string) bool {
	for _, f := range s.Flags {
		if f == flag {
			return true
		}
	}
	return false
}

// BSSTransition reports whether the station advertised 802.11v BSS transition support
// (Extended Capabilities bit 19).
func (s Station) BSSTransition() bool {
	return len(s.ExtCapabilities) > 2 && s.ExtCapabilities[2]&0x08 != 0
}

// ErrBadStation is returned for replies that are not a station block.
var ErrBadStation = errors.New("malformed station reply")

// ParseStation parses a STA-FIRST / STA-NEXT / STA reply. An empty reply (no more stations)
// returns ok false and no error.
func ParseStation(reply string) (sta Station, ok bool, err error) {
	if reply == "" {
		return Station{}, false, nil
	}
	if len(reply) > maxReply {
		return Station{}, false, fmt.Errorf("%w: %d bytes", ErrBadStation, len(reply))
	}
	lines := strings.Split(reply, "\n")
	mac, err := net.ParseMAC(strings.TrimSpace(lines[0]))
	if err != nil || len(mac) != 6 {
		return Station{}, false, fmt.Errorf("%w: first line %q is not a MAC address", ErrBadStation, truncate(lines[0]))
	}
	sta = Station{Addr: mac, Raw: map[string]string{}}
	for _, line := range lines[1:] {
		if line == "" {
			continue
		}
		k, v, found := strings.Cut(line, "=")
		if !found || k == "" {
			return Station{}, false, fmt.Errorf("%w: line %q has no key=value", ErrBadStation, truncate(line))
		}
		sta.Raw[k] = v
		var perr error
		switch k {
		case "flags":
			for _, f := range strings.Split(v, "]") {
				if f = strings.TrimPrefix(f, "["); f != "" {
					sta.Flags = append(sta.Flags, f)
				}
			}
		case "aid":
			sta.AID, perr = strconv.Atoi(v)
		case "signal":
			sta.Signal, perr = strconv.Atoi(v)
		case "rx_bytes":
			sta.RxBytes, perr = strconv.ParseUint(v, 10, 64)
		case "tx_bytes":
			sta.TxBytes, perr = strconv.ParseUint(v, 10, 64)
		case "rx_packets":
			sta.RxPackets, perr = strconv.ParseUint(v, 10, 64)
		case "tx_packets":
			sta.TxPackets, perr = strconv.ParseUint(v, 10, 64)
		case "inactive_msec":
			var ms int64
			ms, perr = strconv.ParseInt(v, 10, 64)
			sta.Inactive = time.Duration(ms) * time.Millisecond
		case "connected_time":
			var sec int64
			sec, perr = strconv.ParseInt(v, 10, 64)
			sta.ConnectedTime = time.Duration(sec) * time.Second
		case "ext_capab":
			sta.ExtCapabilities, perr = hex.DecodeString(v)
		}
		if perr != nil {
			return Station{}, false, fmt.Errorf("%w: %s: %v", ErrBadStation, k, perr)
		}
	}
	return sta, true, nil
}

// maxStations bounds a STA-FIRST/STA-NEXT walk (a loop in hostapd's list must not hang us).
const maxStations = 2048

// Stations lists every station of the BSS (hostapd_cli's all_sta: STA-FIRST, then STA-NEXT
// with the previous address until the reply is empty).
func (c *Client) Stations(ctx context.Context) ([]Station, error) {
	var out []Station
	reply, err := c.Request(ctx, "STA-FIRST")
	for i := 0; ; i++ {
		if err != nil {
			return out, err
		}
		sta, ok, perr := ParseStation(reply)
		if perr != nil {
			return out, fmt.Errorf("hostapd %s: station list: %w", c.ifname, perr)
		}
		if !ok {
			return out, nil
		}
		if i >= maxStations {
			return out, fmt.Errorf("hostapd %s: station list longer than %d", c.ifname, maxStations)
		}
		out = append(out, sta)
		reply, err = c.Request(ctx, "STA-NEXT "+sta.Addr.String())
	}
}

// Station returns one station, or an error wrapping ErrFail when hostapd does not know it.
func (c *Client) Station(ctx context.Context, addr net.HardwareAddr) (Station, error) {
	reply, err := c.Request(ctx, "STA "+addr.String())
	if err != nil {
		return Station{}, err
	}
	sta, ok, err := ParseStation(reply)
	if err != nil {
		return Station{}, fmt.Errorf("hostapd %s: STA: %w", c.ifname, err)
	}
	if !ok {
		return Station{}, fmt.Errorf("hostapd %s: STA %s: %w", c.ifname, addr, ErrFail)
	}
	return sta, nil
}

// ChanSwitch is a CHAN_SWITCH request: move the AP to Spec, announcing it in Count beacons.
type ChanSwitch struct {
	// Count is the channel-switch countdown in beacon intervals (cs_count).
	Count int
	// Spec is the target channel.
	Spec chanplan.Spec
	// HT, VHT, HE keep those PHY modes on the new channel (hostapd's " ht", " vht", " he").
	HT, VHT, HE bool
	// BlockTx asks stations to stop transmitting until the switch (used for radar moves).
	BlockTx bool
}

// Command renders the request line, e.g.
// "CHAN_SWITCH 10 5180 center_freq1=5210 sec_channel_offset=1 bandwidth=80 ht vht".
func (cs ChanSwitch) Command() (string, error) {
	if cs.Count < 1 || cs.Count > 255 {
		return "", fmt.Errorf("chan_switch: count %d: must be 1..255 beacons", cs.Count)
	}
	if err := cs.Spec.Validate(); err != nil {
		return "", fmt.Errorf("chan_switch: spec: %w", err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "CHAN_SWITCH %d %d", cs.Count, cs.Spec.Freq)
	if cs.Spec.Width > 20 {
		fmt.Fprintf(&b, " center_freq1=%d sec_channel_offset=%d bandwidth=%d",
			cs.Spec.Center1, cs.Spec.SecOffset(), cs.Spec.Width)
	}
	if cs.BlockTx {
		b.WriteString(" blocktx")
	}
	if cs.HT || cs.Spec.Width > 20 {
		b.WriteString(" ht")
	}
	if cs.VHT || (cs.Spec.Width > 40 && cs.Spec.Band() == chanplan.Band5G) {
		b.WriteString(" vht")
	}
	if cs.HE || cs.Spec.Band() == chanplan.Band6G {
		b.WriteString(" he")
	}
	return b.String(), nil
}

// ChanSwitch asks hostapd to move the AP (all its BSSes) with a channel-switch announcement. The
// switch completes asynchronously: watch Events for CTRL-EVENT-STARTED-CHANNEL-SWITCH and
// AP-CSA-FINISHED (or CTRL-EVENT-CHANNEL-SWITCH).
func (c *Client) ChanSwitch(ctx context.Context, cs ChanSwitch) error {
	cmd, err := cs.Command()
	if err != nil {
		return fmt.Errorf("hostapd %s: %w", c.ifname, err)
	}
	return c.expectOK(ctx, cmd)
}

// NeighborReport is the body of an 802.11k Neighbor Report element (IEEE 802.11-2020 9.4.2.36)
// without optional subelements.
type NeighborReport struct {
	BSSID     net.HardwareAddr
	BSSIDInfo uint32
	OpClass   uint8
	Channel   uint8
	PHYType   uint8
}

// Bytes encodes the element body.
func (n NeighborReport) Bytes() []byte {
	b := make([]byte, 13)
	copy(b, n.BSSID)
	binary.LittleEndian.PutUint32(b[6:], n.BSSIDInfo)
	b[10], b[11], b[12] = n.OpClass, n.Channel, n.PHYType
	return b
}

// BSSID information bits commonly set for our own nodes (reachable, same security, same key
// scope, spectrum management, QoS, and whether the neighbour does 11k / HT / VHT / HE).
const (
	BSSIDInfoReachable      = 0x3
	BSSIDInfoSecurity       = 1 << 2
	BSSIDInfoKeyScope       = 1 << 3
	BSSIDInfoSpectrumMgmt   = 1 << 4
	BSSIDInfoQoS            = 1 << 5
	BSSIDInfoRadioMeasure   = 1 << 7
	BSSIDInfoHT             = 1 << 11
	BSSIDInfoVHT            = 1 << 12
	BSSIDInfoFTM            = 1 << 13
	BSSIDInfoHE             = 1 << 14
	BSSIDInfoMobilityDomain = 1 << 10
)

// PHY types of neighbour reports (dot11PHYType).
const (
	PHYTypeHT  = 7
	PHYTypeVHT = 9
	PHYTypeHE  = 14
)

// OpClass returns the global operating class (IEEE 802.11-2020 Annex E table E-4) of a channel.
func OpClass(s chanplan.Spec) (uint8, error) {
	ch := s.Channel()
	switch s.Band() {
	case chanplan.Band2G4:
		switch s.Width {
		case 20:
			return 81, nil
		case 40:
			if s.SecOffset() > 0 {
				return 83, nil
			}
			return 84, nil
		}
	case chanplan.Band5G:
		switch s.Width {
		case 20:
			switch {
			case ch <= 48:
				return 115, nil
			case ch <= 64:
				return 118, nil
			case ch <= 144:
				return 121, nil
			default:
				return 125, nil
			}
		case 40:
			up := s.SecOffset() > 0
			switch {
			case ch <= 48:
				return pick(up, 116, 117), nil
			case ch <= 64:
				return pick(up, 119, 120), nil
			case ch <= 144:
				return pick(up, 122, 123), nil
			default:
				return pick(up, 126, 127), nil
			}
		case 80:
			return 128, nil
		case 160:
			return 129, nil
		}
	case chanplan.Band6G:
		switch s.Width {
		case 20:
			return 131, nil
		case 40:
			return 132, nil
		case 80:
			return 133, nil
		case 160:
			return 134, nil
		}
	}
	return 0, fmt.Errorf("no operating class for %v", s)
}

func pick(up bool, a, b uint8) uint8 {
	if up {
		return a
	}
	return b
}

// SetNeighbor adds or replaces an entry of hostapd's neighbour-report database (needs
// rrm_neighbor_report=1): SET_NEIGHBOR <bssid> ssid=<hex> nr=<hex>.
func (c *Client) SetNeighbor(ctx context.Context, ssid string, nr NeighborReport) error {
	if len(nr.BSSID) != 6 {
		return fmt.Errorf("hostapd %s: SET_NEIGHBOR: bssid: need 6 bytes", c.ifname)
	}
	if len(ssid) == 0 || len(ssid) > 32 {
		return fmt.Errorf("hostapd %s: SET_NEIGHBOR: ssid: need 1..32 bytes", c.ifname)
	}
	return c.expectOK(ctx, fmt.Sprintf("SET_NEIGHBOR %s ssid=%x nr=%x", nr.BSSID, ssid, nr.Bytes()))
}

// RemoveNeighbor removes an entry: REMOVE_NEIGHBOR <bssid> ssid=<hex>.
func (c *Client) RemoveNeighbor(ctx context.Context, ssid string, bssid net.HardwareAddr) error {
	return c.expectOK(ctx, fmt.Sprintf("REMOVE_NEIGHBOR %s ssid=%x", bssid, ssid))
}

// BSSTMRequest is an 802.11v BSS transition management request (BSS_TM_REQ).
type BSSTMRequest struct {
	Addr net.HardwareAddr
	// Candidates are the neighbour entries offered, most preferred first (with pref=1).
	Candidates []NeighborReport
	// DisassocImminent sets the disassociation-imminent bit; DisassocTimer is in TBTTs.
	DisassocImminent bool
	DisassocTimer    int
	// ValidityInterval is in TBTTs (1..255; 0 means hostapd's default 1).
	ValidityInterval int
	// Abridged sets the abridged bit (non-listed BSSes get preference 0).
	Abridged    bool
	DialogToken int
}

// Command renders the BSS_TM_REQ line.
func (r BSSTMRequest) Command() (string, error) {
	if len(r.Addr) != 6 {
		return "", errors.New("bss_tm_req: addr: need a MAC address")
	}
	if r.DisassocTimer < 0 || r.DisassocTimer > 65535 {
		return "", fmt.Errorf("bss_tm_req: disassoc_timer %d: must be 0..65535", r.DisassocTimer)
	}
	if r.ValidityInterval < 0 || r.ValidityInterval > 255 {
		return "", fmt.Errorf("bss_tm_req: valid_int %d: must be 0..255", r.ValidityInterval)
	}
	if r.DialogToken < 0 || r.DialogToken > 255 {
		return "", fmt.Errorf("bss_tm_req: dialog_token %d: must be 0..255", r.DialogToken)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "BSS_TM_REQ %s", r.Addr)
	if r.DisassocTimer > 0 {
		fmt.Fprintf(&b, " disassoc_timer=%d", r.DisassocTimer)
	}
	if r.ValidityInterval > 0 {
		fmt.Fprintf(&b, " valid_int=%d", r.ValidityInterval)
	}
	if r.DialogToken > 0 {
		fmt.Fprintf(&b, " dialog_token=%d", r.DialogToken)
	}
	for _, n := range r.Candidates {
		if len(n.BSSID) != 6 {
			return "", errors.New("bss_tm_req: candidate bssid: need a MAC address")
		}
		fmt.Fprintf(&b, " neighbor=%s,0x%08x,%d,%d,%d", n.BSSID, n.BSSIDInfo, n.OpClass, n.Channel, n.PHYType)
	}
	if len(r.Candidates) > 0 {
		b.WriteString(" pref=1")
	}
	if r.Abridged {
		b.WriteString(" abridged=1")
	}
	if r.DisassocImminent {
		b.WriteString(" disassoc_imminent=1")
	}
	return b.String(), nil
}

// BSSTMReq sends an 802.11v BSS transition management request; the answer arrives as a
// BSS-TM-RESP event.
func (c *Client) BSSTMReq(ctx context.Context, r BSSTMRequest) error {
	cmd, err := r.Command()
	if err != nil {
		return fmt.Errorf("hostapd %s: %w", c.ifname, err)
	}
	return c.expectOK(ctx, cmd)
}

// ReqBeacon sends an 802.11k beacon measurement request (REQ_BEACON <addr> [req_mode=XX]
// <request hex>) and returns hostapd's dialog token; reports arrive as BEACON-RESP-RX events.
func (c *Client) ReqBeacon(ctx context.Context, addr net.HardwareAddr, reqMode byte, request []byte) (int, error) {
	if len(addr) != 6 {
		return 0, fmt.Errorf("hostapd %s: REQ_BEACON: addr: need a MAC address", c.ifname)
	}
	if len(request) == 0 {
		return 0, fmt.Errorf("hostapd %s: REQ_BEACON: request: empty", c.ifname)
	}
	cmd := fmt.Sprintf("REQ_BEACON %s ", addr)
	if reqMode != 0 {
		cmd += fmt.Sprintf("req_mode=%02x ", reqMode)
	}
	reply, err := c.Request(ctx, cmd+hex.EncodeToString(request))
	if err != nil {
		return 0, err
	}
	tok, err := strconv.Atoi(strings.TrimSpace(reply))
	if err != nil {
		return 0, fmt.Errorf("hostapd %s: REQ_BEACON: reply %q is not a token", c.ifname, firstLine(reply))
	}
	return tok, nil
}

// BeaconRequest builds the measurement-request body of a beacon request (IEEE 802.11-2020
// 9.4.2.20.7): operating class, channel (0 = all in the class, 255 = the AP channel report),
// randomization interval, duration (TU), mode (0 passive, 1 active, 2 table), BSSID filter.
func BeaconRequest(opClass, channel uint8, duration uint16, mode uint8, bssid net.HardwareAddr) []byte {
	b := make([]byte, 13)
	b[0], b[1] = opClass, channel
	binary.LittleEndian.PutUint16(b[2:], 0)
	binary.LittleEndian.PutUint16(b[4:], duration)
	b[6] = mode
	if len(bssid) == 6 {
		copy(b[7:], bssid)
	} else {
		copy(b[7:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	}
	return b
}

// Disassociate sends a disassociation frame to a station (DISASSOCIATE <addr> reason=<n>).
func (c *Client) Disassociate(ctx context.Context, addr net.HardwareAddr, reason int) error {
	return c.expectOK(ctx, fmt.Sprintf("DISASSOCIATE %s reason=%d", addr, reason))
}

// Deauthenticate deauthenticates a station (DEAUTHENTICATE <addr> reason=<n>).
func (c *Client) Deauthenticate(ctx context.Context, addr net.HardwareAddr, reason int) error {
	return c.expectOK(ctx, fmt.Sprintf("DEAUTHENTICATE %s reason=%d", addr, reason))
}
