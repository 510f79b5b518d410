// Package agent is sealift's long-running node service: it checks for
// releases on an interval, stages them when the download policy allows,
// reboots into them when the reboot policy allows (a maintenance window,
// the fleet's reboot lock, or both), and gives the fleet lock back once
// the new slot has been judged by its health check or the node fell back.
// An operator's holds (skip, pin, pause), read with the node's status at
// every step, keep it from taking or rebooting into what they forbid.
// Right before a planned reboot it refreshes the signed metadata and
// judges the staged release again: halted, it waits; recalled or
// replaced, it cancels the staging.
//
// The agent decides; what it does to the node goes through small
// interfaces (Node, Rebooter, Locker, Clock) so tests drive it with fakes
// and a fake clock. Step is one decision; Run repeats it.
package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"sealift/updater"
	"sealift/updater/schedule"
	"sealift/updater/state"
)

// Node is what the agent does to this node. The CLI implements it by
// opening the disk for each call, so the disk lock is held only while an
// operation runs and commands in between see a consistent disk.
type Node interface {
	Status(ctx context.Context) (*updater.Status, error)
	Check(ctx context.Context) (*updater.CheckResult, error)
	// Update checks and, when there is a release to take, downloads,
	// writes and stages it; updater.ErrNoRelease when there is none.
	Update(ctx context.Context) (*updater.CheckResult, *updater.InstallResult, error)
	// Record adds an event to the node's history.
	Record(e state.Event) error
	// SetFleetLock persists (or, with nil, forgets) a held fleet lock, so
	// that it is given back after the reboot it was taken for.
	SetFleetLock(h *state.LockHold) error
	// CancelStaged undoes the staged update to version, which the signed
	// metadata says may not be booted, recording who and why; unlike an
	// operator's cancel it leaves no skip hold
	// (updater.(*Updater).CancelStaged).
	CancelStaged(ctx context.Context, version string, a updater.Actor) error
}

// Rebooter restarts the machine. It returns once the reboot is under way.
type Rebooter interface {
	Reboot(ctx context.Context) error
}

// Locker is the fleet's reboot lock (FleetLock). Lock returns nil only
// when the lock is granted; ErrLockBusy (wrapped) when the fleet has no
// slot free now; any other error is a failure to ask.
type Locker interface {
	Lock(ctx context.Context) error
	Unlock(ctx context.Context) error
}

// ActorName is how the agent names itself as the one who acted
// (updater.Actor.By) in what it does to the node on its own: the cancel
// of a recalled or replaced staged update.
const ActorName = "sealift agent"

// ErrLockBusy: the fleet lock is held by as many nodes as it allows.
var ErrLockBusy = errors.New("fleet lock busy")

// Clock is the agent's time source.
type Clock interface {
	Now() time.Time
}

// Strategy is when a staged update may reboot the node.
type Strategy string

const (
	// Immediate reboots as soon as an update is staged.
	Immediate Strategy = "immediate"
	// Window reboots only inside a maintenance window.
	Window Strategy = "window"
	// FleetLock reboots once the fleet lock is granted (and inside a
	// window, when windows are given too).
	FleetLock Strategy = "fleetlock"
	// Manual never reboots: an operator (or another tool) does.
	Manual Strategy = "manual"
)

// Policy is what the agent may do when.
type Policy struct {
	// Interval between checks, plus a random share of Jitter so a fleet
	// does not ask the registry all at once.
	Interval, Jitter time.Duration
	// Download windows: when releases may be downloaded and written. Empty
	// means any time (the usual choice: staging is harmless, only the
	// reboot disturbs workloads).
	Download schedule.Windows
	// Reboot strategy, its windows (Window; optional with FleetLock), and
	// the fleet lock group (FleetLock).
	Reboot        Strategy
	RebootWindows schedule.Windows
	LockGroup     string
}

// Validate checks that the policy is usable.
func (p Policy) Validate() error {
	if p.Interval <= 0 {
		return fmt.Errorf("agent interval must be positive, got %s", p.Interval)
	}
	if p.Jitter < 0 {
		return fmt.Errorf("agent jitter must not be negative, got %s", p.Jitter)
	}
	switch p.Reboot {
	case Immediate, Manual:
	case Window:
		if len(p.RebootWindows) == 0 {
			return errors.New("reboot strategy \"window\" needs at least one reboot window")
		}
	case FleetLock:
		if p.LockGroup == "" {
			return errors.New("reboot strategy \"fleetlock\" needs a group")
		}
	default:
		return fmt.Errorf("reboot strategy %q: want immediate, window, fleetlock or manual", p.Reboot)
	}
	return nil
}

