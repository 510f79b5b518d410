package updater

import (
	"fmt"

	"sealift/bootloader"
	"sealift/updater/state"
)

// SlotStatus is one slot as status shows it.
type SlotStatus struct {
	Slot     bootloader.Slot      `json:"slot"`
	Flags    bootloader.SlotFlags `json:"flags"`
	Bootable bool                 `json:"bootable"`
	Running  bool                 `json:"running"`
	Record   *state.SlotRecord    `json:"release,omitempty"`
}

// Status is everything `sealift status` shows.
type Status struct {
	Backend string          `json:"boot_backend"`
	Running bootloader.Slot `json:"running,omitempty"`
	// Simulated is true when Running comes from a simulated boot of an
	// image rather than from the kernel.
	Simulated bool                `json:"running_simulated,omitempty"`
	Slots     []SlotStatus        `json:"slots"`
	NextBoot  bootloader.Decision `json:"next_boot"`
	Pending   *state.Pending      `json:"pending,omitempty"`
	Last      *state.Outcome      `json:"last,omitempty"`
	// Failed releases are not installed again ('sealift retry' allows it).
	Failed map[string]*state.Outcome `json:"failed,omitempty"`
	// Notes explain states that need attention, in plain words.
	Notes []string `json:"notes,omitempty"`
	// FleetLock is the fleet's reboot lock while this node holds it.
	FleetLock *state.LockHold `json:"fleet_lock,omitempty"`
	// Recent are the newest events of the history ('sealift events').
	Recent []state.Event `json:"recent_events,omitempty"`
	// Holds are the operator's holds in force ('sealift hold list').
	Holds []state.Hold `json:"holds,omitempty"`
}

// recentEvents is how many events Status carries.
const recentEvents = 5

// Status reads flags and state afresh and describes them.
func (u *Updater) Status() (*Status, error) {
	st, err := u.State.Load()
	if err != nil {
		return nil, err
	}
	flags, err := u.Boot.Load()
	if err != nil {
		return nil, fmt.Errorf("read boot flags: %w", err)
	}
	running, ok, err := u.running(st)
	if err != nil {
		return nil, err
	}
	s := &Status{Backend: u.Boot.Name(), Pending: st.Pending, Last: st.Last, Failed: st.Failed, NextBoot: u.Boot.Simulate(flags), FleetLock: st.FleetLock}
	s.Recent = st.Events[max(0, len(st.Events)-recentEvents):]
	s.Holds = state.ActiveHolds(st.Holds, u.now())
	if ok {
		s.Running = running
		s.Simulated = u.Runtime == nil
	}
	for _, sl := range bootloader.Slots {
		s.Slots = append(s.Slots, SlotStatus{
			Slot: sl, Flags: flags[sl], Bootable: flags[sl].Bootable(),
			Running: ok && sl == running, Record: st.Slots[sl],
		})
	}
	if p := st.Pending; p != nil {
		if p.Phase == state.PhaseWriting && flags[p.Slot].Bootable() {
			// The flip happened but recording it did not: the flags are
			// the truth.
			cp := *p
			cp.Phase = state.PhaseTrial
			p, s.Pending = &cp, &cp
		}
		switch {
		case p.Phase == state.PhaseWriting:
			s.Notes = append(s.Notes, fmt.Sprintf("the update to %s was interrupted while writing slot %s; the slot is not bootable. Install again, or 'sealift cancel' to forget it", p.Version, p.Slot))
		case p.Phase == state.PhaseTrial && !flags[p.Slot].Bootable():
			why := "tries spent or marked bad"
			if l := st.Last; l != nil && l.Result == "marked-bad" && l.Slot == p.Slot {
				why = "marked bad: " + l.Reason
			}
			s.Notes = append(s.Notes, fmt.Sprintf("%s in slot %s is no longer bootable (%s): the next boot falls back to %s, where 'sealift boot-check' records it", p.Version, p.Slot, why, p.Slot.Other()))
		case p.Phase == state.PhaseTrial && ok && running == p.Slot:
			s.Notes = append(s.Notes, fmt.Sprintf("running %s in slot %s on trial: 'sealift mark-good' keeps it, otherwise the bootloader falls back", p.Version, p.Slot))
		case p.Phase == state.PhaseTrial:
			s.Notes = append(s.Notes, fmt.Sprintf("%s in slot %s is staged; it is tried at the next boot ('sealift cancel' undoes that)", p.Version, p.Slot))
		}
	}
	if n := u.stagedHeld(st, u.now()); n != "" {
		s.Notes = append(s.Notes, n)
	}
	if s.NextBoot.Slot == "" {
		s.Notes = append(s.Notes, "no slot is bootable: install a release")
	}
	return s, nil
}

