package repo

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"meshroot/ota/rollout"
)

type testRepo struct {
	t        *testing.T
	pub      *Publisher
	dir      string
	keys     string
	srv      *httptest.Server
	now      time.Time
	mu       sync.Mutex
	override map[string][]byte // URL path → body served instead of the file
}

func newTestRepo(t *testing.T) *testRepo {
	t.Helper()
	base := t.TempDir()
	tr := &testRepo{t: t, dir: filepath.Join(base, "repo"), keys: filepath.Join(base, "keys"), now: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC), override: map[string][]byte{}}
	pub, err := Init(tr.dir, tr.keys)
	if err != nil {
		t.Fatalf("Init = %v", err)
	}
	pub.Now = func() time.Time { return tr.now }
	tr.pub = pub
	// Re-sign with the fixed clock so expiry times are deterministic.
	if err := pub.Refresh(); err != nil {
		t.Fatalf("Refresh = %v", err)
	}
	files := http.FileServer(http.Dir(tr.dir))
	tr.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tr.mu.Lock()
		body, ok := tr.override[r.URL.Path]
		tr.mu.Unlock()
		if ok {
			w.Write(body)
			return
		}
		files.ServeHTTP(w, r)
	}))
	t.Cleanup(tr.srv.Close)
	return tr
}

func (tr *testRepo) serve(path string, body []byte) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.override[path] = body
}

func (tr *testRepo) unserve(path string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	delete(tr.override, path)
}

func (tr *testRepo) image(name string, content []byte) string {
	p := filepath.Join(tr.t.TempDir(), name)
	if err := os.WriteFile(p, content, 0o644); err != nil {
		tr.t.Fatal(err)
	}
	return p
}

func (tr *testRepo) publish(board, channel, version string) Release {
	tr.t.Helper()
	r, err := tr.pub.Publish(tr.image("img", []byte("image "+board+" "+version)), PublishSpec{Board: board, Channel: channel, Version: version})
	if err != nil {
		tr.t.Fatalf("Publish(%s %s %s) = %v", board, channel, version, err)
	}
	return r
}

func (tr *testRepo) client(board, channel string, root []byte) *Client {
	tr.t.Helper()
	if root == nil {
		var err error
		if root, err = tr.pub.RootJSON(); err != nil {
			tr.t.Fatal(err)
		}
	}
	c, err := NewClient(ClientConfig{BaseURL: tr.srv.URL, Board: board, Channel: channel, CacheDir: tr.t.TempDir(), TrustedRoot: root, Now: func() time.Time { return tr.now }})
	if err != nil {
		tr.t.Fatalf("NewClient = %v", err)
	}
	return c
}

func (tr *testRepo) readMeta(name string) []byte {
	b, err := os.ReadFile(filepath.Join(tr.dir, MetadataDir, name))
	if err != nil {
		tr.t.Fatal(err)
	}
	return b
}

func (tr *testRepo) timestamp() *metadata.Metadata[metadata.TimestampType] {
	m, err := metadata.Timestamp().FromBytes(tr.readMeta("timestamp.json"))
	if err != nil {
		tr.t.Fatal(err)
	}
	return m
}

func TestPublishAndList(t *testing.T) {
	tr := newTestRepo(t)
	r1 := tr.publish("qemu-virt-arm64", "stable", "1.0.0")
	tr.publish("qemu-virt-arm64", "stable", "1.2.0")
	tr.publish("qemu-virt-arm64", "beta", "2.0.0-rc.1")
	tr.publish("ipq807x", "stable", "1.1.0")
	snap, err := tr.client("qemu-virt-arm64", "stable", nil).Refresh(context.Background())
	if err != nil {
		t.Fatalf("Refresh = %v", err)
	}
	var got []string
	for _, r := range snap.Releases {
		got = append(got, r.Path)
	}
	want := []string{"qemu-virt-arm64/stable/meshroot-1.2.0.img", "qemu-virt-arm64/stable/meshroot-1.0.0.img"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("Refresh releases = %v; want %v (newest first, this board and channel only)", got, want)
	}
	c := tr.client("qemu-virt-arm64", "stable", nil)
	resp, err := http.Get(c.TargetURL(r1))
	if err != nil {
		t.Fatal(err)
	}
	body := new(bytes.Buffer)
	body.ReadFrom(resp.Body)
	resp.Body.Close()
	if body.String() != "image qemu-virt-arm64 1.0.0" {
		t.Errorf("GET %s = %q; want the image", c.TargetURL(r1), body.String())
	}
	// No role for a board that has no releases: an empty list, not an error.
	snap, err = tr.client("ipq50xx", "stable", nil).Refresh(context.Background())
	if err != nil || len(snap.Releases) != 0 {
		t.Errorf("Refresh(ipq50xx) = %v, %v; want no releases, nil", snap, err)
	}
}

