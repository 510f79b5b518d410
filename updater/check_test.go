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

func TestCompareVersions(t *testing.T) {
	cases := []struct {
		a, b string
		want int
	}{
		{"1.2.0", "1.2.0", 0},
		{"v1.2.0", "1.2.0", 0},
		{"1.10.0", "1.9.0", 1},
		{"1.2", "1.2.1", -1},
		{"1.2.0-rc1", "1.2.0", -1},
		{"1.2.0-rc2", "1.2.0-rc10", -1},
		{"2026.11.1", "2026.2.9", 1},
		{"1.2.a", "1.2.1", 1},
	}
	for _, c := range cases {
		if got := CompareVersions(c.a, c.b); got != c.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
		if got := CompareVersions(c.b, c.a); got != -c.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", c.b, c.a, got, -c.want)
		}
	}
}

func target(variant, arch, version string, recalled bool) (string, signing.TargetInfo) {
	return targetWith(ReleaseMeta{Version: version, Variant: variant, Arch: arch, Recalled: recalled})
}

func targetWith(meta ReleaseMeta) (string, signing.TargetInfo) {
	m, _ := json.Marshal(meta)
	variant, arch, version := meta.Variant, meta.Arch, meta.Version
	name := TargetName(variant, arch, version)
	return name, signing.TargetInfo{Name: name, Length: 100, SHA256: strings.Repeat("a", 64), Custom: m}
}

func targets(ts ...func() (string, signing.TargetInfo)) map[string]signing.TargetInfo {
	out := map[string]signing.TargetInfo{}
	for _, f := range ts {
		n, i := f()
		out[n] = i
	}
	return out
}

func rel(variant, arch, version string, recalled bool) func() (string, signing.TargetInfo) {
	return func() (string, signing.TargetInfo) { return target(variant, arch, version, recalled) }
}

func TestDecide(t *testing.T) {
	node := CheckOptions{Variant: "k8s", Arch: "x86_64"}
	cases := []struct {
		name      string
		targets   map[string]signing.TargetInfo
		running   string
		opts      CheckOptions
		failed    map[string]*state.Outcome
		take      string
		downgrade bool
		reason    string
	}{
		{"fresh node takes newest", targets(rel("k8s", "x86_64", "1.0", false), rel("k8s", "x86_64", "1.1", false)), "", node, nil, "1.1", false, "no release is running"},
		{"newer release", targets(rel("k8s", "x86_64", "1.0", false), rel("k8s", "x86_64", "1.1", false)), "1.0", node, nil, "1.1", false, "newer"},
		{"up to date", targets(rel("k8s", "x86_64", "1.1", false)), "1.1", node, nil, "", false, "up to date"},
		{"other variant ignored", targets(rel("gpu", "x86_64", "9.0", false), rel("k8s", "x86_64", "1.0", false)), "1.0", node, nil, "", false, "up to date"},
		{"other arch ignored", targets(rel("k8s", "aarch64", "9.0", false)), "1.0", node, nil, "", false, "no signed release"},
		{"recalled newest skipped", targets(rel("k8s", "x86_64", "1.0", false), rel("k8s", "x86_64", "1.1", true)), "1.0", node, nil, "", false, "up to date"},
		{"downgrade refused", targets(rel("k8s", "x86_64", "1.0", false)), "1.1", node, nil, "", false, "not downgrading"},
		{"downgrade allowed by operator", targets(rel("k8s", "x86_64", "1.0", false)), "1.1", CheckOptions{Variant: "k8s", Arch: "x86_64", AllowDowngrade: true}, nil, "1.0", true, "allowed by the operator"},
		{"running release recalled", targets(rel("k8s", "x86_64", "1.0", false), rel("k8s", "x86_64", "1.1", true)), "1.1", node, nil, "1.0", true, "recalled"},
		{"failed release not retried", targets(rel("k8s", "x86_64", "1.0", false), rel("k8s", "x86_64", "1.1", false)), "1.0", node,
			map[string]*state.Outcome{"1.1": {Reason: "marked bad"}}, "", false, "skipped 1.1 (failed here: marked bad)"},
		{"a newer release after a failed one is taken", targets(rel("k8s", "x86_64", "1.1", false), rel("k8s", "x86_64", "1.2", false)), "1.0", node,
			map[string]*state.Outcome{"1.1": {Reason: "marked bad"}}, "1.2", false, "newer"},
		{"everything recalled", targets(rel("k8s", "x86_64", "1.1", true)), "1.0", node, nil, "", false, "recalled"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, err := decide(c.targets, c.running, c.failed, nil, c.opts, 731, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if res.Take != nil {
				got = res.Take.Meta.Version
			}
			if got != c.take || res.Downgrade != c.downgrade || !strings.Contains(res.Reason, c.reason) {
				t.Fatalf("take %q downgrade %v reason %q", got, res.Downgrade, res.Reason)
			}
		})
	}
}

