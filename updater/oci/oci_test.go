package oci_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"sealift/signing"
	"sealift/updater/oci"
	"sealift/updater/release"
)

// tufFiles are TUF-like metadata files as a repository publishes them.
var tufFiles = map[string][]byte{
	"1.root.json":     []byte(`{"signed":{"_type":"root","version":1},"signatures":[]}`),
	"timestamp.json":  []byte(`{"signed":{"_type":"timestamp","version":7},"signatures":[]}`),
	"3.snapshot.json": []byte(`{"signed":{"_type":"snapshot","version":3},"signatures":[]}`),
	"3.targets.json":  []byte(`{"signed":{"_type":"targets","version":3},"signatures":[]}`),
}

// TestPublishAndRead pushes a release and TUF files through each backend
// and reads everything back through the Source and the TUF fetcher.
func TestPublishAndRead(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			ctx := context.Background()
			src, pub := be.setup(t)
			rel := buildRelease(t, 5*64<<10+8192, 64<<10, 1)
			digest, manifest, err := pub.PushImage(ctx, rel.img, "1.0.0")
			if err != nil {
				t.Fatalf("PushImage: %v", err)
			}
			if digest != rel.digest || !bytes.Equal(manifest, rel.manifest) {
				t.Fatalf("PushImage returned %s, want %s", digest, rel.digest)
			}
			// Pushing again is a no-op that changes nothing.
			if d2, _, err := pub.PushImage(ctx, rel.img, "1.0.0"); err != nil || d2 != digest {
				t.Fatalf("second PushImage: %s, %v", d2, err)
			}
			for name, data := range tufFiles {
				if err := pub.PushFile(ctx, name, data, oci.MediaTypeTUFMetadata); err != nil {
					t.Fatalf("PushFile %s: %v", name, err)
				}
			}

			t.Run("manifest by tag and digest", func(t *testing.T) {
				for _, ref := range []string{"1.0.0", digest} {
					m, err := src.Manifest(ctx, ref, release.MaxManifestSize)
					if err != nil || !bytes.Equal(m, rel.manifest) {
						t.Fatalf("Manifest(%s): %v", ref, err)
					}
				}
			})
			t.Run("release streams back", func(t *testing.T) {
				r, err := release.Fetch(ctx, rel.manifest, src)
				if err != nil {
					t.Fatal(err)
				}
				rc := r.RootReader(ctx, src)
				defer rc.Close()
				got, err := io.ReadAll(rc)
				if err != nil || !bytes.Equal(got, rel.image) {
					t.Fatalf("RootReader: %v (equal %v)", err, bytes.Equal(got, rel.image))
				}
				blob := readAllBlob(t, src, r.Chunks[1].Blob.Digest, r.Chunks[1].Blob.Size)
				if sha(blob) != r.Chunks[1].Blob.Digest {
					t.Fatal("blob digest")
				}
			})
			t.Run("missing things are not found", func(t *testing.T) {
				missing := "sha256:" + string(bytes.Repeat([]byte("0"), 64))
				if _, err := src.Manifest(ctx, "no-such-tag", 1<<20); !errors.Is(err, oci.ErrNotFound) {
					t.Errorf("missing tag: %v", err)
				}
				if _, err := src.Manifest(ctx, missing, 1<<20); !errors.Is(err, oci.ErrNotFound) {
					t.Errorf("missing manifest digest: %v", err)
				}
				rc, err := src.Blob(ctx, missing, 10)
				if err == nil {
					_, err = io.ReadAll(rc)
					rc.Close()
				}
				if !errors.Is(err, oci.ErrNotFound) {
					t.Errorf("missing blob: %v", err)
				}
			})
			t.Run("size limits", func(t *testing.T) {
				if _, err := src.Manifest(ctx, "1.0.0", int64(len(rel.manifest)-1)); !errors.Is(err, oci.ErrTooLarge) {
					t.Errorf("manifest over maxSize: %v", err)
				}
				r, _ := release.Fetch(ctx, rel.manifest, src)
				b := r.Chunks[0].Blob
				rc, err := src.Blob(ctx, b.Digest, b.Size-1)
				if err == nil {
					_, err = io.ReadAll(rc)
					rc.Close()
				}
				if !errors.Is(err, oci.ErrSizeMismatch) {
					t.Errorf("blob longer than asked: %v", err)
				}
			})
			t.Run("TUF fetcher", func(t *testing.T) {
				f := oci.TUFFetcher(src)
				for name, data := range tufFiles {
					got, err := f.DownloadFile("oci/"+name, 1<<20, 0)
					if err != nil || !bytes.Equal(got, data) {
						t.Errorf("DownloadFile %s: %v", name, err)
					}
					if _, err := f.DownloadFile("oci/"+name, int64(len(data)-1), 0); !errors.As(err, new(*metadata.ErrDownloadLengthMismatch)) {
						t.Errorf("DownloadFile %s over maxLength: %v", name, err)
					}
				}
				var httpErr *metadata.ErrDownloadHTTP
				if _, err := f.DownloadFile("oci/2.root.json", 1<<20, 0); !errors.As(err, &httpErr) || httpErr.StatusCode != http.StatusNotFound {
					t.Errorf("next root: %v, want ErrDownloadHTTP 404", err)
				}
				// A target is the release manifest, fetched by digest.
				target := "oci/targets/releases/" + hexOf(rel.digest) + ".1.0.0.json"
				got, err := f.DownloadFile(target, int64(len(rel.manifest)), 0)
				if err != nil || !bytes.Equal(got, rel.manifest) {
					t.Errorf("target: %v", err)
				}
				if _, err := f.DownloadFile(target, int64(len(rel.manifest)-1), 0); !errors.As(err, new(*metadata.ErrDownloadLengthMismatch)) {
					t.Errorf("target over maxLength: %v", err)
				}
				unknown := "oci/targets/" + string(bytes.Repeat([]byte("ab"), 32)) + ".x.json"
				if _, err := f.DownloadFile(unknown, 1<<20, 0); !errors.As(err, &httpErr) || httpErr.StatusCode != http.StatusNotFound {
					t.Errorf("unknown target: %v, want 404", err)
				}
				if _, err := f.DownloadFile("oci/1.role%2Fx.json", 1<<20, 0); err == nil || errors.As(err, &httpErr) {
					t.Errorf("untaggable role name: %v, want a plain error", err)
				}
				// A tag that is not a TUF file artifact is an error, not 404.
				if _, err := f.DownloadFile("oci/1.0.0", 1<<20, 0); err == nil || errors.As(err, &httpErr) {
					t.Errorf("release tag as metadata: %v", err)
				}
			})
		})
	}
}

