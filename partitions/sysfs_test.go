package partitions

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"sealift/bootloader"
)

// fakeHost builds a sysfs, /dev and mountinfo in a temp dir.
type fakeHost struct {
	t     *testing.T
	root  string
	h     host
	nodes map[string]devNum
}

func newFakeHost(t *testing.T) *fakeHost {
	root := t.TempDir()
	f := &fakeHost{t: t, root: root, nodes: map[string]devNum{}, h: host{
		sys:       filepath.Join(root, "sys"),
		dev:       filepath.Join(root, "dev"),
		mountinfo: filepath.Join(root, "mountinfo"),
		swaps:     filepath.Join(root, "swaps"),
	}}
	f.h.blockNode = func(p string) (devNum, bool) {
		d, ok := f.nodes[p]
		return d, ok
	}
	for _, d := range []string{"sys/class/block", "sys/dev/block", "sys/block", "dev"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	os.WriteFile(f.h.swaps, []byte("Filename\tType\tSize\tUsed\tPriority\n"), 0o644)
	return f
}

func (f *fakeHost) write(rel, content string) {
	p := filepath.Join(f.root, rel)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(content+"\n"), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeHost) link(rel, target string) {
	p := filepath.Join(f.root, rel)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.Symlink(target, p); err != nil {
		f.t.Fatal(err)
	}
}

// node makes /dev/<name> a block device node (in the fake's table: real
// nodes would need CAP_MKNOD).
func (f *fakeHost) node(name string, d devNum) {
	f.nodes[filepath.Join(f.h.dev, name)] = d
}

// disk adds a whole disk with partitions (by number) to the fake sysfs.
func (f *fakeHost) disk(name string, d devNum, parts map[int]string) {
	dir := "sys/devices/pci0000:00/block/" + name
	f.write(dir+"/dev", d.String())
	f.link("sys/class/block/"+name, "../../devices/pci0000:00/block/"+name)
	f.link("sys/block/"+name, "../devices/pci0000:00/block/"+name)
	f.link("sys/dev/block/"+d.String(), "../../devices/pci0000:00/block/"+name)
	os.MkdirAll(filepath.Join(f.root, dir, "holders"), 0o755)
	f.node(name, d)
	for n, pname := range parts {
		pd := devNum{d.major, d.minor + uint32(n)}
		f.write(dir+"/"+pname+"/dev", pd.String())
		f.write(dir+"/"+pname+"/partition", fmt.Sprint(n))
		f.write(dir+"/"+pname+"/start", fmt.Sprint(2048*n))
		f.write(dir+"/"+pname+"/size", "2048")
		os.MkdirAll(filepath.Join(f.root, dir, pname, "holders"), 0o755)
		f.link("sys/class/block/"+pname, "../../devices/pci0000:00/block/"+name+"/"+pname)
		f.link("sys/dev/block/"+pd.String(), "../../devices/pci0000:00/block/"+name+"/"+pname)
	}
}

// dm adds a device-mapper device built on the given devices.
func (f *fakeHost) dm(name string, d devNum, slaves ...string) {
	dir := "sys/devices/virtual/block/" + name
	f.write(dir+"/dev", d.String())
	f.link("sys/class/block/"+name, "../../devices/virtual/block/"+name)
	f.link("sys/dev/block/"+d.String(), "../../devices/virtual/block/"+name)
	os.MkdirAll(filepath.Join(f.root, dir, "slaves"), 0o755)
	for _, s := range slaves {
		target, err := filepath.EvalSymlinks(filepath.Join(f.h.sys, "class/block", s))
		if err != nil {
			f.t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(f.root, dir, "slaves", s)); err != nil {
			f.t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(f.root, dir), filepath.Join(target, "holders", name)); err != nil {
			f.t.Fatal(err)
		}
	}
}

func (f *fakeHost) mounts(lines ...string) {
	os.WriteFile(f.h.mountinfo, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
}

func mountLine(id int, dev, root, mp, fstype, src string) string {
	return fmt.Sprintf("%d 1 %s %s %s rw,relatime shared:1 - %s %s rw", id, dev, root, mp, fstype, src)
}

func TestRootDisk(t *testing.T) {
	for _, tc := range []struct {
		name    string
		setup   func(f *fakeHost)
		want    string // disk name under dev; "" when an error is expected
		mention string
	}{
		{"plain partition", func(f *fakeHost) {
			f.disk("sda", devNum{8, 0}, map[int]string{1: "sda1", 2: "sda2"})
			f.mounts(mountLine(20, "8:2", "/", "/", "ext4", "/dev/sda2"))
		}, "sda", ""},
		{"nvme", func(f *fakeHost) {
			f.disk("nvme0n1", devNum{259, 0}, map[int]string{3: "nvme0n1p3"})
			f.mounts(mountLine(20, "259:3", "/", "/", "squashfs", "/dev/nvme0n1p3"))
		}, "nvme0n1", ""},
		{"dm-verity on a partition", func(f *fakeHost) {
			f.disk("sda", devNum{8, 0}, map[int]string{2: "sda2", 3: "sda3"})
			f.dm("dm-0", devNum{253, 0}, "sda3")
			f.mounts(mountLine(20, "253:0", "/", "/", "ext4", "/dev/mapper/root"))
		}, "sda", ""},
		{"overmounted root: the last / counts", func(f *fakeHost) {
			f.disk("sda", devNum{8, 0}, map[int]string{2: "sda2"})
			f.disk("sdb", devNum{8, 16}, map[int]string{1: "sdb1"})
			f.mounts(mountLine(20, "8:17", "/", "/", "ext4", "/dev/sdb1"), mountLine(30, "8:2", "/", "/", "ext4", "/dev/sda2"))
		}, "sda", ""},
		{"verity spanning two disks", func(f *fakeHost) {
			f.disk("sda", devNum{8, 0}, map[int]string{2: "sda2"})
			f.disk("sdb", devNum{8, 16}, map[int]string{1: "sdb1"})
			f.dm("dm-0", devNum{253, 0}, "sda2", "sdb1")
			f.mounts(mountLine(20, "253:0", "/", "/", "ext4", "/dev/mapper/root"))
		}, "", "spans several disks (sda, sdb)"},
		{"overlay root", func(f *fakeHost) {
			f.mounts(mountLine(20, "0:25", "/", "/", "overlay", "overlay"))
		}, "", "overlay"},
		{"root on a whole disk", func(f *fakeHost) {
			f.disk("vda", devNum{254, 0}, nil)
			f.mounts(mountLine(20, "254:0", "/", "/", "ext4", "/dev/vda"))
		}, "", "vda is a whole disk"},
		{"no root in the mount table", func(f *fakeHost) {
			f.mounts(mountLine(20, "0:21", "/", "/proc", "proc", "proc"))
		}, "", "no /"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeHost(t)
			tc.setup(f)
			got, err := f.h.rootDisk()
			if tc.want == "" {
				wantErr(t, err, ErrUnknownDisk, tc.mention)
				return
			}
			if err != nil || got != filepath.Join(f.h.dev, tc.want) {
				t.Fatalf("rootDisk: %q, %v; want %s", got, err, tc.want)
			}
		})
	}
}

// On the machine running the tests RootDisk either finds a block device
// or says why not; it never returns a guess.
func TestRootDiskHere(t *testing.T) {
	p, err := RootDisk()
	if err != nil {
		wantErr(t, err, ErrUnknownDisk)
		return
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		t.Errorf("RootDisk %s is not a block device (%v)", p, err)
	}
}

func TestUsage(t *testing.T) {
	f := newFakeHost(t)
	f.disk("sdc", devNum{8, 32}, map[int]string{1: "sdc1", 2: "sdc2", 3: "sdc3"})
	f.dm("dm-3", devNum{253, 3}, "sdc3")
	f.mounts(
		mountLine(20, "8:1", "/", "/", "ext4", "/dev/sda1"),
		mountLine(21, "8:33", "/", `/mnt/my\040esp`, "vfat", "/dev/sdc1"),
	)
	devs, parts, err := f.h.diskAndParts(blockDev{name: "sdc", dev: devNum{8, 32}})
	if err != nil || len(devs) != 4 || parts[2].start != 2*2048*512 {
		t.Fatalf("diskAndParts: %v %v %v", devs, parts, err)
	}
	use, err := f.h.usage(devs)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(use, "; "); got != "sdc1 is mounted on /mnt/my esp; sdc3 is held by dm-3" {
		t.Errorf("usage: %s", got)
	}
	if use, _ := f.h.usage(devs[2:3]); len(use) != 0 {
		t.Errorf("sdc2 reported in use: %v", use)
	}
}

// ESPFS goes through a mount of the ESP when there is one: found by device
// number for a disk, through loop devices for an image.
func TestESPMountPoint(t *testing.T) {
	img := newDisk(t)
	real := openDisk(t, img, false)
	esp := real.ESP()

	f := newFakeHost(t)
	f.disk("sdc", devNum{8, 32}, map[int]string{1: "sdc1", 4: "sdc4"})
	// A loop device over the image's ESP, and one over the whole image
	// with partitions.
	f.disk("loop3", devNum{7, 3}, nil)
	f.write("sys/devices/pci0000:00/block/loop3/loop/backing_file", img)
	f.write("sys/devices/pci0000:00/block/loop3/loop/offset", fmt.Sprint(esp.Start))
	f.disk("loop4", devNum{7, 4}, map[int]string{1: "loop4p1"})
	f.write("sys/devices/pci0000:00/block/loop4/loop/backing_file", img)
	f.write("sys/devices/pci0000:00/block/loop4/loop/offset", "0")
	f.write("sys/devices/pci0000:00/block/loop4/loop4p1/start", fmt.Sprint(esp.Start/512))

	disk := &Disk{path: "/dev/sdc", f: real.f, blockDev: &blockDev{name: "sdc", dev: devNum{8, 32}}, parts: real.parts, host: f.h}
	image := &Disk{path: img, f: real.f, parts: real.parts, host: f.h}
	for _, tc := range []struct {
		name   string
		d      *Disk
		mounts []string
		want   string
		err    error
	}{
		{"disk, nothing mounted", disk, []string{mountLine(20, "8:36", "/", "/var", "ext4", "/dev/sdc4")}, "", nil},
		{"disk, ESP mounted", disk, []string{mountLine(20, "8:33", "/", "/boot/efi", "vfat", "/dev/sdc1")}, "/boot/efi", nil},
		{"disk, ESP mounted twice, one a bind of a subdir", disk, []string{
			mountLine(20, "8:33", "/EFI", "/efi-sub", "vfat", "/dev/sdc1"),
			mountLine(21, "8:33", "/", "/efi", "vfat", "/dev/sdc1"),
		}, "/efi", nil},
		{"disk, ESP under a systemd automount", disk, []string{
			mountLine(20, "0:50", "/", "/efi", "autofs", "systemd-1"),
			mountLine(21, "8:33", "/", "/efi", "vfat", "/dev/sdc1"),
		}, "/efi", nil},
		{"disk, only a subdir of the ESP mounted", disk, []string{mountLine(20, "8:33", "/EFI", "/efi-sub", "vfat", "/dev/sdc1")}, "", ErrMounted},
		{"image, loop over the ESP mounted", image, []string{mountLine(20, "7:3", "/", "/mnt/esp", "vfat", "/dev/loop3")}, "/mnt/esp", nil},
		{"image, partition of a whole-image loop mounted", image, []string{mountLine(20, "7:5", "/", "/mnt/p1", "vfat", "/dev/loop4p1")}, "/mnt/p1", nil},
		{"image, nothing mounted", image, []string{mountLine(20, "8:1", "/", "/", "ext4", "/dev/sda1")}, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.mounts(tc.mounts...)
			got, err := tc.d.espMountPoint()
			if tc.err != nil {
				wantErr(t, err, tc.err)
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("espMountPoint: %q, %v; want %q", got, err, tc.want)
			}
			if tc.want != "" {
				fs, err := tc.d.ESPFS()
				if err != nil || fs != bootloader.DirFS(tc.want) {
					t.Errorf("ESPFS: %#v, %v", fs, err)
				}
			}
		})
	}
	// The image is in use for Create while any of that is mounted.
	fi, _ := os.Stat(img)
	f.mounts(mountLine(20, "7:5", "/", "/mnt/p1", "vfat", "/dev/loop4p1"))
	if use, err := f.h.imageUsage(fi); err != nil || len(use) != 1 || use[0] != "loop4p1 is mounted on /mnt/p1" {
		t.Errorf("imageUsage: %q, %v", use, err)
	}
}
