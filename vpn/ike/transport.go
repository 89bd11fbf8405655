package ike

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// PacketHandler takes received IKE datagrams (Conn and Mux implement it).
type PacketHandler interface {
	HandlePacket(b []byte, local, remote netip.AddrPort)
}

// Mux routes datagrams to several Conns sharing sockets (e.g. a site's two tunnels): an
// IKE_SA_INIT request goes to the Conn configured for its source address, anything else to the
// Conn owning the SPI.
type Mux struct {
	mu      sync.RWMutex
	conns   []*Conn
	dropped atomic.Uint64
}

// Add registers c.
func (m *Mux) Add(c *Conn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.conns = append(m.conns, c)
}

// Remove unregisters c.
func (m *Mux) Remove(c *Conn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, o := range m.conns {
		if o == c {
			m.conns = append(m.conns[:i], m.conns[i+1:]...)
			return
		}
	}
}

// Dropped counts datagrams no Conn wanted.
func (m *Mux) Dropped() uint64 { return m.dropped.Load() }

// HandlePacket implements PacketHandler.
func (m *Mux) HandlePacket(b []byte, local, remote netip.AddrPort) {
	m.mu.RLock()
	conns := append([]*Conn(nil), m.conns...)
	m.mu.RUnlock()
	for _, c := range conns {
		if c.owns(b, local, remote) {
			c.HandlePacket(b, local, remote)
			return
		}
	}
	m.dropped.Add(1)
}

// HandleIKE routes an IKE message whose non-ESP marker a demultiplexer already stripped (see
// Conn.HandleIKE).
func (m *Mux) HandleIKE(b []byte, local, remote netip.AddrPort) {
	m.mu.RLock()
	conns := append([]*Conn(nil), m.conns...)
	m.mu.RUnlock()
	for _, c := range conns {
		c.mu.Lock()
		mine := c.ownsMsg(b, remote)
		c.mu.Unlock()
		if mine {
			c.HandleIKE(b, local, remote)
			return
		}
	}
	m.dropped.Add(1)
}

// UDPTransport is a plain UDP transport for one local address: a socket on the IKE port and
// one on the NAT-T port. It implements Sender. On the NAT-T socket it demultiplexes by the
// non-ESP marker: marker-prefixed datagrams go to the handler, NAT keepalives are dropped,
// anything else is ESP and goes to OnESP (when set). The ESP data plane will own the NAT-T
// socket in production and hand marker-0 datagrams to Conn.HandlePacket itself.
type UDPTransport struct {
	local        netip.Addr
	port, natt   uint16
	ike, nattc   *net.UDPConn
	closed       atomic.Bool
	wg           sync.WaitGroup
	onESP        atomic.Pointer[func(b []byte, local, remote netip.AddrPort)]
	handlerSet   atomic.Bool
	receiveError atomic.Value
}

// ListenUDP opens the two sockets on local (ports 0 pick free ones; see Ports).
func ListenUDP(local netip.Addr, port, nattPort uint16) (*UDPTransport, error) {
	t := &UDPTransport{local: local}
	var err error
	if t.ike, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, port))); err != nil {
		return nil, fmt.Errorf("ike: listen %v port %d: %w", local, port, err)
	}
	if t.nattc, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, nattPort))); err != nil {
		t.ike.Close()
		return nil, fmt.Errorf("ike: listen %v port %d: %w", local, nattPort, err)
	}
	t.port = t.ike.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	t.natt = t.nattc.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	return t, nil
}

// Ports returns the bound IKE and NAT-T ports.
func (t *UDPTransport) Ports() (ike, natt uint16) { return t.port, t.natt }

// OnESP sets the receiver of ESP-in-UDP datagrams (nil: drop them).
func (t *UDPTransport) OnESP(f func(b []byte, local, remote netip.AddrPort)) { t.onESP.Store(&f) }

// Serve starts reading both sockets and hands IKE datagrams to h until Close.
func (t *UDPTransport) Serve(h PacketHandler) {
	if !t.handlerSet.CompareAndSwap(false, true) {
		panic("ike: UDPTransport.Serve called twice")
	}
	for _, s := range []struct {
		c    *net.UDPConn
		port uint16
		natt bool
	}{{t.ike, t.port, false}, {t.nattc, t.natt, true}} {
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			t.read(s.c, netip.AddrPortFrom(t.local, s.port), s.natt, h)
		}()
	}
}

func (t *UDPTransport) read(c *net.UDPConn, local netip.AddrPort, natt bool, h PacketHandler) {
	buf := make([]byte, 65536)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if !t.closed.Load() {
				t.receiveError.Store(err)
			}
			return
		}
		b := append([]byte(nil), buf[:n]...)
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if natt {
			switch {
			case n == 1 && b[0] == 0xff:
				continue // NAT keepalive
			case n >= 4 && b[0]|b[1]|b[2]|b[3] != 0:
				if f := t.onESP.Load(); f != nil && *f != nil {
					(*f)(b, local, from)
				}
				continue
			}
		}
		h.HandlePacket(b, local, from)
	}
}

// Send implements Sender: local.Port() selects the socket.
func (t *UDPTransport) Send(b []byte, local, remote netip.AddrPort) error {
	c := t.ike
	if local.Port() == t.natt {
		c = t.nattc
	}
	_, err := c.WriteToUDPAddrPort(b, remote)
	return err
}

// Close closes both sockets and waits for the readers.
func (t *UDPTransport) Close() error {
	if !t.closed.CompareAndSwap(false, true) {
		return nil
	}
	err := errors.Join(t.ike.Close(), t.nattc.Close())
	t.wg.Wait()
	return err
}

// SplitSender joins a Conn to a NAT-T socket owned by someone else (vpn/esp's Mux, which adds
// the non-ESP marker itself): datagrams from the IKE port go through IKE unchanged; on the
// NAT-T port, IKE messages go to SendIKE without our marker and NAT keepalives to
// SendKeepalive.
type SplitSender struct {
	IKE           Sender
	NATTPort      uint16
	SendIKE       func(msg []byte, remote netip.AddrPort) error
	SendKeepalive func(remote netip.AddrPort) error
}

// Send implements Sender.
func (s SplitSender) Send(b []byte, local, remote netip.AddrPort) error {
	if local.Port() != s.NATTPort {
		return s.IKE.Send(b, local, remote)
	}
	switch {
	case len(b) == 1 && b[0] == 0xff:
		if s.SendKeepalive == nil {
			return nil
		}
		return s.SendKeepalive(remote)
	case len(b) >= 4 && b[0]|b[1]|b[2]|b[3] == 0:
		return s.SendIKE(b[4:], remote)
	}
	return fmt.Errorf("ike: datagram of %d bytes for the NAT-T port without the non-ESP marker", len(b))
}