func TestDecideRejectsMislabelledTarget(t *testing.T) {
	_, info := target("k8s", "x86_64", "1.1", false)
	_, err := decide(map[string]signing.TargetInfo{"k8s/x86_64/1.0.json": info}, "1.0", nil, nil, CheckOptions{Variant: "k8s", Arch: "x86_64"}, 0, time.Now())
	if err == nil || !strings.Contains(err.Error(), "carries metadata") {
		t.Fatalf("got %v", err)
	}
}

// staged is a release of variant k8s, arch x86_64 with a rollout plan.
func staged(version string, plan *rollout.Plan, recalled bool) func() (string, signing.TargetInfo) {
	return func() (string, signing.TargetInfo) {
		return targetWith(ReleaseMeta{Version: version, Variant: "k8s", Arch: "x86_64", Recalled: recalled, Rollout: plan})
	}
}

// TestDecideRollout: a release is taken only once its rollout reaches the
// node; a halted rollout is taken by no node that is not on it; a node
// that cannot take the newest release takes the newest it may.
func TestDecideRollout(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	def := rollout.Default(t0)
	halted := rollout.Default(t0)
	halted.Halt(t0.Add(30 * time.Hour))
	partial := rollout.Plan{Start: t0, Waves: []rollout.Wave{{After: time.Hour, Percent: 10}}}
	const wave4 = 731 // default plan: wave 4 (15%..40%), eligible at 2026-12-02T19:55:19Z
	at731 := time.Date(2026, 12, 2, 19, 55, 19, 0, time.UTC)
	node := CheckOptions{Variant: "k8s", Arch: "x86_64"}
	cases := []struct {
		name      string
		targets   map[string]signing.TargetInfo
		running   string
		seed      int
		now       time.Time
		opts      CheckOptions
		take      string
		downgrade bool
		reason    string
		wave      int // of res.Rollout; 0: no Rollout
		eligible  bool
	}{
		{"not yet eligible", targets(rel("k8s", "x86_64", "1.0", false), staged("1.1", &def, false)), "1.0", wave4, t0.Add(day), node,
			"", false, "1.1 is newer than the running 1.0 but not yet available to this node: eligible at 2026-12-02T19:55:19Z, wave 4 of 7, seed 731, 83% into the wave", 4, false},
		{"a second early", targets(staged("1.1", &def, false)), "1.0", wave4, at731.Add(-time.Second), node, "", false, "eligible at", 4, false},
		{"at its time", targets(staged("1.1", &def, false)), "1.0", wave4, at731, node, "1.1", false, "newer than the running", 4, true},
		{"canary seed early", targets(staged("1.1", &def, false)), "1.0", 3, t0.Add(15 * time.Minute), node, "1.1", false, "newer", 1, true},
		{"fresh node takes the newest", targets(rel("k8s", "x86_64", "1.1", false)), "", 0, t0, node, "1.1", false, "no release is running", 0, false},
		{"before the start", targets(staged("1.1", &def, false)), "1.0", 0, t0.Add(-time.Hour), node, "", false, "eligible at 2026-12-01T00:03:00Z, wave 1 of 7", 1, false},
		{"halted: not taken even when its time passed", targets(staged("1.1", &halted, false)), "1.0", 3, t0.Add(2 * day), node,
			"", false, "rollout halted since 2026-12-02T06:00:00Z", 1, false},
		{"halted: a node on it stays", targets(rel("k8s", "x86_64", "1.0", false), staged("1.1", &halted, false)), "1.1", 3, t0.Add(2 * day), node,
			"", false, "up to date", 1, false},
		{"beyond a partial plan", targets(staged("1.1", &partial, false)), "1.0", 2000, t0.Add(300 * day), node,
			"", false, "beyond the plan's last wave (10% of the fleet", 0, false},
		{"older release taken while the newest waits", targets(rel("k8s", "x86_64", "1.1", false), staged("1.2", &def, false)), "1.0", wave4, t0, node,
			"1.1", false, "1.1 is newer than the running 1.0; 1.2 is not yet available to this node", 4, false},
		{"fresh node takes what it may", targets(rel("k8s", "x86_64", "1.1", false), staged("1.2", &def, false)), "", wave4, t0, node,
			"1.1", false, "no release is running; 1.2 is not yet available", 4, false},
		{"fresh node, nothing available", targets(staged("1.2", &def, false)), "", wave4, t0, node, "", false, "no release is running; 1.2 is not yet", 4, false},
		{"recalled running release: leave for the newest available", targets(rel("k8s", "x86_64", "1.0", false), staged("1.1", nil, true), staged("1.2", &def, false)), "1.1", wave4, t0, node,
			"1.0", true, "the running 1.1 is recalled; 1.0 is the newest release not recalled that this node may take", 4, false},
		{"recalled running release: forward when available", targets(rel("k8s", "x86_64", "1.0", false), staged("1.1", nil, true), staged("1.2", &def, false)), "1.1", wave4, at731, node,
			"1.2", false, "recalled", 4, true},
		{"recalled running release, nothing else available", targets(staged("1.1", nil, true), staged("1.2", &def, false)), "1.1", wave4, t0, node,
			"", false, "the running 1.1 is recalled, but no other release is available to this node yet", 4, false},
		{"recalled release with a plan never taken", targets(rel("k8s", "x86_64", "1.0", false), staged("1.1", &def, true)), "1.0", 3, t0.Add(10 * day), node,
			"", false, "up to date", 0, false},
		{"downgrade allowed goes to an available release", targets(rel("k8s", "x86_64", "1.0", false), staged("1.1", &def, false)), "1.5", wave4, t0,
			CheckOptions{Variant: "k8s", Arch: "x86_64", AllowDowngrade: true}, "1.0", true, "downgrade from 1.5 to 1.0", 4, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, err := decide(c.targets, c.running, nil, nil, c.opts, c.seed, c.now)
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if res.Take != nil {
				got = res.Take.Meta.Version
			}
			if got != c.take || res.Downgrade != c.downgrade || !strings.Contains(res.Reason, c.reason) || res.Seed != c.seed {
				t.Fatalf("take %q downgrade %v reason %q", got, res.Downgrade, res.Reason)
			}
			// Taking the newest release leaves nothing to wait for.
			if got != "" && res.Newest != nil && got == res.Newest.Meta.Version && strings.Contains(res.Reason, "not yet available") {
				t.Fatalf("takes the newest %s, yet the reason says it waits: %q", got, res.Reason)
			}
			switch {
			case c.wave == 0 && res.Rollout != nil && !res.Rollout.Beyond:
				t.Fatalf("rollout %+v, want none", res.Rollout)
			case c.wave > 0 && (res.Rollout == nil || res.Rollout.Wave != c.wave || res.Rollout.Eligible != c.eligible):
				t.Fatalf("rollout %+v, want wave %d eligible %v", res.Rollout, c.wave, c.eligible)
			}
		})
	}
}

