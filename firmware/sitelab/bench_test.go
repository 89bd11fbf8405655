package sitelab

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"meshroot/firmware/status"
	"meshroot/firmware/vpnhook"
	"meshroot/image/imagetest"
	"meshroot/internal/testenv"
	"meshroot/provision/onboard"
)

// BenchmarkVMZeroTouch: zero-touch time from QEMU's start to the router holding its verified
// site profile, as the app sees it: the router boots, the phone on the LAN gets its address by
// DHCP from it, pairs as soon as the pairing port answers, hands over the site, and follows
// the router through enrollment to the profile. Each run has a fresh disk, cloud and lab
// (MESHROOT_ZT_RUNS runs, default 3). Also reports meshd's RSS with every service up and the
// image's sizes.
func BenchmarkVMZeroTouch(b *testing.B) {
	testenv.Integration(b)
	runs := 3
	if v, err := strconv.Atoi(os.Getenv("MESHROOT_ZT_RUNS")); err == nil && v > 0 {
		runs = v
	}
	var times, ready []time.Duration
	var rss []float64
	var initramfs, raw int64
	for i := 0; i < runs; i++ {
		func() {
			w := newWorld(b, time.Hour)
			initramfs, raw = w.img.Initramfs.Size, w.img.RawSize
			vm := w.boot(b, "zt")
			start := vm.Started()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			_, line, err := imagetest.WaitReady(ctx, vm)
			if err != nil {
				b.Fatal(err)
			}
			ready = append(ready, line.At)
			if _, err := w.site.LANLease(ctx, "phone"); err != nil {
				b.Fatal(err)
			}
			addr := fmt.Sprintf("%s:8080", RouterLAN)
			for {
				err := w.site.LAN.Do(func() error {
					c, err := net.DialTimeout("tcp", addr, time.Second)
					if err == nil {
						c.Close()
					}
					return err
				})
				if err == nil {
					break
				}
				if ctx.Err() != nil {
					b.Fatalf("pairing port never answered: %v", err)
				}
				time.Sleep(100 * time.Millisecond)
			}
			tr := &onboard.HTTPTransport{URL: "http://" + addr, Client: HTTPClient(w.site.LAN, 30*time.Second)}
			sess, err := onboard.Pair(ctx, tr, w.label)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := sess.Setup(ctx, onboard.Setup{ClaimToken: w.claim.Token, CloudURL: w.claim.CloudURL, CAPin: w.claim.CAPin,
				SiteName: "VM site", WiFiSSID: "Meshroot", WiFiPassphrase: passphrase, Country: "DE"}); err != nil {
				b.Fatal(err)
			}
			if _, err := sess.WaitProfile(ctx, 100*time.Millisecond, nil); err != nil {
				b.Fatal(err)
			}
			times = append(times, time.Since(start))
			st := w.waitStatus(b, "the VPN connection", time.Minute, func(st status.Status) bool { return st.VPN.State == vpnhook.StateRunning })
			rss = append(rss, float64(st.Memory.RSSBytes)/(1<<20))
			vm.Stop()
		}()
	}
	if len(times) == 0 {
		return
	}
	slices.Sort(times)
	slices.Sort(ready)
	slices.Sort(rss)
	b.ReportMetric(float64(times[len(times)/2].Milliseconds()), "zero-touch-median-ms")
	b.ReportMetric(float64(times[len(times)-1].Milliseconds()), "zero-touch-max-ms")
	b.ReportMetric(float64(ready[len(ready)/2].Milliseconds()), "boot-to-ready-median-ms")
	b.ReportMetric(rss[len(rss)/2], "meshd-rss-MiB")
	b.ReportMetric(float64(initramfs)/(1<<20), "initramfs-MiB")
	b.ReportMetric(float64(raw)/(1<<20), "initramfs-raw-MiB")
	b.Logf("zero-touch (QEMU start to verified profile) over %d runs: %v; boot to ready: %v; meshd RSS MiB: %v", len(times), times, ready, rss)
}
