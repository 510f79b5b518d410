package updater

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"
	"sync"

	"sealift/partitions/verity"
)

// Pipeline sizing: chunks large enough that syscalls are cheap, few enough
// that memory stays bounded (chunkSize * (buffers + hashers) in all).
const (
	chunkSize = 4 << 20
	buffers   = 4
)

// writebackStarter is implemented by devices that can start flushing a
// range early (partitions.PartIO); see StartWriteback there.
type writebackStarter interface {
	StartWriteback(off, n int64) error
}

type chunk struct {
	buf []byte
	off int64
	n   int
}

// writeSlot streams size bytes from src into dev at offset 0 and builds the
// verity tree from what was written. Three stages run at once: the reader
// fills buffers (and digests the stream), the writer writes them to the
// slot, and hash workers read each written range back from the slot and
// hash it. Hashing the read-back rather than the buffer means the tree
// describes what the slot holds, at no extra pass over the data.
//
// It then writes the tree at params.HashOffset, fsyncs, and checks that the
// tree on the device is the one computed. It returns the verity root hash
// and, when wantDigest, the "sha256:" digest of the stream.
func writeSlot(ctx context.Context, src io.Reader, size int64, dev SlotDevice, params verity.Params, wantDigest bool, progress func(done, total int64), phase func(string)) ([]byte, string, error) {
	builder, err := verity.NewBuilder(params)
	if err != nil {
		return nil, "", err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	fail := func(err error) { cancel(err) }

	free := make(chan []byte, buffers)
	for i := 0; i < buffers; i++ {
		free <- make([]byte, chunkSize)
	}
	toWrite := make(chan chunk, buffers)
	toHash := make(chan chunk, buffers)
	// The whole-stream sha256 costs a core's worth of hashing on top of the
	// verity tree, so it is only computed when a digest is to be checked.
	var digest hash.Hash
	if wantDigest {
		digest = sha256.New()
	}
	wb, _ := dev.(writebackStarter)

	var wg sync.WaitGroup
	// Writer.
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(toHash)
		var done int64
		for c := range toWrite {
			if ctx.Err() != nil {
				continue // drain
			}
			if _, err := dev.WriteAt(c.buf[:c.n], c.off); err != nil {
				fail(fmt.Errorf("write at offset %d: %w", c.off, err))
				continue
			}
			free <- c.buf
			if wb != nil {
				// Errors here are only a lost hint; Sync reports real ones.
				_ = wb.StartWriteback(c.off, int64(c.n))
			}
			done += int64(c.n)
			if progress != nil {
				progress(done, size)
			}
			toHash <- chunk{off: c.off, n: c.n}
		}
	}()
	// Hash workers read back what was written.
	workers := runtime.NumCPU()
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, chunkSize)
			for c := range toHash {
				if ctx.Err() != nil {
					continue
				}
				if _, err := dev.ReadAt(buf[:c.n], c.off); err != nil {
					fail(fmt.Errorf("read back at offset %d: %w", c.off, err))
					continue
				}
				if err := builder.Add(uint64(c.off/verity.BlockSize), buf[:c.n]); err != nil {
					fail(err)
				}
			}
		}()
	}
	// Reader, on this goroutine.
	readErr := func() error {
		defer close(toWrite)
		var off int64
		for off < size {
			var buf []byte
			select {
			case buf = <-free:
			case <-ctx.Done():
				return nil
			}
			n := int64(chunkSize)
			if size-off < n {
				n = size - off
			}
			if _, err := io.ReadFull(src, buf[:n]); err != nil {
				if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
					return fmt.Errorf("%w: image ended after %d bytes, expected %d", ErrBadInput, off, size)
				}
				return fmt.Errorf("read image: %w", err)
			}
			if digest != nil {
				digest.Write(buf[:n])
			}
			toWrite <- chunk{buf: buf, off: off, n: int(n)}
			off += n
		}
		// The stream must end exactly at size: a longer one is not the
		// image the caller described (and for a download, endless data).
		var one [1]byte
		if n, _ := io.ReadFull(src, one[:]); n > 0 {
			return fmt.Errorf("%w: image is longer than the declared %d bytes", ErrBadInput, size)
		}
		return nil
	}()
	if readErr != nil {
		fail(readErr)
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, "", err
	}

	phase("stream+hash")
	root, tree, err := builder.Finish()
	if err != nil {
		return nil, "", err
	}
	if len(tree) > 0 {
		if _, err := dev.WriteAt(tree, int64(params.HashOffset)); err != nil {
			return nil, "", fmt.Errorf("write verity tree: %w", err)
		}
	}
	phase("tree")
	if err := dev.Sync(); err != nil {
		return nil, "", fmt.Errorf("fsync slot: %w", err)
	}
	phase("fsync")
	if len(tree) > 0 {
		back := make([]byte, len(tree))
		if _, err := dev.ReadAt(back, int64(params.HashOffset)); err != nil {
			return nil, "", fmt.Errorf("read back verity tree: %w", err)
		}
		if !bytes.Equal(back, tree) {
			return nil, "", fmt.Errorf("%w: verity tree read back from the slot differs from the one written", ErrVerify)
		}
	}
	sum := ""
	if digest != nil {
		sum = "sha256:" + hex.EncodeToString(digest.Sum(nil))
	}
	return root, sum, nil
}
