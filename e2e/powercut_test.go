//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sealift/bootloader"
	"sealift/partitions"
)

// powerCutMarker is what the guest prints once v3's write into B is under
// way and the writer is stopped; the harness then kills qemu.
const powerCutMarker = "SEALIFT-E2E: power cut while v3 is written into slot B"

// powerCutScript is v1's last step in the power-cut scenario. Without the
// release disk (vdb) it does nothing. With it, it installs v2 into B (B is
// then staged and bootable), starts installing v3 over it and, once 8 MiB
// more have reached the disk, stops the writer and asks for the power cut.
// Stopping the writer pins the cut inside the write: a kill timed from the
// host could land after a 30 MiB write had finished.
const powerCutScript = `#!/bin/sh
[ -b /dev/vdb ] || { echo "no release disk"; exit 0; }
mount -t ext4 -o ro /dev/vdb /mnt || exit 1
inst() {
  sealift install --disk /dev/vda --image /mnt/root-$1.img --kernel /mnt/vmlinuz \
    --initrd /mnt/initrd.img --cmdline console=ttyS0 --version $1 --log-format text
}
inst v2 || exit 1
# Sectors written to vda, read by the shell itself: a poll that forks
# would let the writer run further between looks.
written() { read -r _ _ _ _ _ _ w _ </sys/block/vda/stat; }
written; w0=$w
inst v3 &
pid=$!
while [ -d /proc/$pid ] && written && [ $((w - w0)) -lt 16384 ]; do sleep 0.02; done
kill -STOP $pid
grep -q '^State:.*stopped' /proc/$pid/status || { echo "v3's install ended before the cut"; exit 1; }
written
echo "` + powerCutMarker + ` ($((w - w0)) sectors written)"
sleep 600
`

// releaseDisk makes an ext4 image with the root images, the kernel and the
// initramfs, for the guest to install from (attached as vdb).
func (s *scenario) releaseDisk(imgs ...*RootImage) string {
	s.t.Helper()
	stage := filepath.Join(s.dir, "release")
	if err := os.MkdirAll(stage, 0o755); err != nil {
		s.t.Fatal(err)
	}
	files := map[string]string{"vmlinuz": s.a.Kernel.Vmlinuz, "initrd.img": s.a.Initrd}
	for _, img := range imgs {
		files[filepath.Base(img.Path)] = img.Path
	}
	var total int64
	for name, src := range files {
		b, err := os.ReadFile(src)
		if err != nil {
			s.t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(stage, name), b, 0o644); err != nil {
			s.t.Fatal(err)
		}
		total += int64(len(b))
	}
	out := filepath.Join(s.dir, "release.img")
	mke2fs, err := findTool("mke2fs", "e2fsprogs")
	if err != nil {
		s.t.Fatal(err)
	}
	blocks := (total*9/8 + 8<<20) / 4096
	if _, err := run("", mke2fs, "-q", "-F", "-t", "ext4", "-b", "4096", "-O", "^has_journal", "-m", "0",
		"-E", "root_owner=0:0", "-d", stage, out, fmt.Sprint(blocks)); err != nil {
		s.t.Fatal(err)
	}
	os.RemoveAll(stage)
	return out
}

// slotHead reads the first n bytes of a slot from the disk image.
func (s *scenario) slotHead(slot bootloader.Slot, n int) []byte {
	s.t.Helper()
	d, err := partitions.Open(s.disk, false)
	if err != nil {
		s.t.Fatal(err)
	}
	start := d.Slot(slot).Start
	d.Close()
	f, err := os.Open(s.disk)
	if err != nil {
		s.t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, start); err != nil {
		s.t.Fatal(err)
	}
	return b
}

