package partitions

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
	"unsafe"

	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/google/uuid"
	"golang.org/x/sys/unix"
)

// CreateOptions says where and how to create the layout.
type CreateOptions struct {
	// Size of a new image file in bytes; 0 for a block device, or to keep
	// the size of an existing (empty, or forced) image file.
	Size int64
	// Layout of the partitions; zero ESPSize or RootSize take the default.
	Layout Layout
	// Force overwrites an existing partition table or a non-empty image.
	// It never overrides ErrMounted.
	Force bool
}

// Create makes a new sealift disk: a GPT with the four partitions of the
// layout (random disk and partition GUIDs, written with go-diskfs), a
// FAT32 ESP (volume label "ESP", formatted here) and an ext4 STATE (label
// "STATE", formatted by mke2fs from e2fsprogs, which must be installed).
// The root slots are left empty (zero on an image, their first and last
// MiB zeroed on a device).
//
// path is a new image file (created sparse, of o.Size bytes), an existing
// empty image file, or a whole-disk block device. A device that is in use
// (mounted, swap, held by device-mapper, or opened exclusively) is refused
// with ErrMounted, as is an image attached to a loop device that is in
// use. An existing partition table is refused with ErrHasPartitionTable
// and a non-empty image with ErrNotEmpty, unless o.Force.
func Create(path string, o CreateOptions) error { return realHost.create(path, o) }

// plan is a layout placed on a disk, in bytes.
type plan struct {
	sectorSize               int64
	esp, rootA, rootB, state [2]int64 // start, size
}

func (l Layout) withDefaults() Layout {
	def := DefaultLayout()
	if l.ESPSize == 0 {
		l.ESPSize = def.ESPSize
	}
	if l.RootSize == 0 {
		l.RootSize = def.RootSize
	}
	return l
}

func (l Layout) validate() error {
	for _, c := range []struct {
		name       string
		v, minimum int64
	}{
		{"ESP", l.ESPSize, MinESPSize},
		{"root slot", l.RootSize, MinRootSize},
		{"STATE", l.StateSize, MinStateSize},
	} {
		if c.name == "STATE" && c.v == 0 {
			continue
		}
		if c.v < 0 || c.v%Alignment != 0 {
			return fmt.Errorf("%s size %d is not a multiple of 1 MiB", c.name, c.v)
		}
		if c.v < c.minimum {
			return fmt.Errorf("%w: %s size %s is below the minimum of %s", ErrTooSmall, c.name, formatBytes(c.v), formatBytes(c.minimum))
		}
	}
	return nil
}

// place puts the layout on a disk of the given size, 1 MiB aligned after a
// 1 MiB gap for the protective MBR and primary GPT.
func (l Layout) place(diskSize, sectorSize int64) (plan, error) {
	p := plan{sectorSize: sectorSize}
	if sectorSize > 512 && l.ESPSize < MinESPSize4Kn {
		return p, fmt.Errorf("%w: ESP size %s is below the minimum of %s for FAT32 on a disk with %d-byte sectors",
			ErrTooSmall, formatBytes(l.ESPSize), formatBytes(MinESPSize4Kn), sectorSize)
	}
	// The backup GPT takes the last sector and a 16 KiB entry array.
	arraySectors := (128*128 + sectorSize - 1) / sectorSize
	usableEnd := (diskSize/sectorSize - 1 - arraySectors) * sectorSize // first byte after the last usable LBA
	pos := int64(Alignment)
	take := func(size int64) [2]int64 {
		r := [2]int64{pos, size}
		pos += size
		return r
	}
	p.esp = take(l.ESPSize)
	p.rootA = take(l.RootSize)
	p.rootB = take(l.RootSize)
	stateSize := l.StateSize
	if stateSize == 0 {
		stateSize = (usableEnd/Alignment)*Alignment - pos
	}
	p.state = take(stateSize)
	minState := max(l.StateSize, MinStateSize)
	if stateSize < minState || pos > usableEnd {
		need := int64(Alignment) + l.ESPSize + 2*l.RootSize + minState + Alignment
		return p, fmt.Errorf("%w: the disk has %d bytes (%s) but the layout needs %d bytes (%s): 1 MiB for the GPT, ESP %s, 2 × root %s, STATE %s, 1 MiB for the backup GPT",
			ErrTooSmall, diskSize, formatBytes(diskSize), need, formatBytes(need),
			formatBytes(l.ESPSize), formatBytes(l.RootSize), formatBytes(minState))
	}
	return p, nil
}

func (h host) create(path string, o CreateOptions) (err error) {
	l := o.Layout.withDefaults()
	if err := l.validate(); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	st, statErr := os.Stat(path)
	switch {
	case errors.Is(statErr, os.ErrNotExist):
		return h.createImage(path, o, l, true)
	case statErr != nil:
		return fmt.Errorf("create %s: %w", path, statErr)
	case st.Mode().IsRegular():
		return h.createImage(path, o, l, false)
	case st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0:
		return h.createDevice(path, o, l)
	}
	return fmt.Errorf("create %s: %w: neither a block device nor a regular file", path, ErrUnknownDisk)
}