func TestPublishImmutable(t *testing.T) {
	tr := newTestRepo(t)
	tr.publish("b", "stable", "1.0.0")
	if _, err := tr.pub.Publish(tr.image("x", []byte("image b 1.0.0")), PublishSpec{Board: "b", Channel: "stable", Version: "1.0.0"}); err != nil {
		t.Errorf("re-publishing the same image = %v; want nil (idempotent)", err)
	}
	if _, err := tr.pub.Publish(tr.image("x", []byte("other")), PublishSpec{Board: "b", Channel: "stable", Version: "1.0.0"}); err == nil {
		t.Errorf("publishing another image as 1.0.0 = nil; want an error")
	}
	if _, err := tr.pub.Publish(tr.image("x", []byte("other")), PublishSpec{Board: "b", Channel: "stable", Version: "v1.0.0", Name: "renamed.img"}); err == nil {
		t.Errorf("publishing version 1.0.0 again under another name = nil; want an error")
	}
	for _, spec := range []PublishSpec{
		{Board: "B!", Channel: "stable", Version: "1.0.1"},
		{Board: "b", Channel: "stable", Version: "one"},
		{Board: "b", Channel: "stable", Version: "1.0.1", MinVersion: "1.1.0"},
		{Board: "b", Channel: "stable", Version: "1.0.1", Name: "../x"},
	} {
		if _, err := tr.pub.Publish(tr.image("x", []byte("y")), spec); err == nil {
			t.Errorf("Publish(%+v) = nil; want an error", spec)
		}
	}
}

func TestHaltAndRollout(t *testing.T) {
	tr := newTestRepo(t)
	r := tr.publish("b", "stable", "1.0.0")
	waves, err := rollout.ParseWaves("now:1%,+1h:100%", tr.now)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.pub.SetRollout(r.Path, waves, []rollout.Window{{Start: "02:00", Duration: rollout.Duration(3 * time.Hour)}}); err != nil {
		t.Fatalf("SetRollout = %v", err)
	}
	if err := tr.pub.Halt(r.Path, "too many rollbacks"); err != nil {
		t.Fatalf("Halt = %v", err)
	}
	c := tr.client("b", "stable", nil)
	snap, err := c.Refresh(context.Background())
	if err != nil {
		t.Fatalf("Refresh = %v", err)
	}
	got := snap.Releases[0].Meta.Rollout
	if !got.Halted || got.HaltReason != "too many rollbacks" || len(got.Waves) != 2 || len(got.Windows) != 1 {
		t.Errorf("rollout after SetRollout+Halt = %+v; want halted with 2 waves and 1 window", got)
	}
	if err := tr.pub.Resume(r.Path); err != nil {
		t.Fatalf("Resume = %v", err)
	}
	snap, err = c.Refresh(context.Background()) // the same client: its cache moves forward
	if err != nil {
		t.Fatalf("Refresh after Resume = %v", err)
	}
	if snap.Releases[0].Meta.Rollout.Halted {
		t.Errorf("release still halted after Resume")
	}
	if err := tr.pub.Halt("b/stable/nope.img", "x"); err == nil {
		t.Errorf("Halt(unknown release) = nil; want an error")
	}
}

