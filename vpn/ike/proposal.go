package ike

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Algorithm is one transform choice: its type, IANA transform ID and, for ENCR, the key length in
// bits.
type Algorithm struct {
	Type   TransformType
	ID     uint16
	KeyLen uint16
}

// Proposal is a proposal in strongSwan's notation ("aes128-sha1-modp2048",
// "aes256gcm16-prfsha256-ecp384"): for each transform type, the acceptable algorithms in the
// order written. Parse with ParseProposal; String gives the canonical notation.
type Proposal struct {
	Algs []Algorithm
}

// keyword table: canonical names first (String uses the first name of each algorithm).
var keywords = []struct {
	name string
	alg  Algorithm
}{
	{"aes128", Algorithm{TransformENCR, EncrAESCBC, 128}},
	{"aes192", Algorithm{TransformENCR, EncrAESCBC, 192}},
	{"aes256", Algorithm{TransformENCR, EncrAESCBC, 256}},
	{"aes", Algorithm{TransformENCR, EncrAESCBC, 128}},
	{"aes128gcm16", Algorithm{TransformENCR, EncrAESGCM16, 128}},
	{"aes192gcm16", Algorithm{TransformENCR, EncrAESGCM16, 192}},
	{"aes256gcm16", Algorithm{TransformENCR, EncrAESGCM16, 256}},
	{"aes128gcm128", Algorithm{TransformENCR, EncrAESGCM16, 128}},
	{"aes192gcm128", Algorithm{TransformENCR, EncrAESGCM16, 192}},
	{"aes256gcm128", Algorithm{TransformENCR, EncrAESGCM16, 256}},
	{"aes128gcm", Algorithm{TransformENCR, EncrAESGCM16, 128}},
	{"aes192gcm", Algorithm{TransformENCR, EncrAESGCM16, 192}},
	{"aes256gcm", Algorithm{TransformENCR, EncrAESGCM16, 256}},
	{"aes128gcm12", Algorithm{TransformENCR, EncrAESGCM12, 128}},
	{"aes192gcm12", Algorithm{TransformENCR, EncrAESGCM12, 192}},
	{"aes256gcm12", Algorithm{TransformENCR, EncrAESGCM12, 256}},
	{"aes128gcm96", Algorithm{TransformENCR, EncrAESGCM12, 128}},
	{"aes192gcm96", Algorithm{TransformENCR, EncrAESGCM12, 192}},
	{"aes256gcm96", Algorithm{TransformENCR, EncrAESGCM12, 256}},
	{"sha1", Algorithm{TransformINTEG, IntegHMACSHA196, 0}},
	{"sha", Algorithm{TransformINTEG, IntegHMACSHA196, 0}},
	{"sha256", Algorithm{TransformINTEG, IntegHMACSHA2256128, 0}},
	{"sha2_256", Algorithm{TransformINTEG, IntegHMACSHA2256128, 0}},
	{"sha384", Algorithm{TransformINTEG, IntegHMACSHA2384192, 0}},
	{"sha2_384", Algorithm{TransformINTEG, IntegHMACSHA2384192, 0}},
	{"sha512", Algorithm{TransformINTEG, IntegHMACSHA2512256, 0}},
	{"sha2_512", Algorithm{TransformINTEG, IntegHMACSHA2512256, 0}},
	{"prfsha1", Algorithm{TransformPRF, PRFHMACSHA1, 0}},
	{"prfsha256", Algorithm{TransformPRF, PRFHMACSHA2256, 0}},
	{"prfsha384", Algorithm{TransformPRF, PRFHMACSHA2384, 0}},
	{"prfsha512", Algorithm{TransformPRF, PRFHMACSHA2512, 0}},
	{"modp1024", Algorithm{TransformDH, DHModp1024, 0}},
	{"modp1536", Algorithm{TransformDH, DHModp1536, 0}},
	{"modp2048", Algorithm{TransformDH, DHModp2048, 0}},
	{"modp3072", Algorithm{TransformDH, DHModp3072, 0}},
	{"modp4096", Algorithm{TransformDH, DHModp4096, 0}},
	{"modp6144", Algorithm{TransformDH, DHModp6144, 0}},
	{"modp8192", Algorithm{TransformDH, DHModp8192, 0}},
	{"ecp256", Algorithm{TransformDH, DHECP256, 0}},
	{"ecp384", Algorithm{TransformDH, DHECP384, 0}},
	{"ecp521", Algorithm{TransformDH, DHECP521, 0}},
	{"modp1024s160", Algorithm{TransformDH, DHModp1024s160, 0}},
	{"modp2048s224", Algorithm{TransformDH, DHModp2048s224, 0}},
	{"modp2048s256", Algorithm{TransformDH, DHModp2048s256, 0}},
	{"curve25519", Algorithm{TransformDH, DHCurve25519, 0}},
	{"x25519", Algorithm{TransformDH, DHCurve25519, 0}},
	{"noesn", Algorithm{TransformESN, ESNNo, 0}},
	{"esn", Algorithm{TransformESN, ESNYes, 0}},
}

