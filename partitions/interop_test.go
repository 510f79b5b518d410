package partitions

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sealift/bootloader"
	"sealift/internal/testutil"
)

// The table Create writes is what sgdisk expects: no problems found, our
// labels and type GUIDs, 1 MiB alignment.
func TestInteropSgdisk(t *testing.T) {
	sgdisk := testutil.RequireTool(t, "sgdisk")
	p := newDisk(t)
	out := testutil.Run(t, sgdisk, "-v", p)
	if !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v:\n%s", out)
	}
	out = testutil.Run(t, sgdisk, "-p", p)
	for _, l := range []string{LabelESP, LabelRootA, LabelRootB, LabelState} {
		if !strings.Contains(out, l) {
			t.Errorf("sgdisk -p does not show %s:\n%s", l, out)
		}
	}
	d := openDisk(t, p, false)
	for _, pt := range []Part{d.ESP(), d.Slot(bootloader.SlotA), d.Slot(bootloader.SlotB), d.State()} {
		out := testutil.Run(t, sgdisk, "-i", fmt.Sprint(pt.Index), p)
		for _, want := range []string{
			"Partition GUID code: " + strings.ToUpper(pt.TypeGUID),
			"Partition unique GUID: " + strings.ToUpper(pt.PartUUID),
			fmt.Sprintf("First sector: %d ", pt.Start/512),
			fmt.Sprintf("Partition size: %d sectors", pt.Size/512),
			"Partition name: '" + pt.Label + "'",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("sgdisk -i %d: no %q in\n%s", pt.Index, want, out)
			}
		}
	}
}

// The filesystems Create makes pass the real checkers, carry their labels,
// and the ESP is FAT32 as firmware requires.
func TestInteropFilesystems(t *testing.T) {
	fsck := testutil.RequireTool(t, "fsck.vfat")
	e2fsck := testutil.RequireTool(t, "e2fsck")
	blkid := testutil.RequireTool(t, "blkid")
	p := newDisk(t)
	d := openDisk(t, p, false)
	esp := extract(t, p, d.ESP().Start, d.ESP().Size)
	state := extract(t, p, d.State().Start, d.State().Size)

	if out, err := run(fsck, "-n", "-v", esp); err != nil || strings.Contains(out, "should be") {
		t.Errorf("fsck.vfat -n: %v\n%s", err, out)
	} else if !strings.Contains(out, "32 bit entries") || !strings.Contains(out, fmt.Sprintf("%d hidden sectors", d.ESP().Start/512)) {
		t.Errorf("ESP is not FAT32:\n%s", out)
	}
	if out, err := run(e2fsck, "-f", "-n", state); err != nil {
		t.Errorf("e2fsck -fn: %v\n%s", err, out)
	}
	for _, c := range []struct{ img, label, typ string }{{esp, ESPVolumeLabel, "vfat"}, {state, StateVolumeLabel, "ext4"}} {
		out := testutil.Run(t, blkid, "-o", "export", c.img)
		if !strings.Contains(out, "LABEL="+c.label+"\n") || !strings.Contains(out, "TYPE="+c.typ+"\n") {
			t.Errorf("blkid %s:\n%s", c.typ, out)
		}
	}
}

// Attribute writes keep the table valid for sgdisk (both CRCs, both copies)
// and show the raw word where sgdisk shows it.
func TestInteropAttributesSgdisk(t *testing.T) {
	sgdisk := testutil.RequireTool(t, "sgdisk")
	p := newDisk(t)
	d := openDisk(t, p, true)
	if err := d.SetAttributes(map[bootloader.Slot]uint64{bootloader.SlotA: 0x013F000000000000, bootloader.SlotB: 0x0000000000000004}); err != nil {
		t.Fatal(err)
	}
	if out := testutil.Run(t, sgdisk, "-v", p); !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v after SetAttributes:\n%s", out)
	}
	if out := testutil.Run(t, sgdisk, "-i", "2", p); !strings.Contains(out, "Attribute flags: 013F000000000000") {
		t.Errorf("sgdisk -i 2:\n%s", out)
	}
	// And the other way round: sgdisk's writes are read back.
	testutil.Run(t, sgdisk, "-A", "3:set:2", "-A", "3:set:60", p)
	if v, err := d.Attributes(bootloader.SlotB); err != nil || v != 1<<60|1<<2 {
		t.Errorf("after sgdisk -A: %#x, %v", v, err)
	}
}

// STATE's ext4 passes e2fsck at sizes around block-group boundaries (128
// MiB with 4 KiB blocks), including a last group of a single MiB (where
// go-diskfs's ext4 did not).
func TestFormatStateSizes(t *testing.T) {
	e2fsck := testutil.RequireTool(t, "e2fsck")
	testutil.RequireTool(t, "mke2fs")
	for _, sizeMiB := range []int64{64, 65, 127, 128, 129, 255, 257, 1000, 1025, 4097} {
		t.Run(fmt.Sprintf("%dMiB", sizeMiB), func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "state.img")
			// At an offset, as in an image.
			if err := os.WriteFile(p, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			os.Truncate(p, sizeMiB*mib+mib)
			if err := formatState(p, mib, sizeMiB*mib, true); err != nil {
				t.Fatal(err)
			}
			// Nothing before the offset is touched.
			if head := readRange(t, p, 0, mib); !isZero(head) {
				t.Error("mke2fs wrote before its offset")
			}
			p = extract(t, p, mib, sizeMiB*mib)
			if out, err := run(e2fsck, "-f", "-n", p); err != nil {
				t.Fatalf("e2fsck -fn: %v\n%s", err, out)
			}
		})
	}
}
