// Package bootloader holds sealift's model of A/B boot flags and the
// transitions an updater makes on them. Backends (gptprio, grubenv, sdboot)
// translate the model to what a real bootloader reads and simulate what that
// bootloader does at the next boot.
//
// The model is the ChromeOS one, because it is the most expressive of the
// three: per slot a priority (0 = never boot), a try counter and a
// successful bit. A slot may boot when priority > 0 and it is successful or
// has tries left; the highest priority wins; booting a slot that is not yet
// successful spends one try.
package bootloader

import (
	"errors"
	"fmt"
	"sort"
)

// Slot names one of the two root slots.
type Slot string

const (
	SlotA Slot = "A"
	SlotB Slot = "B"
)

// Slots lists both slots in table order.
var Slots = []Slot{SlotA, SlotB}

// Other returns the other slot.
func (s Slot) Other() Slot {
	if s == SlotA {
		return SlotB
	}
	return SlotA
}

// Valid reports whether s is A or B.
func (s Slot) Valid() bool { return s == SlotA || s == SlotB }

// ParseSlot accepts "A", "B", "a" or "b".
func ParseSlot(v string) (Slot, error) {
	switch v {
	case "A", "a":
		return SlotA, nil
	case "B", "b":
		return SlotB, nil
	}
	return "", fmt.Errorf("unknown slot %q (want A or B)", v)
}

// Limits shared by every backend; gptprio's 4-bit fields set them.
const (
	MaxPriority = 15
	MaxTries    = 15
	// DefaultTries is how many boots a freshly installed slot gets before
	// the bootloader gives up on it.
	DefaultTries = 3
)

// SlotFlags is what a bootloader knows about one slot.
type SlotFlags struct {
	Priority   int  `json:"priority"`
	Tries      int  `json:"tries"`
	Successful bool `json:"successful"`
}

// Bootable reports whether a bootloader following the model may pick it.
func (f SlotFlags) Bootable() bool {
	return f.Priority > 0 && (f.Successful || f.Tries > 0)
}

// Flags is the boot state of both slots.
type Flags map[Slot]SlotFlags

// Clone returns a copy that can be changed freely.
func (f Flags) Clone() Flags {
	c := Flags{}
	for _, s := range Slots {
		c[s] = f[s]
	}
	return c
}

// Validate checks ranges so a backend never writes a value it cannot hold.
func (f Flags) Validate() error {
	for _, s := range Slots {
		v := f[s]
		if v.Priority < 0 || v.Priority > MaxPriority {
			return fmt.Errorf("slot %s: priority %d out of range 0-%d", s, v.Priority, MaxPriority)
		}
		if v.Tries < 0 || v.Tries > MaxTries {
			return fmt.Errorf("slot %s: tries %d out of range 0-%d", s, v.Tries, MaxTries)
		}
	}
	return nil
}

// Preferred returns the slot the model would choose, ignoring tries spent:
// the bootable slot with the highest priority, A winning ties (table order,
// as ChromeOS firmware does). ok is false when neither slot is bootable.
func (f Flags) Preferred() (Slot, bool) {
	best, found := Slot(""), false
	for _, s := range Slots {
		v := f[s]
		if !v.Bootable() {
			continue
		}
		if !found || v.Priority > f[best].Priority {
			best, found = s, true
		}
	}
	return best, found
}

// Order lists the slots with priority > 0, highest first, A first on a tie,
// as Preferred ranks them: the boot order a backend writes (grubenv's
// ORDER, sdboot's entry generations).
func (f Flags) Order() []Slot {
	var order []Slot
	for _, s := range Slots {
		if f[s].Priority > 0 {
			order = append(order, s)
		}
	}
	sort.SliceStable(order, func(i, j int) bool { return f[order[i]].Priority > f[order[j]].Priority })
	return order
}

