package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

// stagedNode is an agentNode running 1.0.0 (kept) with 1.1.0 published:
// agentAt makes one agent decision at a pretend time.
func stagedNode(t *testing.T) (p *publisher, disk, cfg, mark string, agentAt func(now string) string) {
	t.Helper()
	p, disk, cfg, mark = agentNode(t, "")
	p.release("1.0.0", 1)
	mustCLI(t, "update", "--disk", disk, "--config", cfg)
	mustCLI(t, "boot", "simulate", "--disk", disk, "--apply")
	mustCLI(t, "mark-good", "--disk", disk)
	p.release("1.1.0", 2)
	agentAt = func(now string) string {
		t.Helper()
		return mustCLI(t, "agent", "--once", "--now", now, "--disk", disk, "--config", cfg, "--log-level", "error")
	}
	return p, disk, cfg, mark, agentAt
}

const friday, saturday = "2026-11-27T12:00:00Z", "2026-11-28T02:30:00Z" // the window is Saturday 02:00-04:00 UTC

func rebooted(mark string) bool { _, err := os.Stat(mark); return err == nil }

// TestCLIAgentHaltedAfterStagingDoesNotReboot (issue 9): a release
// staged on Friday and halted before Saturday's window is not rebooted
// into in the window; it stays staged and the agent, check and the
// events say why. Once the halt is lifted the agent reboots.
func TestCLIAgentHaltedAfterStagingDoesNotReboot(t *testing.T) {
	p, disk, cfg, mark, agentAt := stagedNode(t)
	if out := agentAt(friday); !strings.HasPrefix(out, "staged: staged 1.1.0 in slot B") {
		t.Fatalf("friday: %s", out)
	}
	p.rollout("halt", "1.1.0")

	out := agentAt(saturday)
	if !strings.HasPrefix(out, "wait-release: 1.1.0 is staged in slot B but not rebooted into: 1.1.0 may not be taken by this node now: rollout halted since") {
		t.Fatalf("saturday, halted: %s", out)
	}
	if rebooted(mark) {
		t.Fatal("rebooted into a halted release")
	}
	if st := status(t, disk); st.Pending == nil || st.Pending.Version != "1.1.0" || st.NextBoot.Slot != "B" {
		t.Fatalf("a halted release was unstaged: %+v, next boot %+v", st.Pending, st.NextBoot)
	}
	if out := mustCLI(t, "check", "--disk", disk, "--config", cfg); !strings.Contains(out,
		"staged:   1.1.0 in slot B: kept staged but not rebooted into for now: 1.1.0 may not be taken by this node now: rollout halted since") {
		t.Fatalf("check:\n%s", out)
	}
	if ev := mustCLI(t, "events", "--disk", disk); !strings.Contains(ev, "1.1.0 is staged in slot B but not rebooted into: 1.1.0 may not be taken by this node now: rollout halted since") {
		t.Fatalf("events:\n%s", ev)
	}

	// Lifting the halt (and the plan "everyone at once, from the halt"
	// it recorded) lets the next look in the window reboot.
	p.rollout("resume", "1.1.0")
	p.rollout("set", "1.1.0", "--none")
	if out := agentAt("2026-11-28T03:30:00Z"); !strings.HasPrefix(out, "rebooting: rebooting into 1.1.0 in slot B") {
		t.Fatalf("saturday, resumed: %s", out)
	}
	if !rebooted(mark) {
		t.Fatal("no reboot after the halt was lifted")
	}
}

// TestCLIAgentRecalledAfterStagingCancels: metadata that cannot be
// refreshed stops the reboot (an error, retried); a recall cancels the
// staged update, so not even an unplanned reboot boots it.
func TestCLIAgentRecalledAfterStagingCancels(t *testing.T) {
	p, disk, cfg, mark, agentAt := stagedNode(t)
	agentAt(friday)

	// The "registry" (the OCI layout) is empty.
	media := filepath.Join(filepath.Dir(p.dest[1]), "media-away")
	if err := os.Rename(p.dest[1], media); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(p.dest[1], 0o755)
	code, out, errs := cli(t, "agent", "--once", "--now", saturday, "--disk", disk, "--config", cfg, "--log-level", "error")
	if code == 0 || !strings.HasPrefix(out, "error:") || !strings.Contains(errs, "confirm that 1.1.0 may still be rebooted into") || rebooted(mark) {
		t.Fatalf("registry gone: exit %d, rebooted %v\n%s%s", code, rebooted(mark), out, errs)
	}
	os.Remove(p.dest[1])
	if err := os.Rename(media, p.dest[1]); err != nil {
		t.Fatal(err)
	}

	mustCLI(t, append([]string{"release", "recall", "1.1.0", "--tuf", p.tuf, "--variant", "k8s", "--arch", "x86_64"}, p.dest...)...)
	if out := agentAt(saturday); !strings.HasPrefix(out, "cancelled: cancelled 1.1.0 in slot B instead of rebooting into it: 1.1.0 was recalled") {
		t.Fatalf("saturday, recalled: %s", out)
	}
	if rebooted(mark) {
		t.Fatal("rebooted into a recalled release")
	}
	if st := status(t, disk); st.Pending != nil || st.NextBoot.Slot != "A" || st.NextBoot.Trial {
		t.Fatalf("after the cancel: pending %+v, next boot %+v", st.Pending, st.NextBoot)
	}
	if ev := mustCLI(t, "events", "--disk", disk); !strings.Contains(ev, "the update to 1.1.0 in slot B was cancelled (it was trial) by sealift agent: 1.1.0 was recalled") {
		t.Fatalf("events:\n%s", ev)
	}
	// Unlike an operator's cancel, the agent's leaves no skip behind.
	if out := mustCLI(t, "hold", "list", "--disk", disk); !strings.Contains(out, "no holds") {
		t.Fatalf("holds after the agent's cancel:\n%s", out)
	}
	if out := agentAt("2026-11-28T02:31:00Z"); !strings.HasPrefix(out, "up-to-date:") {
		t.Fatalf("after the cancel: %s", out)
	}
}

