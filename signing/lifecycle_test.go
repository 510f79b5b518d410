package signing

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// TestRollbackAcrossRuns: a node that trusted state B in an earlier run
// (cache on disk, new Client) must refuse older state A, however A is
// presented.
func TestRollbackAcrossRuns(t *testing.T) {
	cases := []struct {
		name string
		// serve builds what the attacker serves from the published states.
		serve func(e *env, a, b fstest.MapFS) fstest.MapFS
		msg   string
	}{
		{
			name:  "whole older state replayed",
			serve: func(e *env, a, b fstest.MapFS) fstest.MapFS { return a },
			msg:   "timestamp version",
		},
		{
			// Holding the timestamp key: a newer timestamp pinning A's
			// older snapshot.
			name: "newer timestamp pinning an older snapshot",
			serve: func(e *env, a, b fstest.MapFS) fstest.MapFS {
				sa, sb := parseServed(e.t, a), parseServed(e.t, b)
				m := union(a, b)
				ts := sb.timestamp
				ts.Signed.Version++
				ts.Signed.Meta["snapshot.json"] = metaFile(sa.snapshot.Signed.Version, a["metadata/"+snapshotName(sa.snapshot.Signed.Version)].Data)
				m["metadata/timestamp.json"] = &fstest.MapFile{Data: sign(e.t, ts, e.keys(RoleTimestamp))}
				return m
			},
			msg: "snapshot version",
		},
		{
			// Holding the snapshot and timestamp keys: newer snapshot and
			// timestamp that pin A's older targets.
			name: "newer snapshot pinning older targets",
			serve: func(e *env, a, b fstest.MapFS) fstest.MapFS {
				sa, sb := parseServed(e.t, a), parseServed(e.t, b)
				m := union(a, b)
				sb.targets.Signed.Version = sa.targets.Signed.Version
				repin(e.t, m, sb, a["metadata/"+targetsName(sa.targets.Signed.Version)].Data, true, e.keys(RoleSnapshot), e.keys(RoleTimestamp))
				return m
			},
			msg: "version",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, InitOptions{})
			mustDo(t, "AddTarget", e.repo.AddTarget("rel/1.0.json", manifestA, customA))
			a := e.published()
			mustDo(t, "RemoveTarget", e.repo.RemoveTarget("rel/1.0.json"))
			mustDo(t, "AddTarget", e.repo.AddTarget("rel/2.0.json", manifestB, nil))
			b := e.published()
			now := t0.Add(time.Hour)
			e.mustRefresh(&DirFetcher{FS: b}, now) // earlier run, trusts B

			served := tc.serve(e, a, b)
			err := e.client(&DirFetcher{FS: served}, now).Refresh()
			if !errors.Is(err, ErrRollback) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want ErrRollback mentioning %q", err, tc.msg)
			}
			// Control: without the cache the same bytes pass as far as
			// versions go, so the rejection came from the persisted state.
			e.cache = filepath.Join(t.TempDir(), "fresh-cache")
			err = e.client(&DirFetcher{FS: served}, now).Refresh()
			if errors.Is(err, ErrRollback) {
				t.Fatalf("fresh cache: %v; the rollback check should have needed the cache", err)
			}
			// And after all that, the genuine newest state is still fine.
			e.cache = filepath.Join(t.TempDir(), "cache3")
			c := e.mustRefresh(&DirFetcher{FS: b}, now)
			ts, _ := c.Targets()
			if _, ok := ts["rel/2.0.json"]; !ok || len(ts) != 1 {
				t.Fatalf("targets = %v", ts)
			}
		})
	}
}

func union(ms ...fstest.MapFS) fstest.MapFS {
	out := fstest.MapFS{}
	for _, m := range ms {
		for k, v := range m {
			c := *v
			out[k] = &c
		}
	}
	return out
}

