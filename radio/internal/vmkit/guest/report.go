package guest

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"
)

// Check is one result line, "<PREFIX> {json}" on the console.
type Check struct {
	Name   string `json:"check"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
	// Ms is how long the check took.
	Ms int64 `json:"ms"`
}

// Metric is one measured number (benchmarks), "<PREFIX>-METRIC {json}".
type Metric struct {
	Name  string  `json:"metric"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
}

// Done is the summary line, "<PREFIX>-DONE {json}", the last a harness prints.
type Done struct {
	OK     bool `json:"ok"`
	Checks int  `json:"checks"`
	Failed int  `json:"failed"`
}

// Reporter prints a harness's console lines; it is safe for concurrent use.
type Reporter struct {
	prefix string
	mu     sync.Mutex
	w      io.Writer
	checks int
	failed int
}

// NewReporter returns a reporter writing lines that start with prefix (e.g. "ROAMTEST") to w.
func NewReporter(w io.Writer, prefix string) *Reporter { return &Reporter{w: w, prefix: prefix} }

// Report prints a check that started at start: passed when err is nil; a failure's detail is
// the error, followed by detail in parentheses.
func (r *Reporter) Report(name string, start time.Time, err error, detail string) {
	c := Check{Name: name, OK: err == nil, Detail: detail, Ms: time.Since(start).Milliseconds()}
	if err != nil {
		c.Detail = err.Error()
		if detail != "" {
			c.Detail += " (" + detail + ")"
		}
	}
	b, _ := json.Marshal(c)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checks++
	if err != nil {
		r.failed++
	}
	fmt.Fprintf(r.w, "%s %s\n", r.prefix, b)
}

// Metric prints a measured number.
func (r *Reporter) Metric(name string, v float64, unit string) {
	b, _ := json.Marshal(Metric{Name: name, Value: v, Unit: unit})
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.w, "%s-METRIC %s\n", r.prefix, b)
}

// Note prints a free-form line (diagnostics kept in the console log).
func (r *Reporter) Note(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.w, r.prefix+"-NOTE "+format+"\n", args...)
}

// Done prints the summary line: ok when err (the run's own error) is nil and no check failed.
func (r *Reporter) Done(err error) Done {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := Done{OK: err == nil && r.failed == 0, Checks: r.checks, Failed: r.failed}
	b, _ := json.Marshal(d)
	fmt.Fprintf(r.w, "%s-DONE %s\n", r.prefix, b)
	return d
}
