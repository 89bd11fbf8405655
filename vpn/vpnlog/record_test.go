package vpnlog

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// The two example records of AWS's "Example log format for Tunnel BGP logs", re-indented.
const (
	awsStatusExample = `{
    "resource_id": "vpn-1234abcd_1.2.3.4",
    "event_timestamp": 1762580429641,
    "timestamp": "2025-11-08 05:40:29.641Z",
    "type": "BGPStatus",
    "status": "UP",
    "message": {
        "details": "AWS-side peer BGP session state has changed from OpenConfirm to Established with neighbor 169.254.50.85"
    }
}`
	awsRouteExample = `{
    "resource_id": "vpn-1234abcd_1.2.3.4",
    "event_timestamp": 1762579573243,
    "timestamp": "2025-11-08 05:26:13.243Z",
    "type": "RouteStatus",
    "status": "UPDATED",
    "message": {
        "prefix": "172.31.0.0/16",
        "asPath": "64512",
        "localPref": 100,
        "med": 100,
        "nextHopIp": "169.254.50.85",
        "weight": 32768,
        "details": "DENIED due to: as-path contains our own AS"
    }
}`
)

func jsonValue(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("json.Unmarshal(%s) = %v", b, err)
	}
	return v
}

func TestBGPRecordShapeMatchesAWS(t *testing.T) {
	id := ResourceID("vpn-1234abcd", netip.MustParseAddr("1.2.3.4"))
	for _, c := range []struct {
		name string
		rec  *BGPRecord
		want string
	}{
		{"status", NewBGPStatus(id, time.UnixMilli(1762580429641), StatusUp,
			"AWS-side peer BGP session state has changed from OpenConfirm to Established with neighbor 169.254.50.85"), awsStatusExample},
		{"route", NewRouteStatus(id, time.UnixMilli(1762579573243), StatusUpdated, Route{
			Prefix: netip.MustParsePrefix("172.31.0.0/16"), ASPath: "64512", LocalPref: 100, MED: 100,
			NextHop: netip.MustParseAddr("169.254.50.85"), Weight: 32768,
		}, "DENIED due to: as-path contains our own AS"), awsRouteExample},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := c.rec.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(got, []byte("\n")) {
				t.Errorf("MarshalJSON() = %s; want one line", got)
			}
			if d := cmp.Diff(jsonValue(t, []byte(c.want)), jsonValue(t, got)); d != "" {
				t.Errorf("MarshalJSON() differs from AWS's example (-aws +ours):\n%s", d)
			}
			back, err := ParseBGPRecord([]byte(c.want))
			if err != nil {
				t.Fatalf("ParseBGPRecord(AWS example) = %v", err)
			}
			if d := cmp.Diff(c.rec, back, netipCmp); d != "" {
				t.Errorf("ParseBGPRecord(AWS example) (-want +got):\n%s", d)
			}
		})
	}
}

func TestRouteRecordWithoutErrorHasNoDetails(t *testing.T) {
	r := NewRouteStatus("vpn-1_1.2.3.4", time.UnixMilli(0), StatusWithdrawn, Route{Prefix: netip.MustParsePrefix("10.0.0.0/16")}, "")
	b, _ := r.MarshalJSON()
	want := `{"resource_id":"vpn-1_1.2.3.4","event_timestamp":0,"timestamp":"1970-01-01 00:00:00.000Z","type":"RouteStatus","status":"WITHDRAWN","message":{"prefix":"10.0.0.0/16","asPath":"","localPref":0,"med":0,"nextHopIp":"","weight":0}}`
	if string(b) != want {
		t.Errorf("MarshalJSON() = %s; want %s", b, want)
	}
}

