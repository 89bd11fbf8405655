package profile

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
)

// PayloadType is the DSSE payload type of a site profile.
const PayloadType = "application/vnd.meshroot.profile+json"

// MaxEnvelopeSize bounds what Verify reads.
const MaxEnvelopeSize = 1 << 20

// Envelope is a DSSE envelope.
type Envelope struct {
	PayloadType string      `json:"payloadType"`
	Payload     string      `json:"payload"`
	Signatures  []Signature `json:"signatures"`
}

// Signature is one DSSE signature.
type Signature struct {
	KeyID string `json:"keyid"`
	Sig   string `json:"sig"`
}

// KeyID names an ed25519 public key: the hex SHA-256 of its 32 raw bytes.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:])
}

// pae is DSSE's pre-authentication encoding.
func pae(payloadType string, payload []byte) []byte {
	var b bytes.Buffer
	b.WriteString("DSSEv1 ")
	b.WriteString(strconv.Itoa(len(payloadType)))
	b.WriteByte(' ')
	b.WriteString(payloadType)
	b.WriteByte(' ')
	b.WriteString(strconv.Itoa(len(payload)))
	b.WriteByte(' ')
	b.Write(payload)
	return b.Bytes()
}

// Sign validates the profile, encodes it and returns the signed envelope (JSON), signed by
// every key given (at least one).
func Sign(p *Profile, keys ...ed25519.PrivateKey) ([]byte, error) {
	if len(keys) == 0 {
		return nil, errors.New("profile: sign: no key")
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("profile: sign: %w", err)
	}
	payload, err := p.Marshal()
	if err != nil {
		return nil, fmt.Errorf("profile: sign: %w", err)
	}
	return SignPayload(payload, keys...)
}

// SignPayload signs payload bytes as they are, without validating them (tests use it to sign
// invalid or newer-schema documents; the cloud uses Sign).
func SignPayload(payload []byte, keys ...ed25519.PrivateKey) ([]byte, error) {
	env := Envelope{PayloadType: PayloadType, Payload: base64.StdEncoding.EncodeToString(payload)}
	msg := pae(PayloadType, payload)
	for _, k := range keys {
		env.Signatures = append(env.Signatures, Signature{
			KeyID: KeyID(k.Public().(ed25519.PublicKey)),
			Sig:   base64.StdEncoding.EncodeToString(ed25519.Sign(k, msg)),
		})
	}
	return json.Marshal(env)
}

// KeySet is the set of profile-signing keys a device trusts.
type KeySet map[string]ed25519.PublicKey

// NewKeySet returns a set holding the given keys.
func NewKeySet(keys ...ed25519.PublicKey) KeySet {
	ks := KeySet{}
	for _, k := range keys {
		ks[KeyID(k)] = k
	}
	return ks
}

// Kinds of refusal; a *RefusedError matches one of them with errors.Is.
var (
	ErrSignature = errors.New("bad signature")
	ErrSchema    = errors.New("unsupported schema")
	ErrRollback  = errors.New("not newer than the profile in force")
	ErrExpired   = errors.New("expired")
	ErrBinding   = errors.New("issued for another site or device")
	ErrInvalid   = errors.New("invalid")
	// ErrUnchanged is not a refusal: the envelope is the profile already in force.
	ErrUnchanged = errors.New("profile: unchanged")
)

// RefusedError says why a profile was refused; Reasons are human-readable and name fields.
type RefusedError struct {
	Kind    error
	Reasons []string
}

func (e *RefusedError) Error() string {
	return "profile refused: " + e.Kind.Error() + ": " + strings.Join(e.Reasons, "; ")
}

func (e *RefusedError) Unwrap() error { return e.Kind }

func refuse(kind error, reasons ...string) error { return &RefusedError{Kind: kind, Reasons: reasons} }

// Verified is a profile that passed Verify.
type Verified struct {
	*Profile
	// Envelope is the envelope exactly as received (what the device stores).
	Envelope []byte
	// KeyID is the key whose signature was accepted.
	KeyID string
	// Digest is the hex SHA-256 of the payload.
	Digest string
}

// Expect binds a profile to the device verifying it.
type Expect struct {
	// SiteID is the device's site; empty skips the check (before the site is known).
	SiteID string
	// Device is the device's serial; a profile naming another device is refused.
	Device string
	// Now is the verification time (expiry); zero means time.Now().
	Now time.Time
	// Current is the profile in force, for anti-rollback; nil when there is none.
	Current *Verified
	// AllowExpired accepts an expired profile (Store.Load uses it for the stored last good one).
	AllowExpired bool
}

