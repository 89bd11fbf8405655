package flashsim

import (
	"bytes"
	"errors"
	"math/rand"
	"testing"
)

func TestCutInOrder(t *testing.T) {
	d := New(4096)
	d.CutAfter(100, nil)
	n, err := d.WriteAt(bytes.Repeat([]byte{1}, 300), 0)
	if n != 100 || !errors.Is(err, ErrPowerCut) || !d.Dead() {
		t.Fatalf("WriteAt past the budget = %d, %v, dead %v; want 100, ErrPowerCut, true", n, err, d.Dead())
	}
	if _, err := d.WriteAt([]byte{2}, 500); !errors.Is(err, ErrPowerCut) {
		t.Errorf("WriteAt after the cut = %v; want ErrPowerCut", err)
	}
	got := d.Bytes(0, 101)
	if !bytes.Equal(got[:100], bytes.Repeat([]byte{1}, 100)) || got[100] != 0 {
		t.Errorf("after the cut: %v; want exactly 100 bytes written", got)
	}
	d.Reboot()
	if _, err := d.WriteAt([]byte{3}, 0); err != nil {
		t.Errorf("WriteAt after Reboot = %v", err)
	}
}

func TestCutLosesOnlyUnsynced(t *testing.T) {
	lost := 0
	for seed := int64(0); seed < 20; seed++ {
		d := New(8 * SectorSize)
		d.WriteAt(bytes.Repeat([]byte{1}, 4*SectorSize), 0)
		d.Sync()
		d.CutAfter(4*SectorSize, rand.New(rand.NewSource(seed)))
		d.WriteAt(bytes.Repeat([]byte{2}, 4*SectorSize), 4*SectorSize) // unsynced, then the cut
		d.WriteAt([]byte{9}, 0)                                        // the power goes here: nothing more lands
		if !bytes.Equal(d.Bytes(0, 4*SectorSize), bytes.Repeat([]byte{1}, 4*SectorSize)) {
			t.Fatalf("seed %d: synced sectors changed", seed)
		}
		for s := 4; s < 8; s++ {
			b := d.Bytes(int64(s)*SectorSize, SectorSize)
			if !bytes.Equal(b, bytes.Repeat([]byte{2}, SectorSize)) && !bytes.Equal(b, make([]byte, SectorSize)) {
				t.Fatalf("seed %d: sector %d is neither old nor new", seed, s)
			}
			if b[0] == 0 {
				lost++
			}
		}
	}
	if lost == 0 || lost == 80 {
		t.Errorf("unsynced sectors lost: %d of 80; want some but not all", lost)
	}
}
