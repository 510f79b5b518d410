package agent

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"sealift/bootloader"
	"sealift/updater"
	"sealift/updater/state"
)

// TestCancelledReleaseNotRestaged: after the operator cancels a staged
// release, the agent's next check does not stage it again (the cancel
// left a skip); a newer release is staged as usual.
func TestCancelledReleaseNotRestaged(t *testing.T) {
	r := newRig(t, Policy{Interval: time.Hour, Reboot: Manual}, nil)
	r.node.available = "1.1"
	r.step(t, ActionStaged)
	r.step(t, ActionWaitManual)
	r.node.cancel()
	r.clock.t = r.clock.t.Add(time.Hour)
	info := r.step(t, ActionUpToDate)
	if r.node.pending != nil || !strings.Contains(info.Detail, "1.1 is skipped") || !strings.Contains(info.Detail, "'sealift hold clear skip 1.1' allows it") {
		t.Fatalf("after the cancel: pending %+v, detail %q", r.node.pending, info.Detail)
	}
	r.node.available = "1.2"
	r.step(t, ActionStaged)
	if r.node.pending.Version != "1.2" {
		t.Fatalf("staged %+v", r.node.pending)
	}
}

// TestPauseHoldsTheAgent: while paused the agent neither checks nor
// reboots into a staged update; it looks again when the pause ends, and
// then goes on.
func TestPauseHoldsTheAgent(t *testing.T) {
	r := newRig(t, Policy{Interval: time.Hour, Jitter: 20 * time.Minute, Reboot: Immediate}, nil)
	r.node.available = "1.1"
	end := t0.Add(30 * time.Minute)
	r.node.hold(state.Hold{Kind: state.HoldPause, Until: end, Reason: "CVE review", By: "alice", Since: t0})
	info := r.step(t, ActionPaused)
	if r.node.updates != 0 || !info.Next.Equal(end) || !strings.Contains(info.Detail, "updates are paused by alice (CVE review") {
		t.Fatalf("paused step: %d updates, next %s, detail %q", r.node.updates, info.Next, info.Detail)
	}
	// Apply now does not override a pause (the API refuses it, too).
	r.a.ForceNext()
	r.step(t, ActionPaused)
	r.clock.t = end
	r.step(t, ActionStaged)

	// A pause set while an update is staged keeps the agent from
	// rebooting into it; without an end, it looks again at the next check.
	r.node.hold(state.Hold{Kind: state.HoldPause, Since: end})
	info = r.step(t, ActionPaused)
	if r.reb.n != 0 || !info.Next.Equal(end.Add(time.Hour+10*time.Minute)) ||
		!strings.Contains(info.Detail, "1.1 is staged in slot B; not rebooting into it: updates are paused") || !strings.Contains(info.Detail, "'sealift cancel' undoes the staging") {
		t.Fatalf("staged while paused: %d reboots, next %s, detail %q", r.reb.n, info.Next, info.Detail)
	}
	if k := r.node.kinds(); len(k) != 1 || k[0] != state.EventRebootWaiting {
		t.Fatalf("events %v", k)
	}
	r.node.holds = nil
	r.step(t, ActionRebooting)
}

