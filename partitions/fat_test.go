package partitions

import (
	"bytes"
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sealift/internal/testutil"
)

// overlay is a FAT device for crash tests: writes go to memory over a base
// file, and after a budget of writes every further write fails, as if the
// power went. survivor is what the disk holds afterwards.
type overlay struct {
	base    *os.File
	writes  []overlayWrite
	budget  int // writes left; negative: unlimited
	crashed bool
}

type overlayWrite struct {
	off int64
	b   []byte
}

var errCrash = errors.New("crash")

func (o *overlay) ReadAt(p []byte, off int64) (int, error) {
	n, err := o.base.ReadAt(p, off)
	for _, w := range o.writes {
		lo, hi := max(off, w.off), min(off+int64(len(p)), w.off+int64(len(w.b)))
		if lo < hi {
			copy(p[lo-off:hi-off], w.b[lo-w.off:hi-w.off])
		}
	}
	return n, err
}

func (o *overlay) WriteAt(p []byte, off int64) (int, error) {
	if o.budget == 0 {
		o.crashed = true
		return 0, errCrash
	}
	o.budget--
	o.writes = append(o.writes, overlayWrite{off, bytes.Clone(p)})
	return len(p), nil
}

func (o *overlay) Sync() error {
	if o.crashed {
		return errCrash
	}
	return nil
}

func (o *overlay) survivor() *overlay {
	return &overlay{base: o.base, writes: append([]overlayWrite(nil), o.writes...), budget: -1}
}

const crashFSSize = 40 * mib

// crashBase formats a bare FAT32 filesystem in a file and fills it.
func crashBase(t *testing.T, fill func(v *fat32)) *overlay {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fat.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	f.Truncate(crashFSSize)
	if err := formatESP(f, 0, crashFSSize, 512, 2048); err != nil {
		t.Fatal(err)
	}
	o := &overlay{base: f, budget: -1}
	fill(load(t, o))
	return o
}

func load(t *testing.T, o *overlay) *fat32 {
	t.Helper()
	v, err := loadFAT32(region{f: o, size: crashFSSize})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestFATCrashSafety cuts each operation short after every possible number
// of writes and checks what a reader finds afterwards: for a replace the
// old or the new content, never a mix, an error or garbage; for a rename
// the content under at least one of the names; and a later write still
// works.
func TestFATCrashSafety(t *testing.T) {
	oldData, newData := pattern(5000, 1), pattern(9000, 2)
	base := crashBase(t, func(v *fat32) {
		must(t, v.mkdirAll("sealift/A"))
		must(t, v.mkdirAll("loader/entries"))
		must(t, v.writeFileAtomic("sealift/A/vmlinuz", oldData))
		must(t, v.writeFileAtomic("loader/entries/sealift-A+3.conf", oldData))
		for _, n := range []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m"} {
			must(t, v.writeFileAtomic("sealift/A/"+n, []byte(n))) // fill the directory's first cluster
		}
	})
	for _, tc := range []struct {
		name  string
		op    func(v *fat32) error
		check func(t *testing.T, v *fat32, done bool)
	}{
		{"replace", func(v *fat32) error { return v.writeFileAtomic("sealift/A/vmlinuz", newData) },
			func(t *testing.T, v *fat32, done bool) {
				got, err := v.readFile("sealift/A/vmlinuz")
				if err != nil || !(bytes.Equal(got, oldData) && !done || bytes.Equal(got, newData)) {
					t.Fatalf("vmlinuz after the crash: %d bytes, %v", len(got), err)
				}
			}},
		{"create", func(v *fat32) error { return v.writeFileAtomic("sealift/A/initrd.img with a long name", newData) },
			func(t *testing.T, v *fat32, done bool) {
				got, err := v.readFile("sealift/A/initrd.img with a long name")
				if !(errors.Is(err, iofs.ErrNotExist) && !done || err == nil && bytes.Equal(got, newData)) {
					t.Fatalf("new file after the crash: %d bytes, %v", len(got), err)
				}
			}},
		{"rename", func(v *fat32) error {
			return v.rename("loader/entries/sealift-A+3.conf", "loader/entries/sealift-A+2-1.conf")
		}, func(t *testing.T, v *fat32, done bool) {
			a, errA := v.readFile("loader/entries/sealift-A+3.conf")
			b, errB := v.readFile("loader/entries/sealift-A+2-1.conf")
			okA, okB := errA == nil && bytes.Equal(a, oldData), errB == nil && bytes.Equal(b, oldData)
			if !okA && !okB || done && (okA || !okB) {
				t.Fatalf("after the crash: old name %v, new name %v", errA, errB)
			}
		}},
		{"rename to a longer name", func(v *fat32) error {
			return v.rename("loader/entries/sealift-A+3.conf", "loader/entries/a much longer name that moves the entry.conf")
		}, func(t *testing.T, v *fat32, done bool) {
			a, errA := v.readFile("loader/entries/sealift-A+3.conf")
			b, errB := v.readFile("loader/entries/a much longer name that moves the entry.conf")
			okA, okB := errA == nil && bytes.Equal(a, oldData), errB == nil && bytes.Equal(b, oldData)
			if !okA && !okB || done && (okA || !okB) {
				t.Fatalf("after the crash: old name %v, new name %v", errA, errB)
			}
			// Both names may exist for a moment; removing one keeps the other's data.
			if okA && okB {
				must(t, v.remove("loader/entries/sealift-A+3.conf"))
				if b, err := v.readFile("loader/entries/a much longer name that moves the entry.conf"); err != nil || !bytes.Equal(b, oldData) {
					t.Fatalf("removing one of two names: %v", err)
				}
			}
		}},
		{"remove", func(v *fat32) error { return v.remove("sealift/A/vmlinuz") },
			func(t *testing.T, v *fat32, done bool) {
				got, err := v.readFile("sealift/A/vmlinuz")
				if !(err == nil && bytes.Equal(got, oldData) && !done || errors.Is(err, iofs.ErrNotExist)) {
					t.Fatalf("after the crash: %d bytes, %v", len(got), err)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for budget := 0; ; budget++ {
				o := base.survivor()
				o.budget = budget
				err := tc.op(load(t, o))
				done := err == nil
				if !done && !errors.Is(err, errCrash) {
					t.Fatalf("budget %d: %v", budget, err)
				}
				after := load(t, o.survivor())
				if _, err := after.readDirNames("sealift/A"); err != nil {
					t.Fatalf("budget %d: directory unreadable: %v", budget, err)
				}
				tc.check(t, after, done)
				// Life goes on: the next replace works and cleans up.
				must(t, after.writeFileAtomic("sealift/A/vmlinuz", oldData))
				if got, err := after.readFile("sealift/A/vmlinuz"); err != nil || !bytes.Equal(got, oldData) {
					t.Fatalf("budget %d: write after the crash: %v", budget, err)
				}
				if names, _ := after.readDirNames("sealift/A"); len(names) > 0 && names[0] == ".vmlinuz.tmp" {
					t.Fatalf("budget %d: temporary file left: %q", budget, names)
				}
				if done {
					if budget < 1 {
						t.Fatalf("finished after %d writes", budget)
					}
					return
				}
			}
		})
	}
}

// Bytes another writer left after a directory's end marker never show up
// as entries, even once the directory grows over them.
func TestFATGarbageAfterEndMarker(t *testing.T) {
	o := crashBase(t, func(v *fat32) { must(t, v.mkdirAll("d")) })
	v := load(t, o)
	d, err := v.walk("test", "d", []string{"d"})
	if err != nil {
		t.Fatal(err)
	}
	// "." and ".." then the end marker; junk from slot 5 on.
	junk := sfnEntry(pad83("JUNK", "BIN"), attrArchive, 0, 0, timeZero)
	for i := 5; i < d.slots(); i++ {
		copy(d.slot(i), junk)
	}
	must(t, v.writeSlots(d, 0, d.slots()))
	v = load(t, o)
	var want []string
	for _, n := range []string{"one", "two", "three long name", "four", "five long name here", "six", "seven"} {
		must(t, v.writeFileAtomic("d/"+n, []byte(n)))
		want = append(want, n)
	}
	got, err := load(t, o).readDirNames("d")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("directory lists %q", got)
	}
	for _, n := range got {
		if n == "JUNK.BIN" {
			t.Fatalf("junk after the end marker became an entry: %q", got)
		}
	}
}

