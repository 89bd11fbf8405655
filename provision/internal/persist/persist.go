// Package persist holds the device's two ways of writing state to the data partition: atomic file
// replacement (a power cut leaves the old file or the new one, never a mix), and sealed files for
// secrets (AES-256-GCM under a key derived from the device's private key, so no secret is ever
// in a file in clear).
//
// Sealing protects against a copied file, a leaked backup or a log scraper; it does not protect
// against someone holding the whole data partition, which also holds the device key. A board
// with a secure element or TPM would keep the sealing key there (see identity's package doc).
package persist

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile writes data to path atomically: a temporary file in the same directory, synced,
// renamed over path, and the directory synced.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Box seals and opens small secrets files.
type Box struct{ aead cipher.AEAD }

// NewBox derives the sealing key from the device key: HKDF-SHA256 over the private scalar with
// the info "meshroot data-at-rest v1".
func NewBox(key *ecdsa.PrivateKey) (*Box, error) {
	priv, err := key.Bytes()
	if err != nil {
		return nil, fmt.Errorf("seal key: %w", err)
	}
	k, err := hkdf.Key(sha256.New, priv, nil, "meshroot data-at-rest v1", 32)
	if err != nil {
		return nil, fmt.Errorf("seal key: %w", err)
	}
	return NewBoxKey(k)
}

// NewBoxKey returns a box for a 32-byte key (the cloud uses its master key file).
func NewBoxKey(k []byte) (*Box, error) {
	blk, err := aes.NewCipher(k)
	if err != nil {
		return nil, fmt.Errorf("seal key: %w", err)
	}
	aead, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, err
	}
	return &Box{aead: aead}, nil
}

// Seal encrypts plaintext; label is bound as associated data (the file's purpose), so a sealed
// file cannot be swapped for another.
func (b *Box) Seal(label string, plaintext []byte) []byte {
	nonce := make([]byte, b.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return b.aead.Seal(nonce, nonce, plaintext, []byte(label))
}

// Open decrypts what Seal produced under the same label.
func (b *Box) Open(label string, sealed []byte) ([]byte, error) {
	n := b.aead.NonceSize()
	if len(sealed) < n+b.aead.Overhead() {
		return nil, errors.New("sealed data too short")
	}
	pt, err := b.aead.Open(nil, sealed[:n], sealed[n:], []byte(label))
	if err != nil {
		return nil, fmt.Errorf("sealed data %q: does not open (damaged or another device's)", label)
	}
	return pt, nil
}

// WriteSealed seals data and writes it atomically with mode 0600.
func (b *Box) WriteSealed(path, label string, data []byte) error {
	return WriteFile(path, b.Seal(label, data), 0o600)
}

// ReadSealed reads and opens a sealed file.
func (b *Box) ReadSealed(path, label string) ([]byte, error) {
	s, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return b.Open(label, s)
}
