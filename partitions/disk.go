package partitions

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"sealift/bootloader"
)

// Disk is an opened sealift disk: a block device or an image file whose
// GPT holds the layout's four partitions.
type Disk struct {
	path       string
	f          *os.File
	writable   bool
	blockDev   *blockDev // nil for an image file
	sectorSize int64
	size       int64
	diskGUID   string
	parts      map[role]Part
	host       host
}

// Open opens a disk and finds its partitions by type GUID and label. A
// read-only Disk still reads everything; writes fail with ErrReadOnly.
//
// On a block device the whole-disk node must be given: a partition node
// fails with ErrUnknownDisk naming the disk to use instead.
func Open(path string, writable bool) (*Disk, error) { return realHost.open(path, writable) }

func (h host) open(path string, writable bool) (*Disk, error) {
	kind, bd, err := h.classify(path)
	if err != nil {
		return nil, err
	}
	flag := os.O_RDONLY
	if writable {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("open disk %s: %w", path, err)
	}
	d := &Disk{path: path, f: f, writable: writable, host: h}
	if kind == kindBlock {
		d.blockDev = bd
	}
	if err := d.init(); err != nil {
		f.Close()
		return nil, err
	}
	return d, nil
}

type targetKind int

const (
	kindMissing targetKind = iota
	kindFile
	kindBlock
)

// classify tells an image file from a whole-disk block device and rejects
// anything else.
func (h host) classify(path string) (targetKind, *blockDev, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return kindMissing, nil, fmt.Errorf("%w: %s does not exist", ErrUnknownDisk, path)
		}
		return kindMissing, nil, fmt.Errorf("%w: %s: %v", ErrUnknownDisk, path, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return kindFile, nil, nil
	case unix.S_IFBLK:
		dev := devNumOf(uint64(st.Rdev))
		name, err := h.nameOf(dev)
		if err != nil {
			return kindBlock, nil, fmt.Errorf("%w: %s: %v", ErrUnknownDisk, path, err)
		}
		if h.isPartition(name) {
			parent, _ := h.parentDisk(name)
			return kindBlock, nil, fmt.Errorf("%w: %s is partition %s; give the whole disk (/dev/%s)", ErrUnknownDisk, path, name, parent)
		}
		return kindBlock, &blockDev{name: name, dev: dev}, nil
	}
	return kindMissing, nil, fmt.Errorf("%w: %s is neither a block device nor a regular file", ErrUnknownDisk, path)
}

func (d *Disk) init() error {
	size, err := d.f.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("disk %s: size: %w", d.path, err)
	}
	d.size = size
	d.sectorSize, err = d.logicalSectorSize()
	if err != nil {
		return err
	}
	t, err := readGPT(d.f, d.size, d.sectorSize)
	if err != nil {
		return fmt.Errorf("disk %s: %w", d.path, err)
	}
	d.diskGUID = t.hdr.diskGUID
	d.parts, err = discover(d.path, t)
	return err
}

// logicalSectorSize asks the kernel for a block device. An image has no
// such property: it is 512 unless the GPT header sits at 4096 (an image of
// a 4Kn disk).
func (d *Disk) logicalSectorSize() (int64, error) {
	if d.blockDev != nil {
		n, err := unix.IoctlGetInt(int(d.f.Fd()), unix.BLKSSZGET)
		if err != nil {
			return 0, fmt.Errorf("disk %s: logical sector size: %w", d.path, err)
		}
		return int64(n), nil
	}
	sig := make([]byte, 8)
	if _, err := d.f.ReadAt(sig, 512); err == nil && string(sig) == string(gptSignature) {
		return 512, nil
	}
	if _, err := d.f.ReadAt(sig, 4096); err == nil && string(sig) == string(gptSignature) {
		return 4096, nil
	}
	return 512, nil
}

