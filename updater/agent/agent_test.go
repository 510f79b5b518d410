package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"sealift/bootloader"
	"sealift/updater"
	"sealift/updater/rollout"
	"sealift/updater/schedule"
	"sealift/updater/state"
)

// fakeClock is set by the test.
type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time { return c.t }

// fakeNode models a node's slots just enough for the agent: a release
// may be available; Update stages it into the other slot; boot() plays a
// reboot; judge() plays the health check's verdict.
type fakeNode struct {
	mu        sync.Mutex
	running   bootloader.Slot
	version   string
	available string // release a check finds; "" for none
	pending   *state.Pending
	lock      *state.LockHold
	events    []state.Event
	updateErr error
	updates   int
	rollout   *rollout.Eligibility // the newest release's rollout, when not yet here
	holds     []state.Hold
	clock     *fakeClock
	// What a check says about the staged update: verdict "" is
	// StagedReboot; checkErr plays metadata that cannot be refreshed.
	verdict       updater.StagedAction
	verdictReason string
	verdictAt     *rollout.Eligibility
	checkErr      error
	checks        int
	cancelledBy   updater.Actor // who CancelStaged was told acts
}

func newFakeNode() *fakeNode { return &fakeNode{running: bootloader.SlotA, version: "1.0"} }

func (n *fakeNode) Status(context.Context) (*updater.Status, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := &updater.Status{Running: n.running, Pending: n.pending, FleetLock: n.lock, NextBoot: bootloader.Decision{Slot: n.running},
		Holds: state.ActiveHolds(n.holds, n.clock.Now())}
	if p := n.pending; p != nil && p.Phase == state.PhaseTrial && p.Slot != n.running {
		s.NextBoot = bootloader.Decision{Slot: p.Slot, Trial: true}
	}
	return s, nil
}

func (n *fakeNode) Check(context.Context) (*updater.CheckResult, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.checks++
	if n.checkErr != nil {
		return nil, n.checkErr
	}
	res := &updater.CheckResult{Running: n.version}
	if p := n.pending; p != nil && p.Phase == state.PhaseTrial && p.Slot != n.running {
		act := n.verdict
		if act == "" {
			act = updater.StagedReboot
		}
		res.Staged = &updater.StagedVerdict{Version: p.Version, Slot: p.Slot, Action: act, Reason: n.verdictReason, Rollout: n.verdictAt}
	}
	return res, nil
}

// CancelStaged undoes the staging and, unlike cancel, leaves no skip.
func (n *fakeNode) CancelStaged(_ context.Context, version string, a updater.Actor) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.pending
	if p == nil || p.Version != version {
		return updater.ErrNoPending
	}
	n.pending, n.cancelledBy = nil, a
	n.events = append(n.events, state.Event{Kind: state.EventCancelled, Slot: p.Slot, Version: p.Version, Message: "cancelled by " + a.By + ": " + a.Reason})
	return nil
}

func (n *fakeNode) Update(context.Context) (*updater.CheckResult, *updater.InstallResult, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.updates++
	if n.updateErr != nil {
		return nil, nil, n.updateErr
	}
	if n.available == "" || n.available == n.version {
		return &updater.CheckResult{Running: n.version, Reason: "up to date", Rollout: n.rollout}, nil, fmt.Errorf("%w: up to date", updater.ErrNoRelease)
	}
	// The holds as updater's decide honours them (tested there).
	if _, why := state.HoldAgainst(n.holds, n.available, n.clock.Now()); why != "" {
		return &updater.CheckResult{Running: n.version, Reason: why}, nil, fmt.Errorf("%w: %s", updater.ErrNoRelease, why)
	}
	to := n.running.Other()
	n.pending = &state.Pending{Slot: to, Version: n.available, Phase: state.PhaseTrial}
	return &updater.CheckResult{Running: n.version, Reason: "newer"}, &updater.InstallResult{Slot: to, Record: state.SlotRecord{Version: n.available}}, nil
}

func (n *fakeNode) Record(e state.Event) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.events = append(n.events, e)
	return nil
}

func (n *fakeNode) SetFleetLock(h *state.LockHold) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.lock = h
	return nil
}

