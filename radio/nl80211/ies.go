package nl80211

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// IE is one 802.11 information element.
type IE struct {
	ID   byte
	Data []byte
}

// Element IDs used here (IEEE 802.11-2020 table 9-92).
const (
	ieSSID          = 0
	ieBSSLoad       = 11
	ieHTOperation   = 61
	ieVHTOperation  = 192
	ieExtension     = 255
	extHEOperation  = 36
	htOpLen         = 22
	vhtOpLen        = 5
	heOpMinLen      = 6 // params (3) + BSS colour (1) + basic HE-MCS (2)
	heOpVHTInfo     = 1 << 14
	heOpCoHosted    = 1 << 15
	heOp6GHzInfo    = 1 << 17
	he6GHzInfoLen   = 5
	vhtWidth20or40  = 0
	vhtWidth80Plus  = 1
	vhtWidth160Depr = 2
	vhtWidth8080Dep = 3
)

// ErrBadIE is returned for malformed element lists.
var ErrBadIE = errors.New("malformed information elements")

// ParseIEs splits an element list.
func ParseIEs(b []byte) ([]IE, error) {
	var out []IE
	for len(b) > 0 {
		if len(b) < 2 {
			return out, fmt.Errorf("%w: %d trailing bytes", ErrBadIE, len(b))
		}
		n := int(b[1])
		if len(b) < 2+n {
			return out, fmt.Errorf("%w: element %d claims %d bytes, %d left", ErrBadIE, b[0], n, len(b)-2)
		}
		out = append(out, IE{ID: b[0], Data: b[2 : 2+n]})
		b = b[2+n:]
	}
	return out, nil
}

// OperatingChannel works out a BSS's operating width and centre frequency (MHz) from its
// primary frequency and its HT, VHT and HE operation elements, the way iw's scan dump does.
// Without any of them the BSS is 20 MHz wide.
func OperatingChannel(freq int, ies []IE) (width, center1 int) {
	width, center1 = 20, freq
	var ht, vht, he []byte
	for _, ie := range ies {
		switch {
		case ie.ID == ieHTOperation && len(ie.Data) >= htOpLen:
			ht = ie.Data
		case ie.ID == ieVHTOperation && len(ie.Data) >= vhtOpLen:
			vht = ie.Data
		case ie.ID == ieExtension && len(ie.Data) >= 1+heOpMinLen && ie.Data[0] == extHEOperation:
			he = ie.Data[1:]
		}
	}
	// 6 GHz: the HE operation's 6 GHz operation information is authoritative.
	if he != nil && freq >= 5955 {
		params := uint32(he[0]) | uint32(he[1])<<8 | uint32(he[2])<<16
		off := heOpMinLen
		if params&heOpVHTInfo != 0 {
			off += 3
		}
		if params&heOpCoHosted != 0 {
			off++
		}
		if params&heOp6GHzInfo != 0 && len(he) >= off+he6GHzInfoLen {
			info := he[off : off+he6GHzInfoLen]
			ccfs0, ccfs1 := int(info[2]), int(info[3])
			switch info[1] & 0x3 {
			case 0:
				return 20, freq
			case 1:
				return 40, 5950 + 5*ccfs0
			case 2:
				return 80, 5950 + 5*ccfs0
			case 3:
				if ccfs1 != 0 {
					return 160, 5950 + 5*ccfs1
				}
				return 160, 5950 + 5*ccfs0
			}
		}
		return width, center1
	}
	if ht != nil {
		secondary := ht[1] & 0x3
		staWidth := ht[1]&0x4 != 0
		if staWidth {
			switch secondary {
			case 1:
				width, center1 = 40, freq+10
			case 3:
				width, center1 = 40, freq-10
			}
		}
	}
	if vht != nil && freq >= 5000 && width == 40 {
		base := 5000
		seg0, seg1 := int(vht[1]), int(vht[2])
		switch vht[0] {
		case vhtWidth80Plus:
			switch {
			case seg1 != 0 && absInt(seg1-seg0) == 8:
				return 160, base + 5*seg1
			default: // 80 MHz (80+80 is counted by its primary segment)
				return 80, base + 5*seg0
			}
		case vhtWidth160Depr:
			return 160, base + 5*seg0
		case vhtWidth8080Dep:
			return 80, base + 5*seg0
		}
	}
	return width, center1
}

func absInt(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// BSSLoad decodes the BSS Load element: station count and channel utilisation (0..255).
func BSSLoad(ies []IE) (stations, util int, ok bool) {
	for _, ie := range ies {
		if ie.ID == ieBSSLoad && len(ie.Data) >= 5 {
			return int(binary.LittleEndian.Uint16(ie.Data[0:2])), int(ie.Data[2]), true
		}
	}
	return 0, 0, false
}
