package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"meshroot/provision/api"
	"meshroot/provision/profile"
)

func init() {
	register(command{name: "cloud", summary: "fleet cloud operator: sites, claims, devices, logs, secrets, profiles", run: runCloud})
}

const cloudUsage = `usage: meshctl cloud <subcommand> [flags]

subcommands:
  site create   create a site (--id, --name, --country, --wifi)
  sites         list the sites
  claim         issue a single-use claim token for a site (--site; JSON for 'meshctl app pair --claim-file')
  devices       list the enrolled devices (--site)
  revoke        forget a device (its certificate stops working): meshctl cloud revoke SERIAL
  logs          query device logs (--site, --tunnel, --device, --since, --limit)
  secret put    store a secret: meshctl cloud secret put REF (the value is read from stdin)
  profile get   print a site's signed profile (--site)
  profile set   replace a site's profile template and issue a new version (--site FILE)
  profile vpn   print a site's VPN networks, or replace them and issue a new version (--site,
                --site-prefix CIDR... for the site's networks, --remote-prefix CIDR... for a
                static connection's remote networks, which the router routes into the tunnels)

Every subcommand takes --cloud URL (default $MESHCLOUD_URL or https://localhost:8443) and either
--data DIR (meshcloud's data directory: ca.pem and admin.token) or --ca FILE and --token-file FILE.
`

// cloudFlags are the connection flags every cloud subcommand shares.
type cloudFlags struct {
	url, data, ca, tokenFile string
}

func (c *cloudFlags) register(fs *flag.FlagSet) {
	def := os.Getenv("MESHCLOUD_URL")
	if def == "" {
		def = "https://localhost:8443"
	}
	fs.StringVar(&c.url, "cloud", def, "fleet cloud URL")
	fs.StringVar(&c.data, "data", "", "meshcloud data directory (reads ca.pem and admin.token)")
	fs.StringVar(&c.ca, "ca", "", "fleet CA certificate (PEM)")
	fs.StringVar(&c.tokenFile, "token-file", "", "file holding the bearer token")
}

func (c *cloudFlags) client() (*api.Client, error) {
	ca, tok := c.ca, c.tokenFile
	if c.data != "" {
		if ca == "" {
			ca = filepath.Join(c.data, "ca.pem")
		}
		if tok == "" {
			tok = filepath.Join(c.data, "admin.token")
		}
	}
	if ca == "" || tok == "" {
		return nil, errors.New("cloud: give --data DIR, or --ca FILE and --token-file FILE")
	}
	caPEM, err := os.ReadFile(ca)
	if err != nil {
		return nil, fmt.Errorf("cloud: %w", err)
	}
	tb, err := os.ReadFile(tok)
	if err != nil {
		return nil, fmt.Errorf("cloud: %w", err)
	}
	hc, err := api.TrustCA(caPEM, 60*time.Second)
	if err != nil {
		return nil, fmt.Errorf("cloud: %s: %w", ca, err)
	}
	return &api.Client{BaseURL: c.url, Token: strings.TrimSpace(string(tb)), HTTP: hc}, nil
}

// parseFlags parses a subcommand's flags, which may come before, between or after the
// positional arguments; want is the number of positional arguments (-1: any), which fs.Arg
// returns afterwards.
func parseFlags(fs *flag.FlagSet, args []string, want int, stderr io.Writer) error {
	fs.SetOutput(stderr)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return errProvHelp
			}
			return errUsage
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	// Leave the positional arguments where fs.Arg finds them.
	fs.Parse(append([]string{"--"}, pos...))
	if want >= 0 && len(pos) != want {
		fmt.Fprintf(stderr, "%s: want %d argument(s), got %q\n", fs.Name(), want, pos)
		return errUsage
	}
	return nil
}

// errProvHelp ends a provisioning subcommand after -h printed its flags.
var errProvHelp = errors.New("help shown")

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func runCloud(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	err := cloudSub(ctx, args, stdout, stderr)
	if errors.Is(err, errProvHelp) {
		return nil
	}
	return err
}