// Verify checks an envelope against the trusted keys and the acceptance rules in the package
// documentation. It returns ErrUnchanged (with the current profile) when the envelope carries
// the profile in force, and a *RefusedError otherwise.
func Verify(envelope []byte, keys KeySet, exp Expect) (*Verified, error) {
	if len(envelope) > MaxEnvelopeSize {
		return nil, refuse(ErrInvalid, fmt.Sprintf("envelope is %d bytes; at most %d", len(envelope), MaxEnvelopeSize))
	}
	var env Envelope
	dec := json.NewDecoder(bytes.NewReader(envelope))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil {
		return nil, refuse(ErrInvalid, "envelope: "+err.Error())
	}
	if dec.More() {
		return nil, refuse(ErrInvalid, "envelope: trailing data")
	}
	if env.PayloadType != PayloadType {
		return nil, refuse(ErrInvalid, fmt.Sprintf("payloadType: %q; want %q", env.PayloadType, PayloadType))
	}
	payload, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		return nil, refuse(ErrInvalid, "payload: not base64")
	}
	keyID, err := checkSignatures(env, payload, keys)
	if err != nil {
		return nil, err
	}

	// Schema first: a newer schema is reported as such, with the fields this build lacks.
	var head struct {
		SchemaVersion int `json:"schema_version"`
	}
	if err := json.Unmarshal(payload, &head); err != nil {
		return nil, refuse(ErrInvalid, "payload: "+err.Error())
	}
	unknown, err := UnknownFields(payload)
	if err != nil {
		return nil, refuse(ErrInvalid, "payload: "+err.Error())
	}
	if head.SchemaVersion > SchemaVersion {
		reasons := []string{fmt.Sprintf("schema_version %d is newer than this build's %d", head.SchemaVersion, SchemaVersion)}
		for _, f := range unknown {
			reasons = append(reasons, "unknown field "+f)
		}
		return nil, refuse(ErrSchema, reasons...)
	}
	if len(unknown) > 0 {
		reasons := make([]string, len(unknown))
		for i, f := range unknown {
			reasons[i] = "unknown field " + f + " in schema_version " + strconv.Itoa(head.SchemaVersion)
		}
		return nil, refuse(ErrSchema, reasons...)
	}
	var p Profile
	if err := json.Unmarshal(payload, &p); err != nil {
		return nil, refuse(ErrInvalid, "payload: "+err.Error())
	}
	if err := p.Validate(); err != nil {
		var fe FieldErrors
		if errors.As(err, &fe) {
			reasons := make([]string, len(fe))
			for i, e := range fe {
				reasons[i] = e.Error()
			}
			return nil, refuse(ErrInvalid, reasons...)
		}
		return nil, refuse(ErrInvalid, err.Error())
	}
	if exp.SiteID != "" && p.Site.ID != exp.SiteID {
		return nil, refuse(ErrBinding, fmt.Sprintf("site.id: %q; this device belongs to %q", p.Site.ID, exp.SiteID))
	}
	if p.Device != "" && exp.Device != "" && p.Device != exp.Device {
		return nil, refuse(ErrBinding, fmt.Sprintf("device: %q; this device is %q", p.Device, exp.Device))
	}
	sum := sha256.Sum256(payload)
	v := &Verified{Profile: &p, Envelope: append([]byte(nil), envelope...), KeyID: keyID, Digest: hex.EncodeToString(sum[:])}
	if cur := exp.Current; cur != nil {
		switch {
		case p.Version == cur.Version && v.Digest == cur.Digest:
			return cur, ErrUnchanged
		case p.Version == cur.Version:
			return nil, refuse(ErrRollback, fmt.Sprintf("version: %d is the version in force, with different content", p.Version))
		case p.Version < cur.Version:
			return nil, refuse(ErrRollback, fmt.Sprintf("version: %d is older than %d in force", p.Version, cur.Version))
		}
	}
	now := exp.Now
	if now.IsZero() {
		now = time.Now()
	}
	if !exp.AllowExpired && !now.Before(p.ExpiresAt) {
		return nil, refuse(ErrExpired, fmt.Sprintf("expires_at: %s is past (now %s)", p.ExpiresAt.UTC().Format(timeFmt), now.UTC().Format(timeFmt)))
	}
	return v, nil
}

func checkSignatures(env Envelope, payload []byte, keys KeySet) (string, error) {
	if len(env.Signatures) == 0 {
		return "", refuse(ErrSignature, "signatures: none")
	}
	msg := pae(env.PayloadType, payload)
	var reasons []string
	for i, s := range env.Signatures {
		k, ok := keys[s.KeyID]
		if !ok {
			reasons = append(reasons, fmt.Sprintf("signatures[%d]: key %.16s… is not trusted", i, s.KeyID))
			continue
		}
		sig, err := base64.StdEncoding.DecodeString(s.Sig)
		if err != nil || !ed25519.Verify(k, msg, sig) {
			reasons = append(reasons, fmt.Sprintf("signatures[%d]: does not verify with key %.16s…", i, s.KeyID))
			continue
		}
		return s.KeyID, nil
	}
	return "", refuse(ErrSignature, reasons...)
}

// UnknownFields returns the JSON paths of the members of payload that the Profile type does not
// have (e.g. "vpn.tunnels[0].options.phase3_lifetime_s"), sorted.
func UnknownFields(payload []byte) ([]string, error) {
	var v any
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	var out []string
	walkUnknown(v, reflect.TypeOf(Profile{}), "", &out)
	sort.Strings(out)
	return out, nil
}

func walkUnknown(v any, t reflect.Type, path string, out *[]string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch val := v.(type) {
	case map[string]any:
		if t.Kind() != reflect.Struct || t == reflect.TypeOf(time.Time{}) {
			return
		}
		fields := jsonFields(t)
		for k, sub := range val {
			ft, ok := fields[k]
			p := k
			if path != "" {
				p = path + "." + k
			}
			if !ok {
				*out = append(*out, p)
				continue
			}
			walkUnknown(sub, ft, p, out)
		}
	case []any:
		if t.Kind() != reflect.Slice {
			return
		}
		for i, sub := range val {
			walkUnknown(sub, t.Elem(), fmt.Sprintf("%s[%d]", path, i), out)
		}
	}
}

func jsonFields(t reflect.Type) map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		m[name] = f.Type
	}
	return m
}
