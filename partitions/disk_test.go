package partitions

import (
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"sealift/bootloader"
)

func TestCreateOpenRoundTrip(t *testing.T) {
	p := newDisk(t)
	d := openDisk(t, p, false)
	if d.IsBlockDevice() {
		t.Error("an image reports being a block device")
	}
	if d.Path() != p || d.Size() != smallSize || d.SectorSize() != 512 {
		t.Errorf("path %s size %d sector %d", d.Path(), d.Size(), d.SectorSize())
	}
	want := []struct {
		got   Part
		index int
		label string
		typ   string
		start int64
		size  int64
	}{
		{d.ESP(), 1, LabelESP, TypeESP, 1 * mib, 40 * mib},
		{d.Slot(bootloader.SlotA), 2, LabelRootA, TypeRootX86_64, 41 * mib, 16 * mib},
		{d.Slot(bootloader.SlotB), 3, LabelRootB, TypeRootX86_64, 57 * mib, 16 * mib},
		{d.State(), 4, LabelState, TypeLinuxData, 73 * mib, 70 * mib},
	}
	seen := map[string]bool{d.DiskGUID(): true}
	for _, w := range want {
		g := w.got
		if g.Index != w.index || g.Label != w.label || g.TypeGUID != w.typ || g.Start != w.start || g.Size != w.size {
			t.Errorf("got %+v, want index %d label %s type %s start %d size %d", g, w.index, w.label, w.typ, w.start, w.size)
		}
		if len(g.PartUUID) != 36 || g.PartUUID != strings.ToLower(g.PartUUID) || seen[g.PartUUID] {
			t.Errorf("partition %d: PARTUUID %q not a fresh lower-case GUID", g.Index, g.PartUUID)
		}
		seen[g.PartUUID] = true
	}
	if d.Slot("C") != (Part{}) {
		t.Error("Slot(C) is not the zero Part")
	}
	// A second disk gets other GUIDs.
	d2 := openDisk(t, newDisk(t), false)
	if d2.DiskGUID() == d.DiskGUID() || d2.ESP().PartUUID == d.ESP().PartUUID {
		t.Error("GUIDs repeat across Create calls")
	}
	// The image stays sparse: formatting must not allocate the whole disk.
	var st os.FileInfo
	st, _ = os.Stat(p)
	if blocks := fileBlocks(st); blocks*512 > 16*mib {
		t.Errorf("image allocates %d bytes; want it sparse", blocks*512)
	}
}

func TestCreateDefaultLayout(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big.img")
	if err := Create(p, CreateOptions{Size: 3 << 30}); err != nil {
		t.Fatal(err)
	}
	d := openDisk(t, p, false)
	def := DefaultLayout()
	if d.ESP().Size != def.ESPSize || d.Slot(bootloader.SlotA).Size != def.RootSize {
		t.Errorf("ESP %d root %d, want the defaults", d.ESP().Size, d.Slot(bootloader.SlotA).Size)
	}
	// STATE takes the rest, 1 MiB aligned, before the backup GPT.
	if end := d.State().End(); end%Alignment != 0 || end > d.Size()-33*512 || end < d.Size()-2*mib {
		t.Errorf("STATE ends at %d of %d", end, d.Size())
	}
}

func TestCreateSizeErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		size    int64
		layout  Layout
		target  error
		mention []string
	}{
		{"disk too small", 2 << 30, Layout{}, ErrTooSmall, []string{"2147483648", "ESP 128 MiB", "root 1 GiB", "STATE 64 MiB"}},
		{"fixed STATE too big", smallSize, Layout{ESPSize: 40 * mib, RootSize: 16 * mib, StateSize: 100 * mib}, ErrTooSmall, []string{"STATE 100 MiB"}},
		{"ESP below FAT32 minimum", smallSize, Layout{ESPSize: 32 * mib, RootSize: 16 * mib}, ErrTooSmall, []string{"ESP size 32 MiB", "36 MiB"}},
		{"STATE below minimum", smallSize, Layout{ESPSize: 40 * mib, RootSize: 16 * mib, StateSize: 32 * mib}, ErrTooSmall, []string{"STATE"}},
		{"misaligned root", smallSize, Layout{ESPSize: 40 * mib, RootSize: 16*mib + 512}, nil, []string{"not a multiple of 1 MiB"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "d.img")
			err := Create(p, CreateOptions{Size: tc.size, Layout: tc.layout})
			if err == nil {
				t.Fatal("Create succeeded")
			}
			if tc.target != nil && !errors.Is(err, tc.target) {
				t.Errorf("error %v, want %v", err, tc.target)
			}
			for _, m := range tc.mention {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
			if _, serr := os.Stat(p); !os.IsNotExist(serr) {
				t.Error("a failed Create left the image file behind")
			}
		})
	}
}

func TestCreateRefusesExisting(t *testing.T) {
	mbrOnly := func(t *testing.T, p string) {
		b := make([]byte, 512)
		b[446+4] = 0x83 // a Linux partition
		b[510], b[511] = 0x55, 0xaa
		writeRange(t, p, 0, b)
	}
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, p string)
		target  error
	}{
		{"GPT", func(t *testing.T, p string) {
			if err := Create(p, CreateOptions{Layout: smallLayout}); err != nil {
				t.Fatal(err)
			}
		}, ErrHasPartitionTable},
		{"backup GPT only", func(t *testing.T, p string) {
			if err := Create(p, CreateOptions{Layout: smallLayout}); err != nil {
				t.Fatal(err)
			}
			writeRange(t, p, 0, make([]byte, 34*512))
		}, ErrHasPartitionTable},
		{"MBR", mbrOnly, ErrHasPartitionTable},
		{"data", func(t *testing.T, p string) { writeRange(t, p, 5*mib, []byte("hello")) }, ErrNotEmpty},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "d.img")
			if err := os.WriteFile(p, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(p, smallSize); err != nil {
				t.Fatal(err)
			}
			tc.prepare(t, p)
			var before string
			if d, err := Open(p, false); err == nil {
				before = d.DiskGUID()
				d.Close()
			}
			err := Create(p, CreateOptions{Layout: smallLayout})
			wantErr(t, err, tc.target)
			if d, err := Open(p, false); err == nil {
				if d.DiskGUID() != before {
					t.Error("a refused Create changed the table")
				}
				d.Close()
			}
			if err := Create(p, CreateOptions{Layout: smallLayout, Force: true}); err != nil {
				t.Fatalf("forced Create: %v", err)
			}
			d := openDisk(t, p, false)
			if d.DiskGUID() == before {
				t.Error("forced Create kept the old disk GUID")
			}
		})
	}
}

