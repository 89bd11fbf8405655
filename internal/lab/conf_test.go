package lab

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/strongswan/govici/vici"
)

// notesAWS is the shared/notes 'aws' responder connection.
func notesAWS() CharonConfig {
	return CharonConfig{
		Name: "aws",
		Conns: []Conn{{
			Name: "tun1", LocalAddrs: []string{"198.51.100.1"}, RemoteAddrs: []string{"198.51.100.2"},
			PSK: "lab-psk-0123456789abcdef", KeyingTries: 1,
			RekeyTime: 28260 * time.Second, OverTime: 540 * time.Second, RandTime: 540 * time.Second,
			DPDDelay: 10 * time.Second, DPDTimeout: 30 * time.Second,
			Children: []Child{{
				LocalTS: []string{"0.0.0.0/0"}, RemoteTS: []string{"0.0.0.0/0"},
				LifeTime: 3600 * time.Second, RekeyTime: 3060 * time.Second, RandTime: 540 * time.Second,
				DPDAction: "clear", StartAction: "none", CloseAction: "none",
			}},
		}},
	}
}

// settings flattens a strongSwan-style config into "a.b.key = value" lines (comments dropped).
func settings(conf string) []string {
	var out, stack []string
	for _, l := range strings.Split(conf, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "" || strings.HasPrefix(l, "#"):
		case strings.HasSuffix(l, "{"):
			stack = append(stack, strings.TrimSpace(strings.TrimSuffix(l, "{")))
		case l == "}":
			stack = stack[:len(stack)-1]
		default:
			k, v, _ := strings.Cut(l, "=")
			out = append(out, strings.Join(append(append([]string(nil), stack...), strings.TrimSpace(k)), ".")+" = "+strings.TrimSpace(v))
		}
	}
	return out
}

func TestSwanctlConfMatchesNotes(t *testing.T) {
	cfg := notesAWS()
	if err := cfg.validate(); err != nil {
		t.Fatalf("validate() = %v", err)
	}
	got := settings(cfg.swanctlConf())
	want := []string{
		"connections.tun1.version = 2",
		"connections.tun1.local_addrs = 198.51.100.1",
		"connections.tun1.remote_addrs = 198.51.100.2",
		"connections.tun1.encap = yes",
		"connections.tun1.mobike = no",
		"connections.tun1.keyingtries = 1",
		"connections.tun1.proposals = aes256gcm16-prfsha256-modp2048",
		"connections.tun1.rekey_time = 28260s",
		"connections.tun1.over_time = 540s",
		"connections.tun1.rand_time = 540s",
		"connections.tun1.dpd_delay = 10s",
		"connections.tun1.dpd_timeout = 30s",
		"connections.tun1.local-psk.auth = psk",
		"connections.tun1.local-psk.id = 198.51.100.1",
		"connections.tun1.remote-psk.auth = psk",
		"connections.tun1.remote-psk.id = 198.51.100.2",
		"connections.tun1.children.tun1.mode = tunnel",
		"connections.tun1.children.tun1.local_ts = 0.0.0.0/0",
		"connections.tun1.children.tun1.remote_ts = 0.0.0.0/0",
		"connections.tun1.children.tun1.esp_proposals = aes256gcm16-modp2048",
		"connections.tun1.children.tun1.life_time = 3600s",
		"connections.tun1.children.tun1.rekey_time = 3060s",
		"connections.tun1.children.tun1.rand_time = 540s",
		"connections.tun1.children.tun1.replay_window = 1024",
		"connections.tun1.children.tun1.dpd_action = clear",
		"connections.tun1.children.tun1.start_action = none",
		"connections.tun1.children.tun1.close_action = none",
		"secrets.ike-tun1.id-local = 198.51.100.1",
		"secrets.ike-tun1.id-remote = 198.51.100.2",
		"secrets.ike-tun1.secret = 0x6c61622d70736b2d30313233343536373839616263646566",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("swanctlConf() settings mismatch (-want +got):\n%s", diff)
	}
}

