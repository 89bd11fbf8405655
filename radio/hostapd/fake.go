package hostapd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"meshroot/radio/chanplan"
)

// Fake is a stand-in for hostapd's control socket, for unit tests only: it binds
// <dir>/<ifname>, answers the commands Client sends the way hostapd does (one datagram per
// request, "FAIL"/"UNKNOWN COMMAND" on errors, events to ATTACHed monitors as "<3>TEXT") and
// plays the channel switch (STARTED event, AP-CSA-FINISHED after Count beacons), radar events
// and station arrivals. Like hostapd, it handles one request at a time.
type Fake struct {
	// BeaconInterval is the real time one beacon takes in the fake (CSA duration is
	// Count × BeaconInterval). Default 1 ms.
	BeaconInterval time.Duration

	path string
	conn *net.UnixConn
	done chan struct{}
	wg   sync.WaitGroup

	mu        sync.Mutex
	st        FakeState
	stations  []fakeStation
	monitors  map[string]*net.UnixAddr
	commands  []string
	handlers  map[string]FakeHandler
	csaActive bool
	token     int
	neighbors map[string]string
	deny      map[string]bool
	closed    bool
}

// FakeState is what the fake's STATUS reports.
type FakeState struct {
	State   string // default ENABLED
	Phy     string
	Spec    chanplan.Spec
	Country string
	HE      bool
	SSIDs   []string
	BSSIDs  []net.HardwareAddr
	// DFS lists the 20 MHz channels needing radar detection; a CHAN_SWITCH onto one of them
	// plays hostapd's CAC (DFS-CAC-START, then DFS-CAC-COMPLETED after CACTime) instead of a CSA.
	DFS     map[int]bool
	CACTime time.Duration
	// RadarFallback is where the fake moves on Radar, like hostapd's own reaction to radar
	// (a CSA with count 5 to an available channel). Zero: stay (hostapd with no channel left).
	RadarFallback chanplan.Spec
}

type fakeStation struct {
	addr  net.HardwareAddr
	lines []string
}

// FakeHandler overrides the fake's answer to a command verb. It gets the whole request and the
// requester's address; it returns the reply, or ok false to send no reply at all.
type FakeHandler func(f *Fake, req string, from *net.UnixAddr) (reply string, ok bool)

// NewFake binds a fake hostapd control socket at dir/ifname.
func NewFake(dir, ifname string, st FakeState) (*Fake, error) {
	if st.State == "" {
		st.State = "ENABLED"
	}
	if st.Phy == "" {
		st.Phy = "phy0"
	}
	if st.Country == "" {
		st.Country = "US"
	}
	path := filepath.Join(dir, ifname)
	_ = os.Remove(path)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("fake hostapd: %w", err)
	}
	f := &Fake{
		BeaconInterval: time.Millisecond,
		path:           path,
		conn:           conn,
		done:           make(chan struct{}),
		st:             st,
		monitors:       map[string]*net.UnixAddr{},
		handlers:       map[string]FakeHandler{},
		neighbors:      map[string]string{},
		deny:           map[string]bool{},
	}
	f.wg.Add(1)
	go f.serve()
	return f, nil
}

// Path is the control socket path to Dial.
func (f *Fake) Path() string { return f.path }

// Close stops serving and removes the socket.
func (f *Fake) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	f.mu.Unlock()
	close(f.done)
	err := f.conn.Close()
	f.wg.Wait()
	_ = os.Remove(f.path)
	return err
}

// Handle installs an override for a command verb (e.g. "STATUS").
func (f *Fake) Handle(verb string, h FakeHandler) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.handlers[verb] = h
}

// Commands returns the requests received so far.
func (f *Fake) Commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.commands...)
}

// State returns the current state.
func (f *Fake) State() FakeState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

// Monitors returns how many clients are attached.
func (f *Fake) Monitors() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.monitors)
}

// Send writes a raw datagram to addr (to play late replies and the like).
func (f *Fake) Send(addr *net.UnixAddr, msg string) error {
	_, err := f.conn.WriteToUnix([]byte(msg), addr)
	return err
}

// Emit sends "<3>text" to every attached monitor.
func (f *Fake) Emit(text string) {
	f.mu.Lock()
	mons := make([]*net.UnixAddr, 0, len(f.monitors))
	for _, a := range f.monitors {
		mons = append(mons, a)
	}
	f.mu.Unlock()
	for _, a := range mons {
		_, _ = f.conn.WriteToUnix([]byte("<3>"+text), a)
	}
}

