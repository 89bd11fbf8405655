package vpnlog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Log names one of the two logs (they go to different log groups).
type Log string

// The two logs.
const (
	LogBGP    Log = "bgp"    // the tunnel BGP log (BgpLogGroupArn)
	LogTunnel Log = "tunnel" // the tunnel activity log (LogGroupArn)
)

// Record is a BGPRecord or a TunnelRecord.
type Record interface {
	// Log is the log the record belongs to.
	Log() Log
	// Stream is the log stream: the VPN connection and the tunnel's outside address.
	Stream() string
	// EventTime is when the event happened.
	EventTime() time.Time
	json.Marshaler
	// scrub returns a copy with every text field passed through f (Redactor).
	scrub(f func(string) string) Record
}

// TimestampLayout is the human-readable "timestamp" field, always UTC with milliseconds.
const TimestampLayout = "2006-01-02 15:04:05.000Z"

// ResourceID is AWS's resource_id and log stream name for one tunnel of a VPN connection:
// "<vpn connection id>_<tunnel outside address>", e.g. "vpn-1234abcd_1.2.3.4".
func ResourceID(connectionID string, outside netip.Addr) string {
	if !outside.IsValid() {
		return connectionID
	}
	return connectionID + "_" + outside.Unmap().String()
}

// stamp truncates t to the millisecond in UTC, the precision the records carry.
func stamp(t time.Time) time.Time { return time.UnixMilli(t.UnixMilli()).UTC() }

// BGPType is a BGP record's "type".
type BGPType string

// BGP record types.
const (
	BGPStatus   BGPType = "BGPStatus"
	RouteStatus BGPType = "RouteStatus"
)

// Status is a BGP record's "status".
type Status string

// Statuses: UP and DOWN for BGPStatus; ADVERTISED (a new route from the peer), UPDATED (an
// existing route changed) and WITHDRAWN for RouteStatus.
const (
	StatusUp         Status = "UP"
	StatusDown       Status = "DOWN"
	StatusAdvertised Status = "ADVERTISED"
	StatusUpdated    Status = "UPDATED"
	StatusWithdrawn  Status = "WITHDRAWN"
)

func (s Status) validFor(t BGPType) bool {
	switch t {
	case BGPStatus:
		return s == StatusUp || s == StatusDown
	case RouteStatus:
		return s == StatusAdvertised || s == StatusUpdated || s == StatusWithdrawn
	}
	return false
}

// Route is the route part of a RouteStatus record's message.
type Route struct {
	Prefix    netip.Prefix
	ASPath    string // space-separated, AS sets in braces ("64512 {65001 65002}"); "" for none
	LocalPref uint32
	MED       uint32
	NextHop   netip.Addr // invalid: none (a withdrawal)
	Weight    uint32
}

// BGPRecord is one line of the tunnel BGP log.
type BGPRecord struct {
	ResourceID string
	Time       time.Time
	Type       BGPType
	Status     Status
	// Details says what happened in words (AWS's event texts). For RouteStatus it is set only
	// when the route was refused ("DENIED due to: ...").
	Details string
	// Route is set for RouteStatus records.
	Route *Route
}

// NewBGPStatus builds a BGPStatus record (status UP or DOWN).
func NewBGPStatus(resourceID string, t time.Time, status Status, details string) *BGPRecord {
	return &BGPRecord{ResourceID: resourceID, Time: stamp(t), Type: BGPStatus, Status: status, Details: details}
}

// NewRouteStatus builds a RouteStatus record (ADVERTISED, UPDATED or WITHDRAWN).
func NewRouteStatus(resourceID string, t time.Time, status Status, r Route, details string) *BGPRecord {
	return &BGPRecord{ResourceID: resourceID, Time: stamp(t), Type: RouteStatus, Status: status, Details: details, Route: &r}
}

// Log implements Record.
func (r *BGPRecord) Log() Log { return LogBGP }

// Stream implements Record.
func (r *BGPRecord) Stream() string { return r.ResourceID }

// EventTime implements Record.
func (r *BGPRecord) EventTime() time.Time { return r.Time }

type bgpWire struct {
	ResourceID     string          `json:"resource_id"`
	EventTimestamp int64           `json:"event_timestamp"`
	Timestamp      string          `json:"timestamp"`
	Type           BGPType         `json:"type"`
	Status         Status          `json:"status"`
	Message        json.RawMessage `json:"message"`
}

type statusMessageWire struct {
	Details string `json:"details"`
}

type routeMessageWire struct {
	Prefix    string `json:"prefix"`
	ASPath    string `json:"asPath"`
	LocalPref uint32 `json:"localPref"`
	MED       uint32 `json:"med"`
	NextHopIP string `json:"nextHopIp"`
	Weight    uint32 `json:"weight"`
	Details   string `json:"details,omitempty"`
}

