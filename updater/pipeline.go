package updater

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"
	"sync"
	"sync/atomic"

	"sealift/internal/aligned"
	"sealift/partitions/verity"
)

// Pipeline sizing: chunks large enough that syscalls are cheap, few enough
// that memory stays bounded (chunkSize * buffers in all). A buffer is held
// by a writer and a hasher at once, so there are enough for two writes in
// flight, two hashes and the reader filling the next ones.
const (
	chunkSize = 4 << 20
	buffers   = 8
	writers   = 2
)

// writebackStarter is implemented by devices that can start flushing a
// range early (partitions.PartIO); see StartWriteback there.
type writebackStarter interface {
	StartWriteback(off, n int64) error
}

// chunk is one buffer of the image on its way to the writer and a hasher;
// whichever finishes last returns the buffer.
type chunk struct {
	buf  []byte
	off  int64
	n    int
	refs atomic.Int32
}

// ImageStream delivers an image into the install pipeline, possibly from
// several goroutines at once and out of order: it takes empty buffers
// from get and hands each filled one to put with the image offset its
// bytes belong at (n == 0 hands a buffer back unused). Buffers are at
// most chunkSize long, a multiple of 4096; offsets and lengths must be multiples of 4096, and
// together the puts must cover the image exactly once, or the install
// fails. release.(*Release).StreamRoot has this shape.
type ImageStream func(ctx context.Context, get func(context.Context) ([]byte, error), put func(buf []byte, off int64, n int) error) error

// readerStream is the ImageStream of an ordered reader of size bytes; it
// also feeds digest (when not nil) and refuses a stream of another length.
func readerStream(src io.Reader, size int64, digest hash.Hash) ImageStream {
	return func(ctx context.Context, get func(context.Context) ([]byte, error), put func(buf []byte, off int64, n int) error) error {
		var off int64
		for off < size {
			buf, err := get(ctx)
			if err != nil {
				return err
			}
			n := min(int64(len(buf)), size-off)
			if _, err := io.ReadFull(src, buf[:n]); err != nil {
				_ = put(buf, 0, 0)
				if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
					return fmt.Errorf("%w: image ended after %d bytes, expected %d", ErrBadInput, off, size)
				}
				return fmt.Errorf("read image: %w", err)
			}
			if digest != nil {
				digest.Write(buf[:n])
			}
			if err := put(buf, off, int(n)); err != nil {
				return err
			}
			off += n
		}
		// The stream must end exactly at size: a longer one is not the
		// image the caller described.
		var one [1]byte
		if n, _ := io.ReadFull(src, one[:]); n > 0 {
			return fmt.Errorf("%w: image is longer than the declared %d bytes", ErrBadInput, size)
		}
		return nil
	}
}