func (h host) createImage(path string, o CreateOptions, l Layout, isNew bool) (err error) {
	var f *os.File
	if isNew {
		if o.Size <= 0 {
			return fmt.Errorf("create %s: the image does not exist; give its size", path)
		}
		f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return fmt.Errorf("create %s: %w", path, err)
		}
		defer func() {
			if err != nil {
				os.Remove(path) // a half-made image is worse than none
			}
		}()
	} else {
		f, err = os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("create %s: %w", path, err)
		}
	}
	defer f.Close()
	if err := flockOrLocked(f, path); err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	if !isNew {
		use, err := h.imageUsage(fi)
		if err != nil {
			return fmt.Errorf("create %s: %w", path, err)
		}
		if len(use) > 0 {
			return fmt.Errorf("create %s: %w: %s", path, ErrMounted, strings.Join(use, "; "))
		}
		if size > 0 && !o.Force {
			kind, err := hasPartitionTable(f, size)
			if err != nil {
				return fmt.Errorf("create %s: %w", path, err)
			}
			if kind != "" {
				return fmt.Errorf("create %s: %w (%s); use force to overwrite it", path, ErrHasPartitionTable, kind)
			}
			empty, err := allZero(f, size)
			if err != nil {
				return fmt.Errorf("create %s: %w", path, err)
			}
			if !empty {
				return fmt.Errorf("create %s: %w (%d bytes of data); use force to overwrite it", path, ErrNotEmpty, size)
			}
		}
	}
	newSize := o.Size
	if newSize == 0 {
		newSize = size
	}
	if newSize <= 0 {
		return fmt.Errorf("create %s: the image is empty; give its size", path)
	}
	if newSize%SectorSize != 0 {
		return fmt.Errorf("create %s: size %d is not a multiple of %d", path, newSize, SectorSize)
	}
	p, err := l.place(newSize, SectorSize)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	// Dropping every block makes the whole image zero (and sparse), so no
	// signature of an earlier content survives anywhere.
	if err := f.Truncate(0); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := f.Truncate(newSize); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := writeTable(f, newSize, p); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := formatESP(f, p.esp[0], p.esp[1], p.sectorSize, p.esp[0]/p.sectorSize); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := formatState(path, p.state[0], p.state[1], true); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	// Formatting writes zeros (the FATs, STATE's inode tables); giving
	// those blocks back keeps the image as small as its content.
	if err := digHoles(f, p.esp[0], p.state[0]+p.state[1]); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("create %s: sync: %w", path, err)
	}
	return h.check(path)
}

func (h host) createDevice(path string, o CreateOptions, l Layout) error {
	kind, bd, err := h.classify(path)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	if kind != kindBlock || bd == nil {
		return fmt.Errorf("create %s: %w", path, ErrUnknownDisk)
	}
	devs, _, err := h.diskAndParts(*bd)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	use, err := h.usage(devs)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if len(use) > 0 {
		return fmt.Errorf("create %s: %w: %s", path, ErrMounted, strings.Join(use, "; "))
	}
	// O_EXCL on a block device is the kernel's own in-use check: it fails
	// while anything is mounted from the disk or holds it, and keeps
	// mounts out while we work.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_EXCL, 0)
	if errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("create %s: %w: the kernel reports the disk busy", path, ErrMounted)
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer f.Close()
	if err := flockOrLocked(f, path); err != nil {
		return err
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("create %s: size: %w", path, err)
	}
	if o.Size != 0 && o.Size != size {
		return fmt.Errorf("create %s: a size (%d) cannot be given for a block device (it has %d bytes)", path, o.Size, size)
	}
	ss, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET)
	if err != nil {
		return fmt.Errorf("create %s: logical sector size: %w", path, err)
	}
	if !o.Force {
		kind, err := hasPartitionTable(f, size)
		if err != nil {
			return fmt.Errorf("create %s: %w", path, err)
		}
		if kind != "" {
			return fmt.Errorf("create %s: %w (%s); use force to overwrite it", path, ErrHasPartitionTable, kind)
		}
	}
	p, err := l.place(size, int64(ss))
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	// A device keeps what was on it: wipe where old tables and filesystem
	// signatures live, so no tool finds a ghost of an earlier layout.
	wipes := [][2]int64{{0, Alignment}, {size - Alignment, Alignment}}
	for _, r := range [][2]int64{p.esp, p.rootA, p.rootB, p.state} {
		wipes = append(wipes, [2]int64{r[0], Alignment}, [2]int64{r[0] + r[1] - Alignment, Alignment})
	}
	zero := make([]byte, Alignment)
	for _, w := range wipes {
		if _, err := f.WriteAt(zero[:w[1]], w[0]); err != nil {
			return fmt.Errorf("create %s: wipe: %w", path, err)
		}
	}
	if err := writeTable(f, size, p); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("create %s: sync: %w", path, err)
	}
	if err := h.syncKernelTable(f, bd.name, p); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	nodes := map[int]string{}
	for _, idx := range []int{IndexESP, IndexState} {
		n, err := h.waitPartitionNode(bd.name, idx)
		if err != nil {
			return fmt.Errorf("create %s: %w", path, err)
		}
		nodes[idx] = n
	}
	// mke2fs claims the partition exclusively, which the kernel refuses
	// while the whole disk is claimed: trade the exclusive open for a
	// plain one, keeping the flock (which also keeps udev from probing).
	plain, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer plain.Close()
	f.Close()
	if err := flockOrLocked(plain, path); err != nil {
		return err
	}
	pf, err := os.OpenFile(nodes[IndexESP], os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	err = formatESP(pf, 0, p.esp[1], p.sectorSize, p.esp[0]/p.sectorSize)
	if err == nil {
		err = pf.Sync()
	}
	pf.Close()
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := formatState(nodes[IndexState], 0, p.state[1], false); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return h.check(path)
}

