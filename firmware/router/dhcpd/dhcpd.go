// Package dhcpd is the LAN's DHCPv4 server: github.com/insomniacslk/dhcp's server4 for the socket
// and dhcpv4 for the messages, and our own lease allocation: a pool inside the LAN prefix,
// static leases by MAC address, leases kept in a file on the data partition (written atomically,
// so a power cut leaves the old file or the new one), client host names for the DNS forwarder.
//
// Why server4 and not coredhcp: coredhcp is a plugin framework around the same dhcpv4 package,
// configured from YAML, whose range plugin keeps leases in SQLite; what the router needs on top of
// the packet handling is small (one pool, static leases, an atomic JSON lease file, host names
// for local DNS) and is clearer as Go code we test directly than as plugin configuration.
//
// Behaviour (RFC 2131):
//
//   - DISCOVER: the client's static address, else its previous address, else the address it asks
//     for when free, else the first never-used address, else the longest-expired one; the offer
//     reserves it for OfferHold.
//   - REQUEST (selecting, init-reboot, renewing, rebinding): ACK when the address is the client's
//     or free in the pool (the server is authoritative for the LAN, so a client keeps its address
//     across a router reboot even if the lease file was lost), NAK when it is someone else's or
//     outside the LAN; silence when the client selected another server.
//   - RELEASE ends the lease (the address stays the client's preferred one); DECLINE quarantines
//     the address for DeclineHold; INFORM gets the options without an address.
//   - Replies go to the relay (giaddr), or unicast to a renewing client's ciaddr, else broadcast.
package dhcpd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"

	"meshroot/firmware"
)

// StaticLease pins an address (and optionally a host name) to a MAC address.
type StaticLease struct {
	MAC      string     `json:"mac"`
	IP       netip.Addr `json:"ip"`
	Hostname string     `json:"hostname,omitempty"`
}

// Config configures the server.
type Config struct {
	// Interface is the LAN bridge the server listens on.
	Interface string
	// Address is the router's LAN address with the LAN's prefix length (192.168.1.1/24).
	Address netip.Prefix
	// PoolStart and PoolEnd bound the dynamic addresses (default: host .100 to .249 of a /24,
	// or the upper half of the prefix for other sizes).
	PoolStart, PoolEnd netip.Addr
	// LeaseTime is the lease length (default 12 h); OfferHold how long an offered address
	// stays reserved (default 60 s); DeclineHold how long a declined address is not offered
	// (default 10 min).
	LeaseTime, OfferHold, DeclineHold time.Duration
	// Domain is the local domain given to clients (option 15; default "lan").
	Domain string
	// DNS are the DNS servers given to clients (default: the router's LAN address).
	DNS []netip.Addr
	// Static leases.
	Static []StaticLease
	// LeaseFile keeps the leases ("" keeps them in memory only).
	LeaseFile string
	// FlushEvery bounds how long an extended lease stays unwritten (default 5 min): new and
	// changed leases are written at once, renewals in batches to spare the flash.
	FlushEvery time.Duration
	// Now is the clock (default time.Now).
	Now    func() time.Time
	Logger *slog.Logger
}

// Lease is one address given to a client.
type Lease struct {
	MAC      string     `json:"mac"`
	IP       netip.Addr `json:"ip"`
	Hostname string     `json:"hostname,omitempty"`
	Expires  time.Time  `json:"expires"`
	Static   bool       `json:"static,omitempty"`
	offered  bool       // an offer only, not acknowledged
}

// Stats counts messages.
type Stats struct {
	Discover, Offer, Request, Ack, Nak, Release, Decline, Inform, Dropped uint64
}

// Server hands out LAN addresses.
type Server struct {
	cfg    Config
	log    *slog.Logger
	prefix netip.Prefix
	server netip.Addr

	mu       sync.Mutex
	byMAC    map[string]*Lease
	byIP     map[netip.Addr]*Lease
	static   map[string]StaticLease
	staticIP map[netip.Addr]bool
	declined map[netip.Addr]time.Time
	stats    Stats
	dirty    bool
	lastSave time.Time
}

// LeaseFileVersion is the lease file's format version.
const LeaseFileVersion = 1