// cancel plays 'sealift cancel' of the staged update: it is undone and
// skipped from then on.
func (n *fakeNode) cancel() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.holds = append(n.holds, state.Hold{Kind: state.HoldSkip, Version: n.pending.Version, Reason: "its staged update was cancelled", Since: n.clock.Now()})
	n.pending = nil
}

// hold sets an operator hold, as 'sealift hold' does.
func (n *fakeNode) hold(h state.Hold) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.holds = append(n.holds, h)
}

// boot plays the reboot the agent asked for: the staged slot runs, on trial.
func (n *fakeNode) boot() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p := n.pending; p != nil && p.Phase == state.PhaseTrial {
		n.running = p.Slot
	}
}

// judge plays the health check: healthy keeps the new slot; otherwise the
// node falls back to the old one and boot-check clears the pending update.
func (n *fakeNode) judge(healthy bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if healthy {
		n.version = n.pending.Version
	} else {
		n.running = n.running.Other()
	}
	n.pending = nil
}

func (n *fakeNode) kinds() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var ks []string
	for _, e := range n.events {
		ks = append(ks, e.Kind)
	}
	return ks
}

type fakeRebooter struct {
	n   int
	err error // the reboot command fails
}

func (r *fakeRebooter) Reboot(context.Context) error {
	if r.err != nil {
		return r.err
	}
	r.n++
	return nil
}

// fakeLock is a fleet lock with one slot shared by several agents.
type fakeLock struct {
	mu      *sync.Mutex
	holder  *string
	id      string
	failing bool
	unlocks int
}

func (l *fakeLock) Lock(context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failing {
		return errors.New("connection refused")
	}
	if *l.holder != "" && *l.holder != l.id {
		return fmt.Errorf("%w: held by %s", ErrLockBusy, *l.holder)
	}
	*l.holder = l.id
	return nil
}

func (l *fakeLock) Unlock(context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failing {
		return errors.New("connection refused")
	}
	if *l.holder == l.id {
		*l.holder = ""
	}
	l.unlocks++
	return nil
}

var t0 = time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC) // a Tuesday

func window(t *testing.T, days []string, start, length, zone string) schedule.Windows {
	t.Helper()
	w, err := schedule.Parse("w", days, start, length, zone)
	if err != nil {
		t.Fatal(err)
	}
	return schedule.Windows{w}
}

type rig struct {
	a     *Agent
	node  *fakeNode
	reb   *fakeRebooter
	clock *fakeClock
}

func newRig(t *testing.T, p Policy, lock Locker) *rig {
	t.Helper()
	r := &rig{node: newFakeNode(), reb: &fakeRebooter{}, clock: &fakeClock{t0}}
	r.node.clock = r.clock
	if p.Interval == 0 {
		p.Interval = time.Hour
	}
	a, err := New(p, r.node, r.reb, lock, r.clock)
	if err != nil {
		t.Fatal(err)
	}
	a.Rand = func() float64 { return 0.5 }
	r.a = a
	return r
}

func (r *rig) step(t *testing.T, want string) StepInfo {
	t.Helper()
	info := r.a.Step(context.Background())
	if info.Action != want {
		t.Fatalf("at %s: step %s (%s, err %q), want %s", r.clock.t.Format(time.RFC3339), info.Action, info.Detail, info.Err, want)
	}
	return info
}

func TestImmediateStagesAndReboots(t *testing.T) {
	r := newRig(t, Policy{Interval: time.Hour, Jitter: 20 * time.Minute, Reboot: Immediate}, nil)
	info := r.step(t, ActionUpToDate)
	if want := t0.Add(time.Hour + 10*time.Minute); !info.Next.Equal(want) {
		t.Errorf("next check %s, want %s (interval + half the jitter)", info.Next, want)
	}
	r.node.available = "1.1"
	r.step(t, ActionStaged)
	r.step(t, ActionRebooting)
	if r.reb.n != 1 {
		t.Fatalf("%d reboots", r.reb.n)
	}
	r.node.boot()
	r.step(t, ActionTrial) // never stages or reboots while the new slot is on trial
	r.node.judge(true)
	r.step(t, ActionUpToDate)
	if r.reb.n != 1 || r.node.updates != 3 {
		t.Errorf("%d reboots, %d updates", r.reb.n, r.node.updates)
	}
	if k := strings.Join(r.node.kinds(), ","); k != "rebooting" {
		t.Errorf("events %s", k)
	}
}

