package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sealift/signing"
	"sealift/updater"
	"sealift/updater/oci"
	"sealift/updater/oci/registrytest"
)

// TestCLIPublishSameVersion: publishing a version again is a no-op with
// the same bytes, refused with other bytes (exit 3, nothing pushed or
// re-signed) and done with --replace. The steps run in order.
func TestCLIPublishSameVersion(t *testing.T) {
	ctx := context.Background()
	host, _ := registrytest.InProcess(t)
	repo := host + "/os/node"
	p := newPublisher(t, "--repository", repo, "--insecure")
	reg, err := oci.NewRegistry(oci.RegistryOptions{Repository: repo, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	digestOf := func(src oci.Source, tag string) string {
		t.Helper()
		m, err := src.Manifest(ctx, tag, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("sha256:%x", sha256.Sum256(m))
	}
	signed := func() string {
		t.Helper()
		r, err := signing.OpenRepo(p.tuf, nil)
		if err != nil {
			t.Fatal(err)
		}
		ts, err := r.Targets()
		if err != nil {
			t.Fatal(err)
		}
		return "sha256:" + ts[updater.TargetName("k8s", "x86_64", "1.0.0")].SHA256
	}
	timestamp := func() string {
		b, _ := os.ReadFile(filepath.Join(p.tuf, "metadata", "timestamp.json"))
		return string(b)
	}
	p.build("1.0.0", 1)
	layout, err := oci.NewLayout(p.layout)
	if err != nil {
		t.Fatal(err)
	}
	mustCLI(t, append([]string{"release", "publish", "--tuf", p.tuf, "--from", p.layout, "--version", "1.0.0"}, p.dest...)...)

	steps := []struct {
		name    string
		rebuild bool // build 1.0.0 again first: other bytes (a new verity salt)
		extra   []string
		code    int
		// want is what the output says, given the digest signed before
		// the step and the one built.
		want      func(before, built string) []string
		nowSigned string // "before" or "built"
		resigned  bool
	}{
		{"same bytes again", false, nil, exitOK,
			func(string, string) []string {
				return []string{"1.0.0 is already published with this manifest; nothing re-signed"}
			}, "before", false},
		{"same bytes again with a plan", false, []string{"--plan", "default"}, exitOK,
			func(string, string) []string {
				return []string{"already published", "--plan not applied", "rollout: none"}
			}, "before", false},
		{"other bytes", true, nil, exitBadInput,
			func(before, built string) []string {
				return []string{"release 1.0.0 is already published with other bytes", "signed as manifest " + before, "this release is manifest " + built, "--replace"}
			}, "before", false},
		{"other bytes with --replace", false, []string{"--replace"}, exitOK,
			func(before, built string) []string {
				return []string{"replaced 1.0.0 in registry:" + repo + " (was manifest " + before + ")", "manifest:      " + built, "replaced manifest keep it"}
			}, "built", true},
		{"the replacement again", false, nil, exitOK,
			func(string, string) []string { return []string{"already published"} }, "before", false},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if s.rebuild {
				p.build("1.0.0", 1)
			}
			before, built, ts := signed(), digestOf(layout, "1.0.0"), timestamp()
			code, out, errs := cli(t, append(append([]string{"release", "publish", "--tuf", p.tuf, "--from", p.layout, "--version", "1.0.0"}, s.extra...), p.dest...)...)
			t.Logf("exit %d:\n%s%s", code, out, errs)
			if code != s.code {
				t.Fatalf("exit %d, want %d:\n%s%s", code, s.code, out, errs)
			}
			for _, w := range s.want(before, built) {
				if !strings.Contains(out+errs, w) {
					t.Fatalf("output lacks %q:\n%s%s", w, out, errs)
				}
			}
			want := map[string]string{"before": before, "built": built}[s.nowSigned]
			if got := signed(); got != want {
				t.Fatalf("signed %s, want %s", got, want)
			}
			if got := digestOf(reg, "1.0.0"); got != want {
				t.Fatalf("the registry's tag 1.0.0 names %s, want %s", got, want)
			}
			if resigned := timestamp() != ts; resigned != s.resigned {
				t.Fatalf("re-signed: %v, want %v", resigned, s.resigned)
			}
		})
	}
}
