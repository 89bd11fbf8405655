package profile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"meshroot/provision/internal/persist"
)

// StoreFile is the last good profile's file name in the store's directory: the envelope exactly
// as it was verified.
const StoreFile = "profile.dsse.json"

// Store keeps the last good profile on the data partition and in force in memory. Offer
// replaces it only with a profile that verifies; anything else leaves it in force.
type Store struct {
	dir  string
	keys KeySet
	now  func() time.Time

	mu    sync.Mutex
	cur   *Verified
	stale bool
}

// OpenStore opens the store in dir and loads the stored profile, if any, checking its
// signature again (an expired stored profile stays in force and is reported stale). A stored
// profile that no longer verifies (damaged file, key no longer trusted) is an error, and the
// store starts empty.
func OpenStore(dir string, keys KeySet, exp Expect) (*Store, error) {
	s := &Store{dir: dir, keys: keys, now: time.Now}
	if !exp.Now.IsZero() {
		fixed := exp.Now // tests pin the clock; devices pass a zero Now
		s.now = func() time.Time { return fixed }
	}
	b, err := os.ReadFile(filepath.Join(dir, StoreFile))
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("profile store: %w", err)
	}
	exp.Current = nil
	exp.AllowExpired = true
	v, err := Verify(b, keys, exp)
	if err != nil {
		return s, fmt.Errorf("profile store: stored profile: %w", err)
	}
	s.cur = v
	s.stale = !s.clock(exp).Before(v.ExpiresAt)
	return s, nil
}

func (s *Store) clock(exp Expect) time.Time {
	if !exp.Now.IsZero() {
		return exp.Now
	}
	return s.now()
}

// SetKeys replaces the trusted keys (after enrollment delivered them).
func (s *Store) SetKeys(keys KeySet) {
	s.mu.Lock()
	s.keys = keys
	s.mu.Unlock()
}

// Current returns the profile in force (nil when there is none) and whether it has expired.
func (s *Store) Current() (v *Verified, stale bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil {
		s.stale = !s.now().Before(s.cur.ExpiresAt)
	}
	return s.cur, s.stale
}

// Offer verifies an envelope against the profile in force and, when it passes, stores it
// atomically and puts it in force. It returns ErrUnchanged for the profile already in force,
// and a *RefusedError (the last good profile staying in force) otherwise.
func (s *Store) Offer(envelope []byte, exp Expect) (*Verified, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	exp.Current = s.cur
	exp.AllowExpired = false
	if exp.Now.IsZero() {
		exp.Now = s.now()
	}
	v, err := Verify(envelope, s.keys, exp)
	if err != nil {
		return v, err
	}
	if err := persist.WriteFile(filepath.Join(s.dir, StoreFile), v.Envelope, 0o600); err != nil {
		return nil, fmt.Errorf("profile store: keep profile v%d: %w", v.Version, err)
	}
	s.cur, s.stale = v, false
	return v, nil
}
