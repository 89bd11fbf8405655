package bgp

import (
	"fmt"
	"net/netip"
)

// The BGP log's event texts follow AWS's catalogue ("AWS Site-to-Site VPN logs", BGP Status
// Messages and Route Status Messages), seen from our side: AWS writes "AWS-side peer ...", we
// write Side ("CGW-side peer") and the same sentence. AWS's two-line entries ("... exceeded
// <br>• received N prefixes ...") are written on one line with ": " between the parts.

// DefaultSide is the subject of every BGPStatus sentence.
const DefaultSide = "CGW-side peer"

// State is a BGP FSM state (RFC 4271 names).
type State string

// FSM states. gobgp attempts connections in Active (it has no separate Connect state).
const (
	StateUnknown     State = ""
	StateIdle        State = "Idle"
	StateConnect     State = "Connect"
	StateActive      State = "Active"
	StateOpenSent    State = "OpenSent"
	StateOpenConfirm State = "OpenConfirm"
	StateEstablished State = "Established"
)

func textStateChange(side string, from, to State, peer netip.Addr) string {
	if from == StateUnknown {
		from = StateIdle
	}
	return fmt.Sprintf("%s BGP session state has changed from %s to %s with neighbor %s", side, from, to, peer)
}

func textPrefixWarning(side string, count, limit int, peer netip.Addr) string {
	return fmt.Sprintf("%s is reporting a maximum prefix limit warning: received %d prefixes from neighbor %s, limit is %d", side, count, peer, limit)
}

func textPrefixExceeded(side string, count, limit int, peer netip.Addr) string {
	return fmt.Sprintf("%s detected the maximum prefix limit was exceeded: received %d prefixes from neighbor %s, limit is %d", side, count, peer, limit)
}

func textNotification(side string, sent bool, code, subcode uint8, peer netip.Addr) string {
	if code == 4 { // Hold Timer Expired has a sentence of its own
		if sent {
			return fmt.Sprintf("%s sent a Hold Timer Expired notification to neighbor %s", side, peer)
		}
		return fmt.Sprintf("%s received a Hold Timer Expired notification from neighbor %s", side, peer)
	}
	if sent {
		return fmt.Sprintf("%s sent a notification %d/%d (%s) to neighbor %s", side, code, subcode, notificationName(code, subcode), peer)
	}
	return fmt.Sprintf("%s received notification %d/%d (%s) from neighbor %s", side, code, subcode, notificationName(code, subcode), peer)
}

func textBadOpen(side string, peer netip.Addr, remote, expected uint32) string {
	return fmt.Sprintf("%s detected a bad OPEN message from neighbor %s: remote AS is %d, expected %d", side, peer, remote, expected)
}

func textOpenSent(side string, peer netip.Addr, as uint32, hold int, id netip.Addr) string {
	return fmt.Sprintf("%s sent an OPEN message to neighbor %s: version 4, AS %d, holdtime %d, router-id %s", side, peer, as, hold, id)
}

// textOpenReceived: gobgp's API does not expose the peer's OPEN, only the negotiated hold
// time (the smaller of both sides'), which the sentence says.
func textOpenReceived(side string, peer netip.Addr, as uint32, negotiatedHold int, id string) string {
	return fmt.Sprintf("%s received an OPEN message from neighbor %s: version 4, AS %d, negotiated holdtime %d, router-id %s", side, peer, as, negotiatedHold, id)
}

func textEndOfRIB(side string, peer netip.Addr, f Family) string {
	return fmt.Sprintf("%s received an End-of-RIB message (%s unicast) from neighbor %s", side, f, peer)
}

func textUpdateAttrs(side string, peer netip.Addr, asPath string) string {
	return fmt.Sprintf("%s received update with attributes from neighbor %s: AS path: %s", side, peer, asPath)
}

func textLocalDown(side string, peer netip.Addr, reason string) string {
	return fmt.Sprintf("%s withdrew the routes of neighbor %s locally: %s", side, peer, reason)
}

func textLocalUp(side string, peer netip.Addr, n int) string {
	return fmt.Sprintf("%s restored the routes of neighbor %s: %d prefixes", side, peer, n)
}

// Route status details (only set when a route is refused).
const (
	deniedOwnAS        = "DENIED due to: as-path contains our own AS"
	deniedNonConnected = "DENIED due to: non-connected next-hop"
)

// notificationName is RFC 4271 / RFC 4486 naming as AWS's catalogue writes it
// ("Cease/Maximum Number of Prefixes Reached").
func notificationName(code, subcode uint8) string {
	codes := map[uint8]string{
		1: "Message Header Error", 2: "OPEN Message Error", 3: "UPDATE Message Error",
		4: "Hold Timer Expired", 5: "Finite State Machine Error", 6: "Cease", 7: "ROUTE-REFRESH Message Error",
	}
	subs := map[uint8]map[uint8]string{
		1: {1: "Connection Not Synchronized", 2: "Bad Message Length", 3: "Bad Message Type"},
		2: {1: "Unsupported Version Number", 2: "Bad Peer AS", 3: "Bad BGP Identifier", 4: "Unsupported Optional Parameter",
			6: "Unacceptable Hold Time", 7: "Unsupported Capability", 11: "Role Mismatch"},
		3: {1: "Malformed Attribute List", 2: "Unrecognized Well-known Attribute", 3: "Missing Well-known Attribute",
			4: "Attribute Flags Error", 5: "Attribute Length Error", 6: "Invalid ORIGIN Attribute", 8: "Invalid NEXT_HOP Attribute",
			9: "Optional Attribute Error", 10: "Invalid Network Field", 11: "Malformed AS_PATH"},
		5: {1: "Receive Unexpected Message in OpenSent State", 2: "Receive Unexpected Message in OpenConfirm State",
			3: "Receive Unexpected Message in Established State"},
		6: {1: "Maximum Number of Prefixes Reached", 2: "Administrative Shutdown", 3: "Peer Unconfigured",
			4: "Administrative Reset", 5: "Connection Rejected", 6: "Other Configuration Change",
			7: "Connection Collision Resolution", 8: "Out of Resources", 9: "Hard Reset", 10: "BFD Down"},
		7: {1: "Invalid Message Length"},
	}
	c, ok := codes[code]
	if !ok {
		c = fmt.Sprintf("Code %d", code)
	}
	if subcode == 0 {
		return c
	}
	s, ok := subs[code][subcode]
	if !ok {
		s = fmt.Sprintf("Subcode %d", subcode)
	}
	return c + "/" + s
}