// String is the algorithm's keyword ("aes256gcm16", "prfsha256", "modp2048"), or a numeric form
// for algorithms this package does not know ("encr23", "dh99").
func (a Algorithm) String() string {
	for _, k := range keywords {
		if k.alg == a {
			return k.name
		}
	}
	// integrity NONE and DH NONE
	if (a.Type == TransformINTEG || a.Type == TransformDH) && a.ID == 0 {
		return "none"
	}
	prefix := map[TransformType]string{TransformENCR: "encr", TransformPRF: "prf", TransformINTEG: "integ", TransformDH: "dh", TransformESN: "esn"}[a.Type]
	if prefix == "" {
		prefix = fmt.Sprintf("t%d-", a.Type)
	}
	s := fmt.Sprintf("%s%d", prefix, a.ID)
	if a.KeyLen != 0 {
		s += fmt.Sprintf("_%d", a.KeyLen)
	}
	return s
}

// isAEAD reports whether an ENCR algorithm is an AEAD (GCM).
func (a Algorithm) isAEAD() bool {
	return a.Type == TransformENCR && (a.ID == EncrAESGCM16 || a.ID == EncrAESGCM12 || a.ID == EncrAESGCM8)
}

// ParseProposal parses one proposal in strongSwan's notation.
func ParseProposal(s string) (Proposal, error) {
	s = strings.TrimSpace(strings.ToLower(s))
	if s == "" {
		return Proposal{}, errors.New("empty proposal")
	}
	var p Proposal
	for _, tok := range strings.Split(s, "-") {
		found := false
		for _, k := range keywords {
			if k.name == tok {
				if !slices.Contains(p.Algs, k.alg) {
					p.Algs = append(p.Algs, k.alg)
				}
				found = true
				break
			}
		}
		if !found {
			return Proposal{}, fmt.Errorf("proposal %q: unknown algorithm %q", s, tok)
		}
	}
	return p, nil
}

