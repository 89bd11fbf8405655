package identity

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"meshroot/provision/pake"
)

func TestLoadOrCreateKey(t *testing.T) {
	dir := t.TempDir()
	k1, created, err := LoadOrCreateKey(dir)
	if err != nil || !created {
		t.Fatalf("LoadOrCreateKey(empty) = created %v, %v; want true, nil", created, err)
	}
	fi, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("key file mode = %v; want 0600", got)
	}
	k2, created, err := LoadOrCreateKey(dir)
	if err != nil || created {
		t.Fatalf("LoadOrCreateKey(again) = created %v, %v; want false, nil", created, err)
	}
	if !k1.Equal(k2) {
		t.Errorf("LoadOrCreateKey(again) returned a different key; want the stored one")
	}
	// A loosened mode is tightened, not a new key.
	os.Chmod(filepath.Join(dir, KeyFile), 0o644)
	k3, _, err := LoadOrCreateKey(dir)
	if err != nil || !k1.Equal(k3) {
		t.Fatalf("LoadOrCreateKey(mode 0644) = %v; want the same key", err)
	}
	fi, _ = os.Stat(filepath.Join(dir, KeyFile))
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("key file mode after load = %v; want 0600", got)
	}
	// Only the key file is left: no temporary files.
	ents, _ := os.ReadDir(filepath.Join(dir, "identity"))
	if len(ents) != 1 {
		t.Errorf("identity dir holds %d entries; want 1 (the key)", len(ents))
	}
}

func TestDamagedKeyIsNotRegenerated(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := LoadOrCreateKey(dir); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, KeyFile)
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateKey(dir); err == nil || !strings.Contains(err.Error(), "not regenerating") {
		t.Errorf("LoadOrCreateKey(damaged) = %v; want a 'not regenerating' error", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "garbage" {
		t.Errorf("damaged key file was rewritten")
	}
}

func TestConcurrentFirstBootMakesOneKey(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	keys := make([]string, 8)
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, _, err := LoadOrCreateKey(dir)
			if err != nil {
				t.Error(err)
				return
			}
			keys[i] = Fingerprint(&k.PublicKey)
		}()
	}
	wg.Wait()
	for i := range keys {
		if keys[i] != keys[0] {
			t.Fatalf("concurrent LoadOrCreateKey returned %d distinct keys; want 1", len(keys))
		}
	}
}

func TestCSR(t *testing.T) {
	k, _, err := LoadOrCreateKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := CSR(k, "MR-0001")
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Errorf("CSR signature: %v", err)
	}
	if csr.Subject.CommonName != "MR-0001" {
		t.Errorf("CSR CN = %q; want MR-0001", csr.Subject.CommonName)
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	for _, p := range []Payload{
		{Flags: FlagLAN, Discriminator: 3840, SetupCode: 20202021, Serial: "MR-0001"},
		{Flags: FlagLAN | FlagBLE, Discriminator: 0, SetupCode: 1, Serial: "A"},
		{Flags: 0, Discriminator: 0xfff, SetupCode: MaxSetupCode, Serial: strings.Repeat("Z", 32)},
	} {
		s, err := p.Encode()
		if err != nil {
			t.Fatalf("Encode(%+v) = %v", p, err)
		}
		if !strings.HasPrefix(s, "MR1:") {
			t.Errorf("Encode() = %q; want prefix MR1:", s)
		}
		for _, c := range s {
			if !strings.ContainsRune("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567:MR1", c) {
				t.Errorf("Encode() = %q has %q, outside QR alphanumeric mode", s, c)
			}
		}
		got, err := ParsePayload("  " + s + "\n")
		if err != nil {
			t.Fatalf("ParsePayload(%q) = %v", s, err)
		}
		if diff := cmp.Diff(p, got); diff != "" {
			t.Errorf("ParsePayload(Encode(p)) mismatch (-want +got):\n%s", diff)
		}
	}
}

