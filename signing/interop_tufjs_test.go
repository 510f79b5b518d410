package signing

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata/fetcher"

	"sealift/internal/testutil"
)

// tufjsCheck is run by node: a TUF client we did not write (tuf-js, the
// npm ecosystem's implementation) refreshes from our repository starting
// at the given root, downloads each named target and reports what it
// verified.
const tufjsCheck = `'use strict';
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const { Updater } = require('tuf-js');

async function main() {
  const [metadataBaseUrl, targetBaseUrl, rootFile, work, ...names] = process.argv.slice(2);
  const metadataDir = path.join(work, 'metadata');
  const targetDir = path.join(work, 'targets');
  fs.mkdirSync(metadataDir, { recursive: true });
  fs.mkdirSync(targetDir, { recursive: true });
  fs.copyFileSync(rootFile, path.join(metadataDir, 'root.json'));
  const updater = new Updater({ metadataDir, metadataBaseUrl, targetDir, targetBaseUrl });
  await updater.refresh();
  const out = {};
  for (const name of names) {
    const info = await updater.getTargetInfo(name);
    if (!info) throw new Error('target ' + name + ' not found');
    const file = await updater.downloadTarget(info, path.join(targetDir, encodeURIComponent(name)));
    const data = fs.readFileSync(file);
    out[name] = {
      length: info.length,
      sha256: info.hashes.sha256,
      custom: info.custom,
      downloaded: crypto.createHash('sha256').update(data).digest('hex'),
    };
  }
  const root = JSON.parse(fs.readFileSync(path.join(metadataDir, 'root.json')));
  out['@root_version'] = root.signed.version;
  process.stdout.write(JSON.stringify(out));
}
main().catch((e) => { process.stderr.write(e.name + ': ' + e.message + '\n'); process.exit(1); });
`

// TestInteropTufJS proves that an independent TUF client accepts our
// repository, including a walk through rotated roots from 1.root.json,
// and that it rejects a tampered target. It needs node and npm, and the
// npm registry to install tuf-js.
func TestInteropTufJS(t *testing.T) {
	if testing.Short() {
		t.Skip("installs tuf-js from npm")
	}
	node := testutil.RequireTool(t, "node")
	npm := testutil.RequireTool(t, "npm")
	modDir := installTufJS(t, node, npm)
	script := filepath.Join(modDir, "check.js")
	mustDo(t, "write script", os.WriteFile(script, []byte(tufjsCheck), 0o644))

	// tuf-js checks expiry against the real clock.
	r, err := InitRepo(filepath.Join(t.TempDir(), "repo"), InitOptions{
		KeysPerRole: map[Role]int{RoleRoot: 3, RoleTargets: 2},
		Thresholds:  map[Role]int{RoleRoot: 2, RoleTargets: 2},
	})
	mustDo(t, "InitRepo", err)
	mustDo(t, "AddTarget", r.AddTarget("k8s-1.31/x86_64/1.2.0.json", manifestA, customA))
	for _, role := range allRoles {
		mustDo(t, "RotateKeys", r.RotateKeys(role, 2, 2))
	}
	mustDo(t, "AddTarget", r.AddTarget("1.3.0.json", manifestB, json.RawMessage(`{"version":"1.3.0","halted":false,"per_mille":-1}`)))
	mustDo(t, "RefreshTimestamp", r.RefreshTimestamp())

	base := serveRepo(t, r.Dir())
	run := func(names ...string) (string, error) {
		work := t.TempDir()
		args := append([]string{script, base + "/metadata", base + "/targets", filepath.Join(r.Dir(), "metadata", "1.root.json"), work}, names...)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, node, args...)
		cmd.Env = append(os.Environ(), "NODE_PATH="+filepath.Join(modDir, "node_modules"))
		cmd.Dir = modDir
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return stderr.String(), err
		}
		return string(out), nil
	}

	want, err := r.Targets()
	mustDo(t, "Targets", err)
	out, err := run("k8s-1.31/x86_64/1.2.0.json", "1.3.0.json")
	if err != nil {
		t.Fatalf("tuf-js rejected our repository: %v\n%s", err, out)
	}
	var got map[string]json.RawMessage
	t.Logf("tuf-js verified: %s", out)
	mustDo(t, "parse tuf-js output", json.Unmarshal([]byte(out), &got))
	if v := string(got["@root_version"]); v != "5" {
		t.Fatalf("tuf-js ended at root version %s, want 5 (4 rotations)", v)
	}
	for name, ti := range want {
		var g struct {
			Length     int64
			SHA256     string
			Custom     map[string]any
			Downloaded string
		}
		mustDo(t, "parse "+name, json.Unmarshal(got[name], &g))
		var wantCustom map[string]any
		mustDo(t, "parse custom", json.Unmarshal(ti.Custom, &wantCustom))
		if g.Length != ti.Length || g.SHA256 != ti.SHA256 || g.Downloaded != ti.SHA256 || !reflect.DeepEqual(g.Custom, wantCustom) {
			t.Fatalf("tuf-js saw %s as %+v, want %+v", name, g, ti)
		}
	}

	// The same client must refuse a tampered target: proof that it
	// verified rather than merely downloaded.
	p := filepath.Join(r.Dir(), "targets", filepath.FromSlash(TargetURLPath("1.3.0.json", want["1.3.0.json"].SHA256)))
	data, err := os.ReadFile(p)
	mustDo(t, "read target", err)
	data[len(data)/2] ^= 1
	mustDo(t, "tamper target", os.WriteFile(p, data, 0o644))
	out, err = run("1.3.0.json")
	t.Logf("tuf-js on a tampered target: %v: %s", err, strings.TrimSpace(out))
	if err == nil || !strings.Contains(strings.ToLower(out), "hash") {
		t.Fatalf("tuf-js accepted a tampered target (err %v): %s", err, out)
	}
}

