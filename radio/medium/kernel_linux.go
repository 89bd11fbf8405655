//go:build linux

package medium

import (
	"errors"
	"fmt"
	"sync"
	"syscall"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// NetlinkKernel is the real Kernel: generic netlink sockets to mac80211_hwsim.
//
// Deliveries are not sent one by one: Deliver queues them and TxInfo, which ends every frame
// the medium handles, sends the frame's deliveries and its transmit status in one sendmsg
// (the kernel processes the messages of a buffer in order). A group frame that reaches seven
// radios costs one system call instead of eight, which matters in an emulated guest.
type NetlinkKernel struct {
	c      *genetlink.Conn // the medium's socket: register, frames in, deliveries out
	raw    *netlink.Conn   // the same socket, for batched sends
	ctl    *genetlink.Conn // radio list requests
	family genetlink.Family

	outMu sync.Mutex
	out   []netlink.Message // queued deliveries

	mu      sync.Mutex
	pending []Event // frames that arrived while Register waited for its ack
	// Errors counts error replies (deliveries the kernel refused: radio off-channel, idle).
	Errors uint64
}

// OpenKernel connects to mac80211_hwsim (the module must be loaded).
func OpenKernel() (*NetlinkKernel, error) {
	raw, err := netlink.Dial(unix.NETLINK_GENERIC, nil)
	if err != nil {
		return nil, fmt.Errorf("generic netlink: %w", err)
	}
	c := genetlink.NewConn(raw)
	fam, err := c.GetFamily(familyName)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("generic netlink family %s (is mac80211_hwsim loaded?): %w", familyName, err)
	}
	ctl, err := genetlink.Dial(nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	// Frames arrive in bursts (every beacon of every radio): a large receive buffer keeps the
	// kernel from dropping them (ENOBUFS) while the medium is busy.
	if rc, err := c.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
		})
	}
	_ = c.SetOption(netlink.ExtendedAcknowledge, true)
	return &NetlinkKernel{c: c, raw: raw, ctl: ctl, family: fam}, nil
}

// Register sends HWSIM_CMD_REGISTER and waits for the kernel's answer.
func (k *NetlinkKernel) Register() error {
	req, err := k.c.Send(genetlink.Message{Header: genetlink.Header{Command: cmdRegister, Version: 1}}, k.family.ID,
		netlink.Request|netlink.Acknowledge)
	if err != nil {
		return err
	}
	for {
		msgs, nls, err := k.c.Receive()
		if err != nil {
			var oe *netlink.OpError
			if errors.As(err, &oe) {
				// The only request in flight is the registration.
				return fmt.Errorf("HWSIM_CMD_REGISTER: %w", oe.Err)
			}
			return err
		}
		for i, nm := range nls {
			if nm.Header.Type == netlink.Error {
				if nm.Header.Sequence == req.Header.Sequence {
					return nil
				}
				continue
			}
			if ev, ok := k.decode(msgs[i]); ok {
				k.mu.Lock()
				k.pending = append(k.pending, ev)
				k.mu.Unlock()
			}
		}
	}
}

