//go:build linux

package nl80211

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

func htOp(primary, info byte) IE {
	d := make([]byte, 22)
	d[0], d[1] = primary, info
	return IE{ID: 61, Data: d}
}

func vhtOp(w, seg0, seg1 byte) IE { return IE{ID: 192, Data: []byte{w, seg0, seg1, 0xfa, 0xff}} }

func he6(width, ccfs0, ccfs1 byte) IE {
	// ext id 36; params with the 6 GHz operation info bit (17) set; colour; basic MCS; 6 GHz info.
	return IE{ID: 255, Data: []byte{36, 0x00, 0x00, 0x02, 0x01, 0xfc, 0xff, 37, width, ccfs0, ccfs1, 0x01}}
}

func TestOperatingChannel(t *testing.T) {
	for _, tc := range []struct {
		name       string
		freq       int
		ies        []IE
		wantWidth  int
		wantCenter int
	}{
		{"legacy", 2437, nil, 20, 2437},
		{"HT20", 2437, []IE{htOp(6, 0x00)}, 20, 2437},
		{"HT40+", 2412, []IE{htOp(1, 0x05)}, 40, 2422},
		{"HT40-", 2437, []IE{htOp(6, 0x07)}, 40, 2427},
		{"HT40 offset but 20 MHz STA width", 2437, []IE{htOp(6, 0x01)}, 20, 2437},
		{"VHT80", 5180, []IE{htOp(36, 0x05), vhtOp(1, 42, 0)}, 80, 5210},
		{"VHT160 new encoding", 5180, []IE{htOp(36, 0x05), vhtOp(1, 42, 50)}, 160, 5250},
		{"VHT160 old encoding", 5500, []IE{htOp(100, 0x05), vhtOp(2, 114, 0)}, 160, 5570},
		{"VHT 20/40", 5180, []IE{htOp(36, 0x05), vhtOp(0, 0, 0)}, 40, 5190},
		{"HE 6 GHz 80", 6135, []IE{he6(2, 39, 0)}, 80, 6145},
		{"HE 6 GHz 160", 6135, []IE{he6(3, 39, 47)}, 160, 6185},
		{"HE 6 GHz 20", 5955, []IE{he6(0, 1, 0)}, 20, 5955},
		{"short HT op ignored", 2412, []IE{{ID: 61, Data: []byte{1, 5}}}, 20, 2412},
	} {
		w, c := OperatingChannel(tc.freq, tc.ies)
		if w != tc.wantWidth || c != tc.wantCenter {
			t.Errorf("%s: OperatingChannel(%d) = %d, %d; want %d, %d", tc.name, tc.freq, w, c, tc.wantWidth, tc.wantCenter)
		}
	}
}

func TestParseIEs(t *testing.T) {
	got, err := ParseIEs([]byte{0, 3, 'a', 'b', 'c', 11, 5, 4, 0, 128, 0, 0})
	want := []IE{{ID: 0, Data: []byte("abc")}, {ID: 11, Data: []byte{4, 0, 128, 0, 0}}}
	if err != nil || !cmp.Equal(got, want) {
		t.Errorf("ParseIEs() = %v, %v; want %v", got, err, want)
	}
	st, util, ok := BSSLoad(got)
	if !ok || st != 4 || util != 128 {
		t.Errorf("BSSLoad() = %d, %d, %v; want 4, 128", st, util, ok)
	}
	for _, bad := range [][]byte{{0}, {0, 5, 1}} {
		if _, err := ParseIEs(bad); !errors.Is(err, ErrBadIE) {
			t.Errorf("ParseIEs(%x) = %v; want ErrBadIE", bad, err)
		}
	}
}