// loadRunning loads the state and the running slot, for operations that
// act on the running system.
func (u *Updater) loadRunning() (*state.State, bootloader.Slot, error) {
	st, err := u.State.Load()
	if err != nil {
		return nil, "", err
	}
	running, err := u.requireRunning(st)
	return st, running, err
}

// MarkGood records that the running slot is healthy: the bootloader keeps
// booting it, and a pending update into it is complete.
func (u *Updater) MarkGood() (bootloader.Slot, error) {
	st, running, err := u.loadRunning()
	if err != nil {
		return "", err
	}
	if p := st.Pending; p != nil && p.Slot == running {
		st.Last = &state.Outcome{Slot: running, Version: p.Version, Result: "good", At: u.now()}
		st.Pending = nil
		st.Record(state.Event{At: u.now(), Kind: state.EventMarkedGood, Slot: running, Version: p.Version,
			Message: fmt.Sprintf("%s in slot %s passed its trial and is kept", p.Version, running)})
	}
	return running, u.transition(bootloader.MarkGood(running), st)
}

// MarkBad records that the running slot failed, so the next boot falls
// back to the other slot.
func (u *Updater) MarkBad(reason string) (bootloader.Slot, error) {
	st, running, err := u.loadRunning()
	if err != nil {
		return "", err
	}
	ver := ""
	if r := st.Slots[running]; r != nil {
		ver = r.Version
	}
	st.Last = &state.Outcome{Slot: running, Version: ver, Result: "marked-bad", Reason: reason, At: u.now()}
	st.Record(state.Event{At: u.now(), Kind: state.EventMarkedBad, Slot: running, Version: ver,
		Message: fmt.Sprintf("slot %s marked bad: %s", running, reason)})
	return running, u.transition(bootloader.MarkBad(running), st)
}

// RollbackResult is what Rollback did.
type RollbackResult struct {
	To bootloader.Slot `json:"next_boot"`
	// Skip is the hold that keeps the node from taking the release it
	// rolled back from again; nil when the slots hold the same version.
	Skip *state.Hold `json:"skip,omitempty"`
}

// Rollback makes the other slot, which must have booted successfully
// before, the next boot target. The running slot stays as its fallback.
// The release rolled back from is skipped from then on (a hold the
// operator clears), so an agent does not take it again.
func (u *Updater) Rollback(a Actor) (*RollbackResult, error) {
	st, running, err := u.loadRunning()
	if err != nil {
		return nil, err
	}
	to := running.Other()
	ver, from := "", ""
	if r := st.Slots[to]; r != nil {
		ver = r.Version
	}
	if r := st.Slots[running]; r != nil {
		from = r.Version
	}
	if st.Pending != nil && st.Pending.Slot == to {
		// Rolling back onto a slot that holds an unfinished update would
		// boot it untested; Rollback below refuses a non-successful slot.
		st.Pending = nil
	}
	why := "operator rollback from slot " + string(running)
	if a.Reason != "" {
		why += ": " + a.Reason
	}
	now := u.now()
	st.Last = &state.Outcome{Slot: to, Version: ver, Result: "rolled-back", Reason: why, At: now}
	st.Record(state.Event{At: now, Kind: state.EventRolledBack, Slot: to, Version: ver,
		Message: fmt.Sprintf("operator rollback: the next boot runs %s from slot %s instead of slot %s", ver, to, running)})
	res := &RollbackResult{To: to}
	if from != "" && from != ver {
		res.Skip = skipAfter(st, from, "rolled back from it", a, now)
	}
	if err := u.transition(bootloader.Rollback(running), st); err != nil {
		return nil, err
	}
	return res, nil
}

// CancelResult is what Cancel did: the update it undid and, for a staged
// one, the hold that keeps the node from staging it again (none after
// CancelStaged: a recall needs no skip).
type CancelResult struct {
	state.Pending
	Skip *state.Hold `json:"skip,omitempty"`
}

