// Package gptprio keeps boot flags the ChromeOS way: in the 64-bit GPT
// attribute word of each root slot's partition entry, as read by ChromeOS
// firmware, Flatcar's and Bottlerocket's patched GRUB (gptprio.next) and
// cgpt.
//
// Bits of the attribute word (cgpt's layout):
//
//	48-51  priority   0 = never boot, 15 = highest
//	52-55  tries      boot attempts left while not successful
//	56     successful the slot has booted and passed its checks
//	57     Bottlerocket's "has booted once"; not ours, left alone
//
// Every other bit (0 required, 2 legacy BIOS bootable, the rest of
// 48-63 and the whole low half) belongs to someone else and is carried
// over unchanged on every write.
package gptprio

import (
	"fmt"

	"sealift/bootloader"
)

const (
	priorityShift = 48
	triesShift    = 52
	successfulBit = 56

	// Mask covers exactly the bits this package owns.
	Mask uint64 = 0xF<<priorityShift | 0xF<<triesShift | 1<<successfulBit
)

// Encode returns old with the priority, tries and successful bits replaced
// by f and every other bit kept. Values are truncated to their 4-bit
// fields; Backend.Save validates them first.
func Encode(old uint64, f bootloader.SlotFlags) uint64 {
	v := old &^ Mask
	v |= uint64(f.Priority&0xF) << priorityShift
	v |= uint64(f.Tries&0xF) << triesShift
	if f.Successful {
		v |= 1 << successfulBit
	}
	return v
}

// Decode reads the flags from an attribute word.
func Decode(attr uint64) bootloader.SlotFlags {
	return bootloader.SlotFlags{
		Priority:   int(attr >> priorityShift & 0xF),
		Tries:      int(attr >> triesShift & 0xF),
		Successful: attr>>successfulBit&1 == 1,
	}
}

// AttrStore is where the attribute words live; *partitions.Disk is one.
// Attributes must read the medium afresh on every call, and SetAttributes
// must write all the given words in one durable table update.
type AttrStore interface {
	Attributes(bootloader.Slot) (uint64, error)
	SetAttributes(map[bootloader.Slot]uint64) error
}

// Backend is the gptprio bootloader.Backend.
type Backend struct {
	store AttrStore
}

// New returns the backend keeping flags in store.
func New(store AttrStore) *Backend { return &Backend{store: store} }

var _ bootloader.Backend = (*Backend)(nil)

// Name is "gptprio".
func (b *Backend) Name() string { return "gptprio" }

// Load reads both slots' flags from the table as it is now.
func (b *Backend) Load() (bootloader.Flags, error) {
	f := bootloader.Flags{}
	for _, s := range bootloader.Slots {
		attr, err := b.store.Attributes(s)
		if err != nil {
			return nil, fmt.Errorf("gptprio: read slot %s: %w", s, err)
		}
		f[s] = Decode(attr)
	}
	return f, nil
}

// Save writes both slots' flags in a single table write, so the disk never
// holds one slot's new flags with the other's old ones. The words are
// re-read just before, so bits set meanwhile by others survive. Nothing is
// written when the flags are already on disk.
func (b *Backend) Save(f bootloader.Flags) error {
	if err := f.Validate(); err != nil {
		return fmt.Errorf("gptprio: %w", err)
	}
	next := map[bootloader.Slot]uint64{}
	changed := false
	for _, s := range bootloader.Slots {
		v, ok := f[s]
		if !ok {
			return fmt.Errorf("gptprio: no flags for slot %s", s)
		}
		old, err := b.store.Attributes(s)
		if err != nil {
			return fmt.Errorf("gptprio: read slot %s: %w", s, err)
		}
		next[s] = Encode(old, v)
		changed = changed || next[s] != old
	}
	if !changed {
		return nil
	}
	if err := b.store.SetAttributes(next); err != nil {
		return fmt.Errorf("gptprio: write: %w", err)
	}
	return nil
}

// Simulate is the ChromeOS rule the model implements: the bootable slot
// with the highest priority boots (the first in table order on a tie) and,
// if not yet successful, spends a try.
func (b *Backend) Simulate(f bootloader.Flags) bootloader.Decision {
	return bootloader.SimulateModel(f)
}
