package updater

import (
	"errors"
	"fmt"
	"io/fs"

	"sealift/bootloader"
	"sealift/updater/state"
)

// Causes of a fallback, as boot-check records them.
const (
	CauseMarkedBad     = "marked bad (its health check failed)"
	CauseTriesSpent    = "tries exhausted: the new slot was never marked good (its kernel did not load or never came up, or its health check never passed)"
	CauseNotBootable   = "not bootable: the slot's boot files are missing from the ESP"
	CauseBootloaderSay = "the bootloader chose the old slot"
	// CauseLoadFailed starts the cause when GRUB recorded that it could
	// not load the slot's kernel or initrd (loadFailedCause).
	CauseLoadFailed = "not bootable: GRUB could not load the slot's"
)

// loadFailures is a backend whose bootloader records the slot whose kernel
// or initrd it could not load (grubenv: the generated grub.cfg does,
// before it reboots).
type loadFailures interface {
	LoadFailure() (slot bootloader.Slot, file string, err error)
}

// loadFailedCause explains a fallback after GRUB failed to load file
// (vmlinuz, initrd.img) of slot s.
func loadFailedCause(s bootloader.Slot, file string) string {
	what := "kernel"
	if file == bootloader.InitrdName {
		what = "initrd"
	}
	return fmt.Sprintf("%s %s (%s/%s on the ESP is not a file it can start, or is damaged); each try ended in a reboot until none were left",
		CauseLoadFailed, what, bootloader.SlotDir(s), file)
}

// BootCheck is what boot-check found.
type BootCheck struct {
	Running bootloader.Slot `json:"running"`
	// Result is "no-update", "trial" (the new slot runs, on probation),
	// "rolled-back" (the old slot runs although the new one was meant to),
	// or "interrupted" (a write never finished).
	Result  string         `json:"result"`
	Outcome *state.Outcome `json:"outcome,omitempty"`
}

// BootCheck runs early at every boot. It compares the running slot with
// the pending update: if the new slot was meant to boot and the old one
// runs, it records the rollback and its cause, marks the release failed so
// it is not tried again, and clears the pending update.
func (u *Updater) BootCheck() (*BootCheck, error) {
	st, running, err := u.loadRunning()
	if err != nil {
		return nil, err
	}
	bc := &BootCheck{Running: running, Result: "no-update"}
	p := st.Pending
	if p == nil || p.Phase == state.PhaseWriting || p.Slot == running {
		switch {
		case p == nil:
		case p.Phase == state.PhaseWriting:
			bc.Result = "interrupted"
		default:
			bc.Result = "trial"
		}
		if u.Runtime != nil {
			// Record the real boot, so sealift on a host working on the
			// stopped disk knows which slot ran last.
			st.LastBoot = running
			ver := ""
			if r := st.Slots[running]; r != nil {
				ver = r.Version
			}
			msg := fmt.Sprintf("booted %s from slot %s", ver, running)
			switch bc.Result {
			case "trial":
				msg += " on trial: its health check decides"
			case "interrupted":
				msg += fmt.Sprintf("; the update to %s in slot %s was interrupted while writing", p.Version, p.Slot)
			}
			// A good slot GRUB could not load is no longer good, with
			// nothing pending to explain it: say so here.
			if lf, ok := u.Boot.(loadFailures); ok {
				if slot, file, err := lf.LoadFailure(); err == nil && slot == running.Other() {
					msg += "; " + loadFailedCause(slot, file)
				}
			}
			st.Record(state.Event{At: u.now(), Kind: state.EventBooted, Slot: running, Version: ver, Message: msg})
			return bc, u.State.Save(st)
		}
		return bc, nil
	}
	flags, err := u.Boot.Load()
	if err != nil {
		return nil, fmt.Errorf("read boot flags: %w", err)
	}
	cause := u.fallbackCause(flags[p.Slot], p.Slot)
	if l := st.Last; cause == CauseMarkedBad && l != nil && l.Result == "marked-bad" && l.Slot == p.Slot && l.Reason != "" {
		cause += ": " + l.Reason // what the health check (or operator) said
	}
	o := &state.Outcome{Slot: p.Slot, Version: p.Version, Result: "rolled-back", Reason: cause, At: u.now()}
	if st.Failed == nil {
		st.Failed = map[string]*state.Outcome{}
	}
	st.Failed[p.Version] = o
	st.Last = o
	st.Pending = nil
	if u.Runtime != nil {
		st.LastBoot = running
	}
	bc.Result, bc.Outcome = "rolled-back", o
	st.Record(state.Event{At: u.now(), Kind: state.EventFellBack, Slot: p.Slot, Version: p.Version,
		Message: fmt.Sprintf("%s in slot %s did not stay booted, slot %s runs: %s; %s will not be installed again until 'sealift retry %s'",
			p.Version, p.Slot, running, cause, p.Version, p.Version)})
	// The failed slot is cleared so that nothing boots it by accident
	// later; the running slot stays as it is.
	return bc, u.transition(bootloader.Clear(p.Slot), st)
}

// fallbackCause explains why the bootloader did not run the pending slot.
func (u *Updater) fallbackCause(f bootloader.SlotFlags, s bootloader.Slot) string {
	esp, err := u.Disk.ESP()
	if err == nil {
		if _, err := bootloader.ReadBootEntry(esp, s); errors.Is(err, fs.ErrNotExist) {
			return CauseNotBootable
		}
	}
	if lf, ok := u.Boot.(loadFailures); ok {
		// Recorded at the last attempt of s: GRUB clears it when s loads.
		if slot, file, err := lf.LoadFailure(); err == nil && slot == s {
			return loadFailedCause(s, file)
		}
	}
	switch {
	case f.Priority == 0 && !f.Successful && f.Tries == 0:
		// MarkBad writes exactly this; Clear does too, but a pending trial
		// is only cleared by cancel, which also drops the pending record.
		return CauseMarkedBad
	case !f.Successful && f.Tries == 0:
		return CauseTriesSpent
	}
	return CauseBootloaderSay
}

// ClearFailed forgets that a release failed, so it may be installed again.
func (u *Updater) ClearFailed(version string) error {
	st, err := u.State.Load()
	if err != nil {
		return err
	}
	if _, ok := st.Failed[version]; !ok {
		return fmt.Errorf("%w: release %s is not marked failed", ErrBadInput, version)
	}
	delete(st.Failed, version)
	st.Record(state.Event{At: u.now(), Kind: state.EventRetry, Version: version,
		Message: fmt.Sprintf("release %s may be installed again", version)})
	return u.State.Save(st)
}
