package chanplan

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestFreqChannel(t *testing.T) {
	for _, tc := range []struct {
		band Band
		ch   int
		freq int
	}{
		{Band2G4, 1, 2412}, {Band2G4, 6, 2437}, {Band2G4, 13, 2472}, {Band2G4, 14, 2484},
		{Band5G, 36, 5180}, {Band5G, 64, 5320}, {Band5G, 100, 5500}, {Band5G, 165, 5825}, {Band5G, 177, 5885},
		{Band6G, 1, 5955}, {Band6G, 37, 6135}, {Band6G, 233, 7115},
	} {
		if f, ok := ChannelToFreq(tc.band, tc.ch); !ok || f != tc.freq {
			t.Errorf("ChannelToFreq(%s, %d) = %d, %v; want %d", tc.band, tc.ch, f, ok, tc.freq)
		}
		if c, ok := FreqToChannel(tc.freq); !ok || c != tc.ch {
			t.Errorf("FreqToChannel(%d) = %d, %v; want %d", tc.freq, c, ok, tc.ch)
		}
		if b := BandOf(tc.freq); b != tc.band {
			t.Errorf("BandOf(%d) = %q; want %q", tc.freq, b, tc.band)
		}
	}
	if _, ok := FreqToChannel(2413); ok {
		t.Errorf("FreqToChannel(2413) ok; want not a channel")
	}
	if _, ok := ChannelToFreq(Band6G, 250); ok {
		t.Errorf("ChannelToFreq(6GHz, 250) ok; want out of band")
	}
}

func TestSpecsFor(t *testing.T) {
	for _, tc := range []struct {
		band  Band
		width int
		n     int
	}{
		{Band2G4, 20, 13}, {Band2G4, 40, 18}, // HT40+ on 1-9, HT40- on 5-13
		{Band5G, 20, 28}, {Band5G, 40, 28}, {Band5G, 80, 28}, {Band5G, 160, 24},
		{Band6G, 20, 59}, {Band6G, 40, 58}, {Band6G, 80, 56}, {Band6G, 160, 56},
	} {
		specs := SpecsFor(tc.band, tc.width)
		if len(specs) != tc.n {
			t.Errorf("len(SpecsFor(%s, %d)) = %d; want %d", tc.band, tc.width, len(specs), tc.n)
		}
		for _, s := range specs {
			if err := s.Validate(); err != nil {
				t.Errorf("SpecsFor(%s, %d) gave %v: Validate() = %v", tc.band, tc.width, s, err)
			}
			if got := len(s.Subchannels()); got != max(tc.width/20, 1) {
				t.Errorf("%v.Subchannels() has %d; want %d", s, got, tc.width/20)
			}
		}
	}
}

func TestSpecGeometry(t *testing.T) {
	for _, tc := range []struct {
		freq, width, sec int
		wantCenter       int
		wantCenterChan   int
		wantSec          int
		wantSubs         []int
	}{
		{5180, 80, 0, 5210, 42, 1, []int{5180, 5200, 5220, 5240}},
		{5200, 80, 0, 5210, 42, -1, []int{5180, 5200, 5220, 5240}},
		{5220, 80, 0, 5210, 42, 1, []int{5180, 5200, 5220, 5240}},
		{5240, 80, 0, 5210, 42, -1, []int{5180, 5200, 5220, 5240}},
		{5500, 160, 0, 5570, 114, 1, []int{5500, 5520, 5540, 5560, 5580, 5600, 5620, 5640}},
		{5745, 40, 0, 5755, 151, 1, []int{5745, 5765}},
		{2437, 40, -1, 2427, 4, -1, []int{2417, 2437}},
		{2437, 40, 1, 2447, 8, 1, []int{2437, 2457}},
		{2437, 20, 0, 2437, 6, 0, []int{2437}},
		{6135, 80, 0, 6145, 39, -1, []int{6115, 6135, 6155, 6175}},
	} {
		s, err := NewSpec(tc.freq, tc.width, tc.sec)
		if err != nil {
			t.Errorf("NewSpec(%d, %d, %d) = %v", tc.freq, tc.width, tc.sec, err)
			continue
		}
		if s.Center1 != tc.wantCenter || s.CenterChannel() != tc.wantCenterChan || s.SecOffset() != tc.wantSec {
			t.Errorf("NewSpec(%d, %d, %d) = center %d (ch %d) sec %d; want %d (ch %d) sec %d", tc.freq, tc.width, tc.sec,
				s.Center1, s.CenterChannel(), s.SecOffset(), tc.wantCenter, tc.wantCenterChan, tc.wantSec)
		}
		if diff := cmp.Diff(tc.wantSubs, s.Subchannels()); diff != "" {
			t.Errorf("%v.Subchannels() mismatch (-want +got):\n%s", s, diff)
		}
	}
	if _, err := NewSpec(5720, 160, 0); err == nil {
		t.Errorf("NewSpec(5720, 160) = nil error; want an error (no 160 MHz block holds 144)")
	}
	bad := Spec{Freq: 5180, Width: 80, Center1: 5290}
	if err := bad.Validate(); err == nil {
		t.Errorf("%+v.Validate() = nil; want an error", bad)
	}
}

func TestAllowed(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	states := map[int]ChannelState{}
	for _, f := range Channels20(Band5G) {
		st := ChannelState{Freq: f}
		if f >= 5260 && f <= 5720 {
			st.Radar, st.NoIR, st.DFS = true, true, DFSUsable
		}
		states[f] = st
	}
	st := states[5260]
	st.DFS = DFSAvailable
	states[5260] = st
	for _, f := range []int{5280, 5300, 5320} {
		st := states[f]
		st.DFS = DFSAvailable
		states[f] = st
	}
	st = states[5500]
	st.DFS, st.NOPUntil = DFSUnavailable, now.Add(10*time.Minute)
	states[5500] = st
	st = states[5540]
	st.NOPUntil = now.Add(time.Minute) // radar remembered by the manager, kernel says usable
	states[5540] = st
	st = states[5745]
	st.No80 = true
	states[5745] = st
	delete(states, 5885)

	for _, tc := range []struct {
		freq, width int
		want        Usability
		wantErr     error
	}{
		{5180, 80, Immediate, nil},
		{5260, 80, Immediate, nil},  // all four cleared by CAC
		{5260, 160, Immediate, nil}, // 36-48 non-DFS, 52-64 cleared
		{5580, 80, NeedsCAC, nil},
		{5500, 20, Unusable, ErrRadar},
		{5520, 80, Unusable, ErrRadar}, // 5500 is in the block
		{5540, 40, Unusable, ErrRadar},
		{5745, 80, Unusable, ErrNotAllowed},
		{5765, 40, Immediate, nil},
		{5865, 40, Unusable, ErrNotAllowed}, // 177 missing
	} {
		s, err := NewSpec(tc.freq, tc.width, 0)
		if err != nil {
			t.Fatalf("NewSpec(%d, %d) = %v", tc.freq, tc.width, err)
		}
		got, err := Allowed(s, states, now)
		if got != tc.want || !errors.Is(err, tc.wantErr) {
			t.Errorf("Allowed(%v) = %v, %v; want %v, %v", s, got, err, tc.want, tc.wantErr)
		}
	}
	// After the NOP the manager's memory no longer blocks 5540.
	if got, err := Allowed(Spec{Freq: 5540, Width: 20, Center1: 5540}, states, now.Add(2*time.Minute)); got != NeedsCAC || err != nil {
		t.Errorf("Allowed(5540 after NOP) = %v, %v; want NeedsCAC, nil", got, err)
	}
}
