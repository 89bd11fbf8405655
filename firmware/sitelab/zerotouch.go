package sitelab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"meshroot/firmware"
	"meshroot/firmware/status"
	"meshroot/image/qemu"
	"meshroot/provision/identity"
	"meshroot/provision/onboard"
)

// The zero-touch milestones, in the order they normally happen (the onboarding phases come
// from the device over the pairing channel; the tunnels' from its status API).
const (
	StepQEMU      = "qemu started"
	StepReady     = "meshd ready"
	StepWAN       = "WAN address by DHCP"
	StepLANLease  = "LAN client lease"
	StepPairPort  = "pairing port open"
	StepPaired    = "paired, setup handed over"
	StepEnrolling = "enrolling"
	StepEnrolled  = "enrolled (mTLS certificate)"
	StepProfile   = "verified profile"
	StepTunnel1   = "tunnel1 Established"
	StepTunnel2   = "tunnel2 Established"
	StepBGP1      = "tunnel1 BGP Established"
	StepBGP2      = "tunnel2 BGP Established"
	StepRoute     = "VPC route learned"
	StepVPCPing   = "LAN client -> VPC host ping"
)

// phaseSteps maps the device's onboarding phases to milestones.
var phaseSteps = map[string]string{
	onboard.PhasePaired: StepPaired, onboard.PhaseConfigured: StepPaired, onboard.PhaseEnrolling: StepEnrolling,
	onboard.PhaseEnrolled: StepEnrolled, onboard.PhaseProfile: StepProfile,
}

// Step is one milestone reached.
type Step struct {
	Name string
	// At is the time since QEMU started.
	At     time.Duration
	Detail string
}

// PairRequest is one pairing from the LAN client.
type PairRequest struct {
	// URL is the device's pairing endpoint (http://192.168.1.1:8080).
	URL string
	// HTTP dials from the LAN client's namespace.
	HTTP   *http.Client
	Device *Device
	// OnProgress receives the device's onboarding progress.
	OnProgress func(onboard.Progress)
	// Wait bounds the wait for the device's verified profile.
	Wait time.Duration
}

// PairFunc pairs with the device and waits until it holds its verified profile. `meshctl run`
// passes `meshctl app pair`'s library call; PairApp is the same steps for tests.
type PairFunc func(ctx context.Context, r PairRequest) error

// PairApp pairs as the phone app does (the steps of `meshctl app pair`: scan the label,
// SPAKE2+ with its setup code, hand over the setup in the encrypted channel, follow the device
// until it holds a verified profile).
func PairApp(ctx context.Context, r PairRequest) error {
	label, err := identity.ParsePayload(r.Device.QR)
	if err != nil {
		return err
	}
	tr := &onboard.HTTPTransport{URL: r.URL, Client: r.HTTP}
	sess, err := onboard.Pair(ctx, tr, label)
	if err != nil {
		return fmt.Errorf("pair with %s: %w", label.Serial, err)
	}
	p, err := sess.Setup(ctx, r.Device.Setup)
	if err != nil {
		return fmt.Errorf("setup of %s: %w", label.Serial, err)
	}
	if p != nil && r.OnProgress != nil {
		r.OnProgress(*p)
	}
	wctx, cancel := context.WithTimeout(ctx, r.Wait)
	defer cancel()
	_, err = sess.WaitProfile(wctx, 100*time.Millisecond, r.OnProgress)
	return err
}

// ZeroTouchOptions tune ZeroTouch.
type ZeroTouchOptions struct {
	// Pair pairs the app with the router (default PairApp).
	Pair PairFunc
	// OnStep receives each milestone as it is reached (from several goroutines, one at a time).
	OnStep func(Step)
	// Hostname is the LAN client's DHCP host name (default "phone").
	Hostname string
	// Poll is the status poll interval (default 250 ms).
	Poll time.Duration
}

// ZeroTouchResult is what ZeroTouch saw.
type ZeroTouchResult struct {
	Steps []Step
	// Ready is meshd's ready line.
	Ready firmware.ReadyInfo
	// Status is the router's status when both tunnels and BGP sessions were up.
	Status status.Status
	// Total is the time from QEMU's start to the first LAN → VPC ping answered.
	Total time.Duration
}

// Step returns the named milestone, if reached.
func (r *ZeroTouchResult) Step(name string) (Step, bool) {
	for _, s := range r.Steps {
		if s.Name == name {
			return s, true
		}
	}
	return Step{}, false
}

