package signing

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestInitRepoOptions(t *testing.T) {
	cases := []struct {
		name string
		o    InitOptions
		want error
	}{
		{"threshold above keys", InitOptions{Thresholds: map[Role]int{RoleRoot: 2}}, ErrBadOptions},
		{"zero keys", InitOptions{KeysPerRole: map[Role]int{RoleTargets: 0}}, ErrBadOptions},
		{"zero threshold", InitOptions{Thresholds: map[Role]int{RoleSnapshot: 0}}, ErrBadOptions},
		{"unknown role", InitOptions{KeysPerRole: map[Role]int{"mirror": 1}}, ErrBadOptions},
		{"sub-second expiry", InitOptions{Expiry: map[Role]time.Duration{RoleTimestamp: time.Millisecond}}, ErrBadOptions},
		{"3 of 5 root keys", InitOptions{KeysPerRole: map[Role]int{RoleRoot: 5}, Thresholds: map[Role]int{RoleRoot: 3}}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "repo")
			_, err := InitRepo(dir, tc.o)
			if !errors.Is(err, tc.want) {
				t.Fatalf("InitRepo: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestInitRepoRefusesExisting(t *testing.T) {
	e := newEnv(t, InitOptions{})
	if _, err := InitRepo(e.repo.Dir(), InitOptions{}); !errors.Is(err, ErrRepoExists) {
		t.Fatalf("second InitRepo: %v, want ErrRepoExists", err)
	}
	// The remains of an interrupted init are refused too.
	dir := filepath.Join(t.TempDir(), "half")
	mustDo(t, "mkdir", os.MkdirAll(filepath.Join(dir, "keys"), 0o700))
	if _, err := InitRepo(dir, InitOptions{}); !errors.Is(err, ErrRepoExists) {
		t.Fatalf("InitRepo over half a repo: %v, want ErrRepoExists", err)
	}
	if _, err := OpenRepo(dir, nil); !errors.Is(err, ErrNotRepo) {
		t.Fatalf("OpenRepo of half a repo: %v, want ErrNotRepo", err)
	}
}

// TestOpenRepoKeepsState: a reopened repository continues versions and
// lifetimes where the first one stopped.
func TestOpenRepoKeepsState(t *testing.T) {
	e := newEnv(t, InitOptions{Expiry: map[Role]time.Duration{RoleTimestamp: 6 * time.Hour}})
	mustDo(t, "AddTarget", e.repo.AddTarget("a", manifestA, nil))
	r, err := OpenRepo(e.repo.Dir(), e.clk.Now)
	mustDo(t, "OpenRepo", err)
	mustDo(t, "AddTarget", r.AddTarget("b", manifestB, json.RawMessage(`{"version":"2"}`)))
	st, err := r.load()
	mustDo(t, "load", err)
	if st.targets.Signed.Version != 3 || st.snapshot.Signed.Version != 3 || st.timestamp.Signed.Version != 3 {
		t.Fatalf("versions %d/%d/%d, want 3/3/3", st.targets.Signed.Version, st.snapshot.Signed.Version, st.timestamp.Signed.Version)
	}
	if got, want := st.timestamp.Signed.Expires, t0.Add(6*time.Hour).Truncate(time.Second); !got.Equal(want) {
		t.Fatalf("timestamp expires %v, want %v (lifetime from repo.json)", got, want)
	}
	ts, err := r.Targets()
	mustDo(t, "Targets", err)
	if len(ts) != 2 || string(ts["b"].Custom) != `{"version":"2"}` {
		t.Fatalf("Targets = %v", ts)
	}
}

// TestTargetEdits: custom changes (halt, recall) and removals reach nodes.
func TestTargetEdits(t *testing.T) {
	e := newEnv(t, InitOptions{})
	mustDo(t, "AddTarget", e.repo.AddTarget("rel/1.0.json", manifestA, json.RawMessage(`{"version":"1.0"}`)))
	mustDo(t, "AddTarget", e.repo.AddTarget("rel/1.1.json", manifestB, json.RawMessage(`{"version":"1.1"}`)))
	mustDo(t, "SetTargetCustom", e.repo.SetTargetCustom("rel/1.1.json", json.RawMessage(`{"version":"1.1","halted":true}`)))
	mustDo(t, "RemoveTarget", e.repo.RemoveTarget("rel/1.0.json"))
	if err := e.repo.RemoveTarget("rel/1.0.json"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second RemoveTarget: %v, want ErrNotFound", err)
	}
	if err := e.repo.SetTargetCustom("nope", nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("SetTargetCustom of unknown target: %v, want ErrNotFound", err)
	}
	c := e.mustRefresh(NewDirFetcher(e.repo.Dir()), t0)
	ts, err := c.Targets()
	mustDo(t, "Targets", err)
	if len(ts) != 1 || string(ts["rel/1.1.json"].Custom) != `{"version":"1.1","halted":true}` {
		t.Fatalf("Targets = %v", ts)
	}
	// Clearing custom metadata.
	mustDo(t, "SetTargetCustom", e.repo.SetTargetCustom("rel/1.1.json", nil))
	c = e.mustRefresh(NewDirFetcher(e.repo.Dir()), t0)
	ts, _ = c.Targets()
	if ts["rel/1.1.json"].Custom != nil {
		t.Fatalf("custom not cleared: %s", ts["rel/1.1.json"].Custom)
	}
}

func TestAddTargetValidation(t *testing.T) {
	hash := strings.Repeat("ab", 32)
	cases := []struct {
		name   string
		target string
		data   []byte
		custom string
		want   error
	}{
		{"empty name", "", manifestA, "", ErrBadName},
		{"absolute", "/rel/1.json", manifestA, "", ErrBadName},
		{"dot dot", "rel/../1.json", manifestA, "", ErrBadName},
		{"empty element", "rel//1.json", manifestA, "", ErrBadName},
		{"query char", "rel/1.json?x", manifestA, "", ErrBadName},
		{"space", "rel/1 .json", manifestA, "", ErrBadName},
		{"looks hashed", "rel/" + hash + ".1.json", manifestA, "", ErrBadName},
		{"too large", "big", make([]byte, MaxTargetLength+1), "", ErrTargetTooLarge},
		{"float custom", "a", manifestA, `{"fraction":0.05}`, ErrBadCustom},
		{"exponent custom", "a", manifestA, `{"n":[1e3]}`, ErrBadCustom},
		{"array custom", "a", manifestA, `[1,2]`, ErrBadCustom},
		{"trailing custom", "a", manifestA, `{} {}`, ErrBadCustom},
		{"broken custom", "a", manifestA, `{"a":`, ErrBadCustom},
		{"fine", "k8s-1.31/x86_64/1.2.0+build.7.json", manifestA, `{"n":-5,"s":"0.05","nested":{"a":[1,true,null]}}`, nil},
		{"largest", "big", make([]byte, MaxTargetLength), "", nil},
	}
	e := newEnv(t, InitOptions{})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := e.repo.AddTarget(tc.target, tc.data, json.RawMessage(tc.custom))
			if !errors.Is(err, tc.want) {
				t.Fatalf("AddTarget(%q): %v, want %v", tc.target, err, tc.want)
			}
		})
	}
}

