package bgp

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Family is an address family a session carries.
type Family string

// Families.
const (
	IPv4 Family = "ipv4"
	IPv6 Family = "ipv6"
)

// Defaults (AWS Site-to-Site VPN: hold 30 s, keepalive 10 s; a concentrator site may send 1,000
// prefixes and receives up to 5,000).
const (
	DefaultHoldTime           = 30 * time.Second
	DefaultKeepalive          = 10 * time.Second
	DefaultConnectRetry       = 5 * time.Second
	DefaultMaxPrefixes        = 5000
	DefaultMaxAdvertised      = 1000
	DefaultWarnPercent        = 90
	DefaultPrefixLimitRestart = 60 * time.Second
)

// ErrRestartRequired is returned by Update when the change (local ASN, router ID) needs a new
// Speaker: gobgp cannot change its global configuration while running.
var ErrRestartRequired = errors.New("bgp: the local ASN or router ID changed: stop the speaker and start a new one")

// Config is the speaker's configuration: one eBGP session per tunnel (per inside address
// family, when IPv6 has its own session).
type Config struct {
	// ASN is the local (customer gateway) AS number.
	ASN uint32
	// RouterID is the BGP identifier; default: the first IPv4 inside address of Peers.
	RouterID netip.Addr
	// Prefixes are the site's LAN prefixes, advertised to every peer (IPv6 ones to sessions
	// carrying IPv6).
	Prefixes []netip.Prefix
	// MaxAdvertised bounds len(Prefixes) (default 1,000: what AWS accepts from a concentrator
	// site; more would get the session torn down with Cease 6/1 by the concentrator).
	MaxAdvertised int
	// Listen accepts connections on port 179 of the peers' Local addresses (needed for Passive
	// peers). Off by default: the speaker connects out and has no listening socket at all.
	Listen bool
	Peers  []PeerConfig
}

// PeerConfig is one BGP session over a tunnel's inside addresses.
type PeerConfig struct {
	// Tunnel names the tunnel; learned routes go through its device (vpn/route), and
	// PeerDown/PeerUp address it. Several sessions (IPv4 and IPv6) may share a tunnel.
	Tunnel string
	// Address is the peer's inside address (AWS's side of the /30 or /126).
	Address netip.Addr
	// Local is our inside address with its prefix length ("169.254.10.2/30"): the session's
	// source, and with Local6 what counts as a connected next hop.
	Local netip.Prefix
	// Local6 is our IPv6 inside address ("fd00:10::2/126") on an IPv4 session that carries
	// IPv6: the next hop we advertise for IPv6 prefixes (default: IPv4-mapped Local).
	Local6 netip.Prefix
	// ASN is the peer's AS number (AWS default 64512).
	ASN uint32
	// Families the session carries; default: the family of Address. An IPv4 session may add
	// IPv6 (MP-BGP); an IPv6 session carries IPv6 only.
	Families []Family
	// HoldTime and Keepalive (defaults 30 s and 10 s); ConnectRetry between attempts (5 s).
	HoldTime, Keepalive, ConnectRetry time.Duration
	// MaxPrefixes is the import limit per family (default 5,000; negative: none). Exceeding it
	// ends the session with Cease 6/1.
	MaxPrefixes int
	// WarnPercent logs a maximum-prefix warning above this share of MaxPrefixes (default 90).
	WarnPercent int
	// PrefixLimitRestart is how long a session stopped by the prefix limit stays down before
	// it is tried again (default 60 s; negative: until PeerUp or Update).
	PrefixLimitRestart time.Duration
	// MED, if set, is sent with our prefixes to this peer; Prepend prepends our AS this many
	// extra times (0-10). AWS chooses its tunnel towards the site by AS path, then MED.
	MED     *uint32
	Prepend int
	// ResourceID is the BGP log's resource_id and stream for this session
	// (vpnlog.ResourceID(connection, tunnel outside address)); default: the tunnel name.
	ResourceID string
	// Passive waits for the peer to connect (needs Config.Listen).
	Passive bool

	// port is the peer's BGP port (0: 179). Unit tests run sessions on loopback against a
	// peer on an unprivileged port.
	port uint16
}

func (p *PeerConfig) families() []Family {
	if len(p.Families) > 0 {
		return p.Families
	}
	if p.Address.Is6() {
		return []Family{IPv6}
	}
	return []Family{IPv4}
}

func (p *PeerConfig) carries(f Family) bool { return slices.Contains(p.families(), f) }

func (p *PeerConfig) resourceID() string {
	if p.ResourceID != "" {
		return p.ResourceID
	}
	return p.Tunnel
}

// connected reports whether a next hop is on the session's link: in one of our inside prefixes
// (an IPv4-mapped address counts as its IPv4 address), or IPv6 link-local.
func (p *PeerConfig) connected(nh netip.Addr) bool {
	nh = nh.Unmap().WithZone("")
	if nh.Is6() && nh.IsLinkLocalUnicast() {
		return true
	}
	return (p.Local.IsValid() && p.Local.Masked().Contains(nh)) || (p.Local6.IsValid() && p.Local6.Masked().Contains(nh))
}

