package main

import (
	"bytes"
	"encoding/json"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sealift/internal/kernelimage"
	"sealift/partitions"
	"sealift/updater"
)

// cli runs sealift in-process and returns exit code, stdout and stderr.
func cli(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errs := cli(t, args...)
	if code != 0 {
		t.Fatalf("sealift %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

type localRelease struct{ image, kernel, initrd string }

func makeRelease(t *testing.T, dir string, seed int64, size int) localRelease {
	t.Helper()
	img := make([]byte, size)
	rand.New(rand.NewSource(seed)).Read(img)
	r := localRelease{filepath.Join(dir, "root.img"), filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd.img")}
	for p, b := range map[string][]byte{r.image: img, r.kernel: kernelimage.Synthetic([]byte("kernel")), r.initrd: []byte("initrd")} {
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func status(t *testing.T, disk string) updater.Status {
	t.Helper()
	var st updater.Status
	if err := json.Unmarshal([]byte(mustCLI(t, "status", "--disk", disk, "--json")), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func install(t *testing.T, disk string, r localRelease, version string, extra ...string) (int, string) {
	t.Helper()
	args := append([]string{"install", "--disk", disk, "--image", r.image, "--kernel", r.kernel,
		"--initrd", r.initrd, "--cmdline", "console=ttyS0", "--version", version, "--log-level", "error"}, extra...)
	code, out, errs := cli(t, args...)
	return code, out + errs
}

// TestCLIWholeCycle runs the demo's sequence through the CLI on a real
// disk image for every backend.
func TestCLIWholeCycle(t *testing.T) {
	for _, backend := range []string{"gptprio", "grubenv", "sdboot"} {
		t.Run(backend, func(t *testing.T) {
			dir := t.TempDir()
			disk := filepath.Join(dir, "disk.img")
			mustCLI(t, "disk", "init", disk, "--size", "320M", "--root-size", "64M", "--esp-size", "64M", "--boot-backend", backend)
			r := makeRelease(t, dir, 1, 4<<20)
			if code, out := install(t, disk, r, "v1"); code != 0 || !strings.Contains(out, "into slot A") {
				t.Fatalf("install v1: %d %s", code, out)
			}
			if out := mustCLI(t, "boot", "simulate", "--disk", disk, "--apply"); !strings.Contains(out, "booted A (trial") {
				t.Fatalf("boot: %s", out)
			}
			mustCLI(t, "mark-good", "--disk", disk)
			if code, out := install(t, disk, r, "v2"); code != 0 || !strings.Contains(out, "into slot B") || !strings.Contains(out, "next boot: B (trial)") {
				t.Fatalf("install v2: %d %s", code, out)
			}
			st := status(t, disk)
			if st.Backend != backend || st.Pending == nil || st.Pending.Version != "v2" || st.Slots[1].Record == nil || !st.Slots[0].Flags.Successful {
				t.Fatalf("status: %+v", st)
			}
			mustCLI(t, "boot", "simulate", "--disk", disk, "--apply")
			mustCLI(t, "mark-good", "--disk", disk)
			mustCLI(t, "rollback", "--disk", disk)
			if out := mustCLI(t, "boot", "simulate", "--disk", disk); !strings.Contains(out, "next boot: A") {
				t.Fatalf("after rollback: %s", out)
			}
			human := mustCLI(t, "status", "--disk", disk)
			for _, want := range []string{"boot backend " + backend, "v1", "v2", "next boot: A", "rolled-back"} {
				if !strings.Contains(human, want) {
					t.Errorf("status lacks %q:\n%s", want, human)
				}
			}
		})
	}
}

func TestCLIBadInput(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	mustCLI(t, "disk", "init", disk, "--size", "320M", "--root-size", "64M", "--esp-size", "64M")
	r := makeRelease(t, dir, 2, 1<<20)
	if code, out := install(t, disk, r, "v1"); code != 0 {
		t.Fatal(out)
	}
	mustCLI(t, "boot", "simulate", "--disk", disk, "--apply")
	mustCLI(t, "mark-good", "--disk", disk)
	before := status(t, disk)

	odd := filepath.Join(dir, "odd.img")
	os.WriteFile(odd, make([]byte, 5000), 0o644)
	big := filepath.Join(dir, "big.img")
	f, _ := os.Create(big)
	f.Truncate(64 << 20)
	f.Close()
	junk := filepath.Join(dir, "junk")
	os.WriteFile(junk, []byte("kernel"), 0o644)
	plain := filepath.Join(dir, "plain.img")
	f, _ = os.Create(plain)
	f.Truncate(64 << 20)
	f.Close()

	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"image larger than slot", []string{"install", "--disk", disk, "--image", big, "--kernel", r.kernel, "--version", "v2"}, exitBadInput, "the slot holds"},
		{"size not multiple of 4096", []string{"install", "--disk", disk, "--image", odd, "--kernel", r.kernel, "--version", "v2"}, exitBadInput, "multiple of 4096"},
		{"missing kernel", []string{"install", "--disk", disk, "--image", r.image, "--kernel", filepath.Join(dir, "nope"), "--version", "v2"}, exitBadInput, "kernel"},
		{"no tries", []string{"install", "--disk", disk, "--image", r.image, "--kernel", r.kernel, "--version", "v2", "--tries", "0"}, exitBadInput, "--tries 0: want 1-15 boots"},
		{"too many tries", []string{"install", "--disk", disk, "--image", r.image, "--kernel", r.kernel, "--version", "v2", "--tries", "16"}, exitBadInput, "--tries 16: want 1-15 boots"},
		{"negative tries", []string{"install", "--disk", disk, "--image", r.image, "--kernel", r.kernel, "--version", "v2", "--tries", "-1"}, exitBadInput, "--tries -1"},
		{"missing image", []string{"install", "--disk", disk, "--image", filepath.Join(dir, "nope"), "--kernel", r.kernel, "--version", "v2"}, exitBadInput, "image"},
		{"not a kernel", []string{"install", "--disk", disk, "--image", r.image, "--kernel", junk, "--version", "v2"}, exitBadInput,
			"kernel " + junk + ": not a kernel image: 6 bytes starting with 6b 65 72 6e 65 6c; want an x86 bzImage"},
		{"release build of not a kernel", []string{"release", "build", r.image, "--kernel", junk, "--version", "v2", "--variant", "k8s", "--out", filepath.Join(dir, "layout")}, exitBadInput,
			"kernel " + junk + ": not a kernel image"},
		{"disk without our layout", []string{"status", "--disk", plain}, exitBadInput, "GPT"},
		{"unknown disk", []string{"status", "--disk", filepath.Join(dir, "missing.img")}, exitBadInput, "missing.img"},
		{"unknown command", []string{"frobnicate"}, exitUsage, "unknown command"},
		{"bad flag", []string{"status", "--frob"}, exitUsage, "frob"},
		{"existing table without --force", []string{"disk", "init", disk, "--size", "256M"}, exitBadInput, "partition table"},
		{"cancel with nothing pending", []string{"cancel", "--disk", disk}, exitNothing, "no update is pending"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out, errs := cli(t, c.args...)
			if code != c.code || !strings.Contains(strings.ToLower(out+errs), strings.ToLower(c.want)) {
				t.Fatalf("exit %d (want %d), output lacks %q:\n%s%s", code, c.code, c.want, out, errs)
			}
			after := status(t, disk)
			a, _ := json.Marshal(after.Slots)
			b, _ := json.Marshal(before.Slots)
			if !bytes.Equal(a, b) {
				t.Fatalf("slots changed:\n%s\n%s", b, a)
			}
		})
	}
}

func TestCLIBootCheckRecordsFallback(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	mustCLI(t, "disk", "init", disk, "--size", "320M", "--root-size", "64M", "--esp-size", "64M", "--boot-backend", "sdboot")
	r := makeRelease(t, dir, 3, 1<<20)
	for _, v := range []string{"v1", "v2"} {
		if code, out := install(t, disk, r, v); code != 0 {
			t.Fatal(out)
		}
		mustCLI(t, "boot", "simulate", "--disk", disk, "--apply")
		if v == "v1" {
			mustCLI(t, "mark-good", "--disk", disk)
		}
	}
	if out := mustCLI(t, "boot-check", "--disk", disk); !strings.Contains(out, "on trial") {
		t.Fatalf("boot-check on trial: %s", out)
	}
	mustCLI(t, "mark-bad", "--disk", disk, "--reason", "kubelet never became ready")
	mustCLI(t, "boot", "simulate", "--disk", disk, "--apply")
	if out := mustCLI(t, "boot-check", "--disk", disk); !strings.Contains(out, "fell back: marked bad") {
		t.Fatalf("boot-check after fallback: %s", out)
	}
	human := mustCLI(t, "status", "--disk", disk)
	for _, want := range []string{"failed:    v2 in slot B", "kubelet never became ready", "not retried", "running:   A"} {
		if !strings.Contains(human, want) {
			t.Errorf("status lacks %q:\n%s", want, human)
		}
	}
	mustCLI(t, "retry", "v2", "--disk", disk)
	if st := status(t, disk); len(st.Failed) != 0 {
		t.Fatalf("failed after retry: %+v", st.Failed)
	}
	if code, _, _ := cli(t, "retry", "v9", "--disk", disk); code != exitBadInput {
		t.Fatalf("retry of an unknown failure: exit %d", code)
	}
}

func TestCLIHealth(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	mustCLI(t, "disk", "init", disk, "--size", "320M", "--root-size", "64M", "--esp-size", "64M")
	r := makeRelease(t, dir, 4, 1<<20)
	for _, v := range []string{"v1", "v2"} {
		if code, out := install(t, disk, r, v); code != 0 {
			t.Fatal(out)
		}
		mustCLI(t, "boot", "simulate", "--disk", disk, "--apply")
		if v == "v1" {
			mustCLI(t, "mark-good", "--disk", disk)
		}
	}
	os.WriteFile(filepath.Join(dir, "root.json"), []byte("{}"), 0o644)
	cfg := filepath.Join(dir, "config.toml")
	marker := filepath.Join(dir, "rebooted")
	os.WriteFile(cfg, []byte(`[source]
layout = "."
[trust]
root = "root.json"
[node]
variant = "k8s"
[health]
probation = "0s"
interval = "10ms"
deadline = "50ms"
reboot_command = ["/bin/sh", "-c", "touch `+marker+`"]
[[health.check]]
name = "api"
type = "command"
command = ["/bin/sh", "-c", "echo apiserver down; exit 1"]
`), 0o644)
	out := mustCLI(t, "health", "--disk", disk, "--config", cfg)
	if !strings.Contains(out, `unhealthy: check "api": exit code 1, expected 0: apiserver down; marked bad`) {
		t.Fatalf("health: %s", out)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatal("the reboot command did not run")
	}
	if out := mustCLI(t, "boot", "simulate", "--disk", disk); !strings.Contains(out, "next boot: A") {
		t.Fatalf("after unhealthy: %s", out)
	}
}

func TestCLIDiskInitInstallsEFIBinary(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "BOOTX64.EFI")
	os.WriteFile(bin, []byte("MZ fake efi"), 0o644)
	disk := filepath.Join(dir, "disk.img")
	mustCLI(t, "disk", "init", disk, "--size", "320M", "--root-size", "64M", "--esp-size", "64M", "--efi-binary", bin)
	d, err := partitions.Open(disk, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	esp, err := d.ESPFS()
	if err != nil {
		t.Fatal(err)
	}
	if b, err := esp.ReadFile("EFI/BOOT/BOOTX64.EFI"); err != nil || string(b) != "MZ fake efi" {
		t.Fatalf("%q %v", b, err)
	}
	if code, _, _ := cli(t, "disk", "init", filepath.Join(dir, "d2.img"), "--size", "320M", "--efi-binary", filepath.Join(dir, "nope")); code != exitBadInput {
		t.Fatalf("missing EFI binary: exit %d", code)
	}
	if _, err := os.Stat(filepath.Join(dir, "d2.img")); err == nil {
		t.Fatal("disk created despite the missing EFI binary")
	}
}
