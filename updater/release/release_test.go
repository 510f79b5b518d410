package release_test

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"sealift/internal/kernelimage"
	"sealift/partitions/verity"
	"sealift/updater/oci"
	"sealift/updater/release"
)

func TestRoundTripThroughLayout(t *testing.T) {
	const chunk = 64 << 10
	tests := []struct {
		name   string
		size   int64
		chunk  int64
		initrd bool
	}{
		{"one block", 4096, chunk, false},
		{"one full chunk", chunk, chunk, true},
		{"chunks and a short last one", 5*chunk + 3*4096, chunk, true},
		{"exact multiple of chunks", 4 * chunk, chunk, false},
		{"default chunk size, one chunk", 1 << 20, 0, false},
		{"4096-byte chunks", 10 * 4096, 4096, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.size, tc.chunk, tc.initrd)
			dir := t.TempDir()
			if err := release.WriteLayout(dir, f.img, "v1.2.3"); err != nil {
				t.Fatalf("WriteLayout: %v", err)
			}
			src, err := oci.NewLayout(dir)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			man, err := src.Manifest(ctx, "v1.2.3", release.MaxManifestSize)
			if err != nil {
				t.Fatalf("Manifest: %v", err)
			}
			if !bytes.Equal(man, f.manifest) {
				t.Fatal("manifest read back differs from the one built")
			}
			rel, err := release.Fetch(ctx, man, src)
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			wantChunks := 1
			if cs := f.cfg.Root.ChunkSize; tc.size > cs {
				wantChunks = int((tc.size + cs - 1) / cs)
			}
			if len(rel.Chunks) != wantChunks {
				t.Errorf("%d chunks, want %d", len(rel.Chunks), wantChunks)
			}
			got, err := readAll(t, rel.RootReader(ctx, src))
			if err != nil {
				t.Fatalf("RootReader: %v", err)
			}
			if !bytes.Equal(got, f.image) {
				t.Fatalf("streamed image differs (%d bytes, want %d)", len(got), len(f.image))
			}
			k, err := rel.ReadKernel(ctx, src)
			if err != nil || !bytes.Equal(k, f.kernel) {
				t.Fatalf("ReadKernel: %v (equal %v)", err, bytes.Equal(k, f.kernel))
			}
			ird, err := rel.ReadInitrd(ctx, src)
			if err != nil || !bytes.Equal(ird, f.initrd) {
				t.Fatalf("ReadInitrd: %v (equal %v)", err, bytes.Equal(ird, f.initrd))
			}
			// The signed root hash is what the install will reproduce.
			params, root := rel.Config.VerityParams()
			wantRoot, _, err := verity.Build(bytes.NewReader(f.image), params, 0)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(root, wantRoot) || !bytes.Equal(params.Salt, testSalt) {
				t.Errorf("verity root %x salt %x, want %x %x", root, params.Salt, wantRoot, testSalt)
			}
			if rel.ManifestDigest != sha(f.manifest) {
				t.Errorf("ManifestDigest %s, want %s", rel.ManifestDigest, sha(f.manifest))
			}
		})
	}
}