func cloudSub(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, cloudUsage)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	sub, rest := args[0], args[1:]
	if (sub == "site" || sub == "secret" || sub == "profile") && len(rest) > 0 {
		sub, rest = sub+" "+rest[0], rest[1:]
	}
	fs := flag.NewFlagSet("meshctl cloud "+sub, flag.ContinueOnError)
	var cf cloudFlags
	cf.register(fs)
	switch sub {
	case "site create":
		id := fs.String("id", "", "site id (a-z, 0-9, '-')")
		name := fs.String("name", "", "site name")
		country := fs.String("country", "", "ISO 3166-1 alpha-2 country code")
		wifi := fs.String("wifi", "", "Wi-Fi name (SSID)")
		if err := parseFlags(fs, rest, 0, stderr); err != nil {
			return err
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		s, err := c.CreateSite(ctx, api.CreateSiteRequest{ID: *id, Name: *name, Country: *country, WiFiSSID: *wifi})
		if err != nil {
			return fmt.Errorf("site create: %w", err)
		}
		return printJSON(stdout, s)
	case "sites":
		if err := parseFlags(fs, rest, 0, stderr); err != nil {
			return err
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		sites, err := c.Sites(ctx)
		if err != nil {
			return fmt.Errorf("sites: %w", err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SITE\tNAME\tPROFILE\tEXPIRES")
		for _, s := range sites {
			exp := "-"
			if !s.ProfileExpiresAt.IsZero() {
				exp = s.ProfileExpiresAt.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\tv%d\t%s\n", s.ID, s.Name, s.ProfileVersion, exp)
		}
		return tw.Flush()
	case "claim":
		site := fs.String("site", "", "site id")
		ttl := fs.Duration("ttl", 24*time.Hour, "claim lifetime")
		out := fs.String("o", "", "write the claim JSON to this file (0600) instead of stdout")
		if err := parseFlags(fs, rest, 0, stderr); err != nil {
			return err
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		cl, err := c.Claim(ctx, *site, *ttl)
		if err != nil {
			return fmt.Errorf("claim: %w", err)
		}
		if *out != "" {
			b, _ := json.MarshalIndent(cl, "", "  ")
			if err := os.WriteFile(*out, append(b, '\n'), 0o600); err != nil {
				return fmt.Errorf("claim: %w", err)
			}
			fmt.Fprintf(stdout, "claim for site %s written to %s (expires %s)\n", cl.SiteID, *out, cl.ExpiresAt.Format(time.RFC3339))
			return nil
		}
		return printJSON(stdout, cl)
	case "devices":
		site := fs.String("site", "", "only this site's devices")
		asJSON := fs.Bool("json", false, "print JSON")
		if err := parseFlags(fs, rest, 0, stderr); err != nil {
			return err
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		ds, err := c.Devices(ctx, *site)
		if err != nil {
			return fmt.Errorf("devices: %w", err)
		}
		if *asJSON {
			return printJSON(stdout, ds)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SERIAL\tSITE\tPROFILE\tLAST SEEN\tCERT UNTIL")
		for _, d := range ds {
			fmt.Fprintf(tw, "%s\t%s\tv%d\t%s\t%s\n", d.Serial, d.SiteID, d.ProfileVersion, d.LastSeen.Format(time.RFC3339), d.CertNotAfter.Format("2006-01-02"))
		}
		return tw.Flush()
	case "revoke":
		if err := parseFlags(fs, rest, 1, stderr); err != nil {
			return err
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		if err := c.RevokeDevice(ctx, fs.Arg(0)); err != nil {
			return fmt.Errorf("revoke: %w", err)
		}
		fmt.Fprintf(stdout, "device %s revoked\n", fs.Arg(0))
		return nil
	case "logs":
		var q api.LogQuery
		fs.StringVar(&q.Site, "site", "", "site id (required)")
		fs.StringVar(&q.Tunnel, "tunnel", "", "only this tunnel (its outside address)")
		fs.StringVar(&q.Device, "device", "", "only this device (serial)")
		since := fs.String("since", "", "RFC 3339 time or a duration ago (e.g. 1h)")
		fs.IntVar(&q.Limit, "limit", 500, "at most this many records")
		asJSON := fs.Bool("json", false, "print the records as JSON lines")
		if err := parseFlags(fs, rest, 0, stderr); err != nil {
			return err
		}
		if *since != "" {
			if d, err := time.ParseDuration(*since); err == nil {
				q.Since = time.Now().Add(-d)
			} else if t, err := time.Parse(time.RFC3339, *since); err == nil {
				q.Since = t
			} else {
				return fmt.Errorf("logs: --since %q: want RFC 3339 or a duration", *since)
			}
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		recs, err := c.Logs(ctx, q)
		if err != nil {
			return fmt.Errorf("logs: %w", err)
		}
		for _, r := range recs {
			if *asJSON {
				b, _ := json.Marshal(r)
				fmt.Fprintf(stdout, "%s\n", b)
				continue
			}
			attrs := ""
			if len(r.Attrs) > 0 {
				b, _ := json.Marshal(r.Attrs)
				attrs = " " + string(b)
			}
			tun := ""
			if r.Tunnel != "" {
				tun = " tunnel=" + r.Tunnel
			}
			fmt.Fprintf(stdout, "%s %s %-5s%s %s%s\n", r.Time.Format(time.RFC3339), r.Device, r.Level, tun, r.Msg, attrs)
		}
		return nil
	case "secret put":
		valueFile := fs.String("value-file", "", "read the value from this file instead of stdin")
		if err := parseFlags(fs, rest, 1, stderr); err != nil {
			return err
		}
		var v []byte
		var err error
		if *valueFile != "" {
			v, err = os.ReadFile(*valueFile)
		} else {
			v, err = io.ReadAll(io.LimitReader(os.Stdin, 8192))
		}
		if err != nil {
			return fmt.Errorf("secret put: %w", err)
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		if err := c.PutSecret(ctx, fs.Arg(0), strings.TrimRight(string(v), "\r\n")); err != nil {
			return fmt.Errorf("secret put: %w", err)
		}
		fmt.Fprintf(stdout, "secret %s stored\n", fs.Arg(0))
		return nil
	case "profile get":
		site := fs.String("site", "", "site id")
		if err := parseFlags(fs, rest, 0, stderr); err != nil {
			return err
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		env, err := c.SiteProfile(ctx, *site)
		if err != nil {
			return fmt.Errorf("profile get: %w", err)
		}
		_, err = stdout.Write(env)
		return err
	case "profile set":
		site := fs.String("site", "", "site id")
		if err := parseFlags(fs, rest, 1, stderr); err != nil {
			return err
		}
		b, err := os.ReadFile(fs.Arg(0))
		if err != nil {
			return fmt.Errorf("profile set: %w", err)
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		pi, err := c.PutProfile(ctx, *site, b)
		if err != nil {
			return fmt.Errorf("profile set: %w", err)
		}
		fmt.Fprintf(stdout, "site %s: profile v%d issued (expires %s)\n", pi.SiteID, pi.Version, pi.ExpiresAt.Format(time.RFC3339))
		return nil
	case "profile vpn":
		site := fs.String("site", "", "site id")
		var sitePfx, remotePfx stringList
		fs.Var(&sitePfx, "site-prefix", "replace the site's networks (repeatable, or comma-separated)")
		fs.Var(&remotePfx, "remote-prefix", "replace a static connection's remote networks (repeatable, or comma-separated)")
		if err := parseFlags(fs, rest, 0, stderr); err != nil {
			return err
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		cur, err := currentProfile(ctx, c, *site)
		if err != nil {
			return fmt.Errorf("profile vpn: %w", err)
		}
		if cur.VPN == nil {
			return fmt.Errorf("profile vpn: site %s has no VPN connection (add one with 'meshctl profile import-aws --push')", *site)
		}
		v := *cur.VPN
		if len(sitePfx) == 0 && len(remotePfx) == 0 {
			mode := "BGP"
			if v.StaticRoutesOnly {
				mode = "static"
			}
			fmt.Fprintf(stdout, "site %s: profile v%d, VPN %s (%s)\n", *site, cur.Version, v.ConnectionID, mode)
			for _, p := range v.SitePrefixes {
				fmt.Fprintf(stdout, "site_prefix\t%s\n", p)
			}
			for _, p := range v.RemotePrefixes {
				fmt.Fprintf(stdout, "remote_prefix\t%s\n", p)
			}
			return nil
		}
		if len(sitePfx) > 0 {
			v.SitePrefixes = sitePfx
		}
		if len(remotePfx) > 0 {
			v.RemotePrefixes = remotePfx
		}
		if err := v.Validate(); err != nil {
			return fmt.Errorf("profile vpn: %w", err)
		}
		raw, _ := json.Marshal(&v)
		pi, err := c.PutVPN(ctx, *site, raw)
		if err != nil {
			return fmt.Errorf("profile vpn: %w", err)
		}
		fmt.Fprintf(stdout, "site %s: profile v%d issued (VPN %s: %d site, %d remote prefixes)\n", pi.SiteID, pi.Version, v.ConnectionID, len(v.SitePrefixes), len(v.RemotePrefixes))
		return nil
	}
	fmt.Fprintf(stderr, "meshctl cloud: unknown subcommand %q\n", sub)
	fmt.Fprint(stderr, cloudUsage)
	return errUsage
}

// currentProfile returns the profile in force for a site, verified with the fleet's
// profile-signing keys (an expired one too: the operator edits what the devices run).
func currentProfile(ctx context.Context, c *api.Client, site string) (*profile.Verified, error) {
	var fi api.FleetInfo
	if err := c.Do(ctx, "GET", api.PathFleet, nil, &fi); err != nil {
		return nil, fmt.Errorf("fleet keys: %w", err)
	}
	var keys []ed25519.PublicKey
	for _, k := range fi.ProfileKeys {
		if len(k.PublicKey) == ed25519.PublicKeySize {
			keys = append(keys, k.PublicKey)
		}
	}
	env, err := c.SiteProfile(ctx, site)
	if err != nil {
		return nil, err
	}
	v, err := profile.Verify(env, profile.NewKeySet(keys...), profile.Expect{SiteID: site, AllowExpired: true})
	if err != nil {
		return nil, fmt.Errorf("site %s: %w", site, err)
	}
	return v, nil
}
