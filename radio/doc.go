// Package radio owns the Wi-Fi radios and the mesh. Its subpackages:
//
//   - nl80211: the kernel's Wi-Fi interface (interfaces, PHY channels with DFS state, stations,
//     survey, scans with the foreign BSSes' widths, regulatory domain) over mdlayher/wifi, with a
//     fake for tests;
//   - hostapd: a client for hostapd's control socket (no hostapd_cli), its reply and event
//     parsers, hostapd.conf generation from site settings, and a protocol-level fake;
//   - chanplan: hostapd's ACS reproduced exactly as the baseline, and the mesh-wide channel
//     planner with its hysteresis policy (see its package doc for the algorithm);
//   - meshproto: the authenticated, replay-protected control plane between the site's nodes;
//   - manager: the radio service run by the supervisor: survey and scan, report to the gateway,
//     plan there, apply with channel-switch announcements, handle radar (NOP memory, immediate
//     moves to channels usable without CAC);
//   - rfsim: a simulated building (walls, floors, foreign APs, our meshes) for evaluation and
//     the benchmarks against hostapd's ACS and the exact optimum;
//   - mesh, steer (+ steersim), backhaul, ft, medium: roaming and the backhaul on the same
//     control plane (node agents and the gateway's controller, the steering policy, the
//     batman-adv V-style path selection, 802.11r settings, a Go wireless medium for hwsim).
//
// Data flow: nl80211 survey + scan on every node → meshproto report → gateway Smoother →
// Policy.Decide (Solve) → meshproto plan → manager → hostapd CHAN_SWITCH with a countdown.
// In the product, firmware/radiohook runs all of it: hostapd on every radio from the site
// profile, the manager, the mesh node (and the controller on the gateway) and the backhaul
// agent.
package radio
