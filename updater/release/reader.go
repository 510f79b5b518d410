package release

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
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

// Streaming parameters. Compressed bytes are read ahead in pieces of
// pieceSize, at most readAhead pieces, so the network keeps going while
// the decoder works and across chunk boundaries, with memory fixed at
// pieceSize*readAhead plus the decoder's window.
const (
	pieceSize = 256 << 10
	readAhead = 16
)

// decoderConcurrency is how many zstd blocks (at most 128 KiB each) may be
// in flight in the decoder's pipeline. Above 1 the decoder runs on its own
// goroutines, overlapping with the hashing on the reader's; on 2 cores, 8
// streamed 20-40% faster than 2-4 (deeper queues ride out scheduling
// hiccups) for about 2 MiB more memory.
const decoderConcurrency = 8

// piece is a run of compressed bytes of one chunk, or (end) the verdict on
// the whole chunk's compressed bytes.
type piece struct {
	buf []byte
	end bool
	err error
}

// RootReader returns the uncompressed root image, streamed chunk by chunk.
// For each chunk it fetches the blob, checks the compressed bytes' count
// and sha256 against the layer descriptor (reading at most one byte past
// the signed size, so endless data fails fast), decompresses with a
// bounded window, and checks the uncompressed count and sha256 against
// the chunk annotations. A failure is a *ChunkError wrapping
// ErrDigestMismatch, ErrSizeMismatch, ErrCorrupt or the fetch error.
//
// Bytes of a chunk are handed out before the chunk's digests can be
// checked (they are known only at its end), so the caller must treat
// everything read as unverified until Read returns io.EOF. The install
// pipeline does: it flips nothing before the stream ends cleanly.
//
// Memory is bounded by the read-ahead (4 MiB) and the decoder (at most
// MaxWindow plus its in-flight blocks), whatever the chunk size. Close
// stops the download; it must be called.
func (r *Release) RootReader(ctx context.Context, f BlobFetcher) io.ReadCloser {
	return r.RootReaderWith(ctx, f, ReadOptions{})
}

// ReadOptions tune RootReaderWith. The zero value checks everything.
type ReadOptions struct {
	// SkipUncompressedDigest leaves out the sha256 of each chunk's
	// uncompressed bytes; the compressed digest and both sizes are still
	// checked. The decompressed bytes are then only as good as the zstd
	// decoder, which is why this is for callers that verify the whole
	// image some other way before trusting it, as the install does with
	// the signed verity root hash. It saves a sha256 pass over the image:
	// about 30% of the reader's CPU time (docs/release-format.md).
	SkipUncompressedDigest bool
}

// RootReaderWith is RootReader with options.
func (r *Release) RootReaderWith(ctx context.Context, f BlobFetcher, o ReadOptions) io.ReadCloser {
	ctx, cancel := context.WithCancelCause(ctx)
	rr := &rootReader{
		ctx:    ctx,
		rel:    r,
		cancel: cancel,
		raw:    make(chan piece, readAhead),
		queue:  make(chan piece, readAhead),
		free:   make(chan []byte, readAhead),
		done:   make(chan struct{}),
		chunk:  -1,
	}
	if !o.SkipUncompressedDigest {
		rr.hash = sha256.New()
	}
	for range readAhead {
		rr.free <- make([]byte, pieceSize)
	}
	go rr.fetch(ctx, f)
	go rr.verify(ctx)
	return rr
}

type rootReader struct {
	ctx    context.Context
	rel    *Release
	cancel context.CancelCauseFunc
	raw    chan piece    // fetch -> verify
	queue  chan piece    // verify -> decoder, in chunk order
	free   chan []byte   // empty piece buffers
	done   chan struct{} // closed when fetch and verify have stopped

	dec   *zstd.Decoder
	chunk int // current chunk, -1 before the first
	in    chunkInput
	n     int64     // uncompressed bytes of the current chunk so far
	hash  hash.Hash // nil with SkipUncompressedDigest
	err   error     // sticky

	closeOnce sync.Once
}

// The download runs in two stages ahead of the decoder: fetch reads
// the blobs into pieces (and asks for the next blob while the current
// one streams, so a registry's time to first byte is hidden), and
// verify hashes the compressed pieces on its own goroutine and passes
// them on to the decoder's queue with a verdict at each chunk's end.
// Profiling an update from docker-registry showed the single goroutine
// doing both, plus one request round trip per chunk, as the critical
// path.