// AddStation associates a station (extra are key=value lines for STA output) and emits
// AP-STA-CONNECTED.
func (f *Fake) AddStation(addr net.HardwareAddr, extra ...string) {
	f.mu.Lock()
	lines := append([]string{"flags=[AUTH][ASSOC][AUTHORIZED][WMM][HT]", "aid=" + strconv.Itoa(len(f.stations)+1)}, extra...)
	f.stations = append(f.stations, fakeStation{addr: addr, lines: lines})
	f.mu.Unlock()
	f.Emit(EventSTAConnected + " " + addr.String())
}

// Radar plays a radar detection on freq: DFS-RADAR-DETECTED and, when RadarFallback is set and
// freq is inside the operating channel, hostapd's own CSA (count 5) to the fallback.
func (f *Fake) Radar(freq int) {
	f.mu.Lock()
	spec := f.st.Spec
	fb := f.st.RadarFallback
	f.mu.Unlock()
	f.Emit(fmt.Sprintf("%s freq=%d ht_enabled=1 chan_offset=%d chan_width=%d cf1=%d cf2=0",
		EventRadarDetected, freq, spec.SecOffset(), enumFromWidth(spec.Width), spec.Center1))
	inside := false
	for _, s := range spec.Subchannels() {
		inside = inside || s == freq
	}
	if inside && !fb.IsZero() {
		f.startCSA(5, fb)
	}
}

func enumFromWidth(w int) int {
	return map[int]int{20: 1, 40: 2, 80: 3, 160: 5}[w]
}

func (f *Fake) serve() {
	defer f.wg.Done()
	buf := make([]byte, 4096)
	for {
		n, from, err := f.conn.ReadFromUnix(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if n == len(buf) {
			n-- // hostapd reads at most 4095 bytes
		}
		req := string(buf[:n])
		reply, ok := f.handle(req, from)
		if ok && from != nil && from.Name != "" {
			_, _ = f.conn.WriteToUnix([]byte(reply), from)
		}
	}
}

func (f *Fake) handle(req string, from *net.UnixAddr) (string, bool) {
	v := verb(req)
	f.mu.Lock()
	f.commands = append(f.commands, req)
	h := f.handlers[v]
	f.mu.Unlock()
	if h != nil {
		return h(f, req, from)
	}
	return f.Default(req, from), true
}

// Default is the fake's built-in answer to req (handlers may call it).
func (f *Fake) Default(req string, from *net.UnixAddr) string {
	v := verb(req)
	arg := strings.TrimSpace(strings.TrimPrefix(req, v))
	switch v {
	case "PING":
		return "PONG\n"
	case "STATUS":
		return f.status()
	case "ATTACH":
		f.mu.Lock()
		defer f.mu.Unlock()
		if from == nil || from.Name == "" {
			return "FAIL\n"
		}
		f.monitors[from.Name] = from
		return "OK\n"
	case "DETACH":
		f.mu.Lock()
		defer f.mu.Unlock()
		if from == nil || f.monitors[from.Name] == nil {
			return "FAIL\n"
		}
		delete(f.monitors, from.Name)
		return "OK\n"
	case "STA-FIRST":
		f.mu.Lock()
		defer f.mu.Unlock()
		if len(f.stations) == 0 {
			return ""
		}
		return f.stations[0].text()
	case "STA-NEXT", "STA":
		mac, err := net.ParseMAC(arg)
		if err != nil {
			return "FAIL\n"
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		for i, s := range f.stations {
			if s.addr.String() != mac.String() {
				continue
			}
			if v == "STA" {
				return s.text()
			}
			if i+1 < len(f.stations) {
				return f.stations[i+1].text()
			}
			return ""
		}
		return "FAIL\n"
	case "CHAN_SWITCH":
		return f.chanSwitch(arg)
	case "SET_NEIGHBOR":
		fields := strings.Fields(arg)
		if len(fields) < 3 || !strings.HasPrefix(fields[1], "ssid=") || !strings.HasPrefix(fields[2], "nr=") {
			return "FAIL\n"
		}
		f.mu.Lock()
		f.neighbors[fields[0]] = arg
		f.mu.Unlock()
		return "OK\n"
	case "REMOVE_NEIGHBOR":
		fields := strings.Fields(arg)
		if len(fields) < 1 {
			return "FAIL\n"
		}
		f.mu.Lock()
		delete(f.neighbors, fields[0])
		f.mu.Unlock()
		return "OK\n"
	case "BSS_TM_REQ", "REQ_BEACON":
		fields := strings.Fields(arg)
		if len(fields) < 1 || !f.hasStation(fields[0]) {
			return "FAIL\n"
		}
		if v == "REQ_BEACON" {
			f.mu.Lock()
			f.token++
			t := f.token
			f.mu.Unlock()
			return strconv.Itoa(t)
		}
		return "OK\n"
	case "DENY_ACL":
		return f.denyACL(arg)
	case "DISASSOCIATE", "DEAUTHENTICATE":
		fields := strings.Fields(arg)
		if len(fields) < 1 {
			return "FAIL\n"
		}
		mac, err := net.ParseMAC(fields[0])
		if err != nil {
			return "FAIL\n"
		}
		f.mu.Lock()
		removed := false
		for i, s := range f.stations {
			if s.addr.String() == mac.String() {
				f.stations = append(f.stations[:i], f.stations[i+1:]...)
				removed = true
				break
			}
		}
		f.mu.Unlock()
		if removed {
			f.Emit(EventSTADisconnected + " " + mac.String())
		}
		return "OK\n"
	}
	return "UNKNOWN COMMAND\n"
}

// Neighbors returns the SET_NEIGHBOR entries by BSSID.
func (f *Fake) Neighbors() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]string{}
	for k, v := range f.neighbors {
		out[k] = v
	}
	return out
}

