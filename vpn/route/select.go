package route

import (
	"cmp"
	"net/netip"
	"slices"
)

// Origin is BGP's ORIGIN attribute; lower is preferred.
type Origin uint8

// Origins.
const (
	OriginIGP        Origin = 0
	OriginEGP        Origin = 1
	OriginIncomplete Origin = 2
)

func (o Origin) String() string {
	switch o {
	case OriginIGP:
		return "IGP"
	case OriginEGP:
		return "EGP"
	case OriginIncomplete:
		return "incomplete"
	}
	return "origin?"
}

// DefaultLocalPref is the local preference of a path that carries none (eBGP paths).
const DefaultLocalPref = 100

// Path is one way to reach a prefix offered by one source (a BGP session's best path for the
// prefix, or a static route).
type Path struct {
	Prefix    netip.Prefix
	ASPathLen int
	Origin    Origin
	MED       uint32
	// LocalPref: higher is preferred; 0 means DefaultLocalPref.
	LocalPref uint32
	// NextHop is the gateway (the peer's inside address); invalid for a device route. An IPv6
	// next hop for an IPv4 prefix is installed as "via inet6"; an IPv4(-mapped) next hop for an
	// IPv6 prefix (MP-BGP over an IPv4 session) gives a device route, since Linux has no IPv6
	// route via an IPv4 gateway; on an OnLink tunnel the next hop is not used at all.
	NextHop netip.Addr
}

// Source is who offers paths: a BGP session on a tunnel, or the tunnel's static routes.
type Source struct {
	Tunnel string
	// Peer is the BGP neighbor; the zero Addr for static routes.
	Peer netip.Addr
}

// StaticSource is the source of a tunnel's static routes.
func StaticSource(tunnel string) Source { return Source{Tunnel: tunnel} }

// Static reports whether the source is static routing (beats BGP).
func (s Source) Static() bool { return !s.Peer.IsValid() }

func (s Source) String() string {
	if s.Static() {
		return s.Tunnel + "/static"
	}
	return s.Tunnel + "/" + s.Peer.String()
}

// Candidate is a path and its source, the input of Select.
type Candidate struct {
	Source Source
	Path   Path
}

func localPref(p Path) uint32 {
	if p.LocalPref == 0 {
		return DefaultLocalPref
	}
	return p.LocalPref
}

// Compare orders two candidates for the same prefix by the concentrator's rules (AWS
// "Route priority": static over BGP; then shortest AS path, origin, lowest MED), with BGP's
// local preference (higher wins) ahead of the AS path as the site's own knob; it is equal for
// eBGP paths unless set. It returns a negative number when a is preferred, 0 when they tie
// (ECMP). Longest prefix match is the kernel's: every prefix is a route of its own.
func Compare(a, b Candidate) int {
	if as, bs := a.Source.Static(), b.Source.Static(); as != bs {
		if as {
			return -1
		}
		return 1
	}
	if a.Source.Static() {
		return 0 // static routes over several tunnels are equal
	}
	if c := cmp.Compare(localPref(b.Path), localPref(a.Path)); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Path.ASPathLen, b.Path.ASPathLen); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Path.Origin, b.Path.Origin); c != 0 {
		return c
	}
	return cmp.Compare(a.Path.MED, b.Path.MED)
}

// Select picks, among the candidates for one prefix whose tunnel is usable (up reports it), the
// active set and the standby set. The active set is every tunnel whose best candidate ties with
// the overall best: one tunnel (active/standby), or several (ECMP). The standby set is the same
// for the remaining tunnels: what the route becomes when the active tunnels go down. A tunnel
// appears at most once (its best candidate), and both sets are ordered by tunnel name.
func Select(cands []Candidate, up func(tunnel string) bool) (active, standby []Candidate) {
	// The best candidate per tunnel; no map: a prefix has a session or two per tunnel.
	per := make([]Candidate, 0, len(cands))
	for _, c := range cands {
		if up != nil && !up(c.Source.Tunnel) {
			continue
		}
		found := false
		for i := range per {
			if per[i].Source.Tunnel == c.Source.Tunnel {
				found = true
				if d := Compare(c, per[i]); d < 0 || (d == 0 && sourceLess(c.Source, per[i].Source)) {
					per[i] = c
				}
				break
			}
		}
		if !found {
			per = append(per, c)
		}
	}
	if len(per) == 0 {
		return nil, nil
	}
	slices.SortFunc(per, func(a, b Candidate) int {
		if c := Compare(a, b); c != 0 {
			return c
		}
		return cmp.Compare(a.Source.Tunnel, b.Source.Tunnel)
	})
	i := 1
	for i < len(per) && Compare(per[i], per[0]) == 0 {
		i++
	}
	active = per[:i:i]
	rest := per[i:]
	if len(rest) > 0 {
		k := 1
		for k < len(rest) && Compare(rest[k], rest[0]) == 0 {
			k++
		}
		standby = rest[:k:k]
	}
	return active, standby
}

func sourceLess(a, b Source) bool {
	if a.Tunnel != b.Tunnel {
		return a.Tunnel < b.Tunnel
	}
	return a.Peer.Less(b.Peer)
}
