//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"sealift/bootloader"
	"sealift/partitions"
)

// Disk geometry: the cloud kernel is ~14 MiB and each slot's boot files
// live on the ESP, so the default 128 MiB ESP is kept; a root image is
// ~25 MiB; STATE takes the rest (sealift's minimum is 64 MiB).
const (
	diskSize = "400M"
	rootSize = "64M"
)

// scenario is one disk and the boots of it.
type scenario struct {
	t     *testing.T
	a     *Assets
	dir   string
	disk  string
	boots []*Boot
	// backend is the disk's boot backend: grubenv (the default, booted by
	// the standalone GRUB) or sdboot (booted by systemd-boot).
	backend string
	// diskSize and rootSize are 'sealift disk init's --size and
	// --root-size (default: the constants above).
	diskSize, rootSize string
	// aVersion is what slot A holds from the start (default v1).
	aVersion string
}

// sdbootEFI is Debian's systemd-boot (package systemd-boot-efi).
const sdbootEFI = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"

func newScenario(t *testing.T, a *Assets) *scenario {
	t.Helper()
	dir := filepath.Join(a.Work, strings.ReplaceAll(t.Name(), "/", "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return &scenario{t: t, a: a, dir: dir, disk: filepath.Join(dir, "disk.img"), backend: "grubenv", diskSize: diskSize, rootSize: rootSize, aVersion: "v1"}
}

// sealift runs the host's sealift and returns its stdout; a failure ends
// the test with everything it printed.
func (s *scenario) sealift(args ...string) string {
	s.t.Helper()
	out, err := s.sealiftErr(args...)
	if err != nil {
		s.t.Fatalf("%v", err)
	}
	return out
}

func (s *scenario) sealiftErr(args ...string) (string, error) {
	cmd := exec.Command(s.a.Sealift, append(args, "--log-format", "text")...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("sealift %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String(), nil
}

// initDisk creates the disk with sealift's own command and puts the
// standalone GRUB on its ESP as the removable-media boot loader (sealift
// writes EFI/sealift/grub.cfg but installs no EFI binary).
func (s *scenario) initDisk() {
	s.t.Helper()
	if s.backend == "sdboot" {
		s.initDiskSDBoot()
		return
	}
	// sealift installs the standalone GRUB itself, as systemd-boot below.
	s.sealift("disk", "init", s.disk, "--size", s.diskSize, "--root-size", s.rootSize, "--boot-backend", "grubenv", "--efi-binary", s.a.GrubEFI)
	esp, done := s.esp()
	defer done()
	if _, err := esp.ReadFile("EFI/sealift/grub.cfg"); err != nil {
		s.t.Fatalf("sealift disk init --boot-backend grubenv wrote no EFI/sealift/grub.cfg: %v", err)
	}
}

// esp opens the disk's ESP read-only through sealift's own FAT code.
func (s *scenario) esp() (bootloader.FS, func()) {
	s.t.Helper()
	return s.openESP(false)
}

// openESP opens the disk's ESP through sealift's own FAT code, for
// writing if write; the func it returns closes the disk.
func (s *scenario) openESP(write bool) (bootloader.FS, func()) {
	s.t.Helper()
	d, err := partitions.Open(s.disk, write)
	if err != nil {
		s.t.Fatal(err)
	}
	esp, err := d.ESPFS()
	if err != nil {
		d.Close()
		s.t.Fatal(err)
	}
	return esp, func() { d.Close() }
}

// initDiskSDBoot creates an sdboot disk with systemd-boot installed by
// sealift itself (--efi-binary) as EFI/BOOT/BOOTX64.EFI.
func (s *scenario) initDiskSDBoot() {
	s.t.Helper()
	want, err := os.ReadFile(sdbootEFI)
	if err != nil {
		s.t.Fatalf("systemd-boot: %v (install Debian package systemd-boot-efi: bash e2e/setup.sh)", err)
	}
	s.sealift("disk", "init", s.disk, "--size", s.diskSize, "--root-size", s.rootSize, "--boot-backend", "sdboot", "--efi-binary", sdbootEFI)
	esp, done := s.esp()
	defer done()
	if got, err := esp.ReadFile("EFI/BOOT/BOOTX64.EFI"); err != nil || !bytes.Equal(got, want) {
		s.t.Fatalf("sealift disk init --efi-binary did not install systemd-boot as EFI/BOOT/BOOTX64.EFI (%v)", err)
	}
	if _, err := esp.ReadFile("loader/loader.conf"); err != nil {
		s.t.Fatalf("sealift disk init --boot-backend sdboot wrote no loader/loader.conf: %v", err)
	}
}

// entries lists loader/entries on the ESP, sorted.
func (s *scenario) entries() []string {
	s.t.Helper()
	esp, done := s.esp()
	defer done()
	names, err := esp.ReadDir("loader/entries")
	if err != nil {
		s.t.Fatal(err)
	}
	sort.Strings(names)
	s.t.Logf("ESP loader/entries: %s", strings.Join(names, " "))
	return names
}

// install writes a root image with the slot's kernel and initramfs.
func (s *scenario) install(img *RootImage, extra ...string) string {
	s.t.Helper()
	return s.installBoot(img, s.a.Kernel.Vmlinuz, s.a.Initrd, "console=ttyS0", extra...)
}

// installBoot is install with the given kernel, initramfs ("" for none)
// and command line.
func (s *scenario) installBoot(img *RootImage, kernel, initrd, cmdline string, extra ...string) string {
	s.t.Helper()
	args := []string{"install", "--disk", s.disk, "--image", img.Path, "--kernel", kernel,
		"--cmdline", cmdline, "--version", img.Version}
	if initrd != "" {
		args = append(args, "--initrd", initrd)
	}
	args = append(args, extra...)
	out := s.sealift(args...)
	s.t.Logf("host: %s", strings.TrimSpace(out))
	return out
}

// boot runs one boot and logs its wall time and markers.
func (s *scenario) boot() *Boot {
	s.t.Helper()
	return s.bootWith(bootOptions{})
}

// bootWith is boot with options: a second disk, a power cut, a panic.
func (s *scenario) bootWith(o bootOptions) *Boot {
	s.t.Helper()
	n := len(s.boots) + 1
	b, err := bootOnce(s.a, s.disk, filepath.Join(s.dir, fmt.Sprintf("boot%d.log", n)), n, o)
	if b == nil {
		s.t.Fatalf("boot %d: %v", n, err)
	}
	s.boots = append(s.boots, b)
	s.t.Logf("%s", b.Summary())
	s.t.Logf("  console: %s", b.Markers())
	if err != nil {
		s.fail(b, "boot %d: %v", n, err)
	}
	if b.TimedOut {
		s.fail(b, "boot %d did not end within %s", n, bootTimeout())
	}
	if b.Fatal != "" && !(o.panicOK && b.Panic != "") && !(o.firmwareShellOK && b.Fatal == "UEFI Interactive Shell") {
		s.fail(b, "boot %d ended with %q on the console", n, b.Fatal)
	}
	return b
}

// fail ends the test with the tail of the boot's serial log.
func (s *scenario) fail(b *Boot, format string, args ...any) {
	s.t.Helper()
	s.t.Fatalf("%s\n--- last 40 lines of %s ---\n%s\n---", fmt.Sprintf(format, args...), b.Log, b.Tail(40))
}

// summary logs the wall time of every boot.
func (s *scenario) summary() {
	var total float64
	for _, b := range s.boots {
		total += b.Wall.Seconds()
	}
	s.t.Logf("%d boots, %.1fs in qemu (%s)", len(s.boots), total, accel(s.a))
}

func accel(a *Assets) string {
	if a.KVM {
		return "KVM"
	}
	return "TCG"
}

// statusJSON is the part of 'sealift status --json' the tests check.
type statusJSON struct {
	Running   string `json:"running"`
	Simulated bool   `json:"running_simulated"`
	Slots     []struct {
		Slot  string `json:"slot"`
		Flags struct {
			Priority   int  `json:"priority"`
			Tries      int  `json:"tries"`
			Successful bool `json:"successful"`
		} `json:"flags"`
		Bootable bool `json:"bootable"`
		Running  bool `json:"running"`
		Release  *struct {
			Version string `json:"version"`
			Verity  struct {
				RootHash string `json:"root_hash"`
			} `json:"verity"`
		} `json:"release"`
	} `json:"slots"`
	NextBoot struct {
		Slot  string `json:"slot"`
		Trial bool   `json:"trial"`
	} `json:"next_boot"`
	Pending *struct {
		Slot    string `json:"slot"`
		Version string `json:"version"`
		Phase   string `json:"phase"`
	} `json:"pending"`
	Last   *outcomeJSON           `json:"last"`
	Failed map[string]outcomeJSON `json:"failed"`
	Notes  []string               `json:"notes"`
	raw    string
}

type outcomeJSON struct {
	Slot    string `json:"slot"`
	Version string `json:"version"`
	Result  string `json:"result"`
	Reason  string `json:"reason"`
}

func (s *scenario) status() *statusJSON {
	s.t.Helper()
	out := s.sealift("status", "--disk", s.disk, "--json")
	var st statusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		s.t.Fatalf("sealift status --json: %v\n%s", err, out)
	}
	st.raw = out
	return &st
}

// slot returns one slot of the status; version is "" without a release.
func (st *statusJSON) slot(name string) (prio, tries int, successful bool, version string) {
	for _, sl := range st.Slots {
		if sl.Slot == name {
			if sl.Release != nil {
				version = sl.Release.Version
			}
			return sl.Flags.Priority, sl.Flags.Tries, sl.Flags.Successful, version
		}
	}
	return 0, 0, false, ""
}

// rootHash is the verity root hash sealift recorded for a slot.
func (st *statusJSON) rootHash(name string) string {
	for _, sl := range st.Slots {
		if sl.Slot == name && sl.Release != nil {
			return sl.Release.Verity.RootHash
		}
	}
	return ""
}

// grubenv copies EFI/sealift/grubenv off the ESP and lists it with
// grub-editenv, GRUB's own reader.
func (s *scenario) grubenv() map[string]string {
	s.t.Helper()
	esp, done := s.esp()
	defer done()
	b, err := esp.ReadFile("EFI/sealift/grubenv")
	if err != nil {
		s.t.Fatal(err)
	}
	f := filepath.Join(s.dir, "grubenv")
	if err := os.WriteFile(f, b, 0o644); err != nil {
		s.t.Fatal(err)
	}
	out, err := run("", "grub-editenv", f, "list")
	if err != nil {
		s.t.Fatal(err)
	}
	env := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			env[k] = v
		}
	}
	s.t.Logf("grub-editenv list: %s", strings.Join(strings.Fields(out), " "))
	return env
}

// flipSlotByte inverts one byte of the slot at the given offset, after
// checking that the slot holds the image's byte there.
func (s *scenario) flipSlotByte(slot bootloader.Slot, img *RootImage, off int64) {
	s.t.Helper()
	want, err := os.ReadFile(img.Path)
	if err != nil {
		s.t.Fatal(err)
	}
	d, err := partitions.Open(s.disk, false)
	if err != nil {
		s.t.Fatal(err)
	}
	start := d.Slot(slot).Start
	d.Close()
	f, err := os.OpenFile(s.disk, os.O_RDWR, 0)
	if err != nil {
		s.t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, start+off); err != nil {
		s.t.Fatal(err)
	}
	if b[0] != want[off] {
		s.t.Fatalf("slot %s at image offset %d holds %#x, the image %#x: the slot does not hold the image", slot, off, b[0], want[off])
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, start+off); err != nil {
		s.t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		s.t.Fatal(err)
	}
	s.t.Logf("host: flipped the byte at offset %d of slot %s (disk offset %d): %#x -> %#x", off, slot, start+off, want[off], b[0])
}
