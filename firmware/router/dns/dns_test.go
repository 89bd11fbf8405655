package dns

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

type hosts map[string]netip.Addr

func (h hosts) Lookup(n string) (netip.Addr, bool) { a, ok := h[n]; return a, ok }
func (h hosts) ReverseLookup(ip netip.Addr) (string, bool) {
	for n, a := range h {
		if a == ip {
			return n, true
		}
	}
	return "", false
}

// upstream is a fake recursive server: fixed records, counts queries.
type upstream struct {
	mu      sync.Mutex
	queries map[string]int
	down    bool
}

func (u *upstream) exchange(_ context.Context, m *mdns.Msg, server string) (*mdns.Msg, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.down {
		return nil, errors.New("i/o timeout")
	}
	if u.queries == nil {
		u.queries = map[string]int{}
	}
	q := m.Question[0]
	u.queries[server+" "+q.Name]++
	r := new(mdns.Msg)
	r.SetReply(m)
	switch q.Name {
	case "example.com.":
		rr, _ := mdns.NewRR("example.com. 300 IN A 198.18.0.1")
		r.Answer = append(r.Answer, rr)
	case "short.example.com.":
		rr, _ := mdns.NewRR("short.example.com. 5 IN A 198.18.0.2")
		r.Answer = append(r.Answer, rr)
	case "broken.example.com.":
		r.Rcode = mdns.RcodeServerFailure
	default:
		r.Rcode = mdns.RcodeNameError
		soa, _ := mdns.NewRR("example.com. 3600 IN SOA ns.example.com. h.example.com. 1 2 3 4 30")
		r.Ns = append(r.Ns, soa)
	}
	return r, nil
}

