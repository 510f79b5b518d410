package release_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"sealift/internal/kernelimage"
	"sealift/updater/oci"
	"sealift/updater/oci/registrytest"
	"sealift/updater/release"
)

// benchSize is the image size of BenchmarkRootReader, in MiB
// (SEALIFT_BENCH_MB, default 256; the published figure uses 1024).
func benchSize() int64 {
	if v, err := strconv.Atoi(os.Getenv("SEALIFT_BENCH_MB")); err == nil && v > 0 {
		return int64(v) << 20
	}
	return 256 << 20
}

// benchRelease builds a release of a root-filesystem-like image with the
// default chunk size.
func benchRelease(b *testing.B, size int64) (string, *release.BuildOptions) {
	b.Helper()
	dir := b.TempDir()
	data := make([]byte, size)
	fillImage(data, 7)
	o := &release.BuildOptions{
		RootImage: writeFile(b, dir, "root.img", data),
		Kernel:    writeFile(b, dir, "vmlinuz", kernelimage.Synthetic([]byte("kernel"))),
		Version:   "1", Variant: "bench", Arch: "amd64", Salt: testSalt, Created: testCreated,
	}
	return dir, o
}

// BenchmarkRootReader streams a release from a registry on loopback, the
// way an install reads it (4 MiB reads), and reports MB/s of uncompressed
// image. The registry serves from its own process (docker-registry) or
// from memory in this one (in-process).
func BenchmarkRootReader(b *testing.B) {
	size := benchSize()
	dir, o := benchRelease(b, size)
	img, _, err := release.Build(*o)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	servers := []struct {
		name string
		src  func(b *testing.B) oci.Source
	}{
		{"in-process", func(b *testing.B) oci.Source {
			host, _ := registrytest.InProcess(b)
			return pushed(b, img, host)
		}},
		{"docker-registry", func(b *testing.B) oci.Source {
			return pushed(b, img, registrytest.StartRegistry(b))
		}},
		{"layout", func(b *testing.B) oci.Source {
			ld := filepath.Join(dir, "layout")
			if err := release.WriteLayout(ld, img, "bench"); err != nil {
				b.Fatal(err)
			}
			src, err := oci.NewLayout(ld)
			if err != nil {
				b.Fatal(err)
			}
			return src
		}},
	}
	manifest, _ := img.RawManifest()
	modes := []struct {
		name     string
		o        release.ReadOptions
		parallel bool // StreamRoot, as an update reads, instead of RootReader
	}{
		{"all-digests", release.ReadOptions{}, false},
		{"skip-uncompressed-digest", release.ReadOptions{SkipUncompressedDigest: true}, false},
		{"parallel-no-digests", release.ReadOptions{SkipUncompressedDigest: true, SkipCompressedDigest: true}, true},
	}
	for _, s := range servers {
		b.Run(s.name, func(b *testing.B) {
			src := s.src(b)
			rel, err := release.Fetch(ctx, manifest, src)
			if err != nil {
				b.Fatal(err)
			}
			for _, m := range modes {
				b.Run(m.name, func(b *testing.B) {
					buf := make([]byte, 4<<20)
					b.SetBytes(size)
					b.ReportAllocs()
					before := cpuTime()
					for b.Loop() {
						var n int64
						var err error
						if m.parallel {
							n, err = streamDiscard(ctx, rel, src, m.o)
						} else {
							rc := rel.RootReaderWith(ctx, src, m.o)
							n, err = io.CopyBuffer(io.Discard, onlyReader{rc}, buf)
							rc.Close()
						}
						if err != nil || n != size {
							b.Fatalf("streamed %d bytes: %v", n, err)
						}
					}
					// CPU time is steadier than wall time on a shared
					// machine, and it is what competes with the install's
					// own hashing on 2 cores. It includes the in-process
					// registry's share where there is one.
					gib := float64(size) * float64(b.N) / (1 << 30)
					b.ReportMetric((cpuTime()-before).Seconds()/gib, "cpu-s/GiB")
				})
			}
		})
	}
}

// streamDiscard runs StreamRoot into a pool of 4 MiB buffers, as the
// install pipeline does, and counts the bytes.
func streamDiscard(ctx context.Context, rel *release.Release, src oci.Source, o release.ReadOptions) (int64, error) {
	free := make(chan []byte, 8)
	for range 8 {
		free <- make([]byte, 4<<20)
	}
	var n atomic.Int64
	err := rel.StreamRoot(ctx, src, o,
		func(ctx context.Context) ([]byte, error) { return <-free, nil },
		func(buf []byte, _ int64, k int) error {
			n.Add(int64(k))
			free <- buf[:cap(buf)]
			return nil
		})
	return n.Load(), err
}

// cpuTime is the user and system CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// onlyReader hides WriterTo/ReaderFrom so io.CopyBuffer uses the buffer,
// as the install pipeline's fixed reads do.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func pushed(b *testing.B, img v1.Image, host string) oci.Source {
	b.Helper()
	o := oci.RegistryOptions{Repository: host + "/os/node", Insecure: true}
	pub, err := oci.NewRegistryPublisher(o)
	if err != nil {
		b.Fatal(err)
	}
	if _, _, err := pub.PushImage(context.Background(), img, "bench"); err != nil {
		b.Fatal(err)
	}
	src, err := oci.NewRegistry(o)
	if err != nil {
		b.Fatal(err)
	}
	return src
}

// BenchmarkBuild measures the publisher side: verity tree plus parallel
// chunk compression of a root-filesystem-like image (SEALIFT_BENCH_MB).
func BenchmarkBuild(b *testing.B) {
	size := benchSize()
	_, o := benchRelease(b, size)
	b.SetBytes(size)
	before := cpuTime()
	for b.Loop() {
		o.Created = o.Created.Add(time.Second) // a new release each time
		if _, _, err := release.Build(*o); err != nil {
			b.Fatal(err)
		}
	}
	gib := float64(size) * float64(b.N) / (1 << 30)
	b.ReportMetric((cpuTime()-before).Seconds()/gib, "cpu-s/GiB")
}
