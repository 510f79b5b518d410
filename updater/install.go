package updater

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"strconv"
	"strings"
	"time"

	"sealift/bootloader"
	"sealift/bootloader/grubenv"
	"sealift/bootloader/sdboot"
	"sealift/internal/kernelimage"
	"sealift/partitions/verity"
	"sealift/updater/state"
)

// InstallRequest is one release to write into the inactive slot.
type InstallRequest struct {
	// Image is the root filesystem image, ImageSize bytes long, a multiple
	// of 4096. Reading more or fewer bytes than that is an error.
	Image io.Reader
	// Stream, instead of Image, delivers the image out of order from
	// several goroutines (a release's chunks decoded in parallel).
	Stream    ImageStream
	ImageSize int64
	Version   string
	// ImageDigest, when set ("sha256:<hex>"), is checked against the
	// streamed bytes before the flip and recorded. Left empty, no digest is
	// computed: the verity root hash identifies the content.
	ImageDigest string
	// ManifestDigest is the signed release manifest the image came from,
	// recorded for status; empty for a local install.
	ManifestDigest string
	Boot           bootloader.BootFiles // Version is filled in from Version
	// KernelName names the kernel in errors, e.g. "kernel /boot/vmlinuz".
	// Empty means "the kernel of VERSION".
	KernelName string
	// Tries is how many boots the new slot gets; 0 means the default.
	Tries int
	// Salt for the verity tree; nil draws a random one.
	Salt []byte
	// ExpectedRoot, when set, is the signed verity root hash the written
	// slot must reproduce before the flags are flipped.
	ExpectedRoot []byte
	// Diagnose, when set, is called with the slot after its root hash
	// did not match ExpectedRoot, to name what was wrong (for a release,
	// the bad chunk); its error is reported along with the mismatch.
	Diagnose func(ctx context.Context, slot io.ReaderAt) error
	// Progress, when set, is called with bytes written so far.
	Progress func(done, total int64)
}

// InstallResult says what was installed where.
type InstallResult struct {
	Slot   bootloader.Slot
	Record state.SlotRecord
	Next   bootloader.Decision
	// Timings of the install's phases, for logs and benchmarks.
	Timings []PhaseTiming
	// DirectIO says the slot was written around the page cache.
	DirectIO bool
}

// PhaseTiming is how long one phase of an install took.
type PhaseTiming struct {
	Phase    string
	Duration time.Duration
}

// kernelLoader is what starts kernels on a disk with this boot backend:
// GRUB's linux command for grubenv, the firmware's LoadImage for
// systemd-boot; gptprio's bootloaders (ChromeOS firmware, Flatcar's GRUB)
// vary, so any recognised kernel passes.
func kernelLoader(backend string) kernelimage.Loader {
	switch backend {
	case grubenv.Name:
		return kernelimage.GRUB
	case sdboot.Name:
		return kernelimage.SystemdBoot
	}
	return kernelimage.AnyLoader
}

