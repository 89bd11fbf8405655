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
	"time"
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

// Check is one result line.
type Check struct {
	Name   string `json:"check"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
	// Ms is how long the check took.
	Ms int64 `json:"ms"`
}

// Done is the summary line.
type Done struct {
	OK     bool `json:"ok"`
	Checks int  `json:"checks"`
	Failed int  `json:"failed"`
}

type reporter struct {
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
		r.failed++
	}
	r.checks++
	b, _ := json.Marshal(c)
	fmt.Fprintf(r.w, "RADIOTEST %s\n", b)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("radiotest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	radar := fs.Bool("radar", true, "also run the radio manager against a simulated radar (adds a 60 s CAC)")
	hostapdBin := fs.String("hostapd", "/usr/sbin/hostapd", "hostapd binary")
	bundle := fs.String("bundle", "", "tar archive (a file or a block device) of files to unpack into / first: hostapd, its libraries, regulatory.db")
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
	}
	err := scenario(ctx, rep, *hostapdBin, *radar)
	d := Done{OK: err == nil && rep.failed == 0, Checks: rep.checks, Failed: rep.failed}
	b, _ := json.Marshal(d)
	fmt.Fprintf(stdout, "RADIOTEST-DONE %s\n", b)
	return err
}

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
