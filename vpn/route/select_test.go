package route

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func bgp(tunnel string, asLen int, origin Origin, med uint32) Candidate {
	peer := map[string]string{"t1": "169.254.10.1", "t2": "169.254.11.1", "t3": "169.254.12.1"}[tunnel]
	if peer == "" {
		peer = "192.0.2.1"
	}
	return Candidate{
		Source: Source{Tunnel: tunnel, Peer: netip.MustParseAddr(peer)},
		Path:   Path{Prefix: netip.MustParsePrefix("10.0.0.0/16"), ASPathLen: asLen, Origin: origin, MED: med},
	}
}

func static(tunnel string) Candidate {
	return Candidate{Source: StaticSource(tunnel), Path: Path{Prefix: netip.MustParsePrefix("10.0.0.0/16")}}
}

func withLocalPref(c Candidate, lp uint32) Candidate { c.Path.LocalPref = lp; return c }

func tunnelsOf(cs []Candidate) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Source.Tunnel)
	}
	return out
}

func TestSelect(t *testing.T) {
	for _, c := range []struct {
		name           string
		cands          []Candidate
		down           []string
		active, backup []string
	}{
		{name: "none"},
		{name: "one", cands: []Candidate{bgp("t1", 1, OriginIGP, 100)}, active: []string{"t1"}},
		{name: "equal MED is ECMP", cands: []Candidate{bgp("t2", 1, OriginIGP, 100), bgp("t1", 1, OriginIGP, 100)},
			active: []string{"t1", "t2"}},
		{name: "lower MED wins (AWS primary)", cands: []Candidate{bgp("t1", 1, OriginIGP, 200), bgp("t2", 1, OriginIGP, 100)},
			active: []string{"t2"}, backup: []string{"t1"}},
		{name: "missing MED is 0", cands: []Candidate{bgp("t1", 1, OriginIGP, 0), bgp("t2", 1, OriginIGP, 1)},
			active: []string{"t1"}, backup: []string{"t2"}},
		{name: "shorter AS path beats MED", cands: []Candidate{bgp("t1", 2, OriginIGP, 0), bgp("t2", 1, OriginIGP, 500)},
			active: []string{"t2"}, backup: []string{"t1"}},
		{name: "origin IGP beats incomplete", cands: []Candidate{bgp("t1", 1, OriginIncomplete, 0), bgp("t2", 1, OriginIGP, 500)},
			active: []string{"t2"}, backup: []string{"t1"}},
		{name: "origin EGP beats incomplete", cands: []Candidate{bgp("t1", 1, OriginIncomplete, 0), bgp("t2", 1, OriginEGP, 0)},
			active: []string{"t2"}, backup: []string{"t1"}},
		{name: "AS path beats origin", cands: []Candidate{bgp("t1", 1, OriginIncomplete, 0), bgp("t2", 2, OriginIGP, 0)},
			active: []string{"t1"}, backup: []string{"t2"}},
		{name: "static beats BGP", cands: []Candidate{bgp("t1", 0, OriginIGP, 0), static("t2")},
			active: []string{"t2"}, backup: []string{"t1"}},
		{name: "static on both is ECMP", cands: []Candidate{static("t2"), static("t1"), bgp("t3", 1, OriginIGP, 0)},
			active: []string{"t1", "t2"}, backup: []string{"t3"}},
		{name: "higher local pref beats AS path", cands: []Candidate{withLocalPref(bgp("t1", 3, OriginIGP, 0), 200), bgp("t2", 1, OriginIGP, 0)},
			active: []string{"t1"}, backup: []string{"t2"}},
		{name: "local pref 0 means 100", cands: []Candidate{withLocalPref(bgp("t1", 1, OriginIGP, 0), 100), bgp("t2", 1, OriginIGP, 0)},
			active: []string{"t1", "t2"}},
		{name: "down tunnel excluded: standby takes over", cands: []Candidate{bgp("t1", 1, OriginIGP, 100), bgp("t2", 1, OriginIGP, 200)},
			down: []string{"t1"}, active: []string{"t2"}},
		{name: "all down", cands: []Candidate{bgp("t1", 1, OriginIGP, 100)}, down: []string{"t1"}},
		{name: "three tiers: standby is the second only", cands: []Candidate{bgp("t1", 1, OriginIGP, 100), bgp("t2", 1, OriginIGP, 200), bgp("t3", 1, OriginIGP, 300)},
			active: []string{"t1"}, backup: []string{"t2"}},
		{name: "two sessions on one tunnel count once", cands: []Candidate{
			bgp("t1", 1, OriginIGP, 100),
			{Source: Source{Tunnel: "t1", Peer: netip.MustParseAddr("fd00::1")}, Path: Path{Prefix: netip.MustParsePrefix("10.0.0.0/16"), ASPathLen: 1, MED: 50}},
			bgp("t2", 1, OriginIGP, 50)},
			active: []string{"t1", "t2"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			down := map[string]bool{}
			for _, d := range c.down {
				down[d] = true
			}
			active, standby := Select(c.cands, func(tn string) bool { return !down[tn] })
			if d := cmp.Diff(c.active, tunnelsOf(active)); d != "" {
				t.Errorf("Select() active (-want +got):\n%s", d)
			}
			if d := cmp.Diff(c.backup, tunnelsOf(standby)); d != "" {
				t.Errorf("Select() standby (-want +got):\n%s", d)
			}
		})
	}
}

func TestSelectPicksTheBetterSessionOfATunnel(t *testing.T) {
	v6 := Candidate{Source: Source{Tunnel: "t1", Peer: netip.MustParseAddr("fd00::1")},
		Path: Path{Prefix: netip.MustParsePrefix("10.0.0.0/16"), ASPathLen: 1, MED: 50, NextHop: netip.MustParseAddr("fd00::1")}}
	active, _ := Select([]Candidate{bgp("t1", 1, OriginIGP, 100), v6}, nil)
	if len(active) != 1 || active[0].Path.MED != 50 {
		t.Errorf("Select() = %+v; want the MED 50 path of t1 only", active)
	}
}

func TestCompareIsAntisymmetric(t *testing.T) {
	cands := []Candidate{
		bgp("t1", 1, OriginIGP, 100), bgp("t2", 1, OriginIGP, 200), bgp("t1", 2, OriginIGP, 0),
		bgp("t1", 1, OriginIncomplete, 0), static("t1"), withLocalPref(bgp("t2", 4, OriginEGP, 9), 300),
	}
	for _, a := range cands {
		for _, b := range cands {
			if x, y := Compare(a, b), Compare(b, a); (x < 0) != (y > 0) || (x == 0) != (y == 0) {
				t.Errorf("Compare(%v, %v) = %d but Compare(b, a) = %d", a, b, x, y)
			}
		}
	}
}
