package medium

import (
	"encoding/binary"
	"fmt"
	"net"
)

// 802.11 frame types and the management subtypes the medium reports.
const (
	TypeMgmt = 0
	TypeCtrl = 1
	TypeData = 2

	SubAssocReq    = 0
	SubAssocResp   = 1
	SubReassocReq  = 2
	SubReassocResp = 3
	SubProbeReq    = 4
	SubProbeResp   = 5
	SubBeacon      = 8
	SubDisassoc    = 10
	SubAuth        = 11
	SubDeauth      = 12
	SubAction      = 13

	// AuthFT is the fast BSS transition authentication algorithm (802.11r over the air).
	AuthOpen = 0
	AuthFT   = 2
	AuthSAE  = 3

	// Action categories and the actions of interest.
	CatRRM        = 5
	CatWNM        = 10
	ActBTMRequest = 7 // WNM BSS Transition Management Request
	ActBTMResp    = 8 // WNM BSS Transition Management Response
)

// FrameInfo is what the medium understands of an 802.11 frame's header and, for a few
// management frames, of their fixed fields.
type FrameInfo struct {
	Type, Subtype int
	Protected     bool
	Retry         bool
	// Addr1 is the receiver; Addr2 the transmitter (absent in ACK/CTS); Addr3 the BSSID or
	// the source/destination depending on the frame.
	Addr1, Addr2, Addr3 [6]byte
	HasAddr2            bool
	// Auth*: Authentication frames; Status also for (re)association responses; Reason for
	// deauthentication and disassociation.
	AuthAlg, AuthSeq int
	Status           int
	Reason           int
	// Category and Action of action frames.
	Category, Action int
}

// Group reports a group-addressed receiver.
func (f FrameInfo) Group() bool { return f.Addr1[0]&1 != 0 }

// Name is a short description, e.g. "auth(FT,1)" or "reassoc-resp(0)".
func (f FrameInfo) Name() string {
	switch f.Type {
	case TypeData:
		return "data"
	case TypeCtrl:
		return fmt.Sprintf("ctrl-%d", f.Subtype)
	}
	switch f.Subtype {
	case SubAssocReq:
		return "assoc-req"
	case SubAssocResp:
		return fmt.Sprintf("assoc-resp(%d)", f.Status)
	case SubReassocReq:
		return "reassoc-req"
	case SubReassocResp:
		return fmt.Sprintf("reassoc-resp(%d)", f.Status)
	case SubProbeReq:
		return "probe-req"
	case SubProbeResp:
		return "probe-resp"
	case SubBeacon:
		return "beacon"
	case SubDisassoc:
		return fmt.Sprintf("disassoc(%d)", f.Reason)
	case SubAuth:
		alg := map[int]string{AuthOpen: "open", AuthFT: "FT", AuthSAE: "SAE"}[f.AuthAlg]
		if alg == "" {
			alg = fmt.Sprint(f.AuthAlg)
		}
		return fmt.Sprintf("auth(%s,%d,%d)", alg, f.AuthSeq, f.Status)
	case SubDeauth:
		return fmt.Sprintf("deauth(%d)", f.Reason)
	case SubAction:
		return fmt.Sprintf("action(%d,%d)", f.Category, f.Action)
	}
	return fmt.Sprintf("mgmt-%d", f.Subtype)
}

// ParseFrame decodes an 802.11 MAC header (and the fixed fields above). Frames too short for
// their header are an error; a body too short for its fixed fields just leaves them zero.
func ParseFrame(b []byte) (FrameInfo, error) {
	var f FrameInfo
	if len(b) < 10 {
		return f, fmt.Errorf("%w: 802.11 frame of %d bytes", ErrBadMessage, len(b))
	}
	fc := binary.LittleEndian.Uint16(b)
	if fc&3 != 0 {
		return f, fmt.Errorf("%w: 802.11 protocol version %d", ErrBadMessage, fc&3)
	}
	f.Type = int(fc>>2) & 3
	f.Subtype = int(fc>>4) & 0xf
	f.Retry = fc&(1<<11) != 0
	f.Protected = fc&(1<<14) != 0
	copy(f.Addr1[:], b[4:10])
	hdr := 10
	switch f.Type {
	case TypeCtrl:
		if len(b) >= 16 {
			copy(f.Addr2[:], b[10:16])
			f.HasAddr2 = f.Subtype != 12 && f.Subtype != 13 // CTS and ACK have no TA
		}
		return f, nil
	case TypeMgmt, TypeData:
		if len(b) < 24 {
			return f, fmt.Errorf("%w: 802.11 header of %d bytes", ErrBadMessage, len(b))
		}
		copy(f.Addr2[:], b[10:16])
		copy(f.Addr3[:], b[16:22])
		f.HasAddr2 = true
		hdr = 24
	default:
		return f, fmt.Errorf("%w: 802.11 frame type 3", ErrBadMessage)
	}
	if f.Type != TypeMgmt || f.Protected {
		return f, nil
	}
	body := b[hdr:]
	u16 := func(off int) int {
		if len(body) < off+2 {
			return 0
		}
		return int(binary.LittleEndian.Uint16(body[off:]))
	}
	switch f.Subtype {
	case SubAuth:
		f.AuthAlg, f.AuthSeq, f.Status = u16(0), u16(2), u16(4)
	case SubAssocResp, SubReassocResp:
		f.Status = u16(2)
	case SubDeauth, SubDisassoc:
		f.Reason = u16(0)
	case SubAction:
		if len(body) >= 2 {
			f.Category, f.Action = int(body[0]), int(body[1])
		}
	}
	return f, nil
}

// HW returns an address as a net.HardwareAddr.
func HW(a [6]byte) net.HardwareAddr { return net.HardwareAddr(a[:]) }
