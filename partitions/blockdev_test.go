package partitions

import (
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sealift/bootloader"
	"sealift/internal/testutil"
)

// These tests use loop devices to exercise the block-device paths
// (partition nodes, BLKRRPART, O_EXCL, mounts). They need root and a
// kernel with loop support, so they skip elsewhere (containers usually).

func requireLoop(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skip("no loop device support")
	}
	return testutil.RequireTool(t, "losetup")
}

// attach attaches an image (or a range of it) as a loop device.
func attach(t *testing.T, img string, args ...string) string {
	t.Helper()
	losetup := requireLoop(t)
	out, err := run(losetup, append(append([]string{"-f", "--show"}, args...), img)...)
	if err != nil {
		t.Skipf("losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(out)
	t.Cleanup(func() { run(losetup, "-d", dev) })
	return dev
}

func mount(t *testing.T, dev, fstype string, opts ...string) string {
	t.Helper()
	mp := t.TempDir()
	args := []string{"-t", fstype}
	if len(opts) > 0 {
		args = append(args, "-o", strings.Join(opts, ","))
	}
	if out, err := run("mount", append(args, dev, mp)...); err != nil {
		t.Skipf("mount %s: %v: %s", dev, err, out)
	}
	t.Cleanup(func() { run("umount", mp) })
	return mp
}

func TestBlockDevice(t *testing.T) {
	requireLoop(t)
	img := filepath.Join(t.TempDir(), "backing.img")
	os.WriteFile(img, nil, 0o644)
	os.Truncate(img, smallSize)
	dev := attach(t, img, "-P")

	if err := Create(dev, CreateOptions{Size: 1 << 20, Layout: smallLayout}); err == nil {
		t.Fatal("Create with a size on a block device succeeded")
	}
	if err := Create(dev, CreateOptions{Layout: smallLayout}); err != nil {
		t.Fatalf("Create on %s: %v", dev, err)
	}
	wantErr(t, Create(dev, CreateOptions{Layout: smallLayout}), ErrHasPartitionTable)

	d := openDisk(t, dev, true)
	if !d.IsBlockDevice() {
		t.Error("IsBlockDevice false for a loop device")
	}
	// The image file shows the same table.
	if di := openDisk(t, img, false); di.DiskGUID() != d.DiskGUID() {
		t.Error("backing image has another table")
	}
	// A partition node is not a disk.
	_, err := Open(dev+"p2", false)
	wantErr(t, err, ErrUnknownDisk, "give the whole disk ("+dev+")")

	// Partition I/O goes to the partition's node and lands in the right place.
	a := d.Slot(bootloader.SlotA)
	pio, err := d.OpenPartition(a)
	if err != nil {
		t.Fatal(err)
	}
	if pio.Name() != dev+"p2" {
		t.Errorf("I/O on %s, want %sp2", pio.Name(), dev)
	}
	data := pattern(64<<10, 4)
	if _, err := pio.WriteAt(data, a.Size-int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if _, err := pio.WriteAt(data, a.Size); !errors.Is(err, ErrOutOfBounds) {
		t.Errorf("write past the end of %s: %v", pio.Name(), err)
	}
	if err := pio.Sync(); err != nil {
		t.Fatal(err)
	}
	pio.Close()
	equalBytes(t, "slot A's end in the image", readRange(t, img, a.End()-int64(len(data)), int64(len(data))), data)

	// The unmounted ESP is written through its node; fsck and mtools agree.
	esp, err := d.ESPFS()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := esp.(*espFS); !ok {
		t.Fatalf("ESPFS of an unmounted ESP is %T", esp)
	}
	if err := esp.MkdirAll("sealift/B"); err != nil {
		t.Fatal(err)
	}
	if err := esp.WriteFile("sealift/B/vmlinuz", data); err != nil {
		t.Fatal(err)
	}
	fsckESP(t, img)
	if err := d.SetAttributes(map[bootloader.Slot]uint64{bootloader.SlotB: 0x0032000000000000}); err != nil {
		t.Fatal(err)
	}
	if v, err := openDisk(t, img, false).Attributes(bootloader.SlotB); err != nil || v != 0x0032000000000000 {
		t.Errorf("attributes through the device, read from the image: %#x, %v", v, err)
	}
	unlock, err := d.Lock()
	if err != nil {
		t.Fatalf("Lock on a block device: %v", err)
	}
	unlock()

	t.Run("mounted STATE", func(t *testing.T) {
		mount(t, dev+"p4", "ext4")
		wantErr(t, Create(dev, CreateOptions{Layout: smallLayout, Force: true}), ErrMounted, dev[len("/dev/"):]+"p4 is mounted on")
		if esp, err := d.ESPFS(); err != nil {
			t.Error(err)
		} else if _, ok := esp.(*espFS); !ok {
			t.Errorf("ESPFS is %T with only STATE mounted", esp)
		}
	})
	t.Run("mounted ESP", func(t *testing.T) {
		mp := mount(t, dev+"p1", "vfat")
		esp, err := d.ESPFS()
		if err != nil {
			t.Fatal(err)
		}
		if esp != bootloader.DirFS(mp) {
			t.Errorf("ESPFS with the ESP mounted at %s: %#v", mp, esp)
		}
		if b, err := esp.ReadFile("sealift/B/vmlinuz"); err != nil {
			t.Error(err)
		} else {
			equalBytes(t, "kernel's view of our file", b, data)
		}
		wantErr(t, Create(dev, CreateOptions{Layout: smallLayout, Force: true}), ErrMounted, dev[len("/dev/"):]+"p1 is mounted on "+mp)
	})
}

// An image with a partition loop-mounted is in use: Create refuses it.
func TestImageInUse(t *testing.T) {
	requireLoop(t)
	p := newDisk(t)
	d := openDisk(t, p, false)
	loop := attach(t, p, "--offset", fmt.Sprint(d.State().Start), "--sizelimit", fmt.Sprint(d.State().Size))
	mount(t, loop, "ext4")
	wantErr(t, Create(p, CreateOptions{Layout: smallLayout, Force: true}), ErrMounted, "is mounted on")
}

// An image whose ESP is loop-mounted is used through the mount, and
// Create refuses to overwrite it.
func TestImageWithMountedESP(t *testing.T) {
	requireLoop(t)
	p := newDisk(t)
	f := espOf(t, p)
	if err := f.MkdirAll("EFI/BOOT"); err != nil {
		t.Fatal(err)
	}
	want := pattern(10_000, 5)
	if err := f.WriteFile("EFI/BOOT/Long Name.efi", want); err != nil {
		t.Fatal(err)
	}
	d := openDisk(t, p, true)
	loop := attach(t, p, "--offset", fmt.Sprint(d.ESP().Start), "--sizelimit", fmt.Sprint(d.ESP().Size))
	mp := mount(t, loop, "vfat")
	got, err := d.ESPFS()
	if err != nil {
		t.Fatal(err)
	}
	if got != bootloader.DirFS(mp) {
		t.Fatalf("ESPFS: %#v, want DirFS(%s)", got, mp)
	}
	b, err := os.ReadFile(filepath.Join(mp, "EFI/BOOT/Long Name.efi"))
	if err != nil {
		t.Fatalf("the kernel does not find our file: %v", err)
	}
	equalBytes(t, "kernel's read", b, want)
	wantErr(t, Create(p, CreateOptions{Layout: smallLayout, Force: true}), ErrMounted, "is mounted on")

	// What the kernel writes, we read (after unmounting).
	kernelData := pattern(3000, 8)
	if err := os.WriteFile(filepath.Join(mp, "written by linux.txt"), kernelData, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := run("umount", mp); err != nil {
		t.Fatalf("umount: %v %s", err, out)
	}
	f, err = d.ESPFS()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := f.(*espFS); !ok {
		t.Fatalf("after umount ESPFS is %T", f)
	}
	b, err = f.ReadFile("written by linux.txt")
	if err != nil {
		t.Fatal(err)
	}
	equalBytes(t, "our read of the kernel's file", b, kernelData)
	if _, err := f.ReadFile("nope"); !errors.Is(err, iofs.ErrNotExist) {
		t.Error(err)
	}
	fsckESP(t, p)
}

// A disk with 4 KiB logical sectors (4Kn): LBAs, the GPT and FAT32 all
// count in 4096-byte sectors.
func TestBlockDevice4Kn(t *testing.T) {
	sgdisk := testutil.RequireTool(t, "sgdisk")
	e2fsck := testutil.RequireTool(t, "e2fsck")
	requireLoop(t)
	img := filepath.Join(t.TempDir(), "backing.img")
	os.WriteFile(img, nil, 0o644)
	os.Truncate(img, smallSize)
	os.Truncate(img, 400*mib)
	dev := attach(t, img, "-P", "--sector-size", "4096")
	wantErr(t, Create(dev, CreateOptions{Layout: smallLayout}), ErrTooSmall, "260 MiB for FAT32 on a disk with 4096-byte sectors")
	layout := Layout{ESPSize: 260 * mib, RootSize: 16 * mib}
	if err := Create(dev, CreateOptions{Layout: layout}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	d := openDisk(t, dev, true)
	if d.SectorSize() != 4096 {
		t.Fatalf("sector size %d", d.SectorSize())
	}
	if out := testutil.Run(t, sgdisk, "-v", dev); !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v:\n%s", out)
	}
	if a := d.Slot(bootloader.SlotA); a.Start != 261*mib || a.Size != 16*mib {
		t.Errorf("slot A %+v", a)
	}
	// The image file, seen with 512-byte sectors, is found by probing.
	if di := openDisk(t, img, false); di.SectorSize() != 4096 || di.Slot(bootloader.SlotB) != d.Slot(bootloader.SlotB) {
		t.Errorf("image: sector size %d, slot B %+v", di.SectorSize(), di.Slot(bootloader.SlotB))
	}
	if err := d.SetAttributes(map[bootloader.Slot]uint64{bootloader.SlotA: 0x013F000000000000}); err != nil {
		t.Fatal(err)
	}
	if out := testutil.Run(t, sgdisk, "-i", "2", dev); !strings.Contains(out, "Attribute flags: 013F000000000000") {
		t.Errorf("sgdisk -i 2:\n%s", out)
	}
	esp, err := d.ESPFS()
	if err != nil {
		t.Fatal(err)
	}
	if err := esp.MkdirAll("EFI/BOOT"); err != nil {
		t.Fatal(err)
	}
	if err := esp.WriteFile("EFI/BOOT/BOOTX64.EFI", pattern(50_000, 3)); err != nil {
		t.Fatal(err)
	}
	fsckESP(t, img)
	if out, err := run(e2fsck, "-f", "-n", dev+"p4"); err != nil {
		t.Errorf("e2fsck -fn: %v\n%s", err, out)
	}
}

// TestWriteRefusedWhileSlotMounted: a slot that is mounted (as the running
// root would be) is never opened for writing, whatever the caller thinks.
func TestWriteRefusedWhileSlotMounted(t *testing.T) {
	requireLoop(t)
	img := filepath.Join(t.TempDir(), "backing.img")
	os.WriteFile(img, nil, 0o644)
	os.Truncate(img, smallSize)
	dev := attach(t, img, "-P")
	if err := Create(dev, CreateOptions{Layout: smallLayout}); err != nil {
		t.Fatalf("Create on %s: %v", dev, err)
	}
	d := openDisk(t, dev, true)
	b := d.Slot(bootloader.SlotB)
	node, _, err := d.partitionNode(b)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := run(testutil.RequireTool(t, "mke2fs"), "-q", "-t", "ext4", node); err != nil {
		t.Fatalf("mke2fs: %v: %s", err, out)
	}
	mount(t, node, "ext4", "ro")
	_, err = d.OpenPartition(b)
	wantErr(t, err, ErrMounted, "mounted")
	// The other slot is still writable, and reading the mounted one is fine.
	pio, err := d.OpenPartition(d.Slot(bootloader.SlotA))
	if err != nil {
		t.Fatal(err)
	}
	pio.Close()
	ro := openDisk(t, dev, false)
	if pio, err := ro.OpenPartition(ro.Slot(bootloader.SlotB)); err != nil {
		t.Fatal(err)
	} else {
		pio.Close()
	}
}
