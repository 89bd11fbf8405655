// Package ota owns over-the-air updates: the TUF-verified fleet repository client (go-tuf v2),
// resumable downloads streamed into the inactive A/B slot, the U-Boot environment (byte-compatible
// with fw_printenv/fw_setenv), boot counting with a health-check commit and automatic rollback,
// staged rollout waves, and the publisher that signs releases.
package ota
