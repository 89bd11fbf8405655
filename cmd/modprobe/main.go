// Command modprobe loads a kernel module and its dependencies, in order, from
// /lib/modules/$(uname -r)/modules.dep, with the same loader meshd uses at boot. It is the
// field engineer's tool on a u-root image, which has no kmod:
//
//	modprobe mac80211_hwsim radios=3     load with parameters
//	modprobe -a tun bridge nft_masq      load several modules
//	modprobe -n ext4                     print what would be loaded, in order
//
// A module that is already loaded, or built into the kernel, is not an error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"meshroot/firmware"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "modprobe:", err)
		}
		os.Exit(1)
	}
}

// kernel loads the modules; tests swap in a fake.
var kernel firmware.ModuleKernel = firmware.RealModuleKernel{}

func run(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("modprobe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: modprobe [-n] [-v] [-q] [-d dir] module [param=value ...]\n       modprobe -a [-n] [-v] [-q] [-d dir] module...")
		fs.PrintDefaults()
	}
	all := fs.Bool("a", false, "load every argument as a module name")
	dry := fs.Bool("n", false, "dry run: print the modules that would be loaded, in order")
	verbose := fs.Bool("v", false, "print each module as it is loaded")
	quiet := fs.Bool("q", false, "no error for a module that is not found")
	dir := fs.String("d", "", "modules directory (default /lib/modules/$(uname -r))")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return flag.ErrHelp
	}
	if *dir == "" {
		var u unix.Utsname
		if err := unix.Uname(&u); err != nil {
			return fmt.Errorf("uname: %w", err)
		}
		*dir = filepath.Join("/lib/modules", unix.ByteSliceToString(u.Release[:]))
	}
	names := fs.Args()
	params := ""
	if !*all {
		names, params = fs.Args()[:1], strings.Join(fs.Args()[1:], " ")
	}
	l, err := firmware.NewModuleLoader(*dir, kernel)
	if err != nil {
		return err
	}
	if *dry {
		for _, n := range names {
			if l.Builtin(n) && !l.Deps().Has(n) {
				fmt.Fprintf(stdout, "builtin %s\n", firmware.NormalizeModuleName(n))
				continue
			}
			order, err := l.Deps().Order(n)
			if err != nil {
				return err
			}
			for _, m := range order {
				f, _ := l.Deps().File(m)
				if !filepath.IsAbs(f) {
					f = filepath.Join(*dir, f)
				}
				fmt.Fprintf(stdout, "insmod %s\n", f)
			}
		}
		return nil
	}
	var errs []error
	for _, n := range names {
		if *quiet && !l.Deps().Has(n) && !l.Builtin(n) {
			continue
		}
		loaded, err := l.Load(n, params)
		if *verbose {
			for _, m := range loaded {
				fmt.Fprintf(stdout, "loaded %s\n", m)
			}
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
