//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The node scenarios boot the node as it ships: a Debian root with systemd
// built by cmd/sealift/image/build-root.sh, sealift's units installed by
// that script's install step, and the agent pulling releases from a real
// registry over the network (qemu's user-mode network inside a network
// namespace of the test's; see lab_test.go). After the first install, the
// host never writes the disk: the guest updates itself and reboots itself,
// and the test reads the serial console, the guest's 'sealift status' and,
// after shutdown, the disk.

// Releases of the node scenarios. 3.0.0's image lacks the workload's
// /healthz, so its health check fails.
const (
	nodeV1 = "1.0.0"
	nodeV2 = "2.0.0"
	nodeV3 = "3.0.0"
)

// nodeRepository is where the lab's registry serves releases; the guest
// reaches it as 10.0.2.2:5000.
var nodeRepository = fmt.Sprintf("127.0.0.1:%d/os/node", labRegistryPort)

// nodeCmdline is the releases' kernel command line: ro, or systemd
// tries to remount the verity root read-write (docs/node-image.md).
const nodeCmdline = "console=ttyS0 panic=10 ro"

// nodeConfig is the node's /etc/sealift/config.toml in every image: the
// lab's registry over plain HTTP; the FleetLock server of the lab with a
// reboot window on Saturdays 02:00-05:00 UTC; a health check of the
// workload's unit and of its HTTP endpoint.
var nodeConfig = fmt.Sprintf(`[source]
repository = "10.0.2.2:%d/os/node"
insecure = true
timeout = "60s"

[node]
variant = "e2e"

[update]
tries = 2

[agent]
interval = "1m"
jitter = "0s"

[reboot]
strategy = "fleetlock"

[reboot.fleetlock]
url = "http://10.0.2.2:%d"
group = "e2e"

[[reboot.window]]
days = ["sat"]
start = "02:00"
length = "3h"
time_zone = "UTC"

[health]
probation = "10s"
interval = "2s"
deadline = "45s"

[[health.check]]
name = "workload"
type = "systemd"
unit = "e2e-web.service"

[[health.check]]
name = "healthz"
type = "http"
url = "http://127.0.0.1:8080/healthz"
expect_status = 200
timeout = "5s"
`, labRegistryPort, labFleetLockPort)

// nodeAssets are the node scenarios' images and releases, built once.
type nodeAssets struct {
	*Assets
	tuf    string            // TUF repository (copied per scenario: publishing changes it)
	layout string            // OCI layout with every release ('sealift release build')
	roots  map[string]string // version -> root image
}

var (
	nodeOnce   sync.Once
	nodeShared *nodeAssets
	nodeErr    error
)

func getNodeAssets(t *testing.T) *nodeAssets {
	t.Helper()
	a := getAssets(t)
	nodeOnce.Do(func() { nodeShared, nodeErr = buildNodeAssets(a) })
	if nodeErr != nil {
		t.Fatalf("node images: %v", nodeErr)
	}
	return nodeShared
}

