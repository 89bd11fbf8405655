package esp

import "fmt"

// Anti-replay window sizes in packets (RFC 4303 §3.4.3). AWS and strongSwan default to 1024.
const (
	DefaultReplayWindow = 1024
	MinReplayWindow     = 64
	MaxReplayWindow     = 2048
)

// replayWindow is the RFC 4303 §3.4.3 sliding window kept as an RFC 6479 ring of 64-bit blocks:
// advancing the window clears whole blocks instead of shifting bits, so the cost of a jump does
// not grow with the window size. The ring has a power-of-two number of blocks, at least one more
// than the window needs, so that the block holding top never aliases a block still inside the
// window.
//
// check and update are split on purpose: check runs before the ICV is verified (cheap rejection
// of replays without spending a decryption), update only after (a forged packet never moves
// the window).
type replayWindow struct {
	size uint32   // window in packets
	top  uint32   // highest sequence number accepted so far; 0 before the first packet
	mask uint32   // len(bits)-1
	bits []uint64 // bit (seq & 63) of block (seq >> 6) & mask
}

func newReplayWindow(size int) (replayWindow, error) {
	if size == 0 {
		size = DefaultReplayWindow
	}
	if size < MinReplayWindow || size > MaxReplayWindow {
		return replayWindow{}, fmt.Errorf("replay window %d; want %d to %d packets", size, MinReplayWindow, MaxReplayWindow)
	}
	blocks := 1
	for blocks < (size+63)/64+1 {
		blocks <<= 1
	}
	return replayWindow{size: uint32(size), mask: uint32(blocks - 1), bits: make([]uint64, blocks)}, nil
}

// check reports whether seq may be accepted: not zero (never sent), not left of the window, and
// not already seen.
func (w *replayWindow) check(seq uint32) bool {
	if seq == 0 {
		return false
	}
	if seq > w.top {
		return true
	}
	if w.top-seq >= w.size {
		return false
	}
	return w.bits[(seq>>6)&w.mask]&(1<<(seq&63)) == 0
}

// update records seq as seen, sliding the window right when seq is new. Call it only for a
// packet that passed check and whose ICV verified.
func (w *replayWindow) update(seq uint32) {
	if seq > w.top {
		cur, next := w.top>>6, seq>>6
		diff := next - cur
		if diff > w.mask+1 {
			diff = w.mask + 1
		}
		for i := uint32(1); i <= diff; i++ {
			w.bits[(cur+i)&w.mask] = 0
		}
		w.top = seq
	}
	w.bits[(seq>>6)&w.mask] |= 1 << (seq & 63)
}
