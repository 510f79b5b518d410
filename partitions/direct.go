package partitions

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"sealift/internal/aligned"
)

// OpenDirect opens the same partition a second time for direct I/O
// (O_DIRECT): writes go to the device without a copy into the page cache
// and without writeback afterwards, and reads come from the device. For
// a slot that is written once and read only after a reboot, the page
// cache would be pure cost: a core's worth of copying and flushing per
// gigabyte, and the running workloads' cached files evicted to make room.
//
// Every ReadAt and WriteAt of the returned PartIO must use a buffer from
// aligned.Buffer and offsets and lengths that are multiples of
// aligned.Align, or it fails with ErrMisaligned. Filesystems without
// O_DIRECT (tmpfs before Linux 6.6, some FUSE) fail here; callers fall
// back to the buffered PartIO.
func (p *PartIO) OpenDirect() (*PartIO, error) {
	if p.f == nil {
		return nil, os.ErrClosed
	}
	if p.base%aligned.Align != 0 {
		return nil, fmt.Errorf("%s: partition starts at byte %d, not a multiple of %d: %w", p.name, p.base, aligned.Align, ErrMisaligned)
	}
	flag := os.O_RDONLY
	if p.writable {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(p.f.Name(), flag|unix.O_DIRECT, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: open for direct I/O: %w", p.name, err)
	}
	return &PartIO{f: f, base: p.base, size: p.size, writable: p.writable, direct: true, name: p.name}, nil
}

// Direct reports whether p was opened by OpenDirect.
func (p *PartIO) Direct() bool { return p.direct }

func directAligned(b []byte, off int64) bool {
	return aligned.Is(b) && off%aligned.Align == 0 && len(b)%aligned.Align == 0
}
