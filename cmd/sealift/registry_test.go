package main

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sealift/internal/kernelimage"
	"sealift/internal/testutil"
	"sealift/updater"
	"sealift/updater/oci/registrytest"
)

// publisher is a TUF repository and a place releases are built, driven
// through the CLI as a platform team would.
type publisher struct {
	t      *testing.T
	dir    string
	tuf    string
	layout string
	dest   []string
}

func newPublisher(t *testing.T, dest ...string) *publisher {
	dir := t.TempDir()
	p := &publisher{t: t, dir: dir, tuf: filepath.Join(dir, "tuf"), layout: filepath.Join(dir, "releases"), dest: dest}
	mustCLI(t, "repo", "init", p.tuf)
	return p
}

func (p *publisher) release(version string, seed int64) {
	p.t.Helper()
	d := filepath.Join(p.dir, "src-"+version)
	os.MkdirAll(d, 0o755)
	img := make([]byte, 3<<20)
	rand.New(rand.NewSource(seed)).Read(img)
	os.WriteFile(filepath.Join(d, "root.img"), img, 0o644)
	os.WriteFile(filepath.Join(d, "vmlinuz"), kernelimage.Synthetic([]byte("kernel "+version)), 0o644)
	mustCLI(p.t, "release", "build", filepath.Join(d, "root.img"), "--kernel", filepath.Join(d, "vmlinuz"),
		"--version", version, "--variant", "k8s", "--arch", "x86_64", "--out", p.layout, "--chunk-size", "1M")
	mustCLI(p.t, append([]string{"release", "publish", "--tuf", p.tuf, "--from", p.layout, "--version", version}, p.dest...)...)
}

// node is a disk image and the config of the node that boots it.
func newNode(t *testing.T, p *publisher, source string) (disk, cfg string) {
	t.Helper()
	dir := t.TempDir()
	disk = filepath.Join(dir, "disk.img")
	mustCLI(t, "disk", "init", disk, "--size", "320M", "--root-size", "64M", "--esp-size", "64M")
	root, err := os.ReadFile(filepath.Join(p.tuf, "metadata", "1.root.json"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "root.json"), root, 0o644)
	cfg = filepath.Join(dir, "config.toml")
	os.WriteFile(cfg, []byte(source+"\n[trust]\nroot = \"root.json\"\ncache_dir = \"cache\"\n[node]\nvariant = \"k8s\"\narch = \"x86_64\"\n"), 0o644)
	return disk, cfg
}

func checkJSON(t *testing.T, disk, cfg string) updater.CheckResult {
	t.Helper()
	var res updater.CheckResult
	if err := json.Unmarshal([]byte(mustCLI(t, "check", "--disk", disk, "--config", cfg, "--json")), &res); err != nil {
		t.Fatal(err)
	}
	return res
}

// flow publishes two releases and updates a node through them.
func flow(t *testing.T, p *publisher, disk, cfg string) {
	t.Helper()
	p.release("1.0.0", 1)
	if out := mustCLI(t, "update", "--disk", disk, "--config", cfg); !strings.Contains(out, "installed 1.0.0 into slot A") {
		t.Fatalf("update 1: %s", out)
	}
	mustCLI(t, "boot", "simulate", "--disk", disk, "--apply")
	mustCLI(t, "mark-good", "--disk", disk)
	if res := checkJSON(t, disk, cfg); res.Take != nil || !strings.Contains(res.Reason, "up to date") {
		t.Fatalf("check: %+v", res)
	}
	p.release("1.1.0", 2)
	if res := checkJSON(t, disk, cfg); res.Take == nil || res.Take.Meta.Version != "1.1.0" {
		t.Fatalf("check: %+v", res)
	}
	if out := mustCLI(t, "update", "--disk", disk, "--config", cfg); !strings.Contains(out, "installed 1.1.0 into slot B") {
		t.Fatalf("update 2: %s", out)
	}
	st := status(t, disk)
	if st.Slots[1].Record == nil || st.Slots[1].Record.ManifestDigest == "" || st.NextBoot.Slot != "B" {
		t.Fatalf("status: %+v", st)
	}
}

// TestCLIRegistryFlow publishes to and updates from Debian's
// docker-registry (Distribution 2.8) on 127.0.0.1, through the CLI, and
// checks with skopeo (a tool we did not write) that the registry serves
// our release manifest as published.
func TestCLIRegistryFlow(t *testing.T) {
	host := registrytest.StartRegistry(t)
	repo := host + "/os/node"
	p := newPublisher(t, "--repository", repo, "--insecure")
	disk, cfg := newNode(t, p, fmt.Sprintf("[source]\nrepository = %q\ninsecure = true", repo))
	flow(t, p, disk, cfg)

	skopeo := testutil.RequireTool(t, "skopeo")
	out, err := exec.Command(skopeo, "inspect", "--raw", "--tls-verify=false", "docker://"+repo+":1.1.0").CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo: %v %s", err, out)
	}
	var m struct {
		ArtifactType string `json:"artifactType"`
		Layers       []struct {
			MediaType string `json:"mediaType"`
		} `json:"layers"`
	}
	if err := json.Unmarshal(out, &m); err != nil || m.ArtifactType != "application/vnd.sealift.release.v1" || len(m.Layers) < 4 {
		t.Fatalf("skopeo sees %s (%v)", out, err)
	}
}

// TestCLIMirrorFlow: the primary registry is unreachable, the node falls
// over to the mirror listed after it.
func TestCLIMirrorFlow(t *testing.T) {
	host, _ := registrytest.InProcess(t)
	repo := host + "/os/node"
	dead := deadAddr(t) + "/os/node"
	p := newPublisher(t, "--repository", repo, "--insecure")
	disk, cfg := newNode(t, p, fmt.Sprintf("[source]\nrepository = %q\nmirrors = [%q]\ninsecure = true\nretries = 0", dead, repo))
	flow(t, p, disk, cfg)
}

// TestCLILayoutFlow: an OCI layout directory (removable media) is a source
// with the same checks.
func TestCLILayoutFlow(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "media")
	p := newPublisher(t, "--layout", dir)
	disk, cfg := newNode(t, p, fmt.Sprintf("[source]\nlayout = %q", dir))
	os.MkdirAll(dir, 0o755)
	flow(t, p, disk, cfg)
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string { return fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)) }

func TestCLINodeConfigErrors(t *testing.T) {
	p := newPublisher(t, "--layout", t.TempDir())
	disk, cfg := newNode(t, p, "[source]\nrepository = \"127.0.0.1:1/x\"\nfrobnicate = true")
	code, out, errs := cli(t, "check", "--disk", disk, "--config", cfg)
	if code != exitBadInput || !strings.Contains(out+errs, "source.frobnicate") {
		t.Fatalf("exit %d: %s%s", code, out, errs)
	}
}
