package rollout

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// ReportsPath is where devices POST install reports (relative to the cloud's base URL), and
// StatusPath where the per-release counters can be read (GET, ?release=PATH for one).
const (
	ReportsPath = "/ota/v1/reports"
	StatusPath  = "/ota/v1/status"
)

// Result is the outcome a report announces.
type Result string

// The results. Only Committed and RolledBack are final outcomes of a boot of the new image; they
// feed the automatic halt. Installed means "written, verified and switched, rebooting into it";
// Failed means the install stopped before the switch (download, verification, slot write) and
// the device still runs its old image; Refused means the device would not take the release
// (wrong board, older version, bad metadata).
const (
	Installed  Result = "installed"
	Committed  Result = "committed"
	RolledBack Result = "rolled_back"
	Failed     Result = "failed"
	Refused    Result = "refused"
)

// Report is what a device POSTs to ReportsPath as JSON:
//
//	{"device":"mr-0001","board":"qemu-virt-arm64","release":"qemu-virt-arm64/stable/meshroot-1.4.0.img",
//	 "version":"1.4.0","from_version":"1.3.0","result":"committed","bucket":17,"wave":0,
//	 "time":"2026-01-02T03:04:05Z"}
//
// The answer is 202 with {"halted": true|false} (whether the release is halted now).
type Report struct {
	Device      string    `json:"device"`
	Board       string    `json:"board"`
	Release     string    `json:"release"`
	Version     string    `json:"version"`
	FromVersion string    `json:"from_version,omitempty"`
	Result      Result    `json:"result"`
	Reason      string    `json:"reason,omitempty"`
	Bucket      int       `json:"bucket"`
	Wave        int       `json:"wave"`
	Time        time.Time `json:"time"`
}

// Validate checks a report's fields; the error names the field.
func (r *Report) Validate() error {
	switch {
	case r.Device == "":
		return fmt.Errorf("report: device is empty")
	case r.Release == "":
		return fmt.Errorf("report: release is empty")
	case r.Bucket < 0 || r.Bucket >= Buckets:
		return fmt.Errorf("report: bucket %d outside 0..%d", r.Bucket, Buckets-1)
	case len(r.Reason) > 1024:
		return fmt.Errorf("report: reason is %d bytes; at most 1024", len(r.Reason))
	}
	switch r.Result {
	case Installed, Committed, RolledBack, Failed, Refused:
	default:
		return fmt.Errorf("report: result %q is not one of installed, committed, rolled_back, failed, refused", r.Result)
	}
	return nil
}

// maxReportBytes bounds a report body.
const maxReportBytes = 8 << 10

// ParseReport decodes and validates one report.
func ParseReport(r io.Reader) (*Report, error) {
	dec := json.NewDecoder(io.LimitReader(r, maxReportBytes+1))
	dec.DisallowUnknownFields()
	var rep Report
	if err := dec.Decode(&rep); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("report: trailing data after the JSON object")
	}
	if err := rep.Validate(); err != nil {
		return nil, err
	}
	return &rep, nil
}

// Reporter delivers install reports.
type Reporter interface {
	Report(ctx context.Context, r Report) error
}

// HTTPReporter POSTs reports to BaseURL + ReportsPath.
type HTTPReporter struct {
	BaseURL string
	Client  *http.Client // http.DefaultClient when nil
}

// Report implements Reporter.
func (h *HTTPReporter) Report(ctx context.Context, r Report) error {
	body, err := json.Marshal(r)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(h.BaseURL, "/")+ReportsPath, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	c := h.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("report: %s answered %s", req.URL, resp.Status)
	}
	return nil
}

// Halter halts a release (the publisher re-signs its metadata with the halt flag).
type Halter interface {
	Halt(release, reason string) error
}

// MonitorConfig sets when a release halts by itself.
type MonitorConfig struct {
	// Window is how many of the latest final reports (committed or rolled back) count.
	Window int
	// MaxFailureRate halts the release when the share of rolled-back reports in the window
	// exceeds it (0.1 = 10 %).
	MaxFailureRate float64
	// MinReports is how many final reports the window needs before it can halt.
	MinReports int
}

// DefaultMonitor halts when more than 10 % of the last 50 final reports, with at least 20 in,
// are rollbacks.
var DefaultMonitor = MonitorConfig{Window: 50, MaxFailureRate: 0.10, MinReports: 20}

// ReleaseStatus is the per-release view served at StatusPath.
type ReleaseStatus struct {
	Release      string         `json:"release"`
	Counts       map[Result]int `json:"counts"`
	WindowSize   int            `json:"window_size"`
	WindowFailed int            `json:"window_failed"`
	Halted       bool           `json:"halted"`
	HaltReason   string         `json:"halt_reason,omitempty"`
}

