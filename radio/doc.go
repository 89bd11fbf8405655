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
//     the benchmarks against hostapd's ACS and the exact optimum.
//
// Data flow: nl80211 survey + scan on every node → meshproto report → gateway Smoother →
// Policy.Decide (Solve) → meshproto plan → manager → hostapd CHAN_SWITCH with a countdown.
// Later: backhaul selection and client steering (802.11k/v/r) on the same control plane.
package radio