// Cancel undoes a staged update that has not been booted: its slot becomes
// unbootable again, and its release is skipped from then on (a hold the
// operator clears), so an agent does not stage it again. An update
// interrupted while writing is forgotten, and not skipped: it never was
// staged.
func (u *Updater) Cancel(a Actor) (*CancelResult, error) {
	st, err := u.State.Load()
	if err != nil {
		return nil, err
	}
	return u.cancel(st, a, true)
}

// cancel is Cancel on a loaded state. skip says whether a staged release
// is skipped from then on: an operator's cancel is, a cancel sealift
// decides on from the signed metadata (CancelStaged) is not.
func (u *Updater) cancel(st *state.State, a Actor, skip bool) (*CancelResult, error) {
	p := st.Pending
	if p == nil {
		return nil, ErrNoPending
	}
	if r, ok, err := u.running(st); err != nil {
		return nil, err
	} else if ok && r == p.Slot {
		return nil, fmt.Errorf("the update to %s is already running in slot %s: use 'sealift mark-bad' or 'sealift rollback'", p.Version, p.Slot)
	}
	now := u.now()
	st.Pending = nil
	st.Last = &state.Outcome{Slot: p.Slot, Version: p.Version, Result: "cancelled", Reason: a.Reason, At: now}
	msg := fmt.Sprintf("the update to %s in slot %s was cancelled (it was %s)", p.Version, p.Slot, p.Phase)
	if a.By != "" {
		msg += " by " + a.By
	}
	if a.Reason != "" {
		msg += ": " + a.Reason
	}
	st.Record(state.Event{At: now, Kind: state.EventCancelled, Slot: p.Slot, Version: p.Version, Message: msg})
	res := &CancelResult{Pending: *p}
	if skip && p.Phase == state.PhaseTrial {
		res.Skip = skipAfter(st, p.Version, "its staged update was cancelled", a, now)
	}
	delete(st.Slots, p.Slot)
	// Clear works from any phase: a half-written slot is already clear,
	// a staged one becomes so. Either way the other slot is untouched.
	if err := u.transition(bootloader.Clear(p.Slot), st); err != nil {
		return nil, err
	}
	return res, nil
}

// SimulateBoot returns what the bootloader would do at the next boot. With
// apply it also writes the flags the bootloader leaves behind and records
// the chosen slot as running; that is only allowed on a disk that is not
// booted, where it stands in for a real reboot.
func (u *Updater) SimulateBoot(apply bool) (bootloader.Decision, error) {
	flags, err := u.Boot.Load()
	if err != nil {
		return bootloader.Decision{}, fmt.Errorf("read boot flags: %w", err)
	}
	d := u.Boot.Simulate(flags)
	if !apply {
		return d, nil
	}
	if u.Runtime != nil {
		return d, fmt.Errorf("%w: refusing to simulate a boot on the disk of the running system", ErrBadInput)
	}
	if d.Slot == "" {
		return d, fmt.Errorf("no bootable slot: %w", bootloader.ErrNotBootable)
	}
	st, err := u.State.Load()
	if err != nil {
		return d, err
	}
	st.LastBoot = d.Slot
	after := d.After
	return d, u.transition(func(bootloader.Flags) (bootloader.Flags, error) { return after, nil }, st)
}

// Events returns the recorded history after event number after (0: all
// that is kept), oldest first.
func (u *Updater) Events(after uint64) ([]state.Event, error) {
	st, err := u.State.Load()
	if err != nil {
		return nil, err
	}
	return st.EventsAfter(after), nil
}

// Record adds an event that is not part of another change (the agent's
// checks, reboots and locks) to the history. At defaults to now.
func (u *Updater) Record(e state.Event) error {
	st, err := u.State.Load()
	if err != nil {
		return err
	}
	if e.At.IsZero() {
		e.At = u.now()
	}
	st.Record(e)
	return u.State.Save(st)
}

// SetFleetLock records (or, with nil, forgets) that this node holds the
// fleet's reboot lock.
func (u *Updater) SetFleetLock(h *state.LockHold) error {
	st, err := u.State.Load()
	if err != nil {
		return err
	}
	st.FleetLock = h
	return u.State.Save(st)
}