func TestStrongswanConf(t *testing.T) {
	cfg := notesAWS()
	cfg.Log = LogLevels{IKE: 4, ENC: 4, NET: -1}
	got := settings(cfg.strongswanConf("/tmp/lab/aws"))
	for _, want := range []string{
		"charon.load_modular = no",
		"charon.load = random nonce openssl aesni aes gcm sha1 sha2 hmac kdf pem pkcs1 x509 pubkey gmp curve25519 kernel-libipsec kernel-netlink socket-default vici updown",
		"charon.install_routes = no",
		"charon.retransmit_tries = 5",
		"charon.retransmit_timeout = 2",
		"charon.retransmit_base = 1.4",
		"charon.filelog.aws.path = /tmp/lab/aws/charon.log",
		"charon.filelog.aws.default = 1",
		"charon.filelog.aws.ike = 4",
		"charon.filelog.aws.enc = 4",
		"charon.filelog.aws.net = -1",
		"charon.plugins.vici.socket = unix:///tmp/lab/aws/run/charon.vici",
		"charon.plugins.kernel-libipsec.allow_peer_ts = no",
		"charon.plugins.kernel-netlink.fwmark = 0x4d520000",
		"swanctl.socket = unix:///tmp/lab/aws/run/charon.vici",
	} {
		found := false
		for _, g := range got {
			found = found || g == want
		}
		if !found {
			t.Errorf("strongswanConf() has no %q; got:\n%s", want, strings.Join(got, "\n"))
		}
	}
	// kernel-libipsec must load before kernel-netlink (notes pitfall 2).
	conf := cfg.strongswanConf("/x")
	if !strings.Contains(conf, "kernel-libipsec kernel-netlink") {
		t.Errorf("strongswanConf() load order: want kernel-libipsec before kernel-netlink")
	}
}

func TestSwanctlConfDefaultsAndOptions(t *testing.T) {
	cfg := CharonConfig{Conns: []Conn{{
		Name: "v6", LocalAddrs: []string{"2001:db8::1"}, RemoteAddrs: []string{"2001:db8::2"},
		LocalID: "cgw.example.com", RemoteID: "@aws.example.com", PSK: `we"ird {psk}` + "\n",
		NoEncap: true, Mobike: true, KeyingTries: -1, RekeyTime: -1,
		Children: []Child{{Name: "c1", ReplayWindow: -1, StartAction: "start"}, {Name: "c2", ReplayWindow: 64, Mode: "transport"}},
	}}}
	if err := cfg.validate(); err != nil {
		t.Fatalf("validate() = %v", err)
	}
	got := strings.Join(settings(cfg.swanctlConf()), "\n") + "\n"
	for _, want := range []string{
		"connections.v6.encap = no\n", "connections.v6.mobike = yes\n", "connections.v6.keyingtries = 0\n",
		"connections.v6.rekey_time = 0s\n",
		"connections.v6.local-psk.id = cgw.example.com\n", "connections.v6.remote-psk.id = @aws.example.com\n",
		"connections.v6.children.c1.local_ts = 0.0.0.0/0,::/0\n", "connections.v6.children.c1.replay_window = 0\n",
		"connections.v6.children.c1.start_action = start\n",
		"connections.v6.children.c2.replay_window = 64\n", "connections.v6.children.c2.mode = transport\n",
		"secrets.ike-v6.secret = 0x776522697264207b70736b7d0a\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("swanctlConf() lacks %q; got:\n%s", want, got)
		}
	}
	if strings.Contains(cfg.swanctlConf(), `we"ird`) || strings.Contains(cfg.swanctlConf(), "psk}") {
		t.Errorf("swanctlConf() contains the PSK in clear")
	}
}

func TestCharonConfigValidate(t *testing.T) {
	ok := func() Conn {
		return Conn{Name: "t", LocalAddrs: []string{"192.0.2.1"}, RemoteAddrs: []string{"192.0.2.2"}, PSK: "k"}
	}
	tests := []struct {
		name string
		mod  func(*CharonConfig)
		want string // substring of the error
	}{
		{"bad name", func(c *CharonConfig) { c.Name = "a b" }, "Name"},
		{"bad tun addr", func(c *CharonConfig) { c.TunAddrs = []string{"169.254.10.1"} }, "TunAddrs"},
		{"conn name", func(c *CharonConfig) { c.Conns[0].Name = "x{" }, "Name"},
		{"duplicate", func(c *CharonConfig) { c.Conns = append(c.Conns, ok()) }, "duplicate"},
		{"no addrs", func(c *CharonConfig) { c.Conns[0].RemoteAddrs = nil }, "RemoteAddrs"},
		{"bad addr", func(c *CharonConfig) { c.Conns[0].LocalAddrs = []string{"host}"} }, "address"},
		{"bad id", func(c *CharonConfig) { c.Conns[0].RemoteID = "a b" }, "ID"},
		{"no psk", func(c *CharonConfig) { c.Conns[0].PSK = "" }, "PSK"},
		{"proposal", func(c *CharonConfig) { c.Conns[0].Proposals = []string{"AES;"} }, "Proposals"},
		{"esp proposal", func(c *CharonConfig) { c.Conns[0].Children = []Child{{ESPProposals: []string{"x y"}}} }, "ESPProposals"},
		{"ts", func(c *CharonConfig) { c.Conns[0].Children = []Child{{LocalTS: []string{"10.0.0.0/33"}}} }, "traffic selector"},
		{"dpd action", func(c *CharonConfig) { c.Conns[0].Children = []Child{{DPDAction: "hold"}} }, "DPDAction"},
		{"start action", func(c *CharonConfig) { c.Conns[0].Children = []Child{{StartAction: "add"}} }, "StartAction"},
		{"close action", func(c *CharonConfig) { c.Conns[0].Children = []Child{{CloseAction: "x"}} }, "CloseAction"},
		{"mode", func(c *CharonConfig) { c.Conns[0].Children = []Child{{Mode: "beet"}} }, "Mode"},
		{"unique", func(c *CharonConfig) { c.Conns[0].Unique = "always" }, "Unique"},
		{"child dup", func(c *CharonConfig) { c.Conns[0].Children = []Child{{Name: "a"}, {Name: "a"}} }, "duplicate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := CharonConfig{Conns: []Conn{ok()}}
			tc.mod(&c)
			err := c.validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("validate() = %v; want an error mentioning %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), c.Conns[0].PSK) && c.Conns[0].PSK != "" && len(c.Conns[0].PSK) > 3 {
				t.Errorf("validate() error %q contains the PSK", err)
			}
		})
	}
	c := CharonConfig{Conns: []Conn{ok()}}
	if err := c.validate(); err != nil {
		t.Errorf("validate(valid) = %v; want nil", err)
	}
}

