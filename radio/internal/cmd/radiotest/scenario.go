package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mdlayher/wifi"
	"golang.org/x/sys/unix"

	"meshroot/radio/chanplan"
	"meshroot/radio/hostapd"
	"meshroot/radio/internal/vmkit/guest"
	"meshroot/radio/manager"
	"meshroot/radio/nl80211"
)

const (
	ssid    = "meshroot-vm"
	apIface = "wlan0"
	staIf   = "wlan1"
	scanIf  = "wlan2"
)

func mustSpec(freq, width int) chanplan.Spec {
	s, err := chanplan.NewSpec(freq, width, 1)
	if err != nil {
		panic(err)
	}
	return s
}

// poll runs f every 200 ms until it returns nil or the timeout passes.
func poll(ctx context.Context, timeout time.Duration, f func() error) error {
	return guest.Poll(ctx, timeout, 200*time.Millisecond, f)
}

// waitEvent waits for an event named one of names, returning it and the events seen before it.
func waitEvent(ctx context.Context, c *hostapd.Client, timeout time.Duration, names ...string) (hostapd.Event, []hostapd.Event, error) {
	var seen []hostapd.Event
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				return hostapd.Event{}, seen, errors.New("events closed")
			}
			if slices.Contains(names, ev.Name) {
				return ev, seen, nil
			}
			seen = append(seen, ev)
		case <-t.C:
			return hostapd.Event{}, seen, fmt.Errorf("no %v within %v (saw %d other events)", names, timeout, len(seen))
		case <-ctx.Done():
			return hostapd.Event{}, seen, ctx.Err()
		}
	}
}

func ifUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("%s: get flags: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("%s: set up: %w", name, err)
	}
	return nil
}

