package hostapd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"meshroot/radio/chanplan"
)

// sockDir returns a short temporary directory (AF_UNIX paths are limited to 108 bytes and
// t.TempDir paths can be long).
func sockDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "hapd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func spec(t *testing.T, freq, width int) chanplan.Spec {
	t.Helper()
	s, err := chanplan.NewSpec(freq, width, 1)
	if err != nil {
		t.Fatalf("NewSpec(%d, %d) = %v", freq, width, err)
	}
	return s
}

func newFake(t *testing.T, st FakeState) (*Fake, string) {
	t.Helper()
	dir := sockDir(t)
	f, err := NewFake(dir, "wlan0", st)
	if err != nil {
		t.Fatalf("NewFake() = %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return f, dir
}

func dial(t *testing.T, f *Fake, dir string, opts Options) *Client {
	t.Helper()
	opts.LocalDir = dir
	c, err := Dial(context.Background(), f.Path(), opts)
	if err != nil {
		t.Fatalf("Dial(%s) = %v", f.Path(), err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func nextEvent(t *testing.T, c *Client, name string) Event {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				t.Fatalf("Events() closed while waiting for %s", name)
			}
			if ev.Name == name {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %s event within 5s", name)
		}
	}
}

func TestClientStatusAndPing(t *testing.T) {
	f, dir := newFake(t, FakeState{Spec: spec(t, 5180, 80), SSIDs: []string{"home", "guest"}})
	c := dial(t, f, dir, Options{})
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatalf("Status() = %v", err)
	}
	got, err := st.Spec()
	if err != nil || got != spec(t, 5180, 80) {
		t.Errorf("Status().Spec() = %v, %v; want 36/80", got, err)
	}
	if len(st.BSS) != 2 || st.BSS[1].SSID != "guest" || st.State != "ENABLED" {
		t.Errorf("Status() = %+v; want 2 BSSes, guest second, ENABLED", st)
	}
	if err := c.Ping(context.Background()); err != nil {
		t.Errorf("Ping() = %v", err)
	}
}

func TestClientErrors(t *testing.T) {
	f, dir := newFake(t, FakeState{Spec: spec(t, 2437, 20), SSIDs: []string{"x"}})
	c := dial(t, f, dir, Options{})
	_, err := c.Request(context.Background(), "FROBNICATE now")
	if !errors.Is(err, ErrUnknownCommand) {
		t.Errorf("Request(FROBNICATE) = %v; want ErrUnknownCommand", err)
	}
	err = c.ChanSwitch(context.Background(), ChanSwitch{Count: 5, Spec: chanplan.Spec{Freq: 5180, Width: 80, Center1: 5290}})
	if err == nil || !strings.Contains(err.Error(), "spec") {
		t.Errorf("ChanSwitch(bad spec) = %v; want a spec error", err)
	}
	f.Handle("CHAN_SWITCH", func(*Fake, string, *net.UnixAddr) (string, bool) { return "FAIL\n", true })
	err = c.ChanSwitch(context.Background(), ChanSwitch{Count: 5, Spec: spec(t, 2462, 20)})
	if !errors.Is(err, ErrFail) {
		t.Errorf("ChanSwitch() with FAIL reply = %v; want ErrFail", err)
	}
	if _, err := c.Request(context.Background(), strings.Repeat("x", 5000)); err == nil {
		t.Errorf("Request(5000 bytes) = nil; want a size error")
	}
}

// Events interleave with replies on one socket: hostapd may queue events before the reply.
func TestClientEventsInterleavedWithReplies(t *testing.T) {
	f, dir := newFake(t, FakeState{Spec: spec(t, 2437, 20), SSIDs: []string{"x"}})
	c := dial(t, f, dir, Options{})
	if err := c.Attach(context.Background()); err != nil {
		t.Fatalf("Attach() = %v", err)
	}
	f.Handle("STATUS", func(f *Fake, req string, from *net.UnixAddr) (string, bool) {
		for i := 0; i < 3; i++ {
			f.Emit(fmt.Sprintf("AP-STA-CONNECTED 02:00:00:00:0%d:00", i))
		}
		return f.Default(req, from), true
	})
	st, err := c.Status(context.Background())
	if err != nil || st.Freq != 2437 {
		t.Fatalf("Status() = %+v, %v; want freq 2437", st, err)
	}
	for i := 0; i < 3; i++ {
		ev := nextEvent(t, c, EventSTAConnected)
		if want := fmt.Sprintf("02:00:00:00:0%d:00", i); ev.Addr.String() != want {
			t.Errorf("event %d addr = %s; want %s", i, ev.Addr, want)
		}
	}
}

func TestClientConcurrent(t *testing.T) {
	f, dir := newFake(t, FakeState{Spec: spec(t, 2437, 20), SSIDs: []string{"x"}})
	c := dial(t, f, dir, Options{})
	if err := c.Attach(context.Background()); err != nil {
		t.Fatalf("Attach() = %v", err)
	}
	stop := make(chan struct{})
	var emitter sync.WaitGroup
	emitter.Add(1)
	go func() {
		defer emitter.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			f.Emit(fmt.Sprintf("AP-STA-DISCONNECTED 02:00:00:00:00:%02x", i%256))
			time.Sleep(50 * time.Microsecond)
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				if i%2 == 0 {
					if err := c.Ping(context.Background()); err != nil {
						errs <- err
						return
					}
					continue
				}
				st, err := c.Status(context.Background())
				if err != nil || st.Freq != 2437 {
					errs <- fmt.Errorf("Status() = %+v, %v", st.Freq, err)
					return
				}
			}
		}()
	}
	drained := make(chan int)
	go func() {
		n := 0
		for range c.Events() {
			n++
		}
		drained <- n
	}()
	wg.Wait()
	close(stop)
	emitter.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	c.Close()
	if n := <-drained; n == 0 {
		t.Errorf("received %d events while requests ran; want some", n)
	}
}