// discover finds each role's partition by type and label. Matching both
// protects against a disk that carries, say, a foreign Linux root
// partition: its type alone must not make it slot A.
func discover(path string, t *gptTable) (map[role]Part, error) {
	found := map[role]Part{}
	var errs []error
	for _, r := range roles {
		var hits []gptEntry
		var nearMisses []string
		for _, e := range t.parsed {
			switch {
			case e.typeGUID == r.typeGUID && e.name == r.label:
				hits = append(hits, e)
			case e.name == r.label:
				nearMisses = append(nearMisses, fmt.Sprintf("partition %d has label %s but type %s", e.index, e.name, e.typeGUID))
			}
		}
		switch len(hits) {
		case 0:
			msg := fmt.Sprintf("disk %s: no %s partition (type %s, label %s)", path, r.label, shortType(r.typeGUID), r.label)
			if len(nearMisses) > 0 {
				msg += "; " + strings.Join(nearMisses, "; ")
			}
			errs = append(errs, fmt.Errorf("%s: %w", msg, ErrMissingSlot))
		case 1:
			e := hits[0]
			found[r] = Part{
				Index:    e.index,
				Label:    e.name,
				TypeGUID: e.typeGUID,
				PartUUID: e.partUUID,
				Start:    int64(e.firstLBA) * t.sectorSize,
				Size:     int64(e.lastLBA-e.firstLBA+1) * t.sectorSize,
			}
		default:
			idx := make([]string, len(hits))
			for i, e := range hits {
				idx[i] = fmt.Sprint(e.index)
			}
			errs = append(errs, fmt.Errorf("disk %s: partitions %s all are %s (type %s): %w",
				path, strings.Join(idx, ", "), r.label, shortType(r.typeGUID), ErrDuplicateSlot))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	a, b := found[roleRootA], found[roleRootB]
	if a.Size != b.Size {
		return nil, fmt.Errorf("disk %s: ROOT-A is %d bytes but ROOT-B is %d bytes: %w", path, a.Size, b.Size, ErrSlotSizeMismatch)
	}
	for _, r := range roles {
		p := found[r]
		if p.Start < int64(t.hdr.firstUsable)*t.sectorSize || p.End() > int64(t.hdr.lastUsable+1)*t.sectorSize {
			return nil, fmt.Errorf("disk %s: %s lies outside the usable area of the GPT: %w", path, p, ErrUnknownDisk)
		}
		// Overlapping slots would make writing one corrupt the other.
		for _, e := range t.parsed {
			s, end := int64(e.firstLBA)*t.sectorSize, int64(e.lastLBA+1)*t.sectorSize
			if e.index != p.Index && s < p.End() && p.Start < end {
				return nil, fmt.Errorf("disk %s: %s overlaps partition %d: %w", path, p, e.index, ErrUnknownDisk)
			}
		}
	}
	return found, nil
}

// Path is the path the disk was opened with.
func (d *Disk) Path() string { return d.path }

// IsBlockDevice reports whether the disk is a block device (not an image).
func (d *Disk) IsBlockDevice() bool { return d.blockDev != nil }

// Writable reports whether the disk was opened for writing.
func (d *Disk) Writable() bool { return d.writable }

// Size is the size of the whole disk in bytes.
func (d *Disk) Size() int64 { return d.size }

// SectorSize is the disk's logical sector size, the unit of GPT LBAs.
func (d *Disk) SectorSize() int64 { return d.sectorSize }

// DiskGUID is the GPT disk GUID, lower case.
func (d *Disk) DiskGUID() string { return d.diskGUID }

// Close releases the disk, and with it the lock if one is held.
func (d *Disk) Close() error {
	if d.f == nil {
		return nil
	}
	err := d.f.Close()
	d.f = nil
	return err
}

// Slot returns the partition of a root slot; the zero Part for an invalid
// slot.
func (d *Disk) Slot(s bootloader.Slot) Part {
	r, ok := slotRole(s)
	if !ok {
		return Part{}
	}
	return d.parts[r]
}

// ESP returns the EFI system partition.
func (d *Disk) ESP() Part { return d.parts[roleESP] }

// State returns the STATE partition.
func (d *Disk) State() Part { return d.parts[roleState] }

// Lock takes sealift's exclusive lock on the disk: a non-blocking flock on
// the opened device node or image file, held until unlock or Close. A
// second sealift (or a second Open in this process) gets ErrLocked.
//
// flock on a whole-disk node also keeps systemd-udevd from probing the
// disk while it is held, which is what a partitioning tool wants. udevd
// itself takes a shared flock briefly while probing, so a few attempts are
// made over about a second before giving up.
func (d *Disk) Lock() (unlock func() error, err error) {
	if d.f == nil {
		return nil, fmt.Errorf("disk %s: closed", d.path)
	}
	fd := int(d.f.Fd())
	var lastErr error
	for attempt := 0; attempt < 10; attempt++ {
		lastErr = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if lastErr == nil {
			f := d.f
			return func() error {
				if f == nil || d.f != f {
					return nil // closed: the lock went with the descriptor
				}
				if err := unix.Flock(int(f.Fd()), unix.LOCK_UN); err != nil {
					return fmt.Errorf("unlock %s: %w", d.path, err)
				}
				return nil
			}, nil
		}
		if !errors.Is(lastErr, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %s: %w", d.path, lastErr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	holder := lockHolders(d.f)
	if holder != "" {
		holder = " (held by " + holder + ")"
	}
	return nil, fmt.Errorf("%w: %s%s", ErrLocked, d.path, holder)
}

// lockHolders names the processes /proc/locks says hold a flock on f.
func lockHolders(f *os.File) string {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return ""
	}
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		return ""
	}
	// "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"; the device is in
	// hex major:minor of the filesystem holding the inode.
	want := fmt.Sprintf(":%d", st.Ino)
	var pids []string
	for _, line := range strings.Split(string(b), "\n") {
		fs := strings.Fields(line)
		if len(fs) < 6 || fs[1] != "FLOCK" || !strings.HasSuffix(fs[5], want) {
			continue
		}
		maj, min := unix.Major(uint64(st.Dev)), unix.Minor(uint64(st.Dev))
		if !strings.HasPrefix(fs[5], fmt.Sprintf("%02x:%02x:", maj, min)) {
			continue
		}
		pid := fs[4]
		if comm, err := os.ReadFile(filepath.Join("/proc", pid, "comm")); err == nil {
			pid += " " + strings.TrimSpace(string(comm))
		}
		pids = append(pids, "pid "+pid)
	}
	sort.Strings(pids)
	return strings.Join(pids, ", ")
}

// readTable reads the GPT afresh and checks that the layout's partitions
// are still where Open found them.
func (d *Disk) readTable() (*gptTable, error) {
	if d.f == nil {
		return nil, fmt.Errorf("disk %s: closed", d.path)
	}
	t, err := readGPT(d.f, d.size, d.sectorSize)
	if err != nil {
		return nil, fmt.Errorf("disk %s: %w", d.path, err)
	}
	for _, r := range roles {
		p := d.parts[r]
		ok := false
		for _, e := range t.parsed {
			if e.index == p.Index {
				ok = e.partUUID == p.PartUUID && e.typeGUID == p.TypeGUID &&
					int64(e.firstLBA)*d.sectorSize == p.Start
			}
		}
		if !ok {
			return nil, fmt.Errorf("disk %s: %s: %w", d.path, p, ErrTableChanged)
		}
	}
	return t, nil
}

// Attributes returns the raw 64-bit GPT attribute word of a slot's
// partition. The table is read from the disk on every call: bootloaders
// that keep flags there (ChromeOS gptprio) rewrite it at every trial boot.
func (d *Disk) Attributes(s bootloader.Slot) (uint64, error) {
	r, ok := slotRole(s)
	if !ok {
		return 0, fmt.Errorf("unknown slot %q", s)
	}
	t, err := d.readTable()
	if err != nil {
		return 0, err
	}
	idx := d.parts[r].Index
	for _, e := range t.parsed {
		if e.index == idx {
			return e.attrs, nil
		}
	}
	return 0, fmt.Errorf("disk %s: %s: %w", d.path, d.parts[r], ErrTableChanged)
}

// SetAttributes replaces the attribute words of the given slots in one
// read-modify-write of the table as it is on disk now: every other byte
// of both GPT copies is kept, the CRCs are recomputed, the backup and then
// the primary are written, each made durable before the next step.
func (d *Disk) SetAttributes(attrs map[bootloader.Slot]uint64) error {
	if !d.writable {
		return fmt.Errorf("disk %s: set GPT attributes: %w", d.path, ErrReadOnly)
	}
	byIndex := map[int]uint64{}
	for s, v := range attrs {
		r, ok := slotRole(s)
		if !ok {
			return fmt.Errorf("unknown slot %q", s)
		}
		byIndex[d.parts[r].Index] = v
	}
	if len(byIndex) == 0 {
		return nil
	}
	t, err := d.readTable()
	if err != nil {
		return err
	}
	if err := t.setAttributes(d.f, byIndex); err != nil {
		return fmt.Errorf("disk %s: %w", d.path, err)
	}
	return nil
}