// TestStageOutsideRebootInsideWindow: downloads run any time; the reboot
// waits for the window (Sat 02:00-04:00 Europe/Berlin), and the wait is
// until the window's start, not a polling interval.
func TestStageOutsideRebootInsideWindow(t *testing.T) {
	r := newRig(t, Policy{Interval: time.Hour, Reboot: Window,
		RebootWindows: window(t, []string{"sat"}, "02:00", "2h", "Europe/Berlin")}, nil)
	r.node.available = "1.1"
	r.step(t, ActionStaged)
	info := r.step(t, ActionWaitWindow)
	berlin, _ := time.LoadLocation("Europe/Berlin")
	start := time.Date(2026, 11, 28, 2, 0, 0, 0, berlin)
	if !info.Next.Equal(start) || r.reb.n != 0 {
		t.Fatalf("next %s (want %s), %d reboots", info.Next, start, r.reb.n)
	}
	if !strings.Contains(info.Detail, "next maintenance window") {
		t.Errorf("detail %q", info.Detail)
	}
	r.clock.t = start.Add(-time.Second)
	r.step(t, ActionWaitWindow)
	r.clock.t = start
	r.step(t, ActionRebooting)
	// The wait was recorded once, however often the agent looked.
	if k := strings.Join(r.node.kinds(), ","); k != "reboot-waiting,reboot-waiting,rebooting" {
		t.Errorf("events %s", k)
	}
}

func TestDownloadWindow(t *testing.T) {
	r := newRig(t, Policy{Interval: time.Hour, Reboot: Manual,
		Download: window(t, []string{"tue"}, "22:00", "1h", "UTC")}, nil)
	r.node.available = "1.1"
	info := r.step(t, ActionWaitDownload)
	if want := time.Date(2026, 11, 24, 22, 0, 0, 0, time.UTC); !info.Next.Equal(want) || r.node.updates != 0 {
		t.Fatalf("next %s, want %s; %d updates", info.Next, want, r.node.updates)
	}
	// Apply now ignores the download window once.
	r.a.ForceNext()
	r.step(t, ActionStaged)
	r.step(t, ActionWaitManual)
	if r.reb.n != 0 {
		t.Fatal("manual strategy rebooted")
	}
}

func TestFleetLockHeldUntilJudged(t *testing.T) {
	for _, healthy := range []bool{true, false} {
		t.Run(fmt.Sprintf("healthy=%v", healthy), func(t *testing.T) {
			var mu sync.Mutex
			holder := ""
			lock := &fakeLock{mu: &mu, holder: &holder, id: "n1"}
			r := newRig(t, Policy{Interval: time.Hour, Reboot: FleetLock, LockGroup: "workers"}, lock)
			r.node.available = "1.1"
			r.step(t, ActionStaged)
			r.step(t, ActionRebooting)
			if holder != "n1" || r.node.lock == nil || r.node.lock.Group != "workers" || r.node.lock.Version != "1.1" {
				t.Fatalf("holder %q, recorded %+v", holder, r.node.lock)
			}
			r.node.boot()
			r.step(t, ActionTrial)
			if holder != "n1" {
				t.Fatal("lock given back before the health verdict")
			}
			r.node.judge(healthy)
			info := r.step(t, ActionLockReleased)
			if holder != "" || r.node.lock != nil || lock.unlocks != 1 {
				t.Fatalf("holder %q, recorded %+v, %d unlocks", holder, r.node.lock, lock.unlocks)
			}
			if !info.Next.Equal(r.clock.t) {
				t.Errorf("after releasing, next step at %s, want now", info.Next)
			}
			evs := r.node.events
			msg := evs[len(evs)-1].Message
			if want := map[bool]string{true: "was kept", false: "fell back"}[healthy]; !strings.Contains(msg, want) {
				t.Errorf("release event %q does not say %q", msg, want)
			}
		})
	}
}

