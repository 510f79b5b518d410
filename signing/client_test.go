package signing

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/fetcher"
)

var (
	manifestA = []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.sealift.release.v1","layers":[]}`)
	manifestB = []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.sealift.release.v1","annotations":{"v":"2"},"layers":[]}`)
	customA   = json.RawMessage(`{
		"version": "1.2.0", "variant": "k8s-1.31", "arch": "x86_64",
		"rollout": {"waves": [{"after_seconds": 3600, "per_mille": 10}]}
	}`)
)

func TestHappyPath(t *testing.T) {
	e := newEnv(t, InitOptions{})
	mustDo(t, "AddTarget", e.repo.AddTarget("k8s-1.31/x86_64/1.2.0.json", manifestA, customA))
	rec := &recorder{f: NewDirFetcher(e.repo.Dir())}
	c := e.client(rec, t0.Add(time.Hour))

	if _, err := c.Targets(); !errors.Is(err, ErrNotRefreshed) {
		t.Fatalf("Targets before Refresh: %v, want ErrNotRefreshed", err)
	}
	mustDo(t, "Refresh", c.Refresh())
	ts, err := c.Targets()
	mustDo(t, "Targets", err)
	sum := sha256.Sum256(manifestA)
	want := TargetInfo{
		Name:   "k8s-1.31/x86_64/1.2.0.json",
		Length: int64(len(manifestA)),
		SHA256: hex.EncodeToString(sum[:]),
		Custom: json.RawMessage(`{"version":"1.2.0","variant":"k8s-1.31","arch":"x86_64","rollout":{"waves":[{"after_seconds":3600,"per_mille":10}]}}`),
	}
	if len(ts) != 1 || !equalInfo(ts[want.Name], want) {
		t.Fatalf("Targets = %+v\nwant %+v", ts, want)
	}
	// The publisher's view is the same.
	pts, err := e.repo.Targets()
	mustDo(t, "repo Targets", err)
	if !equalInfo(pts[want.Name], want) {
		t.Fatalf("repo Targets = %+v", pts)
	}

	data, info, err := c.Fetch(want.Name)
	mustDo(t, "Fetch", err)
	if !bytes.Equal(data, manifestA) || !equalInfo(info, want) {
		t.Fatalf("Fetch = %q %+v", data, info)
	}
	// Fetch kept the target in memory: the cache holds metadata only, and
	// nothing landed in the working directory either.
	ents, _ := os.ReadDir(e.cache)
	if len(ents) != 4 {
		t.Fatalf("cache after Fetch: %v", ents)
	}
	if _, err := os.Stat(url.PathEscape(want.Name)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Fetch wrote the target to the working directory: %v", err)
	}
	if _, _, err := c.Fetch("k8s-1.31/x86_64/9.9.9.json"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Fetch of unknown target: %v, want ErrNotFound", err)
	}

	// The documented request paths, in order.
	wantPaths := []string{
		"metadata/2.root.json",
		"metadata/timestamp.json",
		"metadata/2.snapshot.json",
		"metadata/2.targets.json",
		"targets/k8s-1.31/x86_64/" + want.SHA256 + ".1.2.0.json",
	}
	if !slices.Equal(rec.paths, wantPaths) {
		t.Fatalf("requested paths\n%q\nwant\n%q", rec.paths, wantPaths)
	}
	name, hash, ok := SplitTargetPath(wantPaths[4], "targets")
	if !ok || name != want.Name || hash != want.SHA256 {
		t.Fatalf("SplitTargetPath = %q %q %v", name, hash, ok)
	}
}

func equalInfo(a, b TargetInfo) bool {
	return a.Name == b.Name && a.Length == b.Length && a.SHA256 == b.SHA256 && bytes.Equal(a.Custom, b.Custom)
}

