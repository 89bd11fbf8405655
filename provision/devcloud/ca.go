package devcloud

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"meshroot/provision/identity"
	"meshroot/provision/internal/persist"
)

// The cloud's key material in its data directory. Private keys are 0600 PEM files; the CA
// certificate is public.
const (
	caKeyFile      = "ca.key"
	caCertFile     = "ca.pem"
	profileKeyFile = "profile.key"
	masterKeyFile  = "master.key"
	adminTokenFile = "admin.token"
)

// fleetCA is the CA that signs the server certificate and the device certificates.
type fleetCA struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	pem  []byte
}

// pin is the hex SHA-256 of the CA certificate (DER): what a device pins before it has the CA.
func (ca *fleetCA) pin() string { return CertPin(ca.cert) }

// CertPin returns the hex SHA-256 of a certificate's DER encoding.
func CertPin(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

func loadOrCreateCA(dir string, now time.Time) (*fleetCA, error) {
	keyPath, certPath := filepath.Join(dir, caKeyFile), filepath.Join(dir, caCertFile)
	kb, kerr := os.ReadFile(keyPath)
	cb, cerr := os.ReadFile(certPath)
	if kerr == nil && cerr == nil {
		k, err := parseECKey(kb)
		if err != nil {
			return nil, fmt.Errorf("fleet ca: %s: %w", keyPath, err)
		}
		blk, _ := pem.Decode(cb)
		if blk == nil {
			return nil, fmt.Errorf("fleet ca: %s: no PEM", certPath)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("fleet ca: %s: %w", certPath, err)
		}
		return &fleetCA{key: k, cert: c, pem: cb}, nil
	}
	if !errors.Is(kerr, fs.ErrNotExist) || !errors.Is(cerr, fs.ErrNotExist) {
		return nil, fmt.Errorf("fleet ca: need both %s and %s (%v, %v)", caKeyFile, caCertFile, kerr, cerr)
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		Subject:               pkix.Name{CommonName: "Meshroot fleet CA", Organization: []string{"Meshroot"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return nil, fmt.Errorf("fleet ca: %w", err)
	}
	c, _ := x509.ParseCertificate(der)
	if err := writeKey(keyPath, k); err != nil {
		return nil, err
	}
	cp := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := persist.WriteFile(certPath, cp, 0o644); err != nil {
		return nil, err
	}
	return &fleetCA{key: k, cert: c, pem: cp}, nil
}

func randSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n.Add(n, big.NewInt(1))
}

func writeKey(path string, k crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return err
	}
	return persist.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

func parseECKey(b []byte) (*ecdsa.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("not an ECDSA key")
	}
	return ek, nil
}

func loadOrCreateProfileKey(dir string) (ed25519.PrivateKey, error) {
	path := filepath.Join(dir, profileKeyFile)
	b, err := os.ReadFile(path)
	if err == nil {
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("profile key %s: no PEM", path)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("profile key %s: %w", path, err)
		}
		ek, ok := k.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("profile key %s: not ed25519", path)
		}
		return ek, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return k, writeKey(path, k)
}

// loadOrCreateRandom returns the n-byte secret in path, creating it (0600) when missing.
func loadOrCreateRandom(path string, n int, encode func([]byte) []byte, decode func([]byte) ([]byte, error)) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return decode(b)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	v := make([]byte, n)
	if _, err := rand.Read(v); err != nil {
		return nil, err
	}
	return v, persist.WriteFile(path, encode(v), 0o600)
}

// serverCert issues a fresh TLS server certificate for the given names (IPs and DNS names).
func (ca *fleetCA) serverCert(names []string, now time.Time) (tls.Certificate, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(),
		Subject:      pkix.Name{CommonName: "meshcloud"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if n != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &k.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: k}, nil
}

// signDevice issues a device certificate for a CSR: the subject is the serial number, the
// key usage client authentication.
func (ca *fleetCA) signDevice(csr *x509.CertificateRequest, serial, site string, now time.Time, ttl time.Duration) (*x509.Certificate, []byte, error) {
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(),
		Subject:      pkix.Name{CommonName: serial, SerialNumber: serial, OrganizationalUnit: []string{"site:" + site}, Organization: []string{"Meshroot device"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return c, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// parseCSR checks a device CSR: PEM, a valid self-signature, an ECDSA P-256 key and the serial
// number as the common name.
func parseCSR(b []byte, serial string) (*x509.CertificateRequest, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("csr: no CERTIFICATE REQUEST PEM block")
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("csr: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("csr: signature: %w", err)
	}
	pk, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pk.Curve != elliptic.P256() {
		return nil, errors.New("csr: key is not ECDSA P-256")
	}
	if err := identity.ValidateSerial(serial); err != nil {
		return nil, err
	}
	if csr.Subject.CommonName != serial {
		return nil, fmt.Errorf("csr: subject CN %q is not the serial %q", csr.Subject.CommonName, serial)
	}
	return csr, nil
}