func (f *Fake) hasStation(s string) bool {
	mac, err := net.ParseMAC(s)
	if err != nil {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, st := range f.stations {
		if st.addr.String() == mac.String() {
			return true
		}
	}
	return false
}

func (s fakeStation) text() string {
	return s.addr.String() + "\n" + strings.Join(s.lines, "\n") + "\n"
}

func (f *Fake) status() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.st
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("state=%s", st.State)
	w("phy=%s", st.Phy)
	w("freq=%d", st.Spec.Freq)
	w("num_sta_non_erp=0")
	w("olbc=0")
	w("ht_op_mode=0x0")
	if st.Spec.Band() == chanplan.Band2G4 {
		w("hw_mode=g")
	} else {
		w("hw_mode=a")
	}
	w("country_code=%s", st.Country)
	w("country3=0x20")
	w("cac_time_seconds=%d", int(st.CACTime/time.Second))
	w("cac_time_left_seconds=N/A")
	w("channel=%d", st.Spec.Channel())
	w("secondary_channel=%d", st.Spec.SecOffset())
	w("ieee80211n=1")
	vht := st.Spec.Band() == chanplan.Band5G
	w("ieee80211ac=%d", b2i(vht))
	w("ieee80211ax=%d", b2i(st.HE))
	w("beacon_int=100")
	w("dtim_period=2")
	chw := map[int]int{20: 0, 40: 0, 80: 1, 160: 2}[st.Spec.Width]
	if st.HE {
		w("he_oper_chwidth=%d", chw)
		w("he_oper_centr_freq_seg0_idx=%d", st.Spec.CenterChannel())
		w("he_oper_centr_freq_seg1_idx=0")
	}
	if vht {
		w("vht_oper_chwidth=%d", chw)
		w("vht_oper_centr_freq_seg0_idx=%d", st.Spec.CenterChannel())
		w("vht_oper_centr_freq_seg1_idx=0")
		w("vht_caps_info=00000000")
	}
	w("max_txpower=20")
	for i, ssid := range st.SSIDs {
		bssid := net.HardwareAddr{2, 0, 0, 0, byte(i), 0}
		if i < len(st.BSSIDs) {
			bssid = st.BSSIDs[i]
		}
		w("bss[%d]=wlan%d", i, i)
		w("bssid[%d]=%s", i, bssid)
		w("ssid[%d]=%s", i, ssid)
		w("num_sta[%d]=%d", i, len(f.stations))
	}
	return b.String()
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// chanSwitch parses CHAN_SWITCH the way hostapd does (strstr for " key=" and " ht"/" vht"/" he")
// and plays it.
func (f *Fake) chanSwitch(arg string) string {
	fields := strings.Fields(arg)
	if len(fields) < 2 {
		return "FAIL\n"
	}
	count, err := strconv.Atoi(fields[0])
	if err != nil || count < 0 {
		return "FAIL\n"
	}
	freq, err := strconv.Atoi(fields[1])
	if err != nil || freq <= 0 {
		return "FAIL\n"
	}
	kv := map[string]int{}
	for _, w := range fields[2:] {
		if k, v, ok := strings.Cut(w, "="); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				return "FAIL\n"
			}
			kv[k] = n
		}
	}
	width := kv["bandwidth"]
	if width == 0 {
		width = 20
	}
	spec := chanplan.Spec{Freq: freq, Width: width, Center1: freq}
	if width > 20 {
		spec.Center1 = kv["center_freq1"]
		if kv["sec_channel_offset"] == 0 && spec.Band() != chanplan.Band6G {
			return "FAIL\n"
		}
	}
	if spec.Validate() != nil || (width > 20 && spec.SecOffset() != kv["sec_channel_offset"]) {
		return "FAIL\n"
	}
	if width > 40 && spec.Band() == chanplan.Band5G && !strings.Contains(" "+arg, " vht") && !strings.Contains(" "+arg, " he") {
		return "FAIL\n"
	}
	f.mu.Lock()
	if f.csaActive || f.st.State != "ENABLED" {
		f.mu.Unlock()
		return "FAIL\n"
	}
	dfs := false
	for _, s := range spec.Subchannels() {
		dfs = dfs || f.st.DFS[s]
	}
	f.mu.Unlock()
	if dfs {
		f.startCAC(spec)
		return "OK\n"
	}
	f.startCSA(count, spec)
	return "OK\n"
}