// Waits the agent uses besides the check interval.
const (
	// trialPoll: how often to look whether a slot on trial was judged.
	trialPoll = time.Minute
	// lockPoll: how often to ask again for a busy fleet lock.
	lockPoll = 2 * time.Minute
	// backoffBase and its doublings (up to the interval) after errors.
	backoffBase = time.Minute
)

// Agent runs the update loop. Its exported fields are set before Run and
// not changed after, except through SetPolicy and SetLocker.
type Agent struct {
	Node     Node
	Rebooter Rebooter
	Locker   Locker // nil unless the policy uses FleetLock
	Clock    Clock
	// Rand returns a number in [0,1) for jitter; nil uses math/rand.
	Rand func() float64
	// OnStep, when set, sees every step Run makes (logs, metrics).
	OnStep func(StepInfo)

	// beat is when Run last showed it was alive (unix nanoseconds, real
	// time): between steps, at each look at the clock while it sleeps,
	// and at Beat calls from a long step's progress.
	beat atomic.Int64

	mu       sync.Mutex // guards the fields below
	policy   Policy
	failures int        // consecutive failed steps, for backoff
	last     StepInfo   // the most recent step
	force    bool       // the next step ignores the download windows
	opMu     sync.Mutex // one disk-changing operation at a time
}

// StepInfo describes what a step did and what comes next, for status,
// metrics and logs.
type StepInfo struct {
	At     time.Time `json:"at"`
	Action string    `json:"action"` // what the step did or waits for
	Detail string    `json:"detail"` // in plain words
	Next   time.Time `json:"next"`   // when the agent looks again
	Err    string    `json:"error,omitempty"`
	// Check is the latest check's result, when the step checked.
	Check *updater.CheckResult `json:"check,omitempty"`
}

// Actions a step reports.
const (
	ActionUpToDate     = "up-to-date"    // checked, nothing to take
	ActionStaged       = "staged"        // downloaded and staged an update
	ActionWaitDownload = "wait-download" // outside the download windows
	ActionWaitWindow   = "wait-window"   // staged, waiting for a reboot window
	ActionWaitLock     = "wait-lock"     // staged, the fleet lock is busy
	ActionWaitManual   = "wait-manual"   // staged, the operator reboots
	ActionWaitRelease  = "wait-release"  // staged, but the refreshed metadata does not allow it now (halted)
	ActionCancelled    = "cancelled"     // cancelled a staged update that was recalled or replaced
	ActionRebooting    = "rebooting"     // asked the machine to reboot
	ActionTrial        = "trial"         // running a new slot, waiting for its health verdict
	ActionLockReleased = "lock-released" // gave the fleet lock back
	ActionPaused       = "paused"        // an operator's pause: no check, download or reboot
	ActionHeld         = "held"          // staged, but an operator's skip or pin forbids the reboot into it
	ActionError        = "error"         // the step failed; retried with backoff
)

// New returns an agent with a validated policy.
func New(p Policy, node Node, reb Rebooter, lock Locker, clock Clock) (*Agent, error) {
	a := &Agent{Node: node, Rebooter: reb, Locker: lock, Clock: clock}
	if err := a.SetPolicy(p); err != nil {
		return nil, err
	}
	return a, nil
}

// SetPolicy replaces the policy (a config reload); the next step uses it.
func (a *Agent) SetPolicy(p Policy) error {
	if err := p.Validate(); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if p.Reboot == FleetLock && a.Locker == nil {
		return errors.New("reboot strategy \"fleetlock\" needs a fleet lock server")
	}
	a.policy = p
	return nil
}

// SetLocker replaces the fleet lock client (a config reload).
func (a *Agent) SetLocker(l Locker) {
	a.mu.Lock()
	a.Locker = l
	a.mu.Unlock()
}

// Policy returns the current policy.
func (a *Agent) Policy() Policy {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.policy
}

// Last returns what the most recent step did.
func (a *Agent) Last() StepInfo {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}

// ForceNext makes the next step download even outside the download
// windows ("apply now"); the reboot policy still applies.
func (a *Agent) ForceNext() {
	a.mu.Lock()
	a.force = true
	a.mu.Unlock()
}

