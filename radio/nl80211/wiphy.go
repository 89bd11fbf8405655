//go:build linux

package nl80211

import (
	"encoding/binary"
	"fmt"
	"sort"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// parseWiphyBands decodes the band/frequency attributes of a (split) NL80211_CMD_GET_WIPHY dump:
// msgs are the generic-netlink payloads. It returns, per PHY index, the bands with every channel
// flag the kernel reports (mdlayher/wifi v0.10.0 keeps only disabled/no-IR/radar/max power).
func parseWiphyBands(msgs [][]byte) (map[int][]Band, error) {
	type key struct{ phy, band int }
	chans := map[key]map[int]*Channel{}
	caps := map[key]*Band{}
	for _, m := range msgs {
		attrs, err := netlink.UnmarshalAttributes(m)
		if err != nil {
			return nil, fmt.Errorf("wiphy: %w", err)
		}
		phy := -1
		for _, a := range attrs {
			if a.Type == unix.NL80211_ATTR_WIPHY && len(a.Data) >= 4 {
				phy = int(binary.NativeEndian.Uint32(a.Data))
			}
		}
		if phy < 0 {
			return nil, fmt.Errorf("wiphy: message without NL80211_ATTR_WIPHY")
		}
		for _, a := range attrs {
			if a.Type&^netlink.Nested != unix.NL80211_ATTR_WIPHY_BANDS {
				continue
			}
			bands, err := netlink.UnmarshalAttributes(a.Data)
			if err != nil {
				return nil, fmt.Errorf("wiphy %d bands: %w", phy, err)
			}
			for _, b := range bands {
				k := key{phy, int(b.Type &^ netlink.Nested)}
				if caps[k] == nil {
					caps[k] = &Band{ID: BandID(k.band)}
					chans[k] = map[int]*Channel{}
				}
				if err := parseBand(b.Data, caps[k], chans[k]); err != nil {
					return nil, fmt.Errorf("wiphy %d band %d: %w", phy, k.band, err)
				}
			}
		}
	}
	out := map[int][]Band{}
	keys := make([]key, 0, len(caps))
	for k := range caps {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].phy != keys[j].phy {
			return keys[i].phy < keys[j].phy
		}
		return keys[i].band < keys[j].band
	})
	for _, k := range keys {
		b := *caps[k]
		for _, c := range chans[k] {
			b.Channels = append(b.Channels, *c)
		}
		sort.Slice(b.Channels, func(i, j int) bool { return b.Channels[i].Freq < b.Channels[j].Freq })
		out[k.phy] = append(out[k.phy], b)
	}
	return out, nil
}

func parseBand(data []byte, band *Band, chans map[int]*Channel) error {
	attrs, err := netlink.UnmarshalAttributes(data)
	if err != nil {
		return err
	}
	for _, a := range attrs {
		switch a.Type &^ netlink.Nested {
		case unix.NL80211_BAND_ATTR_HT_CAPA:
			if len(a.Data) >= 2 {
				band.HT40 = binary.NativeEndian.Uint16(a.Data)&(1<<1) != 0
			}
		case unix.NL80211_BAND_ATTR_VHT_CAPA:
			if len(a.Data) >= 4 {
				band.VHT = true
				w := (binary.NativeEndian.Uint32(a.Data) >> 2) & 0x3
				band.VHT160 = w == 1 || w == 2
			}
		case unix.NL80211_BAND_ATTR_FREQS:
			freqs, err := netlink.UnmarshalAttributes(a.Data)
			if err != nil {
				return err
			}
			for _, f := range freqs {
				c, err := parseFreq(f.Data)
				if err != nil {
					return err
				}
				if c.Freq == 0 {
					continue
				}
				chans[c.Freq] = &c
			}
		}
	}
	return nil
}

func parseFreq(data []byte) (Channel, error) {
	var c Channel
	attrs, err := netlink.UnmarshalAttributes(data)
	if err != nil {
		return c, err
	}
	u32 := func(b []byte) uint32 {
		if len(b) < 4 {
			return 0
		}
		return binary.NativeEndian.Uint32(b)
	}
	for _, a := range attrs {
		switch a.Type &^ netlink.Nested {
		case unix.NL80211_FREQUENCY_ATTR_FREQ:
			c.Freq = int(u32(a.Data))
		case unix.NL80211_FREQUENCY_ATTR_DISABLED:
			c.Disabled = true
		case unix.NL80211_FREQUENCY_ATTR_NO_IR:
			c.NoIR = true
		case unix.NL80211_FREQUENCY_ATTR_RADAR:
			c.Radar = true
		case unix.NL80211_FREQUENCY_ATTR_MAX_TX_POWER:
			c.MaxPowerDBm = float64(u32(a.Data)) / 100
		case unix.NL80211_FREQUENCY_ATTR_DFS_STATE:
			c.DFS = DFSState(u32(a.Data))
		case unix.NL80211_FREQUENCY_ATTR_DFS_TIME:
			c.DFSTime = time.Duration(u32(a.Data)) * time.Millisecond
		case unix.NL80211_FREQUENCY_ATTR_DFS_CAC_TIME:
			c.CACTime = time.Duration(u32(a.Data)) * time.Millisecond
		case unix.NL80211_FREQUENCY_ATTR_NO_HT40_MINUS:
			c.NoHT40Minus = true
		case unix.NL80211_FREQUENCY_ATTR_NO_HT40_PLUS:
			c.NoHT40Plus = true
		case unix.NL80211_FREQUENCY_ATTR_NO_80MHZ:
			c.No80 = true
		case unix.NL80211_FREQUENCY_ATTR_NO_160MHZ:
			c.No160 = true
		case unix.NL80211_FREQUENCY_ATTR_INDOOR_ONLY:
			c.IndoorOnly = true
		}
	}
	return c, nil
}

// parseScanIEs decodes a NL80211_CMD_GET_SCAN dump into BSSID → information elements (the probe
// response's, else the beacon's).
func parseScanIEs(msgs [][]byte) (map[string][]IE, error) {
	out := map[string][]IE{}
	for _, m := range msgs {
		attrs, err := netlink.UnmarshalAttributes(m)
		if err != nil {
			return nil, fmt.Errorf("scan: %w", err)
		}
		for _, a := range attrs {
			if a.Type&^netlink.Nested != unix.NL80211_ATTR_BSS {
				continue
			}
			battrs, err := netlink.UnmarshalAttributes(a.Data)
			if err != nil {
				return nil, fmt.Errorf("scan bss: %w", err)
			}
			var bssid, ies, beacon []byte
			for _, b := range battrs {
				switch b.Type &^ netlink.Nested {
				case unix.NL80211_BSS_BSSID:
					bssid = b.Data
				case unix.NL80211_BSS_INFORMATION_ELEMENTS:
					ies = b.Data
				case unix.NL80211_BSS_BEACON_IES:
					beacon = b.Data
				}
			}
			if len(bssid) != 6 {
				continue
			}
			if len(ies) == 0 {
				ies = beacon
			}
			parsed, err := ParseIEs(ies)
			if err != nil {
				// Keep what parsed: a truncated tail must not hide the BSS.
				if len(parsed) == 0 {
					continue
				}
			}
			out[string(bssid)] = parsed
		}
	}
	return out, nil
}

func nlUint32(b []byte) uint32 { return binary.NativeEndian.Uint32(b) }
