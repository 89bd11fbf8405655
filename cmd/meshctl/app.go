package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"meshroot/provision/api"
	"meshroot/provision/identity"
	"meshroot/provision/onboard"
)

func init() {
	register(command{name: "app", summary: "phone-app simulator: pair a device from its label; factory: make a device's factory data and label", run: runApp})
}

const appUsage = `usage: meshctl app <subcommand> [flags]

subcommands:
  pair     pair with a device from its label's QR payload and hand over the site, exactly as the
           phone app does (SPAKE2+ with the setup code, then the encrypted setup), then follow the
           device until it holds a verified site profile:
             meshctl app pair --qr 'MR1:...' --device http://192.168.1.1:8080 \
               --site 'Berlin office' --wifi Meshroot --country DE \
               (--claim-file claim.json | --site-id berlin-1 --data /var/lib/meshcloud)
           The Wi-Fi passphrase comes from --wifi-pass-file or $MESHCTL_WIFI_PASS (never a flag).
  factory  create a device's factory data (the SPAKE2+ verifier, not the code) and print its label:
             meshctl app factory --serial MR-0001 -o factory.json
`

func runApp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	err := appSub(ctx, args, stdout, stderr)
	if errors.Is(err, errProvHelp) {
		return nil
	}
	return err
}

func appSub(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, appUsage)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	sub, rest := args[0], args[1:]
	fs := flag.NewFlagSet("meshctl app "+sub, flag.ContinueOnError)
	switch sub {
	case "pair":
		return appPair(ctx, fs, rest, stdout, stderr)
	case "factory":
		return appFactory(fs, rest, stdout, stderr)
	}
	fmt.Fprintf(stderr, "meshctl app: unknown subcommand %q\n", sub)
	fmt.Fprint(stderr, appUsage)
	return errUsage
}

// PairOptions is one pairing, as the phone app does it; meshctl app pair fills it from flags.
type PairOptions struct {
	QR         string
	Device     string
	Setup      onboard.Setup
	Wait       time.Duration // 0: do not wait for the profile
	Poll       time.Duration
	HTTP       *http.Client
	OnProgress func(onboard.Progress)
}

// PairDevice pairs, hands over the setup and (with Wait) follows the device until it holds a
// verified profile. It is the library call behind `meshctl app pair`.
func PairDevice(ctx context.Context, o PairOptions) (*onboard.Progress, error) {
	label, err := identity.ParsePayload(o.QR)
	if err != nil {
		return nil, err
	}
	tr := &onboard.HTTPTransport{URL: o.Device, Client: o.HTTP}
	sess, err := onboard.Pair(ctx, tr, label)
	if err != nil {
		return nil, fmt.Errorf("pair with %s: %w", label.Serial, err)
	}
	p, err := sess.Setup(ctx, o.Setup)
	if err != nil {
		return nil, fmt.Errorf("setup of %s: %w", label.Serial, err)
	}
	if o.OnProgress != nil && p != nil {
		o.OnProgress(*p)
	}
	if o.Wait <= 0 {
		return p, nil
	}
	wctx, cancel := context.WithTimeout(ctx, o.Wait)
	defer cancel()
	poll := o.Poll
	if poll <= 0 {
		poll = 250 * time.Millisecond
	}
	return sess.WaitProfile(wctx, poll, o.OnProgress)
}

