package ike

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"
)

// Secret holds a pre-shared key. It prints, logs and marshals as "[redacted]" so it cannot leak
// through fmt, slog or encoding/json by accident; use string(s) where the key itself is needed.
type Secret string

const redacted = "[redacted]"

func (Secret) String() string                  { return redacted }
func (Secret) GoString() string                { return redacted }
func (Secret) LogValue() slog.Value            { return slog.StringValue(redacted) }
func (Secret) Format(f fmt.State, _ rune)      { _, _ = f.Write([]byte(redacted)) }
func (Secret) MarshalText() ([]byte, error)    { return []byte(redacted), nil }
func (s *Secret) UnmarshalText(b []byte) error { *s = Secret(b); return nil }

// DPDAction is what happens when the peer is declared dead (AWS "DPD timeout action").
type DPDAction string

// DPD actions.
const (
	DPDClear   DPDAction = "clear"   // delete the SAs; the tunnel is down until the peer initiates
	DPDRestart DPDAction = "restart" // delete the SAs and initiate a new IKE SA
	DPDNone    DPDAction = "none"    // keep the SAs; report only
)

// StartAction says who brings the tunnel up (AWS "startup action").
type StartAction string

// Start actions.
const (
	StartAdd   StartAction = "add"   // responder only: wait for the peer to initiate
	StartStart StartAction = "start" // initiate now (and keep initiating after failures)
)

// Retransmit is the request retransmission schedule, as strongSwan's retransmit_tries,
// retransmit_timeout and retransmit_base: retransmission n (1..Tries) is sent
// Timeout*Base^(n-1) after the previous send, and the exchange gives up Timeout*Base^Tries
// after the last one.
type Retransmit struct {
	Tries   int
	Timeout time.Duration
	Base    float64
}

// Total is the time from the first send to giving up.
func (r Retransmit) Total() time.Duration {
	var t float64
	for i := 0; i <= r.Tries; i++ {
		t += float64(r.Timeout) * pow(r.Base, i)
	}
	return time.Duration(t)
}

func pow(b float64, n int) float64 {
	r := 1.0
	for range n {
		r *= b
	}
	return r
}

// Config is one IKEv2 connection (one tunnel). Zero values take the documented defaults;
// Validate reports bad fields by name.
type Config struct {
	// Name identifies the tunnel in logs and events (e.g. the outside address or "tunnel1").
	Name string

	// LocalAddr and RemoteAddr are the outside addresses (IPv4 or IPv6, same family).
	LocalAddr, RemoteAddr netip.Addr
	// LocalPort and RemotePort are the IKE ports (default 500).
	LocalPort, RemotePort uint16
	// LocalNATTPort and RemoteNATTPort are the NAT-T ports (default 4500).
	LocalNATTPort, RemoteNATTPort uint16

	// LocalID and RemoteID are the identities: an IP address (ID_IPV4_ADDR/ID_IPV6_ADDR), an
	// FQDN ("vpn.example.com" or "@vpn.example.com"), or user@fqdn (ID_RFC822_ADDR). Default:
	// the local/remote address. RemoteID "%any" accepts any peer identity.
	LocalID, RemoteID string

	// PSK is the pre-shared key (AUTH method 2). Never logged.
	PSK Secret

	// IKEProposals and ESPProposals in strongSwan notation. Default (AWS's first offer):
	// aes256gcm16-prfsha256-modp2048 and aes256gcm16-modp2048. A DH group in an ESP proposal
	// means PFS on CHILD rekeys.
	IKEProposals, ESPProposals []Proposal

	// IKELifetime (AWS phase 1, default 28800 s) and ChildLifetime (phase 2, default 3600 s).
	IKELifetime, ChildLifetime time.Duration
	// RekeyMargin (default 270 s) and RekeyFuzz (percent of the margin, default 100; negative:
	// 0) place rekeys as AWS does: at lifetime - margin - random(fuzz% of margin).
	RekeyMargin time.Duration
	RekeyFuzz   int

	// ReplayWindow is passed to ESP (default 1024; AWS allows 64..2048).
	ReplayWindow uint32

	// DPDInterval is the idle time after which a liveness check is sent (default 10 s; negative
	// disables DPD). DPDTimeout is how long a liveness check may stay unanswered before the peer
	// is dead (default 30 s). DPDAction defaults to clear.
	DPDInterval, DPDTimeout time.Duration
	DPDAction               DPDAction

	// StartAction: add (default) or start.
	StartAction StartAction
	// CloseAction: what to do when the peer deletes the IKE SA or the last CHILD SA: "" or
	// "none" (stay down), "restart" (initiate again).
	CloseAction DPDAction

	// Retransmit schedule (default 5 tries, 2 s, base 1.4: ~33 s, AWS-like).
	Retransmit Retransmit
	// KeyingTries limits consecutive failed establishment attempts when initiating (0: forever).
	KeyingTries int
	// RetryInterval is the first delay before re-initiating after a failure; it doubles up to
	// RetryMax (defaults 2 s and 60 s), with ±20% jitter.
	RetryInterval, RetryMax time.Duration

	// ForceEncap forces UDP encapsulation (RFC 3948) by faking the NAT_DETECTION_SOURCE_IP hash,
	// as strongSwan's encap=yes does.
	ForceEncap bool
	// KeepaliveInterval for NAT keepalives while we are behind a NAT or force encapsulation
	// (default 20 s; negative disables).
	KeepaliveInterval time.Duration

	// LocalTS and RemoteTS are the traffic selectors (default 0.0.0.0/0 and ::/0: route-based,
	// as AWS). As responder the peer's proposal is narrowed to these.
	LocalTS, RemoteTS []netip.Prefix

	// Fragmentation announces IKEv2 fragmentation (RFC 7383); FragmentSize is the largest IKE
	// message we send unfragmented (default 1280).
	Fragmentation bool
	FragmentSize  int

	// CookieThreshold is the number of half-open IKE SAs at which the responder demands
	// cookies (default 10); RequireCookies demands them always.
	CookieThreshold int
	RequireCookies  bool

	// DeleteDelay keeps the inbound half of a rekeyed CHILD SA this long after it is deleted, for
	// packets in flight (default 5 s, as strongSwan's delete_rekeyed_delay).
	DeleteDelay time.Duration
}

