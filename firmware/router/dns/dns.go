// Package dns is the LAN's DNS forwarder (github.com/miekg/dns for the protocol): it answers the
// local names itself — the router's name, the DHCP clients' host names under the local domain
// ("lan"), their reverse (PTR) names in the LAN prefix, localhost — and forwards everything else
// to the WAN's upstream servers, with a bounded cache that follows the records' TTLs (and SOA
// minimums for negative answers). Local names never leave the router and keep working when the
// WAN is down; single-label names that are not local get NXDOMAIN instead of leaking upstream.
package dns

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
)

// Hosts resolves the local network's clients (the DHCP server).
type Hosts interface {
	Lookup(name string) (netip.Addr, bool)
	ReverseLookup(ip netip.Addr) (string, bool)
}

// Config configures the forwarder.
type Config struct {
	// Domain is the local domain (default "lan").
	Domain string
	// Hostname is the router's own name; RouterAddr its LAN address (answered for Hostname and
	// "router").
	Hostname   string
	RouterAddr netip.Addr
	// LANPrefix is the LAN (its reverse zone is answered locally).
	LANPrefix netip.Prefix
	// Hosts resolves DHCP clients (nil: none).
	Hosts Hosts
	// Upstreams returns the servers to forward to, in order (the WAN's, from DHCP).
	Upstreams func() []netip.Addr
	// CacheSize bounds the cache (default 1024 answers); Timeout bounds one upstream attempt
	// (default 2 s).
	CacheSize int
	Timeout   time.Duration
	// Exchange sends a query to one upstream ("addr:53"); default: miekg/dns's client over
	// UDP, retried over TCP when truncated.
	Exchange func(ctx context.Context, m *mdns.Msg, server string) (*mdns.Msg, error)
	// Now is the cache's clock (default time.Now).
	Now    func() time.Time
	Logger *slog.Logger
}

// Stats counts queries.
type Stats struct {
	Queries, Local, Cached, Forwarded, Failed uint64
}

// Forwarder answers DNS queries.
type Forwarder struct {
	cfg    Config
	log    *slog.Logger
	domain string // "lan." (canonical, with the dot)

	mu    sync.Mutex
	cache map[cacheKey]*list.Element
	lru   *list.List

	queries, local, cached, forwarded, failed atomic.Uint64
}

type cacheKey struct {
	name          string
	qtype, qclass uint16
	do            bool
}

type cacheEntry struct {
	key     cacheKey
	msg     *mdns.Msg
	stored  time.Time
	expires time.Time
}

// New checks the configuration.
func New(cfg Config) (*Forwarder, error) {
	if cfg.Domain == "" {
		cfg.Domain = "lan"
	}
	if _, ok := mdns.IsDomainName(cfg.Domain); !ok || strings.Trim(cfg.Domain, ".") == "" {
		return nil, fmt.Errorf("dns: domain %q: want a domain name", cfg.Domain)
	}
	if cfg.Hostname == "" || strings.ContainsAny(cfg.Hostname, ". ") {
		return nil, fmt.Errorf("dns: hostname %q: want one label", cfg.Hostname)
	}
	if !cfg.RouterAddr.IsValid() {
		return nil, errors.New("dns: router address required")
	}
	if cfg.Upstreams == nil {
		cfg.Upstreams = func() []netip.Addr { return nil }
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 1024
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	f := &Forwarder{cfg: cfg, log: cfg.Logger.With("service", "dns"), domain: mdns.CanonicalName(cfg.Domain),
		cache: map[cacheKey]*list.Element{}, lru: list.New()}
	if f.cfg.Exchange == nil {
		f.cfg.Exchange = f.exchange
	}
	return f, nil
}

// Stats returns the counters.
func (f *Forwarder) Stats() Stats {
	return Stats{Queries: f.queries.Load(), Local: f.local.Load(), Cached: f.cached.Load(), Forwarded: f.forwarded.Load(), Failed: f.failed.Load()}
}

// ServeDNS implements mdns.Handler.
func (f *Forwarder) ServeDNS(w mdns.ResponseWriter, r *mdns.Msg) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*f.cfg.Timeout)
	defer cancel()
	resp := f.Answer(ctx, r)
	if resp == nil {
		return
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		size := mdns.MinMsgSize
		if o := r.IsEdns0(); o != nil {
			size = max(int(o.UDPSize()), mdns.MinMsgSize)
		}
		resp.Truncate(size)
	}
	if err := w.WriteMsg(resp); err != nil {
		f.log.Debug("dns: reply not sent", "err", err)
	}
}

