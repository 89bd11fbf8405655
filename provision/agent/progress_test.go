package agent

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"meshroot/provision/onboard"
)

// TestProgressPhases: a fresh device says it waits for the app ("unpaired", not "paired" as it
// used to); after the handshake it is "paired"; then its phases run in order to "profile"; a
// restart resumes at "profile".
func TestProgressPhases(t *testing.T) {
	w := newWorld(t, "")
	a, addr, stop := w.startAgent(t)
	if p := a.Progress(); p.Phase != onboard.PhaseUnpaired {
		t.Errorf("Progress() of a fresh device = %+v; want phase %q", p, onboard.PhaseUnpaired)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sess, err := onboard.Pair(ctx, &onboard.HTTPTransport{URL: addr}, w.label)
	if err != nil {
		t.Fatal(err)
	}
	if p := a.Progress(); p.Phase != onboard.PhasePaired {
		t.Errorf("Progress() after the handshake = %+v; want phase %q", p, onboard.PhasePaired)
	}
	// Watch the phases while the setup goes in and the device enrolls.
	var mu sync.Mutex
	seen := []string{onboard.PhasePaired}
	done := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			p := a.Progress().Phase
			mu.Lock()
			if seen[len(seen)-1] != p {
				seen = append(seen, p)
			}
			mu.Unlock()
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	if _, err := sess.Setup(ctx, w.setup()); err != nil {
		t.Fatal(err)
	}
	appSaw, err := sess.WaitProfile(ctx, 20*time.Millisecond, nil)
	close(done)
	<-watched
	if err != nil || appSaw.Phase != onboard.PhaseProfile {
		t.Fatalf("WaitProfile() = %+v, %v; want phase profile", appSaw, err)
	}
	order := []string{onboard.PhasePaired, onboard.PhaseConfigured, onboard.PhaseEnrolling, onboard.PhaseEnrolled, onboard.PhaseProfile}
	mu.Lock()
	defer mu.Unlock()
	last := -1
	for _, p := range seen {
		i := slices.Index(order, p)
		if i <= last {
			t.Fatalf("Progress() phases = %q; want a run in the order %q", seen, order)
		}
		last = i
	}
	if seen[len(seen)-1] != onboard.PhaseProfile {
		t.Errorf("Progress() phases = %q; want them to end at profile", seen)
	}
	// A restart resumes where it was.
	stop()
	a, _, _ = w.startAgent(t)
	if p := a.Progress(); p.Phase != onboard.PhaseProfile || p.SiteID != "berlin-1" {
		t.Errorf("Progress() after a restart = %+v; want profile of berlin-1", p)
	}
}
