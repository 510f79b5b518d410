package partitions

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// host is where the kernel's view of block devices and mounts is read
// from. Tests point it at a fake tree; everything else uses realHost.
type host struct {
	sys       string // sysfs mount, "/sys"
	dev       string // device nodes, "/dev"
	mountinfo string // "/proc/self/mountinfo"
	swaps     string // "/proc/swaps"
	// blockNode reports the device number of a block device node; nil
	// stats the path (tests without CAP_MKNOD fake it).
	blockNode func(path string) (devNum, bool)
}

var realHost = host{sys: "/sys", dev: "/dev", mountinfo: "/proc/self/mountinfo", swaps: "/proc/swaps"}

type devNum struct{ major, minor uint32 }

func (d devNum) String() string { return fmt.Sprintf("%d:%d", d.major, d.minor) }

func parseDevNum(s string) (devNum, error) {
	maj, min, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return devNum{}, fmt.Errorf("bad device number %q", s)
	}
	a, err1 := strconv.ParseUint(maj, 10, 32)
	b, err2 := strconv.ParseUint(min, 10, 32)
	if err1 != nil || err2 != nil {
		return devNum{}, fmt.Errorf("bad device number %q", s)
	}
	return devNum{uint32(a), uint32(b)}, nil
}

func devNumOf(rdev uint64) devNum { return devNum{unix.Major(rdev), unix.Minor(rdev)} }

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	dev        devNum
	root       string // path inside the filesystem that is mounted (for bind mounts)
	mountPoint string
	fsType     string
	source     string
}

func (h host) mounts() ([]mountEntry, error) {
	f, err := os.Open(h.mountinfo)
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		// id parent maj:min root mountpoint options [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" && i >= 6 {
				sep = i
				break
			}
		}
		if len(fields) < 5 || sep < 0 || sep+2 >= len(fields) {
			continue
		}
		dev, err := parseDevNum(fields[2])
		if err != nil {
			continue
		}
		out = append(out, mountEntry{
			dev:        dev,
			root:       unescapeMount(fields[3]),
			mountPoint: unescapeMount(fields[4]),
			fsType:     fields[sep+1],
			source:     unescapeMount(fields[sep+2]),
		})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	return out, nil
}

// unescapeMount undoes the kernel's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// blockDev is a block device as sysfs shows it.
type blockDev struct {
	name string // kernel name: "sda", "sda2", "nvme0n1p2", "loop0p1", "dm-0"
	dev  devNum
}

func (h host) classBlock(name string) string { return filepath.Join(h.sys, "class", "block", name) }

func (h host) readSys(name, file string) (string, error) {
	b, err := os.ReadFile(filepath.Join(h.classBlock(name), file))
	return strings.TrimSpace(string(b)), err
}

// nameOf finds the kernel name of a block device number.
func (h host) nameOf(d devNum) (string, error) {
	target, err := filepath.EvalSymlinks(filepath.Join(h.sys, "dev", "block", d.String()))
	if err != nil {
		return "", fmt.Errorf("block device %s not in sysfs: %w", d, err)
	}
	return filepath.Base(target), nil
}

// isPartition reports whether a kernel block device is a partition.
func (h host) isPartition(name string) bool {
	_, err := os.Stat(filepath.Join(h.classBlock(name), "partition"))
	return err == nil
}

// parentDisk returns the disk a partition belongs to.
func (h host) parentDisk(part string) (string, error) {
	target, err := filepath.EvalSymlinks(h.classBlock(part))
	if err != nil {
		return "", err
	}
	return filepath.Base(filepath.Dir(target)), nil
}

// kernelPart is the kernel's view of one partition of a disk.
type kernelPart struct {
	blockDev
	index int
	start int64 // bytes
	size  int64 // bytes
}