// Exclusive runs fn unless a disk-changing operation is under way, in
// which case it returns ErrBusy. The local API uses it so that cancel or
// rollback never race the agent's own update.
func (a *Agent) Exclusive(fn func() error) error {
	if !a.opMu.TryLock() {
		return ErrBusy
	}
	defer a.opMu.Unlock()
	return fn()
}

// ExclusiveWait runs fn once no disk-changing operation is under way,
// waiting for the one that is (the agent's own update may take minutes),
// or gives up when ctx ends. The local API sets and clears holds through
// it: a hold must not be refused because the agent is downloading.
func (a *Agent) ExclusiveWait(ctx context.Context, fn func() error) error {
	got := make(chan struct{})
	go func() { a.opMu.Lock(); close(got) }()
	select {
	case <-got:
	case <-ctx.Done():
		go func() { <-got; a.opMu.Unlock() }()
		return fmt.Errorf("waiting for the agent to finish changing the disk: %w", ctx.Err())
	}
	defer a.opMu.Unlock()
	return fn()
}

// ErrBusy: the agent is in the middle of changing the disk.
var ErrBusy = errors.New("the agent is changing the disk right now; try again when it is done")

func (a *Agent) rand() float64 {
	if a.Rand != nil {
		return a.Rand()
	}
	return rand.Float64()
}

// Step makes one decision and acts on it. It never returns an error: a
// failure is recorded and answered with a retry time (backoff).
func (a *Agent) Step(ctx context.Context) StepInfo {
	a.opMu.Lock()
	defer a.opMu.Unlock()
	a.mu.Lock()
	p, force, lock := a.policy, a.force, a.Locker
	a.force = false
	a.mu.Unlock()

	now := a.Clock.Now()
	info, err := a.step(ctx, p, lock, now, force)
	info.At = now
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		a.failures++
		if ctx.Err() == nil {
			_ = a.Node.Record(state.Event{At: now, Kind: state.EventCheckFailed, Message: err.Error()})
		}
		info.Action, info.Err = ActionError, err.Error()
		info.Next = now.Add(a.backoff(p))
		if force {
			a.force = true // the operator's request still stands
		}
	} else {
		a.failures = 0
	}
	a.last = info
	return info
}

// backoff is the wait after the n-th consecutive failure: a minute,
// doubling, at most the interval, plus jitter.
func (a *Agent) backoff(p Policy) time.Duration {
	d := backoffBase
	for i := 1; i < a.failures && d < p.Interval; i++ {
		d *= 2
	}
	d = min(d, p.Interval)
	return d + time.Duration(a.rand()*float64(d)/4)
}

// nextCheck is when to check again after a check found nothing to do.
func (a *Agent) nextCheck(p Policy, now time.Time) time.Time {
	return now.Add(p.Interval + time.Duration(a.rand()*float64(p.Jitter)))
}

