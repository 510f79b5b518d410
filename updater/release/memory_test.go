package release_test

import (
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"sealift/internal/kernelimage"
	"sealift/updater/oci"
	"sealift/updater/oci/registrytest"
	"sealift/updater/release"
)

// childEnv makes the test binary, run again by TestRootReaderPeakRSS,
// stream one release and exit.
const childEnv = "SEALIFT_RELEASE_MEMORY_CHILD"

// TestRootReaderPeakRSS streams a 256 MiB release (half random, half
// compressible) from a registry in this process into /dev/null in a child
// process with four StreamRoot workers, and checks the child's peak RSS:
// memory must not grow with the image or the chunk size (32 MiB here).
func TestRootReaderPeakRSS(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		streamChild(t)
		return
	}
	if testing.Short() {
		t.Skip("builds a 256 MiB release")
	}
	const size = 256 << 20
	dir := t.TempDir()
	data := make([]byte, size)
	fillImage(data[:size/2], 3)
	rand.Read(data[size/2:])
	img, _, err := release.Build(release.BuildOptions{
		RootImage: writeFile(t, dir, "root.img", data),
		Kernel:    writeFile(t, dir, "vmlinuz", kernelimage.Synthetic([]byte("kernel"))),
		Version:   "1", Variant: "mem", Arch: "amd64", Salt: testSalt, Created: testCreated,
	})
	if err != nil {
		t.Fatal(err)
	}
	data = nil
	host, _ := registrytest.InProcess(t)
	o := oci.RegistryOptions{Repository: host + "/os/node", Insecure: true}
	pub, err := oci.NewRegistryPublisher(o)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := pub.PushImage(context.Background(), img, "mem"); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestRootReaderPeakRSS$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"="+o.Repository)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	// The child reports its own VmHWM: getrusage's ru_maxrss of a child
	// also counts the parent's memory, which the child shares between
	// vfork and exec (here: the registry's copy of every blob).
	m := regexp.MustCompile(`VmHWM:\s+(\d+) kB`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("child printed no VmHWM:\n%s", out)
	}
	kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
	rss := kb << 10
	t.Logf("child peak RSS %d MiB streaming %d MiB", rss>>20, size>>20)
	if rss > 128<<20 {
		t.Errorf("peak RSS %d MiB, want < 128 MiB", rss>>20)
	}
}

func streamChild(t *testing.T) {
	ctx := context.Background()
	src, err := oci.NewRegistry(oci.RegistryOptions{Repository: os.Getenv(childEnv), Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	m, err := src.Manifest(ctx, "mem", release.MaxManifestSize)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := release.Fetch(ctx, m, src)
	if err != nil {
		t.Fatal(err)
	}
	// As an update streams: chunks decoded in parallel into a pool of
	// 4 MiB buffers, everything checked.
	n, err := streamDiscard(ctx, rel, src, release.ReadOptions{Workers: 4})
	if err != nil || n != rel.Config.Root.Size {
		t.Fatalf("streamed %d bytes: %v", n, err)
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			t.Log(line)
		}
	}
}
