package ike

import (
	"fmt"
	"log/slog"
	"net/netip"
	"time"
)

// State is a phase state as AWS reports ike_phase1_state and ike_phase2_state.
type State string

// States.
const (
	StateDown        State = "Down"
	StateNegotiating State = "Negotiating"
	StateEstablished State = "Established"
	StateRekeying    State = "Rekeying"
)

// EventType names what happened.
type EventType int

// Event types.
const (
	EventIKEUp             EventType = iota + 1 // IKE SA established
	EventIKERekeyed                             // IKE SA replaced by a rekeyed one
	EventIKEDown                                // IKE SA gone (Reason says why)
	EventChildUp                                // CHILD SA installed (first, or re-created)
	EventChildRekeyed                           // outbound traffic moved to a rekeyed CHILD SA
	EventChildDown                              // CHILD SA deleted without replacement
	EventPeerDead                               // DPD / retransmissions gave up
	EventAuthFailed                             // authentication failed (either side)
	EventNoProposal                             // no common proposal (IKE or CHILD)
	EventNegotiationFailed                      // another establishment failure (Reason)
)

var eventNames = map[EventType]string{
	EventIKEUp: "ike-up", EventIKERekeyed: "ike-rekeyed", EventIKEDown: "ike-down",
	EventChildUp: "child-up", EventChildRekeyed: "child-rekeyed", EventChildDown: "child-down",
	EventPeerDead: "peer-dead", EventAuthFailed: "auth-failed", EventNoProposal: "no-proposal",
	EventNegotiationFailed: "negotiation-failed",
}

func (t EventType) String() string {
	if s, ok := eventNames[t]; ok {
		return s
	}
	return fmt.Sprintf("event(%d)", int(t))
}

// Event is delivered to Options.OnEvent, in order, from one goroutine per Conn.
type Event struct {
	Type   EventType
	Time   time.Time
	Tunnel string
	// Reason is a sentence in plain words (for the tunnel activity log's "details").
	Reason string
	// Phase1 and Phase2 are the states after the event.
	Phase1, Phase2 State
	// NATDetected is set when the IKE SA runs over NAT-T (detected or forced).
	NATDetected bool
	// IKE describes the IKE SA concerned (zero when none).
	IKE IKEInfo
	// Child describes the CHILD SA concerned (zero when none); for EventChildRekeyed it is the
	// new SA and Replaced the old one.
	Child, Replaced ChildInfo
}

// IKEInfo describes an IKE SA without secrets.
type IKEInfo struct {
	SPIi, SPIr  uint64
	Initiator   bool
	Suite       string
	Local       netip.AddrPort
	Remote      netip.AddrPort
	NATT        bool
	Established time.Time
}

// ChildInfo describes a CHILD SA without secrets.
type ChildInfo struct {
	SPIIn, SPIOut uint32
	Suite         string
	LocalTS       []netip.Prefix
	RemoteTS      []netip.Prefix
	Installed     time.Time
}

// Counters are cumulative per Conn.
type Counters struct {
	MalformedDropped  uint64 // unparseable, bad lengths, failed integrity
	ReplayedDropped   uint64 // requests with old message IDs, unexpected responses
	UnknownSPIDropped uint64 // no IKE SA with that SPI
	Retransmits       uint64 // our requests sent again
	ResponsesResent   uint64 // cached responses sent for retransmitted requests
	AuthFailures      uint64
	NoProposal        uint64
	Collisions        uint64 // rekey collisions resolved
	CookiesSent       uint64
}

// Status is a snapshot of a Conn.
type Status struct {
	Tunnel         string
	Phase1, Phase2 State
	DPDEnabled     bool
	NATDetected    bool
	IKE            *IKEInfo
	Children       []ChildInfo
	Counters       Counters
	LastError      string
}

// ChildSA is everything the ESP data plane needs for one CHILD SA, with IANA transform IDs so
// that vpn/esp needs no import of this package. Keys are never printed or logged (String and
// LogValue omit them).
type ChildSA struct {
	SPIIn, SPIOut uint32
	// EncrID is the IANA ENCR transform ID (12 AES-CBC, 20 AES-GCM-16, 19 AES-GCM-12);
	// EncrKeyBits the AES key length.
	EncrID      uint16
	EncrKeyBits int
	// IntegID is the IANA INTEG transform ID (0 for AEAD; 2 HMAC-SHA1-96, 12 HMAC-SHA2-256-128,
	// 13 HMAC-SHA2-384-192, 14 HMAC-SHA2-512-256).
	IntegID uint16
	ESN     bool
	// EncKeyIn/EncKeyOut are the encryption keys; for GCM the last 4 bytes are the salt
	// (RFC 4106 §8.1). IntegKeyIn/IntegKeyOut are empty for AEAD.
	EncKeyIn, EncKeyOut     []byte
	IntegKeyIn, IntegKeyOut []byte
	ReplayWindow            uint32
	// Local and Remote are the outer addresses; with Encap they carry the NAT-T ports and ESP
	// travels in UDP (RFC 3948).
	Local, Remote netip.AddrPort
	Encap         bool
	// LocalTS and RemoteTS are the negotiated traffic selectors.
	LocalTS, RemoteTS []netip.Prefix
	Lifetime          time.Duration
	Suite             string
}

func (c *ChildSA) String() string {
	return fmt.Sprintf("CHILD_SA %08x_i %08x_o %s", c.SPIIn, c.SPIOut, c.Suite)
}

// LogValue logs the SA without keys.
func (c *ChildSA) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("spi_in", fmt.Sprintf("%08x", c.SPIIn)),
		slog.String("spi_out", fmt.Sprintf("%08x", c.SPIOut)),
		slog.String("suite", c.Suite),
		slog.Bool("encap", c.Encap))
}

// DataPlane installs CHILD SAs into the ESP data plane. The Conn calls it synchronously and in
// order while it holds its lock (make-before-break depends on that order): implementations must
// return quickly and must not call back into the Conn.
type DataPlane interface {
	// AddInbound starts accepting packets for sa.SPIIn.
	AddInbound(sa *ChildSA) error
	// SetOutbound sends with sa from now on (replacing the previous outbound SA).
	SetOutbound(sa *ChildSA) error
	// DelInbound stops accepting packets for spiIn.
	DelInbound(spiIn uint32)
	// DelOutbound removes the outbound SA spiOut when no replacement follows.
	DelOutbound(spiOut uint32)
}

// ActivityReporter is optionally implemented by a DataPlane: the time the last inbound packet
// was accepted on spiIn (zero: never). DPD sends no liveness check while traffic arrives.
type ActivityReporter interface {
	LastInbound(spiIn uint32) time.Time
}
