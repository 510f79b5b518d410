package updater

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"sealift/signing"
	"sealift/updater/oci"
	"sealift/updater/release"
	"sealift/updater/rollout"
)

// PublishRelease publishes a release that every node may take at once
// (PublishReleaseWith without a rollout plan).
func PublishRelease(ctx context.Context, pub oci.Publisher, repo *signing.Repo, img v1.Image, cfg *release.Config) (*PublishResult, error) {
	return PublishReleaseWith(ctx, pub, repo, img, cfg, PublishOptions{})
}

// PublishOptions are the publisher's choices for one release.
type PublishOptions struct {
	// Rollout stages the release in waves (docs/rollout.md); nil means
	// every node may take it at once.
	Rollout *rollout.Plan
	// Replace allows publishing a version that is already signed with
	// other bytes. Nodes that run or staged the replaced bytes keep
	// them, and so do most that were downloading them: a node compares
	// versions, and the replacement has the same one (docs/publishing.md).
	// A new version is nearly always what is wanted.
	Replace bool
}

// PublishResult is what a publish did.
type PublishResult struct {
	Target string // TUF target name
	Digest string // manifest digest signed for Target
	// AlreadyPublished: Target was signed with these very bytes already.
	// Nothing was re-signed and its signed metadata (rollout plan,
	// halt, recall) was kept; the artifact and the current metadata
	// were pushed again, which completes an interrupted publish.
	AlreadyPublished bool
	// Replaced is the manifest digest Target was signed with before a
	// publish with Replace; "" when nothing was replaced.
	Replaced string
	// Meta is the release's signed metadata after the publish.
	Meta ReleaseMeta
}

// ErrAlreadyPublished: a publish without Replace of a version already
// signed with other bytes. The error is a *PublishedError.
var ErrAlreadyPublished = errors.New("version already published with other bytes")

// PublishedError refuses to publish a version already signed with
// other bytes. It matches ErrAlreadyPublished and ErrBadInput.
type PublishedError struct {
	Version   string
	Target    string // TUF target name
	Published string // manifest digest signed for Target
	New       string // manifest digest of the refused release
	// Raced: another publisher signed Target between this one's check
	// and its signing, after this one had pushed its artifact, so the
	// version tag in the registry may name the refused release.
	Raced bool
}

func (e *PublishedError) Error() string {
	msg := fmt.Sprintf("release %s is already published with other bytes: target %s is signed as manifest %s, this release is manifest %s",
		e.Version, e.Target, e.Published, e.New)
	if e.Raced {
		msg += " (signed by another publisher meanwhile; the version tag may name this release until the signed one is published again)"
	}
	return msg
}

func (e *PublishedError) Unwrap() []error { return []error{ErrAlreadyPublished, ErrBadInput} }

