package partitions

import (
	"bytes"
	"errors"
	"fmt"
	iofs "io/fs"
	"math/rand"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"sealift/bootloader"
	"sealift/internal/testutil"
)

func espOf(t testing.TB, p string) bootloader.FS {
	t.Helper()
	d := openDisk(t, p, true)
	f, err := d.ESPFS()
	if err != nil {
		t.Fatalf("ESPFS: %v", err)
	}
	if _, ok := f.(*espFS); !ok {
		t.Fatalf("ESPFS of an unmounted image is %T", f)
	}
	return f
}

// fsckESP runs fsck.vfat -n on the ESP and fails on any finding.
func fsckESP(t testing.TB, p string) {
	t.Helper()
	fsck := testutil.RequireTool(t, "fsck.vfat")
	d := openDisk(t, p, false)
	img := extract(t, p, d.ESP().Start, d.ESP().Size)
	out, err := run(fsck, "-n", img)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	// A clean run prints the version and the summary line only.
	if err != nil || len(lines) != 2 {
		t.Fatalf("fsck.vfat -n: %v\n%s", err, out)
	}
}

func TestESPFSBasics(t *testing.T) {
	p := newDisk(t)
	f := espOf(t, p)

	if names, err := f.ReadDir(""); err != nil || len(names) != 0 {
		t.Errorf("root of a new ESP: %v, %v", names, err)
	}
	if _, err := f.ReadFile("nope"); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("ReadFile of a missing file: %v", err)
	}
	if _, err := f.ReadFile("no/dir/file"); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("ReadFile in a missing dir: %v", err)
	}
	if names, err := f.ReadDir("no/dir"); err != nil || names != nil {
		t.Errorf("ReadDir of a missing dir: %v, %v", names, err)
	}
	if err := f.Remove("nope"); err != nil {
		t.Errorf("Remove of a missing file: %v", err)
	}
	if err := f.Remove("no/dir/nope"); err != nil {
		t.Errorf("Remove in a missing dir: %v", err)
	}
	if err := f.WriteFile("no/dir/file", []byte("x")); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("WriteFile in a missing dir: %v", err)
	}
	if err := f.Rename("nope", "other"); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("Rename of a missing file: %v", err)
	}

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(f.MkdirAll("sealift/A"))
	must(f.MkdirAll("/sealift/A/")) // again, and with slashes
	big := pattern(700_000, 3)
	must(f.WriteFile("sealift/A/vmlinuz", big))
	must(f.WriteFile("sealift/A/vmlinuz", big[:1000])) // replace, shorter
	must(f.WriteFile("sealift/A/vmlinuz", big))        // replace, longer
	must(f.WriteFile("sealift/A/empty", nil))
	must(f.WriteFile("sealift/A/Mixed Case Long Name.conf", []byte("mixed")))
	must(f.WriteFile("sealift/A/sealift-a+3-1.conf", []byte("entry")))
	must(f.WriteFile("sealift/A/ünïcödé.txt", []byte("utf")))
	must(f.WriteFile("UPPER.TXT", []byte("plain 8.3")))

	for name, want := range map[string][]byte{
		"sealift/A/vmlinuz":                   big,
		"sealift/A/empty":                     {},
		"sealift/A/mixed case long name.conf": []byte("mixed"), // FAT is case-insensitive
		"sealift/a/sealift-a+3-1.conf":        []byte("entry"),
		"sealift/A/ünïcödé.txt":               []byte("utf"),
		"upper.txt":                           []byte("plain 8.3"),
	} {
		got, err := f.ReadFile(name)
		if err != nil {
			t.Errorf("ReadFile(%s): %v", name, err)
			continue
		}
		equalBytes(t, name, got, want)
	}
	names, err := f.ReadDir("sealift/A")
	must(err)
	want := []string{"Mixed Case Long Name.conf", "empty", "sealift-a+3-1.conf", "vmlinuz", "ünïcödé.txt"}
	if fmt.Sprint(names) != fmt.Sprint(want) {
		t.Errorf("ReadDir: %q, want %q", names, want)
	}
	if names, _ := f.ReadDir(""); fmt.Sprint(names) != "[UPPER.TXT sealift]" {
		t.Errorf("root: %q", names)
	}

	// Renames: plain, over an existing file, case only, across directories.
	must(f.Rename("sealift/A/sealift-a+3-1.conf", "sealift/A/sealift-a+2-1.conf"))
	must(f.Rename("sealift/A/empty", "sealift/A/vmlinuz"))
	must(f.Rename("sealift/A/Mixed Case Long Name.conf", "sealift/A/MIXED case long name.conf"))
	must(f.MkdirAll("loader/entries"))
	must(f.Rename("sealift/A/sealift-a+2-1.conf", "loader/entries/sealift-a.conf"))
	if b, err := f.ReadFile("sealift/A/vmlinuz"); err != nil || len(b) != 0 {
		t.Errorf("after renaming empty over vmlinuz: %d bytes, %v", len(b), err)
	}
	if b, err := f.ReadFile("loader/entries/sealift-a.conf"); err != nil || string(b) != "entry" {
		t.Errorf("after moving across directories: %q, %v", b, err)
	}
	names, _ = f.ReadDir("sealift/A")
	if fmt.Sprint(names) != "[MIXED case long name.conf vmlinuz ünïcödé.txt]" {
		t.Errorf("after renames: %q", names)
	}
	// A directory moved elsewhere keeps a correct "..".
	must(f.MkdirAll("sealift/B/sub"))
	must(f.Rename("sealift/B/sub", "loader/sub"))
	if names, _ := f.ReadDir("loader"); fmt.Sprint(names) != "[entries sub]" {
		t.Errorf("loader: %q", names)
	}

	// Removes; a non-empty directory stays.
	if err := f.Remove("sealift/A"); err == nil {
		t.Error("Remove of a non-empty directory succeeded")
	}
	must(f.Remove("loader/sub"))
	must(f.Remove("sealift/A/vmlinuz"))
	if _, err := f.ReadFile("sealift/A/vmlinuz"); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("after Remove: %v", err)
	}

	// Invalid names and paths.
	for _, bad := range []string{"sealift/a:b", "sealift/trailing.", "sealift/" + strings.Repeat("x", 256)} {
		if err := f.WriteFile(bad, []byte("x")); !errors.Is(err, iofs.ErrInvalid) {
			t.Errorf("WriteFile(%q): %v", bad, err)
		}
	}
	if err := f.MkdirAll("UPPER.TXT/sub"); err == nil {
		t.Error("MkdirAll through a file succeeded")
	}
	if err := f.WriteFile("UPPER.TXT/x", []byte("x")); err == nil {
		t.Error("WriteFile below a file succeeded")
	}
	if err := f.Rename("sealift/B", "UPPER.TXT"); err == nil {
		t.Error("replacing a file by a directory succeeded")
	}
	fsckESP(t, p)
}

