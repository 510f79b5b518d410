package signing

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Role is a top-level TUF role.
type Role string

// The four top-level roles. sealift does not use delegated targets roles.
const (
	RoleRoot      Role = metadata.ROOT
	RoleTargets   Role = metadata.TARGETS
	RoleSnapshot  Role = metadata.SNAPSHOT
	RoleTimestamp Role = metadata.TIMESTAMP
)

var allRoles = []Role{RoleRoot, RoleTargets, RoleSnapshot, RoleTimestamp}

// Default lifetimes of signed metadata. Short lifetimes bound how long an
// attacker can replay (freeze) old metadata; the cost is that the online
// roles must be re-signed on schedule (RefreshTimestamp daily).
const (
	DefaultRootExpiry      = 365 * 24 * time.Hour
	DefaultTargetsExpiry   = 90 * 24 * time.Hour
	DefaultSnapshotExpiry  = 7 * 24 * time.Hour
	DefaultTimestampExpiry = 24 * time.Hour
)

// MaxTargetLength bounds a target's size on both sides. A target is a
// release's OCI manifest (registries commonly cap manifests at 4 MiB), and
// go-tuf holds a downloaded target entirely in memory.
const MaxTargetLength = 4 << 20

// InitOptions configures a new repository. Zero values take the defaults:
// threshold 1, one key per role, and the Default*Expiry lifetimes.
type InitOptions struct {
	Thresholds  map[Role]int
	KeysPerRole map[Role]int
	Expiry      map[Role]time.Duration
	// Now is the clock used for expiry dates; nil means time.Now.
	Now func() time.Time
}

// TargetInfo describes one signed target.
type TargetInfo struct {
	Name   string
	Length int64
	// SHA256 is the lowercase hex sha256 of the target; for a release
	// manifest, the OCI digest is "sha256:" + SHA256.
	SHA256 string
	// Custom is the target's signed custom metadata, compact JSON, or nil.
	Custom json.RawMessage
}

// Repo is a TUF repository kept in a local directory (publisher side).
//
// Every mutating method takes an exclusive lock on the directory, reloads
// the current state from disk, and writes new files crash-safely in
// dependency order (targets, then snapshot, then timestamp.json last), so a
// crash leaves the previous state intact and several publisher processes
// may share one directory. A Repo value itself is safe for concurrent use
// only in that same sense: each call is independent.
type Repo struct {
	dir    string
	now    func() time.Time
	expiry map[Role]time.Duration
}

// repoConfig is dir/repo.json. Its presence marks a complete repository:
// InitRepo writes it last.
type repoConfig struct {
	Format int               `json:"format"`
	Expiry map[Role]duration `json:"expiry"`
}

type duration time.Duration

func (d duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = duration(v)
	return err
}

const configName = "repo.json"