// installTufJS installs tuf-js into a temporary directory. The version
// follows the node found: tuf-js 5 needs node >= 20.17, 3.1 runs on
// Debian 12's node 18.
func installTufJS(t *testing.T, node, npm string) string {
	t.Helper()
	out, err := exec.Command(node, "--version").Output()
	mustDo(t, "node --version", err)
	version := "5.0.1"
	if major, minor := nodeVersion(strings.TrimSpace(string(out))); major < 20 || (major == 20 && minor < 17) {
		version = "3.1.0"
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "install", "--prefix", dir, "--no-audit", "--no-fund", "--loglevel=error", "tuf-js@"+version)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		msg := "npm install tuf-js@" + version + " failed (no access to the npm registry?): " + err.Error() + "\n" + string(b)
		if os.Getenv("SEALIFT_REQUIRE_TOOLS") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return dir
}

func nodeVersion(v string) (major, minor int) {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	if len(parts) < 2 {
		return 0, 0
	}
	major, _ = strconv.Atoi(parts[0])
	minor, _ = strconv.Atoi(parts[1])
	return major, minor
}

// serveRepo serves only the public parts of a repository directory
// (metadata/ and targets/, never keys/) over HTTP on 127.0.0.1.
func serveRepo(t *testing.T, dir string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	mustDo(t, "listen", err)
	files := http.FileServer(http.Dir(dir))
	mux := http.NewServeMux()
	mux.Handle("/metadata/", files)
	mux.Handle("/targets/", files)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	}()
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// TestDefaultHTTPFetcher: the client also works over plain HTTP with
// go-tuf's own fetcher, whose 404 handling DirFetcher imitates.
func TestDefaultHTTPFetcher(t *testing.T) {
	e := newEnv(t, InitOptions{})
	mustDo(t, "AddTarget", e.repo.AddTarget("rel/1.0.json", manifestA, customA))
	mustDo(t, "RotateKeys", e.repo.RotateKeys(RoleRoot, 1, 1))
	base := serveRepo(t, e.repo.Dir())
	c, err := NewClient(ClientOptions{
		TrustedRoot:     e.root,
		CacheDir:        e.cache,
		Fetcher:         fetcher.NewDefaultFetcher(),
		MetadataBaseURL: base + "/metadata",
		TargetBaseURL:   base + "/targets",
		Now:             func() time.Time { return t0.Add(time.Hour) },
	})
	mustDo(t, "NewClient", err)
	mustDo(t, "Refresh", c.Refresh())
	data, _, err := c.Fetch("rel/1.0.json")
	if err != nil || string(data) != string(manifestA) {
		t.Fatalf("Fetch: %q, %v", data, err)
	}
}
