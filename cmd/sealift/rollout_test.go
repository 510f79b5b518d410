package main

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sealift/internal/kernelimage"
	"sealift/updater"
)

// build builds a release into the publisher's layout without publishing it.
func (p *publisher) build(version string, seed int64) {
	p.t.Helper()
	d := filepath.Join(p.dir, "src-"+version)
	os.MkdirAll(d, 0o755)
	img := make([]byte, 1<<20)
	rand.New(rand.NewSource(seed)).Read(img)
	os.WriteFile(filepath.Join(d, "root.img"), img, 0o644)
	os.WriteFile(filepath.Join(d, "vmlinuz"), kernelimage.Synthetic([]byte("kernel "+version)), 0o644)
	mustCLI(p.t, "release", "build", filepath.Join(d, "root.img"), "--kernel", filepath.Join(d, "vmlinuz"),
		"--version", version, "--variant", "k8s", "--arch", "x86_64", "--out", p.layout, "--chunk-size", "1M")
}

func (p *publisher) rollout(verb, version string, extra ...string) string {
	p.t.Helper()
	args := append([]string{"release", "rollout", verb, version, "--tuf", p.tuf, "--variant", "k8s", "--arch", "x86_64"}, extra...)
	if verb != "show" {
		args = append(args, p.dest...)
	}
	return mustCLI(p.t, args...)
}

// TestCLIRollout drives a staged release through the CLI: a node in wave
// 4 waits, takes the release once the plan says so, stops while the
// rollout is halted and goes on after the resume.
func TestCLIRollout(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "media")
	os.MkdirAll(dir, 0o755)
	p := newPublisher(t, "--layout", dir)
	disk, cfg := newNode(t, p, fmt.Sprintf("[source]\nlayout = %q", dir))
	f, _ := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("seed = 731\n") // [node] is the config's last section
	f.Close()

	p.release("1.0.0", 1)
	mustCLI(t, "update", "--disk", disk, "--config", cfg)
	mustCLI(t, "boot", "simulate", "--disk", disk, "--apply")
	mustCLI(t, "mark-good", "--disk", disk)

	// Seed 731 is in wave 4 of the default plan, 1d19h55m19s after the start.
	now := time.Now().UTC().Truncate(time.Second)
	p.build("1.1.0", 2)
	out := mustCLI(t, append([]string{"release", "publish", "--tuf", p.tuf, "--from", p.layout, "--version", "1.1.0",
		"--plan", "default", "--start", now.Add(-24 * time.Hour).Format(time.RFC3339)}, p.dest...)...)
	if !strings.Contains(out, "rollout: 7 waves from") || !strings.Contains(out, "now: 15.0% of the fleet eligible") {
		t.Fatalf("publish: %s", out)
	}
	eligibleAt := now.Add(-24*time.Hour + 43*time.Hour + 55*time.Minute + 19*time.Second).Format(time.RFC3339)
	res := checkJSON(t, disk, cfg)
	if res.Take != nil || res.Rollout == nil || res.Rollout.Wave != 4 || res.Seed != 731 || res.SeedFrom != updater.SeedFromConfig ||
		res.Rollout.At.Format(time.RFC3339) != eligibleAt {
		t.Fatalf("check before the wave: %+v %+v", res, res.Rollout)
	}
	out = mustCLI(t, "check", "--disk", disk, "--config", cfg)
	want := "rollout:  1.1.0: eligible at " + eligibleAt + ", wave 4 of 7, seed 731, 83% into the wave"
	if !strings.Contains(out, want) || !strings.Contains(out, "seed:     731 (node.seed in the config)") {
		t.Fatalf("check says:\n%s\nwant %q", out, want)
	}
	if out := mustCLI(t, "update", "--disk", disk, "--config", cfg); !strings.Contains(out, "no update: 1.1.0 is newer than the running 1.0.0 but not yet available") {
		t.Fatalf("update before the wave: %s", out)
	}

	// Moving the start two days back puts the node's time in the past.
	out = p.rollout("set", "1.1.0", "--plan", "default", "--start", now.Add(-48*time.Hour).Format(time.RFC3339))
	if !strings.Contains(out, "now: 40.0% of the fleet eligible") {
		t.Fatalf("set: %s", out)
	}
	if res := checkJSON(t, disk, cfg); res.Take == nil || res.Take.Meta.Version != "1.1.0" || !res.Rollout.Eligible {
		t.Fatalf("check in the wave: %+v", res)
	}

	// Halt: not taken, and check says so.
	if out := p.rollout("halt", "1.1.0"); !strings.Contains(out, "halted the rollout") || !strings.Contains(out, "halted since") {
		t.Fatalf("halt: %s", out)
	}
	if out := p.rollout("halt", "1.1.0"); !strings.Contains(out, "halted already") {
		t.Fatalf("second halt: %s", out)
	}
	if out := mustCLI(t, "check", "--disk", disk, "--config", cfg); !strings.Contains(out, "rollout:  1.1.0: rollout halted since") ||
		!strings.Contains(out, "update:   none") {
		t.Fatalf("check while halted: %s", out)
	}
	if out := p.rollout("show", "1.1.0", "--seed", "731"); !strings.Contains(out, "seed 731: rollout halted since") {
		t.Fatalf("show: %s", out)
	}

	// Resume: the schedule moves by the seconds spent halted, so the node
	// is still past its time and updates.
	if out := p.rollout("resume", "1.1.0"); !strings.Contains(out, "resumed the rollout") {
		t.Fatalf("resume: %s", out)
	}
	if out := p.rollout("resume", "1.1.0"); !strings.Contains(out, "is not halted") {
		t.Fatalf("second resume: %s", out)
	}
	if out := mustCLI(t, "update", "--disk", disk, "--config", cfg); !strings.Contains(out, "installed 1.1.0 into slot B") {
		t.Fatalf("update after resume: %s", out)
	}

	var meta updater.ReleaseMeta
	if err := json.Unmarshal([]byte(p.rollout("show", "1.1.0", "--json")), &meta); err != nil || meta.Rollout == nil || meta.Rollout.Halted() {
		t.Fatalf("show --json: %+v %v", meta, err)
	}
	if out := p.rollout("set", "1.1.0", "--none"); !strings.Contains(out, "rollout: none") {
		t.Fatalf("set --none: %s", out)
	}
}

