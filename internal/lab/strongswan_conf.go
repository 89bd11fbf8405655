package lab

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"
)

// CharonConfig describes one strongSwan charon instance (one namespace, one TUN device ipsec0,
// userspace ESP via kernel-libipsec).
type CharonConfig struct {
	// Name names the instance (directory, log file, filelog section). Default "charon".
	Name string
	// Conns are the connections loaded with swanctl --load-all.
	Conns []Conn
	// TunAddrs are put on ipsec0 once it exists ("169.254.10.1/30", "fd00:10::1/126").
	TunAddrs []string
	// RetransmitTries, RetransmitTimeout and RetransmitBase set charon's IKEv2 retransmission
	// (which is also its DPD timeout). Zero: 5, 2.0 s, 1.4 — dead after ~33 s, as in the notes.
	RetransmitTries   int
	RetransmitTimeout float64
	RetransmitBase    float64
	// Log sets the filelog levels (-1..4). Zero value: default 1, ike 1, knl 1, esp 1, others 0
	// (strongSwan's default). Set IKE and ENC to 4 to see every message decoded.
	Log LogLevels
	// Port and PortNATT override the IKE ports (defaults 500 and 4500).
	Port, PortNATT int
	// Extra is appended verbatim inside the charon { } section (escape hatch).
	Extra string
}

// LogLevels are strongSwan filelog levels per subsystem. A zero field means "not set" (the
// default level applies); use -1 to silence a subsystem.
type LogLevels struct {
	Default, IKE, KNL, ESP, ENC, NET, CFG, CHD, MGR, LIB int
}

// Conn is one swanctl connection (connections.NAME) with its children and PSK secret.
// Zero values mean strongSwan's default unless the field says otherwise.
type Conn struct {
	// Name of the connection (and of its child when Children is empty).
	Name string
	// LocalAddrs and RemoteAddrs are the outside addresses (IPv4 or IPv6; remote may be %any).
	LocalAddrs, RemoteAddrs []string
	// LocalID and RemoteID are the IKE identities (an IP address, an FQDN, or "@fqdn").
	// Default: the first local/remote address.
	LocalID, RemoteID string
	// PSK is the pre-shared key (written hex-encoded into swanctl.conf; never logged).
	PSK string
	// Proposals are the IKE proposals (default aes256gcm16-prfsha256-modp2048).
	Proposals []string
	// NoEncap turns off forced UDP encapsulation (default: encap = yes, as libipsec needs).
	NoEncap bool
	// Mobike enables MOBIKE (default no).
	Mobike bool
	// KeyingTries: 0 = strongSwan default (1); negative = 0 (retry forever).
	KeyingTries int
	// RekeyTime, OverTime, RandTime, ReauthTime for the IKE SA; negative writes 0s (disabled).
	RekeyTime, OverTime, RandTime, ReauthTime time.Duration
	// DPDDelay (e.g. 10 s as AWS) and DPDTimeout (IKEv1 only in strongSwan).
	DPDDelay, DPDTimeout time.Duration
	// Unique is the uniqueness policy (no, never, keep, replace); empty: default.
	Unique string
	// Children are the CHILD_SAs. Empty: one child named Name with defaults.
	Children []Child
	// Extra is appended verbatim inside the connection section.
	Extra string
}

// Child is one CHILD_SA configuration (connections.NAME.children.CHILD).
type Child struct {
	// Name of the child (default: the connection's name).
	Name string
	// LocalTS and RemoteTS default to 0.0.0.0/0,::/0 (route-based, as AWS).
	LocalTS, RemoteTS []string
	// ESPProposals (default aes256gcm16-modp2048).
	ESPProposals []string
	// LifeTime, RekeyTime and RandTime of the CHILD_SA; negative writes 0s.
	LifeTime, RekeyTime, RandTime time.Duration
	// ReplayWindow: 0 = 1024 (AWS's default); negative = 0 (off).
	ReplayWindow int
	// DPDAction (clear, trap, restart), StartAction (none, trap, start), CloseAction.
	DPDAction, StartAction, CloseAction string
	// Mode (default tunnel).
	Mode string
	// Extra is appended verbatim inside the child section.
	Extra string
}

// Default proposals (AWS's first offer).
const (
	DefaultIKEProposal = "aes256gcm16-prfsha256-modp2048"
	DefaultESPProposal = "aes256gcm16-modp2048"
)

