package partitions

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/google/uuid"
	"golang.org/x/sys/unix"
)

// smallLayout keeps test images small: 1 + 40 + 2×16 + 69 + 1 MiB.
var smallLayout = Layout{ESPSize: 40 * mib, RootSize: 16 * mib}

const smallSize = 144 * mib

// newDisk creates a disk image with the small layout.
func newDisk(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := Create(p, CreateOptions{Size: smallSize, Layout: smallLayout}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	return p
}

func openDisk(t testing.TB, p string, writable bool) *Disk {
	t.Helper()
	d, err := Open(p, writable)
	if err != nil {
		t.Fatalf("Open(%s): %v", p, err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// extract copies a byte range of a file into a new sparse file, for tools
// that cannot take an offset (fsck.vfat, e2fsck).
func extract(t testing.TB, src string, off, size int64) string {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	dst := filepath.Join(t.TempDir(), "part.img")
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	buf := make([]byte, 64<<10)
	fd := int(in.Fd())
	for pos := int64(0); pos < size; {
		// Skip the holes of a sparse source.
		data, err := unix.Seek(fd, off+pos, unix.SEEK_DATA)
		if err != nil || data >= off+size {
			break
		}
		pos = data - off
		n, err := in.ReadAt(buf[:min(int64(len(buf)), size-pos)], off+pos)
		if err != nil && n == 0 {
			t.Fatal(err)
		}
		if !isZero(buf[:n]) {
			if _, err := out.WriteAt(buf[:n], pos); err != nil {
				t.Fatal(err)
			}
		}
		pos += int64(n)
	}
	if err := out.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return dst
}

func readRange(t testing.TB, p string, off, n int64) []byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func writeRange(t testing.TB, p string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// run runs a command and returns its combined output and exit error.
func run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1", "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// testPart is one partition of a hand-made table.
type testPart struct {
	index      int
	label      string
	typ        string
	startMiB   uint64
	sizeMiB    uint64
	attributes uint64
}

// writeTestTable writes a GPT with the given partitions to a new image,
// with go-diskfs so the broken layouts need no external tool.
func writeTestTable(t testing.TB, sizeMiB int64, parts []testPart) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "broken.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(sizeMiB * mib); err != nil {
		t.Fatal(err)
	}
	tbl := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true}
	for _, tp := range parts {
		tbl.Partitions = append(tbl.Partitions, &gpt.Partition{
			Index: tp.index, Start: tp.startMiB * 2048, End: (tp.startMiB+tp.sizeMiB)*2048 - 1,
			Type: gpt.Type(strings.ToUpper(tp.typ)), Name: tp.label, GUID: uuid.NewString(), Attributes: tp.attributes,
		})
	}
	if err := tbl.Write(f, sizeMiB*mib); err != nil {
		t.Fatal(err)
	}
	return p
}

// goodParts is the layout as Create makes it, for variations.
func goodParts() []testPart {
	return []testPart{
		{1, LabelESP, TypeESP, 1, 40, 0},
		{2, LabelRootA, TypeRootX86_64, 41, 16, 0},
		{3, LabelRootB, TypeRootX86_64, 57, 16, 0},
		{4, LabelState, TypeLinuxData, 73, 64, 0},
	}
}

func wantErr(t testing.TB, err, target error, contains ...string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v, want %v", err, target)
	}
	for _, c := range contains {
		if !strings.Contains(err.Error(), c) {
			t.Errorf("error %q does not mention %q", err, c)
		}
	}
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31) ^ seed
	}
	return b
}

func equalBytes(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes differ from the %d expected", what, len(got), len(want))
	}
}