// TestAddNewTarget: a signed name keeps its content. The same bytes again
// change nothing (not even the custom metadata), other bytes are refused,
// and only AddTarget replaces them.
func TestAddNewTarget(t *testing.T) {
	const name = "k8s/x86_64/1.0.0.json"
	cases := []struct {
		name      string
		target    string
		data      []byte
		custom    string
		wantAdded bool
		wantErr   error
	}{
		{"same bytes", name, manifestA, `{"version":"1.0.0","rollout":{}}`, false, nil},
		{"other bytes", name, manifestB, `{"version":"1.0.0"}`, false, ErrTargetExists},
		{"new name", "k8s/x86_64/1.0.1.json", manifestB, `{"version":"1.0.1"}`, true, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, InitOptions{})
			mustDo(t, "AddTarget", e.repo.AddTarget(name, manifestA, json.RawMessage(`{"version":"1.0.0"}`)))
			before, err := e.repo.Files()
			mustDo(t, "Files", err)
			added, err := e.repo.AddNewTarget(tc.target, tc.data, json.RawMessage(tc.custom))
			if added != tc.wantAdded || !errors.Is(err, tc.wantErr) {
				t.Fatalf("AddNewTarget: added %v, %v; want %v, %v", added, err, tc.wantAdded, tc.wantErr)
			}
			if err != nil && (!strings.Contains(err.Error(), fmt.Sprintf("sha256:%x", sha256.Sum256(manifestA))) ||
				!strings.Contains(err.Error(), fmt.Sprintf("sha256:%x", sha256.Sum256(manifestB)))) {
				t.Fatalf("error %q does not name both sha256", err)
			}
			after, err := e.repo.Files()
			mustDo(t, "Files", err)
			if changed := string(before["timestamp.json"]) != string(after["timestamp.json"]); changed != tc.wantAdded {
				t.Fatalf("metadata re-signed: %v, want %v", changed, tc.wantAdded)
			}
			ts, err := e.repo.Targets()
			mustDo(t, "Targets", err)
			if got := ts[name]; got.SHA256 != fmt.Sprintf("%x", sha256.Sum256(manifestA)) || string(got.Custom) != `{"version":"1.0.0"}` {
				t.Fatalf("%s is now %+v", name, got)
			}
		})
	}
	// AddTarget still replaces, as its callers ask for.
	e := newEnv(t, InitOptions{})
	mustDo(t, "AddTarget", e.repo.AddTarget(name, manifestA, nil))
	mustDo(t, "AddTarget", e.repo.AddTarget(name, manifestB, nil))
	if ts, _ := e.repo.Targets(); ts[name].SHA256 != fmt.Sprintf("%x", sha256.Sum256(manifestB)) {
		t.Fatalf("AddTarget did not replace: %+v", ts[name])
	}
}

