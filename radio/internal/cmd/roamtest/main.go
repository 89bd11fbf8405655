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
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"meshroot/radio/internal/vmkit/guest"
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

// The console lines (see package guest): checks, metrics, notes and the summary.
type (
	Check    = guest.Check
	Metric   = guest.Metric
	Done     = guest.Done
	reporter = guest.Reporter
)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("roamtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bundle := fs.String("bundle", "", "tar archive (a file or a block device) of files to unpack into / first: hostapd, wpa_supplicant, their libraries, regulatory.db")
	scenarios := fs.String("scenarios", "roam,ignore,pingpong,controller-loss", "comma-separated scenarios to run")
	roams := fs.Int("roams", 20, "roams per key management in the roam-time benchmark")
	verbose := fs.Bool("v", false, "daemon debug logs")
	roamDiag := fs.Int("roamdiag", 0, "diagnostic roams before each series of the roam-time benchmark (daemons at debug level, their timelines noted, not measured)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rep := guest.NewReporter(stdout, "ROAMTEST")
	if *bundle != "" {
		t := time.Now()
		n, err := guest.Unpack(*bundle, "/")
		rep.Report("bundle", t, err, fmt.Sprintf("%d files from %s", n, *bundle))
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
	e := &env{rep: rep, verbose: *verbose, roamDiag: *roamDiag}
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
			rep.Report("scenario "+s, t, serr, "")
			if ctx.Err() != nil {
				err = ctx.Err()
				break
			}
		}
	}
	e.teardown()
	rep.Done(err)
	return err
}

// argsFile holds extra arguments in the bundle.
const argsFile = "/etc/roamtest.args"

// scenarioFuncs are filled by the scenario files.
var scenarioFuncs = map[string]func(ctx context.Context, e *env, roams int) error{}
