package chanplan

import (
	"errors"
	"math"
)

// This file reproduces hostapd's survey-based automatic channel selection (src/ap/acs.c, read from
// hostapd's source; no code was copied) so that the planner can be compared with what a stock AP
// picks. The arithmetic follows hostapd step for step, including its quirks:
//
//   - interference factor per survey:
//     10^(nf/5) + (busy−tx)/(time−tx) · 2^(10^(nf/10) − 10^(lowest_nf/10)),
//     with rx time in place of busy time when the driver gives no busy time, and the ratio 0 when
//     time−tx is 0 (the comment block in acs.c writes "+" in the exponent; the code uses "−");
//   - lowest_nf is the lowest noise floor of every survey of every enabled channel of the radio
//     (hostapd_update_nf; a survey without a noise floor counts as nf 0 there, as in hostapd);
//   - a channel's factor is the mean over its sufficient surveys (noise floor, channel time, and
//     busy or rx time present);
//   - a candidate of n×20 MHz sums the factors of its usable subchannels, on 5/6 GHz the primary is
//     moved to the least-interfered subchannel of the block, on 2.4 GHz the channels ±5 MHz
//     (weight 0.85) and ±10 MHz (weight 0.55) of each subchannel are added, the sum is divided by
//     the total weight, and channels 1, 6 and 11 are multiplied by 0.8 (acs_chan_bias default);
//   - the lowest score wins, ties going to the first channel in frequency order; if no channel
//     scores, the first usable one is taken.

// ACSSurvey is one nl80211 survey sample of one channel (times in ms, as hostapd keeps them).
type ACSSurvey struct {
	NF              int    // noise floor, dBm
	ChannelTime     uint64 // NL80211_SURVEY_INFO_TIME
	ChannelTimeBusy uint64 // NL80211_SURVEY_INFO_TIME_BUSY
	ChannelTimeRx   uint64 // NL80211_SURVEY_INFO_TIME_RX
	ChannelTimeTx   uint64 // NL80211_SURVEY_INFO_TIME_TX
	// Has* say which fields the driver filled in (hostapd's SURVEY_HAS_* flags).
	HasNF, HasTime, HasBusy, HasRx, HasTx bool
}

// Sufficient reports whether hostapd would use the sample (acs_survey_is_sufficient).
func (s ACSSurvey) Sufficient() bool {
	return s.HasNF && s.HasTime && (s.HasBusy || s.HasRx)
}

// ACSChannel is one 20 MHz channel of the radio as hostapd sees it: its regulatory flags and the
// survey samples collected on it.
type ACSChannel struct {
	Freq       int
	Disabled   bool // HOSTAPD_CHAN_DISABLED
	Radar      bool // HOSTAPD_CHAN_RADAR
	MaxTxPower int  // dBm
	// NoHT40Plus, NoHT40Minus, No80, No160 clear the matching bits of hostapd's allowed_bw.
	NoHT40Plus, NoHT40Minus, No80, No160 bool
	Surveys                              []ACSSurvey
}

// ACSConfig are the hostapd configuration items ACS reads.
type ACSConfig struct {
	// Width is the operating width, 20, 40, 80 or 160 MHz (ieee80211n + secondary_channel for 40,
	// vht/he_oper_chwidth for 80/160).
	Width int
	// Secondary is hostapd's secondary_channel for 2.4 GHz HT40: +1 (HT40+) or -1 (HT40-). It is
	// ignored on 5/6 GHz, where hostapd walks the block upwards.
	Secondary int
	// ExcludeDFS is acs_exclude_dfs.
	ExcludeDFS bool
	// MinTxPower is min_tx_power (dBm).
	MinTxPower int
	// ChanList is acs_chan_list (channel numbers; empty means all).
	ChanList []int
	// Bias is acs_chan_bias (channel number → multiplier). Nil means hostapd's default: 0.8 on
	// channels 1, 6 and 11 of 2.4 GHz. A non-nil empty map disables the bias.
	Bias map[int]float64
}

