// Command sealift-demo walks through the main job of sealift on a disk
// image, running the real sealift binary and printing each command and the
// status after it. It needs nothing but the binary and mke2fs.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"
)

func main() {
	bin := pflag.String("sealift", "bin/sealift", "sealift binary to demonstrate")
	work := pflag.String("workdir", "", "directory for the disk image and releases (default: a temp dir, removed afterwards)")
	backend := pflag.String("boot-backend", "grubenv", "boot backend to demonstrate: gptprio, grubenv or sdboot")
	pflag.Parse()
	if err := run(*bin, *work, *backend); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func run(bin, work, backend string) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	if work == "" {
		dir, err := os.MkdirTemp("", "sealift-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		work = dir
	}
	disk := filepath.Join(work, "disk.img")
	os.Remove(disk)
	os.RemoveAll(disk + ".sealift")

	step := func(title string) { fmt.Printf("\n==> %s\n", title) }
	sealift := func(args ...string) error {
		fmt.Printf("$ sealift %s\n", strings.Join(args, " "))
		cmd := exec.Command(bin, append(args, "--log-level", "warn")...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("sealift %s: %w", strings.Join(args, " "), err)
		}
		return nil
	}
	status := func() error { return sealift("status", "--disk", disk) }

	step("two releases: small ext4 root images with a version file, a kernel and an initrd")
	for _, v := range []string{"v1", "v2"} {
		if err := makeRelease(work, v); err != nil {
			return err
		}
		fmt.Printf("built %s\n", filepath.Join(work, v))
	}
	install := func(v string) error {
		d := filepath.Join(work, v)
		return sealift("install", "--disk", disk, "--version", v,
			"--image", filepath.Join(d, "root.img"), "--kernel", filepath.Join(d, "vmlinuz"),
			"--initrd", filepath.Join(d, "initrd.img"), "--cmdline", "console=ttyS0 ro")
	}
	steps := []struct {
		title string
		do    []func() error
	}{
		{"create the A/B disk", []func() error{func() error {
			return sealift("disk", "init", disk, "--size", "1G", "--root-size", "128M", "--boot-backend", backend)
		}, status}},
		{"install v1: it goes into slot A", []func() error{func() error { return install("v1") }, status}},
		{"boot: the bootloader tries A", []func() error{func() error { return sealift("boot", "simulate", "--disk", disk, "--apply") }}},
		{"A is healthy: mark it good", []func() error{func() error { return sealift("mark-good", "--disk", disk) }, status}},
		{"install v2: it goes into the inactive slot B, A stays the fallback", []func() error{func() error { return install("v2") }, status}},
		{"reboot: the bootloader tries B and spends a try", []func() error{func() error { return sealift("boot", "simulate", "--disk", disk, "--apply") }, status}},
		{"B is healthy: mark it good", []func() error{func() error { return sealift("mark-good", "--disk", disk) }, status}},
		{"operator rolls back to v1", []func() error{func() error { return sealift("rollback", "--disk", disk) }, status}},
		{"reboot: A again, B stays as fallback", []func() error{func() error { return sealift("boot", "simulate", "--disk", disk, "--apply") }, status}},
	}
	for _, s := range steps {
		step(s.title)
		for _, f := range s.do {
			if err := f(); err != nil {
				return err
			}
		}
	}
	fmt.Println("\ndemo complete")
	return nil
}

// makeRelease builds WORK/V/{root.img,vmlinuz,initrd.img}. The root image
// is a real ext4 filesystem; kernel and initrd are placeholders, since the
// demo simulates the boot (the qemu tests boot real ones).
func makeRelease(work, v string) error {
	d := filepath.Join(work, v)
	tree := filepath.Join(d, "tree")
	if err := os.MkdirAll(filepath.Join(tree, "etc"), 0o755); err != nil {
		return err
	}
	osr := fmt.Sprintf("NAME=\"sealift demo OS\"\nVERSION_ID=%s\n", v)
	if err := os.WriteFile(filepath.Join(tree, "etc", "os-release"), []byte(osr), 0o644); err != nil {
		return err
	}
	img := filepath.Join(d, "root.img")
	os.Remove(img)
	out, err := exec.Command("mke2fs", "-q", "-t", "ext4", "-L", "root-"+v, "-d", tree, img, "32M").CombinedOutput()
	if err != nil {
		return fmt.Errorf("mke2fs (install e2fsprogs): %v: %s", err, out)
	}
	for name, content := range map[string]string{"vmlinuz": "demo kernel " + v, "initrd.img": "demo initrd " + v} {
		if err := os.WriteFile(filepath.Join(d, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}
