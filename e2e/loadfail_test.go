//go:build e2e

package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"sealift/bootloader"
)

// corruptKernel overwrites a slot's kernel on the ESP with random bytes
// from the host, as damage to the ESP would: sealift's own checks (install
// refuses a file that is not a kernel) are bypassed.
func (s *scenario) corruptKernel(slot bootloader.Slot) {
	s.t.Helper()
	esp, done := s.openESP(true)
	defer done()
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
	out := s.install(v2, "--tries", fmt.Sprint(tries))
	s.corruptKernel(bootloader.SlotB)
	// sealift does not look at the kernel again: B is still staged.
	s.stagedInB(v2, out)
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
	s.fellBackAfterTries("v2", cause, tries)
	env := s.grubenv()
	if _, ok := env["sealift_load_failed"]; ok {
		t.Fatalf("grubenv: boot-check cleared B but the load failure is still recorded: %v", env)
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

	s.fellBackAfterTries("v2", "tries exhausted", tries)
}

// chainSDBoot moves systemd-boot to EFI/systemd/systemd-bootx64.efi and
// puts the chain GRUB (Assets.ChainEFI) at EFI/BOOT/BOOTX64.EFI.
func (s *scenario) chainSDBoot() {
	s.t.Helper()
	esp, done := s.openESP(true)
	defer done()
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