// TestTUFAttacks serves tampered, expired, replayed and mixed metadata and expects Refresh to
// fail with TUF's own checks.
func TestTUFAttacks(t *testing.T) {
	ctx := context.Background()
	t.Run("tampered delegated role", func(t *testing.T) {
		tr := newTestRepo(t)
		tr.publish("b", "stable", "1.0.0")
		name := "1." + RoleName("b", "stable") + ".json"
		b := bytes.Replace(tr.readMeta(name), []byte(`"1.0.0"`), []byte(`"9.0.0"`), 1)
		tr.serve("/metadata/"+name, b)
		_, err := tr.client("b", "stable", nil).Refresh(ctx)
		if err == nil {
			t.Fatalf("Refresh with a tampered role = nil error; want a TUF error")
		}
		t.Logf("refused: %v", err)
	})
	t.Run("tampered target custom metadata re-signed by wrong key", func(t *testing.T) {
		tr := newTestRepo(t)
		tr.publish("b", "stable", "1.0.0")
		name := "1." + RoleName("b", "stable") + ".json"
		m, err := metadata.Targets().FromBytes(tr.readMeta(name))
		if err != nil {
			t.Fatal(err)
		}
		k, _ := NewKey()
		signInto(m, k)
		b, _ := m.ToBytes(true)
		tr.serve("/metadata/"+name, b)
		if _, err := tr.client("b", "stable", nil).Refresh(ctx); err == nil {
			t.Fatalf("Refresh with a role signed by an unknown key = nil error")
		}
	})
	t.Run("expired timestamp (freeze)", func(t *testing.T) {
		tr := newTestRepo(t)
		tr.publish("b", "stable", "1.0.0")
		c := tr.client("b", "stable", nil)
		tr.now = tr.now.Add(DefaultExpiry.Timestamp + time.Minute)
		_, err := c.Refresh(ctx)
		if err == nil || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("Refresh after the timestamp expired = %v; want an expiry error", err)
		}
		if err := tr.pub.Refresh(); err != nil { // the operator re-signs: devices recover
			t.Fatal(err)
		}
		if _, err := c.Refresh(ctx); err != nil {
			t.Errorf("Refresh after the publisher re-signed = %v", err)
		}
	})
	t.Run("replayed old timestamp (rollback)", func(t *testing.T) {
		tr := newTestRepo(t)
		tr.publish("b", "stable", "1.0.0")
		old := tr.readMeta("timestamp.json")
		tr.publish("b", "stable", "1.1.0")
		c := tr.client("b", "stable", nil)
		if _, err := c.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		tr.serve("/metadata/timestamp.json", old)
		_, err := c.Refresh(ctx)
		if err == nil {
			t.Fatalf("Refresh with a replayed timestamp = nil error; want a rollback error")
		}
		t.Logf("refused: %v", err)
	})
	t.Run("mix and match", func(t *testing.T) {
		tr := newTestRepo(t)
		tr.publish("b", "stable", "1.0.0")
		tr.publish("b", "stable", "1.1.0")
		// Serve version 1 of the role under version 2's name: the snapshot pins version 2.
		role := RoleName("b", "stable")
		tr.serve("/metadata/2."+role+".json", tr.readMeta("1."+role+".json"))
		if _, err := tr.client("b", "stable", nil).Refresh(ctx); err == nil {
			t.Fatalf("Refresh with an old role under the new name = nil error")
		}
		// Serve another snapshot than the one the timestamp hashes.
		tr2 := newTestRepo(t)
		tr2.publish("b", "stable", "1.0.0")
		v := tr2.timestamp().Signed.Meta["snapshot.json"].Version
		tr2.serve("/metadata/"+itoa(v)+".snapshot.json", tr2.readMeta(itoa(v-1)+".snapshot.json"))
		if _, err := tr2.client("b", "stable", nil).Refresh(ctx); err == nil {
			t.Fatalf("Refresh with a snapshot not matching the timestamp = nil error")
		}
	})
	t.Run("other board cannot be served through this role", func(t *testing.T) {
		tr := newTestRepo(t)
		tr.publish("b", "stable", "1.0.0")
		// A role for another board is delegated only its own paths: even if its metadata is
		// served as ours, the names and signatures do not line up.
		tr.publish("c", "stable", "1.0.0")
		tr.serve("/metadata/1."+RoleName("b", "stable")+".json", tr.readMeta("1."+RoleName("c", "stable")+".json"))
		_, err := tr.client("b", "stable", nil).Refresh(ctx)
		if err == nil {
			t.Fatalf("Refresh with board c's role served as board b's = nil error")
		}
		t.Logf("refused: %v", err)
	})
	t.Run("release key signs a path outside its role", func(t *testing.T) {
		tr := newTestRepo(t)
		tr.publish("b", "stable", "1.0.0")
		// The release key holder adds a target for board c into board b's role.
		st, err := tr.pub.load()
		if err != nil {
			t.Fatal(err)
		}
		role := st.delegated[RoleName("b", "stable")]
		for p, tf := range role.Signed.Targets {
			role.Signed.Targets["c/stable/"+p[len("b/stable/"):]] = tf
		}
		if err := tr.pub.commit(st, []string{RoleName("b", "stable")}, false, nil); err != nil {
			t.Fatal(err)
		}
		snap, err := tr.client("b", "stable", nil).Refresh(ctx)
		if err != nil {
			t.Fatalf("Refresh = %v", err)
		}
		if len(snap.Releases) != 1 || len(snap.Invalid) != 1 || !strings.Contains(snap.Invalid[0].Error(), "outside the role's paths") {
			t.Errorf("Refresh = %d releases, invalid %v; want 1 release and the foreign path invalid", len(snap.Releases), snap.Invalid)
		}
	})
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

