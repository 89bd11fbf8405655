package medium

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"
)

// mac80211_hwsim's generic netlink interface, read from the kernel's
// drivers/net/wireless/mac80211_hwsim.h (Linux 6.1; the numbering only ever grows).
const (
	familyName = "MAC80211_HWSIM"

	cmdRegister    = 1 // HWSIM_CMD_REGISTER: become the medium of our network namespace
	cmdFrame       = 2 // HWSIM_CMD_FRAME: a radio transmitted (kernel → us) / deliver (us → kernel)
	cmdTxInfoFrame = 3 // HWSIM_CMD_TX_INFO_FRAME: transmit status back to the sender
	cmdNewRadio    = 4 // HWSIM_CMD_NEW_RADIO (also multicast when a radio appears)
	cmdDelRadio    = 5 // HWSIM_CMD_DEL_RADIO
	cmdGetRadio    = 6 // HWSIM_CMD_GET_RADIO (dump)
	cmdAddMACAddr  = 7 // HWSIM_CMD_ADD_MAC_ADDR: a virtual interface uses this address
	cmdDelMACAddr  = 8 // HWSIM_CMD_DEL_MAC_ADDR

	attrAddrReceiver    = 1  // HWSIM_ATTR_ADDR_RECEIVER
	attrAddrTransmitter = 2  // HWSIM_ATTR_ADDR_TRANSMITTER
	attrFrame           = 3  // HWSIM_ATTR_FRAME
	attrFlags           = 4  // HWSIM_ATTR_FLAGS
	attrRxRate          = 5  // HWSIM_ATTR_RX_RATE
	attrSignal          = 6  // HWSIM_ATTR_SIGNAL
	attrTxInfo          = 7  // HWSIM_ATTR_TX_INFO: struct hwsim_tx_rate[4]
	attrCookie          = 8  // HWSIM_ATTR_COOKIE
	attrRadioID         = 10 // HWSIM_ATTR_RADIO_ID
	attrRadioName       = 17 // HWSIM_ATTR_RADIO_NAME
	attrFreq            = 19 // HWSIM_ATTR_FREQ
	attrTxInfoFlags     = 21 // HWSIM_ATTR_TX_INFO_FLAGS: struct hwsim_tx_rate_flag[4]

	// hwsim_tx_control_flags.
	flagReqTxStatus = 1 << 0 // HWSIM_TX_CTL_REQ_TX_STATUS
	flagNoAck       = 1 << 1 // HWSIM_TX_CTL_NO_ACK
	flagStatAck     = 1 << 2 // HWSIM_TX_STAT_ACK

	// hwsim_tx_rate_flags.
	rateFlagMCS    = 1 << 3 // MAC80211_HWSIM_TX_RC_MCS
	rateFlagVHTMCS = 1 << 8 // MAC80211_HWSIM_TX_RC_VHT_MCS

	maxRates = 4 // IEEE80211_TX_MAX_RATES
)

// Addr is a radio's identity on hwsim's netlink interface: the radio's second permanent
// address (the first with 0x40 set in its first octet), which the kernel keys its radios by.
type Addr [6]byte

func (a Addr) String() string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", a[0], a[1], a[2], a[3], a[4], a[5])
}

// RadioAddrs returns the permanent address of hwsim radio idx (the vif's default MAC,
// 02:00:00:00:NN:00) and its netlink identity (42:00:00:00:NN:00), as mac80211_hwsim assigns
// them to radios created without an explicit address.
func RadioAddrs(idx int) (perm [6]byte, id Addr) {
	perm = [6]byte{0x02, 0, 0, byte(idx >> 8), byte(idx), 0}
	id = Addr(perm)
	id[0] |= 0x40
	return perm, id
}

// TxRate is one entry of a transmission's rate table (struct hwsim_tx_rate and the flags of
// struct hwsim_tx_rate_flag): the rate index (-1 ends the table) and the attempts at it.
type TxRate struct {
	Idx   int8
	Count uint8
	Flags uint16
}

// TxFrame is a frame a radio transmitted (HWSIM_CMD_FRAME from the kernel).
type TxFrame struct {
	Transmitter Addr
	Frame       []byte
	Flags       uint32
	Freq        int
	Rates       [maxRates]TxRate
	Cookie      uint64
}

// NoAck reports frames that expect no acknowledgement (group-addressed ones).
func (f TxFrame) NoAck() bool { return f.Flags&flagNoAck != 0 }

// MACUpdate is HWSIM_CMD_ADD_MAC_ADDR / DEL_MAC_ADDR: radio Radio uses (or stops using) Addr
// on one of its virtual interfaces.
type MACUpdate struct {
	Radio Addr
	Addr  [6]byte
	Add   bool
}

// RadioInfo is one radio from HWSIM_CMD_GET_RADIO or a NEW_RADIO notification.
type RadioInfo struct {
	ID   int
	Name string
}

// Errors of the parsers.
var ErrBadMessage = errors.New("malformed hwsim message")

