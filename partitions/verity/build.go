package verity

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
)

// chunkSize is how much one read takes from the device. 1 MiB reads keep
// the per-syscall cost negligible and give the kernel large requests on a
// cold device, yet still fit in a core's L2 cache, so the data is hashed
// while the copy the read made is hot: measured on a 1 GiB file in page
// cache, 1 MiB with the reading done by the hashing goroutine was ~20%
// faster than 2 MiB chunks handed from one reader goroutine to hashers.
const chunkSize = 1 << 20

func defaultWorkers(workers int) int {
	if workers <= 0 {
		return runtime.NumCPU()
	}
	return workers
}

// chunk is a run of data blocks read from the device.
type chunk struct {
	first uint64 // index of the first block
	buf   []byte
}

// scanData reads data blocks [0,n) of dev from byte 0 in chunkSize reads
// and calls fn on each chunk from workers goroutines, each with its own
// hasher and one reused buffer. Each goroutine reads the next chunk in
// order and hashes it itself: reads of one worker overlap the hashing of
// the others, the device still sees nearly sequential reads (and kernel
// readahead keeps I/O going while a lone worker hashes), and memory stays
// at one chunk per worker. The first error stops the scan and is returned.
func scanData(dev io.ReaderAt, n uint64, workers int, salt []byte, fn func(hs *hasher, c chunk) error) error {
	chunkBlocks := uint64(chunkSize / BlockSize)
	workers = int(min(uint64(workers), (n+chunkBlocks-1)/chunkBlocks))
	var (
		next     atomic.Uint64 // first block of the next unclaimed chunk
		failed   atomic.Bool
		once     sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			hs := newHasher(salt)
			buf := make([]byte, min(chunkBlocks, n)*BlockSize)
			for !failed.Load() {
				first := next.Add(chunkBlocks) - chunkBlocks
				if first >= n {
					return
				}
				c := chunk{first: first, buf: buf[:min(chunkBlocks, n-first)*BlockSize]}
				err := readFull(dev, c.buf, int64(first*BlockSize), "data")
				if err == nil {
					err = fn(hs, c)
				}
				if err != nil {
					once.Do(func() { firstErr = err })
					failed.Store(true)
					return
				}
			}
		})
	}
	wg.Wait()
	return firstErr
}

// Build reads the p.DataBlocks data blocks from the start of dev and
// returns the root hash and the tree in on-disk order, ready to be written
// at p.HashOffset. Hashing runs on workers goroutines (runtime.NumCPU()
// when workers <= 0).
func Build(dev io.ReaderAt, p Params, workers int) (root, tree []byte, err error) {
	b, err := NewBuilder(p)
	if err != nil {
		return nil, nil, err
	}
	err = scanData(dev, p.DataBlocks, defaultWorkers(workers), b.p.Salt, func(hs *hasher, c chunk) error {
		return b.add(hs, c.first, c.buf)
	})
	if err != nil {
		return nil, nil, err
	}
	return b.Finish()
}

// Verify checks dev, holding p.DataBlocks data blocks from byte 0 and the
// tree at p.HashOffset, against root. It checks the stored tree top-down
// from the root, then recomputes every data block's digest and compares it
// with the (now trusted) stored level 0, so the whole tree and all data are
// covered. A disagreement is returned as a *MismatchError naming the
// highest bad hash block, or else the lowest bad data block; read failures
// are returned as they are, wrapped.
func Verify(dev io.ReaderAt, p Params, root []byte, workers int) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if len(root) != DigestSize {
		return fmt.Errorf("verity: root hash is %d bytes, want %d", len(root), DigestSize)
	}
	if p.HashOffset < p.DataBlocks*BlockSize {
		return fmt.Errorf("verity: hash offset %d lies inside the %d data blocks", p.HashOffset, p.DataBlocks)
	}
	workers = defaultWorkers(workers)
	geo := newGeometry(p.DataBlocks)

	if geo.total == 0 {
		// One data block, no tree: the root is the block's own digest.
		block := make([]byte, BlockSize)
		if err := readFull(dev, block, 0, "data"); err != nil {
			return err
		}
		if !bytes.Equal(newHasher(p.Salt).digest(block), root) {
			return &MismatchError{Level: LevelData, Block: 0, Offset: 0}
		}
		return nil
	}

	tree := make([]byte, geo.total*BlockSize)
	if err := readFull(dev, tree, int64(p.HashOffset), "hash tree"); err != nil {
		return err
	}
	if err := checkTree(tree, geo, p, root, workers); err != nil {
		return err
	}

	// Data blocks against the verified level 0. Keep the lowest bad block
	// so the answer does not depend on worker scheduling; chunks wholly
	// above it need no hashing.
	level0 := geo.level(tree, 0)
	var bad atomic.Uint64
	bad.Store(p.DataBlocks)
	err := scanData(dev, p.DataBlocks, workers, p.Salt, func(hs *hasher, c chunk) error {
		if c.first >= bad.Load() {
			return nil
		}
		for i := uint64(0); i < uint64(len(c.buf)/BlockSize); i++ {
			blk := c.first + i
			if !bytes.Equal(hs.digest(c.buf[i*BlockSize:(i+1)*BlockSize]), level0[blk*DigestSize:(blk+1)*DigestSize]) {
				storeMin(&bad, blk)
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if blk := bad.Load(); blk < p.DataBlocks {
		return &MismatchError{Level: LevelData, Block: blk, Offset: blk * BlockSize}
	}
	return nil
}

// checkTree verifies the stored tree from the root down: the top block
// against root, then each level's blocks against the digests in the level
// above, which has already been found good.
func checkTree(tree []byte, geo geometry, p Params, root []byte, workers int) error {
	top := len(geo.blocks) - 1
	mismatch := func(level int, block uint64) error {
		return &MismatchError{Level: level, Block: block,
			Offset: p.HashOffset + (geo.start[level]+block)*BlockSize}
	}
	if !bytes.Equal(newHasher(p.Salt).digest(geo.level(tree, top)), root) {
		return mismatch(top, 0)
	}
	for i := top - 1; i >= 0; i-- {
		src, parent := geo.level(tree, i), geo.level(tree, i+1)
		var bad atomic.Uint64
		bad.Store(geo.blocks[i])
		parallelBlocks(geo.blocks[i], workers, p.Salt, func(hs *hasher, lo, hi uint64) {
			for k := lo; k < hi && k < bad.Load(); k++ {
				if !bytes.Equal(hs.digest(src[k*BlockSize:(k+1)*BlockSize]), parent[k*DigestSize:(k+1)*DigestSize]) {
					storeMin(&bad, k)
					return
				}
			}
		})
		if k := bad.Load(); k < geo.blocks[i] {
			return mismatch(i, k)
		}
	}
	return nil
}

// storeMin lowers v to x if x is smaller.
func storeMin(v *atomic.Uint64, x uint64) {
	for {
		old := v.Load()
		if x >= old || v.CompareAndSwap(old, x) {
			return
		}
	}
}

// readFull reads exactly len(buf) bytes at off, treating a short read as
// an error even when the ReaderAt reports none.
func readFull(r io.ReaderAt, buf []byte, off int64, what string) error {
	got, err := r.ReadAt(buf, off)
	if got == len(buf) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("verity: reading %s at offset %d: %w", what, off+int64(got), err)
}
