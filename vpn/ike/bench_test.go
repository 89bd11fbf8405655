package ike

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"meshroot/internal/lab"
	"meshroot/internal/testenv"
)

// BenchmarkHandshake measures a full IKE_SA_INIT + IKE_AUTH between two of our Conns over the
// in-memory network (CPU cost of both ends: DH, key derivation, AUTH, SK protection).
func BenchmarkHandshake(b *testing.B) {
	for _, s := range suites {
		b.Run(s.ike, func(b *testing.B) {
			for b.Loop() {
				p := newFuzzPair(b, withSuite(s.ike, s.esp))
				p.start()
				if !p.net.run(time.Minute, p.up) {
					b.Fatal("not up")
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
				_ = p.a.c.Close(ctx)
				_ = p.b.c.Close(ctx)
				cancel()
			}
		})
	}
}

// BenchmarkChildRekey measures a CHILD rekey with PFS (CREATE_CHILD_SA + DELETE) between two
// of our Conns in memory.
func BenchmarkChildRekey(b *testing.B) {
	p := newFuzzPair(b, withSuite(suites[0].ike, suites[0].esp))
	p.start()
	if !p.net.run(time.Minute, p.up) {
		b.Fatal("not up")
	}
	for b.Loop() {
		if err := p.a.c.RekeyChild(); err != nil {
			b.Fatal(err)
		}
		p.net.run(time.Second, nil)
	}
}

// BenchmarkLabEstablish compares, in one run, how long it takes to establish an IKE SA with its
// CHILD SA against a strongSwan responder: our initiator vs a strongSwan initiator (baseline),
// same suite, same kind of namespace path. Reports medians of 10 establishments each.
func BenchmarkLabEstablish(b *testing.B) {
	testenv.Integration(b)
	testenv.Command(b, "charon")
	const rounds = 10
	l := lab.New(b)
	mkPair := func(a, c string) (*lab.NS, *lab.NS) {
		na, err := l.NewNS(a)
		if err != nil {
			b.Fatal(err)
		}
		nc, err := l.NewNS(c)
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Veth(na, "out0", nc, "out0"); err != nil {
			b.Fatal(err)
		}
		if err := na.AddAddr("out0", "198.51.100.2/24"); err != nil {
			b.Fatal(err)
		}
		if err := nc.AddAddr("out0", "198.51.100.1/24"); err != nil {
			b.Fatal(err)
		}
		return na, nc
	}
	conn := func(local, remote string) lab.Conn {
		return lab.Conn{Name: "tun1", PSK: labPSK, LocalAddrs: []string{local}, RemoteAddrs: []string{remote}}
	}
	quiet := lab.LogLevels{Default: -1, IKE: -1, KNL: -1, ESP: -1, CFG: -1}
	ctx := func() context.Context {
		c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		b.Cleanup(cancel)
		return c
	}

	// baseline: strongSwan -> strongSwan
	bi, br := mkPair("bi", "br")
	if _, err := l.StartCharon(br, lab.CharonConfig{Name: "resp", Log: quiet, Conns: []lab.Conn{conn("198.51.100.1", "198.51.100.2")}}); err != nil {
		b.Fatal(err)
	}
	swi, err := l.StartCharon(bi, lab.CharonConfig{Name: "init", Log: quiet, Conns: []lab.Conn{conn("198.51.100.2", "198.51.100.1")}})
	if err != nil {
		b.Fatal(err)
	}
	var base []time.Duration
	for range rounds {
		t0 := time.Now()
		if err := swi.Initiate(ctx(), "tun1", ""); err != nil {
			b.Fatal(err)
		}
		base = append(base, time.Since(t0))
		if err := swi.TerminateIKE(ctx(), "tun1"); err != nil {
			b.Fatal(err)
		}
	}

	// ours -> strongSwan
	oi, or := mkPair("oi", "or")
	if _, err := l.StartCharon(or, lab.CharonConfig{Name: "resp", Log: quiet, Conns: []lab.Conn{conn("198.51.100.1", "198.51.100.2")}}); err != nil {
		b.Fatal(err)
	}
	var tr *UDPTransport
	if err := oi.Do(func() error {
		var err error
		tr, err = ListenUDP(netip.MustParseAddr("198.51.100.2"), 500, 4500)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	var cur atomic.Pointer[Conn]
	tr.Serve(handlerFunc(func(p []byte, local, remote netip.AddrPort) {
		if c := cur.Load(); c != nil {
			c.HandlePacket(p, local, remote)
		}
	}))
	var ours []time.Duration
	for range rounds {
		up := make(chan struct{}, 4)
		c, err := NewConn(Config{Name: "bench", LocalAddr: netip.MustParseAddr("198.51.100.2"), RemoteAddr: netip.MustParseAddr("198.51.100.1"),
			PSK: labPSK, StartAction: StartStart},
			Options{Sender: tr, DataPlane: newFakeDP(), Logger: slog.New(slog.DiscardHandler), OnEvent: func(ev Event) {
				if ev.Type == EventChildUp {
					up <- struct{}{}
				}
			}})
		if err != nil {
			b.Fatal(err)
		}
		cur.Store(c)
		t0 := time.Now()
		c.Start()
		select {
		case <-up:
		case <-time.After(20 * time.Second):
			b.Fatal("our initiator did not come up")
		}
		ours = append(ours, time.Since(t0))
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = c.Close(cctx)
		cancel()
	}
	mb, mo := median(base), median(ours)
	b.ReportMetric(float64(mb.Microseconds())/1000, "ms/establish-strongswan")
	b.ReportMetric(float64(mo.Microseconds())/1000, "ms/establish-ours")
	b.ReportMetric(float64(mo)/float64(mb), "ours/strongswan")
}

type handlerFunc func(b []byte, local, remote netip.AddrPort)

func (f handlerFunc) HandlePacket(b []byte, local, remote netip.AddrPort) { f(b, local, remote) }

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