func TestESPFSBootFiles(t *testing.T) {
	p := newDisk(t)
	f := espOf(t, p)
	bf := bootloader.BootFiles{Kernel: pattern(300_000, 9), Initrd: pattern(100_000, 1), Cmdline: "root=PARTUUID=x ro", Version: "1.2.3"}
	if err := bootloader.WriteBootFiles(f, bootloader.SlotB, bf); err != nil {
		t.Fatal(err)
	}
	e, err := bootloader.ReadBootEntry(f, bootloader.SlotB)
	if err != nil || e.Version != "1.2.3" || e.Cmdline != bf.Cmdline || e.Initrd == "" {
		t.Fatalf("ReadBootEntry: %+v, %v", e, err)
	}
	// Rewritten without an initrd.
	bf.Initrd = nil
	if err := bootloader.WriteBootFiles(f, bootloader.SlotB, bf); err != nil {
		t.Fatal(err)
	}
	if e, err := bootloader.ReadBootEntry(f, bootloader.SlotB); err != nil || e.Initrd != "" {
		t.Fatalf("ReadBootEntry without initrd: %+v, %v", e, err)
	}
	if err := bootloader.RecordBackend(f, "gptprio"); err != nil {
		t.Fatal(err)
	}
	if n, err := bootloader.RecordedBackend(espOf(t, p)); err != nil || n != "gptprio" {
		t.Errorf("RecordedBackend: %q, %v", n, err)
	}
	fsckESP(t, p)
}