// ParseProposals parses a comma-separated list of proposals.
func ParseProposals(s string) ([]Proposal, error) {
	var ps []Proposal
	for _, f := range strings.Split(s, ",") {
		p, err := ParseProposal(f)
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// MustParseProposals is ParseProposals for constants; it panics on error.
func MustParseProposals(s string) []Proposal {
	ps, err := ParseProposals(s)
	if err != nil {
		panic(err)
	}
	return ps
}

// String formats the proposal canonically: encryption, integrity, PRF, DH, ESN.
func (p Proposal) String() string {
	var parts []string
	for _, t := range []TransformType{TransformENCR, TransformINTEG, TransformPRF, TransformDH, TransformESN} {
		for _, a := range p.Algs {
			if a.Type == t && !(t == TransformESN && a.ID == ESNNo && len(p.of(TransformESN)) == 1) {
				parts = append(parts, a.String())
			}
		}
	}
	return strings.Join(parts, "-")
}

// MarshalText implements encoding.TextMarshaler (the strongSwan notation).
func (p Proposal) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *Proposal) UnmarshalText(b []byte) error {
	q, err := ParseProposal(string(b))
	if err != nil {
		return err
	}
	*p = q
	return nil
}

func (p Proposal) of(t TransformType) []Algorithm {
	var r []Algorithm
	for _, a := range p.Algs {
		if a.Type == t {
			r = append(r, a)
		}
	}
	return r
}

// normalize checks a proposal for protocol proto and returns it completed the way strongSwan
// completes it: an IKE proposal without PRF gets the PRF matching each integrity algorithm, an
// ESP proposal without ESN gets "noesn".
func (p Proposal) normalize(proto ProtocolID) (Proposal, error) {
	encr := p.of(TransformENCR)
	integ := p.of(TransformINTEG)
	prf := p.of(TransformPRF)
	dh := p.of(TransformDH)
	esn := p.of(TransformESN)
	if len(encr) == 0 {
		return p, fmt.Errorf("proposal %q: no encryption algorithm", p)
	}
	aead := encr[0].isAEAD()
	for _, e := range encr[1:] {
		if e.isAEAD() != aead {
			return p, fmt.Errorf("proposal %q: AEAD and non-AEAD encryption must be in separate proposals", p)
		}
	}
	if aead && len(integ) > 0 {
		return p, fmt.Errorf("proposal %q: an AEAD proposal takes no integrity algorithm", p)
	}
	if !aead && len(integ) == 0 {
		return p, fmt.Errorf("proposal %q: no integrity algorithm", p)
	}
	q := Proposal{Algs: slices.Clone(p.Algs)}
	switch proto {
	case ProtoIKE:
		if len(esn) > 0 {
			return p, fmt.Errorf("proposal %q: ESN is not an IKE transform", p)
		}
		if len(dh) == 0 {
			return p, fmt.Errorf("proposal %q: an IKE proposal needs a DH group", p)
		}
		if len(prf) == 0 {
			if aead {
				return p, fmt.Errorf("proposal %q: an AEAD IKE proposal needs a PRF (e.g. prfsha256)", p)
			}
			for _, i := range integ {
				id := map[uint16]uint16{IntegHMACSHA196: PRFHMACSHA1, IntegHMACSHA2256128: PRFHMACSHA2256,
					IntegHMACSHA2384192: PRFHMACSHA2384, IntegHMACSHA2512256: PRFHMACSHA2512}[i.ID]
				a := Algorithm{Type: TransformPRF, ID: id}
				if !slices.Contains(q.Algs, a) {
					q.Algs = append(q.Algs, a)
				}
			}
		}
	case ProtoESP:
		if len(prf) > 0 {
			return p, fmt.Errorf("proposal %q: a PRF is not an ESP transform", p)
		}
		if len(esn) == 0 {
			q.Algs = append(q.Algs, Algorithm{Type: TransformESN, ID: ESNNo})
		}
	}
	for _, a := range q.Algs {
		if err := supported(a); err != nil {
			return p, fmt.Errorf("proposal %q: %w", p, err)
		}
	}
	return q, nil
}

func supported(a Algorithm) error {
	ok := false
	switch a.Type {
	case TransformENCR:
		_, ok = encrByID(a.ID, a.KeyLen)
	case TransformINTEG:
		_, ok = integByID(a.ID)
	case TransformPRF:
		_, ok = prfByID(a.ID)
	case TransformDH:
		_, ok = dhByID(a.ID)
	case TransformESN:
		ok = a.ID == ESNNo || a.ID == ESNYes
	}
	if !ok {
		return fmt.Errorf("algorithm %s is not supported", a)
	}
	return nil
}

// toSA builds the wire proposal. withDH false drops DH transforms (the first CHILD SA in
// IKE_AUTH, RFC 7296 §1.2).
func (p Proposal) toSA(num uint8, proto ProtocolID, spi []byte, withDH bool) SAProposal {
	sp := SAProposal{Num: num, Protocol: proto, SPI: spi}
	for _, t := range []TransformType{TransformENCR, TransformINTEG, TransformPRF, TransformDH, TransformESN} {
		if t == TransformDH && !withDH {
			continue
		}
		for _, a := range p.Algs {
			if a.Type == t {
				sp.Transforms = append(sp.Transforms, Transform{Type: a.Type, ID: a.ID, KeyLen: a.KeyLen})
			}
		}
	}
	return sp
}

// FormatSAProposal writes a wire proposal in the same notation as Proposal.String.
func formatSAProposal(sp SAProposal) string {
	var p Proposal
	for _, t := range sp.Transforms {
		p.Algs = append(p.Algs, Algorithm{Type: t.Type, ID: t.ID, KeyLen: t.KeyLen})
	}
	return p.String()
}

func formatSAProposals(sps []SAProposal) string {
	var s []string
	for _, sp := range sps {
		s = append(s, formatSAProposal(sp))
	}
	return strings.Join(s, ", ")
}

func formatProposals(ps []Proposal) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	return strings.Join(s, ", ")
}

// algLess orders algorithms "lowest first": by IANA transform ID, then by key length. For the
// AWS option lists this is exactly their documented order (AES128 < AES256 < AES128-GCM-16 <
// AES256-GCM-16; SHA1 < SHA2-256 < SHA2-384 < SHA2-512; DH group 2 < 5 < 14 < ... < 24 < 31).
func algCmp(a, b Algorithm) int {
	if c := cmp.Compare(a.ID, b.ID); c != 0 {
		return c
	}
	return cmp.Compare(a.KeyLen, b.KeyLen)
}

