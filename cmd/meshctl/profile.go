package main

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"meshroot/provision/api"
	"meshroot/provision/awsimport"
	"meshroot/provision/profile"
	"meshroot/vpn/awsconfig"
)

func init() {
	register(command{name: "profile", summary: "site profiles: import-aws (AWS VPN config → profile), validate, verify", run: runProfile})
}

const profileUsage = `usage: meshctl profile <subcommand> [flags]

subcommands:
  import-aws  vpn.xml [--options opts.json] --prefix CIDR... [--remote-prefix CIDR...]: AWS
              CustomerGatewayConfiguration (and DescribeVpnConnections JSON) → a site profile
              with the VPN connection. The PSKs become secret references; with --push they go
              to the cloud's secret store and the VPN into the site (--site), otherwise only
              into --secrets-out FILE (0600).
              --prefix: the site's networks (a static connection's AWS Routes are added).
              --remote-prefix: a static connection's remote networks (the VPC's CIDRs), which
              the router routes into the tunnels; added to the JSON's RemoteIpv4NetworkCidr and
              RemoteIpv6NetworkCidr unless those are AWS's 0.0.0.0/0 and ::/0. The XML names
              none, so a static connection needs one or the other; a BGP one takes neither.
  validate    FILE: check a profile (or profile template) and name every invalid field
  verify      ENVELOPE --key BASE64 | --data DIR: check a signed profile and print it
`

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, strings.Split(v, ",")...); return nil }

func runProfile(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	err := profileSub(ctx, args, stdout, stderr)
	if errors.Is(err, errProvHelp) {
		return nil
	}
	return err
}

func profileSub(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, profileUsage)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	sub, rest := args[0], args[1:]
	fs := flag.NewFlagSet("meshctl profile "+sub, flag.ContinueOnError)
	switch sub {
	case "import-aws":
		return importAWS(ctx, fs, rest, stdout, stderr)
	case "validate":
		if err := parseFlags(fs, rest, 1, stderr); err != nil {
			return err
		}
		b, err := os.ReadFile(fs.Arg(0))
		if err != nil {
			return err
		}
		var p profile.Profile
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&p); err != nil {
			return fmt.Errorf("%s: %w", fs.Arg(0), err)
		}
		if err := p.Validate(); err != nil {
			var fe profile.FieldErrors
			if errors.As(err, &fe) {
				for _, e := range fe {
					fmt.Fprintf(stderr, "%s: %s\n", fs.Arg(0), e)
				}
				return fmt.Errorf("%s: %d invalid field(s)", fs.Arg(0), len(fe))
			}
			return err
		}
		fmt.Fprintf(stdout, "%s: valid\n", fs.Arg(0))
		return nil
	case "verify":
		keyB64 := fs.String("key", "", "profile-signing public key (base64 ed25519)")
		data := fs.String("data", "", "meshcloud data directory (uses its profile.key's public half)")
		site := fs.String("site", "", "expected site id")
		if err := parseFlags(fs, rest, 1, stderr); err != nil {
			return err
		}
		var pub ed25519.PublicKey
		switch {
		case *keyB64 != "":
			b, err := base64.StdEncoding.DecodeString(*keyB64)
			if err != nil || len(b) != ed25519.PublicKeySize {
				return errors.New("verify: --key: want a base64 ed25519 public key")
			}
			pub = b
		case *data != "":
			k, err := readProfileKey(*data)
			if err != nil {
				return fmt.Errorf("verify: %w", err)
			}
			pub = k
		default:
			return errors.New("verify: give --key or --data")
		}
		env, err := os.ReadFile(fs.Arg(0))
		if err != nil {
			return err
		}
		v, err := profile.Verify(env, profile.NewKeySet(pub), profile.Expect{SiteID: *site, AllowExpired: false})
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		fmt.Fprintf(stderr, "valid: site %s, version %d, signed by key %.16s…, expires %s\n", v.Site.ID, v.Version, v.KeyID, v.ExpiresAt)
		return printJSON(stdout, v.Profile)
	}
	fmt.Fprintf(stderr, "meshctl profile: unknown subcommand %q\n", sub)
	fmt.Fprint(stderr, profileUsage)
	return errUsage
}