// writeSlot writes the image that stream delivers (size bytes) into dev at
// offset 0 and builds the verity tree of the same bytes. Stages run at
// once: the stream fills aligned buffers (a release decodes several chunks
// in parallel), two writers write them to the slot, and hash workers (one
// per CPU) hash the same buffers while they are written. dev may be a
// direct-I/O device (partitions.PartIO.OpenDirect), which is why every
// buffer, offset and length is a multiple of 4096.
//
// The tree is hashed from the buffers, not from a read-back: a buffered
// read-back comes from the page cache, not the disk, so it proved nothing
// a buffer hash does not, and cost a copy per byte; the device's actual
// content is checked by dm-verity on every read after boot (a slot that
// did not keep its bytes fails verification and falls back).
//
// It then writes the tree at params.HashOffset, fsyncs, reads the tree
// back (from the device, with direct I/O) and checks it, and returns the
// verity root hash.
func writeSlot(ctx context.Context, stream ImageStream, size int64, dev SlotDevice, params verity.Params, progress func(done, total int64), phase func(string)) ([]byte, error) {
	builder, err := verity.NewBuilder(params)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	fail := func(err error) { cancel(err) }

	// A small image needs neither full-size nor all the buffers.
	bufSize := min(chunkSize, (size+verity.BlockSize-1)/verity.BlockSize*verity.BlockSize)
	free := make(chan []byte, buffers)
	for range min(buffers, (size+bufSize-1)/bufSize+writers) {
		free <- aligned.Buffer(int(bufSize))
	}
	release := func(c *chunk) {
		if c.refs.Add(-1) == 0 {
			free <- c.buf
		}
	}
	toWrite := make(chan *chunk, buffers)
	toHash := make(chan *chunk, buffers)
	wb, _ := dev.(writebackStarter)
	var progressMu sync.Mutex
	var done int64

	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range toWrite {
				if ctx.Err() == nil {
					if _, err := dev.WriteAt(c.buf[:c.n], c.off); err != nil {
						fail(fmt.Errorf("write at offset %d: %w", c.off, err))
					} else {
						if wb != nil {
							// Errors here are only a lost hint; Sync reports real ones.
							_ = wb.StartWriteback(c.off, int64(c.n))
						}
						progressMu.Lock()
						done += int64(c.n)
						if progress != nil {
							progress(done, size)
						}
						progressMu.Unlock()
					}
				}
				release(c)
			}
		}()
	}
	for range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range toHash {
				if ctx.Err() == nil {
					if err := builder.Add(uint64(c.off/verity.BlockSize), c.buf[:c.n]); err != nil {
						fail(err)
					}
				}
				release(c)
			}
		}()
	}
	get := func(ctx context.Context) ([]byte, error) {
		select {
		case b := <-free:
			return b, nil
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
	put := func(buf []byte, off int64, n int) error {
		if n == 0 {
			free <- buf[:cap(buf)]
			return nil
		}
		if off < 0 || off%verity.BlockSize != 0 || n%verity.BlockSize != 0 || off+int64(n) > size {
			free <- buf[:cap(buf)]
			return fmt.Errorf("image stream put %d bytes at offset %d of a %d-byte image", n, off, size)
		}
		c := &chunk{buf: buf[:cap(buf)], off: off, n: n}
		c.refs.Store(2)
		toWrite <- c
		toHash <- c
		return nil
	}
	err = stream(ctx, get, put)
	close(toWrite)
	close(toHash)
	if err != nil {
		fail(err)
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	if done != size {
		// Overlapping puts; a gap would also fail Finish below.
		return nil, fmt.Errorf("image stream delivered %d bytes of a %d-byte image", done, size)
	}

	phase("stream+hash")
	root, tree, err := builder.Finish()
	if err != nil {
		return nil, err
	}
	// The tree goes out and comes back through one of the (aligned, now
	// idle) pipeline buffers, a piece at a time: direct I/O needs aligned
	// memory, and whole-tree copies would add twice the tree's size (8 MiB
	// per GiB of image) to the peak.
	var buf []byte
	select {
	case buf = <-free:
	default: // a stream that kept a buffer must not hang the install
		buf = aligned.Buffer(int(bufSize))
	}
	base := int64(params.HashOffset)
	for off := 0; off < len(tree); off += len(buf) {
		n := copy(buf, tree[off:])
		if _, err := dev.WriteAt(buf[:n], base+int64(off)); err != nil {
			return nil, fmt.Errorf("write verity tree: %w", err)
		}
	}
	phase("tree")
	if err := dev.Sync(); err != nil {
		return nil, fmt.Errorf("fsync slot: %w", err)
	}
	phase("fsync")
	for off := 0; off < len(tree); off += len(buf) {
		n := min(len(buf), len(tree)-off)
		if _, err := dev.ReadAt(buf[:n], base+int64(off)); err != nil {
			return nil, fmt.Errorf("read back verity tree: %w", err)
		}
		if !bytes.Equal(buf[:n], tree[off:off+n]) {
			return nil, fmt.Errorf("%w: verity tree read back from the slot differs from the one written (at tree offset %d)", ErrVerify, off)
		}
	}
	return root, nil
}
