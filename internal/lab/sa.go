package lab

import (
	"fmt"
	"strconv"

	"github.com/strongswan/govici/vici"
)

// IKESA is one IKE_SA as charon reports it (vici list-sas).
type IKESA struct {
	Name         string // connection name
	UniqueID     string
	State        string // CREATED, CONNECTING, ESTABLISHED, REKEYING, REKEYED, DELETING, ...
	Version      string
	LocalHost    string
	LocalPort    int
	LocalID      string
	RemoteHost   string
	RemotePort   int
	RemoteID     string
	Initiator    bool   // this side initiated the IKE_SA
	InitiatorSPI string // hex
	ResponderSPI string // hex
	NATLocal     bool
	NATRemote    bool
	NATFake      bool // encap=yes faked a NAT
	EncrAlg      string
	EncrKeySize  int
	IntegAlg     string
	PRFAlg       string
	DHGroup      string
	Established  int // seconds since establishment
	RekeyTime    int // seconds until rekey
	Children     []ChildSA
}

// ChildSA is one CHILD_SA of an IKE_SA.
type ChildSA struct {
	Name        string
	UniqueID    string
	ReqID       string
	State       string // INSTALLED, REKEYING, REKEYED, DELETING, ...
	Mode        string // TUNNEL, TRANSPORT
	Protocol    string // ESP
	Encap       bool   // UDP-encapsulated
	SPIIn       string // hex
	SPIOut      string // hex
	EncrAlg     string
	EncrKeySize int
	IntegAlg    string
	DHGroup     string // PFS group of the last rekey/creation
	BytesIn     uint64
	PacketsIn   uint64
	BytesOut    uint64
	PacketsOut  uint64
	RekeyTime   int // seconds until rekey
	LifeTime    int // seconds until expiry
	InstallTime int // seconds since install
	LocalTS     []string
	RemoteTS    []string
}

// parseListSA converts one list-sa event (keys: IKE_SA names) into IKESAs. Unknown keys are
// ignored; malformed numbers are errors naming the field.
func parseListSA(m *vici.Message) ([]IKESA, error) {
	if m == nil {
		return nil, nil
	}
	var out []IKESA
	for _, name := range m.Keys() {
		sm, ok := m.Get(name).(*vici.Message)
		if !ok {
			continue // e.g. a command response's "success"
		}
		g := getter{m: sm, where: "IKE_SA " + name}
		sa := IKESA{
			Name:         name,
			UniqueID:     g.str("uniqueid"),
			State:        g.str("state"),
			Version:      g.str("version"),
			LocalHost:    g.str("local-host"),
			LocalPort:    g.num("local-port"),
			LocalID:      g.str("local-id"),
			RemoteHost:   g.str("remote-host"),
			RemotePort:   g.num("remote-port"),
			RemoteID:     g.str("remote-id"),
			Initiator:    g.str("initiator") == "yes",
			InitiatorSPI: g.str("initiator-spi"),
			ResponderSPI: g.str("responder-spi"),
			NATLocal:     g.str("nat-local") == "yes",
			NATRemote:    g.str("nat-remote") == "yes",
			NATFake:      g.str("nat-fake") == "yes",
			EncrAlg:      g.str("encr-alg"),
			EncrKeySize:  g.num("encr-keysize"),
			IntegAlg:     g.str("integ-alg"),
			PRFAlg:       g.str("prf-alg"),
			DHGroup:      g.str("dh-group"),
			Established:  g.num("established"),
			RekeyTime:    g.num("rekey-time"),
		}
		if cm, ok := sm.Get("child-sas").(*vici.Message); ok {
			for _, key := range cm.Keys() {
				chm, ok := cm.Get(key).(*vici.Message)
				if !ok {
					continue
				}
				cg := getter{m: chm, where: "IKE_SA " + name + " CHILD_SA " + key}
				sa.Children = append(sa.Children, ChildSA{
					Name:        cg.str("name"),
					UniqueID:    cg.str("uniqueid"),
					ReqID:       cg.str("reqid"),
					State:       cg.str("state"),
					Mode:        cg.str("mode"),
					Protocol:    cg.str("protocol"),
					Encap:       cg.str("encap") == "yes",
					SPIIn:       cg.str("spi-in"),
					SPIOut:      cg.str("spi-out"),
					EncrAlg:     cg.str("encr-alg"),
					EncrKeySize: cg.num("encr-keysize"),
					IntegAlg:    cg.str("integ-alg"),
					DHGroup:     cg.str("dh-group"),
					BytesIn:     cg.u64("bytes-in"),
					PacketsIn:   cg.u64("packets-in"),
					BytesOut:    cg.u64("bytes-out"),
					PacketsOut:  cg.u64("packets-out"),
					RekeyTime:   cg.num("rekey-time"),
					LifeTime:    cg.num("life-time"),
					InstallTime: cg.num("install-time"),
					LocalTS:     cg.list("local-ts"),
					RemoteTS:    cg.list("remote-ts"),
				})
				if cg.err != nil {
					return nil, cg.err
				}
			}
		}
		if g.err != nil {
			return nil, g.err
		}
		out = append(out, sa)
	}
	return out, nil
}

// getter reads typed fields from a vici message, remembering the first error.
type getter struct {
	m     *vici.Message
	where string
	err   error
}

func (g *getter) str(k string) string {
	s, _ := g.m.Get(k).(string)
	return s
}

func (g *getter) list(k string) []string {
	switch v := g.m.Get(k).(type) {
	case []string:
		return append([]string(nil), v...)
	case string:
		return []string{v}
	}
	return nil
}

func (g *getter) num(k string) int {
	s := g.str(k)
	if s == "" {
		return 0
	}
	n, err := strconv.Atoi(s)
	if err != nil && g.err == nil {
		g.err = fmt.Errorf("lab: vici %s: field %s=%q: %w", g.where, k, s, err)
	}
	return n
}

func (g *getter) u64(k string) uint64 {
	s := g.str(k)
	if s == "" {
		return 0
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil && g.err == nil {
		g.err = fmt.Errorf("lab: vici %s: field %s=%q: %w", g.where, k, s, err)
	}
	return n
}

// Child returns the SA's CHILD_SA named name (ok false if absent).
func (sa IKESA) Child(name string) (ChildSA, bool) {
	for _, c := range sa.Children {
		if c.Name == name {
			return c, true
		}
	}
	return ChildSA{}, false
}
