// Package meshproto is the site's control plane between Meshroot nodes: small authenticated
// messages over UDP on the LAN or backhaul. The radio manager uses it to send surveys and scans to
// the gateway's planner and channel plans back; mesh roaming extends the message set.
//
// Wire format (all integers big-endian):
//
//	magic "MRC1" | version 1 | key id | type (2) | epoch (8) | seq (8) | sender len (1) | sender |
//	payload len (2) | payload (JSON) | HMAC-SHA256 (32) over everything before it
//
// The HMAC key is derived from the site key of the signed site profile with HKDF-SHA256
// (salt "meshroot mesh control v1"), so only nodes of the site can speak. Replays are refused per
// sender: the epoch (a random value each sender draws when it starts) must not go backwards, and
// within an epoch the sequence number must be new within a 1024-message sliding window (as in
// IPsec's anti-replay, RFC 4303 §3.4.3). A receiver that restarts accepts a sender's current
// epoch once more: messages are also dropped when older than MaxAge by their timestamp field in
// the JSON envelope, which bounds that window when clocks are roughly right.
package meshproto

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Type is a message type.
type Type uint16

// Message types. 1-99 radio channel management; 100-199 roaming and backhaul (roaming.go).
const (
	TypeRadioReport Type = 1 // node → gateway: radios, surveys, scans
	TypeChannelPlan Type = 2 // gateway → node: channel assignments
	TypeRadar       Type = 3 // node → gateway: radar seen
	TypePlanResult  Type = 4 // node → gateway: plan applied or failed
)

func (t Type) String() string {
	switch t {
	case TypeRadioReport:
		return "radio-report"
	case TypeChannelPlan:
		return "channel-plan"
	case TypeRadar:
		return "radar"
	case TypePlanResult:
		return "plan-result"
	}
	if n, ok := roamingNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type-%d", uint16(t))
}

// Wire constants.
const (
	magic       = "MRC1"
	version     = 1
	macLen      = sha256.Size
	maxSender   = 64
	MaxDatagram = 60000 // below UDP's 65507 with room to spare
	window      = 1024
)

// Errors of Open.
var (
	ErrMalformed = errors.New("malformed control message")
	ErrAuth      = errors.New("control message authentication failed")
	ErrReplay    = errors.New("control message replayed or too old")
)

// Key is a derived message-authentication key with its id (for rotation).
type Key struct {
	ID  byte
	mac []byte
}

// DeriveKey derives the control-plane key from the site key. The site key never leaves this
// function; only the derived key is kept.
func DeriveKey(id byte, siteKey []byte) (Key, error) {
	if len(siteKey) < 16 {
		return Key{}, fmt.Errorf("meshproto: site key of %d bytes; need at least 16", len(siteKey))
	}
	k, err := hkdf.Key(sha256.New, siteKey, []byte("meshroot mesh control v1"), fmt.Sprintf("hmac key %d", id), 32)
	if err != nil {
		return Key{}, err
	}
	return Key{ID: id, mac: k}, nil
}

// Message is one decoded message.
type Message struct {
	Type   Type
	Sender string
	Epoch  uint64
	Seq    uint64
	// Payload is the JSON body; Decode unmarshals it.
	Payload json.RawMessage
}

// Decode unmarshals the payload into v.
func (m Message) Decode(v any) error {
	if err := json.Unmarshal(m.Payload, v); err != nil {
		return fmt.Errorf("meshproto: %s from %s: %w", m.Type, m.Sender, err)
	}
	return nil
}

// envelope wraps every payload with its send time, for MaxAge.
type envelope struct {
	Time time.Time       `json:"t"`
	Body json.RawMessage `json:"b"`
}

// Sealer builds authenticated messages for one sender.
type Sealer struct {
	key    Key
	sender string
	epoch  uint64
	mu     sync.Mutex
	seq    uint64
	now    func() time.Time
}

// NewSealer returns a sealer for sender with a fresh random epoch.
func NewSealer(key Key, sender string, now func() time.Time) (*Sealer, error) {
	if sender == "" || len(sender) > maxSender {
		return nil, fmt.Errorf("meshproto: sender %q: need 1..%d bytes", sender, maxSender)
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	return &Sealer{key: key, sender: sender, epoch: binary.BigEndian.Uint64(b[:]) >> 1, now: now}, nil
}

// Seal encodes and authenticates a message with body v (marshalled as JSON).
func (s *Sealer) Seal(t Type, v any) ([]byte, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("meshproto: %s: %w", t, err)
	}
	payload, err := json.Marshal(envelope{Time: s.now().UTC(), Body: body})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.seq++
	seq := s.seq
	s.mu.Unlock()
	n := 4 + 1 + 1 + 2 + 8 + 8 + 1 + len(s.sender) + 2 + len(payload) + macLen
	if n > MaxDatagram {
		return nil, fmt.Errorf("meshproto: %s: %d bytes exceeds %d", t, n, MaxDatagram)
	}
	b := make([]byte, 0, n)
	b = append(b, magic...)
	b = append(b, version, s.key.ID)
	b = binary.BigEndian.AppendUint16(b, uint16(t))
	b = binary.BigEndian.AppendUint64(b, s.epoch)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = append(b, byte(len(s.sender)))
	b = append(b, s.sender...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(payload)))
	b = append(b, payload...)
	m := hmac.New(sha256.New, s.key.mac)
	m.Write(b)
	return m.Sum(b), nil
}

