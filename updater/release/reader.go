package release

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
)

// BlobFetcher opens blobs by digest; every oci.Source is one. The reader
// it returns need not check anything: this package checks sizes and
// digests itself and never reads more than size+1 bytes.
type BlobFetcher interface {
	Blob(ctx context.Context, digest string, size int64) (io.ReadCloser, error)
}

// Fetch reads the config blob of a release manifest through f and parses
// both (see Parse). The manifest's own digest is the caller's to check
// (TUF does, for the node).
func Fetch(ctx context.Context, manifestBytes []byte, f BlobFetcher) (*Release, error) {
	cd, err := ParseManifestConfig(manifestBytes)
	if err != nil {
		return nil, err
	}
	cfg, err := readBlob(ctx, f, cd, "config", MaxConfigSize)
	if err != nil {
		return nil, err
	}
	return Parse(manifestBytes, cfg)
}

// ReadKernel downloads the kernel, checking its size and digest.
func (r *Release) ReadKernel(ctx context.Context, f BlobFetcher) ([]byte, error) {
	return readBlob(ctx, f, r.Kernel, "kernel", MaxBootFileSize)
}

// ReadInitrd downloads the initrd, checking its size and digest; nil, nil
// when the release has none.
func (r *Release) ReadInitrd(ctx context.Context, f BlobFetcher) ([]byte, error) {
	if r.Initrd == nil {
		return nil, nil
	}
	return readBlob(ctx, f, *r.Initrd, "initrd", MaxBootFileSize)
}

func readBlob(ctx context.Context, f BlobFetcher, d Descriptor, what string, limit int64) ([]byte, error) {
	if d.Size > limit {
		return nil, fmt.Errorf("%w: %s is %d bytes, more than %d", ErrInvalid, what, d.Size, limit)
	}
	rc, err := f.Blob(ctx, d.Digest, d.Size)
	if err != nil {
		return nil, fmt.Errorf("release: fetch %s %s: %w", what, d.Digest, err)
	}
	defer rc.Close()
	buf := bytes.NewBuffer(make([]byte, 0, d.Size+1))
	if _, err := buf.ReadFrom(io.LimitReader(rc, d.Size+1)); err != nil {
		return nil, fmt.Errorf("release: read %s %s: %w", what, d.Digest, err)
	}
	if int64(buf.Len()) != d.Size {
		return nil, fmt.Errorf("%w: %s %s: got %s, signed size is %d", ErrSizeMismatch, what, d.Digest, atLeast(int64(buf.Len()), d.Size), d.Size)
	}
	if got := digestOf(buf.Bytes()); got != d.Digest {
		return nil, fmt.Errorf("%w: %s is %s, signed %s", ErrDigestMismatch, what, got, d.Digest)
	}
	return buf.Bytes(), nil
}

// atLeast describes a byte count read with a limit of size+1.
func atLeast(n, size int64) string {
	if n > size {
		return fmt.Sprintf("more than %d bytes", size)
	}
	return fmt.Sprintf("%d bytes", n)
}

// RootReader returns the uncompressed root image in order, as an
// io.Reader: StreamRoot with one worker, checking everything. Bytes of a
// chunk are handed out before its digests are checked (they are known
// only at its end), so the caller must treat everything read as
// unverified until Read returns io.EOF. Close stops the download; it
// must be called.
func (r *Release) RootReader(ctx context.Context, f BlobFetcher) io.ReadCloser {
	return r.RootReaderWith(ctx, f, ReadOptions{})
}

// RootReader's worker may fill orderedPieces buffers of pieceSize ahead
// of the caller.
const (
	orderedPieces = 8
	pieceSize     = 256 << 10
)

