package medium

import (
	"context"
	"encoding/binary"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
)

var bcast = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

func perm(i int) [6]byte { p, _ := RadioAddrs(i); return p }
func ident(i int) Addr   { _, a := RadioAddrs(i); return a }

// mgmt builds a management frame.
func mgmt(sub int, a1, a2, a3 [6]byte, body ...byte) []byte {
	b := make([]byte, 24, 24+len(body))
	binary.LittleEndian.PutUint16(b, uint16(sub<<4))
	copy(b[4:], a1[:])
	copy(b[10:], a2[:])
	copy(b[16:], a3[:])
	return append(b, body...)
}

func auth(a1, a2 [6]byte, alg, seq, status int) []byte {
	body := make([]byte, 6)
	binary.LittleEndian.PutUint16(body, uint16(alg))
	binary.LittleEndian.PutUint16(body[2:], uint16(seq))
	binary.LittleEndian.PutUint16(body[4:], uint16(status))
	return mgmt(SubAuth, a1, a2, a1, body...)
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// setup runs a medium over a fake kernel with radios phy0 at the origin, phy1 5 m away and
// phy2 400 m away.
func setup(t *testing.T, tap func(FrameEvent)) (*FakeKernel, *Space, *clock) {
	t.Helper()
	k := NewFakeKernel(3)
	sp := NewSpace()
	sp.Place("phy0", Pos{})
	sp.Place("phy1", Pos{X: 5})
	sp.Place("phy2", Pos{X: 400})
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m, err := New(k, Config{Model: sp, Now: clk.now, Seed: 1, Tap: tap})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan struct{})
	go func() { done <- m.Run(ctx, func() { close(ready) }) }()
	<-ready
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
	})
	return k, sp, clk
}

// waitStatuses waits until the kernel has n transmit statuses.
func waitStatuses(t *testing.T, k *FakeKernel, n int) []TxStatus {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		if s := k.Statuses(); len(s) >= n {
			return s
		}
		select {
		case <-k.Notify():
		case <-deadline:
			t.Fatalf("got %d transmit statuses; want %d", len(k.Statuses()), n)
		}
	}
}

func TestBeaconSignalByDistance(t *testing.T) {
	k, _, _ := setup(t, nil)
	k.Transmit(0, mgmt(SubBeacon, bcast, perm(0), perm(0), make([]byte, 12)...), 5180, 7, true)
	st := waitStatuses(t, k, 1)
	if st[0].Cookie != 7 || st[0].Tx != ident(0) || st[0].Acked() {
		t.Errorf("status = %+v; want cookie 7 from radio 0, not acked", st[0])
	}
	d := k.Deliveries()
	if len(d) != 1 || d[0].Rx != ident(1) {
		t.Fatalf("deliveries = %+v; want one, to radio 1 (radio 2 is out of range)", d)
	}
	want := 20 - PathLoss(5, 5180, 3)
	if math.Abs(float64(d[0].Signal)-want) > 0.6 || d[0].Freq != 5180 {
		t.Errorf("delivery signal %d dBm at %d MHz; want %.0f at 5180", d[0].Signal, d[0].Freq, want)
	}
	if d[0].Rate < 0 || d[0].Rate > 7 {
		t.Errorf("delivery rate index %d; want an OFDM index 0..7 on 5 GHz", d[0].Rate)
	}
}