// ZeroTouch follows a freshly booted router through zero-touch onboarding, as the customer
// does it: wait for meshd, get a LAN lease on the LAN client, pair the app with the router from
// the LAN client as soon as the pairing port answers, and then, with nothing more from the app,
// wait until the router has both tunnels Established, BGP Established on both, the VPC route
// learned, and the LAN client's ping to the VPC host answered.
func (s *Site) ZeroTouch(ctx context.Context, vm *qemu.VM, d *Device, o ZeroTouchOptions) (*ZeroTouchResult, error) {
	if o.Pair == nil {
		o.Pair = PairApp
	}
	if o.Hostname == "" {
		o.Hostname = "phone"
	}
	if o.Poll <= 0 {
		o.Poll = 250 * time.Millisecond
	}
	res := &ZeroTouchResult{}
	var mu sync.Mutex
	seen := map[string]bool{}
	emit := func(name string, at time.Duration, detail string) {
		mu.Lock()
		defer mu.Unlock()
		if seen[name] {
			return
		}
		seen[name] = true
		st := Step{Name: name, At: at, Detail: detail}
		res.Steps = append(res.Steps, st)
		if o.OnStep != nil {
			o.OnStep(st)
		}
	}
	since := func() time.Duration { return time.Since(vm.Started()) }
	emit(StepQEMU, 0, "")
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	// The WAN lease is the router's business: watch for it on the side.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if a := s.RouterWAN(); a.IsValid() {
				emit(StepWAN, since(), a.String())
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	line, err := vm.WaitFor(ctx, firmware.ReadyMarker)
	if err != nil {
		return res, fmt.Errorf("waiting for meshd's ready line: %w", err)
	}
	if res.Ready, err = firmware.ParseReadyLine(line.Text); err != nil {
		return res, err
	}
	emit(StepReady, line.At, strings.Join(res.Ready.Services, " "))
	var lease Lease
	for {
		if lease, err = s.LANLease(ctx, o.Hostname); err == nil {
			break
		}
		if ctx.Err() != nil {
			return res, fmt.Errorf("LAN client lease: %w", err)
		}
	}
	emit(StepLANLease, since(), lease.Addr.String())
	pairAddr := netip.AddrPortFrom(RouterLAN, PairingPort)
	for {
		err := s.LAN.Do(func() error {
			c, err := net.DialTimeout("tcp", pairAddr.String(), time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return res, fmt.Errorf("pairing port %s: %w", pairAddr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	emit(StepPairPort, since(), pairAddr.String())
	err = o.Pair(ctx, PairRequest{URL: "http://" + pairAddr.String(), HTTP: HTTPClient(s.LAN, 30*time.Second), Device: d, Wait: 3 * time.Minute,
		OnProgress: func(p onboard.Progress) {
			// Progress comes over the paired channel once the setup is handed over: the
			// first report means SPAKE2+ with the label's code succeeded and the device took
			// the setup.
			emit(StepPaired, since(), "SPAKE2+ with the label's setup code")
			if name, ok := phaseSteps[p.Phase]; ok {
				detail := p.Detail
				if p.Phase == onboard.PhaseProfile {
					detail = fmt.Sprintf("v%d of site %s", p.ProfileVersion, p.SiteID)
				}
				emit(name, since(), detail)
			}
		}})
	if err != nil {
		return res, err
	}
	emit(StepProfile, since(), "")
	// From here on the router is on its own.
	st, total, err := s.waitConnected(ctx, vm, o.Poll, emit)
	res.Status, res.Total = st, total
	return res, err
}

// WaitConnected follows the router (already booted, holding its profile, e.g. after a reboot)
// until it has both tunnels Established, BGP Established on both, the VPC route and the LAN
// client's ping to the VPC host answered: the same milestones as ZeroTouch's last ones, each
// given to onStep (nil: none) once. It returns the last status and the time from QEMU's start
// to the ping. The LAN client must hold a lease (LANLease).
func (s *Site) WaitConnected(ctx context.Context, vm *qemu.VM, onStep func(Step)) (status.Status, time.Duration, error) {
	var mu sync.Mutex
	seen := map[string]bool{}
	return s.waitConnected(ctx, vm, 250*time.Millisecond, func(name string, at time.Duration, detail string) {
		mu.Lock()
		defer mu.Unlock()
		if !seen[name] && onStep != nil {
			onStep(Step{Name: name, At: at, Detail: detail})
		}
		seen[name] = true
	})
}

func (s *Site) waitConnected(ctx context.Context, vm *qemu.VM, poll time.Duration, emit func(name string, at time.Duration, detail string)) (status.Status, time.Duration, error) {
	since := func() time.Duration { return time.Since(vm.Started()) }
	var last status.Status
	var lastErr error
	reached := map[string]bool{}
	mark := func(name, detail string) {
		if !reached[name] {
			reached[name] = true
			emit(name, since(), detail)
		}
	}
	for {
		st, _, err := s.Status(ctx)
		lastErr = err
		if err == nil {
			last = st
			for i, t := range st.VPN.Tunnels {
				if i > 1 {
					break
				}
				if t.IKE == "Established" && t.ESP == "Established" {
					mark([]string{StepTunnel1, StepTunnel2}[i], t.Outside)
				}
				if t.BGP == "Established" {
					mark([]string{StepBGP1, StepBGP2}[i], fmt.Sprintf("%d prefixes in", t.PrefixesIn))
				}
			}
			if tun, ok := st.VPN.Routes[VPCPrefix.String()]; ok {
				mark(StepRoute, fmt.Sprintf("%s via %s", VPCPrefix, strings.Join(tun, ", ")))
			}
			if TunnelsUp(st) {
				if rtt, err := s.Ping(VPCHost, time.Second); err == nil {
					total := since()
					emit(StepVPCPing, total, fmt.Sprintf("%s answered in %.1f ms", VPCHost, float64(rtt.Microseconds())/1000))
					return st, total, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			b, _ := json.Marshal(last.VPN)
			return last, 0, fmt.Errorf("waiting for both tunnels, BGP and the VPC route: %w (last error %v; last VPN status %s)", ctx.Err(), lastErr, b)
		case <-vm.Done():
			return last, 0, fmt.Errorf("QEMU exited: %v", vm.Wait())
		case <-time.After(poll):
		}
	}
}

// Status fetches the router's GET /status from the LAN client, as the app does: the document
// and its raw JSON.
func (s *Site) Status(ctx context.Context) (status.Status, []byte, error) {
	return s.getStatus(ctx, "/status")
}

// Metrics fetches the router's GET /metrics from the LAN client.
func (s *Site) Metrics(ctx context.Context) ([]byte, error) {
	_, b, err := s.getStatus(ctx, "/metrics")
	return b, err
}

func (s *Site) getStatus(ctx context.Context, path string) (status.Status, []byte, error) {
	var st status.Status
	hc := HTTPClient(s.LAN, 10*time.Second)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s%s", netip.AddrPortFrom(RouterLAN, StatusPort), path), nil)
	if err != nil {
		return st, nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return st, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return st, b, err
	}
	if resp.StatusCode != http.StatusOK {
		return st, b, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	if path == "/status" {
		if err := json.Unmarshal(b, &st); err != nil {
			return st, b, fmt.Errorf("GET /status: %w", err)
		}
	}
	return st, b, nil
}

// WaitStatus polls the router's status from the LAN client until cond holds; it returns the
// last status (and the last error) when ctx ends first.
func (s *Site) WaitStatus(ctx context.Context, every time.Duration, cond func(status.Status) bool) (status.Status, error) {
	var last status.Status
	var lastErr error
	for {
		st, _, err := s.Status(ctx)
		if err == nil && cond(st) {
			return st, nil
		}
		if err == nil {
			last = st
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return last, errors.Join(ctx.Err(), lastErr)
		case <-time.After(every):
		}
	}
}

// TunnelsUp reports whether the status shows both tunnels Established (IKE and ESP), BGP
// Established on both, and a route to the VPC.
func TunnelsUp(st status.Status) bool {
	if len(st.VPN.Tunnels) != 2 {
		return false
	}
	for _, t := range st.VPN.Tunnels {
		if t.IKE != "Established" || t.ESP != "Established" || t.BGP != "Established" {
			return false
		}
	}
	_, ok := st.VPN.Routes[VPCPrefix.String()]
	return ok
}

var rttRE = regexp.MustCompile(`time=([0-9.]+) ms`)

// Ping sends one ping from the LAN client to dst and returns its round-trip time.
func (s *Site) Ping(dst netip.Addr, timeout time.Duration) (time.Duration, error) {
	w := max(1, int(timeout.Round(time.Second)/time.Second))
	out, err := s.LAN.Run("ping", "-n", "-c", "1", "-W", strconv.Itoa(w), dst.String())
	if err != nil {
		return 0, err
	}
	m := rttRE.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("ping %s: no round-trip time in %q", dst, out)
	}
	ms, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, fmt.Errorf("ping %s: %w", dst, err)
	}
	return time.Duration(ms * float64(time.Millisecond)), nil
}
