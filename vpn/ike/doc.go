// Package ike is Meshroot's IKEv2 (RFC 7296) initiator and responder with pre-shared keys,
// written to interoperate with strongSwan and with AWS Site-to-Site VPN endpoints.
//
// Work in progress: the message codec, the crypto (PRF, prf+, key derivation, SK payload
// protection, Diffie-Hellman groups) and proposal handling are here; the SA state machine,
// transport and events follow.
//
// # Proposal selection
//
// As responder the package picks transforms the way AWS endpoints do ("starting with the lowest
// configured value, regardless of the proposal order from the customer gateway"): for each
// transform type, the LOWEST value both sides allow wins. "Lowest" means lowest IANA transform
// ID, then smallest key length. For AWS's option lists this is exactly their documented order:
// AES128 < AES256 < AES128-GCM-16 < AES256-GCM-16; SHA1 < SHA2-256 < SHA2-384 < SHA2-512;
// DH group 2 < 5 < 14 < 15 < ... < 24 (< 31, curve25519). Narrowing the configured lists is
// the way to control the outcome. On a rekey the SA's current algorithms are kept when the
// peer still offers them.
package ike
