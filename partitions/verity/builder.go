package verity

import (
	"errors"
	"fmt"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
)

// Builder computes a hash tree from data blocks given in any order, so an
// install pipeline can hash each chunk while it writes it instead of
// reading the whole slot back afterwards.
//
// Add may be called from several goroutines at once as long as their block
// ranges are disjoint; a block added again is refused (and the whole tree
// must then be given up: the refused call's other blocks count as added).
// Finish must not run concurrently with Add.
type Builder struct {
	p    Params
	geo  geometry
	tree []byte // whole tree in on-disk order; level 0 is filled by Add
	// single holds the root for a one-block device, which has no tree.
	single [DigestSize]byte

	// covered has one bit per data block so Finish can tell a missing block
	// from a block added twice; 32 KiB for 1 GiB of data.
	covered []atomic.Uint64
	count   atomic.Uint64 // blocks whose bit is set
	done    atomic.Bool

	hashers sync.Pool
}

// ErrFinished is returned by Add and Finish once Finish has run.
var ErrFinished = errors.New("verity: builder already finished")

// NewBuilder returns a Builder for a tree over p.DataBlocks blocks.
func NewBuilder(p Params) (*Builder, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	b := &Builder{
		p:       p,
		geo:     newGeometry(p.DataBlocks),
		covered: make([]atomic.Uint64, (p.DataBlocks+63)/64),
	}
	b.tree = make([]byte, b.geo.total*BlockSize)
	salt := append([]byte(nil), p.Salt...) // the caller may reuse its slice
	b.hashers.New = func() any { return newHasher(salt) }
	b.p.Salt = salt
	return b, nil
}

// Params returns the parameters the builder was made with.
func (b *Builder) Params() Params { return b.p }

// Add hashes the data blocks in p, which start at data block firstBlock.
// len(p) must be a multiple of BlockSize. p is not retained. The hashing
// runs on the calling goroutine, so a pipeline gets parallelism by adding
// from several goroutines; per-goroutine hash states are pooled, so Add
// does not allocate per call.
func (b *Builder) Add(firstBlock uint64, p []byte) error {
	hs := b.hashers.Get().(*hasher)
	err := b.add(hs, firstBlock, p)
	b.hashers.Put(hs)
	return err
}

func (b *Builder) add(hs *hasher, first uint64, p []byte) error {
	if b.done.Load() {
		return ErrFinished
	}
	if len(p)%BlockSize != 0 {
		return fmt.Errorf("verity: add of %d bytes is not a multiple of %d", len(p), BlockSize)
	}
	n := uint64(len(p) / BlockSize)
	if first > b.p.DataBlocks || n > b.p.DataBlocks-first {
		return fmt.Errorf("verity: blocks [%d,%d) are outside the %d data blocks", first, first+n, b.p.DataBlocks)
	}
	if n == 0 {
		return nil
	}
	// Claimed before hashing: two adds of one block would otherwise write
	// its digest at the same time.
	if again := b.claim(first, first+n); again >= 0 {
		return fmt.Errorf("verity: block %d was added twice", again)
	}
	if b.geo.total == 0 {
		hs.digestTo(b.single[:], p)
	} else {
		hs.digestBlocks(b.geo.level(b.tree, 0)[first*DigestSize:], p)
	}
	return nil
}

// claim marks blocks [lo,hi) as added, a word of the bitmap at a time,
// and returns the first of them that was added before, or -1.
func (b *Builder) claim(lo, hi uint64) (again int64) {
	again = -1
	for lo < hi {
		w, bit := lo/64, lo%64
		span := min(64-bit, hi-lo)
		mask := ^uint64(0) >> (64 - span) << bit
		old := b.covered[w].Or(mask)
		if added := bits.OnesCount64(mask &^ old); added > 0 {
			b.count.Add(uint64(added))
		}
		if dup := mask & old; dup != 0 && again < 0 {
			again = int64(w*64) + int64(bits.TrailingZeros64(dup))
		}
		lo += span
	}
	return again
}

// firstMissing returns the lowest data block never added.
func (b *Builder) firstMissing() uint64 {
	for w := range b.covered {
		if v := b.covered[w].Load(); v != ^uint64(0) {
			blk := uint64(w)*64 + uint64(bits.TrailingZeros64(^v))
			if blk < b.p.DataBlocks {
				return blk
			}
		}
	}
	return b.p.DataBlocks
}

// Finish computes the upper levels and returns the root hash and the tree
// in on-disk order (empty for a one-block device), to be written at
// HashOffset. It fails if some data block was never added.
func (b *Builder) Finish() (root []byte, tree []byte, err error) {
	if b.done.Swap(true) {
		return nil, nil, ErrFinished
	}
	if got := b.count.Load(); got != b.p.DataBlocks {
		return nil, nil, fmt.Errorf("verity: %d of %d data blocks never added (first missing: %d)",
			b.p.DataBlocks-got, b.p.DataBlocks, b.firstMissing())
	}
	if b.geo.total == 0 {
		return append([]byte(nil), b.single[:]...), []byte{}, nil
	}
	workers := runtime.GOMAXPROCS(0)
	top := len(b.geo.blocks) - 1
	for i := 0; i < top; i++ {
		src, dst := b.geo.level(b.tree, i), b.geo.level(b.tree, i+1)
		parallelBlocks(b.geo.blocks[i], workers, b.p.Salt, func(hs *hasher, lo, hi uint64) {
			hs.digestBlocks(dst[lo*DigestSize:], src[lo*BlockSize:hi*BlockSize])
		})
	}
	hs := b.hashers.Get().(*hasher)
	root = append([]byte(nil), hs.digest(b.geo.level(b.tree, top))...)
	b.hashers.Put(hs)
	tree, b.tree = b.tree, nil
	return root, tree, nil
}

// parallelBlocks splits blocks [0,n) into contiguous ranges and runs fn on
// them from up to workers goroutines, each with its own hasher. Small
// levels stay on the calling goroutine: starting goroutines would cost more
// than hashing a few dozen blocks.
func parallelBlocks(n uint64, workers int, salt []byte, fn func(hs *hasher, lo, hi uint64)) {
	const minPerWorker = 64
	w := uint64(max(workers, 1))
	w = min(w, max(n/minPerWorker, 1))
	if w == 1 {
		fn(newHasher(salt), 0, n)
		return
	}
	var wg sync.WaitGroup
	per := (n + w - 1) / w
	for lo := uint64(0); lo < n; lo += per {
		hi := min(lo+per, n)
		wg.Go(func() { fn(newHasher(salt), lo, hi) })
	}
	wg.Wait()
}
