package updater

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"sealift/bootloader"
	"sealift/signing"
	"sealift/updater/rollout"
	"sealift/updater/state"
)

// TestJudgeStaged: the verdict on a staged release, from the same signed
// view decide reads. A release that may come back (halted, its wave moved
// away, a plan this sealift cannot read) waits; one that will not
// (recalled, no longer signed) or that a newer release this node may take
// replaces is cancelled. An operator's hold against it makes any verdict
// but a cancel a wait.
func TestJudgeStaged(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	def := rollout.Default(t0)
	halted := rollout.Default(t0)
	halted.Halt(t0.Add(30 * time.Hour))
	later := rollout.Default(t0.Add(10 * day))
	partial := rollout.Plan{Start: t0, Waves: []rollout.Wave{{After: time.Hour, Percent: 10}}}
	unusable := func() (string, signing.TargetInfo) {
		n := TargetName("k8s", "x86_64", "1.1")
		custom := `{"version":"1.1","variant":"k8s","arch":"x86_64","rollout":{"start":"2026-12-01T00:00:00Z","waves":[{"after_seconds":0,"percent":100}],"max_nodes":5}}`
		return n, signing.TargetInfo{Name: n, Length: 1, SHA256: strings.Repeat("a", 64), Custom: json.RawMessage(custom)}
	}
	const seed = 3 // wave 1 of the default plan: eligible 12 minutes in
	now := t0.Add(2 * day)
	node := CheckOptions{Variant: "k8s", Arch: "x86_64"}
	v10 := rel("k8s", "x86_64", "1.0", false)
	skip := []state.Hold{{Kind: state.HoldSkip, Version: "1.1", By: "alice", Since: t0}}
	pause := []state.Hold{{Kind: state.HoldPause, By: "alice", Since: t0}}
	pin := func(v string) []state.Hold {
		return []state.Hold{{Kind: state.HoldPin, Version: v, By: "alice", Since: t0}}
	}
	cases := []struct {
		name    string
		targets map[string]signing.TargetInfo
		staged  string
		seed    int
		action  StagedAction
		reason  string
		rollout bool // the verdict carries the staged release's rollout
		holds   []state.Hold
	}{
		{"no plan", targets(v10, rel("k8s", "x86_64", "1.1", false)), "1.1", seed, StagedReboot, "1.1 may still be taken", false, nil},
		{"eligible in its wave", targets(v10, staged("1.1", &def, false)), "1.1", seed, StagedReboot, "may still be taken", true, nil},
		{"halted", targets(v10, staged("1.1", &halted, false)), "1.1", seed, StagedWait,
			"1.1 may not be taken by this node now: rollout halted since 2026-12-02T06:00:00Z", true, nil},
		{"halted, an older release available", targets(v10, rel("k8s", "x86_64", "1.0.5", false), staged("1.1", &halted, false)), "1.1", seed, StagedWait,
			"rollout halted since", true, nil},
		{"halted, a newer release available", targets(v10, staged("1.1", &halted, false), rel("k8s", "x86_64", "1.2", false)), "1.1", seed, StagedCancel,
			"1.1 may not be taken by this node now (rollout halted since 2026-12-02T06:00:00Z; this node: wave 1 of 7, seed 3, 20% into the wave), and the newer 1.2 may", true, nil},
		{"halted, a newer release not yet available", targets(v10, staged("1.1", &halted, false), staged("1.2", &later, false)), "1.1", seed, StagedWait,
			"rollout halted since", true, nil},
		{"its wave moved later", targets(v10, staged("1.1", &later, false)), "1.1", seed, StagedWait, "eligible at 2026-12-11T00:12:00Z", true, nil},
		{"beyond a plan cut short", targets(v10, staged("1.1", &partial, false)), "1.1", 2000, StagedWait, "beyond the plan's last wave", true, nil},
		{"plan this sealift cannot use", targets(v10, unusable), "1.1", seed, StagedWait, "rollout plan cannot be used by this sealift", false, nil},
		{"recalled", targets(v10, rel("k8s", "x86_64", "1.1", true)), "1.1", seed, StagedCancel, "1.1 was recalled", false, nil},
		{"recalled while eligible in its wave", targets(v10, staged("1.1", &def, true)), "1.1", seed, StagedCancel, "1.1 was recalled", false, nil},
		{"no longer signed", targets(v10), "1.1", seed, StagedCancel, "1.1 is no longer a signed release for this node", false, nil},
		{"signed for another variant only", targets(v10, rel("gpu", "x86_64", "1.1", false)), "1.1", seed, StagedCancel, "no longer a signed release", false, nil},
		// An operator's hold against the staged release makes it wait,
		// whatever the metadata says, but for a cancel.
		{"skipped by the operator", targets(v10, staged("1.1", &def, false)), "1.1", seed, StagedWait,
			"1.1 is not rebooted into while an operator's hold is in force; 1.1 is skipped by alice", true, skip},
		{"paused", targets(v10, staged("1.1", &def, false)), "1.1", seed, StagedWait, "; updates are paused by alice", true, pause},
		{"pinned to another release", targets(v10, staged("1.1", &def, false)), "1.1", seed, StagedWait, "the node is pinned to 1.0", true, pin("1.0")},
		{"pinned to it", targets(v10, staged("1.1", &def, false)), "1.1", seed, StagedReboot, "may still be taken", true, pin("1.1")},
		{"halted and paused", targets(v10, staged("1.1", &halted, false)), "1.1", seed, StagedWait,
			"rollout halted since 2026-12-02T06:00:00Z; this node: wave 1 of 7, seed 3, 20% into the wave; updates are paused by alice", true, pause},
		{"halted, a newer release available, paused", targets(v10, staged("1.1", &halted, false), rel("k8s", "x86_64", "1.2", false)), "1.1", seed, StagedWait,
			"updates are paused", true, pause},
		{"halted, the newer release skipped", targets(v10, staged("1.1", &halted, false), rel("k8s", "x86_64", "1.2", false)), "1.1", seed, StagedWait,
			"1.1 may not be taken by this node now: rollout halted since", true, []state.Hold{{Kind: state.HoldSkip, Version: "1.2", Since: t0}}},
		{"halted, a newer release available, pinned to it", targets(v10, staged("1.1", &halted, false), rel("k8s", "x86_64", "1.2", false)), "1.1", seed, StagedWait,
			"rollout halted since", true, pin("1.1")},
		{"recalled and paused", targets(v10, rel("k8s", "x86_64", "1.1", true)), "1.1", seed, StagedCancel, "1.1 was recalled", false, pause},
		{"recalled and pinned to it", targets(v10, rel("k8s", "x86_64", "1.1", true)), "1.1", seed, StagedCancel, "1.1 was recalled", false, pin("1.1")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			all, _, err := releases(c.targets, node)
			if err != nil {
				t.Fatal(err)
			}
			res, err := decide(c.targets, "1.0", nil, c.holds, node, c.seed, now)
			if err != nil {
				t.Fatal(err)
			}
			v := judgeStaged(all, c.staged, bootloader.SlotB, res.Take, res.Holds, c.seed, now)
			if v.Version != c.staged || v.Slot != bootloader.SlotB || v.Action != c.action || !strings.Contains(v.Reason, c.reason) {
				t.Fatalf("%+v, want %s with %q", v, c.action, c.reason)
			}
			if (v.Rollout != nil) != c.rollout {
				t.Fatalf("rollout %+v, want one: %v", v.Rollout, c.rollout)
			}
		})
	}
}

