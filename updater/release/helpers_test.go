package release_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"sealift/internal/kernelimage"
	"sealift/internal/testimage"
	"sealift/updater/oci"
	"sealift/updater/release"
)

var (
	testSalt    = bytes.Repeat([]byte{0x5a}, 32)
	testCreated = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
)

// fillImage fills b with content shaped like a root filesystem.
var fillImage = testimage.FSLike

// writeFile writes data under dir and returns its path.
func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// fixture is a built release with its inputs.
type fixture struct {
	dir            string
	image          []byte
	kernel, initrd []byte
	opts           release.BuildOptions
	img            v1.Image
	cfg            *release.Config
	manifest       []byte
	config         []byte
}

func newFixture(t testing.TB, size, chunk int64, withInitrd bool) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), image: make([]byte, size)}
	fillImage(f.image, uint64(size))
	f.kernel = kernelimage.Synthetic(bytes.Repeat([]byte("kernel"), 1000))
	f.opts = release.BuildOptions{
		RootImage: writeFile(t, f.dir, "root.img", f.image),
		Kernel:    writeFile(t, f.dir, "vmlinuz", f.kernel),
		Cmdline:   "console=ttyS0 quiet",
		Version:   "1.2.3",
		Variant:   "metal",
		Arch:      "amd64",
		ChunkSize: chunk,
		Salt:      testSalt,
		Created:   testCreated,
	}
	if withInitrd {
		f.initrd = bytes.Repeat([]byte("initrd"), 3000)
		f.opts.Initrd = writeFile(t, f.dir, "initrd.img", f.initrd)
	}
	f.build(t)
	return f
}

func (f *fixture) build(t testing.TB) {
	t.Helper()
	img, cfg, err := release.Build(f.opts)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	f.img, f.cfg = img, cfg
	if f.manifest, err = img.RawManifest(); err != nil {
		t.Fatal(err)
	}
	if f.config, err = img.RawConfigFile(); err != nil {
		t.Fatal(err)
	}
}

// memFetcher serves blobs from memory; hooks let tests misbehave.
type memFetcher struct {
	mu    sync.Mutex
	blobs map[string][]byte
	// serve, when set, replaces the blob's reader.
	serve func(digest string, data []byte) (io.ReadCloser, error)
}

func (m *memFetcher) Blob(ctx context.Context, digest string, size int64) (io.ReadCloser, error) {
	m.mu.Lock()
	data, ok := m.blobs[digest]
	m.mu.Unlock()
	if m.serve != nil {
		return m.serve(digest, data)
	}
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", digest, oci.ErrNotFound)
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

// blobsOf returns every blob of an image by digest.
func blobsOf(t testing.TB, img v1.Image) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		d, _ := l.Digest()
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("layer %s: %v", d, err)
		}
		out[d.String()] = b
	}
	cfg, _ := img.RawConfigFile()
	out[sha(cfg)] = cfg
	return out
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// editManifest decodes a manifest, lets fn change it and encodes it again.
func editManifest(t testing.TB, manifest []byte, fn func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(manifest, &m); err != nil {
		t.Fatal(err)
	}
	fn(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func layers(m map[string]any) []any { return m["layers"].([]any) }

func layer(m map[string]any, i int) map[string]any { return layers(m)[i].(map[string]any) }

func annotations(l map[string]any) map[string]any { return l["annotations"].(map[string]any) }

// editConfig changes the config JSON and returns the new config and a
// manifest pointing at it.
func editConfig(t testing.TB, manifest, config []byte, fn func(c map[string]any)) ([]byte, []byte) {
	t.Helper()
	var c map[string]any
	if err := json.Unmarshal(config, &c); err != nil {
		t.Fatal(err)
	}
	fn(c)
	newCfg, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	newMan := editManifest(t, manifest, func(m map[string]any) {
		cd := m["config"].(map[string]any)
		cd["digest"] = sha(newCfg)
		cd["size"] = len(newCfg)
	})
	return newMan, newCfg
}

// readAll reads a RootReader to the end and closes it.
func readAll(t testing.TB, rc io.ReadCloser) ([]byte, error) {
	t.Helper()
	defer rc.Close()
	return io.ReadAll(rc)
}
