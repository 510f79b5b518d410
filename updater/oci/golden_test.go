package oci_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"sealift/updater/oci"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/oci")

// TestGoldenFileArtifact pins the manifest of a TUF metadata artifact:
// pushing the same file must give the same digest across versions.
func TestGoldenFileArtifact(t *testing.T) {
	img, err := oci.FileImage([]byte(`{"signed":{"_type":"timestamp","version":1},"signatures":[]}`), oci.MediaTypeTUFMetadata)
	if err != nil {
		t.Fatal(err)
	}
	got, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("..", "..", "testdata", "oci", "tuf-file-manifest.json")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("FileImage manifest changed:\n got %s\nwant %s", got, want)
	}
	d, size, err := oci.FileFromManifest(got, oci.MediaTypeTUFMetadata)
	if err != nil || size != 60 || d == "" {
		t.Errorf("FileFromManifest: %s %d %v", d, size, err)
	}
}
