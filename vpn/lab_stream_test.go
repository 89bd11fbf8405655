package vpn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"meshroot/internal/lab"
)

// Traffic generators for failover measurements, run by the test process with sockets made
// inside lab namespaces (NS.Do): a paced TCP stream whose receiver checks a sequence number
// in every chunk, and a one-way UDP probe stream (site → cloud) whose receiver records arrival
// times. The gap of a stream is the longest time between two consecutive arrivals.

const chunk = 1024

// tcpStream is a paced TCP transfer from the client namespace to a server address.
type tcpStream struct {
	conn     net.Conn
	ln       net.Listener
	sent     atomic.Uint64
	received atomic.Uint64
	mu       sync.Mutex
	arrivals []time.Time // one per chunk received
	errMu    sync.Mutex
	err      error
	stop     chan struct{}
	done     sync.WaitGroup
}

// startTCPStream listens on server (in srvNS), connects from clientNS, and sends a chunk every
// interval until stopped.
func startTCPStream(t *testing.T, clientNS, srvNS *lab.NS, server netip.AddrPort, interval time.Duration) *tcpStream {
	t.Helper()
	s := &tcpStream{stop: make(chan struct{})}
	if err := srvNS.Do(func() error {
		var err error
		s.ln, err = net.Listen("tcp", server.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := s.ln.Accept()
		if err != nil {
			s.fail(err)
			close(accepted)
			return
		}
		accepted <- c
	}()
	if err := clientNS.Do(func() error {
		var err error
		s.conn, err = net.DialTimeout("tcp", server.String(), 10*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv, ok := <-accepted
	if !ok {
		t.Fatalf("accept: %v", s.error())
	}
	s.done.Add(2)
	go func() { // receiver: every chunk carries the next sequence number
		defer s.done.Done()
		defer srv.Close()
		buf := make([]byte, chunk)
		for want := uint64(0); ; want++ {
			if _, err := io.ReadFull(srv, buf); err != nil {
				if !errors.Is(err, io.EOF) {
					s.fail(fmt.Errorf("receiver: %w", err))
				}
				return
			}
			if got := binary.BigEndian.Uint64(buf); got != want {
				s.fail(fmt.Errorf("receiver: chunk %d carries sequence %d", want, got))
				return
			}
			now := time.Now()
			s.mu.Lock()
			s.arrivals = append(s.arrivals, now)
			s.mu.Unlock()
			s.received.Add(1)
		}
	}()
	go func() { // sender
		defer s.done.Done()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		buf := make([]byte, chunk)
		for seq := uint64(0); ; seq++ {
			select {
			case <-s.stop:
				s.conn.(*net.TCPConn).CloseWrite()
				return
			case <-tick.C:
			}
			binary.BigEndian.PutUint64(buf, seq)
			s.conn.SetWriteDeadline(time.Now().Add(2 * time.Minute))
			if _, err := s.conn.Write(buf); err != nil {
				select {
				case <-s.stop:
					// finish closed the connection under a write that started as it stopped
					// the stream: that chunk was never counted as sent.
				default:
					s.fail(fmt.Errorf("sender: %w", err))
				}
				return
			}
			s.sent.Add(1)
		}
	}()
	t.Cleanup(func() { s.close() })
	return s
}

func (s *tcpStream) fail(err error) {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

func (s *tcpStream) error() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

var closeOnce sync.Map

func (s *tcpStream) close() {
	if _, loaded := closeOnce.LoadOrStore(s, true); loaded {
		return
	}
	close(s.stop)
	s.ln.Close()
}

// finish stops sending, waits up to d for the receiver to get everything, and returns the
// error, if any, and the longest gap between arrivals after from.
func (s *tcpStream) finish(d time.Duration, from time.Time) (gap time.Duration, err error) {
	s.close()
	deadline := time.Now().Add(d)
	for s.received.Load() < s.sent.Load() && time.Now().Before(deadline) && s.error() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	if s.received.Load() < s.sent.Load() && s.error() == nil {
		s.fail(fmt.Errorf("%d chunks sent, %d received", s.sent.Load(), s.received.Load()))
	}
	s.conn.Close()
	s.done.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return maxGap(s.arrivals, from), s.error()
}

func maxGap(ts []time.Time, from time.Time) time.Duration {
	var gap time.Duration
	for i := 1; i < len(ts); i++ {
		if ts[i].Before(from) {
			continue
		}
		if g := ts[i].Sub(ts[i-1]); g > gap {
			gap = g
		}
	}
	return gap
}

// udpProbes is a stream of UDP datagrams, one every interval, recorded on arrival at the
// server; with echo the server sends each back (a two-way conversation, as most traffic is,
// so that the tunnel sees inbound ESP), and the client drains the echoes.
type udpProbes struct {
	echo     bool
	tx, rx   *net.UDPConn
	mu       sync.Mutex
	arrivals []time.Time
	sent     atomic.Uint64
	stop     chan struct{}
	done     sync.WaitGroup
	once     sync.Once
}

// startUDPProbes sends from clientNS (from source port sport; 0: any) to server in srvNS.
func startUDPProbes(t testing.TB, clientNS, srvNS *lab.NS, server netip.AddrPort, sport int, interval time.Duration) *udpProbes {
	return startUDP(t, clientNS, srvNS, server, sport, interval, false)
}

// startUDPEcho is startUDPProbes with the server echoing every datagram.
func startUDPEcho(t testing.TB, clientNS, srvNS *lab.NS, server netip.AddrPort, interval time.Duration) *udpProbes {
	return startUDP(t, clientNS, srvNS, server, 0, interval, true)
}

func startUDP(t testing.TB, clientNS, srvNS *lab.NS, server netip.AddrPort, sport int, interval time.Duration, echo bool) *udpProbes {
	t.Helper()
	u := &udpProbes{stop: make(chan struct{}), echo: echo}
	if err := srvNS.Do(func() error {
		var err error
		u.rx, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(server))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := clientNS.Do(func() error {
		var err error
		var laddr *net.UDPAddr
		if sport != 0 {
			laddr = &net.UDPAddr{Port: sport}
		}
		u.tx, err = net.DialUDP("udp", laddr, net.UDPAddrFromAddrPort(server))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	u.done.Add(2)
	go func() {
		defer u.done.Done()
		buf := make([]byte, 64)
		for {
			n, from, err := u.rx.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			now := time.Now()
			u.mu.Lock()
			u.arrivals = append(u.arrivals, now)
			u.mu.Unlock()
			if u.echo {
				u.rx.WriteToUDPAddrPort(buf[:n], from)
			}
		}
	}()
	if echo {
		u.done.Add(1)
		go func() {
			defer u.done.Done()
			buf := make([]byte, 64)
			for {
				if _, err := u.tx.Read(buf); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
					return
				}
			}
		}()
	}
	go func() {
		defer u.done.Done()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		buf := make([]byte, 16)
		for seq := uint64(0); ; seq++ {
			select {
			case <-u.stop:
				return
			case <-tick.C:
			}
			binary.BigEndian.PutUint64(buf, seq)
			u.tx.Write(buf) // errors (no route for a moment) are loss, which is what is measured
			u.sent.Add(1)
		}
	}()
	t.Cleanup(u.close)
	return u
}

func (u *udpProbes) close() {
	u.once.Do(func() {
		close(u.stop)
		u.tx.Close()
		time.Sleep(100 * time.Millisecond)
		u.rx.Close()
		u.done.Wait()
	})
}

// gap returns the longest time between arrivals after from (datagrams still in flight are
// given 100 ms when the stream is closed).
func (u *udpProbes) gap(from time.Time) time.Duration {
	u.mu.Lock()
	defer u.mu.Unlock()
	return maxGap(u.arrivals, from)
}

// arrivedSince counts datagrams received after t.
func (u *udpProbes) arrivedSince(t time.Time) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, a := range u.arrivals {
		if a.After(t) {
			n++
		}
	}
	return n
}