func TestCreateAcceptsEmptyFiles(t *testing.T) {
	dir := t.TempDir()
	// An empty file takes Size; a file of zeros (sparse or written) keeps its size.
	empty := filepath.Join(dir, "empty.img")
	os.WriteFile(empty, nil, 0o644)
	if err := Create(empty, CreateOptions{Size: smallSize, Layout: smallLayout}); err != nil {
		t.Fatalf("empty file: %v", err)
	}
	zeros := filepath.Join(dir, "zeros.img")
	if err := os.WriteFile(zeros, make([]byte, smallSize), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Create(zeros, CreateOptions{Layout: smallLayout}); err != nil {
		t.Fatalf("file of zeros: %v", err)
	}
	if d := openDisk(t, zeros, false); d.Size() != smallSize {
		t.Errorf("size %d", d.Size())
	}
	if err := Create(filepath.Join(dir, "new.img"), CreateOptions{Layout: smallLayout}); err == nil {
		t.Error("Create of a new image without a size succeeded")
	}
	if err := Create(dir, CreateOptions{Size: smallSize}); !errors.Is(err, ErrUnknownDisk) {
		t.Errorf("Create on a directory: %v", err)
	}
}

func TestOpenDiscoveryErrors(t *testing.T) {
	mod := func(f func([]testPart) []testPart) []testPart { return f(goodParts()) }
	for _, tc := range []struct {
		name    string
		parts   []testPart // nil: no table at all
		target  error
		mention []string
	}{
		{"no GPT", nil, ErrNoGPT, nil},
		{"missing ROOT-B", mod(func(p []testPart) []testPart { return append(p[:2], p[3]) }),
			ErrMissingSlot, []string{"no ROOT-B partition (type 4f68bce3…, label ROOT-B)"}},
		{"missing ESP", mod(func(p []testPart) []testPart { return p[1:] }),
			ErrMissingSlot, []string{"no EFI-SYSTEM partition"}},
		{"ROOT-B with wrong type", mod(func(p []testPart) []testPart { p[2].typ = TypeLinuxData; return p }),
			ErrMissingSlot, []string{"no ROOT-B partition", "partition 3 has label ROOT-B but type 0fc63daf-8483-4772-8e79-3d69d8477de4"}},
		{"ROOT-A twice", mod(func(p []testPart) []testPart {
			return append(p, testPart{5, LabelRootA, TypeRootX86_64, 137, 16, 0})
		}), ErrDuplicateSlot, []string{"partitions 2, 5 all are ROOT-A"}},
		{"slot sizes differ", mod(func(p []testPart) []testPart { p[2].sizeMiB = 8; return p }),
			ErrSlotSizeMismatch, []string{"ROOT-A is 16777216 bytes but ROOT-B is 8388608 bytes"}},
		{"labels swapped types", mod(func(p []testPart) []testPart { p[0].label, p[3].label = LabelState, LabelESP; return p }),
			ErrMissingSlot, []string{"no EFI-SYSTEM partition", "no STATE partition"}},
		{"slots overlap", mod(func(p []testPart) []testPart { p[2].startMiB = 50; return p }),
			ErrUnknownDisk, []string{"partition 2 (ROOT-A) overlaps partition 3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p string
			if tc.parts == nil {
				p = filepath.Join(t.TempDir(), "zero.img")
				os.WriteFile(p, make([]byte, 1*mib), 0o644)
			} else {
				p = writeTestTable(t, 160, tc.parts)
			}
			d, err := Open(p, false)
			if err == nil {
				d.Close()
				t.Fatal("Open succeeded")
			}
			wantErr(t, err, tc.target, append(tc.mention, p)...)
		})
	}
}

func TestOpenRejectsNonDisks(t *testing.T) {
	if _, err := Open(filepath.Join(t.TempDir(), "missing"), false); !errors.Is(err, ErrUnknownDisk) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := Open(t.TempDir(), false); !errors.Is(err, ErrUnknownDisk) {
		t.Errorf("directory: %v", err)
	}
	if _, err := Open("/dev/null", false); !errors.Is(err, ErrUnknownDisk) {
		t.Errorf("character device: %v", err)
	}
}

// The GPT is found from either copy, as firmware does.
func TestOpenFallsBackToBackupGPT(t *testing.T) {
	p := newDisk(t)
	want := openDisk(t, p, false).Slot(bootloader.SlotB)
	writeRange(t, p, 512+16, []byte{1, 2, 3, 4}) // primary header CRC
	d := openDisk(t, p, true)
	if got := d.Slot(bootloader.SlotB); got != want {
		t.Fatalf("from the backup: %+v, want %+v", got, want)
	}
	// Writing attributes rebuilds the primary.
	if err := d.SetAttributes(map[bootloader.Slot]uint64{bootloader.SlotB: 1 << 48}); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(p)
	defer f.Close()
	tbl, err := readGPT(f, smallSize, 512)
	if err != nil || tbl.primary == nil || tbl.backup == nil {
		t.Fatalf("after rewrite: %v, primary %v backup %v", err, tbl != nil && tbl.primary != nil, tbl != nil && tbl.backup != nil)
	}
	// Both copies broken: no GPT.
	writeRange(t, p, 512+16, []byte{1, 2, 3, 4})
	writeRange(t, p, smallSize-512+16, []byte{1, 2, 3, 4})
	if _, err := Open(p, false); !errors.Is(err, ErrNoGPT) {
		t.Errorf("both copies broken: %v", err)
	}
}

func TestPartIOBounds(t *testing.T) {
	p := newDisk(t)
	d := openDisk(t, p, true)
	a := d.Slot(bootloader.SlotA)
	// Mark the sectors around slot A to see that nothing outside is touched.
	before := pattern(4096, 0x5a)
	after := pattern(4096, 0xa5)
	writeRange(t, p, a.Start-4096, before)
	writeRange(t, p, a.End(), after)

	io, err := d.OpenPartition(a)
	if err != nil {
		t.Fatal(err)
	}
	defer io.Close()
	if io.Size() != a.Size {
		t.Fatalf("Size %d, want %d", io.Size(), a.Size)
	}
	sector := pattern(512, 1)
	for _, tc := range []struct {
		name   string
		off    int64
		n      int
		target error // nil: must succeed
	}{
		{"first sector", 0, 512, nil},
		{"last sector", a.Size - 512, 512, nil},
		{"at the end", a.Size, 512, ErrOutOfBounds},
		{"across the end", a.Size - 512, 1024, ErrOutOfBounds},
		{"far beyond", 1 << 40, 512, ErrOutOfBounds},
		{"before the start", -512, 512, ErrOutOfBounds},
		{"misaligned offset", 100, 512, ErrMisaligned},
		{"misaligned length", 0, 100, ErrMisaligned},
		{"misaligned at the end", a.Size - 100, 100, ErrMisaligned},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf := make([]byte, tc.n)
			copy(buf, sector)
			n, err := io.WriteAt(buf, tc.off)
			if tc.target == nil {
				if err != nil || n != tc.n {
					t.Fatalf("WriteAt: %d, %v", n, err)
				}
				return
			}
			if n != 0 {
				t.Errorf("wrote %d bytes", n)
			}
			wantErr(t, err, tc.target)
		})
	}
	if err := io.Sync(); err != nil {
		t.Fatal(err)
	}
	equalBytes(t, "bytes before the slot", readRange(t, p, a.Start-4096, 4096), before)
	equalBytes(t, "bytes after the slot", readRange(t, p, a.End(), 4096), after)
	equalBytes(t, "first sector", readRange(t, p, a.Start, 512), sector)
	equalBytes(t, "last sector", readRange(t, p, a.End()-512, 512), sector)

	// Reads: inside, across the end (short, io.EOF), beyond (out of bounds).
	buf := make([]byte, 1024)
	if n, err := io.ReadAt(buf[:512], a.Size-512); n != 512 || err != nil {
		t.Errorf("read of the last sector: %d, %v", n, err)
	}
	if n, err := io.ReadAt(buf, a.Size-512); n != 512 || err != ioEOF {
		t.Errorf("read across the end: %d, %v", n, err)
	}
	equalBytes(t, "read back", buf[:512], sector)
	if n, err := io.ReadAt(buf, a.Size); n != 0 || err != ioEOF {
		t.Errorf("read at the end: %d, %v", n, err)
	}
	if _, err := io.ReadAt(buf, a.Size+512); !errors.Is(err, ErrOutOfBounds) {
		t.Errorf("read beyond the end: %v", err)
	}
	if err := io.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteAt(sector, 0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("write after Close: %v", err)
	}

	// A partition that is not ours is refused; a read-only disk does not write.
	if _, err := d.OpenPartition(Part{Index: 2, Start: 0, Size: smallSize}); err == nil {
		t.Error("OpenPartition of a made-up Part succeeded")
	}
	ro := openDisk(t, p, false)
	rio, err := ro.OpenPartition(ro.Slot(bootloader.SlotB))
	if err != nil {
		t.Fatal(err)
	}
	defer rio.Close()
	if _, err := rio.WriteAt(sector, 0); !errors.Is(err, ErrReadOnly) {
		t.Errorf("write on a read-only disk: %v", err)
	}
}