// partitionsOf lists the kernel's partitions of a disk, by partition number.
func (h host) partitionsOf(disk string) (map[int]kernelPart, error) {
	ents, err := os.ReadDir(h.classBlock(disk))
	if err != nil {
		return nil, fmt.Errorf("list partitions of %s: %w", disk, err)
	}
	out := map[int]kernelPart{}
	for _, e := range ents {
		name := e.Name()
		pn, err := h.readSys(disk+"/"+name, "partition")
		if err != nil {
			continue
		}
		n, err := strconv.Atoi(pn)
		if err != nil {
			continue
		}
		kp := kernelPart{blockDev: blockDev{name: name}, index: n}
		if s, err := h.readSys(disk+"/"+name, "dev"); err == nil {
			kp.dev, _ = parseDevNum(s)
		}
		// sysfs counts start and size in 512-byte units whatever the
		// logical sector size.
		if s, err := h.readSys(disk+"/"+name, "start"); err == nil {
			v, _ := strconv.ParseInt(s, 10, 64)
			kp.start = v * 512
		}
		if s, err := h.readSys(disk+"/"+name, "size"); err == nil {
			v, _ := strconv.ParseInt(s, 10, 64)
			kp.size = v * 512
		}
		out[n] = kp
	}
	return out, nil
}