// syncKernelTable makes the kernel's partitions of the disk those of the
// plan. BLKRRPART lets the kernel parse the new GPT itself (allowed from
// this descriptor because it holds the exclusive claim). Where that is
// refused, or the kernel cannot parse GPT, BLKPG removes and adds
// partitions one by one, as partx and parted do.
func (h host) syncKernelTable(f *os.File, disk string, p plan) error {
	fd := int(f.Fd())
	_, rrErr := unix.IoctlGetInt(fd, unix.BLKRRPART)
	want := map[int][2]int64{IndexESP: p.esp, IndexRootA: p.rootA, IndexRootB: p.rootB, IndexState: p.state}
	have, err := h.partitionsOf(disk)
	if err != nil {
		return err
	}
	for n, kp := range have {
		if w, ok := want[n]; ok && kp.start == w[0] && kp.size == w[1] {
			delete(want, n)
			continue
		}
		if err := blkpg(fd, unix.BLKPG_DEL_PARTITION, n, 0, 0); err != nil {
			return fmt.Errorf("the kernel keeps its old partition %d (BLKRRPART: %v; BLKPG: %w)", n, rrErr, err)
		}
	}
	for n, w := range want {
		if err := blkpg(fd, unix.BLKPG_ADD_PARTITION, n, w[0], w[1]); err != nil {
			return fmt.Errorf("the kernel does not take partition %d (BLKRRPART: %v; BLKPG: %w)", n, rrErr, err)
		}
	}
	return nil
}

func blkpg(fd, op, n int, start, length int64) error {
	part := unix.BlkpgPartition{Start: start, Length: length, Pno: int32(n)}
	arg := unix.BlkpgIoctlArg{Op: int32(op), Datalen: int32(unsafe.Sizeof(part)), Data: (*byte)(unsafe.Pointer(&part))}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKPG, uintptr(unsafe.Pointer(&arg)))
	if errno != 0 {
		return errno
	}
	return nil
}

// check opens the new disk the way every later command will.
func (h host) check(path string) error {
	d, err := h.open(path, false)
	if err != nil {
		return fmt.Errorf("create %s: the new disk does not open: %w", path, err)
	}
	return d.Close()
}

func flockOrLocked(f *os.File, path string) error {
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("create %s: %w", path, ErrLocked)
		}
		return fmt.Errorf("create %s: lock: %w", path, err)
	}
	return nil
}

// waitPartitionNode waits for the kernel to create a partition's device
// node after the re-read (devtmpfs does it at once, udev may rename).
func (h host) waitPartitionNode(disk string, idx int) (string, error) {
	var lastErr error
	for i := 0; i < 50; i++ {
		parts, err := h.partitionsOf(disk)
		if err == nil {
			if kp, ok := parts[idx]; ok {
				n, err := h.devNode(kp.blockDev)
				if err == nil {
					return n, nil
				}
				lastErr = err
			}
		} else {
			lastErr = err
		}
		time.Sleep(100 * time.Millisecond)
	}
	if lastErr == nil {
		lastErr = fmt.Errorf("the kernel shows no partition %d", idx)
	}
	return "", fmt.Errorf("partition %d of %s: %w", idx, disk, lastErr)
}