type leaseFile struct {
	Version int     `json:"version"`
	Leases  []Lease `json:"leases"`
}

// New checks the configuration and loads the lease file (an unreadable file is logged and the
// server starts empty: clients keep their addresses through init-reboot anyway).
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.LeaseTime <= 0 {
		cfg.LeaseTime = 12 * time.Hour
	}
	if cfg.OfferHold <= 0 {
		cfg.OfferHold = time.Minute
	}
	if cfg.DeclineHold <= 0 {
		cfg.DeclineHold = 10 * time.Minute
	}
	if cfg.FlushEvery <= 0 {
		cfg.FlushEvery = 5 * time.Minute
	}
	if cfg.Domain == "" {
		cfg.Domain = "lan"
	}
	a := cfg.Address
	if !a.IsValid() || !a.Addr().Is4() || a.Bits() < 8 || a.Bits() > 30 {
		return nil, fmt.Errorf("dhcpd: address %v: want an IPv4 host address in a /8../30", a)
	}
	prefix := a.Masked()
	if !cfg.PoolStart.IsValid() || !cfg.PoolEnd.IsValid() {
		cfg.PoolStart, cfg.PoolEnd = defaultPool(prefix)
	}
	if !prefix.Contains(cfg.PoolStart) || !prefix.Contains(cfg.PoolEnd) || cfg.PoolEnd.Less(cfg.PoolStart) {
		return nil, fmt.Errorf("dhcpd: pool %s-%s: want a range inside %s", cfg.PoolStart, cfg.PoolEnd, prefix)
	}
	if len(cfg.DNS) == 0 {
		cfg.DNS = []netip.Addr{a.Addr()}
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("service", "dhcp"), prefix: prefix, server: a.Addr(),
		byMAC: map[string]*Lease{}, byIP: map[netip.Addr]*Lease{}, static: map[string]StaticLease{},
		staticIP: map[netip.Addr]bool{}, declined: map[netip.Addr]time.Time{}}
	for i, st := range cfg.Static {
		mac, err := net.ParseMAC(st.MAC)
		if err != nil || len(mac) != 6 {
			return nil, fmt.Errorf("dhcpd: static[%d].mac %q: want a MAC address", i, st.MAC)
		}
		if !prefix.Contains(st.IP) || st.IP == a.Addr() || st.IP == prefix.Addr() || st.IP == broadcast(prefix) {
			return nil, fmt.Errorf("dhcpd: static[%d].ip %v: want a host address in %s other than the router's", i, st.IP, prefix)
		}
		if st.Hostname != "" && SanitizeHostname(st.Hostname) != strings.ToLower(st.Hostname) {
			return nil, fmt.Errorf("dhcpd: static[%d].hostname %q: want a DNS label (a-z, 0-9, '-')", i, st.Hostname)
		}
		key := mac.String()
		if _, dup := s.static[key]; dup || s.staticIP[st.IP] {
			return nil, fmt.Errorf("dhcpd: static[%d]: MAC %s or address %s listed twice", i, key, st.IP)
		}
		st.MAC, st.Hostname = key, strings.ToLower(st.Hostname)
		s.static[key] = st
		s.staticIP[st.IP] = true
	}
	if cfg.LeaseFile != "" {
		if err := s.load(); err != nil {
			s.log.Warn("dhcp: lease file unreadable; starting without leases", "file", cfg.LeaseFile, "err", err)
		}
	}
	return s, nil
}

