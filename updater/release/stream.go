package release

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
)

// ReadOptions tune StreamRoot and RootReader. The zero value checks
// everything.
type ReadOptions struct {
	// Workers is how many chunks StreamRoot downloads and decompresses at
	// once; 0 means one per CPU, at most maxWorkers. RootReader always
	// uses one, to hand out the bytes in order.
	Workers int
	// SkipUncompressedDigest leaves out the sha256 of each chunk's
	// uncompressed bytes; the compressed digest and both sizes are still
	// checked. The decompressed bytes are then only as good as the zstd
	// decoder, which is why this is for callers that verify the whole
	// image some other way before trusting it, as the install does with
	// the signed verity root hash.
	SkipUncompressedDigest bool
	// SkipCompressedDigest leaves out the sha256 of each chunk's
	// compressed bytes too; only sizes are checked while streaming. The
	// decoder sees unverified bytes either way (a chunk's digest is known
	// only at its end), so this gives up early detection, not safety: the
	// caller must verify the whole image (the signed verity root hash)
	// and can name a bad chunk afterwards with CheckWritten.
	SkipCompressedDigest bool
}

// maxWorkers bounds StreamRoot's parallelism, and with it memory: each
// worker holds a decoder (a window of at most MaxWindow) and a read buffer.
const maxWorkers = 4

// StreamRoot downloads, checks and decompresses the root image. Several
// workers each take the next chunk, fetch its blob, and decode it into
// buffers they take from get; every filled buffer goes to put with the
// image offset it holds, so buffers arrive out of order and from several
// goroutines at once. put(buf, off, 0) hands back a buffer unused. get and
// put must be safe for concurrent use; an error from either stops the
// stream.
//
// For each chunk the compressed bytes are counted against the signed size
// (never reading more than one byte past it, so endless data fails fast)
// and hashed, the decoder's window is bounded by MaxWindow, the output is
// bounded by the chunk's size, and the uncompressed bytes are hashed,
// subject to o. A failure is a *ChunkError wrapping ErrDigestMismatch,
// ErrSizeMismatch, ErrCorrupt or the fetch error.
//
// Bytes are handed out before their chunk's digests are known, so the
// caller must treat everything as unverified until StreamRoot returns nil.
func (r *Release) StreamRoot(ctx context.Context, f BlobFetcher, o ReadOptions,
	get func(context.Context) ([]byte, error), put func(buf []byte, off int64, n int) error) error {
	workers := o.Workers
	if workers <= 0 {
		workers = min(runtime.NumCPU(), maxWorkers)
	}
	workers = min(workers, len(r.Chunks))
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w, err := newChunkWorker(o)
			if err != nil {
				cancel(err)
				return
			}
			defer w.dec.Close()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(r.Chunks) {
					return
				}
				c := &r.Chunks[i]
				if err := w.stream(ctx, f, c, get, put); err != nil {
					if ctx.Err() != nil {
						return // another worker failed first, or the caller gave up
					}
					cancel(&ChunkError{Index: c.Index, Offset: c.Offset, Blob: c.Blob.Digest, Err: err})
					return
				}
			}
		}()
	}
	wg.Wait()
	return context.Cause(ctx)
}

// chunkWorker is one StreamRoot worker's reusable state.
type chunkWorker struct {
	o     ReadOptions
	dec   *zstd.Decoder
	blob  blobInput
	plain hash.Hash // nil with SkipUncompressedDigest
}

func newChunkWorker(o ReadOptions) (*chunkWorker, error) {
	// One synchronous decoder per worker: the parallelism is across
	// chunks, which are independent frames, so each decoder needs no
	// goroutines of its own.
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(MaxWindow),
		zstd.WithDecoderMaxMemory(MaxWindow),
		// The frames' xxhash only repeats what the sha256 checks and the
		// verity root do, at ~5% of the decoding time.
		zstd.IgnoreChecksum(true),
	)
	if err != nil {
		return nil, err
	}
	// The decoder reads the blob directly: block payloads go from the
	// network into its buffers with no copy in between.
	w := &chunkWorker{o: o, dec: dec}
	if !o.SkipCompressedDigest {
		w.blob.hash = sha256.New()
	}
	if !o.SkipUncompressedDigest {
		w.plain = sha256.New()
	}
	return w, nil
}

// blobInput counts (and hashes) a blob's bytes on their way to the
// decoder and never reads more than one byte past the signed size.
type blobInput struct {
	r      io.Reader
	size   int64
	digest string // the signed one
	n      int64
	hash   hash.Hash // nil with SkipCompressedDigest
	err    error     // sticky: the first error from r or the size check
	eof    bool
}

func (b *blobInput) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.eof {
		return 0, io.EOF
	}
	if room := b.size + 1 - b.n; int64(len(p)) > room {
		p = p[:room]
	}
	k, err := b.r.Read(p)
	b.n += int64(k)
	if b.hash != nil {
		b.hash.Write(p[:k])
	}
	if b.n > b.size {
		b.err = fmt.Errorf("%w: blob is longer than its signed %d bytes", ErrSizeMismatch, b.size)
		return k, b.err
	}
	if errors.Is(err, io.EOF) {
		b.eof = true
	} else if err != nil {
		b.err = err
	}
	return k, err
}