func TestPayloadErrors(t *testing.T) {
	good, err := Payload{Flags: FlagLAN, Discriminator: 3840, SetupCode: 20202021, Serial: "MR-0001"}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	flip := []byte(good)
	if flip[10] == 'A' {
		flip[10] = 'B'
	} else {
		flip[10] = 'A'
	}
	for _, tc := range []struct {
		name, in, want string
	}{
		{"empty", "", "not a Meshroot label"},
		{"other scheme", "MT:Y.K9042C00KA0648G00", "not a Meshroot label"},
		{"newer version", "MR2:" + good[4:], "version 2 is not supported"},
		{"bad base32", "MR1:!!!!", "not base32"},
		{"short", "MR1:AAAA", "too short"},
		{"checksum", string(flip), "checksum"},
		{"truncated", good[:len(good)-8], ""},
	} {
		_, err := ParsePayload(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParsePayload(%s) = %v; want error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestSetupCodeNeverPrinted(t *testing.T) {
	c := SetupCode(20202021)
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("pairing", "code", c, "payload", Payload{SetupCode: c, Serial: "X"})
	out := buf.String() + fmt.Sprintf("%v %s %+v %#v", c, c, c, c)
	if strings.Contains(out, "20202021") {
		t.Errorf("setup code printed: %s", out)
	}
	if c.Digits() != "20202021" {
		t.Errorf("Digits() = %q; want 20202021", c.Digits())
	}
}

func TestSetupCodeValidate(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"20202021", true}, {"2020-2021", true}, {"00000001", true}, {"99999998", true},
		{"00000000", false}, {"11111111", false}, {"99999999", false}, {"12345678", false},
		{"87654321", false}, {"1234567", false}, {"abcdefgh", false}, {"123456789", false},
	} {
		_, err := ParseSetupCode(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseSetupCode(%q) = %v; want ok=%v", tc.in, err, tc.ok)
		}
	}
	for i := 0; i < 200; i++ {
		c, err := NewSetupCode(nil)
		if err != nil || c.Validate() != nil {
			t.Fatalf("NewSetupCode() = %v, %v; want a valid code", c.Digits(), err)
		}
	}
}

func TestFactoryRoundTrip(t *testing.T) {
	f, p, err := NewFactory("MR-0042", "mr-qemu", 20202021, 0x123, pake.MinIterations, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := f.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("20202021")) {
		t.Errorf("factory file holds the setup code in clear:\n%s", b)
	}
	path := filepath.Join(t.TempDir(), "factory.json")
	os.WriteFile(path, b, 0o644)
	got, err := LoadFactory(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(f, got); diff != "" {
		t.Errorf("LoadFactory mismatch (-want +got):\n%s", diff)
	}
	// The label's code and the stored verifier agree: an exchange succeeds.
	w0, w1, err := pake.W0W1(uint32(p.SetupCode), got.Verifier.Salt, got.Verifier.Iterations)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(w0, got.Verifier.W0) {
		t.Errorf("w0 from the label's code differs from the factory verifier")
	}
	l, _ := pake.Record(w1)
	if !bytes.Equal(l, got.Verifier.L) {
		t.Errorf("L from the label's code differs from the factory verifier")
	}
}

func TestParseFactoryErrors(t *testing.T) {
	f, _, err := NewFactory("MR-0042", "", 20202021, 1, pake.MinIterations, nil)
	if err != nil {
		t.Fatal(err)
	}
	good, _ := f.Marshal()
	for _, tc := range []struct {
		name string
		mut  func(s string) string
		want string
	}{
		{"unknown field", func(s string) string { return strings.Replace(s, `"serial"`, `"setup_code": 1, "serial"`, 1) }, "unknown field"},
		{"bad serial", func(s string) string { return strings.Replace(s, "MR-0042", "mr 42", 1) }, "serial"},
		{"iterations", func(s string) string { return strings.Replace(s, `"iterations": 1000`, `"iterations": 10`, 1) }, "iterations"},
		{"discriminator", func(s string) string {
			return strings.Replace(s, `"discriminator": 1`, `"discriminator": 5000`, 1)
		}, "discriminator"},
		{"trailing", func(s string) string { return s + "{}" }, "trailing"},
	} {
		_, err := ParseFactory([]byte(tc.mut(string(good))))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseFactory(%s) = %v; want error containing %q", tc.name, err, tc.want)
		}
	}
}

func FuzzParsePayload(f *testing.F) {
	for _, p := range []Payload{
		{Flags: FlagLAN, Discriminator: 3840, SetupCode: 20202021, Serial: "MR-0001"},
		{Flags: FlagBLE, Discriminator: 1, SetupCode: 1, Serial: strings.Repeat("9", 32)},
	} {
		s, _ := p.Encode()
		f.Add(s)
	}
	f.Add("MR1:")
	f.Add("MR99999999999999999999:AAAA")
	f.Add("MT:Y.K9042C00KA0648G00")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePayload(s)
		if err != nil {
			return
		}
		// Whatever parses re-encodes to a payload that parses to the same value.
		enc, err := p.Encode()
		if err != nil {
			t.Fatalf("Encode(ParsePayload(%q)) = %v", s, err)
		}
		p2, err := ParsePayload(enc)
		if err != nil || p2 != p {
			t.Fatalf("round trip of %q: %+v, %v; want %+v", s, p2, err, p)
		}
	})
}