// powerCut runs the power-cut scenario on s's backend. Boot 1: v1 boots
// from A and is marked good; in the guest, sealift installs v2 into B,
// then starts installing v3 over it, and qemu is killed in the middle of
// that write. Boot 2: the bootloader boots A (v3's install made B
// unbootable before writing), boot-check and status report the
// interrupted update. The host installs v3 into B again; boot 3 runs it
// from B, healthy, and marks it good.
func (s *scenario) powerCut() {
	t := s.t
	t.Helper()
	steps := append(append([]string{}, defaultSteps...), "sh /etc/sealift-e2e/powercut.sh")
	v1 := rootImageFiles(t, s, "v1", steps, map[string]string{"etc/sealift-e2e/powercut.sh": powerCutScript})
	v2 := rootImage(t, s, "v2", defaultSteps)
	v3 := rootImage(t, s, "v3", defaultSteps)
	rel := s.releaseDisk(v2, v3)

	s.initDisk()
	if out := s.install(v1); !strings.Contains(out, "into slot A") {
		t.Fatalf("install v1 went elsewhere than slot A: %s", out)
	}
	hashA := s.status().rootHash("A")

	b := s.bootWith(bootOptions{extraDisk: rel, powerCutOn: powerCutMarker})
	s.expectLoader(b, "A")
	if b.Slot != "A" || b.Version != "v1" {
		s.fail(b, "boot %d: guest reports slot=%q version=%q, want A and v1", b.N, b.Slot, b.Version)
	}
	for i := range defaultSteps {
		if !b.Has(fmt.Sprintf("SEALIFT-E2E: step %d rc=0", i+1)) {
			s.fail(b, "boot %d: step %d (%s) did not succeed", b.N, i+1, defaultSteps[i])
		}
	}
	g := guestOutput(b, len(steps))
	t.Logf("guest install step:\n%s", g)
	if !strings.Contains(g, "installed v2 into slot B; next boot: B (trial)") {
		s.fail(b, "boot %d: the guest did not stage v2 in slot B first:\n%s", b.N, g)
	}
	if !b.PowerCut || b.Done || strings.Contains(g, "installed v3") {
		s.fail(b, "boot %d: want qemu killed while v3 was being written (power cut=%v, done=%v)", b.N, b.PowerCut, b.Done)
	}

	st := s.status()
	t.Logf("host 'sealift status --json' after the power cut: next=%+v pending=%+v notes=%q", st.NextBoot, st.Pending, st.Notes)
	bPrio, bTries, bOK, bVer := st.slot("B")
	_, _, aOK, aVer := st.slot("A")
	switch {
	case st.Pending == nil || st.Pending.Slot != "B" || st.Pending.Version != "v3" || st.Pending.Phase != "writing":
		t.Fatalf("want v3 pending in slot B, phase writing\n%s", st.raw)
	case !strings.Contains(strings.Join(st.Notes, "\n"), "interrupted while writing slot B"):
		t.Fatalf("status does not explain the interrupted write: %q", st.Notes)
	case bOK || bTries != 0 || bPrio != 0 || bVer != "":
		t.Fatalf("slot B should be unbootable with no release recorded\n%s", st.raw)
	case !aOK || aVer != "v1" || st.NextBoot.Slot != "A" || st.NextBoot.Trial:
		t.Fatalf("the next boot should be A (v1, good), not on trial\n%s", st.raw)
	}
	// v3's write had reached the disk: B's first block holds v3's ext4
	// superblock (its UUID and label differ from v2's). Two writers write
	// 4 MiB chunks in order, so after 8 MiB the first one has landed.
	want, err := os.ReadFile(v3.Path)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.slotHead(bootloader.SlotB, 4096); !bytes.Equal(got, want[:4096]) {
		t.Fatalf("slot B does not start with v3's superblock: the cut came before v3's write reached the disk")
	}
	if s.backend == "sdboot" {
		for _, n := range s.sdEntries()["B"] {
			if !strings.Contains(n, "+0") {
				t.Fatalf("B's entry %q is bootable after the interrupted write", n)
			}
		}
	} else if env := s.grubenv(); env["B_OK"] == "1" || env["B_TRY"] != "0" || !strings.HasPrefix(env["ORDER"], "A") {
		t.Fatalf("grubenv: want B_OK!=1, B_TRY=0 and ORDER starting with A after the interrupted write, got %v", env)
	}

	b = s.boot()
	s.expectHealthy(b, "A", "v1", "vda2", hashA)
	g = guestOutput(b, 1)
	t.Logf("guest 'sealift boot-check' after the power cut: %s", strings.TrimSpace(g))
	if !strings.Contains(g, "running A; an update was interrupted while writing") {
		s.fail(b, "boot-check on A did not report the interrupted update: %q", g)
	}
	if g := guestOutput(b, 3); !strings.Contains(g, "the update to v3 was interrupted while writing slot B") {
		s.fail(b, "the guest's sealift status does not show the interrupted update:\n%s", g)
	}
	txt := s.sealift("status", "--disk", s.disk)
	t.Logf("host 'sealift status' after boot %d:\n%s", b.N, txt)
	if !strings.Contains(txt, "the update to v3 was interrupted while writing slot B") {
		t.Fatalf("host 'sealift status' does not show the interrupted update:\n%s", txt)
	}

	st = s.stagedInB(v3, s.install(v3))

	b = s.boot()
	s.expectHealthy(b, "B", "v3", "vda3", st.rootHash("B"))
	if g := guestOutput(b, 3); !strings.Contains(g, "running:   B") {
		s.fail(b, "the guest's sealift status does not show B running:\n%s", g)
	}

	st = s.status()
	s.logStatus(st, fmt.Sprintf("boot %d", b.N))
	s.expectKeptB(st, "v3")
	s.expectLoaderKeptB()
	if len(s.boots) != 3 {
		t.Fatalf("%d boots, want 3", len(s.boots))
	}
}

// TestPowerCutGrubenv: qemu is killed while the guest writes v3 into B;
// GRUB boots A, and v3 installed again boots from B and is marked good.
func TestPowerCutGrubenv(t *testing.T) {
	t.Parallel()
	s := newScenario(t, getAssets(t))
	defer s.summary()
	s.powerCut()
}

// TestSDBootPowerCut: TestPowerCutGrubenv booted by systemd-boot.
func TestSDBootPowerCut(t *testing.T) {
	t.Parallel()
	s := newScenario(t, getAssets(t))
	s.backend = "sdboot"
	defer s.summary()
	s.powerCut()
}