// TestTwoAgentsOneLock: two nodes with staged updates share one lock
// slot; only one reboots until the first has been judged.
func TestTwoAgentsOneLock(t *testing.T) {
	var mu sync.Mutex
	holder := ""
	p := Policy{Interval: time.Hour, Reboot: FleetLock, LockGroup: "g"}
	r1 := newRig(t, p, &fakeLock{mu: &mu, holder: &holder, id: "n1"})
	r2 := newRig(t, p, &fakeLock{mu: &mu, holder: &holder, id: "n2"})
	for _, r := range []*rig{r1, r2} {
		r.node.available = "1.1"
		r.step(t, ActionStaged)
	}
	r1.step(t, ActionRebooting)
	info := r2.step(t, ActionWaitLock)
	if !info.Next.Equal(t0.Add(lockPoll)) || r2.reb.n != 0 {
		t.Fatalf("second node: next %s, %d reboots", info.Next, r2.reb.n)
	}
	r1.node.boot()
	r1.step(t, ActionTrial)
	r2.step(t, ActionWaitLock)
	r1.node.judge(true)
	r1.step(t, ActionLockReleased)
	r2.step(t, ActionRebooting)
	if holder != "n2" {
		t.Fatalf("holder %q", holder)
	}
}

func TestLockServerDownNeverReboots(t *testing.T) {
	var mu sync.Mutex
	holder := ""
	lock := &fakeLock{mu: &mu, holder: &holder, id: "n1", failing: true}
	r := newRig(t, Policy{Interval: time.Hour, Reboot: FleetLock, LockGroup: "g"}, lock)
	r.node.available = "1.1"
	r.step(t, ActionStaged)
	info := r.step(t, ActionError)
	if r.reb.n != 0 || r.node.lock != nil || !strings.Contains(info.Err, "connection refused") {
		t.Fatalf("%d reboots, lock %+v, err %q", r.reb.n, r.node.lock, info.Err)
	}
}

func TestBackoffDoublesUpToInterval(t *testing.T) {
	r := newRig(t, Policy{Interval: 10 * time.Minute, Reboot: Immediate}, nil)
	r.node.updateErr = errors.New("registry: 503")
	var waits []time.Duration
	for range 6 {
		info := r.step(t, ActionError)
		waits = append(waits, info.Next.Sub(r.clock.t))
	}
	// a minute doubling, capped at the interval, each plus an eighth
	// (jitter of a quarter, Rand 0.5)
	want := []time.Duration{1, 2, 4, 8, 10, 10}
	for i, w := range want {
		if d := w * time.Minute; waits[i] != d+d/8 {
			t.Errorf("wait %d: %s, want %s", i, waits[i], d+d/8)
		}
	}
	// Each failure is recorded (the state file folds identical ones).
	if n := len(r.node.events); n != 6 || r.node.events[0].Kind != state.EventCheckFailed {
		t.Fatalf("events %+v", r.node.events)
	}
	r.node.updateErr = nil
	r.step(t, ActionUpToDate)
	if r.a.failures != 0 {
		t.Error("failures not reset after a good step")
	}
}

func TestPolicyValidation(t *testing.T) {
	tests := []struct {
		p    Policy
		want string
	}{
		{Policy{Reboot: Immediate}, "interval"},
		{Policy{Interval: time.Hour, Jitter: -1, Reboot: Immediate}, "jitter"},
		{Policy{Interval: time.Hour, Reboot: "sometimes"}, "reboot strategy"},
		{Policy{Interval: time.Hour, Reboot: Window}, "window"},
		{Policy{Interval: time.Hour, Reboot: FleetLock}, "group"},
	}
	for _, tc := range tests {
		if err := tc.p.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error mentioning %q", tc.p, err, tc.want)
		}
	}
	if _, err := New(Policy{Interval: time.Hour, Reboot: FleetLock, LockGroup: "g"}, newFakeNode(), &fakeRebooter{}, nil, &fakeClock{}); err == nil {
		t.Error("fleetlock strategy without a lock client accepted")
	}
}