// churnNames are the files the random churn works on: short, long, mixed
// case, several directories.
var churnNames = []string{
	"sealift/A/vmlinuz", "sealift/A/initrd.img", "sealift/A/cmdline",
	"sealift/B/vmlinuz", "sealift/B/initrd.img", "sealift/B/version",
	"loader/entries/sealift-A+3.conf", "loader/entries/sealift-A+2-1.conf",
	"loader/entries/sealift-B.conf", "grubenv", "EFI/BOOT/BOOTX64.EFI",
	"EFI/BOOT/a rather long file name with spaces.txt",
}

// TestESPFSChurn runs a long random sequence of writes, renames and
// removes against the ESP and against a directory (the model), then
// checks that both hold the same files, that fsck.vfat finds nothing to
// fix (no lost or cross-linked clusters, right free count), and that
// mtools reads every file the same.
func TestESPFSChurn(t *testing.T) {
	p := newDisk(t)
	f := espOf(t, p)
	model := bootloader.DirFS(t.TempDir())
	rng := rand.New(rand.NewSource(churnSeed))
	for _, fs := range []bootloader.FS{f, model} {
		for _, d := range []string{"sealift/A", "sealift/B", "loader/entries", "EFI/BOOT"} {
			if err := fs.MkdirAll(d); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := 0; i < churnSteps; i++ {
		a := churnNames[rng.Intn(len(churnNames))]
		b := churnNames[rng.Intn(len(churnNames))]
		var errF, errM error
		var op string
		switch r := rng.Intn(10); {
		case r < 5:
			size := rng.Intn(300_000)
			if rng.Intn(8) == 0 {
				size = 0
			}
			data := pattern(size, byte(i))
			op = fmt.Sprintf("write %s (%d bytes)", a, size)
			errF, errM = f.WriteFile(a, data), model.WriteFile(a, data)
		case r < 8:
			op = fmt.Sprintf("rename %s %s", a, b)
			errF, errM = f.Rename(a, b), model.Rename(a, b)
		default:
			op = "remove " + a
			errF, errM = f.Remove(a), model.Remove(a)
		}
		if (errF == nil) != (errM == nil) {
			t.Fatalf("step %d, %s: ESP says %v, directory says %v", i, op, errF, errM)
		}
		if i%50 == 0 {
			compareTrees(t, f, model)
		}
	}
	compareTrees(t, f, model)
	fsckESP(t, p)

	// mtools, an independent FAT implementation, reads the same.
	mdir := testutil.RequireTool(t, "mdir")
	mtype := testutil.RequireTool(t, "mtype")
	d := openDisk(t, p, false)
	img := fmt.Sprintf("%s@@%d", p, d.ESP().Start)
	for _, dir := range []string{"sealift/A", "sealift/B", "loader/entries", "EFI/BOOT"} {
		out, err := run(mdir, "-b", "-i", img, "::/"+dir)
		if err != nil {
			t.Fatalf("mdir %s: %v\n%s", dir, err, out)
		}
		want, _ := model.ReadDir(dir)
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if l != "" {
				got = append(got, path.Base(l))
			}
		}
		sort.Strings(got)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("mdir %s: %q, want %q", dir, got, want)
		}
		for _, n := range want {
			out, err := run(mtype, "-i", img, "::/"+dir+"/"+n)
			if err != nil {
				t.Fatalf("mtype %s/%s: %v", dir, n, err)
			}
			wantData, _ := model.ReadFile(dir + "/" + n)
			equalBytes(t, "mtype "+dir+"/"+n, []byte(out), wantData)
		}
	}
}