func TestRootRotation(t *testing.T) {
	ctx := context.Background()
	tr := newTestRepo(t)
	tr.publish("b", "stable", "1.0.0")
	rootV1, _ := tr.pub.RootJSON()
	oldTimestamp, _ := LoadKey(tr.keys, KeyTimestamp)

	// A device that refreshed under root v1 and one that never refreshed (image root only).
	seen := tr.client("b", "stable", nil)
	if _, err := seen.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	fresh := tr.client("b", "stable", rootV1)

	if err := tr.pub.RotateRoot(KeyTimestamp); err != nil {
		t.Fatalf("RotateRoot(timestamp) = %v", err)
	}
	if err := tr.pub.RotateRoot(KeyTargets, KeySnapshot); err != nil {
		t.Fatalf("RotateRoot(targets, snapshot) = %v", err)
	}
	tr.publish("b", "stable", "1.1.0")
	for name, c := range map[string]*Client{"refreshed before": seen, "image root only": fresh} {
		snap, err := c.Refresh(ctx)
		if err != nil {
			t.Fatalf("%s: Refresh after two root rotations = %v", name, err)
		}
		if len(snap.Releases) != 2 || snap.Releases[0].Meta.Version != "1.1.0" {
			t.Errorf("%s: releases after rotation = %v; want 1.1.0 and 1.0.0", name, snap.Releases)
		}
	}
	root, _ := metadata.Root().FromBytes(tr.readMeta("root.json"))
	if root.Signed.Version != 3 {
		t.Errorf("root version after two rotations = %d; want 3", root.Signed.Version)
	}

	// The retired timestamp key no longer counts: a timestamp signed with it is refused.
	ts := tr.timestamp()
	ts.Signed.Version++
	signInto(ts, oldTimestamp)
	b, _ := ts.ToBytes(true)
	tr.serve("/metadata/timestamp.json", b)
	if _, err := seen.Refresh(ctx); err == nil {
		t.Errorf("Refresh with a timestamp signed by the retired key = nil error")
	}
	tr.unserve("/metadata/timestamp.json")

	// A root v4 signed only by a key the v3 root does not trust is refused.
	evil, _ := NewKey()
	root.Signed.Version = 4
	root.Signed.Keys = map[string]*metadata.Key{}
	for _, r := range root.Signed.Roles {
		r.KeyIDs = nil
	}
	for _, role := range []string{KeyRoot, KeyTargets, KeySnapshot, KeyTimestamp} {
		root.Signed.AddKey(evil.Public(), role)
	}
	signInto(root, evil)
	b, _ = root.ToBytes(true)
	tr.serve("/metadata/4.root.json", b)
	_, err := tr.client("b", "stable", rootV1).Refresh(ctx)
	if err == nil {
		t.Fatalf("Refresh with a root v4 signed by an untrusted key = nil error")
	}
	t.Logf("refused: %v", err)
}

func FuzzParseMeta(f *testing.F) {
	good, _ := MarshalCustom(&Meta{Version: "1.2.3", Board: "qemu-virt-arm64", Channel: "stable", MinVersion: "1.0.0",
		Rollout: rollout.Plan{Waves: []rollout.Wave{{Start: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Upto: 20}}}})
	f.Add([]byte(good))
	f.Add([]byte(`{"meshroot":{"version":"x"}}`))
	f.Add([]byte(`{"meshroot":null}`))
	f.Add([]byte(`{"meshroot":{"version":"1.0.0","board":"b","channel":"c","rollout":{"windows":[{"start":"02:00","duration":"1h"}]}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMeta(b)
		if err != nil {
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("ParseMeta accepted invalid metadata: %v", err)
		}
		again, err := MarshalCustom(m)
		if err != nil {
			t.Fatalf("MarshalCustom(ParseMeta()) = %v", err)
		}
		m2, err := ParseMeta(again)
		if err != nil {
			t.Fatalf("ParseMeta(MarshalCustom()) = %v", err)
		}
		if Compare(m.Version, m2.Version) != 0 || m.Board != m2.Board || m.Rollout.Halted != m2.Rollout.Halted {
			t.Fatalf("round trip changed the metadata: %+v -> %+v", m, m2)
		}
	})
}