// TestRejects: each case serves a repository an attacker (or a broken
// transport) could present, and the client must refuse it with the right
// class of error.
func TestRejects(t *testing.T) {
	const name = "rel/1.2.0.json"
	type tc struct {
		name  string
		init  InitOptions
		serve func(e *env, m fstest.MapFS) fetcher.Fetcher // nil: the published tree as is
		now   time.Duration                                // client clock, after t0
		fetch bool                                         // the failure is expected at Fetch, not Refresh
		want  error
		msg   string // substring of the error
	}
	cases := []tc{
		{
			name: "tampered target bytes",
			serve: func(e *env, m fstest.MapFS) fetcher.Fetcher {
				p := e.targetFile(name)
				m[p].Data = bytes.Replace(m[p].Data, []byte("schemaVersion"), []byte("schemaVersiom"), 1)
				return &DirFetcher{FS: m}
			},
			fetch: true, want: ErrMismatch, msg: "hash",
		},
		{
			name: "target larger than signed length",
			serve: func(e *env, m fstest.MapFS) fetcher.Fetcher {
				p := e.targetFile(name)
				m[p].Data = append(m[p].Data, ' ')
				return &DirFetcher{FS: m}
			},
			fetch: true, want: ErrMismatch,
		},
		{
			name: "endless target data",
			serve: func(e *env, m fstest.MapFS) fetcher.Fetcher {
				return &DirFetcher{FS: &endlessFS{FS: m, path: e.targetFile(name)}}
			},
			fetch: true, want: ErrMismatch,
		},
		{
			name: "endless timestamp.json",
			serve: func(e *env, m fstest.MapFS) fetcher.Fetcher {
				return &DirFetcher{FS: &endlessFS{FS: m, path: "metadata/timestamp.json"}}
			},
			want: ErrMismatch,
		},
		{
			name: "transport ignoring maxLength",
			serve: func(e *env, m fstest.MapFS) fetcher.Fetcher {
				// Still valid JSON, but over go-tuf's 16 KiB timestamp cap.
				ts := m["metadata/timestamp.json"]
				ts.Data = append(ts.Data, bytes.Repeat([]byte(" "), 20000)...)
				return greedyFetcher{&DirFetcher{FS: m}}
			},
			want: ErrMismatch, msg: "more than the allowed 16384",
		},
		{
			name: "tampered targets.json",
			serve: func(e *env, m fstest.MapFS) fetcher.Fetcher {
				p := "metadata/" + targetsName(parseServed(e.t, m).targets.Signed.Version)
				m[p].Data = bytes.Replace(m[p].Data, []byte("1.2.0"), []byte("9.9.9"), 1)
				return &DirFetcher{FS: m}
			},
			want: ErrMismatch, msg: "hash",
		},
		{
			// An attacker holding the snapshot and timestamp keys (online
			// keys) but not the targets key re-pins a changed targets.json.
			name: "tampered targets.json re-pinned by snapshot",
			serve: func(e *env, m fstest.MapFS) fetcher.Fetcher {
				s := parseServed(e.t, m)
				c := json.RawMessage(`{"version":"9.9.9"}`)
				s.targets.Signed.Targets[name].Custom = &c
				tb, _ := s.targets.ToBytes(true) // old, now invalid, signatures
				repin(e.t, m, s, tb, true, e.keys(RoleSnapshot), e.keys(RoleTimestamp))
				return &DirFetcher{FS: m}
			},
			want: ErrSignature,
		},
		{
			name: "targets signed by an unknown key",
			serve: func(e *env, m fstest.MapFS) fetcher.Fetcher {
				k, err := generateKey()
				mustDo(e.t, "generateKey", err)
				forgeChain(e.t, m, nil, []*signingKey{k}, e.keys(RoleSnapshot), e.keys(RoleTimestamp))
				return &DirFetcher{FS: m}
			},
			want: ErrSignature,
		},
		{
			name: "timestamp signed by an unknown key",
			serve: func(e *env, m fstest.MapFS) fetcher.Fetcher {
				k, err := generateKey()
				mustDo(e.t, "generateKey", err)
				forgeChain(e.t, m, nil, e.keys(RoleTargets), e.keys(RoleSnapshot), []*signingKey{k})
				return &DirFetcher{FS: m}
			},
			want: ErrSignature,
		},
		{
			name: "fewer targets signatures than threshold",
			init: InitOptions{KeysPerRole: map[Role]int{RoleTargets: 2}, Thresholds: map[Role]int{RoleTargets: 2}},
			serve: func(e *env, m fstest.MapFS) fetcher.Fetcher {
				forgeChain(e.t, m, nil, e.keys(RoleTargets)[:1], e.keys(RoleSnapshot), e.keys(RoleTimestamp))
				return &DirFetcher{FS: m}
			},
			want: ErrSignature, msg: "got 1, want 2",
		},
		{
			name: "same signature twice does not meet threshold 2",
			init: InitOptions{KeysPerRole: map[Role]int{RoleTimestamp: 2}, Thresholds: map[Role]int{RoleTimestamp: 2}},
			serve: func(e *env, m fstest.MapFS) fetcher.Fetcher {
				forgeChain(e.t, m, nil, e.keys(RoleTargets), e.keys(RoleSnapshot), e.keys(RoleTimestamp)[:1])
				ts, _ := metadata.Timestamp().FromBytes(m["metadata/timestamp.json"].Data)
				dup := ts.Signatures[0]
				dup.KeyID = e.keys(RoleTimestamp)[1].id
				ts.Signatures = append(ts.Signatures, dup)
				m["metadata/timestamp.json"].Data, _ = ts.ToBytes(true)
				return &DirFetcher{FS: m}
			},
			want: ErrSignature,
		},
		{
			name: "expired timestamp",
			now:  25 * time.Hour,
			want: ErrExpired, msg: "timestamp.json is expired",
		},
		{
			name: "expired snapshot",
			init: InitOptions{Expiry: map[Role]time.Duration{RoleSnapshot: time.Hour}},
			now:  2 * time.Hour,
			want: ErrExpired, msg: "snapshot.json is expired",
		},
		{
			name: "expired targets",
			init: InitOptions{Expiry: map[Role]time.Duration{RoleTargets: time.Hour}},
			now:  2 * time.Hour,
			want: ErrExpired, msg: "targets is expired",
		},
		{
			name: "expired root",
			init: InitOptions{Expiry: map[Role]time.Duration{RoleRoot: time.Hour}},
			now:  2 * time.Hour,
			want: ErrExpired, msg: "root.json is expired",
		},
		{
			// Snapshot (and timestamp) from the current state, targets from
			// an older state under the current file name.
			name: "mix and match",
			serve: func(e *env, m fstest.MapFS) fetcher.Fetcher {
				cur := parseServed(e.t, m).targets.Signed.Version
				m["metadata/"+targetsName(cur)] = &fstest.MapFile{Data: e.oldFile(targetsName(cur - 1))}
				return &DirFetcher{FS: m}
			},
			want: ErrMismatch,
		},
		{
			// The same mix where the snapshot carries no hashes: the
			// version pin alone must catch it.
			name: "mix and match, version pin only",
			serve: func(e *env, m fstest.MapFS) fetcher.Fetcher {
				s := parseServed(e.t, m)
				old := e.oldFile(targetsName(s.targets.Signed.Version - 1))
				repin(e.t, m, s, old, false, e.keys(RoleSnapshot), e.keys(RoleTimestamp))
				return &DirFetcher{FS: m}
			},
			want: ErrRollback, msg: "expected targets version",
		},
		{
			name:  "registry unreachable",
			serve: func(*env, fstest.MapFS) fetcher.Fetcher { return failFetcher{} },
			want:  ErrDownload, msg: "connection refused",
		},
		{
			name: "timestamp missing",
			serve: func(e *env, m fstest.MapFS) fetcher.Fetcher {
				delete(m, "metadata/timestamp.json")
				return &DirFetcher{FS: m}
			},
			want: ErrDownload, msg: "404",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.init)
			mustDo(t, "AddTarget", e.repo.AddTarget("rel/1.1.0.json", manifestB, nil))
			mustDo(t, "AddTarget", e.repo.AddTarget(name, manifestA, customA))
			m := e.published()
			var f fetcher.Fetcher = &DirFetcher{FS: m}
			if tc.serve != nil {
				f = tc.serve(e, m)
			}
			c := e.client(f, t0.Add(tc.now))
			err := c.Refresh()
			if tc.fetch {
				mustDo(t, "Refresh", err)
				var data []byte
				data, _, err = c.Fetch(name)
				if err == nil {
					t.Fatalf("Fetch accepted %d bytes", len(data))
				}
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %q does not mention %q", err, tc.msg)
			}
			if df, ok := f.(*DirFetcher); ok {
				if en, ok := df.FS.(*endlessFS); ok {
					// Bounded: at most the signed (or maximum) length + 1.
					if n := en.read.Load(); n > 16384+1 {
						t.Fatalf("read %d bytes of endless data", n)
					}
				}
			}
			if _, err := c.Targets(); !errors.Is(err, ErrNotRefreshed) && !tc.fetch {
				t.Fatalf("Targets after failed Refresh: %v, want ErrNotRefreshed", err)
			}
		})
	}
}

// TestFetchSizeCap: a node refuses to download a target whose signed
// length exceeds its cap, before asking the fetcher for anything.
func TestFetchSizeCap(t *testing.T) {
	e := newEnv(t, InitOptions{})
	mustDo(t, "AddTarget", e.repo.AddTarget("a", manifestA, nil))
	rec := &recorder{f: NewDirFetcher(e.repo.Dir())}
	c, err := NewClient(ClientOptions{
		TrustedRoot: e.root, CacheDir: e.cache, Fetcher: rec,
		MetadataBaseURL: "metadata", TargetBaseURL: "targets",
		Now:             func() time.Time { return t0 },
		MaxTargetLength: int64(len(manifestA)) - 1,
	})
	mustDo(t, "NewClient", err)
	mustDo(t, "Refresh", c.Refresh())
	n := len(rec.paths)
	if _, _, err := c.Fetch("a"); !errors.Is(err, ErrTargetTooLarge) {
		t.Fatalf("Fetch: %v, want ErrTargetTooLarge", err)
	}
	if len(rec.paths) != n {
		t.Fatalf("Fetch asked the fetcher for %v", rec.paths[n:])
	}
}