func scenario(ctx context.Context, rep *reporter, hostapdBin string, radar bool) error {
	t := time.Now()
	modprobe := "/bin/modprobe" // meshroot's own, beside meshd
	if _, err := os.Stat(modprobe); err != nil {
		if p, err := exec.LookPath("modprobe"); err == nil {
			modprobe = p
		}
	}
	out, err := exec.CommandContext(ctx, modprobe, "mac80211_hwsim", "radios=3").CombinedOutput()
	rep.Report("modprobe", t, err, strings.TrimSpace(string(out)))
	if err != nil {
		return err
	}

	nl, err := nl80211.Open()
	if err != nil {
		rep.Report("nl80211", time.Now(), err, "")
		return err
	}
	defer nl.Close()
	t = time.Now()
	var ifs []nl80211.Interface
	err = poll(ctx, 20*time.Second, func() error {
		ifs, err = nl.Interfaces()
		if err != nil {
			return err
		}
		names := map[string]bool{}
		for _, i := range ifs {
			names[i.Name] = true
		}
		if !names[apIface] || !names[staIf] || !names[scanIf] {
			return fmt.Errorf("interfaces %v", ifs)
		}
		return nil
	})
	rep.Report("interfaces", t, err, fmt.Sprintf("%d interfaces", len(ifs)))
	if err != nil {
		return err
	}
	apPHY := -1
	for _, i := range ifs {
		if i.Name == apIface {
			apPHY = i.PHY
		}
	}

	// Regulatory domain US: 36-48 and 149-165 free, 52-144 DFS.
	t = time.Now()
	err = nl.SetCountry("US")
	if err == nil {
		err = poll(ctx, 20*time.Second, func() error {
			phys, err := nl.PHYs()
			if err != nil {
				return err
			}
			for _, p := range phys {
				if p.Index != apPHY {
					continue
				}
				st := map[int]nl80211.Channel{}
				for _, b := range p.Bands {
					for _, c := range b.Channels {
						st[c.Freq] = c
					}
				}
				if c := st[5260]; !c.Radar || c.Disabled {
					return fmt.Errorf("5260 MHz radar=%v disabled=%v", c.Radar, c.Disabled)
				}
				if c := st[5180]; c.Radar || c.Disabled || c.NoIR {
					return fmt.Errorf("5180 MHz radar=%v disabled=%v no-ir=%v", c.Radar, c.Disabled, c.NoIR)
				}
				if c := st[5260]; c.DFS != nl80211.DFSUsable {
					return fmt.Errorf("5260 MHz DFS state %d; want usable", c.DFS)
				}
				return nil
			}
			return fmt.Errorf("phy%d not found", apPHY)
		})
	}
	cc, _ := nl.Country()
	rep.Report("regulatory", t, err, "country "+cc)

	for _, name := range []string{staIf, scanIf} {
		if err := ifUp(name); err != nil {
			rep.Report("link up "+name, time.Now(), err, "")
			return err
		}
	}

	// hostapd with a configuration from radio/hostapd.
	t = time.Now()
	cfg := hostapd.Config{
		Interface: apIface, Country: "US", Channel: mustSpec(5180, 80),
		BSS: []hostapd.BSSConfig{{SSID: ssid, Security: hostapd.SecurityOpen, RRMNeighborReport: true, RRMBeaconReport: true, BSSTransition: true}},
	}
	conf, err := cfg.Render()
	confPath := "/tmp/hostapd-" + apIface + ".conf"
	if err == nil {
		err = os.WriteFile(confPath, conf, 0o600)
	}
	if err == nil {
		// hostapd creates its ctrl_interface directory but not the parents (no /var/run in
		// a u-root image).
		err = os.MkdirAll(filepath.Dir(hostapd.DefaultCtrlDir), 0o755)
	}
	var hapd *exec.Cmd
	if err == nil {
		logf, lerr := os.Create("/tmp/hostapd.log")
		if lerr != nil {
			err = lerr
		} else {
			defer logf.Close()
			hapd = exec.Command(hostapdBin, "-t", confPath)
			hapd.Stdout, hapd.Stderr = logf, logf
			err = hapd.Start()
		}
	}
	rep.Report("hostapd start", t, err, "")
	if err != nil {
		return err
	}
	defer func() {
		_ = hapd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = hapd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = hapd.Process.Kill()
			<-done
		}
	}()
	dumpLog := func() string {
		b, _ := os.ReadFile("/tmp/hostapd.log")
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) > 12 {
			lines = lines[len(lines)-12:]
		}
		return strings.Join(lines, " | ")
	}

	// Control client: STATUS until ENABLED.
	t = time.Now()
	ctrl := filepath.Join(hostapd.DefaultCtrlDir, apIface)
	var c *hostapd.Client
	err = poll(ctx, 30*time.Second, func() error {
		var derr error
		c, derr = hostapd.Dial(ctx, ctrl, hostapd.Options{})
		return derr
	})
	if err != nil {
		rep.Report("hostapd dial", t, err, dumpLog())
		return err
	}
	defer c.Close()
	if err := c.Attach(ctx); err != nil {
		rep.Report("hostapd attach", t, err, "")
		return err
	}
	var st hostapd.Status
	err = poll(ctx, 30*time.Second, func() error {
		var serr error
		st, serr = c.Status(ctx)
		if serr != nil {
			return serr
		}
		if st.State != "ENABLED" {
			return fmt.Errorf("state %s", st.State)
		}
		return nil
	})
	detail := ""
	if err == nil {
		spec, serr := st.Spec()
		detail = fmt.Sprintf("state %s freq %d spec %v ssid %q bssid %v", st.State, st.Freq, spec, bssSSID(st), bssID(st))
		switch {
		case serr != nil:
			err = serr
		case spec != mustSpec(5180, 80):
			err = fmt.Errorf("spec %v; want 36/80", spec)
		case bssSSID(st) != ssid:
			err = fmt.Errorf("ssid %q", bssSSID(st))
		}
	} else {
		detail = dumpLog()
	}
	rep.Report("status", t, err, detail)
	if err != nil {
		return err
	}
	// Raw replies and events for the parsers' fixtures (radio/hostapd/testdata).
	raw, rerr := c.Request(ctx, "STATUS")
	rep.Report("raw STATUS", time.Now(), rerr, raw)
	rec, rerr := hostapd.Dial(ctx, ctrl, hostapd.Options{})
	if rerr == nil {
		rerr = rec.Attach(ctx)
	}
	var recorded []string
	var recMu sync.Mutex
	recDone := make(chan struct{})
	if rerr == nil {
		go func() {
			defer close(recDone)
			for ev := range rec.Events() {
				recMu.Lock()
				recorded = append(recorded, ev.String())
				recMu.Unlock()
			}
		}()
		defer func() {
			rec.Close()
			<-recDone
			recMu.Lock()
			b, _ := json.Marshal(recorded)
			recMu.Unlock()
			rep.Report("raw events", time.Now(), nil, string(b))
		}()
	}
	rep.Report("event recorder", time.Now(), rerr, "")

	// A station on the second radio (nl80211 CONNECT, kernel SME).
	t = time.Now()
	w, err := wifi.New()
	if err != nil {
		rep.Report("station", t, err, "")
		return err
	}
	defer w.Close()
	var staMAC string
	connect := func() error {
		wifs, err := w.Interfaces()
		if err != nil {
			return err
		}
		for _, i := range wifs {
			if i.Name == staIf {
				staMAC = i.HardwareAddr.String()
				return w.Connect(i, ssid)
			}
		}
		return errors.New("no " + staIf)
	}
	err = connect()
	if err == nil {
		var ev hostapd.Event
		ev, _, err = waitEvent(ctx, c, 30*time.Second, hostapd.EventSTAConnected)
		if err == nil && ev.Addr.String() != staMAC {
			err = fmt.Errorf("AP-STA-CONNECTED for %s; want %s", ev.Addr, staMAC)
		}
	}
	rep.Report("station associated", t, err, "station "+staMAC)
	if err != nil {
		return err
	}
	t = time.Now()
	stas, err := c.Stations(ctx)
	if err == nil && (len(stas) != 1 || stas[0].Addr.String() != staMAC || !stas[0].HasFlag("ASSOC")) {
		err = fmt.Errorf("stations %+v", stas)
	}
	nst, nerr := nl.Stations(apIface)
	if err == nil && (nerr != nil || len(nst) != 1) {
		err = fmt.Errorf("nl80211 stations %v, %v", nst, nerr)
	}
	rep.Report("station list", t, err, fmt.Sprintf("%d via hostapd, %d via nl80211", len(stas), len(nst)))
	raw, rerr = c.Request(ctx, "STA-FIRST")
	rep.Report("raw STA-FIRST", time.Now(), rerr, raw)

	// 802.11k/v commands as hostapd parses them: the neighbour database, a BSS transition
	// request to the station, a beacon request (hostapd refuses it: the kernel-SME station
	// advertises no radio measurement capability).
	t = time.Now()
	bssid := st.BSS[0].BSSID
	oc, _ := hostapd.OpClass(mustSpec(5180, 80))
	nr := hostapd.NeighborReport{BSSID: bssid, BSSIDInfo: hostapd.BSSIDInfoReachable | hostapd.BSSIDInfoHT | hostapd.BSSIDInfoVHT,
		OpClass: oc, Channel: 36, PHYType: hostapd.PHYTypeVHT}
	err = c.SetNeighbor(ctx, ssid, nr)
	if err == nil && len(stas) == 1 {
		err = c.BSSTMReq(ctx, hostapd.BSSTMRequest{Addr: stas[0].Addr, Candidates: []hostapd.NeighborReport{nr}, ValidityInterval: 10})
	}
	beacon := "accepted"
	if err == nil && len(stas) == 1 {
		if _, berr := c.ReqBeacon(ctx, stas[0].Addr, 0, hostapd.BeaconRequest(oc, 36, 50, 0, nil)); berr != nil {
			if !errors.Is(berr, hostapd.ErrFail) {
				err = berr
			}
			beacon = "refused: " + berr.Error()
		}
	}
	if err == nil {
		err = c.RemoveNeighbor(ctx, ssid, bssid)
	}
	rep.Report("11k/11v commands", t, err, "beacon request "+beacon)

	// Scan from the idle third radio: our AP with its VHT80 width.
	t = time.Now()
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	err = nl.Scan(sctx, scanIf, nl80211.ScanOptions{Freqs: []int{5180}})
	cancel()
	var found nl80211.BSS
	if err == nil {
		var res []nl80211.BSS
		res, err = nl.ScanResults(scanIf)
		for _, b := range res {
			if b.SSID == ssid {
				found = b
			}
		}
		if err == nil && (found.Freq != 5180 || found.Width != 80 || found.Center1 != 5210) {
			err = fmt.Errorf("our BSS in the scan: %+v (of %d)", found, len(res))
		}
	}
	rep.Report("scan width", t, err, fmt.Sprintf("bssid %v freq %d width %d center %d signal %.0f dBm", found.BSSID, found.Freq, found.Width, found.Center1, found.Signal))

	// Scan from the AP itself, while beaconing (NL80211_SCAN_FLAG_AP).
	t = time.Now()
	sctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	err = nl.Scan(sctx, apIface, nl80211.ScanOptions{AP: true, Freqs: []int{5745}})
	cancel()
	rep.Report("ap scan", t, err, "")

	// Survey of the AP radio, into hostapd's ACS arithmetic.
	t = time.Now()
	surveys, err := nl.Survey(apIface)
	var acsRes chanplan.ACSResult
	if err == nil {
		withNoise := 0
		var chans []chanplan.ACSChannel
		for _, s := range surveys {
			if s.HasNoise {
				withNoise++
			}
			if chanplan.BandOf(s.Freq) != chanplan.Band5G || s.Time == 0 {
				continue
			}
			chans = append(chans, chanplan.ACSChannel{Freq: s.Freq, MaxTxPower: 20, Surveys: []chanplan.ACSSurvey{{
				NF: s.Noise, HasNF: s.HasNoise, ChannelTime: uint64(s.Time / time.Millisecond), HasTime: true,
				ChannelTimeBusy: uint64(s.TimeBusy / time.Millisecond), HasBusy: true,
			}}})
		}
		switch {
		case len(surveys) == 0:
			err = errors.New("no survey entries")
		case withNoise == 0:
			err = fmt.Errorf("%d survey entries, none with a noise floor", len(surveys))
		default:
			acsRes, err = chanplan.ACS(chanplan.Band5G, chans, chanplan.ACSConfig{Width: 20})
		}
		detail = fmt.Sprintf("%d entries; first %+v; ACS over %d channels picks %v", len(surveys), first(surveys), len(chans), acsRes.Spec)
	}
	rep.Report("survey", t, err, detail)

	// The channel switch with the station associated.
	t = time.Now()
	target := mustSpec(5745, 80)
	err = c.ChanSwitch(ctx, hostapd.ChanSwitch{Count: hostapd.CSACount(len(st.BSS)), Spec: target, HT: true, VHT: true})
	var seen []hostapd.Event
	if err == nil {
		var ev hostapd.Event
		ev, seen, err = waitEvent(ctx, c, 15*time.Second, hostapd.EventChannelSwitchStarted)
		if err == nil {
			if cs, ok := ev.ChannelSwitch(); !ok || cs.Freq != 5745 || cs.Width != 80 || cs.CF1 != 5775 {
				err = fmt.Errorf("STARTED-CHANNEL-SWITCH %q", ev.Text)
			}
		}
		if err == nil {
			var more []hostapd.Event
			_, more, err = waitEvent(ctx, c, 15*time.Second, hostapd.EventCSAFinished, hostapd.EventChannelSwitch)
			seen = append(seen, more...)
		}
	}
	if err == nil {
		for _, ev := range seen {
			if ev.Name == hostapd.EventSTADisconnected {
				err = fmt.Errorf("station disconnected during the switch: %s", ev.Text)
			}
		}
	}
	if err == nil {
		// Give the station a moment, then check both ends.
		err = poll(ctx, 10*time.Second, func() error {
			st2, err := c.Status(ctx)
			if err != nil {
				return err
			}
			if spec, _ := st2.Spec(); spec != target || st2.State != "ENABLED" {
				return fmt.Errorf("AP on %v (%s)", spec, st2.State)
			}
			stas, err := c.Stations(ctx)
			if err != nil || len(stas) != 1 {
				return fmt.Errorf("stations %d, %v", len(stas), err)
			}
			ifs, err := nl.Interfaces()
			if err != nil {
				return err
			}
			for _, i := range ifs {
				if i.Name == staIf && i.Freq != 5745 {
					return fmt.Errorf("station still on %d MHz", i.Freq)
				}
			}
			return nil
		})
	}
	rep.Report("csa keeps station", t, err, fmt.Sprintf("to %v in %v, %d other events", target, time.Since(t).Round(time.Millisecond), len(seen)))
	if !radar {
		return nil
	}
	return radarScenario(ctx, rep, nl, c, apPHY, dumpLog, connect, staMAC)
}

