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

// TestHealthyUpdateGrubenv: v1 boots from A and is marked good by the
// guest; v2 is installed into B on the host, boots from B on dm-verity and
// is marked good; the host then sees B good in sealift's status and in the
// grubenv as GRUB reads it.
func TestHealthyUpdateGrubenv(t *testing.T) {
	t.Parallel()
	a := getAssets(t)
	s := newScenario(t, a)
	defer s.summary()
	v1 := rootImage(t, s, "v1", defaultSteps)
	v2 := rootImage(t, s, "v2", defaultSteps)

	s.bootV1(v1)

	if out := s.install(v2); !strings.Contains(out, "into slot B") {
		t.Fatalf("install v2 went elsewhere than slot B: %s", out)
	}
	st := s.status()
	if st.NextBoot.Slot != "B" || !st.NextBoot.Trial {
		t.Fatalf("after installing v2 the next boot is %+v, want B on trial\n%s", st.NextBoot, st.raw)
	}

	b := s.boot()
	s.expectHealthy(b, "B", "v2", "vda3", st.rootHash("B"))
	t.Logf("guest 'sealift status' on v2:\n%s", guestOutput(b, 3))
	if g := guestOutput(b, 3); !strings.Contains(g, "running:   B") {
		s.fail(b, "the guest's sealift status does not show B running:\n%s", g)
	}

	st = s.status()
	t.Logf("host 'sealift status --json' after boot 2: running=%q simulated=%v next=%+v pending=%v last=%+v notes=%q",
		st.Running, st.Simulated, st.NextBoot, st.Pending, st.Last, st.Notes)
	bPrio, _, bOK, bVer := st.slot("B")
	aPrio, _, aOK, aVer := st.slot("A")
	switch {
	case !bOK || bVer != "v2":
		t.Fatalf("slot B is not v2 marked successful\n%s", st.raw)
	case !aOK || aVer != "v1" || aPrio >= bPrio:
		t.Fatalf("slot A should stay v1, successful, below B as fallback\n%s", st.raw)
	case st.NextBoot.Slot != "B" || st.NextBoot.Trial:
		t.Fatalf("next boot should be B, not on trial\n%s", st.raw)
	case st.Pending != nil:
		t.Fatalf("an update is still pending\n%s", st.raw)
	case st.Last == nil || st.Last.Slot != "B" || st.Last.Version != "v2" || st.Last.Result != "good":
		t.Fatalf("last outcome should be v2 in B good\n%s", st.raw)
	}
	if st.Running != "" && st.Running != "B" {
		t.Fatalf("host status says %s is running after B booted\n%s", st.Running, st.raw)
	}
	env := s.grubenv()
	if env["B_OK"] != "1" || env["A_OK"] != "1" || !strings.HasPrefix(env["ORDER"], "B") {
		t.Fatalf("grubenv: want B_OK=1, A_OK=1 and ORDER starting with B, got %v", env)
	}
}