// InitRepo creates a repository in dir: ed25519 keys for every role under
// dir/keys/, and version 1 of root, targets, snapshot and timestamp under
// dir/metadata/, with consistent snapshots on. It refuses a directory that
// already holds a repository (or the remains of an interrupted InitRepo,
// which must be removed by hand).
func InitRepo(dir string, o InitOptions) (*Repo, error) {
	r := &Repo{dir: dir, now: o.Now, expiry: map[Role]time.Duration{}}
	if r.now == nil {
		r.now = time.Now
	}
	defaults := map[Role]time.Duration{RoleRoot: DefaultRootExpiry, RoleTargets: DefaultTargetsExpiry, RoleSnapshot: DefaultSnapshotExpiry, RoleTimestamp: DefaultTimestampExpiry}
	for role := range o.Thresholds {
		if !slices.Contains(allRoles, role) {
			return nil, fmt.Errorf("%w: unknown role %q", ErrBadOptions, role)
		}
	}
	for role := range o.KeysPerRole {
		if !slices.Contains(allRoles, role) {
			return nil, fmt.Errorf("%w: unknown role %q", ErrBadOptions, role)
		}
	}
	for role, d := range o.Expiry {
		if !slices.Contains(allRoles, role) {
			return nil, fmt.Errorf("%w: unknown role %q", ErrBadOptions, role)
		}
		if d < time.Second {
			return nil, fmt.Errorf("%w: %s expiry %v is shorter than a second", ErrBadOptions, role, d)
		}
	}
	for _, role := range allRoles {
		r.expiry[role] = defaults[role]
		if d, ok := o.Expiry[role]; ok {
			r.expiry[role] = d
		}
		if err := checkThreshold(role, valueOr(o.KeysPerRole, role, 1), valueOr(o.Thresholds, role, 1)); err != nil {
			return nil, err
		}
	}

	for _, sub := range []string{configName, "keys", "metadata", "targets"} {
		if _, err := os.Lstat(filepath.Join(dir, sub)); err == nil {
			return nil, fmt.Errorf("%w: %s exists", ErrRepoExists, filepath.Join(dir, sub))
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Checked again under the lock: two concurrent InitRepo calls must not
	// both succeed.
	if _, err := os.Lstat(filepath.Join(dir, "keys")); err == nil {
		return nil, fmt.Errorf("%w: %s exists", ErrRepoExists, filepath.Join(dir, "keys"))
	}
	if err := os.Mkdir(filepath.Join(dir, "keys"), 0o700); err != nil {
		return nil, err
	}
	for _, sub := range []string{"metadata", "targets"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, err
		}
	}

	keys := map[Role][]*signingKey{}
	root := metadata.Root(r.expires(RoleRoot))
	root.Signed.ConsistentSnapshot = true
	for _, role := range allRoles {
		for range valueOr(o.KeysPerRole, role, 1) {
			k, err := generateKey()
			if err != nil {
				return nil, err
			}
			if err := writeKey(dir, role, k); err != nil {
				return nil, err
			}
			if err := root.Signed.AddKey(k.pub, string(role)); err != nil {
				return nil, err
			}
			keys[role] = append(keys[role], k)
		}
		root.Signed.Roles[string(role)].Threshold = valueOr(o.Thresholds, role, 1)
	}
	if err := signWith(root, keys[RoleRoot]); err != nil {
		return nil, err
	}
	if err := r.writeMeta(rootName(1), root); err != nil {
		return nil, err
	}
	st := &state{root: root, targets: metadata.Targets(r.expires(RoleTargets)), snapshot: metadata.Snapshot(), timestamp: metadata.Timestamp()}
	// The constructors start at version 1; the write helpers bump first.
	st.targets.Signed.Version = 0
	st.snapshot.Signed.Version = 0
	st.timestamp.Signed.Version = 0
	if err := r.writeTargets(st, keys); err != nil {
		return nil, err
	}
	cfg := repoConfig{Format: 1, Expiry: map[Role]duration{}}
	for role, d := range r.expiry {
		cfg.Expiry[role] = duration(d)
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(filepath.Join(dir, configName), append(data, '\n'), 0o644); err != nil {
		return nil, err
	}
	return r, nil
}

func valueOr(m map[Role]int, role Role, def int) int {
	if v, ok := m[role]; ok {
		return v
	}
	return def
}

func checkThreshold(role Role, keys, threshold int) error {
	if keys < 1 || threshold < 1 || threshold > keys {
		return fmt.Errorf("%w: %s: threshold %d with %d keys (need 1 <= threshold <= keys)", ErrBadOptions, role, threshold, keys)
	}
	return nil
}

// OpenRepo opens a repository created by InitRepo. now is the clock for
// new expiry dates; nil means time.Now.
func OpenRepo(dir string, now func() time.Time) (*Repo, error) {
	data, err := os.ReadFile(filepath.Join(dir, configName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s missing", ErrNotRepo, filepath.Join(dir, configName))
	}
	if err != nil {
		return nil, err
	}
	var cfg repoConfig
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrNotRepo, configName, err)
	}
	if cfg.Format != 1 {
		return nil, fmt.Errorf("%w: %s: unsupported format %d", ErrNotRepo, configName, cfg.Format)
	}
	r := &Repo{dir: dir, now: now, expiry: map[Role]time.Duration{}}
	if r.now == nil {
		r.now = time.Now
	}
	for _, role := range allRoles {
		d, ok := cfg.Expiry[role]
		if !ok || d < duration(time.Second) {
			return nil, fmt.Errorf("%w: %s: bad expiry for %s", ErrNotRepo, configName, role)
		}
		r.expiry[role] = time.Duration(d)
	}
	if _, err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

// Dir returns the repository directory.
func (r *Repo) Dir() string { return r.dir }

// TrustedRootPath returns the path of the root metadata to ship in the OS
// image as the client's initial trust: the newest N.root.json.
//
// Any version would work, because clients walk the chain N+1.root.json,
// N+2.root.json, ... from whatever they start with, and 1.root.json is
// always kept. The newest is preferred because an image built today should
// not trust keys that were already retired: a leaked retired root key
// could sign a forged successor root that nodes starting from the older
// root would accept. Publish the repository (Files) before building an
// image with a root the registry does not have yet.
func (r *Repo) TrustedRootPath() string {
	st, err := r.load()
	if err != nil {
		return filepath.Join(r.dir, "metadata", rootName(1))
	}
	return filepath.Join(r.dir, "metadata", rootName(st.root.Signed.Version))
}

// AddTarget adds (or replaces) the target name with the length and sha256
// of data and the given custom metadata, stores data under dir/targets/ at
// the path clients request (see TargetURLPath), and signs new versions of
// targets, snapshot and timestamp.
//
// Only sha256 is recorded, on purpose: with consistent snapshots go-tuf
// prefixes the download path with "the first" hash of a Go map, which is
// random when there are several, while a single sha256 makes the path
// deterministic and equal to the OCI manifest digest.
//
// name: path elements of [A-Za-z0-9._+-] separated by "/", no empty, "."
// or ".." elements; it must not start with a 64-hex-digit hash and a dot.
// custom: nil or a JSON object without fractional or exponent numbers (TUF
// signs canonical JSON, which only has integers).
func (r *Repo) AddTarget(name string, data []byte, custom json.RawMessage) error {
	_, err := r.addTarget(name, data, custom, true)
	return err
}

// AddNewTarget is AddTarget for a name whose content must not change once
// signed. Under the repository lock, a name already signed with the same
// length and sha256 is left as it is, custom metadata included (nothing
// is re-signed; added is false), and a name signed with other content is
// refused with ErrTargetExists. A check made before the lock cannot see a
// concurrent publisher; this one can.
func (r *Repo) AddNewTarget(name string, data []byte, custom json.RawMessage) (added bool, err error) {
	return r.addTarget(name, data, custom, false)
}

// errUnchanged ends an update without writing anything.
var errUnchanged = errors.New("unchanged")

func (r *Repo) addTarget(name string, data []byte, custom json.RawMessage, replace bool) (bool, error) {
	if err := validateTargetName(name); err != nil {
		return false, err
	}
	if len(data) > MaxTargetLength {
		return false, fmt.Errorf("%w: %s is %d bytes, max %d", ErrTargetTooLarge, name, len(data), MaxTargetLength)
	}
	c, err := normalizeCustom(custom)
	if err != nil {
		return false, err
	}
	sum := sha256.Sum256(data)
	tf := &metadata.TargetFiles{
		Length: int64(len(data)),
		Hashes: metadata.Hashes{"sha256": sum[:]},
		Path:   name,
	}
	if c != nil {
		tf.Custom = &c
	}
	err = r.update(func(st *state) error {
		if old, ok := st.targets.Signed.Targets[name]; ok && !replace {
			if old.Length == tf.Length && bytes.Equal(old.Hashes["sha256"], sum[:]) {
				return errUnchanged
			}
			return fmt.Errorf("%w: %s is signed as sha256:%x (%d bytes), not sha256:%x (%d bytes)",
				ErrTargetExists, name, []byte(old.Hashes["sha256"]), old.Length, sum[:], tf.Length)
		}
		p := filepath.Join(r.dir, "targets", filepath.FromSlash(TargetURLPath(name, hex.EncodeToString(sum[:]))))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := writeFileAtomic(p, data, 0o644); err != nil {
			return err
		}
		st.targets.Signed.Targets[name] = tf
		return nil
	})
	if errors.Is(err, errUnchanged) {
		return false, nil
	}
	return err == nil, err
}

// SetTargetCustom replaces the custom metadata of an existing target (halt,
// recall, rollout changes) and re-signs targets, snapshot and timestamp.
func (r *Repo) SetTargetCustom(name string, custom json.RawMessage) error {
	c, err := normalizeCustom(custom)
	if err != nil {
		return err
	}
	return r.update(func(st *state) error {
		tf, ok := st.targets.Signed.Targets[name]
		if !ok {
			return fmt.Errorf("%w: %s", ErrNotFound, name)
		}
		tf.Custom = nil
		if c != nil {
			tf.Custom = &c
		}
		return nil
	})
}

// RemoveTarget removes a target from the signed targets and re-signs
// targets, snapshot and timestamp. The stored bytes under dir/targets/ are
// kept: clients that are mid-refresh on the previous consistent snapshot
// may still download them, as they may still find the blob in a registry.
func (r *Repo) RemoveTarget(name string) error {
	return r.update(func(st *state) error {
		if _, ok := st.targets.Signed.Targets[name]; !ok {
			return fmt.Errorf("%w: %s", ErrNotFound, name)
		}
		delete(st.targets.Signed.Targets, name)
		return nil
	})
}

// RefreshTargets re-signs the unchanged targets metadata with a fresh
// expiry (and snapshot and timestamp after it). Needed when no release was
// added or changed for most of the targets lifetime: expired targets stop
// every node from updating.
func (r *Repo) RefreshTargets() error {
	return r.update(func(*state) error { return nil })
}

// update applies change to the current targets and signs the new targets,
// snapshot and timestamp. All keys are loaded before anything is written.
func (r *Repo) update(change func(*state) error) error {
	unlock, err := lockDir(r.dir)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := r.load()
	if err != nil {
		return err
	}
	keys, err := r.loadKeys(st, RoleTargets, RoleSnapshot, RoleTimestamp)
	if err != nil {
		return err
	}
	if err := change(st); err != nil {
		return err
	}
	return r.writeTargets(st, keys)
}

// Targets returns the currently signed targets.
func (r *Repo) Targets() (map[string]TargetInfo, error) {
	st, err := r.load()
	if err != nil {
		return nil, err
	}
	return targetInfos(st.targets.Signed.Targets), nil
}

// RefreshTimestamp signs a new timestamp version with a fresh expiry; run
// it from cron well within the timestamp lifetime (default: daily expiry,
// so e.g. every 6 hours).
//
// If the current snapshot would expire before the new timestamp does, the
// snapshot is re-signed first with a fresh expiry (and the timestamp then
// points to it): otherwise clients would see a valid timestamp that leads
// to an expired snapshot. This needs the snapshot key online next to the
// timestamp key. Targets and root are never re-signed here because their
// keys are meant to stay offline; use RefreshTargets and RefreshRoot for
// them.
func (r *Repo) RefreshTimestamp() error {
	unlock, err := lockDir(r.dir)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := r.load()
	if err != nil {
		return err
	}
	newExpiry := r.expires(RoleTimestamp)
	if st.snapshot.Signed.Expires.Before(newExpiry) {
		keys, err := r.loadKeys(st, RoleSnapshot, RoleTimestamp)
		if err != nil {
			return err
		}
		return r.writeSnapshot(st, keys)
	}
	keys, err := r.loadKeys(st, RoleTimestamp)
	if err != nil {
		return err
	}
	return r.writeTimestamp(st, keys)
}

// RefreshRoot writes the next root version, unchanged but for a fresh
// expiry, signed by the root keys. An expired root stops every node, and
// nodes cannot skip it, so this must run before DefaultRootExpiry passes.
func (r *Repo) RefreshRoot() error {
	unlock, err := lockDir(r.dir)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := r.load()
	if err != nil {
		return err
	}
	keys, err := r.loadKeys(st, RoleRoot)
	if err != nil {
		return err
	}
	next, err := copyRoot(st.root)
	if err != nil {
		return err
	}
	return r.writeRoot(next, keys[RoleRoot])
}

// RotateKeys replaces all keys of role with newKeys fresh keys and the
// given threshold.
//
// Rotating root writes N+1.root.json signed by the old root keys (at least
// the old threshold, so clients trusting N accept it) and by the new keys
// (the new threshold, so the new root verifies itself). Rotating targets,
// snapshot or timestamp writes N+1.root.json (their keys live in root)
// signed by the unchanged root keys, then re-signs the rotated role with
// the new keys and everything that pins it: targets -> snapshot ->
// timestamp. The retired key files are deleted once the new metadata is on
// disk.
func (r *Repo) RotateKeys(role Role, newKeys int, threshold int) error {
	if !slices.Contains(allRoles, role) {
		return fmt.Errorf("%w: unknown role %q", ErrBadOptions, role)
	}
	if err := checkThreshold(role, newKeys, threshold); err != nil {
		return err
	}
	unlock, err := lockDir(r.dir)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := r.load()
	if err != nil {
		return err
	}
	// Everything that will sign must be present before anything is written.
	need := []Role{RoleRoot}
	switch role {
	case RoleTargets:
		need = append(need, RoleSnapshot, RoleTimestamp)
	case RoleSnapshot:
		need = append(need, RoleTimestamp)
	}
	keys, err := r.loadKeys(st, need...)
	if err != nil {
		return err
	}

	next, err := copyRoot(st.root)
	if err != nil {
		return err
	}
	oldIDs := slices.Clone(next.Signed.Roles[string(role)].KeyIDs)
	for _, id := range oldIDs {
		if err := next.Signed.RevokeKey(id, string(role)); err != nil {
			return err
		}
	}
	var fresh []*signingKey
	for range newKeys {
		k, err := generateKey()
		if err != nil {
			return err
		}
		if err := writeKey(r.dir, role, k); err != nil {
			return err
		}
		if err := next.Signed.AddKey(k.pub, string(role)); err != nil {
			return err
		}
		fresh = append(fresh, k)
	}
	next.Signed.Roles[string(role)].Threshold = threshold

	signers := [][]*signingKey{keys[RoleRoot]}
	if role == RoleRoot {
		signers = append(signers, fresh)
	}
	if err := r.writeRoot(next, signers...); err != nil {
		return err
	}
	st.root = next
	keys[role] = fresh
	switch role {
	case RoleTargets:
		err = r.writeTargets(st, keys)
	case RoleSnapshot:
		err = r.writeSnapshot(st, keys)
	case RoleTimestamp:
		err = r.writeTimestamp(st, keys)
	}
	if err != nil {
		return err
	}
	return removeKeys(r.dir, role, oldIDs)
}

// Files returns every metadata file a client may fetch, keyed by file name
// (which is also the OCI tag to push it under): all N.root.json from 1,
// timestamp.json, and the current N.snapshot.json and N.targets.json.
// Push the versioned files before timestamp.json so that a client never
// sees a timestamp pointing to a snapshot the registry lacks.
func (r *Repo) Files() (map[string][]byte, error) {
	st, err := r.load()
	if err != nil {
		return nil, err
	}
	names := []string{
		metadata.TIMESTAMP + ".json",
		snapshotName(st.timestamp.Signed.Meta["snapshot.json"].Version),
		targetsName(st.snapshot.Signed.Meta["targets.json"].Version),
	}
	for v := int64(1); v <= st.root.Signed.Version; v++ {
		names = append(names, rootName(v))
	}
	files := map[string][]byte{}
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(r.dir, "metadata", n))
		if err != nil {
			return nil, err
		}
		files[n] = b
	}
	return files, nil
}

