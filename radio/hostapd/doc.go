// Package hostapd controls hostapd through its control socket, without hostapd_cli or iw: a
// Client for the UNIX-datagram protocol (PING, STATUS, ATTACH/DETACH with event parsing,
// CHAN_SWITCH, station listing, SET_NEIGHBOR, BSS_TM_REQ, REQ_BEACON, DISASSOCIATE and
// DEAUTHENTICATE), the parsers of hostapd's replies and events, and the generation of
// hostapd.conf from a site-profile-like Config.
//
// The protocol, read from hostapd's hostapd/ctrl_iface.c and src/common/wpa_ctrl.c: the client
// binds its own datagram socket and sends one command per datagram to
// /var/run/hostapd/<ifname>; hostapd answers each with exactly one datagram (at most 8192 bytes;
// "FAIL\n" or "UNKNOWN COMMAND\n" on error). After ATTACH, unsolicited events arrive on the same
// socket as "<level>TEXT", so a reply and an event can interleave; the client tells them apart by
// the leading '<'. Fake is a hostapd stand-in that speaks the same protocol from the server
// side, for unit tests of this package and of the radio manager; TestVM tests run the client
// against Debian's hostapd on mac80211_hwsim radios.
package hostapd
