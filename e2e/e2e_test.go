//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"

	"sealift/bootloader"
)

var (
	assetsOnce sync.Once
	shared     *Assets
	assetsErr  error
)

func getAssets(t *testing.T) *Assets {
	t.Helper()
	assetsOnce.Do(func() { shared, assetsErr = buildAssets() })
	if assetsErr != nil {
		t.Fatalf("e2e setup: %v", assetsErr)
	}
	return shared
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		if code == 0 && os.Getenv("SEALIFT_E2E_KEEP") != "1" {
			os.RemoveAll(shared.Work)
		} else {
			fmt.Printf("e2e: disks and serial logs kept in %s\n", shared.Work)
		}
	}
	os.Exit(code)
}

// rootImage builds one version's root filesystem image.
func rootImage(t *testing.T, s *scenario, version string, steps []string) *RootImage {
	t.Helper()
	img, err := buildRoot(s.dir, version, s.a.Busybox, s.a.Sealift, steps)
	if err != nil {
		t.Fatalf("root image %s: %v", version, err)
	}
	return img
}

// rootImageFiles builds a root image with extra files (see buildRootFiles).
func rootImageFiles(t *testing.T, s *scenario, version string, steps []string, files map[string]string) *RootImage {
	t.Helper()
	img, err := buildRootFiles(s.dir, version, s.a.Busybox, s.a.Sealift, steps, files)
	if err != nil {
		t.Fatalf("root image %s: %v", version, err)
	}
	return img
}

// expectLoader checks that the bootloader chose slot: GRUB says so on the
// console; systemd-boot names the entry in LoaderEntrySelected, which the
// guest prints (sealift-NNNN-x[+LEFT[-DONE]].conf).
func (s *scenario) expectLoader(b *Boot, slot string) {
	s.t.Helper()
	if s.backend == "sdboot" {
		if !regexp.MustCompile(`^sealift-[0-9]+-` + strings.ToLower(slot) + `(\+[0-9]+(-[0-9]+)?)?\.conf$`).MatchString(b.Entry) {
			s.fail(b, "boot %d: systemd-boot booted entry %q, want slot %s's", b.N, b.Entry, slot)
		}
		return
	}
	if b.GrubChose != slot {
		s.fail(b, "boot %d: GRUB chose slot %q, want %s", b.N, b.GrubChose, slot)
	}
}

// expectHealthy checks a boot that ran version ver from slot with its root
// on dm-verity (root hash hash) over partition dev, passed its health
// check, ran its steps without error and powered off.
func (s *scenario) expectHealthy(b *Boot, slot, ver, dev, hash string) {
	s.t.Helper()
	s.expectLoader(b, slot)
	if b.Slot != slot || b.Version != ver {
		s.fail(b, "boot %d: guest reports slot=%q version=%q, want slot=%s version=%s", b.N, b.Slot, b.Version, slot, ver)
	}
	if tbl := b.Lines("SEALIFT-E2E-INITRD: verity table:"); len(tbl) != 1 || !strings.Contains(tbl[0], " verity 1 ") || hash == "" || !strings.Contains(tbl[0], " sha256 "+hash+" ") {
		s.fail(b, "boot %d: no dm-verity table with root hash %q from the initramfs: %q", b.N, hash, tbl)
	}
	wantRoot := "SEALIFT-E2E: root dev=dm-"
	root := b.Lines("SEALIFT-E2E: root ")
	if len(root) != 1 || !strings.Contains(root[0], wantRoot) || !strings.Contains(root[0], " dm=root slaves="+dev+" ") {
		s.fail(b, "boot %d: / is not the dm-verity device 'root' over %s: %q", b.N, dev, root)
	}
	if !b.Has("SEALIFT-E2E: health ok") {
		s.fail(b, "boot %d: the health check did not pass", b.N)
	}
	for i := range defaultSteps {
		if !b.Has(fmt.Sprintf("SEALIFT-E2E: step %d rc=0", i+1)) {
			s.fail(b, "boot %d: step %d (%s) did not succeed", b.N, i+1, defaultSteps[i])
		}
	}
	if !b.Done {
		s.fail(b, "boot %d: the guest did not finish", b.N)
	}
}

