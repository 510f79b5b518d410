package updater

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"sealift/bootloader"
	"sealift/internal/kernelimage"
	"sealift/signing"
	"sealift/updater/oci"
	"sealift/updater/oci/registrytest"
	"sealift/updater/release"
	"sealift/updater/rollout"
)

// countingPublisher counts what reaches the registry.
type countingPublisher struct {
	oci.Publisher
	pushes int
	// onPushImage, when set, runs before each image push.
	onPushImage func(tag string)
}

func (p *countingPublisher) PushImage(ctx context.Context, img v1.Image, tag string) (string, []byte, error) {
	p.pushes++
	if p.onPushImage != nil {
		p.onPushImage(tag)
	}
	return p.Publisher.PushImage(ctx, img, tag)
}

func (p *countingPublisher) PushFile(ctx context.Context, tag string, data []byte, mediaType string) error {
	p.pushes++
	return p.Publisher.PushFile(ctx, tag, data, mediaType)
}

// sealedRelease builds version reproducibly: the same salt gives the same
// manifest, another salt other bytes of the same version.
func sealedRelease(t *testing.T, version string, salt byte) (v1.Image, *release.Config) {
	t.Helper()
	dir := t.TempDir()
	files := map[string][]byte{"root.img": image(42, 16*4096), "vmlinuz": kernelimage.Synthetic([]byte("kernel " + version))}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	im, cfg, err := release.Build(release.BuildOptions{
		RootImage: filepath.Join(dir, "root.img"), Kernel: filepath.Join(dir, "vmlinuz"), Version: version,
		Variant: testVariant, Arch: testArch, ChunkSize: 4 * 4096, Salt: bytes.Repeat([]byte{salt}, 32),
		Created: time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC),
	})
	if err != nil {
		t.Fatal(err)
	}
	return im, cfg
}

func manifestDigest(t *testing.T, im v1.Image) string {
	t.Helper()
	raw, err := im.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("sha256:%x", sha256.Sum256(raw))
}

// TestPublishSameVersionAgain: publishing a published version again with
// the same bytes changes nothing and succeeds; with other bytes it is
// refused before anything is pushed or signed, unless Replace.
func TestPublishSameVersionAgain(t *testing.T) {
	const version = "1.1.0"
	target := TargetName(testVariant, testArch, version)
	first, cfg := sealedRelease(t, version, 1)
	other, _ := sealedRelease(t, version, 2)
	d1, d2 := manifestDigest(t, first), manifestDigest(t, other)
	if d1 == d2 {
		t.Fatal("two salts gave one manifest")
	}
	start := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	signedPlan, otherPlan := rollout.Default(start), rollout.Default(start.Add(time.Hour))

	cases := []struct {
		name    string
		img     v1.Image
		o       PublishOptions
		wantErr error
		// What the target is signed as afterwards, and whether the
		// metadata was re-signed.
		wantDigest   string
		wantResigned bool
		wantAlready  bool
		wantReplaced string
	}{
		{"same bytes", first, PublishOptions{}, nil, d1, false, true, ""},
		{"same bytes, another plan", first, PublishOptions{Rollout: &otherPlan}, nil, d1, false, true, ""},
		{"same bytes, replace", first, PublishOptions{Replace: true}, nil, d1, false, true, ""},
		{"other bytes", other, PublishOptions{}, ErrAlreadyPublished, d1, false, false, ""},
		{"other bytes, another plan", other, PublishOptions{Rollout: &otherPlan}, ErrAlreadyPublished, d1, false, false, ""},
		{"other bytes, replace", other, PublishOptions{Replace: true}, nil, d2, true, false, d1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			host, _ := registrytest.InProcess(t)
			ro := oci.RegistryOptions{Repository: host + "/os/node", Insecure: true}
			rp, err := oci.NewRegistryPublisher(ro)
			if err != nil {
				t.Fatal(err)
			}
			src, err := oci.NewRegistry(ro)
			if err != nil {
				t.Fatal(err)
			}
			repo, err := signing.InitRepo(filepath.Join(t.TempDir(), "tuf"), signing.InitOptions{})
			if err != nil {
				t.Fatal(err)
			}
			pub := &countingPublisher{Publisher: rp}
			if _, err := PublishReleaseWith(ctx, pub, repo, first, cfg, PublishOptions{Rollout: &signedPlan}); err != nil {
				t.Fatal(err)
			}
			// tagged is what the registry serves under tag.
			tagged := func(tag string) []byte {
				t.Helper()
				m, err := src.Manifest(ctx, tag, 1<<20)
				if err != nil {
					t.Fatal(err)
				}
				return m
			}
			filesBefore, _ := repo.Files()
			timestampBefore := tagged("timestamp.json")
			pub.pushes = 0

			res, err := PublishReleaseWith(ctx, pub, repo, tc.img, cfg, tc.o)

			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("publish: %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr != nil {
				var pe *PublishedError
				if !errors.As(err, &pe) || pe.Version != version || pe.Target != target || pe.Published != d1 || pe.New != d2 || pe.Raced {
					t.Fatalf("error %#v", err)
				}
				for _, want := range []string{version, d1, d2} {
					if !strings.Contains(err.Error(), want) {
						t.Fatalf("error %q does not name %s", err, want)
					}
				}
				if !errors.Is(err, ErrBadInput) {
					t.Fatalf("error %v is not ErrBadInput (exit code 3)", err)
				}
				if pub.pushes != 0 {
					t.Fatalf("a refused publish pushed %d times", pub.pushes)
				}
			} else if res.Digest != tc.wantDigest || res.AlreadyPublished != tc.wantAlready || res.Replaced != tc.wantReplaced || res.Target != target {
				t.Fatalf("result %+v", res)
			}

			ts, err := repo.Targets()
			if err != nil {
				t.Fatal(err)
			}
			if got := "sha256:" + ts[target].SHA256; got != tc.wantDigest {
				t.Fatalf("signed %s, want %s", got, tc.wantDigest)
			}
			if got := fmt.Sprintf("sha256:%x", sha256.Sum256(tagged(version))); got != tc.wantDigest {
				t.Fatalf("tag %s names %s, want %s", version, got, tc.wantDigest)
			}
			filesAfter, _ := repo.Files()
			if resigned := string(filesBefore["timestamp.json"]) != string(filesAfter["timestamp.json"]); resigned != tc.wantResigned {
				t.Fatalf("metadata re-signed: %v, want %v", resigned, tc.wantResigned)
			}
			if pushed := !bytes.Equal(timestampBefore, tagged("timestamp.json")); pushed != tc.wantResigned {
				t.Fatalf("new timestamp in the registry: %v, want %v", pushed, tc.wantResigned)
			}
			// The signed plan is the first publish's but after a replace.
			m, err := ReleaseInfo(repo, target)
			if err != nil {
				t.Fatal(err)
			}
			wantPlan := &signedPlan
			if tc.wantResigned {
				wantPlan = tc.o.Rollout
			}
			if fmt.Sprint(m.Rollout) != fmt.Sprint(wantPlan) {
				t.Fatalf("signed plan %v, want %v", m.Rollout, wantPlan)
			}
			if res != nil && fmt.Sprint(res.Meta.Rollout) != fmt.Sprint(wantPlan) {
				t.Fatalf("result plan %v, want %v", res.Meta.Rollout, wantPlan)
			}
		})
	}
}