// TestMissingKeys: with root keys offline the online roles keep working,
// while root operations and too-few targets keys fail before writing.
func TestMissingKeys(t *testing.T) {
	e := newEnv(t, InitOptions{KeysPerRole: map[Role]int{RoleTargets: 2}, Thresholds: map[Role]int{RoleTargets: 2}})
	mustDo(t, "AddTarget", e.repo.AddTarget("a", manifestA, nil))
	mustDo(t, "remove root keys", os.RemoveAll(keyDir(e.repo.Dir(), RoleRoot)))
	mustDo(t, "RefreshTimestamp", e.repo.RefreshTimestamp())
	mustDo(t, "AddTarget", e.repo.AddTarget("b", manifestB, nil))
	before, err := e.repo.Files()
	mustDo(t, "Files", err)
	for _, tc := range []struct {
		name string
		op   func() error
	}{
		{"RotateKeys", func() error { return e.repo.RotateKeys(RoleTimestamp, 1, 1) }},
		{"RefreshRoot", e.repo.RefreshRoot},
	} {
		if err := tc.op(); !errors.Is(err, ErrMissingKeys) {
			t.Fatalf("%s without root keys: %v, want ErrMissingKeys", tc.name, err)
		}
	}
	// One of two targets keys lost: below threshold 2.
	k := e.keys(RoleTargets)[0]
	mustDo(t, "remove a targets key", os.Remove(keyPath(e.repo.Dir(), RoleTargets, k.id)))
	if err := e.repo.AddTarget("c", manifestA, nil); !errors.Is(err, ErrMissingKeys) {
		t.Fatalf("AddTarget with 1 of 2 targets keys: %v, want ErrMissingKeys", err)
	}
	after, err := e.repo.Files()
	mustDo(t, "Files", err)
	if fmt.Sprint(keysOf(before)) != fmt.Sprint(keysOf(after)) || string(before["timestamp.json"]) != string(after["timestamp.json"]) {
		t.Fatalf("failed operations changed the repository")
	}
}

// TestConcurrentPublishers: the directory lock serializes publishers, so
// no update is lost and versions stay sequential.
func TestConcurrentPublishers(t *testing.T) {
	e := newEnv(t, InitOptions{})
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Add(2)
		go func() {
			defer wg.Done()
			r, err := OpenRepo(e.repo.Dir(), e.clk.Now)
			if err == nil {
				err = r.AddTarget(fmt.Sprintf("t%d", i), manifestA, nil)
			}
			errs <- err
		}()
		go func() {
			defer wg.Done()
			errs <- e.repo.RefreshTimestamp()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		mustDo(t, "concurrent op", err)
	}
	ts, err := e.repo.Targets()
	mustDo(t, "Targets", err)
	if len(ts) != n {
		t.Fatalf("%d targets, want %d", len(ts), n)
	}
	st, _ := e.repo.load()
	if st.timestamp.Signed.Version != 1+2*n {
		t.Fatalf("timestamp version %d, want %d", st.timestamp.Signed.Version, 1+2*n)
	}
	e.mustRefresh(NewDirFetcher(e.repo.Dir()), t0)
}

func TestNewClientChecks(t *testing.T) {
	e := newEnv(t, InitOptions{})
	f := NewDirFetcher(e.repo.Dir())
	tampered := []byte(strings.Replace(string(e.root), `"version": 1`, `"version": 7`, 1))
	cases := []struct {
		name string
		o    ClientOptions
		want error
	}{
		{"no fetcher", ClientOptions{TrustedRoot: e.root, CacheDir: t.TempDir(), MetadataBaseURL: "m"}, ErrBadOptions},
		{"no cache", ClientOptions{TrustedRoot: e.root, Fetcher: f, MetadataBaseURL: "m"}, ErrBadOptions},
		{"no URL", ClientOptions{TrustedRoot: e.root, Fetcher: f, CacheDir: t.TempDir()}, ErrBadOptions},
		{"garbage root", ClientOptions{TrustedRoot: []byte("{}"), Fetcher: f, CacheDir: t.TempDir(), MetadataBaseURL: "m"}, ErrInvalid},
		{"tampered root", ClientOptions{TrustedRoot: tampered, Fetcher: f, CacheDir: t.TempDir(), MetadataBaseURL: "m"}, ErrSignature},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewClient(tc.o); !errors.Is(err, tc.want) {
				t.Fatalf("NewClient: %v, want %v", err, tc.want)
			}
		})
	}
}