// guestOutput returns what the guest printed for one step.
func guestOutput(b *Boot, step int) string {
	start := fmt.Sprintf("SEALIFT-E2E: step %d: ", step)
	end := fmt.Sprintf("SEALIFT-E2E: step %d rc=", step)
	var out []string
	in := false
	for _, l := range strings.Split(b.Console, "\n") {
		switch {
		case strings.Contains(l, start):
			in = true
		case strings.Contains(l, end):
			in = false
		case in:
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// bootV1 is the common start: a fresh disk, v1 installed into A with
// sealift's commands, booted once and marked good by the guest.
func (s *scenario) bootV1(v1 *RootImage) {
	s.t.Helper()
	s.initDisk()
	if out := s.install(v1); !strings.Contains(out, "into slot A") {
		s.t.Fatalf("install v1 went elsewhere than slot A: %s", out)
	}
	st := s.status()
	if st.NextBoot.Slot != "A" || !st.NextBoot.Trial {
		s.t.Fatalf("after installing v1 the next boot is %+v, want A on trial\n%s", st.NextBoot, st.raw)
	}
	b := s.boot()
	s.expectHealthy(b, "A", "v1", "vda2", st.rootHash("A"))
	s.t.Logf("guest 'sealift mark-good': %s", strings.TrimSpace(guestOutput(b, 2)))
	st = s.status()
	if _, _, ok, _ := st.slot("A"); !ok {
		s.t.Fatalf("after the guest's mark-good slot A is not successful on the disk\n%s", st.raw)
	}
}

// healthyUpdate runs the healthy-update scenario on s's backend: v1 boots
// from A and is marked good by the guest; v2 is installed into B on the
// host, boots from B on dm-verity and is marked good; the host then sees B
// kept and A as the fallback in sealift's status and in the bootloader's
// own record.
func (s *scenario) healthyUpdate() {
	t := s.t
	t.Helper()
	v1 := rootImage(t, s, "v1", defaultSteps)
	v2 := rootImage(t, s, "v2", defaultSteps)

	s.bootV1(v1)
	if s.backend == "sdboot" {
		if e := s.sdEntries(); len(e["A"]) != 1 || strings.Contains(e["A"][0], "+") || len(e["B"]) != 0 {
			t.Fatalf("after v1 was marked good: want one blessed entry for A and none for B, got %v", e)
		}
	}

	st := s.stagedInB(v2, s.install(v2))
	if s.backend == "sdboot" {
		if e := s.sdEntries(); len(e["B"]) != 1 || !strings.Contains(e["B"][0], "+") || len(e["A"]) != 1 {
			t.Fatalf("after installing v2: want a counted entry for B and A's entry, got %v", e)
		}
	}

	b := s.boot()
	s.expectHealthy(b, "B", "v2", "vda3", st.rootHash("B"))
	t.Logf("guest 'sealift status' on v2:\n%s", guestOutput(b, 3))
	if g := guestOutput(b, 3); !strings.Contains(g, "running:   B") {
		s.fail(b, "the guest's sealift status does not show B running:\n%s", g)
	}

	st = s.status()
	s.logStatus(st, fmt.Sprintf("boot %d", b.N))
	s.expectKeptB(st, "v2")
	s.expectLoaderKeptB()
}

// TestHealthyUpdateGrubenv: v1 boots from A and is marked good by the
// guest; v2 is installed into B on the host, boots from B on dm-verity and
// is marked good; the host then sees B good in sealift's status and in the
// grubenv as GRUB reads it.
func TestHealthyUpdateGrubenv(t *testing.T) {
	t.Parallel()
	s := newScenario(t, getAssets(t))
	defer s.summary()
	s.healthyUpdate()
}

// corruptedSlot runs the corrupted-slot scenario on s's backend: after v2
// is installed into B with two tries, one byte of a file's data in slot B
// is flipped on the host. At each boot of B the bootloader spends a try,
// dm-verity refuses the read (the kernel reports the corrupted data
// block), the guest's health check fails with an I/O error and it reboots
// without marking B good. After B's tries the bootloader boots A, which
// still works and whose boot-check records v2 as rolled back with its
// tries exhausted.
func (s *scenario) corruptedSlot() {
	t := s.t
	t.Helper()
	v1 := rootImage(t, s, "v1", defaultSteps)
	v2 := rootImage(t, s, "v2", defaultSteps)

	s.bootV1(v1)

	const tries = 2
	s.stagedInB(v2, s.install(v2, "--tries", fmt.Sprint(tries)))
	img, err := os.ReadFile(v2.Path)
	if err != nil {
		t.Fatal(err)
	}
	off, err := findOnce(img, v2.PayloadMarker)
	if err != nil {
		t.Fatalf("payload in the v2 image: %v", err)
	}
	// The marker starts the payload file, so it starts a data block: a
	// byte 100 further is file data in the same block, not metadata.
	s.flipSlotByte(bootloader.SlotB, v2, off+100)

	for i := 1; i <= tries; i++ {
		b := s.boot()
		s.expectLoader(b, "B")
		if s.backend == "sdboot" {
			// systemd-boot names the entry as it found it, before it
			// counted this try: +2 as installed, then +1-1.
			want := fmt.Sprintf("-b+%d-%d.conf", tries-i+1, i-1)
			if i == 1 {
				want = fmt.Sprintf("-b+%d.conf", tries)
			}
			if !strings.HasSuffix(b.Entry, want) {
				s.fail(b, "boot %d: systemd-boot booted %q, want B's entry counted as *%s", b.N, b.Entry, want)
			}
		}
		if b.Slot != "B" || b.Version != "v2" {
			s.fail(b, "boot %d: want v2 from slot B on trial (slot=%q version=%q)", b.N, b.Slot, b.Version)
		}
		if hf := b.Lines("SEALIFT-E2E: health failed"); len(hf) != 1 || !strings.Contains(hf[0], "Input/output error") {
			s.fail(b, "boot %d: want the health check to fail with an I/O error, got %q", b.N, hf)
		}
		if want := fmt.Sprintf("data block %d is corrupted", (off+100)/4096); !b.Has(want) {
			s.fail(b, "boot %d: the kernel did not report %q", b.N, want)
		}
		if b.Has("SEALIFT-E2E: step") || b.Done {
			s.fail(b, "boot %d: the guest went on after a failed health check", b.N)
		}
		t.Logf("  kernel: %s", b.Lines("is corrupted")[0])
		s.expectTriesLeft(tries, tries-i)
	}

	s.fellBackAfterTries("v2", "tries exhausted: the new slot was never marked good", tries)
}

// TestCorruptedSlotFallsBack: after v2 is installed into B, one byte of a
// file's data in slot B is flipped on the host. dm-verity refuses the read,
// the guest's health check fails and it reboots without marking B good;
// the boots spend B's tries and GRUB falls back to A, which still works.
func TestCorruptedSlotFallsBack(t *testing.T) {
	t.Parallel()
	s := newScenario(t, getAssets(t))
	defer s.summary()
	s.corruptedSlot()
}

// failingHealthConfig is v2's /etc/sealift/config.toml in the health
// scenarios: one check that always fails, a short deadline, and a reboot
// that busybox carries out (under qemu -no-reboot it ends the boot). The
// [source], [trust] and [node] sections only need to load: they name a
// directory and a file the image has.
const failingHealthConfig = `[source]
layout = "/usr/share/sealift-e2e"

[trust]
root = "/etc/os-release"

[node]
variant = "e2e"

[health]
probation = "0s"
interval = "1s"
deadline = "3s"
reboot_command = ["/bin/sh", "-c", "sync; reboot -f"]

[[health.check]]
name = "kubelet"
type = "command"
command = ["/bin/sh", "-c", "echo kubelet not ready; exit 1"]
timeout = "2s"
`

// healthSteps are v2's steps in the health scenarios: boot-check, then
// sealift health, which marks the slot bad and reboots.
var healthSteps = []string{
	"sealift boot-check --disk /dev/vda --log-format text",
	"sealift health --disk /dev/vda --config /etc/sealift/config.toml --log-format text",
}

// healthFails runs the health-check-fails scenario on s's backend: v1
// boots from A and is marked good; v2 is installed into B and boots once;
// its health check fails, sealift health marks B bad and reboots; the
// bootloader boots A without retrying B, and A's boot-check records the
// rollback with the check's output.
func (s *scenario) healthFails() {
	t := s.t
	t.Helper()
	v1 := rootImage(t, s, "v1", defaultSteps)
	v2 := rootImageFiles(t, s, "v2", healthSteps, map[string]string{"etc/sealift/config.toml": failingHealthConfig})

	s.bootV1(v1)

	s.stagedInB(v2, s.install(v2))

	b := s.boot()
	s.expectLoader(b, "B")
	if s.backend == "sdboot" && !strings.Contains(b.Entry, "-b+") {
		s.fail(b, "boot %d: systemd-boot booted %q, want B's counted entry", b.N, b.Entry)
	}
	if b.Slot != "B" || b.Version != "v2" {
		s.fail(b, "boot %d: guest reports slot=%q version=%q, want slot=B version=v2", b.N, b.Slot, b.Version)
	}
	if !b.Has("SEALIFT-E2E: step 1 rc=0") {
		s.fail(b, "boot %d: boot-check on v2 did not succeed", b.N)
	}
	t.Logf("guest 'sealift boot-check' on v2: %s", strings.TrimSpace(guestOutput(b, 1)))
	if g := guestOutput(b, 2); !strings.Contains(g, `slot B unhealthy: check "kubelet"`) || !strings.Contains(g, "kubelet not ready") || !strings.Contains(g, "marked bad") {
		s.fail(b, "boot %d: sealift health did not report check kubelet failing and B marked bad:\n%s", b.N, g)
	}
	t.Logf("guest 'sealift health' on v2: %s", strings.TrimSpace(guestOutput(b, 2)))
	if b.Has("SEALIFT-E2E: step 2 rc=") || b.Done {
		s.fail(b, "boot %d: the guest went on after sealift health marked B bad (it should have rebooted)", b.N)
	}

	st := s.status()
	s.logStatus(st, "the health failure")
	if _, _, bOK, _ := st.slot("B"); bOK || st.NextBoot.Slot != "A" || st.NextBoot.Trial {
		t.Fatalf("after sealift health marked B bad the next boot should be A, not on trial, and B not successful\n%s", st.raw)
	}

	st = s.fellBackTo("v2", "marked bad (its health check failed): health check")
	b = s.boots[len(s.boots)-1]
	if g := guestOutput(b, 1); !strings.Contains(g, "kubelet not ready") {
		s.fail(b, "boot-check on A did not record the rollback with the health check's output: %q", g)
	}
	if g := guestOutput(b, 3); !strings.Contains(g, "kubelet not ready") {
		s.fail(b, "the guest's sealift status does not show v2 failed with the check's output:\n%s", g)
	}
	if !strings.Contains(st.Failed["v2"].Reason, "kubelet not ready") || !strings.Contains(st.Last.Reason, "kubelet not ready") {
		t.Fatalf("v2's failure and the last outcome do not carry the check's output\n%s", st.raw)
	}
	s.expectLoaderFellBackToA()
	if len(s.boots) != 3 {
		t.Fatalf("%d boots, want 3 (v1 from A, v2 from B once, A again)", len(s.boots))
	}
}

// TestHealthCheckFailsGrubenv: v2 boots from B once; its configured health
// check fails, so sealift health marks B bad and reboots; GRUB boots A
// without retrying B (B had tries left), and A's boot-check records the
// rollback with the check's output.
func TestHealthCheckFailsGrubenv(t *testing.T) {
	t.Parallel()
	s := newScenario(t, getAssets(t))
	defer s.summary()
	s.healthFails()
}

var sdEntryRe = regexp.MustCompile(`^sealift-([0-9]+)-([ab])(\+[0-9]+(-[0-9]+)?)?\.conf$`)

// sdEntries maps each slot ("A", "B") to its entry names in loader/entries;
// a name that is not sealift's fails the test.
func (s *scenario) sdEntries() map[string][]string {
	s.t.Helper()
	m := map[string][]string{}
	for _, n := range s.entries() {
		sm := sdEntryRe.FindStringSubmatch(n)
		if sm == nil {
			s.t.Fatalf("loader/entries holds %q, not a sealift entry", n)
		}
		m[strings.ToUpper(sm[2])] = append(m[strings.ToUpper(sm[2])], n)
	}
	return m
}

// TestSDBootHealthyUpdate: TestHealthyUpdateGrubenv on an sdboot disk
// booted by systemd-boot (installed by 'sealift disk init --efi-binary'):
// systemd-boot boots A's counted entry, then B's; the guest's mark-good
// blesses B's entry (no counter left) and A's entry stays as the fallback.
func TestSDBootHealthyUpdate(t *testing.T) {
	t.Parallel()
	s := newScenario(t, getAssets(t))
	s.backend = "sdboot"
	defer s.summary()
	s.healthyUpdate()
}

// TestSDBootCorruptedSlot: TestCorruptedSlotFallsBack on an sdboot disk
// booted by systemd-boot: each boot of B counts its entry down
// (+2 -> +1-1 -> +0-2) before dm-verity refuses the corrupted block and
// the guest reboots; with B's entry at +0 systemd-boot boots A's, whose
// boot-check records v2 as rolled back with its tries exhausted and
// removes B's entry.
func TestSDBootCorruptedSlot(t *testing.T) {
	t.Parallel()
	s := newScenario(t, getAssets(t))
	s.backend = "sdboot"
	defer s.summary()
	s.corruptedSlot()
}

// TestSDBootHealthCheckFails: TestHealthCheckFailsGrubenv on an sdboot
// disk booted by systemd-boot: B's entry boots once, sealift health marks
// it bad (removing the entry) and reboots, systemd-boot boots A's entry.
func TestSDBootHealthCheckFails(t *testing.T) {
	t.Parallel()
	s := newScenario(t, getAssets(t))
	s.backend = "sdboot"
	defer s.summary()
	s.healthFails()
}