// TestRunWakesAndStops drives Run with a fake timer: it steps, sleeps
// until the step's next time, wakes early on request, and stops on cancel.
func TestRunWakesAndStops(t *testing.T) {
	r := newRig(t, Policy{Interval: time.Hour, Reboot: Immediate}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	wake := make(chan struct{})
	timers := make(chan time.Duration)
	after := func(d time.Duration) <-chan time.Time {
		timers <- d
		return make(chan time.Time) // never fires: only wake or cancel end the sleep
	}
	done := make(chan error)
	go func() { done <- r.a.Run(ctx, wake, after) }()
	// The interval is slept a minute at a time (wallCheck).
	if d := <-timers; d != wallCheck {
		t.Fatalf("first sleep %s, want %s", d, wallCheck)
	}
	r.node.mu.Lock()
	r.node.available = "1.1"
	r.node.mu.Unlock()
	wake <- struct{}{}
	<-timers // staged, then rebooting: sleeps after the reboot request
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if r.reb.n != 1 {
		t.Fatalf("%d reboots", r.reb.n)
	}
}

// TestRunFollowsTheWallClock: a step waiting for a window runs when the
// wall clock reaches the window's start, even when the clock jumps there
// (set by NTP after boot) instead of the monotonic time passing.
func TestRunFollowsTheWallClock(t *testing.T) {
	r := newRig(t, Policy{Interval: 24 * time.Hour, Reboot: Window, RebootWindows: window(t, []string{"sat"}, "02:00", "2h", "UTC")}, nil)
	r.node.available = "1.1"
	windowStart := time.Date(2026, 11, 28, 2, 0, 0, 0, time.UTC) // the Saturday after t0
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fire := make(chan time.Time)
	slept := make(chan time.Duration)
	after := func(d time.Duration) <-chan time.Time {
		slept <- d
		return fire
	}
	done := make(chan error)
	go func() { done <- r.a.Run(ctx, nil, after) }()
	// Staged (next step at once), then waiting for Saturday's window,
	// a minute at a time.
	if d := <-slept; d != wallCheck {
		t.Fatalf("sleep %s while waiting for the window, want %s", d, wallCheck)
	}
	if r.reb.n != 0 {
		t.Fatal("rebooted outside the window")
	}
	// The clock jumps into the window; the next minute's look sees it.
	// (Set before the timer fires: the channel orders the two.)
	r.clock.t = windowStart.Add(time.Minute)
	fire <- time.Time{}
	<-slept // after the reboot request
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if r.reb.n != 1 {
		t.Fatalf("%d reboots after the clock reached the window, want 1", r.reb.n)
	}
}

// TestWakesForItsWave: a release whose rollout reaches the node before
// the next check is checked for at that time, not an interval later.
func TestWakesForItsWave(t *testing.T) {
	r := newRig(t, Policy{Interval: 4 * time.Hour, Reboot: Immediate}, nil)
	at := t0.Add(90 * time.Minute)
	r.node.rollout = &rollout.Eligibility{At: at, Wave: 2, Waves: 5}
	if info := r.step(t, ActionUpToDate); !info.Next.Equal(at) {
		t.Fatalf("next %s, want the eligibility time %s", info.Next, at)
	}
	// Later than the next check: the usual interval.
	r.node.rollout = &rollout.Eligibility{At: t0.Add(48 * time.Hour)}
	if info := r.step(t, ActionUpToDate); !info.Next.Equal(t0.Add(4 * time.Hour)) {
		t.Fatalf("next %s", info.Next)
	}
}

// TestRebootWindowAcrossDST: the agent waits for windows whose start falls
// on a DST change: a start that occurs twice (New York, fall back) is the
// first one; a start inside the spring-forward gap (Berlin) moves forward
// by the gap.
func TestRebootWindowAcrossDST(t *testing.T) {
	tests := []struct {
		name, day, start, zone string
		staged                 time.Time
		wantStart              time.Time
	}{
		{"new york fall back", "sun", "01:30", "America/New_York",
			time.Date(2026, 10, 31, 12, 0, 0, 0, time.UTC), time.Date(2026, 11, 1, 5, 30, 0, 0, time.UTC)},
		{"berlin spring forward", "sun", "02:30", "Europe/Berlin",
			time.Date(2026, 3, 28, 12, 0, 0, 0, time.UTC), time.Date(2026, 3, 29, 1, 30, 0, 0, time.UTC)},
		{"window across the week's end", "sun", "23:00", "UTC",
			time.Date(2026, 11, 23, 1, 30, 0, 0, time.UTC), time.Date(2026, 11, 29, 23, 0, 0, 0, time.UTC)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, Policy{Interval: time.Hour, Reboot: Window, RebootWindows: window(t, []string{tc.day}, tc.start, "2h", tc.zone)}, nil)
			r.clock.t = tc.staged
			r.node.available = "1.1"
			r.step(t, ActionStaged)
			info := r.step(t, ActionWaitWindow)
			if !info.Next.Equal(tc.wantStart) {
				t.Fatalf("waits until %s, want %s", info.Next.UTC(), tc.wantStart)
			}
			r.clock.t = tc.wantStart.Add(-time.Minute)
			r.step(t, ActionWaitWindow)
			r.clock.t = tc.wantStart.Add(119 * time.Minute) // the length is elapsed time; Monday for the last case
			r.step(t, ActionRebooting)
		})
	}
	// Inside a window that began on Sunday and runs into Monday.
	r := newRig(t, Policy{Interval: time.Hour, Reboot: Window, RebootWindows: window(t, []string{"sun"}, "23:00", "2h", "UTC")}, nil)
	r.clock.t = time.Date(2026, 11, 23, 0, 30, 0, 0, time.UTC) // Monday
	r.node.available = "1.1"
	r.step(t, ActionStaged)
	r.step(t, ActionRebooting)
}