func defaultPool(p netip.Prefix) (netip.Addr, netip.Addr) {
	if p.Bits() == 24 {
		b := p.Addr().As4()
		return netip.AddrFrom4([4]byte{b[0], b[1], b[2], 100}), netip.AddrFrom4([4]byte{b[0], b[1], b[2], 249})
	}
	// The upper half, without the broadcast address.
	size := uint32(1) << (32 - p.Bits())
	base := u32(p.Addr())
	return from32(base + size/2), from32(base + size - 2)
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func from32(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func broadcast(p netip.Prefix) netip.Addr {
	return from32(u32(p.Addr()) | (1<<(32-p.Bits()) - 1))
}

// ParseLeaseFile decodes a lease file strictly.
func ParseLeaseFile(b []byte) ([]Lease, error) {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	var f leaseFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("lease file: %w", err)
	}
	if dec.More() {
		return nil, errors.New("lease file: trailing data")
	}
	if f.Version != LeaseFileVersion {
		return nil, fmt.Errorf("lease file: version %d: want %d", f.Version, LeaseFileVersion)
	}
	for i, l := range f.Leases {
		mac, err := net.ParseMAC(l.MAC)
		if err != nil || len(mac) != 6 {
			return nil, fmt.Errorf("lease file: leases[%d].mac %q: want a MAC address", i, l.MAC)
		}
		if !l.IP.Is4() {
			return nil, fmt.Errorf("lease file: leases[%d].ip %v: want an IPv4 address", i, l.IP)
		}
		if l.Hostname != SanitizeHostname(l.Hostname) {
			return nil, fmt.Errorf("lease file: leases[%d].hostname %q: not a DNS label", i, l.Hostname)
		}
		f.Leases[i].MAC = mac.String()
	}
	return f.Leases, nil
}

func (s *Server) load() error {
	b, err := os.ReadFile(s.cfg.LeaseFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	leases, err := ParseLeaseFile(b)
	if err != nil {
		return err
	}
	kept := 0
	for _, l := range leases {
		l := l
		st, static := s.static[l.MAC]
		switch {
		case s.byIP[l.IP] != nil || s.byMAC[l.MAC] != nil:
			continue
		case static && st.IP == l.IP:
		case static || !s.inPool(l.IP) || s.staticIP[l.IP]:
			continue // the pool or the static leases changed since: forget it
		}
		l.Static = static
		s.byMAC[l.MAC], s.byIP[l.IP] = &l, &l
		kept++
	}
	s.log.Info("dhcp: leases loaded", "file", s.cfg.LeaseFile, "leases", kept)
	return nil
}

// save writes the lease file (caller holds mu).
func (s *Server) saveLocked() {
	s.dirty = false
	s.lastSave = s.cfg.Now()
	if s.cfg.LeaseFile == "" {
		return
	}
	f := leaseFile{Version: LeaseFileVersion, Leases: []Lease{}}
	for _, l := range s.byMAC {
		if !l.offered {
			f.Leases = append(f.Leases, *l)
		}
	}
	slices.SortFunc(f.Leases, func(a, b Lease) int { return a.IP.Compare(b.IP) })
	b, _ := json.MarshalIndent(f, "", " ")
	if err := os.MkdirAll(filepath.Dir(s.cfg.LeaseFile), 0o755); err == nil {
		err = firmware.WriteFileAtomic(s.cfg.LeaseFile, append(b, '\n'), 0o644)
		if err == nil {
			return
		}
		s.log.Error("dhcp: cannot write the lease file", "file", s.cfg.LeaseFile, "err", err)
		s.dirty = true
		return
	}
	s.dirty = true
}

// Flush writes pending lease extensions.
func (s *Server) Flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dirty {
		s.saveLocked()
	}
}

func (s *Server) inPool(a netip.Addr) bool {
	return a.Is4() && !a.Less(s.cfg.PoolStart) && !s.cfg.PoolEnd.Less(a)
}

// SanitizeHostname turns a client's host name (DHCP option 12) into a DNS label: lower case,
// a-z 0-9 '-', at most 63 bytes, no leading or trailing '-'; "" when nothing usable is left.
// Only the first label of a dotted name is kept.
func SanitizeHostname(h string) string {
	if i := strings.IndexByte(h, '.'); i >= 0 {
		h = h[:i]
	}
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			b.WriteRune(r)
		case r == '_' || r == ' ':
			b.WriteByte('-')
		}
		if b.Len() >= 63 {
			break
		}
	}
	out := strings.Trim(b.String(), "-")
	if len(out) > 63 {
		out = strings.Trim(out[:63], "-")
	}
	return out
}

