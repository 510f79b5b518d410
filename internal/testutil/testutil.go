// Package testutil holds helpers shared by the tests of several packages.
package testutil

import (
	"net"
	"os"
	"os/exec"
	"testing"
)

// RequireTool returns the path of an external tool the test needs. Where the
// tool is missing the test is skipped on a developer machine, but fails when
// SEALIFT_REQUIRE_TOOLS=1 (set by .ci/run), so CI can never pass an interop
// test silently by not running it.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin"} {
		if _, serr := os.Stat(dir + "/" + name); serr == nil {
			return dir + "/" + name
		}
	}
	if os.Getenv("SEALIFT_REQUIRE_TOOLS") == "1" {
		t.Fatalf("required tool %q not found (install it; see .ci/run)", name)
	}
	t.Skipf("tool %q not installed", name)
	return ""
}

// Run runs a command and fails the test with its output if it fails.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// FreePort returns a TCP port on 127.0.0.1 that nothing listens on right
// now. Another process may take it before the caller binds it, so servers
// started on it are retried on failure.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
