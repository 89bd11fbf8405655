package ota

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"meshroot/ota/bootenv"
	"meshroot/ota/slot"
	"meshroot/ota/slotimage"
)

// The U-Boot environment variables OTA and the boot script share. Counters are hex, as U-Boot's
// setexpr writes and itest reads them (identical to decimal below 10).
const (
	// VarBootSlot is the slot the bootloader boots: "a" or "b".
	VarBootSlot = "boot_slot"
	// VarUpgradeAvailable is "1" while the booted slot is on trial (not yet committed).
	VarUpgradeAvailable = "upgrade_available"
	// VarBootCount counts trial boots; the boot script increments it before booting.
	VarBootCount = "bootcount"
	// VarBootLimit is how many trial boots are allowed; on the next one the script runs
	// altbootcmd.
	VarBootLimit = "bootlimit"
	// VarAltBootCmd switches back to the other slot (run when bootcount > bootlimit).
	VarAltBootCmd = "altbootcmd"

	// VarTrial is the release (TUF target path) on trial; VarTrialFrom the version before it;
	// VarTrialFloor the anti-rollback floor to adopt when it commits.
	VarTrial      = "ota_trial"
	VarTrialFrom  = "ota_from"
	VarTrialFloor = "ota_trial_floor"
	// VarFloor is the anti-rollback floor: releases older than it are refused.
	VarFloor = "ota_floor"
	// VarReport is a final result not yet delivered to the cloud ("result release version from").
	VarReport = "ota_report"
	// VarFailed is the last release that rolled back on this device; it is not tried again.
	VarFailed = "ota_failed"
	// VarVersionPrefix + slot is the version installed in a slot ("ota_version_a").
	VarVersionPrefix = "ota_version_"
)

// DefaultBootLimit is the number of boots a new image gets before the bootloader falls back.
const DefaultBootLimit = 3

// DefaultAltBootCmd is the altbootcmd OTA writes: back to the other slot, trial over. The boot
// script runs it, then saves the environment and boots boot_slot.
const DefaultAltBootCmd = `setenv upgrade_available 0; setenv bootcount 0; if test "${boot_slot}" = "a"; then setenv boot_slot b; else setenv boot_slot a; fi`

// ParseCount reads a counter as U-Boot's itest/setexpr do: hex, with or without 0x.
func ParseCount(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X"), 16, 16)
	if err != nil {
		return 0, fmt.Errorf("counter %q: want a hex number", s)
	}
	return int(n), nil
}

// FormatCount writes a counter as U-Boot's setexpr does (lower-case hex, no prefix).
func FormatCount(n int) string { return strconv.FormatInt(int64(n), 16) }

// BootResult is what the bootloader did on one boot.
type BootResult struct {
	// Slot is the slot booted ("" when none could be).
	Slot string
	// Trial is true when the booted slot is on trial (upgrade_available=1).
	Trial bool
	// BootCount is the counter after this boot.
	BootCount int
	// FellBack is true when the script ran altbootcmd or skipped an unbootable slot.
	FellBack bool
	// NoEnv is true when no environment copy was valid (slot a is booted, nothing written).
	NoEnv bool
}

// ErrNoBootableSlot means neither slot holds an image the bootloader can load: a brick.
var ErrNoBootableSlot = errors.New("no bootable slot")

// SimulateBoot performs, in Go, exactly the steps of the U-Boot boot script (ota/uboot) on the
// environment store and the slots. It is the bootloader of the simulations and power-cut tests:
//
//  1. Load the environment (the valid copy, the newer by the flags byte). None valid: boot
//     slot a, write nothing.
//  2. If upgrade_available is 1: bootcount += 1, save. If then bootcount > bootlimit
//     (DefaultBootLimit when unset): run altbootcmd (back to the other slot, trial over), save.
//  3. Read the slot image header of boot_slot. If it is not a valid header: boot_slot = the
//     other slot, upgrade_available = 0, bootcount = 0, save, and read that one. Neither:
//     ErrNoBootableSlot.
//
// Like U-Boot, it checks the header only, not the image hashes (the OS verified the image
// before switching to it). A save error (power cut) is returned as is.
func SimulateBoot(store *bootenv.Store, slots map[string]slot.Slot) (BootResult, error) {
	var res BootResult
	env, err := store.Load()
	if errors.Is(err, bootenv.ErrNoValidEnv) {
		res.NoEnv = true
		env = bootenv.New()
	} else if err != nil {
		return res, err
	}
	cur, _ := env.Get(VarBootSlot)
	if cur != "a" && cur != "b" {
		cur = "a"
	}
	if !res.NoEnv {
		if up, _ := env.Get(VarUpgradeAvailable); up == "1" {
			bc, _ := env.Get(VarBootCount)
			n, _ := ParseCount(bc)
			n++
			env.Set(VarBootCount, FormatCount(n))
			if err := store.Save(env); err != nil {
				return res, err
			}
			limit := DefaultBootLimit
			if l, ok := env.Get(VarBootLimit); ok {
				if v, err := ParseCount(l); err == nil {
					limit = v
				}
			}
			res.BootCount = n
			if n > limit {
				cur = slot.Other(cur)
				env.Set(VarBootSlot, cur)
				env.Set(VarUpgradeAvailable, "0")
				env.Set(VarBootCount, "0")
				if err := store.Save(env); err != nil {
					return res, err
				}
				res.FellBack, res.BootCount = true, 0
			} else {
				res.Trial = true
			}
		}
	}
	if bootable(slots[cur]) {
		res.Slot = cur
		return res, nil
	}
	other := slot.Other(cur)
	if !bootable(slots[other]) {
		return res, ErrNoBootableSlot
	}
	res.FellBack, res.Trial, res.BootCount, res.Slot = true, false, 0, other
	if !res.NoEnv {
		env.Set(VarBootSlot, other)
		env.Set(VarUpgradeAvailable, "0")
		env.Set(VarBootCount, "0")
		if err := store.Save(env); err != nil {
			return res, err
		}
	}
	return res, nil
}

// bootable is the bootloader's check: a valid slot image header.
func bootable(s slot.Slot) bool {
	if s == nil {
		return false
	}
	b := make([]byte, slotimage.HeaderSize)
	if _, err := s.ReadAt(b, 0); err != nil {
		return false
	}
	h, err := slotimage.ParseHeader(b)
	return err == nil && h.Total() <= s.Size()
}
