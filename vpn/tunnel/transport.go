package tunnel

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"meshroot/vpn/esp"
	"meshroot/vpn/ike"
)

// Default ports (RFC 7296 §2, RFC 3948).
const (
	IKEPort  = 500
	NATTPort = 4500
)

// TransportConfig configures NewTransport.
type TransportConfig struct {
	// Local is the outside address to bind (IPv4 or IPv6). It must be a concrete address: IKE
	// puts it into its NAT detection hashes and, by default, into our identity.
	Local netip.Addr
	// IKEPort and NATTPort default to 500 and 4500.
	IKEPort, NATTPort uint16
	// Logger gets the rare socket-level events (nil: discard).
	Logger *slog.Logger
}

// Transport is what the tunnels of one local address share: a socket on the IKE port, and the
// NAT-T port as an esp.Mux (ESP of every tunnel, demultiplexed by SPI, and IKE behind the
// non-ESP marker). IKE datagrams from either socket go to the tunnels' IKE connections through
// an ike.Mux (IKE_SA_INIT requests by source address, everything else by SPI). A connection
// has one Transport per address family of its tunnels' outside addresses.
type Transport struct {
	cfg     TransportConfig
	log     *slog.Logger
	ikeConn esp.PacketConn
	ikeSend *portSender
	mux     *esp.Mux
	conns   ike.Mux

	ikeQ      chan ikeDatagram
	ikeQDrops atomic.Uint64
	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

type ikeDatagram struct {
	b             []byte
	local, remote netip.AddrPort
}

// NewTransport opens the IKE and NAT-T sockets on cfg.Local through h and starts reading them.
func NewTransport(h Host, cfg TransportConfig) (*Transport, error) {
	if !cfg.Local.IsValid() || cfg.Local.IsUnspecified() {
		return nil, fmt.Errorf("tunnel transport: local address %q: want a concrete IPv4 or IPv6 address", cfg.Local)
	}
	cfg.Local = cfg.Local.Unmap()
	if cfg.IKEPort == 0 {
		cfg.IKEPort = IKEPort
	}
	if cfg.NATTPort == 0 {
		cfg.NATTPort = NATTPort
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Transport{cfg: cfg, log: log, ikeQ: make(chan ikeDatagram, 256), stop: make(chan struct{})}
	var err error
	if t.ikeConn, err = h.ListenUDP(netip.AddrPortFrom(cfg.Local, cfg.IKEPort), false); err != nil {
		return nil, fmt.Errorf("tunnel transport: IKE port %s: %w", netip.AddrPortFrom(cfg.Local, cfg.IKEPort), err)
	}
	natt, err := h.ListenUDP(netip.AddrPortFrom(cfg.Local, cfg.NATTPort), true)
	if err != nil {
		t.ikeConn.Close()
		return nil, fmt.Errorf("tunnel transport: NAT-T port %s: %w", netip.AddrPortFrom(cfg.Local, cfg.NATTPort), err)
	}
	t.ikeSend = &portSender{w: t.ikeConn.NewWriter()}
	t.mux = esp.NewMux(natt, esp.MuxConfig{Logger: log, OnIKE: t.onIKE})
	t.wg.Add(2)
	go t.readIKEPort()
	go t.handleNATTIKE()
	return t, nil
}

// Local is the bound outside address.
func (t *Transport) Local() netip.Addr { return t.cfg.Local }

// Mux is the NAT-T socket's ESP multiplexer.
func (t *Transport) Mux() *esp.Mux { return t.mux }

// Stats returns the NAT-T socket's counters and the IKE messages dropped for a full queue.
func (t *Transport) Stats() (esp.MuxStats, uint64) {
	return t.mux.Stats(), t.ikeQDrops.Load() + t.conns.Dropped()
}

// sender is the ike.Sender for the tunnels on this transport.
func (t *Transport) sender() ike.Sender {
	return ike.SplitSender{IKE: t.ikeSend, NATTPort: t.cfg.NATTPort, SendIKE: t.mux.SendIKE, SendKeepalive: t.mux.SendKeepalive}
}

// onIKE runs on the Mux's receive goroutine: IKE processing (Diffie-Hellman for a rekey) must
// not stall ESP of every tunnel, so the message is copied and handled on its own goroutine.
func (t *Transport) onIKE(b []byte, local, remote netip.AddrPort) {
	select {
	case t.ikeQ <- ikeDatagram{b: append([]byte(nil), b...), local: local, remote: remote}:
	default:
		t.ikeQDrops.Add(1)
	}
}

func (t *Transport) handleNATTIKE() {
	defer t.wg.Done()
	for {
		select {
		case d := <-t.ikeQ:
			t.conns.HandleIKE(d.b, d.local, d.remote)
		case <-t.stop:
			return
		}
	}
}

// readIKEPort reads the IKE port until the socket is closed.
func (t *Transport) readIKEPort() {
	defer t.wg.Done()
	msgs := make([]esp.RecvMsg, 8)
	for i := range msgs {
		msgs[i].Buf = make([]byte, 65535)
	}
	bound := t.ikeConn.LocalAddr()
	errs := 0
	for {
		n, err := t.ikeConn.ReadBatch(msgs)
		if err != nil {
			select {
			case <-t.stop:
				return
			default:
			}
			if errs++; errs <= 3 {
				t.log.Warn("IKE socket read failed", "local", bound, "err", err)
			}
			select {
			case <-t.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		for i := range msgs[:n] {
			m := &msgs[i]
			if m.Truncated {
				continue
			}
			local := bound
			if m.To.IsValid() {
				local = netip.AddrPortFrom(m.To, bound.Port())
			}
			from := netip.AddrPortFrom(m.From.Addr().Unmap(), m.From.Port())
			m.Datagrams(func(b []byte) bool {
				t.conns.HandlePacket(b, local, from)
				return true
			})
		}
	}
}

// Close closes both sockets, every tunnel still on the NAT-T socket, and waits for the
// readers.
func (t *Transport) Close() error {
	var err error
	t.closeOnce.Do(func() {
		close(t.stop)
		err = errors.Join(t.mux.Close(), t.ikeConn.Close())
		t.wg.Wait()
	})
	return err
}

// portSender sends IKE datagrams on the IKE port's socket (BatchWriters are for one goroutine
// at a time).
type portSender struct {
	mu  sync.Mutex
	w   esp.BatchWriter
	one [1][]byte
}

func (s *portSender) Send(b []byte, local, remote netip.AddrPort) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.one[0] = b
	err := s.w.WriteBatch(remote, s.one[:])
	s.one[0] = nil
	return err
}
