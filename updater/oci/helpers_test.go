package oci_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"sealift/internal/kernelimage"
	"sealift/updater/oci"
	"sealift/updater/oci/registrytest"
	"sealift/updater/release"
)

const testRepo = "os/node"

// testRelease is a small built release.
type testRelease struct {
	img      v1.Image
	manifest []byte
	digest   string
	image    []byte
}

func buildRelease(t testing.TB, size, chunk int64, seed uint64) *testRelease {
	t.Helper()
	dir := t.TempDir()
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := 0; i < len(data); i += 4096 {
		if r.IntN(2) == 0 {
			for j := i; j < i+4096; j++ {
				data[j] = byte(r.Uint32())
			}
		} else {
			copy(data[i:i+4096], bytes.Repeat([]byte{byte(i >> 12)}, 4096))
		}
	}
	root := filepath.Join(dir, "root.img")
	kernel := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(root, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kernel, kernelimage.Synthetic([]byte("a kernel")), 0o644); err != nil {
		t.Fatal(err)
	}
	img, _, err := release.Build(release.BuildOptions{
		RootImage: root, Kernel: kernel, Version: "1.0.0", Variant: "metal", Arch: "amd64",
		ChunkSize: chunk, Salt: []byte{1}, Created: time.Unix(1700000000, 0),
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	return &testRelease{img: img, manifest: m, digest: sha(m), image: data}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func hexOf(digest string) string { return digest[len("sha256:"):] }

// backend is a place to publish to and read from.
type backend struct {
	name  string
	setup func(t *testing.T) (oci.Source, oci.Publisher)
}

func registryPair(t *testing.T, o oci.RegistryOptions) (oci.Source, oci.Publisher) {
	t.Helper()
	src, err := oci.NewRegistry(o)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := oci.NewRegistryPublisher(o)
	if err != nil {
		t.Fatal(err)
	}
	return src, pub
}

func backends() []backend {
	return []backend{
		{"layout", func(t *testing.T) (oci.Source, oci.Publisher) {
			dir := t.TempDir()
			pub, err := oci.NewLayoutPublisher(dir)
			if err != nil {
				t.Fatal(err)
			}
			src, err := oci.NewLayout(dir)
			if err != nil {
				t.Fatal(err)
			}
			return src, pub
		}},
		{"in-process registry", func(t *testing.T) (oci.Source, oci.Publisher) {
			host, _ := registrytest.InProcess(t)
			return registryPair(t, oci.RegistryOptions{Repository: host + "/" + testRepo, Insecure: true})
		}},
		{"docker-registry", func(t *testing.T) (oci.Source, oci.Publisher) {
			host := registrytest.StartRegistry(t)
			return registryPair(t, oci.RegistryOptions{Repository: host + "/" + testRepo, Insecure: true})
		}},
	}
}

func readAllBlob(t testing.TB, src oci.Source, digest string, size int64) []byte {
	t.Helper()
	b, err := oci.ReadBlob(context.Background(), src, digest, size)
	if err != nil {
		t.Fatalf("ReadBlob %s: %v", digest, err)
	}
	return b
}
