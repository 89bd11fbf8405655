// Command roamtest runs inside a QEMU guest of the firmware image (TestVMRoam, BenchmarkVMRoam)
// and exercises mesh roaming against the real kernel and real daemons: it loads
// mac80211_hwsim, starts the Go wireless medium (radio/medium) so that every link has its own
// signal from positions that change over time, runs Debian's hostapd on three radios as the APs
// of three mesh nodes (configurations from radio/ft and radio/hostapd), Debian's wpa_supplicant
// stations in their own network namespaces, and the mesh control plane (radio/mesh: agents and
// the controller over UDP on the guest's loopback), then walks stations around.
//
// Each check prints one console line "ROAMTEST {json}" (benchmarks print "ROAMTEST-METRIC
// {json}"); the last line is "ROAMTEST-DONE {json}". It is a test harness: it starts the daemons
// itself, as the product's supervisor does on a router.
package main

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "roamtest:", err)
		os.Exit(1)
	}
}

// Check is one result line.
type Check struct {
	Name   string `json:"check"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
	Ms     int64  `json:"ms"`
}

// Metric is one measured number (benchmarks).
type Metric struct {
	Name  string  `json:"metric"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
}

// Done is the summary line.
type Done struct {
	OK     bool `json:"ok"`
	Checks int  `json:"checks"`
	Failed int  `json:"failed"`
}

type reporter struct {
	mu     sync.Mutex
	w      io.Writer
	checks int
	failed int
}

func (r *reporter) report(name string, start time.Time, err error, detail string) {
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
	fmt.Fprintf(r.w, "ROAMTEST %s\n", b)
}

func (r *reporter) metric(name string, v float64, unit string) {
	b, _ := json.Marshal(Metric{Name: name, Value: v, Unit: unit})
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.w, "ROAMTEST-METRIC %s\n", b)
}

// note prints a free-form line (diagnostics kept in the console log).
func (r *reporter) note(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.w, "ROAMTEST-NOTE "+format+"\n", args...)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("roamtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bundle := fs.String("bundle", "", "tar archive (a file or a block device) of files to unpack into / first: hostapd, wpa_supplicant, their libraries, regulatory.db")
	scenarios := fs.String("scenarios", "roam,ignore,pingpong,controller-loss", "comma-separated scenarios to run")
	roams := fs.Int("roams", 20, "roams per key management in the roam-time benchmark")
	verbose := fs.Bool("v", false, "daemon debug logs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rep := &reporter{w: stdout}
	if *bundle != "" {
		t := time.Now()
		n, err := unpack(*bundle, "/")
		rep.report("bundle", t, err, fmt.Sprintf("%d files from %s", n, *bundle))
		if err != nil {
			return err
		}
		// More arguments may come with the bundle (typing long lines on the serial console
		// is slow and can be lost).
		if b, err := os.ReadFile(argsFile); err == nil {
			if err := fs.Parse(strings.Fields(string(b))); err != nil {
				return fmt.Errorf("%s: %w", argsFile, err)
			}
		}
	}
	e := &env{rep: rep, verbose: *verbose}
	err := e.setup(ctx)
	if err == nil {
		for _, s := range strings.Split(*scenarios, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			f, ok := scenarioFuncs[s]
			if !ok {
				err = fmt.Errorf("unknown scenario %q", s)
				break
			}
			t := time.Now()
			serr := f(ctx, e, *roams)
			rep.report("scenario "+s, t, serr, "")
			if ctx.Err() != nil {
				err = ctx.Err()
				break
			}
		}
	}
	e.teardown()
	rep.mu.Lock()
	d := Done{OK: err == nil && rep.failed == 0, Checks: rep.checks, Failed: rep.failed}
	rep.mu.Unlock()
	b, _ := json.Marshal(d)
	fmt.Fprintf(stdout, "ROAMTEST-DONE %s\n", b)
	return err
}

// argsFile holds extra arguments in the bundle.
const argsFile = "/etc/roamtest.args"

// scenarioFuncs are filled by the scenario files.
var scenarioFuncs = map[string]func(ctx context.Context, e *env, roams int) error{}

// unpack extracts the regular files of a tar archive under root. Only paths below usr/, lib/,
// lib64/ and etc/ are accepted; the archive may be followed by padding (a block device).
func unpack(archive, root string) (int, error) {
	f, err := os.Open(archive)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	n := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("%s: %w", archive, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		name := filepath.Clean("/" + h.Name)
		ok := false
		for _, p := range []string{"/usr/", "/lib/", "/lib64/", "/etc/"} {
			ok = ok || strings.HasPrefix(name, p)
		}
		if !ok {
			return n, fmt.Errorf("%s: %q outside the allowed directories", archive, h.Name)
		}
		dst := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return n, err
		}
		out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)&0o755)
		if err != nil {
			return n, err
		}
		_, err = io.Copy(out, tr)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return n, fmt.Errorf("%s: %w", dst, err)
		}
		n++
	}
}
