// Package vpnlog is the VPN's log records in the concentrator's own schema (AWS Site-to-Site VPN
// logs: docs "AWS Site-to-Site VPN logs", shared/notes/anchors-vpn.md §3) and the Sink they go
// through. Every part of the VPN that reports to the operator writes here: vpn/bgp writes the
// BGP log, the tunnel layer writes the tunnel activity log, and a later issue ships both to the
// cloud through a Sink of its own.
//
// # Records
//
//   - BGPRecord: resource_id ("vpn-1234abcd_1.2.3.4", see ResourceID), event_timestamp (epoch
//     ms), timestamp ("2025-11-08 05:40:29.641Z"), type BGPStatus | RouteStatus, status UP |
//     DOWN | ADVERTISED | UPDATED | WITHDRAWN, and message: {"details": ...} for BGPStatus;
//     prefix, asPath, localPref, med, nextHopIp, weight and (on an error only) details for
//     RouteStatus. NewBGPStatus and NewRouteStatus build them; the event texts of AWS's
//     catalogue are produced by vpn/bgp.
//   - TunnelRecord: event_timestamp, timestamp, details, dpd_enabled, nat_t_detected,
//     ike_phase1_state, ike_phase2_state (Established | Rekeying | Negotiating | Down). The
//     tunnel layer fills it from its IKE events (vpn/ike.State has the same four values).
//
// Both carry the stream they belong to (Record.Stream: AWS names a log stream after the VPN
// connection and the tunnel's outside address) and their log (Record.Log: the BGP log and the
// tunnel activity log go to different log groups). JSON encoding is exactly AWS's shape; the
// stream name is not part of a tunnel record's JSON (AWS's tunnel log has no such field).
// ParseBGPRecord and ParseTunnelRecord read a line back, strictly (the cloud side ingests them).
//
// # Sinks
//
// A Sink takes records and never blocks its caller for long or fails it: logging must not stall
// BGP or the data plane. Implementations here:
//
//   - JSONLines: one JSON object per line to an io.Writer (a file, stdout); the first write
//     error is kept (Err).
//   - Memory: keeps records for tests (Records, BGP, Tunnel, Lines).
//   - Buffered: a bounded queue in front of another sink, drained by its own goroutine; when
//     full the oldest record is dropped and counted (Dropped). Flush and Close drain it.
//   - Redactor: scrubs registered secret strings from every text field before passing a record
//     on. Nothing this package's producers write contains a secret, but the discipline is the
//     house rule: the tunnel layer registers its PSKs here.
//   - Multi fans out; Discard drops.
package vpnlog