// validate checks everything that can be checked before the disk changes.
// loader is what will start the kernel (kernelLoader).
func (r *InstallRequest) validate(slotSize int64, loader kernelimage.Loader) (verity.Params, error) {
	var p verity.Params
	if r.Version == "" || strings.ContainsAny(r.Version, " \t\n\r") {
		return p, fmt.Errorf("%w: version %q must be non-empty without spaces", ErrBadInput, r.Version)
	}
	if (r.Image == nil) == (r.Stream == nil) {
		return p, fmt.Errorf("%w: exactly one of image reader and image stream must be given", ErrBadInput)
	}
	if r.ImageDigest != "" && r.Image == nil {
		return p, fmt.Errorf("%w: an image digest needs the image as an ordered reader", ErrBadInput)
	}
	if r.ImageSize <= 0 {
		return p, fmt.Errorf("%w: image is empty", ErrBadInput)
	}
	if r.ImageSize%verity.BlockSize != 0 {
		return p, fmt.Errorf("%w: image size %d is not a multiple of %d bytes (pad the filesystem image)", ErrBadInput, r.ImageSize, verity.BlockSize)
	}
	if len(r.Boot.Kernel) == 0 {
		return p, fmt.Errorf("%w: kernel is empty", ErrBadInput)
	}
	// A file the bootloader cannot load would not fall back by itself
	// everywhere (docs/boot-health.md): refuse it here.
	if _, err := kernelimage.Check(r.Boot.Kernel, loader); err != nil {
		name := r.KernelName
		if name == "" {
			name = "the kernel of " + r.Version
		}
		return p, fmt.Errorf("%w: %s: %v", ErrBadInput, name, err)
	}
	if strings.ContainsAny(r.Boot.Cmdline, "\n\r") {
		return p, fmt.Errorf("%w: kernel command line must be one line", ErrBadInput)
	}
	for _, f := range strings.Fields(r.Boot.Cmdline) {
		// sealift adds these itself (and the bootloader sealift.slot=); a
		// copy from the caller, sealift.slot=A on slot B, would make the
		// node believe it runs the other slot.
		if strings.HasPrefix(f, "sealift.") {
			return p, fmt.Errorf("%w: kernel command line parameter %q: sealift.* parameters are reserved for the updater and the bootloader", ErrBadInput, f)
		}
	}
	if r.Tries == 0 {
		r.Tries = bootloader.DefaultTries
	}
	if r.Tries < 1 || r.Tries > bootloader.MaxTries {
		return p, fmt.Errorf("%w: tries %d out of range 1-%d", ErrBadInput, r.Tries, bootloader.MaxTries)
	}
	if r.ImageDigest != "" {
		h, ok := strings.CutPrefix(r.ImageDigest, "sha256:")
		if _, err := hex.DecodeString(h); !ok || err != nil || len(h) != 64 {
			return p, fmt.Errorf("%w: image digest %q is not sha256:<64 hex digits>", ErrBadInput, r.ImageDigest)
		}
	}
	if r.ExpectedRoot != nil && len(r.ExpectedRoot) != 32 {
		return p, fmt.Errorf("%w: expected verity root hash must be 32 bytes, got %d", ErrBadInput, len(r.ExpectedRoot))
	}
	salt := r.Salt
	if salt == nil {
		var err error
		if salt, err = verity.NewSalt(); err != nil {
			return p, err
		}
	}
	blocks := uint64(r.ImageSize / verity.BlockSize)
	p = verity.Params{Salt: salt, DataBlocks: blocks, HashOffset: uint64(r.ImageSize)}
	need := r.ImageSize + int64(verity.TreeSize(blocks))
	if need > slotSize {
		return p, fmt.Errorf("%w: image of %d bytes plus its %d-byte verity tree needs %d bytes, the slot holds %d",
			ErrBadInput, r.ImageSize, verity.TreeSize(blocks), need, slotSize)
	}
	return p, nil
}

