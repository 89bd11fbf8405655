package radiohook

// States of the service (Status.State).
const (
	StateNone     = "none"      // no profile yet: nothing to serve
	StateNoRadios = "no_radios" // the board has no radios (a QEMU board booted without meshroot.hwsim)
	StateStarting = "starting"  // radios found, hostapd starting
	StateRunning  = "running"   // hostapd runs on the radios the site serves
	StateError    = "error"     // the radios could not be set up (Detail, retried)
)

// Radio states (RadioStatus.State) besides hostapd's own (ENABLED, DFS, COUNTRY_UPDATE, ...).
const (
	RadioStarting   = "starting"   // hostapd started, its control socket not answering yet
	RadioRestarting = "restarting" // hostapd ended; restarted after a backoff
	RadioFailed     = "failed"     // hostapd did not start (retried)
	RadioSkipped    = "skipped"    // the site does not serve the radio's band
	RadioStopped    = "stopped"
)

// Status is the radios and the mesh as the status API shows them. It holds no secret: no
// passphrase, no mesh key, no FT key (the status document is scrubbed as well).
type Status struct {
	State          string `json:"state"`
	Detail         string `json:"detail,omitempty"`
	ProfileVersion uint64 `json:"profile_version,omitempty"`
	SSID           string `json:"ssid,omitempty"`
	Security       string `json:"security,omitempty"`
	Country        string `json:"country,omitempty"`
	// Node is this node's name in the mesh (its serial); Role "gateway" (runs the controller
	// and the channel planner) or "satellite".
	Node string `json:"node,omitempty"`
	Role string `json:"role,omitempty"`
	// Hwsim is the number of simulated radios created at boot (QEMU boards).
	Hwsim  int           `json:"hwsim_radios,omitempty"`
	Radios []RadioStatus `json:"radios,omitempty"`
	Mesh   *MeshStatus   `json:"mesh,omitempty"`
	// LastError is the last refused profile or setup error.
	LastError string `json:"last_error,omitempty"`
}

// RadioStatus is one radio.
type RadioStatus struct {
	ID    string `json:"id"`
	Phy   string `json:"phy"`
	Iface string `json:"iface"`
	Band  string `json:"band"`
	BSSID string `json:"bssid,omitempty"`
	SSID  string `json:"ssid,omitempty"`
	// State is hostapd's interface state from STATUS (ENABLED when serving) or one of the
	// Radio* states.
	State string `json:"state"`
	// Channel is "primary/width" (e.g. "36/80"), Freq the primary's MHz.
	Channel  string `json:"channel,omitempty"`
	Freq     int    `json:"freq,omitempty"`
	Stations int    `json:"stations"`
	// MobilityDomain is the 802.11r mobility domain ("" without FT).
	MobilityDomain string `json:"mobility_domain,omitempty"`
	HostapdPID     int    `json:"hostapd_pid,omitempty"`
	// Restarts counts hostapd's restarts after it ended on its own.
	Restarts  int    `json:"restarts"`
	LastError string `json:"last_error,omitempty"`
}

// MeshStatus is the control plane.
type MeshStatus struct {
	// ControlPlane is "lan" (authenticated with the site's mesh key on the LAN bridge) or
	// "local" (no mesh key in the profile: this node alone).
	ControlPlane string `json:"control_plane"`
	// Controller is the controller this node follows (itself on the gateway; "" when lost).
	Controller string   `json:"controller,omitempty"`
	Peers      []string `json:"peers,omitempty"`
	// SiteBSSes is the number of the site's BSSes the controller knows (gateway only).
	SiteBSSes int `json:"site_bsses,omitempty"`
	// Backhaul is this node's path to the gateway ("" on the gateway).
	BackhaulParent string `json:"backhaul_parent,omitempty"`
	BackhaulMedium string `json:"backhaul_medium,omitempty"`
	BackhaulLinks  int    `json:"backhaul_links"`
	// Planner is "running" when the radio manager (surveys, channel plans, DFS) runs.
	Planner string `json:"planner,omitempty"`
}