// MarshalJSON encodes the record in AWS's shape.
func (r *BGPRecord) MarshalJSON() ([]byte, error) {
	var msg any
	if r.Type == RouteStatus {
		m := routeMessageWire{Details: r.Details}
		if rt := r.Route; rt != nil {
			m.ASPath, m.LocalPref, m.MED, m.Weight = rt.ASPath, rt.LocalPref, rt.MED, rt.Weight
			if rt.Prefix.IsValid() {
				m.Prefix = rt.Prefix.String()
			}
			if rt.NextHop.IsValid() {
				m.NextHopIP = rt.NextHop.String()
			}
		}
		msg = m
	} else {
		msg = statusMessageWire{Details: r.Details}
	}
	mb, err := marshalNoEscape(msg)
	if err != nil {
		return nil, err
	}
	return marshalNoEscape(bgpWire{
		ResourceID: r.ResourceID, EventTimestamp: r.Time.UnixMilli(), Timestamp: r.Time.UTC().Format(TimestampLayout),
		Type: r.Type, Status: r.Status, Message: mb,
	})
}

func (r *BGPRecord) scrub(f func(string) string) Record {
	c := *r
	c.ResourceID, c.Details = f(r.ResourceID), f(r.Details)
	if r.Route != nil {
		rt := *r.Route
		rt.ASPath = f(rt.ASPath)
		c.Route = &rt
	}
	return &c
}