var ioEOF = io.EOF

func TestLock(t *testing.T) {
	p := newDisk(t)
	d1 := openDisk(t, p, true)
	d2 := openDisk(t, p, true)
	unlock, err := d1.Lock()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = d2.Lock()
	wantErr(t, err, ErrLocked, p, "pid")
	if time.Since(start) > 5*time.Second {
		t.Errorf("a refused Lock took %v", time.Since(start))
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	unlock2, err := d2.Lock()
	if err != nil {
		t.Fatalf("Lock after unlock: %v", err)
	}
	// Close releases the lock too.
	d2.Close()
	if err := unlock2(); err != nil {
		t.Errorf("unlock after Close: %v", err)
	}
	if _, err := d1.Lock(); err != nil {
		t.Errorf("Lock after the holder closed: %v", err)
	}
	// Create respects the lock.
	wantErr(t, Create(p, CreateOptions{Layout: smallLayout, Force: true}), ErrLocked)
}

func TestAttributes(t *testing.T) {
	p := newDisk(t)
	d := openDisk(t, p, true)
	orig := readRange(t, p, 0, smallSize)
	for _, s := range bootloader.Slots {
		if v, err := d.Attributes(s); err != nil || v != 0 {
			t.Fatalf("fresh disk, slot %s: %#x, %v", s, v, err)
		}
	}
	set := map[bootloader.Slot]uint64{bootloader.SlotA: 0x013F000000000005, bootloader.SlotB: 0x8000000000000000}
	if err := d.SetAttributes(set); err != nil {
		t.Fatal(err)
	}
	// A fresh Open sees them (nothing is cached).
	d2 := openDisk(t, p, false)
	for s, want := range set {
		if v, err := d2.Attributes(s); err != nil || v != want {
			t.Errorf("slot %s: %#x, %v; want %#x", s, v, err, want)
		}
	}
	// Only the attribute words and the CRCs changed, in both copies.
	now := readRange(t, p, 0, smallSize)
	allowed := map[int64]bool{}
	allow := func(off, n int64) {
		for i := off; i < off+n; i++ {
			allowed[i] = true
		}
	}
	for _, hdr := range []int64{512, smallSize - 512} {
		allow(hdr+16, 4) // header CRC
		allow(hdr+88, 4) // entry array CRC
	}
	for _, arr := range []int64{2 * 512, smallSize - 33*512} {
		allow(arr+1*128+48, 8) // entry 2
		allow(arr+2*128+48, 8) // entry 3
	}
	for i := range now {
		if now[i] != orig[i] && !allowed[int64(i)] {
			t.Fatalf("byte %d changed", i)
		}
	}
	le := binary.LittleEndian
	for _, arr := range []int64{2 * 512, smallSize - 33*512} {
		if v := le.Uint64(now[arr+128+48:]); v != set[bootloader.SlotA] {
			t.Errorf("entry array at %d: slot A %#x", arr, v)
		}
	}

	if err := d2.SetAttributes(set); !errors.Is(err, ErrReadOnly) {
		t.Errorf("SetAttributes on a read-only disk: %v", err)
	}
	if _, err := d.Attributes("C"); err == nil {
		t.Error("Attributes of slot C succeeded")
	}
	// The table changing under an open Disk is noticed.
	if err := Create(p, CreateOptions{Layout: smallLayout, Force: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Attributes(bootloader.SlotA); !errors.Is(err, ErrTableChanged) {
		t.Errorf("after repartitioning: %v", err)
	}
	if err := d.SetAttributes(set); !errors.Is(err, ErrTableChanged) {
		t.Errorf("SetAttributes after repartitioning: %v", err)
	}
}

func fileBlocks(fi os.FileInfo) int64 { return fi.Sys().(*syscall.Stat_t).Blocks }
