package devcloud

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"meshroot/provision/api"
)

// enrolledDevice creates the site if needed, claims and enrolls serial, and returns the device
// with its mTLS client.
func enrolledDevice(t *testing.T, c *testCloud, site, serial string) *testDevice {
	t.Helper()
	ctx := context.Background()
	if _, err := c.op.CreateSite(ctx, api.CreateSiteRequest{ID: site, Country: "DE", WiFiSSID: "Meshroot"}); err != nil && !strings.Contains(err.Error(), "409") {
		t.Fatal(err)
	}
	cl, err := c.op.Claim(ctx, site, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	host, _, _ := net.SplitHostPort(strings.TrimPrefix(c.url, "https://"))
	pinned := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: api.PinnedTLS(cl.CAPin, host)}}
	d := newDevice(t, c, serial)
	st, b, _ := c.call(pinned, "POST", "/v1/enroll", "/v1/enroll", nil, d.enrollRequest(t, cl.Token))
	var er api.EnrollResponse
	if st != 201 || json.Unmarshal(b, &er) != nil {
		t.Fatalf("enroll %s = %d %s", serial, st, b)
	}
	d.useCert(t, c, er.Certificate)
	return d
}

// postLogs sends lines as the device and returns the answer.
func postLogs(t *testing.T, c *testCloud, d *testDevice, lines []string) api.LogsAccepted {
	t.Helper()
	body := strings.Join(lines, "\n") + "\n"
	st, b, _ := c.call(d.hc, "POST", "/v1/device/logs", "/v1/device/logs", http.Header{"Content-Type": {"application/x-ndjson"}}, []byte(body))
	var la api.LogsAccepted
	if st != 202 || json.Unmarshal(b, &la) != nil {
		t.Fatalf("POST logs = %d %s; want 202", st, b)
	}
	return la
}

// storedIDs returns the log_ids (or messages, for lines without one) of a site's records.
func storedIDs(t *testing.T, c *testCloud, site string) []string {
	t.Helper()
	recs, err := c.op.Logs(context.Background(), api.LogQuery{Site: site, Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range recs {
		id := r.LogID
		if id == "" {
			id = "msg:" + r.Msg
		}
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

func batch(boot string, from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf(`{"log_id":"%s-%d","time":"2026-11-22T01:00:00Z","level":"INFO","msg":"line %d","seq":%d}`, boot, i, i, i))
	}
	return out
}

func ids(boot string, from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("%s-%d", boot, i))
	}
	slices.Sort(out)
	return out
}

// TestLogIngestIdempotent: the same batch sent twice (the device's answer was lost) is stored
// once; a batch overlapping an earlier one stores only its new lines; duplicates inside one
// batch count once; the window survives a restart; another device's equal log_ids are its own.
func TestLogIngestIdempotent(t *testing.T) {
	dir := t.TempDir()
	c, stop := serveCloud(t, Config{DataDir: dir})
	d := enrolledDevice(t, c, "berlin-1", "MR-0001")

	first := batch("a1b2c3d4", 1, 5)
	if got := postLogs(t, c, d, first); got != (api.LogsAccepted{Accepted: 5}) {
		t.Errorf("POST batch = %+v; want 5 accepted", got)
	}
	if got := postLogs(t, c, d, first); got != (api.LogsAccepted{Accepted: 0, Duplicates: 5}) {
		t.Errorf("POST same batch again = %+v; want 0 accepted, 5 duplicates", got)
	}
	if diff := cmp.Diff(ids("a1b2c3d4", 1, 5), storedIDs(t, c, "berlin-1")); diff != "" {
		t.Errorf("stored lines after the batch twice mismatch (-want +got):\n%s", diff)
	}
	// What the shipper sends after a lost answer: the old lines first, then newer ones; and a
	// line repeated within one batch.
	retry := append(batch("a1b2c3d4", 3, 8), batch("a1b2c3d4", 8, 8)...)
	if got := postLogs(t, c, d, retry); got != (api.LogsAccepted{Accepted: 3, Duplicates: 4}) {
		t.Errorf("POST overlapping batch = %+v; want 3 accepted (6-8), 4 duplicates", got)
	}
	// Lines without log_id (older shippers) are always stored; the record keeps the id and
	// not as an attribute.
	postLogs(t, c, d, []string{`{"msg":"no id"}`, `{"msg":"no id"}`})
	want := append(ids("a1b2c3d4", 1, 8), "msg:no id", "msg:no id")
	slices.Sort(want)
	if diff := cmp.Diff(want, storedIDs(t, c, "berlin-1")); diff != "" {
		t.Errorf("stored lines mismatch (-want +got):\n%s", diff)
	}
	recs, _ := c.op.Logs(context.Background(), api.LogQuery{Site: "berlin-1", Limit: 1})
	if len(recs) != 1 || recs[0].Attrs["log_id"] != nil || recs[0].Attrs["seq"] == nil {
		t.Errorf("stored record = %+v; want log_id as its own member, other members as attributes", recs)
	}

	// A restart keeps the window: the batch sent a third time is still recognised.
	stop()
	c, _ = serveCloud(t, Config{DataDir: dir}) // same CA: the device's client keeps working
	if got := postLogs(t, c, d, first); got != (api.LogsAccepted{Accepted: 0, Duplicates: 5}) {
		t.Errorf("POST same batch after a restart = %+v; want 5 duplicates", got)
	}
	// Another device's ids are its own.
	d2 := enrolledDevice(t, c, "berlin-1", "MR-0002")
	if got := postLogs(t, c, d2, batch("a1b2c3d4", 1, 2)); got != (api.LogsAccepted{Accepted: 2}) {
		t.Errorf("POST by another device with the same ids = %+v; want 2 accepted", got)
	}
	// Bad log_ids are refused, naming the field.
	for _, line := range []string{`{"log_id":7,"msg":"x"}`, `{"log_id":"","msg":"x"}`, `{"log_id":"` + strings.Repeat("x", 129) + `","msg":"x"}`} {
		st, b, _ := c.call(d.hc, "POST", "/v1/device/logs", "/v1/device/logs", nil, []byte(line+"\n"))
		if st != 400 || !strings.Contains(string(b), "line 1: log_id") {
			t.Errorf("POST %.40s = %d %s; want 400 naming line 1's log_id", line, st, b)
		}
	}
}

