// Command radiotest runs inside a QEMU guest of the firmware image (TestVMRadio) and exercises
// the radio packages against the real kernel and a real hostapd: it loads mac80211_hwsim, starts
// Debian's hostapd with a configuration rendered by radio/hostapd, drives it through the
// control-socket client (STATUS, events, CHAN_SWITCH with an associated station, station list),
// reads nl80211 (interfaces, PHY channels with DFS state, survey, scans and their HT/VHT widths)
// and, with -radar, runs the radio manager against a simulated radar on a DFS channel.
//
// Each check prints one console line "RADIOTEST {json}"; the last line is
// "RADIOTEST-DONE {json}". It is a test harness: it starts hostapd itself (the product's
// supervisor does that on a router) and uses mdlayher/wifi to associate a station.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"meshroot/radio/internal/vmkit/guest"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "radiotest:", err)
		os.Exit(1)
	}
}

// The console lines (see package guest): checks and the summary.
type (
	Check    = guest.Check
	Done     = guest.Done
	reporter = guest.Reporter
)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("radiotest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	radar := fs.Bool("radar", true, "also run the radio manager against a simulated radar (adds a 60 s CAC)")
	hostapdBin := fs.String("hostapd", "/usr/sbin/hostapd", "hostapd binary")
	bundle := fs.String("bundle", "", "tar archive (a file or a block device) of files to unpack into / first: hostapd, its libraries, regulatory.db")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rep := guest.NewReporter(stdout, "RADIOTEST")
	if *bundle != "" {
		t := time.Now()
		n, err := guest.Unpack(*bundle, "/")
		rep.Report("bundle", t, err, fmt.Sprintf("%d files from %s", n, *bundle))
		if err != nil {
			return err
		}
	}
	err := scenario(ctx, rep, *hostapdBin, *radar)
	rep.Done(err)
	return err
}
