package lab

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// ThroughputOptions configure RunThroughput: the same iperf3 suite for every data plane being
// compared (issue 3: strongSwan ↔ strongSwan, ours ↔ strongSwan, ours ↔ ours), on the same
// namespace path.
type ThroughputOptions struct {
	// Client runs the iperf3 client; Server runs a server bound to ServerAddr (Port default
	// 5201; it is started and stopped by RunThroughput).
	Client, Server *NS
	ServerAddr     string
	Port           int
	// Duration of each of the three runs (default 5 s).
	Duration time.Duration
	// CPUPIDs are the processes whose CPU is measured during the single-stream TCP run (e.g.
	// both charons, or os.Getpid() when our data plane runs inside the test process).
	CPUPIDs []int
	// UDPBitrate is the offered load of the 64-byte UDP run (default "200M", above what the
	// tunnels deliver, so the received packet rate is the capacity).
	UDPBitrate string
}

// ThroughputResult is one suite's numbers.
type ThroughputResult struct {
	TCP1Mbps    float64   // single TCP stream, receiver
	TCP1Retr    int       // its retransmits
	TCPP4Mbps   float64   // -P 4, receiver
	UDP64PPS    float64   // 64-byte UDP datagrams delivered per second
	UDP64Loss   float64   // percent lost of those offered
	CPUPercent  []float64 // per CPUPIDs entry, % of one core during the TCP1 run
	CPUPerGbps  float64   // sum of CPUPercent per Gbit/s of TCP1
	LoadAvgPrev float64   // 1-min loadavg before the suite
}

// RunThroughput runs single-stream TCP, 4-stream TCP and 64-byte UDP from Client to
// ServerAddr.
func RunThroughput(ctx context.Context, l *Lab, o ThroughputOptions) (ThroughputResult, error) {
	var res ThroughputResult
	res.LoadAvgPrev, _ = LoadAvg()
	srv, err := l.StartIperfServer(o.Server, o.ServerAddr, o.Port)
	if err != nil {
		return res, err
	}
	defer srv.Proc.Stop()
	d := o.Duration
	if d == 0 {
		d = 5 * time.Second
	}
	var m *CPUMeter
	if len(o.CPUPIDs) > 0 {
		if m, err = StartCPUMeter(o.CPUPIDs...); err != nil {
			return res, err
		}
	}
	r, err := runIperfRetry(ctx, o.Client, IperfOptions{Server: srv.Addr, Port: srv.Port, Duration: d})
	if err != nil {
		return res, fmt.Errorf("tcp single stream: %w", err)
	}
	if m != nil {
		if res.CPUPercent, err = m.Percent(); err != nil {
			return res, err
		}
	}
	res.TCP1Mbps, res.TCP1Retr = r.ReceivedBps/1e6, r.Retransmits
	var sum float64
	for _, c := range res.CPUPercent {
		sum += c
	}
	if res.TCP1Mbps > 0 {
		res.CPUPerGbps = sum / (res.TCP1Mbps / 1000)
	}
	if r, err = runIperfRetry(ctx, o.Client, IperfOptions{Server: srv.Addr, Port: srv.Port, Duration: d, Parallel: 4}); err != nil {
		return res, fmt.Errorf("tcp -P 4: %w", err)
	}
	res.TCPP4Mbps = r.ReceivedBps / 1e6
	if r, err = runIperfRetry(ctx, o.Client, IperfOptions{Server: srv.Addr, Port: srv.Port, Duration: d, UDP: true, Length: 64, Bitrate: orStr(o.UDPBitrate, "200M")}); err != nil {
		return res, fmt.Errorf("udp 64 bytes: %w", err)
	}
	res.UDP64PPS, res.UDP64Loss = r.ReceivedPPS, r.LostPercent
	return res, nil
}

// Report writes the result as benchmark metrics named prefix_... (e.g. "a_tcp1_Mbps").
func (r ThroughputResult) Report(b *testing.B, prefix string) {
	b.ReportMetric(r.TCP1Mbps, prefix+"_tcp1_Mbps")
	b.ReportMetric(float64(r.TCP1Retr), prefix+"_tcp1_retr")
	b.ReportMetric(r.TCPP4Mbps, prefix+"_tcpP4_Mbps")
	b.ReportMetric(r.UDP64PPS, prefix+"_udp64_pps")
	b.ReportMetric(r.UDP64Loss, prefix+"_udp64_loss_%")
	for i, c := range r.CPUPercent {
		b.ReportMetric(c, fmt.Sprintf("%s_cpu%d_%%", prefix, i))
	}
	if len(r.CPUPercent) > 0 {
		b.ReportMetric(r.CPUPerGbps, prefix+"_cpu_%_per_Gbps")
	}
}

// String is a one-line summary.
func (r ThroughputResult) String() string {
	return fmt.Sprintf("tcp1 %.0f Mbit/s (retr %d), tcp -P4 %.0f Mbit/s, udp64 %.0f pps (%.1f%% lost), cpu %.0f%% (%.0f%%/Gbit/s), loadavg before %.2f",
		r.TCP1Mbps, r.TCP1Retr, r.TCPP4Mbps, r.UDP64PPS, r.UDP64Loss, r.CPUPercent, r.CPUPerGbps, r.LoadAvgPrev)
}

// runIperfRetry retries a run that iperf3 itself refused (server still resetting after the
// previous test: "unable to receive control message", "server is busy"), twice, 1 s apart.
func runIperfRetry(ctx context.Context, ns *NS, o IperfOptions) (IperfResult, error) {
	var (
		r   IperfResult
		err error
	)
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return r, err
			case <-time.After(time.Second):
			}
		}
		r, err = RunIperf(ctx, ns, o)
		if err == nil || !strings.Contains(err.Error(), "lab: iperf3: ") {
			return r, err
		}
	}
	return r, err
}