// satWindow is a reboot window on Saturdays 02:00-06:00 UTC; t0 is the
// Tuesday before.
func satWindow(t *testing.T) (schedule.Windows, time.Time) {
	return window(t, []string{"sat"}, "02:00", "4h", "UTC"), time.Date(2026, 11, 28, 2, 0, 0, 0, time.UTC)
}

// TestHaltedAfterStagingWaits: a release halted after it was staged is
// not rebooted into when the window opens, takes no fleet slot, stays
// staged and says why; once the halt is lifted it reboots in the window.
func TestHaltedAfterStagingWaits(t *testing.T) {
	var mu sync.Mutex
	holder := ""
	lock := &fakeLock{mu: &mu, holder: &holder, id: "n1"}
	win, open := satWindow(t)
	r := newRig(t, Policy{Interval: time.Hour, Jitter: 20 * time.Minute, Reboot: FleetLock, LockGroup: "g", RebootWindows: win}, lock)
	r.node.available = "1.1"
	r.step(t, ActionStaged)
	r.step(t, ActionWaitWindow)

	r.node.verdict, r.node.verdictReason = updater.StagedWait, "1.1 may not be taken by this node now: rollout halted since 2026-11-25T10:00:00Z"
	r.clock.t = open
	info := r.step(t, ActionWaitRelease)
	if r.reb.n != 0 || holder != "" || r.node.lock != nil {
		t.Fatalf("%d reboots, lock holder %q, recorded %+v", r.reb.n, holder, r.node.lock)
	}
	if r.node.pending == nil {
		t.Fatal("a halted release was unstaged")
	}
	if want := open.Add(time.Hour + 10*time.Minute); !info.Next.Equal(want) {
		t.Errorf("looks again at %s, want %s (the next check)", info.Next, want)
	}
	if !strings.Contains(info.Detail, "not rebooted into: 1.1 may not be taken by this node now: rollout halted since") {
		t.Errorf("detail %q", info.Detail)
	}
	last := r.node.events[len(r.node.events)-1]
	if last.Kind != state.EventRebootWaiting || !strings.Contains(last.Message, "rollout halted since") || strings.Contains(last.Message, "looking again") {
		t.Errorf("event %+v", last)
	}

	// A wave that reaches the node before the next check wakes it then.
	at := open.Add(20 * time.Minute)
	r.node.verdictAt = &rollout.Eligibility{At: at}
	if info := r.step(t, ActionWaitRelease); !info.Next.Equal(at) {
		t.Errorf("looks again at %s, want its eligibility %s", info.Next, at)
	}

	// The halt is lifted: the next look, still in the window, reboots.
	r.node.verdict, r.node.verdictAt = "", nil
	r.clock.t = open.Add(time.Hour + 10*time.Minute)
	r.step(t, ActionRebooting)
	if r.reb.n != 1 || holder != "n1" {
		t.Fatalf("%d reboots, lock holder %q", r.reb.n, holder)
	}
}