// TestCLIRolloutBadPlans: plans are checked before anything is pushed or
// signed, and the error names the field.
func TestCLIRolloutBadPlans(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "media")
	p := newPublisher(t, "--layout", dir)
	p.build("1.0.0", 1)
	plan := func(body string) string {
		f := filepath.Join(t.TempDir(), "plan.toml")
		os.WriteFile(f, []byte(body), 0o644)
		return f
	}
	cases := []struct{ name, plan, want string }{
		{"unsorted", plan("[[waves]]\nafter = \"4h\"\npercent = 5\n[[waves]]\nafter = \"1h\"\npercent = 10\n"), "waves[1].after: 1h is not later than waves[0].after 4h"},
		{"over 100", plan("[[waves]]\nafter = \"1h\"\npercent = 101\n"), "waves[0].percent: 101 is outside 1..100"},
		{"decreasing", plan("[[waves]]\nafter = \"1h\"\npercent = 50\n[[waves]]\nafter = \"2h\"\npercent = 40\n"), "waves[1].percent: 40 is not more than"},
		{"negative", plan("[[waves]]\nafter = \"-1h\"\npercent = 50\n"), "waves[0].after: -1h is negative"},
		{"empty", plan("# nothing\n"), "waves: at least one wave"},
		{"unknown key", plan("[[waves]]\nafter = \"1h\"\nfleet = 50\n"), "unknown key(s): waves.fleet"},
		{"missing file", filepath.Join(t.TempDir(), "nope.toml"), "no such file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out, errs := cli(t, append([]string{"release", "publish", "--tuf", p.tuf, "--from", p.layout, "--version", "1.0.0", "--plan", c.plan}, p.dest...)...)
			if code != exitBadInput || !strings.Contains(errs, c.want) {
				t.Fatalf("exit %d, want %d with %q:\n%s%s", code, exitBadInput, c.want, out, errs)
			}
		})
	}
	// Nothing was signed by the refused attempts.
	if out := mustCLI(t, "repo", "status", p.tuf); strings.Contains(out, "1.0.0") {
		t.Fatalf("a refused publish signed the release:\n%s", out)
	}
	if code, _, errs := cli(t, append([]string{"release", "publish", "--tuf", p.tuf, "--from", p.layout, "--version", "1.0.0", "--start", "2026-12-01T00:00:00Z"}, p.dest...)...); code != exitUsage || !strings.Contains(errs, "--start needs --plan") {
		t.Fatalf("--start alone: %d %s", code, errs)
	}
}

// TestCLINodeSeedDrawnOnce: a node without node.seed draws a seed at its
// first check (even a read-only one) and keeps it.
func TestCLINodeSeedDrawnOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "media")
	os.MkdirAll(dir, 0o755)
	p := newPublisher(t, "--layout", dir)
	disk, cfg := newNode(t, p, fmt.Sprintf("[source]\nlayout = %q", dir))
	p.release("1.0.0", 1)
	first := checkJSON(t, disk, cfg)
	if first.SeedFrom != updater.SeedFromState || first.Seed < 0 || first.Seed > 2047 {
		t.Fatalf("first check: seed %d from %q", first.Seed, first.SeedFrom)
	}
	for range 2 {
		if res := checkJSON(t, disk, cfg); res.Seed != first.Seed || res.SeedFrom != updater.SeedFromState {
			t.Fatalf("seed moved: %d from %q, first %d", res.Seed, res.SeedFrom, first.Seed)
		}
	}
}

func TestCLIRolloutSimulate(t *testing.T) {
	svg := filepath.Join(t.TempDir(), "chart.svg")
	out := mustCLI(t, "rollout", "simulate", "--nodes", "20000", "--plan", "default", "--out", svg, "--seed", "7")
	for _, want := range []string{"plan: 7 waves, the last at 6d (100%); 20000 simulated nodes, random seed 7", "wave 4 boundary", "40%", "chart: " + svg} {
		if !strings.Contains(out, want) {
			t.Fatalf("missing %q in:\n%s", want, out)
		}
	}
	b, err := os.ReadFile(svg)
	if err != nil || !strings.HasPrefix(string(b), "<svg") {
		t.Fatalf("chart: %v", err)
	}
	if again := mustCLI(t, "rollout", "simulate", "--nodes", "20000", "--plan", "default", "--seed", "7"); !strings.HasPrefix(out, again) {
		t.Fatalf("the same seed gave another fleet:\n%s\n%s", out, again)
	}
	if code, _, errs := cli(t, "rollout", "simulate", "--nodes", "0"); code != exitUsage || !strings.Contains(errs, "--nodes") {
		t.Fatalf("--nodes 0: %d %s", code, errs)
	}
}
