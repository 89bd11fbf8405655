package repo

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"golang.org/x/sys/unix"

	"meshroot/ota/rollout"
)

// Expiry is how long each role's metadata stays valid after it is signed. The timestamp and
// snapshot expire soonest: a static host must run `meshctl ota refresh` (Publisher.Refresh)
// more often than Expiry.Timestamp, or devices stop trusting the repository (freeze defence).
type Expiry struct {
	Root, Targets, Release, Snapshot, Timestamp time.Duration
}

// DefaultExpiry is used by Init and Open unless the Publisher's Expiry is changed.
var DefaultExpiry = Expiry{
	Root:      365 * 24 * time.Hour,
	Targets:   365 * 24 * time.Hour,
	Release:   180 * 24 * time.Hour,
	Snapshot:  30 * 24 * time.Hour,
	Timestamp: 7 * 24 * time.Hour,
}

// Publisher signs a repository directory with the keys in a keys directory (which must not be
// served). Its methods are safe for concurrent use within a process and take an flock on the
// repository against other processes.
type Publisher struct {
	dir, keysDir string
	// Now is the clock used for expiry times (time.Now when nil).
	Now func() time.Time
	// Expiry sets the validity of newly signed metadata.
	Expiry Expiry

	mu sync.Mutex
}

// Release is one published release as the repository lists it.
type Release struct {
	// Path is the TUF target path, "<board>/<channel>/<name>".
	Path   string
	Length int64
	SHA256 []byte
	Meta   Meta
}

// Hex is the release's SHA-256 in hex.
func (r Release) Hex() string { return hex.EncodeToString(r.SHA256) }

// MetadataDir and TargetsDir are the served subdirectories of a repository.
const (
	MetadataDir = "metadata"
	TargetsDir  = "targets"
)

// ErrNotInitialized is returned by Open for a directory without metadata/root.json.
var ErrNotInitialized = errors.New("repository is not initialized (run `meshctl ota keygen`)")

// Init creates a repository in dir, generating any missing keys in keysDir, and signs version 1
// of every top-level role. It refuses a directory that already has root metadata.
func Init(dir, keysDir string) (*Publisher, error) {
	p := &Publisher{dir: dir, keysDir: keysDir, Expiry: DefaultExpiry}
	if _, err := os.Stat(p.metaPath("root.json")); err == nil {
		return nil, fmt.Errorf("repository %s: already initialized", dir)
	}
	keys, err := GenerateKeys(keysDir)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{MetadataDir, TargetsDir} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	unlock, err := p.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	now := p.now()
	root := metadata.Root(now.Add(p.Expiry.Root))
	for _, role := range []string{KeyRoot, KeyTargets, KeySnapshot, KeyTimestamp} {
		if err := root.Signed.AddKey(keys[role].Public(), role); err != nil {
			return nil, err
		}
	}
	if err := signInto(root, keys[KeyRoot]); err != nil {
		return nil, err
	}
	if err := p.writeRoot(root); err != nil {
		return nil, err
	}
	st := &state{
		root:      root,
		targets:   metadata.Targets(now),
		delegated: map[string]*metadata.Metadata[metadata.TargetsType]{},
		snapshot:  metadata.Snapshot(now),
		timestamp: metadata.Timestamp(now),
	}
	st.targets.Signed.Version = 0
	st.snapshot.Signed.Version = 0
	st.timestamp.Signed.Version = 0
	st.targets.Signed.Delegations = &metadata.Delegations{Keys: map[string]*metadata.Key{}, Roles: []metadata.DelegatedRole{}}
	if err := p.commit(st, nil, true, keys); err != nil {
		return nil, err
	}
	return p, nil
}

// Open returns a Publisher for an initialized repository.
func Open(dir, keysDir string) (*Publisher, error) {
	p := &Publisher{dir: dir, keysDir: keysDir, Expiry: DefaultExpiry}
	if _, err := os.Stat(p.metaPath("root.json")); err != nil {
		return nil, fmt.Errorf("repository %s: %w", dir, ErrNotInitialized)
	}
	return p, nil
}

// Dir is the repository directory.
func (p *Publisher) Dir() string { return p.dir }

// RootJSON returns the current root metadata, the trust anchor to build into images.
func (p *Publisher) RootJSON() ([]byte, error) { return os.ReadFile(p.metaPath("root.json")) }

func (p *Publisher) now() time.Time {
	if p.Now != nil {
		return p.Now().UTC()
	}
	return time.Now().UTC()
}

func (p *Publisher) metaPath(name string) string { return filepath.Join(p.dir, MetadataDir, name) }

