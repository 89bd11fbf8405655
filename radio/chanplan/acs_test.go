package chanplan

import (
	"errors"
	"math"
	"testing"
)

func near(a, b, tol float64) bool {
	if a == b {
		return true
	}
	return math.Abs(a-b) <= tol*math.Max(math.Abs(a), math.Abs(b))
}

func TestACSInterferenceFactor(t *testing.T) {
	for _, tc := range []struct {
		name     string
		s        ACSSurvey
		lowestNF int
		want     float64
	}{
		{
			// (30-10)/(100-10) = 2/9; 2^(10^-9.5 - 10^-9.5) = 1; 10^(-95/5) = 1e-19.
			name: "busy minus tx", lowestNF: -95,
			s:    ACSSurvey{NF: -95, ChannelTime: 100, ChannelTimeBusy: 30, ChannelTimeTx: 10, HasNF: true, HasTime: true, HasBusy: true, HasTx: true},
			want: 1e-19 + 2.0/9.0,
		},
		{
			// rx is used when busy is missing: 13/162; hostapd printed 0.0802469.
			name: "rx fallback", lowestNF: -113,
			s:    ACSSurvey{NF: -113, ChannelTime: 162, ChannelTimeRx: 13, HasNF: true, HasTime: true, HasRx: true},
			want: 2.5118864315095795e-23 + 13.0/162.0,
		},
		{
			// A loud noise floor amplifies the busy ratio: nf -20, lowest -30:
			// 10^(-4) + 0.5 * 2^(10^-2 - 10^-3) = 1e-4 + 0.5 * 2^0.009.
			name: "noise amplification", lowestNF: -30,
			s:    ACSSurvey{NF: -20, ChannelTime: 200, ChannelTimeBusy: 100, HasNF: true, HasTime: true, HasBusy: true},
			want: 1e-4 + 0.5*1.0062578234977817, // 2^0.009 = e^(0.009 ln 2)
		},
		{
			// time == tx: the ratio is taken as 0, leaving only the noise term 10^(-90/5).
			name: "no idle time", lowestNF: -90,
			s:    ACSSurvey{NF: -90, ChannelTime: 50, ChannelTimeBusy: 50, ChannelTimeTx: 50, HasNF: true, HasTime: true, HasBusy: true, HasTx: true},
			want: 1e-18,
		},
		{
			name: "no busy or rx", lowestNF: -90,
			s:    ACSSurvey{NF: -90, ChannelTime: 50, HasNF: true, HasTime: true},
			want: 0,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ACSInterferenceFactor(tc.s, tc.lowestNF); !near(got, tc.want, 1e-12) {
				t.Errorf("ACSInterferenceFactor(%+v, %d) = %.17g; want %.17g", tc.s, tc.lowestNF, got, tc.want)
			}
		})
	}
}

// hostapdExample is the survey data of the example printout in hostapd's src/ap/acs.c comment
// block (five passive scans of channels 1-13: noise floor, channel time, rx time; no busy time).
var hostapdExample = map[int][][3]int{
	1:  {{-113, 162, 13}, {-113, 161, 12}, {-113, 162, 11}, {-113, 161, 5}, {-113, 161, 4}},
	2:  {{-113, 162, 3}, {-113, 162, 4}, {-113, 162, 6}, {-113, 161, 24}, {-113, 161, 4}},
	3:  {{-113, 162, 0}, {-113, 162, 3}, {-113, 161, 3}, {-113, 161, 3}, {-113, 161, 3}},
	4:  {{-114, 162, 0}, {-114, 162, 9}, {-114, 161, 0}, {-114, 161, 3}, {-114, 161, 1}},
	5:  {{-113, 161, 66}, {-113, 162, 7}, {-113, 161, 2}, {-113, 161, 109}, {-114, 161, 3}},
	6:  {{-113, 161, 89}, {-112, 161, 13}, {-113, 161, 5}, {-112, 161, 70}, {-113, 161, 10}},
	7:  {{-112, 161, 71}, {-113, 161, 62}, {-113, 161, 6}, {-113, 161, 6}, {-113, 161, 12}},
	8:  {{-112, 161, 8}, {-114, 161, 8}, {-113, 161, 6}, {-113, 162, 21}, {-114, 162, 27}},
	9:  {{-114, 161, 2}, {-114, 161, 5}, {-114, 161, 0}, {-114, 162, 1}, {-114, 162, 0}},
	10: {{-114, 161, 1}, {-114, 161, 1}, {-114, 161, 1}, {-114, 162, 8}, {-114, 162, 0}},
	11: {{-114, 161, 0}, {-113, 161, 0}, {-113, 161, 0}, {-114, 162, 7}, {-114, 162, 15}},
	12: {{-113, 161, 10}, {-114, 161, 1}, {-113, 162, 0}, {-113, 162, 0}, {-113, 162, 1}},
	13: {{-114, 161, 12}, {-114, 162, 9}, {-114, 162, 0}, {-114, 162, 0}, {-114, 162, 0}},
}

