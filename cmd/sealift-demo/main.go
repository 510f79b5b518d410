// Command sealift-demo walks through the main job of sealift on a disk
// image, running the real sealift binary and printing each command and the
// status after it: a publisher signs and publishes releases to a registry
// (an in-process one on 127.0.0.1 unless --registry names another), and a
// node updates from it. It needs nothing but the binary and mke2fs.
package main

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/spf13/pflag"

	"sealift/internal/kernelimage"
)

func main() {
	bin := pflag.String("sealift", "bin/sealift", "sealift binary to demonstrate")
	work := pflag.String("workdir", "", "directory for the disk image, keys and releases (default: a temp dir, removed afterwards)")
	backend := pflag.String("boot-backend", "grubenv", "boot backend to demonstrate: gptprio, grubenv or sdboot")
	repo := pflag.String("registry", "", "registry repository to publish to, e.g. 127.0.0.1:5000/os/demo (default: an in-process registry on 127.0.0.1)")
	insecure := pflag.Bool("insecure", true, "plain HTTP to --registry")
	pflag.Parse()
	if err := run(*bin, *work, *backend, *repo, *insecure); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func run(bin, work, backend, repository string, insecure bool) error {
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
	if repository == "" {
		// go-containerregistry's registry, on loopback only.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
		go srv.Serve(ln)
		defer srv.Close()
		repository = ln.Addr().String() + "/sealift/demo"
		insecure = true
	}
	disk := filepath.Join(work, "disk.img")
	tuf := filepath.Join(work, "tuf")
	for _, p := range []string{disk, tuf, filepath.Join(work, "releases"), filepath.Join(work, "node")} {
		os.RemoveAll(p)
	}

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
	dest := []string{"--repository", repository}
	if insecure {
		dest = append(dest, "--insecure")
	}
	layout := filepath.Join(work, "releases")
	build := func(v string) error {
		d := filepath.Join(work, "src", v)
		return sealift("release", "build", filepath.Join(d, "root.img"), "--kernel", filepath.Join(d, "vmlinuz"),
			"--initrd", filepath.Join(d, "initrd.img"), "--cmdline", "console=ttyS0 ro",
			"--version", v, "--variant", "demo", "--arch", "x86_64", "--out", layout, "--chunk-size", "4M")
	}
	publish := func(v string) error {
		return sealift(append([]string{"release", "publish", "--tuf", tuf, "--from", layout, "--version", v}, dest...)...)
	}
	node := filepath.Join(work, "node")
	cfg := filepath.Join(node, "config.toml")
	nodeCmd := func(args ...string) error { return sealift(append(args, "--disk", disk, "--config", cfg)...) }
	status := func() error { return sealift("status", "--disk", disk) }
	boot := func() error { return sealift("boot", "simulate", "--disk", disk, "--apply") }

	step("the publisher: signing keys and metadata (TUF), and two releases built from small ext4 root images")
	for _, v := range []string{"1.0.0", "1.1.0", "1.2.0"} {
		if err := makeRelease(filepath.Join(work, "src"), v); err != nil {
			return err
		}
	}
	steps := []struct {
		title string
		do    []func() error
	}{
		{"", []func() error{
			func() error { return sealift("repo", "init", tuf) },
			func() error { return build("1.0.0") },
			func() error { return build("1.1.0") },
			func() error { return build("1.2.0") },
		}},
		{"publish 1.0.0 to the registry " + repository, []func() error{func() error { return publish("1.0.0") }}},
		{"the node: an A/B disk and a config that trusts the repository's root", []func() error{
			func() error {
				return sealift("disk", "init", disk, "--size", "1G", "--root-size", "128M", "--boot-backend", backend)
			},
			func() error { return writeNodeConfig(node, tuf, repository, insecure) },
		}},
		{"first update: 1.0.0 goes into slot A", []func() error{func() error { return nodeCmd("update") }, boot,
			func() error { return sealift("mark-good", "--disk", disk) }, status}},
		{"publish 1.1.0; the node checks", []func() error{func() error { return publish("1.1.0") },
			func() error { return nodeCmd("check") }}},
		{"update: 1.1.0 streams from the registry into slot B, verified against the signed verity root", []func() error{
			func() error { return nodeCmd("update") }, status}},
		{"reboot: the bootloader tries B", []func() error{boot, status}},
		{"B is healthy: mark it good; nothing newer to take", []func() error{
			func() error { return sealift("mark-good", "--disk", disk) }, func() error { return nodeCmd("check") }, status}},
		{"operator rolls back to 1.0.0, and the next boot runs A", []func() error{
			func() error { return sealift("rollback", "--disk", disk) }, boot, status}},
	}
	for _, s := range steps {
		if s.title != "" {
			step(s.title)
		}
		for _, f := range s.do {
			if err := f(); err != nil {
				return err
			}
		}
	}
	if err := agentDemo(bin, work, disk, cfg, step, sealift, publish); err != nil {
		return err
	}
	fmt.Println("\ndemo complete")
	return nil
}

// agentDemo lets the agent do the rest: 1.2.0 is staged on a Friday,
// outside the node's Saturday reboot window; in the window the agent
// takes the fleet's reboot lock from a FleetLock server, "reboots" (the
// reboot command simulates the boot of the image), and gives the lock
// back once the health check kept the new slot. Each agent decision runs
// at a pretend time (agent --once --now) so the demo need not wait for
// Saturday.
func agentDemo(bin, work, disk, cfg string, step func(string), sealift func(...string) error, publish func(string) error) error {
	step("the agent: a FleetLock server for the fleet's reboots (memory store, 127.0.0.1)")
	lockAddr, adminAddr, err := freeAddr(), freeAddr(), error(nil)
	fmt.Printf("$ sealift fleetlock serve --listen %s --admin-listen %s --store memory &\n", lockAddr, adminAddr)
	srv := exec.Command(bin, "fleetlock", "serve", "--listen", lockAddr, "--admin-listen", adminAddr, "--store", "memory", "--log-level", "warn")
	srv.Stdout, srv.Stderr = os.Stdout, os.Stderr
	if err = srv.Start(); err != nil {
		return err
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	if err := waitListening(lockAddr); err != nil {
		return err
	}
	machineID := filepath.Join(filepath.Dir(cfg), "machine-id")
	if err := os.WriteFile(machineID, []byte("5f3c1a4e9b2d4c7e8a1f0b6d3e9c2a71\n"), 0o644); err != nil {
		return err
	}
	agentCfg := fmt.Sprintf(`
[reboot]
strategy = "fleetlock"
# the demo's "reboot" simulates the boot of the image
command = [%q, "boot", "simulate", "--apply", "--disk", %q, "--log-level", "warn"]
[reboot.fleetlock]
url = "http://%s"
group = "demo"
machine_id = "machine-id"
[[reboot.window]]
days = ["sat"]
start = "02:00"
length = "2h"
time_zone = "UTC"
`, bin, disk, lockAddr)
	fmt.Printf("added to the node config:%s", agentCfg)
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(agentCfg); err != nil {
		f.Close()
		return err
	}
	f.Close()
	agentAt := func(now string) func() error {
		return func() error { return sealift("agent", "--once", "--now", now, "--disk", disk, "--config", cfg) }
	}
	lockStatus := func() error { return sealift("fleetlock", "status", "--server", "http://"+adminAddr) }
	steps := []struct {
		title string
		do    []func() error
	}{
		{"publish 1.2.0; on Friday noon the agent stages it (downloads may run any time)", []func() error{
			func() error { return publish("1.2.0") }, agentAt("2026-11-27T12:00:00Z")}},
		{"the reboot waits for Saturday's 02:00 window", []func() error{agentAt("2026-11-27T12:05:00Z")}},
		{"in the window the agent takes the fleet lock and reboots into 1.2.0", []func() error{
			agentAt("2026-11-28T02:10:00Z"), lockStatus, status(sealift, disk)}},
		{"on trial, the lock is kept until the health check decides", []func() error{agentAt("2026-11-28T02:12:00Z")}},
		{"the health check passes (sealift health marks the slot good); the agent gives the lock back", []func() error{
			func() error { return sealift("mark-good", "--disk", disk) }, agentAt("2026-11-28T02:15:00Z"), lockStatus}},
		{"the node's history", []func() error{func() error { return sealift("events", "--disk", disk, "--last", "9") }}},
	}
	for _, s := range steps {
		step(s.title)
		for _, f := range s.do {
			if err := f(); err != nil {
				return err
			}
		}
	}
	return nil
}

func status(sealift func(...string) error, disk string) func() error {
	return func() error { return sealift("status", "--disk", disk) }
}

// freeAddr is a loopback address nothing listens on yet.
func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:8470"
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitListening(addr string) error {
	for range 100 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("the FleetLock server did not start listening on %s", addr)
}

// writeNodeConfig writes the node's config.toml and ships the trusted root
// beside it, as an OS image would.
func writeNodeConfig(dir, tuf, repository string, insecure bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	roots, _ := filepath.Glob(filepath.Join(tuf, "metadata", "*.root.json"))
	if len(roots) == 0 {
		return fmt.Errorf("no root.json in %s", tuf)
	}
	sort.Strings(roots)
	root, err := os.ReadFile(roots[len(roots)-1])
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "root.json"), root, 0o644); err != nil {
		return err
	}
	cfg := fmt.Sprintf(`[source]
repository = %q
insecure = %v

[trust]
root = "root.json"
cache_dir = "tuf-cache"

[node]
variant = "demo"
arch = "x86_64"
`, repository, insecure)
	fmt.Printf("node config %s:\n%s", filepath.Join(dir, "config.toml"), cfg)
	return os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o644)
}

// makeRelease builds WORK/V/{root.img,vmlinuz,initrd.img}. The root image
// is a real ext4 filesystem; kernel and initrd are placeholders, since the
// demo simulates the boot (the qemu tests boot real ones). The kernel has
// the headers of a real one (kernelimage.Synthetic), because sealift
// refuses a kernel file no bootloader would start.
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
	files := map[string][]byte{
		"vmlinuz":    kernelimage.Synthetic([]byte("demo kernel " + v)),
		"initrd.img": []byte("demo initrd " + v),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(d, name), content, 0o644); err != nil {
			return err
		}
	}
	return nil
}
