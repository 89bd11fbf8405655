package meshproto

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"time"
	"unicode/utf8"
)

// Mesh roaming and backhaul messages (100-199). The set follows IEEE 1905.1 and Wi-Fi EasyMesh
// where a counterpart exists (its message type, as prplMesh numbers it, is given with each);
// the bodies are JSON like the rest of the control plane, not 1905 TLVs.
const (
	// TypeHello is a node's periodic announcement on every LAN and backhaul link (1905 Topology
	// Discovery, 0x0000): who it is, whether it is the controller, its path to the gateway.
	TypeHello Type = 100
	// TypeTopology is a node's BSSes and links, sent to the controller when they change and
	// periodically (1905 Topology Response/Notification, 0x0003/0x0001).
	TypeTopology Type = 101
	// TypeAPMetrics carries per-BSS load and the associated stations' link metrics (EasyMesh AP
	// Metrics Response 0x800c with Associated STA Link Metrics, 0x800e).
	TypeAPMetrics Type = 102
	// TypeClientEvent is a station joining or leaving a BSS (1905 Topology Notification with
	// the Client Association Event TLV).
	TypeClientEvent Type = 103
	// TypeBeaconQuery asks a node for an 802.11k beacon report from one of its stations
	// (EasyMesh Beacon Metrics Query, 0x8011).
	TypeBeaconQuery Type = 104
	// TypeBeaconMetrics is the station's answer (EasyMesh Beacon Metrics Response, 0x8012).
	TypeBeaconMetrics Type = 105
	// TypeSteer asks a node to steer a station with an 802.11v BSS transition request (EasyMesh
	// Client Steering Request, 0x8014).
	TypeSteer Type = 106
	// TypeBTMReport is the station's BSS transition response (EasyMesh Client Steering BTM
	// Report, 0x8015).
	TypeBTMReport Type = 107
	// TypeAssocControl blocks or unblocks stations on BSSes for a while, optionally
	// deauthenticating them (EasyMesh Client Association Control Request, 0x8016).
	TypeAssocControl Type = 108
	// TypeSteerDone ends a steering request (EasyMesh Steering Completed, 0x8017).
	TypeSteerDone Type = 109
	// TypeBackhaulSteer tells a node which parent and link to use for its backhaul (EasyMesh
	// Backhaul Steering Request, 0x8019).
	TypeBackhaulSteer Type = 110
	// TypeBackhaulResult answers it (EasyMesh Backhaul Steering Response, 0x801a).
	TypeBackhaulResult Type = 111
	// TypeNeighbors is the controller's list of the site's BSSes (each node keeps its 802.11k
	// neighbour reports from it) and the steering policy (like EasyMesh's Multi-AP Policy
	// Config Request, 0x8003).
	TypeNeighbors Type = 112
	// TypeAck acknowledges a command by its ID (1905 ACK, 0x8000).
	TypeAck Type = 113
)

var roamingNames = map[Type]string{
	TypeHello: "hello", TypeTopology: "topology", TypeAPMetrics: "ap-metrics", TypeClientEvent: "client-event",
	TypeBeaconQuery: "beacon-query", TypeBeaconMetrics: "beacon-metrics", TypeSteer: "steer",
	TypeBTMReport: "btm-report", TypeAssocControl: "assoc-control", TypeSteerDone: "steer-done",
	TypeBackhaulSteer: "backhaul-steer", TypeBackhaulResult: "backhaul-result", TypeNeighbors: "neighbors",
	TypeAck: "ack",
}

// Limits on what a message may carry (a decoded message over them is refused).
const (
	MaxBSSes        = 64
	MaxStations     = 512
	MaxMeasurements = 64
	MaxLinks        = 32
	MaxTargets      = 8
	maxName         = 64
	maxText         = 256
)

// MAC is a 48-bit address that travels as "aa:bb:cc:dd:ee:ff".
type MAC [6]byte