// TestCorruptedSlotFallsBack: after v2 is installed into B, one byte of a
// file's data in slot B is flipped on the host. dm-verity refuses the read,
// the guest's health check fails and it reboots without marking B good;
// the boots spend B's tries and GRUB falls back to A, which still works.
func TestCorruptedSlotFallsBack(t *testing.T) {
	t.Parallel()
	a := getAssets(t)
	s := newScenario(t, a)
	defer s.summary()
	v1 := rootImage(t, s, "v1", defaultSteps)
	v2 := rootImage(t, s, "v2", defaultSteps)

	s.bootV1(v1)

	const tries = 2
	if out := s.install(v2, "--tries", fmt.Sprint(tries)); !strings.Contains(out, "into slot B") {
		t.Fatalf("install v2 went elsewhere than slot B: %s", out)
	}
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

	for i := 0; i < tries; i++ {
		b := s.boot()
		if b.GrubChose != "B" || b.Slot != "B" || b.Version != "v2" {
			s.fail(b, "boot %d: want v2 from slot B on trial (grub=%q slot=%q version=%q)", b.N, b.GrubChose, b.Slot, b.Version)
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
	}

	b := s.boot()
	s.expectHealthy(b, "A", "v1", "vda2", s.status().rootHash("A"))
	t.Logf("guest 'sealift boot-check' after falling back: %s", strings.TrimSpace(guestOutput(b, 1)))
	if g := guestOutput(b, 1); !strings.Contains(g, "fell back: tries exhausted") {
		t.Fatalf("boot-check on A did not record the fallback from B: %q", g)
	}
	t.Logf("guest 'sealift status' after falling back:\n%s", guestOutput(b, 3))

	st := s.status()
	t.Logf("host 'sealift status --json' after the fallback: running=%q next=%+v pending=%+v last=%+v notes=%q",
		st.Running, st.NextBoot, st.Pending, st.Last, st.Notes)
	_, _, aOK, _ := st.slot("A")
	_, bTries, bOK, _ := st.slot("B")
	switch {
	case !aOK:
		t.Fatalf("slot A should be successful\n%s", st.raw)
	case bOK || bTries != 0:
		t.Fatalf("slot B should have spent its tries and not be successful\n%s", st.raw)
	case st.NextBoot.Slot != "A":
		t.Fatalf("the next boot should be A\n%s", st.raw)
	}
	if st.Pending != nil {
		t.Fatalf("the fallback left a pending update\n%s", st.raw)
	}
	if st.Last == nil || st.Last.Result != "rolled-back" || st.Last.Version != "v2" || st.Running != "A" {
		t.Fatalf("the fallback is not recorded (last %+v, running %q)\n%s", st.Last, st.Running, st.raw)
	}
	env := s.grubenv()
	if env["A_OK"] != "1" || env["B_OK"] == "1" || env["B_TRY"] != "0" {
		t.Fatalf("grubenv: want A_OK=1, B_OK!=1, B_TRY=0, got %v", env)
	}
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
// rollback with the check's output. It returns the host's final status.
func (s *scenario) healthFails() *statusJSON {
	t := s.t
	t.Helper()
	v1 := rootImage(t, s, "v1", defaultSteps)
	v2 := rootImageFiles(t, s, "v2", healthSteps, map[string]string{"etc/sealift/config.toml": failingHealthConfig})

	s.bootV1(v1)

	if out := s.install(v2); !strings.Contains(out, "into slot B") {
		t.Fatalf("install v2 went elsewhere than slot B: %s", out)
	}
	st := s.status()
	if st.NextBoot.Slot != "B" || !st.NextBoot.Trial {
		t.Fatalf("after installing v2 the next boot is %+v, want B on trial\n%s", st.NextBoot, st.raw)
	}

	b := s.boot()
	s.expectLoader(b, "B")
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

	st = s.status()
	t.Logf("host 'sealift status --json' after the health failure: next=%+v pending=%+v last=%+v notes=%q",
		st.NextBoot, st.Pending, st.Last, st.Notes)
	if _, _, bOK, _ := st.slot("B"); bOK || st.NextBoot.Slot != "A" || st.NextBoot.Trial {
		t.Fatalf("after sealift health marked B bad the next boot should be A, not on trial, and B not successful\n%s", st.raw)
	}

	b = s.boot()
	s.expectHealthy(b, "A", "v1", "vda2", st.rootHash("A"))
	g := guestOutput(b, 1)
	t.Logf("guest 'sealift boot-check' after the rollback: %s", strings.TrimSpace(g))
	if !strings.Contains(g, "fell back: "+"marked bad (its health check failed): health check") || !strings.Contains(g, "kubelet not ready") {
		s.fail(b, "boot-check on A did not record the rollback with the health check's output: %q", g)
	}
	t.Logf("guest 'sealift status' after the rollback:\n%s", guestOutput(b, 3))
	if g := guestOutput(b, 3); !strings.Contains(g, "failed:    v2 in slot B") || !strings.Contains(g, "kubelet not ready") {
		s.fail(b, "the guest's sealift status does not show v2 failed with the check's output:\n%s", g)
	}

	st = s.status()
	t.Logf("host 'sealift status --json' after the rollback: running=%q next=%+v pending=%+v last=%+v failed=%+v notes=%q",
		st.Running, st.NextBoot, st.Pending, st.Last, st.Failed, st.Notes)
	f, failed := st.Failed["v2"]
	_, _, aOK, aVer := st.slot("A")
	bPrio, bTries, bOK, _ := st.slot("B")
	switch {
	case !failed || f.Slot != "B" || !strings.Contains(f.Reason, "kubelet not ready"):
		t.Fatalf("v2 is not recorded failed in slot B with the check's output\n%s", st.raw)
	case st.Last == nil || st.Last.Result != "rolled-back" || st.Last.Version != "v2" || st.Last.Slot != "B" ||
		!strings.HasPrefix(st.Last.Reason, "marked bad (its health check failed): health check") || !strings.Contains(st.Last.Reason, "kubelet not ready"):
		t.Fatalf("last outcome should be v2 in B rolled back, marked bad by its health check\n%s", st.raw)
	case st.Pending != nil:
		t.Fatalf("the rollback left a pending update\n%s", st.raw)
	case !aOK || aVer != "v1":
		t.Fatalf("slot A should stay v1 and successful\n%s", st.raw)
	case bOK || bTries != 0 || bPrio != 0:
		t.Fatalf("slot B should be cleared (priority 0, no tries, not successful)\n%s", st.raw)
	case st.NextBoot.Slot != "A" || st.NextBoot.Trial:
		t.Fatalf("the next boot should be A, not on trial\n%s", st.raw)
	}
	if st.Running != "" && st.Running != "A" {
		t.Fatalf("host status says %s is running after A booted\n%s", st.Running, st.raw)
	}
	return st
}

// TestHealthCheckFailsGrubenv: v2 boots from B once; its configured health
// check fails, so sealift health marks B bad and reboots; GRUB boots A
// without retrying B (B had tries left), and A's boot-check records the
// rollback with the check's output.
func TestHealthCheckFailsGrubenv(t *testing.T) {
	t.Parallel()
	a := getAssets(t)
	s := newScenario(t, a)
	defer s.summary()
	s.healthFails()
	if len(s.boots) != 3 {
		t.Fatalf("%d boots, want 3 (v1 from A, v2 from B once, A again)", len(s.boots))
	}
	env := s.grubenv()
	if env["A_OK"] != "1" || env["B_OK"] == "1" || env["B_TRY"] != "0" || !strings.HasPrefix(env["ORDER"], "A") {
		t.Fatalf("grubenv: want A_OK=1, B_OK!=1, B_TRY=0 and ORDER starting with A, got %v", env)
	}
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
	a := getAssets(t)
	s := newScenario(t, a)
	s.backend = "sdboot"
	defer s.summary()
	v1 := rootImage(t, s, "v1", defaultSteps)
	v2 := rootImage(t, s, "v2", defaultSteps)

	s.bootV1(v1)
	if e := s.sdEntries(); len(e["A"]) != 1 || strings.Contains(e["A"][0], "+") || len(e["B"]) != 0 {
		t.Fatalf("after v1 was marked good: want one blessed entry for A and none for B, got %v", e)
	}

	if out := s.install(v2); !strings.Contains(out, "into slot B") {
		t.Fatalf("install v2 went elsewhere than slot B: %s", out)
	}
	st := s.status()
	if st.NextBoot.Slot != "B" || !st.NextBoot.Trial {
		t.Fatalf("after installing v2 the next boot is %+v, want B on trial\n%s", st.NextBoot, st.raw)
	}
	if e := s.sdEntries(); len(e["B"]) != 1 || !strings.Contains(e["B"][0], "+") || len(e["A"]) != 1 {
		t.Fatalf("after installing v2: want a counted entry for B and A's entry, got %v", e)
	}

	b := s.boot()
	s.expectHealthy(b, "B", "v2", "vda3", st.rootHash("B"))
	if g := guestOutput(b, 3); !strings.Contains(g, "running:   B") {
		s.fail(b, "the guest's sealift status does not show B running:\n%s", g)
	}

	st = s.status()
	t.Logf("host 'sealift status --json' after boot 2: running=%q next=%+v pending=%v last=%+v notes=%q",
		st.Running, st.NextBoot, st.Pending, st.Last, st.Notes)
	bPrio, _, bOK, bVer := st.slot("B")
	aPrio, _, aOK, aVer := st.slot("A")
	switch {
	case !bOK || bVer != "v2":
		t.Fatalf("slot B is not v2 marked successful\n%s", st.raw)
	case !aOK || aVer != "v1" || aPrio >= bPrio:
		t.Fatalf("slot A should stay v1, successful, below B as fallback\n%s", st.raw)
	case st.NextBoot.Slot != "B" || st.NextBoot.Trial:
		t.Fatalf("next boot should be B, not on trial\n%s", st.raw)
	case st.Pending != nil:
		t.Fatalf("an update is still pending\n%s", st.raw)
	case st.Last == nil || st.Last.Slot != "B" || st.Last.Version != "v2" || st.Last.Result != "good":
		t.Fatalf("last outcome should be v2 in B good\n%s", st.raw)
	}
	e := s.sdEntries()
	if len(e["B"]) != 1 || strings.Contains(e["B"][0], "+") {
		t.Fatalf("B's entry should be blessed (no counter), got %v", e)
	}
	if len(e["A"]) != 1 || strings.Contains(e["A"][0], "+") {
		t.Fatalf("A's blessed entry should still be there as the fallback, got %v", e)
	}
	gen := func(n string) string { return sdEntryRe.FindStringSubmatch(n)[1] }
	if gen(e["B"][0]) <= gen(e["A"][0]) {
		t.Fatalf("B's entry should sort above A's (higher generation), got %v", e)
	}
}

// TestSDBootHealthCheckFails: TestHealthCheckFailsGrubenv on an sdboot
// disk booted by systemd-boot: B's entry boots once, sealift health marks
// it bad (removing the entry) and reboots, systemd-boot boots A's entry.
func TestSDBootHealthCheckFails(t *testing.T) {
	t.Parallel()
	a := getAssets(t)
	s := newScenario(t, a)
	s.backend = "sdboot"
	defer s.summary()
	s.healthFails()
	if len(s.boots) != 3 {
		t.Fatalf("%d boots, want 3 (v1 from A, v2 from B once, A again)", len(s.boots))
	}
	if e := s.boots[1].Entry; !strings.Contains(e, "-b+") {
		t.Fatalf("boot 2: systemd-boot booted %q, want B's counted entry", e)
	}
	e := s.sdEntries()
	if len(e["A"]) != 1 || strings.Contains(e["A"][0], "+") {
		t.Fatalf("A's blessed entry should be there, got %v", e)
	}
	for _, n := range e["B"] {
		if !strings.Contains(n, "+0") {
			t.Fatalf("B's entry %q is still bootable after it was marked bad (want it removed or at +0): %v", n, e)
		}
	}
}