func appPair(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) error {
	var o PairOptions
	fs.StringVar(&o.QR, "qr", "", "the label's QR payload (MR1:...)")
	fs.StringVar(&o.Device, "device", "", "the device's onboarding URL on the LAN, e.g. http://192.168.1.1:8080")
	fs.StringVar(&o.Setup.SiteName, "site", "", "site name")
	fs.StringVar(&o.Setup.WiFiSSID, "wifi", "", "Wi-Fi name (SSID)")
	fs.StringVar(&o.Setup.Country, "country", "", "ISO 3166-1 alpha-2 country code")
	passFile := fs.String("wifi-pass-file", "", "file holding the Wi-Fi passphrase (else $MESHCTL_WIFI_PASS)")
	claimFile := fs.String("claim-file", "", "claim JSON from 'meshctl cloud claim -o FILE'")
	siteID := fs.String("site-id", "", "without --claim-file: get a claim for this site from the cloud (the account's call)")
	var cf cloudFlags
	cf.register(fs)
	fs.DurationVar(&o.Wait, "wait", 2*time.Minute, "wait this long for the device to hold its profile (0: do not wait)")
	fs.DurationVar(&o.Poll, "poll", 250*time.Millisecond, "status poll interval")
	if err := parseFlags(fs, args, 0, stderr); err != nil {
		return err
	}
	if o.QR == "" || o.Device == "" {
		fmt.Fprintln(stderr, "meshctl app pair: --qr and --device are required")
		return errUsage
	}
	pass := os.Getenv("MESHCTL_WIFI_PASS")
	if *passFile != "" {
		b, err := os.ReadFile(*passFile)
		if err != nil {
			return err
		}
		pass = strings.TrimRight(string(b), "\r\n")
	}
	o.Setup.WiFiPassphrase = pass
	var claim api.Claim
	switch {
	case *claimFile != "":
		b, err := os.ReadFile(*claimFile)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &claim); err != nil {
			return fmt.Errorf("%s: %w", *claimFile, err)
		}
	case *siteID != "":
		c, err := cf.client()
		if err != nil {
			return err
		}
		cl, err := c.Claim(ctx, *siteID, time.Hour)
		if err != nil {
			return fmt.Errorf("claim for %s: %w", *siteID, err)
		}
		claim = *cl
	default:
		fmt.Fprintln(stderr, "meshctl app pair: give --claim-file, or --site-id with the cloud flags")
		return errUsage
	}
	o.Setup.ClaimToken, o.Setup.CloudURL, o.Setup.CAPin = claim.Token, claim.CloudURL, claim.CAPin
	if o.Setup.SiteName == "" {
		o.Setup.SiteName = claim.SiteID
	}
	start := time.Now()
	o.OnProgress = func(p onboard.Progress) {
		line := fmt.Sprintf("%6.2fs  %s", time.Since(start).Seconds(), p.Phase)
		if p.ProfileVersion > 0 {
			line += fmt.Sprintf(" v%d", p.ProfileVersion)
		}
		if p.Detail != "" {
			line += ": " + p.Detail
		}
		fmt.Fprintln(stderr, line)
	}
	p, err := PairDevice(ctx, o)
	if err != nil {
		return err
	}
	label, _ := identity.ParsePayload(o.QR)
	if p != nil && p.Phase == onboard.PhaseProfile {
		fmt.Fprintf(stdout, "device %s holds profile v%d of site %s (%.2fs)\n", label.Serial, p.ProfileVersion, p.SiteID, time.Since(start).Seconds())
	} else {
		fmt.Fprintf(stdout, "device %s configured (%.2fs)\n", label.Serial, time.Since(start).Seconds())
	}
	return nil
}

func appFactory(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) error {
	serial := fs.String("serial", "", "serial number (A-Z, 0-9, '-')")
	model := fs.String("model", "", "model")
	codeStr := fs.String("code", "", "setup code (8 digits; default: random)")
	disc := fs.Int("discriminator", -1, "discriminator 0-4095 (default: random)")
	iters := fs.Int("iterations", identity.DefaultIterations, "PBKDF2 iterations (1000-100000)")
	out := fs.String("o", "factory.json", "factory file to write")
	if err := parseFlags(fs, args, 0, stderr); err != nil {
		return err
	}
	var code identity.SetupCode
	var err error
	if *codeStr != "" {
		if code, err = identity.ParseSetupCode(*codeStr); err != nil {
			return err
		}
	} else if code, err = identity.NewSetupCode(nil); err != nil {
		return err
	}
	d := *disc
	if d < 0 {
		v, err := identity.NewDiscriminator(nil)
		if err != nil {
			return err
		}
		d = int(v)
	}
	if d > 0xfff {
		return fmt.Errorf("--discriminator %d: want 0-4095", d)
	}
	f, label, err := identity.NewFactory(*serial, *model, code, uint16(d), *iters, nil)
	if err != nil {
		return err
	}
	b, err := f.Marshal()
	if err != nil {
		return err
	}
	if err := os.WriteFile(*out, b, 0o644); err != nil {
		return err
	}
	qr, err := label.Encode()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "factory data: %s (holds the SPAKE2+ verifier, not the code)\n", *out)
	fmt.Fprintf(stdout, "label: serial %s, setup code %s-%s, discriminator %d\n", f.Serial, code.Digits()[:4], code.Digits()[4:], d)
	fmt.Fprintf(stdout, "qr: %s\n", qr)
	return nil
}