// TestRecalledAfterStagingCancelled: a release recalled after it was
// staged is cancelled instead of rebooted into; the next check decides.
func TestRecalledAfterStagingCancelled(t *testing.T) {
	var mu sync.Mutex
	holder := ""
	lock := &fakeLock{mu: &mu, holder: &holder, id: "n1"}
	win, open := satWindow(t)
	r := newRig(t, Policy{Interval: time.Hour, Reboot: FleetLock, LockGroup: "g", RebootWindows: win}, lock)
	r.node.available = "1.1"
	r.step(t, ActionStaged)
	r.node.verdict, r.node.verdictReason = updater.StagedCancel, "1.1 was recalled"
	r.node.available = "" // the check no longer takes it
	r.clock.t = open
	info := r.step(t, ActionCancelled)
	if r.reb.n != 0 || holder != "" || r.node.pending != nil {
		t.Fatalf("%d reboots, lock holder %q, pending %+v", r.reb.n, holder, r.node.pending)
	}
	if !info.Next.Equal(open) || !strings.Contains(info.Detail, "cancelled 1.1 in slot B instead of rebooting into it: 1.1 was recalled") {
		t.Fatalf("next %s, detail %q", info.Next, info.Detail)
	}
	last := r.node.events[len(r.node.events)-1]
	if last.Kind != state.EventCancelled || !strings.Contains(last.Message, "recalled") {
		t.Errorf("event %+v", last)
	}
	// The agent acts as itself, and the recall leaves no skip behind: an
	// un-recall is taken like any release.
	if r.node.cancelledBy != (updater.Actor{By: ActorName, Reason: "1.1 was recalled"}) || len(r.node.holds) != 0 {
		t.Errorf("cancelled by %+v, holds %+v", r.node.cancelledBy, r.node.holds)
	}
	r.step(t, ActionUpToDate)
	if r.reb.n != 0 {
		t.Fatal("rebooted after the cancel")
	}
}

// TestPauseBeforeConfirm: an operator's pause keeps a staged update from
// being rebooted into without the agent contacting the repository, even
// in the window; a recall that came in meanwhile is acted on once the
// pause ends, before any fleet slot is taken.
func TestPauseBeforeConfirm(t *testing.T) {
	var mu sync.Mutex
	holder := ""
	lock := &fakeLock{mu: &mu, holder: &holder, id: "n1"}
	win, open := satWindow(t)
	r := newRig(t, Policy{Interval: time.Hour, Reboot: FleetLock, LockGroup: "g", RebootWindows: win}, lock)
	r.node.available = "1.1"
	r.step(t, ActionStaged)
	r.node.verdict, r.node.verdictReason = updater.StagedCancel, "1.1 was recalled"
	r.node.hold(state.Hold{Kind: state.HoldPause, By: "alice", Since: t0})
	r.clock.t = open
	before := r.node.checks
	r.step(t, ActionPaused)
	if r.node.checks != before || r.node.pending == nil || r.reb.n != 0 || holder != "" {
		t.Fatalf("paused: %d checks, pending %+v, %d reboots, lock holder %q", r.node.checks-before, r.node.pending, r.reb.n, holder)
	}
	r.node.holds = nil
	r.step(t, ActionCancelled)
	if r.node.checks != before+1 || r.node.pending != nil || r.reb.n != 0 || holder != "" || lock.unlocks != 0 {
		t.Fatalf("after the pause: %d checks, pending %+v, %d reboots, lock holder %q, %d unlocks", r.node.checks-before, r.node.pending, r.reb.n, holder, lock.unlocks)
	}
}

// TestConfirmFailsNoReboot: metadata that cannot be refreshed right
// before the reboot stops it, and the step backs off and tries again.
func TestConfirmFailsNoReboot(t *testing.T) {
	var mu sync.Mutex
	holder := ""
	lock := &fakeLock{mu: &mu, holder: &holder, id: "n1"}
	r := newRig(t, Policy{Interval: time.Hour, Reboot: FleetLock, LockGroup: "g"}, lock)
	r.node.available = "1.1"
	r.step(t, ActionStaged)
	r.node.checkErr = errors.New("refresh signed metadata: timestamp.json expired")
	info := r.step(t, ActionError)
	if r.reb.n != 0 || holder != "" || r.node.pending == nil {
		t.Fatalf("%d reboots, lock holder %q, pending %+v", r.reb.n, holder, r.node.pending)
	}
	if !strings.Contains(info.Err, "confirm that 1.1 may still be rebooted into: refresh signed metadata") {
		t.Errorf("error %q", info.Err)
	}
	if want := r.clock.t.Add(time.Minute + time.Minute/8); !info.Next.Equal(want) {
		t.Errorf("retries at %s, want %s (backoff)", info.Next, want)
	}
	if last := r.node.events[len(r.node.events)-1]; last.Kind != state.EventCheckFailed || !strings.Contains(last.Message, "expired") {
		t.Errorf("event %+v", last)
	}
	r.node.checkErr = nil
	r.step(t, ActionRebooting)
}

