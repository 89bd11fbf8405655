package chanplan

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Band is a Wi-Fi band. The values are the same strings as board.Band, so a catalog radio's band
// converts with chanplan.Band(radio.Band).
type Band string

// The bands the planner knows.
const (
	Band2G4 Band = "2.4GHz"
	Band5G  Band = "5GHz"
	Band6G  Band = "6GHz"
)

// BandOf returns the band of a 20 MHz channel's centre frequency in MHz, or "" if none.
func BandOf(freq int) Band {
	switch {
	case freq >= 2412 && freq <= 2484:
		return Band2G4
	case freq >= 5160 && freq <= 5895:
		return Band5G
	case freq >= 5955 && freq <= 7115:
		return Band6G
	}
	return ""
}

// FreqToChannel returns the IEEE channel number of a 20 MHz centre frequency.
func FreqToChannel(freq int) (int, bool) {
	switch BandOf(freq) {
	case Band2G4:
		if freq == 2484 {
			return 14, true
		}
		if (freq-2407)%5 != 0 {
			return 0, false
		}
		return (freq - 2407) / 5, true
	case Band5G:
		if (freq-5000)%5 != 0 {
			return 0, false
		}
		return (freq - 5000) / 5, true
	case Band6G:
		if (freq-5950)%5 != 0 {
			return 0, false
		}
		return (freq - 5950) / 5, true
	}
	return 0, false
}

// ChannelToFreq returns the centre frequency in MHz of channel ch in band b.
func ChannelToFreq(b Band, ch int) (int, bool) {
	var f int
	switch b {
	case Band2G4:
		if ch == 14 {
			return 2484, true
		}
		f = 2407 + 5*ch
	case Band5G:
		f = 5000 + 5*ch
	case Band6G:
		f = 5950 + 5*ch
	default:
		return 0, false
	}
	if BandOf(f) != b {
		return 0, false
	}
	return f, true
}

// blockFirsts are the lowest 20 MHz channel centres (MHz) of the 40/80/160 MHz blocks of the 5 and
// 6 GHz bands (IEEE 802.11 Annex E; the same table as hostapd's src/ap/acs.c bw_40/80/160).
var blockFirsts = map[Band]map[int][]int{
	Band5G: {
		40:  {5180, 5220, 5260, 5300, 5500, 5540, 5580, 5620, 5660, 5700, 5745, 5785, 5825, 5865},
		80:  {5180, 5260, 5500, 5580, 5660, 5745, 5825},
		160: {5180, 5500, 5745},
	},
	Band6G: {
		40:  steps(5955, 7075, 40),
		80:  steps(5955, 6995, 80),
		160: steps(5955, 6915, 160),
	},
}

func steps(first, last, step int) []int {
	var s []int
	for f := first; f <= last; f += step {
		s = append(s, f)
	}
	return s
}

// Spec is one operating channel: a primary 20 MHz channel, a width, and the centre of the whole
// (bonded) channel. It is what hostapd's CHAN_SWITCH and config take.
type Spec struct {
	// Freq is the primary 20 MHz channel's centre frequency, MHz.
	Freq int `json:"freq"`
	// Width is the channel width in MHz: 20, 40, 80 or 160.
	Width int `json:"width"`
	// Center1 is the centre frequency of the whole channel, MHz (Freq for 20 MHz).
	Center1 int `json:"center1"`
}

// IsZero reports whether s is the zero Spec (no channel).
func (s Spec) IsZero() bool { return s == Spec{} }

// Band returns the band of the primary channel.
func (s Spec) Band() Band { return BandOf(s.Freq) }

// Channel returns the primary channel's number.
func (s Spec) Channel() int { c, _ := FreqToChannel(s.Freq); return c }

// CenterChannel returns the channel number of Center1 (hostapd's *_oper_centr_freq_seg0_idx).
func (s Spec) CenterChannel() int {
	switch s.Band() {
	case Band2G4:
		c, _ := FreqToChannel(s.Center1)
		return c
	case Band5G:
		return (s.Center1 - 5000) / 5
	case Band6G:
		return (s.Center1 - 5950) / 5
	}
	return 0
}

// SecOffset returns the HT40 secondary-channel offset of the primary: +1 when the secondary 20 MHz
// channel is above the primary, -1 when below, 0 for 20 MHz.
func (s Spec) SecOffset() int {
	if s.Width < 40 {
		return 0
	}
	if s.Band() == Band2G4 {
		if s.Center1 > s.Freq {
			return 1
		}
		return -1
	}
	// 5/6 GHz: the primary's 40 MHz pair is the aligned block of two 20 MHz channels.
	lo, _ := s.Span()
	if ((s.Freq-lo)/20)%2 == 0 {
		return 1
	}
	return -1
}