// PublishReleaseWith pushes a built release and signs it: the artifact
// goes up first (blobs, then manifest under the version tag), then the
// TUF target pinning the manifest's bytes is added, then the new metadata
// is pushed. A node therefore never sees a signed target whose artifact
// is missing.
//
// Before anything is pushed, an invalid plan is refused (ErrBadInput,
// naming the field), and so is a version already signed with other
// bytes unless o.Replace (*PublishedError). A version already signed
// with these bytes is not re-signed (PublishResult.AlreadyPublished).
func PublishReleaseWith(ctx context.Context, pub oci.Publisher, repo *signing.Repo, img v1.Image, cfg *release.Config, o PublishOptions) (*PublishResult, error) {
	if o.Rollout != nil {
		if err := o.Rollout.Validate(); err != nil {
			return nil, fmt.Errorf("%w: release %s: %w", ErrBadInput, cfg.Version, err)
		}
	}
	raw, err := img.RawManifest()
	if err != nil {
		return nil, fmt.Errorf("release %s: %w", cfg.Version, err)
	}
	sum := sha256.Sum256(raw)
	newHex := hex.EncodeToString(sum[:])
	newDigest := "sha256:" + newHex
	name := TargetName(cfg.Variant, cfg.Arch, cfg.Version)
	ts, err := repo.Targets()
	if err != nil {
		return nil, err
	}
	res := &PublishResult{Target: name, Digest: newDigest}
	old, signed := ts[name]
	switch {
	case !signed:
	case old.SHA256 == newHex:
		res.AlreadyPublished = true
	case !o.Replace:
		return nil, &PublishedError{Version: cfg.Version, Target: name, Published: "sha256:" + old.SHA256, New: newDigest}
	default:
		res.Replaced = "sha256:" + old.SHA256
	}

	// Pushed again when already published too: it is idempotent, and puts
	// the version tag back on the signed manifest if it was moved.
	if _, _, err := pub.PushImage(ctx, img, cfg.Version); err != nil {
		return nil, fmt.Errorf("push release %s: %w", cfg.Version, err)
	}
	if !res.AlreadyPublished {
		meta := ReleaseMeta{Version: cfg.Version, Variant: cfg.Variant, Arch: cfg.Arch, Rollout: o.Rollout}
		b, err := json.Marshal(meta)
		if err != nil {
			return nil, err
		}
		added := true
		if o.Replace {
			err = repo.AddTarget(name, raw, b)
		} else {
			// The check above did not hold the repository lock: another
			// publisher may have signed this version since.
			added, err = repo.AddNewTarget(name, raw, b)
		}
		switch {
		case errors.Is(err, signing.ErrTargetExists):
			pe := &PublishedError{Version: cfg.Version, Target: name, New: newDigest, Raced: true}
			if now, terr := repo.Targets(); terr == nil {
				pe.Published = "sha256:" + now[name].SHA256
			}
			return nil, pe
		case err != nil:
			return nil, fmt.Errorf("sign release %s: %w", cfg.Version, err)
		}
		res.AlreadyPublished, res.Meta = !added, meta
	}
	if res.AlreadyPublished {
		m, err := ReleaseInfo(repo, name)
		if err != nil {
			return nil, err
		}
		res.Meta = *m
	}
	// Also when nothing was signed now: a publish interrupted after
	// signing left metadata that only this push makes visible.
	if err := PushMetadata(ctx, pub, repo); err != nil {
		return nil, err
	}
	return res, nil
}

// SetRecalled marks a published release recalled (or not) in its signed
// metadata and pushes the new metadata.
func SetRecalled(ctx context.Context, pub oci.Publisher, repo *signing.Repo, target string, recalled bool) error {
	_, _, err := changeMeta(ctx, pub, repo, target, func(m *ReleaseMeta) (bool, error) {
		m.Recalled = recalled
		return true, nil
	})
	return err
}

// SetRollout replaces a published release's rollout plan (nil: every
// node at once). The halt is not the plan's to change: a halted rollout
// stays halted, frozen at the new plan's position at now, and resumes
// from there (ResumeRollout); a running one stays running. An invalid
// plan is refused with ErrBadInput naming the field.
func SetRollout(ctx context.Context, pub oci.Publisher, repo *signing.Repo, target string, plan *rollout.Plan, now time.Time) (*ReleaseMeta, error) {
	var p *rollout.Plan
	if plan != nil {
		c := *plan
		c.Waves = append([]rollout.Wave(nil), plan.Waves...)
		c.HaltedAt = time.Time{}
		if err := c.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadInput, err)
		}
		p = &c
	}
	m, _, err := changeMeta(ctx, pub, repo, target, func(m *ReleaseMeta) (bool, error) {
		if m.Rollout != nil && m.Rollout.Halted() {
			if p == nil {
				i := rollout.Immediate(now)
				p = &i
			}
			p.Halt(now)
		}
		m.Rollout = p
		return true, nil
	})
	return m, err
}

