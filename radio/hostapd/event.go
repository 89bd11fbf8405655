package hostapd

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// hostapd's message levels (the N of "<N>" in front of an event).
const (
	LevelExcessive = 0
	LevelMsgDump   = 1
	LevelDebug     = 2
	LevelInfo      = 3
	LevelWarning   = 4
	LevelError     = 5
)

// Event names (src/common/wpa_ctrl.h).
const (
	EventSTAConnected         = "AP-STA-CONNECTED"
	EventSTADisconnected      = "AP-STA-DISCONNECTED"
	EventAPEnabled            = "AP-ENABLED"
	EventAPDisabled           = "AP-DISABLED"
	EventChannelSwitchStarted = "CTRL-EVENT-STARTED-CHANNEL-SWITCH"
	EventChannelSwitch        = "CTRL-EVENT-CHANNEL-SWITCH"
	EventCSAFinished          = "AP-CSA-FINISHED"
	EventRadarDetected        = "DFS-RADAR-DETECTED"
	EventDFSNewChannel        = "DFS-NEW-CHANNEL"
	EventCACStart             = "DFS-CAC-START"
	EventCACCompleted         = "DFS-CAC-COMPLETED"
	EventNOPFinished          = "DFS-NOP-FINISHED"
	EventBSSTMResp            = "BSS-TM-RESP"
	EventBeaconResp           = "BEACON-RESP-RX"
	EventTerminating          = "CTRL-EVENT-TERMINATING"
	// EventReattached is not hostapd's: the client emits it after it had to rebind its socket and
	// ATTACH again, so events may have been lost and the caller should re-read STATUS.
	EventReattached = "MESHROOT-REATTACHED"
)

// Event is one unsolicited hostapd message, e.g.
// "<3>AP-STA-CONNECTED 02:00:00:00:01:00" or
// "<3>CTRL-EVENT-STARTED-CHANNEL-SWITCH freq=5180 ht_enabled=1 ch_offset=1 ch_width=80 MHz cf1=5210 cf2=0 dfs=0".
type Event struct {
	// Level is the N of the "<N>" prefix (LevelInfo for nearly every event).
	Level int
	// Iface is set when the message carried an "IFNAME=<ifname> " prefix.
	Iface string
	// Name is the first word, e.g. "AP-STA-CONNECTED".
	Name string
	// Addr is the first positional word when it is a MAC address (the station or peer).
	Addr net.HardwareAddr
	// Params are the other positional words before the first key=value.
	Params []string
	// Args are the key=value words. A value runs until the next word holding '=' (hostapd writes
	// "ch_width=80 MHz"), and a trailing comma is dropped (DFS-CAC-START writes "sec_chan=1,").
	Args map[string]string
	// Text is the message after the prefixes.
	Text string
}

// ErrBadEvent is returned for messages that are not "<N>NAME ..." events.
var ErrBadEvent = errors.New("not a hostapd event")

