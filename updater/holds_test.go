package updater

import (
	"errors"
	"strings"
	"testing"
	"time"

	"sealift/bootloader"
	"sealift/signing"
	"sealift/updater/rollout"
	"sealift/updater/state"
)

// TestDecideHolds: skips, pins and pauses narrow what decide takes, and
// the reason says which hold, who set it, since when, and how to lift it.
func TestDecideHolds(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	since := t0.Add(-day)
	skip := func(v string) state.Hold {
		return state.Hold{Kind: state.HoldSkip, Version: v, Reason: "kubelet regression", By: "alice", Since: since}
	}
	pin := func(v string) state.Hold { return state.Hold{Kind: state.HoldPin, Version: v, By: "bob", Since: since} }
	pause := state.Hold{Kind: state.HoldPause, Reason: "CVE review", Since: since}
	ended := state.Hold{Kind: state.HoldPause, Until: t0.Add(-time.Hour), Since: since}
	def := rollout.Default(t0)
	node := CheckOptions{Variant: "k8s", Arch: "x86_64"}
	downgrade := CheckOptions{Variant: "k8s", Arch: "x86_64", AllowDowngrade: true}
	three := targets(rel("k8s", "x86_64", "1.0", false), rel("k8s", "x86_64", "1.1", false), rel("k8s", "x86_64", "1.2", false))
	cases := []struct {
		name      string
		targets   map[string]signing.TargetInfo
		running   string
		holds     []state.Hold
		failed    map[string]*state.Outcome
		opts      CheckOptions
		take      string
		downgrade bool
		reason    string
	}{
		{"skip the newest: the next newest is taken", three, "1.0", []state.Hold{skip("1.2")}, nil, node, "1.1", false,
			"; 1.2 is skipped by alice (kubelet regression, since 2026-11-30T00:00:00Z); 'sealift hold clear skip 1.2' allows it"},
		{"skip every newer release", three, "1.0", []state.Hold{skip("1.1"), skip("1.2")}, nil, node, "", false,
			"up to date: 1.0 is the newest release; 1.2 is skipped by alice (kubelet regression, since 2026-11-30T00:00:00Z); 'sealift hold clear skip 1.2' allows it; 1.1 is skipped by alice"},
		{"a skip of an older release is not news", three, "1.2", []state.Hold{skip("1.1")}, nil, node, "", false, "up to date: 1.2 is the newest release"},
		{"the only release skipped on a fresh node", targets(rel("k8s", "x86_64", "1.1", false)), "", []state.Hold{skip("1.1")}, nil, node, "", false,
			`no signed release for variant "k8s", arch "x86_64" that this node may take; 1.1 is skipped by alice`},
		{"the only release failed", targets(rel("k8s", "x86_64", "1.1", false)), "1.0", nil, map[string]*state.Outcome{"1.1": {Reason: "marked bad"}}, node, "", false,
			`no signed release for variant "k8s", arch "x86_64" that this node may take; skipped 1.1 (failed here: marked bad)`},
		{"a newer release after a skipped one is taken", three, "1.0", []state.Hold{skip("1.1")}, nil, node, "1.2", false, "1.2 is newer"},
		{"skips and failures both said", three, "1.0", []state.Hold{skip("1.2")}, map[string]*state.Outcome{"1.1": {Reason: "marked bad"}}, node, "", false,
			"skipped 1.1 (failed here: marked bad) ('sealift retry VERSION' allows it again); 1.2 is skipped by alice"},
		{"the running release recalled: a skipped one is not the way out", targets(rel("k8s", "x86_64", "1.0", false), rel("k8s", "x86_64", "1.1", false), rel("k8s", "x86_64", "1.2", true)),
			"1.2", []state.Hold{skip("1.1")}, nil, node, "1.0", true, "the running 1.2 is recalled; 1.0 is the newest"},
		{"pin a newer release", three, "1.0", []state.Hold{pin("1.1")}, nil, node, "1.1", false,
			"1.1 is newer than the running 1.0; the node is pinned to 1.1 by bob (since 2026-11-30T00:00:00Z; 'sealift hold clear pin' lifts the pin)"},
		{"pinned to the running release", three, "1.1", []state.Hold{pin("1.1")}, nil, node, "", false, "up to date: 1.1 runs; the node is pinned to 1.1"},
		{"pin on a fresh node", three, "", []state.Hold{pin("1.0")}, nil, node, "1.0", false, "no release is running; the node is pinned to 1.0"},
		{"pin older: not downgrading", three, "1.2", []state.Hold{pin("1.0")}, nil, node, "", false,
			"pinned to 1.0 by bob (since 2026-11-30T00:00:00Z; 'sealift hold clear pin' lifts the pin), which is older than the running 1.2; not downgrading (--allow-downgrade to force)"},
		{"pin older with --allow-downgrade", three, "1.2", []state.Hold{pin("1.0")}, nil, downgrade, "1.0", true, "downgrade from 1.2 to 1.0 allowed by the operator; the node is pinned"},
		{"pin older, the running release recalled", targets(rel("k8s", "x86_64", "1.0", false), rel("k8s", "x86_64", "1.2", true)), "1.2", []state.Hold{pin("1.0")}, nil, node, "1.0", true,
			"the running 1.2 is recalled; the node is pinned to 1.0"},
		{"pin a recalled release", targets(rel("k8s", "x86_64", "1.0", false), rel("k8s", "x86_64", "1.1", true)), "1.0", []state.Hold{pin("1.1")}, nil, node, "", false, "lifts the pin), but 1.1 is recalled"},
		{"pin an unknown release", three, "1.0", []state.Hold{pin("9.9")}, nil, node, "", false, `but 9.9 is not a signed release for variant "k8s", arch "x86_64"`},
		{"pin a failed release", three, "1.0", []state.Hold{pin("1.1")}, map[string]*state.Outcome{"1.1": {Reason: "marked bad"}}, node, "", false,
			"but 1.1 failed here (marked bad); 'sealift retry 1.1' allows it again"},
		{"pin a skipped release", three, "1.0", []state.Hold{pin("1.1"), skip("1.1")}, nil, node, "", false, "but 1.1 is skipped by alice"},
		{"pin a release whose wave has not come", targets(rel("k8s", "x86_64", "1.0", false), staged("1.1", &def, false)), "1.0", []state.Hold{pin("1.1")}, nil, node, "", false,
			"which is not yet available to this node: eligible at 2026-12-02T19:55:19Z, wave 4 of 7"},
		{"pause: nothing is taken, what would be is said", three, "1.0", []state.Hold{pause}, nil, node, "", false,
			"updates are paused by the operator (CVE review, since 2026-11-30T00:00:00Z); 'sealift hold clear pause' resumes them; without the pause 1.2 would be taken: 1.2 is newer than the running 1.0"},
		{"pause with nothing to take", three, "1.2", []state.Hold{pause}, nil, node, "", false, "up to date: 1.2 is the newest release; updates are paused"},
		{"pause and pin", three, "1.0", []state.Hold{pause, pin("1.1")}, nil, node, "", false, "updates are paused by the operator (CVE review, since 2026-11-30T00:00:00Z); 'sealift hold clear pause' resumes them; without the pause 1.1 would be taken"},
		{"a pause that ended holds nothing", three, "1.0", []state.Hold{ended}, nil, node, "1.2", false, "1.2 is newer"},
		{"pause of a downgrade", targets(rel("k8s", "x86_64", "1.0", false), rel("k8s", "x86_64", "1.1", true)), "1.1", []state.Hold{pause}, nil, node, "", false,
			"without the pause 1.0 would be taken: the running 1.1 is recalled"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, err := decide(c.targets, c.running, c.failed, c.holds, c.opts, 731, t0)
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if res.Take != nil {
				got = res.Take.Meta.Version
			}
			if got != c.take || res.Downgrade != c.downgrade || !strings.Contains(res.Reason, c.reason) {
				t.Fatalf("take %q downgrade %v reason %q\nwant take %q, reason with %q", got, res.Downgrade, res.Reason, c.take, c.reason)
			}
			if len(res.Holds) != len(state.ActiveHolds(c.holds, t0)) {
				t.Fatalf("result holds %+v", res.Holds)
			}
		})
	}
}