// HaltRollout halts a release's rollout: no node that is not running it
// takes it any more, whatever its wave; nodes on it stay. A release
// published without a plan gets the plan "everyone at once, from now",
// halted. changed is false when it was halted already (nothing is
// re-signed; the first halt's time is kept).
func HaltRollout(ctx context.Context, pub oci.Publisher, repo *signing.Repo, target string, now time.Time) (m *ReleaseMeta, changed bool, err error) {
	return changeMeta(ctx, pub, repo, target, func(m *ReleaseMeta) (bool, error) {
		if m.Rollout == nil {
			p := rollout.Immediate(now)
			m.Rollout = &p
		}
		return m.Rollout.Halt(now), nil
	})
}

// ResumeRollout lifts a halt. The schedule moves later by the time spent
// halted (rollout.Plan.Resume), so the rollout continues from the share of
// the fleet that was eligible at the halt instead of letting every node
// whose time passed meanwhile in at once. changed is false when it was
// not halted.
func ResumeRollout(ctx context.Context, pub oci.Publisher, repo *signing.Repo, target string, now time.Time) (m *ReleaseMeta, changed bool, err error) {
	return changeMeta(ctx, pub, repo, target, func(m *ReleaseMeta) (bool, error) {
		if m.Rollout == nil {
			return false, nil
		}
		return m.Rollout.Resume(now), nil
	})
}

// ReleaseInfo returns the signed metadata of a published release.
func ReleaseInfo(repo *signing.Repo, target string) (*ReleaseMeta, error) {
	ts, err := repo.Targets()
	if err != nil {
		return nil, err
	}
	t, ok := ts[target]
	if !ok {
		return nil, fmt.Errorf("%w: no signed release %q", signing.ErrNotFound, target)
	}
	var m ReleaseMeta
	if err := json.Unmarshal(t.Custom, &m); err != nil {
		return nil, fmt.Errorf("release %q: read its signed metadata: %w", target, err)
	}
	if m.Version == "" {
		return nil, fmt.Errorf("release %q has no sealift metadata", target)
	}
	return &m, nil
}

// changeMeta applies change to a release's signed metadata; when change
// reports a change, it re-signs targets, snapshot and timestamp and
// pushes the metadata (timestamp last).
func changeMeta(ctx context.Context, pub oci.Publisher, repo *signing.Repo, target string, change func(*ReleaseMeta) (bool, error)) (*ReleaseMeta, bool, error) {
	m, err := ReleaseInfo(repo, target)
	if err != nil {
		return nil, false, err
	}
	changed, err := change(m)
	if err != nil || !changed {
		return m, false, err
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, false, err
	}
	if err := repo.SetTargetCustom(target, b); err != nil {
		return nil, false, err
	}
	if err := PushMetadata(ctx, pub, repo); err != nil {
		return nil, false, err
	}
	return m, true, nil
}

// PushMetadata pushes every TUF metadata file under the tag equal to its
// name, in an order that keeps a concurrent client consistent: roots (in
// version order), then targets, then snapshot, and timestamp.json last,
// since the timestamp is what makes the others current.
func PushMetadata(ctx context.Context, pub oci.Publisher, repo *signing.Repo) error {
	files, err := repo.Files()
	if err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return metadataRank(names[i]) < metadataRank(names[j]) })
	for _, n := range names {
		if err := pub.PushFile(ctx, n, files[n], oci.MediaTypeTUFMetadata); err != nil {
			return fmt.Errorf("push TUF metadata %s: %w", n, err)
		}
	}
	return nil
}

// metadataRank orders metadata files for pushing.
func metadataRank(name string) int64 {
	role := 0
	switch {
	case strings.HasSuffix(name, ".root.json"):
		role = 0
	case strings.HasSuffix(name, ".targets.json"):
		role = 1
	case strings.HasSuffix(name, ".snapshot.json"):
		role = 2
	default: // timestamp.json
		role = 3
	}
	v, _ := strconv.ParseInt(strings.SplitN(name, ".", 2)[0], 10, 64)
	return int64(role)<<40 + v
}
