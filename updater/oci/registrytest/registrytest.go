// Package registrytest starts OCI registries on the loopback interface for
// tests: Debian's docker-registry (Distribution 2.8, the real thing) and
// go-containerregistry's in-process registry.
package registrytest

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"

	"sealift/internal/testutil"
)

// StartRegistry runs /usr/bin/docker-registry (Debian package
// docker-registry) on 127.0.0.1 with filesystem storage in a temporary
// directory, no authentication and deletion enabled, and returns its
// host:port. It is stopped when the test ends. Without the binary the test
// is skipped locally and fails in CI (testutil.RequireTool).
func StartRegistry(t testing.TB) (host string) {
	t.Helper()
	bin := testutil.RequireTool(t, "docker-registry")
	dir := t.TempDir()
	var lastErr error
	// A port found free can be taken before the registry binds it; try a
	// few times rather than flake.
	for range 3 {
		host, err := start(t, bin, dir)
		if err == nil {
			return host
		}
		lastErr = err
	}
	t.Fatalf("docker-registry did not start: %v", lastErr)
	return ""
}

func start(t testing.TB, bin, dir string) (string, error) {
	port := testutil.FreePort(t)
	host := fmt.Sprintf("127.0.0.1:%d", port)
	storage := filepath.Join(dir, fmt.Sprintf("storage-%d", port))
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: sealift-test-secret
`, storage, host)
	cfgPath := filepath.Join(dir, fmt.Sprintf("config-%d.yml", port))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return "", err
	}
	logPath := filepath.Join(dir, fmt.Sprintf("registry-%d.log", port))
	logf, err := os.Create(logPath)
	if err != nil {
		return "", err
	}
	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so that nothing it starts outlives the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return "", err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		logf.Close()
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			logf.Close()
			out, _ := os.ReadFile(logPath)
			return "", fmt.Errorf("exited: %v\n%s", err, out)
		default:
		}
		resp, err := http.Get("http://" + host + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Cleanup(func() {
					stop()
					if t.Failed() {
						if out, _ := os.ReadFile(logPath); len(out) > 0 {
							t.Logf("docker-registry log:\n%s", tail(out, 4000))
						}
					}
				})
				return host, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	out, _ := os.ReadFile(logPath)
	return "", fmt.Errorf("not answering on %s\n%s", host, out)
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// InProcess starts go-containerregistry's in-memory registry on
// 127.0.0.1 (plain HTTP) and returns its host:port and the server, which
// is closed when the test ends.
func InProcess(t testing.TB) (host string, srv *httptest.Server) {
	t.Helper()
	srv = httptest.NewServer(Handler())
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), srv
}

// Handler returns a fresh in-memory registry handler that logs nothing,
// for tests that wrap it (auth proxies, fault injection, TLS).
func Handler() http.Handler {
	return registry.New(registry.Logger(log.New(io.Discard, "", 0)))
}