func TestTunnelRecordShape(t *testing.T) {
	r := NewTunnelRecord("vpn-1234abcd_1.2.3.4", time.UnixMilli(1762580429641).In(time.FixedZone("X", 3600)),
		IKEEstablished, IKERekeying, true, false, "AWS tunnel DPD timed out after 3 retransmits")
	b, err := r.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"event_timestamp":1762580429641,"timestamp":"2025-11-08 05:40:29.641Z","dpd_enabled":true,"nat_t_detected":false,"ike_phase1_state":"Established","ike_phase2_state":"Rekeying","details":"AWS tunnel DPD timed out after 3 retransmits"}`
	if string(b) != want {
		t.Errorf("MarshalJSON() = %s\nwant %s", b, want)
	}
	back, err := ParseTunnelRecord(r.ResourceID, b)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(r, back, netipCmp); d != "" {
		t.Errorf("ParseTunnelRecord round trip (-want +got):\n%s", d)
	}
	if r.Log() != LogTunnel || r.Stream() != "vpn-1234abcd_1.2.3.4" {
		t.Errorf("Log(), Stream() = %s, %s; want tunnel, vpn-1234abcd_1.2.3.4", r.Log(), r.Stream())
	}
}

func TestResourceID(t *testing.T) {
	for _, c := range []struct {
		conn string
		addr netip.Addr
		want string
	}{
		{"vpn-1234abcd", netip.MustParseAddr("1.2.3.4"), "vpn-1234abcd_1.2.3.4"},
		{"vpn-1234abcd", netip.MustParseAddr("::ffff:1.2.3.4"), "vpn-1234abcd_1.2.3.4"},
		{"vpn-1", netip.MustParseAddr("2001:db8::1"), "vpn-1_2001:db8::1"},
		{"vpn-1", netip.Addr{}, "vpn-1"},
	} {
		if got := ResourceID(c.conn, c.addr); got != c.want {
			t.Errorf("ResourceID(%q, %v) = %q; want %q", c.conn, c.addr, got, c.want)
		}
	}
}

func TestParseBGPRecordErrors(t *testing.T) {
	good := `{"resource_id":"r","event_timestamp":0,"timestamp":"1970-01-01 00:00:00.000Z","type":"BGPStatus","status":"UP","message":{"details":"x"}}`
	if _, err := ParseBGPRecord([]byte(good)); err != nil {
		t.Fatalf("ParseBGPRecord(good) = %v", err)
	}
	for _, c := range []struct{ name, line, want string }{
		{"not json", `{`, "unexpected EOF"},
		{"unknown field", strings.Replace(good, `"status"`, `"extra":1,"status"`, 1), "unknown field"},
		{"bad type", strings.Replace(good, "BGPStatus", "Other", 1), "type"},
		{"status for other type", strings.Replace(good, `"UP"`, `"WITHDRAWN"`, 1), "status"},
		{"time mismatch", strings.Replace(good, "00.000Z", "01.000Z", 1), "timestamp"},
		{"negative time", strings.Replace(good, `"event_timestamp":0`, `"event_timestamp":-1`, 1), "event_timestamp"},
		{"no resource", strings.Replace(good, `"resource_id":"r"`, `"resource_id":""`, 1), "resource_id"},
		{"null message", strings.Replace(good, `{"details":"x"}`, `null`, 1), "message"},
		{"route fields in status", strings.Replace(good, `{"details":"x"}`, `{"prefix":"10.0.0.0/8"}`, 1), "unknown field"},
		{"trailing", good + `{}`, "trailing"},
		{"bad prefix", `{"resource_id":"r","event_timestamp":0,"timestamp":"1970-01-01 00:00:00.000Z","type":"RouteStatus","status":"ADVERTISED","message":{"prefix":"10.0.0/8","asPath":"","localPref":0,"med":0,"nextHopIp":"","weight":0}}`, "message.prefix"},
		{"bad next hop", `{"resource_id":"r","event_timestamp":0,"timestamp":"1970-01-01 00:00:00.000Z","type":"RouteStatus","status":"ADVERTISED","message":{"prefix":"10.0.0.0/8","asPath":"","localPref":0,"med":0,"nextHopIp":"x","weight":0}}`, "message.nextHopIp"},
	} {
		_, err := ParseBGPRecord([]byte(c.line))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: ParseBGPRecord() = %v; want an error containing %q", c.name, err, c.want)
		}
	}
	_, err := ParseTunnelRecord("r", []byte(`{"event_timestamp":0,"timestamp":"1970-01-01 00:00:00.000Z","dpd_enabled":true,"nat_t_detected":false,"ike_phase1_state":"Up","ike_phase2_state":"Down","details":""}`))
	if err == nil || !strings.Contains(err.Error(), "ike_phase1_state") {
		t.Errorf("ParseTunnelRecord(phase1 Up) = %v; want an ike_phase1_state error", err)
	}
}

func TestFormatASPath(t *testing.T) {
	for _, c := range []struct {
		segs [][]uint32
		sets []bool
		want string
	}{
		{nil, nil, ""},
		{[][]uint32{{64512}}, nil, "64512"},
		{[][]uint32{{64512, 65000}, {1, 2}}, []bool{false, true}, "64512 65000 {1 2}"},
	} {
		if got := FormatASPath(c.segs, c.sets); got != c.want {
			t.Errorf("FormatASPath(%v, %v) = %q; want %q", c.segs, c.sets, got, c.want)
		}
	}
}

func TestJSONLines(t *testing.T) {
	var b bytes.Buffer
	j := NewJSONLines(&b)
	j.Write(NewBGPStatus("r", time.UnixMilli(1), StatusDown, "a <b> & c"))
	j.Write(NewTunnelRecord("r", time.UnixMilli(2), IKEDown, IKEDown, false, false, "d"))
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("JSONLines wrote %q; want 2 lines", b.String())
	}
	if !strings.Contains(lines[0], `"details":"a <b> & c"`) {
		t.Errorf("line 0 = %s; want the details unescaped", lines[0])
	}
	if j.Err() != nil {
		t.Errorf("Err() = %v; want nil", j.Err())
	}
	fail := NewJSONLines(failWriter{})
	fail.Write(NewBGPStatus("r", time.UnixMilli(1), StatusDown, "x"))
	if fail.Err() == nil {
		t.Errorf("Err() after a failed write = nil; want the error")
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestRedactor(t *testing.T) {
	const secret = "lab-psk-0123456789abcdef"
	var mem Memory
	r := NewRedactor(&mem, "", secret)
	r.Write(NewTunnelRecord("vpn-1_1.2.3.4", time.UnixMilli(1), IKEDown, IKEDown, true, true, "auth failed with key "+secret))
	r.Write(NewRouteStatus("vpn-1_1.2.3.4", time.UnixMilli(1), StatusAdvertised, Route{ASPath: secret}, secret))
	r.Write(NewBGPStatus(secret, time.UnixMilli(1), StatusUp, "fine"))
	for _, l := range mem.Lines() {
		if strings.Contains(l, secret) {
			t.Errorf("record after Redactor = %s; want the secret redacted", l)
		}
		if !strings.Contains(l, Redacted) {
			t.Errorf("record after Redactor = %s; want %s in it", l, Redacted)
		}
	}
}

// gate is a sink that blocks until released.
type gate struct {
	release chan struct{}
	mu      sync.Mutex
	got     []Record
}

func (g *gate) Write(r Record) {
	<-g.release
	g.mu.Lock()
	g.got = append(g.got, r)
	g.mu.Unlock()
}

func TestBufferedDropsOldestWhenFull(t *testing.T) {
	g := &gate{release: make(chan struct{})}
	b := NewBuffered(g, 3)
	rec := func(i int) Record { return NewBGPStatus("r", time.UnixMilli(int64(i)), StatusUp, "") }
	b.Write(rec(0)) // taken by the goroutine, which blocks in g.Write
	// Wait until the goroutine holds record 0, so the queue is empty.
	for {
		b.mu.Lock()
		busy := b.busy
		b.mu.Unlock()
		if busy {
			break
		}
		time.Sleep(time.Millisecond)
	}
	for i := 1; i <= 5; i++ {
		b.Write(rec(i)) // never blocks although the sink does
	}
	if got := b.Dropped(); got != 2 {
		t.Errorf("Dropped() = %d; want 2 (records 1 and 2)", got)
	}
	close(g.release)
	b.Close()
	var times []int64
	for _, r := range g.got {
		times = append(times, r.EventTime().UnixMilli())
	}
	if d := cmp.Diff([]int64{0, 3, 4, 5}, times); d != "" {
		t.Errorf("delivered (-want +got):\n%s", d)
	}
	b.Write(rec(9))
	if got := b.Dropped(); got != 3 {
		t.Errorf("Dropped() after Close and a write = %d; want 3", got)
	}
}

func TestBufferedFlush(t *testing.T) {
	var mem Memory
	b := NewBuffered(&mem, 0)
	defer b.Close()
	for i := 0; i < 100; i++ {
		b.Write(NewBGPStatus("r", time.UnixMilli(int64(i)), StatusUp, ""))
	}
	b.Flush()
	if n := len(mem.Records()); n != 100 {
		t.Errorf("records after Flush = %d; want 100", n)
	}
	if b.Delivered() != 100 {
		t.Errorf("Delivered() = %d; want 100", b.Delivered())
	}
}

func TestMultiAndMemory(t *testing.T) {
	var a, c Memory
	s := Multi(&a, &c, Discard)
	s.Write(NewBGPStatus("r", time.UnixMilli(1), StatusUp, "x"))
	s.Write(NewTunnelRecord("r", time.UnixMilli(1), IKEDown, IKEDown, false, false, ""))
	if len(a.BGP()) != 1 || len(a.Tunnel()) != 1 || len(c.Records()) != 2 {
		t.Errorf("Memory after Multi: %d bgp, %d tunnel, %d total; want 1, 1, 2", len(a.BGP()), len(a.Tunnel()), len(c.Records()))
	}
	a.Reset()
	if len(a.Records()) != 0 {
		t.Errorf("Records() after Reset = %d; want 0", len(a.Records()))
	}
}

var netipCmp = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})