// ParseEvent parses one unsolicited message as hostapd sends it to attached monitors.
func ParseEvent(msg string) (Event, error) {
	var ev Event
	msg = strings.TrimRight(msg, "\x00\n")
	if len(msg) > maxReply {
		return ev, fmt.Errorf("%w: %d bytes", ErrBadEvent, len(msg))
	}
	if rest, ok := strings.CutPrefix(msg, "IFNAME="); ok {
		name, after, found := strings.Cut(rest, " ")
		if !found || name == "" {
			return ev, fmt.Errorf("%w: IFNAME prefix without a message", ErrBadEvent)
		}
		ev.Iface, msg = name, after
	}
	if !strings.HasPrefix(msg, "<") {
		return ev, fmt.Errorf("%w: no <level> prefix", ErrBadEvent)
	}
	end := strings.IndexByte(msg, '>')
	if end < 2 || end > 4 {
		return ev, fmt.Errorf("%w: bad <level> prefix", ErrBadEvent)
	}
	lvl, err := strconv.Atoi(msg[1:end])
	if err != nil || lvl < 0 {
		return ev, fmt.Errorf("%w: bad level %q", ErrBadEvent, msg[1:end])
	}
	ev.Level = lvl
	ev.Text = msg[end+1:]
	if rest, ok := strings.CutPrefix(ev.Text, "IFNAME="); ok && ev.Iface == "" {
		name, after, _ := strings.Cut(rest, " ")
		ev.Iface, ev.Text = name, after
	}
	words := strings.Fields(ev.Text)
	if len(words) == 0 {
		return ev, fmt.Errorf("%w: empty message", ErrBadEvent)
	}
	ev.Name = words[0]
	for _, r := range ev.Name {
		if r <= ' ' || r > '~' {
			return ev, fmt.Errorf("%w: unprintable event name", ErrBadEvent)
		}
	}
	lastKey := ""
	for _, w := range words[1:] {
		k, v, isKV := strings.Cut(w, "=")
		switch {
		case isKV && k != "":
			if ev.Args == nil {
				ev.Args = map[string]string{}
			}
			lastKey = k
			ev.Args[k] = strings.TrimSuffix(v, ",")
		case lastKey != "":
			ev.Args[lastKey] = strings.TrimSuffix(ev.Args[lastKey]+" "+w, ",")
		default:
			if ev.Addr == nil && len(ev.Params) == 0 {
				if mac, err := net.ParseMAC(w); err == nil && len(mac) == 6 {
					ev.Addr = mac
					continue
				}
			}
			ev.Params = append(ev.Params, w)
		}
	}
	return ev, nil
}

// String returns the event as hostapd sent it (without the IFNAME prefix).
func (e Event) String() string { return fmt.Sprintf("<%d>%s", e.Level, e.Text) }

// Int returns the leading integer of argument key ("60s" gives 60).
func (e Event) Int(key string) (int, bool) {
	v, ok := e.Args[key]
	if !ok {
		return 0, false
	}
	n := 0
	for n < len(v) && (v[n] >= '0' && v[n] <= '9' || (n == 0 && v[n] == '-')) {
		n++
	}
	i, err := strconv.Atoi(v[:n])
	if err != nil {
		return 0, false
	}
	return i, true
}

// ChannelSwitch is the payload of CTRL-EVENT-STARTED-CHANNEL-SWITCH, CTRL-EVENT-CHANNEL-SWITCH
// and AP-CSA-FINISHED.
type ChannelSwitch struct {
	Freq     int
	Width    int // MHz; 0 when the event does not say (AP-CSA-FINISHED)
	CF1, CF2 int
	DFS      bool
	// Finished is true for CTRL-EVENT-CHANNEL-SWITCH and AP-CSA-FINISHED.
	Finished bool
}

// ChannelSwitch decodes a channel-switch event.
func (e Event) ChannelSwitch() (ChannelSwitch, bool) {
	switch e.Name {
	case EventChannelSwitchStarted, EventChannelSwitch, EventCSAFinished:
	default:
		return ChannelSwitch{}, false
	}
	cs := ChannelSwitch{Finished: e.Name != EventChannelSwitchStarted}
	var ok bool
	if cs.Freq, ok = e.Int("freq"); !ok {
		return ChannelSwitch{}, false
	}
	cs.CF1, _ = e.Int("cf1")
	cs.CF2, _ = e.Int("cf2")
	dfs, _ := e.Int("dfs")
	cs.DFS = dfs != 0
	if w, ok := e.Args["ch_width"]; ok {
		cs.Width = widthFromString(w)
	}
	return cs, true
}

// widthFromString maps hostapd's channel_width_to_string ("20 MHz (no HT)", "80+80 MHz", ...).
func widthFromString(s string) int {
	s = strings.TrimSpace(s)
	switch {
	case strings.HasPrefix(s, "80+80"):
		return 160
	case strings.HasPrefix(s, "20"):
		return 20
	case strings.HasPrefix(s, "40"):
		return 40
	case strings.HasPrefix(s, "80"):
		return 80
	case strings.HasPrefix(s, "160"):
		return 160
	case strings.HasPrefix(s, "320"):
		return 320
	}
	return 0
}

// widthFromEnum maps hostapd's enum chan_width (used by the DFS events' chan_width=).
func widthFromEnum(n int) int {
	switch n {
	case 0, 1:
		return 20
	case 2:
		return 40
	case 3:
		return 80
	case 4, 5:
		return 160
	case 6:
		return 2160 // DMG, not used here
	case 9:
		return 320
	}
	return 0
}