// marshalNoEscape is json.Marshal without HTML escaping (log lines stay readable: "->", "<br>").
func marshalNoEscape(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

// ParseBGPRecord reads one BGP log line strictly: known fields only, a known type and a status
// valid for it, event_timestamp and timestamp agreeing, a parseable prefix and next hop.
func ParseBGPRecord(line []byte) (*BGPRecord, error) {
	var w bgpWire
	if err := decodeStrict(line, &w); err != nil {
		return nil, fmt.Errorf("vpnlog: bgp record: %w", err)
	}
	t, err := checkTimes(w.EventTimestamp, w.Timestamp)
	if err != nil {
		return nil, fmt.Errorf("vpnlog: bgp record: %w", err)
	}
	if w.ResourceID == "" {
		return nil, errors.New("vpnlog: bgp record: resource_id: missing")
	}
	if w.Type != BGPStatus && w.Type != RouteStatus {
		return nil, fmt.Errorf("vpnlog: bgp record: type %q: want BGPStatus or RouteStatus", w.Type)
	}
	if !w.Status.validFor(w.Type) {
		return nil, fmt.Errorf("vpnlog: bgp record: status %q: not valid for type %s", w.Status, w.Type)
	}
	r := &BGPRecord{ResourceID: w.ResourceID, Time: t, Type: w.Type, Status: w.Status}
	if len(w.Message) == 0 || string(w.Message) == "null" {
		return nil, errors.New("vpnlog: bgp record: message: missing")
	}
	if w.Type == BGPStatus {
		var m statusMessageWire
		if err := decodeStrict(w.Message, &m); err != nil {
			return nil, fmt.Errorf("vpnlog: bgp record: message: %w", err)
		}
		r.Details = m.Details
		return r, nil
	}
	var m routeMessageWire
	if err := decodeStrict(w.Message, &m); err != nil {
		return nil, fmt.Errorf("vpnlog: bgp record: message: %w", err)
	}
	rt := Route{ASPath: m.ASPath, LocalPref: m.LocalPref, MED: m.MED, Weight: m.Weight}
	if m.Prefix != "" {
		p, err := netip.ParsePrefix(m.Prefix)
		if err != nil {
			return nil, fmt.Errorf("vpnlog: bgp record: message.prefix: %w", err)
		}
		rt.Prefix = p
	}
	if m.NextHopIP != "" {
		a, err := netip.ParseAddr(m.NextHopIP)
		if err != nil {
			return nil, fmt.Errorf("vpnlog: bgp record: message.nextHopIp: %w", err)
		}
		rt.NextHop = a
	}
	r.Route, r.Details = &rt, m.Details
	return r, nil
}

// IKEState is ike_phase1_state / ike_phase2_state.
type IKEState string

// IKE phase states (the same strings as vpn/ike.State).
const (
	IKEEstablished IKEState = "Established"
	IKERekeying    IKEState = "Rekeying"
	IKENegotiating IKEState = "Negotiating"
	IKEDown        IKEState = "Down"
)

func (s IKEState) valid() bool {
	return s == IKEEstablished || s == IKERekeying || s == IKENegotiating || s == IKEDown
}

// TunnelRecord is one line of the tunnel activity log. The tunnel layer fills it.
type TunnelRecord struct {
	// ResourceID names the stream (ResourceID()); it is not part of the JSON.
	ResourceID     string
	Time           time.Time
	DPDEnabled     bool
	NATTDetected   bool
	Phase1, Phase2 IKEState
	// Details is the verbose message (AWS: "AWS tunnel DPD timed out after 3 retransmits").
	Details string
}

// NewTunnelRecord builds a tunnel activity record.
func NewTunnelRecord(resourceID string, t time.Time, phase1, phase2 IKEState, dpd, natt bool, details string) *TunnelRecord {
	return &TunnelRecord{ResourceID: resourceID, Time: stamp(t), Phase1: phase1, Phase2: phase2, DPDEnabled: dpd, NATTDetected: natt, Details: details}
}

// Log implements Record.
func (r *TunnelRecord) Log() Log { return LogTunnel }

// Stream implements Record.
func (r *TunnelRecord) Stream() string { return r.ResourceID }

// EventTime implements Record.
func (r *TunnelRecord) EventTime() time.Time { return r.Time }

type tunnelWire struct {
	EventTimestamp int64    `json:"event_timestamp"`
	Timestamp      string   `json:"timestamp"`
	DPDEnabled     bool     `json:"dpd_enabled"`
	NATTDetected   bool     `json:"nat_t_detected"`
	Phase1         IKEState `json:"ike_phase1_state"`
	Phase2         IKEState `json:"ike_phase2_state"`
	Details        string   `json:"details"`
}

// MarshalJSON encodes the record in AWS's shape.
func (r *TunnelRecord) MarshalJSON() ([]byte, error) {
	return marshalNoEscape(tunnelWire{
		EventTimestamp: r.Time.UnixMilli(), Timestamp: r.Time.UTC().Format(TimestampLayout),
		DPDEnabled: r.DPDEnabled, NATTDetected: r.NATTDetected, Phase1: r.Phase1, Phase2: r.Phase2,
		Details: r.Details,
	})
}

func (r *TunnelRecord) scrub(f func(string) string) Record {
	c := *r
	c.ResourceID, c.Details = f(r.ResourceID), f(r.Details)
	return &c
}

// ParseTunnelRecord reads one tunnel activity log line strictly. The stream is not in the line:
// pass it as resourceID.
func ParseTunnelRecord(resourceID string, line []byte) (*TunnelRecord, error) {
	var w tunnelWire
	if err := decodeStrict(line, &w); err != nil {
		return nil, fmt.Errorf("vpnlog: tunnel record: %w", err)
	}
	t, err := checkTimes(w.EventTimestamp, w.Timestamp)
	if err != nil {
		return nil, fmt.Errorf("vpnlog: tunnel record: %w", err)
	}
	if !w.Phase1.valid() {
		return nil, fmt.Errorf("vpnlog: tunnel record: ike_phase1_state %q: want Established, Rekeying, Negotiating or Down", w.Phase1)
	}
	if !w.Phase2.valid() {
		return nil, fmt.Errorf("vpnlog: tunnel record: ike_phase2_state %q: want Established, Rekeying, Negotiating or Down", w.Phase2)
	}
	return &TunnelRecord{ResourceID: resourceID, Time: t, DPDEnabled: w.DPDEnabled, NATTDetected: w.NATTDetected,
		Phase1: w.Phase1, Phase2: w.Phase2, Details: w.Details}, nil
}

func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// Timestamps the records can carry: from 1970 to the year 9999 (the layout's four-digit year).
const maxEventMillis = 253402300799999

func checkTimes(ms int64, human string) (time.Time, error) {
	if ms < 0 || ms > maxEventMillis {
		return time.Time{}, fmt.Errorf("event_timestamp %d: out of range", ms)
	}
	t := time.UnixMilli(ms).UTC()
	if want := t.Format(TimestampLayout); human != want {
		return time.Time{}, fmt.Errorf("timestamp %q: does not match event_timestamp %d (%s)", human, ms, want)
	}
	return t, nil
}

// FormatASPath renders an AS path the way the log shows it: sequences space-separated, sets in
// braces ("64512 {65001 65002}").
func FormatASPath(segments [][]uint32, sets []bool) string {
	var b strings.Builder
	for i, seg := range segments {
		if i > 0 {
			b.WriteByte(' ')
		}
		set := i < len(sets) && sets[i]
		if set {
			b.WriteByte('{')
		}
		for k, as := range seg {
			if k > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprint(&b, as)
		}
		if set {
			b.WriteByte('}')
		}
	}
	return b.String()
}
