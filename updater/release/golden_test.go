package release_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"sealift/internal/kernelimage"
	"sealift/updater/release"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/release")

// TestGoldenRelease pins the exact bytes Build produces for fixed inputs.
// A change here changes every chunk digest (no dedupe against older
// releases for one release) or the format itself: update the golden files
// (go test ./updater/release -run Golden -update) only on purpose, and
// say why in the commit.
func TestGoldenRelease(t *testing.T) {
	dir := t.TempDir()
	// Content from arithmetic only, so nothing but Build decides the bytes.
	image := make([]byte, 5*4096)
	for i := range image {
		if (i/4096)%2 == 0 {
			image[i] = byte(i*i>>7) ^ byte(i>>12)
		}
	}
	img, _, err := release.Build(release.BuildOptions{
		RootImage: writeFile(t, dir, "root.img", image),
		Kernel:    writeFile(t, dir, "vmlinuz", kernelimage.Synthetic([]byte("golden kernel\n"))),
		Initrd:    writeFile(t, dir, "initrd.img", []byte("golden initrd\n")),
		Cmdline:   "console=ttyS0",
		Version:   "1.0.0", Variant: "golden", Arch: "amd64",
		ChunkSize: 8192, Salt: testSalt, Created: testCreated,
	})
	if err != nil {
		t.Fatal(err)
	}
	manifest, _ := img.RawManifest()
	config, _ := img.RawConfigFile()
	golden := filepath.Join("..", "..", "testdata", "release")
	for name, got := range map[string][]byte{"manifest.json": manifest, "config.json": config} {
		path := filepath.Join(golden, name)
		if *update {
			if err := os.MkdirAll(golden, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, got, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from %s:\n got %s\nwant %s", name, path, got, want)
		}
	}
	// The golden files are a valid release.
	if _, err := release.Parse(manifest, config); err != nil {
		t.Fatal(err)
	}
}
