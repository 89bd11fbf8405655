package esp

import (
	"net/netip"
)

// RecvMsg is one receive slot of PacketConn.ReadBatch: one UDP datagram, or, with UDP GRO, a run
// of datagrams of Seg bytes each (the last may be shorter) from the same sender, back to back.
type RecvMsg struct {
	// Buf is the caller's buffer; the datagram(s) land in Buf[:N].
	Buf []byte
	// N is the number of bytes received.
	N int
	// Seg is the GRO segment size: 0 when Buf[:N] is one datagram.
	Seg int
	// From is the sender.
	From netip.AddrPort
	// To is the local address the datagram was addressed to, when the socket reports it
	// (IP_PKTINFO); the zero Addr otherwise.
	To netip.Addr
	// Truncated: the datagram did not fit Buf and was cut (MSG_TRUNC); drop it.
	Truncated bool
}

// Datagrams calls f for each datagram in m (one, or each GRO segment), stopping early when f
// returns false.
func (m *RecvMsg) Datagrams(f func(b []byte) bool) {
	b := m.Buf[:m.N]
	if m.Seg <= 0 || m.Seg >= len(b) {
		f(b)
		return
	}
	for len(b) > 0 {
		n := m.Seg
		if n > len(b) {
			n = len(b)
		}
		if !f(b[:n:n]) {
			return
		}
		b = b[n:]
	}
}

// PacketConn is a UDP socket with batched I/O: the kernel-facing part of a Mux. The real one is
// ListenUDP (recvmmsg/sendmmsg with UDP GSO and GRO on Linux); FakeNetwork makes fakes.
type PacketConn interface {
	// ReadBatch blocks until at least one datagram arrives and fills up to len(msgs) slots.
	// Only one goroutine may call it. With GRO on (GRO reports true) every Buf must hold
	// 65535 bytes, since a coalesced run can be that long.
	ReadBatch(msgs []RecvMsg) (int, error)
	// NewWriter returns a BatchWriter for the exclusive use of one goroutine; writers of one
	// conn may be used concurrently.
	NewWriter() BatchWriter
	// LocalAddr is the address the socket is bound to.
	LocalAddr() netip.AddrPort
	// GRO reports whether ReadBatch may return coalesced runs.
	GRO() bool
	// Close unblocks ReadBatch (which then returns an error) and releases the socket.
	Close() error
}

// BatchWriter sends datagrams; see PacketConn.NewWriter.
type BatchWriter interface {
	// WriteBatch sends every element of pkts as one datagram to dst, in order, coalescing
	// where it can (UDP GSO). It keeps going past a failed datagram and returns the first
	// error.
	WriteBatch(dst netip.AddrPort, pkts [][]byte) error
}
