package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sealift/updater/state"
)

// TestCLIHolds: cancel and rollback leave skips, and holds are set,
// listed, shown in status and the history, and cleared, on a disk image.
func TestCLIHolds(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	mustCLI(t, "disk", "init", disk, "--size", "320M", "--root-size", "64M", "--esp-size", "64M")
	r := makeRelease(t, dir, 5, 1<<20)
	if code, out := install(t, disk, r, "v1"); code != 0 {
		t.Fatal(out)
	}
	mustCLI(t, "boot", "simulate", "--disk", disk, "--apply")
	mustCLI(t, "mark-good", "--disk", disk)
	if code, out := install(t, disk, r, "v2"); code != 0 {
		t.Fatal(out)
	}
	out := mustCLI(t, "cancel", "--disk", disk, "--reason", "wrong kernel")
	if !strings.Contains(out, "cancelled the update to v2 in slot B; v2 is skipped from now on, so the agent does not stage it again ('sealift hold clear skip v2' allows it)") {
		t.Fatalf("cancel: %s", out)
	}
	until := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second).Format(time.RFC3339)
	out = mustCLI(t, "hold", "pause", "--disk", disk, "--until", until, "--reason", "CVE review")
	if !strings.Contains(out, "hold pause until "+until+" set by "+operator()+": no release is taken") {
		t.Fatalf("pause: %s", out)
	}
	if out := mustCLI(t, "hold", "pause", "--disk", disk, "--until", "3d"); !strings.Contains(out, "it replaces the hold pause until "+until) {
		t.Fatalf("second pause: %s", out)
	}
	mustCLI(t, "hold", "pin", "v1", "--disk", disk)

	human := mustCLI(t, "status", "--disk", disk)
	for _, want := range []string{
		"hold:      pause until ",
		"hold:      pin v1, set by " + operator(),
		"hold:      skip v2, set by " + operator() + " at ",
		": its staged update was cancelled: wrong kernel ('sealift hold clear skip v2' lifts it)",
	} {
		if !strings.Contains(human, want) {
			t.Errorf("status lacks %q:\n%s", want, human)
		}
	}
	if st := status(t, disk); len(st.Holds) != 3 || st.Holds[0].Kind != state.HoldPause || st.Holds[2].Reason != "its staged update was cancelled: wrong kernel" {
		t.Fatalf("status --json holds: %+v", st.Holds)
	}
	var hs []state.Hold
	if err := json.Unmarshal([]byte(mustCLI(t, "hold", "list", "--disk", disk, "--json")), &hs); err != nil || len(hs) != 3 || hs[1].Name() != "pin v1" {
		t.Fatalf("hold list --json: %+v %v", hs, err)
	}
	list := mustCLI(t, "hold", "list", "--disk", disk)
	if !strings.Contains(list, "HOLD") || !strings.Contains(list, "skip v2") || !strings.Contains(list, "sealift hold clear pin") {
		t.Fatalf("hold list:\n%s", list)
	}

	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"clear what is not held", []string{"hold", "clear", "skip", "v9"}, exitNothing, "no skip v9 to clear"},
		{"clear without a hold", []string{"hold", "clear"}, exitUsage, "skip VERSION, pin, pause or --all"},
		{"clear --all with a kind", []string{"hold", "clear", "pin", "--all"}, exitUsage, "--all takes no other"},
		{"skip without a version", []string{"hold", "skip"}, exitUsage, "exactly one VERSION"},
		{"pause with a version", []string{"hold", "pause", "v2"}, exitUsage, "takes no arguments"},
		{"pause ending in the past", []string{"hold", "pause", "--until", "2020-01-01T00:00:00Z"}, exitBadInput, "not in the future"},
		{"pause until nonsense", []string{"hold", "pause", "--until", "soon"}, exitUsage, "neither an RFC 3339 time nor a positive duration"},
	}
	for _, c := range cases {
		code, out, errs := cli(t, append(c.args, "--disk", disk)...)
		if code != c.code || !strings.Contains(out+errs, c.want) {
			t.Errorf("%s: exit %d (want %d), output lacks %q:\n%s%s", c.name, code, c.code, c.want, out, errs)
		}
	}

	if out := mustCLI(t, "hold", "clear", "pin", "--disk", disk); !strings.Contains(out, "cleared hold pin v1 (set by "+operator()) {
		t.Fatalf("clear pin: %s", out)
	}
	if out := mustCLI(t, "hold", "clear", "--all", "--disk", disk); strings.Count(out, "cleared hold") != 2 {
		t.Fatalf("clear --all: %s", out)
	}
	if out := mustCLI(t, "hold", "list", "--disk", disk); !strings.Contains(out, "no holds") {
		t.Fatalf("hold list after clearing: %s", out)
	}

	// A rollback skips the release it leaves.
	if code, out := install(t, disk, r, "v3"); code != 0 {
		t.Fatal(out)
	}
	mustCLI(t, "boot", "simulate", "--disk", disk, "--apply")
	mustCLI(t, "mark-good", "--disk", disk)
	out = mustCLI(t, "rollback", "--disk", disk, "--reason", "p99 latency")
	if !strings.Contains(out, "next boot: A (rollback); v3, rolled back from, is skipped from now on") {
		t.Fatalf("rollback: %s", out)
	}
	ev := mustCLI(t, "events", "--disk", disk)
	for _, want := range []string{"hold-set", "hold skip v2 set by", "hold-cleared", "hold pin v1 (set by", "hold skip v3 set by " + operator() + " at ", ": rolled back from it: p99 latency; v3 is not taken"} {
		if !strings.Contains(ev, want) {
			t.Errorf("events lack %q:\n%s", want, ev)
		}
	}
}

