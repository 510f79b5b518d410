//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// The guest kernel is Debian's cloud kernel, the package that the
// linux-image-cloud-amd64 metapackage depends on. It is downloaded with
// apt-get into the cache, never installed on the host.
const kernelMeta = "linux-image-cloud-amd64"

// Modules the initramfs loads (their dependencies come from modules.dep).
// A module the kernel has built in is skipped; one it lacks is an error.
// efivarfs lets the root read systemd-boot's LoaderEntrySelected.
// overlay: the initramfs mounts /etc as an overlay on STATE.
var initrdModules = []string{"virtio_pci", "virtio_blk", "dm-mod", "dm-bufio", "dm-verity", "ext4", "efivarfs", "overlay"}

// GRUB modules the standalone image carries: what the embedded config and
// sealift's generated grub.cfg load, and what booting Linux on EFI needs.
var grubModules = []string{
	"part_gpt", "fat", "search", "search_fs_file", "search_fs_uuid", "search_label",
	"configfile", "loadenv", "test", "echo", "normal", "linux", "gzio",
	"all_video", "efi_gop", "efi_uga", "reboot", "halt", "sleep",
}

// cacheDir is where downloads live between runs.
func cacheDir() (string, error) {
	d := os.Getenv("SEALIFT_E2E_CACHE")
	if d == "" {
		d = filepath.Join(os.TempDir(), "sealift-e2e-cache")
	}
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", fmt.Errorf("cache dir: %w", err)
	}
	return filepath.Abs(d)
}

// run runs a command and returns its stdout; the error carries stderr.
func run(dir, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s%s", name, strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String(), nil
}

// findTool finds a program in PATH or the sbin directories a non-root PATH
// may lack, and names the package to install when it is missing.
func findTool(name, pkg string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found: install Debian package %s (bash e2e/setup.sh)", name, pkg)
}

// Kernel is an extracted kernel package.
type Kernel struct {
	Package string // linux-image-6.1.0-NN-cloud-amd64
	Version string // 6.1.0-NN-cloud-amd64
	Root    string // extracted package tree, modules.dep generated
	Vmlinuz string
}

func (k *Kernel) modDir() string { return filepath.Join(k.Root, "lib", "modules", k.Version) }

var kernelDep = regexp.MustCompile(`Depends:\s*(linux-image-\S+-cloud-amd64)\b`)

// getKernel returns the cloud kernel, downloading and extracting it into
// the cache the first time (per package version).
func getKernel(cache string) (*Kernel, error) {
	kdir := filepath.Join(cache, "kernel")
	if err := os.MkdirAll(kdir, 0o755); err != nil {
		return nil, err
	}
	pkg := os.Getenv("SEALIFT_E2E_KERNEL_PKG")
	var lookupErr error
	if pkg == "" {
		out, err := run("", "apt-cache", "depends", kernelMeta)
		if m := kernelDep.FindStringSubmatch(out); err == nil && m != nil {
			pkg = m[1]
		} else {
			lookupErr = fmt.Errorf("apt-cache depends %s gave no versioned kernel package (run e2e/setup.sh, which runs apt-get update): %v\n%s", kernelMeta, err, out)
		}
	}
	if pkg == "" {
		// No package lists: use the newest kernel already in the cache.
		ents, _ := filepath.Glob(filepath.Join(kdir, "linux-image-*", ".done"))
		if len(ents) == 0 {
			return nil, lookupErr
		}
		sort.Strings(ents)
		pkg = filepath.Base(filepath.Dir(ents[len(ents)-1]))
	}
	root := filepath.Join(kdir, pkg)
	if _, err := os.Stat(filepath.Join(root, ".done")); err != nil {
		if err := downloadKernel(kdir, pkg, root); err != nil {
			return nil, err
		}
	}
	vers, err := os.ReadDir(filepath.Join(root, "lib", "modules"))
	if err != nil || len(vers) != 1 {
		return nil, fmt.Errorf("kernel %s: want one lib/modules/VERSION in %s (%v)", pkg, root, err)
	}
	k := &Kernel{Package: pkg, Version: vers[0].Name(), Root: root}
	k.Vmlinuz = filepath.Join(root, "boot", "vmlinuz-"+k.Version)
	if _, err := os.Stat(k.Vmlinuz); err != nil {
		return nil, fmt.Errorf("kernel %s: %w", pkg, err)
	}
	return k, nil
}