func (a *Agent) step(ctx context.Context, p Policy, lock Locker, now time.Time, force bool) (StepInfo, error) {
	st, err := a.Node.Status(ctx)
	if err != nil {
		return StepInfo{}, fmt.Errorf("read node status: %w", err)
	}
	pend := st.Pending
	staged := pend != nil && pend.Phase == state.PhaseTrial && st.Running != pend.Slot && st.NextBoot.Slot == pend.Slot
	onTrial := pend != nil && pend.Phase == state.PhaseTrial && st.Running == pend.Slot

	// 1. A fleet lock taken before a reboot is given back once the slot
	// it was taken for has been judged (kept, or fallen back from).
	if h := st.FleetLock; h != nil && !staged {
		if onTrial {
			return StepInfo{Action: ActionTrial, Next: now.Add(trialPoll),
				Detail: fmt.Sprintf("running %s in slot %s on trial; the fleet lock is kept until its health check decides", pend.Version, pend.Slot)}, nil
		}
		how := fmt.Sprintf("%s in slot %s was kept", h.Version, h.Slot)
		if st.Running != h.Slot {
			how = fmt.Sprintf("the node fell back from %s to slot %s", h.Version, st.Running)
		}
		if err := a.unlock(ctx, lock, now, h, how); err != nil {
			return StepInfo{}, err
		}
		return StepInfo{Action: ActionLockReleased, Next: now, Detail: "gave the fleet lock back"}, nil
	}
	// 2. A new slot on trial: its health check decides; nothing to stage.
	if onTrial {
		return StepInfo{Action: ActionTrial, Next: now.Add(trialPoll),
			Detail: fmt.Sprintf("running %s in slot %s on trial; waiting for its health check", pend.Version, pend.Slot)}, nil
	}
	// 3. A staged update waits for the reboot policy, unless an
	// operator's hold forbids the reboot into it. The holds come first:
	// they are read from the disk, so a paused node does not contact the
	// repository; reboot then confirms the release against refreshed
	// signed metadata (halted, recalled) before it takes a fleet slot.
	if staged {
		if h, why := state.HoldAgainst(st.Holds, pend.Version, now); h != nil {
			return a.held(ctx, p, lock, now, st, *h, why)
		}
		return a.reboot(ctx, p, lock, now, st)
	}
	// 4. An operator's pause: no check, no download.
	if h := state.FindHold(state.ActiveHolds(st.Holds, now), state.HoldPause, ""); h != nil {
		return StepInfo{Action: ActionPaused, Next: a.heldUntil(p, now, *h), Detail: h.Against("", now)}, nil
	}
	// 5. Check, and stage what there is to take.
	if !force && len(p.Download) > 0 && !p.Download.Open(now) {
		start, _ := p.Download.Next(now)
		return StepInfo{Action: ActionWaitDownload, Next: start,
			Detail: fmt.Sprintf("outside the download windows; next one opens %s", start.Format(time.RFC3339))}, nil
	}
	res, ir, err := a.Node.Update(ctx)
	if errors.Is(err, updater.ErrNoRelease) {
		next := a.nextCheck(p, now)
		// A release whose rollout reaches this node before the next
		// check is taken when it does (its time is already spread by the
		// node's seed, so no jitter on top).
		if r := res.Rollout; r != nil && !r.Eligible && !r.At.IsZero() && r.At.After(now) && r.At.Before(next) {
			next = r.At
		}
		return StepInfo{Action: ActionUpToDate, Check: res, Next: next, Detail: res.Reason}, nil
	}
	if err != nil {
		return StepInfo{Check: res}, fmt.Errorf("update: %w", err)
	}
	return StepInfo{Action: ActionStaged, Check: res, Next: now,
		Detail: fmt.Sprintf("staged %s in slot %s", ir.Record.Version, ir.Slot)}, nil
}

// reboot applies the reboot policy to a staged update.
func (a *Agent) reboot(ctx context.Context, p Policy, lock Locker, now time.Time, st *updater.Status) (StepInfo, error) {
	pend := st.Pending
	wait := func(action, detail string, next time.Time) (StepInfo, error) {
		_ = a.Node.Record(state.Event{At: now, Kind: state.EventRebootWaiting, Slot: pend.Slot, Version: pend.Version, Message: detail})
		return StepInfo{Action: action, Next: next, Detail: detail}, nil
	}
	switch p.Reboot {
	case Manual:
		return wait(ActionWaitManual, fmt.Sprintf("%s is staged in slot %s; reboot strategy is manual", pend.Version, pend.Slot), a.nextCheck(p, now))
	case Window, FleetLock:
		if len(p.RebootWindows) > 0 && !p.RebootWindows.Open(now) {
			start, _ := p.RebootWindows.Next(now)
			return wait(ActionWaitWindow, fmt.Sprintf("%s is staged in slot %s; rebooting in the next maintenance window, %s",
				pend.Version, pend.Slot, start.Format(time.RFC3339)), start)
		}
	}
	// The release may have been halted or recalled since it was staged:
	// confirm it before taking a fleet slot for it or rebooting into it.
	if info, done, err := a.confirm(ctx, p, lock, now, st); done {
		return info, err
	}
	if p.Reboot == FleetLock && st.FleetLock == nil {
		err := lock.Lock(ctx)
		if errors.Is(err, ErrLockBusy) {
			return wait(ActionWaitLock, fmt.Sprintf("%s is staged in slot %s; the fleet lock of group %s is busy, asking again in %s",
				pend.Version, pend.Slot, p.LockGroup, lockPoll), now.Add(lockPoll))
		}
		if err != nil {
			return StepInfo{}, fmt.Errorf("take the fleet lock: %w", err)
		}
		h := &state.LockHold{Group: p.LockGroup, Slot: pend.Slot, Version: pend.Version, Since: now}
		if err := a.Node.SetFleetLock(h); err != nil {
			// Not knowing we hold it would keep the fleet blocked: give
			// it back rather than reboot.
			_ = lock.Unlock(ctx)
			return StepInfo{}, fmt.Errorf("record the fleet lock: %w", err)
		}
		_ = a.Node.Record(state.Event{At: now, Kind: state.EventLockTaken, Slot: pend.Slot, Version: pend.Version,
			Message: fmt.Sprintf("took the fleet lock of group %s to reboot into %s", p.LockGroup, pend.Version)})
	}
	_ = a.Node.Record(state.Event{At: now, Kind: state.EventRebooting, Slot: pend.Slot, Version: pend.Version,
		Message: fmt.Sprintf("rebooting into %s in slot %s (reboot strategy %s)", pend.Version, pend.Slot, p.Reboot)})
	if err := a.Rebooter.Reboot(ctx); err != nil {
		return StepInfo{}, fmt.Errorf("reboot: %w", err)
	}
	// The machine goes down; if it does not, look again later (the
	// lock, if taken, is kept for the reboot still to come).
	return StepInfo{Action: ActionRebooting, Next: now.Add(p.Interval),
		Detail: fmt.Sprintf("rebooting into %s in slot %s", pend.Version, pend.Slot)}, nil
}