func TestParseUntil(t *testing.T) {
	now := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"2026-12-01T08:00:00+01:00": time.Date(2026, 12, 1, 7, 0, 0, 0, time.UTC),
		"90m":                       now.Add(90 * time.Minute),
		"36h":                       now.Add(36 * time.Hour),
		"7d":                        now.AddDate(0, 0, 7),
	} {
		if got, err := parseUntil(in, now); err != nil || !got.Equal(want) {
			t.Errorf("%s: %s %v, want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1h", "0d", "tomorrow", "2026-12-01"} {
		if _, err := parseUntil(in, now); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

// TestCLIAgentHonoursHolds: the agent, deciding from what is on the
// disk at every step, does not stage again a release cancelled with the
// CLI, takes a newer one, and neither checks nor reboots while paused,
// with the holds written to the disk by the CLI between its steps.
func TestCLIAgentHonoursHolds(t *testing.T) {
	p, disk, cfg, mark := agentNode(t, "")
	agentAt := func(now string) string {
		return mustCLI(t, "agent", "--once", "--now", now, "--disk", disk, "--config", cfg, "--log-level", "error")
	}
	p.release("1.0.0", 1)
	if out := agentAt("2026-11-27T12:00:00Z"); !strings.HasPrefix(out, "staged: staged 1.0.0 in slot A") {
		t.Fatalf("first step: %s", out)
	}
	if out := mustCLI(t, "cancel", "--disk", disk); !strings.Contains(out, "1.0.0 is skipped from now on") {
		t.Fatalf("cancel: %s", out)
	}
	out := agentAt("2026-11-27T13:00:00Z")
	if !strings.HasPrefix(out, "up-to-date:") || !strings.Contains(out, "1.0.0 is skipped by "+operator()+" (its staged update was cancelled") {
		t.Fatalf("after the cancel: %s", out)
	}
	if st := status(t, disk); st.Pending != nil {
		t.Fatalf("the cancelled release was staged again: %+v", st.Pending)
	}
	check := checkJSON(t, disk, cfg)
	if check.Take != nil || len(check.Holds) != 1 || !strings.Contains(check.Reason, "'sealift hold clear skip 1.0.0' allows it") {
		t.Fatalf("check: %+v", check)
	}

	p.release("1.1.0", 2)
	mustCLI(t, "hold", "pause", "--disk", disk, "--reason", "change freeze")
	if out := agentAt("2026-11-27T14:00:00Z"); !strings.HasPrefix(out, "paused: updates are paused by "+operator()+" (change freeze") {
		t.Fatalf("paused: %s", out)
	}
	if st := status(t, disk); st.Pending != nil {
		t.Fatalf("staged while paused: %+v", st.Pending)
	}
	mustCLI(t, "hold", "clear", "pause", "--disk", disk)
	if out := agentAt("2026-11-27T15:00:00Z"); !strings.HasPrefix(out, "staged: staged 1.1.0 in slot A") {
		t.Fatalf("after the pause: %s", out)
	}
	// Paused again with 1.1.0 staged: no reboot in Saturday's window.
	mustCLI(t, "hold", "pause", "--disk", disk)
	if out := agentAt("2026-11-28T02:30:00Z"); !strings.HasPrefix(out, "paused: 1.1.0 is staged in slot A; not rebooting into it") {
		t.Fatalf("staged and paused in the window: %s", out)
	}
	if _, err := os.Stat(mark); err == nil {
		t.Fatal("rebooted while paused")
	}
	if out := mustCLI(t, "status", "--disk", disk); !strings.Contains(out, "the agent does not reboot into it: updates are paused") {
		t.Fatalf("status while staged and paused:\n%s", out)
	}
	mustCLI(t, "hold", "clear", "pause", "--disk", disk)
	if out := agentAt("2026-11-28T02:31:00Z"); !strings.HasPrefix(out, "rebooting:") {
		t.Fatalf("after the pause, in the window: %s", out)
	}
}
