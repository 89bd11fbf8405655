package lab

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// BGPSummary is `show bgp summary json`: address family ("ipv4Unicast", "ipv6Unicast") → summary.
type BGPSummary map[string]BGPFamilySummary

// BGPFamilySummary is one address family of a BGP summary.
type BGPFamilySummary struct {
	RouterID string             `json:"routerId"`
	AS       uint32             `json:"as"`
	Peers    map[string]BGPPeer `json:"peers"`
}

// BGPPeer is one peer line of a BGP summary.
type BGPPeer struct {
	RemoteAS               uint32 `json:"remoteAs"`
	LocalAS                uint32 `json:"localAs"`
	State                  string `json:"state"` // Idle, Connect, Active, OpenSent, OpenConfirm, Established
	PfxRcd                 int    `json:"pfxRcd"`
	PfxSnt                 int    `json:"pfxSnt"`
	PeerUptimeMsec         int64  `json:"peerUptimeMsec"`
	ConnectionsEstablished int    `json:"connectionsEstablished"`
	ConnectionsDropped     int    `json:"connectionsDropped"`
}

// ParseBGPSummary parses FRR's `show bgp summary json` output.
func ParseBGPSummary(b []byte) (BGPSummary, error) {
	var s BGPSummary
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("lab: bgp summary json: %w", err)
	}
	return s, nil
}

// Peer returns the peer addr from the first family listing it (ipv4Unicast before ipv6Unicast).
func (s BGPSummary) Peer(addr string) (BGPPeer, bool) {
	fams := make([]string, 0, len(s))
	for f := range s {
		fams = append(fams, f)
	}
	sort.Strings(fams)
	want, err := netip.ParseAddr(addr)
	for _, f := range fams {
		for k, p := range s[f].Peers {
			if k == addr {
				return p, true
			}
			if a, perr := netip.ParseAddr(k); err == nil && perr == nil && a == want {
				return p, true
			}
		}
	}
	return BGPPeer{}, false
}

// BGPRoute is one path of a BGP table (`show bgp ipv4 unicast json`).
type BGPRoute struct {
	Prefix   string   // normalized prefix, e.g. "10.0.0.0/16"
	Best     bool     // the best path
	Valid    bool     // usable
	MED      uint32   // "metric"
	LocPrf   uint32   // local preference, if shown
	ASPath   string   // "64512" or "" for local routes
	Origin   string   // IGP, EGP, incomplete
	NextHops []string // next hop addresses
	PeerID   string   // the peer the path came from ("(unspec)" for local)
}

type frrRoutesJSON struct {
	Routes map[string][]struct {
		Valid    bool   `json:"valid"`
		Bestpath bool   `json:"bestpath"`
		Metric   uint32 `json:"metric"`
		LocPrf   uint32 `json:"locPrf"`
		Path     string `json:"path"`
		Origin   string `json:"origin"`
		PeerID   string `json:"peerId"`
		Nexthops []struct {
			IP string `json:"ip"`
		} `json:"nexthops"`
	} `json:"routes"`
}

// ParseBGPRoutes parses FRR's `show bgp <afi> unicast json` output into paths, sorted by
// prefix (best path first within a prefix).
func ParseBGPRoutes(b []byte) ([]BGPRoute, error) {
	var j frrRoutesJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("lab: bgp routes json: %w", err)
	}
	var out []BGPRoute
	for pfx, paths := range j.Routes {
		p, err := netip.ParsePrefix(pfx)
		if err != nil {
			return nil, fmt.Errorf("lab: bgp routes json: prefix %q: %w", pfx, err)
		}
		for _, pa := range paths {
			r := BGPRoute{
				Prefix: p.Masked().String(), Best: pa.Bestpath, Valid: pa.Valid, MED: pa.Metric,
				LocPrf: pa.LocPrf, ASPath: pa.Path, Origin: pa.Origin, PeerID: pa.PeerID,
			}
			for _, nh := range pa.Nexthops {
				r.NextHops = append(r.NextHops, nh.IP)
			}
			out = append(out, r)
		}
	}
	sort.SliceStable(out, func(i, k int) bool {
		if out[i].Prefix != out[k].Prefix {
			return out[i].Prefix < out[k].Prefix
		}
		return out[i].Best && !out[k].Best
	})
	return out, nil
}

// BGPNeighborState is the part of `show bgp neighbors ADDR json` the tests look at.
type BGPNeighborState struct {
	RemoteAS          uint32 `json:"remoteAs"`
	LocalAS           uint32 `json:"localAs"`
	State             string `json:"bgpState"`
	HoldTimeMsecs     int    `json:"bgpTimerHoldTimeMsecs"`
	KeepaliveMsecs    int    `json:"bgpTimerKeepAliveIntervalMsecs"`
	ConfiguredHoldMs  int    `json:"bgpTimerConfiguredHoldTimeMsecs"`
	LastResetDueTo    string `json:"lastResetDueTo"`
	LastErrorCodeSub  string `json:"lastErrorCodeSubcode"`
	ConnectionsEstab  int    `json:"connectionsEstablished"`
	ConnectionsDrop   int    `json:"connectionsDropped"`
	HostLocal         string `json:"hostLocal"`
	HostForeign       string `json:"hostForeign"`
	LastNotification  string `json:"lastNotificationReason"`
	PrefixLimitReason string `json:"lastShutdownDescription"`
}

// ParseBGPNeighbor parses `show bgp neighbors ADDR json` and returns ADDR's entry.
func ParseBGPNeighbor(b []byte, addr string) (BGPNeighborState, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return BGPNeighborState{}, fmt.Errorf("lab: bgp neighbor json: %w", err)
	}
	raw, ok := m[addr]
	if !ok {
		want, err := netip.ParseAddr(addr)
		for k, v := range m {
			if a, perr := netip.ParseAddr(k); err == nil && perr == nil && a == want {
				raw, ok = v, true
			}
		}
	}
	if !ok {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		return BGPNeighborState{}, fmt.Errorf("lab: bgp neighbor json: no entry for %s (have %s)", addr, strings.Join(keys, ","))
	}
	var n BGPNeighborState
	if err := json.Unmarshal(raw, &n); err != nil {
		return BGPNeighborState{}, fmt.Errorf("lab: bgp neighbor json: %s: %w", addr, err)
	}
	return n, nil
}
