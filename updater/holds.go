package updater

import (
	"errors"
	"fmt"
	"time"

	"sealift/updater/state"
)

// Actor is who asks for an operator action and why. It is recorded with
// the action and with the hold the action leaves (cancel, rollback).
type Actor struct {
	By     string `json:"by,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// ErrNoHold: there is no such hold to clear.
var ErrNoHold = errors.New("no such hold")

// HoldRequest asks for an operator hold (docs/agent.md, "Operator holds").
type HoldRequest struct {
	Kind    state.HoldKind `json:"kind"`
	Version string         `json:"version,omitempty"` // skip, pin
	Until   time.Time      `json:"until,omitzero"`    // pause; zero: until cleared
	Actor
}

// HoldChange is what SetHold did.
type HoldChange struct {
	Hold state.Hold `json:"hold"`
	// Replaced is the hold the new one took the place of: the previous
	// pause or pin, or an earlier skip of the same version.
	Replaced *state.Hold `json:"replaced,omitempty"`
	// Note says what the hold means for an update already staged.
	Note string `json:"note,omitempty"`
}

// SetHold records an operator hold, replacing the pause or pin, or the
// skip of the same version, already set.
func (u *Updater) SetHold(r HoldRequest) (*HoldChange, error) {
	now := u.now()
	switch r.Kind {
	case state.HoldSkip, state.HoldPin:
		if r.Version == "" {
			return nil, fmt.Errorf("%w: a %s hold needs a VERSION", ErrBadInput, r.Kind)
		}
		if !r.Until.IsZero() {
			return nil, fmt.Errorf("%w: only a pause has an end; a %s lasts until it is cleared", ErrBadInput, r.Kind)
		}
	case state.HoldPause:
		if r.Version != "" {
			return nil, fmt.Errorf("%w: a pause holds every release; skip or pin name one", ErrBadInput)
		}
		if !r.Until.IsZero() && !r.Until.After(now) {
			return nil, fmt.Errorf("%w: the pause would end at %s, which is not in the future", ErrBadInput, r.Until.UTC().Format(time.RFC3339))
		}
	default:
		return nil, fmt.Errorf("%w: hold kind %q: want skip, pin or pause", ErrBadInput, r.Kind)
	}
	st, err := u.State.Load()
	if err != nil {
		return nil, err
	}
	u.expireHolds(st, now)
	h := state.Hold{Kind: r.Kind, Version: r.Version, Reason: r.Reason, By: r.By, Since: now}
	if !r.Until.IsZero() {
		h.Until = r.Until.UTC()
	}
	ch := &HoldChange{Hold: h, Replaced: st.SetHold(h)}
	recordHoldSet(st, h, now)
	ch.Note = u.stagedHeld(st, now)
	if err := u.State.Save(st); err != nil {
		return nil, err
	}
	return ch, nil
}

func recordHoldSet(st *state.State, h state.Hold, now time.Time) {
	st.Record(state.Event{At: now, Kind: state.EventHoldSet, Version: h.Version,
		Message: fmt.Sprintf("hold %s %s; %s", h.Name(), h.Origin(), h.Effect())})
}

// ClearHolds lifts the holds of kind (all holds when kind is empty); a
// skip is lifted for version only. ErrNoHold when there is none.
func (u *Updater) ClearHolds(kind state.HoldKind, version string, a Actor) ([]state.Hold, error) {
	what := "hold"
	switch kind {
	case "":
		if version != "" {
			return nil, fmt.Errorf("%w: a version names a skip; clear 'skip %s'", ErrBadInput, version)
		}
	case state.HoldSkip:
		if version == "" {
			return nil, fmt.Errorf("%w: clearing a skip needs its VERSION", ErrBadInput)
		}
		what = "skip " + version
	case state.HoldPin, state.HoldPause:
		if version != "" {
			return nil, fmt.Errorf("%w: a %s is cleared without a version", ErrBadInput, kind)
		}
		what = string(kind)
	default:
		return nil, fmt.Errorf("%w: hold kind %q: want skip, pin or pause", ErrBadInput, kind)
	}
	now := u.now()
	st, err := u.State.Load()
	if err != nil {
		return nil, err
	}
	expired := u.expireHolds(st, now)
	gone := st.ClearHolds(func(h state.Hold) bool {
		return kind == "" || (h.Kind == kind && (kind != state.HoldSkip || h.Version == version))
	})
	if len(gone) == 0 {
		if expired {
			// The pause had ended anyway: keep the record of that.
			if err := u.State.Save(st); err != nil {
				return nil, err
			}
		}
		return nil, fmt.Errorf("%w: there is no %s to clear", ErrNoHold, what)
	}
	by := a.By
	if by == "" {
		by = "the operator"
	}
	for _, h := range gone {
		msg := fmt.Sprintf("hold %s (%s) cleared by %s", h.Name(), h.Origin(), by)
		if a.Reason != "" {
			msg += ": " + a.Reason
		}
		st.Record(state.Event{At: now, Kind: state.EventHoldCleared, Version: h.Version, Message: msg})
	}
	if err := u.State.Save(st); err != nil {
		return nil, err
	}
	return gone, nil
}

// Holds returns the holds in force now.
func (u *Updater) Holds() ([]state.Hold, error) {
	st, err := u.State.Load()
	if err != nil {
		return nil, err
	}
	return state.ActiveHolds(st.Holds, u.now()), nil
}

// expireHolds drops a pause that has ended by itself and records that;
// it says whether it did. The caller saves the state.
func (u *Updater) expireHolds(st *state.State, now time.Time) bool {
	gone := st.ClearHolds(func(h state.Hold) bool { return h.Expired(now) })
	for _, h := range gone {
		st.Record(state.Event{At: now, Kind: state.EventHoldExpired,
			Message: fmt.Sprintf("hold %s (%s) ended", h.Name(), h.Origin())})
	}
	return len(gone) > 0
}

// stagedHeld says, when an update is staged and a hold in force keeps
// the agent from rebooting into it, what that means; "" otherwise.
func (u *Updater) stagedHeld(st *state.State, now time.Time) string {
	p := st.Pending
	if p == nil || p.Phase != state.PhaseTrial {
		return ""
	}
	if r, ok, err := u.running(st); err != nil || (ok && r == p.Slot) {
		return "" // running it already (or unknown): nothing is staged
	}
	_, why := state.HoldAgainst(st.Holds, p.Version, now)
	if why == "" {
		return ""
	}
	return fmt.Sprintf("%s is staged in slot %s, but the agent does not reboot into it: %s; a reboot for another reason still tries it, 'sealift cancel' undoes the staging",
		p.Version, p.Slot, why)
}

// skipAfter records that version is skipped because of an operator
// action (a cancel, a rollback) and returns the hold.
func skipAfter(st *state.State, version, why string, a Actor, now time.Time) *state.Hold {
	reason := why
	if a.Reason != "" {
		reason += ": " + a.Reason
	}
	h := state.Hold{Kind: state.HoldSkip, Version: version, Reason: reason, By: a.By, Since: now}
	st.SetHold(h)
	recordHoldSet(st, h, now)
	return &h
}