// The formatter makes a FAT32 that fsck.vfat passes, that maps every
// cluster, for sizes around every boundary of the cluster size table and
// for 4 KiB sectors.
func TestFormatFAT32Sizes(t *testing.T) {
	fsck := testutil.RequireTool(t, "fsck.vfat")
	for _, tc := range []struct {
		sizeMiB, sector int64
	}{
		{34, 512}, {36, 512}, {40, 512}, {64, 512}, {100, 512}, {127, 512}, {128, 512}, {129, 512},
		{200, 512}, {260, 512}, {261, 512}, {300, 512}, {513, 512}, {300, 4096}, {1024, 4096},
	} {
		t.Run(fmt.Sprintf("%dMiB-%d", tc.sizeMiB, tc.sector), func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "fat.img")
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			size := tc.sizeMiB * mib
			f.Truncate(size)
			if err := formatFAT32(region{f: f, size: size}, tc.sector, 2048, "ESP"); err != nil {
				t.Fatal(err)
			}
			v, err := loadFAT32(region{f: f, size: size})
			if err != nil {
				t.Fatal(err)
			}
			if v.maxCluster-1 < minFAT32Clust || v.freeCount != v.maxCluster-2 {
				t.Errorf("%d clusters, %d free", v.maxCluster-1, v.freeCount)
			}
			out, err := run(fsck, "-n", p)
			if lines := strings.Split(strings.TrimSpace(out), "\n"); err != nil || len(lines) != 2 {
				t.Fatalf("fsck.vfat -n: %v\n%s", err, out)
			}
			must(t, v.mkdirAll("EFI/BOOT"))
			must(t, v.writeFileAtomic("EFI/BOOT/BOOTX64.EFI", pattern(100_000, 1)))
			if out, err := run(fsck, "-n", p); err != nil || len(strings.Split(strings.TrimSpace(out), "\n")) != 2 {
				t.Fatalf("fsck.vfat -n after writing: %v\n%s", err, out)
			}
		})
	}
	p := filepath.Join(t.TempDir(), "small.img")
	f, _ := os.Create(p)
	defer f.Close()
	f.Truncate(32 * mib)
	if err := formatFAT32(region{f: f, size: 32 * mib}, 512, 2048, "ESP"); !errors.Is(err, ErrTooSmall) {
		t.Errorf("32 MiB: %v", err)
	}
}
