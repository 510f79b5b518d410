package oci

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"sealift/internal/atomicfile"
)

// maxIndexSize bounds index.json: a layout on removable media is not
// trusted to be small.
const maxIndexSize = 16 << 20

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// layoutIndex is an OCI image layout's index.json. Entries are kept raw so
// that rewriting the index preserves fields this package does not know.
type layoutIndex struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType,omitempty"`
	Manifests     []json.RawMessage `json:"manifests"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// layoutEntry is what this package reads of an index entry.
type layoutEntry struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations"`
}

// Layout is an OCI image layout directory used as a Source.
type Layout struct{ dir string }

// NewLayout opens an OCI image layout directory as a Source: manifests by
// tag (the org.opencontainers.image.ref.name annotation in index.json) or
// by digest, blobs from blobs/sha256.
func NewLayout(dir string) (*Layout, error) {
	b, err := os.ReadFile(filepath.Join(dir, "oci-layout"))
	if err != nil {
		return nil, fmt.Errorf("oci layout %s: %w", dir, err)
	}
	var l struct {
		Version string `json:"imageLayoutVersion"`
	}
	if err := json.Unmarshal(b, &l); err != nil || l.Version != "1.0.0" {
		return nil, fmt.Errorf("oci layout %s: oci-layout is not {\"imageLayoutVersion\":\"1.0.0\"}", dir)
	}
	return &Layout{dir: dir}, nil
}

func (l *Layout) String() string { return "oci-layout:" + l.dir }

func (l *Layout) blobPath(digest string) string {
	return filepath.Join(l.dir, "blobs", "sha256", strings.TrimPrefix(digest, "sha256:"))
}

func (l *Layout) readIndex() (*layoutIndex, error) {
	f, err := os.Open(filepath.Join(l.dir, "index.json"))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", l, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxIndexSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: read index.json: %w", l, err)
	}
	if len(b) > maxIndexSize {
		return nil, fmt.Errorf("%w: %s: index.json is larger than %d bytes", ErrTooLarge, l, maxIndexSize)
	}
	var idx layoutIndex
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("%s: index.json: %w", l, err)
	}
	return &idx, nil
}

// resolve returns the descriptor a tag points at; the last entry wins
// when several carry the tag.
func (l *Layout) resolve(tag string) (*layoutEntry, error) {
	idx, err := l.readIndex()
	if err != nil {
		return nil, err
	}
	var found *layoutEntry
	for _, raw := range idx.Manifests {
		var e layoutEntry
		if err := json.Unmarshal(raw, &e); err != nil {
			return nil, fmt.Errorf("%s: index.json entry: %w", l, err)
		}
		if e.Annotations[AnnotationRefName] == tag {
			found = &e
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w: tag %q in %s", ErrNotFound, tag, l)
	}
	if err := checkDigest(found.Digest); err != nil {
		return nil, fmt.Errorf("%s: tag %q: %w", l, tag, err)
	}
	return found, nil
}

// Manifest implements Source.
func (l *Layout) Manifest(ctx context.Context, ref string, maxSize int64) ([]byte, error) {
	if err := checkRef(ref); err != nil {
		return nil, err
	}
	digest := ref
	if !isDigest(ref) {
		e, err := l.resolve(ref)
		if err != nil {
			return nil, err
		}
		if e.Size > maxSize {
			return nil, fmt.Errorf("%w: manifest %s (%s) is %d bytes, limit %d", ErrTooLarge, ref, l, e.Size, maxSize)
		}
		digest = e.Digest
	}
	f, err := os.Open(l.blobPath(digest))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: manifest %s in %s", ErrNotFound, ref, l)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", l, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: read manifest %s: %w", l, ref, err)
	}
	if int64(len(b)) > maxSize {
		return nil, fmt.Errorf("%w: manifest %s (%s) is larger than %d bytes", ErrTooLarge, ref, l, maxSize)
	}
	// A layout is content-addressed, but a damaged disk is not.
	if got := digestOf(b); got != digest {
		return nil, fmt.Errorf("%w: manifest %s in %s hashes to %s", ErrDigestMismatch, digest, l, got)
	}
	return b, nil
}

// Blob implements Source.
func (l *Layout) Blob(ctx context.Context, digest string, size int64) (io.ReadCloser, error) {
	if err := checkDigest(digest); err != nil {
		return nil, err
	}
	f, err := os.Open(l.blobPath(digest))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: blob %s in %s", ErrNotFound, digest, l)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", l, err)
	}
	return newSizedReader(f, size, "blob "+digest), nil
}

// LayoutPublisher writes images into an OCI image layout directory.
type LayoutPublisher struct {
	dir string
	// Workers is how many blobs are written at once (0: one per CPU).
	Workers int
}

// NewLayoutPublisher returns a Publisher that adds to the OCI image layout
// at dir, creating it if needed. Blobs are written to a temporary file,
// checked against their digest and size, synced and renamed into place,
// and index.json is replaced atomically, so a crash leaves either the old
// or the new tag, never a torn file under a final name. One writer at a
// time per directory (an flock serialises index updates).
func NewLayoutPublisher(dir string) (*LayoutPublisher, error) {
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return nil, fmt.Errorf("oci layout %s: %w", dir, err)
	}
	p := filepath.Join(dir, "oci-layout")
	if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
		if err := atomicfile.WriteFile(p, []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	return &LayoutPublisher{dir: dir}, nil
}

func (p *LayoutPublisher) String() string { return "oci-layout:" + p.dir }

