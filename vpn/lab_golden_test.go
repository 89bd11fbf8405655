package vpn

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"meshroot/internal/lab"
	"meshroot/vpn/vpnlog"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

var (
	reSPI      = regexp.MustCompile(`\b[0-9a-f]{8}\b`)
	reDuration = regexp.MustCompile(`\b\d+(\.\d+)?(ns|µs|ms|s|m)\b`)
	reCount    = regexp.MustCompile(`after \d+ retransmits`)
	reRecovery = regexp.MustCompile(`Data plane: (inbound ESP arrived|the peer answered a liveness check) after`)
	reProbeID  = regexp.MustCompile(`\(INFORMATIONAL \d+\)`)
)

// normalize makes a log line comparable across runs: no timestamps, SPIs, durations or
// retransmit counts, and one wording for a recovery (which of inbound ESP or a probe answer
// comes first is a race). It returns "" for the echoes of our own prefix.
func normalize(t *testing.T, log vpnlog.Log, line string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatalf("log line %q: %v", line, err)
	}
	if msg, ok := m["message"].(map[string]any); ok {
		d, _ := msg["details"].(string)
		if strings.HasSuffix(d, "AS path: 64512 65000") || msg["prefix"] == "192.168.1.0/24" {
			return ""
		}
	}
	delete(m, "event_timestamp")
	delete(m, "timestamp")
	fix := func(s string) string {
		s = reSPI.ReplaceAllString(s, "SPI")
		s = reDuration.ReplaceAllString(s, "D")
		s = reCount.ReplaceAllString(s, "after N retransmits")
		s = reProbeID.ReplaceAllString(s, "(INFORMATIONAL N)")
		return reRecovery.ReplaceAllString(s, "Data plane: the path answered again after")
	}
	if d, ok := m["details"].(string); ok {
		m["details"] = fix(d)
	}
	if msg, ok := m["message"].(map[string]any); ok {
		if d, ok := msg["details"].(string); ok {
			msg["details"] = fix(d)
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestLabGoldenLogs: the tunnel activity log and the BGP log of both tunnels for a whole
// sequence — up, traffic, the path to endpoint 1 cut (fast failover), restored (recovery),
// stop — normalized (no times, SPIs, durations) and compared with testdata/golden-*.jsonl.
// To keep each stream's order deterministic the concentrator's BGP side is passive (only we
// connect), each tunnel has one IPv4 session, repeated identical lines are collapsed, and
// FRR's echoes of our own prefix (refused: our AS is in the path; TestLabBGPPolicy covers
// that) are left out: when they arrive against our failover and recovery is a race. Run with -update to
// rewrite the files.
func TestLabGoldenLogs(t *testing.T) {
	cc := lab.ConcentratorConfig{}
	for i := range cc.Tunnels {
		cc.Tunnels[i].ModifyFRR = func(f *lab.FRRConfig) {
			for j := range f.Neighbors[:2] {
				f.Neighbors[j].Passive = true
			}
		}
	}
	r := newConcRig(t, cc, func(d fileDoc) {
		d["site_prefixes"] = []any{"192.168.1.0/24"}
		for i := range 2 {
			delete(d.tunnel(i), "inside_ipv6_cidr")
		}
	})
	t1 := r.c.Tunnels()[0].Outside
	r.waitStatus(60*time.Second, "converged", func(st Status) bool {
		if !allUp(st) {
			return false
		}
		for _, tu := range st.Tunnels {
			if len(tu.BGP) != 1 || tu.BGP[0].PrefixesIn < 1 {
				return false
			}
		}
		return true
	})
	time.Sleep(2 * time.Second) // End-of-RIB and the echoes of our own prefix
	vpc := netip.MustParseAddr(r.c.Addrs.VPCHost4)
	udp := startUDPProbes(t, r.c.SiteLAN, r.c.VPC, netip.AddrPortFrom(vpc, 5002), 0, 2*time.Millisecond)
	defer udp.close()
	time.Sleep(time.Second)
	if err := r.c.CutPath(1); err != nil {
		t.Fatal(err)
	}
	r.waitStatus(10*time.Second, "tunnel 1 out of service", func(st Status) bool { return !usable(st, t1) })
	time.Sleep(3 * time.Second)
	if err := r.c.RestorePath(1); err != nil {
		t.Fatal(err)
	}
	r.waitStatus(20*time.Second, "tunnel 1 back", func(st Status) bool { return usable(st, t1) })
	time.Sleep(2 * time.Second)
	udp.close()
	if err := r.proc.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := r.proc.Wait(r.ctx(20 * time.Second)); err != nil {
		t.Fatal(err)
	}

	for i, tu := range r.c.Tunnels() {
		stream := connID + "_" + tu.Outside
		for _, log := range []vpnlog.Log{vpnlog.LogTunnel, vpnlog.LogBGP} {
			var got []string
			for _, l := range r.streamLines(log, stream) {
				n := normalize(t, log, l)
				if n == "" || len(got) > 0 && got[len(got)-1] == n {
					continue
				}
				got = append(got, n)
			}
			path := filepath.Join("testdata", fmt.Sprintf("golden-%s-tunnel%d.jsonl", log, i+1))
			if *update {
				if err := os.WriteFile(path, []byte(strings.Join(got, "\n")+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			want := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("%s log of tunnel %d (%s) differs from %s (-want +got):\n%s", log, i+1, tu.Outside, path, diff)
			}
		}
	}
}
