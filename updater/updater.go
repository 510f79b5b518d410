// Package updater is sealift's orchestration: it writes a release into the
// inactive slot and moves the boot flags through their states, persisting
// every step so a power cut at any instant leaves a bootable, verified slot.
//
// Side effects sit behind small interfaces (Disk, SlotDevice,
// bootloader.Backend, bootloader.FS, state.Store, Runtime) so tests inject
// fakes, including writers that fail after N writes.
package updater

import (
	"errors"
	"fmt"
	"io"
	"time"

	"sealift/bootloader"
	"sealift/updater/state"
)

// SlotDevice is a root slot's partition, bounded to its extent.
type SlotDevice interface {
	io.ReaderAt
	io.WriterAt
	Size() int64
	Sync() error
	Close() error
}

// Disk is the A/B disk as the updater needs it.
type Disk interface {
	OpenSlot(s bootloader.Slot) (SlotDevice, error)
	// SlotPartUUID is the GPT partition UUID of a slot, passed to the kernel
	// so the initramfs finds the slot's root.
	SlotPartUUID(s bootloader.Slot) string
	// ESP is the filesystem holding boot files and bootloader state.
	ESP() (bootloader.FS, error)
}

// DirectDisk is a Disk whose slots can also be opened for direct I/O
// (O_DIRECT, around the page cache). Install writes through it when it
// can and falls back to OpenSlot when it cannot: direct writes cost a
// fraction of the CPU and leave the running system's page cache alone.
// Every access to such a device is aligned to 4096 bytes.
type DirectDisk interface {
	Disk
	OpenSlotDirect(s bootloader.Slot) (SlotDevice, error)
}

// Runtime tells which slot the running system booted from. It is nil when
// sealift operates on a disk that is not booted (an image file); then the
// slot of the last boot (real, as boot-check recorded it, or simulated)
// stands in for it.
type Runtime interface {
	RunningSlot() (bootloader.Slot, error)
}

// Updater ties one disk, its boot backend and its state together.
type Updater struct {
	Disk    Disk
	Boot    bootloader.Backend
	State   state.Store
	Runtime Runtime
	Now     func() time.Time
}

func (u *Updater) now() time.Time {
	if u.Now != nil {
		return u.Now().UTC()
	}
	return time.Now().UTC()
}

// Errors callers branch on.
var (
	ErrNoRunningSlot = errors.New("no running slot")
	ErrBadInput      = errors.New("invalid input")
	ErrVerify        = errors.New("verification failed")
	ErrNoPending     = errors.New("no update is pending")
)

// running returns the running slot; ok is false on a never-booted image.
func (u *Updater) running(st *state.State) (bootloader.Slot, bool, error) {
	if u.Runtime != nil {
		s, err := u.Runtime.RunningSlot()
		if err != nil {
			return "", false, err
		}
		return s, true, nil
	}
	if st.LastBoot.Valid() {
		return st.LastBoot, true, nil
	}
	return "", false, nil
}

// requireRunning is running() for operations that make no sense before a boot.
func (u *Updater) requireRunning(st *state.State) (bootloader.Slot, error) {
	s, ok, err := u.running(st)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("%w: this disk image has not been booted; run 'sealift boot simulate --apply' first", ErrNoRunningSlot)
	}
	return s, nil
}

// target picks the slot an install writes: never the running slot. On an
// image that was never booted it is the slot the bootloader would not pick,
// or A on a fresh disk.
func (u *Updater) target(st *state.State, flags bootloader.Flags) (bootloader.Slot, error) {
	if r, ok, err := u.running(st); err != nil {
		return "", err
	} else if ok {
		return r.Other(), nil
	}
	if p, ok := flags.Preferred(); ok {
		return p.Other(), nil
	}
	return bootloader.SlotA, nil
}

// transition applies a flag plan and then saves the state change. Flags go
// first: they are what the bootloader acts on, and every plan moves them
// from one safe state to another.
func (u *Updater) transition(p bootloader.Plan, st *state.State) error {
	if _, err := bootloader.Apply(u.Boot, p); err != nil {
		return err
	}
	return u.State.Save(st)
}