// TestTUFClientOverOCI runs the signing package's client against a
// repository published with PushFile, whose target is a release manifest.
func TestTUFClientOverOCI(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			ctx := context.Background()
			src, pub := be.setup(t)
			rel := buildRelease(t, 3*4096, 4096, 2)
			if _, _, err := pub.PushImage(ctx, rel.img, "1.0.0"); err != nil {
				t.Fatal(err)
			}
			repo, err := signing.InitRepo(filepath.Join(t.TempDir(), "repo"), signing.InitOptions{})
			if err != nil {
				t.Fatal(err)
			}
			custom, _ := json.Marshal(map[string]string{"version": "1.0.0"})
			if err := repo.AddTarget("releases/1.0.0.json", rel.manifest, custom); err != nil {
				t.Fatal(err)
			}
			files, err := repo.Files()
			if err != nil {
				t.Fatal(err)
			}
			for name, data := range files {
				if name == "timestamp.json" {
					continue
				}
				if err := pub.PushFile(ctx, name, data, oci.MediaTypeTUFMetadata); err != nil {
					t.Fatal(err)
				}
			}
			if err := pub.PushFile(ctx, "timestamp.json", files["timestamp.json"], oci.MediaTypeTUFMetadata); err != nil {
				t.Fatal(err)
			}
			root, err := os.ReadFile(repo.TrustedRootPath())
			if err != nil {
				t.Fatal(err)
			}
			c, err := signing.NewClient(signing.ClientOptions{
				TrustedRoot: root, CacheDir: t.TempDir(), Fetcher: oci.TUFFetcherContext(ctx, src),
				MetadataBaseURL: "oci", TargetBaseURL: "oci/targets",
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Refresh(); err != nil {
				t.Fatalf("Refresh: %v", err)
			}
			data, info, err := c.Fetch("releases/1.0.0.json")
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			if !bytes.Equal(data, rel.manifest) || "sha256:"+info.SHA256 != rel.digest {
				t.Fatal("signed target is not the release manifest")
			}
			r, err := release.Fetch(ctx, data, src)
			if err != nil {
				t.Fatal(err)
			}
			rc := r.RootReader(ctx, src)
			defer rc.Close()
			if got, err := io.ReadAll(rc); err != nil || !bytes.Equal(got, rel.image) {
				t.Fatalf("image through TUF-pinned manifest: %v", err)
			}
		})
	}
}

