package meshproto

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"meshroot/radio/chanplan"
)

var siteKey = []byte("0123456789abcdef0123456789abcdef")

func pair(t *testing.T) (*Sealer, *Opener) {
	t.Helper()
	k, err := DeriveKey(1, siteKey)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSealer(k, "node-a", nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, NewOpener(nil, k)
}

func TestSealOpen(t *testing.T) {
	s, o := pair(t)
	plan := ChannelPlan{ID: 7, Moves: []Move{{Radio: "n1/5g", Spec: chanplan.Spec{Freq: 5180, Width: 80, Center1: 5210}}}}
	b, err := s.Seal(TypeChannelPlan, plan)
	if err != nil {
		t.Fatal(err)
	}
	m, err := o.Open(b)
	if err != nil {
		t.Fatalf("Open() = %v", err)
	}
	var got ChannelPlan
	if err := m.Decode(&got); err != nil || got.ID != 7 || got.Moves[0].Spec.Center1 != 5210 || m.Sender != "node-a" || m.Type != TypeChannelPlan {
		t.Errorf("Open() = %+v / %+v, %v", m, got, err)
	}
}

func TestOpenRejects(t *testing.T) {
	s, o := pair(t)
	b, _ := s.Seal(TypeRadar, Radar{Radio: "r"})
	if _, err := o.Open(b); err != nil {
		t.Fatal(err)
	}
	// Replay.
	if _, err := o.Open(b); !errors.Is(err, ErrReplay) {
		t.Errorf("Open(replay) = %v; want ErrReplay", err)
	}
	// Forged: flip a payload byte.
	b2, _ := s.Seal(TypeRadar, Radar{Radio: "r"})
	b2[len(b2)-macLen-3] ^= 1
	if _, err := o.Open(b2); !errors.Is(err, ErrAuth) {
		t.Errorf("Open(tampered) = %v; want ErrAuth", err)
	}
	// Wrong site key.
	other, _ := DeriveKey(1, []byte("another site key of the fleet!!!"))
	so, _ := NewSealer(other, "node-a", nil)
	b3, _ := so.Seal(TypeRadar, Radar{})
	if _, err := o.Open(b3); !errors.Is(err, ErrAuth) {
		t.Errorf("Open(other site) = %v; want ErrAuth", err)
	}
	// Unknown key id.
	k9, _ := DeriveKey(9, siteKey)
	s9, _ := NewSealer(k9, "node-a", nil)
	b4, _ := s9.Seal(TypeRadar, Radar{})
	if _, err := o.Open(b4); !errors.Is(err, ErrAuth) {
		t.Errorf("Open(key 9) = %v; want ErrAuth", err)
	}
	// Truncated and garbage.
	for _, bad := range [][]byte{nil, b[:10], append([]byte("XXXX"), b[4:]...), b[:len(b)-1]} {
		if _, err := o.Open(bad); !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrAuth) {
			t.Errorf("Open(%d bytes) = %v; want ErrMalformed or ErrAuth", len(bad), err)
		}
	}
	if _, err := DeriveKey(1, []byte("short")); err == nil {
		t.Errorf("DeriveKey(5 bytes) = nil error")
	}
}

func TestReplayWindow(t *testing.T) {
	s, o := pair(t)
	var msgs [][]byte
	for i := 0; i < 2000; i++ {
		b, _ := s.Seal(TypeRadar, Radar{})
		msgs = append(msgs, b)
	}
	// Out of order within the window is fine, once.
	for _, i := range []int{5, 3, 4, 1000, 999, 10} {
		if _, err := o.Open(msgs[i]); err != nil {
			t.Errorf("Open(seq %d) = %v", i+1, err)
		}
	}
	if _, err := o.Open(msgs[3]); !errors.Is(err, ErrReplay) {
		t.Errorf("Open(seq 4 again) = %v; want ErrReplay", err)
	}
	if _, err := o.Open(msgs[1999]); err != nil {
		t.Fatal(err)
	}
	// seq 11 is now 1989 behind the top: outside the 1024 window.
	if _, err := o.Open(msgs[10]); !errors.Is(err, ErrReplay) {
		t.Errorf("Open(seq 11 behind window) = %v; want ErrReplay", err)
	}
	if _, err := o.Open(msgs[1500]); err != nil {
		t.Errorf("Open(seq 1501, inside window) = %v", err)
	}
	// A restarted sender (new epoch) is accepted; the old epoch no longer.
	k, _ := DeriveKey(1, siteKey)
	s2, _ := NewSealer(k, "node-a", nil)
	s2.epoch = s.epoch + 1
	b, _ := s2.Seal(TypeRadar, Radar{})
	if _, err := o.Open(b); err != nil {
		t.Errorf("Open(new epoch) = %v", err)
	}
	if _, err := o.Open(msgs[1600]); !errors.Is(err, ErrReplay) {
		t.Errorf("Open(old epoch) = %v; want ErrReplay", err)
	}
}

func TestMaxAge(t *testing.T) {
	k, _ := DeriveKey(1, siteKey)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s, _ := NewSealer(k, "a", func() time.Time { return now.Add(-10 * time.Minute) })
	o := NewOpener(func() time.Time { return now }, k)
	o.MaxAge = 5 * time.Minute
	b, _ := s.Seal(TypeRadar, Radar{})
	if _, err := o.Open(b); !errors.Is(err, ErrReplay) {
		t.Errorf("Open(10 min old) = %v; want ErrReplay", err)
	}
}

func TestConnOverUDP(t *testing.T) {
	k, _ := DeriveKey(1, siteKey)
	pa, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pb, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sa, _ := NewSealer(k, "a", nil)
	sb, _ := NewSealer(k, "b", nil)
	a := NewConn(pa, sa, NewOpener(nil, k), nil)
	b := NewConn(pb, sb, NewOpener(nil, k), nil)
	defer a.Close()
	defer b.Close()
	// Garbage first: counted and skipped.
	if _, err := pa.WriteTo([]byte("hello"), pb.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if err := a.Send(b.LocalAddr(), TypeRadioReport, RadioReport{Node: "a"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, from, err := b.Receive(ctx)
	if err != nil {
		t.Fatalf("Receive() = %v", err)
	}
	var r RadioReport
	if err := m.Decode(&r); err != nil || r.Node != "a" || from.String() != pa.LocalAddr().String() {
		t.Errorf("Receive() = %+v from %v, %v", r, from, err)
	}
	if b.Dropped.Load() != 1 {
		t.Errorf("Dropped = %d; want 1", b.Dropped.Load())
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if _, _, err := b.Receive(ctx2); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Receive(no traffic) = %v; want deadline", err)
	}
	// A later Receive (a restarted service on the same socket) still gets messages.
	if err := a.Send(b.LocalAddr(), TypeRadioReport, RadioReport{Node: "a"}); err != nil {
		t.Fatal(err)
	}
	ctx3, cancel3 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel3()
	if _, _, err := b.Receive(ctx3); err != nil {
		t.Errorf("Receive() after a cancelled Receive = %v", err)
	}
}

func FuzzOpen(f *testing.F) {
	k, _ := DeriveKey(1, siteKey)
	s, _ := NewSealer(k, "node-a", nil)
	b, _ := s.Seal(TypeChannelPlan, ChannelPlan{ID: 1})
	f.Add(b)
	f.Add([]byte("MRC1"))
	f.Fuzz(func(t *testing.T, data []byte) {
		o := NewOpener(nil, k)
		m, err := o.Open(data)
		if err != nil {
			return
		}
		var v ChannelPlan
		_ = m.Decode(&v)
	})
}
