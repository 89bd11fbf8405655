package persist

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "f")
	for _, s := range []string{"one", "two"} {
		if err := WriteFile(path, []byte(s), 0o640); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != s {
			t.Errorf("ReadFile after WriteFile(%q) = %q, %v", s, got, err)
		}
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("mode = %v; want 0640", fi.Mode().Perm())
	}
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries; want 1 (no temporary files left)", len(ents))
	}
}

func TestSeal(t *testing.T) {
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	b1, err := NewBox(k1)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := NewBox(k2)
	secret := []byte("correct horse battery staple")
	path := filepath.Join(t.TempDir(), "s")
	if err := b1.WriteSealed(path, "wifi", secret); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	if bytes.Contains(raw, secret) {
		t.Errorf("sealed file holds the secret in clear")
	}
	got, err := b1.ReadSealed(path, "wifi")
	if err != nil || !bytes.Equal(got, secret) {
		t.Errorf("ReadSealed = %q, %v; want the secret", got, err)
	}
	if _, err := b1.ReadSealed(path, "psk"); err == nil {
		t.Errorf("ReadSealed(other label) = nil error; want refusal")
	}
	if _, err := b2.ReadSealed(path, "wifi"); err == nil {
		t.Errorf("ReadSealed(other device) = nil error; want refusal")
	}
}