func compareTrees(t testing.TB, got, want bootloader.FS) {
	t.Helper()
	var walk func(dir string)
	walk = func(dir string) {
		gn, err := got.ReadDir(dir)
		if err != nil {
			t.Fatalf("ReadDir(%s): %v", dir, err)
		}
		wn, _ := want.ReadDir(dir)
		if fmt.Sprint(gn) != fmt.Sprint(wn) {
			t.Fatalf("%s: ESP has %q, directory has %q", dir, gn, wn)
		}
		for _, n := range wn {
			p := path.Join(dir, n)
			wd, err := want.ReadFile(p)
			if err != nil { // a directory
				walk(p)
				continue
			}
			gd, err := got.ReadFile(p)
			if err != nil {
				t.Fatalf("ReadFile(%s): %v", p, err)
			}
			equalBytes(t, p, gd, wd)
		}
	}
	walk("")
}

// Files and directories made by mtools are read, replaced and removed by
// us, and the result is still clean for fsck.vfat and readable by mtools.
func TestESPFSWithMtools(t *testing.T) {
	mcopy := testutil.RequireTool(t, "mcopy")
	mmd := testutil.RequireTool(t, "mmd")
	mtype := testutil.RequireTool(t, "mtype")
	p := newDisk(t)
	d := openDisk(t, p, true)
	img := fmt.Sprintf("%s@@%d", p, d.ESP().Start)
	src := filepath.Join(t.TempDir(), "Some Long Name.efi")
	data := pattern(123_457, 7)
	os.WriteFile(src, data, 0o644)
	if out, err := run(mmd, "-i", img, "::/EFI", "::/EFI/BOOT"); err != nil {
		t.Fatalf("mmd: %v\n%s", err, out)
	}
	for _, dst := range []string{"::/EFI/BOOT/Some Long Name.efi", "::/EFI/BOOT/BOOTX64.EFI", "::/EFI/BOOT/grubx64.efi"} {
		if out, err := run(mcopy, "-i", img, src, dst); err != nil {
			t.Fatalf("mcopy: %v\n%s", err, out)
		}
	}
	f, err := d.ESPFS()
	if err != nil {
		t.Fatal(err)
	}
	names, err := f.ReadDir("EFI/BOOT")
	if err != nil || fmt.Sprint(names) != "[BOOTX64.EFI Some Long Name.efi grubx64.efi]" {
		t.Fatalf("ReadDir of mtools' directory: %q, %v", names, err)
	}
	for _, n := range names {
		b, err := f.ReadFile("EFI/BOOT/" + n)
		if err != nil {
			t.Fatal(err)
		}
		equalBytes(t, n, b, data)
	}
	newData := pattern(5000, 1)
	if err := f.WriteFile("EFI/BOOT/BOOTX64.EFI", newData); err != nil {
		t.Fatal(err)
	}
	if err := f.Remove("EFI/BOOT/Some Long Name.efi"); err != nil {
		t.Fatal(err)
	}
	if err := f.Rename("EFI/BOOT/grubx64.efi", "EFI/BOOT/shimx64.efi"); err != nil {
		t.Fatal(err)
	}
	fsckESP(t, p)
	for n, want := range map[string][]byte{"BOOTX64.EFI": newData, "shimx64.efi": data} {
		out, err := run(mtype, "-i", img, "::/EFI/BOOT/"+n)
		if err != nil {
			t.Fatalf("mtype %s: %v\n%s", n, err, out)
		}
		equalBytes(t, "mtype "+n, []byte(out), want)
	}
}