// RootReaderWith is RootReader with options; o.Workers is ignored.
func (r *Release) RootReaderWith(ctx context.Context, f BlobFetcher, o ReadOptions) io.ReadCloser {
	ctx, cancel := context.WithCancelCause(ctx)
	rr := &rootReader{
		ctx:    ctx,
		cancel: cancel,
		free:   make(chan []byte, orderedPieces),
		full:   make(chan []byte, orderedPieces),
		done:   make(chan struct{}),
	}
	for range orderedPieces {
		rr.free <- make([]byte, pieceSize)
	}
	o.Workers = 1 // one worker fills buffers in image order
	go func() {
		defer close(rr.done)
		defer close(rr.full)
		rr.result = r.StreamRoot(ctx, f, o,
			func(ctx context.Context) ([]byte, error) {
				select {
				case b := <-rr.free:
					return b, nil
				case <-ctx.Done():
					return nil, context.Cause(ctx)
				}
			},
			func(buf []byte, _ int64, n int) error {
				if n == 0 {
					rr.free <- buf[:cap(buf)]
					return nil
				}
				select {
				case rr.full <- buf[:n]:
					return nil
				case <-ctx.Done():
					return context.Cause(ctx)
				}
			})
	}()
	return rr
}

type rootReader struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	free   chan []byte
	full   chan []byte
	done   chan struct{} // closed when StreamRoot has returned
	result error         // StreamRoot's, valid after done

	cur, buf  []byte // unread part of the current buffer, and the buffer
	err       error  // sticky
	closeOnce sync.Once
}

func (rr *rootReader) Read(p []byte) (int, error) {
	if rr.err != nil {
		return 0, rr.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	for len(rr.cur) == 0 {
		if rr.buf != nil {
			rr.free <- rr.buf[:cap(rr.buf)]
			rr.buf = nil
		}
		// Read-ahead may hold the rest of a small image; cancellation
		// must still stop the stream.
		if err := rr.ctx.Err(); err != nil {
			rr.err = context.Cause(rr.ctx)
			return 0, rr.err
		}
		b, ok := <-rr.full
		if !ok {
			<-rr.done
			rr.err = rr.result
			if rr.err == nil {
				rr.err = io.EOF
			}
			return 0, rr.err
		}
		rr.cur, rr.buf = b, b
	}
	n := copy(p, rr.cur)
	rr.cur = rr.cur[n:]
	return n, nil
}

// Close stops the download and waits for it to end.
func (rr *rootReader) Close() error {
	rr.closeOnce.Do(func() {
		rr.cancel(errors.New("release: root reader closed"))
		for range rr.full { // unblock a put, let StreamRoot return
		}
		<-rr.done
		if rr.err == nil || errors.Is(rr.err, io.EOF) {
			rr.err = errors.New("release: read after Close")
		}
	})
	return nil
}

// CheckWritten names the chunks whose bytes in dst (the image as written,
// at offset 0) are not the signed uncompressed bytes. It is the diagnosis
// after a whole-image check failed: with SkipCompressedDigest the stream
// itself cannot say which chunk was bad. It reads each chunk once and
// returns a *ChunkError wrapping ErrDigestMismatch for the first bad one,
// nil when every chunk matches.
func (r *Release) CheckWritten(ctx context.Context, dst io.ReaderAt) error {
	buf := make([]byte, pieceSize)
	h := sha256.New()
	for i := range r.Chunks {
		c := &r.Chunks[i]
		if err := ctx.Err(); err != nil {
			return err
		}
		h.Reset()
		if _, err := io.CopyBuffer(h, io.NewSectionReader(dst, c.Offset, c.Size), buf); err != nil {
			return &ChunkError{Index: c.Index, Offset: c.Offset, Blob: c.Blob.Digest, Err: fmt.Errorf("read back: %w", err)}
		}
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != c.Digest {
			return &ChunkError{Index: c.Index, Offset: c.Offset, Blob: c.Blob.Digest,
				Err: fmt.Errorf("%w: written bytes are %s, signed %s (the blob is not the signed one, or the slot did not keep what was written)", ErrDigestMismatch, got, c.Digest)}
		}
	}
	return nil
}