// Answer answers one query (nil: no answer at all, for messages that are not queries).
func (f *Forwarder) Answer(ctx context.Context, r *mdns.Msg) *mdns.Msg {
	if r == nil || r.Response {
		return nil
	}
	f.queries.Add(1)
	if r.Opcode != mdns.OpcodeQuery {
		return reply(r, mdns.RcodeNotImplemented)
	}
	if len(r.Question) != 1 {
		return reply(r, mdns.RcodeFormatError)
	}
	q := r.Question[0]
	if _, ok := mdns.IsDomainName(q.Name); !ok {
		return reply(r, mdns.RcodeFormatError)
	}
	if m := f.answerLocal(r, q); m != nil {
		f.local.Add(1)
		return m
	}
	return f.forward(ctx, r, q)
}

func reply(r *mdns.Msg, rcode int) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetRcode(r, rcode)
	m.RecursionAvailable = true
	if o := r.IsEdns0(); o != nil {
		m.SetEdns0(1232, o.Do())
	}
	return m
}

const localTTL = 60

func (f *Forwarder) soa() mdns.RR {
	return &mdns.SOA{Hdr: mdns.RR_Header{Name: f.domain, Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: localTTL},
		Ns: mdns.Fqdn(f.cfg.Hostname + "." + strings.TrimSuffix(f.domain, ".")), Mbox: "hostmaster." + f.domain,
		Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: localTTL}
}

// answerLocal answers names the router is authoritative for; nil means forward.
func (f *Forwarder) answerLocal(r *mdns.Msg, q mdns.Question) *mdns.Msg {
	name := mdns.CanonicalName(q.Name)
	labels := mdns.SplitDomainName(name)
	var host string
	switch {
	case name == "localhost." || strings.HasSuffix(name, ".localhost."):
		return f.addrAnswer(r, q, netip.MustParseAddr("127.0.0.1"), false)
	case name == f.domain:
		return f.nodata(r)
	case strings.HasSuffix(name, "."+f.domain):
		host = strings.TrimSuffix(name, "."+f.domain)
		if strings.Contains(host, ".") {
			return f.nxdomain(r)
		}
	case len(labels) == 1:
		host = labels[0] // a bare name: the local one, or nothing
	case strings.HasSuffix(name, ".in-addr.arpa."):
		ip, ok := reverseAddr(name)
		if !ok || !f.cfg.LANPrefix.IsValid() || !f.cfg.LANPrefix.Contains(ip) {
			return nil
		}
		return f.ptrAnswer(r, q, ip)
	default:
		return nil
	}
	if host == strings.ToLower(f.cfg.Hostname) || host == "router" {
		return f.addrAnswer(r, q, f.cfg.RouterAddr, true)
	}
	if f.cfg.Hosts != nil {
		if ip, ok := f.cfg.Hosts.Lookup(host); ok {
			return f.addrAnswer(r, q, ip, true)
		}
	}
	return f.nxdomain(r)
}

func (f *Forwarder) addrAnswer(r *mdns.Msg, q mdns.Question, ip netip.Addr, auth bool) *mdns.Msg {
	m := reply(r, mdns.RcodeSuccess)
	m.Authoritative = auth
	hdr := mdns.RR_Header{Name: q.Name, Class: mdns.ClassINET, Ttl: localTTL}
	switch {
	case (q.Qtype == mdns.TypeA || q.Qtype == mdns.TypeANY) && ip.Is4():
		hdr.Rrtype = mdns.TypeA
		m.Answer = append(m.Answer, &mdns.A{Hdr: hdr, A: ip.AsSlice()})
	case (q.Qtype == mdns.TypeAAAA || q.Qtype == mdns.TypeANY) && ip.Is6():
		hdr.Rrtype = mdns.TypeAAAA
		m.Answer = append(m.Answer, &mdns.AAAA{Hdr: hdr, AAAA: ip.AsSlice()})
	default:
		m.Ns = append(m.Ns, f.soa())
	}
	return m
}

