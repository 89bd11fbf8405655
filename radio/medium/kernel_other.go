//go:build !linux

package medium

import "errors"

// NetlinkKernel is only available on Linux.
type NetlinkKernel struct{ Kernel }

// OpenKernel fails off Linux.
func OpenKernel() (*NetlinkKernel, error) {
	return nil, errors.New("medium: mac80211_hwsim needs Linux")
}
