package image

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// OTARootPath is where the image carries the fleet's OTA trust root, the TUF root metadata the
// device's updater starts from (firmware/device reads it there; without it updates are
// disabled).
const OTARootPath = "etc/meshroot/ota/root.json"

// MaxOTARootSize bounds the root metadata file (a root with a few dozen keys is a few KiB).
const MaxOTARootSize = 512 << 10

// OTARootInfo records the trust root an image carries (Manifest.OTARoot).
type OTARootInfo struct {
	// Path is the file's path in the image (OTARootPath).
	Path string `json:"path"`
	// SHA256 is the hex digest of the file as shipped.
	SHA256 string `json:"sha256"`
	// Version and Expires are the root metadata's; Threshold and KeyIDs its root role's.
	Version   int64     `json:"version"`
	Expires   time.Time `json:"expires"`
	Threshold int       `json:"threshold"`
	KeyIDs    []string  `json:"keyids"`
}

// ParseOTARoot checks that b is a TUF root metadata file signed by its own root role (a
// threshold of the keys it names for "root", as a TUF client checks each new root) and naming
// all four top-level roles, and describes it. An expired root is accepted: the device's first
// refresh walks the repository's root chain from it (ParseOTARoot's caller may warn).
func ParseOTARoot(b []byte) (OTARootInfo, error) {
	if len(b) == 0 {
		return OTARootInfo{}, fmt.Errorf("ota root: empty file")
	}
	if len(b) > MaxOTARootSize {
		return OTARootInfo{}, fmt.Errorf("ota root: %d bytes; at most %d", len(b), MaxOTARootSize)
	}
	root, err := metadata.Root().FromBytes(b)
	if err != nil {
		return OTARootInfo{}, fmt.Errorf("ota root: not TUF root metadata: %w", err)
	}
	s := root.Signed
	for _, role := range []string{metadata.ROOT, metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP} {
		r, ok := s.Roles[role]
		if !ok || r == nil {
			return OTARootInfo{}, fmt.Errorf("ota root: signed.roles.%s: missing", role)
		}
		if r.Threshold < 1 || len(r.KeyIDs) < r.Threshold {
			return OTARootInfo{}, fmt.Errorf("ota root: signed.roles.%s: threshold %d with %d keys", role, r.Threshold, len(r.KeyIDs))
		}
		for _, id := range r.KeyIDs {
			if _, ok := s.Keys[id]; !ok {
				return OTARootInfo{}, fmt.Errorf("ota root: signed.roles.%s: key %s is not in signed.keys", role, id)
			}
		}
	}
	if len(root.Signatures) == 0 {
		return OTARootInfo{}, fmt.Errorf("ota root: signatures: none (an unsigned root is no trust anchor)")
	}
	if err := root.VerifyDelegate(metadata.ROOT, root); err != nil {
		return OTARootInfo{}, fmt.Errorf("ota root: signatures: not signed by a threshold of its own root keys: %w", err)
	}
	sum := sha256.Sum256(b)
	ids := slices.Clone(s.Roles[metadata.ROOT].KeyIDs)
	slices.Sort(ids)
	return OTARootInfo{
		Path: OTARootPath, SHA256: hex.EncodeToString(sum[:]), Version: s.Version, Expires: s.Expires.UTC(),
		Threshold: s.Roles[metadata.ROOT].Threshold, KeyIDs: ids,
	}, nil
}
