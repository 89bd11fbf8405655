package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Kernel programs rulesets. Apply replaces the table atomically (the old rules stay in force
// when it fails); Delete removes it; Counters returns the packet counts of the counting rules
// by comment.
type Kernel interface {
	Apply(rs Ruleset) error
	// UpdateChain replaces the rules of one regular chain of an applied table in one batch.
	UpdateChain(table string, c Chain) error
	Delete(table string) error
	Counters(table string) (map[string]uint64, error)
}

// Netlink is the real Kernel (nf_tables over netlink). NetNSFd, when not 0, programs the
// network namespace of that file descriptor instead of the caller's (lab tests).
type Netlink struct {
	NetNSFd int
}

func (n Netlink) conn() (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if n.NetNSFd != 0 {
		opts = append(opts, nftables.WithNetNSFd(n.NetNSFd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return c, nil
}

var hooks = map[string]*nftables.ChainHook{
	"prerouting": nftables.ChainHookPrerouting, "input": nftables.ChainHookInput,
	"forward": nftables.ChainHookForward, "output": nftables.ChainHookOutput,
	"postrouting": nftables.ChainHookPostrouting,
}

// Apply replaces the table with rs in one netlink batch: the kernel applies all of it or none.
func (n Netlink) Apply(rs Ruleset) error {
	if err := rs.Validate(); err != nil {
		return err
	}
	c, err := n.conn()
	if err != nil {
		return err
	}
	t := &nftables.Table{Name: rs.Table, Family: nftables.TableFamilyINet}
	// add + delete + add: the delete cannot fail on a missing table, and the batch is atomic.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	// Regular chains first: the base chains' jumps refer to them.
	chains := map[string]*nftables.Chain{}
	for _, ch := range rs.Chains {
		if ch.Hook == "" {
			chains[ch.Name] = c.AddChain(&nftables.Chain{Name: ch.Name, Table: t})
		}
	}
	for _, ch := range rs.Chains {
		if ch.Hook == "" {
			continue
		}
		typ := nftables.ChainTypeFilter
		if ch.Type == "nat" {
			typ = nftables.ChainTypeNAT
		}
		pol := nftables.ChainPolicyAccept
		if ch.Policy == "drop" {
			pol = nftables.ChainPolicyDrop
		}
		prio := nftables.ChainPriority(ch.Priority)
		chains[ch.Name] = c.AddChain(&nftables.Chain{Name: ch.Name, Table: t, Type: typ, Hooknum: hooks[ch.Hook],
			Priority: &prio, Policy: &pol})
	}
	for _, ch := range rs.Chains {
		addRules(c, t, chains[ch.Name], ch.Rules)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: apply table %s: %w", rs.Table, err)
	}
	return nil
}

func addRules(c *nftables.Conn, t *nftables.Table, ch *nftables.Chain, rules []Rule) {
	for _, r := range rules {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: Exprs(r),
			UserData: userdata.AppendString(nil, userdata.TypeComment, r.Comment)})
	}
}

// UpdateChain flushes a regular chain and adds its new rules in one batch: packets see the old
// rules or the new ones.
func (n Netlink) UpdateChain(table string, ch Chain) error {
	if ch.Hook != "" {
		return fmt.Errorf("nftables: %s is a base chain; Apply the table instead", ch.Name)
	}
	if err := ch.validate(); err != nil {
		return err
	}
	c, err := n.conn()
	if err != nil {
		return err
	}
	t := &nftables.Table{Name: table, Family: nftables.TableFamilyINet}
	nc := &nftables.Chain{Name: ch.Name, Table: t}
	c.FlushChain(nc)
	addRules(c, t, nc, ch.Rules)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: update chain %s: %w", ch.Name, err)
	}
	return nil
}

// Delete removes the table (no error when it is not there).
func (n Netlink) Delete(table string) error {
	c, err := n.conn()
	if err != nil {
		return err
	}
	t := &nftables.Table{Name: table, Family: nftables.TableFamilyINet}
	c.AddTable(t)
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: delete table %s: %w", table, err)
	}
	return nil
}

// Counters reads the packet counts of every rule with a counter, keyed by comment.
func (n Netlink) Counters(table string) (map[string]uint64, error) {
	c, err := n.conn()
	if err != nil {
		return nil, err
	}
	t := &nftables.Table{Name: table, Family: nftables.TableFamilyINet}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("nftables: list chains: %w", err)
	}
	out := map[string]uint64{}
	for _, ch := range chains {
		if ch.Table.Name != table {
			continue
		}
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return nil, fmt.Errorf("nftables: rules of %s: %w", ch.Name, err)
		}
		for _, r := range rules {
			com, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			for _, e := range r.Exprs {
				if ctr, ok := e.(*expr.Counter); ok {
					out[com] += ctr.Packets
				}
			}
		}
	}
	return out, nil
}

// ifname is an interface name as the kernel compares it: IFNAMSIZ bytes, NUL padded.
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