// PushImage implements Publisher.
func (p *LayoutPublisher) PushImage(ctx context.Context, img v1.Image, tag string) (string, []byte, error) {
	if !ValidTag(tag) {
		return "", nil, fmt.Errorf("%w: tag %q", ErrInvalidReference, tag)
	}
	manifest, err := img.RawManifest()
	if err != nil {
		return "", nil, err
	}
	mt, err := img.MediaType()
	if err != nil {
		return "", nil, err
	}
	layers, err := img.Layers()
	if err != nil {
		return "", nil, err
	}
	// Distinct blobs only: an image may repeat a chunk.
	seen := map[v1.Hash]bool{}
	var todo []v1.Layer
	for _, layer := range layers {
		d, err := layer.Digest()
		if err != nil {
			return "", nil, err
		}
		if !seen[d] {
			seen[d] = true
			todo = append(todo, layer)
		}
	}
	if err := p.writeLayers(ctx, todo); err != nil {
		return "", nil, err
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return "", nil, err
	}
	if err := p.writeBlobBytes(cfg); err != nil {
		return "", nil, err
	}
	if err := p.writeBlobBytes(manifest); err != nil {
		return "", nil, err
	}
	digest := digestOf(manifest)
	entry := map[string]any{
		"mediaType":   string(mt),
		"digest":      digest,
		"size":        len(manifest),
		"annotations": map[string]string{AnnotationRefName: tag},
	}
	var m struct {
		ArtifactType string `json:"artifactType"`
	}
	if json.Unmarshal(manifest, &m) == nil && m.ArtifactType != "" {
		entry["artifactType"] = m.ArtifactType
	}
	if err := p.setTag(tag, entry); err != nil {
		return "", nil, err
	}
	return digest, manifest, nil
}

// PushFile implements Publisher.
func (p *LayoutPublisher) PushFile(ctx context.Context, tag string, data []byte, mediaType string) error {
	img, err := FileImage(data, mediaType)
	if err != nil {
		return err
	}
	_, _, err = p.PushImage(ctx, img, tag)
	return err
}

func (p *LayoutPublisher) writeLayers(ctx context.Context, layers []v1.Layer) error {
	workers := p.Workers
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	jobs := make(chan v1.Layer)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for range min(workers, len(layers)) {
		wg.Go(func() {
			for layer := range jobs {
				if err := p.writeLayer(ctx, layer); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for _, l := range layers {
		mu.Lock()
		failed := len(errs) > 0
		mu.Unlock()
		if failed || ctx.Err() != nil {
			break
		}
		jobs <- l
	}
	close(jobs)
	wg.Wait()
	if ctx.Err() != nil {
		errs = append(errs, ctx.Err())
	}
	return errors.Join(errs...)
}

func (p *LayoutPublisher) writeLayer(ctx context.Context, layer v1.Layer) error {
	d, err := layer.Digest()
	if err != nil {
		return err
	}
	size, err := layer.Size()
	if err != nil {
		return err
	}
	final := filepath.Join(p.dir, "blobs", "sha256", d.Hex)
	// Content-addressed: a blob of the right size is taken as present
	// (readers verify digests anyway).
	if fi, err := os.Stat(final); err == nil && fi.Size() == size {
		return nil
	}
	rc, err := layer.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	return writeBlob(ctx, final, rc, d.String(), size)
}

func (p *LayoutPublisher) writeBlobBytes(b []byte) error {
	d := digestOf(b)
	final := filepath.Join(p.dir, "blobs", "sha256", strings.TrimPrefix(d, "sha256:"))
	if fi, err := os.Stat(final); err == nil && fi.Size() == int64(len(b)) {
		return nil
	}
	return writeBlob(context.Background(), final, io.NopCloser(bytes.NewReader(b)), d, int64(len(b)))
}

// writeBlob copies r into final through a checked temporary file.
func writeBlob(ctx context.Context, final string, r io.Reader, digest string, size int64) error {
	tmp, err := os.CreateTemp(filepath.Dir(final), ".tmp-"+filepath.Base(final)[:12]+"-")
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), &ctxReader{ctx: ctx, r: io.LimitReader(r, size+1)})
	if err != nil {
		return fmt.Errorf("write blob %s: %w", digest, err)
	}
	if n != size {
		return fmt.Errorf("%w: blob %s: got %d bytes, expected %d", ErrSizeMismatch, digest, n, size)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
		return fmt.Errorf("%w: blob %s hashes to %s", ErrDigestMismatch, digest, got)
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return err
	}
	ok = true
	return atomicfile.SyncDir(filepath.Dir(final))
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// setTag points tag at entry in index.json, dropping other entries with
// that tag, under an exclusive lock on the layout directory.
func (p *LayoutPublisher) setTag(tag string, entry map[string]any) error {
	d, err := os.Open(p.dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", p.dir, err)
	}
	defer unix.Flock(int(d.Fd()), unix.LOCK_UN)

	idx := &layoutIndex{SchemaVersion: 2, MediaType: MediaTypeImageIndex, Manifests: []json.RawMessage{}}
	l := &Layout{dir: p.dir}
	if _, err := os.Stat(filepath.Join(p.dir, "index.json")); err == nil {
		if idx, err = l.readIndex(); err != nil {
			return err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	kept := idx.Manifests[:0]
	for _, raw := range idx.Manifests {
		var e layoutEntry
		if err := json.Unmarshal(raw, &e); err != nil {
			return fmt.Errorf("%s: index.json entry: %w", l, err)
		}
		if e.Annotations[AnnotationRefName] != tag {
			kept = append(kept, raw)
		}
	}
	raw, err := json.Marshal(entry)
	if err != nil {
		return err
	}
	idx.Manifests = append(kept, raw)
	if idx.MediaType == "" {
		idx.MediaType = MediaTypeImageIndex
	}
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(p.dir, "index.json"), append(b, '\n'), 0o644)
}
