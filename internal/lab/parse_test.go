package lab

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func readTestdata(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestParseIperf(t *testing.T) {
	tcp, err := ParseIperf(readTestdata(t, "iperf3-tcp.json"))
	if err != nil {
		t.Fatalf("ParseIperf(tcp) = %v", err)
	}
	if tcp.SentBps <= 0 || tcp.ReceivedBps <= 0 || tcp.Seconds <= 0 || tcp.CPUHost <= 0 || tcp.Packets != 0 {
		t.Errorf("ParseIperf(tcp) = %+v; want positive rates, seconds, CPU and no UDP fields", tcp)
	}
	udp, err := ParseIperf(readTestdata(t, "iperf3-udp.json"))
	if err != nil {
		t.Fatalf("ParseIperf(udp) = %v", err)
	}
	if udp.Packets == 0 || udp.ReceivedPPS <= 0 || udp.ReceivedBps <= 0 || udp.ReceivedBps > udp.SentBps {
		t.Errorf("ParseIperf(udp) = %+v; want packets, pps and received <= sent", udp)
	}
	if _, err := ParseIperf(readTestdata(t, "iperf3-error.json")); err == nil || !strings.Contains(err.Error(), "Connection refused") {
		t.Errorf("ParseIperf(error) = %v; want the iperf3 error", err)
	}
	for _, in := range []string{"", "{", `{"end":{}}`, `{"end":{"sum_sent":{"bits_per_second":-1}}}`, `[]`} {
		if _, err := ParseIperf([]byte(in)); err == nil {
			t.Errorf("ParseIperf(%q) = nil error; want an error", in)
		}
	}
}

func TestParseBGP(t *testing.T) {
	s, err := ParseBGPSummary(readTestdata(t, "frr-summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	p, ok := s.Peer("10.0.0.2")
	if !ok || p.State != "Established" || p.RemoteAS != 64512 {
		t.Errorf("Summary.Peer(10.0.0.2) = %+v, %v; want the iBGP peer Established", p, ok)
	}
	if _, ok := s.Peer("fd00:a00:0::2"); !ok {
		t.Errorf("Summary.Peer(non-canonical fd00:a00:0::2) not found; want IPv6 addresses compared as addresses")
	}
	if _, ok := s.Peer("192.0.2.99"); ok {
		t.Errorf("Summary.Peer(unknown) found")
	}
	rs, err := ParseBGPRoutes(readTestdata(t, "frr-routes-v4.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 3 || rs[0].Prefix != "10.0.0.0/16" || !rs[0].Best || rs[1].Best || rs[2].Prefix != "192.168.1.0/24" || rs[2].ASPath != "65000" || rs[2].NextHops[0] != "10.0.0.2" {
		t.Errorf("ParseBGPRoutes(v4) = %+v; want 10.0.0.0/16 (best first, then the iBGP path) and 192.168.1.0/24 via 10.0.0.2 AS 65000", rs)
	}
	rs6, err := ParseBGPRoutes(readTestdata(t, "frr-routes-v6.json"))
	if err != nil || len(rs6) == 0 {
		t.Fatalf("ParseBGPRoutes(v6) = %v, %v", rs6, err)
	}
	n, err := ParseBGPNeighbor(readTestdata(t, "frr-neighbor.json"), "169.254.10.2")
	if err != nil || n.State != "Established" || n.HoldTimeMsecs != 30000 || n.KeepaliveMsecs != 10000 {
		t.Errorf("ParseBGPNeighbor = %+v, %v; want Established 30000/10000", n, err)
	}
	if _, err := ParseBGPNeighbor(readTestdata(t, "frr-neighbor.json"), "169.254.10.6"); err == nil {
		t.Errorf("ParseBGPNeighbor(absent) = nil error")
	}
	if _, err := ParseBGPRoutes([]byte(`{"routes":{"not a prefix":[{}]}}`)); err == nil {
		t.Errorf("ParseBGPRoutes(bad prefix) = nil error")
	}
}

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"1234 (charon) S 1 1234 1234 0 -1 4194560 500 0 0 0 150 50 0 0 20 0 17 0 100 0 0", 2 * time.Second, false},
		{"99 (a) b) c) R 1 2 3 4 5 6 7 8 9 10 7 3 0 0", 100 * time.Millisecond, false},
		{"1 (x) S 1", 0, true},
		{"no paren", 0, true},
		{"1 (x) S 1 1 1 1 1 1 1 1 1 1 -5 1", 0, true},
		{"1 (x) S 1 1 1 1 1 1 1 1 1 1 99999999999999999999 1", 0, true},
	}
	for _, tc := range tests {
		got, err := parseStatCPU(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("parseStatCPU(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func FuzzParseIperf(f *testing.F) {
	for _, n := range []string{"iperf3-tcp.json", "iperf3-udp.json", "iperf3-error.json"} {
		f.Add(readTestdata(f, n))
	}
	f.Add([]byte(`{"end":{"sum":{"packets":-1}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseIperf(b)
		if err == nil && (r.SentBps < 0 || r.ReceivedBps < 0 || r.Packets < 0 || r.LostPackets < 0) {
			t.Errorf("ParseIperf accepted negative values: %+v", r)
		}
	})
}

func FuzzParseBGP(f *testing.F) {
	for _, n := range []string{"frr-summary.json", "frr-routes-v4.json", "frr-routes-v6.json", "frr-neighbor.json"} {
		f.Add(readTestdata(f, n))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if s, err := ParseBGPSummary(b); err == nil {
			s.Peer("169.254.10.2")
			s.Peer("fd00::1")
		}
		if rs, err := ParseBGPRoutes(b); err == nil {
			for _, r := range rs {
				if r.Prefix == "" {
					t.Errorf("ParseBGPRoutes returned an empty prefix")
				}
			}
		}
		_, _ = ParseBGPNeighbor(b, "169.254.10.2")
	})
}

func FuzzParseStatCPU(f *testing.F) {
	f.Add("1234 (charon) S 1 1234 1234 0 -1 4194560 500 0 0 0 150 50 0 0 20 0 17 0 100 0 0")
	f.Add("1 ()) S 1 2 3 4 5 6 7 8 9 10 11 12")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseStatCPU(s)
		if err == nil && d < 0 {
			t.Errorf("parseStatCPU(%q) = %v; want >= 0", s, d)
		}
	})
}
