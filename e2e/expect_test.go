//go:build e2e

package e2e

import (
	"fmt"
	"regexp"
	"strings"
)

// The checks every scenario ends with, on either backend: what the host's
// 'sealift status' and the bootloader's own record on the disk say once B
// was kept or once the bootloader fell back to A. In all scenarios A holds
// v1, installed and marked good first (bootV1).

// stagedInB checks an install of img, whose output is out, on the host: it
// went into slot B, which boots next on trial with img's version pending
// there. It returns the status.
func (s *scenario) stagedInB(img *RootImage, out string) *statusJSON {
	s.t.Helper()
	if !strings.Contains(out, "into slot B") {
		s.t.Fatalf("install %s went elsewhere than slot B: %s", img.Version, out)
	}
	st := s.status()
	if st.NextBoot.Slot != "B" || !st.NextBoot.Trial {
		s.t.Fatalf("after installing %s the next boot is %+v, want B on trial\n%s", img.Version, st.NextBoot, st.raw)
	}
	if p := st.Pending; p == nil || p.Slot != "B" || p.Version != img.Version || p.Phase != "trial" {
		s.t.Fatalf("after installing %s the pending update is %+v, want %s in slot B on trial\n%s", img.Version, p, img.Version, st.raw)
	}
	return st
}

// logStatus logs the host's status, after what.
func (s *scenario) logStatus(st *statusJSON, after string) {
	s.t.Helper()
	s.t.Logf("host 'sealift status --json' after %s: running=%q simulated=%v next=%+v pending=%+v last=%+v failed=%+v notes=%q",
		after, st.Running, st.Simulated, st.NextBoot, st.Pending, st.Last, st.Failed, st.Notes)
}

// expectKeptB checks the host's status after version booted from B and was
// marked good: B holds it, successful, and boots next off trial; A keeps v1,
// successful, below B as the fallback; nothing is pending or failed; the
// last outcome is version in B good; B ran last (if the host knows).
func (s *scenario) expectKeptB(st *statusJSON, version string) {
	t := s.t
	t.Helper()
	bPrio, _, bOK, bVer := st.slot("B")
	aPrio, _, aOK, aVer := st.slot("A")
	switch {
	case !bOK || bVer != version:
		t.Fatalf("slot B is not %s marked successful\n%s", version, st.raw)
	case !aOK || aVer != s.aVersion || aPrio >= bPrio:
		t.Fatalf("slot A should stay %s, successful, below B as fallback\n%s", s.aVersion, st.raw)
	case st.NextBoot.Slot != "B" || st.NextBoot.Trial:
		t.Fatalf("next boot should be B, not on trial\n%s", st.raw)
	case st.Pending != nil:
		t.Fatalf("an update is still pending\n%s", st.raw)
	case st.Last == nil || st.Last.Slot != "B" || st.Last.Version != version || st.Last.Result != "good":
		t.Fatalf("last outcome should be %s in B good\n%s", version, st.raw)
	case len(st.Failed) != 0:
		t.Fatalf("no release should be recorded failed\n%s", st.raw)
	case st.Running != "" && st.Running != "B":
		t.Fatalf("host status says %s is running after B booted\n%s", st.Running, st.raw)
	}
}

