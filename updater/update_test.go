package updater

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"sealift/bootloader"
	"sealift/internal/kernelimage"
	"sealift/signing"
	"sealift/updater/oci"
	"sealift/updater/release"
)

// fakeClock is the publisher's and the node's clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// channel is a publisher (TUF repo + OCI layout standing in for a
// registry) and the node that updates from it.
type channel struct {
	t      *testing.T
	clock  *fakeClock
	repo   *signing.Repo
	layout string
	pub    *oci.LayoutPublisher
	node   *rig
	cache  string
	images map[string][]byte
}

const testVariant, testArch = "k8s", "x86_64"

func newChannel(t *testing.T) *channel {
	t.Helper()
	c := &channel{t: t, clock: &fakeClock{t: time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)}, images: map[string][]byte{}}
	var err error
	c.repo, err = signing.InitRepo(filepath.Join(t.TempDir(), "tuf"), signing.InitOptions{Now: c.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	c.layout = filepath.Join(t.TempDir(), "layout")
	if c.pub, err = oci.NewLayoutPublisher(c.layout); err != nil {
		t.Fatal(err)
	}
	c.node = newRig(t, backends[1].make) // grubenv
	c.cache = filepath.Join(t.TempDir(), "tuf-cache")
	return c
}

// build builds a release of a small generated root image.
func (c *channel) build(version, variant, arch string) (*release.Config, func() error) {
	c.t.Helper()
	im, cfg := c.buildImage(version, variant, arch)
	return cfg, func() error {
		_, err := PublishRelease(context.Background(), c.pub, c.repo, im, cfg)
		return err
	}
}

// buildImage builds a release without publishing it. Each build of a
// version has other bytes (a random verity salt) but the same root image.
func (c *channel) buildImage(version, variant, arch string) (v1.Image, *release.Config) {
	c.t.Helper()
	dir := c.t.TempDir()
	img := image(int64(len(version))*7919+int64(version[len(version)-1]), 40*4096)
	c.images[version] = img
	kernel := kernelimage.Synthetic([]byte("kernel " + version))
	if arch == "aarch64" {
		kernel = kernelimage.SyntheticARM64([]byte("kernel " + version))
	}
	files := map[string][]byte{"root.img": img, "vmlinuz": kernel, "initrd.img": []byte("initrd " + version)}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
			c.t.Fatal(err)
		}
	}
	im, cfg, err := release.Build(release.BuildOptions{
		RootImage: filepath.Join(dir, "root.img"), Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd.img"),
		Cmdline: "console=ttyS0", Version: version, Variant: variant, Arch: arch, ChunkSize: 16 * 4096, Created: c.clock.Now(),
	})
	if err != nil {
		c.t.Fatal(err)
	}
	return im, cfg
}

func (c *channel) publish(version string) {
	c.t.Helper()
	_, push := c.build(version, testVariant, testArch)
	if err := push(); err != nil {
		c.t.Fatal(err)
	}
}

// trust is the node's TUF client reading the layout, as a node would.
func (c *channel) trust() (Trust, release.BlobFetcher) {
	c.t.Helper()
	src, err := oci.NewLayout(c.layout)
	if err != nil {
		c.t.Fatal(err)
	}
	root, err := os.ReadFile(filepath.Join(c.repo.Dir(), "metadata", "1.root.json"))
	if err != nil {
		c.t.Fatal(err)
	}
	cl, err := signing.NewClient(signing.ClientOptions{
		TrustedRoot: root, CacheDir: c.cache, Fetcher: oci.TUFFetcher(src),
		MetadataBaseURL: "oci", TargetBaseURL: "oci/targets", Now: c.clock.Now,
	})
	if err != nil {
		c.t.Fatal(err)
	}
	return cl, src
}

func (c *channel) update(o CheckOptions) (*InstallResult, error) {
	trust, blobs := c.trust()
	if o.Variant == "" {
		o.Variant, o.Arch = testVariant, testArch
	}
	_, ir, err := c.node.u.Update(context.Background(), trust, blobs, UpdateOptions{CheckOptions: o})
	return ir, err
}