// selection is the outcome of choosing transforms.
type selection struct {
	prop SAProposal // one transform per type, Num and Protocol of the peer's proposal, SPI of the peer
	key  []Algorithm
}

// selectOrder is the order in which transform types rank candidate selections.
var selectOrder = []TransformType{TransformENCR, TransformPRF, TransformINTEG, TransformDH, TransformESN}

// selectProposal chooses, as responder, transforms both sides allow, the way AWS endpoints do:
// for each transform type the LOWEST allowed value (algCmp) among what both sides allow,
// whatever the order of the initiator's offer. Each candidate combines one of the peer's
// proposals with one of ours; the candidate whose (ENCR, PRF, INTEG, DH, ESN) is lowest wins.
// stripDH ignores DH transforms on both sides (the CHILD SA of IKE_AUTH). prefer, when it is
// acceptable, wins instead (rekeys keep the SA's algorithms, RFC 7296 §2.8).
func selectProposal(ours []Proposal, theirs []SAProposal, proto ProtocolID, stripDH bool, prefer []Algorithm) (selection, bool) {
	var best *selection
	for _, pp := range theirs {
		if pp.Protocol != proto {
			continue
		}
		for _, op := range ours {
			c, ok := intersect(op, pp, proto, stripDH, prefer)
			if !ok {
				continue
			}
			if prefer != nil && slices.Equal(c.key, prefer) {
				return c, true
			}
			if best == nil || slices.CompareFunc(c.key, best.key, algCmp) < 0 {
				cc := c
				best = &cc
			}
		}
	}
	if best == nil {
		return selection{}, false
	}
	return *best, true
}

// intersect computes the lowest common transform per type of our proposal op and the peer's pp.
// When prefer's algorithm of a type is common, it is taken instead of the lowest.
func intersect(op Proposal, pp SAProposal, proto ProtocolID, stripDH bool, prefer []Algorithm) (selection, bool) {
	peer := map[TransformType][]Algorithm{}
	for _, t := range pp.Transforms {
		if t.Unknown {
			continue
		}
		peer[t.Type] = append(peer[t.Type], Algorithm{Type: t.Type, ID: t.ID, KeyLen: t.KeyLen})
	}
	sel := selection{prop: SAProposal{Num: pp.Num, Protocol: pp.Protocol, SPI: pp.SPI}}
	pick := func(t TransformType, mine, theirs []Algorithm) (Algorithm, bool) {
		var common []Algorithm
		for _, m := range mine {
			if slices.Contains(theirs, m) {
				common = append(common, m)
			}
		}
		if len(common) == 0 {
			return Algorithm{}, false
		}
		for _, pa := range prefer {
			if pa.Type == t && slices.Contains(common, pa) {
				return pa, true
			}
		}
		return slices.MinFunc(common, algCmp), true
	}
	// peer values of "NONE" mean "optional" for INTEG (AEAD) and DH (no PFS)
	hasNone := func(t TransformType) bool {
		return slices.Contains(peer[t], Algorithm{Type: t, ID: 0})
	}
	for _, t := range selectOrder {
		mine := op.of(t)
		theirs := peer[t]
		switch t {
		case TransformPRF:
			if proto != ProtoIKE {
				if len(theirs) > 0 {
					return sel, false
				}
				continue
			}
		case TransformINTEG:
			if len(mine) == 0 { // AEAD
				if len(theirs) > 0 && !hasNone(t) {
					return sel, false
				}
				continue
			}
		case TransformDH:
			if stripDH {
				continue
			}
			if len(mine) == 0 {
				if len(theirs) > 0 && !hasNone(t) {
					return sel, false
				}
				continue
			}
		case TransformESN:
			if proto != ProtoESP {
				if len(theirs) > 0 {
					return sel, false
				}
				continue
			}
			if len(theirs) == 0 {
				theirs = []Algorithm{{Type: TransformESN, ID: ESNNo}}
			}
		}
		a, ok := pick(t, mine, theirs)
		if !ok {
			return sel, false
		}
		sel.key = append(sel.key, a)
		sel.prop.Transforms = append(sel.prop.Transforms, Transform{Type: a.Type, ID: a.ID, KeyLen: a.KeyLen})
	}
	return sel, true
}