// state is the current signed metadata, as loaded from disk.
type state struct {
	root      *metadata.Metadata[metadata.RootType]
	targets   *metadata.Metadata[metadata.TargetsType]
	snapshot  *metadata.Metadata[metadata.SnapshotType]
	timestamp *metadata.Metadata[metadata.TimestampType]
}

func rootName(v int64) string     { return strconv.FormatInt(v, 10) + ".root.json" }
func snapshotName(v int64) string { return strconv.FormatInt(v, 10) + ".snapshot.json" }
func targetsName(v int64) string  { return strconv.FormatInt(v, 10) + ".targets.json" }

var rootFileRE = regexp.MustCompile(`^([1-9][0-9]{0,18})\.root\.json$`)

// load reads the current state. timestamp.json is the entry point, exactly
// as for a client: files newer than what it pins (left behind by a crash in
// the middle of an update) are not part of the state and get overwritten
// by the next update.
func (r *Repo) load() (*state, error) {
	md := filepath.Join(r.dir, "metadata")
	ents, err := os.ReadDir(md)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotRepo, err)
	}
	var versions []int64
	for _, e := range ents {
		if m := rootFileRE.FindStringSubmatch(e.Name()); m != nil {
			v, _ := strconv.ParseInt(m[1], 10, 64)
			versions = append(versions, v)
		}
	}
	sort.Slice(versions, func(i, j int) bool { return versions[i] < versions[j] })
	// The chain must be complete: clients walk it one version at a time.
	for i, v := range versions {
		if v != int64(i+1) {
			return nil, fmt.Errorf("%w: root chain has a gap before %s", ErrInvalid, rootName(v))
		}
	}
	if len(versions) == 0 {
		return nil, fmt.Errorf("%w: no root metadata in %s", ErrNotRepo, md)
	}
	st := &state{}
	if st.root, err = metadata.Root().FromFile(filepath.Join(md, rootName(versions[len(versions)-1]))); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if st.timestamp, err = metadata.Timestamp().FromFile(filepath.Join(md, "timestamp.json")); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	sm, ok := st.timestamp.Signed.Meta["snapshot.json"]
	if !ok {
		return nil, fmt.Errorf("%w: timestamp.json lacks snapshot.json", ErrInvalid)
	}
	if st.snapshot, err = metadata.Snapshot().FromFile(filepath.Join(md, snapshotName(sm.Version))); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	tm, ok := st.snapshot.Signed.Meta["targets.json"]
	if !ok {
		return nil, fmt.Errorf("%w: snapshot lacks targets.json", ErrInvalid)
	}
	if st.targets, err = metadata.Targets().FromFile(filepath.Join(md, targetsName(tm.Version))); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	// FromFile does not record the map key in TargetFiles.Path.
	for name, tf := range st.targets.Signed.Targets {
		tf.Path = name
	}
	return st, nil
}

