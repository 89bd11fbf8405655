package esp

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestUDPConnLoopback sends batches over the real socket layer on loopback (no root needed):
// every datagram arrives intact, in order, with the right source and destination, with and
// without GSO/GRO.
func TestUDPConnLoopback(t *testing.T) {
	for _, tc := range []struct {
		name string
		addr string
		opts UDPOptions
	}{
		{"v4 gso gro", "127.0.0.1:0", UDPOptions{}},
		{"v4 plain", "127.0.0.1:0", UDPOptions{DisableGSO: true, DisableGRO: true}},
		{"v6 gso gro", "[::1]:0", UDPOptions{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ap := netip.MustParseAddrPort(tc.addr)
			a, err := ListenUDP(ap, tc.opts)
			if err != nil {
				if ap.Addr().Is6() {
					t.Skipf("no IPv6 loopback: %v", err)
				}
				t.Fatal(err)
			}
			defer a.Close()
			b, err := ListenUDP(ap, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if b.LocalAddr().Port() == 0 {
				t.Fatalf("LocalAddr() = %v; want a bound port", b.LocalAddr())
			}
			// Runs of equal sizes, short ones that end GSO runs, and more than one writer batch.
			var sizes []int
			for i := 0; i < 50; i++ {
				sizes = append(sizes, 1400)
			}
			sizes = append(sizes, 300, 1)
			for i := 0; i < 100; i++ {
				sizes = append(sizes, 1400)
			}
			for i := 0; i < 19; i++ {
				sizes = append(sizes, 100+i)
			}
			var pkts [][]byte
			for i, n := range sizes {
				p := make([]byte, n)
				for j := range p {
					p[j] = byte(i + j)
				}
				p[0] = byte(i)
				pkts = append(pkts, p)
			}
			w := a.NewWriter()
			if err := w.WriteBatch(b.LocalAddr(), pkts); err != nil {
				t.Fatalf("WriteBatch() = %v", err)
			}
			msgs := make([]RecvMsg, 8)
			for i := range msgs {
				msgs[i].Buf = make([]byte, 65535)
			}
			var got [][]byte
			coalesced := 0
			deadline := time.Now().Add(10 * time.Second)
			for len(got) < len(pkts) && time.Now().Before(deadline) {
				n, err := b.ReadBatch(msgs)
				if err != nil {
					t.Fatalf("ReadBatch() = %v", err)
				}
				for i := 0; i < n; i++ {
					m := &msgs[i]
					if m.Truncated {
						t.Fatalf("message %d truncated", i)
					}
					if m.From != a.LocalAddr() {
						t.Errorf("From = %v; want %v", m.From, a.LocalAddr())
					}
					if m.To != ap.Addr() {
						t.Errorf("To = %v; want %v", m.To, ap.Addr())
					}
					if m.Seg > 0 {
						coalesced++
					}
					m.Datagrams(func(d []byte) bool {
						got = append(got, append([]byte(nil), d...))
						return true
					})
				}
			}
			if len(got) != len(pkts) {
				t.Fatalf("received %d datagrams; want %d", len(got), len(pkts))
			}
			if gro := a.GRO() && !tc.opts.DisableGSO; gro && coalesced == 0 {
				t.Errorf("GSO+GRO on loopback: no coalesced message received; want some")
			} else if !gro && coalesced > 0 {
				t.Errorf("GRO off: %d coalesced messages", coalesced)
			}
			for i := range pkts {
				if !bytes.Equal(got[i], pkts[i]) {
					t.Fatalf("datagram %d: got %d bytes starting %x; want %d bytes starting %x", i, len(got[i]), got[i][:1], len(pkts[i]), pkts[i][:1])
				}
			}
		})
	}
}

func TestUDPConnErrors(t *testing.T) {
	c, err := ListenUDP(netip.MustParseAddrPort("127.0.0.1:0"), UDPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ListenUDP(c.LocalAddr(), UDPOptions{}); err == nil {
		t.Errorf("ListenUDP(port in use) = nil error")
	}
	w := c.NewWriter()
	if err := w.WriteBatch(netip.MustParseAddrPort("[::1]:4500"), [][]byte{{1}}); err == nil {
		t.Errorf("WriteBatch(IPv6 destination on an IPv4 socket) = nil error")
	}
	done := make(chan error, 1)
	go func() {
		msgs := []RecvMsg{{Buf: make([]byte, 100)}}
		_, err := c.ReadBatch(msgs)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	c.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("ReadBatch() after Close = nil error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadBatch() not unblocked by Close")
	}
	if err := w.WriteBatch(netip.MustParseAddrPort("127.0.0.1:9"), [][]byte{{1}}); err == nil {
		t.Errorf("WriteBatch() after Close = nil error")
	}
}

// TestWriterBuild checks how datagrams are grouped into GSO messages: runs of one size (at most
// 64), a shorter datagram ends a run, a longer one starts a new message.
func TestWriterBuild(t *testing.T) {
	w := (&udpConn{}).NewWriter().(*udpWriter)
	mk := func(sizes ...int) [][]byte {
		var p [][]byte
		for _, n := range sizes {
			p = append(p, make([]byte, n))
		}
		return p
	}
	rep := func(n, k int) []int {
		s := make([]int, k)
		for i := range s {
			s[i] = n
		}
		return s
	}
	for _, tc := range []struct {
		name  string
		sizes []int
		gso   bool
		want  []int // datagrams per message
	}{
		{"one", []int{100}, true, []int{1}},
		{"run", rep(1400, 10), true, []int{10}},
		{"short ends run", append(rep(1400, 3), 100, 1400), true, []int{4, 1}},
		{"longer starts new", []int{100, 100, 1400, 1400}, true, []int{2, 2}},
		{"64 max, 128 per call", rep(1000, 130), true, []int{64, 64}},
		{"payload max", rep(1500, 50), true, []int{43, 7}},
		{"no gso", rep(1400, 3), false, []int{1, 1, 1}},
	} {
		nmsg, used := w.build(mk(tc.sizes...), 0, tc.gso)
		if used != len(tc.sizes) && used < len(w.iovs) {
			t.Errorf("%s: build used %d of %d datagrams", tc.name, used, len(tc.sizes))
		}
		var got []int
		for i := 0; i < nmsg; i++ {
			got = append(got, w.count[i])
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%s: datagrams per message (-want +got):\n%s", tc.name, diff)
		}
	}
}