// TestKeyRotation rotates each role and checks that a node which only
// trusted 1.root.json (fresh install), and a node with a cache, both
// accept the result, while metadata signed with the retired keys is
// rejected.
func TestKeyRotation(t *testing.T) {
	for _, role := range allRoles {
		t.Run(string(role), func(t *testing.T) {
			e := newEnv(t, InitOptions{})
			mustDo(t, "AddTarget", e.repo.AddTarget("rel/1.0.json", manifestA, nil))
			now := t0.Add(time.Hour)
			e.mustRefresh(NewDirFetcher(e.repo.Dir()), now) // cached node
			old := e.keys(role)

			mustDo(t, "RotateKeys", e.repo.RotateKeys(role, 2, 2))
			mustDo(t, "AddTarget", e.repo.AddTarget("rel/2.0.json", manifestB, nil))

			// Root gained a version; old key files are gone, two new ones
			// in their place.
			files, err := e.repo.Files()
			mustDo(t, "Files", err)
			if _, ok := files["2.root.json"]; !ok {
				t.Fatalf("no 2.root.json in %v", keysOf(files))
			}
			if filepath.Base(e.repo.TrustedRootPath()) != "2.root.json" {
				t.Fatalf("TrustedRootPath = %s", e.repo.TrustedRootPath())
			}
			newKeys := e.keys(role)
			if len(newKeys) != 2 {
				t.Fatalf("%d new keys", len(newKeys))
			}
			for _, k := range old {
				if _, err := os.Stat(keyPath(e.repo.Dir(), role, k.id)); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("retired key %s still on disk: %v", k.id, err)
				}
			}
			root2, err := metadata.Root().FromBytes(files["2.root.json"])
			mustDo(t, "parse 2.root.json", err)
			wantSigs := 1
			if role == RoleRoot {
				wantSigs = 3 // old key + both new keys
			}
			if len(root2.Signatures) != wantSigs {
				t.Fatalf("2.root.json has %d signatures, want %d", len(root2.Signatures), wantSigs)
			}

			for _, cached := range []bool{true, false} {
				if !cached {
					e.cache = filepath.Join(t.TempDir(), "fresh")
				}
				c := e.mustRefresh(NewDirFetcher(e.repo.Dir()), now)
				ts, _ := c.Targets()
				if _, ok := ts["rel/2.0.json"]; !ok {
					t.Fatalf("cached=%v: targets %v", cached, ts)
				}
			}

			// The retired keys no longer count.
			m := e.published()
			tk, sk, tsk := e.keys(RoleTargets), e.keys(RoleSnapshot), e.keys(RoleTimestamp)
			switch role {
			case RoleTargets:
				tk = old
			case RoleSnapshot:
				sk = old
			case RoleTimestamp:
				tsk = old
			case RoleRoot:
				// 3.root.json signed by the retired root key alone.
				next, err := copyRoot(root2)
				mustDo(t, "copyRoot", err)
				next.Signed.Version = 3
				m["metadata/3.root.json"] = &fstest.MapFile{Data: sign(t, next, old)}
			}
			if role != RoleRoot {
				forgeChain(t, m, nil, tk, sk, tsk)
			}
			e.cache = filepath.Join(t.TempDir(), "fresh2")
			err = e.client(&DirFetcher{FS: m}, now).Refresh()
			if !errors.Is(err, ErrSignature) {
				t.Fatalf("metadata signed with retired %s keys: %v, want ErrSignature", role, err)
			}
		})
	}
}

