package identity

import (
	"bytes"
	"crypto/rand"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"meshroot/provision/pake"
)

// Factory is the data written into each device at the factory: on real boards a read-only
// partition, on QEMU boards a factory file (JSON, this type) beside the image.
//
// The setup code itself is not in it: the device keeps only the SPAKE2+ registration record
// (w0 and L = w1*P, RFC 9383 §3.2) derived from the code with PBKDF2, as Matter devices do. The
// code exists on the label and in the phone that scanned it.
type Factory struct {
	// Serial is the device's serial number (A-Z, 0-9, '-').
	Serial string `json:"serial"`
	// Model is the product model, informational.
	Model string `json:"model,omitempty"`
	// Discriminator tells devices in setup mode apart before pairing (12 bits).
	Discriminator uint16 `json:"discriminator"`
	// Verifier is the registration record of the setup code.
	Verifier Verifier `json:"spake2p_verifier"`
}

// Verifier is the SPAKE2+ registration record with the PBKDF2 parameters the app needs to derive
// w0 and w1 from the setup code.
type Verifier struct {
	Iterations int    `json:"iterations"`
	Salt       []byte `json:"salt"`
	W0         []byte `json:"w0"`
	L          []byte `json:"L"`
}

// DefaultIterations is the PBKDF2 iteration count the factory tool uses.
const DefaultIterations = 10000

// NewFactory builds the factory data for a device and the payload for its label.
func NewFactory(serial, model string, code SetupCode, discriminator uint16, iterations int, r io.Reader) (*Factory, Payload, error) {
	if r == nil {
		r = rand.Reader
	}
	p := Payload{Flags: FlagLAN, Discriminator: discriminator, SetupCode: code, Serial: serial}
	if err := p.Validate(); err != nil {
		return nil, Payload{}, err
	}
	salt := make([]byte, 32)
	if _, err := io.ReadFull(r, salt); err != nil {
		return nil, Payload{}, fmt.Errorf("factory: salt: %w", err)
	}
	w0, w1, err := pake.W0W1(uint32(code), salt, iterations)
	if err != nil {
		return nil, Payload{}, fmt.Errorf("factory: %w", err)
	}
	l, err := pake.Record(w1)
	if err != nil {
		return nil, Payload{}, fmt.Errorf("factory: %w", err)
	}
	f := &Factory{Serial: serial, Model: model, Discriminator: discriminator,
		Verifier: Verifier{Iterations: iterations, Salt: salt, W0: w0, L: l}}
	return f, p, nil
}

// Validate checks the factory data; errors name the field.
func (f *Factory) Validate() error {
	if err := ValidateSerial(f.Serial); err != nil {
		return fmt.Errorf("factory: %w", err)
	}
	if f.Discriminator > 0xfff {
		return fmt.Errorf("factory: discriminator: %d exceeds 12 bits", f.Discriminator)
	}
	v := f.Verifier
	if v.Iterations < pake.MinIterations || v.Iterations > pake.MaxIterations {
		return fmt.Errorf("factory: spake2p_verifier.iterations: %d outside [%d, %d]", v.Iterations, pake.MinIterations, pake.MaxIterations)
	}
	if len(v.Salt) < pake.MinSaltLen || len(v.Salt) > pake.MaxSaltLen {
		return fmt.Errorf("factory: spake2p_verifier.salt: %d bytes; want %d-%d", len(v.Salt), pake.MinSaltLen, pake.MaxSaltLen)
	}
	if _, err := pake.NewVerifier(pake.Params{Suite: pake.P256SHA256HMAC}, v.W0, v.L); err != nil {
		return fmt.Errorf("factory: spake2p_verifier: %w", err)
	}
	return nil
}

// ParseFactory decodes factory JSON strictly (unknown fields are errors) and validates it.
func ParseFactory(b []byte) (*Factory, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var f Factory
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("factory: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("factory: trailing data after the JSON object")
	}
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return &f, nil
}

// LoadFactory reads and validates a factory file.
func LoadFactory(path string) (*Factory, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("factory: %w", err)
	}
	return ParseFactory(b)
}

// Marshal encodes the factory data as indented JSON.
func (f *Factory) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func pkixName(serial string) pkix.Name {
	return pkix.Name{CommonName: serial, SerialNumber: serial, Organization: []string{"Meshroot device"}}
}