func cmpEq(data []byte) *expr.Cmp { return &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data} }

// Exprs translates a rule into nftables expressions (the rule must be valid).
func Exprs(r Rule) []expr.Any {
	var e []expr.Any
	if r.IIF != "" || r.IIFPrefix != "" {
		e = append(e, &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1})
		if r.IIF != "" {
			e = append(e, cmpEq(ifname(r.IIF)))
		} else {
			e = append(e, cmpEq([]byte(r.IIFPrefix)))
		}
	}
	if r.OIF != "" || r.OIFPrefix != "" {
		e = append(e, &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1})
		if r.OIF != "" {
			e = append(e, cmpEq(ifname(r.OIF)))
		} else {
			e = append(e, cmpEq([]byte(r.OIFPrefix)))
		}
	}
	proto := r.NFProto
	if r.SAddr.IsValid() {
		proto = "ipv4"
		if !r.SAddr.Unmap().Is4() {
			proto = "ipv6"
		}
	}
	if proto != "" {
		p := byte(unix.NFPROTO_IPV4)
		if proto == "ipv6" {
			p = unix.NFPROTO_IPV6
		}
		e = append(e, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, cmpEq([]byte{p}))
	}
	if len(r.CtState) > 0 {
		var bits uint32
		for _, s := range r.CtState {
			bits |= ctStates[s]
		}
		e = append(e,
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: binaryutil.NativeEndian.PutUint32(0)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
		)
	}
	if r.SAddr.IsValid() {
		a := r.SAddr.Unmap()
		if a.Is4() {
			b := a.As4()
			e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}, cmpEq(b[:]))
		} else {
			b := a.As16()
			e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16}, cmpEq(b[:]))
		}
	}
	if r.L4Proto != "" {
		p := map[string]byte{"tcp": unix.IPPROTO_TCP, "udp": unix.IPPROTO_UDP, "icmp": unix.IPPROTO_ICMP, "icmpv6": unix.IPPROTO_ICMPV6}[r.L4Proto]
		e = append(e, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, cmpEq([]byte{p}))
	}
	port := func(off uint32, v uint16) {
		b := make([]byte, 2)
		binary.BigEndian.PutUint16(b, v)
		e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2}, cmpEq(b))
	}
	if r.SPort != 0 {
		port(0, r.SPort)
	}
	if r.DPort != 0 {
		port(2, r.DPort)
	}
	if r.HasICMPv6Type {
		e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1}, cmpEq([]byte{r.ICMPv6Type}))
	}
	if r.Counter {
		e = append(e, &expr.Counter{})
	}
	switch r.Verdict {
	case "accept":
		e = append(e, &expr.Verdict{Kind: expr.VerdictAccept})
	case "drop":
		e = append(e, &expr.Verdict{Kind: expr.VerdictDrop})
	case "masquerade":
		e = append(e, &expr.Masq{})
	case "jump":
		e = append(e, &expr.Verdict{Kind: expr.VerdictJump, Chain: r.Target})
	}
	return e
}

// Fake is an in-memory Kernel for unit tests: it keeps the last applied ruleset per table.
type Fake struct {
	mu      sync.Mutex
	tables  map[string]Ruleset
	applies int
	updates int
	// Fail makes Apply fail (and leave the table as it was).
	Fail error
	// Packets are what Counters returns.
	Packets map[string]uint64
}

// Apply records rs.
func (f *Fake) Apply(rs Ruleset) error {
	if err := rs.Validate(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Fail != nil {
		return f.Fail
	}
	if f.tables == nil {
		f.tables = map[string]Ruleset{}
	}
	f.tables[rs.Table] = rs
	f.applies++
	return nil
}

// UpdateChain replaces a regular chain of an applied table.
func (f *Fake) UpdateChain(table string, c Chain) error {
	if err := c.validate(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Fail != nil {
		return f.Fail
	}
	rs, ok := f.tables[table]
	if !ok {
		return errors.New("fake nftables: no such table")
	}
	for i, old := range rs.Chains {
		if old.Name == c.Name && old.Hook == "" {
			chains := slices.Clone(rs.Chains)
			chains[i] = c
			rs.Chains = chains
			f.tables[table] = rs
			f.updates++
			return nil
		}
	}
	return fmt.Errorf("fake nftables: no regular chain %s", c.Name)
}

// Updates is how many UpdateChain calls succeeded.
func (f *Fake) Updates() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.updates
}

// Delete forgets the table.
func (f *Fake) Delete(table string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.tables, table)
	return nil
}

// Counters returns Packets.
func (f *Fake) Counters(table string) (map[string]uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.tables[table]; !ok {
		return nil, errors.New("fake nftables: no such table")
	}
	out := map[string]uint64{}
	for k, v := range f.Packets {
		out[k] = v
	}
	return out, nil
}

// Table returns the ruleset in force for a table and how many applies happened.
func (f *Fake) Table(name string) (Ruleset, int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rs, ok := f.tables[name]
	return rs, f.applies, ok
}
