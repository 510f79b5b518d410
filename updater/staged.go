package updater

import (
	"fmt"
	"time"

	"sealift/bootloader"
	"sealift/signing"
	"sealift/updater/rollout"
	"sealift/updater/state"
)

// StagedAction is what to do with an update that is staged (flipped,
// not booted) in the light of freshly refreshed signed metadata.
type StagedAction string

const (
	// StagedReboot: the release may still be taken by this node; reboot
	// into it as the reboot policy says.
	StagedReboot StagedAction = "reboot"
	// StagedWait: not now, but possibly later (a halted rollout, a wave
	// that no longer reaches the node, a plan this sealift cannot use):
	// keep it staged and look again.
	StagedWait StagedAction = "wait"
	// StagedCancel: never (recalled, no longer signed) or superseded by
	// a newer release this node may take now: undo the staging and let
	// the next check decide.
	StagedCancel StagedAction = "cancel"
)

// StagedVerdict is a check's answer about the update staged on the node.
type StagedVerdict struct {
	Version string          `json:"version"`
	Slot    bootloader.Slot `json:"slot"`
	Action  StagedAction    `json:"action"`
	Reason  string          `json:"reason"`
	// Rollout is where the node stands in the staged release's rollout
	// (nil without a plan): Rollout.At says when a wait may end.
	Rollout *rollout.Eligibility `json:"rollout,omitempty"`
}

// judgeStaged decides whether the staged version may still be booted,
// from the signed releases of the node's variant and arch (all, recalled
// included) at now. take is what the check would take (nil: nothing);
// a newer one replaces a staged release that may not be booted now, so
// a halted release does not keep the node from a fix. An operator's hold
// against the staged version (holds: those in force) makes a verdict
// that is not a cancel a wait: the hold is the operator's to lift, and
// the agent does not reboot into a held release (docs/agent.md). A
// recalled or replaced release is still cancelled: no hold makes it
// worth booting.
func judgeStaged(all []Release, version string, slot bootloader.Slot, take *Release, holds []state.Hold, seed int, now time.Time) StagedVerdict {
	v := StagedVerdict{Version: version, Slot: slot}
	var r *Release
	for i := range all {
		if all[i].Meta.Version == version {
			r = &all[i]
			break
		}
	}
	switch {
	case r == nil:
		// Nothing vouches for it any more; waiting could last forever
		// and keeps the node from checking for anything else.
		v.Action, v.Reason = StagedCancel, fmt.Sprintf("%s is no longer a signed release for this node", version)
		return v
	case r.Meta.Recalled:
		v.Action, v.Reason = StagedCancel, fmt.Sprintf("%s was recalled", version)
		return v
	}
	e, wait := availability(*r, seed, now)
	v.Rollout = e
	switch {
	case wait == "":
		v.Action, v.Reason = StagedReboot, fmt.Sprintf("%s may still be taken by this node", version)
	case take != nil && CompareVersions(take.Meta.Version, version) > 0:
		v.Action = StagedCancel
		v.Reason = fmt.Sprintf("%s may not be taken by this node now (%s), and the newer %s may", version, wait, take.Meta.Version)
	default:
		v.Action, v.Reason = StagedWait, fmt.Sprintf("%s may not be taken by this node now: %s", version, wait)
	}
	if _, why := state.HoldAgainst(holds, version, now); why != "" && v.Action != StagedCancel {
		if v.Action == StagedReboot {
			v.Reason = fmt.Sprintf("%s is not rebooted into while an operator's hold is in force", version)
		}
		v.Action, v.Reason = StagedWait, v.Reason+"; "+why
	}
	return v
}

// stagedPending is the update staged in the state that the running
// system has not booted yet; nil when there is none.
func (u *Updater) stagedPending(st *state.State) (*state.Pending, error) {
	p := st.Pending
	if p == nil || p.Phase != state.PhaseTrial {
		return nil, nil
	}
	running, ok, err := u.running(st)
	if err != nil {
		return nil, err
	}
	if ok && running == p.Slot {
		return nil, nil // booted: on trial, the health check decides
	}
	return p, nil
}

// judgeStagedIn judges the update staged in st, if any, against the
// refreshed targets and the holds in force (see judgeStaged).
func (u *Updater) judgeStagedIn(st *state.State, targets map[string]signing.TargetInfo, o CheckOptions, take *Release, holds []state.Hold, seed int) (*StagedVerdict, error) {
	p, err := u.stagedPending(st)
	if err != nil || p == nil {
		return nil, err
	}
	all, _, err := releases(targets, o)
	if err != nil {
		return nil, err
	}
	v := judgeStaged(all, p.Version, p.Slot, take, holds, seed, u.now())
	return &v, nil
}

// CancelStaged undoes the staged update to version because the signed
// metadata says it may not be booted (a StagedCancel verdict); a.By is
// who acts on the verdict (the agent, 'sealift update --reboot') and
// a.Reason the verdict's reason, recorded like an operator's cancel. It
// refuses when the pending update is another one, so it never undoes an
// update its caller did not judge.
//
// Unlike Cancel it leaves no skip hold: a recall is fleet-wide already
// and says so in the signed metadata, where an un-recall lifts it; a
// skip would outlive that and keep this node alone from the release
// until an operator cleared it. A replaced release is left behind by the
// newer one anyway.
func (u *Updater) CancelStaged(version string, a Actor) (*CancelResult, error) {
	st, err := u.State.Load()
	if err != nil {
		return nil, err
	}
	p, err := u.stagedPending(st)
	if err != nil {
		return nil, err
	}
	if p == nil || p.Version != version {
		return nil, fmt.Errorf("%w: %s is not the staged update", ErrNoPending, version)
	}
	return u.cancel(st, a, false)
}
