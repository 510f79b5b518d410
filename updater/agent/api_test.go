package agent

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sealift/bootloader"
	"sealift/updater"
	"sealift/updater/state"
)

type fakeOps struct {
	events  []state.Event
	pending *state.Pending
}

func (o *fakeOps) Cancel(context.Context, updater.Actor) (*updater.CancelResult, error) {
	if o.pending == nil {
		return nil, updater.ErrNoPending
	}
	p := o.pending
	o.pending = nil
	return &updater.CancelResult{Pending: *p, Skip: &state.Hold{Kind: state.HoldSkip, Version: p.Version}}, nil
}

func (o *fakeOps) Rollback(context.Context, updater.Actor) (*updater.RollbackResult, error) {
	return &updater.RollbackResult{To: bootloader.SlotB}, nil
}

func (o *fakeOps) SetHold(context.Context, updater.HoldRequest) (*updater.HoldChange, error) {
	return nil, errors.New("not in this test")
}

func (o *fakeOps) ClearHolds(context.Context, state.HoldKind, string, updater.Actor) ([]state.Hold, error) {
	return nil, errors.New("not in this test")
}

func (o *fakeOps) Events(_ context.Context, after uint64) ([]state.Event, error) {
	var out []state.Event
	for _, e := range o.events {
		if e.Seq > after {
			out = append(out, e)
		}
	}
	return out, nil
}

func TestLocalAPI(t *testing.T) {
	r := newRig(t, Policy{Interval: time.Hour, Reboot: Manual}, nil)
	r.step(t, ActionUpToDate)
	ops := &fakeOps{
		events:  []state.Event{{Seq: 1, Kind: state.EventInstalled}, {Seq: 2, Kind: state.EventBooted}},
		pending: &state.Pending{Slot: bootloader.SlotB, Version: "1.1", Phase: state.PhaseTrial},
	}
	sock := filepath.Join(t.TempDir(), "run", "agent.sock")
	ln, err := ListenSocket(sock)
	if err != nil {
		t.Fatal(err)
	}
	wake := make(chan struct{}, 1)
	srv := &http.Server{Handler: r.a.Handler(ops, wake)}
	go srv.Serve(ln)
	defer srv.Close()
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	if _, err := ListenSocket(sock); err == nil {
		t.Fatal("a second agent could listen on the same socket")
	}

	c, err := Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := c.Status(ctx)
	if err != nil || st.Node.Running != bootloader.SlotA || st.Agent.Reboot != Manual || st.Agent.Last.Action != ActionUpToDate {
		t.Fatalf("status %+v, %v", st, err)
	}
	if res, err := c.Check(ctx); err != nil || res.Running != "1.0" {
		t.Fatalf("check %+v, %v", res, err)
	}
	if evs, err := c.Events(ctx, 1); err != nil || len(evs) != 1 || evs[0].Seq != 2 {
		t.Fatalf("events %+v, %v", evs, err)
	}
	if err := c.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wake:
	default:
		t.Fatal("apply did not wake the agent")
	}
	if !r.a.force {
		t.Fatal("apply did not force the next step")
	}
	// While the agent changes the disk, cancel is refused as busy.
	r.a.opMu.Lock()
	if _, err := c.Cancel(ctx, updater.Actor{}); !errors.Is(err, ErrBusy) {
		t.Fatalf("cancel during an update: %v", err)
	}
	r.a.opMu.Unlock()
	if p, err := c.Cancel(ctx, updater.Actor{}); err != nil || p.Version != "1.1" || p.Skip == nil || p.Skip.Version != "1.1" {
		t.Fatalf("cancel: %+v, %v", p, err)
	}
	var apiErr *APIError
	if _, err := c.Cancel(ctx, updater.Actor{}); !errors.As(err, &apiErr) || apiErr.Status != http.StatusUnprocessableEntity {
		t.Fatalf("second cancel: %v", err)
	}
	if rb, err := c.Rollback(ctx, updater.Actor{}); err != nil || rb.To != bootloader.SlotB {
		t.Fatalf("rollback: %+v, %v", rb, err)
	}
	srv.Close()
	if _, err := Dial(sock); err == nil {
		t.Fatal("Dial succeeded with no agent serving")
	}
}

func TestMetrics(t *testing.T) {
	m := NewMetrics()
	at := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	st := &updater.Status{
		Slots:     []updater.SlotStatus{{Slot: bootloader.SlotB, Running: true, Record: &state.SlotRecord{Version: "1.1"}}},
		Failed:    map[string]*state.Outcome{"1.2": {}},
		FleetLock: &state.LockHold{Group: "g"},
	}
	m.Observe(StepInfo{At: at, Action: ActionUpToDate, Next: at.Add(time.Hour), Check: &updater.CheckResult{}}, st,
		[]state.Event{{Seq: 1, Kind: state.EventFellBack}, {Seq: 2, Kind: state.EventBooted}, {Seq: 3, Kind: state.EventFellBack}})
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`sealift_info{slot="B",version="1.1"} 1`,
		`sealift_agent_state{state="up-to-date"} 1`,
		`sealift_last_check_success 1`,
		`sealift_update_available 0`,
		`sealift_failed_releases 1`,
		`sealift_fleetlock_held 1`,
		`sealift_rollbacks 2`,
		"sealift_agent_next_step_timestamp_seconds 1.795518e+09",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
	m.Observe(StepInfo{At: at, Action: ActionError}, nil, nil)
	rec = httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if body := rec.Body.String(); !strings.Contains(body, "sealift_last_check_success 0") || strings.Contains(body, `state="up-to-date"`) ||
		!strings.Contains(body, "sealift_rollbacks 2") {
		t.Errorf("after a failed step:\n%s", body)
	}
}
