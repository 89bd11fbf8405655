package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"meshroot/firmware/status"
)

func init() {
	register(command{name: "status", summary: "show a device's status from its LAN status API (status --device http://192.168.1.1)", run: runStatus})
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("meshctl status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	device := fs.String("device", "http://192.168.1.1", "the device's status API (its LAN address)")
	asJSON := fs.Bool("json", false, "print the status document as the device serves it")
	metrics := fs.Bool("metrics", false, "print the device's Prometheus metrics instead")
	timeout := fs.Duration("timeout", 10*time.Second, "request timeout")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "meshctl status: unexpected arguments %q\n", fs.Args())
		return errUsage
	}
	u, err := url.Parse(strings.TrimSuffix(*device, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--device %q: want http://ADDRESS", *device)
	}
	path := "/status"
	if *metrics {
		path = "/metrics"
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String()+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("status of %s: %w", u.Host, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("status of %s: %w", u.Host, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status of %s: %s", u.Host, resp.Status)
	}
	if *metrics || *asJSON {
		_, err := stdout.Write(body)
		return err
	}
	var st status.Status
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("status of %s: %w", u.Host, err)
	}
	printStatus(stdout, st)
	return nil
}

func printStatus(w io.Writer, st status.Status) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	defer tw.Flush()
	row := func(k, format string, a ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, a...)) }
	up := (time.Duration(st.UptimeSeconds) * time.Second).String()
	row("device", "%s %s (%s), up %s", st.Board, st.Version, st.Hostname, up)
	if w := st.WAN; w != nil {
		line := fmt.Sprintf("%s %s %s", w.Interface, w.Mode, w.Phase)
		if w.Address.IsValid() {
			line += " " + w.Address.String()
		}
		if w.Gateway.IsValid() {
			line += " via " + w.Gateway.String()
		}
		if len(w.DNS) > 0 {
			var d []string
			for _, a := range w.DNS {
				d = append(d, a.String())
			}
			line += ", dns " + strings.Join(d, " ")
		}
		if !w.LeaseExpires.IsZero() {
			line += ", lease until " + w.LeaseExpires.Format(time.RFC3339)
		}
		if w.LastError != "" && !w.Up() {
			line += " (" + w.LastError + ")"
		}
		row("wan", "%s", line)
	} else {
		row("wan", "not running")
	}
	row("lan", "%s %s, %d leases", st.LAN.Bridge, st.LAN.Address, st.LAN.Leases)
	if d := st.DNS; d != nil {
		row("dns", "%d queries: %d local, %d cached, %d forwarded, %d failed", d.Queries, d.Local, d.Cached, d.Forwarded, d.Failed)
	}
	fw := "not applied"
	if st.Firewall.Applied {
		fw = fmt.Sprintf("applied, dropped %d in / %d forwarded", st.Firewall.DroppedInput, st.Firewall.DroppedForward)
		if len(st.Firewall.IKEFrom) > 0 {
			fw += ", IKE from " + strings.Join(st.Firewall.IKEFrom, " ")
		}
	}
	if st.Firewall.LastError != "" {
		fw += " (" + st.Firewall.LastError + ")"
	}
	row("firewall", "%s", fw)
	ob := st.Onboarding.Phase
	if st.Onboarding.SiteID != "" {
		ob += ", site " + st.Onboarding.SiteID
	}
	if st.Onboarding.Detail != "" {
		ob += ": " + st.Onboarding.Detail
	}
	row("onboarding", "%s", ob)
	if p := st.Profile; p != nil {
		exp := "expires " + p.ExpiresAt.Format(time.RFC3339)
		if p.Expired {
			exp = "EXPIRED " + p.ExpiresAt.Format(time.RFC3339) + ", kept as the last good profile"
		}
		row("profile", "v%d of %s (%s), %s", p.Version, p.SiteID, p.SiteName, exp)
	}
	vpn := st.VPN.State
	if st.VPN.Detail != "" {
		vpn += ": " + st.VPN.Detail
	}
	row("vpn", "%s", vpn)
	for _, t := range st.VPN.Tunnels {
		row("", "%s %s: IKE %s, ESP %s, BGP %s, prefixes %d in / %d out", t.Name, t.Outside, t.IKE, t.ESP, t.BGP, t.PrefixesIn, t.PrefixesOut)
	}
	o := st.OTA.State
	if st.OTA.Detail != "" {
		o += ": " + st.OTA.Detail
	}
	row("ota", "%s", o)
	if l := st.Logs; l != nil {
		row("logs", "%d pending, %d shipped, %d dropped", l.Pending, l.Shipped, l.Dropped)
	}
	row("memory", "rss %.1f MiB, go heap %.1f MiB, %d goroutines", float64(st.Memory.RSSBytes)/(1<<20), float64(st.Memory.GoHeapBytes)/(1<<20), st.Memory.Goroutines)
	var svcs []string
	for _, s := range st.Services {
		x := s.Name + " " + string(s.State)
		if s.Restarts > 0 {
			x += fmt.Sprintf(" (%d restarts)", s.Restarts)
		}
		svcs = append(svcs, x)
	}
	row("services", "%s", strings.Join(svcs, ", "))
}
