package vpn

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The configuration file of `meshctl vpn up --config FILE` is JSON with the names of the site
// profile's VPN section (provision/profile), so that a profile's "vpn" object, with its
// psk_ref replaced, is a valid file. Unknown fields are refused; every error names the field.
// Durations are whole seconds (_s) or milliseconds (_ms). PSKs are never written inline: each
// tunnel names a file holding the key (psk_file; relative to the configuration file, not
// readable by others) or an environment variable (psk_env).
//
//	{
//	  "connection_id": "vpn-0123456789abcdef0",
//	  "local_address": "192.0.2.2",              // optional: default, the kernel's source address
//	  "customer_gateway_address": "203.0.113.9", // optional: our IKE identity (behind NAT)
//	  "static_routes_only": false,
//	  "bgp": {"customer_asn": 65000, "amazon_asn": 64512, "hold_time_s": 30, "max_prefixes": 5000},
//	  "site_prefixes": ["192.168.1.0/24", "fd00:c0a8:1::/64"],
//	  "remote_prefixes": [],                     // static mode only: the VPC's networks
//	  "tunnels": [
//	    {
//	      "outside_address": "198.51.100.2",
//	      "inside_cidr": "169.254.10.0/30",
//	      "inside_ipv6_cidr": "fd00:a9fe:10::/126", // optional
//	      "psk_file": "tunnel1.psk",                // or "psk_env": "TUNNEL1_PSK"
//	      "dpd_action": "restart",                  // optional: restart, clear, none
//	      "device": "mrvpn0",                       // optional
//	      "options": {                              // optional: AWS TunnelOptions, AWS's defaults
//	        "ike_versions": ["ikev2"],
//	        "phase1_encryption_algorithms": ["AES256-GCM-16"],
//	        "phase2_encryption_algorithms": ["AES256-GCM-16"],
//	        "phase1_integrity_algorithms": ["SHA2-256"],
//	        "phase2_integrity_algorithms": ["SHA2-256"],
//	        "phase1_dh_group_numbers": [14], "phase2_dh_group_numbers": [14],
//	        "phase1_lifetime_s": 28800, "phase2_lifetime_s": 3600,
//	        "rekey_margin_time_s": 270, "rekey_fuzz_percentage": 100,
//	        "replay_window_size": 1024,
//	        "dpd_timeout_s": 30, "dpd_interval_s": 10,
//	        "startup_action": "add",
//	        "ike_proposals": ["aes256gcm16-prfsha256-modp2048"], // optional overrides,
//	        "esp_proposals": ["aes256gcm16-modp2048"]            // strongSwan notation
//	      }
//	    }
//	  ],
//	  "failover": {"disabled": false, "window_ms": 250, "probe_timeout_ms": 400, "recheck_ms": 1000}
//	}
//
// (The comments above are for the reader: JSON has none.) The profile's dpd_timeout_action is
// accepted in options and ignored: it is the concentrator's action, not ours (dpd_action).

// MaxConfigSize bounds a configuration file.
const MaxConfigSize = 1 << 20

type fileConfig struct {
	ConnectionID           string          `json:"connection_id"`
	Type                   string          `json:"type,omitempty"` // the profile's "ipsec.1"
	LocalAddress           string          `json:"local_address,omitempty"`
	CustomerGatewayAddress string          `json:"customer_gateway_address,omitempty"`
	StaticRoutesOnly       bool            `json:"static_routes_only,omitempty"`
	BGP                    *fileBGP        `json:"bgp,omitempty"`
	SitePrefixes           []string        `json:"site_prefixes,omitempty"`
	RemotePrefixes         []string        `json:"remote_prefixes,omitempty"`
	Tunnels                []fileTunnel    `json:"tunnels"`
	Failover               *fileFailover   `json:"failover,omitempty"`
	Comment                json.RawMessage `json:"comment,omitempty"`
}

type fileBGP struct {
	CustomerASN     uint32 `json:"customer_asn"`
	AmazonASN       uint32 `json:"amazon_asn"`
	HoldTimeSeconds int    `json:"hold_time_s,omitempty"`
	MaxPrefixes     int    `json:"max_prefixes,omitempty"`
}

