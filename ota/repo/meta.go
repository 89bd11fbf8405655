// Package repo is the OTA repository: a TUF repository (github.com/theupdateframework/go-tuf/v2)
// in a plain directory any static web host can serve, the Publisher that signs it, and the
// device-side Client that refreshes it and lists the releases for one board and channel.
//
// Layout (consistent snapshots):
//
//	metadata/1.root.json, 2.root.json, ..., root.json (latest), timestamp.json,
//	metadata/N.snapshot.json, N.targets.json, N.<board>@<channel>.json
//	targets/<board>/<channel>/<sha256>.<name>
//
// Roles: root (offline key) signs the keys of targets, snapshot and timestamp. The top-level
// targets role only delegates: one terminating role per board and channel ("<board>@<channel>",
// paths "<board>/<channel>/*"), signed by the release key. Each release is one target (a slot
// image) whose custom metadata carries Meta: version, board, channel, the anti-rollback floor,
// and the rollout plan (waves, maintenance windows, halt flag).
package repo

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"golang.org/x/mod/semver"

	"meshroot/ota/rollout"
)

// Meta is the meshroot part of a release target's custom metadata:
//
//	"custom": {"meshroot": {"version": "1.4.0", "board": "qemu-virt-arm64", "channel": "stable",
//	           "min_version": "1.2.0", "rollout": {"waves": [...], "windows": [...], "halted": false}}}
type Meta struct {
	// Version is the release's semantic version ("1.4.0" or "v1.4.0").
	Version string `json:"version"`
	// Board is the board name from the catalog the image is built for.
	Board string `json:"board"`
	// Channel is the release channel ("stable", "beta", ...).
	Channel string `json:"channel"`
	// MinVersion is the anti-rollback floor this release sets: once a device has committed it,
	// the device refuses any release older than MinVersion. Empty means no floor.
	MinVersion string `json:"min_version,omitempty"`
	// Notes is free text for operators.
	Notes string `json:"notes,omitempty"`
	// Rollout is the staged rollout plan.
	Rollout rollout.Plan `json:"rollout"`
}

type customEnvelope struct {
	Meshroot *Meta `json:"meshroot"`
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// CheckName validates a board or channel name (lower-case letters, digits, '.', '_', '-').
func CheckName(field, s string) error {
	if !nameRE.MatchString(s) {
		return fmt.Errorf("%s %q: want 1-63 of [a-z0-9._-], starting with a letter or digit", field, s)
	}
	return nil
}

// Canon returns the semver form ("v1.4.0") of a version, or "" when it is not valid semver.
func Canon(v string) string {
	if v == "" {
		return ""
	}
	if !strings.HasPrefix(v, "v") {
		v = "v" + v
	}
	if !semver.IsValid(v) {
		return ""
	}
	return v
}

// Compare compares two versions by semver precedence (-1, 0, +1). Invalid versions sort before
// valid ones.
func Compare(a, b string) int { return semver.Compare(Canon(a), Canon(b)) }

// Validate checks the metadata; the error names the field.
func (m *Meta) Validate() error {
	if Canon(m.Version) == "" {
		return fmt.Errorf("meshroot.version %q is not a semantic version", m.Version)
	}
	if err := CheckName("meshroot.board", m.Board); err != nil {
		return err
	}
	if err := CheckName("meshroot.channel", m.Channel); err != nil {
		return err
	}
	if m.MinVersion != "" {
		if Canon(m.MinVersion) == "" {
			return fmt.Errorf("meshroot.min_version %q is not a semantic version", m.MinVersion)
		}
		if Compare(m.MinVersion, m.Version) > 0 {
			return fmt.Errorf("meshroot.min_version %s is above meshroot.version %s", m.MinVersion, m.Version)
		}
	}
	if len(m.Notes) > 4096 {
		return fmt.Errorf("meshroot.notes is %d bytes; at most 4096", len(m.Notes))
	}
	if err := m.Rollout.Validate(); err != nil {
		return fmt.Errorf("meshroot.%w", err)
	}
	return nil
}

// ParseMeta reads a target's custom metadata. It fails, naming the field, when the meshroot
// object is missing or invalid.
func ParseMeta(custom []byte) (*Meta, error) {
	if len(custom) == 0 {
		return nil, fmt.Errorf("custom metadata: missing (want a meshroot object)")
	}
	var env customEnvelope
	if err := json.Unmarshal(custom, &env); err != nil {
		return nil, fmt.Errorf("custom metadata: %w", err)
	}
	if env.Meshroot == nil {
		return nil, fmt.Errorf("custom metadata: no meshroot object")
	}
	if err := env.Meshroot.Validate(); err != nil {
		return nil, fmt.Errorf("custom metadata: %w", err)
	}
	return env.Meshroot, nil
}

// MarshalCustom returns the custom metadata JSON for m.
func MarshalCustom(m *Meta) (json.RawMessage, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(customEnvelope{Meshroot: m})
	if err != nil {
		return nil, err
	}
	return json.RawMessage(b), nil
}

// RoleName is the delegated role for a board and channel.
func RoleName(board, channel string) string { return board + "@" + channel }

// PathPrefix is the target path prefix of a board and channel ("board/channel/").
func PathPrefix(board, channel string) string { return board + "/" + channel + "/" }