// withDefaults returns a copy with every default filled in.
func (c Config) withDefaults() Config {
	if c.MaxAdvertised == 0 {
		c.MaxAdvertised = DefaultMaxAdvertised
	}
	if !c.RouterID.IsValid() {
		for _, p := range c.Peers {
			if p.Local.Addr().Is4() {
				c.RouterID = p.Local.Addr()
				break
			}
		}
	}
	c.Prefixes = slices.Clone(c.Prefixes)
	for i := range c.Prefixes {
		c.Prefixes[i] = c.Prefixes[i].Masked()
	}
	slices.SortFunc(c.Prefixes, comparePrefix)
	c.Prefixes = slices.Compact(c.Prefixes)
	c.Peers = slices.Clone(c.Peers)
	for i := range c.Peers {
		p := &c.Peers[i]
		p.Families = slices.Clone(p.families())
		if p.HoldTime == 0 {
			p.HoldTime = DefaultHoldTime
		}
		if p.Keepalive == 0 {
			p.Keepalive = min(DefaultKeepalive, p.HoldTime/3)
		}
		if p.ConnectRetry == 0 {
			p.ConnectRetry = DefaultConnectRetry
		}
		if p.MaxPrefixes == 0 {
			p.MaxPrefixes = DefaultMaxPrefixes
		}
		if p.WarnPercent == 0 {
			p.WarnPercent = DefaultWarnPercent
		}
		if p.PrefixLimitRestart == 0 {
			p.PrefixLimitRestart = DefaultPrefixLimitRestart
		}
	}
	return c
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// Validate checks a configuration (defaults filled in) and names the offending field.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.ASN == 0 || c.ASN == 23456 {
		return fmt.Errorf("bgp: config: ASN %d: want a real AS number (not 0 or AS_TRANS 23456)", c.ASN)
	}
	if !c.RouterID.Is4() {
		return fmt.Errorf("bgp: config: RouterID %v: want an IPv4 address (or an IPv4 inside address to default to)", c.RouterID)
	}
	if len(c.Prefixes) > c.MaxAdvertised {
		return fmt.Errorf("bgp: config: Prefixes: %d prefixes, more than MaxAdvertised %d (the concentrator would end the session with Cease 6/1)", len(c.Prefixes), c.MaxAdvertised)
	}
	for _, pf := range c.Prefixes {
		if !pf.IsValid() {
			return fmt.Errorf("bgp: config: Prefixes: invalid prefix")
		}
	}
	seen := map[netip.Addr]bool{}
	for i, p := range c.Peers {
		where := fmt.Sprintf("bgp: config: Peers[%d] (%s %s)", i, p.Tunnel, p.Address)
		if p.Tunnel == "" {
			return fmt.Errorf("%s: Tunnel: missing", where)
		}
		if !p.Address.IsValid() || p.Address.Zone() != "" {
			return fmt.Errorf("%s: Address: want an IP address without zone", where)
		}
		if seen[p.Address] {
			return fmt.Errorf("%s: Address: duplicate peer", where)
		}
		seen[p.Address] = true
		if !p.Local.IsValid() || p.Local.Addr().Is4() != p.Address.Is4() {
			return fmt.Errorf("%s: Local %v: want our inside address/prefix of the same family as Address", where, p.Local)
		}
		if !p.Local.Masked().Contains(p.Address) || p.Local.Addr() == p.Address {
			return fmt.Errorf("%s: Address is not the other end of Local %s", where, p.Local)
		}
		if p.Local6.IsValid() && !p.Local6.Addr().Is6() {
			return fmt.Errorf("%s: Local6 %s: want an IPv6 prefix", where, p.Local6)
		}
		if p.ASN == 0 || p.ASN == 23456 {
			return fmt.Errorf("%s: ASN %d: want a real AS number", where, p.ASN)
		}
		if p.ASN == c.ASN {
			return fmt.Errorf("%s: ASN %d: same as ours: the concentrator session is eBGP", where, p.ASN)
		}
		for _, f := range p.Families {
			if f != IPv4 && f != IPv6 {
				return fmt.Errorf("%s: Families %q: want ipv4 or ipv6", where, f)
			}
			if f == IPv4 && p.Address.Is6() {
				return fmt.Errorf("%s: Families: IPv4 over an IPv6 session is not supported (use an IPv4 session)", where)
			}
		}
		if p.HoldTime < 3*time.Second || p.HoldTime > 65535*time.Second || p.HoldTime%time.Second != 0 {
			return fmt.Errorf("%s: HoldTime %v: want whole seconds, 3 s to 65535 s", where, p.HoldTime)
		}
		if p.Keepalive < time.Second || p.Keepalive >= p.HoldTime || p.Keepalive%time.Second != 0 {
			return fmt.Errorf("%s: Keepalive %v: want whole seconds, at least 1 s and below HoldTime %v", where, p.Keepalive, p.HoldTime)
		}
		if p.ConnectRetry < time.Second || p.ConnectRetry%time.Second != 0 {
			return fmt.Errorf("%s: ConnectRetry %v: want whole seconds, at least 1 s", where, p.ConnectRetry)
		}
		if p.WarnPercent < 1 || p.WarnPercent > 100 {
			return fmt.Errorf("%s: WarnPercent %d: want 1-100", where, p.WarnPercent)
		}
		if p.Passive && !c.Listen {
			return fmt.Errorf("%s: Passive needs Config.Listen", where)
		}
		if p.Prepend < 0 || p.Prepend > 10 {
			return fmt.Errorf("%s: Prepend %d: want 0-10", where, p.Prepend)
		}
	}
	return nil
}