type fileTunnel struct {
	OutsideAddress string          `json:"outside_address"`
	InsideCIDR     string          `json:"inside_cidr"`
	InsideIPv6CIDR string          `json:"inside_ipv6_cidr,omitempty"`
	PSKFile        string          `json:"psk_file,omitempty"`
	PSKEnv         string          `json:"psk_env,omitempty"`
	PSK            json.RawMessage `json:"psk,omitempty"`     // refused: never inline
	PSKRef         json.RawMessage `json:"psk_ref,omitempty"` // refused: a profile reference
	Options        *fileOptions    `json:"options,omitempty"`
	DPDAction      string          `json:"dpd_action,omitempty"`
	Device         string          `json:"device,omitempty"`
}

type fileOptions struct {
	IKEVersions                []string `json:"ike_versions,omitempty"`
	Phase1EncryptionAlgorithms []string `json:"phase1_encryption_algorithms,omitempty"`
	Phase2EncryptionAlgorithms []string `json:"phase2_encryption_algorithms,omitempty"`
	Phase1IntegrityAlgorithms  []string `json:"phase1_integrity_algorithms,omitempty"`
	Phase2IntegrityAlgorithms  []string `json:"phase2_integrity_algorithms,omitempty"`
	Phase1DHGroupNumbers       []int    `json:"phase1_dh_group_numbers,omitempty"`
	Phase2DHGroupNumbers       []int    `json:"phase2_dh_group_numbers,omitempty"`
	Phase1LifetimeSeconds      int      `json:"phase1_lifetime_s,omitempty"`
	Phase2LifetimeSeconds      int      `json:"phase2_lifetime_s,omitempty"`
	RekeyMarginTimeSeconds     int      `json:"rekey_margin_time_s,omitempty"`
	RekeyFuzzPercentage        *int     `json:"rekey_fuzz_percentage,omitempty"`
	ReplayWindowSize           int      `json:"replay_window_size,omitempty"`
	DPDTimeoutSeconds          int      `json:"dpd_timeout_s,omitempty"`
	DPDTimeoutAction           string   `json:"dpd_timeout_action,omitempty"` // the concentrator's; ignored
	StartupAction              string   `json:"startup_action,omitempty"`
	DPDIntervalSeconds         int      `json:"dpd_interval_s,omitempty"`
	IKEProposals               []string `json:"ike_proposals,omitempty"`
	ESPProposals               []string `json:"esp_proposals,omitempty"`
}

type fileFailover struct {
	Disabled       bool `json:"disabled,omitempty"`
	WindowMS       int  `json:"window_ms,omitempty"`
	ProbeTimeoutMS int  `json:"probe_timeout_ms,omitempty"`
	RecheckMS      int  `json:"recheck_ms,omitempty"`
}

// ConfigSource is where ParseConfig finds PSKs: files (relative names are joined to Dir) and
// environment variables.
type ConfigSource struct {
	Dir       string
	ReadFile  func(name string) ([]byte, error)
	Stat      func(name string) (fs.FileInfo, error)
	LookupEnv func(key string) (string, bool)
}

