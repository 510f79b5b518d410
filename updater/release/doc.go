// Package release is sealift's release format: an OCI image manifest whose
// layers are the root image in fixed-size zstd chunks, the kernel and the
// initrd, and whose config blob carries the version and the dm-verity
// parameters (docs/release-format.md is the specification).
//
// The publisher side builds a release from files (Build) into a v1.Image
// that any OCI transport can push (updater/oci). The node side validates a
// manifest and its config strictly (Parse) and streams the image back
// (Release.RootReader), checking every chunk's compressed and uncompressed
// digest and size with bounded memory, so a registry, a mirror or a disk in
// between need not be trusted: only the manifest digest, which the TUF
// targets metadata signs, is.
//
// Chunks exist so that registries deduplicate unchanged parts of the image
// across releases and so that a later resume or delta update can skip
// chunks already present; their uncompressed digests make that check
// possible without decompressing.
package release

import (
	"errors"
	"fmt"

	"sealift/updater/oci"
)

// Errors callers branch on. A *ChunkError wraps one of them (or a transport
// error) and says which chunk failed.
var (
	// ErrInvalid marks a manifest or config that breaks the format.
	ErrInvalid = errors.New("release: invalid")
	// ErrDigestMismatch: downloaded or decompressed bytes do not hash to
	// the signed digest. The same value as oci.ErrDigestMismatch.
	ErrDigestMismatch = oci.ErrDigestMismatch
	// ErrSizeMismatch: a blob or a decompressed chunk is shorter or longer
	// than its signed size. The same value as oci.ErrSizeMismatch, so a
	// registry sending too much is caught as one whoever notices first.
	ErrSizeMismatch = oci.ErrSizeMismatch
	// ErrCorrupt: a blob with the right digest does not decompress (the
	// publisher signed a broken chunk).
	ErrCorrupt = errors.New("corrupt compressed data")
)

// ChunkError is a failure of one root-image chunk.
type ChunkError struct {
	Index  int    // chunk number, from 0
	Offset int64  // byte offset of the chunk in the image
	Blob   string // compressed blob digest
	Err    error
}

func (e *ChunkError) Error() string {
	return fmt.Sprintf("release: root chunk %d (offset %d, blob %s): %v", e.Index, e.Offset, e.Blob, e.Err)
}

func (e *ChunkError) Unwrap() error { return e.Err }