// Radios dumps HWSIM_CMD_GET_RADIO.
func (k *NetlinkKernel) Radios() ([]RadioInfo, error) {
	msgs, err := k.ctl.Execute(genetlink.Message{Header: genetlink.Header{Command: cmdGetRadio, Version: 1}}, k.family.ID,
		netlink.Request|netlink.Dump)
	if err != nil {
		return nil, fmt.Errorf("HWSIM_CMD_GET_RADIO: %w", err)
	}
	var out []RadioInfo
	for _, m := range msgs {
		r, err := parseRadio(m.Data)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func (k *NetlinkKernel) decode(m genetlink.Message) (Event, bool) {
	switch m.Header.Command {
	case cmdFrame:
		f, err := parseTxFrame(m.Data)
		if err != nil {
			return Event{}, false
		}
		f.Frame = append([]byte(nil), f.Frame...)
		return Event{Frame: &f}, true
	case cmdAddMACAddr, cmdDelMACAddr:
		u, err := parseMACUpdate(m.Data, m.Header.Command == cmdAddMACAddr)
		if err != nil {
			return Event{}, false
		}
		return Event{MAC: &u}, true
	case cmdNewRadio:
		if r, err := parseRadio(m.Data); err == nil {
			return Event{NewRadio: &r}, true
		}
	case cmdDelRadio:
		if r, err := parseRadio(m.Data); err == nil {
			return Event{DelRadio: &r}, true
		}
	}
	return Event{}, false
}

// Receive returns the next frame or address update. Error replies to deliveries are skipped.
func (k *NetlinkKernel) Receive() (Event, error) {
	for {
		k.mu.Lock()
		if len(k.pending) > 0 {
			ev := k.pending[0]
			k.pending = k.pending[1:]
			k.mu.Unlock()
			return ev, nil
		}
		k.mu.Unlock()
		msgs, nls, err := k.c.Receive()
		if err != nil {
			// Error replies (a delivery to a radio off the frame's channel: EINVAL) and a full
			// receive buffer (ENOBUFS: frames lost, as on a busy channel) are not fatal; a
			// closed socket is.
			var errno syscall.Errno
			if errors.As(err, &errno) && errno != unix.EBADF {
				k.mu.Lock()
				k.Errors++
				k.mu.Unlock()
				continue
			}
			return Event{}, err
		}
		var out []Event
		for i, nm := range nls {
			if nm.Header.Type == netlink.Error || nm.Header.Type == netlink.Done {
				continue
			}
			if ev, ok := k.decode(msgs[i]); ok {
				out = append(out, ev)
			}
		}
		if len(out) == 0 {
			continue
		}
		k.mu.Lock()
		k.pending = append(k.pending, out[1:]...)
		k.mu.Unlock()
		return out[0], nil
	}
}

// maxQueued bounds the deliveries waiting for a TxInfo (a group frame reaches every other
// radio); more are sent at once.
const maxQueued = 64

// message wraps a generic netlink command for the hwsim family.
func (k *NetlinkKernel) message(cmd uint8, data []byte) (netlink.Message, error) {
	b, err := (genetlink.Message{Header: genetlink.Header{Command: cmd, Version: 1}, Data: data}).MarshalBinary()
	if err != nil {
		return netlink.Message{}, err
	}
	return netlink.Message{Header: netlink.Header{Type: netlink.HeaderType(k.family.ID), Flags: netlink.Request}, Data: b}, nil
}

// Deliver queues HWSIM_CMD_FRAME to a receiving radio; the next TxInfo sends it.
func (k *NetlinkKernel) Deliver(rx Addr, frame []byte, freq, signal, rate int) error {
	b, err := encodeDelivery(rx, frame, freq, signal, rate)
	if err != nil {
		return err
	}
	m, err := k.message(cmdFrame, b)
	if err != nil {
		return err
	}
	k.outMu.Lock()
	defer k.outMu.Unlock()
	k.out = append(k.out, m)
	if len(k.out) >= maxQueued {
		return k.flushLocked()
	}
	return nil
}

// TxInfo sends the queued deliveries and HWSIM_CMD_TX_INFO_FRAME in one system call.
func (k *NetlinkKernel) TxInfo(tx Addr, cookie uint64, flags uint32, signal int, rates [maxRates]TxRate) error {
	b, err := encodeTxInfo(tx, cookie, flags, signal, rates)
	if err != nil {
		return err
	}
	m, err := k.message(cmdTxInfoFrame, b)
	if err != nil {
		return err
	}
	k.outMu.Lock()
	defer k.outMu.Unlock()
	k.out = append(k.out, m)
	return k.flushLocked()
}

func (k *NetlinkKernel) flushLocked() error {
	if len(k.out) == 0 {
		return nil
	}
	_, err := k.raw.SendMessages(k.out)
	clear(k.out)
	k.out = k.out[:0]
	return err
}

// Close closes both sockets; the kernel then goes back to delivering frames itself.
func (k *NetlinkKernel) Close() error {
	err := k.c.Close()
	k.ctl.Close()
	return err
}