// ParseMAC parses a colon-separated 48-bit address.
func ParseMAC(s string) (MAC, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return MAC{}, fmt.Errorf("%q is not a 48-bit MAC address", truncateText(s))
	}
	return MAC(hw), nil
}

// MACFrom converts a net.HardwareAddr (which must be 6 bytes).
func MACFrom(hw net.HardwareAddr) (MAC, bool) {
	if len(hw) != 6 {
		return MAC{}, false
	}
	return MAC(hw), true
}

// HW returns the address as a net.HardwareAddr.
func (m MAC) HW() net.HardwareAddr { return net.HardwareAddr(m[:]) }

// IsZero reports the all-zero address.
func (m MAC) IsZero() bool { return m == MAC{} }

func (m MAC) String() string { return m.HW().String() }

// MarshalText writes the colon form.
func (m MAC) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText accepts only the colon form of a 48-bit address.
func (m *MAC) UnmarshalText(b []byte) error {
	if len(b) != 17 || b[2] != ':' || b[5] != ':' || b[8] != ':' || b[11] != ':' || b[14] != ':' {
		return fmt.Errorf("%q is not a 48-bit MAC address aa:bb:cc:dd:ee:ff", truncateText(string(b)))
	}
	v, err := ParseMAC(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

func truncateText(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}

// FieldError names the field of a message body that is wrong.
type FieldError struct {
	Type  Type
	Field string
	Msg   string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("meshproto: %s: %s: %s", e.Type, e.Field, e.Msg)
}

// ErrInvalid is wrapped by every validation error (errors.Is).
var ErrInvalid = errors.New("invalid control message body")

func (e *FieldError) Unwrap() error { return ErrInvalid }

// Validator is a message body that can check itself.
type Validator interface {
	Validate() error
}

// DecodeValid unmarshals the payload into v, checks that the message type is the one v is for,
// and validates it. Nothing from the network reaches the roaming code without this.
func DecodeValid[T any, PT interface {
	*T
	Validator
}](m Message, want Type) (T, error) {
	var v T
	if m.Type != want {
		return v, fmt.Errorf("meshproto: message is %s; want %s", m.Type, want)
	}
	if err := m.Decode(PT(&v)); err != nil {
		return v, err
	}
	if err := PT(&v).Validate(); err != nil {
		return v, err
	}
	return v, nil
}

// checker collects the first field error of a body.
type checker struct {
	t   Type
	err error
}

func (c *checker) fail(field, format string, args ...any) {
	if c.err == nil {
		c.err = &FieldError{Type: c.t, Field: field, Msg: fmt.Sprintf(format, args...)}
	}
}

func (c *checker) name(field, s string, required bool) {
	switch {
	case s == "" && required:
		c.fail(field, "empty")
	case len(s) > maxName:
		c.fail(field, "%d bytes; at most %d", len(s), maxName)
	case !printable(s):
		c.fail(field, "not printable UTF-8")
	}
}

func (c *checker) text(field, s string) {
	if len(s) > maxText {
		c.fail(field, "%d bytes; at most %d", len(s), maxText)
	} else if !utf8.ValidString(s) {
		c.fail(field, "not UTF-8")
	}
}

func (c *checker) mac(field string, m MAC) {
	if m.IsZero() {
		c.fail(field, "missing")
	}
}

func (c *checker) rangeInt(field string, v, lo, hi int) {
	if v < lo || v > hi {
		c.fail(field, "%d out of %d..%d", v, lo, hi)
	}
}

func (c *checker) rangeFloat(field string, v, lo, hi float64) {
	if !(v >= lo && v <= hi) { // also refuses NaN
		c.fail(field, "%v out of %v..%v", v, lo, hi)
	}
}

func (c *checker) count(field string, n, max int) {
	if n > max {
		c.fail(field, "%d entries; at most %d", n, max)
	}
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// Band names a Wi-Fi band in messages.
const (
	Band2G4 = "2.4GHz"
	Band5G  = "5GHz"
	Band6G  = "6GHz"
)

func validBand(b string) bool { return b == Band2G4 || b == Band5G || b == Band6G }

// BandOfFreq returns the band of a channel's frequency ("" when none).
func BandOfFreq(freq int) string {
	switch {
	case freq >= 2400 && freq < 2500:
		return Band2G4
	case freq >= 5150 && freq < 5925:
		return Band5G
	case freq >= 5925 && freq <= 7125:
		return Band6G
	}
	return ""
}

// Backhaul media.
const (
	MediumWired    = "wired"
	MediumWireless = "wireless"
)

// BackhaulState is a node's current path to the gateway.
type BackhaulState struct {
	// Parent is the next node towards the gateway ("" on the gateway itself or when the node
	// has no backhaul).
	Parent string `json:"parent,omitempty"`
	// Link is the local interface the parent is reached over, Medium its kind.
	Link   string `json:"link,omitempty"`
	Medium string `json:"medium,omitempty"`
	// PathMbps is the end-to-end throughput estimate to the gateway (the gateway itself
	// advertises its WAN-side cap), Hops the number of backhaul hops.
	PathMbps float64 `json:"path_mbps"`
	Hops     int     `json:"hops"`
}

func (b BackhaulState) check(c *checker, f string) {
	c.name(f+".parent", b.Parent, false)
	c.name(f+".link", b.Link, false)
	if b.Medium != "" && b.Medium != MediumWired && b.Medium != MediumWireless {
		c.fail(f+".medium", "%q is not wired or wireless", truncateText(b.Medium))
	}
	c.rangeFloat(f+".path_mbps", b.PathMbps, 0, 1e6)
	c.rangeInt(f+".hops", b.Hops, 0, 16)
}

// Hello is a node's periodic announcement (TypeHello). Sent on every link; the receiver learns
// the sender's control address from the datagram's source.
type Hello struct {
	Node string `json:"node"`
	// Controller is set by the gateway (the node with the WAN), which runs the controller.
	Controller bool `json:"controller,omitempty"`
	// Link is the sender's interface the hello left on (a wired port or a mesh interface).
	Link     string        `json:"link,omitempty"`
	Medium   string        `json:"medium,omitempty"`
	Backhaul BackhaulState `json:"backhaul"`
	// IntervalMs is the sender's hello period: a neighbour is lost after 3 missed.
	IntervalMs int `json:"interval_ms"`
}

// Validate checks the fields.
func (h *Hello) Validate() error {
	c := &checker{t: TypeHello}
	c.name("node", h.Node, true)
	c.name("link", h.Link, false)
	if h.Medium != "" && h.Medium != MediumWired && h.Medium != MediumWireless {
		c.fail("medium", "%q is not wired or wireless", truncateText(h.Medium))
	}
	h.Backhaul.check(c, "backhaul")
	c.rangeInt("interval_ms", h.IntervalMs, 10, 60000)
	return c.err
}

// BSSInfo describes one of the site's BSSes: enough for an 802.11k neighbour report entry and
// a BSS transition candidate.
type BSSInfo struct {
	BSSID MAC    `json:"bssid"`
	SSID  string `json:"ssid"`
	Node  string `json:"node"`
	Radio string `json:"radio,omitempty"`
	Band  string `json:"band"`
	// Freq is the primary channel's frequency, Width the channel width (MHz); Channel its number; OpClass the global operating
	// class (802.11 Annex E); PHYType the dot11PHYType; BSSIDInfo the neighbour report's BSSID
	// information field.
	Freq      int    `json:"freq"`
	Width     int    `json:"width,omitempty"`
	Channel   int    `json:"channel"`
	OpClass   int    `json:"op_class"`
	PHYType   int    `json:"phy_type"`
	BSSIDInfo uint32 `json:"bssid_info"`
	// MobilityDomain is the 802.11r mobility domain (4 hex digits) when FT is on.
	MobilityDomain string `json:"mdid,omitempty"`
}

func (b BSSInfo) check(c *checker, f string) {
	c.mac(f+".bssid", b.BSSID)
	if n := len(b.SSID); n < 1 || n > 32 {
		c.fail(f+".ssid", "%d bytes; must be 1..32", n)
	}
	c.name(f+".node", b.Node, true)
	c.name(f+".radio", b.Radio, false)
	if !validBand(b.Band) {
		c.fail(f+".band", "%q is not a band", truncateText(b.Band))
	}
	c.rangeInt(f+".freq", b.Freq, 2400, 7125)
	switch b.Width {
	case 0, 20, 40, 80, 160, 320:
	default:
		c.fail(f+".width", "%d MHz is not a channel width", b.Width)
	}
	c.rangeInt(f+".channel", b.Channel, 1, 233)
	c.rangeInt(f+".op_class", b.OpClass, 1, 255)
	c.rangeInt(f+".phy_type", b.PHYType, 0, 255)
	if b.MobilityDomain != "" {
		if d, err := hex.DecodeString(b.MobilityDomain); err != nil || len(d) != 2 {
			c.fail(f+".mdid", "%q is not 4 hex digits", truncateText(b.MobilityDomain))
		}
	}
}

// LinkInfo is one of a node's backhaul links to another node.
type LinkInfo struct {
	Peer   string `json:"peer"`
	Link   string `json:"link"`
	Medium string `json:"medium"`
	// Mbps is the link's throughput estimate; Signal the peer's signal (wireless, dBm).
	Mbps   float64 `json:"mbps"`
	Signal int     `json:"signal,omitempty"`
	Up     bool    `json:"up"`
	// PeerPathMbps is the peer's advertised path throughput to the gateway.
	PeerPathMbps float64 `json:"peer_path_mbps"`
}

func (l LinkInfo) check(c *checker, f string) {
	c.name(f+".peer", l.Peer, true)
	c.name(f+".link", l.Link, true)
	if l.Medium != MediumWired && l.Medium != MediumWireless {
		c.fail(f+".medium", "%q is not wired or wireless", truncateText(l.Medium))
	}
	c.rangeFloat(f+".mbps", l.Mbps, 0, 1e6)
	c.rangeFloat(f+".peer_path_mbps", l.PeerPathMbps, 0, 1e6)
	c.rangeInt(f+".signal", l.Signal, -128, 0)
}

// Topology is a node's view of itself (TypeTopology).
type Topology struct {
	Node     string        `json:"node"`
	BSSes    []BSSInfo     `json:"bsses"`
	Links    []LinkInfo    `json:"links,omitempty"`
	Backhaul BackhaulState `json:"backhaul"`
}

// Validate checks the fields.
func (t *Topology) Validate() error {
	c := &checker{t: TypeTopology}
	c.name("node", t.Node, true)
	c.count("bsses", len(t.BSSes), MaxBSSes)
	c.count("links", len(t.Links), MaxLinks)
	for i, b := range t.BSSes {
		b.check(c, fmt.Sprintf("bsses[%d]", i))
		if b.Node != t.Node {
			c.fail(fmt.Sprintf("bsses[%d].node", i), "%q in %q's topology", truncateText(b.Node), t.Node)
		}
	}
	for i, l := range t.Links {
		l.check(c, fmt.Sprintf("links[%d]", i))
	}
	t.Backhaul.check(c, "backhaul")
	return c.err
}

// Capabilities are what a station advertised or was seen to do.
type Capabilities struct {
	// BTM: 802.11v BSS transition management (extended capabilities bit 19).
	BTM bool `json:"btm,omitempty"`
	// RRM beacon report modes the station supports (802.11k): passive, active, table.
	BeaconPassive bool `json:"bcn_passive,omitempty"`
	BeaconActive  bool `json:"bcn_active,omitempty"`
	BeaconTable   bool `json:"bcn_table,omitempty"`
	// FT: the station associated with 802.11r fast transition.
	FT bool `json:"ft,omitempty"`
	// Bands the station was seen on (probe requests or associations) or advertised.
	Bands []string `json:"bands,omitempty"`
}

func (cp Capabilities) check(c *checker, f string) {
	c.count(f+".bands", len(cp.Bands), 3)
	for i, b := range cp.Bands {
		if !validBand(b) {
			c.fail(fmt.Sprintf("%s.bands[%d]", f, i), "%q is not a band", truncateText(b))
		}
	}
}

// StationMetrics is one associated station's link (EasyMesh Associated STA Link Metrics).
type StationMetrics struct {
	MAC   MAC `json:"mac"`
	BSSID MAC `json:"bssid"`
	// Signal is the last uplink signal (dBm), SignalAvg the average.
	Signal    int `json:"signal"`
	SignalAvg int `json:"signal_avg,omitempty"`
	// TxKbps / RxKbps are the last data rates (AP → station and station → AP).
	TxKbps int `json:"tx_kbps,omitempty"`
	RxKbps int `json:"rx_kbps,omitempty"`
	// IdleMs is the time since the last frame from the station.
	IdleMs       int          `json:"idle_ms,omitempty"`
	ConnectedSec int          `json:"connected_s,omitempty"`
	Caps         Capabilities `json:"caps"`
}

func (s StationMetrics) check(c *checker, f string) {
	c.mac(f+".mac", s.MAC)
	c.mac(f+".bssid", s.BSSID)
	c.rangeInt(f+".signal", s.Signal, -128, 0)
	c.rangeInt(f+".signal_avg", s.SignalAvg, -128, 0)
	c.rangeInt(f+".tx_kbps", s.TxKbps, 0, 100_000_000)
	c.rangeInt(f+".rx_kbps", s.RxKbps, 0, 100_000_000)
	c.rangeInt(f+".idle_ms", s.IdleMs, 0, 1<<30)
	c.rangeInt(f+".connected_s", s.ConnectedSec, 0, 1<<30)
	s.Caps.check(c, f+".caps")
}

// BSSMetrics is one BSS's load and stations.
type BSSMetrics struct {
	BSSID MAC `json:"bssid"`
	// Utilization is the channel busy share 0..255 (BSS Load element scale).
	Utilization int              `json:"utilization"`
	Stations    []StationMetrics `json:"stations"`
}

// APMetrics is a node's periodic report of its BSSes (TypeAPMetrics).
type APMetrics struct {
	Node  string       `json:"node"`
	At    time.Time    `json:"at"`
	BSSes []BSSMetrics `json:"bsses"`
}

// Validate checks the fields.
func (a *APMetrics) Validate() error {
	c := &checker{t: TypeAPMetrics}
	c.name("node", a.Node, true)
	c.count("bsses", len(a.BSSes), MaxBSSes)
	n := 0
	for i, b := range a.BSSes {
		f := fmt.Sprintf("bsses[%d]", i)
		c.mac(f+".bssid", b.BSSID)
		c.rangeInt(f+".utilization", b.Utilization, 0, 255)
		n += len(b.Stations)
		c.count(f+".stations", n, MaxStations)
		for j, s := range b.Stations {
			s.check(c, fmt.Sprintf("%s.stations[%d]", f, j))
			if s.BSSID != b.BSSID {
				c.fail(fmt.Sprintf("%s.stations[%d].bssid", f, j), "%s under BSS %s", s.BSSID, b.BSSID)
			}
		}
	}
	return c.err
}

// ClientEvent is a station joining or leaving one of the node's BSSes (TypeClientEvent).
type ClientEvent struct {
	Node   string `json:"node"`
	BSSID  MAC    `json:"bssid"`
	MAC    MAC    `json:"mac"`
	Joined bool   `json:"joined"`
	// Station is the station's link when it joined.
	Station *StationMetrics `json:"station,omitempty"`
	At      time.Time       `json:"at"`
}

// Validate checks the fields.
func (e *ClientEvent) Validate() error {
	c := &checker{t: TypeClientEvent}
	c.name("node", e.Node, true)
	c.mac("bssid", e.BSSID)
	c.mac("mac", e.MAC)
	if e.Station != nil {
		e.Station.check(c, "station")
		if e.Station.MAC != e.MAC {
			c.fail("station.mac", "%s for event of %s", e.Station.MAC, e.MAC)
		}
	}
	return c.err
}

// Beacon measurement modes (802.11k).
const (
	BeaconPassive = "passive"
	BeaconActive  = "active"
	BeaconTable   = "table"
)

// ChannelRef is an operating class and channel.
type ChannelRef struct {
	OpClass int `json:"op_class"`
	Channel int `json:"channel"`
}

// BeaconQuery asks the node serving MAC on BSSID for a beacon report (TypeBeaconQuery).
type BeaconQuery struct {
	ID    uint64 `json:"id"`
	BSSID MAC    `json:"bssid"`
	MAC   MAC    `json:"mac"`
	// Mode is passive, active or table; Channels the channels to measure (one request each;
	// empty with table); DurationTU the measurement duration per channel.
	Mode       string       `json:"mode"`
	Channels   []ChannelRef `json:"channels,omitempty"`
	DurationTU int          `json:"duration_tu,omitempty"`
	SSID       string       `json:"ssid,omitempty"`
}

// Validate checks the fields.
func (q *BeaconQuery) Validate() error {
	c := &checker{t: TypeBeaconQuery}
	if q.ID == 0 {
		c.fail("id", "zero")
	}
	c.mac("bssid", q.BSSID)
	c.mac("mac", q.MAC)
	switch q.Mode {
	case BeaconPassive, BeaconActive, BeaconTable:
	default:
		c.fail("mode", "%q is not passive, active or table", truncateText(q.Mode))
	}
	c.count("channels", len(q.Channels), 16)
	for i, ch := range q.Channels {
		c.rangeInt(fmt.Sprintf("channels[%d].op_class", i), ch.OpClass, 1, 255)
		c.rangeInt(fmt.Sprintf("channels[%d].channel", i), ch.Channel, 0, 255)
	}
	c.rangeInt("duration_tu", q.DurationTU, 0, 1000)
	if len(q.SSID) > 32 {
		c.fail("ssid", "%d bytes; at most 32", len(q.SSID))
	}
	return c.err
}

// BeaconMeasurement is one BSS a station measured.
type BeaconMeasurement struct {
	BSSID   MAC `json:"bssid"`
	OpClass int `json:"op_class"`
	Channel int `json:"channel"`
	// RCPI is the received channel power indicator (0..220: dBm = RCPI/2 - 110).
	RCPI int `json:"rcpi"`
	RSNI int `json:"rsni,omitempty"`
}

// Signal converts the RCPI to dBm.
func (b BeaconMeasurement) Signal() float64 { return float64(b.RCPI)/2 - 110 }

// BeaconMetrics is a station's beacon report, relayed by its node (TypeBeaconMetrics).
type BeaconMetrics struct {
	Query  uint64              `json:"query"`
	Node   string              `json:"node"`
	MAC    MAC                 `json:"mac"`
	Report []BeaconMeasurement `json:"report"`
	// Error is set when the request could not be made or the station refused it.
	Error string `json:"error,omitempty"`
}

// Validate checks the fields.
func (b *BeaconMetrics) Validate() error {
	c := &checker{t: TypeBeaconMetrics}
	c.name("node", b.Node, true)
	c.mac("mac", b.MAC)
	c.count("report", len(b.Report), MaxMeasurements)
	for i, m := range b.Report {
		f := fmt.Sprintf("report[%d]", i)
		c.mac(f+".bssid", m.BSSID)
		c.rangeInt(f+".op_class", m.OpClass, 0, 255)
		c.rangeInt(f+".channel", m.Channel, 0, 255)
		c.rangeInt(f+".rcpi", m.RCPI, 0, 220)
		c.rangeInt(f+".rsni", m.RSNI, 0, 255)
	}
	c.text("error", b.Error)
	return c.err
}

// SteerTarget is a BSS transition candidate.
type SteerTarget struct {
	BSS BSSInfo `json:"bss"`
	// Preference is the candidate preference (1..255, higher is better).
	Preference int `json:"pref"`
}

// Steer asks the node serving MAC on BSSID to send a BSS transition request (TypeSteer).
type Steer struct {
	ID      uint64        `json:"id"`
	BSSID   MAC           `json:"bssid"`
	MAC     MAC           `json:"mac"`
	Targets []SteerTarget `json:"targets"`
	// DisassocImminent sets the disassociation-imminent bit; DisassocTimer is in TBTTs
	// (beacon intervals) until the AP disassociates the station itself.
	DisassocImminent bool `json:"disassoc_imminent,omitempty"`
	DisassocTimer    int  `json:"disassoc_timer,omitempty"`
	// ValidityTBTT is the candidate list's validity.
	ValidityTBTT int `json:"validity"`
	// Abridged gives every BSS not listed preference 0.
	Abridged bool `json:"abridged,omitempty"`
	// Reason says why (for the logs): "signal", "band", "load", "kick".
	Reason string `json:"reason,omitempty"`
}

// Validate checks the fields.
func (s *Steer) Validate() error {
	c := &checker{t: TypeSteer}
	if s.ID == 0 {
		c.fail("id", "zero")
	}
	c.mac("bssid", s.BSSID)
	c.mac("mac", s.MAC)
	if len(s.Targets) == 0 {
		c.fail("targets", "empty")
	}
	c.count("targets", len(s.Targets), MaxTargets)
	for i, t := range s.Targets {
		f := fmt.Sprintf("targets[%d]", i)
		t.BSS.check(c, f+".bss")
		c.rangeInt(f+".pref", t.Preference, 1, 255)
	}
	c.rangeInt("disassoc_timer", s.DisassocTimer, 0, 65535)
	c.rangeInt("validity", s.ValidityTBTT, 1, 255)
	c.name("reason", s.Reason, false)
	return c.err
}

// BTMReport is a station's BSS transition response (TypeBTMReport). TimedOut is set when the
// station did not answer within the validity interval.
type BTMReport struct {
	Steer    uint64 `json:"steer"`
	Node     string `json:"node"`
	MAC      MAC    `json:"mac"`
	BSSID    MAC    `json:"bssid"`
	Status   int    `json:"status"`
	Target   MAC    `json:"target,omitzero"`
	TimedOut bool   `json:"timed_out,omitempty"`
}

// Validate checks the fields.
func (r *BTMReport) Validate() error {
	c := &checker{t: TypeBTMReport}
	c.name("node", r.Node, true)
	c.mac("mac", r.MAC)
	c.mac("bssid", r.BSSID)
	c.rangeInt("status", r.Status, 0, 255)
	return c.err
}

// AssocControl blocks (or unblocks) a station on some of the node's BSSes (TypeAssocControl).
// A block ends by itself after ValiditySec on the node, controller or not.
type AssocControl struct {
	ID     uint64 `json:"id"`
	MAC    MAC    `json:"mac"`
	BSSIDs []MAC  `json:"bssids"`
	Block  bool   `json:"block"`
	// ValiditySec is how long a block lasts (1..3600).
	ValiditySec int `json:"validity_s,omitempty"`
	// Deauth deauthenticates the station from these BSSes now (usteer's kick), with Reason.
	Deauth bool `json:"deauth,omitempty"`
	Reason int  `json:"reason,omitempty"`
}

// Validate checks the fields.
func (a *AssocControl) Validate() error {
	c := &checker{t: TypeAssocControl}
	if a.ID == 0 {
		c.fail("id", "zero")
	}
	c.mac("mac", a.MAC)
	if len(a.BSSIDs) == 0 {
		c.fail("bssids", "empty")
	}
	c.count("bssids", len(a.BSSIDs), MaxBSSes)
	for i, b := range a.BSSIDs {
		c.mac(fmt.Sprintf("bssids[%d]", i), b)
	}
	if a.Block {
		c.rangeInt("validity_s", a.ValiditySec, 1, 3600)
	}
	c.rangeInt("reason", a.Reason, 0, 65535)
	return c.err
}

// SteerDone ends a steering request on the node (TypeSteerDone): the station left for the
// target (OK), or the request failed.
type SteerDone struct {
	Steer  uint64 `json:"steer"`
	Node   string `json:"node"`
	MAC    MAC    `json:"mac"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// Validate checks the fields.
func (s *SteerDone) Validate() error {
	c := &checker{t: TypeSteerDone}
	c.name("node", s.Node, true)
	c.mac("mac", s.MAC)
	c.text("detail", s.Detail)
	return c.err
}

// BackhaulSteer tells Node to reach the gateway through Parent over Link (TypeBackhaulSteer).
type BackhaulSteer struct {
	ID     uint64 `json:"id"`
	Node   string `json:"node"`
	Parent string `json:"parent"`
	Link   string `json:"link"`
	Medium string `json:"medium"`
}

// Validate checks the fields.
func (b *BackhaulSteer) Validate() error {
	c := &checker{t: TypeBackhaulSteer}
	if b.ID == 0 {
		c.fail("id", "zero")
	}
	c.name("node", b.Node, true)
	c.name("parent", b.Parent, true)
	c.name("link", b.Link, true)
	if b.Medium != MediumWired && b.Medium != MediumWireless {
		c.fail("medium", "%q is not wired or wireless", truncateText(b.Medium))
	}
	return c.err
}

// BackhaulResult answers a BackhaulSteer (TypeBackhaulResult).
type BackhaulResult struct {
	ID       uint64        `json:"id"`
	Node     string        `json:"node"`
	OK       bool          `json:"ok"`
	Backhaul BackhaulState `json:"backhaul"`
	Error    string        `json:"error,omitempty"`
}

// Validate checks the fields.
func (b *BackhaulResult) Validate() error {
	c := &checker{t: TypeBackhaulResult}
	c.name("node", b.Node, true)
	b.Backhaul.check(c, "backhaul")
	c.text("error", b.Error)
	return c.err
}

// Neighbors is the controller's list of the site's BSSes (TypeNeighbors): every node keeps
// one 802.11k neighbour report entry per BSS of the other nodes (and its own other radios).
// Version increases with every change; nodes ignore older lists.
type Neighbors struct {
	Version uint64    `json:"version"`
	BSSes   []BSSInfo `json:"bsses"`
}

// Validate checks the fields.
func (n *Neighbors) Validate() error {
	c := &checker{t: TypeNeighbors}
	if n.Version == 0 {
		c.fail("version", "zero")
	}
	c.count("bsses", len(n.BSSes), MaxBSSes)
	seen := map[MAC]bool{}
	for i, b := range n.BSSes {
		f := fmt.Sprintf("bsses[%d]", i)
		b.check(c, f)
		if seen[b.BSSID] {
			c.fail(f+".bssid", "%s listed twice", b.BSSID)
		}
		seen[b.BSSID] = true
	}
	return c.err
}

// Ack acknowledges a command (TypeAck).
type Ack struct {
	Of Type   `json:"of"`
	ID uint64 `json:"id"`
	// Error is set when the command was refused.
	Error string `json:"error,omitempty"`
}

// Validate checks the fields.
func (a *Ack) Validate() error {
	c := &checker{t: TypeAck}
	if _, ok := roamingNames[a.Of]; !ok && a.Of != TypeChannelPlan {
		c.fail("of", "%d is not a command type", a.Of)
	}
	if a.ID == 0 {
		c.fail("id", "zero")
	}
	c.text("error", a.Error)
	return c.err
}
