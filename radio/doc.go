// Package radio owns the Wi-Fi radios and the mesh: nl80211 access (mdlayher/wifi), the hostapd
// control-socket client, the mesh-wide channel planner with DFS handling, the RF simulation used to
// evaluate it, and later backhaul selection and client steering (802.11k/v/r).
package radio
