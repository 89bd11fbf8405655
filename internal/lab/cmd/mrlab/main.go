// Command mrlab brings a namespace lab up by hand and keeps it up until Ctrl-C, for debugging
// against the same strongSwan + FRR peers the tests use:
//
//	go run ./internal/lab/cmd/mrlab concentrator            # AWS-like two-endpoint concentrator
//	go run ./internal/lab/cmd/mrlab -site 1 concentrator    # ...with a strongSwan site on tunnel 1
//	go run ./internal/lab/cmd/mrlab sspair                  # the notes' strongSwan ↔ strongSwan pair
//
// It needs root. Namespaces are named mrlab-*; leftovers of a crashed run are swept at start.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"meshroot/internal/lab"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "mrlab:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mrlab", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "lab directory (default: a new temporary directory, removed on exit)")
	verbose := fs.Bool("v", false, "debug logging")
	static := fs.Bool("static", false, "concentrator: static routing (no BGP)")
	ipv6 := fs.Bool("ipv6", false, "tunnels over the IPv6 outside addresses")
	site := fs.Int("site", 0, "concentrator: run a strongSwan + FRR site on tunnel 1 or 2")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mrlab [flags] concentrator|sspair")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("want one topology: concentrator or sspair")
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces)")
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	const prefix = "mrlab"
	if gone, err := lab.SweepNamespaces(prefix); err != nil {
		return err
	} else if len(gone) > 0 {
		log.Info("swept leftover namespaces", "names", gone)
	}
	l, err := lab.Open(lab.Options{Dir: *dir, Logger: log, Prefix: prefix})
	if err != nil {
		return err
	}
	defer func() {
		if err := l.Close(); err != nil {
			log.Error("teardown", "err", err)
		}
	}()
	upCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	switch fs.Arg(0) {
	case "concentrator":
		c, err := lab.NewConcentrator(l, lab.ConcentratorConfig{Static: *static, OutsideIPv6: *ipv6})
		if err != nil {
			return err
		}
		if err := c.WaitReady(upCtx); err != nil {
			return err
		}
		for _, t := range c.Tunnels() {
			fmt.Fprintf(stdout, "%s: endpoint %s, site %s, inside %s %s (AWS %s, site %s), AS %d <-> %d, MED %d\n",
				t.Name, t.Outside, t.SiteOutside, t.Inside4, t.Inside6, t.AWSInside4, t.SiteInside4, t.ASN, t.SiteASN, t.MED)
		}
		fmt.Fprintf(stdout, "site ns %s (our client), site LAN ns %s (%s), VPC ns %s (%s), internet ns %s\n",
			c.Site.Name, c.SiteLAN.Name, c.Addrs.SiteLANHost4, c.VPC.Name, c.Addrs.VPCHost4, c.Internet.Name)
		if *site != 0 {
			s, err := c.StartSiteStrongSwan(*site)
			if err != nil {
				return err
			}
			if err := s.WaitUp(upCtx); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "site strongSwan on tunnel %d is up\n", *site)
		}
	case "sspair":
		p, err := lab.NewStrongSwanPair(l, lab.StrongSwanPairConfig{OutsideIPv6: *ipv6, NoBGP: *static})
		if err != nil {
			return err
		}
		if err := p.WaitUp(upCtx); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "A %s (LAN host %s %s), B %s (LAN host %s %s): tunnel and BGP up\n",
			p.A.Name, p.AHost.Name, p.Addrs.AHost4, p.B.Name, p.BHost.Name, p.Addrs.BHost4)
	default:
		fs.Usage()
		return fmt.Errorf("unknown topology %q", fs.Arg(0))
	}
	fmt.Fprint(stdout, l.Describe())
	fmt.Fprintln(stdout, "PSKs are in each instance's swanctl.conf (mode 0600). Ctrl-C tears everything down.")
	<-ctx.Done()
	return nil
}