// A directory outgrows its first cluster (16 entries of 512 bytes), then
// shrinks and grows again.
func TestESPFSDirectoryGrowth(t *testing.T) {
	p := newDisk(t)
	f := espOf(t, p)
	if err := f.MkdirAll("many"); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := 0; i < 120; i++ {
		n := fmt.Sprintf("a long file name number %03d.conf", i)
		if err := f.WriteFile("many/"+n, []byte(n)); err != nil {
			t.Fatal(err)
		}
		want = append(want, n)
	}
	for i := 0; i < 120; i += 2 {
		if err := f.Remove("many/" + want[i]); err != nil {
			t.Fatal(err)
		}
	}
	var kept []string
	for i := 1; i < 120; i += 2 {
		kept = append(kept, want[i])
	}
	for i := 0; i < 40; i++ {
		n := fmt.Sprintf("X%d", i)
		if err := f.WriteFile("many/"+n, []byte(n)); err != nil {
			t.Fatal(err)
		}
		kept = append(kept, n)
	}
	sort.Strings(kept)
	got, err := f.ReadDir("many")
	if err != nil || fmt.Sprint(got) != fmt.Sprint(kept) {
		t.Fatalf("ReadDir: %v\n got %q\nwant %q", err, got, kept)
	}
	for _, n := range kept {
		if b, err := f.ReadFile("many/" + n); err != nil || string(b) != n {
			t.Fatalf("%s: %q, %v", n, b, err)
		}
	}
	fsckESP(t, p)
}

func TestESPFSFull(t *testing.T) {
	p := newDisk(t)
	f := espOf(t, p)
	keep := pattern(20<<20, 2)
	if err := f.WriteFile("keep", keep); err != nil {
		t.Fatal(err)
	}
	// Replacing needs room for old and new at once: 2 × 20 MiB do not fit in 40.
	err := f.WriteFile("keep", pattern(25<<20, 3))
	wantErr(t, err, ErrESPFull, "free")
	got, err := f.ReadFile("keep")
	if err != nil {
		t.Fatal(err)
	}
	equalBytes(t, "file after a failed replace", got, keep)
	fsckESP(t, p)
}

func TestESPFSReadOnlyAndBroken(t *testing.T) {
	p := newDisk(t)
	if err := espOf(t, p).WriteFile("x", []byte("x")); err != nil {
		t.Fatal(err)
	}
	ro := openDisk(t, p, false)
	f, err := ro.ESPFS()
	if err != nil {
		t.Fatal(err)
	}
	if b, err := f.ReadFile("x"); err != nil || string(b) != "x" {
		t.Errorf("read-only ReadFile: %q, %v", b, err)
	}
	if err := f.WriteFile("y", nil); !errors.Is(err, ErrReadOnly) {
		t.Errorf("read-only WriteFile: %v", err)
	}
	// No FAT at all.
	writeRange(t, p, ro.ESP().Start, make([]byte, 512))
	if _, err := openDisk(t, p, false).ESPFS(); err == nil || !strings.Contains(err.Error(), "no FAT boot sector") {
		t.Errorf("ESPFS without a filesystem: %v", err)
	}
}

func TestShortNames(t *testing.T) {
	dir := &fatDir{}
	add := func(s string) {
		var sfn [11]byte
		copy(sfn[:], s)
		dir.entries = append(dir.entries, &fatEntry{sfn: sfn})
	}
	add("VMLINUZ    ")
	add("LONGNA~1CON")
	for _, tc := range []struct {
		name    string
		sfn     string
		needLFN bool
	}{
		{"README.TXT", "README  TXT", false},
		{"readme.txt", "README  TXT", true},
		{"GRUBENV", "GRUBENV    ", false},
		{"vmlinuz", "VMLINU~1   ", true}, // taken
		{"longname.config", "LONGNA~2CON", true},
		{".hidden", "HIDDEN~1   ", true},
		{"a+b.conf", "A_B~1   CON", true},
		{"ünï.txt", "_N_~1   TXT", true},
		{"with space", "WITHSP~1   ", true},
		{"x.tar.gz", "XTAR~1  GZ ", true},
	} {
		sfn, lfn := shortNameFor(tc.name, dir)
		if string(sfn[:]) != tc.sfn || lfn != tc.needLFN {
			t.Errorf("%q: %q lfn %v, want %q lfn %v", tc.name, sfn[:], lfn, tc.sfn, tc.needLFN)
		}
	}
}

