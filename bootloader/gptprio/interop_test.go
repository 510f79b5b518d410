package gptprio

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"sealift/bootloader"
	"sealift/internal/testutil"
	"sealift/partitions"
)

// newDisk makes a small sealift disk image and opens it for writing.
func newDisk(t *testing.T) (string, *partitions.Disk) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	err := partitions.Create(p, partitions.CreateOptions{
		Size:   144 << 20,
		Layout: partitions.Layout{ESPSize: 40 << 20, RootSize: 16 << 20},
	})
	if err != nil {
		t.Fatal(err)
	}
	d, err := partitions.Open(p, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return p, d
}

func cgptField(t *testing.T, cgpt, disk string, idx int, field string) string {
	t.Helper()
	return strings.TrimSpace(testutil.Run(t, cgpt, "show", "-i", strconv.Itoa(idx), field, disk))
}

// What we write is what cgpt and sgdisk read, and sgdisk finds the table
// valid afterwards.
func TestInteropWriteReadByCgpt(t *testing.T) {
	cgpt := testutil.RequireTool(t, "cgpt")
	sgdisk := testutil.RequireTool(t, "sgdisk")
	p, d := newDisk(t)
	b := New(d)
	for _, tc := range []bootloader.Flags{
		{sA: {Priority: 15, Tries: 3, Successful: true}, sB: {}},
		{sA: {Priority: 1, Successful: true}, sB: {Priority: 2, Tries: 3}},
		{sA: {Priority: 0, Tries: 15}, sB: {Priority: 7, Tries: 1, Successful: true}},
	} {
		if err := b.Save(tc); err != nil {
			t.Fatal(err)
		}
		for _, s := range bootloader.Slots {
			idx := d.Slot(s).Index
			want := tc[s]
			got := fmt.Sprintf("P%s T%s S%s", cgptField(t, cgpt, p, idx, "-P"), cgptField(t, cgpt, p, idx, "-T"), cgptField(t, cgpt, p, idx, "-S"))
			if w := fmt.Sprintf("P%d T%d S%d", want.Priority, want.Tries, btoi(want.Successful)); got != w {
				t.Errorf("slot %s: cgpt shows %s, want %s", s, got, w)
			}
			raw := Encode(0, want)
			if a := cgptField(t, cgpt, p, idx, "-A"); parseUint(t, a) != raw>>48 {
				t.Errorf("slot %s: cgpt -A %s, want %#x", s, a, raw>>48)
			}
			if out := testutil.Run(t, sgdisk, "-i", strconv.Itoa(idx), p); !strings.Contains(out, fmt.Sprintf("Attribute flags: %016X", raw)) {
				t.Errorf("slot %s: sgdisk does not show %016X:\n%s", s, raw, out)
			}
		}
		if out := testutil.Run(t, sgdisk, "-v", p); !strings.Contains(out, "No problems found") {
			t.Errorf("sgdisk -v:\n%s", out)
		}
		// cgpt validates both headers and both entry arrays too.
		if out := testutil.Run(t, cgpt, "show", "-v", p); strings.Contains(strings.ToLower(out), "invalid") {
			t.Errorf("cgpt show -v:\n%s", out)
		}
	}
	// The example from the specification of the format.
	testutil.Run(t, cgpt, "add", "-i", "2", "-P", "15", "-T", "3", "-S", "1", p)
	if v, err := d.Attributes(sA); err != nil || v != 0x013F000000000000 {
		t.Errorf("after cgpt add -P 15 -T 3 -S 1: %#016x, %v", v, err)
	}
}