// goodV1 leaves the node running v1 from slot A, marked good.
func (c *channel) goodV1() {
	c.t.Helper()
	c.publish("1.0.0")
	ir, err := c.update(CheckOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	if ir.Slot != bootloader.SlotA || ir.Record.ManifestDigest == "" {
		c.t.Fatalf("v1: %+v", ir)
	}
	mustBoot(c.t, c.node.u, bootloader.SlotA, true)
	if _, err := c.node.u.MarkGood(); err != nil {
		c.t.Fatal(err)
	}
}

// unchanged asserts that a rejected update left the node as it was.
func (c *channel) unchanged() {
	c.t.Helper()
	flags, err := c.node.boot.Load()
	if err != nil {
		c.t.Fatal(err)
	}
	if d := c.node.boot.Simulate(flags); d.Slot != bootloader.SlotA || d.Trial {
		c.t.Fatalf("next boot %v, want good slot A", d)
	}
	if !bytes.Equal(c.node.disk.slots[bootloader.SlotA].data[:len(c.images["1.0.0"])], c.images["1.0.0"]) {
		c.t.Fatal("slot A changed")
	}
	st, _ := c.node.store.Load()
	if st.Slots[bootloader.SlotA] == nil || st.Slots[bootloader.SlotA].Version != "1.0.0" {
		c.t.Fatalf("slot A record: %+v", st.Slots[bootloader.SlotA])
	}
}

// blobPath is where a layout keeps a blob.
func (c *channel) blobPath(digest string) string {
	return filepath.Join(c.layout, "blobs", "sha256", strings.TrimPrefix(digest, "sha256:"))
}

// released parses a published release back from the layout.
func (c *channel) released(version string) *release.Release {
	c.t.Helper()
	src, _ := oci.NewLayout(c.layout)
	m, err := src.Manifest(context.Background(), version, 1<<20)
	if err != nil {
		c.t.Fatal(err)
	}
	r, err := release.Fetch(context.Background(), m, src)
	if err != nil {
		c.t.Fatal(err)
	}
	return r
}

// flip overwrites a blob with same-length different bytes.
func (c *channel) flip(digest string) {
	c.t.Helper()
	c.flipAt(digest, -1)
}

// flipAt inverts byte i of a blob (-1: the middle one).
func (c *channel) flipAt(digest string, i int) {
	c.t.Helper()
	p := c.blobPath(digest)
	b, err := os.ReadFile(p)
	if err != nil {
		c.t.Fatal(err)
	}
	if i < 0 {
		i = len(b) / 2
	}
	b[i] ^= 0xff
	os.Chmod(p, 0o644)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		c.t.Fatal(err)
	}
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", from, to).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
}

