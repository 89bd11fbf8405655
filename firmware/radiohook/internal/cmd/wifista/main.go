// Command wifista is a Wi-Fi client for the radio VM test (firmware/radiohook TestVMWiFi), run
// on the router's console: a phone on the router's own air. It creates one more mac80211_hwsim
// radio (the router's are the ones meshd made at boot), joins the site's network on it with
// Debian's wpa_supplicant (only in the test image: the product ships no station tools), checks
// the association over the supplicant's control socket and nl80211, takes a DHCP lease from the
// router over the air, holds the association for a while (the test reads the router's /status
// then), and leaves.
//
// The network's name and passphrase come from QEMU's fw_cfg (opt/meshroot/wifista: JSON
// {"ssid": ..., "passphrase": ...}), never from the console, so they appear in no console log.
// Results are console lines "WIFISTA {json}"; the last is "WIFISTA-DONE {json}".
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"

	"meshroot/radio/hostapd"
	"meshroot/radio/nl80211"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "wifista:", err)
		os.Exit(1)
	}
}

// Result is one WIFISTA line.
type Result struct {
	Step   string `json:"step"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
	Ms     int64  `json:"ms"`
	// The association, once made.
	Iface    string `json:"iface,omitempty"`
	BSSID    string `json:"bssid,omitempty"`
	SSID     string `json:"ssid,omitempty"`
	Freq     string `json:"freq,omitempty"`
	KeyMgmt  string `json:"key_mgmt,omitempty"`
	Cipher   string `json:"pairwise_cipher,omitempty"`
	State    string `json:"wpa_state,omitempty"`
	Lease    string `json:"lease,omitempty"`
	RouterIP string `json:"router,omitempty"`
	Signal   int    `json:"signal_dbm,omitempty"`
}

type creds struct {
	SSID       string `json:"ssid"`
	Passphrase string `json:"passphrase"`
}

const credsPath = "/sys/firmware/qemu_fw_cfg/by_name/opt/meshroot/wifista/raw"

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("wifista", flag.ContinueOnError)
	fs.SetOutput(stderr)
	hold := fs.Duration("hold", 30*time.Second, "how long to stay associated after the lease")
	supplicant := fs.String("wpa-supplicant", "/sbin/wpa_supplicant", "wpa_supplicant binary")
	if err := fs.Parse(args); err != nil {
		return err
	}
	emit := func(r Result, start time.Time, err error) {
		r.OK, r.Ms = err == nil, time.Since(start).Milliseconds()
		if err != nil {
			r.Detail = err.Error()
		}
		b, _ := json.Marshal(r)
		fmt.Fprintf(stdout, "WIFISTA %s\n", b)
	}
	done := func(err error) error {
		b, _ := json.Marshal(map[string]any{"ok": err == nil})
		fmt.Fprintf(stdout, "WIFISTA-DONE %s\n", b)
		return err
	}

	t := time.Now()
	var c creds
	b, err := os.ReadFile(credsPath)
	if err == nil {
		err = json.Unmarshal(b, &c)
	}
	if err == nil && (c.SSID == "" || len(c.Passphrase) < 8) {
		err = errors.New("credentials without an SSID or a passphrase")
	}
	emit(Result{Step: "credentials", SSID: c.SSID}, t, err)
	if err != nil {
		return done(err)
	}

	t = time.Now()
	iface, err := newRadio(ctx)
	emit(Result{Step: "station radio", Iface: iface}, t, err)
	if err != nil {
		return done(err)
	}

	t = time.Now()
	dir := "/run/wifista"
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return done(err)
	}
	conf := filepath.Join(dir, "wpa_supplicant.conf")
	// WPA3-Personal: SAE with PMF required (the site's transition-mode BSSes offer it).
	text := fmt.Sprintf("ctrl_interface=%s\nnetwork={\n\tssid=%q\n\tkey_mgmt=SAE\n\tsae_password=%q\n\tieee80211w=2\n}\n", dir, c.SSID, c.Passphrase)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return done(err)
	}
	out := &lockedBuf{}
	cmd := exec.Command(*supplicant, "-i", iface, "-D", "nl80211", "-c", conf)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		emit(Result{Step: "wpa_supplicant"}, t, err)
		return done(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		os.Remove(conf)
	}()

	// Associated and the 4-way handshake done: the supplicant says COMPLETED.
	var st map[string]string
	err = poll(ctx, 90*time.Second, exited, func() error {
		cl, err := hostapd.Dial(ctx, filepath.Join(dir, iface), hostapd.Options{Timeout: 2 * time.Second})
		if err != nil {
			return err
		}
		defer cl.Close()
		reply, err := cl.Request(ctx, "STATUS")
		if err != nil {
			return err
		}
		st = keyValues(reply)
		if st["wpa_state"] != "COMPLETED" {
			return fmt.Errorf("wpa_state %s", st["wpa_state"])
		}
		return nil
	})
	r := Result{Step: "associated", Iface: iface, BSSID: st["bssid"], SSID: st["ssid"], Freq: st["freq"], KeyMgmt: st["key_mgmt"], Cipher: st["pairwise_cipher"], State: st["wpa_state"]}
	if err != nil {
		err = fmt.Errorf("%w; wpa_supplicant said: %s", err, tail(out.String(), 600))
	}
	emit(r, t, err)
	if err != nil {
		return done(err)
	}

	// The kernel agrees: the station interface has the AP as its peer.
	t = time.Now()
	nl, err := nl80211.Open()
	if err == nil {
		var stas []nl80211.Station
		stas, err = nl.Stations(iface)
		nl.Close()
		if err == nil && len(stas) != 1 {
			err = fmt.Errorf("%d peers on %s; want the AP", len(stas), iface)
		}
		if err == nil {
			r = Result{Step: "nl80211 link", Iface: iface, BSSID: stas[0].MAC.String(), Signal: stas[0].Signal}
		}
	}
	emit(r, t, err)
	if err != nil {
		return done(err)
	}

	// A DHCP lease from the router, over the air and through the LAN bridge.
	t = time.Now()
	var lease *nclient4.Lease
	err = poll(ctx, 60*time.Second, exited, func() error {
		cl, err := nclient4.New(iface, nclient4.WithTimeout(3*time.Second), nclient4.WithRetry(2))
		if err != nil {
			return err
		}
		defer cl.Close()
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		lease, err = cl.Request(rctx)
		return err
	})
	r = Result{Step: "dhcp lease", Iface: iface}
	if err == nil {
		r.Lease = lease.ACK.YourIPAddr.String()
		if rt := lease.ACK.Router(); len(rt) > 0 {
			r.RouterIP = rt[0].String()
		}
	}
	emit(r, t, err)
	if err != nil {
		return done(err)
	}

	t = time.Now()
	select {
	case <-time.After(*hold):
		err = nil
	case err = <-exited:
		err = fmt.Errorf("wpa_supplicant ended while holding: %v", err)
		exited <- err
	case <-ctx.Done():
		err = ctx.Err()
	}
	emit(Result{Step: "held", Iface: iface}, t, err)
	return done(err)
}

// newRadio creates one more mac80211_hwsim radio (HWSIM_CMD_NEW_RADIO) and returns its netdev.
func newRadio(ctx context.Context) (string, error) {
	nl, err := nl80211.Open()
	if err != nil {
		return "", err
	}
	defer nl.Close()
	before, err := nl.Interfaces()
	if err != nil {
		return "", err
	}
	c, err := genetlink.Dial(nil)
	if err != nil {
		return "", err
	}
	defer c.Close()
	fam, err := c.GetFamily("MAC80211_HWSIM")
	if err != nil {
		return "", fmt.Errorf("MAC80211_HWSIM family (is mac80211_hwsim loaded?): %w", err)
	}
	const cmdNewRadio = 4 // HWSIM_CMD_NEW_RADIO
	// The kernel answers with the new radio's index in the acknowledgement's error field, which
	// the netlink package may report as an error: the new interface is the proof.
	_, nerr := c.Execute(genetlink.Message{Header: genetlink.Header{Command: cmdNewRadio, Version: fam.Version}}, fam.ID, netlink.Request|netlink.Acknowledge)
	var iface string
	err = poll(ctx, 10*time.Second, nil, func() error {
		after, err := nl.Interfaces()
		if err != nil {
			return err
		}
		for _, i := range after {
			if !slices.ContainsFunc(before, func(b nl80211.Interface) bool { return b.Name == i.Name }) && i.Type == nl80211.IfStation {
				iface = i.Name
				return nil
			}
		}
		return fmt.Errorf("no new interface (HWSIM_CMD_NEW_RADIO: %v)", nerr)
	})
	return iface, err
}

// poll runs f until it succeeds, d passes, ctx ends or stop delivers (the process ended).
func poll(ctx context.Context, d time.Duration, stop chan error, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e := <-stop:
			stop <- e
			return fmt.Errorf("%v (the process ended: %v)", err, e)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func keyValues(s string) map[string]string {
	out := map[string]string{}
	for _, l := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			out[k] = v
		}
	}
	return out
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// lockedBuf keeps wpa_supplicant's output (shown only when the association fails).
type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