// writeTable writes the protective MBR and both GPT copies with go-diskfs.
func writeTable(f *os.File, size int64, p plan) error {
	ss := p.sectorSize
	lba := func(r [2]int64) (uint64, uint64) {
		return uint64(r[0] / ss), uint64((r[0]+r[1])/ss - 1)
	}
	mk := func(idx int, r [2]int64, t gpt.Type, name string) *gpt.Partition {
		s, e := lba(r)
		return &gpt.Partition{Index: idx, Start: s, End: e, Type: t, Name: name, GUID: uuid.NewString()}
	}
	t := &gpt.Table{
		LogicalSectorSize:  int(ss),
		PhysicalSectorSize: int(ss),
		ProtectiveMBR:      true,
		GUID:               uuid.NewString(),
		Partitions: []*gpt.Partition{
			mk(IndexESP, p.esp, gpt.Type(strings.ToUpper(TypeESP)), LabelESP),
			mk(IndexRootA, p.rootA, gpt.Type(strings.ToUpper(TypeRootX86_64)), LabelRootA),
			mk(IndexRootB, p.rootB, gpt.Type(strings.ToUpper(TypeRootX86_64)), LabelRootB),
			mk(IndexState, p.state, gpt.Type(strings.ToUpper(TypeLinuxData)), LabelState),
		},
	}
	if err := t.Write(f, size); err != nil {
		return fmt.Errorf("write GPT: %w", err)
	}
	return nil
}

// formatESP makes the ESP's FAT32 filesystem; firstLBA is the
// partition's first sector on the disk, which FAT records as "hidden
// sectors" by convention (mkfs.fat, Windows).
func formatESP(f *os.File, start, size, sectorSize, firstLBA int64) error {
	if err := formatFAT32(region{f: f, base: start, size: size}, sectorSize, firstLBA, ESPVolumeLabel); err != nil {
		return fmt.Errorf("format ESP: %w", err)
	}
	return nil
}

// formatState makes STATE's ext4 with mke2fs. go-diskfs (v1.9.4) was
// tried first: its ext4 fails e2fsck whenever the last block group is
// small (a 1025 MiB STATE: "Inode table for group 8 is not in group"),
// and STATE takes whatever is left of a disk. 4 KiB blocks are asked for
// so the filesystem also mounts on 4Kn disks. For an image the filesystem
// is put at an offset inside the file; a device node is used whole.
func formatState(target string, offset, size int64, image bool) error {
	mke2fs, err := findTool("mke2fs")
	if err != nil {
		return fmt.Errorf("format STATE: %w (install e2fsprogs)", err)
	}
	args := []string{"-q", "-F", "-t", "ext4", "-b", "4096", "-L", StateVolumeLabel}
	if image {
		args = append(args, "-E", fmt.Sprintf("offset=%d", offset))
	}
	args = append(args, target, fmt.Sprintf("%dk", size/1024))
	cmd := exec.Command(mke2fs, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("format STATE: mke2fs %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// findTool finds an external program, also in the sbin directories a
// non-root PATH often lacks.
func findTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := dir + "/" + name
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// allZero reports whether a file holds only zeros, reading only the parts
// that are not holes.
func allZero(f *os.File, size int64) (bool, error) {
	buf := make([]byte, 1<<20)
	fd := int(f.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return true, nil // only a hole from here on
		}
		if err != nil {
			data = off // no SEEK_DATA: read everything
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			hole = size
		}
		for off = data; off < hole; {
			n, err := f.ReadAt(buf[:min(int64(len(buf)), hole-off)], off)
			if !isZero(buf[:n]) {
				return false, nil
			}
			off += int64(n)
			if err != nil {
				if errors.Is(err, io.EOF) {
					return true, nil
				}
				return false, err
			}
		}
	}
	return true, nil
}

// digHoles deallocates the all-zero 4 KiB blocks of [start, end) of an
// image file; reads return zeros there as before.
func digHoles(f *os.File, start, end int64) error {
	const blk = 4096
	buf := make([]byte, 1<<20)
	fd := int(f.Fd())
	for off := start; off < end; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err != nil || data >= end {
			return nil // no more data, or no SEEK_DATA: nothing worth doing
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil || hole > end {
			hole = end
		}
		data -= data % blk
		for off = data; off < hole; {
			n, err := f.ReadAt(buf[:min(int64(len(buf)), hole-off)], off)
			if err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			if n == 0 {
				return nil
			}
			runStart := int64(-1)
			flush := func(at int64) error {
				if runStart >= 0 {
					err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, runStart, at-runStart)
					runStart = -1
					if errors.Is(err, unix.EOPNOTSUPP) {
						return nil
					}
					return err
				}
				return nil
			}
			for i := 0; i+blk <= n; i += blk {
				if isZero(buf[i : i+blk]) {
					if runStart < 0 {
						runStart = off + int64(i)
					}
				} else if err := flush(off + int64(i)); err != nil {
					return err
				}
			}
			if err := flush(off + int64(n/blk*blk)); err != nil {
				return err
			}
			off += int64(n)
		}
	}
	return nil
}
