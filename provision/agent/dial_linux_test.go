package agent

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The mTLS client's connections carry TCP_USER_TIMEOUT, so a connection the WAN died under
// fails within cloudUserTimeout instead of after TCP's retransmission backoff.
func TestCloudDialSetsUserTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a := &Agent{}
	c, err := a.clientDial()(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ms, keep int
	var gerr error
	rc.Control(func(fd uintptr) {
		ms, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
		if gerr == nil {
			keep, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE)
		}
	})
	if gerr != nil {
		t.Fatal(gerr)
	}
	if got, want := time.Duration(ms)*time.Millisecond, cloudUserTimeout; got != want || keep != 1 {
		t.Errorf("cloud connection: TCP_USER_TIMEOUT = %v, SO_KEEPALIVE = %d; want %v, 1", got, keep, want)
	}
}