func bssSSID(st hostapd.Status) string {
	if len(st.BSS) == 0 {
		return ""
	}
	return st.BSS[0].SSID
}

func bssID(st hostapd.Status) string {
	if len(st.BSS) == 0 {
		return ""
	}
	return st.BSS[0].BSSID.String()
}

func first(s []nl80211.Survey) nl80211.Survey {
	if len(s) == 0 {
		return nl80211.Survey{}
	}
	return s[0]
}

// radarScenario moves the AP to a DFS channel (hostapd runs the 60 s CAC), starts the radio
// manager on it with the real nl80211 and hostapd, simulates radar through mac80211_hwsim's
// debugfs, and checks the radio leaves at once for a channel usable without CAC, stays up, and
// the manager keeps the radar channel blocked.
func radarScenario(ctx context.Context, rep *reporter, nl nl80211.Client, c *hostapd.Client, phy int, dumpLog func() string, connect func() error, staMAC string) error {
	t := time.Now()
	dfs := mustSpec(5260, 80)
	err := c.ChanSwitch(ctx, hostapd.ChanSwitch{Count: 5, Spec: dfs, HT: true, VHT: true})
	detail := ""
	if err == nil {
		var ev hostapd.Event
		ev, _, err = waitEvent(ctx, c, 20*time.Second, hostapd.EventCACStart)
		if err == nil {
			d, _ := ev.DFS()
			detail = fmt.Sprintf("CAC %v on %d MHz", d.CACTime, d.Freq)
			ev, _, err = waitEvent(ctx, c, 150*time.Second, hostapd.EventCACCompleted)
			if err == nil {
				if d, _ := ev.DFS(); !d.Success {
					err = fmt.Errorf("CAC failed: %s", ev.Text)
				}
			}
		}
	}
	if err == nil {
		err = poll(ctx, 20*time.Second, func() error {
			st, err := c.Status(ctx)
			if err != nil {
				return err
			}
			if sp, _ := st.Spec(); sp != dfs || st.State != "ENABLED" {
				return fmt.Errorf("AP on %v (%s)", sp, st.State)
			}
			return nil
		})
	}
	if err != nil {
		detail += " " + dumpLog()
	}
	rep.Report("dfs cac", t, err, detail)
	if err != nil {
		return err
	}

	// The CAC restarted the BSS: bring the station back.
	t = time.Now()
	err = poll(ctx, 30*time.Second, func() error {
		stas, err := c.Stations(ctx)
		if err == nil && len(stas) == 1 {
			return nil
		}
		if cerr := connect(); cerr != nil && !errors.Is(cerr, unix.EALREADY) && !errors.Is(cerr, unix.EBUSY) {
			return cerr
		}
		_, _, werr := waitEvent(ctx, c, 10*time.Second, hostapd.EventSTAConnected)
		return werr
	})
	rep.Report("station on dfs channel", t, err, "station "+staMAC)
	if err != nil {
		return err
	}

	// The radio manager takes over the radio (gateway of a one-node site).
	t = time.Now()
	logw := &lineCounter{}
	m, err := manager.New(manager.Config{
		Node: "vm", Gateway: true,
		Radios:      []manager.RadioConfig{{ID: "vm/" + apIface, Iface: apIface, Band: chanplan.Band5G, MaxWidth: 80, DFS: true}},
		SurveyEvery: 5 * time.Second, PlanEvery: 10 * time.Second,
		Log: slog.New(slog.NewJSONHandler(logw, nil)),
	}, manager.Deps{NL: nl})
	mctx, mcancel := context.WithCancel(ctx)
	defer mcancel()
	up := make(chan struct{})
	done := make(chan error, 1)
	if err == nil {
		go func() { done <- m.Run(mctx, func() { close(up) }) }()
		select {
		case <-up:
		case err = <-done:
		case <-time.After(60 * time.Second):
			err = errors.New("manager not up in 60 s")
		}
	}
	rep.Report("manager up", t, err, "")
	if err != nil {
		return err
	}
	defer func() {
		mcancel()
		<-done
	}()

	// Radar, as hwsim simulates it (cfg80211_radar_event on the operating channel).
	t = time.Now()
	if err := unix.Mount("debugfs", "/sys/kernel/debug", "debugfs", 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		rep.Report("debugfs", t, err, "")
		return err
	}
	path := fmt.Sprintf("/sys/kernel/debug/ieee80211/phy%d/hwsim/dfs_simulate_radar", phy)
	err = os.WriteFile(path, []byte("1"), 0)
	var ev hostapd.Event
	if err == nil {
		ev, _, err = waitEvent(ctx, c, 20*time.Second, hostapd.EventRadarDetected)
	}
	rep.Report("radar detected", t, err, ev.Text)
	if err != nil {
		return err
	}
	radarAt := time.Now()
	var final hostapd.Status
	err = poll(ctx, 30*time.Second, func() error {
		st, err := c.Status(ctx)
		if err != nil {
			return err
		}
		final = st
		sp, err := st.Spec()
		if err != nil {
			return err
		}
		if st.State != "ENABLED" {
			return fmt.Errorf("state %s on %v", st.State, sp)
		}
		for _, f := range sp.Subchannels() {
			if f >= 5260 && f <= 5720 {
				return fmt.Errorf("still on a DFS channel %v", sp)
			}
		}
		return nil
	})
	sp, _ := final.Spec()
	rep.Report("radar move without outage", t, err, fmt.Sprintf("on %v (%s) %v after radar; manager now %v", sp, final.State, time.Since(radarAt).Round(time.Millisecond), m.Current()))

	// The station followed the CSA: still associated, on the new channel.
	t = time.Now()
	err = poll(ctx, 15*time.Second, func() error {
		stas, err := c.Stations(ctx)
		if err != nil || len(stas) != 1 || stas[0].Addr.String() != staMAC {
			return fmt.Errorf("stations %d, %v", len(stas), err)
		}
		ifs, err := nl.Interfaces()
		if err != nil {
			return err
		}
		for _, i := range ifs {
			if i.Name == staIf && i.Freq != sp.Freq {
				return fmt.Errorf("station on %d MHz, AP on %d MHz", i.Freq, sp.Freq)
			}
		}
		return nil
	})
	rep.Report("station follows radar move", t, err, "")

	// The manager remembers the NOP of every 20 MHz channel of 52/80 and is off them.
	t = time.Now()
	var mem map[int]time.Time
	err = poll(ctx, 20*time.Second, func() error {
		cur := m.Current()["vm/"+apIface]
		for _, f := range cur.Subchannels() {
			if f >= 5260 && f <= 5320 {
				return fmt.Errorf("manager radio on %v", cur)
			}
		}
		mem = m.RadarMemory("vm/" + apIface)
		for _, f := range dfs.Subchannels() {
			if at, ok := mem[f]; !ok || time.Since(at) > chanplan.NOP {
				return fmt.Errorf("no NOP remembered for %d MHz (%v)", f, mem)
			}
		}
		if logw.count("radar detected") == 0 {
			return errors.New("manager did not log the radar")
		}
		return nil
	})
	rep.Report("manager radar memory", t, err, fmt.Sprintf("blocked %v; %d manager log lines", sortedFreqs(mem), logw.lines()))
	return nil
}

func sortedFreqs(m map[int]time.Time) []int {
	var out []int
	for f := range m {
		out = append(out, f)
	}
	slices.Sort(out)
	return out
}

// lineCounter collects the manager's log lines.
type lineCounter struct {
	mu  sync.Mutex
	buf []string
}

func (l *lineCounter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, strings.Split(strings.TrimRight(string(p), "\n"), "\n")...)
	return len(p), nil
}

func (l *lineCounter) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.buf {
		if strings.Contains(s, substr) {
			n++
		}
	}
	return n
}

func (l *lineCounter) lines() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buf)
}