// Handle answers one client message; nil means no answer. It is safe for concurrent use.
func (s *Server) Handle(req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	if req == nil || req.OpCode != dhcpv4.OpcodeBootRequest || len(req.ClientHWAddr) != 6 {
		s.count(func(st *Stats) { st.Dropped++ })
		return nil
	}
	mac := req.ClientHWAddr.String()
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireDeclinedLocked(now)
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		s.stats.Discover++
		ip, ok := s.chooseLocked(mac, req.RequestedIPAddress(), now)
		if !ok {
			s.log.Warn("dhcp: no address to offer (pool exhausted)", "mac", mac)
			return nil
		}
		l := s.bindLocked(mac, ip, now.Add(s.cfg.OfferHold), true)
		l.Hostname = s.hostnameLocked(mac, req)
		s.stats.Offer++
		return s.reply(req, dhcpv4.MessageTypeOffer, ip)
	case dhcpv4.MessageTypeRequest:
		s.stats.Request++
		return s.requestLocked(req, mac, now)
	case dhcpv4.MessageTypeRelease:
		s.stats.Release++
		ip, _ := netip.AddrFromSlice(req.ClientIPAddr.To4())
		if l := s.byMAC[mac]; l != nil && l.IP == ip && !l.Static {
			l.Expires = now
			s.saveLocked()
			s.log.Info("dhcp: lease released", "mac", mac, "ip", ip.String())
		}
		return nil
	case dhcpv4.MessageTypeDecline:
		s.stats.Decline++
		ip, ok := netip.AddrFromSlice(req.RequestedIPAddress().To4())
		if l := s.byMAC[mac]; ok && l != nil && l.IP == ip {
			s.unbindLocked(l)
			s.declined[ip] = now.Add(s.cfg.DeclineHold)
			s.saveLocked()
			s.log.Warn("dhcp: address declined (in use by someone else?)", "mac", mac, "ip", ip.String())
		}
		return nil
	case dhcpv4.MessageTypeInform:
		s.stats.Inform++
		return s.reply(req, dhcpv4.MessageTypeAck, netip.Addr{}) // options only, no address
	}
	s.stats.Dropped++
	return nil
}

func (s *Server) count(f func(*Stats)) {
	s.mu.Lock()
	f(&s.stats)
	s.mu.Unlock()
}

func (s *Server) requestLocked(req *dhcpv4.DHCPv4, mac string, now time.Time) *dhcpv4.DHCPv4 {
	sid := req.ServerIdentifier()
	if sid != nil && !sid.Equal(net.IP(s.server.AsSlice())) {
		// The client chose another server: drop our offer.
		if l := s.byMAC[mac]; l != nil && l.offered {
			s.unbindLocked(l)
		}
		return nil
	}
	want, ok := netip.AddrFromSlice(req.RequestedIPAddress().To4())
	if !ok || !want.IsValid() || want.IsUnspecified() {
		want, ok = netip.AddrFromSlice(req.ClientIPAddr.To4())
	}
	if !ok || want.IsUnspecified() {
		return s.nak(req, "no address requested")
	}
	if !s.prefix.Contains(want) {
		return s.nak(req, "address not on this network")
	}
	if st, ok := s.static[mac]; ok {
		if want != st.IP {
			return s.nak(req, "this client has a static address")
		}
	} else if l := s.byMAC[mac]; l == nil || l.IP != want {
		if !s.freeLocked(want, mac, now) {
			return s.nak(req, "address not available")
		}
	}
	prev := s.byMAC[mac]
	changed := prev == nil || prev.IP != want || prev.offered || !prev.Expires.After(now)
	l := s.bindLocked(mac, want, now.Add(s.cfg.LeaseTime), false)
	if h := s.hostnameLocked(mac, req); h != l.Hostname {
		l.Hostname = h
		changed = true
	}
	s.stats.Ack++
	if changed || now.Sub(s.lastSave) >= s.cfg.FlushEvery {
		s.saveLocked()
		if changed {
			s.log.Info("dhcp: lease", "mac", mac, "ip", want.String(), "hostname", l.Hostname, "expires", l.Expires)
		}
	} else {
		s.dirty = true
	}
	return s.reply(req, dhcpv4.MessageTypeAck, want)
}

func (s *Server) hostnameLocked(mac string, req *dhcpv4.DHCPv4) string {
	if st, ok := s.static[mac]; ok && st.Hostname != "" {
		return st.Hostname
	}
	return SanitizeHostname(req.HostName())
}