// DFSEvent is the payload of DFS-RADAR-DETECTED, DFS-CAC-START, DFS-CAC-COMPLETED,
// DFS-NOP-FINISHED and DFS-NEW-CHANNEL.
type DFSEvent struct {
	Freq     int
	Width    int // MHz
	CF1, CF2 int
	// Success is DFS-CAC-COMPLETED's success=1.
	Success bool
	// CACTime is DFS-CAC-START's cac_time.
	CACTime time.Duration
	// Channel is DFS-NEW-CHANNEL's / DFS-CAC-START's chan.
	Channel int
}

// DFS decodes a DFS event.
func (e Event) DFS() (DFSEvent, bool) {
	switch e.Name {
	case EventRadarDetected, EventCACStart, EventCACCompleted, EventNOPFinished, EventDFSNewChannel:
	default:
		return DFSEvent{}, false
	}
	var d DFSEvent
	var ok bool
	if d.Freq, ok = e.Int("freq"); !ok {
		return DFSEvent{}, false
	}
	if w, ok := e.Int("chan_width"); ok {
		d.Width = widthFromEnum(w)
	}
	if w, ok := e.Int("width"); ok && e.Name == EventCACStart {
		// DFS-CAC-START's width= is hostapd's oper_chwidth: 0 = 20/40, 1 = 80, 2 = 160.
		d.Width = map[int]int{0: 20, 1: 80, 2: 160, 3: 160, 9: 320}[w]
	}
	d.CF1, _ = e.Int("cf1")
	d.CF2, _ = e.Int("cf2")
	s, _ := e.Int("success")
	d.Success = s == 1
	if t, ok := e.Int("cac_time"); ok {
		d.CACTime = time.Duration(t) * time.Second
	}
	d.Channel, _ = e.Int("chan")
	return d, true
}

// BSSTMResponse is the payload of BSS-TM-RESP (an 802.11v BSS transition management response).
type BSSTMResponse struct {
	Addr             net.HardwareAddr
	Status           int // 0 = accept; 6/7 = reject (no candidate / unspecified) and so on
	TerminationDelay int
	Target           net.HardwareAddr // the BSS the station says it will move to
}

// BSSTMResponse decodes BSS-TM-RESP.
func (e Event) BSSTMResponse() (BSSTMResponse, bool) {
	if e.Name != EventBSSTMResp || e.Addr == nil {
		return BSSTMResponse{}, false
	}
	r := BSSTMResponse{Addr: e.Addr}
	var ok bool
	if r.Status, ok = e.Int("status_code"); !ok {
		return BSSTMResponse{}, false
	}
	r.TerminationDelay, _ = e.Int("bss_termination_delay")
	if t, ok := e.Args["target_bssid"]; ok {
		if mac, err := net.ParseMAC(t); err == nil {
			r.Target = mac
		}
	}
	return r, true
}

// BeaconReport is the payload of BEACON-RESP-RX (an 802.11k beacon report).
type BeaconReport struct {
	Addr   net.HardwareAddr
	Token  int
	Mode   byte   // measurement report mode
	Report []byte // the Beacon report element body
}

// BeaconReport decodes BEACON-RESP-RX "<addr> <token> <mode hex> <report hex>".
func (e Event) BeaconReport() (BeaconReport, bool) {
	if e.Name != EventBeaconResp || e.Addr == nil || len(e.Params) < 2 {
		return BeaconReport{}, false
	}
	tok, err := strconv.Atoi(e.Params[0])
	if err != nil || tok < 0 || tok > 255 {
		return BeaconReport{}, false
	}
	mode, err := strconv.ParseUint(e.Params[1], 16, 8)
	if err != nil {
		return BeaconReport{}, false
	}
	r := BeaconReport{Addr: e.Addr, Token: tok, Mode: byte(mode)}
	if len(e.Params) > 2 {
		if r.Report, err = hex.DecodeString(e.Params[2]); err != nil {
			return BeaconReport{}, false
		}
	}
	return r, true
}