func TestBuildIsDeterministic(t *testing.T) {
	const chunk = 64 << 10
	a := newFixture(t, 6*chunk, chunk, true)
	b := newFixture(t, 6*chunk, chunk, true)
	if sha(a.manifest) != sha(b.manifest) {
		t.Fatalf("same inputs gave manifests %s and %s", sha(a.manifest), sha(b.manifest))
	}
	// Different workers, same bytes.
	a.opts.Workers = 1
	a.build(t)
	if sha(a.manifest) != sha(b.manifest) {
		t.Fatal("one worker and many gave different manifests")
	}

	tests := []struct {
		name string
		edit func(f *fixture)
		// sameChunks lists chunk indexes whose blob must stay the same.
		sameChunks []int
	}{
		{"later created time", func(f *fixture) { f.opts.Created = testCreated.Add(time.Hour) }, []int{0, 1, 2, 3, 4, 5}},
		{"other salt", func(f *fixture) { f.opts.Salt = []byte{1, 2, 3} }, []int{0, 1, 2, 3, 4, 5}},
		{"one chunk changed", func(f *fixture) {
			f.image[2*chunk+100] ^= 0xff
			f.opts.RootImage = writeFile(t, f.dir, "root2.img", f.image)
		}, []int{0, 1, 3, 4, 5}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 6*chunk, chunk, true)
			tc.edit(f)
			f.build(t)
			if sha(f.manifest) == sha(b.manifest) {
				t.Fatal("manifest digest did not change")
			}
			ra, err := release.Parse(f.manifest, f.config)
			if err != nil {
				t.Fatal(err)
			}
			rb, _ := release.Parse(b.manifest, b.config)
			for _, i := range tc.sameChunks {
				if ra.Chunks[i].Blob.Digest != rb.Chunks[i].Blob.Digest {
					t.Errorf("chunk %d blob changed: registries could not dedupe it", i)
				}
			}
		})
	}
}