// holders lists what holds a block device open as a component
// (device-mapper tables such as dm-verity, md arrays, ...).
func (h host) holders(name string) []string {
	ents, err := os.ReadDir(filepath.Join(h.classBlock(name), "holders"))
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// slaves lists the devices a device-mapper (or md) device is built on.
func (h host) slaves(name string) []string {
	ents, err := os.ReadDir(filepath.Join(h.classBlock(name), "slaves"))
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

// devNode finds the /dev node of a kernel block device and checks that it
// really is that device.
func (h host) devNode(b blockDev) (string, error) {
	for _, p := range []string{filepath.Join(h.dev, b.name), filepath.Join(h.dev, "block", b.dev.String())} {
		if d, ok := h.nodeDev(p); ok && d == b.dev {
			return p, nil
		}
	}
	return "", fmt.Errorf("no device node for %s (%s) under %s", b.name, b.dev, h.dev)
}

func (h host) nodeDev(p string) (devNum, bool) {
	if h.blockNode != nil {
		return h.blockNode(p)
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return devNum{}, false
	}
	return devNumOf(uint64(st.Rdev)), true
}

// swapDevices returns the device numbers of block devices used as swap.
func (h host) swapDevices() map[devNum]bool {
	out := map[devNum]bool{}
	b, err := os.ReadFile(h.swaps)
	if err != nil {
		return out
	}
	for i, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) == 0 {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(unescapeMount(f[0]), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK {
			out[devNumOf(uint64(st.Rdev))] = true
		}
	}
	return out
}

// usage describes every way the given devices are in use: mounted,
// swapped on, held by device-mapper. Empty when none is.
func (h host) usage(devs []blockDev) ([]string, error) {
	ms, err := h.mounts()
	if err != nil {
		return nil, err
	}
	swaps := h.swapDevices()
	var out []string
	for _, d := range devs {
		for _, m := range ms {
			if m.dev == d.dev {
				out = append(out, fmt.Sprintf("%s is mounted on %s", d.name, m.mountPoint))
			}
		}
		if swaps[d.dev] {
			out = append(out, fmt.Sprintf("%s is used as swap", d.name))
		}
		for _, ho := range h.holders(d.name) {
			out = append(out, fmt.Sprintf("%s is held by %s", d.name, ho))
		}
	}
	return out, nil
}

// diskAndParts returns a whole disk and all its partitions.
func (h host) diskAndParts(disk blockDev) ([]blockDev, map[int]kernelPart, error) {
	parts, err := h.partitionsOf(disk.name)
	if err != nil {
		return nil, nil, err
	}
	devs := []blockDev{disk}
	idx := make([]int, 0, len(parts))
	for i := range parts {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	for _, i := range idx {
		devs = append(devs, parts[i].blockDev)
	}
	return devs, parts, nil
}

// loopDev is a loop device backed by an image file.
type loopDev struct {
	blockDev
	offset    int64
	sizeLimit int64
}

// loopsBacking lists the loop devices whose backing file is the given
// file: an image attached with losetup is as much in use as a disk.
func (h host) loopsBacking(fi os.FileInfo) []loopDev {
	ents, err := os.ReadDir(filepath.Join(h.sys, "block"))
	if err != nil {
		return nil
	}
	var out []loopDev
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, "loop") {
			continue
		}
		bf, err := h.readSys(name, "loop/backing_file")
		if err != nil || bf == "" {
			continue
		}
		bst, err := os.Stat(strings.TrimSuffix(bf, " (deleted)"))
		if err != nil || !os.SameFile(bst, fi) {
			continue
		}
		l := loopDev{blockDev: blockDev{name: name}}
		if s, err := h.readSys(name, "dev"); err == nil {
			l.dev, _ = parseDevNum(s)
		}
		if s, err := h.readSys(name, "loop/offset"); err == nil {
			l.offset, _ = strconv.ParseInt(s, 10, 64)
		}
		if s, err := h.readSys(name, "loop/sizelimit"); err == nil {
			l.sizeLimit, _ = strconv.ParseInt(s, 10, 64)
		}
		out = append(out, l)
	}
	return out
}

// imageUsage describes how an image file is in use through loop devices.
func (h host) imageUsage(fi os.FileInfo) ([]string, error) {
	var devs []blockDev
	for _, l := range h.loopsBacking(fi) {
		ds, _, err := h.diskAndParts(l.blockDev)
		if err != nil {
			ds = []blockDev{l.blockDev}
		}
		devs = append(devs, ds...)
	}
	if len(devs) == 0 {
		return nil, nil
	}
	return h.usage(devs)
}

// RootDisk returns the whole disk that holds the running root filesystem,
// the default disk sealift works on: "/" in the mount table, its device,
// through device-mapper (dm-verity) to the partition beneath, and from the
// partition to its disk.
func RootDisk() (string, error) { return realHost.rootDisk() }

func (h host) rootDisk() (string, error) {
	ms, err := h.mounts()
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrUnknownDisk, err)
	}
	var root *mountEntry
	for i := range ms {
		if ms[i].mountPoint == "/" {
			root = &ms[i] // the last one is what "/" shows
		}
	}
	if root == nil {
		return "", fmt.Errorf("%w: no / in %s", ErrUnknownDisk, h.mountinfo)
	}
	if root.dev.major == 0 {
		return "", fmt.Errorf("%w: the root filesystem is %s from %q, not a block device", ErrUnknownDisk, root.fsType, root.source)
	}
	name, err := h.nameOf(root.dev)
	if err != nil {
		return "", fmt.Errorf("%w: root filesystem device: %v", ErrUnknownDisk, err)
	}
	disk, err := h.diskUnder(name, 0)
	if err != nil {
		return "", fmt.Errorf("%w: root filesystem on %s: %v", ErrUnknownDisk, name, err)
	}
	node, err := h.devNode(blockDev{name: disk, dev: mustDev(h.readSys(disk, "dev"))})
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrUnknownDisk, err)
	}
	return node, nil
}

func mustDev(s string, err error) devNum {
	if err != nil {
		return devNum{}
	}
	d, _ := parseDevNum(s)
	return d
}

// diskUnder follows a block device down to the whole disk beneath it:
// device-mapper and md devices to their slaves, partitions to their disk.
func (h host) diskUnder(name string, depth int) (string, error) {
	if depth > 8 {
		return "", errors.New("device stack too deep")
	}
	if sl := h.slaves(name); len(sl) > 0 {
		disks := map[string]bool{}
		var first string
		for _, s := range sl {
			d, err := h.diskUnder(s, depth+1)
			if err != nil {
				return "", err
			}
			if first == "" {
				first = d
			}
			disks[d] = true
		}
		if len(disks) > 1 {
			names := make([]string, 0, len(disks))
			for d := range disks {
				names = append(names, d)
			}
			sort.Strings(names)
			return "", fmt.Errorf("%s spans several disks (%s)", name, strings.Join(names, ", "))
		}
		return first, nil
	}
	if h.isPartition(name) {
		return h.parentDisk(name)
	}
	return "", fmt.Errorf("%s is a whole disk, not a partition of an A/B disk", name)
}