func TestFRRConf(t *testing.T) {
	cfg := FRRConfig{
		Name: "aws", ASN: 64512, RouterID: "169.254.10.1",
		Neighbors: []BGPNeighbor{
			{Addr: "169.254.10.2", RemoteAS: 65000, SetMED: true, MED: 200, MaxPrefix: 100},
			{Addr: "fd00:a9fe:a::2", RemoteAS: 65000},
			{Addr: "10.0.0.3", RemoteAS: 64512, NextHopSelf: true, Families: []string{"ipv4", "ipv6"}},
		},
		Networks: []string{"10.0.0.0/16", "fd00:a00::/64"},
	}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	got := cfg.frrConf("/d")
	for _, want := range []string{
		"frr defaults traditional\n",
		"log file /d/frr.log informational\n",
		"router bgp 64512\n",
		" bgp router-id 169.254.10.1\n",
		" no bgp ebgp-requires-policy\n",
		" neighbor 169.254.10.2 remote-as 65000\n",
		" neighbor 169.254.10.2 timers 10 30\n",
		" address-family ipv4 unicast\n  network 10.0.0.0/16\n",
		"  neighbor 169.254.10.2 activate\n  neighbor 169.254.10.2 route-map MED-169_254_10_2 out\n  neighbor 169.254.10.2 maximum-prefix 100\n",
		"  no neighbor fd00:a9fe:a::2 activate\n",
		" address-family ipv6 unicast\n  network fd00:a00::/64\n  no neighbor 169.254.10.2 activate\n  neighbor fd00:a9fe:a::2 activate\n",
		"  neighbor 10.0.0.3 activate\n  neighbor 10.0.0.3 next-hop-self\n",
		"route-map MED-169_254_10_2 permit 10\n set metric 200\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("frrConf() lacks %q; got:\n%s", want, got)
		}
	}
	bad := []struct {
		mod  func(*FRRConfig)
		want string
	}{
		{func(c *FRRConfig) { c.ASN = 0 }, "ASN"},
		{func(c *FRRConfig) { c.RouterID = "fd00::1" }, "RouterID"},
		{func(c *FRRConfig) { c.Networks = []string{"10.0.0.0"} }, "Networks"},
		{func(c *FRRConfig) { c.Neighbors[0].Addr = "x" }, "Addr"},
		{func(c *FRRConfig) { c.Neighbors[0].RemoteAS = 0 }, "RemoteAS"},
		{func(c *FRRConfig) { c.Neighbors[0].Families = []string{"vpnv4"} }, "Families"},
		{func(c *FRRConfig) { c.Name = "a/b" }, "Name"},
	}
	for i, b := range bad {
		c := cfg
		c.Neighbors = append([]BGPNeighbor(nil), cfg.Neighbors...)
		b.mod(&c)
		if err := c.validate(); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("case %d: validate() = %v; want an error naming %s", i, err, b.want)
		}
	}
}

