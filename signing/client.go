package signing

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/fetcher"
	"github.com/theupdateframework/go-tuf/v2/metadata/trustedmetadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"
)

// ClientOptions configures a node-side client.
type ClientOptions struct {
	// TrustedRoot is the root.json shipped in the OS image: the trust
	// anchor used whenever the cache holds no newer valid root.
	TrustedRoot []byte
	// CacheDir keeps the trusted metadata across runs (on the STATE
	// partition), which is what makes rollback protection survive reboots.
	// It belongs to one repository: clear it when switching repositories.
	CacheDir string
	// Fetcher is the byte transport (see the fetcher contract in
	// fetcher.go).
	Fetcher fetcher.Fetcher
	// MetadataBaseURL is prepended to metadata file names, with a "/" in
	// between: <MetadataBaseURL>/<N>.root.json, .../timestamp.json,
	// .../<N>.snapshot.json, .../<N>.targets.json.
	MetadataBaseURL string
	// TargetBaseURL is prepended to target download paths:
	// <TargetBaseURL>/<dir>/<sha256>.<base> (see TargetURLPath). Empty
	// means MetadataBaseURL + "/targets".
	TargetBaseURL string
	// Now is the reference time for expiry checks; nil means time.Now.
	// go-tuf exposes this as Updater.UnsafeSetRefTime: "unsafe" because a
	// wrong clock disables freeze protection, which is equally true of the
	// system clock it defaults to.
	Now func() time.Time
	// MaxTargetLength caps the signed length of a target Fetch accepts;
	// zero means MaxTargetLength.
	MaxTargetLength int64
}

// Client verifies a TUF repository through any fetcher.Fetcher with go-tuf
// v2's updater (node side). Its methods are safe for concurrent use.
type Client struct {
	o ClientOptions

	mu      sync.Mutex
	up      *updater.Updater // nil until a Refresh succeeds
	targets map[string]*metadata.TargetFiles
}

// Cache file names, as go-tuf names its local metadata.
var cacheFiles = []string{"root.json", "timestamp.json", "snapshot.json", "targets.json"}

// NewClient checks the options and the shipped root (it must parse and
// carry a threshold of its own signatures) and prepares the cache
// directory. It does not touch the network.
func NewClient(o ClientOptions) (*Client, error) {
	if o.Fetcher == nil {
		return nil, fmt.Errorf("%w: no fetcher", ErrBadOptions)
	}
	if o.CacheDir == "" {
		return nil, fmt.Errorf("%w: no cache directory", ErrBadOptions)
	}
	if o.MetadataBaseURL == "" {
		return nil, fmt.Errorf("%w: no metadata base URL", ErrBadOptions)
	}
	if o.TargetBaseURL == "" {
		o.TargetBaseURL = strings.TrimSuffix(o.MetadataBaseURL, "/") + "/targets"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxTargetLength <= 0 {
		o.MaxTargetLength = MaxTargetLength
	}
	if _, err := trustedmetadata.New(o.TrustedRoot); err != nil {
		return nil, classify("trusted root", err)
	}
	o.TrustedRoot = bytes.Clone(o.TrustedRoot)
	if err := os.MkdirAll(o.CacheDir, 0o700); err != nil {
		return nil, err
	}
	return &Client{o: o}, nil
}

// Refresh runs the TUF client workflow with go-tuf's updater: root chain
// (N+1.root.json until 404), then timestamp, snapshot and targets, checking
// signatures, thresholds, versions against the cache (rollback), the pins
// each role has on the next (mix-and-match) and expiry. Errors wrap one of
// ErrExpired, ErrSignature, ErrRollback, ErrMismatch, ErrDownload or
// ErrInvalid together with go-tuf's own error.
//
// Whatever metadata go-tuf accepted is saved to CacheDir, even when a later
// step fails (a newer root or timestamp still raises the rollback floor).
//
// go-tuf's own cache writes are not crash-safe (no fsync; a power cut can
// leave an empty timestamp.json, which go-tuf then fails to parse on every
// later run). So go-tuf works in a scratch copy of the cache, and only
// this function writes CacheDir, with writeFileAtomic. Cache files that do
// not parse are ignored rather than fatal, so a damaged cache costs at
// most the rollback floor it held, never the ability to update.
func (c *Client) Refresh() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.up, c.targets = nil, nil

	removeStale(c.o.CacheDir)
	scratch, err := os.MkdirTemp(c.o.CacheDir, scratchPrefix)
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)

	for _, name := range cacheFiles[1:] {
		data, err := os.ReadFile(filepath.Join(c.o.CacheDir, name))
		if err != nil || !parses(name, data) {
			continue
		}
		if err := os.WriteFile(filepath.Join(scratch, name), data, 0o600); err != nil {
			return err
		}
	}

	up, cfg, err := c.newUpdater(scratch)
	if err != nil {
		return err
	}
	rerr := up.Refresh()
	if err := c.persist(scratch); err != nil {
		return errors.Join(classify("refresh", rerr), fmt.Errorf("signing: save trusted metadata: %w", err))
	}
	if rerr != nil {
		return classify("refresh", rerr)
	}
	// From here on go-tuf must not write anything: Fetch keeps targets in
	// memory and the scratch directory is about to go away.
	cfg.DisableLocalCache = true
	cfg.LocalMetadataDir, cfg.LocalTargetsDir = "", ""
	c.up = up
	c.targets = up.GetTopLevelTargets()
	return nil
}