// TestStagedThroughTUF: a release staged by Update and then halted,
// resumed and recalled in the signed metadata; Check judges the staged
// update each time, and CancelStaged undoes it with the reason recorded.
func TestStagedThroughTUF(t *testing.T) {
	ctx := context.Background()
	c := newChannel(t)
	c.node.u.Now = c.clock.Now
	c.goodV1()
	c.publish("1.1.0")
	target := TargetName(testVariant, testArch, "1.1.0")
	opts := CheckOptions{Variant: testVariant, Arch: testArch}
	check := func() *CheckResult {
		t.Helper()
		trust, _ := c.trust()
		res, err := c.node.u.Check(trust, opts)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := check(); res.Staged != nil {
		t.Fatalf("nothing staged yet: %+v", res.Staged)
	}
	if ir, err := c.update(opts); err != nil || ir.Slot != bootloader.SlotB {
		t.Fatalf("stage 1.1.0: %+v %v", ir, err)
	}
	if v := check().Staged; v == nil || v.Action != StagedReboot || v.Version != "1.1.0" || v.Slot != bootloader.SlotB {
		t.Fatalf("staged: %+v", v)
	}

	c.clock.Add(time.Minute)
	if _, _, err := HaltRollout(ctx, c.pub, c.repo, target, c.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if v := check().Staged; v == nil || v.Action != StagedWait || !strings.Contains(v.Reason, "rollout halted since") || v.Rollout == nil || !v.Rollout.Halted {
		t.Fatalf("halted: %+v", v)
	}
	c.clock.Add(time.Minute)
	if _, _, err := ResumeRollout(ctx, c.pub, c.repo, target, c.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if v := check().Staged; v == nil || v.Action != StagedReboot {
		t.Fatalf("resumed: %+v", v)
	}

	if err := SetRecalled(ctx, c.pub, c.repo, target, true); err != nil {
		t.Fatal(err)
	}
	v := check().Staged
	if v == nil || v.Action != StagedCancel || v.Reason != "1.1.0 was recalled" {
		t.Fatalf("recalled: %+v", v)
	}
	agent := Actor{By: "sealift agent", Reason: v.Reason}
	if _, err := c.node.u.CancelStaged("1.2.0", agent); !errors.Is(err, ErrNoPending) {
		t.Fatalf("cancelling another version: %v", err)
	}
	p, err := c.node.u.CancelStaged(v.Version, agent)
	if err != nil || p.Version != "1.1.0" || p.Skip != nil {
		t.Fatalf("cancel: %+v %v", p, err)
	}
	c.unchanged()
	st, _ := c.node.u.State.Load()
	last := st.Events[len(st.Events)-1]
	if st.Pending != nil || st.Last.Reason != "1.1.0 was recalled" || last.Kind != state.EventCancelled ||
		last.Message != "the update to 1.1.0 in slot B was cancelled (it was trial) by sealift agent: 1.1.0 was recalled" {
		t.Fatalf("pending %+v, last %+v, event %+v", st.Pending, st.Last, last)
	}
	// Unlike an operator's cancel, it leaves no skip: the recall is the
	// signed metadata's to lift.
	if len(st.Holds) != 0 {
		t.Fatalf("holds after the cancel: %+v", st.Holds)
	}
	if res := check(); res.Staged != nil || res.Take != nil {
		t.Fatalf("after the cancel: staged %+v, take %+v", res.Staged, res.Take)
	}
	if _, err := c.node.u.CancelStaged("1.1.0", agent); !errors.Is(err, ErrNoPending) {
		t.Fatalf("nothing staged: %v", err)
	}

	// Un-recalled, it is taken again like any release.
	if err := SetRecalled(ctx, c.pub, c.repo, target, false); err != nil {
		t.Fatal(err)
	}
	if res := check(); res.Take == nil || res.Take.Meta.Version != "1.1.0" {
		t.Fatalf("un-recalled: take %+v (%s)", res.Take, res.Reason)
	}
}

// TestStagedHeldThroughTUF: Check's verdict on a staged release honours
// the operator's holds as the agent does: a pause or a skip of it keeps
// it staged but not rebooted into, until it is cleared.
func TestStagedHeldThroughTUF(t *testing.T) {
	c := newChannel(t)
	c.node.u.Now = c.clock.Now
	c.goodV1()
	c.publish("1.1.0")
	opts := CheckOptions{Variant: testVariant, Arch: testArch}
	check := func() *StagedVerdict {
		t.Helper()
		trust, _ := c.trust()
		res, err := c.node.u.Check(trust, opts)
		if err != nil {
			t.Fatal(err)
		}
		return res.Staged
	}
	if _, err := c.update(opts); err != nil {
		t.Fatal(err)
	}
	for _, req := range []HoldRequest{
		{Kind: state.HoldPause, Actor: Actor{By: "alice", Reason: "CVE review"}},
		{Kind: state.HoldSkip, Version: "1.1.0", Actor: Actor{By: "alice"}},
	} {
		if _, err := c.node.u.SetHold(req); err != nil {
			t.Fatal(err)
		}
		if v := check(); v == nil || v.Action != StagedWait || !strings.Contains(v.Reason, "by alice") {
			t.Fatalf("%s: %+v", req.Kind, v)
		}
		if _, err := c.node.u.ClearHolds(req.Kind, req.Version, Actor{}); err != nil {
			t.Fatal(err)
		}
		if v := check(); v == nil || v.Action != StagedReboot {
			t.Fatalf("%s cleared: %+v", req.Kind, v)
		}
	}
}
