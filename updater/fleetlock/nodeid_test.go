package fleetlock

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func writeMachineID(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "machine-id")
	if err := os.WriteFile(p, []byte(content), 0o444); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNodeID(t *testing.T) {
	// Expected value printed by systemd 252's
	// `systemd-id128 machine-id --app-specific=d2ebfc52f8cc4dc0bce66de13cd968a3`
	// on a machine whose /etc/machine-id is 3d1219c7c4c5404aaa1f6d2a48adfda4.
	const want = "50aab269a4064f9189f7247c69971faf"
	id, err := NodeID(writeMachineID(t, "3d1219c7c4c5404aaa1f6d2a48adfda4\n"))
	if err != nil {
		t.Fatal(err)
	}
	if id != want {
		t.Fatalf("NodeID = %s, want %s", id, want)
	}
	if err := ValidID(id); err != nil {
		t.Fatal(err)
	}
	other, err := NodeID(writeMachineID(t, "3d1219c7c4c5404aaa1f6d2a48adfda5"))
	if err != nil || other == id {
		t.Fatalf("another machine: %s %v", other, err)
	}
	for _, bad := range []string{"", "uninitialized\n", "00000000000000000000000000000000", "3d1219c7c4c5404aaa1f6d2a48adfd", "3d1219c7c4c5404aaa1f6d2a48adfdzz"} {
		if _, err := NodeID(writeMachineID(t, bad)); !errors.Is(err, ErrNoMachineID) {
			t.Errorf("machine id %q: %v, want ErrNoMachineID", bad, err)
		}
	}
	if _, err := NodeID(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, ErrNoMachineID) {
		t.Errorf("missing file: %v", err)
	}
}

// TestNodeIDMatchesSystemd compares NodeID with systemd's own derivation
// on this machine. It skips without systemd or a machine id (containers
// often have neither), even in CI: TestNodeID's vector, taken from
// systemd-id128, always runs.
func TestNodeIDMatchesSystemd(t *testing.T) {
	tool, err := exec.LookPath("systemd-id128")
	if err != nil {
		t.Skip("systemd-id128 not installed")
	}
	if b, err := os.ReadFile(DefaultMachineIDPath); err != nil || len(strings.TrimSpace(string(b))) != 32 {
		t.Skipf("no initialised %s here", DefaultMachineIDPath)
	}
	out, err := exec.Command(tool, "machine-id", "--app-specific="+AppID).Output()
	if err != nil {
		t.Fatalf("systemd-id128: %v", err)
	}
	id, err := NodeID("")
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.TrimSpace(string(out)); id != want {
		t.Fatalf("NodeID = %s, systemd-id128 says %s", id, want)
	}
}