const day = 24 * time.Hour

// TestDecideUnusablePlan: a plan this sealift cannot read (a newer
// publisher's field, or an invalid plan that was signed anyway) keeps the
// release visible and untaken.
func TestDecideUnusablePlan(t *testing.T) {
	for name, plan := range map[string]string{
		"unknown field":   `{"start":"2026-12-01T00:00:00Z","waves":[{"after_seconds":0,"percent":100}],"max_nodes":5}`,
		"invalid plan":    `{"start":"2026-12-01T00:00:00Z","waves":[{"after_seconds":0,"percent":100},{"after_seconds":60,"percent":50}]}`,
		"not even a plan": `"soon"`,
	} {
		t.Run(name, func(t *testing.T) {
			custom := `{"version":"1.1","variant":"k8s","arch":"x86_64","rollout":` + plan + `}`
			n := TargetName("k8s", "x86_64", "1.1")
			ts := map[string]signing.TargetInfo{n: {Name: n, Length: 1, SHA256: strings.Repeat("a", 64), Custom: json.RawMessage(custom)}}
			res, err := decide(ts, "1.0", nil, nil, CheckOptions{Variant: "k8s", Arch: "x86_64"}, 0, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if res.Take != nil || res.Newest == nil || !strings.Contains(res.Reason, "rollout plan cannot be used by this sealift") {
				t.Fatalf("%+v", res)
			}
		})
	}
}

func seed(n int) *int { return &n }

// TestRolloutThroughTUF runs a staged release end to end through signed
// metadata: the node waits for its wave, a halt stops even an eligible
// node, the resume continues the schedule where it stopped, and the node
// then installs the release.
func TestRolloutThroughTUF(t *testing.T) {
	ctx := context.Background()
	c := newChannel(t)
	c.node.u.Now = c.clock.Now
	c.goodV1()
	c.publish("1.1.0")
	target := TargetName(testVariant, testArch, "1.1.0")
	t0 := c.clock.Now()
	if _, err := SetRollout(ctx, c.pub, c.repo, target, &rollout.Plan{Waves: rollout.DefaultWaves()}, t0); !errors.Is(err, ErrBadInput) ||
		!strings.Contains(err.Error(), "start: required") {
		t.Fatalf("plan without start: %v", err)
	}
	plan := rollout.Default(t0)
	if _, err := SetRollout(ctx, c.pub, c.repo, target, &plan, t0); err != nil {
		t.Fatal(err)
	}
	check := func(s int) *CheckResult {
		t.Helper()
		trust, _ := c.trust()
		res, err := c.node.u.Check(trust, CheckOptions{Variant: testVariant, Arch: testArch, Seed: seed(s)})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	// Seed 3 is in wave 1 (eligible 12 minutes in), seed 731 in wave 4.
	if res := check(3); res.Take != nil || res.Rollout == nil || res.Rollout.Wave != 1 || !strings.Contains(res.Reason, "eligible at") || res.SeedFrom != SeedFromConfig {
		t.Fatalf("before its time: %+v %+v", res, res.Rollout)
	}
	c.clock.Add(15 * time.Minute)
	if res := check(3); res.Take == nil || !res.Rollout.Eligible {
		t.Fatalf("at its time: %+v", res)
	}
	if res := check(731); res.Take != nil || res.Rollout.Wave != 4 || !strings.Contains(res.Reason, "wave 4 of 7, seed 731") {
		t.Fatalf("later wave: %+v", res)
	}

	// Halt: the eligible node no longer takes it.
	m, changed, err := HaltRollout(ctx, c.pub, c.repo, target, c.clock.Now())
	if err != nil || !changed || !m.Rollout.Halted() {
		t.Fatalf("halt: %+v %v %v", m, changed, err)
	}
	if _, changed, err := HaltRollout(ctx, c.pub, c.repo, target, c.clock.Now().Add(time.Minute)); err != nil || changed {
		t.Fatalf("second halt: %v %v", changed, err)
	}
	if res := check(3); res.Take != nil || !res.Rollout.Halted || !strings.Contains(res.Reason, "rollout halted since") {
		t.Fatalf("halted: %+v", res)
	}
	// Resume two hours later: the start moves by two hours, so seed 3 is
	// eligible again at once and seed 21 (wave 2, due 1h04m in) still waits.
	c.clock.Add(2 * time.Hour)
	m, changed, err = ResumeRollout(ctx, c.pub, c.repo, target, c.clock.Now())
	if err != nil || !changed || m.Rollout.Halted() || !m.Rollout.Start.Equal(t0.Add(2*time.Hour)) {
		t.Fatalf("resume: %+v %v %v", m.Rollout, changed, err)
	}
	if res := check(21); res.Take != nil || res.Rollout.Wave != 2 {
		t.Fatalf("seed 21 after resume: %+v", res)
	}
	// The node's own seed is the one kept in the state: pin it to 3.
	st, _ := c.node.u.State.Load()
	st.Seed = seed(3)
	if err := c.node.u.State.Save(st); err != nil {
		t.Fatal(err)
	}
	ir, err := c.update(CheckOptions{})
	if err != nil || ir.Record.Version != "1.1.0" || ir.Slot != bootloader.SlotB {
		t.Fatalf("update after resume: %+v %v", ir, err)
	}
}

// TestNodeSeed: the seed is drawn once and kept; the config overrides it;
// an out-of-range seed is refused, not replaced.
func TestNodeSeed(t *testing.T) {
	r := newRig(t, backends[0].make)
	s1, from, err := r.u.NodeSeed(nil)
	if err != nil || from != SeedFromNew || rollout.CheckSeed(s1) != nil {
		t.Fatalf("%d %s %v", s1, from, err)
	}
	for range 3 {
		if s, from, err := r.u.NodeSeed(nil); err != nil || s != s1 || from != SeedFromState {
			t.Fatalf("%d %s %v, want %d from the state", s, from, err, s1)
		}
	}
	if s, from, err := r.u.NodeSeed(seed(0)); err != nil || s != 0 || from != SeedFromConfig {
		t.Fatalf("override: %d %s %v", s, from, err)
	}
	if _, _, err := r.u.NodeSeed(seed(2048)); !errors.Is(err, ErrBadInput) || !strings.Contains(err.Error(), "node.seed") {
		t.Fatalf("override 2048: %v", err)
	}
	st, _ := r.u.State.Load()
	st.Seed = seed(5000)
	r.u.State.Save(st)
	if _, _, err := r.u.NodeSeed(nil); !errors.Is(err, ErrBadInput) {
		t.Fatalf("edited state: %v", err)
	}
}