var (
	confNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)
	proposalRE = regexp.MustCompile(`^[a-z0-9_-]+$`)
	identityRE = regexp.MustCompile(`^[A-Za-z0-9@%._:*-]+$`)
	actionsDPD = []string{"", "none", "clear", "trap", "restart"}
	actionsSt  = []string{"", "none", "trap", "start"}
	actionsCl  = []string{"", "none", "trap", "start"}
	uniqueOpts = []string{"", "no", "never", "keep", "replace"}
	childModes = []string{"", "tunnel", "transport", "pass", "drop"}
)

func oneOf(v string, set []string) bool {
	for _, s := range set {
		if v == s {
			return true
		}
	}
	return false
}

// validate checks every field that reaches a config file, naming the bad one.
func (c *CharonConfig) validate() error {
	if c.Name != "" && !confNameRE.MatchString(c.Name) {
		return fmt.Errorf("charon config: Name %q: want [A-Za-z0-9_-]{1,32}", c.Name)
	}
	for _, a := range c.TunAddrs {
		if _, err := netip.ParsePrefix(a); err != nil {
			return fmt.Errorf("charon config: TunAddrs %q: %w", a, err)
		}
	}
	if strings.Contains(c.Extra, "\x00") {
		return fmt.Errorf("charon config: Extra contains NUL")
	}
	seen := map[string]bool{}
	for i := range c.Conns {
		cn := &c.Conns[i]
		where := fmt.Sprintf("charon config: Conns[%d] %q", i, cn.Name)
		if !confNameRE.MatchString(cn.Name) {
			return fmt.Errorf("%s: Name: want [A-Za-z0-9_-]{1,32}", where)
		}
		if seen[cn.Name] {
			return fmt.Errorf("%s: Name: duplicate", where)
		}
		seen[cn.Name] = true
		if len(cn.LocalAddrs) == 0 || len(cn.RemoteAddrs) == 0 {
			return fmt.Errorf("%s: LocalAddrs and RemoteAddrs: want at least one each", where)
		}
		for _, a := range append(append([]string(nil), cn.LocalAddrs...), cn.RemoteAddrs...) {
			if a == "%any" || a == "%any4" || a == "%any6" {
				continue
			}
			if _, err := netip.ParseAddr(a); err != nil {
				if _, perr := netip.ParsePrefix(a); perr != nil {
					return fmt.Errorf("%s: address %q: want an IP address, prefix or %%any", where, a)
				}
			}
		}
		for _, id := range []string{cn.LocalID, cn.RemoteID} {
			if id != "" && !identityRE.MatchString(id) {
				return fmt.Errorf("%s: ID %q: want an IP address or FQDN", where, id)
			}
		}
		if cn.PSK == "" {
			return fmt.Errorf("%s: PSK: empty", where)
		}
		for _, p := range cn.Proposals {
			if !proposalRE.MatchString(p) {
				return fmt.Errorf("%s: Proposals %q: want lowercase algorithm keywords joined by '-'", where, p)
			}
		}
		if !oneOf(cn.Unique, uniqueOpts) {
			return fmt.Errorf("%s: Unique %q: want one of %v", where, cn.Unique, uniqueOpts[1:])
		}
		if strings.Contains(cn.Extra, "\x00") {
			return fmt.Errorf("%s: Extra contains NUL", where)
		}
		cseen := map[string]bool{}
		for j, ch := range cn.children() {
			cw := fmt.Sprintf("%s: Children[%d] %q", where, j, ch.Name)
			if !confNameRE.MatchString(ch.Name) {
				return fmt.Errorf("%s: Name: want [A-Za-z0-9_-]{1,32}", cw)
			}
			if cseen[ch.Name] {
				return fmt.Errorf("%s: Name: duplicate", cw)
			}
			cseen[ch.Name] = true
			for _, ts := range append(append([]string(nil), ch.LocalTS...), ch.RemoteTS...) {
				if _, err := netip.ParsePrefix(ts); err != nil {
					if _, aerr := netip.ParseAddr(ts); aerr != nil && ts != "dynamic" {
						return fmt.Errorf("%s: traffic selector %q: want a prefix, address or dynamic", cw, ts)
					}
				}
			}
			for _, p := range ch.ESPProposals {
				if !proposalRE.MatchString(p) {
					return fmt.Errorf("%s: ESPProposals %q: want lowercase algorithm keywords joined by '-'", cw, p)
				}
			}
			if !oneOf(ch.DPDAction, actionsDPD) {
				return fmt.Errorf("%s: DPDAction %q: want one of %v", cw, ch.DPDAction, actionsDPD[1:])
			}
			if !oneOf(ch.StartAction, actionsSt) {
				return fmt.Errorf("%s: StartAction %q: want one of %v", cw, ch.StartAction, actionsSt[1:])
			}
			if !oneOf(ch.CloseAction, actionsCl) {
				return fmt.Errorf("%s: CloseAction %q: want one of %v", cw, ch.CloseAction, actionsCl[1:])
			}
			if !oneOf(ch.Mode, childModes) {
				return fmt.Errorf("%s: Mode %q: want one of %v", cw, ch.Mode, childModes[1:])
			}
		}
	}
	return nil
}