func importAWS(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) error {
	options := fs.String("options", "", "DescribeVpnConnections JSON (or Options / TunnelOptions) with the real algorithm policy")
	var prefixes stringList
	fs.Var(&prefixes, "prefix", "a site network to advertise (repeatable, or comma-separated)")
	var remote stringList
	fs.Var(&remote, "remote-prefix", "static connections: a remote (VPC) network to route into the tunnels (repeatable, or comma-separated)")
	siteID := fs.String("site", "", "site id (with --cloud: the site to update)")
	siteName := fs.String("site-name", "", "site name (profile output)")
	country := fs.String("country", "", "country (profile output)")
	wifi := fs.String("wifi", "", "Wi-Fi name (profile output)")
	out := fs.String("o", "", "write the profile to this file instead of stdout")
	secretsOut := fs.String("secrets-out", "", "write the PSKs as JSON to this file (0600); without it and --cloud they are not stored")
	refPrefix := fs.String("ref-prefix", "vpn", "first element of the PSK references")
	var cf cloudFlags
	cf.register(fs)
	toCloud := fs.Bool("push", false, "store the PSKs in the cloud's secret store and set the site's VPN (needs --site and --data or --ca/--token-file)")
	if err := parseFlags(fs, args, 1, stderr); err != nil {
		return err
	}
	xmlPath := fs.Arg(0)
	xmlDoc, err := readLimited(xmlPath)
	if err != nil {
		return err
	}
	var optDoc []byte
	if *options != "" {
		if optDoc, err = readLimited(*options); err != nil {
			return err
		}
	}
	res, err := awsconfig.Import(xmlDoc, optDoc)
	if err != nil {
		return fmt.Errorf("import-aws: %w", err)
	}
	vpn, secrets, warnings, err := awsimport.Convert(&res.Connection, awsimport.Options{SitePrefixes: prefixes, RemotePrefixes: remote, Describe: optDoc, RefPrefix: *refPrefix})
	for _, w := range append(res.Warnings, warnings...) {
		fmt.Fprintln(stderr, "warning:", w)
	}
	if err != nil {
		return fmt.Errorf("import-aws: %w", err)
	}
	if *toCloud {
		if *siteID == "" {
			return errors.New("import-aws: --push needs --site")
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		for _, s := range secrets {
			if err := c.PutSecret(ctx, s.Ref, s.Value.Reveal()); err != nil {
				return fmt.Errorf("import-aws: store %s: %w", s.Ref, err)
			}
			fmt.Fprintf(stderr, "stored %s in the cloud's secret store\n", s.Ref)
		}
		raw, _ := json.Marshal(vpn)
		pi, err := c.PutVPN(ctx, *siteID, raw)
		if err != nil {
			return fmt.Errorf("import-aws: set the site's VPN: %w", err)
		}
		fmt.Fprintf(stdout, "site %s: profile v%d issued with VPN %s (tunnels %s, %s)\n", pi.SiteID, pi.Version, vpn.ConnectionID, vpn.Tunnels[0].OutsideAddress, vpn.Tunnels[1].OutsideAddress)
		return nil
	}
	if *secretsOut != "" {
		list := make([]api.Secret, len(secrets))
		for i, s := range secrets {
			list[i] = api.Secret{Ref: s.Ref, Value: s.Value.Reveal()}
		}
		b, _ := json.MarshalIndent(list, "", "  ")
		if err := os.WriteFile(*secretsOut, append(b, '\n'), 0o600); err != nil {
			return fmt.Errorf("import-aws: %w", err)
		}
		fmt.Fprintf(stderr, "%d PSK(s) written to %s (0600): store them with 'meshctl cloud secret put' and delete the file\n", len(secrets), *secretsOut)
	} else if len(secrets) > 0 {
		for _, s := range secrets {
			fmt.Fprintf(stderr, "not stored: %s (use --push, or --secrets-out FILE)\n", s.Ref)
		}
	}
	id := *siteID
	if id == "" {
		id = "site"
	}
	name := *siteName
	if name == "" {
		name = id
	}
	p := profile.NewSiteProfile(id, name)
	p.Country, p.WiFi.SSID, p.VPN = *country, *wifi, vpn
	b, _ := json.MarshalIndent(p, "", "  ")
	b = append(b, '\n')
	if *out != "" {
		return os.WriteFile(*out, b, 0o644)
	}
	_, err = stdout.Write(b)
	return err
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := awsconfig.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

// readProfileKey returns the public half of meshcloud's profile.key in dataDir.
func readProfileKey(dataDir string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "profile.key"))
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("profile.key: no PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("profile.key: %w", err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, errors.New("profile.key: not ed25519")
	}
	return ek.Public().(ed25519.PublicKey), nil
}