// fetch downloads the chunks in order into rr.raw. It stops at the first
// failure, which it reports as the end piece of that chunk.
func (rr *rootReader) fetch(ctx context.Context, f BlobFetcher) {
	defer close(rr.raw)
	type opened struct {
		body io.ReadCloser
		err  error
	}
	open := func(c *Chunk) chan opened {
		ch := make(chan opened, 1)
		go func() {
			body, err := f.Blob(ctx, c.Blob.Digest, c.Blob.Size)
			ch <- opened{body, err}
		}()
		return ch
	}
	chunks := rr.rel.Chunks
	next := open(&chunks[0])
	defer func() {
		// A blob opened ahead and never read; close it once it arrives.
		if next != nil {
			go func(ch chan opened) {
				if o := <-ch; o.body != nil {
					o.body.Close()
				}
			}(next)
		}
	}()
	for i := range chunks {
		var o opened
		select {
		case o = <-next:
			next = nil
		case <-ctx.Done():
			return
		}
		if i+1 < len(chunks) {
			next = open(&chunks[i+1])
		}
		err := o.err
		if err == nil {
			err = rr.fetchChunk(ctx, o.body, &chunks[i])
			o.body.Close()
		}
		select {
		case rr.raw <- piece{end: true, err: err}:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// fetchChunk copies one blob into pieces, checking its length: never more
// than one byte past the signed size is read.
func (rr *rootReader) fetchChunk(ctx context.Context, body io.ReadCloser, c *Chunk) error {
	// Closing the body is what unblocks a Read stuck on the network when
	// the reader is closed; well-behaved fetchers also watch ctx.
	stop := context.AfterFunc(ctx, func() { body.Close() })
	defer stop()
	src := io.LimitReader(body, c.Blob.Size+1)
	var n int64
	for {
		var buf []byte
		select {
		case buf = <-rr.free:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		k, err := io.ReadFull(src, buf)
		n += int64(k)
		if n > c.Blob.Size {
			rr.free <- buf
			return fmt.Errorf("%w: blob is longer than its signed %d bytes", ErrSizeMismatch, c.Blob.Size)
		}
		if k > 0 {
			select {
			case rr.raw <- piece{buf: buf[:k]}:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		} else {
			rr.free <- buf
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			return err
		}
	}
	if n != c.Blob.Size {
		return fmt.Errorf("%w: blob ended after %d bytes, its signed size is %d", ErrSizeMismatch, n, c.Blob.Size)
	}
	return nil
}

// verify hashes the compressed pieces of each chunk on their way to the
// decoder and turns each chunk's end piece into its verdict.
func (rr *rootReader) verify(ctx context.Context) {
	defer close(rr.done)
	h := sha256.New()
	chunk := 0
	for pc := range rr.raw {
		if pc.end {
			c := &rr.rel.Chunks[chunk]
			if pc.err == nil {
				if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != c.Blob.Digest {
					pc.err = fmt.Errorf("%w: blob is %s", ErrDigestMismatch, got)
				}
			}
			h.Reset()
			chunk++
		} else {
			h.Write(pc.buf)
		}
		select {
		case rr.queue <- pc:
		case <-ctx.Done():
			return
		}
	}
}

// chunkInput is the decoder's input: the queued pieces of one chunk,
// ending at that chunk's end piece with io.EOF or the fetch verdict.
type chunkInput struct {
	rr       *rootReader
	cur      []byte // unread part of the current piece
	buf      []byte // the current piece's buffer, to return to free
	finished bool
	verdict  error // the end piece's error
	extra    int64 // bytes read after the decoder reported the end
}

func (in *chunkInput) Read(p []byte) (int, error) {
	for len(in.cur) == 0 {
		if in.finished {
			if in.verdict != nil {
				return 0, in.verdict
			}
			return 0, io.EOF
		}
		in.release()
		var pc piece
		var ok bool
		// The fetcher stops sending once ctx ends, so waiting on the
		// queue alone could hang the decoder (and a Read) for good.
		select {
		case pc, ok = <-in.rr.queue:
		case <-in.rr.ctx.Done():
			return 0, context.Cause(in.rr.ctx)
		}
		if !ok {
			return 0, io.ErrUnexpectedEOF
		}
		if pc.end {
			in.finished, in.verdict = true, pc.err
			continue
		}
		in.cur, in.buf = pc.buf, pc.buf
	}
	n := copy(p, in.cur)
	in.cur = in.cur[n:]
	return n, nil
}

// release gives the current piece's buffer back to the fetcher.
func (in *chunkInput) release() {
	if in.buf != nil {
		in.rr.free <- in.buf[:cap(in.buf)]
		in.buf, in.cur = nil, nil
	}
}

// drain reads the chunk to its end piece and returns the fetch verdict;
// it tells a tampered blob (digest mismatch) from a corrupt one.
func (in *chunkInput) drain() error {
	var scratch [4096]byte
	for {
		n, err := in.Read(scratch[:])
		in.extra += int64(n)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func (rr *rootReader) chunkErr(err error) error {
	c := &rr.rel.Chunks[rr.chunk]
	return &ChunkError{Index: c.Index, Offset: c.Offset, Blob: c.Blob.Digest, Err: err}
}

// next moves to the following chunk; io.EOF after the last.
func (rr *rootReader) next() error {
	rr.chunk++
	if rr.chunk >= len(rr.rel.Chunks) {
		return io.EOF
	}
	rr.in = chunkInput{rr: rr}
	rr.n = 0
	if rr.hash != nil {
		rr.hash.Reset()
	}
	if rr.dec == nil {
		dec, err := zstd.NewReader(&rr.in,
			zstd.WithDecoderConcurrency(decoderConcurrency),
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(MaxWindow),
			zstd.WithDecoderMaxMemory(MaxWindow),
			// The frames' xxhash only repeats what the sha256 checks do,
			// at ~5% of the decoding time.
			zstd.IgnoreChecksum(true),
		)
		if err != nil {
			return err
		}
		rr.dec = dec
		return nil
	}
	return rr.dec.Reset(&rr.in)
}

func (rr *rootReader) Read(p []byte) (int, error) {
	if rr.err != nil {
		return 0, rr.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	// Read-ahead may hold the rest of a small image; cancellation must
	// still stop the stream.
	if err := rr.ctx.Err(); err != nil {
		rr.err = context.Cause(rr.ctx)
		return 0, rr.err
	}
	if rr.chunk < 0 {
		if err := rr.next(); err != nil {
			rr.err = err
			return 0, err
		}
	}
	for {
		c := &rr.rel.Chunks[rr.chunk]
		// Never let the decoder produce more than one byte past the
		// chunk: a decompression bomb stops there.
		if room := c.Size + 1 - rr.n; int64(len(p)) > room {
			p = p[:room]
		}
		n, err := rr.dec.Read(p)
		rr.n += int64(n)
		if rr.hash != nil {
			rr.hash.Write(p[:n])
		}
		if rr.n > c.Size {
			rr.err = rr.chunkErr(fmt.Errorf("%w: decompresses to more than its %d bytes", ErrSizeMismatch, c.Size))
			rr.stop()
			return 0, rr.err
		}
		if err == nil {
			if n > 0 {
				return n, nil
			}
			continue
		}
		if !errors.Is(err, io.EOF) {
			rr.err = rr.chunkErr(rr.decodeError(err))
			rr.stop()
			return n, rr.err
		}
		if err := rr.finishChunk(c); err != nil {
			rr.err = rr.chunkErr(err)
			rr.stop()
			return n, rr.err
		}
		if err := rr.next(); err != nil {
			rr.err = err
			if !errors.Is(err, io.EOF) {
				rr.stop()
			}
			if n > 0 {
				return n, nil
			}
			return 0, err
		}
		if n > 0 {
			return n, nil
		}
	}
}

// decodeError explains a decoder failure: if the blob itself failed its
// checks that is the real cause, else the signed blob is corrupt.
func (rr *rootReader) decodeError(err error) error {
	if verr := rr.in.drain(); verr != nil {
		return verr
	}
	if rr.in.verdict != nil {
		return rr.in.verdict
	}
	return fmt.Errorf("%w: %w", ErrCorrupt, err)
}

// finishChunk checks a chunk the decoder has ended.
func (rr *rootReader) finishChunk(c *Chunk) error {
	// The decoder stops at the input's end, so the verdict is in; drain
	// anyway in case it stopped early, and refuse bytes it left over.
	if err := rr.in.drain(); err != nil {
		return err
	}
	if rr.in.extra > 0 {
		return fmt.Errorf("%w: %d bytes after the zstd frames", ErrCorrupt, rr.in.extra)
	}
	rr.in.release()
	if rr.n != c.Size {
		return fmt.Errorf("%w: decompresses to %d bytes, signed size is %d", ErrSizeMismatch, rr.n, c.Size)
	}
	if rr.hash == nil {
		return nil
	}
	if got := "sha256:" + hex.EncodeToString(rr.hash.Sum(nil)); got != c.Digest {
		return fmt.Errorf("%w: uncompressed bytes are %s, signed %s", ErrDigestMismatch, got, c.Digest)
	}
	return nil
}

// stop ends the download after a failure; Close still has to be called.
func (rr *rootReader) stop() { rr.cancel(errors.New("release: root reader stopped")) }

// Close stops the download and waits for the fetcher to finish.
func (rr *rootReader) Close() error {
	rr.closeOnce.Do(func() {
		rr.cancel(errors.New("release: root reader closed"))
		<-rr.done
		// verify was the only sender. Closing the queue wakes a decoder
		// goroutine waiting for input, so dec.Close can finish.
		close(rr.queue)
		if rr.dec != nil {
			rr.dec.Close()
		}
		if rr.err == nil {
			rr.err = errors.New("release: read after Close")
		}
	})
	return nil
}