// freeLocked reports whether ip can go to mac: in the pool (or mac's static address), not the
// router's, not declined, not bound to another client.
func (s *Server) freeLocked(ip netip.Addr, mac string, now time.Time) bool {
	if !s.inPool(ip) || s.staticIP[ip] || ip == s.server {
		return false
	}
	if until, ok := s.declined[ip]; ok && until.After(now) {
		return false
	}
	if l := s.byIP[ip]; l != nil && l.MAC != mac && l.Expires.After(now) {
		return false
	}
	return true
}

// chooseLocked picks the address to offer.
func (s *Server) chooseLocked(mac string, requested net.IP, now time.Time) (netip.Addr, bool) {
	if st, ok := s.static[mac]; ok {
		return st.IP, true
	}
	if l := s.byMAC[mac]; l != nil && s.freeLocked(l.IP, mac, now) {
		return l.IP, true
	}
	if r, ok := netip.AddrFromSlice(requested.To4()); ok && r.IsValid() && s.byIP[r] == nil && s.freeLocked(r, mac, now) {
		return r, true
	}
	var oldest *Lease
	for a := s.cfg.PoolStart; !s.cfg.PoolEnd.Less(a); a = a.Next() {
		l := s.byIP[a]
		if l == nil {
			if s.freeLocked(a, mac, now) {
				return a, true
			}
			continue
		}
		if !l.Expires.After(now) && (oldest == nil || l.Expires.Before(oldest.Expires)) {
			if _, declined := s.declined[a]; !declined {
				oldest = l
			}
		}
	}
	if oldest != nil {
		return oldest.IP, true
	}
	return netip.Addr{}, false
}

// bindLocked gives ip to mac until expires, taking it from an expired holder.
func (s *Server) bindLocked(mac string, ip netip.Addr, expires time.Time, offered bool) *Lease {
	if l := s.byIP[ip]; l != nil && l.MAC != mac {
		s.unbindLocked(l)
	}
	l := s.byMAC[mac]
	if l == nil {
		l = &Lease{MAC: mac}
		s.byMAC[mac] = l
	}
	if l.IP.IsValid() && l.IP != ip && s.byIP[l.IP] == l {
		delete(s.byIP, l.IP)
	}
	l.IP, l.Expires, l.offered = ip, expires, offered
	_, l.Static = s.static[mac]
	s.byIP[ip] = l
	return l
}

func (s *Server) unbindLocked(l *Lease) {
	if s.byMAC[l.MAC] == l {
		delete(s.byMAC, l.MAC)
	}
	if s.byIP[l.IP] == l {
		delete(s.byIP, l.IP)
	}
}

func (s *Server) expireDeclinedLocked(now time.Time) {
	for ip, until := range s.declined {
		if !until.After(now) {
			delete(s.declined, ip)
		}
	}
}

func (s *Server) nak(req *dhcpv4.DHCPv4, why string) *dhcpv4.DHCPv4 {
	s.stats.Nak++
	r, err := dhcpv4.NewReplyFromRequest(req,
		dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.server.AsSlice())),
		dhcpv4.WithOption(dhcpv4.OptMessage(why)),
		dhcpv4.WithBroadcast(true))
	if err != nil {
		return nil
	}
	s.log.Info("dhcp: NAK", "mac", req.ClientHWAddr.String(), "why", why)
	return r
}

func (s *Server) reply(req *dhcpv4.DHCPv4, t dhcpv4.MessageType, ip netip.Addr) *dhcpv4.DHCPv4 {
	mask := net.CIDRMask(s.prefix.Bits(), 32)
	dns := make([]net.IP, len(s.cfg.DNS))
	for i, d := range s.cfg.DNS {
		dns[i] = d.AsSlice()
	}
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(t),
		dhcpv4.WithServerIP(s.server.AsSlice()),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.server.AsSlice())),
		dhcpv4.WithNetmask(mask),
		dhcpv4.WithOption(dhcpv4.OptRouter(s.server.AsSlice())),
		dhcpv4.WithOption(dhcpv4.OptDNS(dns...)),
		dhcpv4.WithOption(dhcpv4.OptDomainName(s.cfg.Domain)),
		dhcpv4.WithOption(dhcpv4.OptBroadcastAddress(broadcast(s.prefix).AsSlice())),
	}
	if ip.IsValid() {
		mods = append(mods,
			dhcpv4.WithYourIP(ip.AsSlice()),
			dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(s.cfg.LeaseTime)),
			dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(s.cfg.LeaseTime/2)),
			dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(s.cfg.LeaseTime*7/8)))
	}
	r, err := dhcpv4.NewReplyFromRequest(req, mods...)
	if err != nil {
		return nil
	}
	return r
}