func (u *upstream) count(k string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.queries[k]
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newFwd(t *testing.T, ups []netip.Addr) (*Forwarder, *upstream, *fakeClock) {
	t.Helper()
	u := &upstream{}
	clk := &fakeClock{t: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)}
	var mu sync.Mutex
	f, err := New(Config{Hostname: "meshroot", RouterAddr: netip.MustParseAddr("192.168.1.1"), LANPrefix: netip.MustParsePrefix("192.168.1.0/24"),
		Hosts:     hosts{"laptop": netip.MustParseAddr("192.168.1.100")},
		Upstreams: func() []netip.Addr { mu.Lock(); defer mu.Unlock(); return ups },
		Exchange:  u.exchange, Now: clk.Now, CacheSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	return f, u, clk
}

func ask(f *Forwarder, name string, qtype uint16) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	return f.Answer(context.Background(), m)
}

func summary(m *mdns.Msg) string {
	if m == nil {
		return "<nil>"
	}
	s := mdns.RcodeToString[m.Rcode]
	for _, rr := range m.Answer {
		f := strings.Fields(rr.String())
		s += " " + f[len(f)-1]
	}
	if m.Authoritative {
		s += " aa"
	}
	return s
}

func TestLocalNames(t *testing.T) {
	f, u, _ := newFwd(t, []netip.Addr{netip.MustParseAddr("100.64.0.53")})
	for _, c := range []struct {
		name  string
		qtype uint16
		want  string
	}{
		{"meshroot.lan.", mdns.TypeA, "NOERROR 192.168.1.1 aa"},
		{"MeshRoot.LAN.", mdns.TypeA, "NOERROR 192.168.1.1 aa"},
		{"router.lan.", mdns.TypeA, "NOERROR 192.168.1.1 aa"},
		{"meshroot.", mdns.TypeA, "NOERROR 192.168.1.1 aa"},
		{"laptop.lan.", mdns.TypeA, "NOERROR 192.168.1.100 aa"},
		{"laptop.", mdns.TypeA, "NOERROR 192.168.1.100 aa"},
		{"laptop.lan.", mdns.TypeAAAA, "NOERROR aa"},
		{"nobody.lan.", mdns.TypeA, "NXDOMAIN aa"},
		{"a.b.lan.", mdns.TypeA, "NXDOMAIN aa"},
		{"nobody.", mdns.TypeA, "NXDOMAIN aa"},
		{"lan.", mdns.TypeA, "NOERROR aa"},
		{"localhost.", mdns.TypeA, "NOERROR 127.0.0.1"},
		{"1.1.168.192.in-addr.arpa.", mdns.TypePTR, "NOERROR meshroot.lan. aa"},
		{"100.1.168.192.in-addr.arpa.", mdns.TypePTR, "NOERROR laptop.lan. aa"},
		{"200.1.168.192.in-addr.arpa.", mdns.TypePTR, "NXDOMAIN aa"},
	} {
		if got := summary(ask(f, c.name, c.qtype)); got != c.want {
			t.Errorf("Answer(%s %s) = %s; want %s", c.name, mdns.TypeToString[c.qtype], got, c.want)
		}
	}
	if n := len(u.queries); n != 0 {
		t.Errorf("local names sent %d queries upstream; want none", n)
	}
	if m := ask(f, "nobody.lan.", mdns.TypeA); len(m.Ns) != 1 || m.Ns[0].Header().Rrtype != mdns.TypeSOA {
		t.Errorf("NXDOMAIN authority = %v; want the local SOA (negative caching)", m.Ns)
	}
}

func TestForwardAndCache(t *testing.T) {
	f, u, clk := newFwd(t, []netip.Addr{netip.MustParseAddr("100.64.0.53")})
	if got := summary(ask(f, "example.com.", mdns.TypeA)); got != "NOERROR 198.18.0.1" {
		t.Fatalf("Answer(example.com) = %s", got)
	}
	clk.Advance(100 * time.Second)
	m := ask(f, "Example.COM.", mdns.TypeA)
	if summary(m) != "NOERROR 198.18.0.1" || m.Answer[0].Header().Ttl != 200 {
		t.Errorf("cached answer = %s ttl %d; want the same address with TTL 300-100", summary(m), m.Answer[0].Header().Ttl)
	}
	if n := u.count("100.64.0.53:53 example.com."); n != 1 {
		t.Errorf("upstream queries for example.com = %d; want 1 (the second from the cache)", n)
	}
	// Negative answers are cached for the SOA minimum (30 s here).
	ask(f, "nope.example.com.", mdns.TypeA)
	ask(f, "nope.example.com.", mdns.TypeA)
	clk.Advance(31 * time.Second)
	if got := summary(ask(f, "nope.example.com.", mdns.TypeA)); got != "NXDOMAIN" {
		t.Errorf("Answer(nope) = %s", got)
	}
	if n := u.count("100.64.0.53:53 nope.example.com."); n != 2 {
		t.Errorf("upstream queries for nope = %d; want 2 (cached for 30 s, then asked again)", n)
	}
	// Expiry follows the TTL.
	ask(f, "short.example.com.", mdns.TypeA)
	clk.Advance(6 * time.Second)
	ask(f, "short.example.com.", mdns.TypeA)
	if n := u.count("100.64.0.53:53 short.example.com."); n != 2 {
		t.Errorf("upstream queries for short = %d; want 2 (TTL 5 s)", n)
	}
	if n := f.CacheLen(); n > 3 {
		t.Errorf("CacheLen() = %d; want at most the configured 3", n)
	}
	st := f.Stats()
	if st.Cached < 2 || st.Forwarded < 4 {
		t.Errorf("Stats() = %+v", st)
	}
}

func TestUpstreamFailures(t *testing.T) {
	ups := []netip.Addr{netip.MustParseAddr("100.64.0.53"), netip.MustParseAddr("100.64.0.54")}
	f, u, _ := newFwd(t, ups)
	// SERVFAIL from the first: the second is asked, and its failure is not cached.
	if got := summary(ask(f, "broken.example.com.", mdns.TypeA)); got != "SERVFAIL" {
		t.Errorf("Answer(broken) = %s", got)
	}
	if u.count("100.64.0.54:53 broken.example.com.") != 1 || f.CacheLen() != 0 {
		t.Errorf("second upstream not tried, or a failure cached")
	}
	// The WAN goes away: remote names fail fast, local names and cached answers still work.
	ask(f, "example.com.", mdns.TypeA)
	u.mu.Lock()
	u.down = true
	u.mu.Unlock()
	if got := summary(ask(f, "other.example.com.", mdns.TypeA)); got != "SERVFAIL" {
		t.Errorf("Answer(other) with the WAN down = %s; want SERVFAIL", got)
	}
	if got := summary(ask(f, "example.com.", mdns.TypeA)); got != "NOERROR 198.18.0.1" {
		t.Errorf("cached Answer(example.com) with the WAN down = %s", got)
	}
	if got := summary(ask(f, "meshroot.lan.", mdns.TypeA)); got != "NOERROR 192.168.1.1 aa" {
		t.Errorf("Answer(meshroot.lan) with the WAN down = %s", got)
	}
	f2, _, _ := newFwd(t, nil)
	if got := summary(ask(f2, "example.com.", mdns.TypeA)); got != "SERVFAIL" {
		t.Errorf("Answer() without upstreams = %s; want SERVFAIL", got)
	}
}

func TestMalformedQueries(t *testing.T) {
	f, _, _ := newFwd(t, nil)
	m := new(mdns.Msg)
	m.SetQuestion("a.lan.", mdns.TypeA)
	m.Question = append(m.Question, m.Question[0])
	if r := f.Answer(context.Background(), m); r.Rcode != mdns.RcodeFormatError {
		t.Errorf("two questions: rcode %s; want FORMERR", mdns.RcodeToString[r.Rcode])
	}
	m = new(mdns.Msg)
	m.SetNotify("lan.")
	if r := f.Answer(context.Background(), m); r.Rcode != mdns.RcodeNotImplemented {
		t.Errorf("NOTIFY: rcode %s; want NOTIMP", mdns.RcodeToString[r.Rcode])
	}
	m = new(mdns.Msg)
	m.Response = true
	if r := f.Answer(context.Background(), m); r != nil {
		t.Errorf("a response got an answer")
	}
}

func TestNewErrors(t *testing.T) {
	for _, c := range []Config{
		{Hostname: "", RouterAddr: netip.MustParseAddr("192.168.1.1")},
		{Hostname: "a.b", RouterAddr: netip.MustParseAddr("192.168.1.1")},
		{Hostname: "x"},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) = nil; want an error", c)
		}
	}
}
