package device

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"meshroot/firmware/logship"
	"meshroot/firmware/router/wan"
)

// The WAN subscriber kicks the log shipper when the uplink comes up or changes its address,
// not on every state change (renewals).
func TestShipOnWANUp(t *testing.T) {
	ship := logship.New(logship.Config{Interval: time.Hour})
	var mu sync.Mutex
	uploads := 0
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		ship.Run(ctx, func() logship.Poster {
			return func(context.Context, []byte) error { mu.Lock(); uploads++; mu.Unlock(); return nil }
		})
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	count := func() int { mu.Lock(); defer mu.Unlock(); return uploads }

	addr1, addr2 := netip.MustParsePrefix("198.51.100.10/24"), netip.MustParsePrefix("198.51.100.11/24")
	fn := shipOnWANUp(ship)
	for i, step := range []struct {
		st   wan.State
		kick bool
	}{
		{wan.State{Phase: wan.PhaseNoLink}, false},
		{wan.State{Phase: wan.PhaseBound, Address: addr1}, true},
		{wan.State{Phase: wan.PhaseRenewing, Address: addr1}, false},
		{wan.State{Phase: wan.PhaseBound, Address: addr2}, true},
		{wan.State{Phase: wan.PhaseNoLink}, false},
		{wan.State{Phase: wan.PhaseBound, Address: addr2}, true},
	} {
		before := count()
		ship.Write([]byte(`{"msg":"line"}`))
		fn(step.st)
		deadline := time.Now().Add(5 * time.Second)
		if !step.kick {
			deadline = time.Now().Add(50 * time.Millisecond)
		}
		for count() == before && time.Now().Before(deadline) {
			time.Sleep(2 * time.Millisecond)
		}
		if got := count() > before; got != step.kick {
			t.Errorf("step %d: %s %v: upload = %v; want %v", i, step.st.Phase, step.st.Address, got, step.kick)
		}
	}
}
