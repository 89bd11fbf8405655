package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"meshroot/internal/lab"
	"meshroot/internal/testenv"
	"meshroot/provision/api"
	"meshroot/provision/devcloud"
	"meshroot/provision/enroll"
	"meshroot/provision/identity"
	"meshroot/provision/onboard"
	"meshroot/provision/profile"
)

// The onboarding lab: three namespaces.
//
//	phone  ph0 192.168.77.2/24 ── lan0 192.168.77.1/24  device  up0 10.77.0.2/24 ── cl0 10.77.0.1/24  cloud
//
// The device's uplink (up0) drops LossPercent of the packets in each direction (internal/lab's
// nftables impairment). Everything runs in this test process: each side's sockets are made
// inside its namespace (NS.Do), so the traffic crosses real veth pairs and the real kernel stack.
type onboardRig struct {
	l                  *lab.Lab
	phone, dev, cloudN *lab.NS
	cloud              *devcloud.Server
	op                 *api.Client
	cloudURL           string
	loss               float64
}

// nsDial makes connections from inside ns.
func nsDial(ns *lab.NS) enroll.DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := ns.Do(func() error {
			var err error
			c, err = (&net.Dialer{Timeout: 15 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

func nsListen(ns *lab.NS, addr string) (net.Listener, error) {
	var ln net.Listener
	err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	return ln, err
}

func newOnboardRig(tb testing.TB, loss float64) *onboardRig {
	tb.Helper()
	l := lab.New(tb)
	r := &onboardRig{l: l, loss: loss}
	var err error
	must := func(e error) {
		tb.Helper()
		if e != nil {
			tb.Fatal(e)
		}
	}
	r.phone, err = l.NewNS("obph")
	must(err)
	r.dev, err = l.NewNS("obdv")
	must(err)
	r.cloudN, err = l.NewNS("obcl")
	must(err)
	must(l.Veth(r.dev, "up0", r.cloudN, "cl0"))
	must(r.dev.AddAddr("up0", "10.77.0.2/24"))
	must(r.cloudN.AddAddr("cl0", "10.77.0.1/24"))
	must(l.Veth(r.dev, "lan0", r.phone, "ph0"))
	must(r.dev.AddAddr("lan0", "192.168.77.1/24"))
	must(r.phone.AddAddr("ph0", "192.168.77.2/24"))
	if loss > 0 {
		must(r.dev.Impair("up0", lab.Impairment{LossPercent: loss}))
	}

	r.cloud, err = devcloud.New(devcloud.Config{DataDir: tb.TempDir()})
	must(err)
	ln, err := nsListen(r.cloudN, "10.77.0.1:8443")
	must(err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.cloud.Serve(ctx, ln) }()
	tb.Cleanup(func() { cancel(); <-done; r.cloud.Close() })
	r.cloudURL = "https://10.77.0.1:8443"
	hc, err := api.TrustCA(r.cloud.CACertPEM(), 30*time.Second)
	must(err)
	hc.Transport.(*http.Transport).DialContext = nsDial(r.cloudN) // the operator works next to the cloud
	r.op = &api.Client{BaseURL: r.cloudURL, Token: r.cloud.AdminToken(), HTTP: hc}

	// A site with a VPN: the device resolves two PSKs and the mesh key before the profile counts.
	bg := context.Background()
	_, err = r.op.CreateSite(bg, api.CreateSiteRequest{ID: "lab-site"})
	must(err)
	vpn := exampleVPN()
	must(r.op.PutSecret(bg, vpn.Tunnels[0].PSKRef, psk1))
	must(r.op.PutSecret(bg, vpn.Tunnels[1].PSKRef, psk2))
	t := profile.NewSiteProfile("lab-site", "Lab")
	t.WiFi.SSID, t.Country, t.VPN = "Meshroot", "DE", vpn
	tb2, _ := json.Marshal(t)
	_, err = r.op.PutProfile(bg, "lab-site", tb2)
	must(err)
	return r
}

// onboardResult is one run's timings from the start of `app pair`.
type onboardResult struct {
	device time.Duration // until the device held a verified profile
	app    time.Duration // until the app saw the profile phase
}

// onboardOnce pairs a fresh device (new key, new data directory) with the app, as `meshctl app
// pair` does, and times it.
func (r *onboardRig) onboardOnce(tb testing.TB, n int) (onboardResult, error) {
	tb.Helper()
	bg := context.Background()
	claim, err := r.op.Claim(bg, "lab-site", time.Hour)
	if err != nil {
		return onboardResult{}, err
	}
	code, _ := identity.NewSetupCode(nil)
	fac, label, err := identity.NewFactory(fmt.Sprintf("MR-LAB-%04d", n), "lab", code, uint16(n)&0xfff, identity.DefaultIterations, nil)
	if err != nil {
		return onboardResult{}, err
	}
	ln, err := nsListen(r.dev, "192.168.77.1:0")
	if err != nil {
		return onboardResult{}, err
	}
	logs := &syncBuffer{}
	a, err := New(Config{DataDir: tb.TempDir(), Factory: fac, OnboardListener: ln, Dial: nsDial(r.dev),
		PollWait: 20 * time.Second, ErrorDelay: 200 * time.Millisecond, OnboardGrace: 5 * time.Second,
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		return onboardResult{}, err
	}
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	var (
		mu  sync.Mutex
		got time.Time
	)
	held := make(chan struct{})
	a.Subscribe(func(v *profile.Verified) {
		mu.Lock()
		defer mu.Unlock()
		if got.IsZero() && v.VPN != nil {
			got = time.Now()
			close(held)
		}
	})
	done := make(chan error, 1)
	up := make(chan struct{})
	var once sync.Once
	go func() { done <- a.Run(ctx, func() { once.Do(func() { close(up) }) }) }()
	<-up
	defer func() { cancel(); <-done }()

	appHC := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: nsDial(r.phone)}}
	actx, acancel := context.WithTimeout(bg, 60*time.Second)
	defer acancel()
	start := time.Now()
	sess, err := onboard.Pair(actx, &onboard.HTTPTransport{URL: "http://" + ln.Addr().String(), Client: appHC}, label)
	if err != nil {
		return onboardResult{}, fmt.Errorf("pair: %w", err)
	}
	if _, err := sess.Setup(actx, onboard.Setup{ClaimToken: claim.Token, CloudURL: claim.CloudURL, CAPin: claim.CAPin,
		SiteName: "Lab", WiFiSSID: "Meshroot", WiFiPassphrase: passphrase, Country: "DE"}); err != nil {
		return onboardResult{}, fmt.Errorf("setup: %w", err)
	}
	if _, err := sess.WaitProfile(actx, 100*time.Millisecond, nil); err != nil {
		return onboardResult{}, fmt.Errorf("wait: %w\ndevice log:\n%s", err, logs.String())
	}
	appDone := time.Since(start)
	select {
	case <-held:
	case <-actx.Done():
		return onboardResult{}, fmt.Errorf("device never held the profile")
	}
	mu.Lock()
	dev := got.Sub(start)
	mu.Unlock()
	if v, _ := a.Secret(exampleVPN().Tunnels[1].PSKRef); v != psk2 {
		return onboardResult{}, fmt.Errorf("device holds the profile without its PSK")
	}
	return onboardResult{device: dev, app: appDone}, nil
}

func (r *onboardRig) dropped(tb testing.TB) lab.ImpairStats {
	if r.loss == 0 {
		return lab.ImpairStats{}
	}
	s, err := r.dev.ImpairStats("up0")
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// TestLabOnboardingLossyUplink: one zero-touch onboarding through the namespace lab with 5 %
// loss on the device's uplink, the cloud at its own address, the app on the LAN.
func TestLabOnboardingLossyUplink(t *testing.T) {
	testenv.Integration(t)
	r := newOnboardRig(t, 5)
	res, err := r.onboardOnce(t, 1)
	if err != nil {
		t.Fatalf("onboarding through a 5%% lossy uplink: %v", err)
	}
	s := r.dropped(t)
	t.Logf("onboarded in %v (app saw it after %v); uplink packets in %d (dropped %d), out %d (dropped %d)",
		res.device, res.app, s.InSeen, s.InDropped, s.OutSeen, s.OutDropped)
	if s.InSeen+s.OutSeen == 0 {
		t.Errorf("no packets crossed the impaired uplink: the lab is not on the path")
	}
}

// BenchmarkLabOnboarding: onboarding time from the start of `app pair` to the device holding
// a verified profile (with its VPN PSKs resolved), 20 runs (MESHROOT_ONBOARD_RUNS) each with
// 5 % loss on the device's uplink and, as the same-run baseline, without loss. Every run must
// succeed.
func BenchmarkLabOnboarding(b *testing.B) {
	testenv.Integration(b)
	runs := 20
	if v, err := strconv.Atoi(os.Getenv("MESHROOT_ONBOARD_RUNS")); err == nil && v > 0 {
		runs = v
	}
	type series struct {
		name string
		loss float64
	}
	for _, s := range []series{{"loss5", 5}, {"loss0", 0}} {
		r := newOnboardRig(b, s.loss)
		var dev []time.Duration
		for i := 0; i < runs; i++ {
			res, err := r.onboardOnce(b, i+1)
			if err != nil {
				b.Fatalf("%s run %d of %d failed: %v", s.name, i+1, runs, err)
			}
			dev = append(dev, res.device)
		}
		slices.Sort(dev)
		med := dev[len(dev)/2]
		if len(dev)%2 == 0 {
			med = (dev[len(dev)/2-1] + dev[len(dev)/2]) / 2
		}
		p95 := dev[(95*len(dev)+99)/100-1]
		st := r.dropped(b)
		b.Logf("%s: %d/%d onboarded; median %v, p95 %v, max %v; all %v; uplink dropped %d of %d packets",
			s.name, len(dev), runs, med, p95, dev[len(dev)-1], dev, st.InDropped+st.OutDropped, st.InSeen+st.OutSeen)
		b.ReportMetric(med.Seconds(), s.name+"-median-s")
		b.ReportMetric(p95.Seconds(), s.name+"-p95-s")
		b.ReportMetric(float64(len(dev)), s.name+"-ok")
	}
}