// ACSScore is the total interference hostapd computes for one candidate.
type ACSScore struct {
	Freq   int // the (possibly promoted) primary
	Factor float64
}

// ACSResult is the outcome of ACS on one radio.
type ACSResult struct {
	// Spec is the chosen channel.
	Spec Spec
	// Factor is its total interference factor (0 when taken as the fallback channel).
	Factor float64
	// Ideal is false when no channel scored and hostapd's fallback ("rand_chan") was taken.
	Ideal bool
	// LowestNF is the noise floor hostapd normalises with.
	LowestNF int
	// Interference is the per-channel average interference factor (usable channels only).
	Interference map[int]float64
	// Scores are the candidates' totals in hostapd's evaluation order.
	Scores []ACSScore
}

// ErrACSNoChannel means hostapd would fail ACS ("ACS: Failed to compute ideal channel").
var ErrACSNoChannel = errors.New("acs: no usable channel")

// ACSInterferenceFactor is hostapd's acs_survey_interference_factor.
func ACSInterferenceFactor(s ACSSurvey, lowestNF int) float64 {
	var busy float64
	switch {
	case s.HasBusy:
		busy = float64(s.ChannelTimeBusy)
	case s.HasRx:
		busy = float64(s.ChannelTimeRx)
	default:
		return 0
	}
	total := float64(s.ChannelTime)
	if s.HasTx {
		busy -= float64(s.ChannelTimeTx)
		total -= float64(s.ChannelTimeTx)
	}
	ratio := 0.0
	if total != 0 {
		ratio = busy / total
	}
	nf := float64(s.NF)
	return math.Pow(10, nf/5) + ratio*math.Pow(2, math.Pow(10, nf/10)-math.Pow(10, float64(lowestNF)/10))
}