// expectFellBackToA checks the host's status after the bootloader fell
// back from version in B to A and A's boot-check recorded it: version is
// failed in slot B and the last outcome is its rollback, both with a
// reason that starts with cause; nothing is pending; A keeps v1,
// successful, and boots next off trial; B is cleared; A ran last.
func (s *scenario) expectFellBackToA(st *statusJSON, version, cause string) {
	t := s.t
	t.Helper()
	f, failed := st.Failed[version]
	_, _, aOK, aVer := st.slot("A")
	bPrio, bTries, bOK, _ := st.slot("B")
	switch {
	case !failed || f.Slot != "B" || !strings.HasPrefix(f.Reason, cause):
		t.Fatalf("%s is not recorded failed in slot B with %q\n%s", version, cause, st.raw)
	case st.Last == nil || st.Last.Result != "rolled-back" || st.Last.Version != version || st.Last.Slot != "B" ||
		!strings.HasPrefix(st.Last.Reason, cause):
		t.Fatalf("last outcome should be %s in B rolled back with %q\n%s", version, cause, st.raw)
	case st.Pending != nil:
		t.Fatalf("the fallback left a pending update\n%s", st.raw)
	case !aOK || aVer != s.aVersion:
		t.Fatalf("slot A should stay %s and successful\n%s", s.aVersion, st.raw)
	case bOK || bTries != 0 || bPrio != 0:
		t.Fatalf("slot B should be cleared (priority 0, no tries, not successful)\n%s", st.raw)
	case st.NextBoot.Slot != "A" || st.NextBoot.Trial:
		t.Fatalf("the next boot should be A, not on trial\n%s", st.raw)
	case st.Running != "A":
		t.Fatalf("host status says %q is running, want A (its boot-check ran last)\n%s", st.Running, st.raw)
	}
}

// expectBSpent checks the host's status once B, with version pending on
// trial, can no longer boot (its tries are spent) and A has not booted yet
// to record it: A boots next, version is still pending in B, and a note
// says B is no longer bootable.
func (s *scenario) expectBSpent(version string) {
	t := s.t
	t.Helper()
	st := s.status()
	s.logStatus(st, "B's tries")
	if st.NextBoot.Slot != "A" || st.Pending == nil || st.Pending.Slot != "B" || st.Pending.Version != version {
		t.Fatalf("after B's tries the next boot should be A with %s still pending in B\n%s", version, st.raw)
	}
	if want := version + " in slot B is no longer bootable"; !strings.Contains(strings.Join(st.Notes, "\n"), want) {
		t.Fatalf("status does not explain that %s in B is no longer bootable: %q", version, st.Notes)
	}
}

// fellBackTo boots A after the bootloader gave up on version in B and
// checks the fallback everywhere it shows: A runs v1, healthy; its
// boot-check records the fallback with a cause that starts with cause,
// and the guest's status shows version failed with it; the host's status
// (expectFellBackToA) and its text say the same. It returns the host's
// status.
func (s *scenario) fellBackTo(version, cause string) *statusJSON {
	t := s.t
	t.Helper()
	b := s.boot()
	s.expectHealthy(b, "A", "v1", "vda2", s.status().rootHash("A"))
	g := guestOutput(b, 1)
	t.Logf("guest 'sealift boot-check' after falling back: %s", strings.TrimSpace(g))
	if want := "the update to " + version + " in slot B fell back: " + cause; !strings.Contains(g, want) {
		s.fail(b, "boot-check on A did not record %s's fallback as %q: %q", version, cause, g)
	}
	g = guestOutput(b, 3)
	t.Logf("guest 'sealift status' after falling back:\n%s", g)
	if !strings.Contains(g, "failed:    "+version+" in slot B") || !strings.Contains(g, cause) {
		s.fail(b, "the guest's sealift status does not show %s failed (%q):\n%s", version, cause, g)
	}
	st := s.status()
	s.logStatus(st, "the fallback")
	s.expectFellBackToA(st, version, cause)
	// What a reader of the stopped disk sees.
	txt := s.sealift("status", "--disk", s.disk)
	t.Logf("host 'sealift status':\n%s", txt)
	for _, want := range []string{"rolled-back " + version + " in slot B", "failed:    " + version + " in slot B", cause} {
		if !strings.Contains(txt, want) {
			t.Fatalf("host 'sealift status' does not say %q:\n%s", want, txt)
		}
	}
	return st
}

// fellBackAfterTries finishes a scenario in which each of B's tries boots
// failed: the host sees B spent (expectBSpent), A boots and records the
// fallback of version with cause (fellBackTo), the bootloader's record
// shows it (expectLoaderFellBackToA), and there were 2+tries boots (v1
// from A, B's tries, A again). It returns the host's status.
func (s *scenario) fellBackAfterTries(version, cause string, tries int) *statusJSON {
	s.t.Helper()
	s.expectBSpent(version)
	st := s.fellBackTo(version, cause)
	s.expectLoaderFellBackToA()
	if len(s.boots) != 2+tries {
		s.t.Fatalf("%d boots, want %d (v1 from A, %s failing in B %d times, A again)", len(s.boots), 2+tries, version, tries)
	}
	return st
}