func downloadKernel(kdir, pkg, root string) error {
	tmp, err := os.MkdirTemp(kdir, ".download-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if _, err := run(tmp, "apt-get", "download", pkg); err != nil {
		return fmt.Errorf("download the guest kernel: %w", err)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, pkg+"_*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("apt-get download %s left %d .deb files", pkg, len(debs))
	}
	x := filepath.Join(tmp, "root")
	if _, err := run("", "dpkg-deb", "-x", debs[0], x); err != nil {
		return err
	}
	vers, err := os.ReadDir(filepath.Join(x, "lib", "modules"))
	if err != nil || len(vers) != 1 {
		return fmt.Errorf("kernel package %s: want one lib/modules/VERSION (%v)", pkg, err)
	}
	depmod, err := findTool("depmod", "kmod")
	if err != nil {
		return err
	}
	if _, err := run("", depmod, "-b", x, vers[0].Name()); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(x, ".done"), []byte(pkg+"\n"), 0o644); err != nil {
		return err
	}
	os.RemoveAll(root)
	return os.Rename(x, root)
}

// moduleOrder resolves the wanted modules and their dependencies from
// modules.dep into load order (dependencies first), as paths relative to
// the module directory.
func moduleOrder(k *Kernel, want []string) ([]string, error) {
	norm := func(s string) string { return strings.ReplaceAll(s, "-", "_") }
	deps := map[string][]string{}
	byName := map[string]string{}
	f, err := os.Open(filepath.Join(k.modDir(), "modules.dep"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[mod] = strings.Fields(rest)
		byName[norm(strings.TrimSuffix(filepath.Base(mod), ".ko"))] = mod
	}
	builtin, _ := os.ReadFile(filepath.Join(k.modDir(), "modules.builtin"))
	isBuiltin := map[string]bool{}
	for _, l := range strings.Fields(string(builtin)) {
		isBuiltin[norm(strings.TrimSuffix(filepath.Base(l), ".ko"))] = true
	}
	var order []string
	seen := map[string]bool{}
	var visit func(string)
	visit = func(m string) {
		if seen[m] {
			return
		}
		seen[m] = true
		for _, d := range deps[m] {
			visit(d)
		}
		order = append(order, m)
	}
	for _, w := range want {
		if m, ok := byName[norm(w)]; ok {
			visit(m)
		} else if !isBuiltin[norm(w)] {
			return nil, fmt.Errorf("kernel %s has no module %s and does not build it in", k.Version, w)
		}
	}
	for _, m := range order {
		if strings.HasSuffix(m, ".ko.xz") || strings.HasSuffix(m, ".ko.zst") || strings.HasSuffix(m, ".ko.gz") {
			return nil, fmt.Errorf("module %s is compressed; busybox insmod needs plain .ko", m)
		}
	}
	return order, nil
}

// staticBusybox returns the path of a statically linked busybox: the
// initramfs and the root have no libc of their own.
func staticBusybox() (string, error) {
	p, err := findTool("busybox", "busybox-static")
	if err != nil {
		return "", err
	}
	if dynamic, err := isDynamic(p); err != nil {
		return "", err
	} else if dynamic {
		return "", fmt.Errorf("%s is dynamically linked: install Debian package busybox-static", p)
	}
	return p, nil
}

func isDynamic(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return true, nil
		}
	}
	return false, nil
}

// libsOf lists the shared libraries (and the loader) ldd names for a program.
func libsOf(prog string) ([]string, error) {
	out, err := run("", "ldd", prog)
	if err != nil {
		return nil, err
	}
	var libs []string
	for _, l := range strings.Split(out, "\n") {
		for _, f := range strings.Fields(l) {
			if strings.HasPrefix(f, "/") {
				libs = append(libs, f)
			}
		}
	}
	return libs, nil
}

// cpioFile is one entry of a newc archive.
type cpioFile struct {
	name  string
	mode  uint32 // type bits included
	data  []byte // file content or symlink target
	major uint32 // device number of a device node
	minor uint32
}

const (
	sIFDIR = 0o040000
	sIFREG = 0o100000
	sIFLNK = 0o120000
	sIFCHR = 0o020000
)