func TestUpdateHappyPath(t *testing.T) {
	c := newChannel(t)
	c.goodV1()
	c.publish("1.1.0")
	ir, err := c.update(CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ir.Slot != bootloader.SlotB || ir.Next.Slot != bootloader.SlotB || ir.Record.Version != "1.1.0" {
		t.Fatalf("%+v", ir)
	}
	if !bytes.Equal(c.node.disk.slots[bootloader.SlotB].data[:len(c.images["1.1.0"])], c.images["1.1.0"]) {
		t.Fatal("slot B does not hold the release")
	}
	// Nothing newer: no release to take.
	mustBoot(t, c.node.u, bootloader.SlotB, true)
	if _, err := c.node.u.MarkGood(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.update(CheckOptions{}); !errors.Is(err, ErrNoRelease) || !strings.Contains(err.Error(), "up to date") {
		t.Fatalf("second update: %v", err)
	}
}

// TestUpdateAttacks: every attack and bad input is rejected before the
// flip, with a message naming the problem, and leaves the node as it was.
func TestUpdateAttacks(t *testing.T) {
	cases := []struct {
		name   string
		attack func(c *channel) CheckOptions
		is     error  // errors.Is target, or nil
		msg    string // substring of the error
	}{
		{"tampered chunk", func(c *channel) CheckOptions {
			c.publish("1.1.0")
			c.flip(c.released("1.1.0").Chunks[1].Blob.Digest)
			return CheckOptions{}
		}, ErrVerify, "chunk 1"},
		{"tampered chunk header (does not decompress)", func(c *channel) CheckOptions {
			c.publish("1.1.0")
			c.flipAt(c.released("1.1.0").Chunks[1].Blob.Digest, 4)
			return CheckOptions{}
		}, ErrVerify, "chunk 1"},
		{"tampered config", func(c *channel) CheckOptions {
			c.publish("1.1.0")
			c.flip(c.released("1.1.0").ConfigBlob.Digest)
			return CheckOptions{}
		}, ErrVerify, "config"},
		{"tampered manifest", func(c *channel) CheckOptions {
			c.publish("1.1.0")
			c.flip(c.released("1.1.0").ManifestDigest)
			return CheckOptions{}
		}, nil, "release manifest"},
		{"endless chunk data", func(c *channel) CheckOptions {
			c.publish("1.1.0")
			p := c.blobPath(c.released("1.1.0").Chunks[0].Blob.Digest)
			f, _ := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			f.Write(bytes.Repeat([]byte{0}, 1<<20))
			f.Close()
			return CheckOptions{}
		}, ErrVerify, "chunk 0"},
		{"signed by an unknown key", func(c *channel) CheckOptions {
			// An attacker's own repository served in place of the real one.
			evil, err := signing.InitRepo(filepath.Join(t.TempDir(), "evil"), signing.InitOptions{Now: c.clock.Now})
			if err != nil {
				t.Fatal(err)
			}
			c.repo = evil
			c.publish("1.1.0")
			return CheckOptions{}
		}, signing.ErrSignature, "signed metadata"},
		{"expired timestamp (freeze)", func(c *channel) CheckOptions {
			c.publish("1.1.0")
			c.clock.Add(25 * time.Hour)
			return CheckOptions{}
		}, signing.ErrExpired, "expired"},
		{"metadata rollback across runs", func(c *channel) CheckOptions {
			old := filepath.Join(t.TempDir(), "old")
			copyDir(t, c.layout, old)
			c.publish("1.1.0")
			if _, err := c.update(CheckOptions{}); err != nil { // the node saw the new metadata
				t.Fatal(err)
			}
			if _, err := c.node.u.Cancel(Actor{}); err != nil {
				t.Fatal(err)
			}
			os.RemoveAll(c.layout)
			copyDir(t, old, c.layout)
			return CheckOptions{}
		}, signing.ErrRollback, "rollback"},
		{"downgrade refused", func(c *channel) CheckOptions {
			// The registry offers only an older release than the running one.
			os.RemoveAll(c.layout)
			c.pub, _ = oci.NewLayoutPublisher(c.layout)
			c.repo.RemoveTarget(TargetName(testVariant, testArch, "1.0.0"))
			c.publish("0.9.0")
			return CheckOptions{}
		}, ErrNoRelease, "not downgrading"},
		{"wrong variant", func(c *channel) CheckOptions {
			_, push := c.build("1.1.0", "gpu", testArch)
			if err := push(); err != nil {
				t.Fatal(err)
			}
			return CheckOptions{}
		}, ErrNoRelease, "up to date"},
		{"wrong arch", func(c *channel) CheckOptions {
			_, push := c.build("1.1.0", testVariant, "aarch64")
			if err := push(); err != nil {
				t.Fatal(err)
			}
			return CheckOptions{}
		}, ErrNoRelease, "up to date"},
		{"release config disagrees with signed metadata", func(c *channel) CheckOptions {
			// A gpu build signed under the k8s name: the target metadata says
			// k8s, the artifact's own config says gpu.
			cfg, push := c.build("1.1.0", "gpu", testArch)
			if err := push(); err != nil {
				t.Fatal(err)
			}
			ts, _ := c.repo.Targets()
			gpu := ts[TargetName("gpu", testArch, cfg.Version)]
			m, _ := os.ReadFile(c.blobPath("sha256:" + gpu.SHA256))
			if err := c.repo.AddTarget(TargetName(testVariant, testArch, "1.1.0"), m,
				[]byte(`{"version":"1.1.0","variant":"k8s","arch":"x86_64"}`)); err != nil {
				t.Fatal(err)
			}
			if err := PushMetadata(context.Background(), c.pub, c.repo); err != nil {
				t.Fatal(err)
			}
			return CheckOptions{}
		}, ErrVerify, "release config says"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newChannel(t)
			c.goodV1()
			o := tc.attack(c)
			_, err := c.update(o)
			if err == nil {
				t.Fatal("update succeeded")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("error %v is not %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %q does not mention %q", err, tc.msg)
			}
			t.Logf("rejected: %v", err)
			c.unchanged()
		})
	}
}

func TestUpdateDowngradeAndRecall(t *testing.T) {
	c := newChannel(t)
	c.goodV1()
	c.publish("1.1.0")
	if _, err := c.update(CheckOptions{}); err != nil {
		t.Fatal(err)
	}
	mustBoot(t, c.node.u, bootloader.SlotB, true)
	if _, err := c.node.u.MarkGood(); err != nil {
		t.Fatal(err)
	}
	// Recalling the running 1.1.0 sends the node back to 1.0.0.
	if err := SetRecalled(context.Background(), c.pub, c.repo, TargetName(testVariant, testArch, "1.1.0"), true); err != nil {
		t.Fatal(err)
	}
	ir, err := c.update(CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ir.Record.Version != "1.0.0" || ir.Slot != bootloader.SlotA {
		t.Fatalf("after recall: %+v", ir)
	}
}

func TestUpdateAfterKeyRotation(t *testing.T) {
	for _, role := range []signing.Role{signing.RoleRoot, signing.RoleTargets, signing.RoleSnapshot, signing.RoleTimestamp} {
		t.Run(string(role), func(t *testing.T) {
			c := newChannel(t)
			c.goodV1()
			if err := c.repo.RotateKeys(role, 2, 2); err != nil {
				t.Fatal(err)
			}
			c.publish("1.1.0")
			if _, err := c.update(CheckOptions{}); err != nil {
				t.Fatalf("update after rotating %s: %v", role, err)
			}
		})
	}
}
