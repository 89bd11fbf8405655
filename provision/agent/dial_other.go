//go:build !linux

package agent

import "syscall"

func setUserTimeout(syscall.RawConn) error { return nil }