// parseTxFrame decodes the attributes of a HWSIM_CMD_FRAME from the kernel.
func parseTxFrame(b []byte) (TxFrame, error) {
	var f TxFrame
	for i := range f.Rates {
		f.Rates[i].Idx = -1
	}
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return f, fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	ad.ByteOrder = binary.NativeEndian
	var haveTx, haveFrame, haveCookie bool
	for ad.Next() {
		data := ad.Bytes()
		switch ad.Type() {
		case attrAddrTransmitter:
			if len(data) != 6 {
				return f, fmt.Errorf("%w: transmitter of %d bytes", ErrBadMessage, len(data))
			}
			copy(f.Transmitter[:], data)
			haveTx = true
		case attrFrame:
			if len(data) < 10 || len(data) > 8192 {
				return f, fmt.Errorf("%w: frame of %d bytes", ErrBadMessage, len(data))
			}
			f.Frame = data
			haveFrame = true
		case attrFlags:
			if len(data) != 4 {
				return f, fmt.Errorf("%w: flags of %d bytes", ErrBadMessage, len(data))
			}
			f.Flags = binary.NativeEndian.Uint32(data)
		case attrFreq:
			if len(data) != 4 {
				return f, fmt.Errorf("%w: freq of %d bytes", ErrBadMessage, len(data))
			}
			f.Freq = int(binary.NativeEndian.Uint32(data))
		case attrCookie:
			if len(data) != 8 {
				return f, fmt.Errorf("%w: cookie of %d bytes", ErrBadMessage, len(data))
			}
			f.Cookie = binary.NativeEndian.Uint64(data)
			haveCookie = true
		case attrTxInfo:
			if len(data) != 2*maxRates {
				return f, fmt.Errorf("%w: tx info of %d bytes", ErrBadMessage, len(data))
			}
			for i := range f.Rates {
				f.Rates[i].Idx = int8(data[2*i])
				f.Rates[i].Count = data[2*i+1]
			}
		case attrTxInfoFlags:
			if len(data) != 3*maxRates {
				return f, fmt.Errorf("%w: tx info flags of %d bytes", ErrBadMessage, len(data))
			}
			for i := range f.Rates {
				f.Rates[i].Flags = binary.NativeEndian.Uint16(data[3*i+1:])
			}
		}
	}
	if err := ad.Err(); err != nil {
		return f, fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	if !haveTx || !haveFrame || !haveCookie {
		return f, fmt.Errorf("%w: frame without transmitter, frame or cookie", ErrBadMessage)
	}
	return f, nil
}

// parseMACUpdate decodes HWSIM_CMD_ADD_MAC_ADDR / DEL_MAC_ADDR.
func parseMACUpdate(b []byte, add bool) (MACUpdate, error) {
	u := MACUpdate{Add: add}
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return u, fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	var haveTx, haveRx bool
	for ad.Next() {
		data := ad.Bytes()
		switch ad.Type() {
		case attrAddrTransmitter:
			if len(data) != 6 {
				return u, fmt.Errorf("%w: transmitter of %d bytes", ErrBadMessage, len(data))
			}
			copy(u.Radio[:], data)
			haveTx = true
		case attrAddrReceiver:
			if len(data) != 6 {
				return u, fmt.Errorf("%w: receiver of %d bytes", ErrBadMessage, len(data))
			}
			copy(u.Addr[:], data)
			haveRx = true
		}
	}
	if err := ad.Err(); err != nil {
		return u, fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	if !haveTx || !haveRx {
		return u, fmt.Errorf("%w: MAC update without both addresses", ErrBadMessage)
	}
	return u, nil
}

// parseRadio decodes a GET_RADIO / NEW_RADIO / DEL_RADIO body.
func parseRadio(b []byte) (RadioInfo, error) {
	r := RadioInfo{ID: -1}
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return r, fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	ad.ByteOrder = binary.NativeEndian
	for ad.Next() {
		switch ad.Type() {
		case attrRadioID:
			r.ID = int(ad.Uint32())
		case attrRadioName:
			name := ad.Bytes()
			if len(name) > 0 && name[len(name)-1] == 0 {
				name = name[:len(name)-1]
			}
			r.Name = string(name)
		}
	}
	if err := ad.Err(); err != nil {
		return r, fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	if r.ID < 0 || r.ID > 0xffff {
		return r, fmt.Errorf("%w: radio without a valid id", ErrBadMessage)
	}
	return r, nil
}

// encodeDelivery builds a HWSIM_CMD_FRAME to a receiving radio.
func encodeDelivery(rx Addr, frame []byte, freq int, signal int, rate int) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.NativeEndian
	ae.Bytes(attrAddrReceiver, rx[:])
	ae.Bytes(attrFrame, frame)
	ae.Uint32(attrRxRate, uint32(rate))
	ae.Int32(attrSignal, int32(signal))
	if freq > 0 {
		ae.Uint32(attrFreq, uint32(freq))
	}
	return ae.Encode()
}

// encodeTxInfo builds a HWSIM_CMD_TX_INFO_FRAME for the sender of cookie.
func encodeTxInfo(tx Addr, cookie uint64, flags uint32, signal int, rates [maxRates]TxRate) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.NativeEndian
	ae.Bytes(attrAddrTransmitter, tx[:])
	ae.Uint32(attrFlags, flags)
	ae.Uint64(attrCookie, cookie)
	ae.Int32(attrSignal, int32(signal))
	ri := make([]byte, 2*maxRates)
	for i, r := range rates {
		ri[2*i] = byte(r.Idx)
		ri[2*i+1] = r.Count
	}
	ae.Bytes(attrTxInfo, ri)
	return ae.Encode()
}