// Install writes a release into the inactive slot, verifies it and flips
// the boot flags so the next boot tries it. Steps, each persisted:
//
//  1. validate all input (no change to the disk on bad input);
//  2. make the target slot unbootable, then record "writing vX into slot";
//  3. stream the image into the slot, hashing what was written (read back
//     from the slot) while later chunks are still being written;
//  4. write the verity tree, fsync, check the tree on disk and the root hash;
//  5. write the slot's boot files to the ESP;
//  6. flip: next boot tries the slot, the running slot stays the fallback.
func (u *Updater) Install(ctx context.Context, req InstallRequest) (*InstallResult, error) {
	st, err := u.State.Load()
	if err != nil {
		return nil, err
	}
	flags, err := u.Boot.Load()
	if err != nil {
		return nil, fmt.Errorf("read boot flags: %w", err)
	}
	tgt, err := u.target(st, flags)
	if err != nil {
		return nil, err
	}
	dev, err := u.Disk.OpenSlot(tgt)
	if err != nil {
		return nil, fmt.Errorf("open slot %s: %w", tgt, err)
	}
	defer dev.Close()
	params, err := req.validate(dev.Size(), kernelLoader(u.Boot.Name()))
	if err != nil {
		return nil, err
	}
	esp, err := u.Disk.ESP()
	if err != nil {
		return nil, fmt.Errorf("open ESP: %w", err)
	}
	// A first install on a fresh disk has no fallback slot; every later one
	// must keep one, or a bad release could leave nothing to boot.
	fallback := flags[tgt.Other()].Bootable()
	if !fallback && flags[tgt].Bootable() {
		return nil, fmt.Errorf("%w: slot %s is the only bootable slot; refusing to overwrite it", ErrBadInput, tgt)
	}
	// Nor may it overwrite the only release that ever booted well: a slot
	// still on trial (running or not) is no fallback, since it may fail.
	if flags[tgt].Successful && !flags[tgt.Other()].Successful {
		return nil, fmt.Errorf("%w: slot %s holds the only release that booted successfully and slot %s has not passed its health check yet; mark it good (or let it fall back) before installing again",
			ErrBadInput, tgt, tgt.Other())
	}

	var timings []PhaseTiming
	mark := time.Now()
	phase := func(name string) {
		timings = append(timings, PhaseTiming{name, time.Since(mark)})
		mark = time.Now()
	}

	// 2. Unbootable first, then say so in the state.
	if _, err := bootloader.Apply(u.Boot, bootloader.Clear(tgt)); err != nil {
		return nil, err
	}
	now := u.now()
	delete(st.Slots, tgt)
	st.Pending = &state.Pending{Slot: tgt, Version: req.Version, Phase: state.PhaseWriting, StartedAt: now, UpdatedAt: now}
	if err := u.State.Save(st); err != nil {
		return nil, err
	}

	phase("clear")
	// A failure from here on leaves the slot unbootable and the update
	// pending as "writing"; the history says why.
	failed := func(err error) error {
		st.Record(state.Event{At: u.now(), Kind: state.EventInterrupted, Slot: tgt, Version: req.Version,
			Message: fmt.Sprintf("the update to %s in slot %s stopped before the flip: %v", req.Version, tgt, err)})
		_ = u.State.Save(st) // best effort: the error itself is what matters
		return err
	}

	// 3 + 4. Stream, hash, write the tree, verify. Direct I/O when the
	// disk offers it; a filesystem without O_DIRECT only costs speed.
	out := dev
	direct := false
	if dd, ok := u.Disk.(DirectDisk); ok {
		if ddev, err := dd.OpenSlotDirect(tgt); err == nil {
			defer ddev.Close()
			out, direct = ddev, true
		}
	}
	stream := req.Stream
	var digest hash.Hash
	if req.Image != nil {
		// The whole-stream sha256 costs a core's worth of hashing on top
		// of the verity tree, so it is only computed to be checked.
		if req.ImageDigest != "" {
			digest = sha256.New()
		}
		stream = readerStream(req.Image, req.ImageSize, digest)
	}
	root, err := writeSlot(ctx, stream, req.ImageSize, out, params, req.Progress, phase)
	if err != nil {
		return nil, failed(fmt.Errorf("write slot %s: %w", tgt, err))
	}
	if digest != nil {
		if sum := "sha256:" + hex.EncodeToString(digest.Sum(nil)); sum != req.ImageDigest {
			return nil, failed(fmt.Errorf("%w: image digest is %s, expected %s", ErrVerify, sum, req.ImageDigest))
		}
	}
	if req.ExpectedRoot != nil && !bytes.Equal(root, req.ExpectedRoot) {
		err := fmt.Errorf("%w: verity root hash of slot %s is %x, the release says %x", ErrVerify, tgt, root, req.ExpectedRoot)
		if req.Diagnose != nil {
			if derr := req.Diagnose(ctx, dev); derr != nil { // buffered: any alignment
				err = fmt.Errorf("%w: %w", err, derr)
			}
		}
		return nil, failed(err)
	}
	rec := state.SlotRecord{
		Version:        req.Version,
		ImageDigest:    req.ImageDigest,
		ManifestDigest: req.ManifestDigest,
		ImageSize:      req.ImageSize,
		Verity: state.Verity{
			RootHash:   hex.EncodeToString(root),
			Salt:       hex.EncodeToString(params.Salt),
			DataBlocks: params.DataBlocks,
			HashOffset: params.HashOffset,
		},
		InstalledAt: u.now(),
	}

	// 5. Boot files, while the slot is still unbootable.
	boot := req.Boot
	boot.Version = req.Version
	boot.Cmdline = KernelCmdline(req.Boot.Cmdline, u.Disk.SlotPartUUID(tgt), rec)
	if err := bootloader.WriteBootFiles(esp, tgt, boot); err != nil {
		return nil, failed(err)
	}
	phase("boot files")

	// 6. Flip. The record goes in before the flags so that a slot the
	// bootloader may pick always has its record.
	st.Slots[tgt] = &rec
	st.Pending.UpdatedAt = u.now()
	if err := u.State.Save(st); err != nil {
		return nil, err
	}
	plan := bootloader.Trial(tgt, req.Tries)
	if !fallback {
		plan = bootloader.Provision(tgt, req.Tries)
	}
	if _, err := bootloader.Apply(u.Boot, plan); err != nil {
		return nil, err
	}
	st.Pending.Phase = state.PhaseTrial
	st.Pending.UpdatedAt = u.now()
	msg := fmt.Sprintf("%s written to slot %s and verified; the next boot tries it (%d tries)", req.Version, tgt, req.Tries)
	if !fallback {
		msg = fmt.Sprintf("%s written to slot %s and verified; it is the first release on this disk", req.Version, tgt)
	}
	st.Record(state.Event{At: u.now(), Kind: state.EventInstalled, Slot: tgt, Version: req.Version, Message: msg})
	if err := u.State.Save(st); err != nil {
		// The flip is done and safe; only the phase label is stale, and
		// Status derives the truth from the flags.
		return nil, err
	}
	phase("flip")
	flags, err = u.Boot.Load()
	if err != nil {
		return nil, err
	}
	return &InstallResult{Slot: tgt, Record: rec, Next: u.Boot.Simulate(flags), Timings: timings, DirectIO: direct}, nil
}