func TestLayoutReplacesTagAndIsReadableByGGCR(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	pub, err := oci.NewLayoutPublisher(dir)
	if err != nil {
		t.Fatal(err)
	}
	a := buildRelease(t, 8192, 4096, 3)
	b := buildRelease(t, 8192, 4096, 4)
	for _, step := range []struct {
		rel *testRelease
		tag string
	}{{a, "stable"}, {a, "1.0.0"}, {b, "stable"}} {
		if _, _, err := pub.PushImage(ctx, step.rel.img, step.tag); err != nil {
			t.Fatal(err)
		}
	}
	src, _ := oci.NewLayout(dir)
	for tag, want := range map[string]*testRelease{"stable": b, "1.0.0": a} {
		m, err := src.Manifest(ctx, tag, 1<<20)
		if err != nil || !bytes.Equal(m, want.manifest) {
			t.Errorf("tag %s: %v", tag, err)
		}
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 2 {
		t.Fatalf("index has %d entries, want 2 (the moved tag replaced)", len(im.Manifests))
	}
	for _, d := range im.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		ls, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range ls {
			rc, err := l.Compressed()
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, rc)
			rc.Close()
		}
	}
	// No temporary files left behind.
	tmps, _ := filepath.Glob(filepath.Join(dir, "blobs", "sha256", ".tmp-*"))
	tmps2, _ := filepath.Glob(filepath.Join(dir, ".tmp-*"))
	if len(tmps)+len(tmps2) > 0 {
		t.Errorf("temporary files left: %v %v", tmps, tmps2)
	}
}

func TestLayoutDetectsDamage(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	pub, _ := oci.NewLayoutPublisher(dir)
	rel := buildRelease(t, 8192, 4096, 5)
	if _, _, err := pub.PushImage(ctx, rel.img, "t"); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "blobs", "sha256", hexOf(rel.digest))
	m, _ := os.ReadFile(p)
	m[10] ^= 1
	os.WriteFile(p, m, 0o644)
	src, _ := oci.NewLayout(dir)
	if _, err := src.Manifest(ctx, "t", 1<<20); !errors.Is(err, oci.ErrDigestMismatch) {
		t.Fatalf("damaged manifest: %v", err)
	}
	if _, err := oci.NewLayout(t.TempDir()); err == nil {
		t.Fatal("a directory without oci-layout was accepted")
	}
}

func TestBadReferences(t *testing.T) {
	ctx := context.Background()
	src, pub := backends()[0].setup(t)
	for _, ref := range []string{"", "../x", "a/b", "sha256:XYZ", "-lead", string(bytes.Repeat([]byte("a"), 129))} {
		if _, err := src.Manifest(ctx, ref, 100); !errors.Is(err, oci.ErrInvalidReference) {
			t.Errorf("Manifest(%q): %v", ref, err)
		}
		if _, err := src.Blob(ctx, ref, 100); !errors.Is(err, oci.ErrInvalidReference) {
			t.Errorf("Blob(%q): %v", ref, err)
		}
		if err := pub.PushFile(ctx, ref, []byte("x"), oci.MediaTypeTUFMetadata); !errors.Is(err, oci.ErrInvalidReference) && ref != "sha256:XYZ" {
			t.Errorf("PushFile(%q): %v", ref, err)
		}
	}
	for _, repo := range []string{"os/node", "node", "127.0.0.1:5000", "127.0.0.1:5000/UPPER"} {
		if _, err := oci.NewRegistry(oci.RegistryOptions{Repository: repo}); err == nil {
			t.Errorf("NewRegistry(%q) accepted", repo)
		}
	}
	_ = time.Second
}
