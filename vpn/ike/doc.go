// Package ike is Meshroot's IKEv2 (RFC 7296) initiator and responder with pre-shared keys,
// interoperating with strongSwan and built to the AWS Site-to-Site VPN tunnel contract.
//
// # Shape
//
// A Conn is one tunnel: its configuration (Config, validated with errors naming the field),
// the current IKE SA, its CHILD SAs, timers for rekeying, DPD and NAT keepalives, and retries.
// The core is transport-agnostic:
//
//   - datagrams come in through Conn.HandlePacket(b, local, remote) (or Mux.HandlePacket when
//     several tunnels share sockets); datagrams received on the NAT-T port carry the non-ESP
//     marker, which Conn checks and strips in one place;
//   - datagrams go out through the Sender interface, which is told the local and remote
//     address and port (500 or 4500); the marker is added in one place (ikeSA.transmit);
//   - CHILD SAs reach the ESP data plane through the DataPlane interface, synchronously and in
//     make-before-break order: AddInbound(new), SetOutbound(new), DelOutbound/DelInbound(old);
//     ChildSA carries IANA transform IDs, SPIs, keys (the GCM salt is the tail of the key,
//     RFC 4106), replay window, lifetimes and encapsulation ports, so vpn/esp needs no import
//     of this package;
//   - events (Event: IKE up/rekeyed/down, CHILD up/rekeyed/down, peer dead, auth failed, no
//     proposal) are delivered in order on one goroutine per Conn, with AWS's phase states
//     (Established, Rekeying, Negotiating, Down) and plain-words reasons;
//   - time comes from a Clock (tests drive a fake one and run whole scenarios, collisions
//     included, deterministically).
//
// UDPTransport is a plain transport (sockets on the IKE and NAT-T ports of one address) for
// tests, interop and the first tunnel layer. When vpn/esp owns the NAT-T socket, its Mux hands
// IKE messages with the marker already stripped to Conn.HandleIKE (or Mux.HandleIKE), and
// SplitSender routes our NAT-T sends to its SendIKE/SendKeepalive (which add the marker).
//
// # Protocol coverage
//
// IKE_SA_INIT (COOKIE both ways, INVALID_KE_PAYLOAD retry, NAT_DETECTION and the move to
// 4500, forced encapsulation by faking NAT-D as strongSwan's encap=yes does), IKE_AUTH with
// PSK (IDs IPv4, IPv6, FQDN, RFC 822) and the first CHILD SA, CREATE_CHILD_SA for new CHILD
// SAs, CHILD rekey (REKEY_SA, PFS) and IKE rekey, INFORMATIONAL (DPD, DELETE, notifies),
// message IDs with a window of 1, retransmission with exponential backoff, answering
// retransmitted requests from a cached response, IKEv2 fragmentation (RFC 7383, both ways),
// unknown payloads skipped and unknown critical ones answered with
// UNSUPPORTED_CRITICAL_PAYLOAD. Algorithms: AES-CBC-128/192/256 with HMAC-SHA1-96,
// SHA2-256-128, SHA2-384-192, SHA2-512-256; AES-GCM-16/12 128/192/256; PRF HMAC-SHA1,
// SHA2-256/384/512; DH groups 2, 5, 14-18 (MODP, primes computed from pi and checked), 19-21
// (ECP), 22-24 (MODP with prime-order subgroups, checked) and 31 (curve25519), with
// validation of the peer's public value.
//
// # Rekeying and collisions
//
// CHILD rekeys are make-before-break: the rekey initiator installs the new SA inbound, then
// switches outbound, then deletes the old SA; the responder installs the new SA inbound at
// once and switches outbound when the peer deletes the old one (as strongSwan does). Rekeyed
// inbound SAs linger DeleteDelay for packets in flight. Simultaneous rekeys are resolved by the
// nonce rule of RFC 7296 §2.8.1 exactly as strongSwan 5.9 applies it (the lower of each
// exchange's two nonces, compared over the shorter length; the side whose exchange holds the
// lowest nonce deletes its redundant SA, the other side deletes the old one), including the
// case where only one side saw the collision. Independent CHILD SA creations that race (both
// sides re-creating after a hard expiry) are reduced to one pair by the same nonce rule. A rekey request for an SA being deleted gets
// TEMPORARY_FAILURE, for an unknown SA CHILD_SA_NOT_FOUND; a CHILD rekey during an IKE rekey
// gets TEMPORARY_FAILURE and vice versa (strongSwan's rules). Lifetimes follow AWS: rekey at
// lifetime - margin - random(fuzz% of margin).
//
// IKE rekey key derivation: SKEYSEED = prf(SK_d(old), g^ir | Ni | Nr) uses the old SA's PRF
// (RFC 7296 §2.18). For prf+ strongSwan 5.9 also uses the OLD PRF where the RFC says the new
// one; the two differ only when a rekey changes the PRF. This package follows strongSwan, and
// avoids the question in practice: a rekey initiator offers the current algorithms first and
// a rekey responder keeps them when offered.
//
// # Proposal selection
//
// As responder the package picks transforms the way AWS endpoints do ("starting with the lowest
// configured value, regardless of the proposal order from the customer gateway"): for each
// transform type, the LOWEST value both sides allow wins. "Lowest" means lowest IANA transform
// ID, then smallest key length. For AWS's option lists this is exactly their documented order:
// AES128 < AES256 < AES128-GCM-16 < AES256-GCM-16; SHA1 < SHA2-256 < SHA2-384 < SHA2-512;
// DH group 2 < 5 < 14 < 15 < ... < 24 (< 31, curve25519). Candidates (one of the peer's
// proposals combined with one of ours) are ranked by (ENCR, PRF, INTEG, DH, ESN). If the
// initiator's KE is for another group than the chosen one, INVALID_KE_PAYLOAD asks for it.
// Narrowing the configured lists is the way to control the outcome. When nothing matches, the
// log line names both offers in strongSwan's notation ("no proposal match for IKE_SA: peer
// offered aes128-sha1-prfsha1-modp1024; we allow aes256gcm16-prfsha256-modp2048"); as
// initiator only our offer can be named (the peer does not reveal its own).
//
// # DPD
//
// After DPDInterval without inbound traffic (IKE messages, or ESP when the DataPlane
// implements ActivityReporter) an empty INFORMATIONAL is sent and retransmitted; the peer is
// dead when DPDTimeout passes without an answer (any other exchange gives up after the
// Retransmit schedule). DPDAction clear removes the SAs, restart removes them and initiates
// again (with the KeyingTries/RetryInterval backoff), none keeps the SAs and keeps
// retransmitting. Probe(timeout) runs a liveness check now with a short deadline for the fast
// failover of issue 4.
//
// Secrets: the PSK is a Secret (redacted by fmt, slog and encoding/json); keys never appear in
// logs or in ChildSA's String/LogValue. Tests scan captured logs for the PSK.
package ike