// Defaults.
var (
	DefaultIKEProposals = MustParseProposals("aes256gcm16-prfsha256-modp2048")
	DefaultESPProposals = MustParseProposals("aes256gcm16-modp2048")
)

// withDefaults returns a copy of cfg with zero fields set to their defaults.
func (cfg Config) withDefaults() Config {
	c := cfg
	if c.LocalPort == 0 {
		c.LocalPort = 500
	}
	if c.RemotePort == 0 {
		c.RemotePort = 500
	}
	if c.LocalNATTPort == 0 {
		c.LocalNATTPort = 4500
	}
	if c.RemoteNATTPort == 0 {
		c.RemoteNATTPort = 4500
	}
	if c.LocalID == "" && c.LocalAddr.IsValid() {
		c.LocalID = c.LocalAddr.String()
	}
	if c.RemoteID == "" && c.RemoteAddr.IsValid() {
		c.RemoteID = c.RemoteAddr.String()
	}
	if len(c.IKEProposals) == 0 {
		c.IKEProposals = DefaultIKEProposals
	}
	if len(c.ESPProposals) == 0 {
		c.ESPProposals = DefaultESPProposals
	}
	if c.IKELifetime == 0 {
		c.IKELifetime = 28800 * time.Second
	}
	if c.ChildLifetime == 0 {
		c.ChildLifetime = 3600 * time.Second
	}
	if c.RekeyMargin == 0 {
		c.RekeyMargin = 270 * time.Second
	}
	switch {
	case c.RekeyFuzz == 0:
		c.RekeyFuzz = 100
	case c.RekeyFuzz < 0:
		c.RekeyFuzz = 0
	}
	if c.ReplayWindow == 0 {
		c.ReplayWindow = 1024
	}
	if c.DPDInterval == 0 {
		c.DPDInterval = 10 * time.Second
	}
	if c.DPDTimeout == 0 {
		c.DPDTimeout = 30 * time.Second
	}
	if c.DPDAction == "" {
		c.DPDAction = DPDClear
	}
	if c.StartAction == "" {
		c.StartAction = StartAdd
	}
	if c.CloseAction == "" {
		c.CloseAction = DPDNone
	}
	if c.Retransmit.Tries == 0 {
		c.Retransmit.Tries = 5
	}
	if c.Retransmit.Timeout == 0 {
		c.Retransmit.Timeout = 2 * time.Second
	}
	if c.Retransmit.Base == 0 {
		c.Retransmit.Base = 1.4
	}
	if c.RetryInterval == 0 {
		c.RetryInterval = 2 * time.Second
	}
	if c.RetryMax == 0 {
		c.RetryMax = 60 * time.Second
	}
	if c.KeepaliveInterval == 0 {
		c.KeepaliveInterval = 20 * time.Second
	}
	if len(c.LocalTS) == 0 {
		c.LocalTS = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	}
	if len(c.RemoteTS) == 0 {
		c.RemoteTS = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	}
	if c.FragmentSize == 0 {
		c.FragmentSize = 1280
	}
	if c.CookieThreshold == 0 {
		c.CookieThreshold = 10
	}
	if c.DeleteDelay == 0 {
		c.DeleteDelay = 5 * time.Second
	}
	return c
}