// LoadConfig reads a configuration file (see the format above), with PSK files relative to
// its directory and the process's environment.
func LoadConfig(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("vpn config: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxConfigSize+1))
	if err != nil {
		return Config{}, fmt.Errorf("vpn config %s: %w", path, err)
	}
	cfg, err := ParseConfig(b, ConfigSource{Dir: filepath.Dir(path), ReadFile: os.ReadFile, Stat: os.Stat, LookupEnv: os.LookupEnv})
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig parses and validates a configuration file's content.
func ParseConfig(b []byte, src ConfigSource) (Config, error) {
	if len(b) > MaxConfigSize {
		return Config{}, fmt.Errorf("vpn config: %d bytes; at most %d", len(b), MaxConfigSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var fc fileConfig
	if err := dec.Decode(&fc); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return Config{}, fieldErr(te.Field, "got a JSON %s; want %s", te.Value, te.Type)
		}
		return Config{}, fmt.Errorf("vpn config: %w", err)
	}
	if dec.More() {
		return Config{}, errors.New("vpn config: trailing data after the JSON object")
	}
	cfg, err := fc.convert(src)
	if err != nil {
		return Config{}, err
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

func parseAddr(field, s string, optional bool) (netip.Addr, error) {
	if s == "" && optional {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return a, fieldErr(field, "%q is not an IP address", s)
	}
	return a, nil
}

func parsePrefix(field, s string, optional bool) (netip.Prefix, error) {
	if s == "" && optional {
		return netip.Prefix{}, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, fieldErr(field, "%q is not a CIDR prefix", s)
	}
	return p, nil
}

func parsePrefixes(field string, ss []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, s := range ss {
		p, err := parsePrefix(fmt.Sprintf("%s[%d]", field, i), s, false)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

func seconds(field string, n int) (time.Duration, error) {
	if n < 0 {
		return 0, fieldErr(field, "%d; want a positive number of seconds", n)
	}
	return time.Duration(n) * time.Second, nil
}

func (fc *fileConfig) convert(src ConfigSource) (Config, error) {
	var c Config
	var err error
	c.ConnectionID = fc.ConnectionID
	if fc.Type != "" && fc.Type != "ipsec.1" {
		return c, fieldErr("type", "%q; want ipsec.1", fc.Type)
	}
	if c.LocalAddress, err = parseAddr("local_address", fc.LocalAddress, true); err != nil {
		return c, err
	}
	if c.CustomerGatewayAddress, err = parseAddr("customer_gateway_address", fc.CustomerGatewayAddress, true); err != nil {
		return c, err
	}
	c.StaticRoutesOnly = fc.StaticRoutesOnly
	if b := fc.BGP; b != nil {
		c.BGP = &BGP{CustomerASN: b.CustomerASN, AmazonASN: b.AmazonASN, MaxPrefixes: b.MaxPrefixes}
		if c.BGP.HoldTime, err = seconds("bgp.hold_time_s", b.HoldTimeSeconds); err != nil {
			return c, err
		}
	}
	if c.SitePrefixes, err = parsePrefixes("site_prefixes", fc.SitePrefixes); err != nil {
		return c, err
	}
	if c.RemotePrefixes, err = parsePrefixes("remote_prefixes", fc.RemotePrefixes); err != nil {
		return c, err
	}
	if f := fc.Failover; f != nil {
		if f.WindowMS < 0 || f.ProbeTimeoutMS < 0 || f.RecheckMS < 0 {
			return c, fieldErr("failover", "durations must not be negative")
		}
		c.Failover = Failover{
			Disabled: f.Disabled, Window: time.Duration(f.WindowMS) * time.Millisecond,
			ProbeTimeout: time.Duration(f.ProbeTimeoutMS) * time.Millisecond, Recheck: time.Duration(f.RecheckMS) * time.Millisecond,
		}
	}
	if len(fc.Tunnels) > 2 {
		return c, fieldErr("tunnels", "%d tunnels; want 2 (or 1)", len(fc.Tunnels))
	}
	for i, ft := range fc.Tunnels {
		t, err := ft.convert(fmt.Sprintf("tunnels[%d]", i), src)
		if err != nil {
			return c, err
		}
		c.Tunnels = append(c.Tunnels, t)
	}
	return c, nil
}

func (ft *fileTunnel) convert(f string, src ConfigSource) (Tunnel, error) {
	var t Tunnel
	var err error
	if t.OutsideAddress, err = parseAddr(f+".outside_address", ft.OutsideAddress, false); err != nil {
		return t, err
	}
	if t.InsideCIDR, err = parsePrefix(f+".inside_cidr", ft.InsideCIDR, false); err != nil {
		return t, err
	}
	if t.InsideIPv6CIDR, err = parsePrefix(f+".inside_ipv6_cidr", ft.InsideIPv6CIDR, true); err != nil {
		return t, err
	}
	t.DPDAction, t.Device = ft.DPDAction, ft.Device
	switch {
	case len(ft.PSK) > 0:
		return t, fieldErr(f+".psk", "inline PSKs are not accepted; use psk_file or psk_env")
	case len(ft.PSKRef) > 0:
		return t, fieldErr(f+".psk_ref", "a profile secret reference; give the key with psk_file or psk_env")
	case ft.PSKFile != "" && ft.PSKEnv != "":
		return t, fieldErr(f+".psk_file", "give psk_file or psk_env, not both")
	case ft.PSKFile != "":
		k, err := readPSKFile(ft.PSKFile, src)
		if err != nil {
			return t, fieldErr(f+".psk_file", "%v", err)
		}
		t.PSK = Secret(k)
	case ft.PSKEnv != "":
		if src.LookupEnv == nil {
			return t, fieldErr(f+".psk_env", "no environment to read %s from", ft.PSKEnv)
		}
		k, ok := src.LookupEnv(ft.PSKEnv)
		if !ok || k == "" {
			return t, fieldErr(f+".psk_env", "environment variable %s is not set", ft.PSKEnv)
		}
		t.PSK = Secret(strings.TrimSpace(k))
	default:
		return t, fieldErr(f+".psk_file", "missing; give the PSK with psk_file or psk_env")
	}
	if o := ft.Options; o != nil {
		to := TunnelOptions{
			IKEVersions:                o.IKEVersions,
			Phase1EncryptionAlgorithms: o.Phase1EncryptionAlgorithms, Phase2EncryptionAlgorithms: o.Phase2EncryptionAlgorithms,
			Phase1IntegrityAlgorithms: o.Phase1IntegrityAlgorithms, Phase2IntegrityAlgorithms: o.Phase2IntegrityAlgorithms,
			Phase1DHGroupNumbers: o.Phase1DHGroupNumbers, Phase2DHGroupNumbers: o.Phase2DHGroupNumbers,
			ReplayWindowSize: o.ReplayWindowSize, StartupAction: o.StartupAction,
			IKEProposals: o.IKEProposals, ESPProposals: o.ESPProposals,
		}
		to.RekeyFuzzPercentage = 100 // AWS's default when absent
		if o.RekeyFuzzPercentage != nil {
			to.RekeyFuzzPercentage = *o.RekeyFuzzPercentage
		}
		fo := f + ".options."
		for _, d := range []struct {
			name string
			n    int
			dst  *time.Duration
		}{
			{"phase1_lifetime_s", o.Phase1LifetimeSeconds, &to.Phase1Lifetime},
			{"phase2_lifetime_s", o.Phase2LifetimeSeconds, &to.Phase2Lifetime},
			{"rekey_margin_time_s", o.RekeyMarginTimeSeconds, &to.RekeyMarginTime},
			{"dpd_timeout_s", o.DPDTimeoutSeconds, &to.DPDTimeout},
			{"dpd_interval_s", o.DPDIntervalSeconds, &to.DPDInterval},
		} {
			if *d.dst, err = seconds(fo+d.name, d.n); err != nil {
				return t, err
			}
		}
		if a := o.DPDTimeoutAction; a != "" && a != "clear" && a != "restart" && a != "none" {
			return t, fieldErr(fo+"dpd_timeout_action", "%q; want clear, restart or none", a)
		}
		t.Options = to
	} else {
		t.Options.RekeyFuzzPercentage = 100
	}
	return t, nil
}

// readPSKFile reads a PSK file: not readable by others, one line.
func readPSKFile(name string, src ConfigSource) (string, error) {
	if src.ReadFile == nil {
		return "", errors.New("no files to read the PSK from")
	}
	if !filepath.IsAbs(name) && src.Dir != "" {
		name = filepath.Join(src.Dir, name)
	}
	if src.Stat != nil {
		fi, err := src.Stat(name)
		if err != nil {
			return "", err
		}
		if fi.Mode().Perm()&0o007 != 0 {
			return "", fmt.Errorf("%s is readable by others (mode %v); chmod 600 it", name, fi.Mode().Perm())
		}
	}
	b, err := src.ReadFile(name)
	if err != nil {
		return "", err
	}
	k := strings.TrimRight(string(b), "\r\n")
	if strings.ContainsAny(k, "\r\n") {
		return "", fmt.Errorf("%s: want the key on one line", name)
	}
	return k, nil
}