// TestHaltGivesBackAHeldLock: a lock taken for a reboot that did not
// happen is given back when the release turns out halted.
func TestHaltGivesBackAHeldLock(t *testing.T) {
	var mu sync.Mutex
	holder := ""
	lock := &fakeLock{mu: &mu, holder: &holder, id: "n1"}
	r := newRig(t, Policy{Interval: time.Hour, Reboot: FleetLock, LockGroup: "g"}, lock)
	r.node.available = "1.1"
	r.step(t, ActionStaged)
	r.step(t, ActionRebooting) // the machine did not go down
	r.node.verdict, r.node.verdictReason = updater.StagedWait, "rollout halted"
	r.step(t, ActionWaitRelease)
	if holder != "" || r.node.lock != nil || lock.unlocks != 1 || r.reb.n != 1 {
		t.Fatalf("lock holder %q, recorded %+v, %d unlocks, %d reboots", holder, r.node.lock, lock.unlocks, r.reb.n)
	}
	if k := strings.Join(r.node.kinds(), ","); k != "lock-taken,rebooting,lock-released,reboot-waiting" {
		t.Errorf("events %s", k)
	}
}

// TestImmediateConfirmsBeforeReboot: every planned reboot is confirmed,
// even one right after staging (a download can take a while).
func TestImmediateConfirmsBeforeReboot(t *testing.T) {
	r := newRig(t, Policy{Interval: time.Hour, Reboot: Immediate}, nil)
	r.node.available = "1.1"
	r.step(t, ActionStaged)
	before := r.node.checks
	r.step(t, ActionRebooting)
	if r.node.checks != before+1 {
		t.Fatalf("%d checks before the reboot, want 1", r.node.checks-before)
	}
}

// stoppingRebooter is systemd's reboot as the agent sees it: the command
// returns and the agent is told to stop (SIGTERM) at once.
type stoppingRebooter struct {
	n    int
	stop context.CancelFunc
}

func (r *stoppingRebooter) Reboot(context.Context) error {
	r.n++
	r.stop()
	return nil
}

// TestRunReportsTheRebootItIsStoppedBy: the step that reboots is reported
// (logged, in the metrics) even though the reboot stops the agent before
// the step returns.
func TestRunReportsTheRebootItIsStoppedBy(t *testing.T) {
	r := newRig(t, Policy{Interval: time.Hour, Reboot: Immediate}, nil)
	r.node.available = "1.1"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reb := &stoppingRebooter{stop: cancel}
	r.a.Rebooter = reb
	var steps []string
	r.a.OnStep = func(info StepInfo) { steps = append(steps, info.Action) }
	if err := r.a.Run(ctx, nil, func(time.Duration) <-chan time.Time { return make(chan time.Time) }); err != nil {
		t.Fatal(err)
	}
	if reb.n != 1 || len(steps) != 2 || steps[0] != ActionStaged || steps[1] != ActionRebooting {
		t.Fatalf("%d reboots, steps reported %q; want staged, rebooting", reb.n, steps)
	}
}

// TestBeat: Run shows it is alive between steps and while it sleeps; a
// step stuck in a call lets SinceBeat grow (what the watchdog looks at).
func TestBeat(t *testing.T) {
	r := newRig(t, Policy{Interval: time.Hour, Reboot: Immediate}, nil)
	if d := r.a.SinceBeat(); d != 0 {
		t.Fatalf("before Run: %s", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	slept := make(chan struct{})
	done := make(chan error)
	go func() {
		done <- r.a.Run(ctx, nil, func(time.Duration) <-chan time.Time {
			close(slept)
			return make(chan time.Time)
		})
	}()
	<-slept
	if d := r.a.SinceBeat(); d <= 0 || d > time.Minute {
		t.Fatalf("while sleeping: last beat %s ago", d)
	}
	cancel()
	<-done
	time.Sleep(20 * time.Millisecond)
	if d := r.a.SinceBeat(); d < 20*time.Millisecond {
		t.Fatalf("no beat after Run stopped, but SinceBeat is %s", d)
	}
}