type releaseState struct {
	counts  map[Result]int
	window  []bool // true = rolled back; ring of the last Window final results
	next    int
	filled  int
	failed  int
	halted  bool
	reason  string
	devices map[string]Result
}

// Handler collects reports and halts releases automatically. Mount it at ReportsPath and
// StatusPath (or at "/" under a prefix-stripping mux).
type Handler struct {
	cfg    MonitorConfig
	halter Halter
	log    *slog.Logger

	mu       sync.Mutex
	releases map[string]*releaseState
}

// NewHandler returns a Handler; halter may be nil (then the halt is only recorded and logged).
func NewHandler(cfg MonitorConfig, halter Halter, log *slog.Logger) *Handler {
	if cfg.Window <= 0 {
		cfg.Window = DefaultMonitor.Window
	}
	if cfg.MinReports <= 0 || cfg.MinReports > cfg.Window {
		cfg.MinReports = min(DefaultMonitor.MinReports, cfg.Window)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handler{cfg: cfg, halter: halter, log: log, releases: map[string]*releaseState{}}
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, ReportsPath):
		rep, err := ParseReport(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		halted := h.Record(*rep)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		json.NewEncoder(w).Encode(map[string]bool{"halted": halted})
	case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, StatusPath):
		w.Header().Set("Content-Type", "application/json")
		if rel := r.URL.Query().Get("release"); rel != "" {
			st, ok := h.Status(rel)
			if !ok {
				http.Error(w, "no reports for that release", http.StatusNotFound)
				return
			}
			json.NewEncoder(w).Encode(st)
			return
		}
		json.NewEncoder(w).Encode(h.All())
	default:
		http.Error(w, "not found", http.StatusNotFound)
	}
}

// Record counts one report and halts the release when the window's failure rate is exceeded.
// It returns whether the release is halted.
func (h *Handler) Record(rep Report) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.releases[rep.Release]
	if st == nil {
		st = &releaseState{counts: map[Result]int{}, window: make([]bool, h.cfg.Window), devices: map[string]Result{}}
		h.releases[rep.Release] = st
	}
	// A device's final result counts once per release (retries and duplicates do not skew it).
	final := rep.Result == Committed || rep.Result == RolledBack
	if prev, seen := st.devices[rep.Device]; seen && prev == rep.Result {
		return st.halted
	}
	st.devices[rep.Device] = rep.Result
	st.counts[rep.Result]++
	h.log.Info("ota report", "release", rep.Release, "device", rep.Device, "result", string(rep.Result), "wave", rep.Wave)
	if !final {
		return st.halted
	}
	failed := rep.Result == RolledBack
	if st.filled == h.cfg.Window {
		if st.window[st.next] {
			st.failed--
		}
	} else {
		st.filled++
	}
	st.window[st.next] = failed
	if failed {
		st.failed++
	}
	st.next = (st.next + 1) % h.cfg.Window
	if st.halted || st.filled < h.cfg.MinReports {
		return st.halted
	}
	rate := float64(st.failed) / float64(st.filled)
	if rate <= h.cfg.MaxFailureRate {
		return false
	}
	reason := fmt.Sprintf("automatic halt: %d of the last %d reports rolled back (%.0f%% > %.0f%%)", st.failed, st.filled, rate*100, h.cfg.MaxFailureRate*100)
	st.halted, st.reason = true, reason
	h.log.Warn("ota release halted", "release", rep.Release, "reason", reason)
	if h.halter != nil {
		if err := h.halter.Halt(rep.Release, reason); err != nil {
			h.log.Error("ota halt failed", "release", rep.Release, "err", err.Error())
			st.halted = false // try again on the next report
		}
	}
	return st.halted
}

// Status returns the counters of one release.
func (h *Handler) Status(release string) (ReleaseStatus, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	st, ok := h.releases[release]
	if !ok {
		return ReleaseStatus{}, false
	}
	return st.view(release), true
}

// All returns the counters of every release, sorted by release.
func (h *Handler) All() []ReleaseStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]ReleaseStatus, 0, len(h.releases))
	for rel, st := range h.releases {
		out = append(out, st.view(rel))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Release < out[j].Release })
	return out
}

func (st *releaseState) view(rel string) ReleaseStatus {
	counts := make(map[Result]int, len(st.counts))
	for k, v := range st.counts {
		counts[k] = v
	}
	return ReleaseStatus{Release: rel, Counts: counts, WindowSize: st.filled, WindowFailed: st.failed, Halted: st.halted, HaltReason: st.reason}
}
