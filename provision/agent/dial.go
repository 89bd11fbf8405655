package agent

import (
	"context"
	"fmt"
	"net"
	"syscall"
	"time"
)

// The mTLS client's connections to the cloud: a router's uplink goes away under established
// connections (a WAN cut, a new lease), and HTTP/2 sends every call (log uploads, the profile
// long poll) over one connection. Without these settings a connection that had data in flight
// when the WAN went away waits out TCP's retransmission backoff (RTO doubling to minutes) after
// the WAN is back, and every upload queued on it times out meanwhile: TestVMSite measured the
// outage's logs reaching the cloud 62 s after the WAN returned.
const (
	// cloudDialTimeout bounds the TCP connect (the transport's TLS handshake has its own 10 s).
	cloudDialTimeout = 5 * time.Second
	// cloudUserTimeout (TCP_USER_TIMEOUT) closes a connection whose sent data has gone
	// unacknowledged this long, keepalive probes included.
	cloudUserTimeout = 15 * time.Second
)

// cloudDialer probes idle connections after 15 s (every 5 s, 3 probes) and gives up on dead
// ones after cloudUserTimeout.
var cloudDialer = &net.Dialer{
	Timeout:         cloudDialTimeout,
	KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 5 * time.Second, Count: 3},
	Control: func(network, address string, c syscall.RawConn) error {
		if err := setUserTimeout(c); err != nil {
			return fmt.Errorf("dial %s: TCP_USER_TIMEOUT: %w", address, err)
		}
		return nil
	},
}

// dialCloud is the default DialFunc of the mTLS client (Config.Dial replaces it).
func dialCloud(ctx context.Context, network, addr string) (net.Conn, error) {
	return cloudDialer.DialContext(ctx, network, addr)
}

// clientDial is the dialer for the mTLS client.
func (a *Agent) clientDial() func(ctx context.Context, network, addr string) (net.Conn, error) {
	if a.cfg.Dial != nil {
		return a.cfg.Dial
	}
	return dialCloud
}