// confirm refreshes the signed metadata and judges the staged update
// again, right before a planned reboot. done is false when the reboot
// may go ahead; otherwise info and err end the step. Metadata that cannot
// be refreshed is an error (retried with backoff): a reboot into a
// release whose status cannot be confirmed now is not worth the risk, and
// the node keeps running its current slot meanwhile.
func (a *Agent) confirm(ctx context.Context, p Policy, lock Locker, now time.Time, st *updater.Status) (info StepInfo, done bool, err error) {
	pend := st.Pending
	res, err := a.Node.Check(ctx)
	if err != nil {
		return StepInfo{}, true, fmt.Errorf("confirm that %s may still be rebooted into: %w", pend.Version, err)
	}
	v := res.Staged
	if v == nil || v.Version != pend.Version || v.Slot != pend.Slot {
		// Someone (an operator's cancel or update) changed the disk
		// between the status and the check: decide again from the disk.
		return StepInfo{Check: res}, true, fmt.Errorf("the staged update changed while confirming %s in slot %s", pend.Version, pend.Slot)
	}
	if v.Action == updater.StagedReboot {
		return StepInfo{}, false, nil
	}
	// A lock held from an earlier attempt would block a fleet slot for a
	// reboot that is not coming.
	if h := st.FleetLock; h != nil {
		if err := a.unlock(ctx, lock, now, h, fmt.Sprintf("not rebooting into %s: %s", v.Version, v.Reason)); err != nil {
			return StepInfo{Check: res}, true, err
		}
	}
	if v.Action == updater.StagedCancel {
		// No skip hold is left (updater.(*Updater).CancelStaged): the
		// signed metadata is the fleet-wide word on a recall, and an
		// un-recall is then taken like any release.
		if err := a.Node.CancelStaged(ctx, v.Version, updater.Actor{By: ActorName, Reason: v.Reason}); err != nil {
			return StepInfo{Check: res}, true, fmt.Errorf("cancel the staged %s: %w", v.Version, err)
		}
		return StepInfo{Action: ActionCancelled, Check: res, Next: now,
			Detail: fmt.Sprintf("cancelled %s in slot %s instead of rebooting into it: %s", v.Version, v.Slot, v.Reason)}, true, nil
	}
	// Waiting: a halt may be lifted. Look again at the next check, or when
	// the node's wave reaches it if that is sooner.
	next := a.nextCheck(p, now)
	if r := v.Rollout; r != nil && !r.Eligible && !r.At.IsZero() && r.At.After(now) && r.At.Before(next) {
		next = r.At
	}
	// The event's message leaves out the time so that repeated looks fold
	// into one event.
	msg := fmt.Sprintf("%s is staged in slot %s but not rebooted into: %s", v.Version, v.Slot, v.Reason)
	_ = a.Node.Record(state.Event{At: now, Kind: state.EventRebootWaiting, Slot: v.Slot, Version: v.Version, Message: msg})
	return StepInfo{Action: ActionWaitRelease, Check: res, Next: next,
		Detail: fmt.Sprintf("%s; looking again at %s", msg, next.Format(time.RFC3339))}, true, nil
}

