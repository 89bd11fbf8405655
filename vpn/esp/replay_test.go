package esp

import (
	"math/rand/v2"
	"testing"
)

// modelWindow is the RFC 4303 §3.4.3 rule written the obvious way, as the oracle for replayWindow.
type modelWindow struct {
	size uint32
	top  uint32
	seen map[uint32]bool
}

func (m *modelWindow) check(seq uint32) bool {
	return seq != 0 && (seq > m.top || (m.top-seq < m.size && !m.seen[seq]))
}

func (m *modelWindow) update(seq uint32) {
	m.seen[seq] = true
	if seq > m.top {
		m.top = seq
	}
}

func TestReplayWindowEdges(t *testing.T) {
	for _, w := range []uint32{64, 1024, 2048} {
		type step struct {
			seq  uint32
			want bool
		}
		tests := []struct {
			name  string
			steps []step
		}{
			{"zero is never valid", []step{{0, false}, {1, true}, {0, false}}},
			{"duplicate", []step{{1, true}, {1, false}, {2, true}, {2, false}, {1, false}}},
			{"out of order inside", []step{{10, true}, {5, true}, {7, true}, {5, false}, {9, true}, {10, false}}},
			{"left edge", []step{{w, true}, {1, true}, {1, false}}},
			{"just too old", []step{{w + 1, true}, {1, false}, {2, true}}},
			{"far too old", []step{{5 * w, true}, {w, false}, {4*w + 1, true}, {4 * w, false}}},
			{"big jump clears old bits", []step{{3, true}, {3 + 64*64, true}, {3 + 64*64 - 1, true}, {3 + 64*64, false}}},
			{"jump by exactly the window", []step{{1, true}, {1 + w, true}, {1, false}, {2, true}}},
			{"top of 32-bit space", []step{{0xFFFF_FFFE, true}, {0xFFFF_FFFF, true}, {0xFFFF_FFFF, false}, {0xFFFF_FFFF - w + 1, true}, {0xFFFF_FFFF - w, false}}},
		}
		for _, tc := range tests {
			rw, err := newReplayWindow(int(w))
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range tc.steps {
				got := rw.check(s.seq)
				if got != s.want {
					t.Errorf("window %d, %s, step %d: check(%d) = %v; want %v", w, tc.name, i, s.seq, got, s.want)
				}
				if got {
					rw.update(s.seq)
				}
			}
		}
	}
}

// TestReplayWindowModel drives the ring bitmap and the obvious model with the same random,
// mostly increasing, reordered and duplicated sequence numbers (the ring wraps many times).
func TestReplayWindowModel(t *testing.T) {
	for _, w := range []int{64, 100, 1000, 1024, 2048} {
		rng := rand.New(rand.NewPCG(uint64(w), 42))
		rw, err := newReplayWindow(w)
		if err != nil {
			t.Fatal(err)
		}
		m := &modelWindow{size: uint32(w), seen: map[uint32]bool{}}
		next := uint32(1)
		for i := 0; i < 200000; i++ {
			var seq uint32
			switch r := rng.IntN(100); {
			case r < 60:
				seq = next
				next++
			case r < 80: // reordered or duplicate: somewhere behind, possibly outside the window
				back := uint32(rng.IntN(w + w/2 + 1))
				if back >= next {
					back = next - 1
				}
				seq = next - back
			case r < 95: // jump ahead
				next += uint32(rng.IntN(3 * w))
				seq = next
			default: // far ahead (more than the ring)
				next += uint32(rng.IntN(20*w) + 1)
				seq = next
			}
			got, want := rw.check(seq), m.check(seq)
			if got != want {
				t.Fatalf("window %d, op %d: check(%d) with top %d = %v; want %v", w, i, seq, m.top, got, want)
			}
			if got {
				rw.update(seq)
				m.update(seq)
			}
			if rw.top != m.top {
				t.Fatalf("window %d, op %d: top = %d; want %d", w, i, rw.top, m.top)
			}
		}
	}
}

func TestReplayWindowSizes(t *testing.T) {
	for _, tc := range []struct {
		size       int
		wantBlocks int
		wantErr    bool
	}{
		{0, 32, false}, // default 1024 -> 16 blocks + 1, rounded up to 32
		{64, 2, false},
		{65, 4, false},
		{1024, 32, false},
		{2048, 64, false},
		{63, 0, true},
		{2049, 0, true},
		{-1, 0, true},
	} {
		w, err := newReplayWindow(tc.size)
		if (err != nil) != tc.wantErr {
			t.Errorf("newReplayWindow(%d) error = %v; want error %v", tc.size, err, tc.wantErr)
			continue
		}
		if err == nil && len(w.bits) != tc.wantBlocks {
			t.Errorf("newReplayWindow(%d) blocks = %d; want %d", tc.size, len(w.bits), tc.wantBlocks)
		}
	}
}
