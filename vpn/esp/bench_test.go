package esp

import (
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

var benchSuites = []Suite{
	SuiteAES128GCM16,
	SuiteAES256GCM16,
	SuiteAES128CBCSHA1,
	SuiteAES256CBCSHA256,
	{Encr: EncrAESCBC, KeyBits: 256, Integ: AuthHMACSHA384192},
	{Encr: EncrAESCBC, KeyBits: 256, Integ: AuthHMACSHA512256},
}

// BenchmarkSeal seals one inner packet in place per op; it must not allocate.
func BenchmarkSeal(b *testing.B) {
	for _, s := range benchSuites {
		for _, n := range []int{64, 1400} {
			b.Run(s.String()+"/"+itoa(n), func(b *testing.B) {
				sa := mustSA(b, testParams(b, 1, s, 1))
				buf := make([]byte, outOffset+n+MaxTrailerLen)
				buf[outOffset] = 0x45
				for range 2 { // first-use allocations (HMAC keeps its keyed state on first Reset)
					if _, err := sa.SealInPlace(buf, outOffset, n, NextHeaderIPv4); err != nil {
						b.Fatal(err)
					}
				}
				b.SetBytes(int64(n))
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, err := sa.SealInPlace(buf, outOffset, n, NextHeaderIPv4); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
			})
		}
	}
}

// BenchmarkOpen authenticates and decrypts one ESP packet per op (out of place, as the receive
// path does); it must not allocate.
func BenchmarkOpen(b *testing.B) {
	for _, s := range benchSuites {
		for _, n := range []int{64, 1400} {
			b.Run(s.String()+"/"+itoa(n), func(b *testing.B) {
				p := testParams(b, 1, s, 1)
				out, in := mustSA(b, p), mustSA(b, p)
				inner := make([]byte, n)
				inner[0] = 0x45
				pkt, err := out.Seal(nil, inner, NextHeaderIPv4)
				if err != nil {
					b.Fatal(err)
				}
				dst := make([]byte, 0, len(pkt))
				for range 2 { // first-use allocations, as in BenchmarkSeal
					in.replay.top, in.replay.bits[0] = 0, 0
					if _, _, err := in.Open(dst, pkt); err != nil {
						b.Fatal(err)
					}
				}
				b.SetBytes(int64(n))
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					in.replay.top = 0 // the same packet again: not a replay for the benchmark
					in.replay.bits[0] = 0
					if _, _, err := in.Open(dst, pkt); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
			})
		}
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

// benchTUN feeds the same inner packet to the sender as fast as it asks, remaining times, and
// counts what is written to it; it allocates nothing.
type benchTUN struct {
	pkt       []byte
	batch     int
	remaining atomic.Int64
	written   atomic.Int64
	target    int64
	done      chan struct{}
	closed    chan struct{}
}

func (t *benchTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	for t.remaining.Load() <= 0 {
		select {
		case <-t.closed:
			return 0, os.ErrClosed
		case <-time.After(time.Millisecond):
		}
	}
	n := 0
	for n < len(bufs) && n < t.batch && t.remaining.Add(-1) >= 0 {
		sizes[n] = copy(bufs[n][offset:], t.pkt)
		n++
	}
	return n, nil
}

func (t *benchTUN) Write(bufs [][]byte, offset int) (int, error) {
	if t.written.Add(int64(len(bufs))) >= t.target && t.target > 0 {
		select {
		case t.done <- struct{}{}:
		default:
		}
	}
	return len(bufs), nil
}

func (t *benchTUN) BatchSize() int    { return t.batch }
func (t *benchTUN) MTU() (int, error) { return 1500, nil }
func (t *benchTUN) Close() error {
	select {
	case <-t.closed:
	default:
		close(t.closed)
	}
	return nil
}

// benchConn replays pre-sealed datagrams (sequence numbers 1..len) to the receiver, resetting
// the SA's replay window each batch (it runs on the receive goroutine, like Open), and counts
// what the sender writes. With gro, each batch is one coalesced message.
type benchConn struct {
	local   netip.AddrPort
	pkts    [][]byte
	sa      *SA
	gro     bool
	sent    atomic.Int64
	target  int64
	done    chan struct{}
	closed  chan struct{}
	readsOn atomic.Bool
}

func (c *benchConn) ReadBatch(msgs []RecvMsg) (int, error) {
	for !c.readsOn.Load() {
		select {
		case <-c.closed:
			return 0, os.ErrClosed
		case <-time.After(time.Millisecond):
		}
	}
	c.sa.replay.top = 0
	clear(c.sa.replay.bits)
	if c.gro {
		m := &msgs[0]
		m.N, m.Seg, m.From, m.Truncated = 0, len(c.pkts[0]), c.local, false
		for _, p := range c.pkts {
			m.N += copy(m.Buf[m.N:], p)
		}
		return 1, nil
	}
	n := min(len(msgs), len(c.pkts))
	for i := 0; i < n; i++ {
		msgs[i].N = copy(msgs[i].Buf, c.pkts[i])
		msgs[i].Seg, msgs[i].From, msgs[i].Truncated = 0, c.local, false
	}
	return n, nil
}

func (c *benchConn) NewWriter() BatchWriter    { return (*benchWriter)(c) }
func (c *benchConn) LocalAddr() netip.AddrPort { return c.local }
func (c *benchConn) GRO() bool                 { return c.gro }
func (c *benchConn) Close() error {
	select {
	case <-c.closed:
	default:
		close(c.closed)
	}
	return nil
}

type benchWriter benchConn

func (w *benchWriter) WriteBatch(dst netip.AddrPort, pkts [][]byte) error {
	if w.sent.Add(int64(len(pkts))) >= w.target && w.target > 0 {
		select {
		case w.done <- struct{}{}:
		default:
		}
	}
	return nil
}

// BenchmarkPipelineSend measures the sending goroutine without syscalls: TUN batch in, MSS
// check, seal, batch out. allocs/op is per packet.
func BenchmarkPipelineSend(b *testing.B) {
	for _, n := range []int{64, 1400} {
		b.Run(itoa(n), func(b *testing.B) {
			conn := &benchConn{local: addrA, done: make(chan struct{}, 1), closed: make(chan struct{})}
			m := NewMux(conn, MuxConfig{Logger: quietLog})
			defer m.Close()
			inner := udp4(1, n)
			tun := &benchTUN{pkt: inner, batch: 64, done: make(chan struct{}, 1), closed: make(chan struct{})}
			tt, err := m.NewTunnel(TunnelConfig{TUN: tun, Remote: addrB})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := tt.SetOutbound(testParams(b, 1, SuiteAES256GCM16, 1)); err != nil {
				b.Fatal(err)
			}
			conn.target = int64(b.N)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			b.ResetTimer()
			tun.remaining.Store(int64(b.N))
			<-conn.done
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
		})
	}
}

// BenchmarkPipelineReceive measures the receive goroutine without syscalls: classify, SPI
// lookup, replay check, open, MSS check, TUN batch.
func BenchmarkPipelineReceive(b *testing.B) {
	for _, gro := range []bool{false, true} {
		for _, n := range []int{64, 1400} {
			name := itoa(n)
			if gro {
				name += "/gro"
			}
			b.Run(name, func(b *testing.B) {
				p := testParams(b, 0x1000, SuiteAES256GCM16, 1)
				out := mustSA(b, p)
				var pkts [][]byte
				for i := 0; i < 64; i++ {
					pkt, err := out.Seal(nil, udp4(uint16(i), n), NextHeaderIPv4)
					if err != nil {
						b.Fatal(err)
					}
					pkts = append(pkts, pkt)
				}
				conn := &benchConn{local: addrB, pkts: pkts, gro: gro, done: make(chan struct{}, 1), closed: make(chan struct{})}
				m := NewMux(conn, MuxConfig{Logger: quietLog})
				defer m.Close()
				tun := &benchTUN{batch: 64, done: make(chan struct{}, 1), closed: make(chan struct{})}
				tt, err := m.NewTunnel(TunnelConfig{TUN: tun, Remote: addrA})
				if err != nil {
					b.Fatal(err)
				}
				if conn.sa, err = tt.AddInbound(p); err != nil {
					b.Fatal(err)
				}
				tun.target = int64(b.N)
				b.SetBytes(int64(n))
				b.ReportAllocs()
				b.ResetTimer()
				conn.readsOn.Store(true)
				<-tun.done
				b.StopTimer()
				conn.readsOn.Store(false)
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
			})
		}
	}
}
