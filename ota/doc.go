// Package ota owns over-the-air updates. The Updater (device side) checks the TUF repository,
// installs a release into the inactive A/B slot with a resumable streaming download, verifies
// it, switches the U-Boot environment atomically, judges the trial boot with the firmware's
// health check and commits, or lets the bootloader's boot counting fall back and records the
// rollback. SimulateBoot is the Go twin of the boot script (ota/uboot).
//
// Subpackages: repo (TUF repository: publisher and client), fetch (download into a slot),
// slot (A/B slots on a device or file), slotimage (what a slot holds), bootenv (the U-Boot
// environment, byte-compatible with fw_printenv/fw_setenv), rollout (waves, maintenance
// windows, install reports, automatic halt), uboot (the U-Boot boot script for QEMU).
package ota