// A request whose reply never comes must not shift later replies: the late reply of the
// abandoned request arrives on a socket the client no longer uses.
func TestClientTimeoutRebindsAndReattaches(t *testing.T) {
	f, dir := newFake(t, FakeState{Spec: spec(t, 2437, 20), SSIDs: []string{"x"}})
	c := dial(t, f, dir, Options{Timeout: 100 * time.Millisecond})
	if err := c.Attach(context.Background()); err != nil {
		t.Fatalf("Attach() = %v", err)
	}
	late := make(chan struct{})
	f.Handle("STATUS", func(f *Fake, req string, from *net.UnixAddr) (string, bool) {
		go func() {
			time.Sleep(300 * time.Millisecond)
			_ = f.Send(from, "state=STALE\nfreq=1\n")
			close(late)
		}()
		return "", false
	})
	_, err := c.Status(context.Background())
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Status() with no reply = %v; want ErrTimeout", err)
	}
	f.Handle("STATUS", nil)
	<-late
	for i := 0; i < 3; i++ {
		st, err := c.Status(context.Background())
		if err != nil || st.State != "ENABLED" {
			t.Fatalf("Status() after timeout = %q, %v; want ENABLED (not the stale reply)", st.State, err)
		}
	}
	nextEvent(t, c, EventReattached)
	if got := f.Monitors(); got != 2 {
		// The old socket stays registered in the fake (hostapd drops it after send errors).
		t.Logf("fake has %d monitors", got)
	}
	f.Emit("AP-STA-CONNECTED 02:00:00:00:07:00")
	if ev := nextEvent(t, c, EventSTAConnected); ev.Addr.String() != "02:00:00:00:07:00" {
		t.Errorf("event after re-attach = %v; want AP-STA-CONNECTED 02:00:00:00:07:00", ev)
	}
}

func TestClientContextCancel(t *testing.T) {
	f, dir := newFake(t, FakeState{Spec: spec(t, 2437, 20), SSIDs: []string{"x"}})
	c := dial(t, f, dir, Options{})
	f.Handle("STATUS", func(*Fake, string, *net.UnixAddr) (string, bool) { return "", false })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Status(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Status(ctx 50ms) = %v; want context.DeadlineExceeded", err)
	}
	if err := c.Ping(context.Background()); err != nil {
		t.Errorf("Ping() after cancel = %v", err)
	}
}

// hostapd restarting replaces the socket at the same path; the client reconnects.
func TestClientReconnectsAfterRestart(t *testing.T) {
	dir := sockDir(t)
	f, err := NewFake(dir, "wlan0", FakeState{Spec: spec(t, 2437, 20), SSIDs: []string{"x"}})
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, f, dir, Options{Timeout: time.Second})
	if err := c.Attach(context.Background()); err != nil {
		t.Fatalf("Attach() = %v", err)
	}
	f.Close()
	f2, err := NewFake(dir, "wlan0", FakeState{Spec: spec(t, 2462, 20), SSIDs: []string{"x"}})
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	st, err := c.Status(context.Background())
	if err != nil || st.Freq != 2462 {
		t.Fatalf("Status() after restart = %d, %v; want 2462", st.Freq, err)
	}
	nextEvent(t, c, EventReattached)
	if f2.Monitors() != 1 {
		t.Errorf("restarted hostapd has %d monitors; want 1 (re-attached)", f2.Monitors())
	}
}