// TestUpdateRebootConfirms: update --reboot judges the staged release
// again before it reboots (confirmStaged), like the agent.
func TestUpdateRebootConfirms(t *testing.T) {
	p, disk, cfg, mark, _ := stagedNode(t)
	mustCLI(t, "update", "--disk", disk, "--config", cfg) // stages 1.1.0
	confirm := func() (bool, string) {
		t.Helper()
		var out bytes.Buffer
		log := logrus.New()
		log.SetOutput(io.Discard)
		g := &globals{stdout: &out, stderr: io.Discard, log: log, disk: disk}
		nf := nodeFlags{configPath: cfg}
		nd, err := nf.open(context.Background(), g, true)
		if err != nil {
			t.Fatal(err)
		}
		defer nd.s.Close()
		ok, err := confirmStaged(g, nd, nf.checkOptions(nd.cfg), "1.1.0")
		if err != nil {
			t.Fatal(err)
		}
		return ok, out.String()
	}
	if ok, out := confirm(); !ok || out != "" {
		t.Fatalf("allowed: %v %q", ok, out)
	}
	p.rollout("halt", "1.1.0")
	if ok, out := confirm(); ok || !strings.HasPrefix(out, "not rebooting: 1.1.0 stays staged in slot B: 1.1.0 may not be taken by this node now: rollout halted since") {
		t.Fatalf("halted: %v %q", ok, out)
	}
	mustCLI(t, append([]string{"release", "recall", "1.1.0", "--tuf", p.tuf, "--variant", "k8s", "--arch", "x86_64"}, p.dest...)...)
	if ok, out := confirm(); ok || out != "not rebooting: cancelled 1.1.0 in slot B: 1.1.0 was recalled\n" {
		t.Fatalf("recalled: %v %q", ok, out)
	}
	if st := status(t, disk); st.Pending != nil || len(st.Holds) != 0 {
		t.Fatalf("still staged: %+v, or a hold left: %+v", st.Pending, st.Holds)
	}
	if ev := mustCLI(t, "events", "--disk", disk); !strings.Contains(ev, "cancelled (it was trial) by sealift update --reboot: 1.1.0 was recalled") {
		t.Fatalf("events:\n%s", ev)
	}

	// The whole command: a release that may be taken is rebooted into.
	p.release("1.2.0", 3)
	script := filepath.Join(t.TempDir(), "reboot")
	os.WriteFile(script, []byte("#!/bin/sh\necho reboot >> "+mark+"\n"), 0o755)
	out := mustCLI(t, "update", "--disk", disk, "--config", cfg, "--reboot", "--reboot-command", script, "--log-level", "error")
	if !strings.Contains(out, "installed 1.2.0 into slot B") || !rebooted(mark) {
		t.Fatalf("update --reboot: rebooted %v\n%s", rebooted(mark), out)
	}
}

// TestCLIAgentPausedBeforeConfirm: an operator's pause comes before the
// look at the signed metadata: in the window the paused agent neither
// reboots nor contacts the repository (here gone), and check says why
// the staged release waits. A recall that came in meanwhile is acted on
// once the pause is cleared.
func TestCLIAgentPausedBeforeConfirm(t *testing.T) {
	p, disk, cfg, mark, agentAt := stagedNode(t)
	agentAt(friday)
	mustCLI(t, "hold", "pause", "--disk", disk, "--reason", "change freeze")
	if out := mustCLI(t, "check", "--disk", disk, "--config", cfg); !strings.Contains(out,
		"staged:   1.1.0 in slot B: kept staged but not rebooted into for now: 1.1.0 is not rebooted into while an operator's hold is in force; updates are paused by") {
		t.Fatalf("check while paused:\n%s", out)
	}
	mustCLI(t, append([]string{"release", "recall", "1.1.0", "--tuf", p.tuf, "--variant", "k8s", "--arch", "x86_64"}, p.dest...)...)

	media := filepath.Join(filepath.Dir(p.dest[1]), "media-away")
	if err := os.Rename(p.dest[1], media); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(p.dest[1], 0o755)
	if out := agentAt(saturday); !strings.HasPrefix(out, "paused: 1.1.0 is staged in slot B; not rebooting into it: updates are paused by") || rebooted(mark) {
		t.Fatalf("saturday, paused: rebooted %v\n%s", rebooted(mark), out)
	}
	if st := status(t, disk); st.Pending == nil || st.Pending.Version != "1.1.0" {
		t.Fatalf("unstaged while paused: %+v", st.Pending)
	}
	os.Remove(p.dest[1])
	if err := os.Rename(media, p.dest[1]); err != nil {
		t.Fatal(err)
	}

	mustCLI(t, "hold", "clear", "pause", "--disk", disk)
	if out := agentAt("2026-11-28T02:31:00Z"); !strings.HasPrefix(out, "cancelled: cancelled 1.1.0 in slot B instead of rebooting into it: 1.1.0 was recalled") || rebooted(mark) {
		t.Fatalf("pause cleared: rebooted %v\n%s", rebooted(mark), out)
	}
}