// Cmdline keys sealift adds for the initramfs that opens the verity root.
const (
	CmdlineRoot       = "sealift.root"
	CmdlineVersion    = "sealift.version"
	CmdlineRootHash   = "sealift.verity.roothash"
	CmdlineSalt       = "sealift.verity.salt"
	CmdlineDataBlocks = "sealift.verity.datablocks"
	CmdlineHashOffset = "sealift.verity.hashoffset"
)

// KernelCmdline appends to the image's own command line what the
// initramfs needs to open the slot's root with dm-verity.
func KernelCmdline(base, partUUID string, rec state.SlotRecord) string {
	parts := []string{}
	if b := strings.TrimSpace(base); b != "" {
		parts = append(parts, b)
	}
	if partUUID != "" {
		parts = append(parts, CmdlineRoot+"=PARTUUID="+strings.ToLower(partUUID))
	}
	parts = append(parts,
		CmdlineVersion+"="+rec.Version,
		CmdlineRootHash+"="+rec.Verity.RootHash,
		CmdlineSalt+"="+rec.Verity.Salt,
		CmdlineDataBlocks+"="+strconv.FormatUint(rec.Verity.DataBlocks, 10),
		CmdlineHashOffset+"="+strconv.FormatUint(rec.Verity.HashOffset, 10),
	)
	return strings.Join(parts, " ")
}
