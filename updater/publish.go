package updater

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"sealift/signing"
	"sealift/updater/oci"
	"sealift/updater/release"
)

// PublishRelease pushes a built release and signs it: the artifact goes
// up first (blobs, then manifest under the version tag), then the TUF
// target pinning the manifest's bytes is added, then the new metadata is
// pushed. A node therefore never sees a signed target whose artifact is
// missing. It returns the target name and the manifest digest.
func PublishRelease(ctx context.Context, pub oci.Publisher, repo *signing.Repo, img v1.Image, cfg *release.Config) (string, string, error) {
	digest, manifest, err := pub.PushImage(ctx, img, cfg.Version)
	if err != nil {
		return "", "", fmt.Errorf("push release %s: %w", cfg.Version, err)
	}
	meta, err := json.Marshal(ReleaseMeta{Version: cfg.Version, Variant: cfg.Variant, Arch: cfg.Arch})
	if err != nil {
		return "", "", err
	}
	name := TargetName(cfg.Variant, cfg.Arch, cfg.Version)
	if err := repo.AddTarget(name, manifest, meta); err != nil {
		return "", "", fmt.Errorf("sign release %s: %w", cfg.Version, err)
	}
	if err := PushMetadata(ctx, pub, repo); err != nil {
		return "", "", err
	}
	return name, digest, nil
}

// SetRecalled marks a published release recalled (or not) in its signed
// metadata and pushes the new metadata.
func SetRecalled(ctx context.Context, pub oci.Publisher, repo *signing.Repo, target string, recalled bool) error {
	ts, err := repo.Targets()
	if err != nil {
		return err
	}
	t, ok := ts[target]
	if !ok {
		return fmt.Errorf("no signed release %q", target)
	}
	var m ReleaseMeta
	if err := json.Unmarshal(t.Custom, &m); err != nil {
		return fmt.Errorf("release %q has no sealift metadata: %w", target, err)
	}
	m.Recalled = recalled
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := repo.SetTargetCustom(target, b); err != nil {
		return err
	}
	return PushMetadata(ctx, pub, repo)
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
