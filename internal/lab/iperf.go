package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"time"
)

// IperfServer is an iperf3 server (-s) running in a namespace, bound to one address (an unbound
// server answers UDP from the wrong source address through the tunnel: notes pitfall 9).
type IperfServer struct {
	NS   *NS
	Addr string
	Port int
	Proc *Process
}

// StartIperfServer starts `iperf3 -s -B addr -p port` in ns and waits until it listens.
func (l *Lab) StartIperfServer(ns *NS, addr string, port int) (*IperfServer, error) {
	if _, err := netip.ParseAddr(addr); err != nil {
		return nil, fmt.Errorf("lab: iperf3 server address %q: %w", addr, err)
	}
	if port == 0 {
		port = 5201
	}
	p, err := l.StartProcess(ProcessSpec{
		Name: fmt.Sprintf("iperf3-s-%s-%d", ns.shortName(), port), NS: ns, Path: "iperf3",
		Args: []string{"-s", "-B", addr, "-p", fmt.Sprint(port), "--forceflush"},
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for !strings.Contains(p.Log(), "Server listening on") {
		if p.Exited() {
			return nil, fmt.Errorf("lab: iperf3 server in %s exited: %v: %s", ns.Name, p.Err(), p.Log())
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("lab: iperf3 server in %s: not listening: %w", ns.Name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return &IperfServer{NS: ns, Addr: addr, Port: port, Proc: p}, nil
}

// IperfOptions configure one iperf3 client run.
type IperfOptions struct {
	// Server is the server address; Port its port (default 5201).
	Server string
	Port   int
	// Bind is the client's source address (-B), e.g. a LAN address to use the BGP route.
	Bind string
	// Duration of the test (default 5 s).
	Duration time.Duration
	// Parallel streams (-P); 0 or 1 is a single stream.
	Parallel int
	// UDP test (-u) with datagram Length (-l) and target Bitrate (-b, e.g. "1G", "0" for
	// unlimited).
	UDP     bool
	Length  int
	Bitrate string
	// Reverse makes the server send (-R).
	Reverse bool
	// Omit skips the first N seconds (-O).
	Omit int
}

// IperfResult is the summary of an iperf3 -J run.
type IperfResult struct {
	SentBps, ReceivedBps float64 // sender and receiver bits per second
	Retransmits          int     // TCP retransmits (sender)
	CPUHost, CPURemote   float64 // total CPU % of the client and server iperf3 processes
	// UDP only:
	Packets, LostPackets int
	LostPercent          float64
	JitterMs             float64
	// ReceivedPPS is packets per second delivered (UDP).
	ReceivedPPS float64
	Seconds     float64
}

// RunIperf runs an iperf3 client in ns and parses its JSON output.
func RunIperf(ctx context.Context, ns *NS, o IperfOptions) (IperfResult, error) {
	if _, err := netip.ParseAddr(o.Server); err != nil {
		return IperfResult{}, fmt.Errorf("lab: iperf3 server address %q: %w", o.Server, err)
	}
	d := o.Duration
	if d == 0 {
		d = 5 * time.Second
	}
	args := []string{"-c", o.Server, "-p", fmt.Sprint(orInt(o.Port, 5201)), "-J", "-t", fmt.Sprint(int((d + time.Second - 1) / time.Second))}
	if o.Bind != "" {
		args = append(args, "-B", o.Bind)
	}
	if o.Parallel > 1 {
		args = append(args, "-P", fmt.Sprint(o.Parallel))
	}
	if o.UDP {
		args = append(args, "-u")
		args = append(args, "-b", orStr(o.Bitrate, "1G"))
	} else if o.Bitrate != "" {
		args = append(args, "-b", o.Bitrate)
	}
	if o.Length > 0 {
		args = append(args, "-l", fmt.Sprint(o.Length))
	}
	if o.Reverse {
		args = append(args, "-R")
	}
	if o.Omit > 0 {
		args = append(args, "-O", fmt.Sprint(o.Omit))
	}
	cctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := ns.CommandContext(cctx, "iperf3", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	res, perr := ParseIperf(stdout.Bytes())
	if perr != nil {
		var ee *exec.ExitError
		if errors.As(runErr, &ee) || runErr != nil {
			return res, fmt.Errorf("lab: iperf3 %s in %s: %v: %w (stderr %q)", strings.Join(args, " "), ns.Name, runErr, perr, stderr.String())
		}
		return res, fmt.Errorf("lab: iperf3 %s in %s: %w", strings.Join(args, " "), ns.Name, perr)
	}
	if runErr != nil {
		return res, fmt.Errorf("lab: iperf3 %s in %s: %w", strings.Join(args, " "), ns.Name, runErr)
	}
	return res, nil
}

type iperfSum struct {
	Seconds       float64 `json:"seconds"`
	BitsPerSecond float64 `json:"bits_per_second"`
	Retransmits   int     `json:"retransmits"`
	JitterMs      float64 `json:"jitter_ms"`
	LostPackets   int     `json:"lost_packets"`
	Packets       int     `json:"packets"`
	LostPercent   float64 `json:"lost_percent"`
}

type iperfJSON struct {
	Error string `json:"error"`
	End   struct {
		SumSent     *iperfSum `json:"sum_sent"`
		SumReceived *iperfSum `json:"sum_received"`
		Sum         *iperfSum `json:"sum"`
		CPU         struct {
			HostTotal   float64 `json:"host_total"`
			RemoteTotal float64 `json:"remote_total"`
		} `json:"cpu_utilization_percent"`
	} `json:"end"`
}

// ParseIperf parses iperf3 -J output (TCP or UDP). An "error" in the JSON is returned as an
// error (with whatever numbers were present).
func ParseIperf(b []byte) (IperfResult, error) {
	var j iperfJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return IperfResult{}, fmt.Errorf("lab: iperf3 json: %w", err)
	}
	var r IperfResult
	e := j.End
	r.CPUHost, r.CPURemote = e.CPU.HostTotal, e.CPU.RemoteTotal
	if e.SumSent != nil {
		r.SentBps = e.SumSent.BitsPerSecond
		r.Retransmits = e.SumSent.Retransmits
		r.Seconds = e.SumSent.Seconds
	}
	if e.SumReceived != nil {
		r.ReceivedBps = e.SumReceived.BitsPerSecond
	}
	if e.Sum != nil { // UDP
		r.JitterMs = e.Sum.JitterMs
		r.LostPackets = e.Sum.LostPackets
		r.Packets = e.Sum.Packets
		r.LostPercent = e.Sum.LostPercent
		if r.SentBps == 0 {
			r.SentBps = e.Sum.BitsPerSecond
		}
		if e.SumReceived == nil {
			r.ReceivedBps = e.Sum.BitsPerSecond * (1 - e.Sum.LostPercent/100)
		}
		if r.Seconds == 0 {
			r.Seconds = e.Sum.Seconds
		}
		if r.Seconds > 0 && r.Packets >= r.LostPackets {
			r.ReceivedPPS = float64(r.Packets-r.LostPackets) / r.Seconds
		}
	}
	for _, v := range []float64{r.SentBps, r.ReceivedBps, r.CPUHost, r.CPURemote, r.LostPercent, r.JitterMs, r.Seconds} {
		if v < 0 || v != v {
			return r, fmt.Errorf("lab: iperf3 json: negative or NaN value")
		}
	}
	if r.Packets < 0 || r.LostPackets < 0 || r.Retransmits < 0 {
		return r, fmt.Errorf("lab: iperf3 json: negative count")
	}
	if j.Error != "" {
		return r, fmt.Errorf("lab: iperf3: %s", j.Error)
	}
	if e.SumSent == nil && e.Sum == nil {
		return r, errors.New("lab: iperf3 json: no end.sum_sent or end.sum")
	}
	return r, nil
}