// expectTriesLeft checks on the disk that B, installed with tries boots,
// has left of them, in sealift's status and in the bootloader's own
// terms: grubenv's B_TRY, or the counters in B's systemd-boot entry name.
func (s *scenario) expectTriesLeft(tries, left int) {
	s.t.Helper()
	st := s.status()
	if _, n, ok, _ := st.slot("B"); n != left || ok {
		s.t.Fatalf("status: slot B has %d tries left (successful=%v), want %d\n%s", n, ok, left, st.raw)
	}
	if s.backend == "sdboot" {
		e := s.sdEntries()
		want := regexp.MustCompile(fmt.Sprintf(`-b\+%d-%d\.conf$`, left, tries-left))
		if len(e["B"]) != 1 || !want.MatchString(e["B"][0]) {
			s.t.Fatalf("loader/entries: want B's entry counted down to +%d-%d, got %v", left, tries-left, e)
		}
		return
	}
	if env := s.grubenv(); env["B_TRY"] != fmt.Sprint(left) || env["B_OK"] == "1" {
		s.t.Fatalf("grubenv: want B_TRY=%d and B_OK!=1, got %v", left, env)
	}
}

// expectLoaderKeptB checks the bootloader's own record after B was marked
// good: with GRUB, B_OK=1 and A_OK=1 in the grubenv (as grub-editenv reads
// it) and ORDER starting with B; with systemd-boot, B's entry blessed (no
// counter) and sorting above A's blessed entry, the fallback.
func (s *scenario) expectLoaderKeptB() {
	t := s.t
	t.Helper()
	if s.backend == "sdboot" {
		e := s.sdEntries()
		s.expectBlessed(e, "B", "kept")
		s.expectBlessed(e, "A", "still there as the fallback")
		gen := func(n string) string { return sdEntryRe.FindStringSubmatch(n)[1] }
		if gen(e["B"][0]) <= gen(e["A"][0]) {
			t.Fatalf("B's entry should sort above A's (higher generation), got %v", e)
		}
		return
	}
	if env := s.grubenv(); env["B_OK"] != "1" || env["A_OK"] != "1" || !strings.HasPrefix(env["ORDER"], "B") {
		t.Fatalf("grubenv: want B_OK=1, A_OK=1 and ORDER starting with B, got %v", env)
	}
}

// expectLoaderFellBackToA checks the bootloader's own record after the
// fallback to A: with GRUB, A_OK=1, B_OK!=1, B_TRY=0 and ORDER starting
// with A; with systemd-boot, A's entry blessed and B's entry gone or at
// +0 (systemd-boot sorts it below A and does not boot it).
func (s *scenario) expectLoaderFellBackToA() {
	t := s.t
	t.Helper()
	if s.backend == "sdboot" {
		e := s.sdEntries()
		s.expectBlessed(e, "A", "booted after the fallback")
		for _, n := range e["B"] {
			if !strings.Contains(n, "+0") {
				t.Fatalf("B's entry %q is still bootable after the fallback (want it removed or at +0): %v", n, e)
			}
		}
		return
	}
	if env := s.grubenv(); env["A_OK"] != "1" || env["B_OK"] == "1" || env["B_TRY"] != "0" || !strings.HasPrefix(env["ORDER"], "A") {
		t.Fatalf("grubenv: want A_OK=1, B_OK!=1, B_TRY=0 and ORDER starting with A, got %v", env)
	}
}

// expectBlessed checks that the systemd-boot entries e hold one entry for
// slot and that it is blessed (no boot counter left in its name); role
// says why, for the failure message.
func (s *scenario) expectBlessed(e map[string][]string, slot, role string) {
	s.t.Helper()
	if len(e[slot]) != 1 || strings.Contains(e[slot][0], "+") {
		s.t.Fatalf("loader/entries: want one blessed entry (no counter) for %s, %s; got %v", slot, role, e)
	}
}
