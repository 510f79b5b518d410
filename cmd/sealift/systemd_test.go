package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sealift/internal/testutil"
)

// installSealiftLines returns the lines between the "install sealift"
// markers of s: the image builder's install step, or its copy in the docs.
func installSealiftLines(t *testing.T, name, s, begin, end string) []string {
	t.Helper()
	_, rest, ok := strings.Cut(s, begin)
	if !ok {
		t.Fatalf("%s has no %q", name, begin)
	}
	// The marker's line may go on with a comment.
	_, rest, _ = strings.Cut(rest, "\n")
	block, _, ok := strings.Cut(rest, end)
	if !ok {
		t.Fatalf("%s has no %q after %q", name, end, begin)
	}
	var lines []string
	for _, l := range strings.Split(block, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// TestDocsInstallStepIsTheScript: docs/boot-health.md shows the image
// builder's install step; it must be the script's, line for line, so an
// image builder who follows the docs gets what the e2e guest boots.
func TestDocsInstallStepIsTheScript(t *testing.T) {
	script, err := os.ReadFile("image/build-root.sh")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../docs/boot-health.md")
	if err != nil {
		t.Fatal(err)
	}
	want := installSealiftLines(t, "image/build-root.sh", string(script), "# >>> install sealift", "# <<< install sealift")
	got := installSealiftLines(t, "docs/boot-health.md", string(doc), "<!-- >>> install sealift", "<!-- <<< install sealift")
	// The docs' block is a fenced sh block between the markers.
	if len(got) < 2 || got[0] != "```sh" || got[len(got)-1] != "```" {
		t.Fatalf("docs/boot-health.md: the install step is not one ```sh block: %q", got)
	}
	got = got[1 : len(got)-1]
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("docs/boot-health.md's install step differs from image/build-root.sh's:\ndocs:\n%s\nscript:\n%s",
			strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestUnitsVerify installs sealift into a root with the image builder's
// own install step (build-root.sh --install-only: the units enabled as
// their [Install] sections say) next to this machine's systemd units, and
// runs systemd-analyze verify on the boot it describes. Any message fails:
// an ordering cycle makes systemd delete a job at boot, so a health check
// or an agent that never runs.
func TestUnitsVerify(t *testing.T) {
	analyze := testutil.RequireTool(t, "systemd-analyze")
	testutil.RequireTool(t, "systemctl")
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "usr/lib/systemd"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The machine's own units stand for the image's systemd (the e2e
	// verifies the same units in a real Debian node root).
	testutil.Run(t, "cp", "-a", "/usr/lib/systemd/system", filepath.Join(root, "usr/lib/systemd/"))
	for _, d := range []string{"bin", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// ExecReload's shell must exist in the root for verify.
	testutil.Run(t, "cp", "/bin/sh", filepath.Join(root, "bin/sh"))
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(cfg, []byte("[source]\nrepository = \"registry.example/os/node\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, "bash", "image/build-root.sh", "--install-only", root,
		"--sealift", self, "--config", cfg, "--trust-root", cfg)

	for _, link := range []string{
		"etc/systemd/system/sysinit.target.wants/sealift-boot-check.service",
		"etc/systemd/system/multi-user.target.wants/sealift-health.service",
		"etc/systemd/system/boot-complete.target.requires/sealift-health.service",
		"etc/systemd/system/multi-user.target.wants/sealift-agent.service",
	} {
		if _, err := os.Lstat(filepath.Join(root, link)); err != nil {
			t.Errorf("the install step did not enable %s: %v", link, err)
		}
	}
	args := []string{"verify", "--root=" + root, "--man=no", "default.target", "boot-complete.target",
		"sealift-boot-check.service", "sealift-health.service", "sealift-agent.service"}
	out, err := exec.Command(analyze, args...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}
