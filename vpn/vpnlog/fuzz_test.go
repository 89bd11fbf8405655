package vpnlog

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzParseBGPRecord: any line either fails with an error or parses into a record that encodes
// back to a line parsing into the same record.
func FuzzParseBGPRecord(f *testing.F) {
	f.Add([]byte(awsStatusExample))
	f.Add([]byte(awsRouteExample))
	f.Add([]byte(`{"resource_id":"r","event_timestamp":0,"timestamp":"1970-01-01 00:00:00.000Z","type":"RouteStatus","status":"WITHDRAWN","message":{"prefix":"2001:db8::/32","asPath":"1 {2 3}","localPref":0,"med":0,"nextHopIp":"fe80::1%eth0","weight":0}}`))
	f.Add([]byte(`{"resource_id":"r","event_timestamp":253402300799999,"timestamp":"9999-12-31 23:59:59.999Z","type":"BGPStatus","status":"DOWN","message":{"details":"\u0000<br>"}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := ParseBGPRecord(line)
		if err != nil {
			return
		}
		b, err := r.MarshalJSON()
		if err != nil {
			t.Fatalf("MarshalJSON(parsed %q) = %v", line, err)
		}
		if bytes.Contains(b, []byte("\n")) {
			t.Fatalf("MarshalJSON() = %q; want one line", b)
		}
		back, err := ParseBGPRecord(b)
		if err != nil {
			t.Fatalf("ParseBGPRecord(MarshalJSON(r)) = %v for %s", err, b)
		}
		if d := cmp.Diff(r, back, netipCmp); d != "" {
			t.Fatalf("round trip of %q (-first +second):\n%s", line, d)
		}
	})
}

// FuzzParseTunnelRecord is the same for tunnel activity lines.
func FuzzParseTunnelRecord(f *testing.F) {
	f.Add([]byte(`{"event_timestamp":1762580429641,"timestamp":"2025-11-08 05:40:29.641Z","dpd_enabled":true,"nat_t_detected":false,"ike_phase1_state":"Established","ike_phase2_state":"Rekeying","details":"AWS tunnel DPD timed out after 3 retransmits"}`))
	f.Add([]byte(`{"event_timestamp":0,"timestamp":"1970-01-01 00:00:00.000Z","dpd_enabled":false,"nat_t_detected":true,"ike_phase1_state":"Down","ike_phase2_state":"Negotiating","details":""}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := ParseTunnelRecord("s", line)
		if err != nil {
			return
		}
		b, err := r.MarshalJSON()
		if err != nil {
			t.Fatalf("MarshalJSON(parsed %q) = %v", line, err)
		}
		back, err := ParseTunnelRecord("s", b)
		if err != nil {
			t.Fatalf("ParseTunnelRecord(MarshalJSON(r)) = %v for %s", err, b)
		}
		if d := cmp.Diff(r, back, netipCmp); d != "" {
			t.Fatalf("round trip of %q (-first +second):\n%s", line, d)
		}
	})
}
