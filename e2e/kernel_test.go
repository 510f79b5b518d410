//go:build e2e

package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// kernelPanics runs the "B's kernel cannot boot" scenario on s's backend:
// v1 boots from A and is marked good; v2 goes into B with its kernel but
// without the initramfs that opens its root (a release built wrong), so
// the kernel panics ("VFS: Unable to mount root fs") and, with panic=1 as
// a node would set it, reboots. Each boot spends one of B's two tries;
// then the bootloader boots A, whose boot-check records v2 as rolled back
// with its tries exhausted.
func (s *scenario) kernelPanics() {
	t := s.t
	t.Helper()
	v1 := rootImage(t, s, "v1", defaultSteps)
	v2 := rootImage(t, s, "v2", defaultSteps)

	s.bootV1(v1)

	const tries = 2
	if out := s.installBoot(v2, s.a.Kernel.Vmlinuz, "", "console=ttyS0 panic=1", "--tries", fmt.Sprint(tries)); !strings.Contains(out, "into slot B") {
		t.Fatalf("install v2 went elsewhere than slot B: %s", out)
	}
	st := s.status()
	if st.NextBoot.Slot != "B" || !st.NextBoot.Trial {
		t.Fatalf("after installing v2 the next boot is %+v, want B on trial\n%s", st.NextBoot, st.raw)
	}

	for i := 1; i <= tries; i++ {
		b := s.bootWith(bootOptions{panicOK: true})
		if s.backend == "grubenv" {
			s.expectLoader(b, "B")
		}
		// systemd-boot names its entry only to the OS, which never runs
		// here: B's command line shows which entry it booted.
		if !strings.Contains(b.Cmdline, "sealift.slot=B") || !strings.Contains(b.Cmdline, "sealift.version=v2") {
			s.fail(b, "boot %d: the kernel did not start with slot B's command line: %q", b.N, b.Cmdline)
		}
		if !strings.Contains(b.Panic, "VFS: Unable to mount root fs") {
			s.fail(b, "boot %d: want the kernel to panic without a root, got %q", b.N, b.Panic)
		}
		// panic=1: the kernel reboots by itself, which ends qemu.
		if !b.Has("Rebooting in 1 seconds") || b.Killed {
			s.fail(b, "boot %d: the kernel did not reboot after its panic (panic=1)", b.N)
		}
		if b.Has("SEALIFT-E2E-INITRD:") || b.Slot != "" || b.Done {
			s.fail(b, "boot %d: an initramfs or root ran, want the kernel to stop at its panic", b.N)
		}
		t.Logf("  kernel: %s", b.Panic)
		s.expectTriesLeft(tries, tries-i)
	}

	st = s.status()
	t.Logf("host 'sealift status --json' after B's tries: next=%+v pending=%+v notes=%q", st.NextBoot, st.Pending, st.Notes)
	if st.NextBoot.Slot != "A" || st.Pending == nil || st.Pending.Slot != "B" {
		t.Fatalf("after B's tries the next boot should be A with v2 still pending in B\n%s", st.raw)
	}
	if !strings.Contains(strings.Join(st.Notes, "\n"), "v2 in slot B is no longer bootable") {
		t.Fatalf("status does not explain that v2 in B is no longer bootable: %q", st.Notes)
	}

	b := s.boot()
	s.expectHealthy(b, "A", "v1", "vda2", st.rootHash("A"))
	g := guestOutput(b, 1)
	t.Logf("guest 'sealift boot-check' after falling back: %s", strings.TrimSpace(g))
	if !strings.Contains(g, "the update to v2 in slot B fell back: tries exhausted") {
		s.fail(b, "boot-check on A did not record v2's fallback with its tries exhausted: %q", g)
	}
	if g := guestOutput(b, 3); !strings.Contains(g, "failed:    v2 in slot B") || !strings.Contains(g, "tries exhausted") {
		s.fail(b, "the guest's sealift status does not show v2 failed with its tries exhausted:\n%s", g)
	}

	st = s.status()
	t.Logf("host 'sealift status --json' after the fallback: running=%q next=%+v pending=%+v last=%+v notes=%q",
		st.Running, st.NextBoot, st.Pending, st.Last, st.Notes)
	f, failed := st.Failed["v2"]
	_, _, aOK, aVer := st.slot("A")
	bPrio, bTries, bOK, _ := st.slot("B")
	switch {
	case !failed || f.Slot != "B" || !strings.HasPrefix(f.Reason, "tries exhausted"):
		t.Fatalf("v2 is not recorded failed in slot B with its tries exhausted\n%s", st.raw)
	case st.Last == nil || st.Last.Result != "rolled-back" || st.Last.Version != "v2" || st.Last.Slot != "B" ||
		!strings.HasPrefix(st.Last.Reason, "tries exhausted"):
		t.Fatalf("last outcome should be v2 in B rolled back, tries exhausted\n%s", st.raw)
	case st.Pending != nil:
		t.Fatalf("the fallback left a pending update\n%s", st.raw)
	case !aOK || aVer != "v1":
		t.Fatalf("slot A should stay v1 and successful\n%s", st.raw)
	case bOK || bTries != 0 || bPrio != 0:
		t.Fatalf("slot B should be cleared (priority 0, no tries, not successful)\n%s", st.raw)
	case st.NextBoot.Slot != "A" || st.NextBoot.Trial:
		t.Fatalf("the next boot should be A, not on trial\n%s", st.raw)
	case st.Running != "" && st.Running != "A":
		t.Fatalf("host status says %s is running after A booted\n%s", st.Running, st.raw)
	}
	// What a reader of the stopped disk sees.
	txt := s.sealift("status", "--disk", s.disk)
	t.Logf("host 'sealift status':\n%s", txt)
	for _, want := range []string{"rolled-back v2 in slot B", "failed:    v2 in slot B", "tries exhausted"} {
		if !strings.Contains(txt, want) {
			t.Fatalf("host 'sealift status' does not say %q:\n%s", want, txt)
		}
	}
	if len(s.boots) != 2+tries {
		t.Fatalf("%d boots, want %d (v1 from A, v2 from B %d times, A again)", len(s.boots), 2+tries, tries)
	}
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

// TestKernelPanicsGrubenv: B's kernel panics at every boot; GRUB spends
// B's tries and boots A, whose boot-check records why.
func TestKernelPanicsGrubenv(t *testing.T) {
	t.Parallel()
	s := newScenario(t, getAssets(t))
	defer s.summary()
	s.kernelPanics()
	env := s.grubenv()
	if env["A_OK"] != "1" || env["B_OK"] == "1" || env["B_TRY"] != "0" || !strings.HasPrefix(env["ORDER"], "A") {
		t.Fatalf("grubenv: want A_OK=1, B_OK!=1, B_TRY=0 and ORDER starting with A, got %v", env)
	}
}

// TestSDBootKernelPanics: TestKernelPanicsGrubenv booted by systemd-boot,
// whose boot counting renames B's entry at each try until it sorts below
// A's.
func TestSDBootKernelPanics(t *testing.T) {
	t.Parallel()
	s := newScenario(t, getAssets(t))
	s.backend = "sdboot"
	defer s.summary()
	s.kernelPanics()
	e := s.sdEntries()
	if len(e["A"]) != 1 || strings.Contains(e["A"][0], "+") {
		t.Fatalf("A's blessed entry should be there, got %v", e)
	}
	for _, n := range e["B"] {
		if !strings.Contains(n, "+0") {
			t.Fatalf("B's entry %q is still bootable after its tries (want it removed or at +0): %v", n, e)
		}
	}
}
