// Package state persists what sealift knows beyond the boot flags: what each
// slot holds, the update in flight, failed releases, the operator's holds
// and the node's event history. Every change is a whole-file replacement
// through temp file, fsync, rename and directory fsync, so a power cut
// leaves the old or the new state, never a mix.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"time"

	"sealift/bootloader"
	"sealift/internal/atomicfile"
)

// FileName is the state file inside the state directory.
const FileName = "state.json"

// SchemaVersion is bumped on incompatible changes of State.
const SchemaVersion = 1

// Verity holds the dm-verity parameters of a slot's image.
type Verity struct {
	RootHash   string `json:"root_hash"`
	Salt       string `json:"salt"`
	DataBlocks uint64 `json:"data_blocks"`
	HashOffset uint64 `json:"hash_offset"`
}

// SlotRecord describes the release a slot holds.
type SlotRecord struct {
	Version     string `json:"version"`
	ImageDigest string `json:"image_digest,omitempty"`
	// ManifestDigest is the signed release manifest ("sha256:...") the
	// slot was installed from; empty for a local image.
	ManifestDigest string    `json:"manifest_digest,omitempty"`
	ImageSize      int64     `json:"image_size"`
	Verity         Verity    `json:"verity"`
	InstalledAt    time.Time `json:"installed_at"`
}

// Phase of the update in flight.
type Phase string

const (
	// PhaseWriting: the target slot is unbootable and being written.
	PhaseWriting Phase = "writing"
	// PhaseTrial: the flags were flipped; the next boot tries the target.
	PhaseTrial Phase = "trial"
)

// Pending is the update in flight.
type Pending struct {
	Slot      bootloader.Slot `json:"slot"`
	Version   string          `json:"version"`
	Phase     Phase           `json:"phase"`
	StartedAt time.Time       `json:"started_at"`
	UpdatedAt time.Time       `json:"updated_at"`
}

// Outcome records how the last update ended, for status and support.
type Outcome struct {
	Slot    bootloader.Slot `json:"slot"`
	Version string          `json:"version"`
	Result  string          `json:"result"` // good, cancelled, rolled-back, interrupted
	Reason  string          `json:"reason,omitempty"`
	At      time.Time       `json:"at"`
}

// State is the whole persisted state.
type State struct {
	Schema int                             `json:"schema"`
	Slots  map[bootloader.Slot]*SlotRecord `json:"slots"`
	// Pending is nil when no update is in flight.
	Pending *Pending `json:"pending,omitempty"`
	// Last is how the most recent update or rollback ended.
	Last *Outcome `json:"last,omitempty"`
	// LastBoot is the slot the most recent boot ran: recorded by boot-check
	// on a booted system, or by a simulated boot of an image. sealift on a
	// host working on the stopped disk takes it as the running slot.
	LastBoot bootloader.Slot `json:"last_boot,omitempty"`
	// Failed lists releases that were tried and fell back, by version:
	// they are not installed again until an operator clears them.
	Failed map[string]*Outcome `json:"failed,omitempty"`
	// Events is the recent history, oldest first (see Record); EventSeq
	// is the number of the newest event ever recorded.
	Events   []Event `json:"events,omitempty"`
	EventSeq uint64  `json:"event_seq,omitempty"`
	// FleetLock is the fleet's reboot lock while this node holds it: taken
	// before rebooting into an update, given back once the new slot
	// passed its health check or the node fell back.
	FleetLock *LockHold `json:"fleet_lock,omitempty"`
	// Seed is the node's rollout seed (0..2047, docs/rollout.md), drawn
	// once and kept for the life of the disk so the node keeps its place
	// in every rollout. nil until drawn; older files have none, and
	// older sealift versions ignore it.
	Seed *int `json:"seed,omitempty"`
	// Holds are the operator's holds on updates (skip a version, pin
	// one, pause), in HoldKinds order. Older files have none; sealift
	// versions from before holds ignore them (and drop them when they
	// save the state).
	Holds []Hold `json:"holds,omitempty"`
}

// LockHold records a held fleet reboot lock, so it is given back after
// the reboot it was taken for.
type LockHold struct {
	Group   string          `json:"group"`
	Slot    bootloader.Slot `json:"slot"` // the slot rebooted into
	Version string          `json:"version"`
	Since   time.Time       `json:"since"`
}

// New returns an empty state.
func New() *State {
	return &State{Schema: SchemaVersion, Slots: map[bootloader.Slot]*SlotRecord{}}
}

// Store loads and saves State.
type Store interface {
	Load() (*State, error)
	Save(*State) error
}

// Dir stores state.json in a directory.
type Dir string

// Load returns the saved state, or an empty one if none was saved yet.
func (d Dir) Load() (*State, error) {
	p := filepath.Join(string(d), FileName)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return New(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	return decode(b, p)
}

func decode(b []byte, where string) (*State, error) {
	s := New()
	if err := json.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("state file %s is corrupt: %w", where, err)
	}
	if s.Schema != SchemaVersion {
		return nil, fmt.Errorf("state file %s has schema %d, this sealift knows %d", where, s.Schema, SchemaVersion)
	}
	if s.Slots == nil {
		s.Slots = map[bootloader.Slot]*SlotRecord{}
	}
	return s, nil
}

// Save replaces the state file crash-safely.
func (d Dir) Save(s *State) error {
	if err := os.MkdirAll(string(d), 0o755); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(string(d), FileName), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

// OnESP stores the state file on the ESP (or any bootloader.FS), beside
// the boot flags and boot files it describes. The disk then carries its
// own state: the booted system, and sealift on a host working on the
// stopped disk image, read and write the same file.
type OnESP struct {
	FS   bootloader.FS
	Path string // e.g. "sealift/state.json"
}

// ESPPath is where OnESP keeps the state by default.
const ESPPath = "sealift/" + FileName

// Load returns the saved state, or an empty one if none was saved yet.
func (o OnESP) Load() (*State, error) {
	b, err := o.FS.ReadFile(o.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return New(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	return decode(b, "ESP:"+o.Path)
}

// Save replaces the state file through the FS's crash-safe WriteFile.
func (o OnESP) Save(s *State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := o.FS.MkdirAll(path.Dir(o.Path)); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := o.FS.WriteFile(o.Path, append(b, '\n')); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}
