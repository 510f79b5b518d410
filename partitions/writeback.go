package partitions

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// StartWriteback asks the kernel to start writing [off, off+n) of the
// partition to the device now, without waiting. A streaming writer calls it
// behind itself so that the final fsync finds little left to flush: disk
// I/O then overlaps the rest of the stream instead of following it. It is
// a hint; durability still comes from Sync.
func (p *PartIO) StartWriteback(off, n int64) error {
	if p.f == nil {
		return os.ErrClosed
	}
	if p.direct {
		return nil // nothing cached to write back
	}
	if off < 0 || n < 0 || off > p.size || n > p.size-off {
		return fmt.Errorf("%s: writeback of %d bytes at %d: %w (size %d)", p.name, n, off, ErrOutOfBounds, p.size)
	}
	if err := unix.SyncFileRange(int(p.f.Fd()), p.base+off, n, unix.SYNC_FILE_RANGE_WRITE); err != nil {
		return fmt.Errorf("%s: start writeback: %w", p.name, err)
	}
	return nil
}