// The LFN checksum and entry layout match the specification's example
// as mtools and Linux compute it.
func TestLFNEntries(t *testing.T) {
	sfn := pad83("SEALIF~1", "CON")
	ents := lfnEntries("sealift-A+3-1.conf", sfn)
	if len(ents) != 2 || ents[0][0] != 0x42 || ents[1][0] != 0x01 {
		t.Fatalf("ordinals: %d entries, %#x %#x", len(ents), ents[0][0], ents[1][0])
	}
	d := &fatDir{data: bytes.Join(append(ents, sfnEntry(sfn, attrArchive, 5, 10, timeZero)), nil)}
	d.parse()
	if len(d.entries) != 1 || d.entries[0].long != "sealift-A+3-1.conf" || d.entries[0].short != "SEALIF~1.CON" || d.entries[0].cluster != 5 {
		t.Fatalf("parsed: %+v", d.entries[0])
	}
	// A checksum mismatch (an orphaned long name) falls back to the 8.3 name.
	d.data[13] ^= 1
	d.parse()
	if d.entries[0].long != "" {
		t.Errorf("orphaned long name accepted: %q", d.entries[0].long)
	}
}

var timeZero = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// After changing the FAT code, run the churn with other seeds and more
// steps by editing these (several seeds × 1500 steps passed).
var (
	churnSeed  int64 = 1
	churnSteps       = 400
)

// TestESPFSReadersDuringWrites: readers that do not hold the disk lock
// (sealift status while the agent updates) read the ESP while another
// open of the disk replaces a file on it over and over. Every read sees
// the old file or the new one, never a FAT caught halfway.
func TestESPFSReadersDuringWrites(t *testing.T) {
	p := newDisk(t)
	w := espOf(t, p)
	payload := func(i int) []byte { return bytes.Repeat([]byte(fmt.Sprintf("%08d", i)), 3000+i%700) }
	if err := w.MkdirAll("sealift"); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFile("sealift/state.json", payload(0)); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	errs := make(chan error, 8)
	for r := 0; r < 3; r++ {
		go func() {
			d, err := Open(p, false)
			if err != nil {
				errs <- err
				return
			}
			defer d.Close()
			f, err := d.ESPFS()
			if err != nil {
				errs <- err
				return
			}
			for {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				b, err := f.ReadFile("sealift/state.json")
				if err != nil {
					errs <- fmt.Errorf("read while a writer replaces the file: %w", err)
					return
				}
				var i int
				if _, err := fmt.Sscanf(string(b[:8]), "%08d", &i); err != nil || !bytes.Equal(b, payload(i)) {
					errs <- fmt.Errorf("read %d bytes that are neither the old file nor the new one", len(b))
					return
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	for i := 1; i <= 100; i++ {
		if err := w.WriteFile("sealift/state.json", payload(i)); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	for r := 0; r < 3; r++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	fsckESP(t, p)
}

// TestESPFSReadWaitsForWrite: a read of the ESP waits while another open
// of the disk holds the ESP for a change, and goes on once it is done.
// (Without the lock, TestESPFSReadersDuringWrites catches a torn read
// only now and then; this shows the exclusion every time.)
func TestESPFSReadWaitsForWrite(t *testing.T) {
	p := newDisk(t)
	w := espOf(t, p)
	if err := w.WriteFile("f", []byte("x")); err != nil {
		t.Fatal(err)
	}
	d := openDisk(t, p, false)
	r, err := d.ESPFS()
	if err != nil {
		t.Fatal(err)
	}
	held, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := lockRange(held, true, d.ESP().Start, d.ESP().Size); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := r.ReadFile("f")
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("read the ESP while a writer holds it (%v)", err)
	case <-time.After(300 * time.Millisecond):
	}
	held.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the read did not go on after the writer let go")
	}
}