func TestParseListSA(t *testing.T) {
	child := vici.NewMessage()
	for _, kv := range [][2]string{
		{"name", "tun1"}, {"uniqueid", "3"}, {"reqid", "1"}, {"state", "INSTALLED"}, {"mode", "TUNNEL"},
		{"protocol", "ESP"}, {"encap", "yes"}, {"spi-in", "c1a2b3c4"}, {"spi-out", "d5e6f708"},
		{"encr-alg", "AES_GCM_16"}, {"encr-keysize", "256"}, {"dh-group", "MODP_2048"},
		{"bytes-in", "18446744073709551615"}, {"packets-in", "7"}, {"bytes-out", "100"}, {"packets-out", "2"},
		{"rekey-time", "3000"}, {"life-time", "3500"}, {"install-time", "5"},
	} {
		if err := child.Set(kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	_ = child.Set("local-ts", []string{"0.0.0.0/0", "::/0"})
	_ = child.Set("remote-ts", []string{"0.0.0.0/0"})
	children := vici.NewMessage()
	_ = children.Set("tun1-3", child)
	ike := vici.NewMessage()
	for _, kv := range [][2]string{
		{"uniqueid", "1"}, {"version", "2"}, {"state", "ESTABLISHED"}, {"local-host", "198.51.100.2"},
		{"local-port", "4500"}, {"local-id", "198.51.100.2"}, {"remote-host", "198.51.100.1"}, {"remote-port", "4500"},
		{"remote-id", "198.51.100.1"}, {"initiator", "yes"}, {"initiator-spi", "6639e35464fbe148"},
		{"responder-spi", "5c547d28cb11341a"}, {"nat-remote", "yes"}, {"encr-alg", "AES_GCM_16"}, {"encr-keysize", "256"},
		{"prf-alg", "PRF_HMAC_SHA2_256"}, {"dh-group", "MODP_2048"}, {"established", "12"}, {"rekey-time", "28000"},
	} {
		_ = ike.Set(kv[0], kv[1])
	}
	_ = ike.Set("child-sas", children)
	m := vici.NewMessage()
	_ = m.Set("tun1", ike)
	got, err := parseListSA(m)
	if err != nil {
		t.Fatal(err)
	}
	want := []IKESA{{
		Name: "tun1", UniqueID: "1", State: "ESTABLISHED", Version: "2", LocalHost: "198.51.100.2", LocalPort: 4500,
		LocalID: "198.51.100.2", RemoteHost: "198.51.100.1", RemotePort: 4500, RemoteID: "198.51.100.1",
		Initiator: true, InitiatorSPI: "6639e35464fbe148", ResponderSPI: "5c547d28cb11341a", NATRemote: true,
		EncrAlg: "AES_GCM_16", EncrKeySize: 256, PRFAlg: "PRF_HMAC_SHA2_256", DHGroup: "MODP_2048",
		Established: 12, RekeyTime: 28000,
		Children: []ChildSA{{
			Name: "tun1", UniqueID: "3", ReqID: "1", State: "INSTALLED", Mode: "TUNNEL", Protocol: "ESP", Encap: true,
			SPIIn: "c1a2b3c4", SPIOut: "d5e6f708", EncrAlg: "AES_GCM_16", EncrKeySize: 256, DHGroup: "MODP_2048",
			BytesIn: 18446744073709551615, PacketsIn: 7, BytesOut: 100, PacketsOut: 2,
			RekeyTime: 3000, LifeTime: 3500, InstallTime: 5,
			LocalTS: []string{"0.0.0.0/0", "::/0"}, RemoteTS: []string{"0.0.0.0/0"},
		}},
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parseListSA() mismatch (-want +got):\n%s", diff)
	}
	_ = ike.Set("local-port", "45OO")
	if _, err := parseListSA(m); err == nil || !strings.Contains(err.Error(), "local-port") {
		t.Errorf("parseListSA(bad port) = %v; want an error naming local-port", err)
	}
}

func TestSocketPathTooLong(t *testing.T) {
	l, err := Open(Options{Dir: t.TempDir() + "/" + strings.Repeat("d", 90)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ns := &NS{Name: "mr-x-000000", short: "x", lab: l}
	cfg := CharonConfig{Conns: []Conn{{Name: "t", LocalAddrs: []string{"192.0.2.1"}, RemoteAddrs: []string{"192.0.2.2"}, PSK: "k"}}}
	if _, err := l.StartCharon(ns, cfg); err == nil || !strings.Contains(err.Error(), "unix sockets") {
		t.Errorf("StartCharon(long dir) = %v; want a socket path length error", err)
	}
	if _, err := l.StartFRR(ns, FRRConfig{ASN: 1, RouterID: "192.0.2.1"}); err == nil {
		t.Errorf("StartFRR(long dir) = nil; want an error")
	}
}
