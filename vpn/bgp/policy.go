package bgp

import (
	"fmt"
	"net/netip"

	api "github.com/osrg/gobgp/v3/api"
)

// Policy names (stable: gobgp keeps the global assignments by name across SetPolicies).
const (
	importPolicy = "meshroot-import"
	exportPolicy = "meshroot-export"
	ownASSet     = "meshroot-own-as"
)

var (
	familyV4 = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	familyV6 = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
)

func apiFamily(f Family) *api.Family {
	if f == IPv6 {
		return familyV6
	}
	return familyV4
}

func neighborSet(i int) string { return fmt.Sprintf("meshroot-peer-%d", i) }

func hostPrefix(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

// policies builds the speaker's routing policy:
//
//   - import (default accept): a path whose AS path contains our AS is rejected. gobgp's own
//     loop check is relaxed (allow-own-as) so such paths reach the Adj-RIB-In watch and get
//     their "DENIED due to: as-path contains our own AS" line; this policy keeps them out of
//     the RIB all the same.
//   - export (default reject): only our own prefixes (route-type local) go out, never a path
//     learned from one tunnel to the other; per peer, the configured MED and AS-path prepend,
//     and on an IPv4 session carrying IPv6 the IPv6 next hop (Local6, or IPv4-mapped Local).
func policies(c Config) *api.SetPoliciesRequest {
	req := &api.SetPoliciesRequest{
		DefinedSets: []*api.DefinedSet{{
			DefinedType: api.DefinedType_AS_PATH, Name: ownASSet,
			List: []string{fmt.Sprintf("_%d_", c.ASN)},
		}},
	}
	req.Policies = append(req.Policies, &api.Policy{
		Name: importPolicy,
		Statements: []*api.Statement{{
			Name:       importPolicy + "-own-as",
			Conditions: &api.Conditions{AsPathSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: ownASSet}},
			Actions:    &api.Actions{RouteAction: api.RouteAction_REJECT},
		}},
	})
	export := &api.Policy{Name: exportPolicy}
	for i, p := range c.Peers {
		req.DefinedSets = append(req.DefinedSets, &api.DefinedSet{
			DefinedType: api.DefinedType_NEIGHBOR, Name: neighborSet(i), List: []string{hostPrefix(p.Address)},
		})
		actions := func() *api.Actions {
			a := &api.Actions{RouteAction: api.RouteAction_ACCEPT}
			if p.MED != nil {
				a.Med = &api.MedAction{Type: api.MedAction_REPLACE, Value: int64(*p.MED)}
			}
			if p.Prepend > 0 {
				a.AsPrepend = &api.AsPrependAction{Asn: c.ASN, Repeat: uint32(p.Prepend)}
			}
			return a
		}
		if p.Address.Is4() && p.carries(IPv6) {
			nh := netip.AddrFrom16(p.Local.Addr().As16()) // ::ffff:a.b.c.d
			if p.Local6.IsValid() {
				nh = p.Local6.Addr()
			}
			a := actions()
			a.Nexthop = &api.NexthopAction{Address: nh.String()}
			export.Statements = append(export.Statements, &api.Statement{
				Name: fmt.Sprintf("%s-%d-v6", exportPolicy, i),
				Conditions: &api.Conditions{
					NeighborSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: neighborSet(i)},
					AfiSafiIn:   []*api.Family{familyV6},
					RouteType:   api.Conditions_ROUTE_TYPE_LOCAL,
				},
				Actions: a,
			})
		}
		export.Statements = append(export.Statements, &api.Statement{
			Name: fmt.Sprintf("%s-%d", exportPolicy, i),
			Conditions: &api.Conditions{
				NeighborSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: neighborSet(i)},
				RouteType:   api.Conditions_ROUTE_TYPE_LOCAL,
			},
			Actions: actions(),
		})
	}
	req.Policies = append(req.Policies, export)
	return req
}