func encodeWiphy(t testing.TB, phy uint32, chans []Channel) []byte {
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(unix.NL80211_ATTR_WIPHY, phy)
	ae.Nested(unix.NL80211_ATTR_WIPHY_BANDS, func(bands *netlink.AttributeEncoder) error {
		bands.Nested(uint16(Band5GHz), func(band *netlink.AttributeEncoder) error {
			band.Uint16(unix.NL80211_BAND_ATTR_HT_CAPA, 0x0002)
			band.Uint32(unix.NL80211_BAND_ATTR_VHT_CAPA, 0x4) // 160 MHz
			band.Nested(unix.NL80211_BAND_ATTR_FREQS, func(freqs *netlink.AttributeEncoder) error {
				for i, c := range chans {
					freqs.Nested(uint16(i), func(f *netlink.AttributeEncoder) error {
						f.Uint32(unix.NL80211_FREQUENCY_ATTR_FREQ, uint32(c.Freq))
						f.Flag(unix.NL80211_FREQUENCY_ATTR_DISABLED, c.Disabled)
						f.Flag(unix.NL80211_FREQUENCY_ATTR_NO_IR, c.NoIR)
						f.Flag(unix.NL80211_FREQUENCY_ATTR_RADAR, c.Radar)
						f.Uint32(unix.NL80211_FREQUENCY_ATTR_MAX_TX_POWER, uint32(c.MaxPowerDBm*100))
						if c.Radar {
							f.Uint32(unix.NL80211_FREQUENCY_ATTR_DFS_STATE, uint32(c.DFS))
							f.Uint32(unix.NL80211_FREQUENCY_ATTR_DFS_TIME, uint32(c.DFSTime/time.Millisecond))
							f.Uint32(unix.NL80211_FREQUENCY_ATTR_DFS_CAC_TIME, uint32(c.CACTime/time.Millisecond))
						}
						f.Flag(unix.NL80211_FREQUENCY_ATTR_NO_HT40_MINUS, c.NoHT40Minus)
						f.Flag(unix.NL80211_FREQUENCY_ATTR_NO_HT40_PLUS, c.NoHT40Plus)
						f.Flag(unix.NL80211_FREQUENCY_ATTR_NO_80MHZ, c.No80)
						f.Flag(unix.NL80211_FREQUENCY_ATTR_NO_160MHZ, c.No160)
						return nil
					})
				}
				return nil
			})
			return nil
		})
		return nil
	})
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseWiphyBands(t *testing.T) {
	chans := []Channel{
		{Freq: 5180, MaxPowerDBm: 23, NoHT40Minus: true},
		{Freq: 5260, Radar: true, NoIR: true, DFS: DFSUnavailable, DFSTime: 90 * time.Second, CACTime: 60 * time.Second, MaxPowerDBm: 20},
		{Freq: 5825, Disabled: true, No80: true, No160: true, NoHT40Plus: true},
	}
	// A split dump repeats the wiphy index and spreads the channels over messages.
	msgs := [][]byte{encodeWiphy(t, 1, chans[:1]), encodeWiphy(t, 1, chans[1:])}
	got, err := parseWiphyBands(msgs)
	if err != nil {
		t.Fatalf("parseWiphyBands() = %v", err)
	}
	want := map[int][]Band{1: {{ID: Band5GHz, HT40: true, VHT: true, VHT160: true, Channels: chans}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parseWiphyBands() mismatch (-want +got):\n%s", diff)
	}
	if _, err := parseWiphyBands([][]byte{{1, 2, 3}}); err == nil {
		t.Errorf("parseWiphyBands(garbage) = nil error")
	}
}

func TestParseScanIEs(t *testing.T) {
	ae := netlink.NewAttributeEncoder()
	ae.Nested(unix.NL80211_ATTR_BSS, func(b *netlink.AttributeEncoder) error {
		b.Bytes(unix.NL80211_BSS_BSSID, []byte{2, 0, 0, 0, 1, 0})
		b.Bytes(unix.NL80211_BSS_BEACON_IES, []byte{61, 22, 36, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
		return nil
	})
	m, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseScanIEs([][]byte{m})
	if err != nil {
		t.Fatalf("parseScanIEs() = %v", err)
	}
	ies := got[string([]byte{2, 0, 0, 0, 1, 0})]
	if w, c := OperatingChannel(5180, ies); w != 40 || c != 5190 {
		t.Errorf("OperatingChannel(parsed beacon IEs) = %d, %d; want 40, 5190", w, c)
	}
}

func TestFake(t *testing.T) {
	f := NewFake()
	f.SetInterfaces(Interface{Index: 3, Name: "wlan0", PHY: 0, Type: IfAP, Freq: 5180, Width: 80})
	f.OnScan = func(ifname string, opts ScanOptions) error {
		f.SetScanResults(ifname, BSS{Freq: 5200, Signal: -60, Width: 20, Center1: 5200})
		return nil
	}
	var c Client = f
	if err := c.Scan(context.Background(), "wlan0", ScanOptions{AP: true}); err != nil {
		t.Fatalf("Scan() = %v", err)
	}
	res, err := c.ScanResults("wlan0")
	if err != nil || len(res) != 1 || res[0].Freq != 5200 {
		t.Errorf("ScanResults() = %v, %v", res, err)
	}
	if _, err := c.Survey("wlan9"); !errors.Is(err, ErrNoInterface) {
		t.Errorf("Survey(wlan9) = %v; want ErrNoInterface", err)
	}
	if err := c.SetCountry("DE"); err != nil {
		t.Fatal(err)
	}
	if cc, _ := c.Country(); cc != "DE" {
		t.Errorf("Country() = %q; want DE", cc)
	}
	f.SetIfaceFreq("wlan0", 5745, 80)
	ifs, _ := c.Interfaces()
	if ifs[0].Freq != 5745 {
		t.Errorf("Interfaces()[0].Freq = %d; want 5745", ifs[0].Freq)
	}
}

func FuzzParseIEs(f *testing.F) {
	f.Add([]byte{0, 3, 'a', 'b', 'c', 61, 22, 36, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add(append([]byte{255, byte(len(he6(2, 39, 0).Data))}, he6(2, 39, 0).Data...))
	f.Add([]byte{192, 5, 1, 42, 50, 0, 0, 11, 5, 1, 0, 10, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		ies, _ := ParseIEs(b)
		for _, freq := range []int{2437, 5180, 6135} {
			w, c := OperatingChannel(freq, ies)
			if w != 20 && w != 40 && w != 80 && w != 160 {
				t.Fatalf("OperatingChannel(%d, %x) width %d", freq, b, w)
			}
			_ = c
		}
		BSSLoad(ies)
	})
}

func FuzzParseWiphy(f *testing.F) {
	f.Add(encodeWiphy(f, 0, []Channel{{Freq: 5180}, {Freq: 5260, Radar: true, DFS: DFSAvailable}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = parseWiphyBands([][]byte{b})
		_, _ = parseScanIEs([][]byte{b})
	})
}