// TestLogDedupeWindowBounded: the window keeps only the last N ids per device; an id that
// fell out of it is stored again (the documented limit), and the window never grows past N.
func TestLogDedupeWindowBounded(t *testing.T) {
	dir := t.TempDir()
	c, stop := serveCloud(t, Config{DataDir: dir, LogDedupeWindow: 4})
	d := enrolledDevice(t, c, "berlin-1", "MR-0001")
	postLogs(t, c, d, batch("b", 1, 6))
	if diff := cmp.Diff([]string{"b-3", "b-4", "b-5", "b-6"}, c.st.logIDWindow("MR-0001")); diff != "" {
		t.Errorf("window after 6 ids mismatch (-want +got):\n%s", diff)
	}
	if got := postLogs(t, c, d, batch("b", 5, 6)); got.Duplicates != 2 {
		t.Errorf("POST ids inside the window = %+v; want 2 duplicates", got)
	}
	if got := postLogs(t, c, d, batch("b", 1, 1)); got.Accepted != 1 {
		t.Errorf("POST an id that left the window = %+v; want it stored again", got)
	}
	if n := len(c.st.logIDWindow("MR-0001")); n != 4 {
		t.Errorf("window size = %d; want 4", n)
	}
	// A smaller window after a restart trims the stored one at the next line.
	stop()
	c, _ = serveCloud(t, Config{DataDir: dir, LogDedupeWindow: 2})
	postLogs(t, c, d, batch("b", 7, 7))
	if diff := cmp.Diff([]string{"b-1", "b-7"}, c.st.logIDWindow("MR-0001")); diff != "" {
		t.Errorf("window after shrinking to 2 mismatch (-want +got):\n%s", diff)
	}
	// Revoking the device forgets its window.
	if err := c.op.RevokeDevice(context.Background(), "MR-0001"); err != nil {
		t.Fatal(err)
	}
	if w := c.st.logIDWindow("MR-0001"); w != nil {
		t.Errorf("window after revoke = %q; want none", w)
	}
}

func FuzzParseLogLines(f *testing.F) {
	for _, l := range batch("a1b2c3d4", 1, 2) {
		f.Add([]byte(l + "\n"))
	}
	f.Add([]byte(`{"msg":"x","tunnel":"3.18.239.122","attrs":{"a":[1,2]}}` + "\n\n" + `{"log_id":7}`))
	f.Add([]byte(`{"log_id":"","time":"not a time"}`))
	f.Add([]byte("{\n"))
	now := time.Date(2026, 11, 22, 1, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte) {
		recs, _, err := parseLogLines(strings.NewReader(string(body)), now)
		if err != nil {
			return
		}
		for _, r := range recs {
			if len(r.LogID) > maxLogID || r.Received != now {
				t.Fatalf("parseLogLines() record %+v; want log_id at most %d bytes, received now", r, maxLogID)
			}
			if _, ok := r.Attrs["log_id"]; ok {
				t.Fatalf("parseLogLines() kept log_id among the attributes")
			}
		}
	})
}