// ACS runs hostapd's survey-based channel selection over the channels of one band (in the order
// the driver lists them, i.e. ascending frequency).
func ACS(band Band, chans []ACSChannel, cfg ACSConfig) (ACSResult, error) {
	width := cfg.Width
	if width == 0 {
		width = 20
	}
	nChans := width / 20
	res := ACSResult{Interference: map[int]float64{}}

	// hostapd_update_nf: lowest noise floor over every survey of enabled channels.
	first := true
	for _, c := range chans {
		if c.Disabled {
			continue
		}
		for _, s := range c.Surveys {
			nf := 0
			if s.HasNF {
				nf = s.NF
			}
			if first || nf < res.LowestNF {
				res.LowestNF = nf
				first = false
			}
		}
	}

	byFreq := map[int]*ACSChannel{}
	for i := range chans {
		if !chans[i].Disabled {
			byFreq[chans[i].Freq] = &chans[i]
		}
	}
	usable := func(c *ACSChannel) bool {
		if c == nil || c.Disabled {
			return false
		}
		for _, s := range c.Surveys {
			if s.Sufficient() {
				return true
			}
		}
		return false
	}

	// acs_survey_mode_interference_factor
	for i := range chans {
		c := &chans[i]
		if !usable(c) || (c.Radar && cfg.ExcludeDFS) || c.MaxTxPower < cfg.MinTxPower {
			continue
		}
		sum, n := 0.0, 0
		for _, s := range c.Surveys {
			if !s.Sufficient() {
				continue
			}
			sum += ACSInterferenceFactor(s, res.LowestNF)
			n++
		}
		if n > 0 {
			sum /= float64(n)
		}
		res.Interference[c.Freq] = sum
	}
	factorOf := func(c *ACSChannel) float64 { return res.Interference[c.Freq] }

	secondary := 1
	if band == Band2G4 {
		secondary = cfg.Secondary
		if width == 40 && secondary == 0 {
			secondary = 1
		}
	}
	allowedBW := func(c *ACSChannel, pri bool) bool {
		switch width {
		case 20:
			return true
		case 40:
			if !pri {
				return true // hostapd skips the secondary check for 40 MHz
			}
			if secondary != -1 {
				return !c.NoHT40Plus
			}
			return !c.NoHT40Minus
		case 80:
			return !c.No80
		case 160:
			return !c.No160 && !c.No80
		}
		return false
	}
	inChanList := func(c *ACSChannel) bool {
		if len(cfg.ChanList) == 0 {
			return true
		}
		n, _ := FreqToChannel(c.Freq)
		for _, x := range cfg.ChanList {
			if x == n {
				return true
			}
		}
		return false
	}
	isBlockFirst := func(f, w int) bool {
		for _, x := range blockFirsts[band][w] {
			if x == f {
				return true
			}
		}
		return false
	}

	var ideal, fallback *ACSChannel
	var idealFactor float64
	for i := range chans {
		c := &chans[i]
		if band != Band2G4 && width >= 40 && !isBlockFirst(c.Freq, width) {
			continue
		}
		factor, totalWeight := 0.0, 0.0
		var best *ACSChannel
		j := 0
		for ; j < nChans; j++ {
			c2 := byFreq[c.Freq+j*secondary*20]
			if c2 == nil || !allowedBW(c2, j == 0) {
				break
			}
			if c2.Radar && cfg.ExcludeDFS {
				break
			}
			if c2.MaxTxPower < cfg.MinTxPower {
				break
			}
			if !usable(c2) {
				continue
			}
			factor += factorOf(c2)
			totalWeight++
			if !inChanList(c2) {
				continue
			}
			if best == nil || factorOf(c2) < factorOf(best) {
				best = c2
			}
		}
		if j != nChans || best == nil {
			continue
		}
		if band != Band2G4 && c != best {
			c = best
		}
		if band == Band2G4 {
			for j := 0; j < nChans; j++ {
				off := j * 20 * secondary
				for _, adj := range []struct {
					d int
					w float64
				}{{-5, acsAdjWeight}, {-10, acsNextAdjWeight}, {5, acsAdjWeight}, {10, acsNextAdjWeight}} {
					if a := byFreq[c.Freq+off+adj.d]; usable(a) {
						factor += adj.w * factorOf(a)
						totalWeight += adj.w
					}
				}
			}
		}
		if totalWeight == 0 {
			continue
		}
		factor /= totalWeight
		ch, _ := FreqToChannel(c.Freq)
		if cfg.Bias != nil {
			if b, ok := cfg.Bias[ch]; ok {
				factor *= b
			}
		} else if band == Band2G4 && (ch == 1 || ch == 6 || ch == 11) {
			factor *= acsPrefer1611
		}
		res.Scores = append(res.Scores, ACSScore{Freq: c.Freq, Factor: factor})
		if usable(c) && (ideal == nil || factor < idealFactor) {
			ideal, idealFactor = c, factor
		}
		if fallback == nil {
			fallback = c
		}
	}
	pick := ideal
	if pick == nil {
		pick = fallback
	} else {
		res.Factor = idealFactor
		res.Ideal = true
	}
	if pick == nil {
		return res, ErrACSNoChannel
	}
	spec, err := acsSpec(band, pick.Freq, width, secondary)
	if err != nil {
		return res, err
	}
	res.Spec = spec
	return res, nil
}

// hostapd's ACS_ADJ_WEIGHT, ACS_NEXT_ADJ_WEIGHT and ACS_24GHZ_PREFER_1_6_11.
const (
	acsAdjWeight     = 0.85
	acsNextAdjWeight = 0.55
	acsPrefer1611    = 0.8
)

// acsSpec turns ACS's primary into a Spec the way hostapd's acs_adjust_secondary and
// acs_adjust_center_freq do.
func acsSpec(band Band, freq, width, secondary int) (Spec, error) {
	if band == Band2G4 {
		return NewSpec(freq, width, secondary)
	}
	return NewSpec(freq, width, 0)
}
