package dns

import (
	"context"
	"net/netip"
	"testing"

	mdns "github.com/miekg/dns"
)

// FuzzAnswer feeds arbitrary messages to the forwarder (local names, forwarding through a fake
// upstream, the cache): no panic, and every answer packs and carries the query's ID.
func FuzzAnswer(f *testing.F) {
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"meshroot.lan.", mdns.TypeA}, {"laptop.", mdns.TypeAAAA}, {"1.1.168.192.in-addr.arpa.", mdns.TypePTR},
		{"example.com.", mdns.TypeA}, {"nope.example.com.", mdns.TypeMX}, {"localhost.", mdns.TypeANY}} {
		m := new(mdns.Msg)
		m.SetQuestion(q.name, q.qtype)
		m.SetEdns0(4096, true)
		b, _ := m.Pack()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m := new(mdns.Msg)
		if err := m.Unpack(b); err != nil {
			return
		}
		fw, _, _ := newFwd(t, []netip.Addr{netip.MustParseAddr("100.64.0.53")})
		for range 2 { // the second may come from the cache
			r := fw.Answer(context.Background(), m)
			if r == nil {
				if !m.Response {
					t.Fatalf("no answer to a query")
				}
				return
			}
			if r.Id != m.Id {
				t.Fatalf("answer id %d; want %d", r.Id, m.Id)
			}
			if _, err := r.Pack(); err != nil {
				t.Fatalf("answer does not pack: %v", err)
			}
		}
	})
}
