package lab

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// keep prints how to reach the lab and blocks until SIGINT or SIGTERM (see KeepEnv).
func (l *Lab) keep(ctx context.Context) {
	fmt.Fprint(os.Stderr, l.Describe())
	fmt.Fprintf(os.Stderr, "lab: %s is set: the lab stays up; press Ctrl-C (SIGINT) to tear it down\n", KeepEnv)
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
}

// Describe returns a human-readable summary of the lab: its directory, namespaces, processes
// with their PIDs and logs, and the commands to inspect strongSwan and FRR instances.
func (l *Lab) Describe() string {
	l.mu.Lock()
	nss := append([]*NS(nil), l.nss...)
	procs := append([]*Process(nil), l.procs...)
	l.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "lab dir: %s\n", l.dir)
	for _, ns := range nss {
		fmt.Fprintf(&b, "netns %-24s  ip netns exec %s bash\n", ns.Name, ns.Name)
	}
	for _, p := range procs {
		state := "running"
		if p.Exited() {
			state = "exited"
		}
		fmt.Fprintf(&b, "proc %-10s pid %-7d %-8s ns %s log %s\n", p.name, p.PID(), state, p.nsName(), p.LogPath())
		if p.hint != "" {
			fmt.Fprintf(&b, "     %s\n", p.hint)
		}
	}
	return b.String()
}