// Destination is where a reply to req goes: the relay, the renewing client, or broadcast.
func Destination(req, reply *dhcpv4.DHCPv4) *net.UDPAddr {
	switch {
	case req.GatewayIPAddr != nil && !req.GatewayIPAddr.IsUnspecified():
		return &net.UDPAddr{IP: req.GatewayIPAddr, Port: dhcpv4.ServerPort}
	case reply.MessageType() != dhcpv4.MessageTypeNak && req.ClientIPAddr != nil && !req.ClientIPAddr.IsUnspecified() && !req.IsBroadcast():
		return &net.UDPAddr{IP: req.ClientIPAddr, Port: dhcpv4.ClientPort}
	}
	return &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
}

// Leases returns the acknowledged leases that have not expired, static ones included once
// acknowledged, sorted by address.
func (s *Server) Leases() []Lease {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Lease
	for _, l := range s.byMAC {
		if !l.offered && l.Expires.After(now) {
			out = append(out, *l)
		}
	}
	slices.SortFunc(out, func(a, b Lease) int { return a.IP.Compare(b.IP) })
	return out
}

// Lookup returns the address of a client by its (sanitized) host name: an active lease, or a
// static lease with that name.
func (s *Server) Lookup(host string) (netip.Addr, bool) {
	host = strings.ToLower(host)
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.static {
		if st.Hostname == host {
			return st.IP, true
		}
	}
	var best *Lease
	for _, l := range s.byMAC {
		if l.Hostname == host && !l.offered && l.Expires.After(now) && (best == nil || l.Expires.After(best.Expires)) {
			best = l
		}
	}
	if best == nil {
		return netip.Addr{}, false
	}
	return best.IP, true
}

// ReverseLookup returns the host name of the client holding ip.
func (s *Server) ReverseLookup(ip netip.Addr) (string, bool) {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.static {
		if st.IP == ip && st.Hostname != "" {
			return st.Hostname, true
		}
	}
	if l := s.byIP[ip]; l != nil && l.Hostname != "" && !l.offered && l.Expires.After(now) {
		return l.Hostname, true
	}
	return "", false
}

// Stats returns the message counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Listen opens the server's socket: UDP port 67 on the interface (SO_BINDTODEVICE, broadcast).
func (s *Server) Listen() (net.PacketConn, error) {
	c, err := server4.NewIPv4UDPConn(s.cfg.Interface, &net.UDPAddr{Port: dhcpv4.ServerPort})
	if err != nil {
		return nil, fmt.Errorf("dhcpd: listen on %s: %w", s.cfg.Interface, err)
	}
	return c, nil
}

// Serve answers requests on conn until ctx ends (then it writes pending leases and closes
// conn). Malformed packets are dropped by server4.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	srv, err := server4.NewServer("", nil, func(c net.PacketConn, _ net.Addr, m *dhcpv4.DHCPv4) {
		r := s.Handle(m)
		if r == nil {
			return
		}
		if _, err := c.WriteTo(r.ToBytes(), Destination(m, r)); err != nil {
			s.log.Warn("dhcp: cannot send the reply", "to", Destination(m, r).String(), "err", err)
		}
	}, server4.WithConn(conn))
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	tick := time.NewTicker(s.cfg.FlushEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			srv.Close()
			<-done
			s.Flush()
			return nil
		case err := <-done:
			s.Flush()
			return fmt.Errorf("dhcpd: %w", err)
		case <-tick.C:
			s.Flush()
		}
	}
}
