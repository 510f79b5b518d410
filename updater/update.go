package updater

import (
	"context"
	"errors"
	"fmt"

	"sealift/bootloader"
	"sealift/updater/release"
	"sealift/updater/state"
)

// runningVersion is the version the node runs now: the running slot's
// release, or on a never-booted image the release the bootloader would
// pick.
func (u *Updater) runningVersion(st *state.State) (string, error) {
	s, ok, err := u.running(st)
	if err != nil {
		return "", err
	}
	if !ok {
		flags, err := u.Boot.Load()
		if err != nil {
			return "", fmt.Errorf("read boot flags: %w", err)
		}
		if s, ok = flags.Preferred(); !ok {
			return "", nil
		}
	}
	if r := st.Slots[s]; r != nil {
		return r.Version, nil
	}
	return "", nil
}

// Check refreshes the signed metadata (root, timestamp, snapshot, targets)
// and decides which release, if any, this node should take, by the
// updater's clock and the node's rollout seed (see NodeSeed: a node
// without one draws it here and saves it in the state).
func (u *Updater) Check(trust Trust, o CheckOptions) (*CheckResult, error) {
	st, err := u.State.Load()
	if err != nil {
		return nil, err
	}
	running, err := u.runningVersion(st)
	if err != nil {
		return nil, err
	}
	seed, seedFrom, err := u.nodeSeed(st, o.Seed)
	if err != nil {
		return nil, err
	}
	if err := trust.Refresh(); err != nil {
		return nil, fmt.Errorf("refresh signed metadata: %w", err)
	}
	targets, err := trust.Targets()
	if err != nil {
		return nil, err
	}
	res, err := decide(targets, running, st.Failed, st.Holds, o, seed, u.now())
	if err != nil {
		return nil, err
	}
	res.SeedFrom = seedFrom
	if res.Staged, err = u.judgeStagedIn(st, targets, o, res.Take, res.Holds, seed); err != nil {
		return nil, err
	}
	return res, nil
}

// UpdateOptions configures Update.
type UpdateOptions struct {
	CheckOptions
	Tries    int
	Progress func(done, total int64)
}

// Update checks for a release and installs it into the inactive slot:
// the release manifest is the signed TUF target (its length and sha256
// are checked by the TUF client), the config and every chunk are fetched
// by digest and checked, the chunks are streamed into the slot, and the
// verity root hash of what was written must equal the one in the signed
// release before the boot flags flip. It returns ErrNoRelease (wrapped
// with the reason) when there is nothing to take.
func (u *Updater) Update(ctx context.Context, trust Trust, blobs release.BlobFetcher, o UpdateOptions) (*CheckResult, *InstallResult, error) {
	// A pause that has ended is dropped (and that recorded) here, where
	// the disk is open for writing; Check only reads.
	st, err := u.State.Load()
	if err != nil {
		return nil, nil, err
	}
	if u.expireHolds(st, u.now()) {
		if err := u.State.Save(st); err != nil {
			return nil, nil, err
		}
	}
	res, err := u.Check(trust, o.CheckOptions)
	if err != nil {
		return nil, nil, err
	}
	if res.Take == nil {
		return res, nil, fmt.Errorf("%w: %s", ErrNoRelease, res.Reason)
	}
	take := res.Take
	manifest, info, err := trust.Fetch(take.Target)
	if err != nil {
		return res, nil, fmt.Errorf("fetch signed release manifest %s: %w", take.Target, err)
	}
	rel, err := release.Fetch(ctx, manifest, blobs)
	if err != nil {
		return res, nil, fmt.Errorf("%w: release %s: %v", ErrVerify, take.Meta.Version, err)
	}
	if rel.ManifestDigest != "sha256:"+info.SHA256 {
		return res, nil, fmt.Errorf("%w: manifest digest %s is not the signed sha256:%s", ErrVerify, rel.ManifestDigest, info.SHA256)
	}
	// The signed target metadata chose this release; its own config must
	// describe the same release, or a mislabelled artifact could slip in.
	c := rel.Config
	if c.Version != take.Meta.Version || c.Variant != take.Meta.Variant || c.Arch != take.Meta.Arch {
		return res, nil, fmt.Errorf("%w: release config says %s/%s %s, the signed target says %s/%s %s",
			ErrVerify, c.Variant, c.Arch, c.Version, take.Meta.Variant, take.Meta.Arch, take.Meta.Version)
	}
	kernel, err := rel.ReadKernel(ctx, blobs)
	if err != nil {
		return res, nil, fmt.Errorf("%w: kernel: %v", ErrVerify, err)
	}
	var initrd []byte
	if rel.Initrd != nil {
		if initrd, err = rel.ReadInitrd(ctx, blobs); err != nil {
			return res, nil, fmt.Errorf("%w: initrd: %v", ErrVerify, err)
		}
	}
	params, root := c.VerityParams()
	// The verity root hash of the written slot is checked against the
	// signed one before the flip; it covers every byte, so per-chunk
	// sha256 passes while streaming would only cost time (two of them
	// made the update CPU-bound). Sizes are still checked as the bytes
	// arrive, and after a mismatch the signed per-chunk digests name the
	// bad chunk.
	opts := release.ReadOptions{SkipUncompressedDigest: true, SkipCompressedDigest: true}
	stream := func(ctx context.Context, get func(context.Context) ([]byte, error), put func([]byte, int64, int) error) error {
		return rel.StreamRoot(ctx, blobs, opts, get, put)
	}
	ir, err := u.Install(ctx, InstallRequest{
		Stream:         stream,
		ImageSize:      c.Root.Size,
		Version:        c.Version,
		ManifestDigest: rel.ManifestDigest,
		Boot:           bootloader.BootFiles{Kernel: kernel, Initrd: initrd, Cmdline: c.Cmdline},
		Tries:          o.Tries,
		Salt:           params.Salt,
		ExpectedRoot:   root,
		Diagnose:       rel.CheckWritten,
		Progress:       o.Progress,
	})
	if err != nil {
		if !errors.Is(err, ErrVerify) && (errors.Is(err, release.ErrDigestMismatch) || errors.Is(err, release.ErrSizeMismatch) ||
			errors.Is(err, release.ErrCorrupt) || errors.Is(err, release.ErrInvalid)) {
			err = fmt.Errorf("%w: %w", ErrVerify, err)
		}
		return res, nil, err
	}
	return res, ir, nil
}
