package lab

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Impairment degrades one interface. The host kernel has no netem qdisc
// (CONFIG_NET_SCH_NETEM is not set), so there is no delay or reordering; loss is done with
// nftables (netdev ingress and egress hooks on the interface, `numgen random` against a
// threshold), programmed over netlink with github.com/google/nftables — no nft binary needed.
type Impairment struct {
	// LossPercent drops this share of packets (0-100, resolution 0.01) in each direction
	// through the interface: incoming (ingress) and outgoing (egress) independently.
	LossPercent float64
	// IKEOnly limits the loss to IKE messages: UDP to port 500, and UDP to port 4500 that starts
	// with the non-ESP marker (RFC 3948). ESP and NAT keepalives pass. Holding IKE while ESP
	// flows is how a test makes two rekey requests cross on the wire deterministically.
	IKEOnly bool
}

// ImpairStats counts packets through an impaired interface since Impair.
type ImpairStats struct {
	InSeen, InDropped   uint64
	OutSeen, OutDropped uint64
}

const lossModulus = 10000 // 0.01 % resolution

func impairTable(dev string) string { return "mrlab_impair_" + strings.ReplaceAll(dev, "-", "_") }

// Impair applies imp to interface dev in the namespace, replacing any earlier impairment of it;
// the zero Impairment removes it. A path is impaired in both directions by impairing one
// interface on it (e.g. a device's uplink veth end).
func (ns *NS) Impair(dev string, imp Impairment) error {
	if math.IsNaN(imp.LossPercent) || imp.LossPercent < 0 || imp.LossPercent > 100 {
		return fmt.Errorf("lab: %s: impair %s: LossPercent %v: want 0-100", ns.Name, dev, imp.LossPercent)
	}
	if _, err := ns.link(dev); err != nil {
		return err
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.handle)))
	if err != nil {
		return fmt.Errorf("lab: %s: nftables: %w", ns.Name, err)
	}
	t := &nftables.Table{Name: impairTable(dev), Family: nftables.TableFamilyNetdev}
	// Delete the old table (ignore "does not exist": flush per operation).
	if tabs, err := c.ListTablesOfFamily(nftables.TableFamilyNetdev); err == nil {
		for _, old := range tabs {
			if old.Name == t.Name {
				c.DelTable(old)
				if err := c.Flush(); err != nil {
					return fmt.Errorf("lab: %s: impair %s: delete old table: %w", ns.Name, dev, err)
				}
			}
		}
	}
	threshold := uint32(math.Round(imp.LossPercent * lossModulus / 100))
	if threshold == 0 {
		return nil
	}
	c.AddTable(t)
	for _, h := range []struct {
		name string
		hook *nftables.ChainHook
	}{{"in", nftables.ChainHookIngress}, {"out", nftables.ChainHookEgress}} {
		ch := c.AddChain(&nftables.Chain{
			Name: h.name, Table: t, Type: nftables.ChainTypeFilter, Hooknum: h.hook,
			Priority: nftables.ChainPriorityFilter, Device: dev,
		})
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{&expr.Counter{}}})
		th := make([]byte, 4)
		binary.BigEndian.PutUint32(th, threshold)
		drop := []expr.Any{
			&expr.Numgen{Register: 1, Modulus: lossModulus, Type: unix.NFT_NG_RANDOM},
			// numgen writes host byte order; cmp lt compares bytes: convert to big endian.
			&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 4, Size: 4},
			&expr.Cmp{Op: expr.CmpOpLt, Register: 1, Data: th},
			&expr.Counter{},
			&expr.Verdict{Kind: expr.VerdictDrop},
		}
		if !imp.IKEOnly {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: drop})
			continue
		}
		for _, match := range ikeMatches() {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append(match, drop...)})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("lab: %s: impair %s (loss %.2f%%): nftables: %w", ns.Name, dev, imp.LossPercent, err)
	}
	return nil
}

// ImpairStats reads the packet counters of an impaired interface.
func (ns *NS) ImpairStats(dev string) (ImpairStats, error) {
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.handle)))
	if err != nil {
		return ImpairStats{}, fmt.Errorf("lab: %s: nftables: %w", ns.Name, err)
	}
	t := &nftables.Table{Name: impairTable(dev), Family: nftables.TableFamilyNetdev}
	var s ImpairStats
	for _, h := range []struct {
		name          string
		seen, dropped *uint64
	}{{"in", &s.InSeen, &s.InDropped}, {"out", &s.OutSeen, &s.OutDropped}} {
		rules, err := c.GetRules(t, &nftables.Chain{Name: h.name, Table: t})
		if err != nil {
			return ImpairStats{}, fmt.Errorf("lab: %s: impair stats %s: %w", ns.Name, dev, err)
		}
		if len(rules) < 2 {
			return ImpairStats{}, fmt.Errorf("lab: %s: impair stats %s: chain %s has %d rules; want a counter and drop rules", ns.Name, dev, h.name, len(rules))
		}
		for i, r := range rules {
			for _, e := range r.Exprs {
				if ctr, ok := e.(*expr.Counter); ok {
					if i == 0 {
						*h.seen = ctr.Packets
					} else {
						*h.dropped += ctr.Packets
					}
				}
			}
		}
	}
	return s, nil
}

// ikeMatches are the expressions selecting IKE messages, one list per rule: UDP to port 500;
// UDP to port 4500 whose first four payload bytes are zero (the non-ESP marker).
func ikeMatches() [][]expr.Any {
	udp := func(port uint16) []expr.Any {
		p := make([]byte, 2)
		binary.BigEndian.PutUint16(p, port)
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p},
		}
	}
	marker := append(udp(4500),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 8, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 0, 0, 0}},
	)
	return [][]expr.Any{udp(500), marker}
}
