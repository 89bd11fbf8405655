// Package mesh is the site's roaming control plane: every node runs a Node (the agent of
// EasyMesh's terms) for its BSSes, and the gateway — the node with the WAN — also runs the
// Controller. They talk over radio/meshproto (authenticated with the site's key, replay
// protected) on the LAN and backhaul.
//
//   - Discovery: every node sends a hello (TypeHello) each HelloEvery to the discovery addresses
//     (the LAN's broadcast address on a router; the peers' loopback ports in tests) and learns
//     the others, and where the controller is, from theirs.
//   - Reports: a node tells the controller its BSSes (TypeTopology, on change and every 10 s),
//     its stations' link metrics from hostapd (TypeAPMetrics, every ReportEvery), stations
//     joining and leaving at once (TypeClientEvent), and relays 802.11k beacon reports
//     (TypeBeaconMetrics) and 802.11v BSS transition responses (TypeBTMReport).
//   - Decisions: the controller feeds everything into a radio/steer Tracker and asks its
//     policy every Tick; it sends beacon queries, steering requests (BSS_TM_REQ with the
//     candidates' neighbour report entries and preferences) and association control (DENY_ACL
//     with a local expiry, plus a deauthentication) to the serving nodes, and the list of the
//     site's BSSes (TypeNeighbors) to every node, which keeps its hostapd 802.11k neighbour
//     database (SET_NEIGHBOR / REMOVE_NEIGHBOR) equal to it.
//   - Backhaul: a node's backhaul state goes into its hellos and topology; the controller may
//     pin a satellite's parent (TypeBackhaulSteer), which the node's backhaul agent honours while
//     that link works.
//   - Controller loss: nodes keep serving their clients as they are — hostapd runs on its own,
//     the neighbour databases stay, blocks expire on the nodes' own timers — and report to the
//     controller again when its hellos return.
//
// Commands are only taken from the node that announces itself as controller; every message
// body is validated (meshproto.DecodeValid) before use.
package mesh

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"meshroot/radio/chanplan"
	"meshroot/radio/hostapd"
	"meshroot/radio/meshproto"
	"meshroot/radio/steer"
)

// AP is what a node needs of one BSS's hostapd (*hostapd.Client implements it).
type AP interface {
	Status(ctx context.Context) (hostapd.Status, error)
	Stations(ctx context.Context) ([]hostapd.Station, error)
	BSSTMReq(ctx context.Context, r hostapd.BSSTMRequest) error
	ReqBeacon(ctx context.Context, addr net.HardwareAddr, reqMode byte, request []byte) (int, error)
	SetNeighbor(ctx context.Context, ssid string, nr hostapd.NeighborReport) error
	RemoveNeighbor(ctx context.Context, ssid string, bssid net.HardwareAddr) error
	DenyACL(ctx context.Context, add bool, addr net.HardwareAddr) error
	DenyACLClear(ctx context.Context) error
	Deauthenticate(ctx context.Context, addr net.HardwareAddr, reason int) error
	Attach(ctx context.Context) error
	Events() <-chan hostapd.Event
	Close() error
}

var _ AP = (*hostapd.Client)(nil)

// bssInfo describes a BSS from hostapd's STATUS for neighbour reports and candidates.
func bssInfo(node, radio string, st hostapd.Status, mdid string) (meshproto.BSSInfo, error) {
	if len(st.BSS) == 0 {
		return meshproto.BSSInfo{}, fmt.Errorf("no BSS in STATUS")
	}
	b := st.BSS[0]
	bssid, ok := meshproto.MACFrom(b.BSSID)
	if !ok {
		return meshproto.BSSInfo{}, fmt.Errorf("bssid %v", b.BSSID)
	}
	spec, err := st.Spec()
	if err != nil {
		return meshproto.BSSInfo{}, err
	}
	oc, err := hostapd.OpClass(spec)
	if err != nil {
		return meshproto.BSSInfo{}, err
	}
	info := uint32(hostapd.BSSIDInfoReachable | hostapd.BSSIDInfoSecurity | hostapd.BSSIDInfoKeyScope | hostapd.BSSIDInfoQoS | hostapd.BSSIDInfoRadioMeasure)
	phy := 0
	if st.IEEE80211N {
		info |= hostapd.BSSIDInfoHT
		phy = hostapd.PHYTypeHT
	}
	if st.IEEE80211AC {
		info |= hostapd.BSSIDInfoVHT
		phy = hostapd.PHYTypeVHT
	}
	if st.IEEE80211AX {
		info |= hostapd.BSSIDInfoHE
		phy = hostapd.PHYTypeHE
	}
	if spec.Band() == chanplan.Band5G {
		info |= hostapd.BSSIDInfoSpectrumMgmt
	}
	if mdid != "" {
		info |= hostapd.BSSIDInfoMobilityDomain
	}
	return meshproto.BSSInfo{BSSID: bssid, SSID: b.SSID, Node: node, Radio: radio, Band: meshproto.BandOfFreq(spec.Freq),
		Freq: spec.Freq, Width: spec.Width, Channel: spec.Channel(), OpClass: int(oc), PHYType: phy, BSSIDInfo: info, MobilityDomain: strings.ToLower(mdid)}, nil
}

// neighborReport turns a BSSInfo into hostapd's neighbour report entry.
func neighborReport(b meshproto.BSSInfo) hostapd.NeighborReport {
	return hostapd.NeighborReport{BSSID: b.BSSID.HW(), BSSIDInfo: b.BSSIDInfo, OpClass: uint8(b.OpClass), Channel: uint8(b.Channel), PHYType: uint8(b.PHYType)}
}

// steerBand maps a message band to steer's.
func steerBand(b string) steer.Band {
	switch b {
	case meshproto.Band5G:
		return steer.Band5
	case meshproto.Band6G:
		return steer.Band6
	}
	return steer.Band24
}

// caps reads a station's capabilities from hostapd's STA output.
func caps(s hostapd.Station, band string) meshproto.Capabilities {
	c := meshproto.Capabilities{BTM: s.BSSTransition(), FT: s.FT(), BeaconActive: true, BeaconPassive: true, BeaconTable: true}
	if band != "" {
		c.Bands = []string{band}
	}
	return c
}

// clampSignal keeps a signal in the messages' range.
func clampSignal(s int) int {
	return max(min(s, 0), -128)
}

// timeout bounds one hostapd request.
const timeout = 3 * time.Second