func widthString(w int) string { return fmt.Sprintf("%d MHz", w) }

func (f *Fake) startCSA(count int, spec chanplan.Spec) {
	f.mu.Lock()
	f.csaActive = true
	d := time.Duration(count) * f.BeaconInterval
	f.mu.Unlock()
	f.Emit(fmt.Sprintf("%sfreq=%d ht_enabled=1 ch_offset=%d ch_width=%s cf1=%d cf2=0 dfs=0",
		EventChannelSwitchStarted+" ", spec.Freq, spec.SecOffset(), widthString(spec.Width), spec.Center1))
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		select {
		case <-time.After(d):
		case <-f.done:
			return
		}
		f.mu.Lock()
		f.st.Spec = spec
		f.csaActive = false
		f.mu.Unlock()
		f.Emit(fmt.Sprintf("%sfreq=%d ht_enabled=1 ch_offset=%d ch_width=%s cf1=%d cf2=0 dfs=0",
			EventChannelSwitch+" ", spec.Freq, spec.SecOffset(), widthString(spec.Width), spec.Center1))
		f.Emit(fmt.Sprintf("%s freq=%d dfs=0", EventCSAFinished, spec.Freq))
	}()
}

func (f *Fake) startCAC(spec chanplan.Spec) {
	f.mu.Lock()
	f.st.State = "DFS"
	f.st.Spec = spec
	cac := f.st.CACTime
	f.mu.Unlock()
	f.Emit(fmt.Sprintf("%s freq=%d chan=%d sec_chan=%d, width=%d, seg0=%d, seg1=0, cac_time=%ds",
		EventCACStart, spec.Freq, spec.Channel(), spec.SecOffset(), map[int]int{20: 0, 40: 0, 80: 1, 160: 2}[spec.Width],
		spec.CenterChannel(), int(cac/time.Second)))
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		select {
		case <-time.After(cac):
		case <-f.done:
			return
		}
		f.mu.Lock()
		f.st.State = "ENABLED"
		f.mu.Unlock()
		f.Emit(fmt.Sprintf("%s success=1 freq=%d ht_enabled=0 chan_offset=0 chan_width=%d cf1=%d cf2=0 radar_detected=0",
			EventCACCompleted, spec.Freq, enumFromWidth(spec.Width), spec.Center1))
		f.Emit(EventAPEnabled + " ")
	}()
}

// denyACL plays DENY_ACL ADD_MAC/DEL_MAC/CLEAR: adding disconnects the station, like hostapd.
func (f *Fake) denyACL(arg string) string {
	fields := strings.Fields(arg)
	if len(fields) == 1 && fields[0] == "CLEAR" {
		f.mu.Lock()
		f.deny = map[string]bool{}
		f.mu.Unlock()
		return "OK\n"
	}
	if len(fields) != 2 || (fields[0] != "ADD_MAC" && fields[0] != "DEL_MAC") {
		return "FAIL\n"
	}
	mac, err := net.ParseMAC(fields[1])
	if err != nil || len(mac) != 6 {
		return "FAIL\n"
	}
	f.mu.Lock()
	if fields[0] == "DEL_MAC" {
		delete(f.deny, mac.String())
		f.mu.Unlock()
		return "OK\n"
	}
	f.deny[mac.String()] = true
	f.mu.Unlock()
	f.RemoveStation(mac)
	return "OK\n"
}

// Denied lists the deny list's addresses.
func (f *Fake) Denied() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.deny))
	for m := range f.deny {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

// IsDenied reports whether addr is on the deny list (a station a test associates should check
// it, as hostapd refuses its authentication).
func (f *Fake) IsDenied(addr net.HardwareAddr) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.deny[addr.String()]
}

// RemoveStation disassociates a station (it left, or roamed away) and emits
// AP-STA-DISCONNECTED; it reports whether the station was there.
func (f *Fake) RemoveStation(addr net.HardwareAddr) bool {
	f.mu.Lock()
	removed := false
	for i, s := range f.stations {
		if s.addr.String() == addr.String() {
			f.stations = append(f.stations[:i], f.stations[i+1:]...)
			removed = true
			break
		}
	}
	f.mu.Unlock()
	if removed {
		f.Emit(EventSTADisconnected + " " + addr.String())
	}
	return removed
}
