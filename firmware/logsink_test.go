package firmware

import (
	"strings"
	"testing"

	"meshroot/internal/testenv"
)

type lockedBuf = testenv.Buffer

// TestLoggingSink: a sink (the log shipper) gets every record after AddSink, already redacted.
func TestLoggingSink(t *testing.T) {
	var console lockedBuf
	lg := NewLogging(&console, 100, 1<<20)
	lg.Logger.Info("before the sink")
	var sink lockedBuf
	lg.AddSink(&sink)
	lg.Secrets.Add("tunnel1-psk-0123456789")
	lg.Logger.Info("tunnel configured", "detail", "psk is tunnel1-psk-0123456789", "psk", "anything")
	got := sink.String()
	if strings.Contains(got, "before the sink") || !strings.Contains(got, `"msg":"tunnel configured"`) {
		t.Errorf("sink got %q; want only the records after AddSink", got)
	}
	if strings.Contains(got, "tunnel1-psk-0123456789") || strings.Contains(got, "anything") {
		t.Errorf("sink got a secret: %q", got)
	}
	if strings.Count(got, "\n") != 1 {
		t.Errorf("sink got %q; want one line per record", got)
	}
	if !strings.Contains(console.String(), "tunnel configured") {
		t.Errorf("console lost the record")
	}
	// Without a console the ring and the sinks still get the records.
	lg2 := NewLogging(nil, 10, 1<<20)
	var sink2 lockedBuf
	lg2.AddSink(&sink2)
	lg2.Logger.Warn("no console")
	if lines, _ := lg2.Ring.Lines(); len(lines) != 1 || !strings.Contains(sink2.String(), "no console") {
		t.Errorf("ring %q, sink %q; want the record in both", lines, sink2.String())
	}
}