// checkChosen verifies that the responder's single proposal chooses, per type, exactly one
// transform we offered in one proposal (RFC 7296 §3.3.6), and returns the algorithms.
func checkChosen(ours []Proposal, sa *SAPayload, proto ProtocolID, stripDH bool) ([]Algorithm, error) {
	if sa == nil || len(sa.Proposals) != 1 {
		return nil, errors.New("response must carry exactly one proposal")
	}
	pp := sa.Proposals[0]
	if pp.Protocol != proto {
		return nil, fmt.Errorf("response proposal is for %s, not %s", pp.Protocol, proto)
	}
	seen := map[TransformType]bool{}
	var chosen []Algorithm
	for _, t := range pp.Transforms {
		if seen[t.Type] {
			return nil, fmt.Errorf("response proposal %s has two %s transforms", formatSAProposal(pp), t.Type)
		}
		seen[t.Type] = true
		if (t.Type == TransformINTEG || t.Type == TransformDH) && t.ID == 0 {
			continue
		}
		if t.Type == TransformDH && stripDH {
			continue
		}
		chosen = append(chosen, Algorithm{Type: t.Type, ID: t.ID, KeyLen: t.KeyLen})
	}
	for _, op := range ours {
		ok := true
		for _, c := range chosen {
			if !slices.Contains(op.Algs, c) {
				ok = false
				break
			}
		}
		// every type we require must be present
		for _, t := range []TransformType{TransformENCR, TransformINTEG, TransformPRF, TransformDH} {
			if (t == TransformDH && stripDH) || (t == TransformPRF && proto != ProtoIKE) {
				continue
			}
			if len(op.of(t)) > 0 && !seen[t] {
				ok = false
			}
		}
		if ok {
			return chosen, nil
		}
	}
	return nil, fmt.Errorf("response chose %s, which we did not offer (we offered %s)", formatSAProposal(pp), formatProposals(ours))
}

func algOf(algs []Algorithm, t TransformType) (Algorithm, bool) {
	for _, a := range algs {
		if a.Type == t {
			return a, true
		}
	}
	return Algorithm{}, false
}

// ikeSuite is a negotiated IKE SA transform set.
type ikeSuite struct {
	encr  encrAlg
	integ integAlg
	prf   prfAlg
	dh    uint16
	algs  []Algorithm
}

func newIKESuite(algs []Algorithm) (*ikeSuite, error) {
	s := &ikeSuite{algs: algs}
	e, ok1 := algOf(algs, TransformENCR)
	p, ok2 := algOf(algs, TransformPRF)
	d, ok3 := algOf(algs, TransformDH)
	if !ok1 || !ok2 || !ok3 {
		return nil, errors.New("IKE proposal lacks ENCR, PRF or DH")
	}
	var ok bool
	if s.encr, ok = encrByID(e.ID, e.KeyLen); !ok {
		return nil, fmt.Errorf("unsupported encryption %s", e)
	}
	if s.prf, ok = prfByID(p.ID); !ok {
		return nil, fmt.Errorf("unsupported PRF %s", p)
	}
	if !s.encr.aead {
		i, ok := algOf(algs, TransformINTEG)
		if !ok {
			return nil, errors.New("IKE proposal lacks INTEG")
		}
		if s.integ, ok = integByID(i.ID); !ok {
			return nil, fmt.Errorf("unsupported integrity %s", i)
		}
	}
	s.dh = d.ID
	return s, nil
}

func (s *ikeSuite) String() string { return Proposal{Algs: s.algs}.String() }

// espSuite is a negotiated CHILD SA transform set.
type espSuite struct {
	encr  encrAlg
	integ integAlg
	dh    uint16 // 0: no PFS
	esn   bool
	algs  []Algorithm
}

func newESPSuite(algs []Algorithm) (*espSuite, error) {
	s := &espSuite{algs: algs}
	e, ok := algOf(algs, TransformENCR)
	if !ok {
		return nil, errors.New("ESP proposal lacks ENCR")
	}
	if s.encr, ok = encrByID(e.ID, e.KeyLen); !ok {
		return nil, fmt.Errorf("unsupported encryption %s", e)
	}
	if !s.encr.aead {
		i, ok := algOf(algs, TransformINTEG)
		if !ok {
			return nil, errors.New("ESP proposal lacks INTEG")
		}
		if s.integ, ok = integByID(i.ID); !ok {
			return nil, fmt.Errorf("unsupported integrity %s", i)
		}
	}
	if d, ok := algOf(algs, TransformDH); ok {
		s.dh = d.ID
	}
	if x, ok := algOf(algs, TransformESN); ok {
		s.esn = x.ID == ESNYes
	}
	return s, nil
}

func (s *espSuite) String() string { return Proposal{Algs: s.algs}.String() }