// writeCpioGz writes a gzip-compressed cpio "newc" archive, the format the
// kernel unpacks an initramfs from. Writing it here keeps the test free of
// mknod (the /dev/console node) and so of root on the host.
func writeCpioGz(path string, files []cpioFile) error {
	var raw bytes.Buffer
	pad := func() {
		for raw.Len()%4 != 0 {
			raw.WriteByte(0)
		}
	}
	entry := func(ino int, f cpioFile) {
		nlink := 1
		if f.mode&sIFDIR != 0 {
			nlink = 2
		}
		fmt.Fprintf(&raw, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, f.mode, 0, 0, nlink, 0, len(f.data), 0, 0, f.major, f.minor, len(f.name)+1, 0)
		raw.WriteString(f.name)
		raw.WriteByte(0)
		pad()
		raw.Write(f.data)
		pad()
	}
	for i, f := range files {
		entry(i+1, f)
	}
	entry(0, cpioFile{name: "TRAILER!!!"})
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	zw, _ := gzip.NewWriterLevel(out, gzip.BestSpeed)
	if _, err := zw.Write(raw.Bytes()); err != nil {
		out.Close()
		return err
	}
	if err := zw.Close(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// buildInitrd makes the initramfs: busybox, the modules, dmsetup with its
// libraries, and guest/initramfs-init.sh as /init.
func buildInitrd(k *Kernel, out string) error {
	busybox, err := staticBusybox()
	if err != nil {
		return err
	}
	dmsetup, err := findTool("dmsetup", "dmsetup")
	if err != nil {
		return err
	}
	initScript, err := os.ReadFile(filepath.Join("guest", "initramfs-init.sh"))
	if err != nil {
		return err
	}
	mods, err := moduleOrder(k, initrdModules)
	if err != nil {
		return err
	}
	dirs := map[string]bool{}
	var files []cpioFile
	mkdirs := func(p string) {
		var parts []string
		for d := filepath.Dir(p); d != "." && d != "/"; d = filepath.Dir(d) {
			parts = append(parts, d)
		}
		for i := len(parts) - 1; i >= 0; i-- {
			if !dirs[parts[i]] {
				dirs[parts[i]] = true
				files = append(files, cpioFile{name: parts[i], mode: sIFDIR | 0o755})
			}
		}
	}
	add := func(name string, mode uint32, data []byte) {
		mkdirs(name)
		files = append(files, cpioFile{name: name, mode: mode, data: data})
	}
	addFile := func(name, src string, perm uint32) error {
		b, err := os.ReadFile(src) // follows symlinks: libraries are copied as files
		if err != nil {
			return err
		}
		add(name, sIFREG|perm, b)
		return nil
	}
	for _, d := range []string{"proc", "sys", "dev", "run", "tmp", "newroot", "etc"} {
		dirs[d] = true
		files = append(files, cpioFile{name: d, mode: sIFDIR | 0o755})
	}
	files = append(files, cpioFile{name: "dev/console", mode: sIFCHR | 0o600, major: 5, minor: 1})
	add("init", sIFREG|0o755, initScript)
	if err := addFile("bin/busybox", busybox, 0o755); err != nil {
		return err
	}
	add("bin/sh", sIFLNK|0o777, []byte("busybox"))
	if err := addFile("sbin/dmsetup", dmsetup, 0o755); err != nil {
		return err
	}
	libs, err := libsOf(dmsetup)
	if err != nil {
		return err
	}
	for _, l := range libs {
		if err := addFile(strings.TrimPrefix(l, "/"), l, 0o755); err != nil {
			return err
		}
	}
	var order strings.Builder
	for _, m := range mods {
		base := filepath.Base(m)
		if err := addFile("lib/modules/"+base, filepath.Join(k.modDir(), m), 0o644); err != nil {
			return err
		}
		order.WriteString(base + "\n")
	}
	add("lib/modules/order", sIFREG|0o644, []byte(order.String()))
	return writeCpioGz(out, files)
}

// buildGrub makes the standalone GRUB EFI binary with the embedded config.
func buildGrub(out string) error {
	return buildStandaloneGrub(out, "grub-embedded.cfg", grubModules)
}

// chainModules are what guest/grub-chain-sdboot.cfg needs.
var chainModules = []string{"part_gpt", "fat", "search", "search_fs_file", "chain", "echo", "reboot", "normal", "test"}

// buildChainGrub makes the standalone GRUB that starts systemd-boot and
// resets the machine if systemd-boot returns (guest/grub-chain-sdboot.cfg).
func buildChainGrub(out string) error {
	return buildStandaloneGrub(out, "grub-chain-sdboot.cfg", chainModules)
}

func buildStandaloneGrub(out, config string, modules []string) error {
	mk, err := findTool("grub-mkstandalone", "grub-common")
	if err != nil {
		return err
	}
	if _, err := os.Stat("/usr/lib/grub/x86_64-efi/linux.mod"); err != nil {
		return fmt.Errorf("GRUB's x86_64-efi modules are missing: install Debian package grub-efi-amd64-bin (bash e2e/setup.sh)")
	}
	cfg, err := filepath.Abs(filepath.Join("guest", config))
	if err != nil {
		return err
	}
	mods := strings.Join(modules, " ")
	_, err = run("", mk, "-O", "x86_64-efi", "-o", out,
		"--install-modules="+mods, "--modules=part_gpt fat",
		"--locales=", "--themes=", "--fonts=",
		"boot/grub/grub.cfg="+cfg)
	return err
}

// buildSealift builds the static sealift used on the host and in the guest.
func buildSealift(out string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=e2e", "-o", out, "./cmd/sealift")
	cmd.Dir = ".." // the repository root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/sealift: %w\n%s", err, b)
	}
	if dyn, err := isDynamic(out); err != nil || dyn {
		return fmt.Errorf("sealift is not a static binary (dynamic=%v, %v)", dyn, err)
	}
	return nil
}

// RootImage describes a built root filesystem image.
type RootImage struct {
	Path    string
	Version string
	// PayloadMarker starts /usr/share/sealift-e2e/payload.bin, so a test
	// can find the file's data in the image (and in the slot).
	PayloadMarker string
}

// defaultSteps are what the guest runs after a healthy boot: boot-check
// (records a fallback from a new slot, if the bootloader made one), mark
// the running slot good (the slot comes from sealift.slot= on
// /proc/cmdline), show the status, and show it once more without --disk,
// so sealift finds the disk itself from / through dm-verity to the
// partition.
var defaultSteps = []string{
	"sealift boot-check --disk /dev/vda --log-format text",
	"sealift mark-good --disk /dev/vda --log-format text",
	"sealift status --disk /dev/vda --log-format text",
	"sealift status --json --log-format text | grep '\"disk\": \"/dev/vda\"'",
}

// buildRoot makes the ext4 root image of one version: busybox (with its
// applet links), the static sealift, /etc/os-release, /sbin/init and the
// steps it runs, and a 1 MiB payload that the init reads as its health
// check. The image size is a multiple of 4096, as sealift requires.
func buildRoot(workDir, version, busybox, sealift string, steps []string) (*RootImage, error) {
	return buildRootFiles(workDir, version, busybox, sealift, steps, nil)
}

// buildRootFiles is buildRoot with extra files (path in the image, without
// the leading slash, to content), e.g. etc/sealift/config.toml.
func buildRootFiles(workDir, version, busybox, sealift string, steps []string, extra map[string]string) (*RootImage, error) {
	stage, err := os.MkdirTemp(workDir, "root-"+version+"-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(stage)
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/share/sealift-e2e", "etc/sealift-e2e", "proc", "sys", "dev", "run", "tmp", "var", "mnt"} {
		if err := os.MkdirAll(filepath.Join(stage, d), 0o755); err != nil {
			return nil, err
		}
	}
	cp := func(src, dst string, perm os.FileMode) error {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(stage, dst), b, perm)
	}
	if err := cp(busybox, "bin/busybox", 0o755); err != nil {
		return nil, err
	}
	list, err := run("", busybox, "--list")
	if err != nil {
		return nil, err
	}
	for _, a := range strings.Fields(list) {
		if a == "busybox" || strings.Contains(a, "/") {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(stage, "bin", a)); err != nil {
			return nil, err
		}
	}
	if err := cp(sealift, "usr/bin/sealift", 0o755); err != nil {
		return nil, err
	}
	if err := cp(filepath.Join("guest", "root-init.sh"), "sbin/init", 0o755); err != nil {
		return nil, err
	}
	osr := fmt.Sprintf("NAME=\"sealift e2e\"\nID=sealift-e2e\nVERSION_ID=%s\nPRETTY_NAME=\"sealift e2e %s\"\n", version, version)
	if err := os.WriteFile(filepath.Join(stage, "etc/os-release"), []byte(osr), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(stage, "etc/sealift-e2e/steps"), []byte(strings.Join(steps, "\n")+"\n"), 0o644); err != nil {
		return nil, err
	}
	for name, content := range extra {
		dst := filepath.Join(stage, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(dst, []byte(content), 0o644); err != nil {
			return nil, err
		}
	}
	marker := "SEALIFT-E2E-PAYLOAD-" + version + "\n"
	seed := sha256.Sum256([]byte(version))
	rng := rand.NewChaCha8(seed)
	payload := make([]byte, 1<<20)
	rng.Read(payload)
	copy(payload, marker)
	if err := os.WriteFile(filepath.Join(stage, "usr/share/sealift-e2e/payload.bin"), payload, 0o644); err != nil {
		return nil, err
	}
	var total int64
	filepath.Walk(stage, func(_ string, fi os.FileInfo, err error) error {
		if err == nil {
			total += fi.Size() + 4096
		}
		return nil
	})
	blocks := (total*5/4 + 8<<20) / 4096
	out := filepath.Join(workDir, "root-"+version+".img")
	os.Remove(out)
	mke2fs, err := findTool("mke2fs", "e2fsprogs")
	if err != nil {
		return nil, err
	}
	// No journal: the root is only ever mounted read-only through verity.
	if _, err := run("", mke2fs, "-q", "-F", "-t", "ext4", "-b", "4096", "-O", "^has_journal", "-m", "0",
		"-L", "root-"+version, "-E", "root_owner=0:0", "-d", stage, out, fmt.Sprint(blocks)); err != nil {
		return nil, err
	}
	st, err := os.Stat(out)
	if err != nil {
		return nil, err
	}
	if st.Size()%4096 != 0 {
		return nil, fmt.Errorf("root image %s is %d bytes, not a multiple of 4096", out, st.Size())
	}
	return &RootImage{Path: out, Version: version, PayloadMarker: marker}, nil
}

// Assets is everything the scenarios share, built once per test run.
type Assets struct {
	Cache   string
	Work    string // this run's outputs: images, disks, serial logs
	Kernel  *Kernel
	Initrd  string
	GrubEFI string
	// ChainEFI is a standalone GRUB that starts systemd-boot and resets
	// the machine when systemd-boot returns (buildChainGrub).
	ChainEFI string
	Sealift  string // static binary, used on the host and in the guest
	Busybox  string
	OVMF     string
	KVM      bool
}

func buildAssets() (*Assets, error) {
	t0 := time.Now()
	cache, err := cacheDir()
	if err != nil {
		return nil, err
	}
	a := &Assets{Cache: cache, KVM: os.Getenv("SEALIFT_E2E_KVM") == "1"}
	a.OVMF = os.Getenv("SEALIFT_E2E_OVMF")
	if a.OVMF == "" {
		a.OVMF = "/usr/share/ovmf/OVMF.fd"
	}
	if _, err := os.Stat(a.OVMF); err != nil {
		return nil, fmt.Errorf("OVMF firmware: %w (install Debian package ovmf: bash e2e/setup.sh)", err)
	}
	if _, err := findTool("qemu-system-x86_64", "qemu-system-x86"); err != nil {
		return nil, err
	}
	if a.Busybox, err = staticBusybox(); err != nil {
		return nil, err
	}
	// Per run: disks, images and serial logs. Kept when a test fails,
	// until a run a day later prunes it.
	old, _ := filepath.Glob(filepath.Join(cache, "run-*"))
	for _, d := range old {
		if st, err := os.Stat(d); err == nil && time.Since(st.ModTime()) > 24*time.Hour {
			os.RemoveAll(d)
		}
	}
	if a.Work, err = os.MkdirTemp(cache, "run-"); err != nil {
		return nil, err
	}
	if a.Kernel, err = getKernel(cache); err != nil {
		return nil, err
	}
	a.Initrd = filepath.Join(a.Work, "initrd.img")
	if err := buildInitrd(a.Kernel, a.Initrd); err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	a.GrubEFI = filepath.Join(a.Work, "BOOTX64.EFI")
	if err := buildGrub(a.GrubEFI); err != nil {
		return nil, fmt.Errorf("GRUB: %w", err)
	}
	a.ChainEFI = filepath.Join(a.Work, "CHAIN-SDBOOT.EFI")
	if err := buildChainGrub(a.ChainEFI); err != nil {
		return nil, fmt.Errorf("GRUB for systemd-boot: %w", err)
	}
	a.Sealift = filepath.Join(a.Work, "sealift")
	if err := buildSealift(a.Sealift); err != nil {
		return nil, err
	}
	fmt.Printf("e2e assets ready in %.1fs: kernel %s, work dir %s\n", time.Since(t0).Seconds(), a.Kernel.Package, a.Work)
	return a, nil
}

var errNoMarker = errors.New("marker not found")

// findOnce returns the offset of the only occurrence of marker in data.
func findOnce(data []byte, marker string) (int64, error) {
	i := bytes.Index(data, []byte(marker))
	if i < 0 {
		return 0, fmt.Errorf("%w: %q", errNoMarker, marker)
	}
	if bytes.Index(data[i+1:], []byte(marker)) >= 0 {
		return 0, fmt.Errorf("marker %q occurs more than once", marker)
	}
	return int64(i), nil
}
