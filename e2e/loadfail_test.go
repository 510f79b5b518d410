//go:build e2e

package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"sealift/bootloader"
	"sealift/partitions"
)

// corruptKernel overwrites a slot's kernel on the ESP with random bytes
// from the host, as damage to the ESP would: sealift's own checks (install
// refuses a file that is not a kernel) are bypassed.
func (s *scenario) corruptKernel(slot bootloader.Slot) {
	s.t.Helper()
	d, err := partitions.Open(s.disk, true)
	if err != nil {
		s.t.Fatal(err)
	}
	defer d.Close()
	esp, err := d.ESPFS()
	if err != nil {
		s.t.Fatal(err)
	}
	garbage := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{'k', 'e', 'r', 'n', 'e', 'l'}).Read(garbage)
	path := bootloader.SlotDir(slot) + "/" + bootloader.KernelName
	if err := esp.WriteFile(path, garbage); err != nil {
		s.t.Fatal(err)
	}
	s.t.Logf("host: overwrote %s on the ESP with %d random bytes", path, len(garbage))
}

// kernelCorrupted is the start of the "B's kernel file corrupted on the
// ESP after install" scenario: v1 boots from A and is marked good; v2 is
// installed into B with tries boots; then B's vmlinuz on the ESP is
// overwritten with random bytes.
func (s *scenario) kernelCorrupted(tries int) {
	t := s.t
	t.Helper()
	v1 := rootImage(t, s, "v1", defaultSteps)
	v2 := rootImage(t, s, "v2", defaultSteps)
	s.bootV1(v1)
	if out := s.install(v2, "--tries", fmt.Sprint(tries)); !strings.Contains(out, "into slot B") {
		t.Fatalf("install v2 went elsewhere than slot B: %s", out)
	}
	s.corruptKernel(bootloader.SlotB)
	st := s.status()
	if st.NextBoot.Slot != "B" || !st.NextBoot.Trial {
		t.Fatalf("after installing v2 the next boot is %+v, want B on trial\n%s", st.NextBoot, st.raw)
	}
}

// fellBackTo checks the boot after B's tries: A runs v1, its boot-check
// records v2's fallback with a cause that starts with cause, and the disk
// shows v2 failed, B cleared and A next.
func (s *scenario) fellBackTo(cause string) *statusJSON {
	t := s.t
	t.Helper()
	b := s.boot()
	s.expectHealthy(b, "A", "v1", "vda2", s.status().rootHash("A"))
	g := guestOutput(b, 1)
	t.Logf("guest 'sealift boot-check' after falling back: %s", strings.TrimSpace(g))
	if !strings.Contains(g, "the update to v2 in slot B fell back: "+cause) {
		s.fail(b, "boot-check on A did not record v2's fallback as %q: %q", cause, g)
	}
	if g := guestOutput(b, 3); !strings.Contains(g, "failed:    v2 in slot B") || !strings.Contains(g, cause) {
		s.fail(b, "the guest's sealift status does not show v2 failed (%q):\n%s", cause, g)
	}
	st := s.status()
	t.Logf("host 'sealift status --json' after the fallback: running=%q next=%+v pending=%+v last=%+v notes=%q",
		st.Running, st.NextBoot, st.Pending, st.Last, st.Notes)
	f, failed := st.Failed["v2"]
	_, _, aOK, aVer := st.slot("A")
	bPrio, bTries, bOK, _ := st.slot("B")
	switch {
	case !failed || f.Slot != "B" || !strings.HasPrefix(f.Reason, cause):
		t.Fatalf("v2 is not recorded failed in slot B with %q\n%s", cause, st.raw)
	case st.Last == nil || st.Last.Result != "rolled-back" || st.Last.Version != "v2" || !strings.HasPrefix(st.Last.Reason, cause):
		t.Fatalf("last outcome should be v2 in B rolled back with %q\n%s", cause, st.raw)
	case st.Pending != nil:
		t.Fatalf("the fallback left a pending update\n%s", st.raw)
	case !aOK || aVer != "v1":
		t.Fatalf("slot A should stay v1 and successful\n%s", st.raw)
	case bOK || bTries != 0 || bPrio != 0:
		t.Fatalf("slot B should be cleared (priority 0, no tries, not successful)\n%s", st.raw)
	case st.NextBoot.Slot != "A" || st.NextBoot.Trial:
		t.Fatalf("the next boot should be A, not on trial\n%s", st.raw)
	}
	return st
}