func (f *Forwarder) ptrAnswer(r *mdns.Msg, q mdns.Question, ip netip.Addr) *mdns.Msg {
	var host string
	switch {
	case ip == f.cfg.RouterAddr:
		host = f.cfg.Hostname
	case f.cfg.Hosts != nil:
		host, _ = f.cfg.Hosts.ReverseLookup(ip)
	}
	if host == "" {
		return f.nxdomain(r)
	}
	m := reply(r, mdns.RcodeSuccess)
	m.Authoritative = true
	if q.Qtype == mdns.TypePTR || q.Qtype == mdns.TypeANY {
		m.Answer = append(m.Answer, &mdns.PTR{Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypePTR, Class: mdns.ClassINET, Ttl: localTTL},
			Ptr: mdns.Fqdn(host + "." + strings.TrimSuffix(f.domain, "."))})
	} else {
		m.Ns = append(m.Ns, f.soa())
	}
	return m
}

func (f *Forwarder) nxdomain(r *mdns.Msg) *mdns.Msg {
	m := reply(r, mdns.RcodeNameError)
	m.Authoritative = true
	m.Ns = append(m.Ns, f.soa())
	return m
}

func (f *Forwarder) nodata(r *mdns.Msg) *mdns.Msg {
	m := reply(r, mdns.RcodeSuccess)
	m.Authoritative = true
	m.Ns = append(m.Ns, f.soa())
	return m
}

// reverseAddr parses "d.c.b.a.in-addr.arpa.".
func reverseAddr(name string) (netip.Addr, bool) {
	parts := strings.Split(strings.TrimSuffix(name, ".in-addr.arpa."), ".")
	if len(parts) != 4 {
		return netip.Addr{}, false
	}
	ip, err := netip.ParseAddr(parts[3] + "." + parts[2] + "." + parts[1] + "." + parts[0])
	return ip, err == nil
}

// forward answers from the cache or the upstreams.
func (f *Forwarder) forward(ctx context.Context, r *mdns.Msg, q mdns.Question) *mdns.Msg {
	do := false
	if o := r.IsEdns0(); o != nil {
		do = o.Do()
	}
	key := cacheKey{name: mdns.CanonicalName(q.Name), qtype: q.Qtype, qclass: q.Qclass, do: do}
	if m := f.fromCache(key, r); m != nil {
		f.cached.Add(1)
		return m
	}
	ups := f.cfg.Upstreams()
	if len(ups) == 0 {
		f.failed.Add(1)
		return reply(r, mdns.RcodeServerFailure)
	}
	out := r.Copy()
	out.Id = mdns.Id()
	out.RecursionDesired = true
	var last error
	for _, u := range ups {
		actx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
		resp, err := f.cfg.Exchange(actx, out, netip.AddrPortFrom(u, 53).String())
		cancel()
		if err != nil {
			last = err
			continue
		}
		if resp.Id != out.Id || len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, q.Name) || resp.Question[0].Qtype != q.Qtype {
			last = errors.New("mismatched answer")
			continue
		}
		if resp.Rcode == mdns.RcodeServerFailure || resp.Rcode == mdns.RcodeRefused {
			last = fmt.Errorf("upstream %s: %s", u, mdns.RcodeToString[resp.Rcode])
			continue
		}
		f.forwarded.Add(1)
		f.store(key, resp)
		resp.Id = r.Id
		resp.RecursionAvailable = true
		return resp
	}
	f.failed.Add(1)
	f.log.Debug("dns: no upstream answered", "name", q.Name, "err", last)
	return reply(r, mdns.RcodeServerFailure)
}

func (f *Forwarder) exchange(ctx context.Context, m *mdns.Msg, server string) (*mdns.Msg, error) {
	c := &mdns.Client{Net: "udp", Timeout: f.cfg.Timeout}
	resp, _, err := c.ExchangeContext(ctx, m, server)
	if err == nil && resp.Truncated {
		c.Net = "tcp"
		resp, _, err = c.ExchangeContext(ctx, m, server)
	}
	return resp, err
}

