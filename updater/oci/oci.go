// Package oci moves sealift's releases and TUF metadata in and out of OCI
// repositories: a registry over HTTPS (Distribution 2.8 and later, with
// mirrors, retries and resumable blob downloads) or an OCI image layout
// directory (removable media, air-gapped sites, VM tests).
//
// Nothing read through this package is trusted by it: manifests fetched
// by digest are checked against the digest, blobs are cut off at their
// expected size, and the callers (release, signing via TUFFetcher) verify
// content against signed digests. Only plain OCI image manifests and tags
// are used, because Distribution 2.8 has no referrers API and refuses the
// OCI artifact manifest type.
package oci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Media types this package writes.
const (
	MediaTypeImageManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeImageIndex    = "application/vnd.oci.image.index.v1+json"
	MediaTypeEmpty         = "application/vnd.oci.empty.v1+json"
	// MediaTypeTUFMetadata is the layer (and artifact) type of a TUF
	// metadata file stored under its file name as a tag.
	MediaTypeTUFMetadata = "application/vnd.sealift.tuf.metadata.v1+json"
	// AnnotationRefName names a manifest in an image layout's index.json.
	AnnotationRefName = "org.opencontainers.image.ref.name"
)

// Errors callers branch on.
var (
	// ErrNotFound: the repository has no such tag, manifest or blob.
	ErrNotFound = errors.New("not found")
	// ErrTooLarge: a manifest is larger than the caller's limit.
	ErrTooLarge = errors.New("too large")
	// ErrDigestMismatch and ErrSizeMismatch: content is not what its
	// descriptor says. The release package uses the same values.
	ErrDigestMismatch = errors.New("digest mismatch")
	ErrSizeMismatch   = errors.New("size mismatch")
	// ErrInvalidReference: a tag or digest that is not well formed.
	ErrInvalidReference = errors.New("invalid reference")
	// ErrPlainHTTP: a request would have gone over plain HTTP without
	// RegistryOptions.Insecure.
	ErrPlainHTTP = errors.New("plain HTTP refused (set Insecure to allow it)")
)

// Source is where releases and TUF metadata are read from.
type Source interface {
	// Manifest returns the manifest bytes for a tag or a digest
	// ("sha256:<hex>") in the source's repository, at most maxSize bytes
	// (else ErrTooLarge). A manifest asked for by digest is checked
	// against it. A missing one is an error wrapping ErrNotFound.
	Manifest(ctx context.Context, ref string, maxSize int64) ([]byte, error)
	// Blob opens a blob by digest. The reader yields at most size bytes:
	// a longer blob fails with ErrSizeMismatch at byte size+1, a shorter
	// one with io.ErrUnexpectedEOF. It does NOT check the digest, because
	// every caller hashes what it reads anyway (release, TUFFetcher,
	// ReadBlob) and hashing twice costs real time on a GiB image.
	Blob(ctx context.Context, digest string, size int64) (io.ReadCloser, error)
	// String names the source for messages.
	String() string
}

// Publisher writes releases and TUF metadata.
type Publisher interface {
	// PushImage stores img (its blobs, then its manifest) and points tag
	// at it; it returns the manifest digest and bytes.
	PushImage(ctx context.Context, img v1.Image, tag string) (digest string, manifest []byte, err error)
	// PushFile stores data as a one-layer artifact of mediaType under tag
	// (see FileImage); this is how TUF metadata files are published.
	PushFile(ctx context.Context, tag string, data []byte, mediaType string) error
	String() string
}

var (
	tagRE    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
)

// ValidTag reports whether s is a valid OCI tag.
func ValidTag(s string) bool { return tagRE.MatchString(s) }

// isDigest reports whether ref is a sha256 digest.
func isDigest(ref string) bool { return digestRE.MatchString(ref) }

func checkRef(ref string) error {
	if isDigest(ref) || ValidTag(ref) {
		return nil
	}
	return fmt.Errorf("%w: %q is neither a tag nor a sha256 digest", ErrInvalidReference, ref)
}

func checkDigest(digest string) error {
	if isDigest(digest) {
		return nil
	}
	return fmt.Errorf("%w: %q is not sha256:<64 lower-case hex digits>", ErrInvalidReference, digest)
}

// ReadBlob reads a whole blob from src and checks its size and digest; for
// small blobs (configs, TUF metadata).
func ReadBlob(ctx context.Context, src Source, digest string, size int64) ([]byte, error) {
	if err := checkDigest(digest); err != nil {
		return nil, err
	}
	rc, err := src.Blob(ctx, digest, size)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, size+1))
	if err != nil {
		return nil, fmt.Errorf("read blob %s from %s: %w", digest, src, err)
	}
	if int64(len(data)) != size {
		return nil, fmt.Errorf("%w: blob %s from %s has %d bytes, expected %d", ErrSizeMismatch, digest, src, len(data), size)
	}
	if got := digestOf(data); got != digest {
		return nil, fmt.Errorf("%w: blob %s from %s is %s", ErrDigestMismatch, digest, src, got)
	}
	return data, nil
}

// sizedReader caps a blob stream at its expected size.
type sizedReader struct {
	r    io.ReadCloser
	size int64
	n    int64
	what string
}

func newSizedReader(r io.ReadCloser, size int64, what string) *sizedReader {
	return &sizedReader{r: r, size: size, what: what}
}

func (s *sizedReader) Read(p []byte) (int, error) {
	if s.n >= s.size {
		// One more byte tells the end from excess without reading more.
		var one [1]byte
		k, err := s.r.Read(one[:])
		if k > 0 {
			return 0, fmt.Errorf("%w: %s is longer than %d bytes", ErrSizeMismatch, s.what, s.size)
		}
		if err == nil {
			return 0, nil
		}
		return 0, err
	}
	if rem := s.size - s.n; int64(len(p)) > rem {
		p = p[:rem]
	}
	k, err := s.r.Read(p)
	s.n += int64(k)
	if errors.Is(err, io.EOF) && s.n < s.size {
		err = fmt.Errorf("%s ended after %d of %d bytes: %w", s.what, s.n, s.size, io.ErrUnexpectedEOF)
	}
	return k, err
}

func (s *sizedReader) Close() error { return s.r.Close() }