func keysOf(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestRotateAllRolesTwice walks a fresh node through a longer root chain:
// every role rotated twice, thresholds changing.
func TestRotateAllRolesTwice(t *testing.T) {
	e := newEnv(t, InitOptions{KeysPerRole: map[Role]int{RoleRoot: 3}, Thresholds: map[Role]int{RoleRoot: 2}})
	mustDo(t, "AddTarget", e.repo.AddTarget("a", manifestA, nil))
	for i := range 2 {
		for _, role := range allRoles {
			mustDo(t, "RotateKeys", e.repo.RotateKeys(role, 1+i, 1+i))
		}
	}
	st, err := e.repo.load()
	mustDo(t, "load", err)
	if st.root.Signed.Version != 9 {
		t.Fatalf("root version %d, want 9", st.root.Signed.Version)
	}
	c := e.mustRefresh(NewDirFetcher(e.repo.Dir()), t0.Add(time.Minute))
	data, _, err := c.Fetch("a")
	if err != nil || string(data) != string(manifestA) {
		t.Fatalf("Fetch: %q %v", data, err)
	}
	raw, err := os.ReadFile(filepath.Join(e.cache, "root.json"))
	mustDo(t, "read cached root", err)
	if rootVersion(raw) != 9 {
		t.Fatalf("cached root version %d", rootVersion(raw))
	}
}

// TestRefreshTimestamp runs the publisher's cron daily for ten days: the
// node keeps working past the timestamp's and the snapshot's first
// expiry; without the cron it stops.
func TestRefreshTimestamp(t *testing.T) {
	e := newEnv(t, InitOptions{})
	mustDo(t, "AddTarget", e.repo.AddTarget("a", manifestA, nil))
	f := NewDirFetcher(e.repo.Dir())

	err := e.client(f, t0.Add(25*time.Hour)).Refresh()
	if !errors.Is(err, ErrExpired) {
		t.Fatalf("no cron, day 2: %v, want ErrExpired", err)
	}
	snapshots := map[int64]bool{}
	for day := 1; day <= 10; day++ {
		e.clk.Set(t0.Add(time.Duration(day) * 24 * time.Hour))
		mustDo(t, "RefreshTimestamp", e.repo.RefreshTimestamp())
		// Just before the next cron run.
		e.mustRefresh(f, e.clk.Now().Add(23*time.Hour+59*time.Minute))
		st, _ := e.repo.load()
		snapshots[st.snapshot.Signed.Version] = true
		if st.timestamp.Signed.Version != int64(day+2) {
			t.Fatalf("day %d: timestamp version %d", day, st.timestamp.Signed.Version)
		}
	}
	if len(snapshots) < 2 {
		t.Fatalf("snapshot never re-signed: versions %v", snapshots)
	}
	st, _ := e.repo.load()
	if st.targets.Signed.Version != 2 {
		t.Fatalf("RefreshTimestamp touched targets: version %d", st.targets.Signed.Version)
	}
}

// TestRefreshTargetsAndRoot: the slower roles expire too, and their
// refresh methods keep nodes working past that.
func TestRefreshTargetsAndRoot(t *testing.T) {
	e := newEnv(t, InitOptions{Expiry: map[Role]time.Duration{RoleTargets: 48 * time.Hour, RoleRoot: 72 * time.Hour}})
	mustDo(t, "AddTarget", e.repo.AddTarget("a", manifestA, nil))
	f := NewDirFetcher(e.repo.Dir())
	e.clk.Add(47 * time.Hour)
	mustDo(t, "RefreshTimestamp", e.repo.RefreshTimestamp())
	if err := e.client(f, t0.Add(49*time.Hour)).Refresh(); !errors.Is(err, ErrExpired) {
		t.Fatalf("targets not refreshed: %v, want ErrExpired", err)
	}
	mustDo(t, "RefreshTargets", e.repo.RefreshTargets())
	e.mustRefresh(f, t0.Add(49*time.Hour))

	e.clk.Add(24 * time.Hour)
	mustDo(t, "RefreshTargets", e.repo.RefreshTargets())
	if err := e.client(f, t0.Add(73*time.Hour)).Refresh(); !errors.Is(err, ErrExpired) {
		t.Fatalf("root not refreshed: %v, want ErrExpired", err)
	}
	mustDo(t, "RefreshRoot", e.repo.RefreshRoot())
	e.mustRefresh(f, t0.Add(73*time.Hour))
}

// TestKeyFileModes: private keys are 0600 in 0700 directories, also after
// a rotation.
func TestKeyFileModes(t *testing.T) {
	e := newEnv(t, InitOptions{KeysPerRole: map[Role]int{RoleTargets: 3}})
	check := func() {
		n := 0
		err := filepath.WalkDir(filepath.Join(e.repo.Dir(), "keys"), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			want := fs.FileMode(0o600)
			if d.IsDir() {
				want = 0o700
			} else {
				n++
			}
			if fi.Mode().Perm() != want {
				t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), want)
			}
			return nil
		})
		mustDo(t, "walk keys", err)
		if n != 6 {
			t.Fatalf("%d key files, want 6", n)
		}
	}
	check()
	mustDo(t, "RotateKeys", e.repo.RotateKeys(RoleTargets, 3, 2))
	check()
}