// TestSkipOrPinOfStagedRelease: a skip of the staged release, or a pin
// to another one, keeps the agent from rebooting into it, and a fleet
// lock taken for that reboot is given back.
func TestSkipOrPinOfStagedRelease(t *testing.T) {
	for _, h := range []state.Hold{
		{Kind: state.HoldSkip, Version: "1.1", By: "alice", Since: t0},
		{Kind: state.HoldPin, Version: "1.0", By: "alice", Since: t0},
	} {
		t.Run(string(h.Kind), func(t *testing.T) {
			var mu sync.Mutex
			holder := ""
			lock := &fakeLock{mu: &mu, holder: &holder, id: "n1"}
			r := newRig(t, Policy{Interval: time.Hour, Reboot: FleetLock, LockGroup: "workers"}, lock)
			r.node.available = "1.1"
			r.step(t, ActionStaged)
			// The lock is taken, but the reboot command fails.
			r.reb.err = errors.New("systemctl: connection refused")
			r.step(t, ActionError)
			if holder != "n1" || r.node.lock == nil {
				t.Fatalf("holder %q, recorded %+v", holder, r.node.lock)
			}
			r.reb.err = nil
			r.node.hold(h)
			info := r.step(t, ActionHeld)
			if holder != "" || r.node.lock != nil || r.reb.n != 0 {
				t.Fatalf("held: holder %q, recorded %+v, %d reboots", holder, r.node.lock, r.reb.n)
			}
			if !strings.Contains(info.Detail, "not rebooting into it") || !strings.Contains(info.Detail, "by alice") {
				t.Fatalf("detail %q", info.Detail)
			}
			var released string
			for _, e := range r.node.events {
				if e.Kind == state.EventLockReleased {
					released = e.Message
				}
			}
			if !strings.Contains(released, "gave the fleet lock of group workers back: the reboot into 1.1 is held by the operator") {
				t.Fatalf("lock-released event %q", released)
			}
			// Lifted: the lock is taken again for the reboot.
			r.node.holds = nil
			r.step(t, ActionRebooting)
			if holder != "n1" || r.reb.n != 1 {
				t.Fatalf("after the hold: holder %q, %d reboots", holder, r.reb.n)
			}
		})
	}
}

// holdOps is the Operator of the API tests: holds go to the fake node
// the agent reads, so a hold set through the API is seen by its steps.
type holdOps struct {
	fakeOps
	node *fakeNode
	who  updater.Actor // the last cancel's or rollback's
}

func (o *holdOps) Cancel(ctx context.Context, a updater.Actor) (*updater.CancelResult, error) {
	o.who = a
	return o.fakeOps.Cancel(ctx, a)
}

func (o *holdOps) SetHold(_ context.Context, r updater.HoldRequest) (*updater.HoldChange, error) {
	if r.Kind == state.HoldSkip && r.Version == "" {
		return nil, updater.ErrBadInput
	}
	h := state.Hold{Kind: r.Kind, Version: r.Version, Until: r.Until, Reason: r.Reason, By: r.By, Since: o.node.clock.Now()}
	o.node.hold(h)
	return &updater.HoldChange{Hold: h}, nil
}

func (o *holdOps) ClearHolds(_ context.Context, kind state.HoldKind, version string, _ updater.Actor) ([]state.Hold, error) {
	o.node.mu.Lock()
	defer o.node.mu.Unlock()
	var kept, gone []state.Hold
	for _, h := range o.node.holds {
		if kind == "" || (h.Kind == kind && h.Version == version) {
			gone = append(gone, h)
		} else {
			kept = append(kept, h)
		}
	}
	o.node.holds = kept
	if len(gone) == 0 {
		return nil, updater.ErrNoHold
	}
	return gone, nil
}