func exampleChannels() []ACSChannel {
	var chans []ACSChannel
	for ch := 1; ch <= 13; ch++ {
		f, _ := ChannelToFreq(Band2G4, ch)
		c := ACSChannel{Freq: f, MaxTxPower: 20}
		for _, s := range hostapdExample[ch] {
			c.Surveys = append(c.Surveys, ACSSurvey{NF: s[0], ChannelTime: uint64(s[1]), ChannelTimeRx: uint64(s[2]), HasNF: true, HasTime: true, HasRx: true})
		}
		chans = append(chans, c)
	}
	return chans
}

func TestACSHostapdExample(t *testing.T) {
	res, err := ACS(Band2G4, exampleChannels(), ACSConfig{Width: 20})
	if err != nil {
		t.Fatalf("ACS(example) = %v; want nil", err)
	}
	if res.LowestNF != -114 {
		t.Errorf("ACS(example).LowestNF = %d; want -114", res.LowestNF)
	}
	// The per-channel averages hostapd printed ("interference factor average", %Lg = 6 digits).
	printed := map[int]float64{1: 0.0557166, 2: 0.050832, 3: 0.0148838, 4: 0.0160801, 5: 0.232244, 6: 0.232298,
		7: 0.195031, 8: 0.0865885, 9: 0.00993022, 10: 0.0136033, 11: 0.0271605, 12: 0.0148992, 13: 0.0260179}
	for ch, want := range printed {
		f, _ := ChannelToFreq(Band2G4, ch)
		if got := res.Interference[f]; !near(got, want, 6e-6) {
			t.Errorf("ACS(example).Interference[ch %d] = %.7g; want %.6g (hostapd's printout)", ch, got, want)
		}
	}
	// Today's hostapd weighs neighbours (0.85 at ±1, 0.55 at ±2 channels), divides by the weight
	// and biases 1/6/11 by 0.8. Hand computation from the exact averages a_n (e.g. a_11 = 22/810):
	//   ch 11: (a11 + .85(a10+a12) + .55(a9+a13)) / 3.8 * 0.8 = 0.014980849870249
	//   ch 12: (a12 + .85(a11+a13) + .55 a10) / 3.25          = 0.020794653548280
	//   ch 13: (a13 + .85 a12 + .55 a11) / 2.4                = 0.022341876901059
	//   ch 1:  (a1 + .85 a2 + .55 a3) / 2.4 * 0.8             = 0.035703294737137
	//   ch 6:  (a6 + .85(a5+a7) + .55(a4+a8)) / 3.8 * 0.8     = 0.137252632386246
	want := map[int]float64{11: 0.01498084987024902, 12: 0.020794653548279734, 13: 0.0223418769010591,
		1: 0.03570329473713667, 6: 0.1372526323862457}
	got := map[int]float64{}
	for _, s := range res.Scores {
		ch, _ := FreqToChannel(s.Freq)
		got[ch] = s.Factor
	}
	for ch, w := range want {
		if !near(got[ch], w, 1e-9) {
			t.Errorf("ACS(example) score of ch %d = %.17g; want %.17g", ch, got[ch], w)
		}
	}
	if res.Spec.Channel() != 11 || res.Spec.Width != 20 || !res.Ideal {
		t.Errorf("ACS(example) = %v (ideal %v); want 11/20 (ideal)", res.Spec, res.Ideal)
	}
}

func oneSurvey(freq int, busy uint64, radar bool) ACSChannel {
	return ACSChannel{Freq: freq, Radar: radar, MaxTxPower: 23, Surveys: []ACSSurvey{
		{NF: -95, ChannelTime: 100, ChannelTimeBusy: busy, HasNF: true, HasTime: true, HasBusy: true},
	}}
}