func TestUnicastAck(t *testing.T) {
	var mu sync.Mutex
	var taps []FrameEvent
	k, sp, _ := setup(t, func(ev FrameEvent) { mu.Lock(); taps = append(taps, ev); mu.Unlock() })
	// Station (radio 1) authenticates with the AP (radio 0): acknowledged, one attempt.
	k.Transmit(1, auth(perm(0), perm(1), AuthFT, 1, 0), 5180, 1, false)
	st := waitStatuses(t, k, 1)
	if !st[0].Acked() || st[0].Rates[0].Count != 1 || st[0].Rates[1].Idx != -1 {
		t.Errorf("status = %+v; want acked at the first attempt", st[0])
	}
	d := k.Deliveries()
	if len(d) != 1 || d[0].Rx != ident(0) {
		t.Errorf("deliveries = %+v; want the AP only", d)
	}
	// Out of range: never acknowledged, every attempt used.
	sp.Place("phy1", Pos{X: 1000})
	k.Transmit(1, auth(perm(0), perm(1), AuthFT, 1, 0), 5180, 2, false)
	st = waitStatuses(t, k, 2)
	if st[1].Acked() || st[1].Rates[0].Count != 3 {
		t.Errorf("status = %+v; want no ack after 3 attempts", st[1])
	}
	// The tap follows the transmit status.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		mu.Lock()
		n := len(taps)
		mu.Unlock()
		if n >= 2 {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(taps) != 2 || taps[0].Info.Name() != "auth(FT,1,0)" || !taps[0].Acked || taps[0].Rx != "phy0" || taps[1].Acked {
		t.Errorf("taps = %+v", taps)
	}
	for i, ev := range taps {
		if ev.Took <= 0 {
			t.Errorf("taps[%d].Took = %v; want the medium's time on the frame", i, ev.Took)
		}
	}
}

func TestLearnsAddresses(t *testing.T) {
	k, _, _ := setup(t, nil)
	vif := [6]byte{0x02, 0xaa, 0, 0, 0, 1}
	// Radio 0 announces a second interface address; a unicast to it is acknowledged.
	k.Inject(Event{MAC: &MACUpdate{Radio: ident(0), Addr: vif, Add: true}})
	k.Transmit(1, auth(vif, perm(1), AuthOpen, 1, 0), 2412, 1, false)
	st := waitStatuses(t, k, 1)
	if !st[0].Acked() {
		t.Errorf("unicast to an announced address not acknowledged: %+v", st[0])
	}
	// Radio 1 sends from a new address (a randomised one); radio 0's answer to it is acked.
	rnd := [6]byte{0x06, 1, 2, 3, 4, 5}
	k.Transmit(1, mgmt(SubProbeReq, bcast, rnd, bcast), 2412, 2, true)
	k.Transmit(0, mgmt(SubProbeResp, rnd, perm(0), perm(0), make([]byte, 12)...), 2412, 3, false)
	st = waitStatuses(t, k, 3)
	if !st[2].Acked() {
		t.Errorf("unicast to a learned address not acknowledged: %+v", st[2])
	}
	// A frame to an address nobody uses is not.
	k.Transmit(1, auth([6]byte{0x02, 9, 9, 9, 9, 9}, perm(1), AuthOpen, 1, 0), 2412, 4, false)
	st = waitStatuses(t, k, 4)
	if st[3].Acked() {
		t.Errorf("unicast to nobody acknowledged: %+v", st[3])
	}
}

func TestWalk(t *testing.T) {
	k, sp, clk := setup(t, nil)
	start := clk.now()
	// Radio 2 walks from 400 m to 10 m from the AP in 10 s.
	sp.Walk("phy2", start, []Waypoint{{At: 0, Pos: Pos{X: 400}}, {At: 10 * time.Second, Pos: Pos{X: 10}}})
	sig := func() int {
		n := len(k.Statuses())
		k.Transmit(0, mgmt(SubBeacon, bcast, perm(0), perm(0), make([]byte, 12)...), 5180, uint64(n+1), true)
		waitStatuses(t, k, n+1)
		for _, d := range k.Deliveries() {
			if d.Rx == ident(2) {
				return d.Signal
			}
		}
		return 0
	}
	if s := sig(); s != 0 {
		t.Errorf("at 400 m: heard at %d dBm; want nothing", s)
	}
	clk.add(10 * time.Second)
	want := int(math.Round(20 - PathLoss(10, 5180, 3)))
	if s := sig(); s != want {
		t.Errorf("after the walk: %d dBm; want %d", s, want)
	}
	if p, _ := sp.Position("phy2", start.Add(5*time.Second)); math.Abs(p.X-205) > 1e-9 {
		t.Errorf("Position(5 s) = %v; want x=205", p)
	}
}

func TestSpaceWallsAndCut(t *testing.T) {
	sp := NewSpace()
	sp.WallsX = []float64{10}
	sp.Place("a", Pos{})
	sp.Place("b", Pos{X: 20})
	now := time.Now()
	base := 20 - PathLoss(20, 2437, 3)
	if got := sp.Signal("a", "b", 2437, now); math.Abs(got-(base-5)) > 1e-9 {
		t.Errorf("Signal through a wall = %v; want %v", got, base-5)
	}
	sp.SetExtraLoss("b", "a", 10)
	if got := sp.Signal("a", "b", 2437, now); math.Abs(got-(base-15)) > 1e-9 {
		t.Errorf("Signal with extra loss = %v; want %v", got, base-15)
	}
	sp.Cut("a", "b", true)
	if got := sp.Signal("b", "a", 2437, now); got != Unreachable {
		t.Errorf("Signal over a cut link = %v; want Unreachable", got)
	}
	if got := sp.Signal("a", "nowhere", 2437, now); got != Unreachable {
		t.Errorf("Signal to an unplaced radio = %v", got)
	}
}

func TestParseTxFrame(t *testing.T) {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.NativeEndian
	tx := ident(3)
	frame := auth(perm(0), perm(3), AuthFT, 1, 0)
	ae.Bytes(attrAddrTransmitter, tx[:])
	ae.Bytes(attrFrame, frame)
	ae.Uint32(attrFlags, flagReqTxStatus)
	ae.Uint32(attrFreq, 2437)
	ae.Bytes(attrTxInfo, []byte{4, 2, 0, 3, 0xff, 0, 0xff, 0})
	ae.Bytes(attrTxInfoFlags, []byte{4, 8, 0, 0, 0, 0, 0xff, 0, 0, 0xff, 0, 0})
	ae.Bytes(20, nil) // HWSIM_ATTR_PAD, as nla_put_u64_64bit may add
	ae.Uint64(attrCookie, 0x1122334455)
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseTxFrame(b)
	if err != nil {
		t.Fatalf("parseTxFrame() = %v", err)
	}
	want := TxFrame{Transmitter: tx, Frame: frame, Flags: flagReqTxStatus, Freq: 2437, Cookie: 0x1122334455,
		Rates: [maxRates]TxRate{{Idx: 4, Count: 2, Flags: rateFlagMCS}, {Idx: 0, Count: 3}, {Idx: -1}, {Idx: -1}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parseTxFrame() (-want +got):\n%s", diff)
	}
	// The delivery and TX info encodings carry what the kernel requires.
	d, _ := encodeDelivery(ident(1), frame, 2437, -61, 3)
	seen := map[uint16]bool{}
	ad, _ := netlink.NewAttributeDecoder(d)
	for ad.Next() {
		seen[ad.Type()] = true
	}
	for _, a := range []uint16{attrAddrReceiver, attrFrame, attrRxRate, attrSignal, attrFreq} {
		if !seen[a] {
			t.Errorf("delivery lacks attribute %d", a)
		}
	}
	ti, _ := encodeTxInfo(tx, 9, flagStatAck, -50, want.Rates)
	seen = map[uint16]bool{}
	ad, _ = netlink.NewAttributeDecoder(ti)
	for ad.Next() {
		seen[ad.Type()] = true
	}
	for _, a := range []uint16{attrAddrTransmitter, attrFlags, attrCookie, attrSignal, attrTxInfo} {
		if !seen[a] {
			t.Errorf("tx info lacks attribute %d", a)
		}
	}
	if _, err := parseTxFrame(b[:8]); err == nil {
		t.Errorf("parseTxFrame(truncated) = nil error")
	}
}

func TestParseFrame(t *testing.T) {
	tests := []struct {
		name  string
		frame []byte
		want  string
	}{
		{"ft auth", auth(perm(0), perm(1), AuthFT, 2, 0), "auth(FT,2,0)"},
		{"reassoc resp", mgmt(SubReassocResp, perm(1), perm(0), perm(0), 0x11, 0, 0, 0, 1, 0xc0), "reassoc-resp(0)"},
		{"deauth", mgmt(SubDeauth, perm(1), perm(0), perm(0), 3, 0), "deauth(3)"},
		{"btm request", mgmt(SubAction, perm(1), perm(0), perm(0), CatWNM, ActBTMRequest, 1), "action(10,7)"},
		{"beacon", mgmt(SubBeacon, bcast, perm(0), perm(0)), "beacon"},
		{"short body", mgmt(SubAuth, perm(0), perm(1), perm(0), 2), "auth(open,0,0)"},
	}
	for _, tt := range tests {
		f, err := ParseFrame(tt.frame)
		if err != nil || f.Name() != tt.want {
			t.Errorf("%s: ParseFrame() = %q, %v; want %q", tt.name, f.Name(), err, tt.want)
		}
	}
	for _, bad := range [][]byte{nil, {0x08, 0, 0}, mgmt(SubBeacon, bcast, bcast, bcast)[:20], {0x0c, 0, 0, 0, 1, 2, 3, 4, 5, 6}} {
		if _, err := ParseFrame(bad); err == nil {
			t.Errorf("ParseFrame(%x) = nil error", bad)
		}
	}
}

func FuzzParseTxFrame(f *testing.F) {
	ae := netlink.NewAttributeEncoder()
	tx := ident(1)
	ae.Bytes(attrAddrTransmitter, tx[:])
	ae.Bytes(attrFrame, auth(perm(0), perm(1), AuthFT, 1, 0))
	ae.Uint64(attrCookie, 1)
	ae.Bytes(attrTxInfo, make([]byte, 8))
	b, _ := ae.Encode()
	f.Add(b)
	f.Add([]byte{4, 0, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if fr, err := parseTxFrame(b); err == nil {
			_, _ = ParseFrame(fr.Frame)
		}
		_, _ = parseMACUpdate(b, true)
		_, _ = parseRadio(b)
	})
}

func FuzzParseFrame(f *testing.F) {
	f.Add(auth(perm(0), perm(1), AuthFT, 1, 0))
	f.Add(mgmt(SubAction, perm(1), perm(0), perm(0), CatWNM, ActBTMRequest))
	f.Add([]byte{0xd4, 0, 0, 0, 1, 2, 3, 4, 5, 6})
	f.Fuzz(func(t *testing.T, b []byte) {
		fi, err := ParseFrame(b)
		if err == nil {
			_ = fi.Name()
		}
	})
}
