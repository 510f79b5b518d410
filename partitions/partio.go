package partitions

import (
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// PartIO is I/O confined to one partition. Offsets are relative to the
// partition's start; nothing outside [0, Size) is ever read or written.
type PartIO struct {
	f        *os.File
	base     int64 // byte offset of the partition in f
	size     int64
	writable bool
	direct   bool   // opened with O_DIRECT (OpenDirect)
	name     string // for messages: "/dev/sda2" or "disk.img partition 2"
}

// OpenPartition opens one partition for I/O.
//
// On a block device the I/O goes to the partition's own device node
// (found through sysfs), not to the whole disk at an offset: the kernel
// keeps a separate page cache per node, and the partition node is what the
// kernel, dm-verity and mount read, so writing anywhere else could leave
// them stale data. Before using it, the kernel's idea of the partition's
// start and size is checked against the GPT. For an image file the I/O
// goes to the file at the partition's offset.
func (d *Disk) OpenPartition(p Part) (*PartIO, error) {
	if d.f == nil {
		return nil, fmt.Errorf("disk %s: closed", d.path)
	}
	if !d.isOurPart(p) {
		return nil, fmt.Errorf("disk %s: %s is not one of this disk's layout partitions", d.path, p)
	}
	flag := os.O_RDONLY
	if d.writable {
		flag = os.O_RDWR
	}
	if d.blockDev == nil {
		f, err := os.OpenFile(d.path, flag, 0)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", p, err)
		}
		return &PartIO{f: f, base: p.Start, size: p.Size, writable: d.writable,
			name: fmt.Sprintf("%s partition %d", d.path, p.Index)}, nil
	}
	node, dev, err := d.partitionNode(p)
	if err != nil {
		return nil, err
	}
	if d.writable {
		// Defence in depth behind the updater's choice of slot: a partition
		// that is mounted or held (dm-verity of the running root) is never
		// opened for writing.
		use, err := d.host.usage([]blockDev{dev})
		if err != nil {
			return nil, fmt.Errorf("disk %s: check whether %s is in use: %w", d.path, p, err)
		}
		if len(use) > 0 {
			return nil, fmt.Errorf("disk %s: refusing to write %s: %s: %w", d.path, p, strings.Join(use, "; "), ErrMounted)
		}
	}
	f, err := os.OpenFile(node, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", node, err)
	}
	return &PartIO{f: f, size: p.Size, writable: d.writable, name: node}, nil
}

func (d *Disk) isOurPart(p Part) bool {
	for _, q := range d.parts {
		if q == p {
			return true
		}
	}
	return false
}

// partitionNode resolves the device node of a partition of a block device
// and checks that the kernel's table agrees with the GPT on disk.
func (d *Disk) partitionNode(p Part) (string, blockDev, error) {
	kparts, err := d.host.partitionsOf(d.blockDev.name)
	if err != nil {
		return "", blockDev{}, fmt.Errorf("disk %s: %w", d.path, err)
	}
	kp, ok := kparts[p.Index]
	if !ok {
		return "", blockDev{}, fmt.Errorf("disk %s: the kernel has no partition %d (%s); re-read the partition table (partx -u %s) or reboot",
			d.path, p.Index, p.Label, d.path)
	}
	if kp.start != p.Start || kp.size != p.Size {
		return "", blockDev{}, fmt.Errorf("disk %s: the kernel's partition %d is at %d+%d bytes but the GPT says %d+%d; re-read the partition table or reboot",
			d.path, p.Index, kp.start, kp.size, p.Start, p.Size)
	}
	node, err := d.host.devNode(kp.blockDev)
	return node, kp.blockDev, err
}

// Name identifies the partition in messages.
func (p *PartIO) Name() string { return p.name }

// Size is the partition's size in bytes.
func (p *PartIO) Size() int64 { return p.size }

// ReadAt reads within the partition. A read that starts inside and runs
// past the end returns what is inside and io.EOF, as io.ReaderAt asks; one
// that starts beyond the end fails with ErrOutOfBounds.
func (p *PartIO) ReadAt(b []byte, off int64) (int, error) {
	if p.f == nil {
		return 0, os.ErrClosed
	}
	if off < 0 || off > p.size {
		return 0, fmt.Errorf("%s: read at %d: %w (size %d)", p.name, off, ErrOutOfBounds, p.size)
	}
	var eof bool
	if int64(len(b)) > p.size-off {
		b = b[:p.size-off]
		eof = true
	}
	if p.direct && !directAligned(b, off) {
		return 0, fmt.Errorf("%s: direct read of %d bytes at %d: %w", p.name, len(b), off, ErrMisaligned)
	}
	n, err := p.f.ReadAt(b, p.base+off)
	if err == nil && eof {
		err = io.EOF
	}
	return n, err
}

// WriteAt writes within the partition. Offset and length must be multiples
// of 512 (ErrMisaligned), and the whole write must fit (ErrOutOfBounds);
// otherwise nothing is written.
func (p *PartIO) WriteAt(b []byte, off int64) (int, error) {
	if p.f == nil {
		return 0, os.ErrClosed
	}
	if !p.writable {
		return 0, fmt.Errorf("%s: %w", p.name, ErrReadOnly)
	}
	if off%SectorSize != 0 || len(b)%SectorSize != 0 {
		return 0, fmt.Errorf("%s: write of %d bytes at %d: %w", p.name, len(b), off, ErrMisaligned)
	}
	if off < 0 || off > p.size || int64(len(b)) > p.size-off {
		return 0, fmt.Errorf("%s: write of %d bytes at %d: %w (size %d)", p.name, len(b), off, ErrOutOfBounds, p.size)
	}
	if p.direct && !directAligned(b, off) {
		return 0, fmt.Errorf("%s: direct write of %d bytes at %d: %w", p.name, len(b), off, ErrMisaligned)
	}
	n, err := p.f.WriteAt(b, p.base+off)
	if err != nil {
		return n, fmt.Errorf("%s: write at %d: %w", p.name, off, err)
	}
	return n, nil
}

// Sync makes written data durable (fdatasync: the data and what is needed
// to read it back, not timestamps).
func (p *PartIO) Sync() error {
	if p.f == nil {
		return os.ErrClosed
	}
	if err := unix.Fdatasync(int(p.f.Fd())); err != nil {
		return fmt.Errorf("%s: sync: %w", p.name, err)
	}
	return nil
}

// Close releases the partition. It does not sync.
func (p *PartIO) Close() error {
	if p.f == nil {
		return nil
	}
	err := p.f.Close()
	p.f = nil
	return err
}
