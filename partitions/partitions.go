// Package partitions owns sealift's A/B disk: it creates the GPT layout
// (ESP, ROOT-A, ROOT-B, STATE), finds those partitions again on an existing
// disk, serialises sealift processes with a lock, gives bounded I/O to one
// partition, reads and writes the GPT attribute words bootloaders keep their
// flags in, and reads and writes the ESP's FAT32 filesystem when it is not
// mounted.
//
// The same code serves a block device (a node's disk) and a regular file (an
// image being built or tested); where the two differ (partition device
// nodes, page caches, mounts) it is said at the function.
//
// The package never logs: every problem is returned, wrapped with the disk
// and partition it concerns, around a sentinel error callers can test with
// errors.Is.
package partitions

import (
	"errors"
	"fmt"
	"strings"

	"sealift/bootloader"
)

// Partition labels (GPT partition names) of the layout. Discovery matches
// both the label and the type GUID, so a stray partition that merely
// carries one of them is never mistaken for ours.
const (
	LabelESP   = "EFI-SYSTEM"
	LabelRootA = "ROOT-A"
	LabelRootB = "ROOT-B"
	LabelState = "STATE"
)

// Partition type GUIDs, lower case as in /dev/disk/by-parttype and the
// Discoverable Partitions Specification.
const (
	TypeESP = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
	// TypeRootX86_64 is the discoverable-partitions root type for x86-64;
	// systemd-gpt-auto-generator and friends recognise it.
	TypeRootX86_64 = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"
	TypeLinuxData  = "0fc63daf-8483-4772-8e79-3d69d8477de4"
)

// Filesystem volume labels. FAT labels hold at most 11 characters, so the
// ESP's filesystem is "ESP" although its partition is "EFI-SYSTEM".
const (
	ESPVolumeLabel   = "ESP"
	StateVolumeLabel = "STATE"
)

// Partition numbers Create uses. Discovery does not rely on them: it finds
// partitions by type and label wherever they are in the table.
const (
	IndexESP   = 1
	IndexRootA = 2
	IndexRootB = 3
	IndexState = 4
)

const (
	// SectorSize is the unit PartIO writes must be aligned to. It is also
	// the logical sector size of image files.
	SectorSize = 512
	// Alignment of every partition start and size made by Create.
	Alignment = 1 << 20

	mib = 1 << 20
)

// Minimum sizes Create accepts. The ESP minimum is what FAT32 needs with
// 512-byte clusters (65525 clusters plus FATs and reserved sectors);
// STATE's is what an ext4 holding /var is still useful with.
const (
	MinESPSize   = 36 * mib
	MinRootSize  = 16 * mib
	MinStateSize = 64 * mib
	// MinESPSize4Kn is the ESP minimum on disks with 4 KiB logical
	// sectors, where a cluster cannot be smaller than a sector (Microsoft
	// asks for 260 MB there too).
	MinESPSize4Kn = 260 * mib
)

// Layout gives the sizes of the partitions Create makes, in bytes. Every
// size must be a multiple of 1 MiB.
type Layout struct {
	ESPSize  int64
	RootSize int64 // each of ROOT-A and ROOT-B
	// StateSize 0 means the rest of the disk (at least MinStateSize).
	StateSize int64
}

// DefaultLayout is 128 MiB ESP, two 1 GiB root slots and STATE on the rest.
func DefaultLayout() Layout {
	return Layout{ESPSize: 128 * mib, RootSize: 1024 * mib}
}

// Errors callers branch on. Every error returned by this package that is
// one of these wraps it, with the disk and partition in the message.
var (
	// ErrNoGPT: the disk has no valid GPT (neither primary nor backup).
	ErrNoGPT = errors.New("no GPT partition table")
	// ErrMissingSlot: one of the layout's partitions (ESP, ROOT-A, ROOT-B,
	// STATE) is not in the table with both its type and its label.
	ErrMissingSlot = errors.New("partition missing")
	// ErrDuplicateSlot: more than one partition has the type and label of
	// one of the layout's partitions, so which one to use is ambiguous.
	ErrDuplicateSlot = errors.New("partition present more than once")
	// ErrSlotSizeMismatch: ROOT-A and ROOT-B differ in size; a release made
	// for one slot must fit the other.
	ErrSlotSizeMismatch = errors.New("root slots differ in size")
	// ErrMounted: the disk, one of its partitions, or a loop device backed
	// by the image is mounted or held (device-mapper, swap, ...).
	ErrMounted = errors.New("in use")
	// ErrHasPartitionTable: Create found a GPT or MBR and was not forced.
	ErrHasPartitionTable = errors.New("already has a partition table")
	// ErrUnknownDisk: the path is not something that can be a sealift disk
	// (missing, a partition instead of a whole disk, neither a block device
	// nor a regular file), or the running system's disk cannot be found.
	ErrUnknownDisk = errors.New("not a usable disk")
	// ErrNotEmpty: Create was given an existing, non-empty image file
	// without a partition table and was not forced.
	ErrNotEmpty = errors.New("file is not empty")
	// ErrTooSmall: the layout does not fit the disk, or a size is below
	// its minimum.
	ErrTooSmall = errors.New("too small")
	// ErrLocked: another process (or another open of the disk) holds the
	// sealift lock.
	ErrLocked = errors.New("disk is locked by another sealift")
	// ErrOutOfBounds: a PartIO access reaches outside its partition.
	ErrOutOfBounds = errors.New("access outside the partition")
	// ErrMisaligned: a PartIO write is not sector-aligned, or a direct
	// I/O access is not aligned to aligned.Align (buffer, offset, length).
	ErrMisaligned = errors.New("access not aligned")
	// ErrReadOnly: a write was attempted on a disk opened read-only.
	ErrReadOnly = errors.New("disk opened read-only")
	// ErrTableChanged: the partition table on disk no longer matches the
	// one found by Open (someone repartitioned the disk meanwhile).
	ErrTableChanged = errors.New("partition table changed since the disk was opened")
)

// Part describes one partition of the layout. Start and Size are in bytes.
type Part struct {
	Index    int    // partition number, 1-based, as in /dev/sda<Index>
	Label    string // GPT partition name
	TypeGUID string // lower case
	PartUUID string // lower case, as in /dev/disk/by-partuuid and root=PARTUUID=
	Start    int64
	Size     int64
}

// End is the first byte after the partition.
func (p Part) End() int64 { return p.Start + p.Size }

func (p Part) String() string {
	return fmt.Sprintf("partition %d (%s)", p.Index, p.Label)
}

// role is one of the four partitions of the layout.
type role struct {
	label    string
	typeGUID string
}

var (
	roleESP   = role{LabelESP, TypeESP}
	roleRootA = role{LabelRootA, TypeRootX86_64}
	roleRootB = role{LabelRootB, TypeRootX86_64}
	roleState = role{LabelState, TypeLinuxData}
	roles     = []role{roleESP, roleRootA, roleRootB, roleState}
)

func slotRole(s bootloader.Slot) (role, bool) {
	switch s {
	case bootloader.SlotA:
		return roleRootA, true
	case bootloader.SlotB:
		return roleRootB, true
	}
	return role{}, false
}

// shortType abbreviates a type GUID for messages: "4f68bce3…".
func shortType(t string) string {
	if i := strings.IndexByte(t, '-'); i > 0 {
		return t[:i] + "…"
	}
	return t
}

func formatBytes(n int64) string {
	switch {
	case n%(1<<30) == 0 && n >= 1<<30:
		return fmt.Sprintf("%d GiB", n>>30)
	case n%mib == 0 && n >= mib:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}