// lock serialises publishers on this repository (in-process and across processes).
func (p *Publisher) lock() (func(), error) {
	p.mu.Lock()
	f, err := os.OpenFile(filepath.Join(p.dir, ".publish.lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		p.mu.Unlock()
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		p.mu.Unlock()
		return nil, fmt.Errorf("lock repository: %w", err)
	}
	return func() {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
		p.mu.Unlock()
	}, nil
}

// state is the current metadata of every role.
type state struct {
	root      *metadata.Metadata[metadata.RootType]
	targets   *metadata.Metadata[metadata.TargetsType]
	delegated map[string]*metadata.Metadata[metadata.TargetsType]
	snapshot  *metadata.Metadata[metadata.SnapshotType]
	timestamp *metadata.Metadata[metadata.TimestampType]
}

func (p *Publisher) load() (*state, error) {
	st := &state{delegated: map[string]*metadata.Metadata[metadata.TargetsType]{}}
	var err error
	if st.root, err = metadata.Root().FromFile(p.metaPath("root.json")); err != nil {
		return nil, fmt.Errorf("load root: %w", err)
	}
	if st.timestamp, err = metadata.Timestamp().FromFile(p.metaPath("timestamp.json")); err != nil {
		return nil, fmt.Errorf("load timestamp: %w", err)
	}
	snapV := st.timestamp.Signed.Meta["snapshot.json"].Version
	if st.snapshot, err = metadata.Snapshot().FromFile(p.metaPath(fmt.Sprintf("%d.snapshot.json", snapV))); err != nil {
		return nil, fmt.Errorf("load snapshot: %w", err)
	}
	for name, mf := range st.snapshot.Signed.Meta {
		role := strings.TrimSuffix(name, ".json")
		m, err := metadata.Targets().FromFile(p.metaPath(fmt.Sprintf("%d.%s", mf.Version, name)))
		if err != nil {
			return nil, fmt.Errorf("load %s: %w", role, err)
		}
		if role == metadata.TARGETS {
			st.targets = m
		} else {
			st.delegated[role] = m
		}
	}
	if st.targets == nil {
		return nil, errors.New("load: snapshot lists no targets.json")
	}
	return st, nil
}

func (p *Publisher) loadKeys(roles ...string) (map[string]*Key, error) {
	keys := map[string]*Key{}
	for _, r := range roles {
		k, err := LoadKey(p.keysDir, r)
		if err != nil {
			return nil, err
		}
		keys[r] = k
	}
	return keys, nil
}

func signInto[T metadata.Roles](m *metadata.Metadata[T], keys ...*Key) error {
	m.ClearSignatures()
	for _, k := range keys {
		s, err := k.signer()
		if err != nil {
			return err
		}
		if _, err := m.Sign(s); err != nil {
			return err
		}
	}
	return nil
}

// writeFile writes data atomically (temp file, fsync, rename).
func writeFile(name string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(name), ".tmp-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), name)
}

func (p *Publisher) writeRoot(root *metadata.Metadata[metadata.RootType]) error {
	b, err := root.ToBytes(true)
	if err != nil {
		return err
	}
	if err := writeFile(p.metaPath(fmt.Sprintf("%d.root.json", root.Signed.Version)), b); err != nil {
		return err
	}
	return writeFile(p.metaPath("root.json"), b)
}

// commit bumps and signs the changed delegated roles (and the top-level targets when
// topChanged), then a new snapshot, then a new timestamp. The timestamp is written last: until
// then clients keep seeing the previous consistent snapshot.
func (p *Publisher) commit(st *state, changed []string, topChanged bool, keys map[string]*Key) error {
	now := p.now()
	var err error
	if keys == nil {
		need := []string{KeySnapshot, KeyTimestamp}
		if len(changed) > 0 {
			need = append(need, KeyRelease)
		}
		if topChanged {
			need = append(need, KeyTargets)
		}
		if keys, err = p.loadKeys(need...); err != nil {
			return err
		}
	}
	for _, role := range changed {
		m := st.delegated[role]
		m.Signed.Version++
		m.Signed.Expires = now.Add(p.Expiry.Release)
		if err := signInto(m, keys[KeyRelease]); err != nil {
			return err
		}
		b, err := m.ToBytes(true)
		if err != nil {
			return err
		}
		if err := writeFile(p.metaPath(fmt.Sprintf("%d.%s.json", m.Signed.Version, role)), b); err != nil {
			return err
		}
		st.snapshot.Signed.Meta[role+".json"] = metaFile(m.Signed.Version, b)
	}
	if topChanged {
		st.targets.Signed.Version++
		st.targets.Signed.Expires = now.Add(p.Expiry.Targets)
		if err := signInto(st.targets, keys[KeyTargets]); err != nil {
			return err
		}
		b, err := st.targets.ToBytes(true)
		if err != nil {
			return err
		}
		if err := writeFile(p.metaPath(fmt.Sprintf("%d.targets.json", st.targets.Signed.Version)), b); err != nil {
			return err
		}
		st.snapshot.Signed.Meta["targets.json"] = metaFile(st.targets.Signed.Version, b)
	}
	st.snapshot.Signed.Version++
	st.snapshot.Signed.Expires = now.Add(p.Expiry.Snapshot)
	if err := signInto(st.snapshot, keys[KeySnapshot]); err != nil {
		return err
	}
	snapBytes, err := st.snapshot.ToBytes(true)
	if err != nil {
		return err
	}
	if err := writeFile(p.metaPath(fmt.Sprintf("%d.snapshot.json", st.snapshot.Signed.Version)), snapBytes); err != nil {
		return err
	}
	st.timestamp.Signed.Meta["snapshot.json"] = metaFile(st.snapshot.Signed.Version, snapBytes)
	st.timestamp.Signed.Version++
	st.timestamp.Signed.Expires = now.Add(p.Expiry.Timestamp)
	if err := signInto(st.timestamp, keys[KeyTimestamp]); err != nil {
		return err
	}
	b, err := st.timestamp.ToBytes(true)
	if err != nil {
		return err
	}
	return writeFile(p.metaPath("timestamp.json"), b)
}

// metaFile describes a metadata file by version, length and SHA-256, so a client detects a
// file swapped for another role's (all board roles share the release key) or version.
func metaFile(version int64, b []byte) *metadata.MetaFiles {
	sum := sha256.Sum256(b)
	return &metadata.MetaFiles{Version: version, Length: int64(len(b)), Hashes: metadata.Hashes{"sha256": sum[:]}}
}

// PublishSpec describes a release to add.
type PublishSpec struct {
	Board, Channel string
	Version        string
	MinVersion     string
	Notes          string
	// Name is the file name of the target ("meshroot-<version>.img" when empty).
	Name string
	// Rollout is the initial plan (all devices at once when empty; halted ones can be resumed).
	Rollout rollout.Plan
}

// Publish copies the slot image at imagePath into the repository as a new release and signs
// it. Publishing the same image again under the same path is a no-op; a different image under
// an existing path or version is refused (releases are immutable).
func (p *Publisher) Publish(imagePath string, spec PublishSpec) (Release, error) {
	meta := Meta{Version: spec.Version, Board: spec.Board, Channel: spec.Channel, MinVersion: spec.MinVersion, Notes: spec.Notes, Rollout: spec.Rollout}
	custom, err := MarshalCustom(&meta)
	if err != nil {
		return Release{}, fmt.Errorf("publish: %w", err)
	}
	name := spec.Name
	if name == "" {
		name = "meshroot-" + strings.TrimPrefix(Canon(spec.Version), "v") + ".img"
	}
	if strings.ContainsAny(name, "/\\") || strings.HasPrefix(name, ".") {
		return Release{}, fmt.Errorf("publish: name %q: want a plain file name", name)
	}
	tpath := PathPrefix(spec.Board, spec.Channel) + name

	unlock, err := p.lock()
	if err != nil {
		return Release{}, err
	}
	defer unlock()
	st, err := p.load()
	if err != nil {
		return Release{}, err
	}

	// Stream the image into the targets directory while hashing it.
	tdir := filepath.Join(p.dir, TargetsDir, spec.Board, spec.Channel)
	if err := os.MkdirAll(tdir, 0o755); err != nil {
		return Release{}, err
	}
	in, err := os.Open(imagePath)
	if err != nil {
		return Release{}, fmt.Errorf("publish: %w", err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(tdir, ".upload-*")
	if err != nil {
		return Release{}, err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), in)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Release{}, fmt.Errorf("publish: copy image: %w", err)
	}
	if n == 0 {
		return Release{}, fmt.Errorf("publish: %s is empty", imagePath)
	}
	sum := h.Sum(nil)

	role := RoleName(spec.Board, spec.Channel)
	topChanged := false
	if _, ok := st.delegated[role]; !ok {
		if err := p.addDelegation(st, spec.Board, spec.Channel); err != nil {
			return Release{}, err
		}
		topChanged = true
	}
	rm := st.delegated[role]
	if old, ok := rm.Signed.Targets[tpath]; ok {
		if hex.EncodeToString(old.Hashes["sha256"]) == hex.EncodeToString(sum) {
			return releaseOf(tpath, old)
		}
		return Release{}, fmt.Errorf("publish: %s already exists with another image (releases are immutable; bump the version)", tpath)
	}
	for path, tf := range rm.Signed.Targets {
		if m, err := ParseMeta(customBytes(tf)); err == nil && Compare(m.Version, spec.Version) == 0 {
			return Release{}, fmt.Errorf("publish: version %s is already published as %s", spec.Version, path)
		}
	}
	final := filepath.Join(tdir, hex.EncodeToString(sum)+"."+name)
	if err := os.Link(tmp.Name(), final); err != nil && !errors.Is(err, os.ErrExist) {
		return Release{}, fmt.Errorf("publish: %w", err)
	}
	tf := &metadata.TargetFiles{Length: n, Hashes: metadata.Hashes{"sha256": sum}, Custom: &custom, Path: tpath}
	rm.Signed.Targets[tpath] = tf
	if err := p.commit(st, []string{role}, topChanged, nil); err != nil {
		return Release{}, err
	}
	return releaseOf(tpath, tf)
}

// addDelegation adds the board/channel role to the top-level targets, keyed to the release key.
func (p *Publisher) addDelegation(st *state, board, channel string) error {
	keys, err := p.loadKeys(KeyRelease)
	if err != nil {
		return err
	}
	role := RoleName(board, channel)
	if st.targets.Signed.Delegations == nil {
		st.targets.Signed.Delegations = &metadata.Delegations{}
	}
	d := st.targets.Signed.Delegations
	if d.Keys == nil {
		d.Keys = map[string]*metadata.Key{}
	}
	for _, r := range d.Roles {
		if r.Name == role {
			return fmt.Errorf("delegation %s exists in targets but its metadata is missing from the snapshot", role)
		}
	}
	d.Keys[keys[KeyRelease].ID()] = keys[KeyRelease].Public()
	d.Roles = append(d.Roles, metadata.DelegatedRole{
		Name:        role,
		KeyIDs:      []string{keys[KeyRelease].ID()},
		Threshold:   1,
		Terminating: true,
		Paths:       []string{PathPrefix(board, channel) + "*"},
	})
	m := metadata.Targets(p.now())
	m.Signed.Version = 0
	st.delegated[role] = m
	return nil
}

func customBytes(tf *metadata.TargetFiles) []byte {
	if tf.Custom == nil {
		return nil
	}
	return []byte(*tf.Custom)
}

func releaseOf(path string, tf *metadata.TargetFiles) (Release, error) {
	m, err := ParseMeta(customBytes(tf))
	if err != nil {
		return Release{}, fmt.Errorf("target %s: %w", path, err)
	}
	sum := tf.Hashes["sha256"]
	if len(sum) != sha256.Size {
		return Release{}, fmt.Errorf("target %s: no sha256 hash", path)
	}
	return Release{Path: path, Length: tf.Length, SHA256: append([]byte(nil), sum...), Meta: *m}, nil
}

// List returns every release in the repository, sorted by path.
func (p *Publisher) List() ([]Release, error) {
	unlock, err := p.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := p.load()
	if err != nil {
		return nil, err
	}
	var out []Release
	for _, m := range st.delegated {
		for path, tf := range m.Signed.Targets {
			r, err := releaseOf(path, tf)
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// updateMeta applies fn to the metadata of the release at path and re-signs.
func (p *Publisher) updateMeta(tpath string, fn func(*Meta) error) error {
	parts := strings.Split(tpath, "/")
	if len(parts) != 3 {
		return fmt.Errorf("release %q: want <board>/<channel>/<name>", tpath)
	}
	role := RoleName(parts[0], parts[1])
	unlock, err := p.lock()
	if err != nil {
		return err
	}
	defer unlock()
	st, err := p.load()
	if err != nil {
		return err
	}
	rm, ok := st.delegated[role]
	if !ok {
		return fmt.Errorf("release %s: no role %s in the repository", tpath, role)
	}
	tf, ok := rm.Signed.Targets[tpath]
	if !ok {
		return fmt.Errorf("release %s: not in the repository", tpath)
	}
	m, err := ParseMeta(customBytes(tf))
	if err != nil {
		return fmt.Errorf("release %s: %w", tpath, err)
	}
	if err := fn(m); err != nil {
		return fmt.Errorf("release %s: %w", tpath, err)
	}
	custom, err := MarshalCustom(m)
	if err != nil {
		return fmt.Errorf("release %s: %w", tpath, err)
	}
	tf.Custom = &custom
	return p.commit(st, []string{role}, false, nil)
}

// SetRollout replaces a release's wave schedule and maintenance windows (the halt state is
// kept).
func (p *Publisher) SetRollout(tpath string, waves []rollout.Wave, windows []rollout.Window) error {
	return p.updateMeta(tpath, func(m *Meta) error {
		m.Rollout.Waves, m.Rollout.Windows = waves, windows
		return m.Rollout.Validate()
	})
}

// Halt marks a release halted: devices that have not started it will not. It implements
// rollout.Halter, so the report handler can call it.
func (p *Publisher) Halt(tpath, reason string) error {
	now := p.now()
	return p.updateMeta(tpath, func(m *Meta) error {
		if m.Rollout.Halted {
			return nil
		}
		m.Rollout.Halted, m.Rollout.HaltReason, m.Rollout.HaltedAt = true, reason, &now
		return nil
	})
}

// Resume clears a release's halt.
func (p *Publisher) Resume(tpath string) error {
	return p.updateMeta(tpath, func(m *Meta) error {
		m.Rollout.Halted, m.Rollout.HaltReason, m.Rollout.HaltedAt = false, "", nil
		return nil
	})
}

// Refresh re-signs the snapshot and the timestamp with fresh expiry times (run it from cron on
// a static host, more often than Expiry.Timestamp).
func (p *Publisher) Refresh() error {
	unlock, err := p.lock()
	if err != nil {
		return err
	}
	defer unlock()
	st, err := p.load()
	if err != nil {
		return err
	}
	return p.commit(st, nil, false, nil)
}

// RotateRoot writes a new root version in which the root key (and the keys of the listed
// top-level roles: targets, snapshot, timestamp) are replaced by new ones. The new root is
// signed by the old and the new root keys, so devices trusting the old root accept it; the
// old keys are kept aside as <role>.<keyid>.retired. The other metadata is re-signed.
func (p *Publisher) RotateRoot(alsoRotate ...string) error {
	unlock, err := p.lock()
	if err != nil {
		return err
	}
	defer unlock()
	st, err := p.load()
	if err != nil {
		return err
	}
	old, err := p.loadKeys(KeyRoot, KeyTargets, KeySnapshot, KeyTimestamp, KeyRelease)
	if err != nil {
		return err
	}
	rotate := map[string]bool{KeyRoot: true}
	for _, r := range alsoRotate {
		switch r {
		case KeyTargets, KeySnapshot, KeyTimestamp:
			rotate[r] = true
		case KeyRoot:
		default:
			return fmt.Errorf("rotate: %q is not a top-level role (targets, snapshot, timestamp)", r)
		}
	}
	newKeys := map[string]*Key{}
	for r := range old {
		newKeys[r] = old[r]
	}
	for r := range rotate {
		k, err := NewKey()
		if err != nil {
			return err
		}
		newKeys[r] = k
		if err := st.root.Signed.RevokeKey(old[r].ID(), r); err != nil {
			return fmt.Errorf("rotate %s: %w", r, err)
		}
		if err := st.root.Signed.AddKey(k.Public(), r); err != nil {
			return fmt.Errorf("rotate %s: %w", r, err)
		}
	}
	st.root.Signed.Version++
	st.root.Signed.Expires = p.now().Add(p.Expiry.Root)
	if err := signInto(st.root, old[KeyRoot], newKeys[KeyRoot]); err != nil {
		return err
	}
	// Save the new keys before publishing the root that trusts them.
	for r := range rotate {
		if err := retireKey(p.keysDir, r, old[r]); err != nil {
			return err
		}
		if err := SaveKey(p.keysDir, r, newKeys[r]); err != nil {
			return err
		}
	}
	if err := p.writeRoot(st.root); err != nil {
		return err
	}
	return p.commit(st, nil, rotate[KeyTargets], newKeys)
}

// targetFile is the path of a release's file in the repository (consistent-snapshot name).
func (p *Publisher) targetFile(r Release) string {
	dir, name := path.Split(r.Path)
	return filepath.Join(p.dir, TargetsDir, filepath.FromSlash(dir), r.Hex()+"."+name)
}

// ReleaseFile returns the local path of a release's image in the repository.
func (p *Publisher) ReleaseFile(r Release) string { return p.targetFile(r) }

// describe is used by meshctl to print a release.
func (r Release) String() string {
	b, _ := json.Marshal(r.Meta.Rollout)
	return fmt.Sprintf("%s version=%s length=%d sha256=%s rollout=%s", r.Path, r.Meta.Version, r.Length, r.Hex(), b)
}
