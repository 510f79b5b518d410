package signing

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/fetcher"
)

// t0 has nanoseconds on purpose: expiry dates must still come out in whole
// seconds.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time)     { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

// env is one publisher repository plus what a node ships and caches.
type env struct {
	t     *testing.T
	repo  *Repo
	clk   *clock // the publisher's clock
	root  []byte // 1.root.json, shipped in the "OS image"
	cache string // the node's cache directory
}

func newEnv(t *testing.T, o InitOptions) *env {
	t.Helper()
	clk := &clock{t: t0}
	o.Now = clk.Now
	r, err := InitRepo(filepath.Join(t.TempDir(), "repo"), o)
	if err != nil {
		t.Fatalf("InitRepo: %v", err)
	}
	root, err := os.ReadFile(filepath.Join(r.Dir(), "metadata", "1.root.json"))
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, repo: r, clk: clk, root: root, cache: filepath.Join(t.TempDir(), "cache")}
}

// published captures what the publisher would push right now: metadata
// from Files under metadata/, and the stored target bytes under targets/.
func (e *env) published() fstest.MapFS {
	e.t.Helper()
	files, err := e.repo.Files()
	if err != nil {
		e.t.Fatalf("Files: %v", err)
	}
	m := fstest.MapFS{}
	for name, data := range files {
		m["metadata/"+name] = &fstest.MapFile{Data: data, Mode: 0o644}
	}
	tdir := filepath.Join(e.repo.Dir(), "targets")
	err = filepath.WalkDir(tdir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(tdir, p)
		m["targets/"+filepath.ToSlash(rel)] = &fstest.MapFile{Data: data, Mode: 0o644}
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

// client returns a node client that serves fsys, trusts the shipped root,
// uses the env's cache and has its own clock set to now.
func (e *env) client(f fetcher.Fetcher, now time.Time) *Client {
	e.t.Helper()
	c, err := NewClient(ClientOptions{
		TrustedRoot:     e.root,
		CacheDir:        e.cache,
		Fetcher:         f,
		MetadataBaseURL: "metadata",
		TargetBaseURL:   "targets",
		Now:             func() time.Time { return now },
	})
	if err != nil {
		e.t.Fatalf("NewClient: %v", err)
	}
	return c
}

func (e *env) mustRefresh(f fetcher.Fetcher, now time.Time) *Client {
	e.t.Helper()
	c := e.client(f, now)
	if err := c.Refresh(); err != nil {
		e.t.Fatalf("Refresh at %v: %v", now.Sub(t0), err)
	}
	return c
}

func (e *env) keys(role Role) []*signingKey {
	e.t.Helper()
	st, err := e.repo.load()
	if err != nil {
		e.t.Fatal(err)
	}
	k, err := loadRoleKeys(e.repo.Dir(), &st.root.Signed, role)
	if err != nil {
		e.t.Fatal(err)
	}
	return k
}

func mustDo(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// served parses the current top-level metadata out of a published tree.
type served struct {
	timestamp *metadata.Metadata[metadata.TimestampType]
	snapshot  *metadata.Metadata[metadata.SnapshotType]
	targets   *metadata.Metadata[metadata.TargetsType]
}

func parseServed(t *testing.T, m fstest.MapFS) served {
	t.Helper()
	var s served
	var err error
	if s.timestamp, err = metadata.Timestamp().FromBytes(m["metadata/timestamp.json"].Data); err != nil {
		t.Fatal(err)
	}
	sv := s.timestamp.Signed.Meta["snapshot.json"].Version
	if s.snapshot, err = metadata.Snapshot().FromBytes(m["metadata/"+snapshotName(sv)].Data); err != nil {
		t.Fatal(err)
	}
	tv := s.snapshot.Signed.Meta["targets.json"].Version
	if s.targets, err = metadata.Targets().FromBytes(m["metadata/"+targetsName(tv)].Data); err != nil {
		t.Fatal(err)
	}
	return s
}

func sign[T metadata.Roles](t *testing.T, md *metadata.Metadata[T], keys []*signingKey) []byte {
	t.Helper()
	if err := signWith(md, keys); err != nil {
		t.Fatal(err)
	}
	b, err := md.ToBytes(true)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// forgeChain writes what an attacker holding the given keys could serve:
// targets (changed by mutate, version bumped, signed with tk), then a
// snapshot pinning it (signed with sk) and a timestamp pinning that
// (signed with tsk).
func forgeChain(t *testing.T, m fstest.MapFS, mutate func(*metadata.TargetsType), tk, sk, tsk []*signingKey) {
	t.Helper()
	s := parseServed(t, m)
	if mutate != nil {
		mutate(&s.targets.Signed)
	}
	s.targets.Signed.Version++
	repin(t, m, s, sign(t, s.targets, tk), true, sk, tsk)
}

// repin serves tb as the targets file of version s.targets.Signed.Version
// and signs a new snapshot pinning it (by version, and by length and hash
// if withHashes) and a new timestamp pinning that snapshot.
func repin(t *testing.T, m fstest.MapFS, s served, tb []byte, withHashes bool, sk, tsk []*signingKey) {
	t.Helper()
	v := s.targets.Signed.Version
	m["metadata/"+targetsName(v)] = &fstest.MapFile{Data: tb}
	pin := metaFile(v, tb)
	if !withHashes {
		pin = &metadata.MetaFiles{Version: v}
	}
	s.snapshot.Signed.Meta["targets.json"] = pin
	s.snapshot.Signed.Version++
	sb := sign(t, s.snapshot, sk)
	m["metadata/"+snapshotName(s.snapshot.Signed.Version)] = &fstest.MapFile{Data: sb}
	s.timestamp.Signed.Meta["snapshot.json"] = metaFile(s.snapshot.Signed.Version, sb)
	s.timestamp.Signed.Version++
	m["metadata/timestamp.json"] = &fstest.MapFile{Data: sign(t, s.timestamp, tsk)}
}

// recorder remembers every path a client asked its fetcher for.
type recorder struct {
	f     fetcher.Fetcher
	mu    sync.Mutex
	paths []string
}

func (r *recorder) DownloadFile(p string, max int64, d time.Duration) ([]byte, error) {
	r.mu.Lock()
	r.paths = append(r.paths, p)
	r.mu.Unlock()
	return r.f.DownloadFile(p, max, d)
}

// endlessFS serves endless data at one path and counts what was read from
// it. It gives up after 64 MiB so that a test without the length limit
// fails instead of exhausting memory.
type endlessFS struct {
	fs.FS
	path string
	read atomic.Int64
}

const endlessGiveUp = 64 << 20

func (e *endlessFS) Open(name string) (fs.File, error) {
	if name == e.path {
		return &endlessFile{fs: e}, nil
	}
	return e.FS.Open(name)
}

type endlessFile struct{ fs *endlessFS }

func (f *endlessFile) Stat() (fs.FileInfo, error) { return endlessInfo{}, nil }
func (f *endlessFile) Close() error               { return nil }
func (f *endlessFile) Read(p []byte) (int, error) {
	if f.fs.read.Load() > endlessGiveUp {
		return 0, errors.New("endless file: read too much (no length limit?)")
	}
	for i := range p {
		p[i] = 'A'
	}
	f.fs.read.Add(int64(len(p)))
	return len(p), nil
}

// endlessInfo claims an irregular file of unknown size, so only the
// limited read can stop it.
type endlessInfo struct{}

func (endlessInfo) Name() string       { return "endless" }
func (endlessInfo) Size() int64        { return 0 }
func (endlessInfo) Mode() fs.FileMode  { return fs.ModeIrregular }
func (endlessInfo) ModTime() time.Time { return time.Time{} }
func (endlessInfo) IsDir() bool        { return false }
func (endlessInfo) Sys() any           { return nil }

var _ io.Reader = (*endlessFile)(nil)

// failFetcher fails every download like an unreachable registry.
type failFetcher struct{}

func (failFetcher) DownloadFile(p string, _ int64, _ time.Duration) ([]byte, error) {
	return nil, errors.New("dial tcp: connection refused")
}

// greedyFetcher ignores maxLength, as a careless transport might.
type greedyFetcher struct{ fetcher.Fetcher }

func (g greedyFetcher) DownloadFile(p string, _ int64, d time.Duration) ([]byte, error) {
	return g.Fetcher.DownloadFile(p, 1<<30, d)
}

// targetFile is the published path of target name.
func (e *env) targetFile(name string) string {
	e.t.Helper()
	ts, err := e.repo.Targets()
	if err != nil {
		e.t.Fatal(err)
	}
	ti, ok := ts[name]
	if !ok {
		e.t.Fatalf("no target %s", name)
	}
	return "targets/" + TargetURLPath(name, ti.SHA256)
}

// oldFile reads a metadata file the repository kept from an earlier state.
func (e *env) oldFile(name string) []byte {
	e.t.Helper()
	b, err := os.ReadFile(filepath.Join(e.repo.Dir(), "metadata", name))
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}
