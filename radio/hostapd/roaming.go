package hostapd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
)

// DenyACL adds a station to (add) or removes it from hostapd's deny list (DENY_ACL ADD_MAC /
// DEL_MAC, with the default macaddr_acl=0). Adding a station that is associated disconnects
// it; while listed, its authentications are refused. The mesh uses it for short per-node
// blocks when it kicks a client that ignores 802.11v.
func (c *Client) DenyACL(ctx context.Context, add bool, addr net.HardwareAddr) error {
	if len(addr) != 6 {
		return fmt.Errorf("hostapd %s: DENY_ACL: addr: need a MAC address", c.ifname)
	}
	op := "DEL_MAC"
	if add {
		op = "ADD_MAC"
	}
	return c.expectOK(ctx, fmt.Sprintf("DENY_ACL %s %s", op, addr))
}

// DenyACLClear empties the deny list.
func (c *Client) DenyACLClear(ctx context.Context) error {
	return c.expectOK(ctx, "DENY_ACL CLEAR")
}

// BeaconReportEntry is one Beacon report (IEEE 802.11-2020 9.4.2.21.7) as BEACON-RESP-RX
// carries it: what the station measured of one BSS.
type BeaconReportEntry struct {
	OpClass, Channel int
	// StartTime is the measurement start (the station's TSF), DurationTU its duration.
	StartTime  uint64
	DurationTU int
	// FrameInfo is the reported frame information (PHY type and frame type).
	FrameInfo byte
	// RCPI is the received channel power indicator (255: not available); RSNI the received
	// signal-to-noise indicator.
	RCPI, RSNI int
	BSSID      net.HardwareAddr
	AntennaID  int
	ParentTSF  uint32
	// Subelements are left undecoded.
	Subelements []byte
}

// Signal converts the RCPI to dBm (RCPI = 2 × (dBm + 110)); ok is false when the station gave
// none.
func (e BeaconReportEntry) Signal() (float64, bool) {
	if e.RCPI > 220 {
		return 0, false
	}
	return float64(e.RCPI)/2 - 110, true
}

// ErrBadBeaconReport is returned for reports too short for their fixed fields.
var ErrBadBeaconReport = errors.New("malformed beacon report")

// ParseBeaconReportEntry decodes the report of a BEACON-RESP-RX event (BeaconReport.Report).
func ParseBeaconReportEntry(b []byte) (BeaconReportEntry, error) {
	const fixed = 26
	if len(b) < fixed {
		return BeaconReportEntry{}, fmt.Errorf("%w: %d bytes; need %d", ErrBadBeaconReport, len(b), fixed)
	}
	e := BeaconReportEntry{
		OpClass:    int(b[0]),
		Channel:    int(b[1]),
		StartTime:  binary.LittleEndian.Uint64(b[2:]),
		DurationTU: int(binary.LittleEndian.Uint16(b[10:])),
		FrameInfo:  b[12],
		RCPI:       int(b[13]),
		RSNI:       int(b[14]),
		BSSID:      append(net.HardwareAddr(nil), b[15:21]...),
		AntennaID:  int(b[21]),
		ParentTSF:  binary.LittleEndian.Uint32(b[22:]),
	}
	if len(b) > fixed {
		e.Subelements = append([]byte(nil), b[fixed:]...)
	}
	return e, nil
}

// Beacon request modes (the measurement mode field of a beacon request).
const (
	BeaconModePassive = 0
	BeaconModeActive  = 1
	BeaconModeTable   = 2
)

// AKM returns the AKM suite type the station associated with (hostapd's AKMSuiteSelector, e.g.
// "00-0f-ac-4" gives 4, FT-PSK); ok is false for open stations and older hostapd.
func (s Station) AKM() (int, bool) {
	v, ok := s.Raw["AKMSuiteSelector"]
	if !ok {
		return 0, false
	}
	var o1, o2, o3, t int
	if n, err := fmt.Sscanf(v, "%x-%x-%x-%d", &o1, &o2, &o3, &t); n != 4 || err != nil {
		return 0, false
	}
	return t, true
}

// FT reports whether the station associated with an 802.11r fast transition AKM (FT-802.1X,
// FT-PSK, FT-SAE, FT-802.1X-SHA384, FT-FILS).
func (s Station) FT() bool {
	t, ok := s.AKM()
	if !ok {
		return false
	}
	switch t {
	case 3, 4, 9, 13, 16, 17, 25:
		return true
	}
	return false
}