// Span returns the lowest and highest 20 MHz channel centres the channel covers.
func (s Spec) Span() (lo, hi int) {
	if s.Band() == Band2G4 {
		if s.Width == 40 {
			return min(s.Freq, s.Center1*2-s.Freq), max(s.Freq, s.Center1*2-s.Freq)
		}
		return s.Freq, s.Freq
	}
	half := s.Width/2 - 10
	return s.Center1 - half, s.Center1 + half
}

// subs is Subchannels without allocating (at most 8 subchannels: 160 MHz).
func (s Spec) subs() (out [8]int, n int) {
	lo, hi := s.Span()
	if s.Band() == Band2G4 {
		out[0] = lo
		if lo == hi {
			return out, 1
		}
		out[1] = hi
		return out, 2
	}
	for f := lo; f <= hi && n < 8; f += 20 {
		out[n] = f
		n++
	}
	return out, n
}

// Subchannels returns the centre frequencies of the 20 MHz channels the channel covers, ascending.
func (s Spec) Subchannels() []int {
	lo, hi := s.Span()
	if s.Band() == Band2G4 {
		if lo == hi {
			return []int{lo}
		}
		return []int{lo, hi}
	}
	var out []int
	for f := lo; f <= hi; f += 20 {
		out = append(out, f)
	}
	return out
}

// Edges returns the lower and upper edge of the occupied spectrum, MHz.
func (s Spec) Edges() (lo, hi int) {
	return s.Center1 - s.Width/2, s.Center1 + s.Width/2
}

// String formats s as "36/80" (primary channel / width).
func (s Spec) String() string {
	if s.IsZero() {
		return "none"
	}
	return fmt.Sprintf("%d/%d", s.Channel(), s.Width)
}

// Validate checks that s is a channel the standard defines: a known primary, a supported width,
// and a centre that matches one of the blocks containing the primary.
func (s Spec) Validate() error {
	b := s.Band()
	if b == "" {
		return fmt.Errorf("freq %d MHz: not a 2.4, 5 or 6 GHz channel", s.Freq)
	}
	if _, ok := FreqToChannel(s.Freq); !ok {
		return fmt.Errorf("freq %d MHz: not a channel centre", s.Freq)
	}
	for _, c := range SpecsFor(b, s.Width) {
		if c == s {
			return nil
		}
	}
	return fmt.Errorf("channel %s (center %d MHz): not a valid %s %d MHz channel", s, s.Center1, b, s.Width)
}

// NewSpec returns the spec with primary freq and the given width, choosing the standard block
// that contains the primary (on 2.4 GHz 40 MHz, sec gives the secondary's side: +1 or -1).
func NewSpec(freq, width, sec int) (Spec, error) {
	b := BandOf(freq)
	for _, c := range SpecsFor(b, width) {
		if c.Freq != freq {
			continue
		}
		if b == Band2G4 && width == 40 && c.SecOffset() != sec {
			continue
		}
		return c, nil
	}
	return Spec{}, fmt.Errorf("no %d MHz channel with primary %d MHz (sec %+d)", width, freq, sec)
}

// Channels20 returns every 20 MHz channel centre of a band (before regulatory limits).
func Channels20(b Band) []int {
	switch b {
	case Band2G4:
		return steps(2412, 2472, 5) // channels 1-13; 14 is DSSS-only (JP) and not used by an AP
	case Band5G:
		return append(append(steps(5180, 5320, 20), steps(5500, 5720, 20)...), steps(5745, 5885, 20)...)
	case Band6G:
		return steps(5955, 7115, 20)
	}
	return nil
}

// SpecsFor returns every valid channel of width in band b, ordered by primary frequency then
// centre, before regulatory limits.
func SpecsFor(b Band, width int) []Spec {
	var out []Spec
	switch {
	case width == 20:
		for _, f := range Channels20(b) {
			out = append(out, Spec{Freq: f, Width: 20, Center1: f})
		}
	case b == Band2G4 && width == 40:
		for _, f := range Channels20(b) {
			if f-20 >= 2412 {
				out = append(out, Spec{Freq: f, Width: 40, Center1: f - 10})
			}
			if f+20 <= 2472 {
				out = append(out, Spec{Freq: f, Width: 40, Center1: f + 10})
			}
		}
	case b == Band5G || b == Band6G:
		for _, first := range blockFirsts[b][width] {
			center := first + width/2 - 10
			for f := first; f < first+width; f += 20 {
				out = append(out, Spec{Freq: f, Width: width, Center1: center})
			}
		}
		slices.SortFunc(out, func(x, y Spec) int { return x.Freq - y.Freq })
	}
	return out
}

// DFSState is the radar state of a DFS channel (nl80211's NL80211_DFS_*).
type DFSState int

// The DFS states. A channel without radar detection requirement is always DFSNone.
const (
	DFSNone        DFSState = iota // not a DFS channel
	DFSUsable                      // DFS channel, needs a CAC before use
	DFSAvailable                   // CAC done (or background CAC): usable at once
	DFSUnavailable                 // radar seen: in its non-occupancy period
)