// TestKernelNotLoadableGrubenv: B's kernel on the ESP is garbage. GRUB
// spends a try, fails in linux ("invalid magic number"), records the
// failure in the grubenv and reboots; after B's tries it boots A, whose
// boot-check records that GRUB could not load B's kernel.
func TestKernelNotLoadableGrubenv(t *testing.T) {
	t.Parallel()
	s := newScenario(t, getAssets(t))
	defer s.summary()
	const tries = 2
	s.kernelCorrupted(tries)

	for i := 1; i <= tries; i++ {
		b := s.boot()
		s.expectLoader(b, "B")
		if !b.Has("sealift-grub: slot B: cannot load its vmlinuz") || !b.Has("sealift-grub: rebooting") {
			s.fail(b, "boot %d: GRUB did not report B's kernel unloadable and reboot", b.N)
		}
		if b.Killed || b.Cmdline != "" || b.Slot != "" || b.Done {
			s.fail(b, "boot %d: want GRUB to reset the machine before any kernel starts (killed=%v cmdline=%q)", b.N, b.Killed, b.Cmdline)
		}
		t.Logf("  GRUB: %s", strings.Join(b.Lines("error:"), " | "))
		s.expectTriesLeft(tries, tries-i)
		if env := s.grubenv(); env["sealift_load_failed"] != "B" || env["sealift_load_failed_file"] != "vmlinuz" {
			t.Fatalf("grubenv: want sealift_load_failed=B and sealift_load_failed_file=vmlinuz, got %v", env)
		}
	}

	const cause = "not bootable: GRUB could not load the slot's kernel (sealift/B/vmlinuz on the ESP is not a file it can start, or is damaged)"
	s.fellBackTo(cause)
	txt := s.sealift("status", "--disk", s.disk)
	t.Logf("host 'sealift status':\n%s", txt)
	if !strings.Contains(txt, "failed:    v2 in slot B") || !strings.Contains(txt, "GRUB could not load the slot's kernel") {
		t.Fatalf("host 'sealift status' does not explain the fallback:\n%s", txt)
	}
	env := s.grubenv()
	if env["A_OK"] != "1" || env["B_OK"] == "1" || env["B_TRY"] != "0" || !strings.HasPrefix(env["ORDER"], "A") {
		t.Fatalf("grubenv: want A_OK=1, B_OK!=1, B_TRY=0 and ORDER starting with A, got %v", env)
	}
	if _, ok := env["sealift_load_failed"]; ok {
		t.Fatalf("grubenv: boot-check cleared B but the load failure is still recorded: %v", env)
	}
	if len(s.boots) != 2+tries {
		t.Fatalf("%d boots, want %d (v1 from A, B failing %d times, A again)", len(s.boots), 2+tries, tries)
	}
}

// TestSDBootKernelNotLoadable: B's kernel on the ESP is garbage, on an
// sdboot disk. systemd-boot spends the try (renames B's entry), fails to
// load the kernel ("Unsupported") and returns to the firmware, which on
// OVMF goes on to its next boot option, the UEFI shell, and stays there:
// nothing resets the machine. The harness ends qemu there, standing in
// for the watchdog or the firmware's boot retry a node needs
// (docs/boot-health.md). Then a standalone GRUB is put in front of
// systemd-boot that resets the machine when systemd-boot returns: the
// next failure reboots by itself. Either way the resets use up B's tries
// and systemd-boot boots A, whose boot-check records the tries as
// exhausted (systemd-boot does not say why).
func TestSDBootKernelNotLoadable(t *testing.T) {
	t.Parallel()
	s := newScenario(t, getAssets(t))
	s.backend = "sdboot"
	defer s.summary()
	const tries = 2
	s.kernelCorrupted(tries)

	b := s.bootWith(bootOptions{firmwareShellOK: true})
	if !b.Has(`Error loading \sealift\B\vmlinuz`) {
		s.fail(b, "boot %d: systemd-boot did not report B's kernel unloadable", b.N)
	}
	if b.Fatal != "UEFI Interactive Shell" || b.Cmdline != "" || b.Slot != "" {
		s.fail(b, "boot %d: want the firmware's shell after systemd-boot gave up, and no kernel (fatal=%q cmdline=%q)", b.N, b.Fatal, b.Cmdline)
	}
	t.Logf("  systemd-boot: %s", strings.Join(b.Lines("Error loading"), " | "))
	t.Logf("  then the firmware: %s", strings.Join(b.Lines("BdsDxe: starting Boot"), " | "))
	t.Logf("  the harness resets the machine here, as a watchdog would")
	s.expectTriesLeft(tries, tries-1)

	s.chainSDBoot()
	for i := 2; i <= tries; i++ {
		b := s.boot()
		if !b.Has(`Error loading \sealift\B\vmlinuz`) || !b.Has("sealift-e2e-chain: systemd-boot returned; rebooting") {
			s.fail(b, "boot %d: want systemd-boot to fail on B's kernel and GRUB to reboot", b.N)
		}
		if b.Killed || b.Fatal != "" || b.Cmdline != "" || b.Slot != "" {
			s.fail(b, "boot %d: want a reset before any kernel starts (killed=%v fatal=%q cmdline=%q)", b.N, b.Killed, b.Fatal, b.Cmdline)
		}
		s.expectTriesLeft(tries, tries-i)
	}

	s.fellBackTo("tries exhausted")
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

// chainSDBoot moves systemd-boot to EFI/systemd/systemd-bootx64.efi and
// puts the chain GRUB (Assets.ChainEFI) at EFI/BOOT/BOOTX64.EFI.
func (s *scenario) chainSDBoot() {
	s.t.Helper()
	d, err := partitions.Open(s.disk, true)
	if err != nil {
		s.t.Fatal(err)
	}
	defer d.Close()
	esp, err := d.ESPFS()
	if err != nil {
		s.t.Fatal(err)
	}
	sdboot, err := esp.ReadFile("EFI/BOOT/BOOTX64.EFI")
	if err != nil {
		s.t.Fatal(err)
	}
	chain, err := os.ReadFile(s.a.ChainEFI)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := esp.MkdirAll("EFI/systemd"); err != nil {
		s.t.Fatal(err)
	}
	if err := esp.WriteFile("EFI/systemd/systemd-bootx64.efi", sdboot); err != nil {
		s.t.Fatal(err)
	}
	if err := esp.WriteFile("EFI/BOOT/BOOTX64.EFI", chain); err != nil {
		s.t.Fatal(err)
	}
	s.t.Logf("host: systemd-boot moved to EFI/systemd/systemd-bootx64.efi, a GRUB that resets when it returns put at EFI/BOOT/BOOTX64.EFI")
}