// Decision is what a simulated bootloader did at one boot.
type Decision struct {
	// Slot booted; empty when nothing was bootable.
	Slot Slot `json:"slot,omitempty"`
	// Trial is true when the slot was not yet successful, so a try was spent.
	Trial bool `json:"trial"`
	// TriesLeft after this boot (only meaningful for a trial boot).
	TriesLeft int `json:"tries_left"`
	// After is the flag state the bootloader leaves behind.
	After Flags `json:"after"`
	// Note explains a choice that is not the plain rule (a fallback).
	Note string `json:"note,omitempty"`
}

// String renders the decision as users see it: "next boot: B, 2 tries left".
func (d Decision) String() string {
	switch {
	case d.Slot == "":
		return "next boot: no bootable slot"
	case d.Trial:
		s := fmt.Sprintf("next boot: %s (trial), %d %s left after it", d.Slot, d.TriesLeft, plural(d.TriesLeft, "try", "tries"))
		if d.Note != "" {
			s += " (" + d.Note + ")"
		}
		return s
	default:
		s := fmt.Sprintf("next boot: %s", d.Slot)
		if d.Note != "" {
			s += " (" + d.Note + ")"
		}
		return s
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// Backend is where a bootloader keeps its flags. Load always reads the
// medium afresh: bootloaders write flags behind our back on every trial boot.
type Backend interface {
	// Name is the backend's identifier as recorded on disk: gptprio, grubenv, sdboot.
	Name() string
	// Load reads the current flags.
	Load() (Flags, error)
	// Save writes flags in the order that keeps the disk bootable if
	// interrupted, and makes them durable before returning.
	Save(Flags) error
	// Simulate returns what the real bootloader would do at the next boot
	// given these flags, including the flags it writes back.
	Simulate(Flags) Decision
}

// Errors callers branch on.
var (
	ErrNotBootable   = errors.New("slot is not bootable")
	ErrNoPendingTry  = errors.New("no update is pending")
	ErrSlotIsRunning = errors.New("slot is the running slot")
)

// Plan is a pure transition on flags; Apply loads, transforms and saves.
type Plan func(Flags) (Flags, error)

// Apply re-reads the flags, applies the transition and saves the result.
// Flags are never cached across calls because a bootloader may have changed
// them since.
func Apply(b Backend, p Plan) (Flags, error) {
	cur, err := b.Load()
	if err != nil {
		return nil, fmt.Errorf("read boot flags (%s): %w", b.Name(), err)
	}
	next, err := p(cur.Clone())
	if err != nil {
		return nil, err
	}
	if err := next.Validate(); err != nil {
		return nil, fmt.Errorf("refusing to write boot flags: %w", err)
	}
	if err := b.Save(next); err != nil {
		return nil, fmt.Errorf("write boot flags (%s): %w", b.Name(), err)
	}
	return next, nil
}

// Initial is the state of a fresh disk with slot A installed and good.
func Initial(active Slot) Flags {
	return Flags{
		active:         {Priority: 2, Tries: 0, Successful: true},
		active.Other(): {},
	}
}

// Clear makes a slot unbootable (P0 T0 S0). sealift does this before it
// writes a single byte into the slot, so a torn write can never be booted.
func Clear(s Slot) Plan {
	return func(f Flags) (Flags, error) {
		f[s] = SlotFlags{}
		return f, nil
	}
}

// Trial makes s the next boot target with the given tries, not yet
// successful, and keeps the other slot bootable as the fallback. The
// fallback must be bootable, or a failing trial would leave nothing to boot.
func Trial(s Slot, tries int) Plan {
	return func(f Flags) (Flags, error) {
		if tries < 1 || tries > MaxTries {
			return nil, fmt.Errorf("tries %d out of range 1-%d", tries, MaxTries)
		}
		other := f[s.Other()]
		if !other.Bootable() {
			return nil, fmt.Errorf("cannot try slot %s: fallback slot %s is not bootable: %w", s, s.Other(), ErrNotBootable)
		}
		other.Priority = 1
		f[s.Other()] = other
		f[s] = SlotFlags{Priority: 2, Tries: tries}
		return f, nil
	}
}

// Provision makes s bootable with tries on a disk where no slot is
// bootable yet: the first install of a fresh disk, which has no fallback.
func Provision(s Slot, tries int) Plan {
	return func(f Flags) (Flags, error) {
		if tries < 1 || tries > MaxTries {
			return nil, fmt.Errorf("tries %d out of range 1-%d", tries, MaxTries)
		}
		if f[s.Other()].Bootable() {
			return nil, fmt.Errorf("slot %s is bootable: a new release into %s must be a trial with %s as fallback", s.Other(), s, s.Other())
		}
		f[s] = SlotFlags{Priority: 2, Tries: tries}
		return f, nil
	}
}

// MarkGood records that s booted and passed its health check: successful,
// highest priority. The other slot keeps its state as the fallback.
func MarkGood(s Slot) Plan {
	return func(f Flags) (Flags, error) {
		v := f[s]
		if v.Priority == 0 {
			return nil, fmt.Errorf("slot %s has priority 0 (cleared): %w", s, ErrNotBootable)
		}
		f[s] = SlotFlags{Priority: 2, Tries: 0, Successful: true}
		o := f[s.Other()]
		if o.Priority > 0 {
			o.Priority = 1
			f[s.Other()] = o
		}
		return f, nil
	}
}

// MarkBad records that s failed: no tries, not successful, priority 0, so
// the bootloader falls back to the other slot at the next boot.
func MarkBad(s Slot) Plan {
	return func(f Flags) (Flags, error) {
		if !f[s.Other()].Bootable() {
			return nil, fmt.Errorf("cannot mark slot %s bad: slot %s is not bootable either: %w", s, s.Other(), ErrNotBootable)
		}
		f[s] = SlotFlags{}
		return f, nil
	}
}

// Rollback makes the other slot of running the next boot target. The other
// slot must have booted successfully before; running stays bootable as its
// fallback.
func Rollback(running Slot) Plan {
	return func(f Flags) (Flags, error) {
		to := running.Other()
		t := f[to]
		if !t.Successful || t.Priority == 0 {
			return nil, fmt.Errorf("cannot roll back to slot %s: it holds no release that booted successfully: %w", to, ErrNotBootable)
		}
		t.Priority = 2
		f[to] = t
		r := f[running]
		if r.Priority > 0 {
			r.Priority = 1
			f[running] = r
		}
		return f, nil
	}
}

// Cancel undoes a Trial of s that has not been booted into yet: s becomes
// unbootable again and the other slot the target.
func Cancel(s Slot) Plan {
	return func(f Flags) (Flags, error) {
		v := f[s]
		if v.Successful || v.Tries == 0 || v.Priority == 0 {
			return nil, fmt.Errorf("slot %s has no trial boot pending: %w", s, ErrNoPendingTry)
		}
		o := f[s.Other()]
		if !o.Bootable() {
			return nil, fmt.Errorf("cannot cancel: slot %s is not bootable: %w", s.Other(), ErrNotBootable)
		}
		o.Priority = 2
		f[s.Other()] = o
		f[s] = SlotFlags{}
		return f, nil
	}
}

// SimulateModel is the ChromeOS selection rule on the model. Backends whose
// bootloader follows the rule exactly (gptprio) use it directly; the others
// implement the rule of their own bootloader and are tested against this.
func SimulateModel(f Flags) Decision {
	after := f.Clone()
	s, ok := f.Preferred()
	if !ok {
		return Decision{After: after}
	}
	v := after[s]
	d := Decision{Slot: s, After: after}
	if !v.Successful {
		v.Tries--
		after[s] = v
		d.Trial = true
		d.TriesLeft = v.Tries
	}
	return d
}