func buildNodeAssets(a *Assets) (*nodeAssets, error) {
	t0 := time.Now()
	n := &nodeAssets{Assets: a, roots: map[string]string{}}
	dir := filepath.Join(a.Work, "node")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// Metadata lifetimes long enough for the guest's clock, which the
	// scenarios set up to a week ahead.
	n.tuf = filepath.Join(dir, "tuf")
	if _, err := run("", a.Sealift, "repo", "init", n.tuf, "--expiry", "timestamp=30d", "--expiry", "snapshot=30d", "--log-format", "text"); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(nodeConfig), 0o644); err != nil {
		return nil, err
	}
	mods, err := moduleOverlay(a.Kernel, filepath.Join(dir, "modules"))
	if err != nil {
		return nil, err
	}
	// guest/node holds the test's units (workload, report, control), the
	// NIC's network config, journald forwarding to the console, and
	// getty masked: a node takes no logins, and agetty's vhangup of ttyS0
	// would cut off the units that print the test's markers there.
	guest, err := filepath.Abs(filepath.Join("guest", "node"))
	if err != nil {
		return nil, err
	}
	script, err := filepath.Abs(filepath.Join("..", "cmd", "sealift", "image", "build-root.sh"))
	if err != nil {
		return nil, err
	}
	n.layout = filepath.Join(dir, "releases")
	for _, v := range []string{nodeV1, nodeV2, nodeV3} {
		// The workload's content: /healthz in all but 3.0.0.
		web := filepath.Join(dir, "web-"+v, "usr", "share", "sealift-e2e", "www")
		if err := os.MkdirAll(web, 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(web, "index.html"), []byte("sealift e2e "+v+"\n"), 0o644); err != nil {
			return nil, err
		}
		if v != nodeV3 {
			if err := os.WriteFile(filepath.Join(web, "healthz"), []byte("ok\n"), 0o644); err != nil {
				return nil, err
			}
		}
		img := filepath.Join(dir, "root-"+v+".img")
		t1 := time.Now()
		if _, err := run("", "bash", script, "--version", v, "--sealift", a.Sealift, "--config", cfg,
			"--trust-root", filepath.Join(n.tuf, "metadata", "1.root.json"),
			"--include", "busybox", "--cache", filepath.Join(a.Cache, "debian"),
			"--overlay", guest, "--overlay", mods, "--overlay", filepath.Join(dir, "web-"+v),
			"--enable", "systemd-networkd.service", "--enable", "e2e-web.service",
			"--enable", "e2e-report.service", "--enable", "e2e-control.service",
			img); err != nil {
			return nil, fmt.Errorf("build-root.sh %s: %w", v, err)
		}
		st, _ := os.Stat(img)
		fmt.Printf("node root %s: %d MiB in %.1fs\n", v, st.Size()>>20, time.Since(t1).Seconds())
		n.roots[v] = img
		if _, err := run("", a.Sealift, "release", "build", img, "--kernel", a.Kernel.Vmlinuz, "--initrd", a.Initrd,
			"--cmdline", nodeCmdline, "--version", v, "--variant", "e2e", "--out", n.layout, "--log-format", "text"); err != nil {
			return nil, err
		}
	}
	fmt.Printf("node assets ready in %.1fs\n", time.Since(t0).Seconds())
	return n, nil
}

// moduleOverlay copies the kernel modules the guest's udev loads (the NIC;
// the disk's are in the initramfs) into a tree for build-root.sh, which
// runs depmod on it.
func moduleOverlay(k *Kernel, dir string) (string, error) {
	mods, err := moduleOrder(k, []string{"virtio_net"})
	if err != nil {
		return "", err
	}
	dst := filepath.Join(dir, "usr", "lib", "modules", k.Version)
	for _, m := range append(mods, "modules.builtin", "modules.builtin.modinfo", "modules.order") {
		b, err := os.ReadFile(filepath.Join(k.modDir(), m))
		if err != nil {
			return "", err
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dst, m)), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dst, m), b, 0o644); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// nodeScenario is one node (a disk) in its own lab.
type nodeScenario struct {
	*scenario
	n   *nodeAssets
	lab *lab
	tuf string
}

func newNodeScenario(t *testing.T, backend string) *nodeScenario {
	t.Helper()
	return newNodeScenarioCmdline(t, backend, nodeCmdline)
}

// newNodeScenarioCmdline is newNodeScenario with 1.0.0 installed with
// another kernel command line.
func newNodeScenarioCmdline(t *testing.T, backend, cmdline string) *nodeScenario {
	t.Helper()
	n := getNodeAssets(t)
	s := &nodeScenario{scenario: newScenario(t, n.Assets), n: n}
	s.backend = backend
	s.diskSize, s.rootSize, s.aVersion = "1200M", "320M", nodeV1
	s.lab = newLab(t, s.dir)
	s.lab.startRegistry()
	s.lab.startEtcd()
	s.lab.startFleetLock(n.Sealift)
	s.lab.startControl()
	s.tuf = filepath.Join(s.dir, "tuf")
	if _, err := run("", "cp", "-a", n.tuf, s.tuf); err != nil {
		t.Fatal(err)
	}
	// The first install is the host's (a factory image): 1.0.0 into A.
	s.initDisk()
	out := s.installBoot(&RootImage{Path: n.roots[nodeV1], Version: nodeV1}, n.Kernel.Vmlinuz, n.Initrd, cmdline)
	if !strings.Contains(out, "into slot A") {
		t.Fatalf("install %s went elsewhere than slot A: %s", nodeV1, out)
	}
	return s
}