func TestBuildRejects(t *testing.T) {
	tests := []struct {
		name string
		edit func(o *release.BuildOptions, dir string)
		want string
	}{
		{"image not a multiple of 4096", func(o *release.BuildOptions, dir string) {
			o.RootImage = writeFile(t, dir, "odd.img", make([]byte, 5000))
		}, "root.size"},
		{"empty image", func(o *release.BuildOptions, dir string) {
			o.RootImage = writeFile(t, dir, "empty.img", nil)
		}, "root.size"},
		{"chunk size not a multiple of 4096", func(o *release.BuildOptions, _ string) { o.ChunkSize = 5000 }, "chunk_size"},
		{"no kernel", func(o *release.BuildOptions, _ string) { o.Kernel = "" }, "kernel"},
		{"kernel file missing", func(o *release.BuildOptions, dir string) { o.Kernel = dir + "/nope" }, "read kernel"},
		{"not a kernel", func(o *release.BuildOptions, dir string) { o.Kernel = writeFile(t, dir, "junk", []byte("kernel")) },
			"junk: not a kernel image: 6 bytes starting with 6b 65 72 6e 65 6c; want an x86 bzImage"},
		{"kernel for another arch", func(o *release.BuildOptions, _ string) { o.Arch = "arm64" }, "vmlinuz: not a kernel image for arm64: x86 bzImage"},
		{"version with a space", func(o *release.BuildOptions, _ string) { o.Version = "1 2" }, "version"},
		{"no arch", func(o *release.BuildOptions, _ string) { o.Arch = "" }, "arch"},
		{"reserved cmdline parameter", func(o *release.BuildOptions, _ string) { o.Cmdline = "sealift.verity.roothash=00" }, "reserved"},
		{"bad zstd level", func(o *release.BuildOptions, _ string) { o.ZstdLevel = 40 }, "zstd level"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			o := release.BuildOptions{
				RootImage: writeFile(t, dir, "root.img", make([]byte, 8192)),
				Kernel:    writeFile(t, dir, "vmlinuz", kernelimage.Synthetic([]byte("k"))),
				Version:   "1", Variant: "v", Arch: "amd64", Salt: testSalt, Created: testCreated,
			}
			tc.edit(&o, dir)
			_, _, err := release.Build(o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

// TestParseRejects edits a valid release into invalid ones; each error
// must name what is wrong.
func TestParseRejects(t *testing.T) {
	const chunk = 64 << 10
	f := newFixture(t, 4*chunk+4096, chunk, true)
	if _, err := release.Parse(f.manifest, f.config); err != nil {
		t.Fatalf("valid release: %v", err)
	}
	man := func(fn func(m map[string]any)) func() ([]byte, []byte) {
		return func() ([]byte, []byte) { return editManifest(t, f.manifest, fn), f.config }
	}
	cfg := func(fn func(c map[string]any)) func() ([]byte, []byte) {
		return func() ([]byte, []byte) { return editConfig(t, f.manifest, f.config, fn) }
	}
	root := func(c map[string]any) map[string]any { return c["root"].(map[string]any) }
	ver := func(c map[string]any) map[string]any { return root(c)["verity"].(map[string]any) }
	tests := []struct {
		name string
		make func() ([]byte, []byte)
		want string
	}{
		{"wrong artifactType", man(func(m map[string]any) { m["artifactType"] = "application/vnd.example" }), "artifactType"},
		{"no artifactType", man(func(m map[string]any) { delete(m, "artifactType") }), "artifactType"},
		{"docker manifest type", man(func(m map[string]any) {
			m["mediaType"] = "application/vnd.docker.distribution.manifest.v2+json"
		}), "mediaType"},
		{"schema version 1", man(func(m map[string]any) { m["schemaVersion"] = 1 }), "schemaVersion"},
		{"stored chunk whose blob is not its bytes", man(func(m map[string]any) {
			layer(m, 0)["mediaType"] = release.MediaTypeRootChunkStored // a zstd blob labelled stored
		}), "stored chunk"},
		{"wrong config type", man(func(m map[string]any) {
			m["config"].(map[string]any)["mediaType"] = "application/vnd.oci.image.config.v1+json"
		}), "config.mediaType"},
		{"missing chunk", man(func(m map[string]any) {
			m["layers"] = append(layers(m)[:1:1], layers(m)[2:]...)
		}), "contiguous"},
		{"chunks out of order", man(func(m map[string]any) {
			l := layers(m)
			l[0], l[1] = l[1], l[0]
		}), "contiguous"},
		{"overlapping chunk", man(func(m map[string]any) {
			annotations(layer(m, 1))[release.AnnotationChunkOffset] = strconv.Itoa(chunk - 4096)
		}), "contiguous"},
		{"last chunk missing", man(func(m map[string]any) {
			l := layers(m)
			m["layers"] = append(l[:4:4], l[5:]...)
		}), "cover"},
		{"chunk size not a multiple of 4096", man(func(m map[string]any) {
			annotations(layer(m, 4))[release.AnnotationChunkSize] = "4000"
		}), release.AnnotationChunkSize},
		{"middle chunk short", man(func(m map[string]any) {
			annotations(layer(m, 1))[release.AnnotationChunkSize] = strconv.Itoa(chunk - 4096)
		}), release.AnnotationChunkSize},
		{"offset with a leading zero", man(func(m map[string]any) {
			annotations(layer(m, 0))[release.AnnotationChunkOffset] = "00"
		}), "leading zero"},
		{"offset not a number", man(func(m map[string]any) {
			annotations(layer(m, 1))[release.AnnotationChunkOffset] = "+65536"
		}), release.AnnotationChunkOffset},
		{"missing chunk digest", man(func(m map[string]any) {
			delete(annotations(layer(m, 2)), release.AnnotationChunkDigest)
		}), release.AnnotationChunkDigest},
		{"missing annotations", man(func(m map[string]any) { delete(layer(m, 0), "annotations") }), release.AnnotationChunkOffset},
		{"compressed size absurd", man(func(m map[string]any) { layer(m, 0)["size"] = 1 << 30 }), "too large"},
		{"foreign layer URLs", man(func(m map[string]any) {
			layer(m, 0)["urls"] = []string{"https://example.com/x"}
		}), "urls"},
		{"unknown layer type", man(func(m map[string]any) {
			layer(m, 5)["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
		}), "layers[5].mediaType"},
		{"no kernel", man(func(m map[string]any) { m["layers"] = layers(m)[:5] }), "kernel"},
		{"two kernels", man(func(m map[string]any) { m["layers"] = append(layers(m), layer(m, 5)) }), "kernel"},
		{"unknown manifest field", man(func(m map[string]any) { m["extra"] = true }), "unknown field"},
		{"config blob not the one named", func() ([]byte, []byte) {
			return f.manifest, bytes.Replace(f.config, []byte(`"1.2.3"`), []byte(`"1.2.4"`), 1)
		}, "digest mismatch"},
		{"config data_blocks inconsistent", cfg(func(c map[string]any) { ver(c)["data_blocks"] = 3 }), "data_blocks"},
		{"config hash_offset elsewhere", cfg(func(c map[string]any) { ver(c)["hash_offset"] = 0 }), "hash_offset"},
		{"config algorithm", cfg(func(c map[string]any) { ver(c)["algorithm"] = "sha1" }), "algorithm"},
		{"config block size", cfg(func(c map[string]any) { ver(c)["data_block_size"] = 512 }), "data_block_size"},
		{"config root hash short", cfg(func(c map[string]any) { ver(c)["root_hash"] = "abcd" }), "root_hash"},
		{"config salt not hex", cfg(func(c map[string]any) { ver(c)["salt"] = "xyz" }), "salt"},
		{"config size differs from chunks", cfg(func(c map[string]any) {
			root(c)["size"] = 4*chunk + 8192
			ver(c)["data_blocks"] = (4*chunk + 8192) / 4096
			ver(c)["hash_offset"] = 4*chunk + 8192
		}), "root.size"},
		{"config kernel differs from layer", cfg(func(c map[string]any) {
			c["kernel"].(map[string]any)["size"] = 7
		}), "kernel"},
		{"config without initrd but layer present", cfg(func(c map[string]any) { delete(c, "initrd") }), "initrd"},
		{"config created with fractions", cfg(func(c map[string]any) { c["created"] = "2025-03-01T12:00:00.5Z" }), "created"},
		{"config unknown field", cfg(func(c map[string]any) { c["rollout"] = "fast" }), "unknown field"},
		{"config version empty", cfg(func(c map[string]any) { c["version"] = "" }), "version"},
		{"config cmdline two lines", cfg(func(c map[string]any) { c["cmdline"] = "a\nb" }), "cmdline"},
		{"trailing data", func() ([]byte, []byte) { return append(append([]byte{}, f.manifest...), "{}"...), f.config }, "trailing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, c := tc.make()
			_, err := release.Parse(m, c)
			if err == nil {
				t.Fatal("Parse accepted it")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
			if !errors.Is(err, release.ErrInvalid) && !errors.Is(err, release.ErrDigestMismatch) {
				t.Fatalf("error %v is neither ErrInvalid nor ErrDigestMismatch", err)
			}
		})
	}
}

// TestSkipUncompressedDigest checks what the option gives up and what it
// keeps: sizes and the compressed digest are still checked.
func TestSkipUncompressedDigest(t *testing.T) {
	const chunk = 64 << 10
	f := newFixture(t, 3*chunk, chunk, false)
	good := blobsOf(t, f.img)
	rel, _ := release.Parse(f.manifest, f.config)
	pointAt := func(blob []byte) (*release.Release, *memFetcher) {
		m := editManifest(t, f.manifest, func(m map[string]any) {
			layer(m, 1)["digest"] = sha(blob)
			layer(m, 1)["size"] = len(blob)
		})
		r, err := release.Parse(m, f.config)
		if err != nil {
			t.Fatal(err)
		}
		blobs := map[string][]byte{sha(blob): blob}
		for k, v := range good {
			blobs[k] = v
		}
		return r, &memFetcher{blobs: blobs}
	}
	other := make([]byte, chunk)
	fillImage(other, 5)
	tests := []struct {
		name  string
		setup func() (*release.Release, *memFetcher)
		want  error // nil: streams without error
	}{
		{"untouched", func() (*release.Release, *memFetcher) { return rel, &memFetcher{blobs: good} }, nil},
		{"tampered compressed blob", func() (*release.Release, *memFetcher) {
			blobs := map[string][]byte{}
			for k, v := range good {
				blobs[k] = v
			}
			d := rel.Chunks[1].Blob.Digest
			b := append([]byte(nil), good[d]...)
			b[5] ^= 1
			blobs[d] = b
			return rel, &memFetcher{blobs: blobs}
		}, release.ErrDigestMismatch},
		{"decompresses too long", func() (*release.Release, *memFetcher) {
			return pointAt(encodeZstd(t, make([]byte, chunk+4096)))
		}, release.ErrSizeMismatch},
		// What the option gives up: a signed blob of other bytes of the
		// right length passes here; the install's verity root check is
		// what catches it.
		{"signed blob of other bytes passes", func() (*release.Release, *memFetcher) {
			return pointAt(encodeZstd(t, other))
		}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, fetcher := tc.setup()
			got, err := readAll(t, r.RootReaderWith(context.Background(), fetcher, release.ReadOptions{SkipUncompressedDigest: true}))
			if tc.want == nil {
				if err != nil || len(got) != len(f.image) {
					t.Fatalf("err %v, %d bytes", err, len(got))
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
}

// TestSkipCompressedDigest checks what streaming without any digest keeps
// (sizes), what it gives up (a tampered blob that still decompresses
// streams through), and that CheckWritten then names the bad chunk.
func TestSkipCompressedDigest(t *testing.T) {
	const chunk = 64 << 10
	f := newFixture(t, 3*chunk, chunk, false)
	// Chunks 0 and 1 random, which Build stores as they are: a flipped
	// byte then streams through as another byte. Chunk 2 compressible,
	// so it is zstd and a broken frame header does not decode.
	crand.Read(f.image[:2*chunk])
	f.opts.RootImage = writeFile(t, f.dir, "mixed.img", f.image)
	f.build(t)
	good := blobsOf(t, f.img)
	rel, _ := release.Parse(f.manifest, f.config)
	if !rel.Chunks[0].Stored || !rel.Chunks[1].Stored || rel.Chunks[2].Stored {
		t.Fatalf("chunk kinds: %+v", rel.Chunks)
	}
	with := func(i int, edit func([]byte) []byte) *memFetcher {
		blobs := map[string][]byte{}
		for k, v := range good {
			blobs[k] = v
		}
		d := rel.Chunks[i].Blob.Digest
		blobs[d] = edit(append([]byte(nil), good[d]...))
		return &memFetcher{blobs: blobs}
	}
	tests := []struct {
		name      string
		fetcher   *memFetcher
		streamErr error // from the stream; nil: streams to the end
		badChunk  int   // chunk CheckWritten names; -1: none
	}{
		{"untouched", &memFetcher{blobs: good}, nil, -1},
		{"tampered stored blob", with(1, func(b []byte) []byte { b[len(b)-10] ^= 1; return b }), nil, 1},
		{"tampered frame header", with(2, func(b []byte) []byte { b[4] ^= 0xff; return b }), release.ErrCorrupt, -1},
		{"stored blob cut short", with(1, func(b []byte) []byte { return b[:len(b)-4096] }), release.ErrSizeMismatch, -1},
		{"blob longer than signed", with(0, func(b []byte) []byte { return append(b, 0) }), release.ErrSizeMismatch, -1},
		{"blob shorter than signed", with(0, func(b []byte) []byte { return b[:len(b)-1] }), release.ErrSizeMismatch, -1},
	}
	// With every check on, a tampered stored blob fails its digest.
	tampered := with(1, func(b []byte) []byte { b[7] ^= 1; return b })
	if _, err := readAll(t, rel.RootReader(context.Background(), tampered)); !errors.Is(err, release.ErrDigestMismatch) {
		t.Fatalf("tampered stored chunk with all checks: %v", err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readAll(t, rel.RootReaderWith(context.Background(), tc.fetcher,
				release.ReadOptions{SkipUncompressedDigest: true, SkipCompressedDigest: true}))
			if tc.streamErr != nil {
				var ce *release.ChunkError
				if !errors.Is(err, tc.streamErr) || !errors.As(err, &ce) {
					t.Fatalf("stream error %v, want a chunk error wrapping %v", err, tc.streamErr)
				}
				return
			}
			if err != nil || len(got) != len(f.image) {
				t.Fatalf("stream: err %v, %d bytes", err, len(got))
			}
			err = rel.CheckWritten(context.Background(), bytes.NewReader(got))
			if tc.badChunk < 0 {
				if err != nil {
					t.Fatalf("CheckWritten: %v", err)
				}
				return
			}
			var ce *release.ChunkError
			if !errors.As(err, &ce) || ce.Index != tc.badChunk || !errors.Is(err, release.ErrDigestMismatch) {
				t.Fatalf("CheckWritten: %v, want chunk %d digest mismatch", err, tc.badChunk)
			}
		})
	}
}

// endless yields bytes forever.
type endless struct{ n int64 }

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(i)
	}
	e.n += int64(len(p))
	return len(p), nil
}
func (e *endless) Close() error { return nil }

func encodeZstd(t testing.TB, data []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	return enc.EncodeAll(data, nil)
}

// TestRootReaderRejects serves a valid release with one chunk misbehaving
// and checks the typed error names that chunk.
func TestRootReaderRejects(t *testing.T) {
	const chunk = 64 << 10
	f := newFixture(t, 4*chunk, chunk, false)
	good := blobsOf(t, f.img)
	rel, err := release.Parse(f.manifest, f.config)
	if err != nil {
		t.Fatal(err)
	}
	const bad = 2 // the chunk that misbehaves
	badDigest := rel.Chunks[bad].Blob.Digest

	// replace re-points chunk bad at blob in a new manifest, as a
	// malicious or broken publisher could.
	replace := func(blob []byte) (*release.Release, map[string][]byte) {
		m := editManifest(t, f.manifest, func(m map[string]any) {
			l := layer(m, bad)
			l["digest"] = sha(blob)
			l["size"] = len(blob)
		})
		r, err := release.Parse(m, f.config)
		if err != nil {
			t.Fatal(err)
		}
		blobs := map[string][]byte{sha(blob): blob}
		for k, v := range good {
			blobs[k] = v
		}
		return r, blobs
	}
	other := make([]byte, chunk)
	fillImage(other, 99)

	tests := []struct {
		name  string
		setup func() (*release.Release, *memFetcher)
		want  error
	}{
		{"tampered compressed blob", func() (*release.Release, *memFetcher) {
			blobs := map[string][]byte{}
			for k, v := range good {
				blobs[k] = v
			}
			b := append([]byte(nil), good[badDigest]...)
			b[len(b)/2] ^= 0x40
			blobs[badDigest] = b
			return rel, &memFetcher{blobs: blobs}
		}, release.ErrDigestMismatch},
		{"valid zstd of other bytes", func() (*release.Release, *memFetcher) {
			r, blobs := replace(encodeZstd(t, other))
			return r, &memFetcher{blobs: blobs}
		}, release.ErrDigestMismatch},
		{"decompresses to more than the chunk", func() (*release.Release, *memFetcher) {
			r, blobs := replace(encodeZstd(t, make([]byte, chunk+4096)))
			return r, &memFetcher{blobs: blobs}
		}, release.ErrSizeMismatch},
		{"decompresses to less than the chunk", func() (*release.Release, *memFetcher) {
			r, blobs := replace(encodeZstd(t, other[:chunk-4096]))
			return r, &memFetcher{blobs: blobs}
		}, release.ErrSizeMismatch},
		{"not zstd at all", func() (*release.Release, *memFetcher) {
			r, blobs := replace(bytes.Repeat([]byte("junk"), 1000))
			return r, &memFetcher{blobs: blobs}
		}, release.ErrCorrupt},
		{"trailing garbage after the frame", func() (*release.Release, *memFetcher) {
			r, blobs := replace(append(encodeZstd(t, f.image[bad*chunk:(bad+1)*chunk]), "garbage!"...))
			return r, &memFetcher{blobs: blobs}
		}, release.ErrCorrupt},
		{"endless data", func() (*release.Release, *memFetcher) {
			return rel, &memFetcher{blobs: good, serve: func(d string, data []byte) (io.ReadCloser, error) {
				if d == badDigest {
					return &endless{}, nil
				}
				return io.NopCloser(bytes.NewReader(data)), nil
			}}
		}, release.ErrSizeMismatch},
		{"blob cut short", func() (*release.Release, *memFetcher) {
			return rel, &memFetcher{blobs: good, serve: func(d string, data []byte) (io.ReadCloser, error) {
				if d == badDigest {
					data = data[:len(data)-10]
				}
				return io.NopCloser(bytes.NewReader(data)), nil
			}}
		}, release.ErrSizeMismatch},
		{"missing chunk blob", func() (*release.Release, *memFetcher) {
			blobs := map[string][]byte{}
			for k, v := range good {
				if k != badDigest {
					blobs[k] = v
				}
			}
			return rel, &memFetcher{blobs: blobs}
		}, oci.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, fetcher := tc.setup()
			got, err := readAll(t, r.RootReader(context.Background(), fetcher))
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			var ce *release.ChunkError
			if !errors.As(err, &ce) || ce.Index != bad || ce.Offset != bad*chunk {
				t.Fatalf("error %v does not name chunk %d at offset %d", err, bad, bad*chunk)
			}
			if !strings.Contains(err.Error(), "chunk 2 (offset 131072") {
				t.Errorf("message %q does not name the chunk", err)
			}
			// The good chunks before it came through intact.
			if int64(len(got)) > int64(bad+1)*chunk || !bytes.Equal(got[:min(len(got), bad*chunk)], f.image[:min(len(got), bad*chunk)]) {
				t.Errorf("got %d bytes before the error, not a prefix of the image", len(got))
			}
		})
	}
}

// TestRootReaderEndlessDataBoundedMemory serves an infinite stream for a
// large chunk and checks the reader fails having read one byte past the
// signed size, without its memory growing with the stream.
func TestRootReaderEndlessDataBoundedMemory(t *testing.T) {
	const chunk = 1 << 20
	f := newFixture(t, chunk, chunk, false)
	rel, err := release.Parse(f.manifest, f.config)
	if err != nil {
		t.Fatal(err)
	}
	src := &endless{}
	fetcher := &memFetcher{serve: func(string, []byte) (io.ReadCloser, error) { return src, nil }}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = readAll(t, rel.RootReader(context.Background(), fetcher))
	runtime.ReadMemStats(&after)
	if !errors.Is(err, release.ErrSizeMismatch) && !errors.Is(err, release.ErrCorrupt) {
		t.Fatalf("error %v, want a size mismatch or corrupt data", err)
	}
	if limit := rel.Chunks[0].Blob.Size + 1; src.n > limit+256<<10 {
		t.Errorf("read %d bytes of endless data, the signed size is %d", src.n, limit-1)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
		t.Errorf("allocated %d MiB for one chunk", grew>>20)
	}
}

// blockingFetcher serves blobs that never deliver a byte until ctx ends.
type blockingFetcher struct {
	started chan struct{}
	once    sync.Once
}

func (b *blockingFetcher) Blob(ctx context.Context, digest string, size int64) (io.ReadCloser, error) {
	b.once.Do(func() { close(b.started) }) // the next blob is asked for early
	return &ctxBlockedReader{ctx: ctx}, nil
}

type ctxBlockedReader struct{ ctx context.Context }

func (r *ctxBlockedReader) Read(p []byte) (int, error) {
	<-r.ctx.Done()
	return 0, r.ctx.Err()
}
func (r *ctxBlockedReader) Close() error { return nil }

func TestRootReaderCloseStopsDownload(t *testing.T) {
	f := newFixture(t, 8192, 4096, false)
	rel, err := release.Parse(f.manifest, f.config)
	if err != nil {
		t.Fatal(err)
	}
	bf := &blockingFetcher{started: make(chan struct{})}
	before := runtime.NumGoroutine()
	rc := rel.RootReader(context.Background(), bf)
	<-bf.started
	done := make(chan struct{})
	go func() { rc.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung on a stalled download")
	}
	if _, err := rc.Read(make([]byte, 10)); err == nil {
		t.Error("Read after Close succeeded")
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines after Close, %d before", n, before)
	}
}

func TestRootReaderCancelWhileReading(t *testing.T) {
	f := newFixture(t, 8192, 4096, false)
	rel, _ := release.Parse(f.manifest, f.config)
	for i := range 20 { // the fetcher's last send races with ctx; try both outcomes
		bf := &blockingFetcher{started: make(chan struct{})}
		ctx, cancel := context.WithCancel(context.Background())
		rc := rel.RootReader(ctx, bf)
		errc := make(chan error, 1)
		go func() {
			_, err := rc.Read(make([]byte, 4096))
			errc <- err
		}()
		<-bf.started
		cancel()
		select {
		case err := <-errc:
			if err == nil {
				t.Fatalf("run %d: Read succeeded after cancel", i)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("run %d: Read hung after cancel", i)
		}
		rc.Close()
	}
}

func TestRootReaderCancelledContext(t *testing.T) {
	const chunk = 64 << 10
	f := newFixture(t, 3*chunk, chunk, false)
	rel, _ := release.Parse(f.manifest, f.config)
	ctx, cancel := context.WithCancel(context.Background())
	rc := rel.RootReader(ctx, &memFetcher{blobs: blobsOf(t, f.img)})
	defer rc.Close()
	if _, err := io.ReadFull(rc, make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := io.Copy(io.Discard, rc); err == nil {
		t.Fatal("reading on after cancel succeeded")
	}
}

func TestReadKernelRejects(t *testing.T) {
	f := newFixture(t, 8192, 4096, true)
	rel, _ := release.Parse(f.manifest, f.config)
	good := blobsOf(t, f.img)
	tests := []struct {
		name  string
		serve func(d string, data []byte) (io.ReadCloser, error)
		want  error
	}{
		{"tampered", func(d string, data []byte) (io.ReadCloser, error) {
			b := append([]byte(nil), data...)
			b[0] ^= 1
			return io.NopCloser(bytes.NewReader(b)), nil
		}, release.ErrDigestMismatch},
		{"endless", func(string, []byte) (io.ReadCloser, error) { return &endless{}, nil }, release.ErrSizeMismatch},
		{"short", func(d string, data []byte) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(data[:len(data)-1])), nil
		}, release.ErrSizeMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mf := &memFetcher{blobs: good, serve: tc.serve}
			if _, err := rel.ReadKernel(context.Background(), mf); !errors.Is(err, tc.want) {
				t.Errorf("ReadKernel: %v, want %v", err, tc.want)
			}
			if _, err := rel.ReadInitrd(context.Background(), mf); !errors.Is(err, tc.want) {
				t.Errorf("ReadInitrd: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestChangedFileFailsPush(t *testing.T) {
	const chunk = 64 << 10
	f := newFixture(t, 2*chunk, chunk, false)
	f.image[100] ^= 1
	writeFile(t, f.dir, "root.img", f.image)
	err := release.WriteLayout(t.TempDir(), f.img, "x")
	if !errors.Is(err, release.ErrDigestMismatch) {
		t.Fatalf("WriteLayout after the image changed: %v, want a digest mismatch", err)
	}
}

func TestVerityParamsUnsalted(t *testing.T) {
	f := newFixture(t, 8192, 4096, false)
	f.opts.Salt = []byte{}
	f.build(t)
	p, root := f.cfg.VerityParams()
	if p.Salt == nil || len(p.Salt) != 0 {
		t.Fatalf("salt %v, want empty and non-nil (nil would make the install draw one)", p.Salt)
	}
	want, _, _ := verity.Build(bytes.NewReader(f.image), p, 0)
	if hex.EncodeToString(root) != hex.EncodeToString(want) {
		t.Fatal("root hash differs")
	}
}