// What cgpt (and sgdisk, for a foreign bit) writes is what Load reads, and
// our Save keeps the foreign bit.
func TestInteropReadCgptWrites(t *testing.T) {
	cgpt := testutil.RequireTool(t, "cgpt")
	sgdisk := testutil.RequireTool(t, "sgdisk")
	p, d := newDisk(t)
	testutil.Run(t, cgpt, "add", "-i", "3", "-P", "1", "-T", "2", "-S", "0", p)
	testutil.Run(t, cgpt, "add", "-i", "2", "-P", "2", "-T", "0", "-S", "1", p)
	testutil.Run(t, sgdisk, "-A", "3:set:2", p)
	b := New(d)
	f, err := b.Load()
	if err != nil {
		t.Fatal(err)
	}
	want := bootloader.Flags{sA: {Priority: 2, Successful: true}, sB: {Priority: 1, Tries: 2}}
	if fmt.Sprint(f) != fmt.Sprint(want) {
		t.Fatalf("Load: %v, want %v", f, want)
	}
	if _, err := bootloader.Apply(b, bootloader.Trial(sB, 3)); err != nil {
		t.Fatal(err)
	}
	if got := cgptField(t, cgpt, p, 3, "-B"); got != "1" {
		t.Errorf("legacy BIOS bootable bit after our Save: %s", got)
	}
	if got := fmt.Sprintf("%s %s %s", cgptField(t, cgpt, p, 3, "-P"), cgptField(t, cgpt, p, 3, "-T"), cgptField(t, cgpt, p, 3, "-S")); got != "2 3 0" {
		t.Errorf("slot B after Trial: P T S = %s", got)
	}
	if out := testutil.Run(t, cgpt, "show", "-i", "3", p); !strings.Contains(out, "legacy_boot=1") {
		t.Errorf("cgpt show -i 3:\n%s", out)
	}
	if out := testutil.Run(t, sgdisk, "-i", "3", p); !strings.Contains(out, "Attribute flags: 0032000000000004") {
		t.Errorf("sgdisk -i 3:\n%s", out)
	}
	if out := testutil.Run(t, sgdisk, "-v", p); !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v:\n%s", out)
	}
}

// Every state of the golden walk, set with cgpt on a disk carrying the
// same foreign bits, reads back as exactly the golden word: the golden
// file is cgpt's encoding, not only ours. And the walk run through a real
// disk gives the same lines as in memory.
func TestInteropGoldenAgainstCgpt(t *testing.T) {
	cgpt := testutil.RequireTool(t, "cgpt")
	sgdisk := testutil.RequireTool(t, "sgdisk")
	p, d := newDisk(t)
	testutil.Run(t, sgdisk, "-A", "2:set:0", "-A", "2:set:57", "-A", "3:set:2", "-A", "3:set:60", p)
	for _, s := range bootloader.Slots {
		if v, _ := d.Attributes(s); v != goldenStart[s] {
			t.Fatalf("slot %s starts at %#016x, want %#016x", s, v, goldenStart[s])
		}
	}
	for _, l := range goldenLines(t) {
		for i, s := range bootloader.Slots {
			want, err := strconv.ParseUint(strings.TrimPrefix(l[1+i], "0x"), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			f := Decode(want)
			testutil.Run(t, cgpt, "add", "-i", strconv.Itoa(d.Slot(s).Index),
				"-P", strconv.Itoa(f.Priority), "-T", strconv.Itoa(f.Tries), "-S", strconv.Itoa(btoi(f.Successful)), p)
			if got, err := d.Attributes(s); err != nil || got != want {
				t.Errorf("%s slot %s: cgpt writes %#016x, golden says %#016x (%v)", l[0], s, got, want, err)
			}
		}
	}

	// The same walk through the disk itself.
	_, d2 := newDisk(t)
	if err := d2.SetAttributes(goldenStart); err != nil {
		t.Fatal(err)
	}
	got := runGolden(t, New(d2), d2)
	lines := goldenLines(t)
	for i, l := range got {
		if f := strings.Fields(l); i >= len(lines) || f[1] != "A="+lines[i][1] || f[2] != "B="+lines[i][2] {
			t.Errorf("on disk, line %d: %s", i, l)
		}
	}
}

func parseUint(t *testing.T, s string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(s, 0, 64)
	if err != nil {
		t.Fatalf("not a number: %q", s)
	}
	return v
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
