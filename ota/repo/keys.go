package repo

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// The key roles. Root signs the root metadata (keep it offline); targets signs the top-level
// delegations; snapshot and timestamp are the online keys re-signed on every change; release
// signs the per-board/channel roles (the releases and their rollout, including halts).
const (
	KeyRoot      = "root"
	KeyTargets   = "targets"
	KeySnapshot  = "snapshot"
	KeyTimestamp = "timestamp"
	KeyRelease   = "release"
)

// KeyRoles lists every key a repository needs.
var KeyRoles = []string{KeyRoot, KeyTargets, KeySnapshot, KeyTimestamp, KeyRelease}

// Key is an ed25519 signing key.
type Key struct {
	priv ed25519.PrivateKey
	tuf  *metadata.Key
	id   string
}

// NewKey generates a key.
func NewKey() (*Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return keyFromPrivate(priv)
}

func keyFromPrivate(priv ed25519.PrivateKey) (*Key, error) {
	tk, err := metadata.KeyFromPublicKey(priv.Public())
	if err != nil {
		return nil, err
	}
	id, err := tk.ID()
	if err != nil {
		return nil, err
	}
	return &Key{priv: priv, tuf: tk, id: id}, nil
}

// ID is the TUF key ID (hex SHA-256 of the canonical public key).
func (k *Key) ID() string { return k.id }

// Public is the TUF form of the public key.
func (k *Key) Public() *metadata.Key { return k.tuf }

func (k *Key) signer() (signature.Signer, error) {
	return signature.LoadSigner(k.priv, crypto.Hash(0))
}

// keyPath is where a role's key lives in the keys directory.
func keyPath(dir, role string) string { return filepath.Join(dir, role+".key") }

// SaveKey writes k as a PKCS#8 PEM file readable by the owner only; it refuses to overwrite.
func SaveKey(dir, role string, k *Key) error {
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	p := keyPath(dir, role)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("key %s: %w", role, err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		return fmt.Errorf("key %s: %w", role, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// LoadKey reads a role's key from the keys directory.
func LoadKey(dir, role string) (*Key, error) {
	b, err := os.ReadFile(keyPath(dir, role))
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", role, err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("key %s: %s is not a PEM PRIVATE KEY", role, keyPath(dir, role))
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", role, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key %s: not an ed25519 key", role)
	}
	return keyFromPrivate(priv)
}

// GenerateKeys creates every missing key in dir and returns them all. Existing keys are kept.
func GenerateKeys(dir string) (map[string]*Key, error) {
	keys := map[string]*Key{}
	for _, role := range KeyRoles {
		k, err := LoadKey(dir, role)
		if errors.Is(err, os.ErrNotExist) {
			if k, err = NewKey(); err == nil {
				err = SaveKey(dir, role, k)
			}
		}
		if err != nil {
			return nil, err
		}
		keys[role] = k
	}
	return keys, nil
}

// retireKey renames a role's key file aside (after a rotation) so a new one can be saved.
func retireKey(dir, role string, k *Key) error {
	return os.Rename(keyPath(dir, role), filepath.Join(dir, fmt.Sprintf("%s.%s.retired", role, k.ID()[:16])))
}
