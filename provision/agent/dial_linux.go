package agent

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// setUserTimeout sets TCP_USER_TIMEOUT: the kernel closes the connection once sent data has
// gone unacknowledged for that long, instead of retransmitting with backoff for minutes.
func setUserTimeout(c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(cloudUserTimeout.Milliseconds()))
	}); err != nil {
		return err
	}
	return serr
}