// Validate checks the configuration (after defaults) and names the first bad field.
func (cfg Config) Validate() error {
	_, err := cfg.compile()
	return err
}

// compiled is a validated configuration with parsed identities and normalized proposals.
type compiled struct {
	Config
	localID, remoteID Identity
	remoteAny         bool
	ike, esp          []Proposal
}

func fieldErr(field, format string, args ...any) error {
	return fmt.Errorf("ike config: %s: %s", field, fmt.Sprintf(format, args...))
}

func (cfg Config) compile() (*compiled, error) {
	c := &compiled{Config: cfg.withDefaults()}
	if !c.LocalAddr.IsValid() {
		return nil, fieldErr("LocalAddr", "must be set")
	}
	if !c.RemoteAddr.IsValid() {
		return nil, fieldErr("RemoteAddr", "must be set")
	}
	if c.LocalAddr.Is4() != c.RemoteAddr.Is4() {
		return nil, fieldErr("RemoteAddr", "%s is not of the same family as LocalAddr %s", c.RemoteAddr, c.LocalAddr)
	}
	if c.LocalPort == c.LocalNATTPort {
		return nil, fieldErr("LocalNATTPort", "must differ from LocalPort %d", c.LocalPort)
	}
	var err error
	if c.localID, err = ParseIdentity(c.LocalID); err != nil {
		return nil, fieldErr("LocalID", "%v", err)
	}
	if c.RemoteID == "%any" {
		c.remoteAny = true
	} else if c.remoteID, err = ParseIdentity(c.RemoteID); err != nil {
		return nil, fieldErr("RemoteID", "%v", err)
	}
	if c.PSK == "" {
		return nil, fieldErr("PSK", "must not be empty")
	}
	for i, p := range c.IKEProposals {
		q, err := p.normalize(ProtoIKE)
		if err != nil {
			return nil, fieldErr(fmt.Sprintf("IKEProposals[%d]", i), "%v", err)
		}
		c.ike = append(c.ike, q)
	}
	for i, p := range c.ESPProposals {
		q, err := p.normalize(ProtoESP)
		if err != nil {
			return nil, fieldErr(fmt.Sprintf("ESPProposals[%d]", i), "%v", err)
		}
		c.esp = append(c.esp, q)
	}
	switch {
	case c.ChildLifetime < 10*time.Second:
		return nil, fieldErr("ChildLifetime", "%v is shorter than 10s", c.ChildLifetime)
	case c.IKELifetime <= c.ChildLifetime:
		return nil, fieldErr("IKELifetime", "%v must be longer than ChildLifetime %v", c.IKELifetime, c.ChildLifetime)
	case c.RekeyMargin <= 0 || 2*c.RekeyMargin > c.ChildLifetime:
		return nil, fieldErr("RekeyMargin", "%v must be positive and at most half of ChildLifetime %v", c.RekeyMargin, c.ChildLifetime)
	case c.RekeyFuzz > 100:
		return nil, fieldErr("RekeyFuzz", "%d%% is more than 100%%", c.RekeyFuzz)
	case c.ReplayWindow > 1<<20:
		return nil, fieldErr("ReplayWindow", "%d is too large", c.ReplayWindow)
	case c.DPDInterval > 0 && c.DPDTimeout < time.Second:
		return nil, fieldErr("DPDTimeout", "%v is shorter than 1s", c.DPDTimeout)
	case c.Retransmit.Tries < 0 || c.Retransmit.Tries > 20:
		return nil, fieldErr("Retransmit.Tries", "%d not in 0..20", c.Retransmit.Tries)
	case c.Retransmit.Timeout < 10*time.Millisecond:
		return nil, fieldErr("Retransmit.Timeout", "%v is shorter than 10ms", c.Retransmit.Timeout)
	case c.Retransmit.Base < 1 || c.Retransmit.Base > 4:
		return nil, fieldErr("Retransmit.Base", "%v not in 1..4", c.Retransmit.Base)
	case c.KeyingTries < 0:
		return nil, fieldErr("KeyingTries", "%d is negative", c.KeyingTries)
	case c.RetryMax < c.RetryInterval:
		return nil, fieldErr("RetryMax", "%v is shorter than RetryInterval %v", c.RetryMax, c.RetryInterval)
	case c.FragmentSize < 256 || c.FragmentSize > 65000:
		return nil, fieldErr("FragmentSize", "%d not in 256..65000", c.FragmentSize)
	case c.CookieThreshold < 0:
		return nil, fieldErr("CookieThreshold", "%d is negative", c.CookieThreshold)
	}
	switch c.DPDAction {
	case DPDClear, DPDRestart, DPDNone:
	default:
		return nil, fieldErr("DPDAction", "%q is not clear, restart or none", c.DPDAction)
	}
	switch c.CloseAction {
	case DPDNone, DPDRestart:
	default:
		return nil, fieldErr("CloseAction", "%q is not none or restart", c.CloseAction)
	}
	switch c.StartAction {
	case StartAdd, StartStart:
	default:
		return nil, fieldErr("StartAction", "%q is not add or start", c.StartAction)
	}
	for i, p := range c.LocalTS {
		if !p.IsValid() {
			return nil, fieldErr(fmt.Sprintf("LocalTS[%d]", i), "invalid prefix")
		}
	}
	for i, p := range c.RemoteTS {
		if !p.IsValid() {
			return nil, fieldErr(fmt.Sprintf("RemoteTS[%d]", i), "invalid prefix")
		}
	}
	return c, nil
}

