package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"
)

// ClientConfig configures a device's repository client.
type ClientConfig struct {
	// BaseURL is the repository root (it serves metadata/ and targets/).
	BaseURL string
	// Board and Channel select the delegated role to read.
	Board, Channel string
	// CacheDir keeps the trusted metadata between refreshes and reboots (on the data
	// partition): the latest trusted root and the versions that protect against rollback.
	CacheDir string
	// TrustedRoot is the root metadata shipped in the image, used when the cache has none.
	TrustedRoot []byte
	// HTTPClient is used for metadata (http.DefaultClient when nil).
	HTTPClient *http.Client
	// Now is the reference time for expiry checks (time.Now when nil).
	Now func() time.Time
}

// Client refreshes the repository with the TUF client workflow and lists the releases for
// one board and channel.
type Client struct {
	cfg ClientConfig
}

// NewClient checks the configuration and returns a client.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.BaseURL == "" {
		return nil, errors.New("repo client: base URL is empty")
	}
	if err := CheckName("board", cfg.Board); err != nil {
		return nil, fmt.Errorf("repo client: %w", err)
	}
	if err := CheckName("channel", cfg.Channel); err != nil {
		return nil, fmt.Errorf("repo client: %w", err)
	}
	if cfg.CacheDir == "" {
		return nil, errors.New("repo client: cache directory is empty")
	}
	if len(cfg.TrustedRoot) == 0 {
		if _, err := os.Stat(filepath.Join(cfg.CacheDir, "root.json")); err != nil {
			return nil, errors.New("repo client: no trusted root (neither in the cache nor configured)")
		}
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	return &Client{cfg: cfg}, nil
}

// Snapshot is what one refresh found for the client's board and channel.
type Snapshot struct {
	// Releases are the valid releases, newest version first.
	Releases []Release
	// Invalid lists targets whose custom metadata did not parse (signed, but unusable).
	Invalid []error
	// TimestampVersion is the version of the timestamp metadata the refresh ended with.
	TimestampVersion int64
}

// Refresh runs the TUF client workflow (root rotation, timestamp, snapshot, targets, the
// board/channel delegation) against the repository and returns the releases. Any failure of
// TUF verification — bad or missing signatures, expired metadata, version rollback, a snapshot
// or targets file that does not match the signed hashes — is returned as an error and the
// cached trusted metadata is left as it was.
func (c *Client) Refresh(ctx context.Context) (*Snapshot, error) {
	if err := os.MkdirAll(c.cfg.CacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("tuf: %w", err)
	}
	root := c.cfg.TrustedRoot
	if b, err := os.ReadFile(filepath.Join(c.cfg.CacheDir, "root.json")); err == nil {
		root = b
	}
	base := strings.TrimSuffix(c.cfg.BaseURL, "/")
	cfg, err := config.New(base+"/"+MetadataDir, root)
	if err != nil {
		return nil, fmt.Errorf("tuf: %w", err)
	}
	cfg.LocalMetadataDir = c.cfg.CacheDir
	cfg.LocalTargetsDir = filepath.Join(c.cfg.CacheDir, "targets")
	cfg.RemoteTargetsURL = base + "/" + TargetsDir
	cfg.Fetcher = &ctxFetcher{ctx: ctx, client: c.cfg.HTTPClient}
	// Our metadata is small; cap what an attacker can make us read.
	cfg.TimestampMaxLength = 16 << 10
	cfg.SnapshotMaxLength = 1 << 20
	cfg.TargetsMaxLength = 4 << 20
	up, err := updater.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("tuf: trusted root: %w", err)
	}
	if c.cfg.Now != nil {
		up.UnsafeSetRefTime(c.cfg.Now())
	}
	if err := up.Refresh(); err != nil {
		return nil, fmt.Errorf("tuf refresh: %w", err)
	}
	// Walk the delegation for this board and channel: looking up a path under its prefix loads
	// and verifies the delegated role's metadata.
	probe := PathPrefix(c.cfg.Board, c.cfg.Channel) + ".meshroot-list"
	if _, err := up.GetTargetInfo(probe); err != nil && !strings.Contains(err.Error(), "not found") {
		return nil, fmt.Errorf("tuf: role %s: %w", RoleName(c.cfg.Board, c.cfg.Channel), err)
	}
	trusted := up.GetTrustedMetadataSet()
	snap := &Snapshot{}
	if trusted.Timestamp != nil {
		snap.TimestampVersion = trusted.Timestamp.Signed.Version
	}
	role := trusted.Targets[RoleName(c.cfg.Board, c.cfg.Channel)]
	if role == nil {
		return snap, nil
	}
	prefix := PathPrefix(c.cfg.Board, c.cfg.Channel)
	for p, tf := range role.Signed.Targets {
		if !strings.HasPrefix(p, prefix) || strings.Contains(p[len(prefix):], "/") {
			// TUF enforces delegated paths only on lookups by path; a listing must too.
			snap.Invalid = append(snap.Invalid, fmt.Errorf("target %s: outside the role's paths %s*", p, prefix))
			continue
		}
		r, err := releaseOf(p, tf)
		if err != nil {
			snap.Invalid = append(snap.Invalid, err)
			continue
		}
		snap.Releases = append(snap.Releases, r)
	}
	sort.Slice(snap.Releases, func(i, j int) bool {
		if c := Compare(snap.Releases[i].Meta.Version, snap.Releases[j].Meta.Version); c != 0 {
			return c > 0
		}
		return snap.Releases[i].Path < snap.Releases[j].Path
	})
	return snap, nil
}

// TargetURL is where a release's image is served (the consistent-snapshot name
// "<dir>/<sha256>.<name>" under targets/).
func (c *Client) TargetURL(r Release) string {
	dir, name := path.Split(r.Path)
	return strings.TrimSuffix(c.cfg.BaseURL, "/") + "/" + TargetsDir + "/" + dir + r.Hex() + "." + name
}

// ctxFetcher is go-tuf's Fetcher over an http.Client, bound to a context.
type ctxFetcher struct {
	ctx    context.Context
	client *http.Client
}

// DownloadFile implements fetcher.Fetcher: it reads at most maxLength bytes and returns
// metadata.ErrDownloadHTTP for a non-200 status (go-tuf stops looking for newer roots on 404).
func (f *ctxFetcher) DownloadFile(url string, maxLength int64, _ time.Duration) ([]byte, error) {
	req, err := http.NewRequestWithContext(f.ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &metadata.ErrDownloadHTTP{StatusCode: resp.StatusCode, URL: url}
	}
	if cl := resp.Header.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n > maxLength {
			return nil, &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("%s is %d bytes; at most %d", url, n, maxLength)}
		}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxLength+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > maxLength {
		return nil, &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("%s is over %d bytes", url, maxLength)}
	}
	return b, nil
}