func TestACS5GHz80(t *testing.T) {
	busy := map[int]uint64{36: 40, 40: 10, 44: 20, 48: 30, 52: 5, 56: 5, 60: 5, 64: 5, 149: 0, 153: 50, 157: 0, 161: 0, 165: 0}
	var chans []ACSChannel
	for _, ch := range []int{36, 40, 44, 48, 52, 56, 60, 64, 149, 153, 157, 161, 165} {
		f, _ := ChannelToFreq(Band5G, ch)
		chans = append(chans, oneSurvey(f, busy[ch], ch >= 52 && ch <= 64))
	}
	// Noise term of every channel: 10^(-95/5) = 1e-19; each block's score is the mean of its four.
	for _, tc := range []struct {
		name       string
		cfg        ACSConfig
		wantChan   int
		wantCenter int
		wantFactor float64
		wantScores map[int]float64 // promoted primary → score
	}{
		{
			// 36-48: (.4+.1+.2+.3)/4 = .25, primary promoted to 40; 52-64: .05 → 52 (ties keep the
			// first); 149-161: .5/4 = .125 → 149; 165-177 lacks 169-177: not enough bandwidth.
			name: "all", cfg: ACSConfig{Width: 80},
			wantChan: 52, wantCenter: 5290, wantFactor: 0.05 + 1e-19,
			wantScores: map[int]float64{5200: 0.25 + 1e-19, 5260: 0.05 + 1e-19, 5745: 0.125 + 1e-19},
		},
		{
			name: "exclude DFS", cfg: ACSConfig{Width: 80, ExcludeDFS: true},
			wantChan: 149, wantCenter: 5775, wantFactor: 0.125 + 1e-19,
			wantScores: map[int]float64{5200: 0.25 + 1e-19, 5745: 0.125 + 1e-19},
		},
		{
			// 40 MHz: 36+40 → (.4+.1)/2=.25 @40; 44+48 → .25 @44; 52+56 .05 @52; 60+64 .05 @60;
			// 149+153 → .25 @149; 157+161 → 0 @157; 165+169: no 169.
			name: "40 MHz", cfg: ACSConfig{Width: 40},
			wantChan: 157, wantCenter: 5795, wantFactor: 1e-19,
			wantScores: map[int]float64{5200: 0.25 + 1e-19, 5220: 0.25 + 1e-19, 5260: 0.05 + 1e-19, 5300: 0.05 + 1e-19, 5745: 0.25 + 1e-19, 5785: 1e-19},
		},
		{
			// 20 MHz: 149 is the first channel with busy 0 (157, 161 and 165 tie later).
			name: "20 MHz", cfg: ACSConfig{Width: 20},
			wantChan: 149, wantCenter: 5745, wantFactor: 1e-19,
		},
		{
			name: "chan list", cfg: ACSConfig{Width: 20, ChanList: []int{36, 44}},
			wantChan: 44, wantCenter: 5220, wantFactor: 0.2 + 1e-19,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := ACS(Band5G, append([]ACSChannel(nil), chans...), tc.cfg)
			if err != nil {
				t.Fatalf("ACS(%+v) = %v; want nil", tc.cfg, err)
			}
			if res.Spec.Channel() != tc.wantChan || res.Spec.Center1 != tc.wantCenter || !near(res.Factor, tc.wantFactor, 1e-12) {
				t.Errorf("ACS(%+v) = %v center %d factor %.17g; want %d center %d factor %.17g",
					tc.cfg, res.Spec, res.Spec.Center1, res.Factor, tc.wantChan, tc.wantCenter, tc.wantFactor)
			}
			if tc.wantScores != nil {
				if len(res.Scores) != len(tc.wantScores) {
					t.Errorf("ACS(%+v).Scores = %v; want %d scores %v", tc.cfg, res.Scores, len(tc.wantScores), tc.wantScores)
				}
				for _, s := range res.Scores {
					if w, ok := tc.wantScores[s.Freq]; !ok || !near(s.Factor, w, 1e-12) {
						t.Errorf("ACS(%+v) score at %d = %.17g; want %.17g (present %v)", tc.cfg, s.Freq, s.Factor, w, ok)
					}
				}
			}
		})
	}
}