// ttlOf is how long a response may be cached: the smallest TTL of its records (answers and
// authority), the SOA minimum for negative answers; 0 for what must not be cached.
func ttlOf(m *mdns.Msg) time.Duration {
	if m.Truncated || (m.Rcode != mdns.RcodeSuccess && m.Rcode != mdns.RcodeNameError) {
		return 0
	}
	ttl := uint32(3600)
	seen := false
	for _, rr := range append(append([]mdns.RR(nil), m.Answer...), m.Ns...) {
		h := rr.Header()
		t := h.Ttl
		if soa, ok := rr.(*mdns.SOA); ok && len(m.Answer) == 0 {
			t = min(t, soa.Minttl, 300)
		}
		ttl = min(ttl, t)
		seen = true
	}
	if !seen {
		return 0 // a negative answer without an SOA: do not cache (RFC 2308 5)
	}
	return time.Duration(ttl) * time.Second
}

func (f *Forwarder) store(key cacheKey, m *mdns.Msg) {
	ttl := ttlOf(m)
	if ttl <= 0 {
		return
	}
	now := f.cfg.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if el, ok := f.cache[key]; ok {
		f.lru.Remove(el)
		delete(f.cache, key)
	}
	f.cache[key] = f.lru.PushFront(&cacheEntry{key: key, msg: m.Copy(), stored: now, expires: now.Add(ttl)})
	for f.lru.Len() > f.cfg.CacheSize {
		old := f.lru.Back()
		f.lru.Remove(old)
		delete(f.cache, old.Value.(*cacheEntry).key)
	}
}

// fromCache returns a cached answer with its TTLs aged, or nil.
func (f *Forwarder) fromCache(key cacheKey, r *mdns.Msg) *mdns.Msg {
	now := f.cfg.Now()
	f.mu.Lock()
	el, ok := f.cache[key]
	if !ok {
		f.mu.Unlock()
		return nil
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.expires) {
		f.lru.Remove(el)
		delete(f.cache, key)
		f.mu.Unlock()
		return nil
	}
	f.lru.MoveToFront(el)
	m := e.msg.Copy()
	f.mu.Unlock()
	age := uint32(now.Sub(e.stored) / time.Second)
	for _, sec := range [][]mdns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if h := rr.Header(); h.Rrtype != mdns.TypeOPT {
				h.Ttl -= min(age, h.Ttl)
			}
		}
	}
	m.Id = r.Id
	m.Question = r.Question
	m.RecursionAvailable = true
	return m
}

// CacheLen is the number of cached answers.
func (f *Forwarder) CacheLen() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lru.Len()
}

// Listen opens UDP and TCP port 53 on addr (the LAN address).
func Listen(addr netip.Addr, port int) (net.PacketConn, net.Listener, error) {
	ap := netip.AddrPortFrom(addr, uint16(port)).String()
	pc, err := net.ListenPacket("udp", ap)
	if err != nil {
		return nil, nil, fmt.Errorf("dns: listen udp %s: %w", ap, err)
	}
	ln, err := net.Listen("tcp", ap)
	if err != nil {
		pc.Close()
		return nil, nil, fmt.Errorf("dns: listen tcp %s: %w", ap, err)
	}
	return pc, ln, nil
}

// Serve answers on pc (UDP) and ln (TCP) until ctx ends.
func (f *Forwarder) Serve(ctx context.Context, pc net.PacketConn, ln net.Listener) error {
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	udp := &mdns.Server{PacketConn: pc, Handler: f, NotifyStartedFunc: notify}
	tcp := &mdns.Server{Listener: ln, Handler: f, NotifyStartedFunc: notify}
	errc := make(chan error, 2)
	go func() { errc <- udp.ActivateAndServe() }()
	go func() { errc <- tcp.ActivateAndServe() }()
	var err error
	// Both servers must have started before they can be shut down.
	for n := 0; n < 2 && err == nil; {
		select {
		case <-started:
			n++
		case err = <-errc:
		}
	}
	if err == nil {
		select {
		case <-ctx.Done():
		case err = <-errc:
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	udp.ShutdownContext(sctx)
	tcp.ShutdownContext(sctx)
	pc.Close()
	ln.Close()
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("dns: %w", err)
	}
	return nil
}