func (cn *Conn) children() []Child {
	if len(cn.Children) == 0 {
		return []Child{{Name: cn.Name}}
	}
	out := make([]Child, len(cn.Children))
	copy(out, cn.Children)
	for i := range out {
		if out[i].Name == "" {
			out[i].Name = cn.Name
		}
	}
	return out
}

// secs formats a duration for swanctl.conf: whole seconds, rounded up; negative → 0s.
func secs(d time.Duration) string {
	if d < 0 {
		return "0s"
	}
	return fmt.Sprintf("%ds", int64((d+time.Second-1)/time.Second))
}

type confWriter struct {
	b     strings.Builder
	depth int
}

func (w *confWriter) open(name string) {
	w.line(name + " {")
	w.depth++
}

func (w *confWriter) close() {
	w.depth--
	w.line("}")
}

func (w *confWriter) line(s string) {
	w.b.WriteString(strings.Repeat("    ", w.depth))
	w.b.WriteString(s)
	w.b.WriteString("\n")
}

func (w *confWriter) kv(k, v string) {
	if v != "" {
		w.line(k + " = " + v)
	}
}

func (w *confWriter) dur(k string, d time.Duration) {
	if d != 0 {
		w.kv(k, secs(d))
	}
}

func (w *confWriter) extra(s string) {
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			w.line(l)
		}
	}
}

// strongswanConf renders strongswan.conf for an instance living in dir (run dir dir/run).
func (c *CharonConfig) strongswanConf(dir string) string {
	name := c.name()
	w := &confWriter{}
	w.line("# strongswan.conf for charon instance '" + name + "' (generated by meshroot internal/lab)")
	w.open("charon")
	w.line("# explicit plugin list: kernel-libipsec BEFORE kernel-netlink, so SAs and policies go to")
	w.line("# the userspace IPsec stack (TUN ipsec0); kernel-netlink only handles addresses/routes.")
	w.kv("load_modular", "no")
	w.kv("load", "random nonce openssl aesni aes gcm sha1 sha2 hmac kdf pem pkcs1 x509 pubkey gmp curve25519 kernel-libipsec kernel-netlink socket-default vici updown")
	w.kv("install_routes", "no")
	w.kv("install_virtual_ip", "no")
	w.kv("port", fmt.Sprint(orInt(c.Port, 500)))
	w.kv("port_nat_t", fmt.Sprint(orInt(c.PortNATT, 4500)))
	w.kv("retransmit_tries", fmt.Sprint(orInt(c.RetransmitTries, 5)))
	w.kv("retransmit_timeout", fmt.Sprint(orFloat(c.RetransmitTimeout, 2.0)))
	w.kv("retransmit_base", fmt.Sprint(orFloat(c.RetransmitBase, 1.4)))
	w.open("filelog")
	w.open(name)
	w.kv("path", dir+"/charon.log")
	w.kv("time_format", "%b %e %T")
	w.kv("ike_name", "yes")
	w.kv("flush_line", "yes")
	lv := c.Log
	w.kv("default", fmt.Sprint(orLevel(lv.Default, 1)))
	w.kv("ike", fmt.Sprint(orLevel(lv.IKE, 1)))
	w.kv("knl", fmt.Sprint(orLevel(lv.KNL, 1)))
	w.kv("esp", fmt.Sprint(orLevel(lv.ESP, 1)))
	for _, s := range []struct {
		k string
		v int
	}{{"enc", lv.ENC}, {"net", lv.NET}, {"cfg", lv.CFG}, {"chd", lv.CHD}, {"mgr", lv.MGR}, {"lib", lv.LIB}} {
		if s.v != 0 {
			w.kv(s.k, fmt.Sprint(s.v))
		}
	}
	w.close()
	w.close()
	w.open("syslog")
	w.open("daemon")
	w.kv("default", "-1")
	w.close()
	w.close()
	w.open("plugins")
	w.open("vici")
	w.kv("socket", "unix://"+dir+"/run/charon.vici")
	w.close()
	w.open("kernel-libipsec")
	w.kv("allow_peer_ts", "no")
	w.close()
	w.line("# kernel-libipsec installs a route for every outbound policy (0.0.0.0/0 dev ipsec0")
	w.line("# in table 220) whatever install_routes says; with a 0/0 selector that captures all")
	w.line("# forwarded traffic. The rule to table 220 only matches this mark, which nothing sets:")
	w.line("# routing stays route-based (main table: static/BGP routes into ipsec0).")
	w.open("kernel-netlink")
	w.kv("fwmark", "0x4d520000")
	w.close()
	w.close()
	if c.Extra != "" {
		w.extra(c.Extra)
	}
	w.close()
	w.open("swanctl")
	w.kv("socket", "unix://"+dir+"/run/charon.vici")
	w.close()
	return w.b.String()
}