// newUpdater creates a go-tuf updater working in scratch, starting from
// the newest valid root among the cached one and the shipped one. The
// shipped root wins when newer: an OS update may ship a newer root.
func (c *Client) newUpdater(scratch string) (*updater.Updater, *config.UpdaterConfig, error) {
	roots := [][]byte{c.o.TrustedRoot}
	if cached, err := os.ReadFile(filepath.Join(c.o.CacheDir, "root.json")); err == nil && parses("root.json", cached) {
		if rootVersion(cached) >= rootVersion(c.o.TrustedRoot) {
			roots = [][]byte{cached, c.o.TrustedRoot}
		}
	}
	var errs []error
	for _, root := range roots {
		cfg, err := config.New(c.o.MetadataBaseURL, root)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %w", ErrBadOptions, err)
		}
		cfg.Fetcher = guardFetcher{c.o.Fetcher}
		cfg.LocalMetadataDir = scratch
		cfg.LocalTargetsDir = scratch
		cfg.RemoteTargetsURL = c.o.TargetBaseURL
		cfg.PrefixTargetsWithHash = true
		up, err := updater.New(cfg)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		up.UnsafeSetRefTime(c.o.Now().UTC())
		return up, cfg, nil
	}
	return nil, nil, classify("load trusted root", errors.Join(errs...))
}

// persist copies every file go-tuf saved in scratch that differs from the
// cache into the cache, crash-safely, root first so the cache never holds
// a timestamp without the root that signed it.
func (c *Client) persist(scratch string) error {
	for _, name := range cacheFiles {
		data, err := os.ReadFile(filepath.Join(scratch, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		dst := filepath.Join(c.o.CacheDir, name)
		if old, err := os.ReadFile(dst); err == nil && bytes.Equal(old, data) {
			continue
		}
		if err := writeFileAtomic(dst, data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

const scratchPrefix = ".refresh-"

// removeStale deletes what a crash may have left in the cache directory:
// scratch directories and temporary files of writeFileAtomic. Only one
// Client may use a CacheDir at a time (the node's agent is one process).
func removeStale(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, scratchPrefix) || (strings.HasPrefix(n, ".") && strings.Contains(n, ".tmp-")) {
			os.RemoveAll(filepath.Join(dir, n))
		}
	}
}

// parses reports whether data is well-formed metadata of the role the
// cache file name implies. go-tuf treats a local file that fails
// verification as absent, but a file that fails to parse as a fatal
// error; filtering here turns the latter into the former.
func parses(name string, data []byte) bool {
	var err error
	switch name {
	case "root.json":
		_, err = metadata.Root().FromBytes(data)
	case "timestamp.json":
		_, err = metadata.Timestamp().FromBytes(data)
	case "snapshot.json":
		_, err = metadata.Snapshot().FromBytes(data)
	case "targets.json":
		_, err = metadata.Targets().FromBytes(data)
	default:
		return false
	}
	return err == nil
}

func rootVersion(data []byte) int64 {
	r, err := metadata.Root().FromBytes(data)
	if err != nil {
		return 0
	}
	return r.Signed.Version
}

// Targets returns every target of the trusted targets metadata from the
// last successful Refresh.
func (c *Client) Targets() (map[string]TargetInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.up == nil {
		return nil, ErrNotRefreshed
	}
	return targetInfos(c.targets), nil
}

// Fetch downloads target name through the fetcher and verifies its length
// and hashes against the trusted targets metadata (go-tuf's
// DownloadTarget). The fetcher is asked for at most the signed length, and
// nothing is written to disk.
func (c *Client) Fetch(name string) ([]byte, TargetInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.up == nil {
		return nil, TargetInfo{}, ErrNotRefreshed
	}
	tf, ok := c.targets[name]
	if !ok {
		return nil, TargetInfo{}, fmt.Errorf("signing: fetch %s: %w", name, ErrNotFound)
	}
	info := targetInfos(map[string]*metadata.TargetFiles{name: tf})[name]
	if tf.Length > c.o.MaxTargetLength {
		return nil, info, fmt.Errorf("signing: fetch %s: %w: signed length %d, max %d", name, ErrTargetTooLarge, tf.Length, c.o.MaxTargetLength)
	}
	tf.Path = name
	_, data, err := c.up.DownloadTarget(tf, "", c.o.TargetBaseURL)
	if err != nil {
		return nil, info, classify("fetch "+name, err)
	}
	return data, info, nil
}