// inLab runs the host's sealift inside the lab's namespace (publishing
// to its registry, asking its FleetLock server).
func (s *nodeScenario) inLab(args ...string) string {
	s.t.Helper()
	cmd := s.lab.command(s.n.Sealift, append(args, "--log-format", "text")...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		s.t.Fatalf("sealift %s (in the lab): %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// inLabErr is inLab for the console watcher's goroutine, which must not
// end the test itself.
func (s *nodeScenario) inLabErr(args ...string) (string, error) {
	out, err := s.lab.command(s.n.Sealift, append(args, "--log-format", "text")...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("sealift %s (in the lab): %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// publish signs a release and pushes it to the lab's registry.
func (s *nodeScenario) publish(version string, extra ...string) {
	s.t.Helper()
	out := s.inLab(append([]string{"release", "publish", "--tuf", s.tuf, "--from", s.n.layout, "--version", version,
		"--repository", nodeRepository, "--insecure"}, extra...)...)
	s.t.Logf("host: published %s: %s", version, strings.TrimSpace(lastLine(out)))
}

// holders is what the FleetLock server says of group e2e.
func (s *nodeScenario) holders() []string {
	s.t.Helper()
	out := s.inLab("fleetlock", "status", "--server", fmt.Sprintf("http://127.0.0.1:%d", labFleetAdmin), "--group", "e2e", "--json")
	var st struct {
		Groups []struct {
			Group   string `json:"group"`
			Holders []struct {
				ID string `json:"id"`
			} `json:"holders"`
		} `json:"groups"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		s.t.Fatalf("fleetlock status --json: %v\n%s", err, out)
	}
	var ids []string
	for _, g := range st.Groups {
		for _, h := range g.Holders {
			ids = append(ids, h.ID)
		}
	}
	return ids
}

// nodeBoot boots the node in the lab with its clock at rtc. until, when
// not nil, ends the boot with the power button once the console matches.
func (s *nodeScenario) nodeBoot(rtc time.Time, watch func(console string) bool) *Boot {
	s.t.Helper()
	if watch != nil {
		// Power off only once the guest has verified its units too.
		w := watch
		watch = func(console string) bool { return w(console) && strings.Contains(console, "SEALIFT-E2E: verify end") }
	}
	return s.bootWith(bootOptions{lab: s.lab, rtc: rtc, watch: watch, timeout: nodeBootTimeout()})
}

// nodeBootTimeout bounds one boot of a node: it may download, write and
// verify a release under TCG.
func nodeBootTimeout() time.Duration {
	if d := bootTimeout(); d > 180*time.Second {
		return d
	}
	return 15 * time.Minute
}

// saturday is the next Saturday at hh:mm UTC after now: inside the
// reboot window when hh is 02 to 04.
func saturday(hh, mm int) time.Time {
	now := time.Now().UTC()
	d := time.Date(now.Year(), now.Month(), now.Day(), hh, mm, 0, 0, time.UTC)
	for d.Weekday() != time.Saturday || !d.After(now) {
		d = d.AddDate(0, 0, 1)
	}
	return d
}

// sees returns a watch that powers the node off once every pattern has
// appeared on the console, in order.
func sees(patterns ...string) func(string) bool {
	return func(console string) bool {
		rest := console
		for _, p := range patterns {
			i := strings.Index(rest, p)
			if i < 0 {
				return false
			}
			rest = rest[i+len(p):]
		}
		return true
	}
}

// guestStatus is the guest's 'sealift status' as e2e-report printed it.
func guestStatus(b *Boot) string {
	var out []string
	in := false
	for _, l := range strings.Split(b.Console, "\n") {
		switch {
		case strings.Contains(l, "SEALIFT-E2E: status begin"):
			in = true
		case strings.Contains(l, "SEALIFT-E2E: status end"):
			in = false
		case in:
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// agentLog is what the guest's sealift agent logged (journald forwards it
// to the console).
func agentLog(b *Boot) []string {
	var out []string
	for _, l := range strings.Split(b.Console, "\n") {
		if strings.Contains(l, "sealift[") {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return out
}

// expectNode checks a boot of the node: the bootloader chose slot, the
// guest ran ver from it, its health unit gave its verdict and the agent
// ran as a service.
func (s *nodeScenario) expectNode(b *Boot, slot, ver string) {
	s.t.Helper()
	s.expectLoader(b, slot)
	if b.Slot != slot || b.Version != ver {
		s.fail(b, "boot %d: guest reports slot=%q version=%q, want slot=%s version=%s", b.N, b.Slot, b.Version, slot, ver)
	}
	for _, want := range []string{"Finished sealift-boot-check.service", "Started sealift-agent.service"} {
		if !b.Has(want) {
			s.fail(b, "boot %d: the console lacks %q", b.N, want)
		}
	}
	// The guest's own systemd verifies the units as the image enabled
	// them: in every boot the test ends, and in any other that got there
	// before the agent rebooted.
	if m := unitsVerifyRe.FindStringSubmatch(b.Console); m == nil {
		if b.PoweredOff {
			s.fail(b, "boot %d: the guest did not report systemd-analyze verify", b.N)
		}
	} else if strings.TrimSpace(reportLines(m[1])) != "" || m[2] != "0" {
		s.fail(b, "boot %d: systemd-analyze verify in the guest (exit %s):\n%s", b.N, m[2], m[1])
	}
	if m := bootCostRe.FindStringSubmatch(b.Console); m != nil {
		s.t.Logf("boot %d cost (guest's systemd-analyze):\n%s", b.N, reportLines(m[1]))
	}
}

var (
	unitsVerifyRe = regexp.MustCompile(`(?s)SEALIFT-E2E: verify begin\n(.*?)SEALIFT-E2E: verify end rc=(\d+)`)
	bootCostRe    = regexp.MustCompile(`(?s)SEALIFT-E2E: boot-cost begin\n(.*?)SEALIFT-E2E: boot-cost end`)
	// Lines of others that the console interleaves with a report: the
	// kernel's and journald's (with a timestamp), systemd's status lines,
	// and other units' markers.
	otherLineRe = regexp.MustCompile(`(?m)^(\[ *[0-9]+\.[0-9]+\] |\[ *(OK|FAILED|DEPEND)  *\]|SEALIFT-E2E: |         (Starting|Stopping|Unmounting) ).*\n?`)
)

// reportLines is a report's own lines out of the console.
func reportLines(s string) string { return otherLineRe.ReplaceAllString(s, "") }

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestNodeHealthyUpdate: 1.0.0 boots from A; the agent, a systemd
// service, finds 2.0.0 in the registry, stages it into B, takes a reboot
// slot from the FleetLock server (etcd store) and reboots the machine;
// 2.0.0 boots from B, the health unit marks it good and the agent gives
// the slot back.
func TestNodeHealthyUpdateGrubenv(t *testing.T) { t.Parallel(); nodeHealthyUpdate(t, "grubenv") }
func TestNodeHealthyUpdateSDBoot(t *testing.T)  { t.Parallel(); nodeHealthyUpdate(t, "sdboot") }

func nodeHealthyUpdate(t *testing.T, backend string) {
	s := newNodeScenario(t, backend)
	defer s.summary()
	s.publish(nodeV2)

	b := s.nodeBoot(saturday(2, 30), nil)
	s.expectNode(b, "A", nodeV1)
	if !b.Rebooted {
		s.fail(b, "boot %d: the node did not reboot itself", b.N)
	}
	for _, want := range []string{"staged " + nodeV2 + " in slot B", "rebooting into " + nodeV2} {
		if !b.Has(want) {
			s.fail(b, "boot %d: the agent did not log %q", b.N, want)
		}
	}
	if h := s.holders(); len(h) != 1 {
		t.Fatalf("after the reboot into %s the FleetLock server lists holders %q, want the node", nodeV2, h)
	}

	b = s.nodeBoot(saturday(2, 45), sees("gave the fleet lock back"))
	s.expectNode(b, "B", nodeV2)
	if !b.PoweredOff {
		s.fail(b, "boot %d: the node did not power off cleanly", b.N)
	}
	if g := guestStatus(b); !strings.Contains(g, "running:   B") {
		s.fail(b, "the guest's sealift status does not show B running:\n%s", g)
	}
	if h := s.holders(); len(h) != 0 {
		t.Fatalf("after %s was kept the FleetLock server still lists holders %q", nodeV2, h)
	}
	st := s.status()
	s.logStatus(st, "shutdown")
	if _, _, ok, v := st.slot("B"); !ok || v != nodeV2 {
		t.Fatalf("slot B is not %s marked good on the disk\n%s", nodeV2, st.raw)
	}
}

// TestNodeUnhealthyUpdate: 3.0.0's workload does not answer /healthz. The
// agent stages it and reboots into it with the fleet lock; the health unit
// marks it bad and reboots; the bootloader boots 1.0.0 from A again,
// boot-check records why, the agent gives the fleet lock back (the node
// fell back: docs/fleetlock.md) and does not take 3.0.0 again.
func TestNodeUnhealthyUpdateGrubenv(t *testing.T) { t.Parallel(); nodeUnhealthyUpdate(t, "grubenv") }
func TestNodeUnhealthyUpdateSDBoot(t *testing.T)  { t.Parallel(); nodeUnhealthyUpdate(t, "sdboot") }

func nodeUnhealthyUpdate(t *testing.T, backend string) {
	s := newNodeScenario(t, backend)
	defer s.summary()
	s.publish(nodeV3)

	b := s.nodeBoot(saturday(2, 30), nil)
	s.expectNode(b, "A", nodeV1)
	if !b.Rebooted || !b.Has("staged "+nodeV3+" in slot B") || !b.Has("rebooting into "+nodeV3) {
		s.fail(b, "boot %d: the agent did not stage %s and reboot into it", b.N, nodeV3)
	}

	b = s.nodeBoot(saturday(2, 40), nil)
	s.expectLoader(b, "B")
	if b.Slot != "B" || b.Version != nodeV3 {
		s.fail(b, "boot %d: guest reports slot=%q version=%q, want B %s", b.N, b.Slot, b.Version, nodeV3)
	}
	if !b.Has(`slot B unhealthy: check "healthz"`) || !b.Has("marked bad") || !b.Rebooted {
		s.fail(b, "boot %d: the health unit did not mark B bad and reboot", b.N)
	}
	if h := s.holders(); len(h) != 1 {
		t.Fatalf("while %s was judged the FleetLock server lists holders %q, want the node", nodeV3, h)
	}

	b = s.nodeBoot(saturday(2, 50), sees("gave the fleet lock back", "skipped "+nodeV3))
	s.expectNode(b, "A", nodeV1)
	if !b.PoweredOff {
		s.fail(b, "boot %d: the node did not power off cleanly", b.N)
	}
	if !b.Has("the update to " + nodeV3 + " in slot B fell back: marked bad") {
		s.fail(b, "boot %d: boot-check did not record the rollback from %s", b.N, nodeV3)
	}
	if h := s.holders(); len(h) != 0 {
		t.Fatalf("after falling back the FleetLock server still lists holders %q", h)
	}
	st := s.status()
	s.logStatus(st, "shutdown")
	s.expectFellBackToA(st, nodeV3, "marked bad (its health check failed): health check \"healthz\"")
	if ev := s.sealift("events", "--disk", s.disk); !strings.Contains(ev, "gave the fleet lock of group e2e back: the node fell back") {
		t.Fatalf("events lack the fleet lock given back after the fallback:\n%s", ev)
	}
}

// rebootLineRe is the agent's log line of its reboot, with the guest's time.
var rebootLineRe = regexp.MustCompile(`time="([^"]+)" level=info msg="rebooting into (\S+)`)
var stagedLineRe = regexp.MustCompile(`time="([^"]+)" level=info msg="staged (\S+) in slot`)

// TestNodeMaintenanceWindow: on a Friday the agent stages 2.0.0 at once
// and waits for Saturday's reboot window; the test moves the guest's clock
// to just before the window; the agent reboots once the window opens.
func TestNodeMaintenanceWindowGrubenv(t *testing.T) {
	t.Parallel()
	nodeMaintenanceWindow(t, "grubenv")
}
func TestNodeMaintenanceWindowSDBoot(t *testing.T) { t.Parallel(); nodeMaintenanceWindow(t, "sdboot") }

func nodeMaintenanceWindow(t *testing.T, backend string) {
	s := newNodeScenario(t, backend)
	defer s.summary()
	s.publish(nodeV2)
	window := saturday(2, 0)
	friday := window.Add(-14 * time.Hour)
	moved := false
	b := s.nodeBoot(friday, func(console string) bool {
		if !moved && strings.Contains(console, "rebooting in the next maintenance window") {
			s.lab.control.setClock(window.Add(-30 * time.Second))
			moved = true
		}
		return false
	})
	s.expectNode(b, "A", nodeV1)
	if !moved || !b.Rebooted {
		s.fail(b, "boot %d: the agent did not wait for the window (%v) or did not reboot in it", b.N, moved)
	}
	st, rb := stagedLineRe.FindStringSubmatch(b.Console), rebootLineRe.FindStringSubmatch(b.Console)
	if st == nil || rb == nil {
		s.fail(b, "boot %d: no staged or rebooting line from the agent", b.N)
	}
	stagedAt, _ := time.Parse(time.RFC3339, st[1])
	rebootAt, _ := time.Parse(time.RFC3339, rb[1])
	t.Logf("guest clock: staged at %s, rebooted at %s; window opens %s", stagedAt.Format(time.RFC3339), rebootAt.Format(time.RFC3339), window.Format(time.RFC3339))
	if !stagedAt.Before(window.Add(-time.Hour)) || rebootAt.Before(window) || rebootAt.After(window.Add(3*time.Minute)) {
		s.fail(b, "boot %d: staged at %s and rebooted at %s; want staging at once and the reboot in the window opening %s", b.N, stagedAt, rebootAt, window)
	}

	b = s.nodeBoot(window.Add(5*time.Minute), sees("gave the fleet lock back"))
	s.expectNode(b, "B", nodeV2)
	if !b.PoweredOff {
		s.fail(b, "boot %d: the node did not power off cleanly", b.N)
	}
	if h := s.holders(); len(h) != 0 {
		t.Fatalf("after %s was kept the FleetLock server still lists holders %q", nodeV2, h)
	}
	stj := s.status()
	s.logStatus(stj, "shutdown")
	if _, _, ok, v := stj.slot("B"); !ok || v != nodeV2 {
		t.Fatalf("slot B is not %s marked good on the disk\n%s", nodeV2, stj.raw)
	}
}

// TestNodePowerCutWhileStaging: the power goes (qemu killed) while the
// agent writes 2.0.0 into B. The next boot is 1.0.0 from A, the agent
// stages 2.0.0 again and reboots into it, and B is kept.
func TestNodePowerCutWhileStagingGrubenv(t *testing.T) { t.Parallel(); nodePowerCut(t, "grubenv") }
func TestNodePowerCutWhileStagingSDBoot(t *testing.T)  { t.Parallel(); nodePowerCut(t, "sdboot") }

func nodePowerCut(t *testing.T, backend string) {
	s := newNodeScenario(t, backend)
	defer s.summary()
	s.publish(nodeV2)
	b := s.bootWith(bootOptions{lab: s.lab, rtc: saturday(2, 30), timeout: nodeBootTimeout(),
		powerCutOn: "staging: 50%"})
	if !b.PowerCut {
		s.fail(b, "boot %d: the power cut did not happen", b.N)
	}
	st := s.status()
	s.logStatus(st, "the power cut")
	if st.Pending == nil || st.Pending.Phase != "writing" || st.NextBoot.Slot != "A" {
		t.Fatalf("after a power cut while writing B: want a pending write and A next\n%s", st.raw)
	}

	b = s.nodeBoot(saturday(2, 40), nil)
	s.expectNode(b, "A", nodeV1)
	if !b.Has("interrupted") || !b.Has("staged "+nodeV2+" in slot B") || !b.Rebooted {
		s.fail(b, "boot %d: want boot-check to report the interrupted write and the agent to stage %s again and reboot", b.N, nodeV2)
	}

	b = s.nodeBoot(saturday(2, 50), sees("gave the fleet lock back"))
	s.expectNode(b, "B", nodeV2)
	stj := s.status()
	s.logStatus(stj, "shutdown")
	if _, _, ok, v := stj.slot("B"); !ok || v != nodeV2 || stj.Pending != nil {
		t.Fatalf("slot B is not %s marked good on the disk\n%s", nodeV2, stj.raw)
	}
}

// onePlan is a rollout plan under which every node may take the release
// at once: the halt scenario needs a plan to halt.
const onePlan = "[[waves]]\nafter = \"0s\"\npercent = 100\n"

// TestNodeHaltedAfterStaging: 2.0.0 is staged on a Friday and waits for
// Saturday's window; the publisher halts its rollout; when the window
// opens the agent re-reads the signed metadata, finds the halt and does
// not reboot (nor take a fleet lock). The publisher then recalls 2.0.0;
// at its next look the agent cancels the staging, so even an unplanned
// reboot stays on 1.0.0.
func TestNodeHaltedAfterStagingGrubenv(t *testing.T) { t.Parallel(); nodeHalted(t, "grubenv") }
func TestNodeHaltedAfterStagingSDBoot(t *testing.T)  { t.Parallel(); nodeHalted(t, "sdboot") }

func nodeHalted(t *testing.T, backend string) {
	s := newNodeScenario(t, backend)
	defer s.summary()
	plan := filepath.Join(s.dir, "plan.toml")
	if err := os.WriteFile(plan, []byte(onePlan), 0o644); err != nil {
		t.Fatal(err)
	}
	window := saturday(2, 0)
	s.publish(nodeV2, "--plan", plan, "--start", window.Add(-7*24*time.Hour).Format(time.RFC3339))
	lab := []string{"--tuf", s.tuf, "--variant", "e2e", "--repository", nodeRepository, "--insecure"}
	step := 0
	b := s.nodeBoot(window.Add(-14*time.Hour), func(console string) bool {
		switch {
		case step == 0 && strings.Contains(console, "rebooting in the next maintenance window"):
			out, err := s.inLabErr(append([]string{"release", "rollout", "halt", nodeV2}, lab...)...)
			if err != nil {
				s.t.Error(err)
				return true
			}
			s.t.Logf("host: %s", lastLine(out))
			s.lab.control.setClock(window.Add(-30 * time.Second))
			step = 1
		case step == 1 && strings.Contains(console, "rollout halted"):
			out, err := s.inLabErr(append([]string{"release", "recall", nodeV2}, lab...)...)
			if err != nil {
				s.t.Error(err)
				return true
			}
			s.t.Logf("host: %s", lastLine(out))
			step = 2
		case step == 2 && strings.Contains(console, "recalled"):
			step = 3
			return true
		}
		return false
	})
	s.expectNode(b, "A", nodeV1)
	if step != 3 || !b.PoweredOff || b.Has("rebooting into "+nodeV2) {
		s.fail(b, "boot %d: want the staged %s kept from the window by the halt, cancelled by the recall, and a clean power-off (step %d)", b.N, nodeV2, step)
	}
	if h := s.holders(); len(h) != 0 {
		t.Fatalf("a halted release took a fleet lock: holders %q", h)
	}
	st := s.status()
	s.logStatus(st, "shutdown")
	if st.Pending != nil || st.NextBoot.Slot != "A" || st.NextBoot.Trial {
		t.Fatalf("after the recall the staging should be undone and A boot next\n%s", st.raw)
	}
}

var multiUserRe = regexp.MustCompile(`(?m)^multi-user\.target @(?:([0-9]+)min )?([0-9.]+)(m?s)`)

// TestNodeBootCost measures what sealift's units add to a boot: the same
// image boots with them and with them masked on the kernel command line,
// in turns, and the guest's systemd says when multi-user.target was
// reached. It takes minutes and a quiet machine, so it runs only with
// SEALIFT_E2E_BOOTCOST=N (N boots of each); docs/benchmarks.md has the
// figures.
func TestNodeBootCost(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("SEALIFT_E2E_BOOTCOST"))
	if n <= 0 {
		t.Skip("set SEALIFT_E2E_BOOTCOST=N to boot N times with and without sealift's units")
	}
	var with, without []float64
	for i := 0; i < n; i++ {
		for _, masked := range []bool{false, true} {
			cmdline := nodeCmdline
			if masked {
				cmdline += " systemd.mask=sealift-boot-check.service systemd.mask=sealift-health.service systemd.mask=sealift-agent.service"
			}
			t.Run(fmt.Sprintf("boot%d-masked=%v", i+1, masked), func(t *testing.T) {
				s := newNodeScenarioCmdline(t, "grubenv", cmdline)
				b := s.nodeBoot(saturday(2, 30), sees("SEALIFT-E2E: boot-cost end"))
				m := multiUserRe.FindStringSubmatch(b.Console)
				if m == nil {
					s.fail(b, "no multi-user.target time in the guest's critical chain")
				}
				v, _ := strconv.ParseFloat(m[2], 64)
				if m[3] == "ms" {
					v /= 1000
				}
				if m[1] != "" {
					mins, _ := strconv.Atoi(m[1])
					v += float64(60 * mins)
				}
				if masked {
					without = append(without, v)
				} else {
					with = append(with, v)
				}
				t.Logf("sealift's units masked=%v: multi-user.target after %.1fs", masked, v)
			})
		}
	}
	if len(with) != n || len(without) != n {
		t.FailNow()
	}
	sort.Float64s(with)
	sort.Float64s(without)
	t.Logf("multi-user.target, median of %d boots under %s: with sealift's units %.1fs, without %.1fs", n, accel(getAssets(t)), with[len(with)/2], without[len(without)/2])
}