func TestClientChanSwitch(t *testing.T) {
	f, dir := newFake(t, FakeState{Spec: spec(t, 5180, 80), SSIDs: []string{"x"}})
	c := dial(t, f, dir, Options{})
	if err := c.Attach(context.Background()); err != nil {
		t.Fatal(err)
	}
	target := spec(t, 5745, 80)
	if err := c.ChanSwitch(context.Background(), ChanSwitch{Count: 5, Spec: target}); err != nil {
		t.Fatalf("ChanSwitch(%v) = %v", target, err)
	}
	started, ok := nextEvent(t, c, EventChannelSwitchStarted).ChannelSwitch()
	if !ok || started.Freq != 5745 || started.Width != 80 || started.CF1 != 5775 || started.Finished {
		t.Errorf("STARTED-CHANNEL-SWITCH = %+v, %v; want 5745/80 cf1 5775", started, ok)
	}
	fin, ok := nextEvent(t, c, EventCSAFinished).ChannelSwitch()
	if !ok || fin.Freq != 5745 || !fin.Finished {
		t.Errorf("AP-CSA-FINISHED = %+v, %v; want freq 5745", fin, ok)
	}
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := st.Spec(); got != target {
		t.Errorf("Status().Spec() after switch = %v; want %v", got, target)
	}
	want := "CHAN_SWITCH 5 5745 center_freq1=5775 sec_channel_offset=1 bandwidth=80 ht vht"
	cmds := f.Commands()
	found := false
	for _, cmd := range cmds {
		found = found || cmd == want
	}
	if !found {
		t.Errorf("commands = %q; want one %q", cmds, want)
	}
}

func TestClientStationsAndSteering(t *testing.T) {
	f, dir := newFake(t, FakeState{Spec: spec(t, 5180, 80), SSIDs: []string{"x"}})
	c := dial(t, f, dir, Options{})
	a := net.HardwareAddr{2, 0, 0, 0, 1, 0}
	b := net.HardwareAddr{2, 0, 0, 0, 2, 0}
	f.AddStation(a, "signal=-51", "ext_capab=0000080000000040", "rx_bytes=1000")
	f.AddStation(b, "signal=-70")
	stas, err := c.Stations(context.Background())
	if err != nil || len(stas) != 2 {
		t.Fatalf("Stations() = %v, %v; want 2", stas, err)
	}
	if stas[0].Addr.String() != a.String() || stas[0].Signal != -51 || !stas[0].BSSTransition() || !stas[0].HasFlag("AUTHORIZED") || stas[0].RxBytes != 1000 {
		t.Errorf("Stations()[0] = %+v; want %s signal -51 with BSS transition", stas[0], a)
	}
	if stas[1].BSSTransition() {
		t.Errorf("Stations()[1].BSSTransition() = true; want false")
	}
	nr := NeighborReport{BSSID: net.HardwareAddr{2, 0, 0, 0, 9, 0}, BSSIDInfo: BSSIDInfoReachable | BSSIDInfoSecurity, OpClass: 128, Channel: 36, PHYType: PHYTypeVHT}
	if err := c.SetNeighbor(context.Background(), "home", nr); err != nil {
		t.Errorf("SetNeighbor() = %v", err)
	}
	if got := f.Neighbors()["02:00:00:00:09:00"]; got != "02:00:00:00:09:00 ssid=686f6d65 nr=02000000090007000000802409" {
		t.Errorf("SET_NEIGHBOR sent %q", got)
	}
	if err := c.BSSTMReq(context.Background(), BSSTMRequest{Addr: a, Candidates: []NeighborReport{nr}, DisassocImminent: true, DisassocTimer: 20}); err != nil {
		t.Errorf("BSSTMReq() = %v", err)
	}
	tok, err := c.ReqBeacon(context.Background(), a, 0, BeaconRequest(115, 0, 100, 1, nil))
	if err != nil || tok != 1 {
		t.Errorf("ReqBeacon() = %d, %v; want token 1", tok, err)
	}
	if err := c.BSSTMReq(context.Background(), BSSTMRequest{Addr: net.HardwareAddr{2, 0, 0, 0, 3, 0}}); !errors.Is(err, ErrFail) {
		t.Errorf("BSSTMReq(unknown station) = %v; want ErrFail", err)
	}
	if err := c.Attach(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := c.Deauthenticate(context.Background(), b, 3); err != nil {
		t.Errorf("Deauthenticate() = %v", err)
	}
	if ev := nextEvent(t, c, EventSTADisconnected); ev.Addr.String() != b.String() {
		t.Errorf("AP-STA-DISCONNECTED for %s; want %s", ev.Addr, b)
	}
	if _, err := c.Station(context.Background(), b); !errors.Is(err, ErrFail) {
		t.Errorf("Station(deauthenticated) = %v; want ErrFail", err)
	}
}

func TestClientClose(t *testing.T) {
	f, dir := newFake(t, FakeState{Spec: spec(t, 2437, 20), SSIDs: []string{"x"}})
	c := dial(t, f, dir, Options{})
	if err := c.Attach(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
	if _, ok := <-c.Events(); ok {
		t.Errorf("Events() open after Close")
	}
	if f.Monitors() != 0 {
		t.Errorf("Close() left %d monitors attached; want DETACH", f.Monitors())
	}
	if err := c.Ping(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Ping() after Close = %v; want ErrClosed", err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "meshroot-hapd-") {
			t.Errorf("Close() left socket file %s", e.Name())
		}
	}
}