// held keeps a staged update from being rebooted into while an
// operator's hold forbids it. A fleet lock taken for that reboot is given
// back: the reboot is not coming, and the fleet must not wait for it.
func (a *Agent) held(ctx context.Context, p Policy, lock Locker, now time.Time, st *updater.Status, h state.Hold, why string) (StepInfo, error) {
	pend := st.Pending
	if l := st.FleetLock; l != nil {
		if err := a.unlock(ctx, lock, now, l, fmt.Sprintf("the reboot into %s is held by the operator", pend.Version)); err != nil {
			return StepInfo{}, err
		}
	}
	action := ActionHeld
	if h.Kind == state.HoldPause {
		action = ActionPaused
	}
	detail := fmt.Sprintf("%s is staged in slot %s; not rebooting into it: %s; 'sealift cancel' undoes the staging", pend.Version, pend.Slot, why)
	_ = a.Node.Record(state.Event{At: now, Kind: state.EventRebootWaiting, Slot: pend.Slot, Version: pend.Version, Message: detail})
	return StepInfo{Action: action, Next: a.heldUntil(p, now, h), Detail: detail}, nil
}

// heldUntil is when to look again while h holds the node: the end of a
// pause, or the next check (a hold set or cleared through the local API
// wakes the agent sooner).
func (a *Agent) heldUntil(p Policy, now time.Time, h state.Hold) time.Time {
	next := a.nextCheck(p, now)
	if h.Kind == state.HoldPause && !h.Until.IsZero() && h.Until.Before(next) {
		return h.Until
	}
	return next
}

// unlock gives the fleet lock back: after the slot it was taken for was
// judged, or when the reboot it was taken for is not coming (held by the
// operator, or the release halted or recalled); how says which.
func (a *Agent) unlock(ctx context.Context, lock Locker, now time.Time, h *state.LockHold, how string) error {
	if lock == nil {
		return fmt.Errorf("a fleet lock of group %s is recorded as held but no fleet lock server is configured to give it back to", h.Group)
	}
	if err := lock.Unlock(ctx); err != nil {
		return fmt.Errorf("give the fleet lock back: %w", err)
	}
	if err := a.Node.SetFleetLock(nil); err != nil {
		return fmt.Errorf("forget the fleet lock: %w", err)
	}
	_ = a.Node.Record(state.Event{At: now, Kind: state.EventLockReleased, Slot: h.Slot, Version: h.Version,
		Message: fmt.Sprintf("gave the fleet lock of group %s back: %s", h.Group, how)})
	return nil
}

// Run repeats Step until ctx ends: it sleeps until the step's next time,
// or until wake delivers (apply now, a config reload). after is the
// clock's timer; nil uses time.After.
func (a *Agent) Run(ctx context.Context, wake <-chan struct{}, after func(time.Duration) <-chan time.Time) error {
	if after == nil {
		after = time.After
	}
	for {
		a.Beat()
		info := a.Step(ctx)
		// A step that got done is reported even when the agent is being
		// stopped meanwhile: the reboot it asked for is what stops it.
		// One cut short by the stop is not.
		if a.OnStep != nil && (ctx.Err() == nil || info.Err == "") {
			a.OnStep(info)
		}
		if ctx.Err() != nil {
			return nil
		}
		if !a.sleepUntil(ctx, info.Next, wake, after) {
			return nil
		}
	}
}

// wallCheck bounds each sleep of the loop. Timers run on the monotonic
// clock, which does not jump; windows and waves are wall-clock times. A
// node whose clock is set after boot (NTP, an RTC that was wrong) or that
// resumes from suspend would otherwise keep sleeping the old duration
// and miss its window.
const wallCheck = time.Minute

// sleepUntil waits until the wall clock reaches next, wake delivers, or
// ctx ends (false).
func (a *Agent) sleepUntil(ctx context.Context, next time.Time, wake <-chan struct{}, after func(time.Duration) <-chan time.Time) bool {
	for {
		a.Beat()
		d := next.Sub(a.Clock.Now())
		if d <= 0 {
			return true // the step asked for another one right away
		}
		select {
		case <-ctx.Done():
			return false
		case <-wake:
			return true
		case <-after(min(d, wallCheck)):
		}
	}
}

// Beat records that the agent is alive and making progress; a long step
// (a download) calls it as it goes.
func (a *Agent) Beat() { a.beat.Store(time.Now().UnixNano()) }

// SinceBeat is how long ago the agent last showed it was alive. A step
// stuck in a call that never returns lets it grow without bound, which is
// what a watchdog looks for.
func (a *Agent) SinceBeat() time.Duration {
	b := a.beat.Load()
	if b == 0 {
		return 0 // not started yet
	}
	return time.Since(time.Unix(0, b))
}