// TestPublishRaceLost: another publisher signs the version with other
// bytes between this publish's check and its signing; the signed target
// is still not replaced.
func TestPublishRaceLost(t *testing.T) {
	first, cfg := sealedRelease(t, "1.1.0", 1)
	other, _ := sealedRelease(t, "1.1.0", 2)
	otherRaw, _ := other.RawManifest()
	target := TargetName(testVariant, testArch, "1.1.0")
	repo, err := signing.InitRepo(filepath.Join(t.TempDir(), "tuf"), signing.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lp, err := oci.NewLayoutPublisher(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pub := &countingPublisher{Publisher: lp, onPushImage: func(tag string) {
		if tag == "1.1.0" {
			if err := repo.AddTarget(target, otherRaw, []byte(`{"version":"1.1.0","variant":"k8s","arch":"x86_64"}`)); err != nil {
				t.Fatal(err)
			}
		}
	}}
	_, err = PublishRelease(context.Background(), pub, repo, first, cfg)
	var pe *PublishedError
	if !errors.As(err, &pe) || !pe.Raced || pe.Published != manifestDigest(t, other) || pe.New != manifestDigest(t, first) || !errors.Is(err, ErrAlreadyPublished) {
		t.Fatalf("publish: %v", err)
	}
	if ts, _ := repo.Targets(); "sha256:"+ts[target].SHA256 != manifestDigest(t, other) {
		t.Fatalf("the other publisher's release was replaced: %+v", ts[target])
	}
}

// TestPublishSameBytesCompletesInterrupted: a publish that signed but
// died before pushing the metadata is completed by publishing again,
// without signing again.
func TestPublishSameBytesCompletesInterrupted(t *testing.T) {
	c := newChannel(t)
	c.goodV1()
	im, cfg := c.buildImage("1.1.0", testVariant, testArch)
	raw, _ := im.RawManifest()
	meta := []byte(`{"version":"1.1.0","variant":"k8s","arch":"x86_64"}`)
	if err := c.repo.AddTarget(TargetName(testVariant, testArch, "1.1.0"), raw, meta); err != nil {
		t.Fatal(err)
	}
	files, _ := c.repo.Files()
	res, err := PublishRelease(context.Background(), c.pub, c.repo, im, cfg)
	if err != nil || !res.AlreadyPublished {
		t.Fatalf("publish: %+v, %v", res, err)
	}
	if after, _ := c.repo.Files(); string(after["timestamp.json"]) != string(files["timestamp.json"]) {
		t.Fatal("re-signed")
	}
	if ir, err := c.update(CheckOptions{}); err != nil || ir.Record.Version != "1.1.0" {
		t.Fatalf("update: %+v, %v", ir, err)
	}
}

// frozenTrust is a node's TUF client between its refresh and its
// downloads: it refreshes no more.
type frozenTrust struct{ Trust }

func (frozenTrust) Refresh() error { return nil }

// earlyNode is a node that refreshed its signed metadata after the first
// 1.1.0 was published and before it was replaced.
type earlyNode struct {
	trust Trust
	blobs release.BlobFetcher
	first string // the replaced manifest digest
}

func (e earlyNode) update(c *channel) (*InstallResult, error) {
	_, ir, err := c.node.u.Update(context.Background(), frozenTrust{e.trust}, e.blobs,
		UpdateOptions{CheckOptions: CheckOptions{Variant: testVariant, Arch: testArch}})
	return ir, err
}

// TestPublishReplaceAndNodes checks what docs/publishing.md says happens to
// nodes when a version is replaced: nodes compare versions, not bytes.
func TestPublishReplaceAndNodes(t *testing.T) {
	// staged1 puts the first 1.1.0 in slot B, on trial.
	staged1 := func(t *testing.T, c *channel) {
		if _, err := c.update(CheckOptions{}); err != nil {
			t.Fatal(err)
		}
		mustBoot(t, c.node.u, bootloader.SlotB, true)
	}
	cases := []struct {
		name string
		// before runs after the first 1.1.0 is published and before it
		// is replaced; after runs once it is replaced, and returns the
		// node's update.
		before  func(t *testing.T, c *channel)
		after   func(t *testing.T, c *channel, e earlyNode) (*InstallResult, error)
		want    string // "first" or "second": the 1.1.0 the node gets; "" none
		wantErr string
	}{
		{"on an older release", nil, nil, "second", ""},
		{"running the replaced bytes", func(t *testing.T, c *channel) {
			staged1(t, c)
			if _, err := c.node.u.MarkGood(); err != nil {
				t.Fatal(err)
			}
		}, nil, "", "up to date"},
		{"staged the replaced bytes, updates again before its reboot", func(t *testing.T, c *channel) {
			if _, err := c.update(CheckOptions{}); err != nil {
				t.Fatal(err)
			}
		}, nil, "second", ""},
		{"refreshed before the replace, downloads after it", nil, func(t *testing.T, c *channel, e earlyNode) (*InstallResult, error) {
			return e.update(c)
		}, "first", ""},
		{"refreshed before the replace, the registry dropped the replaced manifest", nil, func(t *testing.T, c *channel, e earlyNode) (*InstallResult, error) {
			if err := os.Remove(c.blobPath(e.first)); err != nil {
				t.Fatal(err)
			}
			_, err := e.update(c)
			if err == nil || !strings.Contains(err.Error(), "fetch signed release manifest") {
				t.Fatalf("download of a dropped manifest: %v", err)
			}
			c.unchanged()
			return c.update(CheckOptions{}) // the next check refreshes
		}, "second", ""},
		{"fell back from the replaced bytes", func(t *testing.T, c *channel) {
			staged1(t, c)
			if _, err := c.node.u.MarkBad("kubelet never became ready"); err != nil {
				t.Fatal(err)
			}
			mustBoot(t, c.node.u, bootloader.SlotA, false)
			if _, err := c.node.u.BootCheck(); err != nil {
				t.Fatal(err)
			}
		}, nil, "", "failed here"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newChannel(t)
			c.goodV1()
			im, cfg := c.buildImage("1.1.0", testVariant, testArch)
			res, err := PublishRelease(context.Background(), c.pub, c.repo, im, cfg)
			if err != nil {
				t.Fatal(err)
			}
			e := earlyNode{first: res.Digest}
			e.trust, e.blobs = c.trust()
			if err := e.trust.Refresh(); err != nil {
				t.Fatal(err)
			}
			if tc.before != nil {
				tc.before(t, c)
			}
			im2, _ := c.buildImage("1.1.0", testVariant, testArch)
			if _, err := PublishRelease(context.Background(), c.pub, c.repo, im2, cfg); !errors.Is(err, ErrAlreadyPublished) {
				t.Fatalf("publish of other bytes without Replace: %v", err)
			}
			res2, err := PublishReleaseWith(context.Background(), c.pub, c.repo, im2, cfg, PublishOptions{Replace: true})
			if err != nil || res2.Replaced != res.Digest {
				t.Fatalf("replace: %+v, %v", res2, err)
			}
			after := tc.after
			if after == nil {
				after = func(t *testing.T, c *channel, _ earlyNode) (*InstallResult, error) { return c.update(CheckOptions{}) }
			}
			ir, err := after(t, c, e)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrNoRelease) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("update: %v, want ErrNoRelease saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"first": res.Digest, "second": res2.Digest}[tc.want]
			if ir.Record.Version != "1.1.0" || ir.Record.ManifestDigest != want {
				t.Fatalf("installed %s from %s, want %s (%s)", ir.Record.Version, ir.Record.ManifestDigest, want, tc.want)
			}
		})
	}
}