func TestACS24HT40(t *testing.T) {
	// Busy fractions per channel; HT40+ sums channel c and c+4 and their ±1/±2 neighbours.
	busy := []uint64{0, 50, 40, 30, 20, 10, 5, 10, 20, 30, 40, 50, 60, 70} // index = channel
	var chans []ACSChannel
	for ch := 1; ch <= 13; ch++ {
		f, _ := ChannelToFreq(Band2G4, ch)
		chans = append(chans, oneSurvey(f, busy[ch], false))
	}
	res, err := ACS(Band2G4, chans, ACSConfig{Width: 40, Secondary: 1})
	if err != nil {
		t.Fatalf("ACS(HT40+) = %v", err)
	}
	// Channel 5 + 9 (HT40+): segment sum .10 + .30 = .40 (weight 2);
	// around 5: ch4 .2*.85 + ch3 .3*.55 + ch6 .05*.85 + ch7 .1*.55 = .17+.165+.0425+.055 = .4325;
	// around 9: ch8 .2*.85 + ch7 .1*.55 + ch10 .4*.85 + ch11 .5*.55 = .17+.055+.34+.275 = .84;
	// total (.40+.4325+.84)/(2+2*2.8) = 1.6725/7.6 = 0.22006578947368421 (+ noise terms).
	var got5 float64
	for _, s := range res.Scores {
		if s.Freq == 2432 {
			got5 = s.Factor
		}
	}
	if !near(got5, 1.6725/7.6, 1e-12) {
		t.Errorf("ACS(HT40+) score of ch 5 = %.17g; want %.17g", got5, 1.6725/7.6)
	}
	// Channel 1 (biased 0.8): seg .5+.1 (ch1, ch5); neighbours of 1: ch2 .4*.85 + ch3 .3*.55 =
	// .505; of 5: .4325 (above) → (.6+.505+.4325)/(2+1.4+2.8) = 1.5375/6.2 * .8 = 0.198387...
	var got1 float64
	for _, s := range res.Scores {
		if s.Freq == 2412 {
			got1 = s.Factor
		}
	}
	if !near(got1, 1.5375/6.2*0.8, 1e-12) {
		t.Errorf("ACS(HT40+) score of ch 1 = %.17g; want %.17g", got1, 1.5375/6.2*0.8)
	}
	if res.Spec.Width != 40 || res.Spec.SecOffset() != 1 {
		t.Errorf("ACS(HT40+) = %v sec %d; want a 40 MHz HT40+ channel", res.Spec, res.Spec.SecOffset())
	}
	// Only channels 1-9 can be HT40+ primaries on a 13-channel band.
	if len(res.Scores) != 9 {
		t.Errorf("ACS(HT40+) scored %d channels; want 9", len(res.Scores))
	}
}

func TestACSFallbackAndFailure(t *testing.T) {
	// No sufficient survey anywhere: hostapd fails ACS.
	chans := []ACSChannel{{Freq: 2412, MaxTxPower: 20}, {Freq: 2437, MaxTxPower: 20}}
	if _, err := ACS(Band2G4, chans, ACSConfig{}); !errors.Is(err, ErrACSNoChannel) {
		t.Errorf("ACS(no surveys) = %v; want ErrACSNoChannel", err)
	}
	// Disabled channels are skipped entirely, even when their survey is perfect.
	chans = []ACSChannel{
		{Freq: 2412, Disabled: true, Surveys: []ACSSurvey{{NF: -95, ChannelTime: 100, HasNF: true, HasTime: true, HasBusy: true}}},
		oneSurvey(2437, 50, false),
	}
	res, err := ACS(Band2G4, chans, ACSConfig{})
	if err != nil || res.Spec.Freq != 2437 {
		t.Errorf("ACS(disabled ch1) = %v, %v; want 2437", res.Spec, err)
	}
	// min_tx_power above every channel's limit: nothing qualifies.
	if _, err := ACS(Band2G4, []ACSChannel{oneSurvey(2437, 50, false)}, ACSConfig{MinTxPower: 30}); !errors.Is(err, ErrACSNoChannel) {
		t.Errorf("ACS(min_tx_power 30) = %v; want ErrACSNoChannel", err)
	}
}