func (r *Repo) loadKeys(st *state, roles ...Role) (map[Role][]*signingKey, error) {
	keys := map[Role][]*signingKey{}
	for _, role := range roles {
		k, err := loadRoleKeys(r.dir, &st.root.Signed, role)
		if err != nil {
			return nil, err
		}
		keys[role] = k
	}
	return keys, nil
}

// expires returns now + the role's lifetime in whole seconds: go-tuf would
// otherwise write fractional seconds, which the TUF specification's
// "YYYY-MM-DDTHH:MM:SSZ" format does not allow and strict clients reject.
func (r *Repo) expires(role Role) time.Time {
	return r.now().UTC().Add(r.expiry[role]).Truncate(time.Second)
}

func (r *Repo) writeMeta(name string, md interface{ ToBytes(bool) ([]byte, error) }) error {
	data, err := md.ToBytes(true)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(r.dir, "metadata", name), append(data, '\n'), 0o644)
}

// writeRoot signs and writes root as the next version.
func (r *Repo) writeRoot(next *metadata.Metadata[metadata.RootType], signers ...[]*signingKey) error {
	next.Signed.Version++
	next.Signed.Expires = r.expires(RoleRoot)
	if err := signWith(next, signers...); err != nil {
		return err
	}
	return r.writeMeta(rootName(next.Signed.Version), next)
}

