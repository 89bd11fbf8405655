package hostapd

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"meshroot/radio/chanplan"
)

// BSSStatus is one BSS of STATUS (bss[i], bssid[i], ssid[i], num_sta[i]).
type BSSStatus struct {
	Iface  string
	BSSID  net.HardwareAddr
	SSID   string
	NumSTA int
}

// Status is hostapd's STATUS reply.
type Status struct {
	// State is hostapd's interface state: ENABLED, DISABLED, COUNTRY_UPDATE, ACS, HT_SCAN, DFS,
	// NO_IR, UNINITIALIZED.
	State   string
	Phy     string
	Freq    int
	Channel int
	// SecondaryChannel is the HT40 secondary offset: +1, -1 or 0.
	SecondaryChannel int
	HWMode           string
	Country          string
	IEEE80211N       bool
	IEEE80211AC      bool
	IEEE80211AX      bool
	BeaconInt        int
	DTIMPeriod       int
	// VHTOperChwidth / HEOperChwidth: 0 = 20/40 MHz (see SecondaryChannel), 1 = 80, 2 = 160,
	// 3 = 80+80. Seg0/Seg1 are centre channel numbers.
	VHTOperChwidth, VHTSeg0, VHTSeg1 int
	HEOperChwidth, HESeg0, HESeg1    int
	// CACTime is the CAC duration of the channel in seconds; CACLeft the seconds left while a
	// CAC runs, -1 when none runs.
	CACTime, CACLeft int
	MaxTxPower       int
	BSS              []BSSStatus
	// Raw holds every key=value line, including the ones not decoded above.
	Raw map[string]string
}

// ErrBadStatus is returned for replies that are not STATUS output.
var ErrBadStatus = errors.New("malformed STATUS reply")

// ParseStatus parses a STATUS reply.
func ParseStatus(reply string) (Status, error) {
	st := Status{Raw: map[string]string{}, CACLeft: -1}
	if len(reply) > maxReply {
		return st, fmt.Errorf("%w: %d bytes", ErrBadStatus, len(reply))
	}
	bss := map[int]*BSSStatus{}
	maxIdx := -1
	for _, line := range strings.Split(reply, "\n") {
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			return st, fmt.Errorf("%w: line %q has no key=value", ErrBadStatus, truncate(line))
		}
		st.Raw[k] = v
		if i := strings.IndexByte(k, '['); i > 0 && strings.HasSuffix(k, "]") {
			idx, err := strconv.Atoi(k[i+1 : len(k)-1])
			if err != nil || idx < 0 || idx > 63 {
				return st, fmt.Errorf("%w: %s: bad BSS index", ErrBadStatus, truncate(k))
			}
			b := bss[idx]
			if b == nil {
				b = &BSSStatus{}
				bss[idx] = b
			}
			maxIdx = max(maxIdx, idx)
			switch k[:i] {
			case "bss":
				b.Iface = v
			case "bssid":
				mac, err := net.ParseMAC(v)
				if err != nil {
					return st, fmt.Errorf("%w: %s: %v", ErrBadStatus, k, err)
				}
				b.BSSID = mac
			case "ssid":
				b.SSID = DecodePrintf(v)
			case "num_sta":
				n, err := strconv.Atoi(v)
				if err != nil {
					return st, fmt.Errorf("%w: %s: %v", ErrBadStatus, k, err)
				}
				b.NumSTA = n
			}
			continue
		}
		var err error
		switch k {
		case "state":
			st.State = v
		case "phy":
			st.Phy = v
		case "hw_mode":
			st.HWMode = v
		case "country_code":
			st.Country = v
		case "freq":
			st.Freq, err = strconv.Atoi(v)
		case "channel":
			st.Channel, err = strconv.Atoi(v)
		case "secondary_channel":
			st.SecondaryChannel, err = strconv.Atoi(v)
		case "ieee80211n":
			st.IEEE80211N = v == "1"
		case "ieee80211ac":
			st.IEEE80211AC = v == "1"
		case "ieee80211ax":
			st.IEEE80211AX = v == "1"
		case "beacon_int":
			st.BeaconInt, err = strconv.Atoi(v)
		case "dtim_period":
			st.DTIMPeriod, err = strconv.Atoi(v)
		case "vht_oper_chwidth":
			st.VHTOperChwidth, err = strconv.Atoi(v)
		case "vht_oper_centr_freq_seg0_idx":
			st.VHTSeg0, err = strconv.Atoi(v)
		case "vht_oper_centr_freq_seg1_idx":
			st.VHTSeg1, err = strconv.Atoi(v)
		case "he_oper_chwidth":
			st.HEOperChwidth, err = strconv.Atoi(v)
		case "he_oper_centr_freq_seg0_idx":
			st.HESeg0, err = strconv.Atoi(v)
		case "he_oper_centr_freq_seg1_idx":
			st.HESeg1, err = strconv.Atoi(v)
		case "cac_time_seconds":
			st.CACTime, err = strconv.Atoi(v)
		case "cac_time_left_seconds":
			if v != "N/A" {
				st.CACLeft, err = strconv.Atoi(v)
			}
		case "max_txpower":
			st.MaxTxPower, err = strconv.Atoi(v)
		}
		if err != nil {
			return st, fmt.Errorf("%w: %s: %v", ErrBadStatus, k, err)
		}
	}
	if st.State == "" {
		return st, fmt.Errorf("%w: no state line", ErrBadStatus)
	}
	for i := 0; i <= maxIdx; i++ {
		if b := bss[i]; b != nil {
			st.BSS = append(st.BSS, *b)
		}
	}
	return st, nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// Spec returns the operating channel STATUS describes.
func (s Status) Spec() (chanplan.Spec, error) {
	if s.Freq == 0 {
		return chanplan.Spec{}, fmt.Errorf("hostapd status: no operating frequency")
	}
	band := chanplan.BandOf(s.Freq)
	chw, seg0 := s.VHTOperChwidth, s.VHTSeg0
	if s.IEEE80211AX && (band == chanplan.Band6G || !s.IEEE80211AC) {
		chw, seg0 = s.HEOperChwidth, s.HESeg0
	}
	if band == chanplan.Band2G4 || (!s.IEEE80211AC && !s.IEEE80211AX) {
		chw = 0
	}
	switch chw {
	case 0:
		if s.SecondaryChannel != 0 {
			return chanplan.NewSpec(s.Freq, 40, s.SecondaryChannel)
		}
		return chanplan.NewSpec(s.Freq, 20, 0)
	case 1, 2:
		width := map[int]int{1: 80, 2: 160}[chw]
		spec, err := chanplan.NewSpec(s.Freq, width, 0)
		if err != nil {
			return spec, err
		}
		if seg0 != 0 && spec.CenterChannel() != seg0 {
			return spec, fmt.Errorf("hostapd status: centre channel %d does not match %v", seg0, spec)
		}
		return spec, nil
	}
	return chanplan.Spec{}, fmt.Errorf("hostapd status: channel width code %d not supported", chw)
}

// DecodePrintf undoes hostapd's printf_encode (used for SSIDs in STATUS): \\ \" \e \n \r \t \xNN.
func DecodePrintf(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		i++
		switch s[i] {
		case '\\', '"':
			b.WriteByte(s[i])
		case 'e':
			b.WriteByte(0x1b)
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'x':
			if i+2 < len(s) {
				if n, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
					b.WriteByte(byte(n))
					i += 2
					continue
				}
			}
			b.WriteString(`\x`)
		default:
			b.WriteByte('\\')
			b.WriteByte(s[i])
		}
	}
	return b.String()
}
