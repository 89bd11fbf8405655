//go:build !linux

package nl80211

import "errors"

// Open fails outside Linux: nl80211 is Linux's.
func Open() (Client, error) { return nil, errors.New("nl80211: only on linux") }