// writeTargets signs the next targets version, then the snapshot and the
// timestamp that pin it.
func (r *Repo) writeTargets(st *state, keys map[Role][]*signingKey) error {
	st.targets.Signed.Version++
	st.targets.Signed.Expires = r.expires(RoleTargets)
	if err := signWith(st.targets, keys[RoleTargets]); err != nil {
		return err
	}
	data, err := r.metaBytes(st.targets)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(r.dir, "metadata", targetsName(st.targets.Signed.Version)), data, 0o644); err != nil {
		return err
	}
	st.snapshot.Signed.Meta = map[string]*metadata.MetaFiles{"targets.json": metaFile(st.targets.Signed.Version, data)}
	return r.writeSnapshot(st, keys)
}

// writeSnapshot signs the next snapshot version, then the timestamp.
func (r *Repo) writeSnapshot(st *state, keys map[Role][]*signingKey) error {
	st.snapshot.Signed.Version++
	st.snapshot.Signed.Expires = r.expires(RoleSnapshot)
	if err := signWith(st.snapshot, keys[RoleSnapshot]); err != nil {
		return err
	}
	data, err := r.metaBytes(st.snapshot)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(r.dir, "metadata", snapshotName(st.snapshot.Signed.Version)), data, 0o644); err != nil {
		return err
	}
	st.timestamp.Signed.Meta = map[string]*metadata.MetaFiles{"snapshot.json": metaFile(st.snapshot.Signed.Version, data)}
	return r.writeTimestamp(st, keys)
}

