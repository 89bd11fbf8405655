// Package esp is Meshroot's userspace IPsec data plane: ESP (RFC 4303) in tunnel mode, carried
// in UDP (RFC 3948) on port 4500, between a TUN device per tunnel and one UDP socket shared by all
// tunnels of a connection.
//
// The parts, from the bottom up:
//
//   - Suite and Params (suite.go): a CHILD SA's algorithms as IANA IKEv2 transform IDs, key
//     lengths, and the MTU/MSS a suite leaves for inner packets (MTU, AWSMTU).
//   - SA (sa.go): one direction of a CHILD SA. Seal turns an inner IP packet into an ESP packet
//     (in place, no allocation); Open authenticates, checks the anti-replay window (replay.go)
//     and decrypts.
//   - Classify (encap.go): the RFC 3948 demultiplexer for a UDP/4500 payload: NAT keepalive,
//     IKE (non-ESP marker) or ESP.
//   - Inner-packet work (packet.go): TCP MSS clamping, IPv4 fragmentation before encryption
//     with DF clearing, ICMP "fragmentation needed" and ICMPv6 "packet too big".
//   - PacketConn (conn.go, conn_linux.go): batched UDP I/O with recvmmsg/sendmmsg, UDP GSO
//     (runs of equal-sized ESP packets leave in one send, without copying: one iovec each)
//     and UDP GRO, allocation-free. It is our own rather than wireguard-go's StdNetBind, which
//     allocates per received packet, copies datagrams to coalesce them and binds only the
//     wildcard address; the GSO/GRO ideas are the same.
//   - TUN (tun.go, tun_linux.go): golang.zx2c4.com/wireguard/tun creates the device with
//     virtio-net offloads and writes (its GRO coalesces decrypted TCP/UDP segments into
//     super-packets); reads use our batched reader, which drains the device per wake-up and
//     splits TSO/USO super-packets itself, so that small packets are batched too.
//   - Both have in-package fakes (fake.go) so the pipeline runs in unit tests without root.
//   - Mux (mux.go): the shared socket. It demultiplexes inbound ESP by SPI to tunnels, hands
//     IKE datagrams (marker stripped) to a callback, answers nothing on its own, and sends IKE
//     with the marker prepended.
//   - Tunnel (tunnel.go): one TUN device, its outbound SA (switched atomically) and its inbound
//     SAs (several during a rekey), counters and liveness timestamps for the tunnel layer.
//
// Goroutines: one sender per tunnel (TUN read, MSS clamp, fragmentation, seal in place, one
// batched send) and one receiver per socket (batched receive, demultiplex, open into TUN
// buffers, one batched TUN write per tunnel); on two cores a stream's two directions and the
// two ends of each direction run in parallel.
//
// Hot-path rules: no allocation per packet (buffers are owned by the goroutine that uses them),
// sentinel errors, counters updated once per batch. Key bytes are never logged: Params and SA
// redact them in their slog and fmt representations.
//
// Not implemented: extended sequence numbers (sequence numbers stop short of wrapping and ask
// for a rekey instead), AES-GCM with an 8-byte ICV (transform 18; Go's
// GCM has no tags below 12 bytes), transport mode and traffic selectors other than 0/0.
package esp