func (d DFSState) String() string {
	switch d {
	case DFSNone:
		return "none"
	case DFSUsable:
		return "usable"
	case DFSAvailable:
		return "available"
	case DFSUnavailable:
		return "unavailable"
	}
	return fmt.Sprintf("DFSState(%d)", int(d))
}

// NOP is the radar non-occupancy period (ETSI EN 301 893, FCC part 15.407: 30 minutes).
const NOP = 30 * time.Minute

// ChannelState is what regulation and radar allow on one 20 MHz channel of one radio (from
// nl80211's wiphy band info and the manager's own radar memory).
type ChannelState struct {
	// Freq is the 20 MHz channel centre, MHz.
	Freq int `json:"freq"`
	// Disabled: not allowed in the regulatory domain (or by the radio).
	Disabled bool `json:"disabled,omitempty"`
	// NoIR: no initiating radiation (no beaconing), except after a CAC on DFS channels.
	NoIR bool `json:"no_ir,omitempty"`
	// Radar: radar detection (DFS) is required.
	Radar bool `json:"radar,omitempty"`
	// DFS is the radar state; DFSNone on non-DFS channels.
	DFS DFSState `json:"dfs,omitempty"`
	// NOPUntil is the end of the non-occupancy period when DFS is DFSUnavailable.
	NOPUntil time.Time `json:"nop_until,omitzero"`
	// LastRadar is when radar was last seen on the channel (zero: never). Radar tends to come
	// back, so the planner keeps avoiding the channel for a while after its NOP (RadarMemory).
	LastRadar time.Time `json:"last_radar,omitzero"`
	// NoHT40Minus/NoHT40Plus/No80/No160 are the regulatory width limits of the channel.
	NoHT40Minus bool `json:"no_ht40_minus,omitempty"`
	NoHT40Plus  bool `json:"no_ht40_plus,omitempty"`
	No80        bool `json:"no_80,omitempty"`
	No160       bool `json:"no_160,omitempty"`
	// MaxPowerDBm is the regulatory maximum EIRP on the channel.
	MaxPowerDBm float64 `json:"max_power_dbm,omitempty"`
}

// Errors of Allowed.
var (
	ErrNotAllowed = errors.New("not allowed by regulation")
	ErrRadar      = errors.New("radar non-occupancy period")
)

// Usability says how a channel can be entered.
type Usability int

// The usability levels of a spec on a radio.
const (
	Unusable  Usability = iota // regulation, width limits or radar forbid it
	NeedsCAC                   // a DFS channel that needs a channel availability check (outage)
	Immediate                  // usable at once (non-DFS, or DFS already cleared)
)

// Allowed reports how spec s can be used on a radio whose per-channel states are states (indexed
// by frequency), at time now. A subchannel in its NOP (radar seen less than 30 minutes ago) makes
// the whole spec unusable, whatever the DFS state says.
func Allowed(s Spec, states map[int]ChannelState, now time.Time) (Usability, error) {
	subs := s.Subchannels()
	if len(subs) == 0 {
		return Unusable, fmt.Errorf("channel %s: %w", s, ErrNotAllowed)
	}
	u := Immediate
	for _, f := range subs {
		st, ok := states[f]
		if !ok || st.Disabled {
			return Unusable, fmt.Errorf("channel %s: %d MHz: %w", s, f, ErrNotAllowed)
		}
		if st.DFS == DFSUnavailable || now.Before(st.NOPUntil) {
			return Unusable, fmt.Errorf("channel %s: %d MHz: %w", s, f, ErrRadar)
		}
		if st.NoIR && !st.Radar {
			return Unusable, fmt.Errorf("channel %s: %d MHz no-IR: %w", s, f, ErrNotAllowed)
		}
		switch s.Width {
		case 80:
			if st.No80 {
				return Unusable, fmt.Errorf("channel %s: %d MHz no 80 MHz: %w", s, f, ErrNotAllowed)
			}
		case 160:
			if st.No160 || st.No80 {
				return Unusable, fmt.Errorf("channel %s: %d MHz no 160 MHz: %w", s, f, ErrNotAllowed)
			}
		}
		if st.Radar && st.DFS != DFSAvailable {
			u = NeedsCAC
		}
	}
	if s.Width >= 40 {
		p := states[s.Freq]
		if (s.SecOffset() > 0 && p.NoHT40Plus) || (s.SecOffset() < 0 && p.NoHT40Minus) {
			return Unusable, fmt.Errorf("channel %s: HT40%+d not allowed: %w", s, s.SecOffset(), ErrNotAllowed)
		}
	}
	return u, nil
}

// IsDFS reports whether any subchannel of s requires radar detection.
func IsDFS(s Spec, states map[int]ChannelState) bool {
	for _, f := range s.Subchannels() {
		if states[f].Radar {
			return true
		}
	}
	return false
}
