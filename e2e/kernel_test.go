//go:build e2e

package e2e

import (
	"fmt"
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
	s.stagedInB(v2, s.installBoot(v2, s.a.Kernel.Vmlinuz, "", "console=ttyS0 panic=1", "--tries", fmt.Sprint(tries)))

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

	s.fellBackAfterTries("v2", "tries exhausted", tries)
}

// TestKernelPanicsGrubenv: B's kernel panics at every boot; GRUB spends
// B's tries and boots A, whose boot-check records why.
func TestKernelPanicsGrubenv(t *testing.T) {
	t.Parallel()
	s := newScenario(t, getAssets(t))
	defer s.summary()
	s.kernelPanics()
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
}