// stream fetches, checks and decodes one chunk.
func (w *chunkWorker) stream(ctx context.Context, f BlobFetcher, c *Chunk,
	get func(context.Context) ([]byte, error), put func(buf []byte, off int64, n int) error) error {
	body, err := f.Blob(ctx, c.Blob.Digest, c.Blob.Size)
	if err != nil {
		return err
	}
	defer body.Close()
	// Closing the body is what unblocks a Read stuck on the network when
	// the stream is cancelled; well-behaved fetchers also watch ctx.
	stop := context.AfterFunc(ctx, func() { body.Close() })
	defer stop()

	w.blob = blobInput{r: body, size: c.Blob.Size, digest: c.Blob.Digest, hash: w.blob.hash}
	if w.blob.hash != nil {
		w.blob.hash.Reset()
	}
	if w.plain != nil {
		w.plain.Reset()
	}
	if c.Stored {
		return w.copyStored(ctx, c, get, put)
	}
	if err := w.dec.Reset(&w.blob); err != nil {
		return w.verdict(ctx, fmt.Errorf("%w: %w", ErrCorrupt, err))
	}
	var done int64
	for done < c.Size {
		buf, err := get(ctx)
		if err != nil {
			return err
		}
		want := min(int64(len(buf)), c.Size-done)
		k, err := io.ReadFull(w.dec, buf[:want])
		if err != nil {
			_ = put(buf, 0, 0)
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				return w.verdict(ctx, fmt.Errorf("%w: decompresses to %d bytes, signed size is %d", ErrSizeMismatch, done+int64(k), c.Size))
			}
			return w.verdict(ctx, fmt.Errorf("%w: %w", ErrCorrupt, err))
		}
		if w.plain != nil {
			w.plain.Write(buf[:k])
		}
		if err := put(buf, c.Offset+done, k); err != nil {
			return err
		}
		done += int64(k)
	}
	// The decoder must end exactly here: a decompression bomb stops one
	// byte past the chunk.
	var one [1]byte
	if k, err := io.ReadFull(w.dec, one[:]); k > 0 {
		return w.verdict(ctx, fmt.Errorf("%w: decompresses to more than its %d bytes", ErrSizeMismatch, c.Size))
	} else if !errors.Is(err, io.EOF) {
		return w.verdict(ctx, fmt.Errorf("%w: after the chunk's bytes: %w", ErrCorrupt, err))
	}
	if err := w.verdict(ctx, nil); err != nil {
		return err
	}
	if w.plain != nil {
		if got := "sha256:" + hex.EncodeToString(w.plain.Sum(nil)); got != c.Digest {
			return fmt.Errorf("%w: uncompressed bytes are %s, signed %s", ErrDigestMismatch, got, c.Digest)
		}
	}
	return nil
}

// copyStored copies a stored chunk from the network into the buffers: no
// decoder, no copy in between. Its blob digest is its plain digest (Parse
// checks), so the blob's hash is the only one needed.
func (w *chunkWorker) copyStored(ctx context.Context, c *Chunk,
	get func(context.Context) ([]byte, error), put func(buf []byte, off int64, n int) error) error {
	var done int64
	for done < c.Size {
		buf, err := get(ctx)
		if err != nil {
			return err
		}
		want := min(int64(len(buf)), c.Size-done)
		k, err := io.ReadFull(&w.blob, buf[:want])
		if err != nil {
			_ = put(buf, 0, 0)
			return w.verdict(ctx, nil) // short or failed: the blob's own checks say which
		}
		if err := put(buf, c.Offset+done, k); err != nil {
			return err
		}
		done += int64(k)
	}
	return w.verdict(ctx, nil)
}

// verdict reads the blob to its end and returns the most telling of: a
// transport or size error of the blob, a compressed digest mismatch, and
// then decodeErr, the decoder's complaint (nil when it had none). A
// tampered blob is thus reported as tampered, not as corrupt.
func (w *chunkWorker) verdict(ctx context.Context, decodeErr error) error {
	_, _ = io.Copy(io.Discard, &w.blob) // drains the blob, bounded by blobInput
	b := &w.blob
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if b.err != nil {
		return b.err
	}
	if b.n != b.size {
		return fmt.Errorf("%w: blob ended after %d bytes, its signed size is %d", ErrSizeMismatch, b.n, b.size)
	}
	if b.hash != nil {
		if got := "sha256:" + hex.EncodeToString(b.hash.Sum(nil)); got != b.digest {
			return fmt.Errorf("%w: blob is %s", ErrDigestMismatch, got)
		}
	}
	if decodeErr != nil && errors.Is(decodeErr, ErrCorrupt) && b.hash == nil {
		// Unhashed, a blob other than the signed one shows up here.
		return fmt.Errorf("%w (compressed digest not checked while streaming)", decodeErr)
	}
	return decodeErr
}