// TestAPIHolds: holds are set, listed and cleared through the local API;
// a change wakes the agent; apply is refused while paused; a hold waits
// for the agent to finish changing the disk instead of failing busy;
// refusals carry codes the client turns back into the errors they stand
// for.
func TestAPIHolds(t *testing.T) {
	r := newRig(t, Policy{Interval: time.Hour, Reboot: Manual}, nil)
	ops := &holdOps{node: r.node, fakeOps: fakeOps{pending: &state.Pending{Slot: bootloader.SlotB, Version: "1.1", Phase: state.PhaseTrial}}}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := ListenSocket(sock)
	if err != nil {
		t.Fatal(err)
	}
	wake := make(chan struct{}, 1)
	srv := &http.Server{Handler: r.a.Handler(ops, wake)}
	go srv.Serve(ln)
	defer srv.Close()
	c, err := Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	woken := func() bool {
		select {
		case <-wake:
			return true
		default:
			return false
		}
	}

	if hs, err := c.Holds(ctx); err != nil || len(hs) != 0 {
		t.Fatalf("holds at first: %+v %v", hs, err)
	}
	ch, err := c.SetHold(ctx, updater.HoldRequest{Kind: state.HoldPause, Until: t0.Add(time.Hour), Actor: updater.Actor{By: "alice", Reason: "CVE review"}})
	if err != nil || ch.Hold.By != "alice" || !woken() {
		t.Fatalf("set pause: %+v %v", ch, err)
	}
	if st, err := c.Status(ctx); err != nil || len(st.Node.Holds) != 1 || st.Node.Holds[0].Reason != "CVE review" {
		t.Fatalf("status: %+v %v", st, err)
	}
	if err := c.Apply(ctx); !errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), "updates are paused by alice") || woken() {
		t.Fatalf("apply while paused: %v", err)
	}
	if info := r.a.Step(ctx); info.Action != ActionPaused {
		t.Fatalf("step after the pause: %+v", info)
	}
	if _, err := c.SetHold(ctx, updater.HoldRequest{Kind: state.HoldSkip}); !errors.Is(err, updater.ErrBadInput) {
		t.Fatalf("bad hold: %v", err)
	}
	gone, err := c.ClearHolds(ctx, state.HoldPause, "", updater.Actor{By: "bob"})
	if err != nil || len(gone) != 1 || !woken() {
		t.Fatalf("clear pause: %+v %v", gone, err)
	}
	if _, err := c.ClearHolds(ctx, state.HoldPause, "", updater.Actor{}); !errors.Is(err, updater.ErrNoHold) {
		t.Fatalf("clear again: %v", err)
	}
	var apiErr *APIError
	if _, err := c.ClearHolds(ctx, "freeze", "", updater.Actor{}); !errors.As(err, &apiErr) || apiErr.Status != http.StatusUnprocessableEntity || !errors.Is(err, updater.ErrBadInput) {
		t.Fatalf("clear of an unknown kind: %v", err)
	}
	if err := c.Apply(ctx); err != nil {
		t.Fatalf("apply after the pause: %v", err)
	}

	// While the agent changes the disk, a hold waits for it: the request
	// ends when the operation does, or when the caller gives up.
	r.a.opMu.Lock()
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = c.SetHold(short, updater.HoldRequest{Kind: state.HoldSkip, Version: "1.1"})
	cancel()
	if err == nil || errors.Is(err, ErrBusy) {
		t.Fatalf("hold while busy, caller gave up: %v", err)
	}
	time.AfterFunc(100*time.Millisecond, r.a.opMu.Unlock)
	if _, err := c.SetHold(ctx, updater.HoldRequest{Kind: state.HoldSkip, Version: "1.1"}); err != nil {
		t.Fatalf("hold while busy: %v", err)
	}
	if hs, _ := c.Holds(ctx); len(hs) != 1 || hs[0].Name() != "skip 1.1" {
		t.Fatalf("holds %+v", hs)
	}

	// Cancel passes who and why on; nothing to cancel is ErrNoPending.
	if res, err := c.Cancel(ctx, updater.Actor{By: "carol", Reason: "wrong kernel"}); err != nil || res.Version != "1.1" || ops.who.By != "carol" || ops.who.Reason != "wrong kernel" {
		t.Fatalf("cancel: %+v %v, actor %+v", res, err, ops.who)
	}
	if _, err := c.Cancel(ctx, updater.Actor{}); !errors.Is(err, updater.ErrNoPending) {
		t.Fatalf("second cancel: %v", err)
	}
}

func TestMetricsHolds(t *testing.T) {
	m := NewMetrics()
	at := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	st := &updater.Status{Holds: []state.Hold{
		{Kind: state.HoldPause, Since: at},
		{Kind: state.HoldSkip, Version: "1.2", Since: at},
		{Kind: state.HoldSkip, Version: "1.3", Since: at},
	}}
	scrape := func() string {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}
	m.Observe(StepInfo{At: at, Action: ActionPaused, Next: at.Add(time.Hour)}, st, nil)
	body := scrape()
	for _, want := range []string{
		`sealift_hold{kind="pause",version=""} 1`,
		`sealift_hold{kind="skip",version="1.2"} 1`,
		`sealift_hold{kind="skip",version="1.3"} 1`,
		`sealift_hold_since_timestamp_seconds{kind="pause",version=""} 1.7955144e+09`,
		`sealift_hold_skipped_versions 2`,
		`sealift_agent_state{state="paused"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
	m.Observe(StepInfo{At: at, Action: ActionUpToDate}, &updater.Status{}, nil)
	if body := scrape(); strings.Contains(body, "sealift_hold{") || !strings.Contains(body, "sealift_hold_skipped_versions 0") {
		t.Errorf("after the holds were cleared:\n%s", body)
	}
}