// Opener verifies messages and keeps the per-sender replay state.
type Opener struct {
	// MaxAge drops messages whose send time is older than this (or further in the future);
	// 0 disables the check.
	MaxAge time.Duration

	keys  map[byte]Key
	now   func() time.Time
	mu    sync.Mutex
	peers map[string]*replayState
}

type replayState struct {
	epoch uint64
	top   uint64
	bits  [window / 64]uint64
}

// NewOpener accepts messages under any of keys (current and previous during a rotation).
func NewOpener(now func() time.Time, keys ...Key) *Opener {
	if now == nil {
		now = time.Now
	}
	o := &Opener{keys: map[byte]Key{}, now: now, peers: map[string]*replayState{}}
	for _, k := range keys {
		o.keys[k.ID] = k
	}
	return o
}

// parse splits a datagram without checking the MAC.
func parse(b []byte) (m Message, keyID byte, signed []byte, tag []byte, err error) {
	if len(b) < 4+1+1+2+8+8+1+2+macLen {
		return m, 0, nil, nil, fmt.Errorf("%w: %d bytes", ErrMalformed, len(b))
	}
	if len(b) > MaxDatagram {
		return m, 0, nil, nil, fmt.Errorf("%w: %d bytes", ErrMalformed, len(b))
	}
	if string(b[:4]) != magic || b[4] != version {
		return m, 0, nil, nil, fmt.Errorf("%w: bad magic or version", ErrMalformed)
	}
	keyID = b[5]
	m.Type = Type(binary.BigEndian.Uint16(b[6:]))
	m.Epoch = binary.BigEndian.Uint64(b[8:])
	m.Seq = binary.BigEndian.Uint64(b[16:])
	sl := int(b[24])
	p := 25
	if sl == 0 || sl > maxSender || len(b) < p+sl+2+macLen {
		return m, 0, nil, nil, fmt.Errorf("%w: sender length %d", ErrMalformed, sl)
	}
	m.Sender = string(b[p : p+sl])
	p += sl
	pl := int(binary.BigEndian.Uint16(b[p:]))
	p += 2
	if len(b) != p+pl+macLen {
		return m, 0, nil, nil, fmt.Errorf("%w: payload length %d for %d bytes", ErrMalformed, pl, len(b))
	}
	m.Payload = b[p : p+pl]
	return m, keyID, b[:p+pl], b[p+pl:], nil
}

// Open verifies a datagram: key, MAC, then replay and age. Only an authentic message updates
// the replay state.
func (o *Opener) Open(b []byte) (Message, error) {
	m, keyID, signed, tag, err := parse(b)
	if err != nil {
		return Message{}, err
	}
	k, ok := o.keys[keyID]
	if !ok {
		return Message{}, fmt.Errorf("%w: unknown key id %d", ErrAuth, keyID)
	}
	mac := hmac.New(sha256.New, k.mac)
	mac.Write(signed)
	if !hmac.Equal(mac.Sum(nil), tag) {
		return Message{}, fmt.Errorf("%w: bad MAC from %q", ErrAuth, m.Sender)
	}
	var env envelope
	if err := json.Unmarshal(m.Payload, &env); err != nil {
		return Message{}, fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
	}
	if o.MaxAge > 0 {
		if age := o.now().Sub(env.Time); age > o.MaxAge || age < -o.MaxAge {
			return Message{}, fmt.Errorf("%w: %s from %s is %v old", ErrReplay, m.Type, m.Sender, age.Round(time.Second))
		}
	}
	if err := o.checkReplay(m); err != nil {
		return Message{}, err
	}
	m.Payload = env.Body
	return m, nil
}

func (o *Opener) checkReplay(m Message) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	st := o.peers[m.Sender]
	if st == nil || m.Epoch > st.epoch {
		st = &replayState{epoch: m.Epoch}
		o.peers[m.Sender] = st
	}
	if m.Epoch < st.epoch {
		return fmt.Errorf("%w: %s from %s: old epoch", ErrReplay, m.Type, m.Sender)
	}
	if m.Seq == 0 {
		return fmt.Errorf("%w: sequence 0", ErrReplay)
	}
	switch {
	case m.Seq > st.top:
		shift := m.Seq - st.top
		st.shift(shift)
		st.top = m.Seq
		st.set(0)
	case st.top-m.Seq >= window:
		return fmt.Errorf("%w: %s from %s: sequence %d behind the window", ErrReplay, m.Type, m.Sender, m.Seq)
	default:
		off := st.top - m.Seq
		if st.get(off) {
			return fmt.Errorf("%w: %s from %s: sequence %d seen", ErrReplay, m.Type, m.Sender, m.Seq)
		}
		st.set(off)
	}
	return nil
}

// bit i of the window is sequence top-i.
func (r *replayState) get(i uint64) bool { return r.bits[i/64]&(1<<(i%64)) != 0 }
func (r *replayState) set(i uint64)      { r.bits[i/64] |= 1 << (i % 64) }
func (r *replayState) shift(n uint64) {
	if n >= window {
		r.bits = [window / 64]uint64{}
		return
	}
	words, bits := n/64, n%64
	for i := len(r.bits) - 1; i >= 0; i-- {
		var v uint64
		if src := i - int(words); src >= 0 {
			v = r.bits[src] << bits
			if bits > 0 && src-1 >= 0 {
				v |= r.bits[src-1] >> (64 - bits)
			}
		}
		r.bits[i] = v
	}
}