// swanctlConf renders swanctl.conf (connections and PSK secrets).
func (c *CharonConfig) swanctlConf() string {
	w := &confWriter{}
	w.line("# swanctl.conf for charon instance '" + c.name() + "' (generated by meshroot internal/lab)")
	w.open("connections")
	for _, cn := range c.Conns {
		w.open(cn.Name)
		w.kv("version", "2")
		w.kv("local_addrs", strings.Join(cn.LocalAddrs, ","))
		w.kv("remote_addrs", strings.Join(cn.RemoteAddrs, ","))
		w.kv("encap", yesNo(!cn.NoEncap))
		w.kv("mobike", yesNo(cn.Mobike))
		switch {
		case cn.KeyingTries < 0:
			w.kv("keyingtries", "0")
		case cn.KeyingTries > 0:
			w.kv("keyingtries", fmt.Sprint(cn.KeyingTries))
		}
		w.kv("proposals", strings.Join(orList(cn.Proposals, DefaultIKEProposal), ","))
		w.dur("rekey_time", cn.RekeyTime)
		w.dur("over_time", cn.OverTime)
		w.dur("rand_time", cn.RandTime)
		w.dur("reauth_time", cn.ReauthTime)
		w.dur("dpd_delay", cn.DPDDelay)
		w.dur("dpd_timeout", cn.DPDTimeout)
		w.kv("unique", cn.Unique)
		if cn.Extra != "" {
			w.extra(cn.Extra)
		}
		w.open("local-psk")
		w.kv("auth", "psk")
		w.kv("id", cn.localID())
		w.close()
		w.open("remote-psk")
		w.kv("auth", "psk")
		w.kv("id", cn.remoteID())
		w.close()
		w.open("children")
		for _, ch := range cn.children() {
			w.open(ch.Name)
			w.kv("mode", orStr(ch.Mode, "tunnel"))
			w.kv("local_ts", strings.Join(orList(ch.LocalTS, "0.0.0.0/0", "::/0"), ","))
			w.kv("remote_ts", strings.Join(orList(ch.RemoteTS, "0.0.0.0/0", "::/0"), ","))
			w.kv("esp_proposals", strings.Join(orList(ch.ESPProposals, DefaultESPProposal), ","))
			w.dur("life_time", ch.LifeTime)
			w.dur("rekey_time", ch.RekeyTime)
			w.dur("rand_time", ch.RandTime)
			switch {
			case ch.ReplayWindow < 0:
				w.kv("replay_window", "0")
			case ch.ReplayWindow == 0:
				w.kv("replay_window", "1024")
			default:
				w.kv("replay_window", fmt.Sprint(ch.ReplayWindow))
			}
			w.kv("dpd_action", ch.DPDAction)
			w.kv("start_action", ch.StartAction)
			w.kv("close_action", ch.CloseAction)
			if ch.Extra != "" {
				w.extra(ch.Extra)
			}
			w.close()
		}
		w.close()
		w.close()
	}
	w.close()
	w.open("secrets")
	for _, cn := range c.Conns {
		w.open("ike-" + cn.Name)
		w.kv("id-local", cn.localID())
		w.kv("id-remote", cn.remoteID())
		// hex form: no quoting issues whatever the PSK contains
		w.kv("secret", "0x"+hex.EncodeToString([]byte(cn.PSK)))
		w.close()
	}
	w.close()
	return w.b.String()
}

func (cn *Conn) localID() string  { return orStr(cn.LocalID, cn.LocalAddrs[0]) }
func (cn *Conn) remoteID() string { return orStr(cn.RemoteID, cn.RemoteAddrs[0]) }

func (c *CharonConfig) name() string { return orStr(c.Name, "charon") }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orStr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func orInt(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

func orLevel(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

func orFloat(v, def float64) float64 {
	if v == 0 {
		return def
	}
	return v
}

func orList(v []string, def ...string) []string {
	if len(v) == 0 {
		return def
	}
	return v
}
