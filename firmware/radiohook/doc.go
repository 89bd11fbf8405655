// Package radiohook is meshd's radio service ("radio", after provision and lan): it turns the
// verified site profile into Wi-Fi on the node's radios and runs the site's mesh control plane.
//
// From a profile (SiteFrom: SSID, security, bands, country, the passphrase and the mesh key
// resolved from the agent's secret store; a bad field is a FieldError naming it and the radios
// keep serving the last good site) the service:
//
//   - finds the radios: the board's (board.Radios) or, on the QEMU boards, the simulated ones it
//     creates when the kernel command line says meshroot.hwsim=N (board.Hwsim: mac80211_hwsim
//     loaded with radios=N through meshd's module loader);
//   - sets the regulatory domain (nl80211) and renders one hostapd.conf per radio (Plan: the
//     site's SSID and WPA2/WPA3 settings, 802.11r mobility domain and keys from radio/ft, the
//     channel remembered from the last run when the regulatory domain still allows it, else
//     Channel's choice), bridged to the LAN;
//   - starts Debian's hostapd on every radio and supervises it (proc.go: restarts with backoff
//     from 1 s to 30 s, reset after 30 s of stable service; a crashed or killed hostapd comes
//     back on its own), re-rendering only radios whose configuration changed;
//   - runs the control plane (control.go) once the radios serve: radio/manager (survey, report
//     to the gateway, channel plans applied with CSA, radar handling), the radio/mesh node and,
//     on the gateway (the node with a WAN address; the role sticks once held), its controller
//     (steering, neighbour lists), and the radio/backhaul agent on the LAN bridge (hellos only:
//     the wired backhaul is the bridged LAN itself, so it installs no routes). Messages are
//     meshproto, keyed by the site's mesh key; without one a node runs alone.
//
// Status (in meshd's /status and /metrics) holds the service's state, every radio's hostapd
// state, channel, station count and restarts, and the mesh's role, peers and planner; nothing
// secret: the passphrase and the mesh key go to the device's log redactor (Service.Secrets) and
// Site's String and LogValue leave them out.
//
// Hardware access sits behind Runner (hostapd processes) and nl80211.Client; fake.go holds the
// fakes the unit tests use. TestVMWiFi boots the arm64 product image with two simulated radios
// in the virtual site (firmware/sitelab), onboards it zero-touch, and joins a real
// wpa_supplicant station with WPA3-SAE (internal/cmd/wifista) that takes a DHCP lease.
package radiohook