// writeTimestamp signs the next timestamp version. timestamp.json is
// replaced atomically and last: it is what makes a new state current.
func (r *Repo) writeTimestamp(st *state, keys map[Role][]*signingKey) error {
	st.timestamp.Signed.Version++
	st.timestamp.Signed.Expires = r.expires(RoleTimestamp)
	if err := signWith(st.timestamp, keys[RoleTimestamp]); err != nil {
		return err
	}
	return r.writeMeta("timestamp.json", st.timestamp)
}

func (r *Repo) metaBytes(md interface{ ToBytes(bool) ([]byte, error) }) ([]byte, error) {
	data, err := md.ToBytes(true)
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

// metaFile pins a metadata file by version, length and sha256. The length
// lets clients bound the download exactly; the hash makes a swapped file
// fail before its signatures are even checked.
func metaFile(version int64, data []byte) *metadata.MetaFiles {
	sum := sha256.Sum256(data)
	return &metadata.MetaFiles{Version: version, Length: int64(len(data)), Hashes: metadata.Hashes{"sha256": sum[:]}}
}

// copyRoot deep-copies root through its JSON form, so changes to the copy
// never leak into the state it came from.
func copyRoot(root *metadata.Metadata[metadata.RootType]) (*metadata.Metadata[metadata.RootType], error) {
	b, err := root.ToBytes(false)
	if err != nil {
		return nil, err
	}
	return metadata.Root().FromBytes(b)
}

func targetInfos(tfs map[string]*metadata.TargetFiles) map[string]TargetInfo {
	out := make(map[string]TargetInfo, len(tfs))
	for _, name := range slices.Sorted(maps.Keys(tfs)) {
		tf := tfs[name]
		ti := TargetInfo{Name: name, Length: tf.Length}
		if h, ok := tf.Hashes["sha256"]; ok {
			ti.SHA256 = hex.EncodeToString(h)
		}
		if tf.Custom != nil {
			ti.Custom = compactJSON(*tf.Custom)
		}
		out[name] = ti
	}
	return out
}

var nameElemRE = regexp.MustCompile(`^[A-Za-z0-9._+-]+$`)

// validateTargetName keeps names to what every transport can carry
// unescaped: go-tuf concatenates the name into the download path as is, an
// HTTP fetcher would misread '?' or '#', and an OCI fetcher parses the
// hash back out of the last element.
func validateTargetName(name string) error {
	if name == "" || len(name) > 512 {
		return fmt.Errorf("%w: %q: empty or longer than 512 bytes", ErrBadName, name)
	}
	elems := strings.Split(name, "/")
	for _, e := range elems {
		if e == "" || e == "." || e == ".." || !nameElemRE.MatchString(e) {
			return fmt.Errorf("%w: %q: want path elements of [A-Za-z0-9._+-] separated by /, no empty, . or .. elements", ErrBadName, name)
		}
	}
	if hashedLeafRE.MatchString(elems[len(elems)-1]) {
		return fmt.Errorf("%w: %q: must not start with a sha256 and a dot (reserved for download paths)", ErrBadName, name)
	}
	return nil
}

// TargetURLPath returns the path, relative to the targets base URL, at
// which a client with consistent snapshots requests target name with the
// given sha256: "<dir>/<sha256>.<base>" (or "<sha256>.<base>" when name has
// no directory). This is go-tuf's (and the TUF specification's) scheme.
func TargetURLPath(name, sha256Hex string) string {
	dir, base := path.Split(name)
	return dir + sha256Hex + "." + base
}