func TestSetAndClearHolds(t *testing.T) {
	r := newRig(t, backends[0].make)
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	r.u.Now = func() time.Time { return now }
	bad := []struct {
		name string
		req  HoldRequest
		want string
	}{
		{"skip without a version", HoldRequest{Kind: state.HoldSkip}, "needs a VERSION"},
		{"pin with an end", HoldRequest{Kind: state.HoldPin, Version: "1.2", Until: now.Add(time.Hour)}, "only a pause has an end"},
		{"pause of a version", HoldRequest{Kind: state.HoldPause, Version: "1.2"}, "a pause holds every release"},
		{"pause ending in the past", HoldRequest{Kind: state.HoldPause, Until: now}, "not in the future"},
		{"unknown kind", HoldRequest{Kind: "freeze"}, "want skip, pin or pause"},
	}
	for _, c := range bad {
		if _, err := r.u.SetHold(c.req); !errors.Is(err, ErrBadInput) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	ch, err := r.u.SetHold(HoldRequest{Kind: state.HoldPause, Until: now.Add(2 * time.Hour), Actor: Actor{By: "alice", Reason: "CVE review"}})
	if err != nil || ch.Replaced != nil || ch.Hold.By != "alice" || !ch.Hold.Since.Equal(now) || ch.Note != "" {
		t.Fatalf("pause: %+v %v", ch, err)
	}
	if ch, err = r.u.SetHold(HoldRequest{Kind: state.HoldPause, Actor: Actor{By: "bob"}}); err != nil || ch.Replaced == nil || ch.Replaced.By != "alice" {
		t.Fatalf("second pause: %+v %v", ch, err)
	}
	if _, err := r.u.SetHold(HoldRequest{Kind: state.HoldSkip, Version: "1.2"}); err != nil {
		t.Fatal(err)
	}
	if hs, err := r.u.Holds(); err != nil || len(hs) != 2 || hs[0].Kind != state.HoldPause || hs[0].By != "bob" || !hs[0].Until.IsZero() {
		t.Fatalf("holds %+v %v", hs, err)
	}
	clearBad := []struct {
		kind    state.HoldKind
		version string
		is      error
	}{
		{state.HoldSkip, "", ErrBadInput},
		{state.HoldPin, "1.2", ErrBadInput},
		{"", "1.2", ErrBadInput},
		{state.HoldSkip, "1.3", ErrNoHold},
		{state.HoldPin, "", ErrNoHold},
	}
	for _, c := range clearBad {
		if _, err := r.u.ClearHolds(c.kind, c.version, Actor{}); !errors.Is(err, c.is) {
			t.Errorf("clear %q %q: %v, want %v", c.kind, c.version, err, c.is)
		}
	}
	gone, err := r.u.ClearHolds(state.HoldSkip, "1.2", Actor{By: "carol", Reason: "fixed in 1.2-2"})
	if err != nil || len(gone) != 1 || gone[0].Version != "1.2" {
		t.Fatalf("clear skip: %+v %v", gone, err)
	}
	if gone, err := r.u.ClearHolds("", "", Actor{}); err != nil || len(gone) != 1 || gone[0].Kind != state.HoldPause {
		t.Fatalf("clear all: %+v %v", gone, err)
	}
	if _, err := r.u.ClearHolds("", "", Actor{}); !errors.Is(err, ErrNoHold) {
		t.Fatalf("clear all of nothing: %v", err)
	}
	evs, _ := r.u.Events(0)
	var kinds []string
	for _, e := range evs {
		kinds = append(kinds, e.Kind)
	}
	if k := strings.Join(kinds, ","); k != "hold-set,hold-set,hold-set,hold-cleared,hold-cleared" {
		t.Fatalf("events %s", k)
	}
	if m := evs[3].Message; !strings.Contains(m, "hold skip 1.2 (set by the operator at 2026-11-24T12:00:00Z) cleared by carol: fixed in 1.2-2") {
		t.Fatalf("clear event %q", m)
	}
	if m := evs[0].Message; !strings.Contains(m, "hold pause until 2026-11-24T14:00:00Z set by alice at 2026-11-24T12:00:00Z: CVE review; no release is taken") || !strings.Contains(m, "neither checks, stages nor reboots") {
		t.Fatalf("set event %q", m)
	}

	// A pause that ends by itself stops holding at its end, and is
	// dropped with a record of that at the next change.
	if _, err := r.u.SetHold(HoldRequest{Kind: state.HoldPause, Until: now.Add(time.Hour), Actor: Actor{By: "dave"}}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Hour)
	if hs, _ := r.u.Holds(); len(hs) != 0 {
		t.Fatalf("holds after the pause's end: %+v", hs)
	}
	if st, _ := r.u.Status(); len(st.Holds) != 0 {
		t.Fatalf("status after the pause's end: %+v", st.Holds)
	}
	if _, err := r.u.ClearHolds(state.HoldPause, "", Actor{}); !errors.Is(err, ErrNoHold) {
		t.Fatalf("clearing an ended pause: %v", err)
	}
	evs, _ = r.u.Events(0)
	if e := evs[len(evs)-1]; e.Kind != state.EventHoldExpired || e.Message != "hold pause until 2026-11-24T13:00:00Z (set by dave at 2026-11-24T12:00:00Z) ended" {
		t.Fatalf("last event %+v", e)
	}
	if st, _ := r.store.Load(); len(st.Holds) != 0 {
		t.Fatalf("ended pause kept: %+v", st.Holds)
	}
}

// TestCancelAndRollbackLeaveSkips: a cancelled staged update and a
// release rolled back from are skipped from then on, with who and why; an
// interrupted write that is forgotten is not.
func TestCancelAndRollbackLeaveSkips(t *testing.T) {
	r := newRig(t, backends[0].make)
	u := r.u
	mustInstall(t, u, image(1, 16*4096), "v1")
	mustBoot(t, u, bootloader.SlotA, true)
	if _, err := u.MarkGood(); err != nil {
		t.Fatal(err)
	}
	mustInstall(t, u, image(2, 16*4096), "v2")
	st, _ := u.Status()
	if len(st.Notes) != 1 || !strings.Contains(st.Notes[0], "is staged") {
		t.Fatalf("notes before a hold: %q", st.Notes)
	}
	// A hold on the staged release: status says the agent will not
	// reboot into it, and how to undo the staging.
	ch, err := u.SetHold(HoldRequest{Kind: state.HoldPin, Version: "v1"})
	if err != nil || !strings.Contains(ch.Note, "v2 is staged in slot B, but the agent does not reboot into it: the node is pinned to v1") {
		t.Fatalf("pin while v2 is staged: %+v %v", ch, err)
	}
	if st, _ := u.Status(); len(st.Notes) != 2 || !strings.Contains(st.Notes[1], "'sealift cancel' undoes the staging") {
		t.Fatalf("notes with a hold: %q", st.Notes)
	}
	if _, err := u.ClearHolds(state.HoldPin, "", Actor{}); err != nil {
		t.Fatal(err)
	}
	c, err := u.Cancel(Actor{By: "alice", Reason: "wrong kernel"})
	if err != nil || c.Version != "v2" || c.Skip == nil || c.Skip.Version != "v2" || c.Skip.By != "alice" ||
		c.Skip.Reason != "its staged update was cancelled: wrong kernel" {
		t.Fatalf("cancel: %+v %+v %v", c, c.Skip, err)
	}
	if st, _ := u.Status(); len(st.Holds) != 1 || st.Holds[0].Name() != "skip v2" || st.Last.Reason != "wrong kernel" {
		t.Fatalf("status after cancel: holds %+v last %+v", st.Holds, st.Last)
	}

	// An interrupted write is forgotten by cancel, not skipped.
	r.f.budget = 3
	if _, err := r.faulty().Install(t.Context(), req(image(3, 16*4096), "v3")); err == nil {
		t.Fatal("install with a failing disk succeeded")
	}
	r.f.budget = -1
	if c, err := u.Cancel(Actor{}); err != nil || c.Phase != state.PhaseWriting || c.Skip != nil {
		t.Fatalf("cancel of an interrupted write: %+v %v", c, err)
	}

	// Rollback from v4 to v1 skips v4.
	mustInstall(t, u, image(4, 16*4096), "v4")
	mustBoot(t, u, bootloader.SlotB, true)
	if _, err := u.MarkGood(); err != nil {
		t.Fatal(err)
	}
	rb, err := u.Rollback(Actor{By: "bob", Reason: "latency"})
	if err != nil || rb.To != bootloader.SlotA || rb.Skip == nil || rb.Skip.Version != "v4" || rb.Skip.Reason != "rolled back from it: latency" {
		t.Fatalf("rollback: %+v %v", rb, err)
	}
	hs, _ := u.Holds()
	if len(hs) != 2 || hs[0].Version != "v2" || hs[1].Version != "v4" || hs[1].By != "bob" {
		t.Fatalf("holds %+v", hs)
	}
	// Back on the same release in both slots, a rollback skips nothing.
	mustBoot(t, u, bootloader.SlotA, false)
	st2, _ := r.store.Load()
	st2.Slots[bootloader.SlotB].Version = "v1"
	r.store.Save(st2)
	if rb, err := u.Rollback(Actor{}); err != nil || rb.Skip != nil {
		t.Fatalf("rollback between equal versions: %+v %v", rb, err)
	}
}

// TestCancelSticks: through signed metadata, a cancelled release is not
// staged again by the next update; a newer one is; a pause holds
// everything until it ends.
func TestCancelSticks(t *testing.T) {
	c := newChannel(t)
	c.node.u.Now = c.clock.Now
	c.goodV1()
	c.publish("1.1.0")
	if ir, err := c.update(CheckOptions{}); err != nil || ir.Record.Version != "1.1.0" {
		t.Fatalf("stage 1.1.0: %+v %v", ir, err)
	}
	if _, err := c.node.u.Cancel(Actor{By: "alice"}); err != nil {
		t.Fatal(err)
	}
	_, err := c.update(CheckOptions{})
	if !errors.Is(err, ErrNoRelease) || !strings.Contains(err.Error(), "1.1.0 is skipped by alice (its staged update was cancelled") ||
		!strings.Contains(err.Error(), "'sealift hold clear skip 1.1.0' allows it") {
		t.Fatalf("update after cancel: %v", err)
	}
	c.clock.Add(time.Hour)
	if _, err := c.node.u.SetHold(HoldRequest{Kind: state.HoldPause, Until: c.clock.Now().Add(2 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	c.publish("1.2.0")
	if _, err := c.update(CheckOptions{}); !errors.Is(err, ErrNoRelease) || !strings.Contains(err.Error(), "without the pause 1.2.0 would be taken") {
		t.Fatalf("update while paused: %v", err)
	}
	c.clock.Add(2 * time.Hour)
	ir, err := c.update(CheckOptions{})
	if err != nil || ir.Record.Version != "1.2.0" {
		t.Fatalf("update after the pause: %+v %v", ir, err)
	}
	evs, _ := c.node.u.Events(0)
	var kinds []string
	for _, e := range evs {
		kinds = append(kinds, e.Kind)
	}
	if k := strings.Join(kinds, ","); !strings.HasSuffix(k, "cancelled,hold-set,hold-set,hold-expired,installed") {
		t.Fatalf("events %s", k)
	}
}
