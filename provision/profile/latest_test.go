package profile

import "testing"

func TestLatest(t *testing.T) {
	var deliver func(*Verified)
	cancelled := false
	ch, cancel := Latest(func(fn func(*Verified)) func() {
		deliver = fn
		return func() { cancelled = true }
	})
	for v := uint64(1); v <= 3; v++ {
		deliver(&Verified{Profile: &Profile{Version: v}})
	}
	if got := (<-ch).Version; got != 3 {
		t.Errorf("Latest after versions 1, 2, 3 = version %d; want 3", got)
	}
	select {
	case v := <-ch:
		t.Errorf("Latest held a second profile (version %d); want only the newest", v.Version)
	default:
	}
	cancel()
	if !cancelled {
		t.Errorf("cancel did not end the subscription")
	}
}