// TestExpiresWholeSeconds: every expires in every published file is
// "YYYY-MM-DDTHH:MM:SSZ", although the publisher's clock has nanoseconds.
func TestExpiresWholeSeconds(t *testing.T) {
	e := newEnv(t, InitOptions{})
	mustDo(t, "AddTarget", e.repo.AddTarget("a", manifestA, nil))
	mustDo(t, "RotateKeys", e.repo.RotateKeys(RoleRoot, 1, 1))
	e.clk.Add(time.Hour + 987654321)
	mustDo(t, "RefreshTimestamp", e.repo.RefreshTimestamp())
	files, err := e.repo.Files()
	mustDo(t, "Files", err)
	re := regexp.MustCompile(`"expires": "([^"]*)"`)
	whole := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`)
	for name, data := range files {
		m := re.FindAllSubmatch(data, -1)
		if len(m) != 1 {
			t.Fatalf("%s: %d expires fields", name, len(m))
		}
		if !whole.Match(m[0][1]) {
			t.Errorf("%s: expires %q is not whole seconds in UTC", name, m[0][1])
		}
	}
}

// TestCacheRecovery: the cache is written only through temp+fsync+rename,
// leaves no temporary files, and a damaged cache file costs at most its
// rollback floor, never the ability to refresh.
func TestCacheRecovery(t *testing.T) {
	for _, damaged := range cacheFiles {
		for _, how := range []string{"empty", "garbage", "truncated"} {
			t.Run(damaged+"/"+how, func(t *testing.T) {
				e := newEnv(t, InitOptions{})
				mustDo(t, "AddTarget", e.repo.AddTarget("a", manifestA, nil))
				mustDo(t, "RotateKeys", e.repo.RotateKeys(RoleRoot, 1, 1))
				f := NewDirFetcher(e.repo.Dir())
				now := t0.Add(time.Hour)
				e.mustRefresh(f, now)
				ents, err := os.ReadDir(e.cache)
				mustDo(t, "ReadDir", err)
				var names []string
				for _, d := range ents {
					names = append(names, d.Name())
				}
				slices.Sort(names)
				if want := []string{"root.json", "snapshot.json", "targets.json", "timestamp.json"}; !slices.Equal(names, want) {
					t.Fatalf("cache holds %v, want %v", names, want)
				}

				p := filepath.Join(e.cache, damaged)
				data, _ := os.ReadFile(p)
				switch how {
				case "empty":
					data = nil
				case "garbage":
					data = []byte("\x00\x00\x00\x00")
				case "truncated":
					data = data[:len(data)/2]
				}
				mustDo(t, "damage", os.WriteFile(p, data, 0o600))
				// What a crash in the middle of a refresh leaves behind.
				mustDo(t, "stale scratch", os.MkdirAll(filepath.Join(e.cache, ".refresh-123", "x"), 0o700))
				mustDo(t, "stale temp", os.WriteFile(filepath.Join(e.cache, ".timestamp.json.tmp-456"), nil, 0o600))
				mustDo(t, "AddTarget", e.repo.AddTarget("b", manifestB, nil))
				c := e.mustRefresh(f, now)
				if ts, _ := c.Targets(); len(ts) != 2 {
					t.Fatalf("targets %v", ts)
				}
				if ents, _ := os.ReadDir(e.cache); len(ents) != 4 {
					t.Fatalf("cache not cleaned: %v", ents)
				}
				repaired, _ := os.ReadFile(p)
				if !parses(damaged, repaired) {
					t.Fatalf("%s not repaired", damaged)
				}
			})
		}
	}
}

// TestCachedRootPreferred: a node restarted with the shipped 1.root.json
// continues from its cached newer root instead of re-walking the chain,
// but a newer shipped root (an OS update) wins over an older cache.
func TestCachedRootPreferred(t *testing.T) {
	e := newEnv(t, InitOptions{})
	mustDo(t, "AddTarget", e.repo.AddTarget("a", manifestA, nil))
	mustDo(t, "RotateKeys", e.repo.RotateKeys(RoleTimestamp, 1, 1))
	now := t0.Add(time.Hour)
	e.mustRefresh(NewDirFetcher(e.repo.Dir()), now) // cache: 2.root.json

	rec := &recorder{f: NewDirFetcher(e.repo.Dir())}
	e.mustRefresh(rec, now)
	if rec.paths[0] != "metadata/3.root.json" {
		t.Fatalf("restarted node asked for %v first, want metadata/3.root.json", rec.paths)
	}

	// An OS update ships 3.root.json while the cache still holds 2.
	mustDo(t, "RotateKeys", e.repo.RotateKeys(RoleTimestamp, 1, 1))
	e.root = e.oldFile("3.root.json")
	rec = &recorder{f: NewDirFetcher(e.repo.Dir())}
	e.mustRefresh(rec, now)
	if rec.paths[0] != "metadata/4.root.json" {
		t.Fatalf("node shipping 3.root.json asked for %v first", rec.paths)
	}
	raw, _ := os.ReadFile(filepath.Join(e.cache, "root.json"))
	if rootVersion(raw) != 3 {
		t.Fatalf("cached root version %d, want 3", rootVersion(raw))
	}
}

// TestDirFetcherContract checks the fetcher contract a transport must
// follow, on DirFetcher.
func TestDirFetcherContract(t *testing.T) {
	m := fstest.MapFS{
		"meta/1.root.json": {Data: []byte("0123456789")},
		"meta/dir/x":       {Data: []byte("x")},
	}
	f := &DirFetcher{FS: m, Prefix: "oci-layout://repo/"}
	var http404 *metadata.ErrDownloadHTTP
	cases := []struct {
		name string
		path string
		max  int64
		want func(data []byte, err error) bool
	}{
		{"exact length", "oci-layout://repo/meta/1.root.json", 10, func(d []byte, err error) bool { return err == nil && string(d) == "0123456789" }},
		{"one byte over", "oci-layout://repo/meta/1.root.json", 9, func(d []byte, err error) bool {
			return errors.Is(err, &metadata.ErrDownloadLengthMismatch{})
		}},
		{"missing root is 404", "oci-layout://repo/meta/2.root.json", 10, func(d []byte, err error) bool {
			return errors.As(err, &http404) && http404.StatusCode == 404
		}},
		{"directory is 404", "oci-layout://repo/meta/dir", 10, func(d []byte, err error) bool {
			return errors.As(err, &http404) && http404.StatusCode == 404
		}},
		{"wrong prefix", "https://elsewhere/meta/1.root.json", 10, func(d []byte, err error) bool {
			return err != nil && !errors.As(err, &http404)
		}},
		{"escaping path", "oci-layout://repo/meta/../meta/1.root.json", 10, func(d []byte, err error) bool {
			return err != nil && !errors.As(err, &http404)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := f.DownloadFile(tc.path, tc.max, 0)
			if !tc.want(d, err) {
				t.Fatalf("DownloadFile(%q, %d) = %q, %v", tc.path, tc.max, d, err)
			}
		})
	}
}

func TestTargetPaths(t *testing.T) {
	const h = "7e0754989aa29bc9f6ef81e480338e3777ee197e932210fde868ac82d4cad173"
	cases := []struct{ name, base, path string }{
		{"1.2.0.json", "targets", "targets/" + h + ".1.2.0.json"},
		{"k8s/x86_64/1.2.0.json", "oci://reg/repo/targets/", "oci://reg/repo/targets/k8s/x86_64/" + h + ".1.2.0.json"},
	}
	for _, tc := range cases {
		p := strings.TrimSuffix(tc.base, "/") + "/" + TargetURLPath(tc.name, h)
		if p != tc.path {
			t.Fatalf("TargetURLPath: %s, want %s", p, tc.path)
		}
		name, hash, ok := SplitTargetPath(p, tc.base)
		if !ok || name != tc.name || hash != h {
			t.Fatalf("SplitTargetPath(%s) = %q %q %v", p, name, hash, ok)
		}
	}
	for _, p := range []string{"metadata/timestamp.json", "targets/1.2.0.json", "targets/" + h[:63] + ".x", "other/" + h + ".x"} {
		if _, _, ok := SplitTargetPath(p, "targets"); ok {
			t.Fatalf("SplitTargetPath(%s) accepted", p)
		}
	}
}