// Identity is an IKE identity (RFC 7296 §3.5).
type Identity struct {
	Type IDType
	Data []byte
}

// ParseIdentity parses an IP address, an FQDN ("host.example" or "@host.example") or an
// RFC 822 address ("user@host.example").
func ParseIdentity(s string) (Identity, error) {
	switch {
	case s == "":
		return Identity{}, errors.New("empty identity")
	case strings.HasPrefix(s, "@"):
		if len(s) == 1 {
			return Identity{}, errors.New("empty FQDN after @")
		}
		return Identity{Type: IDFQDN, Data: []byte(s[1:])}, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Is4() {
			return Identity{Type: IDIPv4Addr, Data: a.AsSlice()}, nil
		}
		b := a.As16()
		return Identity{Type: IDIPv6Addr, Data: b[:]}, nil
	}
	if strings.Contains(s, "@") {
		return Identity{Type: IDRFC822Addr, Data: []byte(s)}, nil
	}
	for _, r := range s {
		if r <= ' ' || r > '~' {
			return Identity{}, fmt.Errorf("identity %q has a non-printable character", s)
		}
	}
	return Identity{Type: IDFQDN, Data: []byte(s)}, nil
}

// String formats the identity as strongSwan does (addresses plainly, others as text or hex).
func (id Identity) String() string {
	switch id.Type {
	case IDIPv4Addr, IDIPv6Addr:
		if a, ok := netip.AddrFromSlice(id.Data); ok {
			return a.Unmap().String()
		}
	case IDFQDN, IDRFC822Addr:
		return string(id.Data)
	}
	return fmt.Sprintf("%s:%x", id.Type, id.Data)
}

// Equal compares type and data.
func (id Identity) Equal(o Identity) bool { return id.Type == o.Type && bytes.Equal(id.Data, o.Data) }

// body is the ID payload body used in AUTH computation: type | 3 reserved bytes | data.
func (id Identity) body() []byte {
	return append([]byte{byte(id.Type), 0, 0, 0}, id.Data...)
}
