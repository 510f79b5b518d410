package oci_test

import (
	"bytes"
	"context"
	"io"
	"os/exec"
	"path/filepath"
	"testing"

	"sealift/internal/testutil"
	"sealift/updater/oci"
	"sealift/updater/oci/registrytest"
	"sealift/updater/release"
)

// TestSkopeoInterop checks our manifests and layouts with containers/image
// (skopeo, Debian package skopeo) against Distribution 2.8: skopeo reads
// what we push byte for byte, copies our layout into the registry without
// rewriting it, and we read a layout skopeo wrote.
func TestSkopeoInterop(t *testing.T) {
	skopeo := testutil.RequireTool(t, "skopeo")
	host := registrytest.StartRegistry(t)
	ctx := context.Background()
	rel := buildRelease(t, 3*64<<10, 64<<10, 20)
	repo := host + "/" + testRepo
	o := oci.RegistryOptions{Repository: repo, Insecure: true}
	src, pub := registryPair(t, o)
	if _, _, err := pub.PushImage(ctx, rel.img, "1.0.0"); err != nil {
		t.Fatal(err)
	}
	if err := pub.PushFile(ctx, "timestamp.json", tufFiles["timestamp.json"], oci.MediaTypeTUFMetadata); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) []byte {
		t.Helper()
		out, err := exec.Command(skopeo, args...).Output()
		if err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				t.Fatalf("skopeo %v: %v\n%s", args, err, ee.Stderr)
			}
			t.Fatalf("skopeo %v: %v", args, err)
		}
		return out
	}

	t.Run("inspect raw equals what we pushed", func(t *testing.T) {
		got := run("inspect", "--raw", "--tls-verify=false", "docker://"+repo+":1.0.0")
		if !bytes.Equal(got, rel.manifest) {
			t.Fatalf("skopeo sees\n%s\nwe pushed\n%s", got, rel.manifest)
		}
		m := run("inspect", "--raw", "--tls-verify=false", "docker://"+repo+":timestamp.json")
		img, _ := oci.FileImage(tufFiles["timestamp.json"], oci.MediaTypeTUFMetadata)
		want, _ := img.RawManifest()
		if !bytes.Equal(m, want) {
			t.Fatalf("TUF artifact manifest: skopeo sees\n%s", m)
		}
	})
	t.Run("our layout copies into the registry unchanged", func(t *testing.T) {
		dir := t.TempDir()
		if err := release.WriteLayout(dir, rel.img, "2.0.0"); err != nil {
			t.Fatal(err)
		}
		run("copy", "--dest-tls-verify=false", "oci:"+dir+":2.0.0", "docker://"+repo+":2.0.0")
		m, err := src.Manifest(ctx, "2.0.0", 1<<20)
		if err != nil || !bytes.Equal(m, rel.manifest) {
			t.Fatalf("manifest after skopeo copy: %v (changed %v)", err, !bytes.Equal(m, rel.manifest))
		}
	})
	t.Run("we read a layout skopeo wrote", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "layout")
		run("copy", "--src-tls-verify=false", "docker://"+repo+":1.0.0", "oci:"+dir+":1.0.0")
		ls, err := oci.NewLayout(dir)
		if err != nil {
			t.Fatal(err)
		}
		m, err := ls.Manifest(ctx, "1.0.0", 1<<20)
		if err != nil || !bytes.Equal(m, rel.manifest) {
			t.Fatalf("manifest: %v", err)
		}
		r, err := release.Fetch(ctx, m, ls)
		if err != nil {
			t.Fatal(err)
		}
		rc := r.RootReader(ctx, ls)
		defer rc.Close()
		if got, err := io.ReadAll(rc); err != nil || !bytes.Equal(got, rel.image) {
			t.Fatalf("image: %v", err)
		}
	})
}
